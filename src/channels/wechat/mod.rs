//! The WeChat Official Account (服务号) channel: the URL a bank enters in the 公众平台
//! console (服务器配置), with its Token and EncodingAESKey.
//!
//! `GET /wechat` answers the console's URL verification; `POST /wechat` receives customer
//! messages and events as XML (plain, compatible or safe mode), runs them through the
//! engine and answers with a passive reply, or with `success` and a later 客服消息 when the
//! engine is slower than the platform's 5 seconds.
//!
//! Three rules shape the code:
//! - **The engine runs once per message.** The platform retries a message three times
//!   when it gets no answer in 5 s. The engine de-duplicates finished messages by id
//!   (persistently); a retry that arrives while the first attempt is still running joins
//!   it here (an in-flight map by message id) instead of starting a second run.
//! - **Every reply reaches the customer exactly once.** A finished answer goes out either
//!   passively (to whichever attempt is still waiting) or, if every attempt already
//!   answered `success`, through the [`OutboundSender`]; never both.
//! - **Nothing untrusted is believed before its signature is checked**, and nothing a
//!   customer wrote is logged unmasked.

pub mod config;
pub mod crypto;
pub mod outbound;
pub mod simulate;
pub mod xml;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::sync::watch;

pub use config::{HandoffMode, MenuAction, SecretString, WechatConfig};
pub use outbound::{
    AccessTokenProvider, ApiSender, FetchedToken, OutboundSender, SendError, StaticToken,
};

use crate::engine::{ChannelEvent, Engine, InboundMessage, Reply, ReplyKind};
use crate::error::{Error, Result};
use crypto::{signature, signature_matches, AesKey, CryptoError};
use xml::{Fields, XmlBuilder};

/// The `channel` of every message from this module.
pub const CHANNEL: &str = "wechat";

/// How long a finished message stays in the in-flight map, so that a late retry of an
/// answer already sent as a 客服消息 gets `success` instead of a second copy. The
/// platform's retries span about 15 s.
const RETAIN: Duration = Duration::from_secs(120);

const SORRY: &str = "抱歉，系统暂时繁忙，请稍后再试。";
const TEXT_ONLY: &str = "目前我只能看懂文字消息。请用文字描述您的问题，例如“信用卡丢了怎么办”。";
const VOICE_UNCLEAR: &str = "抱歉，没有听清您的语音。请用文字描述您的问题。";
const MENU_UNKNOWN: &str = "这个菜单暂时没有内容，请直接输入您的问题。";
const LOCATION_UNREADABLE: &str = "没能识别这个位置，请重新发送，或直接输入您的问题。";
/// A hand-off to the platform's 客服 can only be a passive reply; when the answer came
/// too late for one, the customer is asked to repeat the request.
const TRANSFER_LATE: &str = "抱歉，刚才没能为您转接人工客服，请再发送一次“转人工”。";
const MORE: &str = "……（内容较长，未能全部显示。如需完整说明，请回复“转人工”。）";

/// What the channel needs from the engine; a trait so unit tests can run the in-flight
/// logic against a slow fake.
trait Turns: Send + Sync {
    fn handle(&self, msg: &InboundMessage) -> Result<Reply>;
    /// Leaves kefu's queue after the chat went to the platform's 客服.
    fn cancel_ticket(&self, ticket: u64, now: i64) -> Result<()>;
}

impl Turns for Engine {
    fn handle(&self, msg: &InboundMessage) -> Result<Reply> {
        Engine::handle(self, msg)
    }

    fn cancel_ticket(&self, ticket: u64, now: i64) -> Result<()> {
        self.queue().cancel(ticket, now).map(|_| ())
    }
}

/// The answer to one message, as the channel delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Text(String),
    /// `transfer_customer_service`.
    Transfer,
    /// Nothing to say (the message went to the agent holding the chat, or was an event
    /// that needs no reply): `success`.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Passive,
    Sender,
}

#[derive(Default)]
struct FlightState {
    /// Requests for this message waiting for the answer right now.
    waiting: usize,
    /// Some request answered `success` because the answer was not ready.
    gave_up: bool,
    answer: Option<Answer>,
    delivered: Option<Delivery>,
    finished_at: Option<Instant>,
    /// The engine failed: a retry may run it again.
    failed: bool,
}

impl FlightState {
    /// The answer, if it is ready, nobody waits for it any more, some request gave up on
    /// it and it has not gone out: then it is the sender's, and marked so.
    fn take_for_sender(&mut self) -> Option<Answer> {
        if self.waiting == 0 && self.gave_up && self.delivered.is_none() {
            let answer = self.answer.clone()?;
            self.delivered = Some(Delivery::Sender);
            return Some(answer);
        }
        None
    }
}

/// A request waiting for a flight. If the request is dropped before it settles (the
/// platform closed the connection), the drop counts as giving up, and an answer that is
/// already there goes out through the sender rather than nowhere.
struct Waiter {
    channel: Arc<WechatChannel>,
    flight: Arc<Flight>,
    openid: String,
    settled: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let late = {
            let mut s = self.flight.state();
            s.waiting = s.waiting.saturating_sub(1);
            s.gave_up = true;
            s.take_for_sender()
        };
        if let Some(answer) = late {
            self.channel
                .clone()
                .send_late(std::mem::take(&mut self.openid), answer);
        }
    }
}

/// One message being answered, shared by the platform's retries of it.
struct Flight {
    state: Mutex<FlightState>,
    done: watch::Sender<bool>,
}

impl Flight {
    fn state(&self) -> std::sync::MutexGuard<'_, FlightState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Pushes agent replies and queue notices to WeChat customers (user ids `wx:OPENID` of
/// the channel's tenant) through the 客服消息 sender, for `kefu serve`.
pub struct WechatPush {
    tenant: String,
    sender: Arc<dyn OutboundSender>,
}

impl WechatPush {
    pub fn new(channel: &WechatChannel) -> Self {
        WechatPush {
            tenant: channel.tenant.clone(),
            sender: channel.sender(),
        }
    }
}

impl crate::channels::http::CustomerPush for WechatPush {
    fn serves(&self, key: &crate::store::UserKey) -> bool {
        key.tenant == self.tenant && key.user.starts_with("wx:")
    }

    fn push<'a>(
        &'a self,
        key: &'a crate::store::UserKey,
        text: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let openid = key.user.strip_prefix("wx:").unwrap_or(&key.user);
            self.sender
                .send_text(openid, text)
                .await
                .map_err(|e| Error::Backend(format!("WeChat 客服消息: {e}")))
        })
    }
}

/// The channel: configuration, the engine and the sender. Build one per process and
/// serve it with [`router`].
pub struct WechatChannel {
    tenant: String,
    app_id: String,
    token: String,
    /// The current EncodingAESKey first, then the previous one.
    keys: Vec<AesKey>,
    deadline: Duration,
    require_encryption: bool,
    window: i64,
    handoff: HandoffMode,
    kf_account: Option<String>,
    menu: BTreeMap<String, MenuAction>,
    max_reply_bytes: usize,
    max_body_bytes: usize,
    turns: Arc<dyn Turns>,
    sender: Arc<dyn OutboundSender>,
    flights: Mutex<Flights>,
}

/// Messages being answered or recently answered, by OpenID and message id.
struct Flights {
    map: HashMap<String, Arc<Flight>>,
    /// Expired entries are swept at most once a second, not on every message.
    swept_at: Instant,
}

impl std::fmt::Debug for WechatChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatChannel")
            .field("tenant", &self.tenant)
            .field("app_id", &self.app_id)
            .field("safe_mode_keys", &self.keys.len())
            .field("handoff", &self.handoff)
            .finish_non_exhaustive()
    }
}

impl WechatChannel {
    /// Reads the secrets `config` refers to and checks the keys. `sender` delivers late
    /// answers; [`ApiSender::from_config`] builds the standard one.
    pub fn new(
        config: &WechatConfig,
        engine: Arc<Engine>,
        sender: Arc<dyn OutboundSender>,
    ) -> Result<Self> {
        Self::with_turns(config, engine, sender)
    }

    /// The channel with the standard sender ([`ApiSender::from_config`]); the server can
    /// take the sender back with [`WechatChannel::sender`] to push agent replies.
    pub fn from_config(config: &WechatConfig, engine: Arc<Engine>) -> Result<Self> {
        let secrets = config.secrets()?;
        let sender = Arc::new(ApiSender::from_config(config, &secrets)?);
        Self::with_turns(config, engine, sender)
    }

    fn with_turns(
        config: &WechatConfig,
        turns: Arc<dyn Turns>,
        sender: Arc<dyn OutboundSender>,
    ) -> Result<Self> {
        let secrets = config.secrets()?;
        let mut keys = Vec::new();
        for (name, key) in [
            ("encoding_aes_key", &secrets.encoding_aes_key),
            (
                "previous_encoding_aes_key",
                &secrets.previous_encoding_aes_key,
            ),
        ] {
            if let Some(k) = key {
                keys.push(
                    AesKey::from_encoding_key(k)
                        .map_err(|e| Error::InvalidInput(format!("[wechat] {name}: {e}")))?,
                );
            }
        }
        let menu = config
            .menu
            .iter()
            .filter_map(|(k, v)| MenuAction::parse(v).map(|a| (k.clone(), a)))
            .collect();
        Ok(WechatChannel {
            tenant: config.tenant.clone(),
            app_id: config.app_id.clone(),
            token: secrets.token,
            keys,
            deadline: Duration::from_millis(config.reply_deadline_ms),
            require_encryption: config.require_encryption,
            window: config.timestamp_window_secs,
            handoff: config.handoff,
            kf_account: config.kf_account.clone().filter(|k| !k.is_empty()),
            menu,
            max_reply_bytes: config.max_reply_bytes,
            max_body_bytes: config.max_body_bytes,
            turns,
            sender,
            flights: Mutex::new(Flights {
                map: HashMap::new(),
                swept_at: Instant::now(),
            }),
        })
    }

    /// The sender late answers go through (the server uses the same one for agents).
    pub fn sender(&self) -> Arc<dyn OutboundSender> {
        self.sender.clone()
    }

    fn check_url_signature(&self, q: &WechatQuery) -> std::result::Result<(), Rejection> {
        let (Some(sig), Some(ts), Some(nonce)) = (&q.signature, &q.timestamp, &q.nonce) else {
            return Err(Rejection::MissingSignature);
        };
        if !signature_matches(&signature(&[&self.token, ts, nonce]), sig) {
            return Err(Rejection::BadSignature);
        }
        Ok(())
    }

    fn check_timestamp(&self, q: &WechatQuery) -> std::result::Result<(), Rejection> {
        let ts: i64 = q
            .timestamp
            .as_deref()
            .and_then(|t| t.parse().ok())
            .ok_or(Rejection::BadTimestamp)?;
        if self.window > 0 && (now_secs() - ts).abs() > self.window {
            return Err(Rejection::StaleTimestamp);
        }
        Ok(())
    }

    /// Decrypts and parses a POST body whose URL signature was checked; returns the
    /// message and, in safe or compatible mode, the key to encrypt the reply with.
    fn open(
        &self,
        q: &WechatQuery,
        body: &[u8],
    ) -> std::result::Result<(Fields, Option<&AesKey>), Rejection> {
        match q.encrypt_type.as_deref() {
            None | Some("") | Some("raw") if self.require_encryption => {
                Err(Rejection::PlaintextRefused)
            }
            None | Some("") | Some("raw") => Ok((xml::parse(body)?, None)),
            Some("aes") => {
                if self.keys.is_empty() {
                    return Err(Rejection::SafeModeNotConfigured);
                }
                let outer = xml::parse(body)?;
                let encrypted = outer.text("Encrypt").ok_or(Rejection::Missing("Encrypt"))?;
                let msg_sig = q
                    .msg_signature
                    .as_deref()
                    .ok_or(Rejection::MissingSignature)?;
                let (ts, nonce) = (
                    q.timestamp.as_deref().unwrap_or_default(),
                    q.nonce.as_deref().unwrap_or_default(),
                );
                if !signature_matches(&signature(&[&self.token, ts, nonce, encrypted]), msg_sig) {
                    return Err(Rejection::BadSignature);
                }
                let mut first_error = None;
                for key in &self.keys {
                    match key.decrypt(encrypted, &self.app_id) {
                        Ok(inner) => return Ok((xml::parse(inner.as_bytes())?, Some(key))),
                        Err(e) => {
                            // The AppId check is the informative failure: it means the
                            // key was right and the message is for another account.
                            if first_error.is_none() || e == CryptoError::WrongAppId {
                                first_error = Some(e);
                            }
                        }
                    }
                }
                Err(Rejection::Crypto(
                    first_error.unwrap_or(CryptoError::BadPadding),
                ))
            }
            Some(_) => Err(Rejection::UnknownEncryption),
        }
    }

    /// Turns the platform's message into what to do with it.
    fn classify(&self, f: &Fields) -> std::result::Result<Incoming, Rejection> {
        let openid = f
            .text("FromUserName")
            .ok_or(Rejection::Missing("FromUserName"))?;
        if openid.len() > 64
            || !openid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Rejection::BadField("FromUserName"));
        }
        let account = f
            .text("ToUserName")
            .ok_or(Rejection::Missing("ToUserName"))?;
        let create_time: i64 = f
            .text("CreateTime")
            .ok_or(Rejection::Missing("CreateTime"))?
            .parse()
            .map_err(|_| Rejection::BadField("CreateTime"))?;
        let msg_type = f.text("MsgType").ok_or(Rejection::Missing("MsgType"))?;
        let msg_id = f.text("MsgId").map(str::to_owned);
        let reply_to = ReplyTo {
            openid: openid.to_owned(),
            account: account.to_owned(),
        };
        let event_id = format!("ev:{openid}:{create_time}");
        let message = |text: String, id: Option<String>, event: Option<ChannelEvent>| {
            Incoming::Engine(
                InboundMessage {
                    tenant: self.tenant.clone(),
                    branch: None,
                    user: format!("wx:{openid}"),
                    channel: CHANNEL.into(),
                    text,
                    message_id: id,
                    at: now_secs(),
                    event,
                },
                reply_to.clone(),
            )
        };
        let immediate = |text: &str| Incoming::Immediate(text.to_owned(), reply_to.clone());
        Ok(match msg_type {
            "text" => message(
                f.get("Content").unwrap_or_default().to_owned(),
                msg_id.or(Some(event_id)),
                None,
            ),
            "voice" => match f.text("Recognition") {
                Some(text) => message(text.to_owned(), msg_id.or(Some(event_id)), None),
                None => immediate(VOICE_UNCLEAR),
            },
            "location" => {
                let lat = f.text("Location_X").and_then(|v| v.parse::<f64>().ok());
                let lon = f.text("Location_Y").and_then(|v| v.parse::<f64>().ok());
                match (lat, lon) {
                    (Some(latitude), Some(longitude))
                        if latitude.abs() <= 90.0 && longitude.abs() <= 180.0 =>
                    {
                        let label = f.text("Label").map(str::to_owned);
                        message(
                            format!("（发送位置：{}）", label.as_deref().unwrap_or("未命名")),
                            msg_id.or(Some(event_id)),
                            Some(ChannelEvent::Location {
                                latitude,
                                longitude,
                                label,
                            }),
                        )
                    }
                    _ => immediate(LOCATION_UNREADABLE),
                }
            }
            "event" => match f.text("Event").unwrap_or_default() {
                "subscribe" => message(
                    "（关注公众号）".into(),
                    Some(event_id),
                    Some(ChannelEvent::Subscribe),
                ),
                "CLICK" => {
                    let key = f.text("EventKey").unwrap_or_default();
                    match self.menu.get(key) {
                        Some(MenuAction::Entry(id)) => message(
                            format!("（菜单：{key}）"),
                            Some(event_id),
                            Some(ChannelEvent::ShowEntry { id: id.clone() }),
                        ),
                        Some(MenuAction::Text(text)) => message(text.clone(), Some(event_id), None),
                        None => {
                            tracing::warn!(
                                key = %key.chars().take(64).collect::<String>(),
                                "wechat: CLICK on a menu key missing from [wechat.menu]"
                            );
                            immediate(MENU_UNKNOWN)
                        }
                    }
                }
                // Automatic location reports (on entering the chat) are not something the
                // customer said: answering each would be noise. The branch search uses
                // locations the customer sends on purpose.
                _ => Incoming::Ignore,
            },
            _ => immediate(TEXT_ONLY),
        })
    }

    /// Answers a message, joining an attempt already running for the same id.
    async fn answer(self: &Arc<Self>, msg: InboundMessage, to: &ReplyTo) -> Answer {
        let Some(id) = msg.message_id.clone() else {
            return Answer::Nothing;
        };
        let key = format!("{}\u{0}{id}", to.openid);
        let (flight, fresh) = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights.swept_at.elapsed() >= Duration::from_secs(1) {
                flights.map.retain(|_, f| {
                    let s = f.state();
                    !s.failed && s.finished_at.is_none_or(|t| t.elapsed() < RETAIN)
                });
                flights.swept_at = Instant::now();
            }
            // A failed run is not joined: the retry runs the engine again.
            match flights.map.get(&key).filter(|f| !f.state().failed) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight {
                        state: Mutex::new(FlightState::default()),
                        done: watch::channel(false).0,
                    });
                    flights.map.insert(key, f.clone());
                    (f, true)
                }
            }
        };
        flight.state().waiting += 1;
        // From here on, this request counts as waiting until the guard says otherwise,
        // also if the platform hangs up and the request future is dropped mid-wait.
        let mut guard = Waiter {
            channel: self.clone(),
            flight: flight.clone(),
            openid: to.openid.clone(),
            settled: false,
        };
        if fresh {
            self.clone()
                .spawn_turn(flight.clone(), msg, to.openid.clone());
        }
        let mut done = flight.done.subscribe();
        if !self.deadline.is_zero() {
            let _ = tokio::time::timeout(self.deadline, done.wait_for(|d| *d)).await;
        }
        guard.settled = true;
        let mut s = flight.state();
        s.waiting -= 1;
        match (s.answer.clone(), s.delivered) {
            (Some(a), None) => {
                s.delivered = Some(Delivery::Passive);
                a
            }
            // A retry of a message answered passively: the platform did not get that
            // answer, so it gets the same one again.
            (Some(a), Some(Delivery::Passive)) => a,
            (Some(_), Some(Delivery::Sender)) => Answer::Nothing,
            (None, _) => {
                s.gave_up = true;
                Answer::Nothing
            }
        }
    }

    /// Runs the engine off the async threads; delivers through the sender if every
    /// request for this message has already answered `success`.
    fn spawn_turn(self: Arc<Self>, flight: Arc<Flight>, msg: InboundMessage, openid: String) {
        tokio::spawn(async move {
            let me = self.clone();
            let turn = tokio::task::spawn_blocking(move || me.run_turn(&msg)).await;
            let (answer, failed) = match turn {
                Ok(Ok(a)) => (a, false),
                Ok(Err(e)) => {
                    tracing::error!(openid = %short(&openid), error = %e, "wechat: the engine failed");
                    (Answer::Text(SORRY.into()), true)
                }
                Err(e) => {
                    tracing::error!(openid = %short(&openid), error = %e, "wechat: the engine panicked");
                    (Answer::Text(SORRY.into()), true)
                }
            };
            let late = {
                let mut s = flight.state();
                s.answer = Some(answer);
                s.failed = failed;
                s.finished_at = Some(Instant::now());
                s.take_for_sender()
            };
            flight.done.send_replace(true);
            if let Some(answer) = late {
                self.send_late(openid, answer);
            }
        });
    }

    /// Sends an answer nobody is waiting for as a 客服消息 (on its own task).
    fn send_late(self: Arc<Self>, openid: String, answer: Answer) {
        let text = match answer {
            Answer::Text(t) => t,
            Answer::Transfer => TRANSFER_LATE.to_owned(),
            Answer::Nothing => return,
        };
        tokio::spawn(async move {
            match self.sender.send_text(&openid, &text).await {
                Ok(()) => {
                    tracing::info!(openid = %short(&openid), "wechat: late answer sent as 客服消息")
                }
                Err(e) => {
                    tracing::warn!(openid = %short(&openid), error = %e, "wechat: late answer not delivered")
                }
            }
        });
    }

    /// One engine turn (blocking), rendered for this channel.
    fn run_turn(&self, msg: &InboundMessage) -> Result<Answer> {
        let reply = self.turns.handle(msg)?;
        tracing::info!(
            openid = %short(msg.user.trim_start_matches("wx:")),
            kind = ?reply.kind,
            entry = reply.entry.as_deref().unwrap_or("-"),
            "wechat: answered"
        );
        if reply.kind == ReplyKind::Relayed {
            return Ok(Answer::Nothing);
        }
        if self.handoff == HandoffMode::Wechat && reply.kind == ReplyKind::Handoff {
            if let Some(h) = reply.handoff.as_ref().filter(|h| h.state == "queued") {
                // The platform's 客服 takes the chat; kefu's queue must not keep a ticket
                // nobody will serve (the engine then serves the customer again when the
                // platform hands the chat back).
                // A failure here (an agent claimed it in the meantime) must not cost the
                // customer the transfer: the ticket is then the agents' to close.
                if let Err(e) = self.turns.cancel_ticket(h.ticket, msg.at) {
                    tracing::warn!(ticket = h.ticket, error = %e, "wechat: kefu ticket not cancelled after transfer");
                }
                return Ok(Answer::Transfer);
            }
        }
        Ok(Answer::Text(fit_reply(&reply, self.max_reply_bytes)))
    }

    fn render(&self, answer: &Answer, to: &ReplyTo) -> Option<String> {
        let base = XmlBuilder::new()
            .cdata("ToUserName", &to.openid)
            .cdata("FromUserName", &to.account)
            .number("CreateTime", now_secs());
        match answer {
            Answer::Text(text) if !text.is_empty() => Some(
                base.cdata("MsgType", "text")
                    .cdata("Content", text)
                    .finish(),
            ),
            Answer::Transfer => {
                let b = base.cdata("MsgType", "transfer_customer_service");
                Some(match &self.kf_account {
                    Some(kf) => b
                        .nested("TransInfo", XmlBuilder::new().cdata("KfAccount", kf))
                        .finish(),
                    None => b.finish(),
                })
            }
            _ => None,
        }
    }

    /// Encrypts a passive reply for safe and compatible mode, echoing the request's
    /// timestamp and nonce.
    fn seal(&self, xml: &str, key: &AesKey, q: &WechatQuery) -> String {
        let ts = q.timestamp.clone().unwrap_or_default();
        let nonce = q.nonce.clone().unwrap_or_default();
        let encrypted = key.encrypt(xml, &self.app_id);
        let sig = signature(&[&self.token, &ts, &nonce, &encrypted]);
        let ts_num = ts.parse::<i64>().unwrap_or_else(|_| now_secs());
        XmlBuilder::new()
            .cdata("Encrypt", &encrypted)
            .cdata("MsgSignature", &sig)
            .number("TimeStamp", ts_num)
            .cdata("Nonce", &nonce)
            .finish()
    }

    async fn receive_inner(
        self: &Arc<Self>,
        q: &WechatQuery,
        body: Body,
    ) -> std::result::Result<Response, Rejection> {
        // The URL is checked before the body is read: unsigned traffic costs nothing.
        self.check_url_signature(q)?;
        self.check_timestamp(q)?;
        let bytes = axum::body::to_bytes(body, self.max_body_bytes)
            .await
            .map_err(|e| {
                if is_length_limit(&e) {
                    Rejection::TooLarge(self.max_body_bytes)
                } else {
                    Rejection::Body
                }
            })?;
        let (fields, key) = self.open(q, &bytes)?;
        let (answer, to) = match self.classify(&fields)? {
            Incoming::Engine(msg, to) => (self.answer(msg, &to).await, to),
            Incoming::Immediate(text, to) => (Answer::Text(text), to),
            Incoming::Ignore => return Ok(success()),
        };
        let Some(xml) = self.render(&answer, &to) else {
            return Ok(success());
        };
        let body = match key {
            Some(k) => self.seal(&xml, k, q),
            None => xml,
        };
        Ok((
            [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
            body,
        )
            .into_response())
    }
}

#[derive(Debug, Clone)]
struct ReplyTo {
    openid: String,
    /// The 公众号's original id (gh_…), the reply's FromUserName.
    account: String,
}

enum Incoming {
    Engine(InboundMessage, ReplyTo),
    Immediate(String, ReplyTo),
    Ignore,
}

/// Query parameters the platform adds to the URL.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WechatQuery {
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub echostr: Option<String>,
    pub encrypt_type: Option<String>,
    pub msg_signature: Option<String>,
}

/// Why a request was refused; logged, and answered with a short plain-text reason.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error("signature, timestamp or nonce missing")]
    MissingSignature,
    #[error("invalid signature")]
    BadSignature,
    #[error("timestamp is not a number")]
    BadTimestamp,
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    #[error("echostr missing")]
    MissingEchostr,
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("body could not be read")]
    Body,
    #[error(transparent)]
    Xml(#[from] xml::XmlError),
    #[error("safe mode: {0}")]
    Crypto(CryptoError),
    #[error("safe mode requested but no encoding_aes_key is configured")]
    SafeModeNotConfigured,
    #[error("plaintext messages are refused (require_encryption)")]
    PlaintextRefused,
    #[error("unknown encrypt_type")]
    UnknownEncryption,
    #[error("missing <{0}>")]
    Missing(&'static str),
    #[error("invalid <{0}>")]
    BadField(&'static str),
}

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Rejection::MissingSignature
            | Rejection::BadSignature
            | Rejection::StaleTimestamp
            | Rejection::PlaintextRefused
            | Rejection::Crypto(CryptoError::WrongAppId) => StatusCode::FORBIDDEN,
            Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(self, Rejection::SafeModeNotConfigured) {
            tracing::error!(reason = %self, "wechat: request refused");
        } else {
            tracing::warn!(reason = %self, status = status.as_u16(), "wechat: request refused");
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response()
    }
}

fn success() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "success",
    )
        .into_response()
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// `GET /wechat` and `POST /wechat`, for the server to `.merge()`.
pub fn router(channel: Arc<WechatChannel>) -> Router {
    Router::new()
        .route("/wechat", get(verify).post(receive))
        .with_state(channel)
}

/// The console's URL check: echo `echostr` when the signature is right. No clock window
/// here: echoing is harmless to replay, and the console's clock is not ours to judge.
async fn verify(State(ch): State<Arc<WechatChannel>>, Query(q): Query<WechatQuery>) -> Response {
    let checked = ch.check_url_signature(&q).and_then(|()| {
        q.echostr
            .clone()
            .filter(|e| !e.is_empty())
            .ok_or(Rejection::MissingEchostr)
    });
    match checked {
        Ok(echo) => {
            tracing::info!("wechat: URL verification passed");
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], echo).into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn receive(
    State(ch): State<Arc<WechatChannel>>,
    Query(q): Query<WechatQuery>,
    body: Body,
) -> Response {
    match ch.receive_inner(&q, body).await {
        Ok(r) => r,
        Err(r) => r.into_response(),
    }
}

/// The reply as text within the platform's limit. An answer that does not fit is cut
/// at a sentence or line end with a pointer to 转人工; the numbered options are kept when
/// there is room, because the customer's next "2" refers to them.
fn fit_reply(reply: &Reply, max_bytes: usize) -> String {
    let full = reply.plain_text();
    if full.len() <= max_bytes {
        return full;
    }
    let options = full.get(reply.text.len()..).unwrap_or_default();
    let (budget, tail) = match max_bytes.checked_sub(options.len() + MORE.len()) {
        Some(b) if b >= max_bytes / 4 => (b, options),
        _ => (max_bytes.saturating_sub(MORE.len()), ""),
    };
    let mut cut = budget.min(reply.text.len());
    while !reply.text.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &reply.text[..cut];
    let head = match head.rfind(['\n', '。', '；', '！', '？']) {
        Some(i) if i >= cut / 2 => {
            let end = i + head[i..].chars().next().map_or(0, char::len_utf8);
            &head[..end]
        }
        _ => head,
    };
    format!("{}{MORE}{tail}", head.trim_end())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An OpenID shortened for logs: enough to find a customer, not a full identifier.
fn short(openid: &str) -> String {
    let head: String = openid.chars().take(8).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake engine that blocks until released, counting its runs.
    struct Gate {
        runs: AtomicUsize,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
        /// Fail this many runs first (a store error).
        failures: AtomicUsize,
    }

    impl Turns for Gate {
        fn handle(&self, msg: &InboundMessage) -> Result<Reply> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(Error::Store("disk full".into()));
            }
            let _ = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            Ok(serde_json::from_value(serde_json::json!({
                "kind": "answer", "text": format!("答：{}", msg.text)
            }))
            .unwrap())
        }

        fn cancel_ticket(&self, _: u64, _: i64) -> Result<()> {
            Ok(())
        }
    }

    /// Records what the sender was asked to deliver.
    #[derive(Default)]
    struct Recorder(
        tokio::sync::Mutex<Vec<(String, String)>>,
        tokio::sync::Notify,
    );

    impl OutboundSender for Recorder {
        fn send_text<'a>(
            &'a self,
            openid: &'a str,
            text: &'a str,
        ) -> outbound::BoxFuture<'a, std::result::Result<(), SendError>> {
            Box::pin(async move {
                self.0.lock().await.push((openid.into(), text.into()));
                self.1.notify_one();
                Ok(())
            })
        }
    }

    fn channel(
        deadline_ms: u64,
    ) -> (
        Arc<WechatChannel>,
        Arc<Gate>,
        std::sync::mpsc::Sender<()>,
        Arc<Recorder>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let gate = Arc::new(Gate {
            runs: AtomicUsize::new(0),
            release: Mutex::new(rx),
            failures: AtomicUsize::new(0),
        });
        let recorder = Arc::new(Recorder::default());
        let config = WechatConfig {
            token: Some(SecretString::new("tok")),
            reply_deadline_ms: deadline_ms,
            ..WechatConfig::default()
        };
        let ch = WechatChannel::with_turns(&config, gate.clone(), recorder.clone()).unwrap();
        (Arc::new(ch), gate, tx, recorder)
    }

    fn text_msg(id: &str) -> InboundMessage {
        InboundMessage {
            tenant: "bank".into(),
            branch: None,
            user: "wx:o1".into(),
            channel: CHANNEL.into(),
            text: "问题".into(),
            message_id: Some(id.into()),
            at: now_secs(),
            event: None,
        }
    }

    fn to() -> ReplyTo {
        ReplyTo {
            openid: "o1".into(),
            account: "gh_1".into(),
        }
    }

    /// The platform's retry arrives while the first attempt still runs: the engine runs
    /// once, and the retry gets the answer once it is ready.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_joins_the_running_attempt() {
        let (ch, gate, release, recorder) = channel(60_000);
        let first = tokio::spawn({
            let ch = ch.clone();
            async move { ch.answer(text_msg("m1"), &to()).await }
        });
        while gate.runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let retry = tokio::spawn({
            let ch = ch.clone();
            async move { ch.answer(text_msg("m1"), &to()).await }
        });
        // Both are registered as waiting before the engine is released.
        while ch
            .flights
            .lock()
            .unwrap()
            .map
            .values()
            .map(|f| f.state().waiting)
            .sum::<usize>()
            < 2
        {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        let expected = Answer::Text("答：问题".into());
        assert_eq!(first.await.unwrap(), expected);
        assert_eq!(retry.await.unwrap(), expected);
        assert_eq!(gate.runs.load(Ordering::SeqCst), 1);
        assert!(
            recorder.0.lock().await.is_empty(),
            "answered passively only"
        );
    }

    /// Nobody is waiting when the answer is ready: it goes out through the sender once,
    /// and a late retry of the same message gets `success`, not a second copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_answer_goes_through_the_sender_once() {
        let (ch, gate, release, recorder) = channel(0);
        assert_eq!(ch.answer(text_msg("m2"), &to()).await, Answer::Nothing);
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), recorder.1.notified())
            .await
            .expect("the sender was called");
        assert_eq!(
            recorder.0.lock().await.clone(),
            vec![("o1".to_owned(), "答：问题".to_owned())]
        );
        assert_eq!(ch.answer(text_msg("m2"), &to()).await, Answer::Nothing);
        assert_eq!(gate.runs.load(Ordering::SeqCst), 1);
        assert_eq!(recorder.0.lock().await.len(), 1);
    }

    /// The platform hangs up while the engine runs (a deadline above its 5 s): the
    /// dropped request counts as given up, and the answer goes out through the sender.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_request_does_not_strand_the_answer() {
        let (ch, gate, release, recorder) = channel(60_000);
        let request = tokio::spawn({
            let ch = ch.clone();
            async move { ch.answer(text_msg("m3"), &to()).await }
        });
        while gate.runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), recorder.1.notified())
            .await
            .expect("the sender was called");
        assert_eq!(
            recorder.0.lock().await.clone(),
            vec![("o1".to_owned(), "答：问题".to_owned())]
        );
    }

    /// A failed run is not replayed to the retry: the retry runs the engine again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_after_a_failure_runs_again() {
        let (ch, gate, release, recorder) = channel(60_000);
        gate.failures.store(1, Ordering::SeqCst);
        assert_eq!(
            ch.answer(text_msg("m4"), &to()).await,
            Answer::Text(SORRY.into())
        );
        release.send(()).unwrap();
        assert_eq!(
            ch.answer(text_msg("m4"), &to()).await,
            Answer::Text("答：问题".into())
        );
        assert_eq!(gate.runs.load(Ordering::SeqCst), 2);
        assert!(recorder.0.lock().await.is_empty());
    }

    #[test]
    fn long_replies_are_cut_with_a_pointer_and_keep_their_options() {
        let mut r: Reply = serde_json::from_value(serde_json::json!({
            "kind": "answer",
            "text": "第一句话。".repeat(300),
            "options_title": "您可能还想问：",
            "options": [{"number": 1, "label": "信用卡怎么挂失"}]
        }))
        .unwrap();
        let text = fit_reply(&r, 2048);
        assert!(text.len() <= 2048, "{}", text.len());
        assert!(text.contains("第一句话。……（内容较长"), "{text}");
        assert!(text.ends_with("1. 信用卡怎么挂失"), "{text}");
        r.text = "短".into();
        assert_eq!(fit_reply(&r, 2048), r.plain_text());
    }
}
