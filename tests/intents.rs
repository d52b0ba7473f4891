//! The bundled intent rules: enough phrasings per intent, near misses that stay FAQ
//! questions, and slots filled from real messages.

mod common;

use kefu::intents::{Action, IntentSet, SlotValue};
use time::macros::date;

fn bundled() -> IntentSet {
    // Loading runs every example and near miss; a failing one is a load error.
    IntentSet::load_dir(&common::repo("intents")).expect("bundled intents load")
}

#[test]
fn every_intent_has_real_phrasings_and_near_misses() {
    let set = bundled();
    let required = [
        "handoff",
        "cancel",
        "greeting",
        "thanks",
        "satisfied",
        "unsatisfied",
        "balance",
        "transactions",
        "card_bill",
        "repay",
        "transfer",
        "branches",
        "queue_ticket",
        "unbind",
    ];
    for name in required {
        let i = set
            .intents()
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no intent {name}"));
        assert!(
            i.examples.len() >= 5,
            "{name}: {} examples",
            i.examples.len()
        );
        assert!(
            i.near_misses.len() >= 3,
            "{name}: {} near misses",
            i.near_misses.len()
        );
    }
}

#[test]
fn asking_for_a_person_in_any_wording_is_a_handoff() {
    let set = bundled();
    for q in [
        "想和人说话",
        "我要跟人聊聊",
        "找个真人",
        "叫你们客服",
        "人工服务",
        "我要搵人工",
        "同真人傾",
    ] {
        let m = set.classify(q, date!(2026 - 11 - 30));
        assert_eq!(m.map(|m| m.action), Some(Action::Handoff), "{q}");
    }
    for q in ["不想和人说话", "和人说话时手机被偷了怎么办"] {
        let m = set.classify(q, date!(2026 - 11 - 30));
        assert!(m.is_none_or(|m| m.action != Action::Handoff), "{q}");
    }
}

#[test]
fn someone_telling_the_customer_to_send_money_is_not_a_transfer() {
    // A scam situation must reach the anti-fraud answers, never the transfer dialogue.
    let set = bundled();
    for q in [
        "有人打电话说我的卡出问题了叫我转钱",
        "陌生人让我赶紧汇款到他给的账户 这是干啥的",
        "电话里自称法官要我打钱过去 真的假的",
    ] {
        let m = set.classify(q, date!(2026 - 11 - 30));
        assert!(m.is_none_or(|m| m.action != Action::Transfer), "{q}");
    }
    let m = set.classify("帮我转500给张三", date!(2026 - 11 - 30));
    assert_eq!(m.map(|m| m.action), Some(Action::Transfer));
}

#[test]
fn faq_questions_about_a_topic_are_not_actions() {
    let set = bundled();
    for q in [
        "转账限额是多少",
        "跨行转账手续费",
        "还款日是哪天",
        "账单分期怎么办理",
        "网点几点开门",
        "人工智能是什么",
    ] {
        let m = set.classify(q, date!(2026 - 11 - 24));
        assert!(
            m.as_ref()
                .is_none_or(|m| !m.action.is_banking() && m.action != Action::Handoff),
            "{q}: {m:?}"
        );
    }
}

#[test]
fn slots_are_filled_from_what_customers_write() {
    let set = bundled();
    let today = date!(2026 - 11 - 24);
    let m = set.classify("转给张三1.5万", today).expect("transfer");
    assert_eq!(m.action, Action::Transfer);
    assert!(
        m.slots
            .contains(&("amount".into(), SlotValue::Amount(1_500_000))),
        "{m:?}"
    );
    assert!(
        m.slots
            .contains(&("payee".into(), SlotValue::Payee("张三".into()))),
        "{m:?}"
    );
    let m = set
        .classify("查一下上个月的明细", today)
        .expect("transactions");
    assert_eq!(m.action, Action::Transactions);
    assert!(
        m.slots.iter().any(|(_, v)| *v
            == SlotValue::DateRange {
                from: date!(2026 - 10 - 01),
                to: date!(2026 - 10 - 31)
            }),
        "{m:?}"
    );
    let m = set.classify("查尾号8888的余额", today).expect("balance");
    assert!(
        m.slots
            .contains(&("card_tail".into(), SlotValue::CardTail("8888".into()))),
        "{m:?}"
    );
    assert_eq!(
        set.classify("轉人工", today).expect("handoff").action,
        Action::Handoff
    );
}
