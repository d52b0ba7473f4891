//! The bank's own system, seen through one trait.
//!
//! kefu never holds money or account data of its own: balances, transactions, bills,
//! payees, SMS codes and branch queues belong to the bank's core system, and kefu fronts
//! it the way WeChat banking does. [`BankingBackend`] is that edge. Two implementations:
//! - [`demo::DemoBank`]: deterministic sample customers kept in the engine's sled store,
//!   so `kefu chat` and the tests exercise every action with no bank involved;
//! - [`http::HttpBank`]: a bank's REST service (JSON, timeouts, bounded retries for
//!   reads, a request id on every call).
//!
//! The trait is synchronous because the engine is: the server runs `Engine::handle` on a
//! blocking pool, so a slow bank occupies a blocking thread, never an async worker.
//! Every call that depends on the time takes it as an argument (`now`, Unix seconds) so
//! the demo bank is as deterministic as the engine.
//!
//! Amounts are in fen (1/100 yuan) as integers, like the intents' amount slot: no float
//! ever touches money. Card numbers cross this trait only in [`BankingBackend::start_binding`];
//! everything else refers to accounts by the bank's opaque ids and to cards by their
//! last four digits.

pub mod demo;
pub mod http;

use serde::{Deserialize, Serialize};

/// What can go wrong at the bank, as the conversation needs to tell it apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "error")]
pub enum BankingError {
    /// Unknown card, account, payee or branch.
    #[error("not found: {what}")]
    NotFound { what: String },
    /// The paying account cannot cover the amount; `available` in fen.
    #[error("insufficient funds (available {available} fen)")]
    InsufficientFunds { available: i64 },
    /// Over the daily limit; both figures in fen.
    #[error("over the daily limit (limit {limit} fen, remaining {remaining} fen)")]
    OverLimit { limit: u64, remaining: u64 },
    /// The bank locked the card or customer for online services.
    #[error("locked by the bank")]
    Locked,
    /// The bank answered with an error, a malformed body, or not at all.
    #[error("backend unavailable: {reason}")]
    Unavailable { reason: String },
    /// No answer within the configured time.
    #[error("backend timed out")]
    Timeout,
    /// The bank refused the request for a reason the customer should read as is.
    #[error("rejected: {reason}")]
    Rejected { reason: String },
}

impl BankingError {
    pub fn unavailable(reason: impl Into<String>) -> Self {
        BankingError::Unavailable {
            reason: reason.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        BankingError::NotFound { what: what.into() }
    }
}

impl From<BankingError> for crate::Error {
    fn from(e: BankingError) -> Self {
        crate::Error::Backend(e.to_string())
    }
}

pub type BankResult<T> = std::result::Result<T, BankingError>;

/// Why a code is sent: the SMS text differs, and so may the bank's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodePurpose {
    Binding,
    Payment,
}

/// A code the bank has sent to the phone it has on file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeChallenge {
    /// The bank's opaque id for this code; kefu keeps it instead of the card number.
    pub challenge: String,
    /// The phone it went to, already masked by the bank (138****5678).
    pub phone_masked: String,
    /// The last four digits of the card concerned.
    pub card_tail: String,
    /// Unix seconds after which the code is refused.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum CodeCheck {
    /// Right code: the bank's customer id it belongs to.
    Valid {
        customer: String,
    },
    Wrong,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// 借记卡 / 活期.
    Debit,
    Credit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub kind: AccountKind,
    /// Last four digits of the card.
    pub tail: String,
    /// The product name the customer knows ("借记卡", "白金信用卡").
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Available balance in fen; a credit card reports its available credit.
    pub available: i64,
    /// Ledger balance (including amounts on hold) in fen.
    pub ledger: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionQuery {
    /// Inclusive local dates, `YYYY-MM-DD`.
    pub from: String,
    pub to: String,
    /// 1-based.
    pub page: u32,
    pub page_size: u32,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Local date, `YYYY-MM-DD`.
    pub date: String,
    /// Signed fen: income positive, spending negative.
    pub amount: i64,
    /// 摘要 and counterparty as the bank prints them (no account numbers).
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionPage {
    pub items: Vec<Transaction>,
    pub page: u32,
    /// Transactions in the whole range, for "第1/4页".
    pub total: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bill {
    /// `YYYY-MM`.
    pub month: String,
    /// 本期应还 in fen.
    pub statement_balance: i64,
    /// 最低还款 in fen.
    pub minimum: i64,
    /// Still owed on this statement after repayments, in fen.
    pub outstanding: i64,
    /// `YYYY-MM-DD`.
    pub due_date: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Daily transfer limit in fen.
    pub daily_transfer: u64,
    /// Transferred today (local date) in fen.
    pub used_today: u64,
}

impl Limits {
    pub fn remaining(&self) -> u64 {
        self.daily_transfer.saturating_sub(self.used_today)
    }
}

/// A saved payee (常用收款人): kefu transfers only to payees the bank already knows, so
/// no full account number ever passes through a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payee {
    pub id: String,
    pub name: String,
    pub tail: String,
    pub bank: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    pub customer: String,
    pub from_account: String,
    pub payee: String,
    /// Fen.
    pub amount: u64,
    /// Same key → same result and no second debit (see [`idempotency_key`]).
    pub idempotency_key: String,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepayRequest {
    pub customer: String,
    pub from_account: String,
    pub card_account: String,
    /// Fen.
    pub amount: u64,
    pub idempotency_key: String,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The bank's reference (交易流水号).
    pub reference: String,
    /// Fen.
    pub amount: u64,
    /// Balance of the paying account afterwards, in fen, if the bank reports it.
    #[serde(default)]
    pub balance_after: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum BranchQuery {
    /// City / district text as the customer typed it ("杭州西湖区").
    Text { text: String },
    /// A shared location (WGS-84).
    Near { latitude: f64, longitude: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    pub id: String,
    pub name: String,
    pub address: String,
    /// Opening hours as shown to customers ("09:00-17:00").
    pub hours: String,
    pub open_now: bool,
    /// People waiting now.
    pub queue: u32,
    /// Metres from the shared location, for coordinate queries.
    #[serde(default)]
    pub distance_m: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTicket {
    pub number: String,
    /// People ahead.
    pub ahead: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    pub reference: String,
    /// Local date and time as shown to customers ("2026-12-01 10:00").
    pub slot: String,
}

/// The bank's core system. Implementations must return within their configured time
/// (an HTTP backend with a timeout) and never panic on what the bank sends.
pub trait BankingBackend: Send + Sync {
    /// Checks a card number (digits only) and sends a binding code to the phone on file.
    fn start_binding(&self, card_number: &str, now: i64) -> BankResult<CodeChallenge>;
    /// Sends a fresh code to a bound customer's phone (before money moves).
    fn send_code(
        &self,
        customer: &str,
        purpose: CodePurpose,
        now: i64,
    ) -> BankResult<CodeChallenge>;
    fn check_code(&self, challenge: &str, code: &str, now: i64) -> BankResult<CodeCheck>;
    fn accounts(&self, customer: &str) -> BankResult<Vec<Account>>;
    fn balance(&self, customer: &str, account: &str) -> BankResult<Balance>;
    fn transactions(
        &self,
        customer: &str,
        account: &str,
        query: &TransactionQuery,
    ) -> BankResult<TransactionPage>;
    /// The credit-card statement of `month` (`YYYY-MM`).
    fn card_bill(&self, customer: &str, account: &str, month: &str) -> BankResult<Bill>;
    fn limits(&self, customer: &str, now: i64) -> BankResult<Limits>;
    fn payees(&self, customer: &str) -> BankResult<Vec<Payee>>;
    fn repay(&self, request: &RepayRequest) -> BankResult<Receipt>;
    fn transfer(&self, request: &TransferRequest) -> BankResult<Receipt>;
    fn branches(&self, query: &BranchQuery, now: i64) -> BankResult<Vec<Branch>>;
    fn take_ticket(&self, customer: &str, branch: &str, now: i64) -> BankResult<QueueTicket>;
    fn book_appointment(&self, customer: &str, branch: &str, now: i64) -> BankResult<Appointment>;
}

/// The backend of an engine built without one (`Engine::new`): every call is
/// "unavailable", so customers get the honest reply instead of a panic.
#[derive(Debug, Default)]
pub struct NotConnected;

impl NotConnected {
    fn err<T>(&self) -> BankResult<T> {
        Err(BankingError::unavailable(
            "no banking backend is configured",
        ))
    }
}

impl BankingBackend for NotConnected {
    fn start_binding(&self, _: &str, _: i64) -> BankResult<CodeChallenge> {
        self.err()
    }
    fn send_code(&self, _: &str, _: CodePurpose, _: i64) -> BankResult<CodeChallenge> {
        self.err()
    }
    fn check_code(&self, _: &str, _: &str, _: i64) -> BankResult<CodeCheck> {
        self.err()
    }
    fn accounts(&self, _: &str) -> BankResult<Vec<Account>> {
        self.err()
    }
    fn balance(&self, _: &str, _: &str) -> BankResult<Balance> {
        self.err()
    }
    fn transactions(&self, _: &str, _: &str, _: &TransactionQuery) -> BankResult<TransactionPage> {
        self.err()
    }
    fn card_bill(&self, _: &str, _: &str, _: &str) -> BankResult<Bill> {
        self.err()
    }
    fn limits(&self, _: &str, _: i64) -> BankResult<Limits> {
        self.err()
    }
    fn payees(&self, _: &str) -> BankResult<Vec<Payee>> {
        self.err()
    }
    fn repay(&self, _: &RepayRequest) -> BankResult<Receipt> {
        self.err()
    }
    fn transfer(&self, _: &TransferRequest) -> BankResult<Receipt> {
        self.err()
    }
    fn branches(&self, _: &BranchQuery, _: i64) -> BankResult<Vec<Branch>> {
        self.err()
    }
    fn take_ticket(&self, _: &str, _: &str, _: i64) -> BankResult<QueueTicket> {
        self.err()
    }
    fn book_appointment(&self, _: &str, _: &str, _: i64) -> BankResult<Appointment> {
        self.err()
    }
}

/// The idempotency key of one pending confirmation: stable across retries of the turn
/// that executes it (the session still holds the same confirmation), different for
/// every new confirmation, and free of anything personal (a hash).
pub fn idempotency_key(tenant: &str, user: &str, confirmation: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [tenant, user, confirmation] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// `[banking]` in `kefu.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BankingConfig {
    /// `demo` (sample bank in the store) or `http` (the bank's REST service).
    pub backend: BackendKind,
    /// Wrong codes allowed before binding is locked.
    pub max_code_tries: u32,
    /// How long binding stays locked after too many wrong codes (seconds).
    pub lock_secs: i64,
    /// Transactions per page.
    pub page_size: u32,
    /// Days of transactions shown when the customer names no period.
    pub default_days: i64,
    pub http: HttpConfig,
}

impl Default for BankingConfig {
    fn default() -> Self {
        BankingConfig {
            backend: BackendKind::Demo,
            max_code_tries: 5,
            lock_secs: 30 * 60,
            page_size: 5,
            default_days: 30,
            http: HttpConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Demo,
    Http,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The bank's service, e.g. `https://core.bank.example/kefu`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`. Prefer the `KEFU_BANK_TOKEN` environment
    /// variable to writing it here.
    pub token: String,
    /// Total time for one attempt (milliseconds).
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Extra attempts for reads (GET) after a timeout, connection error or 5xx. Writes
    /// are never retried by the client.
    pub read_retries: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            base_url: String::new(),
            token: String::new(),
            timeout_ms: 3000,
            connect_timeout_ms: 1000,
            read_retries: 1,
        }
    }
}

/// `¥1,234.50` style amounts for replies.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02}元", abs % 100)
}

/// [`yuan`] for unsigned amounts (limits, requests), saturating.
pub fn yuan_u(fen: u64) -> String {
    yuan(i64::try_from(fen).unwrap_or(i64::MAX))
}

/// Digits of a card number as customers type it: spaces and dashes (also full-width)
/// between digits, full-width digits, words around it ("卡号是 6222 …"). `None` unless
/// exactly one run of 16-19 digits is there.
pub fn card_digits(text: &str) -> Option<String> {
    let mut runs: Vec<String> = Vec::new();
    let mut run = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => run.push(c),
            '０'..='９' => run.push(char::from(b'0' + (c as u32 - '０' as u32) as u8)),
            ' ' | '\u{3000}' | '\t' | '-' | '－' | '—' | '–' | '‐' if !run.is_empty() => {}
            _ => {
                if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
            }
        }
    }
    runs.push(run);
    let mut cards = runs.into_iter().filter(|r| (16..=19).contains(&r.len()));
    match (cards.next(), cards.next()) {
        (Some(card), None) => Some(card),
        _ => None,
    }
}

/// `**** 2345`: how a card appears in every reply.
pub fn masked_tail(tail: &str) -> String {
    format!("**** {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_in_the_forms_customers_type() {
        for typed in [
            "6222020012342345",
            "6222 0200 1234 2345",
            "6222-0200-1234-2345",
            "６２２２　０２００　１２３４　２３４５",
            "６２２２－０２００－１２３４－２３４５",
        ] {
            assert_eq!(
                card_digits(typed).as_deref(),
                Some("6222020012342345"),
                "{typed}"
            );
        }
        assert_eq!(card_digits("123456"), None);
        assert_eq!(
            card_digits("卡号是 6222 0200 1234 2345。").as_deref(),
            Some("6222020012342345")
        );
        assert_eq!(card_digits("6222020012342345 6222020012342345"), None);
        assert_eq!(card_digits("62220200123423451234"), None);
    }

    #[test]
    fn amounts_read_as_bank_statements_do() {
        assert_eq!(yuan(123_456_789), "1,234,567.89元");
        assert_eq!(yuan(5), "0.05元");
        assert_eq!(yuan(-50_000), "-500.00元");
        assert_eq!(yuan(100_000), "1,000.00元");
    }

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        let a = idempotency_key("bank", "u1", "c-1");
        assert_eq!(a, idempotency_key("bank", "u1", "c-1"));
        assert_ne!(a, idempotency_key("bank", "u1", "c-2"));
        assert_ne!(a, idempotency_key("bank", "u1c", "-1"));
        assert_eq!(a.len(), 64);
    }
}
