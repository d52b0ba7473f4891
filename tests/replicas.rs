//! Two `kefu serve` replicas on one PostgreSQL database (issue 13): a customer talks to
//! replica A, an agent on replica B claims the chat and replies, the customer gets the
//! reply on A; content published on one replica is served by both.

mod common;

use std::time::Duration;

use common::postgres::TempPostgres;
use common::server::{
    client, config, get, post, say, token, upload_with_parrot, Server, Sse, ADMIN_TOKEN,
};
use serde_json::{json, Value};

/// The shared database and two replicas, each with its own working directory (their
/// `--data` directories are unused: the store is PostgreSQL).
fn replicas() -> Option<(TempPostgres, String, Vec<tempfile::TempDir>, Server, Server)> {
    let pg = TempPostgres::start()?;
    let url = pg.database();
    let conf = config(&format!(
        "[store]\nurl = \"{url}\"\n\n[server]\nsweep_interval_secs = 1\n"
    ));
    let dirs = vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = Server::start(dirs[0].path(), &conf);
    let b = Server::start(dirs[1].path(), &conf);
    Some((pg, url, dirs, a, b))
}

#[tokio::test]
async fn an_agent_on_replica_b_serves_a_customer_of_replica_a() {
    let Some((_pg, _url, _dirs, a, b)) = replicas() else {
        return;
    };
    let c = client();
    let mut desk_a = Sse::open(&c, &a.url("/v1/agent/events"), Some(&token("head"))).await;
    let mut desk_b = Sse::open(&c, &b.url("/v1/agent/events"), Some(&token("head"))).await;
    let r = say(&c, &a, json!({"user": "wang", "text": "信用卡年费怎么收"})).await;
    assert_eq!(r["kind"], "answer", "{r}");
    let r = say(&c, &a, json!({"user": "wang", "text": "转人工"})).await;
    assert_eq!(r["kind"], "handoff", "{r}");
    let ticket = r["handoff"]["ticket"].as_u64().unwrap();
    // The agent desk on B hears of the chat queued on A.
    let ev: Value = serde_json::from_str(&desk_b.until("chat_queued", 10).await).unwrap();
    assert_eq!(ev["ticket"], ticket);
    let mut stream = Sse::open(&c, &a.url("/v1/messages/stream?user=wang"), None).await;
    let st: Value = serde_json::from_str(&stream.until("handoff", 10).await).unwrap();
    assert_eq!(st["state"], "queued");

    // Replica B sees the chat A queued, with the transcript, and claims it.
    let (status, q) = get(&c, &b, "/v1/agent/queue", &token("head")).await;
    assert_eq!(status, 200);
    assert_eq!(q["queued"][0]["ticket"], ticket, "{q}");
    let (status, claimed) = post(&c, &b, "/v1/agent/claim", &token("head"), json!({})).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["ticket"], ticket);
    // A's live stream hears of B's claim at once (LISTEN/NOTIFY, not its 20 s re-read).
    let st: Value = serde_json::from_str(&stream.until("handoff", 10).await).unwrap();
    assert_eq!(st["state"], "claimed");
    let ev: Value = serde_json::from_str(&desk_a.until("chat_claimed", 10).await).unwrap();
    assert_eq!(ev["ticket"], ticket, "A's desk hears B's claim");
    // Another agent on replica A cannot take it any more.
    let (status, taken) = post(
        &c,
        &a,
        "/v1/agent/claim",
        &token("a0571"),
        json!({"ticket": ticket}),
    )
    .await;
    assert_eq!(status, 409, "{taken}");
    let (_, chat) = get(&c, &b, &format!("/v1/agent/chats/{ticket}"), &token("head")).await;
    assert!(
        chat["transcript"].to_string().contains("信用卡年费怎么收"),
        "{chat}"
    );

    let (status, _) = post(
        &c,
        &b,
        &format!("/v1/agent/chats/{ticket}/reply"),
        &token("head"),
        json!({"text": "您好，年费可以减免"}),
    )
    .await;
    assert_eq!(status, 200);
    // The customer's stream on A gets the reply written on B, told by NOTIFY.
    let msg: Value = serde_json::from_str(&stream.until("agent_message", 10).await).unwrap();
    assert_eq!(msg["text"], "您好，年费可以减免");

    // The customer's next message on A sees the chat with the agent and reaches B.
    let r = say(&c, &a, json!({"user": "wang", "text": "好的谢谢"})).await;
    assert_eq!(r["kind"], "relayed", "{r}");
    let (_, chat) = get(&c, &b, &format!("/v1/agent/chats/{ticket}"), &token("head")).await;
    assert!(chat["messages"].to_string().contains("好的谢谢"), "{chat}");

    let (status, closed) = post(
        &c,
        &b,
        &format!("/v1/agent/chats/{ticket}/close"),
        &token("head"),
        json!({"summary": "年费已说明"}),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    let r = say(&c, &a, json!({"user": "wang", "text": "银行卡丢了怎么办"})).await;
    assert_eq!(r["kind"], "answer", "the bot serves again on A: {r}");

    // A channel retry of one message id on the other replica gets the stored reply.
    let first = say(
        &c,
        &a,
        json!({"user": "li", "text": "转账限额是多少", "message_id": "m-1"}),
    )
    .await;
    let retry = say(
        &c,
        &b,
        json!({"user": "li", "text": "转人工", "message_id": "m-1"}),
    )
    .await;
    assert_eq!(first, retry);
}

#[tokio::test]
async fn content_published_on_one_replica_is_served_by_both() {
    let Some((_pg, _url, _dirs, a, b)) = replicas() else {
        return;
    };
    let c = client();
    let files = upload_with_parrot();
    let (status, report) = post(
        &c,
        &a,
        "/v1/admin/kb/publish",
        ADMIN_TOKEN,
        json!({"files": files}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let version = report["version"].clone();
    // B polls the publication stamp every sweep (1 s here); wait for it to swap.
    let mut seen = Value::Null;
    for _ in 0..120 {
        let (_, h) = get(&c, &b, "/healthz", "").await;
        seen = h["version"].clone();
        if seen == version {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(seen, version, "replica B serves the published version");
    let (_, h) = get(&c, &a, "/healthz", "").await;
    assert_eq!(h["version"], version);
    for s in [&a, &b] {
        let r = say(&c, s, json!({"user": "u", "text": "鹦鹉存单是什么"})).await;
        assert_eq!(r["entry"], "zz-parrot", "{r}");
    }
}

/// SIGKILL one replica under load: every message it acknowledged is in the database
/// with its reply, no chat was claimed twice, and customers carry on with the other
/// replica, where a channel retry of an acknowledged message gets the same reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_load_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let Some((_pg, url, _dirs, a, b)) = replicas() else {
        return;
    };
    let c = client();
    let a_base = Arc::new(a.base.clone());
    let acked = Arc::new(AtomicUsize::new(0));
    let acks: Arc<Mutex<Vec<(String, String, Value)>>> = Arc::default();
    let texts = ["信用卡年费怎么收", "转人工", "还在吗", "转账限额是多少"];
    let mut customers = Vec::new();
    for n in 0..6 {
        let (c, base, acked, acks) = (c.clone(), a_base.clone(), acked.clone(), acks.clone());
        customers.push(tokio::spawn(async move {
            let user = format!("load{n}");
            for i in 0.. {
                let id = format!("{user}-{i}");
                let body = json!({"user": user, "text": texts[i % texts.len()], "message_id": id});
                let res = c
                    .post(format!("{base}/v1/messages"))
                    .json(&body)
                    .send()
                    .await;
                let Ok(res) = res else { return };
                if res.status() != 200 {
                    return;
                }
                let Ok(reply) = res.json::<Value>().await else {
                    return;
                };
                acks.lock().unwrap().push((user.clone(), id, reply));
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Agents on both replicas take chats as they come and close them.
    let stop = Arc::new(AtomicBool::new(false));
    let claims: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut agents = Vec::new();
    for (agent, base) in [("head", b.base.clone()), ("a0571", a.base.clone())] {
        let (c, stop, claims) = (c.clone(), stop.clone(), claims.clone());
        agents.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let res = c
                    .post(format!("{base}/v1/agent/claim"))
                    .bearer_auth(token(agent))
                    .json(&json!({}))
                    .send()
                    .await;
                let Ok(res) = res else { return };
                if res.status() != 200 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let Ok(t) = res.json::<Value>().await else {
                    return;
                };
                let ticket = t["ticket"].as_u64().unwrap();
                claims.lock().unwrap().push(ticket);
                let _ = c
                    .post(format!("{base}/v1/agent/chats/{ticket}/close"))
                    .bearer_auth(token(agent))
                    .json(&json!({}))
                    .send()
                    .await;
            }
        }));
    }
    while acked.load(Ordering::SeqCst) < 60 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for t in customers {
        t.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for t in agents {
        t.await.unwrap();
    }

    // No chat was claimed twice.
    let mut claimed = claims.lock().unwrap().clone();
    let total = claimed.len();
    claimed.sort_unstable();
    claimed.dedup();
    assert_eq!(claimed.len(), total, "a chat was claimed twice: {claims:?}");
    assert!(
        total > 0,
        "the agents claimed nothing: the test proves nothing"
    );
    eprintln!(
        "killed replica A after {} acknowledged messages; {total} chats claimed",
        acked.load(Ordering::SeqCst)
    );

    // Every acknowledged message is stored, with its reply and its transcript line.
    let acks = acks.lock().unwrap().clone();
    let check = acks.clone();
    tokio::task::spawn_blocking(move || {
        use kefu::store::{PgStore, Speaker, Store, UserKey};
        let store = PgStore::connect(&url).unwrap();
        for (user, id, _) in &check {
            let key = UserKey::new("bank", user.as_str());
            assert!(
                store.processed(&key, id).unwrap().is_some(),
                "acknowledged {id} is lost"
            );
        }
        for n in 0..6 {
            let user = format!("load{n}");
            let key = UserKey::new("bank", user.as_str());
            let said = store
                .transcript(&key)
                .unwrap()
                .iter()
                .filter(|t| t.from == Speaker::Customer)
                .count();
            let sent = check.iter().filter(|(u, _, _)| *u == user).count();
            assert!(said >= sent, "{user}: {said} lines for {sent} acknowledged");
        }
    })
    .await
    .unwrap();

    // The customers carry on with replica B; a retry of what A acknowledged gets A's reply.
    for n in 0..6 {
        let user = format!("load{n}");
        if let Some((_, id, reply)) = acks.iter().rev().find(|(u, _, _)| *u == user) {
            let retry = say(
                &c,
                &b,
                json!({"user": user, "text": "重发", "message_id": id}),
            )
            .await;
            assert_eq!(&retry, reply, "retry of {id} on replica B");
        }
        let r = say(&c, &b, json!({"user": user, "text": "银行卡丢了怎么办"})).await;
        assert!(r["kind"].is_string(), "{r}");
    }
}

/// A replica whose database cannot be reached does not start, and says why.
#[test]
fn an_unreachable_database_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    std::fs::write(
        dir.path().join("kefu.toml"),
        "[store]\nurl = \"postgres://kefu@127.0.0.1:1/kefu\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PostgreSQL store"), "{err}");
    assert!(err.contains("refused"), "{err}");
}
