//! `[wechat]` in `kefu.toml`.
//!
//! Secrets (token, EncodingAESKey, the previous key, AppSecret) are given *by reference*
//! in production: `token_env = "KEFU_WECHAT_TOKEN"` or `token_file = "/run/secrets/…"`.
//! A literal `token = "…"` exists for tests and local trials. Literal values never appear
//! in `Debug` output or serialized configuration, so a logged config leaks nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};

/// A literal secret in the configuration file. Shown and serialized as `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Who answers a customer's `转人工`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffMode {
    /// kefu's own queue and agent desk; agent replies go out as 客服消息.
    #[default]
    Kefu,
    /// Reply `transfer_customer_service`: the platform's own 客服 tools take the chat.
    Wechat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WechatConfig {
    /// The kefu tenant WeChat customers belong to.
    pub tenant: String,
    /// The 公众号's AppID (checked inside every safe-mode message, used for the API).
    pub app_id: String,
    /// The Token entered in the console (服务器配置): literal, env var or file.
    pub token: Option<SecretString>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The EncodingAESKey (43 characters); needed for compatible and safe mode.
    pub encoding_aes_key: Option<SecretString>,
    pub encoding_aes_key_env: Option<String>,
    pub encoding_aes_key_file: Option<PathBuf>,
    /// The key before the last change in the console: accepted while messages encrypted
    /// with it may still arrive.
    pub previous_encoding_aes_key: Option<SecretString>,
    pub previous_encoding_aes_key_env: Option<String>,
    pub previous_encoding_aes_key_file: Option<PathBuf>,
    /// AppSecret, for fetching access tokens directly (when no token service is used).
    pub app_secret: Option<SecretString>,
    pub app_secret_env: Option<String>,
    pub app_secret_file: Option<PathBuf>,
    /// The bank's central access-token service (`GET` returns `{"access_token", "expires_in"}`).
    /// Preferred over AppSecret: two services refreshing one AppID's token invalidate each
    /// other's.
    pub token_service_url: Option<String>,
    /// Base URL of the platform API; tests point it at a fake on 127.0.0.1.
    pub api_base: String,
    /// How long to wait for the engine before answering `success` and sending the reply
    /// later as a 客服消息 (ms). The platform gives up after 5 s. 0 sends every reply later.
    pub reply_deadline_ms: u64,
    /// Refuse plaintext requests (no `encrypt_type=aes`): for an account in 安全模式,
    /// where the platform never sends plaintext.
    pub require_encryption: bool,
    /// Refuse requests whose `timestamp` is further than this from our clock (seconds);
    /// 0 turns the check off.
    pub timestamp_window_secs: i64,
    pub handoff: HandoffMode,
    /// With `handoff = "wechat"`: route to this 客服 account instead of any free one.
    pub kf_account: Option<String>,
    /// CLICK menu keys: `KEY = "entry:card-lost"` or `KEY = "text:查余额"`.
    pub menu: BTreeMap<String, String>,
    /// Longest text reply in UTF-8 bytes (the platform's limit is 2048).
    pub max_reply_bytes: usize,
    /// Largest request body accepted (bytes); compatible mode is about 3× the message.
    pub max_body_bytes: usize,
    /// Timeout for one platform API call (ms).
    pub api_timeout_ms: u64,
    /// The bank's egress proxy for the platform API (`http://proxy.internal:3128`).
    /// Environment proxy variables are deliberately not used: a server's route to the
    /// internet should be stated in its configuration, not inherited from a shell.
    pub api_proxy: Option<String>,
}

impl Default for WechatConfig {
    fn default() -> Self {
        WechatConfig {
            tenant: "bank".into(),
            app_id: String::new(),
            token: None,
            token_env: None,
            token_file: None,
            encoding_aes_key: None,
            encoding_aes_key_env: None,
            encoding_aes_key_file: None,
            previous_encoding_aes_key: None,
            previous_encoding_aes_key_env: None,
            previous_encoding_aes_key_file: None,
            app_secret: None,
            app_secret_env: None,
            app_secret_file: None,
            token_service_url: None,
            api_base: "https://api.weixin.qq.com".into(),
            reply_deadline_ms: 4500,
            require_encryption: false,
            timestamp_window_secs: 300,
            handoff: HandoffMode::Kefu,
            kf_account: None,
            menu: BTreeMap::new(),
            max_reply_bytes: 2048,
            max_body_bytes: 64 * 1024,
            api_timeout_ms: 5000,
            api_proxy: None,
        }
    }
}

/// What a `[wechat.menu]` key does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MenuAction {
    /// Answer this knowledge-base entry.
    Entry(String),
    /// Handle as if the customer had typed this text (intents included).
    Text(String),
}

impl MenuAction {
    pub fn parse(value: &str) -> Option<Self> {
        let (kind, rest) = value.split_once(':')?;
        let rest = rest.trim();
        if rest.is_empty() {
            return None;
        }
        match kind.trim() {
            "entry" => Some(MenuAction::Entry(rest.to_owned())),
            "text" => Some(MenuAction::Text(rest.to_owned())),
            _ => None,
        }
    }
}

/// Resolves one secret from its literal, environment or file form. Exactly one may be
/// given; a file's trailing newline is not part of the secret.
fn secret(
    name: &str,
    literal: &Option<SecretString>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>> {
    let given =
        usize::from(literal.is_some()) + usize::from(env.is_some()) + usize::from(file.is_some());
    if given > 1 {
        return Err(Error::InvalidInput(format!(
            "[wechat] give only one of {name}, {name}_env and {name}_file"
        )));
    }
    let value = if let Some(v) = literal {
        v.expose().to_owned()
    } else if let Some(var) = env {
        std::env::var(var).map_err(|_| {
            Error::InvalidInput(format!(
                "[wechat] {name}_env names {var}, which is not set (or not UTF-8)"
            ))
        })?
    } else if let Some(path) = file {
        std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, e))?
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    } else {
        return Ok(None);
    };
    if value.trim().is_empty() {
        return Err(Error::InvalidInput(format!("[wechat] {name} is empty")));
    }
    Ok(Some(value))
}

/// The secrets, read once at start-up.
#[derive(Clone)]
pub struct Secrets {
    pub token: String,
    pub encoding_aes_key: Option<String>,
    pub previous_encoding_aes_key: Option<String>,
    pub app_secret: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

impl WechatConfig {
    /// Reads the secrets and checks the settings that can be checked without a network.
    pub fn secrets(&self) -> Result<Secrets> {
        let token =
            secret("token", &self.token, &self.token_env, &self.token_file)?.ok_or_else(|| {
                Error::InvalidInput(
                    "[wechat] needs the console's Token: token_env, token_file or token".into(),
                )
            })?;
        // The console allows 3-32 letters and digits; anything else cannot match it.
        if !(3..=32).contains(&token.len()) || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::InvalidInput(
                "[wechat] token must be 3-32 letters or digits, as in the console".into(),
            ));
        }
        let encoding_aes_key = secret(
            "encoding_aes_key",
            &self.encoding_aes_key,
            &self.encoding_aes_key_env,
            &self.encoding_aes_key_file,
        )?;
        let previous_encoding_aes_key = secret(
            "previous_encoding_aes_key",
            &self.previous_encoding_aes_key,
            &self.previous_encoding_aes_key_env,
            &self.previous_encoding_aes_key_file,
        )?;
        let app_secret = secret(
            "app_secret",
            &self.app_secret,
            &self.app_secret_env,
            &self.app_secret_file,
        )?;
        if encoding_aes_key.is_some() && self.app_id.trim().is_empty() {
            return Err(Error::InvalidInput(
                "[wechat] app_id is required with encoding_aes_key (it is checked in every message)"
                    .into(),
            ));
        }
        if self.require_encryption && encoding_aes_key.is_none() {
            return Err(Error::InvalidInput(
                "[wechat] require_encryption needs encoding_aes_key".into(),
            ));
        }
        if previous_encoding_aes_key.is_some() && encoding_aes_key.is_none() {
            return Err(Error::InvalidInput(
                "[wechat] previous_encoding_aes_key needs encoding_aes_key".into(),
            ));
        }
        for (key, value) in &self.menu {
            if MenuAction::parse(value).is_none() {
                return Err(Error::InvalidInput(format!(
                    "[wechat.menu] {key} = \"{value}\": expected \"entry:ID\" or \"text:TEXT\""
                )));
            }
        }
        if self.max_reply_bytes < 64 {
            return Err(Error::InvalidInput(
                "[wechat] max_reply_bytes must be at least 64".into(),
            ));
        }
        Ok(Secrets {
            token,
            encoding_aes_key,
            previous_encoding_aes_key,
            app_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_reference_and_never_shows_literals() {
        let c: WechatConfig = toml::from_str(
            "app_id = \"wx1\"\ntoken = \"Tok3n\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\nhandoff = \"wechat\"\n[menu]\nLOST = \"entry:card-lost\"\nBAL = \"text:查余额\"\n",
        )
        .unwrap();
        assert_eq!(c.handoff, HandoffMode::Wechat);
        assert_eq!(c.reply_deadline_ms, 4500);
        let shown = format!("{c:?} {}", toml::to_string(&c).unwrap());
        assert!(
            !shown.contains("Tok3n") && !shown.contains("abcdefghij"),
            "{shown}"
        );
        let s = c.secrets().unwrap();
        assert_eq!(s.token, "Tok3n");
        assert!(!format!("{s:?}").contains("Tok3n"));
        assert_eq!(
            MenuAction::parse(&c.menu["BAL"]),
            Some(MenuAction::Text("查余额".into()))
        );
    }

    #[test]
    fn reads_files_and_refuses_ambiguous_or_missing_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "FromFile1\n").unwrap();
        let c = WechatConfig {
            token_file: Some(p),
            ..WechatConfig::default()
        };
        assert_eq!(c.secrets().unwrap().token, "FromFile1");
        let both = WechatConfig {
            token: Some(SecretString::new("abc")),
            token_env: Some("X".into()),
            ..WechatConfig::default()
        };
        assert!(both.secrets().unwrap_err().to_string().contains("only one"));
        assert!(WechatConfig::default().secrets().is_err());
        let unset = WechatConfig {
            token_env: Some("KEFU_TEST_SURELY_UNSET_VARIABLE".into()),
            ..WechatConfig::default()
        };
        assert!(unset.secrets().unwrap_err().to_string().contains("not set"));
        let no_app = WechatConfig {
            token: Some(SecretString::new("abc")),
            encoding_aes_key: Some(SecretString::new("k")),
            ..WechatConfig::default()
        };
        assert!(no_app.secrets().unwrap_err().to_string().contains("app_id"));
        let bad_menu: WechatConfig =
            toml::from_str("token = \"abc\"\n[menu]\nX = \"intent:foo\"\n").unwrap();
        assert!(bad_menu.secrets().is_err());
        assert!(toml::from_str::<WechatConfig>("tokn = \"abc\"\n").is_err());
    }
}
