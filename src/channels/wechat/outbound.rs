//! Messages kefu starts: the 客服消息 API (`message/custom/send`).
//!
//! A passive reply can only answer the customer's own message, within 5 seconds. Anything
//! else (a slow answer, an agent's reply from kefu's desk, a queue notice) goes through an
//! [`OutboundSender`]. The platform allows 5 such messages per customer message within
//! 48 hours; error 45015 means the window is closed and the customer must write first.
//!
//! The access token comes from an [`AccessTokenProvider`]: banks usually run one central
//! token service per AppID (each fresh token invalidates the previous one, so two
//! services refreshing independently log each other out); fetching with AppSecret and
//! caching is offered for a bank without one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::config::{Secrets, WechatConfig};
use crate::error::{Error, Result};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("cannot reach the WeChat API: {0}")]
    Http(String),
    #[error("no access token: {0}")]
    Token(String),
    #[error("WeChat API error {code}: {message}")]
    Api { code: i64, message: String },
}

impl SendError {
    /// 45015: the 48-hour window after the customer's last message has passed (or they
    /// unfollowed); retrying will not help until the customer writes again.
    pub fn is_out_of_window(&self) -> bool {
        matches!(self, SendError::Api { code: 45015, .. })
    }
}

/// Sends text to a WeChat customer outside a passive reply. kefu's server also uses it to
/// push agent replies and queue notices.
pub trait OutboundSender: Send + Sync {
    fn send_text<'a>(
        &'a self,
        openid: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), SendError>>;
}

/// Supplies the API access token.
pub trait AccessTokenProvider: Send + Sync {
    fn token(&self) -> BoxFuture<'_, std::result::Result<String, SendError>>;
    /// The API refused `token` as expired or invalid: forget it so the next call refetches.
    fn invalidate(&self, token: &str);
}

/// A fixed token (tests, or a token injected by a sidecar that rewrites it in place).
pub struct StaticToken(pub String);

impl AccessTokenProvider for StaticToken {
    fn token(&self) -> BoxFuture<'_, std::result::Result<String, SendError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }

    fn invalidate(&self, _token: &str) {}
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Fetches a token over HTTP and caches it until shortly before it expires: either from
/// the bank's token service or from the platform with AppID + AppSecret.
pub struct FetchedToken {
    client: reqwest::Client,
    source: TokenSource,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

enum TokenSource {
    Service {
        url: String,
    },
    AppSecret {
        url: String,
        app_id: String,
        secret: String,
    },
}

/// Refresh this long before the stated expiry, so a token is never used at its edge.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl FetchedToken {
    /// A central token service: `GET url` answers `{"access_token": …, "expires_in": …}`.
    pub fn service(client: reqwest::Client, url: impl Into<String>) -> Self {
        FetchedToken {
            client,
            source: TokenSource::Service { url: url.into() },
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The platform's `cgi-bin/token` with AppID and AppSecret.
    pub fn app_secret(
        client: reqwest::Client,
        api_base: &str,
        app_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        FetchedToken {
            client,
            source: TokenSource::AppSecret {
                url: format!("{}/cgi-bin/token", api_base.trim_end_matches('/')),
                app_id: app_id.into(),
                secret: secret.into(),
            },
            cache: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self) -> std::result::Result<Cached, SendError> {
        let request = match &self.source {
            TokenSource::Service { url } => self.client.get(url),
            TokenSource::AppSecret {
                url,
                app_id,
                secret,
            } => self.client.get(url).query(&[
                ("grant_type", "client_credential"),
                ("appid", app_id.as_str()),
                ("secret", secret.as_str()),
            ]),
        };
        // `without_url`: the URL carries the AppSecret.
        let response = request
            .send()
            .await
            .map_err(|e| SendError::Token(e.without_url().to_string()))?;
        let status = response.status();
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|e| SendError::Token(format!("HTTP {status}: {}", e.without_url())))?;
        match (body.access_token, body.errcode) {
            (Some(token), None | Some(0)) if !token.is_empty() => {
                let lifetime = Duration::from_secs(body.expires_in.unwrap_or(7200));
                Ok(Cached {
                    token,
                    refresh_at: Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN),
                })
            }
            (_, code) => Err(SendError::Token(format!(
                "error {}: {}",
                code.unwrap_or(-1),
                body.errmsg.unwrap_or_else(|| format!("HTTP {status}"))
            ))),
        }
    }
}

impl AccessTokenProvider for FetchedToken {
    fn token(&self) -> BoxFuture<'_, std::result::Result<String, SendError>> {
        Box::pin(async move {
            // Held across the fetch: concurrent senders wait for one refresh instead of
            // each fetching (and invalidating) a token.
            let mut cache = self.cache.lock().await;
            if let Some(c) = cache.as_ref() {
                if Instant::now() < c.refresh_at {
                    return Ok(c.token.clone());
                }
            }
            let fresh = self.fetch().await?;
            let token = fresh.token.clone();
            *cache = Some(fresh);
            Ok(token)
        })
    }

    fn invalidate(&self, token: &str) {
        if let Ok(mut cache) = self.cache.try_lock() {
            if cache.as_ref().is_some_and(|c| c.token == token) {
                *cache = None;
            }
        }
    }
}

#[derive(Deserialize)]
struct ApiResponse {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// Token errors after which a refetched token may succeed.
const TOKEN_INVALID: [i64; 3] = [40001, 40014, 42001];

/// The 客服消息 sender over HTTP.
pub struct ApiSender {
    client: reqwest::Client,
    api_base: String,
    tokens: Arc<dyn AccessTokenProvider>,
    max_bytes: usize,
}

impl ApiSender {
    pub fn new(
        client: reqwest::Client,
        api_base: impl Into<String>,
        tokens: Arc<dyn AccessTokenProvider>,
        max_bytes: usize,
    ) -> Self {
        ApiSender {
            client,
            api_base: api_base.into().trim_end_matches('/').to_owned(),
            tokens,
            max_bytes: max_bytes.max(64),
        }
    }

    /// The sender `[wechat]` describes: token service if configured, else AppSecret.
    pub fn from_config(config: &WechatConfig, secrets: &Secrets) -> Result<Self> {
        let client = http_client(config)?;
        let tokens: Arc<dyn AccessTokenProvider> = match (&config.token_service_url, &secrets.app_secret) {
            (Some(url), _) => Arc::new(FetchedToken::service(client.clone(), url)),
            (None, Some(secret)) if !config.app_id.is_empty() => Arc::new(FetchedToken::app_secret(
                client.clone(),
                &config.api_base,
                &config.app_id,
                secret,
            )),
            _ => {
                return Err(Error::InvalidInput(
                    "[wechat] replies after 5 s and agent messages need an access token: set token_service_url, or app_id with app_secret_env / app_secret_file".into(),
                ))
            }
        };
        Ok(ApiSender::new(
            client,
            config.api_base.clone(),
            tokens,
            config.max_reply_bytes,
        ))
    }

    async fn post_once(
        &self,
        token: &str,
        body: &serde_json::Value,
    ) -> std::result::Result<(), SendError> {
        let url = format!("{}/cgi-bin/message/custom/send", self.api_base);
        let response = self
            .client
            .post(url)
            .query(&[("access_token", token)])
            .json(body)
            .send()
            .await
            .map_err(|e| SendError::Http(e.without_url().to_string()))?;
        let status = response.status();
        let reply: ApiResponse = response
            .json()
            .await
            .map_err(|e| SendError::Http(format!("HTTP {status}: {}", e.without_url())))?;
        if reply.errcode == 0 {
            Ok(())
        } else {
            Err(SendError::Api {
                code: reply.errcode,
                message: reply.errmsg,
            })
        }
    }

    async fn send_part(&self, openid: &str, text: &str) -> std::result::Result<(), SendError> {
        let body = serde_json::json!({
            "touser": openid,
            "msgtype": "text",
            "text": { "content": text },
        });
        let token = self.tokens.token().await?;
        match self.post_once(&token, &body).await {
            Err(SendError::Api { code, .. }) if TOKEN_INVALID.contains(&code) => {
                self.tokens.invalidate(&token);
                let token = self.tokens.token().await?;
                self.post_once(&token, &body).await
            }
            other => other,
        }
    }
}

impl OutboundSender for ApiSender {
    /// Long texts go out as several messages, split at line breaks where possible; each
    /// counts against the customer's quota.
    fn send_text<'a>(
        &'a self,
        openid: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), SendError>> {
        Box::pin(async move {
            for part in split_text(text, self.max_bytes) {
                self.send_part(openid, &part).await?;
            }
            Ok(())
        })
    }
}

/// An HTTP client for the platform API with the configured timeout and proxy (and no
/// proxy from the environment).
pub fn http_client(config: &WechatConfig) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.api_timeout_ms.max(1)))
        .no_proxy();
    let builder = match &config.api_proxy {
        Some(url) => builder.proxy(
            reqwest::Proxy::all(url)
                .map_err(|e| Error::InvalidInput(format!("[wechat] api_proxy: {e}")))?,
        ),
        None => builder,
    };
    builder
        .build()
        .map_err(|e| Error::InvalidInput(format!("cannot build the HTTP client: {e}")))
}

/// Splits text into pieces of at most `max_bytes` UTF-8 bytes, preferring line breaks,
/// never splitting a character.
pub fn split_text(text: &str, max_bytes: usize) -> Vec<String> {
    let max = max_bytes.max(4);
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        // Prefer the last line break in the second half of the piece.
        if let Some(nl) = rest[..cut].rfind('\n').filter(|&i| i >= cut / 2) {
            cut = nl + 1;
        }
        parts.push(rest[..cut].trim_end_matches('\n').to_owned());
        rest = &rest[cut..];
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_line_breaks_and_character_boundaries() {
        assert_eq!(split_text("短", 2048), vec!["短"]);
        let text = format!("{}\n{}", "一".repeat(10), "二".repeat(10));
        let parts = split_text(&text, 45);
        assert_eq!(parts, vec!["一".repeat(10), "二".repeat(10)]);
        let long = "字".repeat(100);
        let parts = split_text(&long, 64);
        assert!(parts.iter().all(|p| p.len() <= 64), "{parts:?}");
        assert_eq!(parts.concat(), long);
    }

    #[test]
    fn out_of_window_is_recognised() {
        let e = SendError::Api {
            code: 45015,
            message: "response out of time limit".into(),
        };
        assert!(e.is_out_of_window());
        assert!(!SendError::Http("x".into()).is_out_of_window());
    }
}
