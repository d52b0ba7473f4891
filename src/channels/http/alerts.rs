//! Transaction alerts from the bank's system (微信动账提醒): `POST /v1/backend/alerts`
//! with the alerts token. Each alert goes, masked, to every chat user with a live
//! binding of that card, through their channel (WeChat 客服消息, the web stream) and
//! into their transcript. Alerts for unbound or expired bindings are dropped and
//! counted. A repeated `alert_id` (the bank retrying) is delivered once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson};
use super::{bearer, push_to_channels, AppState, Client};
use crate::engine::account::AlertEvent;
use crate::engine::{Reply, ReplyKind};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/backend/alerts", post(alert))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRequest {
    /// The bank's id for this movement: a retry with the same id is delivered once.
    pub alert_id: String,
    pub tenant: String,
    /// The bank's customer id.
    pub customer: String,
    /// Last four digits of the card.
    pub card_tail: String,
    /// Signed amount in fen: income positive, spending negative.
    pub amount: i64,
    #[serde(default)]
    pub balance_after: Option<i64>,
    #[serde(default)]
    pub description: String,
    /// Unix seconds of the movement.
    pub at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertResult {
    pub delivered: usize,
    /// Bindings that were not (or no longer) valid.
    pub dropped: usize,
    /// Deliveries skipped because this alert id was delivered before.
    pub duplicates: usize,
}

/// Deliver a transaction alert to the customers who bound the card.
#[utoipa::path(post, path = "/v1/backend/alerts", request_body = AlertRequest, security(("bearer" = [])),
    responses((status = 200, body = AlertResult), (status = 401, body = super::error::ErrorBody)))]
pub(super) async fn alert(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AlertRequest>,
) -> Result<ApiJson<AlertResult>, ApiError> {
    if !state.check_token(&client, || state.alerts_ok(bearer(&headers)))? {
        metrics::counter!("kefu_errors_total", "kind" => "alerts_unauthorized").increment(1);
        return Err(ApiError::unauthorized());
    }
    if req.alert_id.is_empty() || req.alert_id.len() > 100 || req.card_tail.len() != 4 {
        return Err(ApiError::bad_request(
            "invalid_input",
            "alert_id must be 1-100 bytes and card_tail 4 digits",
        ));
    }
    let dedup = format!("alert:{}", req.alert_id);
    let event = AlertEvent {
        tenant: req.tenant,
        customer: req.customer,
        card_tail: req.card_tail,
        amount: req.amount,
        balance_after: req.balance_after,
        description: req.description,
        at: req.at,
    };
    let (notices, fresh) = state
        .blocking(move |e| {
            let notices = e.alert_notices(&event)?;
            let mut fresh = Vec::new();
            for (key, text) in &notices.deliver {
                if e.record_notice(key, text, Some(&dedup), super::now())? {
                    fresh.push((key.clone(), text.clone()));
                }
            }
            Ok((notices, fresh))
        })
        .await?;
    metrics::counter!("kefu_alerts_total", "result" => "dropped").increment(notices.dropped as u64);
    metrics::counter!("kefu_alerts_total", "result" => "delivered").increment(fresh.len() as u64);
    for (key, text) in &fresh {
        push_to_channels(&state, key, text).await;
        let mut notice = Reply::new_public(ReplyKind::Notice, text.clone());
        notice.intent = Some("transaction_alert".into());
        state.customer_changed(key, Some(notice));
    }
    Ok(ApiJson(AlertResult {
        delivered: fresh.len(),
        dropped: notices.dropped,
        duplicates: notices.deliver.len() - fresh.len(),
    }))
}
