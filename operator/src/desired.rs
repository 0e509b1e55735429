//! The objects a namespace with Promotions should hold, built with no
//! client in sight: five Deployments (three APIs, two consumers) and three
//! Services, all owned by the namespace's live Promotions so that deleting
//! the last one lets Kubernetes collect them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretEnvSource,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use promotion_crd::Promotion;

use crate::platform::{Component, PlatformConfig};

pub const MANAGER: &str = "promotion-operator";
const PART_OF: &str = "promotion-system";
/// Non-root user of the images (distroless `nonroot`).
const RUN_AS: i64 = 65532;

/// Replicas of the two consumer Deployments, from [`crate::scaling`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerReplicas {
    pub coupon: i32,
    pub timesale: i32,
}

/// One object to server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Desired {
    Deployment(Box<Deployment>),
    Service(Box<Service>),
}

impl Desired {
    pub fn name(&self) -> &str {
        match self {
            Desired::Deployment(d) => d.metadata.name.as_deref().unwrap_or_default(),
            Desired::Service(s) => s.metadata.name.as_deref().unwrap_or_default(),
        }
    }
}

/// Owner references to every live Promotion of a namespace, sorted by uid so
/// that whichever Promotion triggers the reconcile applies the same list.
/// None is the controller: several Promotions own the shared workloads.
pub fn owners<'a>(promotions: impl IntoIterator<Item = &'a Promotion>) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = promotions
        .into_iter()
        .filter(|p| p.meta().deletion_timestamp.is_none())
        .filter_map(|p| {
            Some(OwnerReference {
                api_version: Promotion::api_version(&()).into_owned(),
                kind: Promotion::kind(&()).into_owned(),
                name: p.name_any(),
                uid: p.uid()?,
                controller: Some(false),
                block_owner_deletion: Some(false),
            })
        })
        .collect();
    refs.sort_by(|a, b| a.uid.cmp(&b.uid));
    refs.dedup_by(|a, b| a.uid == b.uid);
    refs
}

fn labels(platform: &PlatformConfig, c: Component) -> BTreeMap<String, String> {
    let mut l = selector(c);
    l.insert("app.kubernetes.io/part-of".into(), PART_OF.into());
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l.insert(
        "app.kubernetes.io/component".into(),
        if c.is_consumer() { "consumer" } else { "api" }.into(),
    );
    l.insert("promo.dev/service".into(), c.service().into());
    for (k, v) in &platform.labels {
        l.entry(k.clone()).or_insert_with(|| v.clone());
    }
    l
}

fn selector(c: Component) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_string(), c.name().to_string())])
}

fn meta(
    platform: &PlatformConfig,
    c: Component,
    namespace: &str,
    owners: &[OwnerReference],
) -> ObjectMeta {
    ObjectMeta {
        name: Some(c.name().into()),
        namespace: Some(namespace.into()),
        labels: Some(labels(platform, c)),
        owner_references: Some(owners.to_vec()),
        ..ObjectMeta::default()
    }
}

fn probe(path: &str, port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

/// The container hardening every workload gets: non-root, read-only root
/// filesystem, no privilege escalation, no capabilities.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The container's arguments: the subcommand and its port; for the queued
/// services also the platform's topic, consumer group and partitions, so
/// that every replica routes a bucket's events to the same partition and
/// the operator's partition count is the one the topics have.
fn args(platform: &PlatformConfig, c: Component) -> Vec<String> {
    let mut args = vec![
        c.subcommand().into(),
        "--listen".into(),
        format!("0.0.0.0:{}", platform.port),
    ];
    if let Some(t) = platform.topics.for_service(c) {
        let service = c.service();
        args.extend([
            format!("--{service}-topic={}", t.topic),
            format!("--{service}-consumer-group={}", t.group),
            format!("--{service}-topic-partitions={}", platform.partitions),
        ]);
    }
    args
}

pub fn deployment(
    platform: &PlatformConfig,
    c: Component,
    namespace: &str,
    owners: &[OwnerReference],
    replicas: i32,
) -> Deployment {
    let port = platform.port;
    let mut pod_labels = labels(platform, c);
    pod_labels.retain(|k, _| k != "app.kubernetes.io/managed-by");
    let container = Container {
        name: c.service().into(),
        image: Some(platform.image(c).into()),
        image_pull_policy: Some(platform.image_pull_policy.clone()),
        args: Some(args(platform, c)),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: platform.backends_secret.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", port)),
        liveness_probe: Some(probe("/healthz", port)),
        resources: platform.resources.clone(),
        security_context: Some(container_security()),
        // The only writable place: scratch space for temporary files.
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    Deployment {
        metadata: meta(platform, c, namespace, owners),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector(c)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub fn service(
    platform: &PlatformConfig,
    c: Component,
    namespace: &str,
    owners: &[OwnerReference],
) -> Service {
    Service {
        metadata: meta(platform, c, namespace, owners),
        spec: Some(ServiceSpec {
            selector: Some(selector(c)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: platform.port,
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Everything a namespace with Promotions should hold.
pub fn desired(
    platform: &PlatformConfig,
    namespace: &str,
    owners: &[OwnerReference],
    consumers: ConsumerReplicas,
) -> Vec<Desired> {
    let mut out = Vec::new();
    for c in Component::ALL {
        let replicas = match c {
            Component::CouponConsumer => consumers.coupon,
            Component::TimesaleConsumer => consumers.timesale,
            api => platform.api_replicas(api),
        };
        out.push(Desired::Deployment(Box::new(deployment(
            platform, c, namespace, owners, replicas,
        ))));
        if !c.is_consumer() {
            out.push(Desired::Service(Box::new(service(
                platform, c, namespace, owners,
            ))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use promotion_crd::parse_manifests;

    pub(crate) fn platform() -> PlatformConfig {
        PlatformConfig::from_yaml(
            r#"
images: { coupon: "reg/coupon:1", timesale: "reg/timesale:1", point: "reg/point:1" }
backendsSecret: promo-backends
replicas: { coupon: 3, timesale: 2, point: 1 }
"#,
        )
        .unwrap()
    }

    fn promo(name: &str, uid: &str, deleting: bool) -> Promotion {
        let mut p = parse_manifests(&format!(
            r#"
apiVersion: promo.dev/v1alpha1
kind: Promotion
metadata: {{ name: {name}, namespace: shop, uid: "{uid}" }}
spec:
  type: Coupon
  window: {{ startsAt: "2026-11-27T00:00:00Z", endsAt: "2026-11-28T00:00:00Z" }}
  coupon: {{ quota: 10, discount: {{ kind: Fixed, value: 5 }} }}
"#
        ))
        .unwrap()
        .remove(0);
        if deleting {
            p.metadata.deletion_timestamp = Some(crate::status::time(chrono::Utc::now()));
        }
        p
    }

    #[test]
    fn owners_are_every_live_promotion_in_a_stable_order() {
        let ps = [
            promo("b", "uid-2", false),
            promo("a", "uid-1", false),
            promo("c", "uid-3", true),
            promo("a", "uid-1", false),
        ];
        let refs = owners(&ps);
        assert_eq!(
            refs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"],
            "sorted by uid, once each, the deleting one left out"
        );
        assert!(refs.iter().all(|r| r.kind == "Promotion"
            && r.api_version == "promo.dev/v1alpha1"
            && r.controller == Some(false)));
    }

    #[test]
    fn a_namespace_gets_five_deployments_and_three_services() {
        let p = platform();
        let objs = desired(
            &p,
            "shop",
            &owners(&[promo("a", "u1", false)]),
            ConsumerReplicas {
                coupon: 4,
                timesale: 0,
            },
        );
        let names: Vec<_> = objs
            .iter()
            .map(|o| (matches!(o, Desired::Service(_)), o.name().to_string()))
            .collect();
        assert_eq!(
            names,
            [
                (false, "promo-coupon".into()),
                (true, "promo-coupon".into()),
                (false, "promo-coupon-consumer".into()),
                (false, "promo-timesale".into()),
                (true, "promo-timesale".into()),
                (false, "promo-timesale-consumer".into()),
                (false, "promo-point".into()),
                (true, "promo-point".into()),
            ]
        );
        let deploy = |name: &str| {
            objs.iter()
                .find_map(|o| match o {
                    Desired::Deployment(d) if d.metadata.name.as_deref() == Some(name) => {
                        Some(d.clone())
                    }
                    _ => None,
                })
                .unwrap()
        };
        let api = deploy("promo-coupon");
        let spec = api.spec.unwrap();
        assert_eq!(
            spec.replicas,
            Some(3),
            "API replicas from the platform config"
        );
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("reg/coupon:1"));
        assert_eq!(
            c.args.as_ref().unwrap()[..],
            [
                "serve",
                "--listen",
                "0.0.0.0:8080",
                "--coupon-topic=promo.coupon.issue",
                "--coupon-consumer-group=coupon-consumer",
                "--coupon-topic-partitions=8",
            ]
        );
        assert_eq!(
            c.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "promo-backends"
        );
        let sec = c.security_context.as_ref().unwrap();
        assert_eq!(sec.read_only_root_filesystem, Some(true));
        assert_eq!(sec.run_as_non_root, Some(true));
        assert_eq!(
            sec.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(
            spec.selector.match_labels.unwrap()["app.kubernetes.io/name"],
            "promo-coupon"
        );
        assert_eq!(api.metadata.owner_references.unwrap()[0].name, "a");

        let consumer = deploy("promo-coupon-consumer").spec.unwrap();
        assert_eq!(consumer.replicas, Some(4), "consumer replicas from scaling");
        assert_eq!(
            consumer.template.spec.unwrap().containers[0]
                .args
                .as_ref()
                .unwrap()[0],
            "consume"
        );
        assert_eq!(
            deploy("promo-timesale-consumer").spec.unwrap().replicas,
            Some(0)
        );
    }
}
