//! The platform configuration the chart hands the operator (a ConfigMap
//! mounted as YAML): images, replicas, where the backends' settings live,
//! and how the services' admin APIs are reached.

use std::collections::BTreeMap;

use promotion_crd::PromotionType;
use serde::{Deserialize, Serialize};

/// One of the five workloads the operator runs per namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    CouponApi,
    CouponConsumer,
    TimesaleApi,
    TimesaleConsumer,
    PointApi,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::CouponApi,
        Component::CouponConsumer,
        Component::TimesaleApi,
        Component::TimesaleConsumer,
        Component::PointApi,
    ];

    /// Name of the Deployment (and, for APIs, the Service).
    pub fn name(self) -> &'static str {
        match self {
            Component::CouponApi => "promo-coupon",
            Component::CouponConsumer => "promo-coupon-consumer",
            Component::TimesaleApi => "promo-timesale",
            Component::TimesaleConsumer => "promo-timesale-consumer",
            Component::PointApi => "promo-point",
        }
    }

    /// The service this workload belongs to (`app.kubernetes.io/name`).
    pub fn service(self) -> &'static str {
        match self {
            Component::CouponApi | Component::CouponConsumer => promo_contracts::coupon::SERVICE,
            Component::TimesaleApi | Component::TimesaleConsumer => {
                promo_contracts::timesale::SERVICE
            }
            Component::PointApi => promo_contracts::point::SERVICE,
        }
    }

    /// The subcommand of the service binary it runs.
    pub fn subcommand(self) -> &'static str {
        if self.is_consumer() {
            "consume"
        } else {
            "serve"
        }
    }

    pub fn is_consumer(self) -> bool {
        matches!(
            self,
            Component::CouponConsumer | Component::TimesaleConsumer
        )
    }

    /// The consumer Deployment that persists a promotion type's queued events.
    pub fn consumer_for(kind: PromotionType) -> Component {
        match kind {
            PromotionType::Coupon => Component::CouponConsumer,
            PromotionType::TimeSale => Component::TimesaleConsumer,
        }
    }

    /// The API Deployment whose admin API registers a promotion type.
    pub fn api_for(kind: PromotionType) -> Component {
        match kind {
            PromotionType::Coupon => Component::CouponApi,
            PromotionType::TimeSale => Component::TimesaleApi,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlatformConfig {
    pub images: Images,
    #[serde(default = "if_not_present")]
    pub image_pull_policy: String,
    #[serde(default)]
    pub replicas: Replicas,
    /// Secret with PROMO_MYSQL_URL, PROMO_REDIS_URL, PROMO_KAFKA_BROKERS and
    /// PROMO_ADMIN_TOKEN, given to every workload as environment. It must
    /// exist in each namespace that holds Promotions.
    pub backends_secret: String,
    /// Port every service listens on (HTTP, metrics, probes).
    #[serde(default = "port")]
    pub port: i32,
    /// Base URL of a service's admin API; `{service}` and `{namespace}` are
    /// replaced (`{service}` by the Service name, e.g. `promo-coupon`).
    #[serde(default = "admin_url")]
    pub admin_url: String,
    /// Partitions of the coupon and timesale topics, passed to their
    /// services (`--<service>-topic-partitions`): the most consumers that can
    /// do useful work, and the most buckets a queued promotion may have.
    #[serde(default = "partitions")]
    pub partitions: i32,
    #[serde(default)]
    pub topics: Topics,
    #[serde(default)]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Extra labels on every managed object.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Images {
    pub coupon: String,
    pub timesale: String,
    pub point: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replicas {
    pub coupon: i32,
    pub timesale: i32,
    pub point: i32,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas {
            coupon: 2,
            timesale: 2,
            point: 2,
        }
    }
}

/// Topic and consumer group of each queued service (the services' defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topics {
    pub coupon: TopicGroup,
    pub timesale: TopicGroup,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicGroup {
    pub topic: String,
    pub group: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            coupon: TopicGroup {
                topic: promo_contracts::coupon::TOPIC.into(),
                group: promo_contracts::coupon::GROUP.into(),
            },
            timesale: TopicGroup {
                topic: promo_contracts::timesale::TOPIC.into(),
                group: promo_contracts::timesale::GROUP.into(),
            },
        }
    }
}

impl Topics {
    /// The topic and group of the queued service `c` runs (its API or its
    /// consumer); none for the point service.
    pub fn for_service(&self, c: Component) -> Option<&TopicGroup> {
        match c {
            Component::CouponApi | Component::CouponConsumer => Some(&self.coupon),
            Component::TimesaleApi | Component::TimesaleConsumer => Some(&self.timesale),
            Component::PointApi => None,
        }
    }

    pub fn for_consumer(&self, c: Component) -> Option<&TopicGroup> {
        match c {
            Component::CouponConsumer => Some(&self.coupon),
            Component::TimesaleConsumer => Some(&self.timesale),
            _ => None,
        }
    }
}

fn if_not_present() -> String {
    "IfNotPresent".into()
}
fn port() -> i32 {
    8080
}
fn admin_url() -> String {
    "http://{service}.{namespace}.svc:8080".into()
}
fn partitions() -> i32 {
    promo_contracts::coupon::PARTITIONS.max(promo_contracts::timesale::PARTITIONS)
}

impl PlatformConfig {
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    pub fn image(&self, c: Component) -> &str {
        match c.service() {
            promo_contracts::coupon::SERVICE => &self.images.coupon,
            promo_contracts::timesale::SERVICE => &self.images.timesale,
            _ => &self.images.point,
        }
    }

    /// Replicas of an API Deployment (consumers are scaled from lag).
    pub fn api_replicas(&self, c: Component) -> i32 {
        match c.service() {
            promo_contracts::coupon::SERVICE => self.replicas.coupon,
            promo_contracts::timesale::SERVICE => self.replicas.timesale,
            _ => self.replicas.point,
        }
    }

    pub fn admin_base(&self, kind: PromotionType, namespace: &str) -> String {
        self.admin_url
            .replace("{service}", Component::api_for(kind).name())
            .replace("{namespace}", namespace)
    }
}
