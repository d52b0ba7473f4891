//! The HTTP banking backend against a fake bank on 127.0.0.1 started inside each test:
//! request ids and credentials on every call, typed errors, timeouts, retries for reads
//! only, malformed bodies; and the engine's reply when the bank is slow or gone.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use kefu::banking::http::HttpBank;
use kefu::banking::*;
use kefu::config::EngineConfig;
use kefu::engine::account::UNAVAILABLE;
use serde_json::{json, Value};

/// What the fake bank saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    what: String,
    request_id: Option<String>,
    authorization: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(Clone, Default)]
struct Bank {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Bank {
    fn record(&self, what: String, h: &HeaderMap) {
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.seen.lock().unwrap().push(Seen {
            what,
            request_id: header("x-request-id"),
            authorization: header("authorization"),
            idempotency_key: header("idempotency-key"),
        });
    }

    fn seen(&self, what: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.what == what)
            .cloned()
            .collect()
    }
}

/// How long the slow endpoints take; the clients below time out far earlier.
const SLOW: Duration = Duration::from_millis(1500);

async fn accounts(State(b): State<Bank>, Path(c): Path<String>, h: HeaderMap) -> Response {
    b.record(format!("accounts {c}"), &h);
    let ok = || {
        Json(json!([
            {"id": "A1", "kind": "debit", "tail": "2345", "name": "借记卡"}
        ]))
        .into_response()
    };
    match c.as_str() {
        "SLOW" => {
            tokio::time::sleep(SLOW).await;
            ok()
        }
        "FAIL" => (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response(),
        "FLAKY" if b.seen("accounts FLAKY").len() == 1 => {
            (StatusCode::BAD_GATEWAY, "try again").into_response()
        }
        "BAD" => (StatusCode::OK, "{\"id\": \"A1\", \"kind\": ").into_response(),
        "SHAPE" => Json(json!({"accounts": 3})).into_response(),
        "NOPE" => (StatusCode::NOT_FOUND, "no such customer").into_response(),
        _ => ok(),
    }
}

async fn balance(
    State(b): State<Bank>,
    Path((c, a)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    b.record(format!("balance {c} {a}"), &h);
    if c == "C9" {
        tokio::time::sleep(SLOW).await;
    }
    Json(json!({"available": 12_345, "ledger": 12_345})).into_response()
}

async fn transfer(State(b): State<Bank>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    let c = body["customer"].as_str().unwrap_or("").to_owned();
    b.record(format!("transfer {c}"), &h);
    match c.as_str() {
        "LIMIT" => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "over_limit", "limit": 5_000_000, "remaining": 100})),
        )
            .into_response(),
        "POOR" => (
            StatusCode::CONFLICT,
            Json(json!({"error": "insufficient_funds", "available": 42})),
        )
            .into_response(),
        "FAIL" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "SLOW" => {
            tokio::time::sleep(SLOW).await;
            Json(json!({"reference": "late", "amount": 1})).into_response()
        }
        _ => Json(json!({
            "reference": "T1",
            "amount": body["amount"],
            "balance_after": 1000
        }))
        .into_response(),
    }
}

async fn bindings(State(b): State<Bank>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    b.record("bindings".into(), &h);
    let now = body["now"].as_i64().unwrap_or(0);
    Json(json!({
        "challenge": "ch-1",
        "phone_masked": "138****5678",
        "card_tail": "2345",
        "expires_at": now + 300
    }))
    .into_response()
}

async fn verify(State(b): State<Bank>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    b.record("verify".into(), &h);
    if body["code"] == "123456" {
        Json(json!({"result": "valid", "customer": "C9"})).into_response()
    } else {
        Json(json!({"result": "wrong"})).into_response()
    }
}

async fn branches(
    State(b): State<Bank>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    b.record(
        format!("branches {}", q.get("text").cloned().unwrap_or_default()),
        &h,
    );
    Json(json!([{
        "id": "B1", "name": "测试支行", "address": "测试路1号", "hours": "09:00-17:00",
        "open_now": true, "queue": 3
    }]))
    .into_response()
}

/// The fake bank, served until the guard is dropped.
struct FakeBank {
    url: String,
    bank: Bank,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeBank {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn fake_bank() -> FakeBank {
    let bank = Bank::default();
    let app = Router::new()
        .route("/v1/customers/{c}/accounts", get(accounts))
        .route("/v1/customers/{c}/accounts/{a}/balance", get(balance))
        .route("/v1/transfers", post(transfer))
        .route("/v1/bindings", post(bindings))
        .route("/v1/codes/verify", post(verify))
        .route("/v1/branches", get(branches))
        .with_state(bank.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/bank", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            // The fake serves under /bank to check that the base path is kept.
            let app = Router::new().nest("/bank", app);
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    FakeBank {
        url,
        bank,
        stop: Some(stop),
    }
}

fn config(url: &str) -> HttpConfig {
    HttpConfig {
        base_url: url.to_owned(),
        token: "secret-token".into(),
        timeout_ms: 300,
        connect_timeout_ms: 300,
        read_retries: 1,
    }
}

#[test]
fn every_call_carries_a_request_id_and_the_credentials() {
    let fake = fake_bank();
    let http = HttpBank::new(&config(&fake.url)).unwrap();
    let accounts = http.accounts("C001").unwrap();
    assert_eq!(accounts[0].tail, "2345");
    assert_eq!(accounts[0].kind, AccountKind::Debit);
    assert_eq!(http.balance("C001", "A1").unwrap().available, 12_345);
    http.accounts("C001").unwrap();
    let seen = fake.bank.seen("accounts C001");
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.authorization.as_deref(), Some("Bearer secret-token"));
        assert_eq!(s.request_id.as_ref().map(String::len), Some(36), "{s:?}");
    }
    assert_ne!(seen[0].request_id, seen[1].request_id, "one id per call");
    // Path segments are escaped, never spliced into the path.
    http.accounts("../../transfers").unwrap();
    assert_eq!(fake.bank.seen("accounts ../../transfers").len(), 1);
}

#[test]
fn a_slow_read_times_out_and_is_retried_with_the_same_request_id() {
    let fake = fake_bank();
    let http = HttpBank::new(&config(&fake.url)).unwrap();
    assert_eq!(http.accounts("SLOW"), Err(BankingError::Timeout));
    let seen = fake.bank.seen("accounts SLOW");
    assert_eq!(seen.len(), 2, "one retry");
    assert_eq!(seen[0].request_id, seen[1].request_id);
}

#[test]
fn failing_reads_are_retried_a_bounded_number_of_times() {
    let fake = fake_bank();
    let http = HttpBank::new(&config(&fake.url)).unwrap();
    assert!(matches!(
        http.accounts("FAIL"),
        Err(BankingError::Unavailable { .. })
    ));
    assert_eq!(fake.bank.seen("accounts FAIL").len(), 2);
    // A bank that fails once and then answers is answered.
    assert_eq!(http.accounts("FLAKY").unwrap().len(), 1);
    assert_eq!(fake.bank.seen("accounts FLAKY").len(), 2);
    let no_retry = HttpBank::new(&HttpConfig {
        read_retries: 0,
        ..config(&fake.url)
    })
    .unwrap();
    assert!(no_retry.accounts("FAIL").is_err());
    assert_eq!(fake.bank.seen("accounts FAIL").len(), 3);
}

#[test]
fn malformed_answers_are_unavailable_not_a_panic() {
    let fake = fake_bank();
    let http = HttpBank::new(&config(&fake.url)).unwrap();
    for customer in ["BAD", "SHAPE"] {
        match http.accounts(customer) {
            Err(BankingError::Unavailable { reason }) => {
                assert!(reason.contains("malformed"), "{reason}")
            }
            other => panic!("{customer}: {other:?}"),
        }
    }
    assert!(matches!(
        http.accounts("NOPE"),
        Err(BankingError::NotFound { .. })
    ));
}

fn transfer_request(customer: &str) -> TransferRequest {
    TransferRequest {
        customer: customer.into(),
        from_account: "A1".into(),
        payee: "P1".into(),
        amount: 50_000,
        idempotency_key: idempotency_key("bank", "u", "c-1"),
        now: MORNING,
    }
}

#[test]
fn writes_are_sent_once_with_an_idempotency_key_and_typed_errors() {
    let fake = fake_bank();
    let http = HttpBank::new(&config(&fake.url)).unwrap();
    let receipt = http.transfer(&transfer_request("C001")).unwrap();
    assert_eq!(receipt.amount, 50_000);
    let seen = fake.bank.seen("transfer C001");
    assert_eq!(
        seen[0].idempotency_key.as_deref(),
        Some(idempotency_key("bank", "u", "c-1").as_str())
    );

    assert_eq!(
        http.transfer(&transfer_request("LIMIT")),
        Err(BankingError::OverLimit {
            limit: 5_000_000,
            remaining: 100
        })
    );
    assert_eq!(
        http.transfer(&transfer_request("POOR")),
        Err(BankingError::InsufficientFunds { available: 42 })
    );
    assert!(matches!(
        http.transfer(&transfer_request("FAIL")),
        Err(BankingError::Unavailable { .. })
    ));
    assert_eq!(
        fake.bank.seen("transfer FAIL").len(),
        1,
        "a write is never retried"
    );
    assert_eq!(
        http.transfer(&transfer_request("SLOW")),
        Err(BankingError::Timeout)
    );
    assert_eq!(
        fake.bank.seen("transfer SLOW").len(),
        1,
        "not even after a timeout"
    );
}

#[test]
fn the_backend_can_be_created_inside_an_async_runtime() {
    // The server may open the engine inside its runtime; calls go to the blocking pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fake = fake_bank();
    let http = rt.block_on(async { HttpBank::new(&config(&fake.url)).unwrap() });
    let http = Arc::new(http);
    let accounts = rt
        .block_on(async {
            let h = http.clone();
            tokio::task::spawn_blocking(move || h.accounts("C001")).await
        })
        .unwrap();
    assert_eq!(accounts.unwrap().len(), 1);
}

#[test]
fn a_bad_base_url_is_refused_at_start() {
    let err = HttpBank::new(&config("not a url")).unwrap_err().to_string();
    assert!(err.contains("banking.http.base_url"), "{err}");
}

#[test]
fn the_engine_answers_when_the_bank_is_slow_or_gone() {
    let fake = fake_bank();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::default();
    cfg.banking.backend = BackendKind::Http;
    cfg.banking.http = config(&fake.url);
    let e = engine_with(dir.path(), cfg.clone());
    say(&e, "u", "查余额", MORNING);
    let r = say(&e, "u", "6222 0200 1234 2345", MORNING + 1);
    assert!(r.text.contains("138****5678"), "{}", r.text);
    say(&e, "u", "123456", MORNING + 2);
    // Bound as C9, whose balance the fake answers too late.
    let r = say(&e, "u", "1", MORNING + 3);
    assert!(r.text.contains("绑定成功"), "{}", r.text);
    assert!(r.text.ends_with(UNAVAILABLE), "{}", r.text);
    assert_eq!(fake.bank.seen("balance C9 A1").len(), 2);
    let r = say(&e, "u", "附近网点", MORNING + 4);
    assert_eq!(r.options.len(), 1, "{r:?}");
    assert!(r.options[0].label.contains("排队3人"), "{r:?}");
    assert_eq!(fake.bank.seen("branches 附近网点").len(), 1);
    drop(e);

    // A bank that is not there at all: a closed port on loopback.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    cfg.banking.http = config(&closed);
    let e = engine_with(dir.path(), cfg);
    let r = say(&e, "w", "附近网点", MORNING);
    assert_eq!(r.text, UNAVAILABLE);
    let r = say(&e, "w", "查余额", MORNING + 1);
    assert!(r.text.contains("请输入您的本行银行卡号"), "{}", r.text);
    let r = say(&e, "w", "6222 0200 1234 2345", MORNING + 2);
    assert_eq!(r.text, UNAVAILABLE);
}
