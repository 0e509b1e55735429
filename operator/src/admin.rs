//! The services' admin APIs (docs/api.md), as the operator uses them: read a
//! promotion's figures, register (PUT) it. A trait, so reconcile tests can
//! count calls without a service.

use std::time::Duration;

use async_trait::async_trait;
use promotion_crd::{AdminRequest, PromotionType};
use serde_json::Value;

use crate::{platform::PlatformConfig, status::Figures, Error, Result};

#[async_trait]
pub trait Admin: Send + Sync {
    /// The promotion's figures, or `None` when its service does not know it.
    async fn figures(
        &self,
        namespace: &str,
        kind: PromotionType,
        name: &str,
    ) -> Result<Option<Figures>>;
    /// Creates or updates the campaign or sale (an idempotent PUT).
    async fn register(&self, namespace: &str, request: &AdminRequest) -> Result<()>;
}

fn service_name(kind: PromotionType) -> &'static str {
    match kind {
        PromotionType::Coupon => promo_contracts::coupon::SERVICE,
        PromotionType::TimeSale => promo_contracts::timesale::SERVICE,
    }
}

/// Admin calls over HTTP to the in-cluster Services.
pub struct HttpAdmin {
    http: reqwest::Client,
    platform: PlatformConfig,
    token: Option<String>,
}

impl HttpAdmin {
    pub fn new(platform: PlatformConfig, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        HttpAdmin {
            http,
            platform,
            token,
        }
    }

    fn request(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }
}

fn admin_error(kind: PromotionType, message: impl ToString) -> Error {
    Error::Admin {
        service: service_name(kind),
        message: message.to_string(),
    }
}

/// Reads the figures out of a service's answer: the coupon service says
/// `quota`/`issued`, the time-sale service `stock`/`sold`.
pub fn parse_figures(kind: PromotionType, body: &Value) -> Option<Figures> {
    let (limit, issued) = match kind {
        PromotionType::Coupon => ("quota", "issued"),
        PromotionType::TimeSale => ("stock", "sold"),
    };
    Some(Figures {
        limit: body.get(limit)?.as_i64()?,
        issued: body.get(issued)?.as_i64()?,
        remaining: body.get("remaining")?.as_i64()?,
        pending: body.get("pending").and_then(Value::as_i64).unwrap_or(0),
    })
}

#[async_trait]
impl Admin for HttpAdmin {
    async fn figures(
        &self,
        namespace: &str,
        kind: PromotionType,
        name: &str,
    ) -> Result<Option<Figures>> {
        let path = match kind {
            PromotionType::Coupon => format!("/admin/campaigns/{name}"),
            PromotionType::TimeSale => format!("/time-sales/{name}"),
        };
        let url = format!("{}{path}", self.platform.admin_base(kind, namespace));
        let resp = self
            .request(self.http.get(&url))
            .send()
            .await
            .map_err(|e| admin_error(kind, format!("GET {url}: {e}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(admin_error(kind, format!("GET {url}: {}", resp.status())));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| admin_error(kind, format!("GET {url}: {e}")))?;
        parse_figures(kind, &body)
            .map(Some)
            .ok_or_else(|| admin_error(kind, format!("GET {url}: unexpected answer {body}")))
    }

    async fn register(&self, namespace: &str, request: &AdminRequest) -> Result<()> {
        let kind = request.service;
        let url = format!(
            "{}{}",
            self.platform.admin_base(kind, namespace),
            request.path
        );
        let resp = self
            .request(self.http.put(&url).json(&request.body))
            .send()
            .await
            .map_err(|e| admin_error(kind, format!("PUT {url}: {e}")))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let detail = resp.text().await.unwrap_or_default();
        Err(admin_error(kind, format!("PUT {url}: {status} {detail}")))
    }
}
