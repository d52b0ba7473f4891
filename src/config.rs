//! Engine configuration (`kefu.toml`). Every field has a default, so a deployment writes
//! only what it changes; unknown keys are errors with their line, because a misspelt
//! threshold silently ignored is worse than a refused start.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ContentErrors, ContentIssue, Location, Result};
use crate::handoff::Agent;
use crate::knowledge::content::{read_text, toml_issue, LineIndex};
use crate::retrieval::RetrievalConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub retrieval: RetrievalConfig,
    /// A numbered list answers to numbers for this long (seconds).
    pub menu_ttl_secs: i64,
    /// Consecutive fallbacks after which the bot offers 转人工 itself.
    pub fallbacks_before_offer: u32,
    /// Longer messages are refused with a request to shorten them.
    pub max_message_chars: usize,
    /// Entry ids for the welcome menu; empty means the first entry of the first categories.
    pub welcome: Vec<String>,
    /// The bank's local time, for service hours and dates ("上个月").
    pub utc_offset_hours: i8,
    pub handoff: HandoffConfig,
    /// `kefu serve`: listening address, limits, background duties.
    pub server: ServerConfig,
    /// The admin API (`/v1/admin/…`): content validation and publishing, reports.
    pub admin: AdminConfig,
    /// The bank's system behind account actions (demo or HTTP).
    pub banking: crate::banking::BankingConfig,
    /// Transaction alerts pushed by the bank's system (`POST /v1/backend/alerts`): the
    /// token it authenticates with, by hash or reference like the admin token.
    pub alerts: AdminConfig,
    /// The WeChat Official Account channel (`[wechat]`, used by `kefu serve`).
    pub wechat: crate::channels::wechat::WechatConfig,
    /// Where sessions, transcripts and the hand-off queue live (`[store]`).
    pub store: StoreConfig,
    /// The bank's embedding service for hybrid retrieval (`[embeddings]`); off unless
    /// `url` is set.
    pub embeddings: crate::retrieval::dense::EmbeddingsConfig,
}

/// The shared store of replicas. Without `url`, the embedded sled store in `--data`
/// (one process); with `url = "postgres://…"`, PostgreSQL, which several `kefu serve`
/// processes may share (see ARCHITECTURE.md, "Replicas on PostgreSQL").
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub url: Option<String>,
}

/// Settings of the HTTP service. Limits protect the engine from one noisy client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; `--listen` overrides it.
    pub listen: String,
    /// Largest request body accepted (bytes); content uploads included.
    pub max_body_bytes: usize,
    /// Messages one customer may send per minute (sustained) …
    pub customer_messages_per_minute: u32,
    /// … and in a burst.
    pub customer_burst: u32,
    /// A request that takes longer is answered with a `timeout` error (seconds).
    pub request_timeout_secs: u64,
    /// De-duplication records (message ids) are kept this long (seconds).
    pub dedup_ttl_secs: i64,
    /// How often the background duties run: hand-off timeouts, dedup expiry (seconds).
    pub sweep_interval_secs: u64,
    /// Marks the desk's and content page's session cookies `Secure`: set it when kefu
    /// is reached over https (behind a TLS proxy), so browsers never send them in clear.
    pub cookie_secure: bool,
    /// Origins allowed to embed the customer chat page in a frame (the bank's H5 pages);
    /// empty means the chat can only be framed by kefu's own origin.
    pub chat_frame_ancestors: Vec<String>,
    /// Wrong agent, admin or alert tokens one client may send per minute (sustained and
    /// in a burst). Past that, every sign-in and token check from that client is refused
    /// with 429 until the allowance refills, the right token included, so a guessed token
    /// cannot be confirmed either. A desk that mistypes a few times is not affected.
    pub auth_failures_per_minute: u32,
    /// The header in which the bank's reverse proxy names the client (for example
    /// `X-Forwarded-For`; its last address is used, the one the proxy itself appended).
    /// Empty: the TCP peer address. Set it only behind a proxy that sets the header, or a
    /// client could claim any address; without it, every client behind the proxy shares
    /// one allowance of wrong tokens.
    pub client_ip_header: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 4 << 20,
            customer_messages_per_minute: 30,
            customer_burst: 10,
            request_timeout_secs: 10,
            dedup_ttl_secs: 7 * 24 * 3600,
            sweep_interval_secs: 15,
            cookie_secure: false,
            chat_frame_ancestors: Vec::new(),
            auth_failures_per_minute: 10,
            client_ip_header: String::new(),
        }
    }
}

/// A service token (admin, alerts) by hash or reference (never the token itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub token_sha256: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            retrieval: RetrievalConfig::default(),
            menu_ttl_secs: 30 * 60,
            fallbacks_before_offer: 2,
            max_message_chars: 500,
            welcome: Vec::new(),
            utc_offset_hours: 8,
            handoff: HandoffConfig::default(),
            server: ServerConfig::default(),
            admin: AdminConfig::default(),
            alerts: AdminConfig::default(),
            banking: crate::banking::BankingConfig::default(),
            wechat: crate::channels::wechat::WechatConfig::default(),
            store: StoreConfig::default(),
            embeddings: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffConfig {
    /// Local opening time "HH:MM"; `open == "00:00"` and `close == "24:00"` is 7×24.
    pub open: String,
    pub close: String,
    /// A queued chat waiting longer than this gets a message (seconds).
    pub queue_timeout_secs: i64,
    /// After the timeout, hand the chat back to the bot instead of keeping it queued.
    pub timeout_returns_to_bot: bool,
    /// Handling time assumed until there is history (seconds).
    pub default_handle_secs: i64,
    pub agents: Vec<Agent>,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            open: "00:00".into(),
            close: "24:00".into(),
            queue_timeout_secs: 10 * 60,
            timeout_returns_to_bot: false,
            default_handle_secs: 180,
            agents: Vec::new(),
        }
    }
}

impl HandoffConfig {
    /// Minutes after local midnight, checked at load.
    pub fn hours(&self) -> Option<(u32, u32)> {
        Some((parse_hhmm(&self.open)?, parse_hhmm(&self.close)?))
    }

    pub fn is_open_at(&self, local_minutes: u32) -> bool {
        match self.hours() {
            Some((open, close)) if open < close => (open..close).contains(&local_minutes),
            // Overnight shifts such as 20:00-08:00.
            Some((open, close)) if open > close => local_minutes >= open || local_minutes < close,
            _ => true,
        }
    }
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 || h == 24 && m == 0).then_some(h * 60 + m)
}

impl EngineConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_text(path).map_err(|i| ContentErrors(vec![i]))?;
        let lines = LineIndex::new(&text);
        let config: EngineConfig =
            toml::from_str(&text).map_err(|e| ContentErrors(vec![toml_issue(path, &lines, &e)]))?;
        if config.handoff.hours().is_none() {
            return Err(ContentErrors(vec![ContentIssue {
                location: Location::new(path, 1, None),
                message: format!(
                    "handoff.open/close must be times like 08:00 and 22:00, got \"{}\" and \"{}\"",
                    config.handoff.open, config.handoff.close
                ),
            }])
            .into());
        }
        crate::handoff::Agents::new(config.handoff.agents.clone())?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_including_overnight() {
        let mut h = HandoffConfig::default();
        assert!(h.is_open_at(0) && h.is_open_at(23 * 60 + 59));
        h.open = "08:00".into();
        h.close = "22:00".into();
        assert!(!h.is_open_at(7 * 60 + 59) && h.is_open_at(8 * 60) && !h.is_open_at(22 * 60));
        h.open = "20:00".into();
        h.close = "08:00".into();
        assert!(h.is_open_at(23 * 60) && h.is_open_at(60) && !h.is_open_at(12 * 60));
    }

    #[test]
    fn unknown_keys_and_bad_hours_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kefu.toml");
        std::fs::write(&p, "menu_ttl_secs = 60\n[retrieval]\nconfidnet = 0.5\n").unwrap();
        let err = EngineConfig::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("kefu.toml:3: invalid TOML: unknown field `confidnet`"),
            "{err}"
        );
        std::fs::write(&p, "[handoff]\nopen = \"8点\"\n").unwrap();
        assert!(EngineConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("times like 08:00"));
        std::fs::write(&p, "menu_ttl_secs = 60\n").unwrap();
        assert_eq!(EngineConfig::load(&p).unwrap().menu_ttl_secs, 60);
    }
}
