//! The agent API (`/v1/agent/…`, bearer token of a configured agent).
//!
//! Every call that names a chat checks the agent's tenant and groups first
//! ([`Agent::may_handle`]); a chat the agent may not see answers 404, exactly like one
//! that does not exist, so ids cannot be probed.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;

use super::error::{query_rejection, ApiError, ApiJson};
use super::{bearer, now, push_to_channels, AgentEvent, AppState, Client};
use crate::handoff::{Agent, Ticket, TicketId, TicketState};
use crate::store::Speaker;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/agent/queue", get(queue))
        .route("/v1/agent/claim", post(claim))
        .route("/v1/agent/chats/{id}", get(chat))
        .route("/v1/agent/chats/{id}/reply", post(reply))
        .route("/v1/agent/chats/{id}/release", post(release))
        .route("/v1/agent/chats/{id}/close", post(close))
        .route("/v1/agent/events", get(events))
        .route("/v1/agent/search", get(search))
}

/// The signed-in agent, from the bearer token or the desk's session cookie.
pub(super) struct Me(pub Agent);

impl FromRequestParts<Arc<AppState>> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let Some(token) = bearer(&parts.headers) else {
            // Browsers (the desk) sign in once and send a session cookie instead.
            return crate::channels::web::agent_from_cookie(state, &parts.method, &parts.headers)
                .map(Me);
        };
        let client = Client::of(state, parts);
        let mut agent = None;
        state.check_token(&client, || {
            agent = state.engine.agents().authenticate(token).ok().cloned();
            agent.is_some()
        })?;
        match agent {
            Some(a) => Ok(Me(a)),
            None => {
                metrics::counter!("kefu_errors_total", "kind" => "agent_unauthorized").increment(1);
                tracing::warn!("agent request with an unknown token refused");
                Err(ApiError::unauthorized())
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketSummary {
    pub ticket: TicketId,
    /// `queued`, `claimed`, `closed`, `cancelled`, `returned`.
    pub state: String,
    pub agent: Option<String>,
    pub tenant: String,
    pub customer: String,
    pub group: Option<String>,
    pub enqueued_at: i64,
    pub waited_secs: i64,
    pub reason: String,
    pub intent: Option<String>,
    pub left_message: bool,
    /// `follower` or `verified` (bound a card): what the customer proved, never which card.
    pub identity: String,
}

fn state_name(s: &TicketState) -> (&'static str, Option<String>) {
    match s {
        TicketState::Queued => ("queued", None),
        TicketState::Claimed { agent, .. } => ("claimed", Some(agent.clone())),
        TicketState::Closed { agent, .. } => ("closed", Some(agent.clone())),
        TicketState::Cancelled { .. } => ("cancelled", None),
        TicketState::Returned { .. } => ("returned", None),
    }
}

fn summary(t: &Ticket, now: i64) -> TicketSummary {
    let (state, agent) = state_name(&t.state);
    TicketSummary {
        ticket: t.id,
        state: state.into(),
        agent,
        tenant: t.customer.tenant.clone(),
        customer: t.customer.user.clone(),
        group: t.group.clone(),
        enqueued_at: t.enqueued_at,
        waited_secs: now.saturating_sub(t.enqueued_at).max(0),
        reason: t.reason.clone(),
        intent: t.intent.clone(),
        left_message: t.left_message,
        identity: match t.auth {
            crate::intents::AuthLevel::Follower => "follower",
            crate::intents::AuthLevel::Verified => "verified",
        }
        .into(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// Chats this agent may take, oldest first.
    pub queued: Vec<TicketSummary>,
    /// Chats this agent holds.
    pub mine: Vec<TicketSummary>,
}

/// The queue as this agent may see it, and their own chats.
#[utoipa::path(get, path = "/v1/agent/queue", security(("bearer" = [])),
    responses((status = 200, body = QueueView), (status = 401, body = super::error::ErrorBody)))]
pub(super) async fn queue(
    State(state): State<Arc<AppState>>,
    Me(me): Me,
) -> Result<ApiJson<QueueView>, ApiError> {
    let view = state
        .blocking(move |e| {
            let t = now();
            let queued = e.queue().queued(usize::MAX)?;
            let mine = e.queue().claimed_by(&me.id)?;
            Ok(QueueView {
                queued: queued
                    .iter()
                    .filter(|q| me.may_handle(q))
                    .take(200)
                    .map(|q| summary(q, t))
                    .collect(),
                mine: mine.iter().map(|q| summary(q, t)).collect(),
            })
        })
        .await?;
    Ok(ApiJson(view))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// A chat to claim; without it, the oldest this agent may take.
    #[serde(default)]
    pub ticket: Option<TicketId>,
}

/// A JSON body that may be left out entirely (`{}` then).
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

/// Loads a ticket this agent may see, or answers 404.
fn visible(e: &crate::engine::Engine, me: &Agent, id: TicketId) -> crate::Result<Ticket> {
    match e.queue().ticket(id)? {
        Some(t) if me.may_handle(&t) => Ok(t),
        _ => Err(crate::Error::NotFound(format!("chat {id}"))),
    }
}

/// Claim a chat (by id, or the oldest this agent may take).
#[utoipa::path(post, path = "/v1/agent/claim", request_body = ClaimRequest, security(("bearer" = [])),
    responses((status = 200, body = TicketSummary), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub(super) async fn claim(
    State(state): State<Arc<AppState>>,
    Me(me): Me,
    body: axum::body::Bytes,
) -> Result<ApiJson<TicketSummary>, ApiError> {
    let wanted = optional_json::<ClaimRequest>(&body)?.ticket;
    let t = state
        .blocking(move |e| {
            let t = now();
            match wanted {
                Some(id) => {
                    visible(e, &me, id)?;
                    e.queue().claim(id, &me.id, t)
                }
                None => e
                    .queue()
                    .claim_next(&me, t)?
                    .ok_or_else(|| crate::Error::NotFound("no chat is waiting for you".into())),
            }
        })
        .await?;
    let claimed_at = match &t.state {
        TicketState::Claimed { at, .. } => *at,
        _ => now(),
    };
    let waited = claimed_at - t.enqueued_at;
    metrics::histogram!("kefu_handoff_wait_seconds").record(waited.max(0) as f64);
    state.agent_event(AgentEvent::of("chat_claimed", &t));
    state.customer_changed(&t.customer, None);
    Ok(ApiJson(summary(&t, now())))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LineView {
    pub at: i64,
    /// `customer`, `bot`, `agent`.
    pub from: String,
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatView {
    #[serde(flatten)]
    pub ticket: TicketSummary,
    /// The knowledge-base questions the bot last offered.
    pub candidates: Vec<String>,
    /// The bot conversation before the hand-off (masked).
    pub transcript: Vec<LineView>,
    /// Messages since the hand-off (masked), with their sequence numbers.
    pub messages: Vec<LineView>,
}

fn speaker(s: Speaker) -> String {
    match s {
        Speaker::Customer => "customer",
        Speaker::Bot => "bot",
        Speaker::Agent => "agent",
    }
    .into()
}

/// One chat: masked transcript, intent, the bot's last options, messages.
#[utoipa::path(get, path = "/v1/agent/chats/{id}", security(("bearer" = [])),
    params(("id" = u64, Path, description = "chat (ticket) id")),
    responses((status = 200, body = ChatView), (status = 404, body = super::error::ErrorBody)))]
pub(super) async fn chat(
    State(state): State<Arc<AppState>>,
    Me(me): Me,
    Path(id): Path<TicketId>,
) -> Result<ApiJson<ChatView>, ApiError> {
    let view = state
        .blocking(move |e| {
            let t = visible(e, &me, id)?;
            let messages = e.queue().messages(id, 0)?;
            Ok(ChatView {
                ticket: summary(&t, now()),
                candidates: t.candidates.clone(),
                transcript: t
                    .transcript
                    .iter()
                    .map(|l| LineView {
                        at: l.at,
                        from: speaker(l.from),
                        text: l.text.clone(),
                    })
                    .collect(),
                messages: messages
                    .iter()
                    .map(|m| LineView {
                        at: m.at,
                        from: speaker(m.from),
                        text: m.text.clone(),
                    })
                    .collect(),
            })
        })
        .await?;
    Ok(ApiJson(view))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyRequest {
    pub text: String,
}

const MAX_AGENT_TEXT: usize = 2000;

/// Send a message to the customer of a chat this agent holds.
#[utoipa::path(post, path = "/v1/agent/chats/{id}/reply", request_body = ReplyRequest, security(("bearer" = [])),
    params(("id" = u64, Path, description = "chat (ticket) id")),
    responses((status = 200, description = "sent"), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub(super) async fn reply(
    State(state): State<Arc<AppState>>,
    Me(me): Me,
    Path(id): Path<TicketId>,
    ApiJson(body): ApiJson<ReplyRequest>,
) -> Result<ApiJson<serde_json::Value>, ApiError> {
    let text = body.text.trim().to_owned();
    if text.is_empty() || text.chars().count() > MAX_AGENT_TEXT {
        return Err(ApiError::bad_request(
            "invalid_input",
            format!("text must be 1-{MAX_AGENT_TEXT} characters"),
        ));
    }
    let (t, seq) = state
        .blocking(move |e| {
            let t = visible(e, &me, id)?;
            let m = e
                .queue()
                .post(id, Speaker::Agent, Some(&me.id), &text, now())?;
            // Records the message in the customer's transcript and marks it delivered
            // for channels that read the outbox.
            e.outbox(&t.customer)?;
            Ok((t, m.seq))
        })
        .await?;
    deliver(&state, &t).await;
    Ok(ApiJson(serde_json::json!({ "seq": seq })))
}

/// Wakes the customer's stream and pushes the agent's latest words to push channels.
async fn deliver(state: &Arc<AppState>, t: &Ticket) {
    let id = t.id;
    if let Ok(msgs) = state.blocking(move |e| e.queue().messages(id, 0)).await {
        if let Some(last) = msgs.iter().rev().find(|m| m.from == Speaker::Agent) {
            push_to_channels(state, &t.customer, &last.text).await;
        }
    }
    state.customer_changed(&t.customer, None);
}

/// Put a held chat back in the queue, keeping its place.
#[utoipa::path(post, path = "/v1/agent/chats/{id}/release", security(("bearer" = [])),
    params(("id" = u64, Path, description = "chat (ticket) id")),
    responses((status = 200, body = TicketSummary), (status = 404, body = super::error::ErrorBody)))]
pub(super) async fn release(
    State(state): State<Arc<AppState>>,
    Me(me): Me,
    Path(id): Path<TicketId>,
) -> Result<ApiJson<TicketSummary>, ApiError> {
    let t = state
        .blocking(move |e| {
            visible(e, &me, id)?;
            e.queue().release(id, &me.id, now())
        })
        .await?;
    state.agent_event(AgentEvent::of("chat_released", &t));
    state.customer_changed(&t.customer, None);
    Ok(ApiJson(summary(&t, now())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    #[serde(default)]
    pub summary: Option<String>,
}

/// Close a held chat with an optional summary; the bot serves the customer again.
#[utoipa::path(post, path = "/v1/agent/chats/{id}/close", request_body = CloseRequest, security(("bearer" = [])),
    params(("id" = u64, Path, description = "chat (ticket) id")),
    responses((status = 200, body = TicketSummary), (status = 404, body = super::error::ErrorBody)))]
pub(super) async fn close(
    State(state): State<Arc<AppState>>,
    Me(me): Me,
    Path(id): Path<TicketId>,
    body: axum::body::Bytes,
) -> Result<ApiJson<TicketSummary>, ApiError> {
    let summary_text = optional_json::<CloseRequest>(&body)?
        .summary
        .map(|s| s.chars().take(MAX_AGENT_TEXT).collect::<String>());
    let t = state
        .blocking(move |e| {
            visible(e, &me, id)?;
            let t = e.close_chat(id, &me.id, summary_text.as_deref(), now())?;
            e.outbox(&t.customer)?;
            Ok(t)
        })
        .await?;
    state.agent_event(AgentEvent::of("chat_closed", &t));
    deliver(&state, &t).await;
    Ok(ApiJson(summary(&t, now())))
}

/// Live queue activity this agent may see, as server-sent events (`data` is JSON with
/// `type` and `ticket`).
#[utoipa::path(get, path = "/v1/agent/events", security(("bearer" = [])),
    responses((status = 200, description = "text/event-stream")))]
pub(super) async fn events(
    State(state): State<Arc<AppState>>,
    Me(me): Me,
) -> impl axum::response::IntoResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    let mut events = state.agents.subscribe();
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        if me.tenant.as_ref().is_some_and(|t| *t != ev.tenant) {
                            continue;
                        }
                        if let (Some(g), false) = (&ev.group, me.groups.is_empty()) {
                            if !me.groups.contains(g) {
                                continue;
                            }
                        }
                        let data = serde_json::to_string(&ev).unwrap_or_default();
                        if tx.send(Ok(Event::default().event(ev.kind).data(data))).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Missed some: tell the desk to reload the queue.
                        if tx.send(Ok(Event::default().event("resync").data("{}"))).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct SearchQuery {
    q: String,
    #[serde(default)]
    branch: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    pub id: String,
    pub question: String,
    pub answer: String,
}

/// Knowledge-base search for agents, to answer from the same content as the bot.
#[utoipa::path(get, path = "/v1/agent/search", params(SearchQuery), security(("bearer" = [])),
    responses((status = 200, body = [SearchHit])))]
pub(super) async fn search(
    State(state): State<Arc<AppState>>,
    Me(_me): Me,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<SearchHit>>, ApiError> {
    let Query(q) = query.map_err(query_rejection)?;
    if q.q.trim().is_empty() || q.q.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "invalid_input",
            "q must be 1-200 characters",
        ));
    }
    let today = time::OffsetDateTime::now_utc()
        .to_offset(
            time::UtcOffset::from_hms(state.engine.config().utc_offset_hours, 0, 0)
                .unwrap_or(time::UtcOffset::UTC),
        )
        .date();
    let hits = state
        .blocking(move |e| e.search(&q.q, q.branch.as_deref(), today, 8))
        .await?;
    Ok(ApiJson(
        hits.into_iter()
            .map(|(id, question, answer)| SearchHit {
                id,
                question,
                answer,
            })
            .collect(),
    ))
}
