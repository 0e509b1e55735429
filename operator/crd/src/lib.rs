//! The `Promotion` custom resource, shared by the operator and `promo
//! standalone`: the Rust types are the single source of the CRD schema.
//!
//! Downstream code never reads the raw spec: [`Promotion::validate`] turns it
//! into a [`Checked`] value, and [`Checked::admin_request`] is the exact
//! admin API call that registers it with its service.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

// The schema carries the rules an API server can check on its own (CEL in
// `x-kubernetes-validations`, minimums, defaults); `Promotion::validate`
// repeats them for `promo standalone`, which has no API server, and for the
// operator, which must not trust that every stored object passed admission.

/// One campaign: a coupon quota or a time-sale stock, with its window and strategy.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "promo.dev",
    version = "v1alpha1",
    kind = "Promotion",
    plural = "promotions",
    shortname = "promo",
    namespaced,
    status = "PromotionStatus",
    doc = "A Promotion: one coupon campaign or time sale, made real by promotion-operator.",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Remaining","type":"integer","jsonPath":".status.remaining"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.type == 'Coupon' ? (has(self.coupon) && !has(self.timeSale)) : (has(self.timeSale) && !has(self.coupon))").message("spec.type Coupon needs exactly the spec.coupon block, TimeSale exactly the spec.timeSale block"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromotionSpec {
    #[serde(rename = "type")]
    pub kind: PromotionType,
    #[serde(default)]
    pub strategy: Strategy,
    pub window: Window,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<CouponBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_sale: Option<TimeSaleBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<ConsumerScaling>,
    /// Emergency stop: issuance/ordering answers 422 not_active while set.
    #[serde(default)]
    pub paused: bool,
    /// Buckets the quota or stock is split over (1–256): each is its own
    /// counters pool (one Redis Cluster slot) and event key (one queue
    /// partition), so one hot promotion spreads over several. A user counts
    /// in bucket xxh3_64(userId, seed 0) mod buckets.
    #[serde(default = "one_bucket")]
    #[schemars(range(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 256").message("buckets must be between 1 and 256"))]
    pub buckets: u32,
}

fn one_bucket() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PromotionType {
    Coupon,
    TimeSale,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Strategy {
    Database,
    RedisLock,
    #[default]
    Queued,
}

impl Strategy {
    /// The spelling of the services' admin API.
    pub fn api_name(self) -> &'static str {
        match self {
            Strategy::Database => "DATABASE",
            Strategy::RedisLock => "REDIS_LOCK",
            Strategy::Queued => "QUEUED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.endsAt > self.startsAt").message("window.endsAt must be after window.startsAt"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Window {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CouponBlock {
    #[schemars(range(min = 1))]
    pub quota: i64,
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub per_user_limit: i64,
    pub discount: Discount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub valid_for_days: Option<i64>,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.kind != 'Percent' || self.value <= 100").message("a Percent discount value must be at most 100"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discount {
    pub kind: DiscountKind,
    #[schemars(range(min = 1))]
    pub value: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_order_amount: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DiscountKind {
    Fixed,
    Percent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeSaleBlock {
    pub product: Product,
    #[schemars(range(min = 1))]
    pub sale_price: i64,
    #[schemars(range(min = 1))]
    pub stock: i64,
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub per_user_limit: i64,
    /// Seconds a successful order is held for payment before it expires
    /// and its units return to the sale; absent: orders are confirmed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 86400))]
    pub hold_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Product {
    #[schemars(length(min = 1, max = 128))]
    pub sku: String,
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(range(min = 1))]
    pub price: i64,
}

/// KEDA-style bounds for the consumer Deployment: this promotion asks for
/// `clamp(ceil(lag / lagPerReplica), minReplicas, min(maxReplicas, partitions))`
/// replicas, summed with the other promotions sharing the consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("consumers.minReplicas must not exceed consumers.maxReplicas"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumerScaling {
    #[serde(default = "one_i32")]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    #[serde(default = "eight")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    #[serde(default = "thousand")]
    #[schemars(range(min = 1))]
    pub lag_per_replica: i64,
}

impl Default for ConsumerScaling {
    fn default() -> Self {
        ConsumerScaling {
            min_replicas: one_i32(),
            max_replicas: eight(),
            lag_per_replica: thousand(),
        }
    }
}

fn one_i32() -> i32 {
    1
}
fn eight() -> i32 {
    8
}
fn thousand() -> i64 {
    1000
}

/// Where a promotion stands, as written by the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, not yet registered and seeded.
    Pending,
    /// Registered and seeded; the window has not opened.
    Scheduled,
    Active,
    SoldOut,
    Ended,
    Paused,
    /// The spec is invalid (see the Ready condition's message).
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Coupons issued or units sold, as persisted in the service's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    /// Admitted by the counters, not yet persisted (V3 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// Buckets the promotion's counters (and V3 events) are spread over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    /// Units left in the emptiest bucket's counters (V3 only, when every
    /// bucket's counters exist). Near 0 while `remaining` is not: requests
    /// of that bucket's users take units from the other buckets first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lowest_bucket_remaining: Option<i64>,
    /// Lag of the consumer group this promotion's events go through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_lag: Option<i64>,
    /// Replicas the operator set on the shared consumer Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_replicas: Option<i32>,
    /// Counter drift: remaining as the counters say − (quota − issued − pending).
    /// Anything but 0 means Redis and the database disagree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<i64>,
    /// Ready, Registered, CountersSeeded, ConsumersScaled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Why a Promotion is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPromotion {
    #[error("metadata.name is missing")]
    NoName,
    #[error("spec.window.endsAt must be after spec.window.startsAt")]
    Window,
    #[error("type {0} needs exactly the spec.{1} block")]
    Block(&'static str, &'static str),
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    #[error("a Percent discount value must be at most 100")]
    Percent,
    #[error("consumers.minReplicas must not exceed consumers.maxReplicas")]
    Replicas,
    #[error("spec.buckets must be between 1 and {}", promo_contracts::MAX_BUCKETS)]
    Buckets,
    #[error("spec.timeSale.holdSeconds must be between 30 and 86400")]
    HoldSeconds,
}

/// A Promotion that passed validation: its name, its whole spec (window,
/// strategy, consumers…) and the one block its type needs, as a value of
/// that kind — so nothing downstream has to handle a missing block.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub name: String,
    pub spec: PromotionSpec,
    pub offer: Offer,
}

/// What a checked Promotion offers.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    Coupon(CouponBlock),
    TimeSale(TimeSaleBlock),
}

impl Promotion {
    pub fn validate(&self) -> Result<Checked, InvalidPromotion> {
        let name = self.metadata.name.clone().ok_or(InvalidPromotion::NoName)?;
        let s = &self.spec;
        if s.window.ends_at <= s.window.starts_at {
            return Err(InvalidPromotion::Window);
        }
        let positive = |v: i64, what| {
            if v > 0 {
                Ok(())
            } else {
                Err(InvalidPromotion::NotPositive(what))
            }
        };
        let offer = match (s.kind, &s.coupon, &s.time_sale) {
            (PromotionType::Coupon, Some(c), None) => {
                positive(c.quota, "coupon.quota")?;
                positive(c.per_user_limit, "coupon.perUserLimit")?;
                positive(c.discount.value, "coupon.discount.value")?;
                if c.discount.kind == DiscountKind::Percent && c.discount.value > 100 {
                    return Err(InvalidPromotion::Percent);
                }
                Offer::Coupon(c.clone())
            }
            (PromotionType::TimeSale, None, Some(t)) => {
                positive(t.stock, "timeSale.stock")?;
                positive(t.sale_price, "timeSale.salePrice")?;
                positive(t.product.price, "timeSale.product.price")?;
                positive(t.per_user_limit, "timeSale.perUserLimit")?;
                if t.hold_seconds.is_some_and(|h| !(30..=86_400).contains(&h)) {
                    return Err(InvalidPromotion::HoldSeconds);
                }
                Offer::TimeSale(t.clone())
            }
            (PromotionType::Coupon, ..) => return Err(InvalidPromotion::Block("Coupon", "coupon")),
            (PromotionType::TimeSale, ..) => {
                return Err(InvalidPromotion::Block("TimeSale", "timeSale"))
            }
        };
        if let Some(c) = &s.consumers {
            if c.min_replicas > c.max_replicas {
                return Err(InvalidPromotion::Replicas);
            }
        }
        if !(1..=promo_contracts::MAX_BUCKETS).contains(&s.buckets) {
            return Err(InvalidPromotion::Buckets);
        }
        Ok(Checked {
            name,
            spec: s.clone(),
            offer,
        })
    }
}

impl Checked {
    /// The quota (coupons) or stock (time sale).
    pub fn limit(&self) -> i64 {
        match &self.offer {
            Offer::Coupon(c) => c.quota,
            Offer::TimeSale(t) => t.stock,
        }
    }
}

/// An admin API call: method PUT on `path` with `body`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminRequest {
    pub service: PromotionType,
    pub path: String,
    pub body: Value,
}

impl Checked {
    /// The admin call that registers this promotion with its service
    /// (docs/api.md): `PUT /admin/campaigns/{name}` or `PUT /admin/time-sales/{name}`.
    pub fn admin_request(&self) -> AdminRequest {
        let s = &self.spec;
        let window = (
            s.window.starts_at.to_rfc3339(),
            s.window.ends_at.to_rfc3339(),
        );
        match &self.offer {
            Offer::Coupon(c) => {
                let mut discount = json!({
                    "kind": match c.discount.kind { DiscountKind::Fixed => "FIXED", DiscountKind::Percent => "PERCENT" },
                    "value": c.discount.value,
                });
                if let Some(m) = c.discount.max_amount {
                    discount["maxAmount"] = json!(m);
                }
                if let Some(m) = c.discount.min_order_amount {
                    discount["minOrderAmount"] = json!(m);
                }
                let mut body = json!({
                    "quota": c.quota,
                    "perUserLimit": c.per_user_limit,
                    "startsAt": window.0,
                    "endsAt": window.1,
                    "strategy": s.strategy.api_name(),
                    "discount": discount,
                    "paused": s.paused,
                    "buckets": s.buckets,
                });
                if let Some(d) = c.valid_for_days {
                    body["validForDays"] = json!(d);
                }
                AdminRequest {
                    service: PromotionType::Coupon,
                    path: format!("/admin/campaigns/{}", self.name),
                    body,
                }
            }
            Offer::TimeSale(t) => {
                let mut body = json!({
                    "product": {"sku": t.product.sku, "name": t.product.name, "price": t.product.price},
                    "salePrice": t.sale_price,
                    "stock": t.stock,
                    "perUserLimit": t.per_user_limit,
                    "startsAt": window.0,
                    "endsAt": window.1,
                    "strategy": s.strategy.api_name(),
                    "paused": s.paused,
                    "buckets": s.buckets,
                });
                if let Some(hold) = t.hold_seconds {
                    body["holdSeconds"] = hold.into();
                }
                AdminRequest {
                    service: PromotionType::TimeSale,
                    path: format!("/admin/time-sales/{}", self.name),
                    body,
                }
            }
        }
    }
}

/// The CRD manifest (`crds/promotion.yaml`, the chart's copy and
/// `promotion-operator crd` all print exactly this).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = serde_yaml::to_string(&Promotion::crd()).expect("a CRD always serializes");
    format!("# Generated from operator/crd/src/lib.rs by `just crds`; do not edit.\n{crd}")
}

/// Reads every Promotion in a YAML text (several `---` documents allowed).
pub fn parse_manifests(text: &str) -> Result<Vec<Promotion>, serde_yaml::Error> {
    serde_yaml::Deserializer::from_str(text)
        .map(Promotion::deserialize)
        .filter(|r| !matches!(r, Err(e) if e.to_string().contains("EOF while parsing")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUPON: &str = r#"
apiVersion: promo.dev/v1alpha1
kind: Promotion
metadata: { name: bf }
spec:
  type: Coupon
  strategy: Queued
  window: { startsAt: "2026-11-27T00:00:00Z", endsAt: "2026-11-28T00:00:00Z" }
  coupon:
    quota: 100000
    discount: { kind: Percent, value: 10, maxAmount: 30000, minOrderAmount: 50000 }
    validForDays: 30
"#;

    #[test]
    fn coupon_promotion_becomes_the_admin_request() {
        let p = &parse_manifests(COUPON).unwrap()[0];
        let checked = p.validate().unwrap();
        assert!(
            matches!(&checked.offer, super::Offer::Coupon(c) if Some(c) == p.spec.coupon.as_ref()),
            "the checked value carries the coupon block"
        );
        assert_eq!(checked.limit(), p.spec.coupon.as_ref().unwrap().quota);
        let req = checked.admin_request();
        assert_eq!(req.path, "/admin/campaigns/bf");
        assert_eq!(req.body["strategy"], "QUEUED");
        assert_eq!(req.body["perUserLimit"], 1, "defaulted");
        assert_eq!(req.body["discount"]["kind"], "PERCENT");
        assert_eq!(req.body["discount"]["maxAmount"], 30000);
        assert_eq!(req.body["validForDays"], 30);
        assert_eq!(req.body["startsAt"], "2026-11-27T00:00:00+00:00");
    }

    #[test]
    fn refuses_inconsistent_specs() {
        let base = parse_manifests(COUPON).unwrap().remove(0);
        let mut p = base.clone();
        p.spec.window.ends_at = p.spec.window.starts_at;
        assert_eq!(p.validate(), Err(InvalidPromotion::Window));
        let mut p = base.clone();
        p.spec.kind = PromotionType::TimeSale;
        assert_eq!(
            p.validate(),
            Err(InvalidPromotion::Block("TimeSale", "timeSale"))
        );
        let mut p = base.clone();
        p.spec.coupon.as_mut().unwrap().discount.value = 101;
        assert_eq!(p.validate(), Err(InvalidPromotion::Percent));
        let mut p = base.clone();
        p.spec.coupon.as_mut().unwrap().quota = 0;
        assert_eq!(
            p.validate(),
            Err(InvalidPromotion::NotPositive("coupon.quota"))
        );
        let mut p = base;
        p.spec.consumers = Some(ConsumerScaling {
            min_replicas: 3,
            max_replicas: 2,
            lag_per_replica: 10,
        });
        assert_eq!(p.validate(), Err(InvalidPromotion::Replicas));
    }

    #[test]
    fn a_time_sale_passes_its_hold_only_when_it_has_one() {
        let text = include_str!("../../../tests/promotions/valid/time-sale.yaml");
        let p = parse_manifests(text).unwrap().remove(0);
        let req = p.validate().unwrap().admin_request();
        assert_eq!(req.path, "/admin/time-sales/flash-airpods");
        assert_eq!(req.body["holdSeconds"], 600);
        let mut without = p.clone();
        without.spec.time_sale.as_mut().unwrap().hold_seconds = None;
        let req = without.validate().unwrap().admin_request();
        assert!(req.body.get("holdSeconds").is_none(), "{}", req.body);
        let mut short = p;
        short.spec.time_sale.as_mut().unwrap().hold_seconds = Some(29);
        assert_eq!(short.validate(), Err(InvalidPromotion::HoldSeconds));
    }

    #[test]
    fn unknown_fields_are_errors() {
        let bad = COUPON.replace("validForDays: 30", "validForDays: 30\n    colour: red");
        assert!(parse_manifests(&bad).is_err());
    }
}
