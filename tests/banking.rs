//! Account conversations through `Engine::handle` with the demo bank: binding, lockout,
//! expiry, queries, paging, transfers, repayments, branches, failures and 取消; and a
//! scan of everything stored for card numbers.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use kefu::banking::demo::DEMO_CODE;
use kefu::banking::*;
use kefu::config::EngineConfig;
use kefu::engine::account::UNAVAILABLE;
use kefu::engine::{ChannelEvent, Engine, Reply, ReplyKind};
use kefu::handoff::SledQueue;
use kefu::intents::{AuthLevel, IntentSet};
use kefu::knowledge::KnowledgeBase;
use kefu::store::{Session, SledStore, Store, Turn, TurnCommit, UserKey};

const CARD: &str = "6222 0200 1234 2345";
const CARD_DIGITS: &str = "6222020012342345";

fn key(user: &str) -> UserKey {
    UserKey::new("bank", user)
}

fn session(e: &Engine, user: &str) -> Session {
    e.store().session(&key(user)).unwrap().unwrap_or_default()
}

fn balance(e: &Engine, account: &str) -> i64 {
    let customer = if account.starts_with("A1") {
        "C002"
    } else {
        "C001"
    };
    e.banking().balance(customer, account).unwrap().available
}

/// Binds the sample card for `user` at `at` with the period menu choice `period`.
fn bind(e: &Engine, user: &str, card: &str, period: &str, at: i64) -> Reply {
    let r = say(e, user, "查余额", at);
    assert!(r.text.contains("请输入您的本行银行卡号"), "{}", r.text);
    let r = say(e, user, card, at + 1);
    assert!(r.text.contains("验证码已发送"), "{}", r.text);
    let r = say(e, user, DEMO_CODE, at + 2);
    assert_eq!(r.options.len(), 3, "{r:?}");
    say(e, user, period, at + 3)
}

fn texts(replies: &[Reply]) -> String {
    replies
        .iter()
        .map(Reply::plain_text)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
fn a_follower_asking_for_the_balance_binds_then_gets_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let r = say(&e, "u", "查余额", MORNING);
    assert_eq!(r.intent.as_deref(), Some("balance"));
    assert!(
        r.text.contains("查询余额需要先绑定本行银行卡"),
        "{}",
        r.text
    );
    assert_eq!(session(&e, "u").auth, AuthLevel::Follower);

    let r = say(&e, "u", CARD, MORNING + 10);
    assert!(r.text.contains("138****5678"), "{}", r.text);
    assert!(r.text.contains("**** 2345"), "{}", r.text);

    let r = say(&e, "u", "123456", MORNING + 20);
    let labels: Vec<&str> = r.options.iter().map(|o| o.label.as_str()).collect();
    assert_eq!(labels, ["1天", "1个月", "3个月"]);

    let r = say(&e, "u", "2", MORNING + 30);
    assert!(r.text.contains("绑定成功：银行卡 **** 2345"), "{}", r.text);
    assert!(r.text.contains("可用余额：52,345.67元"), "{}", r.text);
    let follow: Vec<&str> = r.options.iter().map(|o| o.label.as_str()).collect();
    assert_eq!(follow, ["活期明细", "信用卡账单", "附近网点"]);
    let s = session(&e, "u");
    assert_eq!(s.auth, AuthLevel::Verified);
    assert_eq!(
        s.account.binding.as_ref().map(|b| b.expires_at),
        Some(MORNING + 30 + 30 * 86_400)
    );

    // The follow-up menu answers numbers: 2 → the credit-card bill.
    let r = say(&e, "u", "2", MORNING + 40);
    assert!(r.text.contains("信用卡 **** 6688"), "{}", r.text);
    assert!(r.text.contains("本期应还"), "{}", r.text);

    // Bound now: the next balance comes at once, and 解绑 lowers the level again.
    let r = say(&e, "u", "卡里还有多少钱", MORNING + 50);
    assert!(r.text.contains("可用余额"), "{}", r.text);
    let r = say(&e, "u", "解绑", MORNING + 60);
    assert!(
        r.text.contains("已解除银行卡 **** 2345 的绑定"),
        "{}",
        r.text
    );
    assert_eq!(session(&e, "u").auth, AuthLevel::Follower);
    let r = say(&e, "u", "查余额", MORNING + 70);
    assert!(r.text.contains("请输入您的本行银行卡号"), "{}", r.text);
}

#[test]
fn five_wrong_codes_lock_binding_until_the_configured_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    config.banking.lock_secs = 600;
    let e = engine_with(dir.path(), config);
    say(&e, "u", "查余额", MORNING);
    say(&e, "u", "6222-0200-1234-2345", MORNING + 1);
    for (i, left) in [4, 3, 2, 1].into_iter().enumerate() {
        let r = say(&e, "u", "000000", MORNING + 2 + i as i64);
        assert!(
            r.text.contains(&format!("还可以再试{left}次")),
            "{}",
            r.text
        );
    }
    let r = say(&e, "u", "000000", MORNING + 10);
    assert!(r.text.contains("错误次数过多"), "{}", r.text);
    assert_eq!(
        session(&e, "u").account.locked_until,
        Some(MORNING + 10 + 600)
    );
    // The right code now is no longer taken: the flow is over and binding refused.
    let r = say(&e, "u", "查余额", MORNING + 20);
    assert!(r.text.contains("绑卡已暂停"), "{}", r.text);
    let r = say(&e, "u", "查余额", MORNING + 609);
    assert!(r.text.contains("绑卡已暂停"), "{}", r.text);
    assert_eq!(session(&e, "u").auth, AuthLevel::Follower);

    // After the lock: binding works again, with the full number of tries.
    let r = bind(&e, "u", CARD, "1", MORNING + 611);
    assert!(r.text.contains("绑定成功"), "{}", r.text);
    assert_eq!(session(&e, "u").account.wrong_codes, 0);
}

#[test]
fn a_binding_expires_and_the_level_drops() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let r = bind(&e, "u", CARD, "1", MORNING);
    assert!(r.text.contains("有效期1天"), "{}", r.text);
    let r = say(&e, "u", "查余额", MORNING + 86_000);
    assert!(r.text.contains("可用余额"), "{}", r.text);
    let r = say(&e, "u", "查余额", MORNING + 3 + 86_400);
    assert!(r.text.contains("之前的绑卡已到期"), "{}", r.text);
    let s = session(&e, "u");
    assert_eq!(s.auth, AuthLevel::Follower);
    assert!(s.account.binding.is_none());
}

#[test]
fn a_wrong_card_and_an_expired_code_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    say(&e, "u", "查余额", MORNING);
    let r = say(&e, "u", "6222 0200 1234 0000", MORNING + 1);
    assert!(r.text.contains("没有找到银行卡 **** 0000"), "{}", r.text);
    let r = say(&e, "u", "我的卡号是多少位", MORNING + 2);
    assert!(r.text.contains("16-19位"), "{}", r.text);
    say(&e, "u", CARD, MORNING + 3);
    let r = say(&e, "u", DEMO_CODE, MORNING + 3 + 301);
    assert!(r.text.contains("验证码已过期"), "{}", r.text);
    assert_eq!(session(&e, "u").auth, AuthLevel::Follower);
}

#[test]
fn a_transfer_needs_confirmation_and_a_fresh_code_and_a_retry_moves_money_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    bind(&e, "u", CARD, "2", MORNING);
    let before = balance(&e, "A001");

    let r = say(&e, "u", "转给王芳500元", MORNING + 100);
    assert!(
        r.text.contains("收款人：王芳（本行 **** 4321）"),
        "{}",
        r.text
    );
    assert!(r.text.contains("金额：500.00元"), "{}", r.text);
    assert!(r.text.contains("付款账户：借记卡 **** 2345"), "{}", r.text);
    assert!(r.text.contains("单日限额 50,000.00元"), "{}", r.text);
    assert_eq!(balance(&e, "A001"), before, "nothing moves before 确认");

    let r = say(&e, "u", "确认", MORNING + 110);
    assert!(r.text.contains("验证码已发送至 138****5678"), "{}", r.text);
    assert_eq!(balance(&e, "A001"), before, "nothing moves before the code");

    let mut code = msg("u", DEMO_CODE, MORNING + 120);
    code.message_id = Some("wx-code-1".into());
    let done = e.handle(&code).unwrap();
    assert!(done.text.contains("转账成功"), "{}", done.text);
    assert_eq!(balance(&e, "A001"), before - 50_000);

    // WeChat retries the same message: the same reply, no second debit.
    code.at += 5;
    assert_eq!(e.handle(&code).unwrap(), done);
    assert_eq!(balance(&e, "A001"), before - 50_000);
    // Typing the code again is not a new transfer either: nothing is pending.
    let r = say(&e, "u", DEMO_CODE, MORNING + 130);
    assert!(!r.text.contains("转账成功"), "{}", r.text);
    assert_eq!(balance(&e, "A001"), before - 50_000);
    assert_eq!(
        e.banking().limits("C001", MORNING).unwrap().used_today,
        50_000
    );
}

/// A store whose next commit fails once: the bank has executed, the turn is lost, the
/// channel retries the message.
struct FlakyStore {
    inner: SledStore,
    fail_next: AtomicBool,
}

impl Store for FlakyStore {
    fn session(&self, key: &UserKey) -> kefu::Result<Option<Session>> {
        self.inner.session(key)
    }
    fn processed(&self, key: &UserKey, id: &str) -> kefu::Result<Option<Vec<u8>>> {
        self.inner.processed(key, id)
    }
    fn commit(&self, c: TurnCommit<'_>) -> kefu::Result<()> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(kefu::Error::Store("disk full (test)".into()));
        }
        self.inner.commit(c)
    }
    fn transcript(&self, key: &UserKey) -> kefu::Result<Vec<Turn>> {
        self.inner.transcript(key)
    }
    fn events(&self) -> kefu::Result<Vec<kefu::store::Event>> {
        self.inner.events()
    }
    fn next_id(&self) -> kefu::Result<u64> {
        self.inner.next_id()
    }
    fn expire_processed(&self, before: i64) -> kefu::Result<usize> {
        self.inner.expire_processed(before)
    }
    fn published(&self) -> kefu::Result<Option<Vec<u8>>> {
        self.inner.published()
    }
    fn set_published(&self, bundle: &[u8]) -> kefu::Result<()> {
        self.inner.set_published(bundle)
    }
    fn flush(&self) -> kefu::Result<()> {
        self.inner.flush()
    }
}

/// Records the idempotency keys it passes on to the demo bank.
struct Recording {
    inner: Arc<dyn BankingBackend>,
    keys: Mutex<Vec<String>>,
}

macro_rules! delegate_reads {
    () => {
        fn start_binding(&self, card: &str, now: i64) -> BankResult<CodeChallenge> {
            self.inner.start_binding(card, now)
        }
        fn send_code(&self, c: &str, p: CodePurpose, now: i64) -> BankResult<CodeChallenge> {
            self.inner.send_code(c, p, now)
        }
        fn check_code(&self, ch: &str, code: &str, now: i64) -> BankResult<CodeCheck> {
            self.inner.check_code(ch, code, now)
        }
        fn card_bill(&self, c: &str, a: &str, m: &str) -> BankResult<Bill> {
            self.inner.card_bill(c, a, m)
        }
        fn limits(&self, c: &str, now: i64) -> BankResult<Limits> {
            self.inner.limits(c, now)
        }
        fn payees(&self, c: &str) -> BankResult<Vec<Payee>> {
            self.inner.payees(c)
        }
        fn repay(&self, r: &RepayRequest) -> BankResult<Receipt> {
            self.inner.repay(r)
        }
        fn branches(&self, q: &BranchQuery, now: i64) -> BankResult<Vec<Branch>> {
            self.inner.branches(q, now)
        }
        fn take_ticket(&self, c: &str, b: &str, now: i64) -> BankResult<QueueTicket> {
            self.inner.take_ticket(c, b, now)
        }
        fn book_appointment(&self, c: &str, b: &str, now: i64) -> BankResult<Appointment> {
            self.inner.book_appointment(c, b, now)
        }
        fn transactions(
            &self,
            c: &str,
            a: &str,
            q: &TransactionQuery,
        ) -> BankResult<TransactionPage> {
            self.inner.transactions(c, a, q)
        }
    };
}

impl BankingBackend for Recording {
    delegate_reads!();
    fn accounts(&self, c: &str) -> BankResult<Vec<Account>> {
        self.inner.accounts(c)
    }
    fn balance(&self, c: &str, a: &str) -> BankResult<Balance> {
        self.inner.balance(c, a)
    }
    fn transfer(&self, r: &TransferRequest) -> BankResult<Receipt> {
        self.keys.lock().unwrap().push(r.idempotency_key.clone());
        self.inner.transfer(r)
    }
}

fn engine_on(store: Arc<dyn Store>, db: &sled::Db) -> Engine {
    let kb = KnowledgeBase::load_dir(&repo("knowledge-base")).unwrap();
    let intents = IntentSet::load_dir(&repo("intents")).unwrap();
    let queue = SledQueue::new(db).unwrap();
    Engine::new(kb, intents, store, Arc::new(queue), EngineConfig::default()).unwrap()
}

#[test]
fn a_turn_lost_after_the_bank_executed_is_retried_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SledStore::open(dir.path()).unwrap();
    let db = inner.db().clone();
    let store = Arc::new(FlakyStore {
        inner,
        fail_next: AtomicBool::new(false),
    });
    let demo: Arc<dyn BankingBackend> = Arc::new(demo::DemoBank::open(&db).unwrap());
    let recording = Arc::new(Recording {
        inner: demo.clone(),
        keys: Mutex::new(Vec::new()),
    });
    let e = engine_on(store.clone(), &db).with_banking(recording.clone());
    bind(&e, "u", CARD, "2", MORNING);
    let before = demo.balance("C001", "A001").unwrap().available;
    say(&e, "u", "给王芳转1000块", MORNING + 100);
    say(&e, "u", "确认", MORNING + 110);

    let mut code = msg("u", DEMO_CODE, MORNING + 120);
    code.message_id = Some("wx-code-9".into());
    store.fail_next.store(true, Ordering::SeqCst);
    assert!(e.handle(&code).is_err(), "the commit failed");
    assert_eq!(
        demo.balance("C001", "A001").unwrap().available,
        before - 100_000
    );

    // The channel retries: the session still holds the confirmation, so the engine
    // asks the bank again with the same key, and the bank answers with the first result.
    let r = e.handle(&code).unwrap();
    assert!(r.text.contains("转账成功"), "{}", r.text);
    assert_eq!(
        demo.balance("C001", "A001").unwrap().available,
        before - 100_000
    );
    let keys = recording.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    let confirmation = format!("{}-1", MORNING + 100);
    assert_eq!(keys[0], idempotency_key("bank", "u", &confirmation));

    // A new transfer gets a new key.
    say(&e, "u", "给王芳转1块", MORNING + 200);
    say(&e, "u", "确认", MORNING + 210);
    say(&e, "u", DEMO_CODE, MORNING + 220);
    let keys = recording.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 3);
    assert_ne!(keys[2], keys[0]);
}

#[test]
fn slots_are_asked_one_at_a_time_and_the_daily_limit_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    bind(&e, "u", CARD, "2", MORNING);
    let r = say(&e, "u", "我要转账", MORNING + 100);
    assert!(r.text.contains("请选择收款人"), "{}", r.text);
    let labels: Vec<&str> = r.options.iter().map(|o| o.label.as_str()).collect();
    assert_eq!(
        labels,
        ["王芳（本行 **** 4321）", "刘洋（中国农业银行 **** 5566）"]
    );
    let r = say(&e, "u", "2", MORNING + 110);
    assert!(r.text.contains("向 刘洋"), "{}", r.text);
    assert!(r.text.contains("请输入金额"), "{}", r.text);
    let r = say(&e, "u", "6万", MORNING + 120);
    assert!(r.text.contains("单日转账限额 50,000.00元"), "{}", r.text);
    assert!(r.text.contains("还可转 50,000.00元"), "{}", r.text);
    let r = say(&e, "u", "很多", MORNING + 125);
    assert!(r.text.contains("请输入金额"), "{}", r.text);
    let r = say(&e, "u", "2000", MORNING + 130);
    assert!(r.text.contains("收款人：刘洋"), "{}", r.text);
    assert!(r.text.contains("金额：2,000.00元"), "{}", r.text);

    // A payee the bank does not know is not taken from the chat.
    let r = say(&e, "u", "转给赵六500元", MORNING + 200);
    assert!(r.text.contains("“赵六”不在您的常用收款人中"), "{}", r.text);
}

#[test]
fn a_repayment_of_the_minimum_then_the_bill_shows_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    bind(&e, "u", CARD, "2", MORNING);
    let before = balance(&e, "A001");
    let r = say(&e, "u", "还信用卡", MORNING + 100);
    assert_eq!(r.intent.as_deref(), Some("repay"));
    assert!(r.options[0].label.starts_with("全额还款"), "{r:?}");
    assert!(r.options[1].label.starts_with("最低还款"), "{r:?}");
    let r = say(&e, "u", "1", MORNING + 110);
    assert!(r.text.contains("请确认还款信息"), "{}", r.text);
    assert!(r.text.contains("信用卡：**** 6688"), "{}", r.text);
    say(&e, "u", "确认", MORNING + 120);
    let r = say(&e, "u", DEMO_CODE, MORNING + 130);
    assert!(r.text.contains("还款成功"), "{}", r.text);
    assert!(balance(&e, "A001") < before);
    let r = say(&e, "u", "信用卡账单", MORNING + 140);
    assert!(r.text.contains("尚未还款：0.00元"), "{}", r.text);
    let r = say(&e, "u", "还款", MORNING + 150);
    assert!(r.text.contains("已还清"), "{}", r.text);
}

#[test]
fn transactions_are_paged() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    bind(&e, "u", CARD, "2", MORNING);
    let p1 = say(&e, "u", "近两个月的明细", MORNING + 100);
    assert!(p1.text.contains("（第1/6页，共26笔）"), "{}", p1.text);
    let p2 = say(&e, "u", "下一页", MORNING + 110);
    assert!(p2.text.contains("（第2/6页"), "{}", p2.text);
    let p6 = say(&e, "u", "6", MORNING + 120);
    assert!(p6.text.contains("（第6/6页"), "{}", p6.text);
    let lines = |r: &Reply| {
        r.text
            .lines()
            .skip(1)
            .take(5)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_ne!(lines(&p1), lines(&p2));
    assert_eq!(
        p6.text.lines().count(),
        1 + 1 + 1,
        "one transaction on the last page, and the hint"
    );
    let r = say(&e, "u", "9", MORNING + 130);
    assert!(r.text.contains("明细共6页"), "{}", r.text);
    let back = say(&e, "u", "上一页", MORNING + 140);
    assert!(back.text.contains("（第5/6页"), "{}", back.text);
    // Anything else ends the paging and is answered normally.
    let r = say(&e, "u", "银行卡丢了怎么办", MORNING + 150);
    assert_eq!(r.kind, ReplyKind::Answer, "{r:?}");
}

#[test]
fn branches_then_a_queue_ticket_and_a_location() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let r = say(&e, "u", "附近网点", MORNING);
    assert!(r.text.contains("请发送您的位置"), "{}", r.text);
    let r = say(&e, "u", "杭州", MORNING + 10);
    assert_eq!(r.options.len(), 3, "{r:?}");
    assert!(r.options[0].label.contains("营业时间 09:00-17:00"), "{r:?}");
    assert!(r.options[0].label.contains("排队"), "{r:?}");
    let r = say(&e, "u", "1", MORNING + 20);
    let labels: Vec<&str> = r.options.iter().map(|o| o.label.as_str()).collect();
    assert_eq!(labels, ["取号", "预约", "转人工客服"]);
    // A follower: 取号 needs a bound card, and the ticket follows the binding.
    let r = say(&e, "u", "1", MORNING + 30);
    assert!(
        r.text.contains("网点取号需要先绑定本行银行卡"),
        "{}",
        r.text
    );
    say(&e, "u", CARD, MORNING + 40);
    say(&e, "u", DEMO_CODE, MORNING + 50);
    let r = say(&e, "u", "1", MORNING + 60);
    assert!(
        r.text.contains("已为您在杭州西湖支行取号：A101"),
        "{}",
        r.text
    );

    // A shared location feeds the same list, nearest first, with distances.
    let mut m = msg("u", "", MORNING + 100);
    m.event = Some(ChannelEvent::Location {
        latitude: 39.9042,
        longitude: 116.4074,
        label: Some("天安门".into()),
    });
    let r = e.handle(&m).unwrap();
    assert!(r.options[0].label.starts_with("北京朝阳支行（"), "{r:?}");
    assert!(r.options[0].label.contains("公里"), "{r:?}");
    let r = say(&e, "u", "1", MORNING + 110);
    assert!(r.text.contains("北京朝阳支行"), "{}", r.text);
    let r = say(&e, "u", "2", MORNING + 120);
    assert!(r.text.contains("已为您预约北京朝阳支行"), "{}", r.text);
}

/// Fails every call after binding as told: the bank is down or slow.
struct Failing {
    inner: Arc<dyn BankingBackend>,
    error: BankingError,
    calls: AtomicUsize,
    /// Balance queries fail too (else only the transfer does).
    balance_fails: bool,
}

impl BankingBackend for Failing {
    delegate_reads!();
    fn accounts(&self, c: &str) -> BankResult<Vec<Account>> {
        self.inner.accounts(c)
    }
    fn balance(&self, c: &str, a: &str) -> BankResult<Balance> {
        if !self.balance_fails {
            return self.inner.balance(c, a);
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(self.error.clone())
    }
    fn transfer(&self, _: &TransferRequest) -> BankResult<Receipt> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(self.error.clone())
    }
}

#[test]
fn a_timeout_or_an_error_at_the_bank_gets_the_clear_reply() {
    for error in [BankingError::Timeout, BankingError::unavailable("HTTP 503")] {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let failing = Arc::new(Failing {
            inner: e.banking().clone(),
            error: error.clone(),
            calls: AtomicUsize::new(0),
            balance_fails: true,
        });
        let e = e.with_banking(failing.clone());
        bind(&e, "u", CARD, "2", MORNING);
        let r = say(&e, "u", "查余额", MORNING + 100);
        assert_eq!(r.text, UNAVAILABLE, "{error:?}");
        assert_eq!(r.options.len(), 1);
        // 转人工 is on offer, by number.
        let r = say(&e, "u", "1", MORNING + 110);
        assert_eq!(r.kind, ReplyKind::Handoff, "{r:?}");
        assert!(failing.calls.load(Ordering::SeqCst) >= 1);
    }

    // A transfer that times out at execution is not reported as failed or done.
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let failing = Arc::new(Failing {
        inner: e.banking().clone(),
        error: BankingError::Timeout,
        calls: AtomicUsize::new(0),
        balance_fails: false,
    });
    let e = e.with_banking(failing);
    bind(&e, "v", CARD, "2", MORNING);
    say(&e, "v", "转给王芳500元", MORNING + 100);
    say(&e, "v", "确认", MORNING + 110);
    let r = say(&e, "v", DEMO_CODE, MORNING + 120);
    assert!(r.text.contains("不要重复操作"), "{}", r.text);

    // An engine without a bank says so too.
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let db = store.db().clone();
    let bare = engine_on(Arc::new(store), &db);
    let r = say(&bare, "w", "附近网点", MORNING);
    assert_eq!(r.text, UNAVAILABLE);
}

#[test]
fn cancel_mid_flow_and_handoff_at_any_step() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    say(&e, "u", "查余额", MORNING);
    let r = say(&e, "u", "取消", MORNING + 1);
    assert!(r.text.contains("已取消绑卡"), "{}", r.text);
    let r = say(&e, "u", CARD, MORNING + 2);
    assert!(
        !r.text.contains("验证码已发送"),
        "the flow is over: {}",
        r.text
    );

    bind(&e, "u", CARD, "2", MORNING + 10);
    let before = balance(&e, "A001");
    say(&e, "u", "转给王芳500元", MORNING + 100);
    let r = say(&e, "u", "算了", MORNING + 110);
    assert!(r.text.contains("已取消本次转账，没有扣款"), "{}", r.text);
    let r = say(&e, "u", "确认", MORNING + 120);
    assert!(!r.text.contains("验证码已发送"), "{}", r.text);

    say(&e, "u", "转给王芳500元", MORNING + 200);
    say(&e, "u", "确认", MORNING + 210);
    let r = say(&e, "u", "不转了", MORNING + 220);
    assert!(r.text.contains("已取消本次转账"), "{}", r.text);
    let r = say(&e, "u", DEMO_CODE, MORNING + 230);
    assert!(!r.text.contains("转账成功"), "{}", r.text);
    assert_eq!(balance(&e, "A001"), before);

    say(&e, "u", "转给王芳500元", MORNING + 300);
    let r = say(&e, "u", "转人工", MORNING + 310);
    assert_eq!(r.kind, ReplyKind::Handoff, "{r:?}");
    assert!(session(&e, "u").account.step.is_none());
}

/// Every place a card number could end up (transcripts, events, logs, the sled files)
/// after binding flows with the number typed in five ways.
#[test]
fn no_full_card_number_is_stored_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let typed = [
        "6222 0200 1234 2345",
        "6222-0200-1234-2345",
        "６２２２０２００１２３４２３４５",
        "６２２２－０２００－１２３４－２３４５",
        "卡号是 6222 0200 1234 2345",
    ];
    // Everything the library logs while these flows run, at every level.
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let logs = logs.clone();
            move || LogSink(logs.clone())
        })
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    tracing::info!(target: "kefu::test", "log capture works");
    {
        let e = engine(dir.path());
        for (i, card) in typed.iter().enumerate() {
            let user = format!("u{i}");
            say(&e, &user, "查余额", MORNING);
            say(&e, &user, card, MORNING + 1);
            say(&e, &user, DEMO_CODE, MORNING + 2);
            say(&e, &user, "1", MORNING + 3);
            say(&e, &user, "转给王芳500元", MORNING + 4);
            say(&e, &user, "确认", MORNING + 5);
            say(&e, &user, DEMO_CODE, MORNING + 6);
            say(&e, &user, "转人工", MORNING + 7);
        }
        let mut stored = String::new();
        for i in 0..typed.len() {
            for t in e.transcript(&key(&format!("u{i}"))).unwrap() {
                stored.push_str(&t.text);
                stored.push('\n');
            }
        }
        for ev in e.store().events().unwrap() {
            stored.push_str(&serde_json::to_string(&ev).unwrap());
        }
        stored.push_str(&String::from_utf8_lossy(&logs.lock().unwrap()));
        assert!(stored.contains("log capture works"));
        assert!(stored.contains("**** 2345"), "the masked form is there");
        assert!(!stored.contains(CARD_DIGITS), "{stored}");
        for t in typed {
            assert!(!stored.contains(t), "{t}");
        }
        // Every form was taken as the card: all five customers are bound.
        for (i, t) in typed.iter().enumerate() {
            let s = session(&e, &format!("u{i}"));
            assert_eq!(s.auth, AuthLevel::Verified, "{t}");
        }
    }
    // The sled files themselves.
    let mut needles: Vec<Vec<u8>> = typed.iter().map(|t| t.as_bytes().to_vec()).collect();
    needles.push(CARD_DIGITS.as_bytes().to_vec());
    needles.push(b"02001234".to_vec());
    let mut all = Vec::new();
    read_all(dir.path(), &mut all);
    // The scan reads what was stored: the masked form is in the files as plain bytes.
    let control = "**** 2345".as_bytes();
    assert!(all.windows(control.len()).any(|w| w == control));
    for n in &needles {
        assert!(
            !all.windows(n.len()).any(|w| w == n.as_slice()),
            "the store holds {:?}",
            String::from_utf8_lossy(n)
        );
    }
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_all(dir: &Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_all(&path, out);
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
}

#[test]
fn replies_never_echo_the_card_number() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let replies = vec![
        say(&e, "u", "查余额", MORNING),
        say(&e, "u", "6222020012342345", MORNING + 1),
        say(&e, "u", DEMO_CODE, MORNING + 2),
        say(&e, "u", "3", MORNING + 3),
        say(&e, "u", "信用卡账单", MORNING + 4),
        say(&e, "u", "明细", MORNING + 5),
    ];
    let all = texts(&replies);
    assert!(!all.contains(CARD_DIGITS), "{all}");
    assert!(!all.contains("6225880012346688"), "{all}");
    assert!(
        all.contains("**** 2345") && all.contains("**** 6688"),
        "{all}"
    );
}

#[test]
fn transaction_alerts_reach_live_bindings_only() {
    use kefu::engine::account::AlertEvent;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    bind(&e, "u", CARD, "1", MORNING);
    let alert = AlertEvent {
        tenant: "bank".into(),
        customer: "C001".into(),
        card_tail: "2345".into(),
        amount: -50_000,
        balance_after: Some(5_184_567),
        description: "转账至 6222 0299 8877 4321".into(),
        at: MORNING + 600,
    };
    let n = e.alert_notices(&alert).unwrap();
    assert_eq!(n.dropped, 0);
    assert_eq!(n.deliver.len(), 1);
    let (to, text) = &n.deliver[0];
    assert_eq!(to, &key("u"));
    assert!(
        text.contains("尾号2345的银行卡于11月24日10:10支出500.00元"),
        "{text}"
    );
    assert!(text.contains("余额51,845.67元"), "{text}");
    assert!(
        !text.contains("6222029988774321") && !text.contains("0299 8877"),
        "{text}"
    );

    // Another customer's card: nobody bound it.
    let other = AlertEvent {
        customer: "C002".into(),
        card_tail: "8888".into(),
        ..alert.clone()
    };
    assert_eq!(e.alert_notices(&other).unwrap().deliver.len(), 0);
    assert_eq!(e.alert_notices(&other).unwrap().dropped, 1);

    // After the binding expired: dropped.
    let late = AlertEvent {
        at: MORNING + 3 + 86_400,
        ..alert.clone()
    };
    let n = e.alert_notices(&late).unwrap();
    assert_eq!((n.deliver.len(), n.dropped), (0, 1));

    // After 解绑: dropped.
    bind(&e, "v", CARD, "2", MORNING);
    assert_eq!(e.alert_notices(&alert).unwrap().deliver.len(), 1);
    say(&e, "v", "解绑", MORNING + 10);
    let n = e.alert_notices(&alert).unwrap();
    assert_eq!((n.deliver.len(), n.dropped), (0, 1));
}

#[test]
fn a_payment_the_account_cannot_cover_asks_for_less_before_any_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    // 李娜 has 1,200.00元.
    bind(&e, "u", "6217 0000 1234 8888", "1", MORNING);
    let r = say(&e, "u", "转给张伟2000元", MORNING + 10);
    assert!(
        r.text
            .contains("可用余额 1,200.00元，不足以支付 2,000.00元"),
        "{}",
        r.text
    );
    let r = say(&e, "u", "1000", MORNING + 20);
    assert!(r.text.contains("请确认转账信息"), "{}", r.text);
    assert!(
        r.text.contains("收款人：张伟（本行 **** 2345）"),
        "{}",
        r.text
    );
}

#[test]
fn a_newer_list_from_the_engine_takes_the_numbers_back() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    bind(&e, "u", CARD, "2", MORNING);
    let r = say(&e, "u", "查余额", MORNING + 10);
    assert_eq!(r.options[0].label, "活期明细");
    let mut m = msg("u", "", MORNING + 20);
    m.event = Some(ChannelEvent::Subscribe);
    let welcome = e.handle(&m).unwrap();
    assert_eq!(welcome.kind, ReplyKind::Welcome);
    let r = say(&e, "u", "1", MORNING + 30);
    assert_eq!(r.kind, ReplyKind::Answer, "the welcome list answers: {r:?}");
}

/// `kefu chat` from the repository root (so with `kefu.toml`), fed the README's demo.
#[test]
fn kefu_chat_binds_and_transfers_with_the_demo_bank() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["chat", "--data"])
        .arg(data.path().join("store"))
        .current_dir(repo(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = "查余额\n6222 0200 1234 2345\n123456\n2\n转给王芳500元\n确认\n123456\n1\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "验证码已发送至您在本行预留的手机 138****5678",
        "绑定成功：银行卡 **** 2345，有效期1个月",
        "可用余额：52,345.67元",
        "转账成功：已向 王芳（本行 **** 4321）转出 500.00元",
        "可用余额：51,845.67元",
    ] {
        assert!(stdout.contains(expected), "{expected}\n{stdout}");
    }
    assert!(!stdout.contains(CARD_DIGITS), "{stdout}");
}
