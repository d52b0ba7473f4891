//! Account dialogues: binding, queries, money movement and branches, driven by intents
//! and their slots and answered by the [`BankingBackend`].
//!
//! Everything the customer is in the middle of lives in [`AccountState`] inside the
//! session, so a flow survives a restart and a retried message replays exactly. One
//! [`Step`] at a time is pending; [`TurnState::account_pending`] runs before the
//! engine's menu numbers and intents so that "1", "123456" or "下一页" reach the step
//! that asked for them. `取消` abandons any step; `转人工` always reaches a person.
//!
//! Identity: a follower who asks for an account action is walked through binding (card
//! number → SMS code → how long the binding lasts) and then gets what they asked for.
//! Card numbers never enter the session or a reply: the backend's challenge id stands
//! for the card during binding and the last four digits afterwards.
//!
//! Money: summary → 确认 → fresh code → execute, with an idempotency key derived from
//! the pending confirmation, so a turn retried after a crash asks the bank for the same
//! execution again and the bank answers with the first result.

use serde::{Deserialize, Serialize};
use time::{Date, Duration, OffsetDateTime, UtcOffset};

use super::{handoff_item, Engine, Reply, ReplyKind, ReplyOption, TurnState};
use crate::banking::{
    card_digits, idempotency_key, masked_tail, yuan, yuan_u, Account, AccountKind, BankingError,
    Branch, BranchQuery, CodeCheck, CodePurpose, RepayRequest, TransactionQuery, TransferRequest,
};
use crate::error::Result;
use crate::intents::{Action, AuthLevel, IntentMatch, SlotValue};
use crate::store::{Session, UserKey};
use crate::text::{canonical, parse_choice};

/// The customer's reply when the bank cannot answer in time or at all.
pub const UNAVAILABLE: &str = "暂时无法查询，请稍后再试或回复转人工。";

/// Account dialogue state kept in the session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountState {
    pub binding: Option<Binding>,
    /// Set when a binding ran out, so the next account action says why it asks again.
    pub expired: bool,
    pub step: Option<Step>,
    /// When the step was asked (Unix seconds); an old step no longer takes messages.
    pub step_at: i64,
    /// Wrong codes in a row (binding and payment codes alike).
    pub wrong_codes: u32,
    /// Binding and codes are refused until then (Unix seconds).
    pub locked_until: Option<i64>,
    /// Confirmations issued so far; numbers each one for its idempotency key.
    pub confirmations: u64,
}

impl AccountState {
    /// The identity level the session holds at `now`.
    pub fn level_at(&self, now: i64) -> AuthLevel {
        match &self.binding {
            Some(b) if b.expires_at > now => AuthLevel::Verified,
            _ => AuthLevel::Follower,
        }
    }
}

/// A bound card: the bank's customer id and the card's last four digits, never the number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub customer: String,
    pub card_tail: String,
    pub since: i64,
    pub expires_at: i64,
}

/// What the bot is waiting for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    /// The card number for binding; `resume` is what the customer asked for.
    CardNumber { resume: Option<Goal> },
    BindCode {
        challenge: String,
        expires_at: i64,
        card_tail: String,
        resume: Option<Goal>,
    },
    /// How long the binding lasts (numbered menu).
    Period {
        customer: String,
        card_tail: String,
        resume: Option<Goal>,
    },
    /// One missing slot of `goal`.
    Ask { goal: Goal, slot: Slot },
    /// A money movement summary waiting for 确认.
    Confirm { op: MoneyOp, confirmation: String },
    /// The fresh code for a confirmed money movement.
    PayCode {
        op: MoneyOp,
        confirmation: String,
        challenge: String,
        expires_at: i64,
    },
    /// A numbered list of things to do next (follow-ups, branches, 取号/预约).
    Choose { items: Vec<Choice> },
    /// A transaction list: `下一页`, `上一页` or a page number.
    Pages {
        account: String,
        tail: String,
        from: String,
        to: String,
        page: u32,
        pages: u32,
    },
    /// A city / district (or a shared location) for the branch search.
    Place,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "slot")]
pub enum Slot {
    /// Saved payees offered by number (or typed by name).
    Payee { payees: Vec<PayeeRef> },
    /// An amount; `quick` are the amounts offered by number (全额 / 最低还款).
    Amount { quick: Vec<u64> },
}

/// An account action with the slots known so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "goal")]
pub enum Goal {
    Balance {
        tail: Option<String>,
    },
    Transactions {
        tail: Option<String>,
        from: Option<String>,
        to: Option<String>,
    },
    CardBill {
        month: Option<String>,
    },
    Repay {
        amount: Option<u64>,
    },
    Transfer {
        amount: Option<u64>,
        payee: Option<PayeeRef>,
        payee_name: Option<String>,
    },
    Branches,
    Ticket {
        branch: BranchRef,
    },
    Appointment {
        branch: BranchRef,
    },
}

impl Goal {
    fn needs_binding(&self) -> bool {
        !matches!(self, Goal::Branches)
    }

    fn what(&self) -> &'static str {
        match self {
            Goal::Balance { .. } => "查询余额",
            Goal::Transactions { .. } => "查询交易明细",
            Goal::CardBill { .. } => "查询信用卡账单",
            Goal::Repay { .. } => "信用卡还款",
            Goal::Transfer { .. } => "转账",
            Goal::Branches => "查询网点",
            Goal::Ticket { .. } => "网点取号",
            Goal::Appointment { .. } => "网点预约",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayeeRef {
    pub id: String,
    pub name: String,
    pub tail: String,
    pub bank: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub label: String,
    pub then: Then,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "then")]
pub enum Then {
    Goal { goal: Goal },
    Branch { branch: BranchRef },
    Handoff,
}

/// A money movement as summarized to the customer; executed only after 确认 and a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum MoneyOp {
    Transfer {
        from: String,
        from_tail: String,
        payee: PayeeRef,
        amount: u64,
    },
    Repay {
        from: String,
        from_tail: String,
        card: String,
        card_tail: String,
        amount: u64,
    },
}

impl MoneyOp {
    fn what(&self) -> &'static str {
        match self {
            MoneyOp::Transfer { .. } => "转账",
            MoneyOp::Repay { .. } => "还款",
        }
    }
}

/// A binding period on the menu: (label, seconds).
const PERIODS: [(&str, i64); 3] = [
    ("1天", 86_400),
    ("1个月", 30 * 86_400),
    ("3个月", 90 * 86_400),
];

fn ymd(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn choice(label: &str, then: Then) -> Choice {
    Choice {
        label: label.to_owned(),
        then,
    }
}

fn to_do(label: &str, goal: Goal) -> Choice {
    choice(label, Then::Goal { goal })
}

/// A six-digit code as typed: "123456", "１２３ ４５６", "验证码是123456". `None` unless
/// the message holds exactly one group of six digits.
fn code_of(text: &str) -> Option<String> {
    let t = canonical(text);
    let mut runs: Vec<String> = Vec::new();
    let mut run = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else if c != ' ' || run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    runs.push(run);
    runs.retain(|r| !r.is_empty());
    match runs.as_slice() {
        [code] if code.len() == 6 => Some(code.clone()),
        _ => None,
    }
}

/// An amount typed as an answer: "500", "500元", "1.5万", "五百块".
fn amount_of(text: &str, today: Date) -> Option<u64> {
    let t = canonical(text);
    let t = t.trim();
    if let Some(SlotValue::Amount(fen)) =
        crate::intents::extract(crate::intents::SlotKind::Amount, t, today)
    {
        return Some(fen);
    }
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 2
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let yuan: u64 = whole.parse().ok()?;
    let fen: u64 = format!("{frac:0<2}").parse().ok()?;
    yuan.checked_mul(100)?.checked_add(fen)
}

fn is_yes(text: &str) -> bool {
    let t = canonical(text);
    let t = t.trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace() || c == '。');
    matches!(
        t,
        "确认"
            | "确定"
            | "是"
            | "是的"
            | "好"
            | "好的"
            | "对"
            | "没问题"
            | "确认转账"
            | "确认还款"
            | "ok"
            | "y"
            | "yes"
    ) || parse_choice(text) == Some(1)
}

fn is_no(text: &str) -> bool {
    let t = canonical(text);
    let t = t.trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace() || c == '。');
    matches!(t, "不" | "否" | "不是" | "不对" | "no" | "n") || parse_choice(text) == Some(2)
}

impl TurnState<'_> {
    fn local(&self, at: i64) -> OffsetDateTime {
        let offset = UtcOffset::from_hms(self.engine.config.utc_offset_hours, 0, 0)
            .unwrap_or(UtcOffset::UTC);
        OffsetDateTime::from_unix_timestamp(at)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .to_offset(offset)
    }

    fn local_minute(&self, at: i64) -> String {
        let t = self.local(at);
        format!("{} {:02}:{:02}", ymd(t.date()), t.hour(), t.minute())
    }

    fn set_step(&self, session: &mut Session, step: Step) {
        session.account.step = Some(step);
        session.account.step_at = self.msg.at;
        // A pending step owns the numbers; the engine's last list no longer does.
        session.menu = None;
    }

    fn intent_reply(text: impl Into<String>) -> Reply {
        Reply::new(ReplyKind::Intent, text)
    }

    /// A reply with a numbered list that this module answers.
    fn choose(
        &self,
        session: &mut Session,
        text: String,
        title: &str,
        items: Vec<Choice>,
    ) -> Reply {
        let mut r = Self::intent_reply(text);
        if !items.is_empty() {
            r.options_title = Some(title.to_owned());
            r.options = items
                .iter()
                .enumerate()
                .map(|(i, c)| ReplyOption {
                    number: i + 1,
                    label: c.label.clone(),
                    entry: None,
                })
                .collect();
            self.set_step(session, Step::Choose { items });
        } else {
            session.account.step = None;
        }
        r
    }

    /// Lowers the identity level when the binding has run out.
    fn expire_binding(&self, session: &mut Session) {
        let now = self.msg.at;
        if session
            .account
            .binding
            .as_ref()
            .is_some_and(|b| b.expires_at <= now)
        {
            session.account.binding = None;
            session.account.expired = true;
        }
        session.auth = session.account.level_at(now);
        if session.account.locked_until.is_some_and(|t| t <= now) {
            session.account.locked_until = None;
            session.account.wrong_codes = 0;
        }
    }

    /// What the bank could not do, in the customer's words. Transport failures get the
    /// fixed reply with 转人工 on offer.
    fn bank_error(&self, session: &mut Session, e: BankingError) -> Reply {
        session.account.step = None;
        let text = match e {
            BankingError::Timeout | BankingError::Unavailable { .. } => {
                let r = Self::intent_reply(UNAVAILABLE);
                return self.offer(session, r, "您也可以：", vec![handoff_item(self.w())]);
            }
            BankingError::Locked => {
                "您的卡片已被银行暂停线上服务，请携带身份证件到网点办理，或回复“转人工”。"
                    .to_owned()
            }
            BankingError::NotFound { .. } => {
                "没有查到相关信息，请核对后再试，或回复“转人工”。".to_owned()
            }
            BankingError::InsufficientFunds { available } => format!(
                "付款账户余额不足（可用余额 {}），本次未扣款。",
                yuan(available)
            ),
            BankingError::OverLimit { limit, remaining } => format!(
                "超出单日转账限额：单日限额 {}，今日还可转 {}。本次未扣款，额度次日零点恢复。",
                yuan_u(limit),
                yuan_u(remaining)
            ),
            // The bank's own words, masked in case they carry a number.
            BankingError::Rejected { reason } => {
                format!("{}。", crate::pii::mask(reason.trim_end_matches('。')))
            }
        };
        Self::intent_reply(text)
    }

    /// An account intent: binding first if needed, then the action with its slots.
    pub(super) fn account_intent(
        &mut self,
        session: &mut Session,
        action: Action,
        m: &IntentMatch,
    ) -> Reply {
        self.expire_binding(session);
        session.account.step = None;
        let slot = |name: &str| m.slots.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let tail = match slot("card_tail") {
            Some(SlotValue::CardTail(t)) => Some(t.clone()),
            _ => None,
        };
        let range = match slot("date_range") {
            Some(SlotValue::DateRange { from, to }) => Some((*from, *to)),
            _ => None,
        };
        let amount = match slot("amount") {
            Some(SlotValue::Amount(a)) => Some(*a),
            _ => None,
        };
        let goal = match action {
            Action::Balance => Goal::Balance { tail },
            Action::Transactions => Goal::Transactions {
                tail,
                from: range.map(|r| ymd(r.0)),
                to: range.map(|r| ymd(r.1)),
            },
            Action::CardBill => Goal::CardBill {
                month: range.map(|r| format!("{:04}-{:02}", r.0.year(), u8::from(r.0.month()))),
            },
            Action::Repay => Goal::Repay { amount },
            Action::Transfer => Goal::Transfer {
                amount,
                payee: None,
                payee_name: match slot("payee") {
                    Some(SlotValue::Payee(p)) => Some(p.clone()),
                    _ => None,
                },
            },
            Action::Branches | Action::QueueTicket => Goal::Branches,
            Action::Unbind => return self.unbind(session),
            _ => return Self::intent_reply("这项业务暂不支持在线办理，请回复“转人工”。"),
        };
        let needs = goal.needs_binding() || m.auth > AuthLevel::Follower;
        self.pursue(session, goal, needs)
    }

    fn pursue(&mut self, session: &mut Session, goal: Goal, needs_binding: bool) -> Reply {
        if needs_binding && session.auth < AuthLevel::Verified {
            return self.start_binding(session, Some(goal));
        }
        self.run(session, goal)
    }

    fn start_binding(&mut self, session: &mut Session, resume: Option<Goal>) -> Reply {
        let now = self.msg.at;
        if let Some(until) = session.account.locked_until.filter(|t| *t > now) {
            session.account.step = None;
            return Self::intent_reply(format!(
                "验证码错误次数过多，绑卡已暂停，请在 {} 之后再试，或回复“转人工”。",
                self.local_minute(until)
            ));
        }
        let lead = match (&resume, session.account.expired) {
            (_, true) => "您之前的绑卡已到期，".to_owned(),
            (Some(g), false) => format!("{}需要先绑定本行银行卡。", g.what()),
            (None, false) => String::new(),
        };
        session.account.expired = false;
        self.set_step(session, Step::CardNumber { resume });
        Self::intent_reply(format!(
            "{lead}请输入您的本行银行卡号（16-19位数字，可以带空格或横线），我们会向您在本行预留的手机发送验证码。回复“取消”可退出。"
        ))
    }

    fn unbind(&mut self, session: &mut Session) -> Reply {
        session.account.step = None;
        match session.account.binding.take() {
            Some(b) => {
                if let Some(index) = &self.engine.bindings {
                    index.remove(self.key, &b.customer, &b.card_tail);
                }
                session.auth = AuthLevel::Follower;
                session.account.expired = false;
                Self::intent_reply(format!(
                    "已解除银行卡 {} 的绑定。再次查询账户时需要重新绑定。",
                    masked_tail(&b.card_tail)
                ))
            }
            None => Self::intent_reply("您当前没有绑定银行卡，无需解绑。"),
        }
    }

    /// Runs when a step is pending, before menu numbers and intents. `None` lets the
    /// engine go on (the message was not for the step, or it asks for a person).
    pub(super) fn account_pending(
        &mut self,
        session: &mut Session,
        intent: Option<&IntentMatch>,
    ) -> Result<Option<Reply>> {
        self.expire_binding(session);
        let Some(step) = session.account.step.clone() else {
            return Ok(None);
        };
        // A step older than a menu's life, or one the engine has since shown its own
        // list over (a welcome after a subscribe), no longer takes messages.
        if self.msg.at - session.account.step_at > self.engine.config.menu_ttl_secs
            || session.menu.is_some()
        {
            session.account.step = None;
            return Ok(None);
        }
        match intent.map(|m| m.action) {
            Some(Action::Handoff) => {
                session.account.step = None;
                return Ok(None);
            }
            Some(Action::Cancel) => {
                session.account.step = None;
                session.menu = None;
                let what = match &step {
                    Step::Confirm { op, .. } | Step::PayCode { op, .. } => {
                        format!("已取消本次{}，没有扣款。", op.what())
                    }
                    Step::CardNumber { .. } | Step::BindCode { .. } | Step::Period { .. } => {
                        "已取消绑卡。".to_owned()
                    }
                    _ => "好的，已取消。".to_owned(),
                };
                return Ok(Some(Self::intent_reply(format!(
                    "{what}还有其他问题可以随时问我。"
                ))));
            }
            _ => {}
        }
        // Another action or a greeting while a question is open: the customer moved on.
        let moved_on = intent.is_some();
        let text = self.msg.text.clone();
        let today = self.local(self.msg.at).date();
        let reply = match step {
            Step::CardNumber { resume } => match card_digits(&text) {
                Some(digits) => self.bind_card(session, &digits, resume),
                None if moved_on => return self.moved_on(session),
                None => Self::intent_reply(
                    "请输入16-19位的本行银行卡号（可以带空格或横线），或回复“取消”退出绑卡。",
                ),
            },
            Step::BindCode {
                challenge,
                expires_at,
                card_tail,
                resume,
            } => match code_of(&text) {
                Some(code) => {
                    self.bind_code(session, &challenge, expires_at, &card_tail, &code, resume)
                }
                None if moved_on => return self.moved_on(session),
                None => Self::intent_reply("请输入短信中的6位验证码，或回复“取消”退出绑卡。"),
            },
            Step::Period {
                customer,
                card_tail,
                resume,
            } => {
                let t = canonical(&text);
                let pick = parse_choice(&text).or_else(|| {
                    if t.contains("3个月") || t.contains("三个月") {
                        Some(3)
                    } else if t.contains("1个月") || t.contains("一个月") {
                        Some(2)
                    } else if t.contains("1天") || t.contains("一天") {
                        Some(1)
                    } else {
                        None
                    }
                });
                match pick.and_then(|n| PERIODS.get(n.wrapping_sub(1))) {
                    Some(&(label, secs)) => {
                        self.finish_binding(session, customer, card_tail, label, secs, resume)
                    }
                    None if moved_on => return self.moved_on(session),
                    None => Self::intent_reply(
                        "请回复 1、2 或 3 选择绑定有效期：1. 1天 2. 1个月 3. 3个月。",
                    ),
                }
            }
            Step::Ask { goal, slot } => match self.answer_slot(session, goal, slot, &text, today) {
                Some(r) => r,
                None if moved_on => return self.moved_on(session),
                None => {
                    // Re-ask the same question.
                    let step = session.account.step.clone();
                    match step {
                        Some(Step::Ask { slot, .. }) => Self::intent_reply(match slot {
                            Slot::Payee { .. } => {
                                "请回复序号选择收款人，或输入常用收款人的姓名；回复“取消”可退出。"
                            }
                            Slot::Amount { .. } => {
                                "请输入金额，例如“500”或“1.5万”；回复“取消”可退出。"
                            }
                        }),
                        _ => Self::intent_reply("请按提示回复，或回复“取消”退出。"),
                    }
                }
            },
            Step::Confirm { op, confirmation } => {
                if is_yes(&text) {
                    self.send_pay_code(session, op, confirmation)
                } else if is_no(&text) {
                    session.account.step = None;
                    Self::intent_reply(format!("已取消本次{}，没有扣款。", op.what()))
                } else if moved_on {
                    return self.moved_on(session);
                } else {
                    Self::intent_reply(format!("请回复“确认”继续{}，或回复“取消”放弃。", op.what()))
                }
            }
            Step::PayCode {
                op,
                confirmation,
                challenge,
                expires_at,
            } => match code_of(&text) {
                Some(code) => {
                    self.pay_code(session, op, &confirmation, &challenge, expires_at, &code)
                }
                None if moved_on => return self.moved_on(session),
                None => Self::intent_reply(format!(
                    "请输入短信中的6位验证码完成{}，或回复“取消”放弃。",
                    op.what()
                )),
            },
            Step::Choose { items } => match parse_choice(&text) {
                Some(n) => match items.get(n - 1) {
                    Some(c) => match c.then.clone() {
                        Then::Handoff => {
                            session.account.step = None;
                            return self
                                .escalate(session, "办理业务时选择了转人工", None)
                                .map(Some);
                        }
                        Then::Branch { branch } => self.branch_menu(session, branch),
                        Then::Goal { goal } => {
                            session.account.step = None;
                            let needs = goal.needs_binding();
                            self.pursue(session, goal, needs)
                        }
                    },
                    None => Self::intent_reply(format!(
                        "请回复 1 到 {} 之间的数字选择，或直接输入您的问题。",
                        items.len()
                    )),
                },
                None => {
                    session.account.step = None;
                    return Ok(None);
                }
            },
            Step::Pages {
                account,
                tail,
                from,
                to,
                page,
                pages,
            } => {
                let t = canonical(&text);
                let t = t.trim();
                let wanted = if t.contains("下一页") || t == "下页" || t == "下一頁" {
                    Some(page + 1)
                } else if t.contains("上一页") || t == "上页" {
                    Some(page.saturating_sub(1))
                } else {
                    parse_choice(&text).map(|n| n as u32)
                };
                match wanted {
                    Some(p) if (1..=pages).contains(&p) => {
                        self.show_page(session, &account, &tail, &from, &to, p)
                    }
                    Some(_) => Self::intent_reply(format!(
                        "明细共{pages}页，当前第{page}页。回复页码（1-{pages}）或“上一页”“下一页”。"
                    )),
                    None => {
                        session.account.step = None;
                        return Ok(None);
                    }
                }
            }
            Step::Place => {
                if moved_on {
                    return self.moved_on(session);
                }
                self.branch_search(
                    session,
                    BranchQuery::Text {
                        text: canonical(&text),
                    },
                )
            }
        };
        Ok(Some(reply))
    }

    /// The customer asked for something else while a question was open: drop the step
    /// and let the engine handle the message from the start.
    fn moved_on(&self, session: &mut Session) -> Result<Option<Reply>> {
        session.account.step = None;
        Ok(None)
    }

    fn bind_card(&mut self, session: &mut Session, digits: &str, resume: Option<Goal>) -> Reply {
        let tail = &digits[digits.len() - 4..];
        match self.engine.banking.start_binding(digits, self.msg.at) {
            Ok(ch) => {
                self.set_step(
                    session,
                    Step::BindCode {
                        challenge: ch.challenge,
                        expires_at: ch.expires_at,
                        card_tail: ch.card_tail,
                        resume,
                    },
                );
                let minutes = ((ch.expires_at - self.msg.at) / 60).max(1);
                Self::intent_reply(format!(
                    "验证码已发送至您在本行预留的手机 {}（银行卡 {}），请在{minutes}分钟内回复6位验证码。",
                    ch.phone_masked,
                    masked_tail(tail)
                ))
            }
            Err(BankingError::NotFound { .. }) => Self::intent_reply(format!(
                "没有找到银行卡 {}，请核对卡号后重新输入，或回复“取消”退出。",
                masked_tail(tail)
            )),
            Err(e) => self.bank_error(session, e),
        }
    }

    /// A wrong code: counts toward the lock. Returns the reply.
    fn wrong_code(&self, session: &mut Session, what: &str) -> Reply {
        let cfg = &self.engine.config.banking;
        session.account.wrong_codes += 1;
        let left = cfg
            .max_code_tries
            .max(1)
            .saturating_sub(session.account.wrong_codes);
        if left == 0 {
            let until = self.msg.at + cfg.lock_secs.max(0);
            session.account.locked_until = Some(until);
            session.account.step = None;
            return Self::intent_reply(format!(
                "验证码错误次数过多，{what}已取消，绑卡和验证已锁定至 {}。如需帮助请回复“转人工”。",
                self.local_minute(until)
            ));
        }
        Self::intent_reply(format!("验证码不正确，您还可以再试{left}次。"))
    }

    fn bind_code(
        &mut self,
        session: &mut Session,
        challenge: &str,
        expires_at: i64,
        card_tail: &str,
        code: &str,
        resume: Option<Goal>,
    ) -> Reply {
        if self.msg.at > expires_at {
            self.set_step(session, Step::CardNumber { resume });
            return Self::intent_reply("验证码已过期，请重新输入银行卡号获取新的验证码。");
        }
        match self.engine.banking.check_code(challenge, code, self.msg.at) {
            Ok(CodeCheck::Valid { customer }) => {
                session.account.wrong_codes = 0;
                self.set_step(
                    session,
                    Step::Period {
                        customer,
                        card_tail: card_tail.to_owned(),
                        resume,
                    },
                );
                let mut r = Self::intent_reply("验证成功。请选择绑定有效期，到期后需要重新验证：");
                r.options_title = Some("绑定有效期：".into());
                r.options = PERIODS
                    .iter()
                    .enumerate()
                    .map(|(i, (label, _))| ReplyOption {
                        number: i + 1,
                        label: (*label).to_owned(),
                        entry: None,
                    })
                    .collect();
                r
            }
            Ok(CodeCheck::Wrong) => self.wrong_code(session, "绑卡"),
            Ok(CodeCheck::Expired) => {
                self.set_step(session, Step::CardNumber { resume });
                Self::intent_reply("验证码已过期，请重新输入银行卡号获取新的验证码。")
            }
            Err(e) => self.bank_error(session, e),
        }
    }

    fn finish_binding(
        &mut self,
        session: &mut Session,
        customer: String,
        card_tail: String,
        label: &str,
        secs: i64,
        resume: Option<Goal>,
    ) -> Reply {
        let expires_at = self.msg.at + secs;
        let lead = format!(
            "绑定成功：银行卡 {}，有效期{label}，至 {}。",
            masked_tail(&card_tail),
            self.local_minute(expires_at)
        );
        if let Some(index) = &self.engine.bindings {
            // Best effort: the session is the truth, the index only finds candidates.
            index.insert(self.key, &customer, &card_tail);
        }
        session.account.binding = Some(Binding {
            customer,
            card_tail,
            since: self.msg.at,
            expires_at,
        });
        session.account.step = None;
        session.account.expired = false;
        session.auth = AuthLevel::Verified;
        match resume {
            Some(goal) => {
                let mut r = self.run(session, goal);
                r.text = format!("{lead}\n{}", r.text);
                r
            }
            None => Self::intent_reply(format!(
                "{lead}现在可以查询余额、明细、账单，或办理转账、还款。"
            )),
        }
    }

    /// The bound customer's id; only called after the binding check.
    fn customer(&self, session: &Session) -> Option<String> {
        session.account.binding.as_ref().map(|b| b.customer.clone())
    }

    /// The account a query is about: the named tail, else the bound card, else the
    /// first account of the kind.
    fn pick_account(
        &self,
        session: &Session,
        accounts: &[Account],
        kind: AccountKind,
        tail: Option<&str>,
    ) -> Option<Account> {
        let bound = session
            .account
            .binding
            .as_ref()
            .map(|b| b.card_tail.as_str());
        let of_kind = |a: &&Account| a.kind == kind;
        tail.and_then(|t| accounts.iter().filter(of_kind).find(|a| a.tail == t))
            .or_else(|| bound.and_then(|t| accounts.iter().filter(of_kind).find(|a| a.tail == t)))
            .or_else(|| accounts.iter().find(of_kind))
            .cloned()
    }

    fn run(&mut self, session: &mut Session, goal: Goal) -> Reply {
        if matches!(goal, Goal::Branches) {
            return self.branch_search(
                session,
                BranchQuery::Text {
                    text: canonical(&self.msg.text),
                },
            );
        }
        let Some(customer) = self.customer(session) else {
            return self.start_binding(session, Some(goal));
        };
        let bank = self.engine.banking.clone();
        let accounts = match bank.accounts(&customer) {
            Ok(a) => a,
            Err(e) => return self.bank_error(session, e),
        };
        let has_credit = accounts.iter().any(|a| a.kind == AccountKind::Credit);
        match goal {
            Goal::Balance { tail } => {
                let kind = match tail.as_deref() {
                    Some(t)
                        if accounts
                            .iter()
                            .any(|a| a.tail == t && a.kind == AccountKind::Credit) =>
                    {
                        AccountKind::Credit
                    }
                    _ => AccountKind::Debit,
                };
                let Some(acct) = self.pick_account(session, &accounts, kind, tail.as_deref())
                else {
                    return Self::intent_reply("没有找到可以查询余额的账户。");
                };
                match bank.balance(&customer, &acct.id) {
                    Ok(b) => {
                        let text = if acct.kind == AccountKind::Credit {
                            format!(
                                "{} {} 可用额度：{}",
                                acct.name,
                                masked_tail(&acct.tail),
                                yuan(b.available)
                            )
                        } else {
                            format!(
                                "{} {} 可用余额：{}（账面余额 {}）",
                                acct.name,
                                masked_tail(&acct.tail),
                                yuan(b.available),
                                yuan(b.ledger)
                            )
                        };
                        let mut items = vec![goal_choice_transactions()];
                        if has_credit {
                            items.push(to_do("信用卡账单", Goal::CardBill { month: None }));
                        }
                        items.push(to_do("附近网点", Goal::Branches));
                        self.choose(session, text, "您还可以：", items)
                    }
                    Err(e) => self.bank_error(session, e),
                }
            }
            Goal::Transactions { tail, from, to } => {
                let Some(acct) =
                    self.pick_account(session, &accounts, AccountKind::Debit, tail.as_deref())
                else {
                    return Self::intent_reply("没有找到可以查询明细的借记卡账户。");
                };
                let today = self.local(self.msg.at).date();
                let days = self.engine.config.banking.default_days.clamp(1, 3660);
                let from = from.unwrap_or_else(|| ymd(today - Duration::days(days - 1)));
                let to = to.unwrap_or_else(|| ymd(today));
                self.show_page(session, &acct.id, &acct.tail, &from, &to, 1)
            }
            Goal::CardBill { month } => {
                let Some(card) = self.pick_account(session, &accounts, AccountKind::Credit, None)
                else {
                    return Self::intent_reply("您绑定的客户名下没有本行信用卡。");
                };
                let month = month.unwrap_or_else(|| self.last_statement_month());
                match bank.card_bill(&customer, &card.id, &month) {
                    Ok(b) => {
                        let text = format!(
                            "信用卡 {} {} 账单：\n本期应还：{}\n最低还款：{}\n尚未还款：{}\n到期还款日：{}",
                            masked_tail(&card.tail),
                            b.month,
                            yuan(b.statement_balance),
                            yuan(b.minimum),
                            yuan(b.outstanding),
                            b.due_date
                        );
                        let items = vec![
                            to_do("还款", Goal::Repay { amount: None }),
                            goal_choice_transactions(),
                            to_do("附近网点", Goal::Branches),
                        ];
                        self.choose(session, text, "您还可以：", items)
                    }
                    Err(e) => self.bank_error(session, e),
                }
            }
            Goal::Repay { amount } => {
                let (Some(card), Some(from)) = (
                    self.pick_account(session, &accounts, AccountKind::Credit, None),
                    self.pick_account(session, &accounts, AccountKind::Debit, None),
                ) else {
                    return Self::intent_reply(
                        "还款需要本行信用卡和一张本行借记卡，您名下暂时没有。",
                    );
                };
                let month = self.last_statement_month();
                let bill = match bank.card_bill(&customer, &card.id, &month) {
                    Ok(b) => b,
                    Err(e) => return self.bank_error(session, e),
                };
                let Some(amount) = amount else {
                    if bill.outstanding <= 0 {
                        return Self::intent_reply(format!(
                            "信用卡 {} 的 {} 账单已还清，无需还款。",
                            masked_tail(&card.tail),
                            bill.month
                        ));
                    }
                    let quick: Vec<u64> = [bill.outstanding, bill.minimum.min(bill.outstanding)]
                        .iter()
                        .map(|v| (*v).max(0) as u64)
                        .collect();
                    self.set_step(
                        session,
                        Step::Ask {
                            goal: Goal::Repay { amount: None },
                            slot: Slot::Amount {
                                quick: quick.clone(),
                            },
                        },
                    );
                    let mut r = Self::intent_reply(format!(
                        "信用卡 {} 本期尚需还款 {}（最低还款 {}）。请回复序号，或直接输入还款金额：",
                        masked_tail(&card.tail),
                        yuan(bill.outstanding),
                        yuan(bill.minimum)
                    ));
                    r.options_title = Some("还款金额：".into());
                    r.options = vec![
                        ReplyOption {
                            number: 1,
                            label: format!("全额还款 {}", yuan_u(quick[0])),
                            entry: None,
                        },
                        ReplyOption {
                            number: 2,
                            label: format!("最低还款 {}", yuan_u(quick[1])),
                            entry: None,
                        },
                    ];
                    return r;
                };
                if let Some(r) = self.short_of_funds(
                    session,
                    &customer,
                    &from,
                    amount,
                    Goal::Repay { amount: None },
                ) {
                    return r;
                }
                let op = MoneyOp::Repay {
                    from: from.id,
                    from_tail: from.tail,
                    card: card.id,
                    card_tail: card.tail,
                    amount,
                };
                self.confirm(session, op, None)
            }
            Goal::Transfer {
                amount,
                payee,
                payee_name,
            } => {
                let Some(from) = self.pick_account(session, &accounts, AccountKind::Debit, None)
                else {
                    return Self::intent_reply("转账需要一张本行借记卡，您名下暂时没有。");
                };
                let payee = match payee {
                    Some(p) => p,
                    None => {
                        let payees: Vec<PayeeRef> = match bank.payees(&customer) {
                            Ok(p) => p
                                .into_iter()
                                .map(|p| PayeeRef {
                                    id: p.id,
                                    name: p.name,
                                    tail: p.tail,
                                    bank: p.bank,
                                })
                                .collect(),
                            Err(e) => return self.bank_error(session, e),
                        };
                        let found = payee_name
                            .as_deref()
                            .and_then(|n| payees.iter().find(|p| p.name == n).cloned());
                        match found {
                            Some(p) => p,
                            None => return self.ask_payee(session, amount, payee_name, payees),
                        }
                    }
                };
                let Some(amount) = amount else {
                    self.set_step(
                        session,
                        Step::Ask {
                            goal: Goal::Transfer {
                                amount: None,
                                payee: Some(payee.clone()),
                                payee_name: None,
                            },
                            slot: Slot::Amount { quick: Vec::new() },
                        },
                    );
                    return Self::intent_reply(format!(
                        "向 {}（{} {}）转账，请输入金额：",
                        payee.name,
                        payee.bank,
                        masked_tail(&payee.tail)
                    ));
                };
                let limits = match bank.limits(&customer, self.msg.at) {
                    Ok(l) => l,
                    Err(e) => return self.bank_error(session, e),
                };
                if amount > limits.remaining() {
                    self.set_step(
                        session,
                        Step::Ask {
                            goal: Goal::Transfer {
                                amount: None,
                                payee: Some(payee),
                                payee_name: None,
                            },
                            slot: Slot::Amount { quick: Vec::new() },
                        },
                    );
                    return Self::intent_reply(format!(
                        "{} 超出今日可转额度：单日转账限额 {}，今日已转 {}，还可转 {}。限额由银行按账户安全等级设定，次日零点恢复；大额转账可到网点办理。请输入不超过 {} 的金额，或回复“取消”。",
                        yuan_u(amount),
                        yuan_u(limits.daily_transfer),
                        yuan_u(limits.used_today),
                        yuan_u(limits.remaining()),
                        yuan_u(limits.remaining())
                    ));
                }
                let retry = Goal::Transfer {
                    amount: None,
                    payee: Some(payee.clone()),
                    payee_name: None,
                };
                if let Some(r) = self.short_of_funds(session, &customer, &from, amount, retry) {
                    return r;
                }
                let op = MoneyOp::Transfer {
                    from: from.id,
                    from_tail: from.tail,
                    payee,
                    amount,
                };
                let note = format!(
                    "今日还可转 {}（单日限额 {}）",
                    yuan_u(limits.remaining()),
                    yuan_u(limits.daily_transfer)
                );
                self.confirm(session, op, Some(note))
            }
            Goal::Branches => self.branch_search(
                session,
                BranchQuery::Text {
                    text: canonical(&self.msg.text),
                },
            ),
            Goal::Ticket { branch } => match bank.take_ticket(&customer, &branch.id, self.msg.at) {
                Ok(t) => {
                    session.account.step = None;
                    Self::intent_reply(format!(
                        "已为您在{}取号：{}，前面还有{}人。请留意叫号，过号需要重新取号。",
                        branch.name, t.number, t.ahead
                    ))
                }
                Err(e) => self.bank_error(session, e),
            },
            Goal::Appointment { branch } => {
                match bank.book_appointment(&customer, &branch.id, self.msg.at) {
                    Ok(a) => {
                        session.account.step = None;
                        Self::intent_reply(format!(
                            "已为您预约{}：{}，预约号 {}。请携带身份证件和银行卡按时到达。",
                            branch.name, a.slot, a.reference
                        ))
                    }
                    Err(e) => self.bank_error(session, e),
                }
            }
        }
    }

    /// Asks for a smaller amount when the paying account cannot cover this one, before
    /// the customer confirms anything. The bank checks again when it executes.
    fn short_of_funds(
        &mut self,
        session: &mut Session,
        customer: &str,
        from: &Account,
        amount: u64,
        retry: Goal,
    ) -> Option<Reply> {
        let available = match self.engine.banking.balance(customer, &from.id) {
            Ok(b) => b.available,
            Err(e) => return Some(self.bank_error(session, e)),
        };
        if i64::try_from(amount).map_or(true, |a| a > available) {
            self.set_step(
                session,
                Step::Ask {
                    goal: retry,
                    slot: Slot::Amount { quick: Vec::new() },
                },
            );
            return Some(Self::intent_reply(format!(
                "付款账户 {} 可用余额 {}，不足以支付 {}。请输入不超过可用余额的金额，或回复“取消”。",
                masked_tail(&from.tail),
                yuan(available),
                yuan(i64::try_from(amount).unwrap_or(i64::MAX))
            )));
        }
        None
    }

    fn last_statement_month(&self) -> String {
        let today = self.local(self.msg.at).date();
        let first = today.replace_day(1).unwrap_or(today);
        let prev = first.previous_day().unwrap_or(first);
        format!("{:04}-{:02}", prev.year(), u8::from(prev.month()))
    }

    fn ask_payee(
        &self,
        session: &mut Session,
        amount: Option<u64>,
        name: Option<String>,
        payees: Vec<PayeeRef>,
    ) -> Reply {
        if payees.is_empty() {
            session.account.step = None;
            return Self::intent_reply(
                "您还没有常用收款人。为了资金安全，向新收款人转账请使用本行手机银行或到网点办理。",
            );
        }
        let lead = match name {
            Some(n) => {
                format!("“{n}”不在您的常用收款人中（向新收款人转账请使用手机银行）。请选择收款人：")
            }
            None => "请选择收款人（回复序号或姓名）：".to_owned(),
        };
        let mut r = Self::intent_reply(lead);
        r.options_title = Some("常用收款人：".into());
        r.options = payees
            .iter()
            .enumerate()
            .map(|(i, p)| ReplyOption {
                number: i + 1,
                label: format!("{}（{} {}）", p.name, p.bank, masked_tail(&p.tail)),
                entry: None,
            })
            .collect();
        self.set_step(
            session,
            Step::Ask {
                goal: Goal::Transfer {
                    amount,
                    payee: None,
                    payee_name: None,
                },
                slot: Slot::Payee { payees },
            },
        );
        r
    }

    /// Fills the asked slot from the customer's answer and continues; `None` when the
    /// answer does not fit.
    fn answer_slot(
        &mut self,
        session: &mut Session,
        goal: Goal,
        slot: Slot,
        text: &str,
        today: Date,
    ) -> Option<Reply> {
        match (goal, slot) {
            (Goal::Transfer { amount, .. }, Slot::Payee { payees }) => {
                let t = canonical(text);
                let picked = parse_choice(text)
                    .and_then(|n| payees.get(n - 1))
                    .or_else(|| payees.iter().find(|p| t.contains(p.name.as_str())))?
                    .clone();
                session.account.step = None;
                Some(self.run(
                    session,
                    Goal::Transfer {
                        amount,
                        payee: Some(picked),
                        payee_name: None,
                    },
                ))
            }
            (goal, Slot::Amount { quick }) => {
                let amount = match parse_choice(text) {
                    Some(n) if n <= quick.len() => quick[n - 1],
                    _ => amount_of(text, today)?,
                };
                if amount == 0 {
                    return None;
                }
                session.account.step = None;
                let goal = match goal {
                    Goal::Transfer {
                        payee, payee_name, ..
                    } => Goal::Transfer {
                        amount: Some(amount),
                        payee,
                        payee_name,
                    },
                    Goal::Repay { .. } => Goal::Repay {
                        amount: Some(amount),
                    },
                    other => other,
                };
                Some(self.run(session, goal))
            }
            _ => None,
        }
    }

    /// The summary of a money movement, waiting for 确认.
    fn confirm(&mut self, session: &mut Session, op: MoneyOp, note: Option<String>) -> Reply {
        session.account.confirmations += 1;
        let confirmation = format!("{}-{}", self.msg.at, session.account.confirmations);
        let mut text = match &op {
            MoneyOp::Transfer {
                from_tail,
                payee,
                amount,
                ..
            } => format!(
                "请确认转账信息：\n收款人：{}（{} {}）\n金额：{}\n付款账户：借记卡 {}",
                payee.name,
                payee.bank,
                masked_tail(&payee.tail),
                yuan_u(*amount),
                masked_tail(from_tail)
            ),
            MoneyOp::Repay {
                from_tail,
                card_tail,
                amount,
                ..
            } => format!(
                "请确认还款信息：\n信用卡：{}\n金额：{}\n付款账户：借记卡 {}",
                masked_tail(card_tail),
                yuan_u(*amount),
                masked_tail(from_tail)
            ),
        };
        if let Some(n) = note {
            text.push_str(&format!("\n{n}"));
        }
        text.push_str("\n确认无误请回复“确认”，我们将向您预留的手机发送验证码。");
        let mut r = Self::intent_reply(text);
        r.options_title = Some("请选择：".into());
        r.options = vec![
            ReplyOption {
                number: 1,
                label: "确认".into(),
                entry: None,
            },
            ReplyOption {
                number: 2,
                label: "取消".into(),
                entry: None,
            },
        ];
        self.set_step(session, Step::Confirm { op, confirmation });
        r
    }

    fn send_pay_code(&mut self, session: &mut Session, op: MoneyOp, confirmation: String) -> Reply {
        if let Some(until) = session.account.locked_until.filter(|t| *t > self.msg.at) {
            session.account.step = None;
            return Self::intent_reply(format!(
                "验证码错误次数过多，验证已暂停至 {}，本次{}已取消。",
                self.local_minute(until),
                op.what()
            ));
        }
        let Some(customer) = self.customer(session) else {
            return self.start_binding(session, None);
        };
        match self
            .engine
            .banking
            .send_code(&customer, CodePurpose::Payment, self.msg.at)
        {
            Ok(ch) => {
                let minutes = ((ch.expires_at - self.msg.at) / 60).max(1);
                let what = op.what();
                self.set_step(
                    session,
                    Step::PayCode {
                        op,
                        confirmation,
                        challenge: ch.challenge,
                        expires_at: ch.expires_at,
                    },
                );
                Self::intent_reply(format!(
                    "验证码已发送至 {}，请在{minutes}分钟内回复6位验证码完成{what}。",
                    ch.phone_masked
                ))
            }
            Err(e) => self.bank_error(session, e),
        }
    }

    fn pay_code(
        &mut self,
        session: &mut Session,
        op: MoneyOp,
        confirmation: &str,
        challenge: &str,
        expires_at: i64,
        code: &str,
    ) -> Reply {
        if self.msg.at > expires_at {
            session.account.step = None;
            return Self::intent_reply(format!(
                "验证码已过期，本次{}已取消，没有扣款。请重新发起。",
                op.what()
            ));
        }
        let Some(customer) = self.customer(session) else {
            return self.start_binding(session, None);
        };
        match self.engine.banking.check_code(challenge, code, self.msg.at) {
            Ok(CodeCheck::Valid { .. }) => {
                session.account.wrong_codes = 0;
                self.execute(session, &customer, op, confirmation)
            }
            Ok(CodeCheck::Wrong) => self.wrong_code(session, op.what()),
            Ok(CodeCheck::Expired) => {
                session.account.step = None;
                Self::intent_reply(format!(
                    "验证码已过期，本次{}已取消，没有扣款。请重新发起。",
                    op.what()
                ))
            }
            Err(e) => self.bank_error(session, e),
        }
    }

    fn execute(
        &mut self,
        session: &mut Session,
        customer: &str,
        op: MoneyOp,
        confirmation: &str,
    ) -> Reply {
        let key = idempotency_key(&self.key.tenant, &self.key.user, confirmation);
        let bank = self.engine.banking.clone();
        let result = match &op {
            MoneyOp::Transfer {
                from,
                payee,
                amount,
                ..
            } => bank.transfer(&TransferRequest {
                customer: customer.to_owned(),
                from_account: from.clone(),
                payee: payee.id.clone(),
                amount: *amount,
                idempotency_key: key,
                now: self.msg.at,
            }),
            MoneyOp::Repay {
                from, card, amount, ..
            } => bank.repay(&RepayRequest {
                customer: customer.to_owned(),
                from_account: from.clone(),
                card_account: card.clone(),
                amount: *amount,
                idempotency_key: key,
                now: self.msg.at,
            }),
        };
        session.account.step = None;
        match result {
            Ok(receipt) => {
                let balance = receipt
                    .balance_after
                    .map(|b| format!("，付款账户余额 {}", yuan(b)))
                    .unwrap_or_default();
                let text = match &op {
                    MoneyOp::Transfer { payee, .. } => format!(
                        "转账成功：已向 {}（{} {}）转出 {}，交易流水号 {}{balance}。",
                        payee.name,
                        payee.bank,
                        masked_tail(&payee.tail),
                        yuan_u(receipt.amount),
                        receipt.reference
                    ),
                    MoneyOp::Repay { card_tail, .. } => format!(
                        "还款成功：已向信用卡 {} 还款 {}，交易流水号 {}{balance}。",
                        masked_tail(card_tail),
                        yuan_u(receipt.amount),
                        receipt.reference
                    ),
                };
                let items = vec![
                    to_do("查余额", Goal::Balance { tail: None }),
                    goal_choice_transactions(),
                ];
                self.choose(session, text, "您还可以：", items)
            }
            Err(BankingError::Timeout) => {
                let r = Self::intent_reply(format!(
                    "银行系统没有及时返回{}结果，这笔交易可能已受理。请稍后查询明细确认，不要重复操作；如需帮助请回复“转人工”。",
                    op.what()
                ));
                self.offer(session, r, "您也可以：", vec![handoff_item(self.w())])
            }
            Err(e) => self.bank_error(session, e),
        }
    }

    fn show_page(
        &mut self,
        session: &mut Session,
        account: &str,
        tail: &str,
        from: &str,
        to: &str,
        page: u32,
    ) -> Reply {
        let Some(customer) = self.customer(session) else {
            return self.start_binding(session, None);
        };
        let size = self.engine.config.banking.page_size.clamp(1, 50);
        let q = TransactionQuery {
            from: from.to_owned(),
            to: to.to_owned(),
            page,
            page_size: size,
            now: self.msg.at,
        };
        let p = match self.engine.banking.transactions(&customer, account, &q) {
            Ok(p) => p,
            Err(e) => return self.bank_error(session, e),
        };
        if p.total == 0 {
            session.account.step = None;
            return Self::intent_reply(format!(
                "借记卡 {} 在 {from} 至 {to} 没有交易记录。",
                masked_tail(tail)
            ));
        }
        let pages = p.total.div_ceil(size);
        let mut text = format!(
            "借记卡 {} {from} 至 {to} 的交易明细（第{}/{pages}页，共{}笔）：",
            masked_tail(tail),
            p.page,
            p.total
        );
        for t in &p.items {
            let sign = if t.amount >= 0 { "+" } else { "" };
            text.push_str(&format!(
                "\n{} {} {sign}{}",
                t.date.get(5..).unwrap_or(&t.date),
                crate::pii::mask(&t.description),
                yuan(t.amount)
            ));
        }
        if pages > 1 {
            text.push_str(&format!("\n回复“下一页”“上一页”或页码（1-{pages}）翻页。"));
        }
        self.set_step(
            session,
            Step::Pages {
                account: account.to_owned(),
                tail: tail.to_owned(),
                from: from.to_owned(),
                to: to.to_owned(),
                page: p.page,
                pages,
            },
        );
        Self::intent_reply(text)
    }

    /// Branches for a typed place or a shared location; asks for a place when the text
    /// names none the bank knows.
    fn branch_search(&mut self, session: &mut Session, query: BranchQuery) -> Reply {
        let by_text = matches!(query, BranchQuery::Text { .. });
        let list = match self.engine.banking.branches(&query, self.msg.at) {
            Ok(l) => l,
            Err(e) => return self.bank_error(session, e),
        };
        if list.is_empty() {
            self.set_step(session, Step::Place);
            return Self::intent_reply(if by_text {
                "请发送您的位置（对话框“+”→“位置”），或告诉我您所在的城市和区，例如“杭州西湖区”。"
            } else {
                "您附近50公里内没有本行网点。您可以告诉我要去的城市和区，例如“杭州西湖区”。"
            });
        }
        let items: Vec<Choice> = list
            .iter()
            .map(|b| {
                choice(
                    &branch_label(b),
                    Then::Branch {
                        branch: BranchRef {
                            id: b.id.clone(),
                            name: b.name.clone(),
                        },
                    },
                )
            })
            .collect();
        self.choose(
            session,
            "为您找到以下网点，回复序号可以取号或预约：".to_owned(),
            "网点：",
            items,
        )
    }

    fn branch_menu(&mut self, session: &mut Session, branch: BranchRef) -> Reply {
        let items = vec![
            to_do(
                "取号",
                Goal::Ticket {
                    branch: branch.clone(),
                },
            ),
            to_do(
                "预约",
                Goal::Appointment {
                    branch: branch.clone(),
                },
            ),
            choice("转人工客服", Then::Handoff),
        ];
        self.choose(
            session,
            format!("您选择了{}。需要为您：", branch.name),
            "请选择：",
            items,
        )
    }

    /// A shared location (WeChat `LOCATION`): the branch search by coordinates.
    pub(super) fn account_location(
        &mut self,
        session: &mut Session,
        latitude: f64,
        longitude: f64,
    ) -> Reply {
        self.expire_binding(session);
        if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
            return Reply::new(
                ReplyKind::Notice,
                "这个位置无法识别，请重新发送，或告诉我您所在的城市和区。",
            );
        }
        session.account.step = None;
        self.branch_search(
            session,
            BranchQuery::Near {
                latitude,
                longitude,
            },
        )
    }
}

/// A movement on a card as the bank reports it (微信动账提醒).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub tenant: String,
    /// The bank's customer id.
    pub customer: String,
    pub card_tail: String,
    /// Signed fen: income positive, spending negative.
    pub amount: i64,
    #[serde(default)]
    pub balance_after: Option<i64>,
    /// 摘要 as the bank prints it; masked before it is shown.
    #[serde(default)]
    pub description: String,
    /// Unix seconds of the movement.
    pub at: i64,
}

/// Who gets a notice for one alert, and how many bindings were not (or no longer)
/// valid: unbound, expired, or bound to another customer since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertNotices {
    pub deliver: Vec<(UserKey, String)>,
    pub dropped: usize,
}

/// Bank customer + card tail → the chat users who bound it, in its own sled tree. The
/// session stays the truth: an alert is delivered only if the session still holds a
/// live binding of that card.
pub struct BindingIndex {
    tree: sled::Tree,
}

impl BindingIndex {
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(BindingIndex {
            tree: db.open_tree("banking_bindings")?,
        })
    }

    fn prefix(tenant: &str, customer: &str, tail: &str) -> Vec<u8> {
        let mut k = Vec::new();
        for part in [tenant, customer, tail] {
            k.extend_from_slice(part.as_bytes());
            k.push(0);
        }
        k
    }

    fn key(user: &UserKey, customer: &str, tail: &str) -> Vec<u8> {
        let mut k = BindingIndex::prefix(&user.tenant, customer, tail);
        k.extend_from_slice(user.user.as_bytes());
        k
    }

    fn insert(&self, user: &UserKey, customer: &str, tail: &str) {
        if let Err(e) = self
            .tree
            .insert(BindingIndex::key(user, customer, tail), &[])
        {
            tracing::warn!(error = %e, "binding index not updated");
        }
    }

    fn remove(&self, user: &UserKey, customer: &str, tail: &str) {
        if let Err(e) = self.tree.remove(BindingIndex::key(user, customer, tail)) {
            tracing::warn!(error = %e, "binding index not updated");
        }
    }

    fn users(&self, tenant: &str, customer: &str, tail: &str) -> Result<Vec<UserKey>> {
        let prefix = BindingIndex::prefix(tenant, customer, tail);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let user = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push(UserKey::new(tenant, user));
        }
        Ok(out)
    }
}

impl Engine {
    /// The hook for transaction alerts: the masked notice for each chat user with a
    /// live binding of the alert's card, for the channel's outbound sender. Nothing is
    /// sent or stored here; the server delivers, records and counts.
    pub fn alert_notices(&self, alert: &AlertEvent) -> Result<AlertNotices> {
        let Some(index) = &self.bindings else {
            return Ok(AlertNotices {
                deliver: Vec::new(),
                dropped: 1,
            });
        };
        let mut out = AlertNotices::default();
        for user in index.users(&alert.tenant, &alert.customer, &alert.card_tail)? {
            let live = self.store.session(&user)?.is_some_and(|s| {
                s.account.binding.as_ref().is_some_and(|b| {
                    b.customer == alert.customer
                        && b.card_tail == alert.card_tail
                        && b.expires_at > alert.at
                })
            });
            if live {
                out.deliver.push((user, self.alert_text(alert)));
            } else {
                index.remove(&user, &alert.customer, &alert.card_tail);
                out.dropped += 1;
            }
        }
        if out.deliver.is_empty() && out.dropped == 0 {
            out.dropped = 1;
        }
        Ok(out)
    }

    fn alert_text(&self, a: &AlertEvent) -> String {
        let offset =
            UtcOffset::from_hms(self.config.utc_offset_hours, 0, 0).unwrap_or(UtcOffset::UTC);
        let t = OffsetDateTime::from_unix_timestamp(a.at)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .to_offset(offset);
        let (verb, amount) = if a.amount >= 0 {
            ("收入", a.amount)
        } else {
            ("支出", -a.amount)
        };
        let mut text = format!(
            "【动账提醒】您尾号{}的银行卡于{:02}月{:02}日{:02}:{:02}{verb}{}",
            a.card_tail,
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            yuan(amount)
        );
        let description = crate::pii::mask(a.description.trim());
        if !description.is_empty() {
            text.push_str(&format!("（{description}）"));
        }
        if let Some(b) = a.balance_after {
            text.push_str(&format!("，余额{}", yuan(b)));
        }
        text.push('。');
        crate::pii::mask(&text).into_owned()
    }
}

fn goal_choice_transactions() -> Choice {
    to_do(
        "活期明细",
        Goal::Transactions {
            tail: None,
            from: None,
            to: None,
        },
    )
}

fn branch_label(b: &Branch) -> String {
    let distance = b
        .distance_m
        .map(|d| {
            if d >= 1000 {
                format!("{:.1}公里，", f64::from(d) / 1000.0)
            } else {
                format!("{d}米，")
            }
        })
        .unwrap_or_default();
    let queue = if b.open_now {
        format!("排队{}人", b.queue)
    } else {
        "现已停止营业".to_owned()
    };
    format!(
        "{}（{distance}{}，营业时间 {}，{queue}）",
        b.name, b.address, b.hours
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::from_calendar_date(2026, time::Month::November, 24).unwrap()
    }

    #[test]
    fn amounts_typed_as_answers() {
        assert_eq!(amount_of("500", today()), Some(50_000));
        assert_eq!(amount_of("88.5", today()), Some(8_850));
        assert_eq!(amount_of("1.5万", today()), Some(1_500_000));
        assert_eq!(amount_of("五百块", today()), Some(50_000));
        assert_eq!(amount_of("５００", today()), Some(50_000));
        assert_eq!(amount_of("很多", today()), None);
        assert_eq!(amount_of("1.234", today()), None);
        assert_eq!(amount_of("99999999999999999999999", today()), None);
    }

    #[test]
    fn codes_and_confirmations() {
        assert_eq!(code_of("123456").as_deref(), Some("123456"));
        assert_eq!(code_of("１２３ ４５６").as_deref(), Some("123456"));
        assert_eq!(code_of("12345"), None);
        assert_eq!(code_of("验证码是123456").as_deref(), Some("123456"));
        assert_eq!(code_of("123456 654321"), None);
        assert_eq!(code_of("1234567"), None);
        assert!(is_yes("确认") && is_yes("1") && is_yes("确认！"));
        assert!(!is_yes("2") && is_no("2") && !is_no("确认"));
    }

    #[test]
    fn the_level_follows_the_binding_expiry() {
        let mut s = AccountState::default();
        assert_eq!(s.level_at(100), AuthLevel::Follower);
        s.binding = Some(Binding {
            customer: "C001".into(),
            card_tail: "2345".into(),
            since: 0,
            expires_at: 100,
        });
        assert_eq!(s.level_at(99), AuthLevel::Verified);
        assert_eq!(s.level_at(100), AuthLevel::Follower);
    }
}
