//! `kefu wechat simulate`: plays the platform against a running kefu, so a bank's engineer
//! can prove URL, token and key before pointing the 服务号 at it. It signs (and in safe
//! mode encrypts) a message exactly as the platform does, checks the reply's signature,
//! decrypts it and returns its fields.

use super::crypto::{signature, signature_matches, AesKey, CryptoError};
use super::xml::{self, Fields, XmlBuilder, XmlError};

/// What to send.
#[derive(Debug, Clone)]
pub enum SimulatedMessage {
    Text(String),
    Subscribe,
    /// A CLICK on a menu key.
    Click(String),
}

#[derive(Debug, Clone)]
pub struct Simulation {
    /// The kefu URL, e.g. `http://127.0.0.1:8080/wechat`.
    pub url: String,
    pub token: String,
    /// Safe mode when given.
    pub encoding_aes_key: Option<String>,
    pub app_id: String,
    /// The customer (FromUserName).
    pub openid: String,
    /// The account's original id (ToUserName).
    pub account: String,
    pub message: SimulatedMessage,
    /// MsgId; the same id twice shows de-duplication.
    pub msg_id: u64,
}

/// The reply as kefu sent it.
#[derive(Debug, Clone)]
pub struct SimulatedReply {
    pub status: u16,
    /// The reply was encrypted and its `MsgSignature` checked.
    pub encrypted: bool,
    /// `None` for `success` or an empty body (the answer comes later as a 客服消息).
    pub fields: Option<Fields>,
    /// The request body that was sent (before encryption), for display.
    pub sent_xml: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("cannot reach {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("kefu answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the reply's MsgSignature does not match (token differs?)")]
    Signature,
    #[error("the reply is encrypted but lacks <{0}>")]
    Missing(&'static str),
    #[error("cannot decrypt the reply: {0}")]
    Crypto(#[from] CryptoError),
    #[error("the reply is not valid XML: {0}")]
    Xml(#[from] XmlError),
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Simulation {
    /// The message XML as the platform would build it (plaintext form).
    pub fn message_xml(&self, create_time: i64) -> String {
        let b = XmlBuilder::new()
            .cdata("ToUserName", &self.account)
            .cdata("FromUserName", &self.openid)
            .number("CreateTime", create_time);
        match &self.message {
            SimulatedMessage::Text(t) => b
                .cdata("MsgType", "text")
                .cdata("Content", t)
                .number("MsgId", i64::try_from(self.msg_id).unwrap_or(i64::MAX))
                .finish(),
            SimulatedMessage::Subscribe => b
                .cdata("MsgType", "event")
                .cdata("Event", "subscribe")
                .cdata("EventKey", "")
                .finish(),
            SimulatedMessage::Click(key) => b
                .cdata("MsgType", "event")
                .cdata("Event", "CLICK")
                .cdata("EventKey", key)
                .finish(),
        }
    }

    /// A one-line description of what is sent, for the command's output.
    pub fn sent_xml_preview(&self) -> String {
        match &self.message {
            SimulatedMessage::Text(t) => format!("text message MsgId {}: {t}", self.msg_id),
            SimulatedMessage::Subscribe => "subscribe event".into(),
            SimulatedMessage::Click(k) => format!("CLICK event, key {k}"),
        }
    }

    pub async fn run(&self) -> Result<SimulatedReply, SimulateError> {
        let timestamp = now_secs().to_string();
        let nonce = format!("{}", rand::random::<u32>());
        let sent_xml = self.message_xml(now_secs());
        let mut query: Vec<(&str, String)> = vec![
            ("signature", signature(&[&self.token, &timestamp, &nonce])),
            ("timestamp", timestamp.clone()),
            ("nonce", nonce.clone()),
            ("openid", self.openid.clone()),
        ];
        let key = match &self.encoding_aes_key {
            Some(k) => Some(AesKey::from_encoding_key(k)?),
            None => None,
        };
        let body = match &key {
            Some(key) => {
                let encrypted = key.encrypt(&sent_xml, &self.app_id);
                query.push(("encrypt_type", "aes".into()));
                query.push((
                    "msg_signature",
                    signature(&[&self.token, &timestamp, &nonce, &encrypted]),
                ));
                XmlBuilder::new()
                    .cdata("ToUserName", &self.account)
                    .cdata("Encrypt", &encrypted)
                    .finish()
            }
            None => sent_xml.clone(),
        };
        let http_error = |e: reqwest::Error| SimulateError::Http {
            url: self.url.clone(),
            reason: e.without_url().to_string(),
        };
        // Straight to kefu, never through a proxy from the environment.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(http_error)?;
        let response = client
            .post(&self.url)
            .query(&query)
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .map_err(http_error)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(http_error)?;
        if !(200..300).contains(&status) {
            return Err(SimulateError::Status {
                status,
                body: text.chars().take(500).collect(),
            });
        }
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed == "success" {
            return Ok(SimulatedReply {
                status,
                encrypted: false,
                fields: None,
                sent_xml,
            });
        }
        let outer = xml::parse(trimmed.as_bytes())?;
        match (&key, outer.text("Encrypt")) {
            (Some(key), Some(encrypted)) => {
                let sig = outer
                    .text("MsgSignature")
                    .ok_or(SimulateError::Missing("MsgSignature"))?;
                let ts = outer
                    .text("TimeStamp")
                    .ok_or(SimulateError::Missing("TimeStamp"))?;
                let nonce = outer.text("Nonce").ok_or(SimulateError::Missing("Nonce"))?;
                if !signature_matches(&signature(&[&self.token, ts, nonce, encrypted]), sig) {
                    return Err(SimulateError::Signature);
                }
                let inner = key.decrypt(encrypted, &self.app_id)?;
                Ok(SimulatedReply {
                    status,
                    encrypted: true,
                    fields: Some(xml::parse(inner.as_bytes())?),
                    sent_xml,
                })
            }
            // Safe mode must answer encrypted; plain mode must not.
            (Some(_), None) => Err(SimulateError::Missing("Encrypt")),
            (None, _) => Ok(SimulatedReply {
                status,
                encrypted: false,
                fields: Some(outer),
                sent_xml,
            }),
        }
    }
}
