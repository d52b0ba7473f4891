//! Hand-off as customers and agents live it, through the engine and the queue API.

mod common;

use common::*;
use kefu::config::EngineConfig;
use kefu::engine::ReplyKind;
use kefu::handoff::TicketState;
use kefu::store::{Speaker, UserKey};

fn key(user: &str) -> UserKey {
    UserKey::new("bank", user)
}

#[test]
fn queued_claimed_relayed_closed_and_back_to_the_bot() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    say(&e, "u", "信用卡年费怎么收", MORNING);
    let r = say(&e, "u", "转人工", MORNING + 10);
    assert_eq!(r.kind, ReplyKind::Handoff, "{r:?}");
    assert!(
        r.text.contains("排在第1位") && r.text.contains("取消"),
        "{}",
        r.text
    );
    let ticket = r.handoff.unwrap().ticket;

    // While queued, messages are kept, never dropped, and the place is repeated.
    let r = say(&e, "u", "我等着呢", MORNING + 20);
    assert!(r.text.contains("排在第1位"), "{}", r.text);

    // The agent sees the queue, the masked transcript and the intent.
    let queued = e.queue().queued(10).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].intent.as_deref(), Some("handoff"));
    assert!(queued[0]
        .transcript
        .iter()
        .any(|t| t.text.contains("信用卡年费")));
    let claimed = e.queue().claim(ticket, "agent-wang", MORNING + 30).unwrap();
    assert!(matches!(claimed.state, TicketState::Claimed { .. }));

    // The bot is silent while a person holds the chat; messages go to the agent.
    let r = say(&e, "u", "银行卡丢了怎么办", MORNING + 40);
    assert_eq!(r.kind, ReplyKind::Relayed);
    let to_agent: Vec<String> = e
        .queue()
        .messages(ticket, 0)
        .unwrap()
        .into_iter()
        .filter(|m| m.from == Speaker::Customer)
        .map(|m| m.text)
        .collect();
    assert_eq!(to_agent, vec!["我等着呢", "银行卡丢了怎么办"]);
    e.queue()
        .post(
            ticket,
            Speaker::Agent,
            Some("agent-wang"),
            "您好，请先通过手机银行临时挂失。",
            MORNING + 50,
        )
        .unwrap();
    let delivered = e.outbox(&key("u")).unwrap();
    assert_eq!(delivered.len(), 1);
    assert!(e.outbox(&key("u")).unwrap().is_empty(), "delivered once");
    assert!(
        e.outbox(&key("someone-else")).unwrap().is_empty(),
        "customers see only their own chat"
    );

    e.close_chat(ticket, "agent-wang", Some("已指导挂失"), MORNING + 60)
        .unwrap();
    // The bot serves again, and the agent's closing line still reaches the customer.
    let r = say(&e, "u", "银行卡丢了怎么办", MORNING + 70);
    assert_eq!(r.kind, ReplyKind::Answer);
    let closing = e.outbox(&key("u")).unwrap();
    assert!(closing[0].text.contains("人工服务已结束"), "{closing:?}");
    let transcript = e.transcript(&key("u")).unwrap();
    assert!(transcript
        .iter()
        .any(|t| t.from == Speaker::Agent && t.text.contains("临时挂失")));
}

#[test]
fn the_customer_can_cancel_while_queued() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let ticket = say(&e, "u", "人工客服", MORNING).handoff.unwrap().ticket;
    let r = say(&e, "u", "取消", MORNING + 5);
    assert!(r.text.contains("已为您取消"), "{}", r.text);
    assert!(matches!(
        e.queue().ticket(ticket).unwrap().unwrap().state,
        TicketState::Cancelled { .. }
    ));
    assert!(e.queue().queued(10).unwrap().is_empty());
    assert_eq!(
        say(&e, "u", "银行卡丢了怎么办", MORNING + 6).kind,
        ReplyKind::Answer
    );
}

#[test]
fn places_and_waits_follow_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    for (i, u) in ["a", "b", "c"].iter().enumerate() {
        let r = say(&e, u, "转人工", MORNING + i as i64);
        assert_eq!(r.handoff.as_ref().unwrap().position, Some(i + 1), "{u}");
    }
    let first = e
        .queue()
        .claim_next(&common::agent("agent", &[]), MORNING + 100)
        .unwrap()
        .unwrap();
    assert_eq!(first.customer, key("a"), "oldest first");
    let r = say(&e, "c", "还要多久", MORNING + 101);
    assert_eq!(r.handoff.unwrap().position, Some(2));
    // Handling time feeds the estimate: a 10-minute chat makes waits ~10 minutes each.
    e.close_chat(first.id, "agent", None, MORNING + 700)
        .unwrap();
    let r = say(&e, "c", "还要多久", MORNING + 701);
    assert_eq!(r.handoff.unwrap().wait_minutes, Some(20));
}

#[test]
fn outside_service_hours_a_message_is_left_in_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    config.handoff.open = "08:00".into();
    config.handoff.close = "22:00".into();
    let e = engine_with(dir.path(), config);
    let night = MORNING + 13 * 3600; // 23:00 Beijing time
    let r = say(&e, "u", "转人工", night);
    assert!(
        r.text.contains("不在人工服务时间") && r.text.contains("08:00-22:00"),
        "{}",
        r.text
    );
    assert!(r.text.contains("留言"), "{}", r.text);
    let ticket = r.handoff.unwrap().ticket;
    say(&e, "u", "我的信用卡被盗刷了，请尽快联系我", night + 60);
    let t = e.queue().ticket(ticket).unwrap().unwrap();
    assert!(t.left_message);
    assert_eq!(t.state, TicketState::Queued);
    assert_eq!(e.queue().messages(ticket, 0).unwrap().len(), 1);
}

#[test]
fn a_long_wait_is_told_once_and_optionally_returns_to_the_bot() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    say(&e, "u", "转人工", MORNING);
    let timeout = EngineConfig::default().handoff.queue_timeout_secs;
    assert!(e.sweep_timeouts(MORNING + timeout - 1).unwrap().is_empty());
    let notices = e.sweep_timeouts(MORNING + timeout).unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].0, key("u"));
    assert!(notices[0].1.text.contains("仍在排队"));
    assert!(e.sweep_timeouts(MORNING + 2 * timeout).unwrap().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    config.handoff.timeout_returns_to_bot = true;
    let e = engine_with(dir.path(), config);
    say(&e, "u", "转人工", MORNING);
    let notices = e.sweep_timeouts(MORNING + timeout).unwrap();
    assert!(notices[0].1.text.contains("排队已结束"));
    assert_eq!(
        say(&e, "u", "银行卡丢了怎么办", MORNING + timeout + 1).kind,
        ReplyKind::Answer
    );
}

#[test]
fn the_queue_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ticket = {
        let e = engine(dir.path());
        let t = say(&e, "u", "转人工", MORNING).handoff.unwrap().ticket;
        say(&e, "u", "补充一下：卡是昨天丢的", MORNING + 5);
        t
    };
    let e = engine(dir.path());
    assert_eq!(e.queue().position(ticket).unwrap(), Some(1));
    assert_eq!(
        e.queue().messages(ticket, 0).unwrap()[0].text,
        "补充一下：卡是昨天丢的"
    );
    let r = say(&e, "u", "还在吗", MORNING + 10);
    assert_eq!(r.kind, ReplyKind::Handoff);
}
