//! The bank's REST service as a [`BankingBackend`].
//!
//! JSON both ways, bodies shaped like the types in [`super`]. Every call carries an
//! `X-Request-Id` (the same id on a retried read, so the bank's logs join them) and
//! `Authorization: Bearer <token>`; money movement also carries `Idempotency-Key`.
//!
//! | call | method and path |
//! |---|---|
//! | start binding | `POST /v1/bindings` `{card_number, now}` |
//! | send a code | `POST /v1/codes` `{customer, purpose, now}` |
//! | check a code | `POST /v1/codes/verify` `{challenge, code, now}` |
//! | accounts | `GET /v1/customers/{c}/accounts` |
//! | balance | `GET /v1/customers/{c}/accounts/{a}/balance` |
//! | transactions | `GET /v1/customers/{c}/accounts/{a}/transactions?from&to&page&page_size&now` |
//! | bill | `GET /v1/customers/{c}/accounts/{a}/bills/{YYYY-MM}` |
//! | limits | `GET /v1/customers/{c}/limits?now` |
//! | payees | `GET /v1/customers/{c}/payees` |
//! | repay / transfer | `POST /v1/repayments`, `POST /v1/transfers` |
//! | branches | `GET /v1/branches?text=…` or `?latitude&longitude`, plus `now` |
//! | ticket / appointment | `POST /v1/branches/{b}/tickets`, `…/appointments` `{customer, now}` |
//!
//! Errors: a 4xx body `{"error": "insufficient_funds", "available": 100}` (the tags of
//! [`BankingError`]) is passed on typed; any other 4xx or 5xx, a malformed body or a
//! refused connection is `Unavailable`; no answer in `timeout_ms` is `Timeout`. Reads
//! are retried `read_retries` times after a timeout, connection error or 5xx; writes
//! never are (a write that timed out may have happened; the idempotency key, not the
//! client, makes the bank's side safe).
//!
//! The client is blocking: the engine runs on a blocking pool in the server, and a
//! blocking call must not run on an async worker thread.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::*;

pub struct HttpBank {
    /// Built on first use: reqwest's blocking client refuses to be built on an async
    /// thread, and the server may open the engine inside its runtime. Calls themselves
    /// run on the blocking pool.
    client: std::sync::OnceLock<std::result::Result<Client, String>>,
    timeout: Duration,
    connect_timeout: Duration,
    base: Url,
    token: String,
    read_retries: u32,
}

impl std::fmt::Debug for HttpBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("HttpBank")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl HttpBank {
    /// A client for `config.base_url`. The token comes from the configuration or, when
    /// that is empty, from `KEFU_BANK_TOKEN`.
    pub fn new(config: &HttpConfig) -> crate::Result<Self> {
        let mut base = Url::parse(&config.base_url).map_err(|e| {
            crate::Error::InvalidInput(format!(
                "banking.http.base_url \"{}\" is not a URL: {e}",
                config.base_url
            ))
        })?;
        if base.cannot_be_a_base() {
            return Err(crate::Error::InvalidInput(format!(
                "banking.http.base_url \"{}\" cannot be a base URL",
                config.base_url
            )));
        }
        // Path segments are appended to whatever path the base has.
        if let Ok(mut segs) = base.path_segments_mut() {
            segs.pop_if_empty();
        }
        let token = if config.token.is_empty() {
            std::env::var("KEFU_BANK_TOKEN").unwrap_or_default()
        } else {
            config.token.clone()
        };
        Ok(HttpBank {
            client: std::sync::OnceLock::new(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms.max(1)),
            base,
            token,
            read_retries: config.read_retries.min(5),
        })
    }

    fn client(&self) -> BankResult<&Client> {
        self.client
            .get_or_init(|| {
                Client::builder()
                    .timeout(self.timeout)
                    .connect_timeout(self.connect_timeout)
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(|e| BankingError::unavailable(e.clone()))
    }

    fn url(&self, segments: &[&str]) -> BankResult<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| BankingError::unavailable("base URL cannot take a path"))?
            .push("v1")
            .extend(segments);
        Ok(url)
    }

    fn prepare(&self, rb: RequestBuilder, request_id: &str) -> RequestBuilder {
        let rb = rb
            .header("X-Request-Id", request_id)
            .header("Accept", "application/json");
        if self.token.is_empty() {
            rb
        } else {
            rb.bearer_auth(&self.token)
        }
    }

    /// A read: retried after a timeout, a connection error or a 5xx.
    fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> BankResult<T> {
        let url = self.url(segments)?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0;
        loop {
            let rb = self.prepare(self.client()?.get(url.clone()).query(query), &request_id);
            match send(rb) {
                Err(e) if attempt < self.read_retries && retryable(&e) => attempt += 1,
                other => return other,
            }
        }
    }

    /// A write: sent once.
    fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
        idempotency_key: Option<&str>,
    ) -> BankResult<T> {
        let url = self.url(segments)?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut rb = self.prepare(self.client()?.post(url).json(body), &request_id);
        if let Some(k) = idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        send(rb)
    }
}

fn retryable(e: &BankingError) -> bool {
    matches!(e, BankingError::Timeout | BankingError::Unavailable { .. })
}

fn transport(e: reqwest::Error) -> BankingError {
    if e.is_timeout() {
        BankingError::Timeout
    } else if e.is_connect() {
        BankingError::unavailable("cannot connect to the bank")
    } else {
        BankingError::unavailable(format!("HTTP error: {e}"))
    }
}

fn send<T: DeserializeOwned>(rb: RequestBuilder) -> BankResult<T> {
    let resp = rb.send().map_err(transport)?;
    let status = resp.status();
    // Reading the body is inside the client's timeout too.
    let body = resp.bytes().map_err(transport)?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map_err(|_| BankingError::unavailable("malformed response from the bank"));
    }
    if status.is_client_error() {
        if let Ok(typed) = serde_json::from_slice::<BankingError>(&body) {
            // A bank cannot make kefu report its own transport states.
            if !matches!(
                typed,
                BankingError::Timeout | BankingError::Unavailable { .. }
            ) {
                return Err(typed);
            }
        }
        if status == StatusCode::NOT_FOUND {
            return Err(BankingError::not_found("resource"));
        }
        if status == StatusCode::LOCKED {
            return Err(BankingError::Locked);
        }
    }
    Err(BankingError::unavailable(format!(
        "the bank answered {status}"
    )))
}

impl BankingBackend for HttpBank {
    fn start_binding(&self, card_number: &str, now: i64) -> BankResult<CodeChallenge> {
        self.post(
            &["bindings"],
            &json!({ "card_number": card_number, "now": now }),
            None,
        )
    }

    fn send_code(
        &self,
        customer: &str,
        purpose: CodePurpose,
        now: i64,
    ) -> BankResult<CodeChallenge> {
        self.post(
            &["codes"],
            &json!({ "customer": customer, "purpose": purpose, "now": now }),
            None,
        )
    }

    fn check_code(&self, challenge: &str, code: &str, now: i64) -> BankResult<CodeCheck> {
        self.post(
            &["codes", "verify"],
            &json!({ "challenge": challenge, "code": code, "now": now }),
            None,
        )
    }

    fn accounts(&self, customer: &str) -> BankResult<Vec<Account>> {
        self.get(&["customers", customer, "accounts"], &[])
    }

    fn balance(&self, customer: &str, account: &str) -> BankResult<Balance> {
        self.get(
            &["customers", customer, "accounts", account, "balance"],
            &[],
        )
    }

    fn transactions(
        &self,
        customer: &str,
        account: &str,
        q: &TransactionQuery,
    ) -> BankResult<TransactionPage> {
        self.get(
            &["customers", customer, "accounts", account, "transactions"],
            &[
                ("from", q.from.clone()),
                ("to", q.to.clone()),
                ("page", q.page.to_string()),
                ("page_size", q.page_size.to_string()),
                ("now", q.now.to_string()),
            ],
        )
    }

    fn card_bill(&self, customer: &str, account: &str, month: &str) -> BankResult<Bill> {
        self.get(
            &["customers", customer, "accounts", account, "bills", month],
            &[],
        )
    }

    fn limits(&self, customer: &str, now: i64) -> BankResult<Limits> {
        self.get(
            &["customers", customer, "limits"],
            &[("now", now.to_string())],
        )
    }

    fn payees(&self, customer: &str) -> BankResult<Vec<Payee>> {
        self.get(&["customers", customer, "payees"], &[])
    }

    fn repay(&self, request: &RepayRequest) -> BankResult<Receipt> {
        self.post(&["repayments"], request, Some(&request.idempotency_key))
    }

    fn transfer(&self, request: &TransferRequest) -> BankResult<Receipt> {
        self.post(&["transfers"], request, Some(&request.idempotency_key))
    }

    fn branches(&self, query: &BranchQuery, now: i64) -> BankResult<Vec<Branch>> {
        let mut q = vec![("now", now.to_string())];
        match query {
            BranchQuery::Text { text } => q.push(("text", text.clone())),
            BranchQuery::Near {
                latitude,
                longitude,
            } => {
                q.push(("latitude", latitude.to_string()));
                q.push(("longitude", longitude.to_string()));
            }
        }
        self.get(&["branches"], &q)
    }

    fn take_ticket(&self, customer: &str, branch: &str, now: i64) -> BankResult<QueueTicket> {
        self.post(
            &["branches", branch, "tickets"],
            &json!({ "customer": customer, "now": now }),
            None,
        )
    }

    fn book_appointment(&self, customer: &str, branch: &str, now: i64) -> BankResult<Appointment> {
        self.post(
            &["branches", branch, "appointments"],
            &json!({ "customer": customer, "now": now }),
            None,
        )
    }
}
