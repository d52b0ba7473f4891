//! `kefu serve`: the HTTP service that channels, agents and content editors connect to.
//!
//! This module is the only one that knows HTTP and JSON. It turns requests into
//! [`InboundMessage`]s and engine calls, runs the (synchronous, blocking) engine on
//! tokio's blocking pool with a deadline, and renders replies and errors. Threading
//! contract: handlers never block an async worker; every engine or store call goes
//! through [`AppState::blocking`].
//!
//! Live delivery: agent replies, queue changes and timeout notices reach customers over
//! server-sent events (`GET /v1/messages/stream`), and queue activity reaches agents over
//! `GET /v1/agent/events`. Both are driven by in-process broadcast channels that only say
//! "look again"; what is sent is always read from the store, with the SSE event id as a
//! cursor, so a client that reconnects (sending `Last-Event-ID`) gets exactly what it
//! missed.

mod admin;
mod agent;
mod alerts;
mod customer;
pub mod error;
mod ops;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::config::ServerConfig;
use crate::engine::{Engine, Reply};
use crate::handoff::{resolve_secret, Ticket, TicketId};
use crate::store::UserKey;
pub use error::{ApiError, ApiJson};

/// Something changed for one customer: an agent wrote, the chat changed state, or a
/// notice (timeout) is to be shown. Streams re-read the store when they see their key.
#[derive(Debug, Clone)]
pub struct CustomerSignal {
    pub key: UserKey,
    pub notice: Option<Reply>,
}

/// Every [`AgentEvent::kind`].
const AGENT_EVENT_KINDS: [&str; 7] = [
    "chat_queued",
    "customer_message",
    "chat_cancelled",
    "chat_claimed",
    "chat_released",
    "chat_closed",
    "chat_timed_out",
];

/// Queue activity for agents' live views.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentEvent {
    /// `chat_queued`, `customer_message`, `chat_cancelled`, `chat_claimed`,
    /// `chat_released`, `chat_closed`, `chat_timed_out`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ticket: TicketId,
    #[serde(skip)]
    pub tenant: String,
    #[serde(skip)]
    pub group: Option<String>,
}

impl AgentEvent {
    pub fn of(kind: &'static str, t: &Ticket) -> Self {
        AgentEvent {
            kind,
            ticket: t.id,
            tenant: t.customer.tenant.clone(),
            group: t.group.clone(),
        }
    }
}

/// Pushes messages to customers on channels that cannot hold a stream open (WeChat's
/// 客服消息 API). Streams of the web channel need none.
pub trait CustomerPush: Send + Sync {
    /// Whether this pusher serves the customer (e.g. user ids starting with `wx:`).
    fn serves(&self, key: &UserKey) -> bool;
    /// Sends a text to the customer.
    fn push<'a>(
        &'a self,
        key: &'a UserKey,
        text: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = crate::Result<()>> + Send + 'a>>;
}

pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: ServerConfig,
    admin_hash: Option<[u8; 32]>,
    alerts_hash: Option<[u8; 32]>,
    pub customers: broadcast::Sender<CustomerSignal>,
    pub agents: broadcast::Sender<AgentEvent>,
    limiter: RateLimiter<UserKey>,
    /// Wrong agent, admin and alert tokens per client (`[server] auth_failures_per_minute`).
    auth_failures: RateLimiter<String>,
    metrics: PrometheusHandle,
    shutdown: watch::Receiver<bool>,
    pushers: Vec<Arc<dyn CustomerPush>>,
    started: Instant,
    /// Browser sessions of the agent desk and the content page (cookies).
    pub sessions: crate::channels::web::Sessions,
}

impl AppState {
    /// Builds the state; fails on a misconfigured admin token (a reference to an unset
    /// variable, a hash that is not one).
    pub fn new(engine: Arc<Engine>, shutdown: watch::Receiver<bool>) -> crate::Result<Self> {
        let config = engine.config().server.clone();
        let header = config.client_ip_header.trim();
        if !header.is_empty() && HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(crate::Error::InvalidInput(format!(
                "[server] client_ip_header: \"{header}\" is not an HTTP header name"
            )));
        }
        let admin_hash = service_token("admin", &engine.config().admin)?;
        let alerts_hash = service_token("alerts", &engine.config().alerts)?;
        Ok(AppState {
            limiter: RateLimiter::new(config.customer_messages_per_minute, config.customer_burst),
            auth_failures: RateLimiter::new(
                config.auth_failures_per_minute,
                config.auth_failures_per_minute,
            ),
            engine,
            config,
            admin_hash,
            alerts_hash,
            customers: broadcast::channel(4096).0,
            agents: broadcast::channel(4096).0,
            metrics: metrics_handle(),
            shutdown,
            pushers: Vec::new(),
            started: Instant::now(),
            sessions: Default::default(),
        })
    }

    /// Adds a pusher for customers of a channel without streams (WeChat).
    pub fn with_pusher(mut self, p: Arc<dyn CustomerPush>) -> Self {
        self.pushers.push(p);
        self
    }

    /// Runs blocking engine work on the blocking pool, within the request deadline.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Engine) -> crate::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let engine = self.engine.clone();
        let task = tokio::task::spawn_blocking(move || f(&engine));
        let limit = Duration::from_secs(self.config.request_timeout_secs.max(1));
        match tokio::time::timeout(limit, task).await {
            Ok(joined) => Ok(joined??),
            Err(_) => {
                metrics::counter!("kefu_errors_total", "kind" => "timeout").increment(1);
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "the request took too long; please try again",
                ))
            }
        }
    }

    /// Tells streams of `key` to look again, and pushes agent messages to customers of
    /// push channels.
    pub fn customer_changed(&self, key: &UserKey, notice: Option<Reply>) {
        let _ = self.customers.send(CustomerSignal {
            key: key.clone(),
            notice,
        });
    }

    /// Tells this replica's agent desks, and through the store the other replicas'.
    pub fn agent_event(&self, e: AgentEvent) {
        self.engine
            .store()
            .announce(crate::store::StoreSignal::Agent {
                kind: e.kind.to_owned(),
                ticket: e.ticket,
                tenant: e.tenant.clone(),
                group: e.group.clone(),
            });
        let _ = self.agents.send(e);
    }

    /// Checks a token for `client` with `check`, counting a wrong one against it. A
    /// client that has used up its allowance of wrong tokens is refused before `check`
    /// runs: a right guess must not be told apart from a wrong one. The allowance is
    /// taken before the check and given back for a right token, so parallel guesses
    /// cannot all pass while the first ones are still being checked.
    pub(crate) fn check_token(
        &self,
        client: &Client,
        check: impl FnOnce() -> bool,
    ) -> Result<bool, ApiError> {
        if let Err(wait) = self.auth_failures.take(&client.0) {
            metrics::counter!("kefu_errors_total", "kind" => "auth_throttled").increment(1);
            tracing::warn!(client = %client.0, "token check refused: too many wrong tokens");
            return Err(ApiError::too_many_failures(wait));
        }
        let ok = check();
        if ok {
            self.auth_failures.give_back(&client.0);
        }
        Ok(ok)
    }

    pub(crate) fn admin_ok(&self, token: Option<&str>) -> bool {
        token_matches(self.admin_hash, token)
    }

    fn alerts_ok(&self, token: Option<&str>) -> bool {
        token_matches(self.alerts_hash, token)
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// A configured service token's hash, or `None` when none is configured (then every
/// call that needs it is refused).
fn service_token(what: &str, c: &crate::config::AdminConfig) -> crate::Result<Option<[u8; 32]>> {
    if c.token_sha256.is_none() && c.token_env.is_none() && c.token_file.is_none() {
        return Ok(None);
    }
    resolve_secret(
        what,
        c.token_sha256.as_deref(),
        c.token_env.as_deref(),
        c.token_file.as_deref(),
    )
    .map(Some)
}

/// Constant-time comparison of a presented token with a configured hash.
fn token_matches(hash: Option<[u8; 32]>, token: Option<&str>) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    match (hash, token) {
        (Some(hash), Some(t)) => {
            let given: [u8; 32] = Sha256::digest(t.as_bytes()).into();
            bool::from(hash.ct_eq(&given))
        }
        _ => false,
    }
}

/// The one Prometheus recorder of this process (a recorder is process-global; tests
/// start several servers in one process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed by an embedding program.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Token buckets per key (a customer; a client address for wrong tokens): `burst` at
/// once, refilled at `per_minute`. Buckets that are full again are dropped by the
/// sweeper, so memory follows the number of keys active in the last minute or so.
struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: std::hash::Hash + Eq + Clone> RateLimiter<K> {
    fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket of `key`, refilled up to now.
    fn refill<'a>(&self, b: &'a mut HashMap<K, (f64, Instant)>, key: &K) -> &'a mut f64 {
        let now = Instant::now();
        let (tokens, last) = b.entry(key.clone()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec).min(self.burst);
        *last = now;
        tokens
    }

    /// Takes one token if there is one.
    fn allow(&self, key: &K) -> bool {
        self.take(key).is_ok()
    }

    /// Takes one token, or says how long until there is one.
    fn take(&self, key: &K) -> Result<(), Duration> {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let tokens = self.refill(&mut b, key);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
        }
    }

    /// Gives back a token taken by [`RateLimiter::take`].
    fn give_back(&self, key: &K) {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let burst = self.burst;
        let tokens = self.refill(&mut b, key);
        *tokens = (*tokens + 1.0).min(burst);
    }

    fn prune(&self) {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (per_sec, burst) = (self.per_sec, self.burst);
        b.retain(|_, (tokens, last)| {
            *tokens + now.duration_since(*last).as_secs_f64() * per_sec < burst
        });
    }
}

/// Who sent a request, for counting wrong tokens: the address the bank's proxy names
/// in `[server] client_ip_header` (its last entry), else the TCP peer. A request that
/// reached the router without a connection (in-process tests) is `unknown`.
#[derive(Debug, Clone)]
pub struct Client(pub String);

impl Client {
    pub fn of(state: &AppState, parts: &axum::http::request::Parts) -> Client {
        let header = state.config.client_ip_header.trim();
        if !header.is_empty() {
            let named = parts
                .headers
                .get_all(header)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .rfind(|v| !v.is_empty());
            if let Some(ip) = named {
                return Client(ip.chars().take(64).collect());
            }
        }
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| Client(c.0.ip().to_string()))
            .unwrap_or_else(|| Client("unknown".into()))
    }
}

impl axum::extract::FromRequestParts<Arc<AppState>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client::of(state, parts))
    }
}

/// The whole HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let max_body = state.config.max_body_bytes;
    Router::new()
        .merge(customer::routes())
        .merge(agent::routes())
        .merge(admin::routes())
        .merge(alerts::routes())
        .merge(ops::routes())
        .merge(crate::channels::web::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response()
        }))
        .layer(SetResponseHeaderLayer::if_not_present(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        // The span names the request id, method and path: never the query string or
        // body, which carry customer ids and message text.
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Runs the service on `listener` until `stop` resolves, then stops accepting,
/// finishes requests in flight, ends live streams, and flushes the store.
/// `ready` runs once the service state is built from the configuration and before the
/// first request is taken: a caller that announces the address there never announces
/// a service that then refuses its configuration.
pub async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
    extra: impl FnOnce(AppState) -> (Arc<AppState>, Router),
    ready: impl FnOnce(),
) -> crate::Result<()> {
    let (tx, rx) = watch::channel(false);
    let state = AppState::new(engine.clone(), rx)?;
    let (state, extra_routes) = extra(state);
    ready();
    let app = router(state.clone()).merge(extra_routes);
    let duties = tokio::spawn(background(state.clone()));
    // Other replicas' changes (PostgreSQL store): wake live streams, load content.
    let relay = engine
        .store()
        .signals()
        .map(|rx| tokio::spawn(relay_signals(state.clone(), rx)));
    let shutdown = async move {
        stop.await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = tx.send(true);
    };
    // The peer address feeds the wrong-token allowance per client (see `Client`).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| crate::Error::io("listener", e));
    duties.abort();
    if let Some(r) = relay {
        r.abort();
    }
    let flushed = tokio::task::spawn_blocking(move || engine.store().flush())
        .await
        .map_err(|e| crate::Error::Store(format!("flush at shutdown: {e}")))?;
    result?;
    flushed?;
    tracing::info!("stopped; store flushed");
    Ok(())
}

/// Periodic duties: queue timeouts (customers are told, agents see it), expiry of
/// de-duplication records, pruning of rate-limit buckets.
async fn background(state: Arc<AppState>) {
    let every = Duration::from_secs(state.config.sweep_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = now();
        let ttl = state.config.dedup_ttl_secs;
        let swept = state
            .blocking(move |e| {
                let timeouts = e.sweep_timeouts(now)?;
                let expired = e.store().expire_processed(now - ttl)?;
                let queued = e.queue().queued_len()?;
                Ok((timeouts, expired, queued))
            })
            .await;
        match swept {
            Ok((timeouts, expired, queued)) => {
                metrics::gauge!("kefu_queue_length").set(queued as f64);
                if expired > 0 {
                    tracing::info!(expired, "expired de-duplication records");
                }
                for (key, notice) in timeouts {
                    if let Some(h) = &notice.handoff {
                        state.agent_event(AgentEvent {
                            kind: "chat_timed_out",
                            ticket: h.ticket,
                            tenant: key.tenant.clone(),
                            group: None,
                        });
                    }
                    push_to_channels(&state, &key, &notice.plain_text()).await;
                    state.customer_changed(&key, Some(notice));
                }
            }
            Err(e) => tracing::error!(code = e.code, "background duties failed: {}", e.message),
        }
        state.limiter.prune();
        state.auth_failures.prune();
        // Content another replica published (PostgreSQL store); a no-op on sled.
        if let Err(e) = state.blocking(|e| e.refresh_published()).await {
            tracing::error!(
                code = e.code,
                "could not load published content: {}",
                e.message
            );
        }
        // Vectors the embedding service could not give at load; a no-op otherwise. Off
        // the sweep's path: embedding a knowledge base cold can take minutes, and the
        // engine lets one attempt run at a time.
        let engine = state.engine.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = engine.retry_embeddings() {
                tracing::error!(error = %e, "could not embed the knowledge base");
            }
        });
    }
}

/// Forwards the store's signals (changes other replicas committed) to this replica's
/// live streams and content. A lagging receiver skips ahead: streams re-read anyway.
async fn relay_signals(
    state: Arc<AppState>,
    mut signals: tokio::sync::broadcast::Receiver<crate::store::StoreSignal>,
) {
    use crate::store::StoreSignal;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match signals.recv().await {
            Ok(StoreSignal::Customer(key)) => state.customer_changed(&key, None),
            Ok(StoreSignal::Published) => {
                if let Err(e) = state.blocking(|e| e.refresh_published()).await {
                    tracing::error!(
                        code = e.code,
                        "could not load published content: {}",
                        e.message
                    );
                }
            }
            Ok(StoreSignal::Agent {
                kind,
                ticket,
                tenant,
                group,
            }) => {
                // Kinds are a fixed set (see AgentEvent); an unknown one is from a newer
                // replica and skipped. Sent to local desks only: no echo to the store.
                let Some(kind) = AGENT_EVENT_KINDS.iter().find(|k| **k == kind) else {
                    continue;
                };
                let _ = state.agents.send(AgentEvent {
                    kind,
                    ticket,
                    tenant,
                    group,
                });
            }
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

/// Delivers text to a customer of a push channel (WeChat), if one serves them.
pub(crate) async fn push_to_channels(state: &Arc<AppState>, key: &UserKey, text: &str) {
    for p in &state.pushers {
        if p.serves(key) {
            if let Err(e) = p.push(key, text).await {
                metrics::counter!("kefu_errors_total", "kind" => "push").increment(1);
                tracing::warn!("could not push a message to a customer's channel: {e}");
            }
        }
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "kefu",
        description = "Customer-service engine for Chinese retail banks"
    ),
    paths(
        customer::post_message,
        customer::stream,
        agent::queue,
        agent::claim,
        agent::chat,
        agent::reply,
        agent::release,
        agent::close,
        agent::events,
        agent::search,
        admin::validate,
        admin::publish,
        admin::unanswered,
        admin::stats,
        alerts::alert,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        crate::channels::web::session::agent_sign_in,
        crate::channels::web::session::agent_whoami,
        crate::channels::web::session::agent_sign_out,
        crate::channels::web::session::admin_sign_in,
        crate::channels::web::session::admin_whoami,
        crate::channels::web::session::admin_sign_out,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail))
)]
pub struct ApiDoc;
