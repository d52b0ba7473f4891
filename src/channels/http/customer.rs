//! The customer API: a message in, the structured reply out; a stream for what
//! arrives later (agent messages, the chat's state, notices).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;

use super::error::{query_rejection, ApiError, ApiJson};
use super::{now, AgentEvent, AppState};
use crate::engine::{InboundMessage, Reply, ReplyKind};
use crate::store::{Speaker, UserKey};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/messages", post(post_message))
        .route("/v1/messages/stream", get(stream))
}

const DEFAULT_TENANT: &str = "bank";

/// A customer message from a channel (web widget, app backend).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// The customer's id in the channel (1–128 bytes).
    pub user: String,
    pub text: String,
    /// The bank; defaults to "bank".
    #[serde(default)]
    pub tenant: Option<String>,
    /// The customer's branch code: branch entries answer only them.
    #[serde(default)]
    pub branch: Option<String>,
    /// The channel's id for this message: a repeat returns the stored reply and
    /// changes nothing.
    #[serde(default)]
    pub message_id: Option<String>,
    /// The channel's name for metrics ("web", "app"); defaults to "api".
    #[serde(default)]
    pub channel: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OptionBody {
    pub number: usize,
    pub label: String,
    pub entry: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HandoffBody {
    pub ticket: u64,
    /// `queued`, `claimed`, `cancelled`.
    pub state: String,
    pub position: Option<usize>,
    pub wait_minutes: Option<u32>,
}

/// The reply as channels render it: text, numbered options, hand-off status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyBody {
    /// `answer`, `clarify`, `fallback`, `welcome`, `intent`, `handoff`, `relayed`,
    /// `notice`.
    pub kind: String,
    pub text: String,
    pub options_title: Option<String>,
    pub options: Vec<OptionBody>,
    pub entry: Option<String>,
    pub intent: Option<String>,
    pub handoff: Option<HandoffBody>,
}

impl From<&Reply> for ReplyBody {
    fn from(r: &Reply) -> Self {
        ReplyBody {
            kind: kind_name(r.kind).to_owned(),
            text: r.text.clone(),
            options_title: r.options_title.clone(),
            options: r
                .options
                .iter()
                .map(|o| OptionBody {
                    number: o.number,
                    label: o.label.clone(),
                    entry: o.entry.clone(),
                })
                .collect(),
            entry: r.entry.clone(),
            intent: r.intent.clone(),
            handoff: r.handoff.as_ref().map(|h| HandoffBody {
                ticket: h.ticket,
                state: h.state.clone(),
                position: h.position,
                wait_minutes: h.wait_minutes,
            }),
        }
    }
}

fn kind_name(k: ReplyKind) -> &'static str {
    match k {
        ReplyKind::Answer => "answer",
        ReplyKind::Clarify => "clarify",
        ReplyKind::Fallback => "fallback",
        ReplyKind::Welcome => "welcome",
        ReplyKind::Intent => "intent",
        ReplyKind::Handoff => "handoff",
        ReplyKind::Relayed => "relayed",
        ReplyKind::Notice => "notice",
    }
}

fn label(value: Option<&str>, max: usize) -> String {
    let v = value.unwrap_or("api");
    if v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        v.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Answer one customer message.
#[utoipa::path(post, path = "/v1/messages", request_body = MessageRequest,
    responses((status = 200, body = ReplyBody), (status = 400, body = super::error::ErrorBody),
              (status = 413, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody)))]
pub(super) async fn post_message(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<MessageRequest>,
) -> Result<ApiJson<ReplyBody>, ApiError> {
    let tenant = req.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned());
    let key = UserKey::new(tenant.clone(), req.user.clone());
    if !state.limiter.allow(&key) {
        metrics::counter!("kefu_errors_total", "kind" => "rate_limited").increment(1);
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many messages in a short time; please wait a moment",
        ));
    }
    let channel = label(req.channel.as_deref(), 16);
    let msg = InboundMessage {
        tenant,
        branch: req.branch,
        user: req.user,
        channel: channel.clone(),
        text: req.text,
        message_id: req.message_id,
        at: now(),
        event: None,
    };
    let started = Instant::now();
    let reply = state.blocking(move |e| e.handle(&msg)).await?;
    let band = match reply.kind {
        ReplyKind::Answer => "confident",
        ReplyKind::Clarify => "uncertain",
        ReplyKind::Fallback => "none",
        _ => "other",
    };
    metrics::histogram!("kefu_message_seconds", "channel" => channel.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("kefu_messages_total", "channel" => channel, "band" => band,
        "intent" => reply.intent.clone().unwrap_or_else(|| "none".into()))
    .increment(1);
    if let Some(h) = &reply.handoff {
        let kind = match (reply.kind, h.state.as_str()) {
            (_, "cancelled") => "chat_cancelled",
            (ReplyKind::Relayed, _) => "customer_message",
            (_, _) if reply.intent.is_some() || h.position.is_some() => "chat_queued",
            _ => "customer_message",
        };
        state.agent_event(AgentEvent {
            kind,
            ticket: h.ticket,
            tenant: key.tenant.clone(),
            group: None,
        });
    }
    Ok(ApiJson(ReplyBody::from(&reply)))
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub(super) struct StreamQuery {
    user: String,
    #[serde(default)]
    tenant: Option<String>,
    /// Resume after this event id (the `Last-Event-ID` header wins).
    #[serde(default)]
    after: Option<u64>,
}

/// What arrives for a customer later, as server-sent events: `agent_message`
/// (id = the message's sequence number), `handoff` (the chat's state), `notice`.
#[utoipa::path(get, path = "/v1/messages/stream", params(StreamQuery),
    responses((status = 200, description = "text/event-stream")))]
pub(super) async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let Query(q) = query.map_err(query_rejection)?;
    if q.user.is_empty() || q.user.len() > 128 {
        return Err(ApiError::bad_request(
            "invalid_input",
            "user must be 1-128 bytes",
        ));
    }
    let key = UserKey::new(q.tenant.unwrap_or_else(|| DEFAULT_TENANT.into()), q.user);
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(q.after);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(customer_feed(state, key, resume, tx));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

/// Feeds one customer's stream until the client goes away or the server stops.
async fn customer_feed(
    state: Arc<AppState>,
    key: UserKey,
    resume: Option<u64>,
    tx: tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
) {
    let mut signals = state.customers.subscribe();
    let mut shutdown = state.shutdown.clone();
    // Without a cursor, a new stream starts at the present: earlier messages were
    // delivered to the stream the client had before (or are in its transcript).
    let mut cursor = match resume {
        Some(c) => c,
        None => {
            let k = key.clone();
            match state.blocking(move |e| e.messages_since(&k, 0)).await {
                Ok((_, m)) => m.last().map(|m| m.seq).unwrap_or(0),
                Err(_) => return,
            }
        }
    };
    let mut last_state: Option<String> = None;
    loop {
        let k = key.clone();
        let after = cursor;
        let Ok((ticket, messages)) = state.blocking(move |e| e.messages_since(&k, after)).await
        else {
            return;
        };
        for m in messages {
            if m.from == Speaker::Agent {
                let data = serde_json::json!({"seq": m.seq, "at": m.at, "text": m.text});
                let ev = Event::default()
                    .id(m.seq.to_string())
                    .event("agent_message")
                    .data(data.to_string());
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            cursor = m.seq;
        }
        if let Some(t) = ticket {
            let (name, agent) = match &t.state {
                crate::handoff::TicketState::Queued => ("queued", None),
                crate::handoff::TicketState::Claimed { agent, .. } => {
                    ("claimed", Some(agent.clone()))
                }
                crate::handoff::TicketState::Closed { .. } => ("closed", None),
                crate::handoff::TicketState::Cancelled { .. } => ("cancelled", None),
                crate::handoff::TicketState::Returned { .. } => ("returned", None),
            };
            let label = format!("{}:{name}", t.id);
            if last_state.as_deref() != Some(label.as_str()) {
                let agent_name =
                    agent.and_then(|a| state.engine.agents().get(&a).map(|a| a.name.clone()));
                let data = serde_json::json!({"ticket": t.id, "state": name, "agent": agent_name});
                if tx
                    .send(Ok(Event::default().event("handoff").data(data.to_string())))
                    .await
                    .is_err()
                {
                    return;
                }
                last_state = Some(label);
            }
        }
        // Wait for a signal for this customer; re-read at least every 20 s regardless.
        let deadline = tokio::time::sleep(Duration::from_secs(20));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                s = signals.recv() => match s {
                    Ok(s) if s.key == key => {
                        if let Some(n) = s.notice {
                            let body = serde_json::to_string(&ReplyBody::from(&n)).unwrap_or_default();
                            if tx.send(Ok(Event::default().event("notice").data(body))).await.is_err() {
                                return;
                            }
                        }
                        break;
                    }
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = &mut deadline => break,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
        if state.shutting_down() {
            return;
        }
    }
}
