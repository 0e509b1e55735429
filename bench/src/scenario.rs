//! What a run sends and how the target is prepared: the scenarios, the
//! plan of requests, and the JSON client that sets campaigns and sales up.

use anyhow::bail;
use clap::ValueEnum;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scenario {
    /// The cheapest route of the same server (GET /healthz): the box's HTTP limit.
    Ceiling,
    CouponV1,
    CouponV2,
    CouponV3,
    TimesaleV1,
    TimesaleV2,
    TimesaleV3,
    PointsEarn,
    PointsUse,
    PointsBalance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Model {
    Closed,
    Open,
}

/// Users the point scenarios spread over.
pub(crate) const POINT_USERS: u64 = 1000;

/// Points each `points-use` user starts with.
pub(crate) const POINT_SEED: i64 = 1_000_000_000;

pub(crate) struct Plan {
    pub(crate) scenario: Scenario,
    pub(crate) run: String,
    pub(crate) key: String,
}

/// One request of the load, formatted once and sent as is.
pub(crate) struct Req {
    pub(crate) method: hyper::Method,
    pub(crate) path: String,
    pub(crate) body: Option<String>,
    pub(crate) idempotency_key: Option<String>,
}

impl Plan {
    /// The i-th request. Bodies are formatted directly: the load generator
    /// shares the cores with the server, so every microsecond it spends is
    /// one the server does not get.
    pub(crate) fn request(&self, i: u64) -> Req {
        use hyper::Method;
        let run = &self.run;
        let (method, path, body, idempotency_key) = match self.scenario {
            Scenario::Ceiling => (Method::GET, "/healthz".into(), None, None),
            Scenario::CouponV1 | Scenario::CouponV2 | Scenario::CouponV3 => (
                Method::POST,
                format!("/{}/campaigns/{}/issue", self.scenario_version(), self.key),
                Some(format!(r#"{{"userId":"b{run}-{i}"}}"#)),
                None,
            ),
            Scenario::TimesaleV1 | Scenario::TimesaleV2 | Scenario::TimesaleV3 => (
                Method::POST,
                format!(
                    "/{}/time-sales/{}/orders",
                    self.scenario_version(),
                    self.key
                ),
                Some(format!(r#"{{"userId":"b{run}-{i}","quantity":1}}"#)),
                None,
            ),
            Scenario::PointsEarn | Scenario::PointsUse => {
                let op = if self.scenario == Scenario::PointsEarn {
                    "earn"
                } else {
                    "use"
                };
                (
                    Method::POST,
                    format!("/users/{}/points/{op}", self.point_user(i % POINT_USERS)),
                    Some(r#"{"amount":1,"reason":"bench"}"#.to_string()),
                    Some(format!("{run}-{i}")),
                )
            }
            Scenario::PointsBalance => (
                Method::GET,
                format!("/users/{}/points", self.point_user(0)),
                None,
                None,
            ),
        };
        Req {
            method,
            path,
            body,
            idempotency_key,
        }
    }

    pub(crate) fn is_queued(&self) -> bool {
        matches!(self.scenario, Scenario::CouponV3 | Scenario::TimesaleV3)
    }

    /// Where the campaign's or sale's figures are read, and the field
    /// counting what is stored.
    pub(crate) fn figures(&self) -> (String, &'static str) {
        if self.key_is_campaign() {
            (format!("/admin/campaigns/{}", self.key), "issued")
        } else {
            (format!("/time-sales/{}", self.key), "sold")
        }
    }

    pub(crate) fn key_is_campaign(&self) -> bool {
        matches!(
            self.scenario,
            Scenario::CouponV1 | Scenario::CouponV2 | Scenario::CouponV3
        )
    }

    pub(crate) fn scenario_version(&self) -> &'static str {
        match self.scenario {
            Scenario::CouponV1 | Scenario::TimesaleV1 => "v1",
            Scenario::CouponV2 | Scenario::TimesaleV2 => "v2",
            _ => "v3",
        }
    }

    pub(crate) fn point_user(&self, n: u64) -> String {
        format!("p{}-{n}", self.run)
    }
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) admin_token: Option<String>,
}

impl Client {
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if path.starts_with("/admin/") {
            if let Some(t) = &self.admin_token {
                req = req.bearer_auth(t);
            }
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// Creates what the scenario needs; returns the campaign or sale id.
pub(crate) async fn setup(
    c: &Client,
    scenario: Scenario,
    run: &str,
    quota: i64,
    buckets: u32,
) -> anyhow::Result<String> {
    let (start, end) = (
        "2020-01-01T00:00:00Z".to_string(),
        format!("{}-01-01T00:00:00Z", 2100),
    );
    let strategy = match scenario {
        Scenario::CouponV1 | Scenario::TimesaleV1 => "DATABASE",
        Scenario::CouponV2 | Scenario::TimesaleV2 => "REDIS_LOCK",
        _ => "QUEUED",
    };
    let key = format!("bench-{run}");
    let (path, body) = match scenario {
        Scenario::CouponV1 | Scenario::CouponV2 | Scenario::CouponV3 => (
            format!("/admin/campaigns/{key}"),
            json!({"quota": quota, "perUserLimit": 1, "startsAt": start, "endsAt": end,
                   "strategy": strategy, "discount": {"kind": "FIXED", "value": 1000}, "buckets": buckets}),
        ),
        Scenario::TimesaleV1 | Scenario::TimesaleV2 | Scenario::TimesaleV3 => (
            format!("/admin/time-sales/{key}"),
            json!({"product": {"sku": "BENCH", "name": "Bench", "price": 1000}, "salePrice": 900,
                   "stock": quota, "perUserLimit": 1, "startsAt": start, "endsAt": end, "strategy": strategy,
                   "buckets": buckets}),
        ),
        Scenario::PointsUse | Scenario::PointsBalance => {
            let plan = Plan {
                scenario,
                run: run.into(),
                key: key.clone(),
            };
            let users = if scenario == Scenario::PointsUse {
                POINT_USERS
            } else {
                1
            };
            for n in 0..users {
                let u = plan.point_user(n);
                let (s, b) = c
                    .send(
                        reqwest::Method::POST,
                        &format!("/users/{u}/points/earn"),
                        Some(&json!({"amount": POINT_SEED, "reason": "bench seed"})),
                        Some(&format!("seed-{u}")),
                    )
                    .await?;
                if s != 200 {
                    bail!("seeding {u} answered {s}: {b}");
                }
            }
            return Ok(key);
        }
        Scenario::Ceiling | Scenario::PointsEarn => return Ok(key),
    };
    let (s, b) = c
        .send(reqwest::Method::PUT, &path, Some(&body), None)
        .await?;
    if s != 201 && s != 200 {
        bail!("creating {path} answered {s}: {b}");
    }
    Ok(key)
}
