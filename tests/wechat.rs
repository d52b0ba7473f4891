//! The WeChat channel over real HTTP on 127.0.0.1: the platform's side (signing,
//! encrypting, a fake 客服消息 API) is played by this file, with its own AES code, so the
//! channel is checked against an independent implementation of the scheme.

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aes::Aes256;
use axum::extract::Query;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::{alphabet, Engine as _};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;

use kefu::channels::wechat::xml::{parse, Fields};
use kefu::channels::wechat::{
    router, ApiSender, HandoffMode, SecretString, WechatChannel, WechatConfig,
};
use kefu::config::EngineConfig;
use kefu::engine::Engine;
use kefu::store::{Speaker, UserKey};

const TOKEN: &str = "kefuTestToken1";
const APP_ID: &str = "wx0123456789abcdef";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const OLD_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";
const ACCOUNT: &str = "gh_0123456789ab";

// ---- the platform's side, written independently of kefu's crypto module ----

fn sha1_sorted(parts: &[&str]) -> String {
    let mut v = parts.to_vec();
    v.sort();
    hex::encode(Sha1::digest(v.concat().as_bytes()))
}

fn aes_key(encoding: &str) -> [u8; 32] {
    let lenient = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    lenient
        .decode(format!("{encoding}="))
        .unwrap()
        .try_into()
        .unwrap()
}

fn wx_encrypt(encoding: &str, app_id: &str, xml: &str) -> String {
    let key = aes_key(encoding);
    let mut plain = b"0123456789abcdef".to_vec();
    plain.extend_from_slice(&(xml.len() as u32).to_be_bytes());
    plain.extend_from_slice(xml.as_bytes());
    plain.extend_from_slice(app_id.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let n = plain.len();
    let out = cbc::Encryptor::<Aes256>::new(&key.into(), key[..16].into())
        .encrypt_padded_mut::<NoPadding>(&mut plain, n)
        .unwrap()
        .to_vec();
    STANDARD.encode(out)
}

fn wx_decrypt(encoding: &str, app_id: &str, encrypted: &str) -> String {
    let key = aes_key(encoding);
    let mut data = STANDARD.decode(encrypted).unwrap();
    assert_eq!(data.len() % 32, 0, "ciphertext is padded to 32 bytes");
    let plain = cbc::Decryptor::<Aes256>::new(&key.into(), key[..16].into())
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .unwrap()
        .to_vec();
    let pad = *plain.last().unwrap() as usize;
    assert!((1..=32).contains(&pad), "PKCS#7 to 32 bytes, got {pad}");
    let body = &plain[..plain.len() - pad];
    let len = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
    assert_eq!(&body[20 + len..], app_id.as_bytes(), "AppId at the end");
    String::from_utf8(body[20..20 + len].to_vec()).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn text_xml(openid: &str, content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

fn event_xml(openid: &str, event: &str, key: &str, create_time: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event><EventKey><![CDATA[{key}]]></EventKey></xml>"
    )
}

// ---- harness ----

struct Harness {
    url: String,
    engine: Arc<Engine>,
    /// 客服消息 the fake API received: (access_token, JSON body).
    sent: mpsc::UnboundedReceiver<(String, serde_json::Value)>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A fake platform API: `cgi-bin/token` (checks AppID and AppSecret) and
/// `message/custom/send` (records what it got).
async fn fake_api() -> (String, mpsc::UnboundedReceiver<(String, serde_json::Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/cgi-bin/token",
            get(
                |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let ok = q.get("grant_type").map(String::as_str) == Some("client_credential")
                        && q.get("appid").map(String::as_str) == Some(APP_ID)
                        && q.get("secret").map(String::as_str) == Some("test-app-secret");
                    Json(if ok {
                        serde_json::json!({"access_token": "ACCESS-1", "expires_in": 7200})
                    } else {
                        serde_json::json!({"errcode": 40125, "errmsg": "invalid appsecret"})
                    })
                },
            ),
        )
        .route(
            "/cgi-bin/message/custom/send",
            post(
                move |Query(q): Query<std::collections::HashMap<String, String>>,
                      Json(body): Json<serde_json::Value>| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send((q.get("access_token").cloned().unwrap_or_default(), body));
                        Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
                    }
                },
            ),
        );
    (serve(app).await, rx)
}

fn config() -> WechatConfig {
    WechatConfig {
        app_id: APP_ID.into(),
        token: Some(SecretString::new(TOKEN)),
        encoding_aes_key: Some(SecretString::new(KEY)),
        previous_encoding_aes_key: Some(SecretString::new(OLD_KEY)),
        app_secret: Some(SecretString::new("test-app-secret")),
        menu: [
            ("LOST".to_owned(), "entry:card-lost".to_owned()),
            ("CCLOST".to_owned(), "text:信用卡丢了怎么办".to_owned()),
        ]
        .into_iter()
        .collect(),
        ..WechatConfig::default()
    }
}

async fn start(mut wechat: WechatConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(common::engine_with(dir.path(), EngineConfig::default()));
    let (api, sent) = fake_api().await;
    wechat.api_base = api;
    let secrets = wechat.secrets().unwrap();
    let sender = Arc::new(ApiSender::from_config(&wechat, &secrets).unwrap());
    let channel = Arc::new(WechatChannel::new(&wechat, engine.clone(), sender).unwrap());
    let base = serve(router(channel)).await;
    Harness {
        url: format!("{base}/wechat"),
        engine,
        sent,
        // Loopback only, whatever proxy the environment names.
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        _dir: dir,
    }
}

impl Harness {
    /// Posts a plaintext-mode message with a correct URL signature.
    async fn post_plain(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        let (ts, nonce) = (now().to_string(), "271828".to_owned());
        let sig = sha1_sorted(&[TOKEN, &ts, &nonce]);
        self.post(
            &[("signature", sig), ("timestamp", ts), ("nonce", nonce)],
            body,
        )
        .await
    }

    async fn post(
        &self,
        query: &[(&str, String)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let r = self
            .client
            .post(&self.url)
            .query(query)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Posts in safe mode (or compatible mode: plaintext fields besides `Encrypt`),
    /// encrypted with `key` for `app_id`; returns the status and the raw reply.
    async fn post_encrypted(
        &self,
        xml: &str,
        key: &str,
        app_id: &str,
        compatible: bool,
    ) -> (u16, String, String, String) {
        let (ts, nonce) = (now().to_string(), "314159".to_owned());
        let encrypted = wx_encrypt(key, app_id, xml);
        let body = if compatible {
            xml.replace(
                "</xml>",
                &format!("<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"),
            )
        } else {
            format!("<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>")
        };
        let query = [
            ("signature", sha1_sorted(&[TOKEN, &ts, &nonce])),
            ("timestamp", ts.clone()),
            ("nonce", nonce.clone()),
            ("openid", "ignored".into()),
            ("encrypt_type", "aes".into()),
            (
                "msg_signature",
                sha1_sorted(&[TOKEN, &ts, &nonce, &encrypted]),
            ),
        ];
        let (status, reply) = self.post(&query, body).await;
        (status, reply, ts, nonce)
    }

    fn customer_turns(&self, openid: &str) -> Vec<kefu::store::Turn> {
        self.engine
            .transcript(&UserKey::new("bank", format!("wx:{openid}")))
            .unwrap()
            .into_iter()
            .filter(|t| t.from == Speaker::Customer)
            .collect()
    }
}

/// Checks an encrypted passive reply's signature (with the request's timestamp and nonce
/// echoed) and decrypts it with `key`.
fn open_reply(reply: &str, key: &str, ts: &str, nonce: &str) -> Fields {
    let outer = parse(reply.as_bytes()).unwrap_or_else(|e| panic!("{e}: {reply}"));
    let encrypted = outer.text("Encrypt").expect("Encrypt");
    assert_eq!(outer.text("TimeStamp"), Some(ts));
    assert_eq!(outer.text("Nonce"), Some(nonce));
    assert_eq!(
        outer.text("MsgSignature"),
        Some(sha1_sorted(&[TOKEN, ts, nonce, encrypted]).as_str()),
        "reply signature"
    );
    let inner = wx_decrypt(key, APP_ID, encrypted);
    parse(inner.as_bytes()).unwrap()
}

fn answer_of(id: &str) -> String {
    let kb = common::bundled_kb();
    kb.entries()
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no entry {id}"))
        .answer
        .clone()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap()
}

fn assert_text_reply(f: &Fields, openid: &str) -> String {
    assert_eq!(f.text("ToUserName"), Some(openid), "To and From swapped");
    assert_eq!(f.text("FromUserName"), Some(ACCOUNT));
    assert_eq!(f.text("MsgType"), Some("text"));
    assert!(f
        .text("CreateTime")
        .is_some_and(|t| t.parse::<i64>().is_ok()));
    f.get("Content").unwrap().to_owned()
}

// ---- tests ----

#[tokio::test]
async fn url_verification_with_the_official_vector() {
    let h = start(WechatConfig {
        token: Some(SecretString::new("AAAAA")),
        ..config()
    })
    .await;
    let get = |q: &'static str| {
        let url = format!("{}?{q}", h.url);
        let client = h.client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        get("signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492&echostr=4375120948345356249").await,
        (200, "4375120948345356249".to_owned())
    );
    let (status, _) = get("signature=f464b24fc39322e44b38aa78f5edd27bd1441697&timestamp=1714036504&nonce=1514711492&echostr=4375120948345356249").await;
    assert_eq!(status, 403);
    let (status, _) = get("timestamp=1714036504&nonce=1514711492&echostr=1").await;
    assert_eq!(status, 403);
    let (status, _) = get(
        "signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn plain_mode_round_trip() {
    let h = start(config()).await;
    let (status, body) = h
        .post_plain(text_xml("o_plain", "信用卡丢了怎么办", 1001))
        .await;
    assert_eq!(status, 200, "{body}");
    let content = assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_plain");
    assert!(
        content.starts_with(first_line(&answer_of("cc-lost"))),
        "{content}"
    );
    assert!(content.contains("您可能还想问：\n1. "), "{content}");
    assert!(content.len() <= 2048);
    // The customer's identity as the brief fixes it.
    let turns = h.customer_turns("o_plain");
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].message_id.as_deref(), Some("1001"));
}

#[tokio::test]
async fn safe_and_compatible_mode_round_trips() {
    let h = start(config()).await;
    for (compatible, openid, id) in [(false, "o_safe", 2001), (true, "o_compat", 2002)] {
        let (status, reply, ts, nonce) = h
            .post_encrypted(
                &text_xml(openid, "信用卡丢了怎么办", id),
                KEY,
                APP_ID,
                compatible,
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        assert!(!reply.contains("信用卡"), "the reply is encrypted: {reply}");
        let content = assert_text_reply(&open_reply(&reply, KEY, &ts, &nonce), openid);
        assert!(
            content.starts_with(first_line(&answer_of("cc-lost"))),
            "{content}"
        );
    }
}

#[tokio::test]
async fn the_previous_key_still_works_and_the_reply_uses_it() {
    let h = start(config()).await;
    let (status, reply, ts, nonce) = h
        .post_encrypted(
            &text_xml("o_oldkey", "信用卡丢了怎么办", 3001),
            OLD_KEY,
            APP_ID,
            false,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let content = assert_text_reply(&open_reply(&reply, OLD_KEY, &ts, &nonce), "o_oldkey");
    assert!(content.starts_with(first_line(&answer_of("cc-lost"))));
    // Without the previous key configured, the same message is refused.
    let h = start(WechatConfig {
        previous_encoding_aes_key: None,
        ..config()
    })
    .await;
    let (status, _, _, _) = h
        .post_encrypted(
            &text_xml("o_oldkey", "信用卡丢了怎么办", 3002),
            OLD_KEY,
            APP_ID,
            false,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn bad_signatures_wrong_app_id_and_stale_timestamps_are_refused() {
    let mut h = start(config()).await;
    let xml = text_xml("o_bad", "信用卡丢了怎么办", 4001);
    let ts = now().to_string();
    // Wrong URL signature, and none at all.
    let wrong = [
        ("signature", sha1_sorted(&["other", &ts, "1"])),
        ("timestamp", ts.clone()),
        ("nonce", "1".into()),
    ];
    assert_eq!(h.post(&wrong, xml.clone()).await.0, 403);
    assert_eq!(h.post(&[], xml.clone()).await.0, 403);
    // Signed, but an hour old (a replay).
    let old = (now() - 3600).to_string();
    let stale = [
        ("signature", sha1_sorted(&[TOKEN, &old, "1"])),
        ("timestamp", old),
        ("nonce", "1".into()),
    ];
    assert_eq!(h.post(&stale, xml.clone()).await.0, 403);
    // Safe mode: a right URL signature but a wrong msg_signature.
    let encrypted = wx_encrypt(KEY, APP_ID, &xml);
    let body = format!("<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>");
    let q = [
        ("signature", sha1_sorted(&[TOKEN, &ts, "1"])),
        ("timestamp", ts.clone()),
        ("nonce", "1".into()),
        ("encrypt_type", "aes".into()),
        (
            "msg_signature",
            sha1_sorted(&[TOKEN, &ts, "1", "something else"]),
        ),
    ];
    assert_eq!(h.post(&q, body).await.0, 403);
    // Encrypted with our key for another account.
    let (status, body, _, _) = h
        .post_encrypted(&xml, KEY, "wx_another_app_id", false)
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("AppId"), "{body}");
    // An account in safe mode can refuse plaintext outright.
    let strict = start(WechatConfig {
        require_encryption: true,
        ..config()
    })
    .await;
    assert_eq!(strict.post_plain(xml.clone()).await.0, 403);
    let (status, _, _, _) = strict.post_encrypted(&xml, KEY, APP_ID, false).await;
    assert_eq!(status, 200);
    // None of them reached the engine.
    assert!(h.customer_turns("o_bad").is_empty());
    assert_eq!(strict.customer_turns("o_bad").len(), 1);
    assert!(h.sent.try_recv().is_err());
}

#[tokio::test]
async fn a_duplicate_msg_id_runs_the_engine_once() {
    let h = start(config()).await;
    let xml = text_xml("o_dup", "信用卡丢了怎么办", 5001);
    // Two deliveries at once (a retry racing the first), then a late one.
    let (a, b) = tokio::join!(h.post_plain(xml.clone()), h.post_plain(xml.clone()));
    let c = h.post_plain(xml.clone()).await;
    let contents: Vec<String> = [a, b, c]
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_dup")
        })
        .collect();
    assert!(contents.iter().all(|c| *c == contents[0]), "{contents:?}");
    let turns = h.customer_turns("o_dup");
    assert_eq!(turns.len(), 1, "{turns:?}");
    // A different MsgId with the same text is a new message.
    h.post_plain(text_xml("o_dup", "信用卡丢了怎么办", 5002))
        .await;
    assert_eq!(h.customer_turns("o_dup").len(), 2);
}

#[tokio::test]
async fn subscribe_and_click_events() {
    let h = start(config()).await;
    let t = now();
    let (status, body) = h.post_plain(event_xml("o_ev", "subscribe", "", t)).await;
    assert_eq!(status, 200, "{body}");
    let welcome = assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_ev");
    assert!(welcome.contains("您好，我是本行智能客服"), "{welcome}");
    assert!(
        welcome.contains("\n1. "),
        "the welcome menu is numbered: {welcome}"
    );
    // The same event delivered again (same FromUserName + CreateTime) is handled once.
    h.post_plain(event_xml("o_ev", "subscribe", "", t)).await;
    assert_eq!(h.customer_turns("o_ev").len(), 1);
    // A menu key bound to an entry, and one bound to a text.
    let (_, body) = h
        .post_plain(event_xml("o_ev", "CLICK", "LOST", t + 1))
        .await;
    let content = assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_ev");
    assert!(
        content.starts_with(first_line(&answer_of("card-lost"))),
        "{content}"
    );
    let (_, body) = h
        .post_plain(event_xml("o_ev", "CLICK", "CCLOST", t + 2))
        .await;
    let content = assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_ev");
    assert!(
        content.starts_with(first_line(&answer_of("cc-lost"))),
        "{content}"
    );
    // A key the configuration does not know gets a polite text, not an error.
    let (status, body) = h
        .post_plain(event_xml("o_ev", "CLICK", "NOPE", t + 3))
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("这个菜单暂时没有内容"), "{body}");
    // Events that need no answer: unsubscribe and automatic location reports.
    for event in ["unsubscribe", "LOCATION", "VIEW"] {
        assert_eq!(
            h.post_plain(event_xml("o_ev", event, "", t + 4)).await,
            (200, "success".to_owned())
        );
    }
    assert_eq!(h.customer_turns("o_ev").len(), 3);
}

#[tokio::test]
async fn other_message_types() {
    let h = start(config()).await;
    let image = format!("<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[o_types]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://x/y.jpg]]></PicUrl><MediaId><![CDATA[m]]></MediaId><MsgId>6001</MsgId></xml>", now());
    let (_, body) = h.post_plain(image).await;
    assert!(
        assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_types").contains("只能看懂文字"),
        "{body}"
    );
    let voice = format!("<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[o_types]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[m]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[信用卡丢了怎么办]]></Recognition><MsgId>6002</MsgId></xml>", now());
    let (_, body) = h.post_plain(voice).await;
    let content = assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_types");
    assert!(
        content.starts_with(first_line(&answer_of("cc-lost"))),
        "{content}"
    );
    let unrecognised = format!("<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[o_types]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[m]]></MediaId><Format><![CDATA[amr]]></Format><MsgId>6004</MsgId></xml>", now());
    let (_, body) = h.post_plain(unrecognised).await;
    assert!(body.contains("没有听清您的语音"), "{body}");
    let location = format!("<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[o_types]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[location]]></MsgType><Location_X>30.27</Location_X><Location_Y>120.15</Location_Y><Scale>15</Scale><Label><![CDATA[杭州市西湖区]]></Label><MsgId>6003</MsgId></xml>", now());
    let (_, body) = h.post_plain(location).await;
    let content = assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_types");
    // A shared location feeds the banking backend's branch search.
    assert!(
        content.contains("网点") && content.contains("公里"),
        "{content}"
    );
}

#[tokio::test]
async fn a_slow_answer_is_success_then_a_customer_service_message() {
    // A deadline of 0 ms: every answer is "not ready in time".
    let mut h = start(WechatConfig {
        reply_deadline_ms: 0,
        ..config()
    })
    .await;
    let (status, reply, _, _) = h
        .post_encrypted(
            &text_xml("o_slow", "信用卡丢了怎么办", 7001),
            KEY,
            APP_ID,
            false,
        )
        .await;
    assert_eq!((status, reply.as_str()), (200, "success"));
    let (token, body) = tokio::time::timeout(std::time::Duration::from_secs(60), h.sent.recv())
        .await
        .expect("the fake API receives the 客服消息")
        .unwrap();
    assert_eq!(token, "ACCESS-1", "the token came from cgi-bin/token");
    assert_eq!(body["touser"], "o_slow");
    assert_eq!(body["msgtype"], "text");
    let content = body["text"]["content"].as_str().unwrap();
    assert!(
        content.starts_with(first_line(&answer_of("cc-lost"))),
        "{content}"
    );
    // The platform's retry of the same message gets `success`, not a second copy, and
    // the engine ran once.
    let (status, reply, _, _) = h
        .post_encrypted(
            &text_xml("o_slow", "信用卡丢了怎么办", 7001),
            KEY,
            APP_ID,
            false,
        )
        .await;
    assert_eq!((status, reply.as_str()), (200, "success"));
    assert_eq!(h.customer_turns("o_slow").len(), 1);
    assert!(h.sent.try_recv().is_err(), "sent once");
}

#[tokio::test]
async fn handoff_to_kefus_own_queue() {
    let h = start(config()).await;
    let (_, body) = h.post_plain(text_xml("o_kefu", "转人工", 8001)).await;
    let content = assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_kefu");
    assert!(content.contains("正在为您转接人工客服"), "{content}");
    let queued = h.engine.queue().queued(10).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].customer.user, "wx:o_kefu");
}

#[tokio::test]
async fn handoff_to_the_platforms_customer_service() {
    let h = start(WechatConfig {
        handoff: HandoffMode::Wechat,
        kf_account: Some("kf2001@gh_test".into()),
        ..config()
    })
    .await;
    let (status, reply, ts, nonce) = h
        .post_encrypted(&text_xml("o_wxkf", "转人工", 9001), KEY, APP_ID, false)
        .await;
    assert_eq!(status, 200, "{reply}");
    let f = open_reply(&reply, KEY, &ts, &nonce);
    assert_eq!(f.text("MsgType"), Some("transfer_customer_service"));
    assert_eq!(f.text("ToUserName"), Some("o_wxkf"));
    assert_eq!(f.text("FromUserName"), Some(ACCOUNT));
    let inner = wx_decrypt(
        KEY,
        APP_ID,
        parse(reply.as_bytes()).unwrap().text("Encrypt").unwrap(),
    );
    assert!(
        inner.contains("<TransInfo><KfAccount><![CDATA[kf2001@gh_test]]></KfAccount></TransInfo>"),
        "{inner}"
    );
    // kefu's own queue keeps no ticket nobody would serve, and the customer's next
    // message (after the platform hands the chat back) is answered by the bot.
    assert!(h.engine.queue().queued(10).unwrap().is_empty());
    let (_, body) = h
        .post_plain(text_xml("o_wxkf", "信用卡丢了怎么办", 9002))
        .await;
    let content = assert_text_reply(&parse(body.as_bytes()).unwrap(), "o_wxkf");
    assert!(
        content.starts_with(first_line(&answer_of("cc-lost"))),
        "{content}"
    );
}

#[tokio::test]
async fn hostile_xml_is_refused_without_harm() {
    let h = start(config()).await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "billion laughs",
            b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;\">]><xml><Content>&lol1;</Content></xml>".to_vec(),
            400,
        ),
        (
            "external entity",
            b"<!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><ToUserName>a</ToUserName><FromUserName>o_h</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&xxe;</Content><MsgId>1</MsgId></xml>".to_vec(),
            400,
        ),
        (
            "undeclared entity",
            text_xml("o_h", "&xxe;", 1).replace("<![CDATA[&xxe;]]>", "&xxe;").into_bytes(),
            400,
        ),
        ("1 MB body", {
            let mut v = text_xml("o_h", "", 2).into_bytes();
            v.extend(std::iter::repeat_n(b' ', 1 << 20));
            v
        }, 413),
        ("malformed", b"<xml><ToUserName>a</FromUserName>".to_vec(), 400),
        ("not XML", b"{\"json\": true}".to_vec(), 400),
        (
            "GBK bytes",
            {
                let mut v = b"<?xml version=\"1.0\" encoding=\"GBK\"?><xml><ToUserName>a</ToUserName><FromUserName>o_h</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>".to_vec();
                v.extend_from_slice(b"\xd0\xc5\xd3\xc3\xbf\xa8"); // 信用卡 in GBK
                v.extend_from_slice(b"</Content><MsgId>3</MsgId></xml>");
                v
            },
            400,
        ),
        ("missing fields", b"<xml><Content>hi</Content></xml>".to_vec(), 400),
    ];
    for (what, body, expected) in cases {
        let (status, text) = h.post_plain(body).await;
        assert_eq!(status, expected, "{what}: {text}");
    }
    assert!(h.customer_turns("o_h").is_empty());
    // The server is still serving.
    let (status, body) = h.post_plain(text_xml("o_h", "信用卡丢了怎么办", 4)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulate_command_proves_a_setup() {
    let h = start(config()).await;
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
                .args(args)
                .env_remove("KEFU_WECHAT_TOKEN")
                .env_remove("KEFU_WECHAT_AES_KEY")
                .output()
                .unwrap()
        })
    };
    let base = |token: &str| {
        vec![
            "wechat".to_owned(),
            "simulate".into(),
            "--url".into(),
            h.url.clone(),
            "--token".into(),
            token.into(),
        ]
    };
    // Safe mode: signed, encrypted, reply checked and decrypted.
    let mut args = base(TOKEN);
    args.extend(
        [
            "--aes-key",
            KEY,
            "--app-id",
            APP_ID,
            "--text",
            "信用卡丢了怎么办",
        ]
        .map(String::from),
    );
    let out = run(args).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("MsgSignature verified"), "{stdout}");
    assert!(
        stdout.contains(first_line(&answer_of("cc-lost"))),
        "{stdout}"
    );
    // Plain mode with an event.
    let mut args = base(TOKEN);
    args.extend(["--event", "subscribe"].map(String::from));
    let out = run(args).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("您好，我是本行智能客服"),
        "{stdout}"
    );
    // A wrong token is reported, with the status kefu answered.
    let mut args = base("wrongToken");
    args.extend(["--text", "你好"].map(String::from));
    let out = run(args).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("403"), "{stderr}");
}

/// The sender as the server uses it on its own (agent replies, notices): tokens from a
/// central token service, cached, refetched once when the platform says a token expired;
/// long texts split; a closed 48-hour window reported as such.
#[tokio::test]
async fn the_sender_on_its_own() {
    use kefu::channels::wechat::OutboundSender;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fetches = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, serde_json::Value)>();
    let app = Router::new()
        .route(
            "/token-service",
            get({
                let fetches = fetches.clone();
                move || async move {
                    let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                    Json(serde_json::json!({"access_token": format!("T{n}"), "expires_in": 7200}))
                }
            }),
        )
        .route(
            "/cgi-bin/message/custom/send",
            post(
                move |Query(q): Query<std::collections::HashMap<String, String>>,
                      Json(body): Json<serde_json::Value>| {
                    let tx = tx.clone();
                    async move {
                        let token = q.get("access_token").cloned().unwrap_or_default();
                        let reply = if token == "T1" && body["text"]["content"] == "第二条" {
                            // The token was refreshed elsewhere meanwhile.
                            serde_json::json!({"errcode": 40001, "errmsg": "invalid credential"})
                        } else if body["touser"] == "o_gone" {
                            serde_json::json!({"errcode": 45015, "errmsg": "response out of time limit"})
                        } else {
                            let _ = tx.send((token, body));
                            serde_json::json!({"errcode": 0, "errmsg": "ok"})
                        };
                        Json(reply)
                    }
                },
            ),
        );
    let base = serve(app).await;
    let wechat = WechatConfig {
        token: Some(SecretString::new(TOKEN)),
        token_service_url: Some(format!("{base}/token-service")),
        api_base: base,
        max_reply_bytes: 64,
        ..WechatConfig::default()
    };
    let sender = ApiSender::from_config(&wechat, &wechat.secrets().unwrap()).unwrap();
    sender.send_text("o_agent", "第一条").await.unwrap();
    let (token, body) = rx.recv().await.unwrap();
    assert_eq!(
        (token.as_str(), body["touser"].as_str()),
        ("T1", Some("o_agent"))
    );
    assert_eq!(body["text"]["content"], "第一条");
    // T1 is refused for this one: refetch once, send with T2.
    sender.send_text("o_agent", "第二条").await.unwrap();
    let (token, body) = rx.recv().await.unwrap();
    assert_eq!(
        (token.as_str(), body["text"]["content"].as_str()),
        ("T2", Some("第二条"))
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "cached between sends");
    // 30 characters × 3 bytes over a 64-byte limit: two messages, in order.
    let long = "长".repeat(30);
    sender.send_text("o_agent", &long).await.unwrap();
    let first = rx.recv().await.unwrap().1["text"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = rx.recv().await.unwrap().1["text"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first.len() <= 64 && second.len() <= 64);
    assert_eq!(format!("{first}{second}"), long);
    let err = sender.send_text("o_gone", "还在吗").await.unwrap_err();
    assert!(err.is_out_of_window(), "{err}");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}
