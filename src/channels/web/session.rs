//! Browser sessions for the agent desk and the content page.
//!
//! Signing in with a token sets an HttpOnly, SameSite=Strict cookie naming a random
//! session id; the token itself never reaches JavaScript storage, and the session lives
//! only in this process's memory (a restart signs everyone out, which is the safe
//! failure). Because a browser attaches the cookie by itself, every cookie-authenticated
//! request that changes something must also carry the session's CSRF token in
//! `X-CSRF-Token` (double submit: a page of another site can neither read the token
//! nor set that header without a CORS preflight kefu never grants), and a request
//! the browser marks as cross-site (`Sec-Fetch-Site`) is refused outright.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::channels::http::{ApiError, ApiJson, AppState, Client};
use crate::handoff::Agent;

const AGENT_COOKIE: &str = "kefu_agent";
const ADMIN_COOKIE: &str = "kefu_admin";
/// A shift and a bit: after that, sign in again.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone, PartialEq)]
enum Role {
    Agent(String),
    Admin,
}

struct Session {
    role: Role,
    csrf: String,
    expires: Instant,
}

/// The signed-in browsers of this process.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    // ThreadRng is a CSPRNG seeded from the OS.
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    fn create(&self, role: Role) -> (String, String) {
        let (id, csrf) = (random_hex(), random_hex());
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, s| s.expires > now);
        m.insert(
            id.clone(),
            Session {
                role,
                csrf: csrf.clone(),
                expires: now + LIFETIME,
            },
        );
        (id, csrf)
    }

    fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The role and CSRF token of a live session.
    fn get(&self, id: &str) -> Option<(Role, String)> {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| (s.role.clone(), s.csrf.clone()))
    }
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn forbidden(message: &str) -> ApiError {
    metrics::counter!("kefu_errors_total", "kind" => "csrf").increment(1);
    tracing::warn!("cookie request refused: {message}");
    ApiError::new(StatusCode::FORBIDDEN, "csrf", message.to_owned())
}

/// Refuses what a browser says came from another site, and (when `mutating`) a
/// request without the session's CSRF token.
fn csrf_ok(headers: &HeaderMap, expected: &str, mutating: bool) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Err(forbidden("cross-site request refused"));
        }
    }
    if mutating {
        let given = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(forbidden("missing or wrong X-CSRF-Token"));
        }
    }
    Ok(())
}

/// The agent of the desk's session cookie. Reads (`GET`, e.g. the live event stream,
/// which `EventSource` cannot add headers to) need no CSRF token; everything else does.
pub fn agent_from_cookie(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Agent, ApiError> {
    let id = cookie(headers, AGENT_COOKIE).ok_or_else(ApiError::unauthorized)?;
    let Some((Role::Agent(agent), csrf)) = state.sessions.get(id) else {
        return Err(ApiError::unauthorized());
    };
    csrf_ok(
        headers,
        &csrf,
        !matches!(*method, Method::GET | Method::HEAD),
    )?;
    state
        .engine
        .agents()
        .get(&agent)
        .cloned()
        .ok_or_else(ApiError::unauthorized)
}

/// Whether the content page's session cookie is an admin's. The page sends the CSRF
/// token with every call, reads included, so one rule covers all admin endpoints.
pub fn admin_from_cookie(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let id = cookie(headers, ADMIN_COOKIE).ok_or_else(ApiError::unauthorized)?;
    match state.sessions.get(id) {
        Some((Role::Admin, csrf)) => csrf_ok(headers, &csrf, true),
        _ => Err(ApiError::unauthorized()),
    }
}

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/agent/session",
            post(agent_sign_in).get(agent_whoami).delete(agent_sign_out),
        )
        .route(
            "/v1/admin/session",
            post(admin_sign_in).get(admin_whoami).delete(admin_sign_out),
        )
}

/// Sign-in with the agent's or admin's token (sent once; the browser keeps only the
/// cookie).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    token: String,
}

fn set_cookie(state: &AppState, name: &str, value: &str, max_age: u64) -> HeaderValue {
    cookie_header(state.config.cookie_secure, name, value, max_age)
}

fn cookie_header(secure: bool, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn signed_in(state: &AppState, name: &str, id: &str, body: serde_json::Value) -> Response {
    let mut res = ApiJson(body).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(state, name, id, LIFETIME.as_secs()),
    );
    res
}

fn signed_out(state: &AppState, headers: &HeaderMap, name: &str) -> Response {
    if let Some(id) = cookie(headers, name) {
        state.sessions.remove(id);
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(state, name, "", 0));
    res
}

fn cross_site(headers: &HeaderMap) -> Result<(), ApiError> {
    csrf_ok(headers, "", false)
}

fn agent_json(a: &Agent, csrf: &str) -> serde_json::Value {
    serde_json::json!({"agent": {"id": a.id, "name": a.name}, "csrf": csrf})
}

/// Sign the desk in with an agent's token.
#[utoipa::path(post, path = "/v1/agent/session", request_body = SignIn,
    responses((status = 200, description = "signed in: sets the HttpOnly session cookie; body {agent, csrf}"),
              (status = 401, body = crate::channels::http::error::ErrorBody)))]
pub(crate) async fn agent_sign_in(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    cross_site(&headers)?;
    let mut found = None;
    state.check_token(&client, || {
        found = state
            .engine
            .agents()
            .authenticate(body.token.trim())
            .ok()
            .cloned();
        found.is_some()
    })?;
    let agent = match found {
        Some(a) => a,
        None => {
            metrics::counter!("kefu_errors_total", "kind" => "agent_unauthorized").increment(1);
            tracing::warn!("desk sign-in with an unknown token refused");
            return Err(ApiError::unauthorized());
        }
    };
    let (id, csrf) = state.sessions.create(Role::Agent(agent.id.clone()));
    Ok(signed_in(
        &state,
        AGENT_COOKIE,
        &id,
        agent_json(&agent, &csrf),
    ))
}

/// Who the desk's cookie belongs to, and its CSRF token (after a page reload).
#[utoipa::path(get, path = "/v1/agent/session",
    responses((status = 200, description = "{agent, csrf} of the session cookie"),
              (status = 401, body = crate::channels::http::error::ErrorBody)))]
pub(crate) async fn agent_whoami(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let agent = agent_from_cookie(&state, &Method::GET, &headers)?;
    let id = cookie(&headers, AGENT_COOKIE).unwrap_or_default();
    let csrf = state.sessions.get(id).map(|(_, c)| c).unwrap_or_default();
    Ok(ApiJson(agent_json(&agent, &csrf)).into_response())
}

#[utoipa::path(delete, path = "/v1/agent/session",
    responses((status = 204, description = "signed out; the cookie is cleared")))]
pub(crate) async fn agent_sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    signed_out(&state, &headers, AGENT_COOKIE)
}

/// Sign the content page in with the admin token.
#[utoipa::path(post, path = "/v1/admin/session", request_body = SignIn,
    responses((status = 200, description = "signed in: sets the HttpOnly session cookie; body {csrf}"),
              (status = 401, body = crate::channels::http::error::ErrorBody)))]
pub(crate) async fn admin_sign_in(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    cross_site(&headers)?;
    if !state.check_token(&client, || state.admin_ok(Some(body.token.trim())))? {
        metrics::counter!("kefu_errors_total", "kind" => "admin_unauthorized").increment(1);
        tracing::warn!("content page sign-in with a wrong token refused");
        return Err(ApiError::unauthorized());
    }
    let (id, csrf) = state.sessions.create(Role::Admin);
    Ok(signed_in(
        &state,
        ADMIN_COOKIE,
        &id,
        serde_json::json!({"csrf": csrf}),
    ))
}

#[utoipa::path(get, path = "/v1/admin/session",
    responses((status = 200, description = "{csrf} of the session cookie"),
              (status = 401, body = crate::channels::http::error::ErrorBody)))]
pub(crate) async fn admin_whoami(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = cookie(&headers, ADMIN_COOKIE).ok_or_else(ApiError::unauthorized)?;
    match state.sessions.get(id) {
        Some((Role::Admin, csrf)) => {
            csrf_ok(&headers, &csrf, false)?;
            Ok(ApiJson(serde_json::json!({"csrf": csrf})).into_response())
        }
        _ => Err(ApiError::unauthorized()),
    }
}

#[utoipa::path(delete, path = "/v1/admin/session",
    responses((status = 204, description = "signed out; the cookie is cleared")))]
pub(crate) async fn admin_sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    signed_out(&state, &headers, ADMIN_COOKIE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; kefu_agent=abc; b=2"),
        );
        assert_eq!(cookie(&h, "kefu_agent"), Some("abc"));
        assert_eq!(cookie(&h, "kefu_admin"), None);
    }

    #[test]
    fn csrf_needs_the_token_and_refuses_cross_site() {
        let mut h = HeaderMap::new();
        assert!(csrf_ok(&h, "t0k", false).is_ok());
        assert!(csrf_ok(&h, "t0k", true).is_err());
        h.insert("x-csrf-token", HeaderValue::from_static("t0k"));
        assert!(csrf_ok(&h, "t0k", true).is_ok());
        assert!(csrf_ok(&h, "other", true).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(csrf_ok(&h, "t0k", true).is_err());
        assert!(csrf_ok(&h, "t0k", false).is_err());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_when_configured() {
        let c = cookie_header(true, AGENT_COOKIE, "abc", 60);
        assert_eq!(
            c.to_str().unwrap(),
            "kefu_agent=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert!(!cookie_header(false, AGENT_COOKIE, "abc", 60)
            .to_str()
            .unwrap()
            .contains("Secure"));
    }

    #[test]
    fn sessions_expire_and_sign_out() {
        let s = Sessions::default();
        let (id, csrf) = s.create(Role::Admin);
        assert_eq!(s.get(&id), Some((Role::Admin, csrf)));
        s.remove(&id);
        assert_eq!(s.get(&id), None);
    }
}
