//! `kefu serve` driven as channels, agents and editors drive it: a real process on a
//! free 127.0.0.1 port, a real HTTP client, a real store in a temp dir.

mod common;

use std::time::Duration;

use common::server::{
    bundled_upload, client, config, get, metrics_text, post, say, token, upload_with_parrot,
    Server, Sse, ADMIN_TOKEN,
};
use serde_json::{json, Value};

#[tokio::test]
async fn a_customer_asks_and_picks_a_numbered_option() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let c = client();
    let r = say(&c, &s, json!({"user": "u1", "text": "信用卡丢了怎么办"})).await;
    assert_eq!(r["kind"], "answer", "{r}");
    let second = &r["options"][1];
    assert_eq!(second["number"], 2);
    let picked = say(&c, &s, json!({"user": "u1", "text": "２"})).await;
    assert_eq!(picked["kind"], "answer");
    assert_eq!(
        picked["entry"], second["entry"],
        "picking 2 answers the second option"
    );

    // The same message id twice: the stored reply, nothing re-run.
    let a = say(
        &c,
        &s,
        json!({"user": "u2", "text": "转账限额是多少", "message_id": "m-1"}),
    )
    .await;
    let b = say(
        &c,
        &s,
        json!({"user": "u2", "text": "转人工", "message_id": "m-1"}),
    )
    .await;
    assert_eq!(a, b, "a retried message id gets the first reply");
    let (_, queue) = get(&c, &s, "/v1/agent/queue", &token("head")).await;
    assert_eq!(
        queue["queued"].as_array().unwrap().len(),
        0,
        "the retry did not escalate"
    );

    // Operations surface.
    let (status, health) = get(&c, &s, "/healthz", "").await;
    assert_eq!(status, 200);
    assert_eq!(health["version"].as_str().unwrap().len(), 12);
    let metrics = metrics_text(&c, &s).await;
    assert!(metrics.contains("kefu_messages_total"), "{metrics}");
    let (_, api) = get(&c, &s, "/openapi.json", "").await;
    assert!(api["paths"]["/v1/messages"]["post"].is_object());
    assert!(api["paths"]["/v1/agent/chats/{id}/reply"]["post"].is_object());
}

#[tokio::test]
async fn a_customer_and_an_agent_talk_live_and_the_bot_takes_over_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let c = client();
    let mut desk = Sse::open(&c, &s.url("/v1/agent/events"), Some(&token("head"))).await;

    let r = say(&c, &s, json!({"user": "wang", "text": "信用卡年费怎么收"})).await;
    assert_eq!(r["kind"], "answer");
    let r = say(&c, &s, json!({"user": "wang", "text": "转人工"})).await;
    assert_eq!(r["kind"], "handoff", "{r}");
    assert_eq!(r["handoff"]["position"], 1);
    let ticket = r["handoff"]["ticket"].as_u64().unwrap();
    let ev: Value = serde_json::from_str(&desk.until("chat_queued", 10).await).unwrap();
    assert_eq!(ev["ticket"], ticket);

    let mut stream = Sse::open(&c, &s.url("/v1/messages/stream?user=wang"), None).await;
    let st: Value = serde_json::from_str(&stream.until("handoff", 10).await).unwrap();
    assert_eq!(st["state"], "queued");

    let (status, q) = get(&c, &s, "/v1/agent/queue", &token("head")).await;
    assert_eq!(status, 200);
    assert_eq!(q["queued"][0]["ticket"], ticket);
    let (status, claimed) = post(&c, &s, "/v1/agent/claim", &token("head"), json!({})).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["ticket"], ticket);
    assert_eq!(claimed["identity"], "follower");
    let st: Value = serde_json::from_str(&stream.until("handoff", 10).await).unwrap();
    assert_eq!(st["state"], "claimed");
    assert_eq!(st["agent"], "客服head");

    let (status, chat) = get(&c, &s, &format!("/v1/agent/chats/{ticket}"), &token("head")).await;
    assert_eq!(status, 200);
    let transcript = chat["transcript"].to_string();
    assert!(transcript.contains("信用卡年费怎么收"), "{chat}");

    let (status, _) = post(
        &c,
        &s,
        &format!("/v1/agent/chats/{ticket}/reply"),
        &token("head"),
        json!({"text": "您好，卡号6222 0212 3456 7890已查到"}),
    )
    .await;
    assert_eq!(status, 200);
    let msg: Value = serde_json::from_str(&stream.until("agent_message", 10).await).unwrap();
    assert_eq!(
        msg["text"], "您好，卡号6222********7890已查到",
        "masked for everyone"
    );

    let r = say(&c, &s, json!({"user": "wang", "text": "好的谢谢"})).await;
    assert_eq!(r["kind"], "relayed");
    let (_, chat) = get(&c, &s, &format!("/v1/agent/chats/{ticket}"), &token("head")).await;
    assert!(chat["messages"].to_string().contains("好的谢谢"), "{chat}");

    let (status, closed) = post(
        &c,
        &s,
        &format!("/v1/agent/chats/{ticket}/close"),
        &token("head"),
        json!({"summary": "年费已说明"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(closed["state"], "closed");
    let closing: Value = serde_json::from_str(&stream.until("agent_message", 10).await).unwrap();
    assert!(closing["text"].as_str().unwrap().contains("人工服务已结束"));

    let r = say(&c, &s, json!({"user": "wang", "text": "银行卡丢了怎么办"})).await;
    assert_eq!(r["kind"], "answer", "the bot serves again: {r}");

    // A reconnecting stream with Last-Event-ID 0 replays what was missed, once.
    let res = c
        .get(s.url("/v1/messages/stream?user=wang"))
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let mut replay = Sse::from(res);
    let mut agent_lines = 0;
    while let Some((name, _)) = replay.next(2).await {
        if name == "agent_message" {
            agent_lines += 1;
        }
    }
    assert_eq!(agent_lines, 2, "the reply and the closing line, once each");
}

#[tokio::test]
async fn agents_are_refused_without_a_token_and_outside_their_branch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let c = client();
    let r = say(
        &c,
        &s,
        json!({"user": "hz", "branch": "0571", "text": "转人工"}),
    )
    .await;
    let ticket = r["handoff"]["ticket"].as_u64().unwrap();

    for bearer in ["", "not-a-real-token-at-all", &token("a0571")[1..]] {
        let (status, body) = get(&c, &s, "/v1/agent/queue", bearer).await;
        assert_eq!(status, 401, "{bearer}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // The Shenzhen agent cannot see, claim, read or write the Hangzhou chat.
    let sz = token("a0755");
    let (_, q) = get(&c, &s, "/v1/agent/queue", &sz).await;
    assert_eq!(q["queued"].as_array().unwrap().len(), 0, "{q}");
    let (status, _) = post(&c, &s, "/v1/agent/claim", &sz, json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = post(&c, &s, "/v1/agent/claim", &sz, json!({"ticket": ticket})).await;
    assert_eq!(status, 404);
    let (status, _) = get(&c, &s, &format!("/v1/agent/chats/{ticket}"), &sz).await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &c,
        &s,
        &format!("/v1/agent/chats/{ticket}/reply"),
        &sz,
        json!({"text": "hi"}),
    )
    .await;
    assert_eq!(status, 404);
    // The Hangzhou agent can; the admin token is not an agent token.
    let (status, _) = get(&c, &s, "/v1/agent/queue", ADMIN_TOKEN).await;
    assert_eq!(status, 401);
    let (status, t) = post(
        &c,
        &s,
        "/v1/agent/claim",
        &token("a0571"),
        json!({"ticket": ticket}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    // A chat held by another agent cannot be written to by a third.
    let (status, body) = post(
        &c,
        &s,
        &format!("/v1/agent/chats/{ticket}/reply"),
        &token("head"),
        json!({"text": "我来"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    // Admin calls need the admin token.
    let (status, _) = get(&c, &s, "/v1/admin/stats", &token("head")).await;
    assert_eq!(status, 401);
    let (status, stats) = get(&c, &s, "/v1/admin/stats", ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    assert!(stats["entries"].as_u64().unwrap() > 100);
}

#[tokio::test]
async fn a_broken_publish_is_refused_with_file_and_line_and_a_good_one_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &config(""));
    let c = client();
    let (_, before) = get(&c, &s, "/healthz", "").await;

    let mut files = bundled_upload();
    for f in files.iter_mut() {
        if f["name"] == "knowledge-base/cards.toml" {
            let broken = format!(
                "{}\n[[entry]]\nid = \"card-lost\"\nquestion = \"重复的id\"\n",
                f["content"].as_str().unwrap()
            );
            f["content"] = Value::from(broken);
        }
    }
    let (status, report) = post(
        &c,
        &s,
        "/v1/admin/kb/publish",
        ADMIN_TOKEN,
        json!({"files": files}),
    )
    .await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["valid"], false);
    let problem = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"] == "knowledge-base/cards.toml")
        .unwrap_or_else(|| panic!("no problem named in cards.toml: {report}"));
    assert!(problem["line"].as_u64().unwrap() > 100, "{problem}");
    assert!(
        problem["message"].as_str().unwrap().contains("answer"),
        "{problem}"
    );
    let (_, after) = get(&c, &s, "/healthz", "").await;
    assert_eq!(
        before["version"], after["version"],
        "the old knowledge base keeps serving"
    );
    assert_eq!(
        say(&c, &s, json!({"user": "u", "text": "信用卡丢了怎么办"})).await["kind"],
        "answer"
    );

    // Validation alone changes nothing; a hostile file name is refused.
    let (status, v) = post(
        &c,
        &s,
        "/v1/admin/kb/validate",
        ADMIN_TOKEN,
        json!({"files": [{"name": "../x.toml", "content": ""}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");

    // A good publish: a new entry answers at once, and a restart keeps it.
    let files = upload_with_parrot();
    let (status, report) = post(
        &c,
        &s,
        "/v1/admin/kb/publish",
        ADMIN_TOKEN,
        json!({"files": files}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let version = report["version"].clone();
    assert_ne!(version, before["version"]);
    let (_, h) = get(&c, &s, "/healthz", "").await;
    assert_eq!(h["version"], version);
    assert_eq!(
        say(&c, &s, json!({"user": "u", "text": "鹦鹉存单是什么"})).await["entry"],
        "zz-parrot"
    );

    assert!(s.terminate().success());
    let s = Server::start(dir.path(), &config(""));
    let (_, h) = get(&c, &s, "/healthz", "").await;
    assert_eq!(h["version"], version, "a restart serves what was published");
}

#[tokio::test]
async fn bad_requests_get_the_error_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config("[server]\nmax_body_bytes = 65536\ncustomer_burst = 3\ncustomer_messages_per_minute = 1\n"));
    let c = client();
    let url = s.url("/v1/messages");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(&url)
                .header("content-type", "application/json")
                .body("{\"user\":"),
            400,
            "invalid_json",
        ),
        (
            c.post(&url).header("content-type", "text/plain").body("hi"),
            415,
            "unsupported_media_type",
        ),
        (
            c.post(&url)
                .json(&json!({"user": "u", "text": "x", "admin": true})),
            422,
            "invalid_fields",
        ),
        (
            c.post(&url).json(&json!({"text": "x"})),
            422,
            "invalid_fields",
        ),
        (
            c.post(&url).json(&json!({"user": "", "text": "x"})),
            400,
            "invalid_input",
        ),
        (
            c.post(&url).json(&json!({"user": "u\u{0}x", "text": "x"})),
            400,
            "invalid_input",
        ),
        (
            c.post(&url)
                .json(&json!({"user": "u", "text": "x".repeat(100_000)})),
            413,
            "body_too_large",
        ),
        (
            c.post(&url)
                .header("content-type", "application/json")
                .body(vec![0xff, 0xfe, b'{', b'}']),
            400,
            "invalid_json",
        ),
        (c.get(&url), 405, "method_not_allowed"),
        (c.get(s.url("/v1/nothing-here")), 404, "not_found"),
        (c.get(s.url("/v1/messages/stream")), 400, "invalid_query"),
    ];
    for (req, status, code) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{code}");
        let body: Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("{code}: not JSON: {e}"));
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // A long message is a reply asking to shorten it, not an error.
    let r = say(&c, &s, json!({"user": "long", "text": "转账".repeat(400)})).await;
    assert_eq!(r["kind"], "notice");
    // Hostile text is just text.
    let r = say(
        &c,
        &s,
        json!({"user": "h", "text": "<script>alert(1)</script>'; DROP TABLE x;--"}),
    )
    .await;
    assert!(r["kind"].is_string());
    // The fourth message in a burst of three is refused, politely.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let res = c
            .post(&url)
            .json(&json!({"user": "burst", "text": format!("问题{i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 429]);
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_and_a_restart_keeps_queue_and_menus() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &config(""));
    let c = client();
    let r = say(&c, &s, json!({"user": "menu", "text": "信用卡丢了怎么办"})).await;
    let second = r["options"][1]["entry"].clone();
    let q = say(&c, &s, json!({"user": "queued", "text": "转人工"})).await;
    let ticket = q["handoff"]["ticket"].clone();

    // A publish builds a whole index: slow enough to be in flight when SIGTERM lands.
    let publish = {
        let c = c.clone();
        let url = s.url("/v1/admin/kb/publish");
        tokio::spawn(async move {
            c.post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"files": bundled_upload()}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pid = s.pid();
    let killer = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
    });
    let status = publish.await.unwrap();
    killer.await.unwrap().unwrap();
    assert_eq!(status.ok(), Some(200), "the request in flight completed");
    assert!(
        s.terminate_or_wait().success(),
        "a clean exit after SIGTERM"
    );

    let s = Server::start(dir.path(), &config(""));
    let (_, queue) = get(&c, &s, "/v1/agent/queue", &token("head")).await;
    assert_eq!(queue["queued"][0]["ticket"], ticket, "the queue survived");
    let picked = say(&c, &s, json!({"user": "menu", "text": "2"})).await;
    assert_eq!(picked["entry"], second, "the menu survived");
}

#[tokio::test]
async fn the_agent_console_is_a_client_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let c = client();
    say(&c, &s, json!({"user": "c1", "text": "信用卡年费怎么收"})).await;
    say(&c, &s, json!({"user": "c1", "text": "转人工"})).await;
    let base = s.base.clone();
    let agent = move |token: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
            .arg("agent")
            .args(args)
            .args(["--server", &base])
            .env("KEFU_AGENT_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = tokio::task::spawn_blocking({
        let agent = agent.clone();
        move || agent("not-the-right-token-x", &["list"])
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("bearer token"), "{err}");
    let (ok, out, err) = tokio::task::spawn_blocking({
        let agent = agent.clone();
        move || agent(&token("head"), &["claim"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("接待中") && out.contains("[客户] 信用卡年费怎么收"),
        "{out}"
    );
    let id = out
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches('#')
        .to_owned();
    let (ok, _, err) = tokio::task::spawn_blocking({
        let (agent, id) = (agent.clone(), id.clone());
        move || agent(&token("head"), &["reply", &id, "您好"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        agent(&token("head"), &["close", &id, "--summary", "已解答"])
    })
    .await
    .unwrap();
    assert!(ok && out.contains("已结束"), "{out}{err}");
}

/// A WeChat customer asks for a person through `kefu serve`'s `/wechat`; the agent's
/// reply from the desk API reaches them as a 客服消息 on the (fake) platform API.
#[tokio::test]
async fn an_agent_reply_reaches_a_wechat_customer_as_a_customer_service_message() {
    use axum::routing::{get, post as route_post};
    use sha1::{Digest, Sha1};
    let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let api = axum::Router::new()
        .route(
            "/cgi-bin/token",
            get(|| async { axum::Json(json!({"access_token": "ACCESS-1", "expires_in": 7200})) }),
        )
        .route(
            "/cgi-bin/message/custom/send",
            route_post(move |axum::Json(body): axum::Json<Value>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(body);
                    axum::Json(json!({"errcode": 0, "errmsg": "ok"}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api).await });

    let dir = tempfile::tempdir().unwrap();
    let wechat = format!(
        "[wechat]\napp_id = \"wx0123456789abcdef\"\ntoken = \"kefuServeToken1\"\napp_secret = \"test-app-secret\"\napi_base = \"{api_base}\"\ntimestamp_window_secs = 0\n"
    );
    let s = Server::start(dir.path(), &config(&wechat));
    let c = client();
    let (ts, nonce) = ("1714036504", "1514711492");
    let mut parts = ["kefuServeToken1", ts, nonce];
    parts.sort();
    let signature = hex::encode(Sha1::digest(parts.concat().as_bytes()));
    let xml = "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oOPENID42]]></FromUserName><CreateTime>1714036504</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[转人工]]></Content><MsgId>99887766</MsgId></xml>";
    let res = c
        .post(s.url("/wechat"))
        .query(&[
            ("signature", signature.as_str()),
            ("timestamp", ts),
            ("nonce", nonce),
        ])
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let reply = res.text().await.unwrap();
    assert!(
        reply.contains("oOPENID42") && reply.contains("人工"),
        "{reply}"
    );

    let (status, t) = post(&c, &s, "/v1/agent/claim", &token("head"), json!({})).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["customer"], "wx:oOPENID42");
    let ticket = t["ticket"].as_u64().unwrap();
    let (status, _) = post(
        &c,
        &s,
        &format!("/v1/agent/chats/{ticket}/reply"),
        &token("head"),
        json!({"text": "您好，我是人工客服，请问手机13812345678是您本人的吗"}),
    )
    .await;
    assert_eq!(status, 200);
    let pushed = tokio::time::timeout(Duration::from_secs(10), sent.recv())
        .await
        .expect("a 客服消息 within 10 s")
        .unwrap();
    assert_eq!(pushed["touser"], "oOPENID42");
    assert_eq!(pushed["msgtype"], "text");
    assert_eq!(
        pushed["text"]["content"],
        "您好，我是人工客服，请问手机138****5678是您本人的吗"
    );
}

/// The bank pushes a transaction alert: the customer who bound the card gets it, masked,
/// on their stream; a retry of the same alert is delivered once; a wrong token is refused.
#[tokio::test]
async fn a_transaction_alert_reaches_the_customer_who_bound_the_card_once() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = format!(
        "[alerts]\ntoken_sha256 = \"{}\"\n",
        kefu::handoff::hash_token("bank-alerts-token-0123456789")
    );
    let s = Server::start(dir.path(), &config(&alerts));
    let c = client();
    for text in ["查余额", "6222-0200-1234-2345", "123456", "2"] {
        say(&c, &s, json!({"user": "zhang", "text": text})).await;
    }
    let mut stream = Sse::open(&c, &s.url("/v1/messages/stream?user=zhang"), None).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let alert = json!({
        "alert_id": "TX-1", "tenant": "bank", "customer": "C001", "card_tail": "2345",
        "amount": -50000, "balance_after": 5184567, "description": "转账至 6222 0299 8877 4321",
        "at": now,
    });
    let (status, _) = post(&c, &s, "/v1/backend/alerts", ADMIN_TOKEN, alert.clone()).await;
    assert_eq!(status, 401, "the admin token is not the alerts token");
    let (status, r) = post(
        &c,
        &s,
        "/v1/backend/alerts",
        "bank-alerts-token-0123456789",
        alert.clone(),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["delivered"], 1);
    let notice: Value = serde_json::from_str(&stream.until("notice", 10).await).unwrap();
    let text = notice["text"].as_str().unwrap();
    assert!(
        text.contains("尾号2345") && text.contains("500.00元"),
        "{text}"
    );
    assert!(!text.contains("0299 8877"), "{text}");
    let (_, again) = post(
        &c,
        &s,
        "/v1/backend/alerts",
        "bank-alerts-token-0123456789",
        alert,
    )
    .await;
    assert_eq!(
        (again["delivered"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    let stranger = json!({
        "alert_id": "TX-2", "tenant": "bank", "customer": "C002", "card_tail": "8888",
        "amount": 100, "at": now,
    });
    let (_, r) = post(
        &c,
        &s,
        "/v1/backend/alerts",
        "bank-alerts-token-0123456789",
        stranger,
    )
    .await;
    assert_eq!(
        (r["delivered"].as_u64(), r["dropped"].as_u64()),
        (Some(0), Some(1))
    );
}

/// One request from client `who` (as the bank's proxy names it in X-Forwarded-For, after
/// whatever the client itself put there): status, Retry-After, JSON body.
async fn from_client(
    c: &reqwest::Client,
    s: &Server,
    who: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<u64>, Value) {
    let mut req = match &body {
        Some(b) => c.post(s.url(path)).json(b),
        None => c.get(s.url(path)),
    }
    .header("X-Forwarded-For", format!("forged-by-client, {who}"));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (
        res.status().as_u16(),
        retry,
        res.json().await.unwrap_or(Value::Null),
    )
}

/// Guessing tokens from the attacker's side: a client that sent a few wrong tokens is
/// refused before any further token is checked (the right one included, so a guess
/// cannot be confirmed), on every door: admin API, agent API, desk and content-page
/// sign-in, alerts. Another client, and the same client after the allowance refills,
/// are not affected; the leftmost X-Forwarded-For entry (the client's own) is ignored.
#[tokio::test]
async fn a_client_guessing_tokens_is_locked_out_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = "bank-alerts-token-0123456789";
    let s = Server::start(
        dir.path(),
        &config(&format!(
            "[server]\nauth_failures_per_minute = 3\nclient_ip_header = \"X-Forwarded-For\"\n\
             [alerts]\ntoken_sha256 = \"{}\"\n",
            kefu::handoff::hash_token(alerts)
        )),
    );
    let c = client();
    let (attacker, colleague, typist) = ("203.0.113.7", "198.51.100.9", "198.51.100.10");
    let stats = "/v1/admin/stats";
    for guess in [
        "guess-one-0123456789",
        "guess-two-0123456789",
        "guess-three-012345",
    ] {
        let (status, _, _) = from_client(&c, &s, attacker, stats, Some(guess), None).await;
        assert_eq!(status, 401, "{guess}");
    }
    // Now even the right admin token is not checked for this client.
    let (status, wait, body) = from_client(&c, &s, attacker, stats, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "too_many_failures");
    let wait = wait.expect("Retry-After");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // Every door, with right tokens: refused for the attacker, open for a colleague.
    let head = token("head");
    let alert = json!({
        "alert_id": "TX-9", "tenant": "bank", "customer": "C001", "card_tail": "2345",
        "amount": -100, "at": 1_780_000_000,
    });
    let doors: [(&str, Option<&str>, Option<Value>); 5] = [
        (stats, Some(ADMIN_TOKEN), None),
        ("/v1/agent/queue", Some(&head), None),
        ("/v1/agent/session", None, Some(json!({"token": head}))),
        (
            "/v1/admin/session",
            None,
            Some(json!({"token": ADMIN_TOKEN})),
        ),
        ("/v1/backend/alerts", Some(alerts), Some(alert)),
    ];
    for (path, bearer, body) in &doors {
        let (status, _, _) = from_client(&c, &s, attacker, path, *bearer, body.clone()).await;
        assert_eq!(status, 429, "attacker at {path}");
        let (status, _, reply) = from_client(&c, &s, colleague, path, *bearer, body.clone()).await;
        assert_eq!(status, 200, "colleague at {path}: {reply}");
    }
    // Guesses sent all at once get no more tries than guesses sent one by one.
    let burst = futures_util::future::join_all((0..12).map(|i| {
        let guess = format!("parallel-guess-{i:02}-0123456789");
        let (c, s) = (&c, &s);
        async move {
            from_client(c, s, "192.0.2.55", stats, Some(&guess), None)
                .await
                .0
        }
    }))
    .await;
    assert_eq!(
        burst.iter().filter(|&&st| st == 401).count(),
        3,
        "{burst:?}"
    );
    assert_eq!(
        burst.iter().filter(|&&st| st == 429).count(),
        9,
        "{burst:?}"
    );
    // A mistyped token or two does not lock anyone out.
    for _ in 0..2 {
        let typo = Some("typo-0123456789abcdef");
        assert_eq!(from_client(&c, &s, typist, stats, typo, None).await.0, 401);
    }
    let (status, _, _) = from_client(&c, &s, typist, stats, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200);
    // The refusals are counted for the operators.
    let metrics = metrics_text(&c, &s).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("kind=\"auth_throttled\"") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // One wrong token refills in 60 / 3 = 20 s; the attacker's right token then works.
    tokio::time::sleep(Duration::from_secs(wait + 1)).await;
    let (status, _, _) = from_client(&c, &s, attacker, stats, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200);
}
