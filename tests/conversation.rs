//! Multi-turn conversations through `Engine::handle`, as a customer would have them,
//! with a real sled store in a temp dir.

mod common;

use common::*;
use kefu::config::EngineConfig;
use kefu::engine::ReplyKind;
use kefu::store::{EventKind, Speaker, UserKey};

fn key(user: &str) -> UserKey {
    UserKey::new("bank", user)
}

#[test]
fn a_confident_answer_comes_with_numbered_related_questions() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let r = say(&e, "u", "银行卡丢了怎么办", MORNING);
    assert_eq!(r.kind, ReplyKind::Answer, "{r:?}");
    assert_eq!(r.entry.as_deref(), Some("card-lost"));
    assert_eq!(r.options_title.as_deref(), Some("您可能还想问："));
    assert!((1..=3).contains(&r.options.len()));
    let text = r.plain_text();
    assert!(text.contains("您可能还想问：\n1. "), "{text}");
    // The entry just answered is never among its own suggestions.
    assert!(r.options.iter().all(|o| o.label != "银行卡丢了怎么办"));
}

/// 额度 alone may mean the credit-card limit or the transfer limit. The answer is the
/// credit card's, and the transfer limit, close behind it, is numbered first under the
/// answer (before the editor's related questions), so a customer who meant it replies
/// `1` instead of asking again.
#[test]
fn a_close_runner_up_is_numbered_first_under_the_answer_and_1_answers_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let kb = bundled_kb();
    let r = say(&e, "u", "额度太低了怎么提额", MORNING);
    assert_eq!(r.kind, ReplyKind::Answer, "{r:?}");
    assert_eq!(r.entry.as_deref(), Some("cc-limit-raise"));
    assert_eq!(
        r.options[0].label,
        question_of(&kb, "tf-limit-raise"),
        "{r:?}"
    );
    assert!(
        r.options.len() >= 2,
        "an editor's related question stays: {r:?}"
    );
    let picked = say(&e, "u", "1", MORNING + 5);
    assert_eq!(picked.kind, ReplyKind::Answer, "{picked:?}");
    assert_eq!(picked.entry.as_deref(), Some("tf-limit-raise"));
}

/// The confirmation band: a message with one close candidate and no real alternative is
/// asked back as "您是想问「…」吗？" with that one entry, and replying `1` answers it.
#[test]
fn a_single_close_candidate_is_confirmed_and_1_answers_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let kb = bundled_kb();
    let r = say(&e, "u", "苹果钱包绑卡", MORNING);
    assert_eq!(r.kind, ReplyKind::Clarify, "{r:?}");
    assert_eq!(r.options.len(), 1, "a confirmation offers one entry: {r:?}");
    let question = r.options[0].label.clone();
    assert_eq!(question, question_of(&kb, "pay-mobile-wallet"));
    assert!(
        r.text.contains(&format!("您是想问「{question}」吗？")),
        "{}",
        r.text
    );
    let picked = say(&e, "u", "1", MORNING + 5);
    assert_eq!(picked.kind, ReplyKind::Answer, "{picked:?}");
    assert_eq!(picked.entry.as_deref(), Some("pay-mobile-wallet"));
}

#[test]
fn a_menu_pick_by_number_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kb = bundled_kb();
    let first = {
        let e = engine(dir.path());
        say(&e, "u", "银行卡丢了怎么办", MORNING)
    };
    let wanted = first.options[1].label.clone();
    let e = engine(dir.path());
    let picked = say(&e, "u", "２", MORNING + 60);
    assert_eq!(picked.kind, ReplyKind::Answer, "{picked:?}");
    assert_eq!(question_of(&kb, picked.entry.as_deref().unwrap()), wanted);
    let transcript = e.transcript(&key("u")).unwrap();
    assert_eq!(transcript.len(), 4, "both turns of both runs are kept");
}

#[test]
fn numbers_in_every_form_pick_from_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let kb = bundled_kb();
    for (n, pick) in [(0, "1"), (1, "第二个"), (0, "一"), (2, "3."), (0, "１")] {
        let r = say(&e, "u", "银行卡丢了怎么办", MORNING);
        let wanted = r.options[n].label.clone();
        let picked = say(&e, "u", pick, MORNING + 1);
        assert_eq!(
            question_of(&kb, picked.entry.as_deref().unwrap()),
            wanted,
            "{pick}"
        );
    }
}

#[test]
fn a_number_without_a_list_or_out_of_range_gets_a_clear_reply() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let r = say(&e, "u", "2", MORNING);
    assert_eq!(r.kind, ReplyKind::Notice);
    assert!(r.text.contains("没有可以选择的列表"), "{}", r.text);
    let answer = say(&e, "u", "银行卡丢了怎么办", MORNING);
    let n = answer.options.len();
    let r = say(&e, "u", "9", MORNING + 1);
    assert!(
        r.text.contains(&format!("请回复 1 到 {n} 之间的数字")),
        "{}",
        r.text
    );
    // The list is still there after a wrong number.
    assert_eq!(say(&e, "u", "1", MORNING + 2).kind, ReplyKind::Answer);
}

#[test]
fn a_stale_menu_no_longer_takes_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    say(&e, "u", "银行卡丢了怎么办", MORNING);
    let ttl = EngineConfig::default().menu_ttl_secs;
    let r = say(&e, "u", "1", MORNING + ttl + 1);
    assert!(r.text.contains("已过期"), "{}", r.text);
}

#[test]
fn intent_and_faq_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let faq = say(&e, "u", "转账限额是多少", MORNING);
    assert_eq!(faq.kind, ReplyKind::Answer, "{faq:?}");
    assert_eq!(faq.entry.as_deref(), Some("tf-limit"));
    let action = say(&e, "u", "我要转账", MORNING);
    assert_eq!(action.kind, ReplyKind::Intent, "{action:?}");
    assert_eq!(action.intent.as_deref(), Some("transfer"));
    // Account actions need a bound card; this build says so plainly (banking backend
    // placeholder until that issue lands).
    assert!(
        action.text.contains("需要先绑定本行银行卡"),
        "{}",
        action.text
    );
    let balance = say(&e, "u", "我的余额", MORNING);
    assert_eq!(balance.intent.as_deref(), Some("balance"));
}

#[test]
fn the_same_message_id_is_processed_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let mut m = msg("u", "银行卡丢了怎么办", MORNING);
    m.message_id = Some("wx-msg-1".into());
    let first = e.handle(&m).unwrap();
    // WeChat retries after 5 s with the same id; the session has moved on meanwhile?
    // No: the retry must get the very same reply, even a minute later.
    m.at += 60;
    let again = e.handle(&m).unwrap();
    assert_eq!(first, again);
    let transcript = e.transcript(&key("u")).unwrap();
    assert_eq!(transcript.len(), 2, "one customer turn and one bot turn");
    let restarted = {
        drop(e);
        engine(dir.path())
    };
    assert_eq!(restarted.handle(&m).unwrap(), first, "and after a restart");

    // A channel that sends an empty id has no id: each message is its own.
    let mut a = msg("w", "银行卡丢了怎么办", MORNING);
    a.message_id = Some(String::new());
    let mut b = msg("w", "转账限额是多少", MORNING + 1);
    b.message_id = Some(String::new());
    assert_eq!(
        restarted.handle(&a).unwrap().entry.as_deref(),
        Some("card-lost")
    );
    assert_eq!(
        restarted.handle(&b).unwrap().entry.as_deref(),
        Some("tf-limit")
    );
}

#[test]
fn repeated_fallbacks_lead_to_an_offer_of_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let first = say(&e, "u", "宇宙的尽头是什么", MORNING);
    assert_eq!(first.kind, ReplyKind::Fallback);
    assert!(
        first.text.contains("转人工"),
        "the fallback is honest and offers a person"
    );
    assert!(first.options.is_empty());
    let second = say(&e, "u", "给我讲个笑话吧", MORNING + 1);
    assert_eq!(second.kind, ReplyKind::Fallback);
    assert_eq!(second.options.len(), 1);
    assert_eq!(second.options[0].label, "转人工客服");
    let queued = say(&e, "u", "1", MORNING + 2);
    assert_eq!(queued.kind, ReplyKind::Handoff, "{queued:?}");
    let status = queued.handoff.unwrap();
    assert_eq!(
        (status.state.as_str(), status.position),
        ("queued", Some(1))
    );
}

#[test]
fn feedback_is_stored_against_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    say(&e, "u", "银行卡丢了怎么办", MORNING);
    let r = say(&e, "u", "没用", MORNING + 1);
    assert_eq!(r.kind, ReplyKind::Intent);
    say(&e, "v", "转账限额是多少", MORNING);
    say(&e, "v", "满意", MORNING + 1);
    let feedback: Vec<(String, bool)> = e
        .store()
        .events()
        .unwrap()
        .into_iter()
        .filter_map(|ev| match ev.kind {
            EventKind::Feedback { entry, positive } => Some((entry, positive)),
            _ => None,
        })
        .collect();
    assert_eq!(
        feedback,
        vec![
            ("card-lost".to_owned(), false),
            ("tf-limit".to_owned(), true)
        ]
    );
}

#[test]
fn transcripts_and_events_hold_no_card_id_or_phone_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    say(
        &e,
        "u",
        "我的卡号6222021234567890123丢了，手机13812345678",
        MORNING,
    );
    say(&e, "u", "身份证110101199003071234能补卡吗", MORNING + 1);
    let transcript = e.transcript(&key("u")).unwrap();
    let all: String = transcript.iter().map(|t| t.text.as_str()).collect();
    for secret in ["6222021234567890123", "13812345678", "110101199003071234"] {
        assert!(!all.contains(secret), "transcript leaks {secret}");
    }
    assert!(all.contains("6222***********0123"));
    let events = serde_json::to_string(&e.store().events().unwrap()).unwrap();
    assert!(!events.contains("6222021234567890123") && !events.contains("13812345678"));
    assert_eq!(transcript[0].from, Speaker::Customer);
}

#[test]
fn greeting_shows_a_welcome_menu_that_answers_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let r = say(&e, "u", "你好", MORNING);
    assert_eq!(r.kind, ReplyKind::Welcome);
    assert!(r.options.len() >= 3, "{r:?}");
    assert_eq!(say(&e, "u", "1", MORNING + 1).kind, ReplyKind::Answer);
}

#[test]
fn bad_input_gets_a_clear_reply_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    say(&e, "u", "银行卡丢了怎么办", MORNING);
    for (text, expect) in [
        ("", "没有收到文字内容"),
        ("   \n\t ", "没有收到文字内容"),
        ("😀👍🎉", "没有收到文字内容"),
        ("？？！！。。", "没有收到文字内容"),
    ] {
        let r = say(&e, "u", text, MORNING + 1);
        assert_eq!(r.kind, ReplyKind::Notice, "{text:?}");
        assert!(r.text.contains(expect), "{text:?}: {}", r.text);
    }
    let huge = "信用卡".repeat(3_334);
    let r = say(&e, "u", &huge, MORNING + 2);
    assert!(r.text.contains("超过了500字的上限"), "{}", r.text);
    // Rejected input changes nothing: the menu from the first answer still picks.
    assert_eq!(say(&e, "u", "1", MORNING + 3).kind, ReplyKind::Answer);
    for hostile in [
        "'; DROP TABLE sessions; --",
        "<script>alert(1)</script>",
        "\u{202e}卡丢了\u{0}\u{7}",
        "{{7*7}} ${jndi:ldap://x}",
    ] {
        let r = say(&e, "u", hostile, MORNING + 4);
        assert_ne!(r.text, "", "{hostile:?}");
    }
    let turns = e.transcript(&key("u")).unwrap();
    assert_eq!(
        turns.len(),
        2 * 11,
        "every turn, rejected or not, is in the transcript"
    );
    for at in [i64::MIN, -1, i64::MAX] {
        let err = e.handle(&msg("u", "你好", at)).unwrap_err().to_string();
        assert!(err.contains("at must be a Unix time"), "{err}");
    }
    for bad_user in ["", "a\0b", &"x".repeat(200)] {
        let mut m = msg(bad_user, "你好", MORNING);
        m.user = bad_user.to_owned();
        let err = e.handle(&m).unwrap_err().to_string();
        assert!(err.contains("user must be"), "{err}");
    }
}

#[test]
fn expired_campaigns_never_answer_and_branch_entries_serve_their_branch() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let kb = bundled_kb();
    let expired = kb
        .entries()
        .iter()
        .find(|x| {
            x.valid_until
                .is_some_and(|d| d < time::macros::date!(2026 - 11 - 24))
        })
        .expect("the bundled KB has an expired campaign");
    let r = say(&e, "u", &expired.question, MORNING);
    assert_ne!(r.entry.as_deref(), Some(expired.id.as_str()), "{r:?}");
    assert!(r.options.iter().all(|o| o.label != expired.question));

    let local = kb
        .entries()
        .iter()
        .find(|x| matches!(&x.scope, kefu::knowledge::Scope::Branch(_)))
        .expect("the bundled KB has a branch entry");
    let kefu::knowledge::Scope::Branch(code) = &local.scope else {
        unreachable!()
    };
    let mut m = msg("local", &local.question, MORNING);
    m.branch = Some(code.clone());
    assert_eq!(
        e.handle(&m).unwrap().entry.as_deref(),
        Some(local.id.as_str())
    );
    let other = say(&e, "elsewhere", &local.question, MORNING);
    assert_ne!(other.entry.as_deref(), Some(local.id.as_str()));
}

#[test]
fn a_broken_reload_keeps_the_last_good_knowledge_base() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let before = e.knowledge_summary();
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("a.toml"),
        "[[entry]]\nid = \"x\"\nquestion = \"\"\nanswer = \"a\"\n",
    )
    .unwrap();
    let err = e
        .reload(broken.path(), &repo("intents"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a.toml:3: entry \"x\" has an empty question"),
        "{err}"
    );
    assert_eq!(e.knowledge_summary(), before);
    assert_eq!(
        say(&e, "u", "银行卡丢了怎么办", MORNING).entry.as_deref(),
        Some("card-lost")
    );
}

#[test]
fn a_damaged_store_is_refused_at_start_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db"), vec![0x5A; 8192]).unwrap();
    std::fs::write(dir.path().join("conf"), b"not a sled config").unwrap();
    let err = kefu::engine::Engine::open(
        &repo("knowledge-base"),
        &repo("intents"),
        Some(dir.path()),
        EngineConfig::default(),
    )
    .err()
    .expect("a damaged store must not open")
    .to_string();
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("db")).unwrap(),
        vec![0x5A; 8192]
    );
}

#[test]
fn unanswered_questions_are_recorded_for_the_content_team() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    // Two wordings of one need the knowledge base has no entry for (a bank draft, 银行汇票;
    // the gold-bar buy-back used before got its own entry, wl-gold-buyback, in round 63).
    say(&e, "a", "银行汇票怎么弄", MORNING);
    say(&e, "b", "银行汇票怎么办", MORNING);
    say(&e, "c", "银行卡丢了怎么办", MORNING);
    let groups = kefu::report::unanswered(
        &e.store().events().unwrap(),
        &kefu::text::Analyzer::default(),
    );
    assert_eq!(groups[0].count, 2, "{groups:?}");
    assert!(groups.iter().all(|g| !g.question.contains("银行卡丢了")));
}

/// The bot's own wording comes from `replies.toml` beside the knowledge base: a bank sets
/// its name and its texts there, and a broken file is refused with its line.
#[test]
fn the_bank_sets_the_bots_wording_in_replies_toml() {
    let content = tempfile::tempdir().unwrap();
    let kb = content.path().join("knowledge-base");
    std::fs::create_dir(&kb).unwrap();
    for e in std::fs::read_dir(common::repo("knowledge-base")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, kb.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        kb.join("replies.toml"),
        "bank = \"示例银行\"\nwelcome = \"欢迎光临{bank}在线客服！\"\nfallback = \"{bank}暂时答不上来，回复“转人工”试试。\"\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let e = kefu::engine::Engine::open(
        &kb,
        &common::repo("intents"),
        Some(data.path()),
        kefu::config::EngineConfig::default(),
    )
    .unwrap();
    assert_eq!(
        say(&e, "w", "你好", MORNING).text,
        "欢迎光临示例银行在线客服！"
    );
    let r = say(&e, "w", "量子纠缠是什么原理", MORNING + 1);
    assert_eq!(r.text, "示例银行暂时答不上来，回复“转人工”试试。");

    std::fs::write(
        kb.join("replies.toml"),
        "bank = \"示例银行\"\nhandoff_place = \"第{pos}位\"\n",
    )
    .unwrap();
    let err = kefu::knowledge::KnowledgeBase::load_dir(&kb)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("replies.toml:2") && err.contains("{pos}"),
        "{err}"
    );
}
