//! One conformance suite, both stores: every case is written once against the `Store`
//! and `HandoffQueue` traits and runs on sled and on a real PostgreSQL started by the
//! test (see `common::postgres`).

mod common;

use std::any::Any;
use std::sync::Arc;

use kefu::error::Error;
use kefu::handoff::{
    Agent, EnqueueRequest, HandoffQueue, QueueOp, Ticket, TicketMessage, TicketState,
};
use kefu::store::{
    Event, EventKind, PgStore, Session, SledStore, Speaker, Store, Turn, TurnCommit, UserKey,
};

/// A store under test; `_guard` keeps its server (if any) alive.
pub struct Fixture {
    store: Arc<dyn Store>,
    queue: Arc<dyn HandoffQueue>,
    _guard: Box<dyn Any>,
}

fn sled() -> Option<Fixture> {
    let store = SledStore::temporary().unwrap();
    let queue = store.queue().unwrap();
    Some(Fixture {
        store: Arc::new(store),
        queue: Arc::new(queue),
        _guard: Box::new(()),
    })
}

fn postgres() -> Option<Fixture> {
    let server = common::postgres::TempPostgres::start()?;
    let store = Arc::new(PgStore::connect(&server.database()).unwrap());
    Some(Fixture {
        store: store.clone(),
        queue: store,
        _guard: Box::new(server),
    })
}

fn req(user: &str, now: i64) -> EnqueueRequest {
    EnqueueRequest {
        customer: UserKey::new("bank", user),
        group: None,
        reason: "customer asked".into(),
        intent: Some("handoff".into()),
        candidates: vec![],
        transcript: vec![],
        left_message: false,
        now,
    }
}

fn agent(id: &str, groups: &[&str]) -> Agent {
    Agent {
        id: id.into(),
        name: "小王".into(),
        token_sha256: None,
        token_env: None,
        token_file: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        tenant: None,
    }
}

fn turn(text: &str) -> Turn {
    Turn {
        at: 1,
        from: Speaker::Customer,
        text: text.into(),
        message_id: None,
    }
}

fn commit<'a>(
    key: &'a UserKey,
    session: &'a Session,
    turns: &'a [Turn],
    processed: Option<(&'a str, &'a [u8])>,
    queue: Option<&'a QueueOp>,
    at: i64,
) -> TurnCommit<'a> {
    TurnCommit {
        key,
        session,
        turns,
        events: &[],
        processed,
        queue,
        at,
    }
}

fn fresh_ticket(store: &dyn Store, user: &str, now: i64) -> Ticket {
    Ticket {
        id: store.next_id().unwrap(),
        customer: UserKey::new("bank", user),
        state: TicketState::Queued,
        enqueued_at: now,
        queue_key: store.next_id().unwrap(),
        group: None,
        reason: "asked".into(),
        intent: None,
        candidates: vec![],
        transcript: vec![],
        left_message: false,
        timeout_notified: false,
        auth: kefu::intents::AuthLevel::default(),
    }
}

fn turns_and_sessions_round_trip(f: Fixture) {
    let key = UserKey::new("bank", "u1");
    let session = Session {
        misses: 2,
        last_ticket: Some(7),
        ..Session::default()
    };
    let event = Event {
        at: 5,
        tenant: "bank".into(),
        user: "u1".into(),
        kind: EventKind::Intent {
            name: "greeting".into(),
        },
    };
    f.store
        .commit(TurnCommit {
            key: &key,
            session: &session,
            turns: &[turn("a"), turn("b")],
            events: std::slice::from_ref(&event),
            processed: Some(("m1", b"reply")),
            queue: None,
            at: 100,
        })
        .unwrap();
    f.store
        .commit(commit(&key, &session, &[turn("c")], None, None, 101))
        .unwrap();
    assert_eq!(f.store.session(&key).unwrap(), Some(session));
    let texts: Vec<String> = f
        .store
        .transcript(&key)
        .unwrap()
        .into_iter()
        .map(|t| t.text)
        .collect();
    assert_eq!(texts, vec!["a", "b", "c"]);
    assert_eq!(f.store.events().unwrap(), vec![event]);
    assert_eq!(
        f.store.processed(&key, "m1").unwrap().as_deref(),
        Some(&b"reply"[..])
    );
    let other = UserKey::new("bank", "u");
    assert!(f.store.transcript(&other).unwrap().is_empty());
    assert!(f.store.session(&other).unwrap().is_none());
    let (a, b) = (f.store.next_id().unwrap(), f.store.next_id().unwrap());
    assert!(b > a, "ids grow: {a} then {b}");
    f.store.flush().unwrap();
}

fn queue_lifecycle(f: Fixture) {
    let q = &f.queue;
    let a = q.enqueue(req("a", 10)).unwrap();
    let b = q.enqueue(req("b", 11)).unwrap();
    assert_eq!(q.enqueue(req("a", 12)).unwrap().id, a.id, "one open ticket");
    assert_eq!(q.open_ticket_for(&a.customer).unwrap().unwrap().id, a.id);
    assert_eq!(q.position(a.id).unwrap(), Some(1));
    assert_eq!(q.position(b.id).unwrap(), Some(2));
    assert_eq!(q.queued_len().unwrap(), 2);
    q.post(a.id, Speaker::Customer, None, "还在吗", 13).unwrap();
    let claimed = q.claim(a.id, "agent1", 20).unwrap();
    assert!(matches!(claimed.state, TicketState::Claimed { .. }));
    assert_eq!(q.ticket(a.id).unwrap().unwrap(), claimed);
    assert_eq!(q.claimed_by("agent1").unwrap(), vec![claimed]);
    assert_eq!(q.position(a.id).unwrap(), None);
    assert_eq!(q.position(b.id).unwrap(), Some(1));
    assert!(matches!(
        q.post(a.id, Speaker::Agent, Some("agent2"), "hi", 21),
        Err(Error::Conflict(_))
    ));
    q.post(
        a.id,
        Speaker::Agent,
        Some("agent1"),
        "您好，我是客服小王",
        21,
    )
    .unwrap();
    assert_eq!(
        q.release(a.id, "agent1", 22).unwrap().state,
        TicketState::Queued
    );
    assert_eq!(
        q.position(a.id).unwrap(),
        Some(1),
        "a released chat keeps its place"
    );
    assert!(matches!(
        q.release(a.id, "agent1", 22),
        Err(Error::Conflict(_))
    ));
    q.claim(a.id, "agent2", 23).unwrap();
    assert!(matches!(
        q.close(a.id, "agent1", None, 24),
        Err(Error::Conflict(_))
    ));
    let closed = q.close(a.id, "agent2", Some("已解答"), 83).unwrap();
    assert!(matches!(closed.state, TicketState::Closed { .. }));
    assert!(q.open_ticket_for(&a.customer).unwrap().is_none());
    assert_eq!(q.recent_handle_secs().unwrap(), Some(60.0));
    let messages = q.messages(a.id, 0).unwrap();
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["还在吗", "您好，我是客服小王"]);
    assert_eq!(q.messages(a.id, messages[0].seq).unwrap().len(), 1);
    assert!(q.post(a.id, Speaker::Customer, None, "late", 90).is_err());
    assert_ne!(q.enqueue(req("a", 100)).unwrap().id, a.id, "a new chat");

    q.cancel(b.id, 101).unwrap();
    assert!(matches!(q.cancel(b.id, 102), Err(Error::Conflict(_))));
    assert!(matches!(q.claim(b.id, "x", 102), Err(Error::Conflict(_))));
    assert!(matches!(
        q.claim(999_999, "x", 102),
        Err(Error::NotFound(_))
    ));
    assert_eq!(q.queued(10).unwrap().len(), 1);
}

fn claim_next_respects_groups(f: Fixture) {
    let q = &f.queue;
    let mut other = req("hz", 1);
    other.group = Some("0571".into());
    let hz = q.enqueue(other).unwrap();
    let mut mine = req("sz", 2);
    mine.group = Some("0755".into());
    let sz = q.enqueue(mine).unwrap();
    let general = q.enqueue(req("any", 3)).unwrap();
    let shenzhen = agent("sz-agent", &["0755"]);
    assert_eq!(q.claim_next(&shenzhen, 4).unwrap().unwrap().id, sz.id);
    assert_eq!(q.claim_next(&shenzhen, 4).unwrap().unwrap().id, general.id);
    assert!(q.claim_next(&shenzhen, 4).unwrap().is_none());
    let mut other_bank = agent("other", &[]);
    other_bank.tenant = Some("other-bank".into());
    assert!(q.claim_next(&other_bank, 5).unwrap().is_none());
    assert_eq!(
        q.claim_next(&agent("head", &[]), 5).unwrap().unwrap().id,
        hz.id
    );
}

fn timeouts_notify_once_or_return_to_bot(f: Fixture) {
    let q = &f.queue;
    let a = q.enqueue(req("a", 0)).unwrap();
    let b = q.enqueue(req("b", 500)).unwrap();
    let expired = q.expire(700, 600, false).unwrap();
    assert_eq!(expired.iter().map(|t| t.id).collect::<Vec<_>>(), vec![a.id]);
    assert!(q.expire(800, 600, false).unwrap().is_empty(), "told once");
    assert_eq!(q.position(a.id).unwrap(), Some(1), "still queued");
    let returned = q.expire(1200, 600, true).unwrap();
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].id, b.id);
    assert!(matches!(returned[0].state, TicketState::Returned { .. }));
    assert!(q.open_ticket_for(&b.customer).unwrap().is_none());
}

/// Racing agents: of several claims on one chat exactly one wins; agents taking "the
/// next chat" at once never get the same chat.
fn racing_claims_have_exactly_one_winner(f: Fixture) {
    let q = &f.queue;
    for round in 0..10 {
        let t = q.enqueue(req(&format!("u{round}"), round)).unwrap();
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|n| s.spawn(move || q.claim(t.id, &format!("agent{n}"), round)))
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join().unwrap() {
                    Ok(_) => 1,
                    Err(Error::Conflict(_)) => 0,
                    Err(e) => panic!("a losing claim must be a conflict: {e}"),
                })
                .sum()
        });
        assert_eq!(winners, 1, "round {round}");
    }
    let chats: Vec<u64> = (0..12)
        .map(|n| q.enqueue(req(&format!("next{n}"), 100)).unwrap().id)
        .collect();
    let mut taken: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|n| {
                s.spawn(move || {
                    let a = agent(&format!("next-agent{n}"), &[]);
                    let mut mine = Vec::new();
                    while let Some(t) = q.claim_next(&a, 101).unwrap() {
                        mine.push(t.id);
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    taken.sort_unstable();
    assert_eq!(taken, chats, "every chat taken exactly once");
}

/// The atomic turn: a queue change that no longer applies fails the whole turn; the
/// same turn on an open chat writes both together.
fn atomic_turn_conflict_writes_nothing(f: Fixture) {
    let (store, queue) = (&f.store, &f.queue);
    let key = UserKey::new("bank", "u1");
    let t = queue.enqueue(req("u1", 10)).unwrap();
    queue.cancel(t.id, 11).unwrap();
    let op = QueueOp::Post {
        ticket: t.id,
        message: TicketMessage::new(
            store.next_id().unwrap(),
            12,
            Speaker::Customer,
            None,
            "在吗",
        ),
    };
    let session = Session {
        misses: 9,
        ..Session::default()
    };
    let turns = [turn("在吗")];
    let err = store
        .commit(commit(
            &key,
            &session,
            &turns,
            Some(("m1", b"r")),
            Some(&op),
            12,
        ))
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(store.processed(&key, "m1").unwrap().is_none());
    assert!(store.transcript(&key).unwrap().is_empty());
    assert!(store.session(&key).unwrap().is_none());
    assert!(queue.messages(t.id, 0).unwrap().is_empty());

    // Enqueue while the customer already has an open chat: a conflict, nothing written.
    let open = queue.enqueue(req("u1", 13)).unwrap();
    let dup = QueueOp::Enqueue(fresh_ticket(store.as_ref(), "u1", 13));
    let err = store
        .commit(commit(
            &key,
            &session,
            &turns,
            Some(("m2", b"r")),
            Some(&dup),
            13,
        ))
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(store.processed(&key, "m2").unwrap().is_none());
    assert_eq!(queue.open_ticket_for(&key).unwrap().unwrap().id, open.id);

    let op = QueueOp::Post {
        ticket: open.id,
        message: TicketMessage::new(
            store.next_id().unwrap(),
            14,
            Speaker::Customer,
            None,
            "在吗",
        ),
    };
    store
        .commit(commit(
            &key,
            &session,
            &turns,
            Some(("m1", b"r")),
            Some(&op),
            14,
        ))
        .unwrap();
    assert!(store.processed(&key, "m1").unwrap().is_some());
    assert_eq!(store.transcript(&key).unwrap().len(), 1);
    assert_eq!(queue.messages(open.id, 0).unwrap().len(), 1);

    let cancel = QueueOp::Cancel {
        ticket: open.id,
        at: 15,
    };
    store
        .commit(commit(&key, &session, &turns, None, Some(&cancel), 15))
        .unwrap();
    assert!(queue.open_ticket_for(&key).unwrap().is_none());
}

/// One customer's escalations racing (two replicas, two messages): exactly one queues a
/// chat, the others conflict and write nothing.
fn racing_turns_of_one_customer_queue_one_chat(f: Fixture) {
    let store = &f.store;
    let key = UserKey::new("bank", "racer");
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|n| {
                let key = &key;
                s.spawn(move || {
                    let op = QueueOp::Enqueue(fresh_ticket(store.as_ref(), "racer", 10));
                    let id = format!("m{n}");
                    let session = Session::default();
                    let turns = [turn("转人工")];
                    match store.commit(commit(
                        key,
                        &session,
                        &turns,
                        Some((&id, b"r")),
                        Some(&op),
                        10,
                    )) {
                        Ok(()) => true,
                        Err(Error::Conflict(_)) => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    assert_eq!(store.transcript(&key).unwrap().len(), 1);
    assert_eq!(f.queue.queued_len().unwrap(), 1);
}

fn dedup_records_expire_by_turn_time(f: Fixture) {
    let key = UserKey::new("bank", "u1");
    let session = Session::default();
    for (id, at) in [("old", 100), ("new", 200)] {
        f.store
            .commit(commit(&key, &session, &[], Some((id, b"r")), None, at))
            .unwrap();
    }
    assert_eq!(f.store.expire_processed(150).unwrap(), 1);
    assert!(f.store.processed(&key, "old").unwrap().is_none());
    assert!(f.store.processed(&key, "new").unwrap().is_some());
    assert_eq!(f.store.expire_processed(150).unwrap(), 0);
}

fn publish_round_trip(f: Fixture) {
    assert!(f.store.published().unwrap().is_none());
    f.store.set_published(b"{\"v\":1}").unwrap();
    assert_eq!(
        f.store.published().unwrap().as_deref(),
        Some(&b"{\"v\":1}"[..])
    );
    f.store.set_published(b"{\"v\":2}").unwrap();
    assert_eq!(
        f.store.published().unwrap().as_deref(),
        Some(&b"{\"v\":2}"[..])
    );
}

macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {
            macro_rules! case {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        if let Some(f) = super::$backend() {
                            super::$name(f);
                        }
                    }
                };
            }
            case!(turns_and_sessions_round_trip);
            case!(queue_lifecycle);
            case!(claim_next_respects_groups);
            case!(timeouts_notify_once_or_return_to_bot);
            case!(racing_claims_have_exactly_one_winner);
            case!(atomic_turn_conflict_writes_nothing);
            case!(racing_turns_of_one_customer_queue_one_chat);
            case!(dedup_records_expire_by_turn_time);
            case!(publish_round_trip);
        }
    };
}

conformance!(sled);
conformance!(postgres);

/// PostgreSQL specifics: migrations run once however many replicas start, and the
/// published version counts publications (what replicas poll).
#[test]
fn postgres_migrations_are_idempotent_and_publish_bumps_the_version() {
    let Some(server) = common::postgres::TempPostgres::start() else {
        return;
    };
    let url = server.database();
    let stores: Vec<PgStore> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| PgStore::connect(&url).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(stores[0].published_version().unwrap(), Some(0));
    stores[1].set_published(b"x").unwrap();
    stores[2].set_published(b"y").unwrap();
    assert_eq!(stores[0].published_version().unwrap(), Some(2));
    assert_eq!(stores[0].published().unwrap().as_deref(), Some(&b"y"[..]));
    let bad = PgStore::connect(&server.url("no_such_database")).unwrap_err();
    assert!(bad.to_string().contains("postgres"), "{bad}");
}

/// Two replicas, one customer: the second replica's turn lock is granted only after
/// the first lets go; another customer is not held up.
#[test]
fn postgres_turn_locks_hold_one_customer_across_replicas() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(server) = common::postgres::TempPostgres::start() else {
        return;
    };
    let url = server.database();
    let a = PgStore::connect(&url).unwrap();
    let b = PgStore::connect(&url).unwrap();
    let key = UserKey::new("bank", "wang");
    let held = a.lock_customer(&key).unwrap();
    assert!(held.is_some());
    let other = b.lock_customer(&UserKey::new("bank", "li")).unwrap();
    drop(other);
    let released = AtomicBool::new(false);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let got = b.lock_customer(&key).unwrap();
            assert!(
                released.load(Ordering::SeqCst),
                "replica B got the customer while replica A held it"
            );
            drop(got);
        });
        // Give B the chance to (wrongly) get the lock before A lets go.
        std::thread::sleep(std::time::Duration::from_millis(500));
        released.store(true, Ordering::SeqCst);
        drop(held);
        waiter.join().unwrap();
    });
}

/// What one replica commits on a chat is signalled to the others (LISTEN/NOTIFY), and
/// a publication too.
#[test]
fn postgres_replicas_hear_each_others_changes() {
    use kefu::store::StoreSignal;
    let Some(server) = common::postgres::TempPostgres::start() else {
        return;
    };
    let url = server.database();
    let a = PgStore::connect(&url).unwrap();
    let b = PgStore::connect(&url).unwrap();
    let mut heard = b.signals().unwrap();
    let mut own = a.signals().unwrap();
    let next = |rx: &mut tokio::sync::broadcast::Receiver<StoreSignal>| {
        for _ in 0..200 {
            match rx.try_recv() {
                Ok(s) => return s,
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no signal within 10 s");
    };
    // B's listener may still be connecting: repeat a harmless change until it hears.
    let t = a.enqueue(req("wang", 1)).unwrap();
    let mut first = None;
    for n in 0..20 {
        a.post(t.id, Speaker::Customer, None, &format!("在吗{n}"), 2)
            .unwrap();
        if let Ok(s) = heard.try_recv() {
            first = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(first, Some(StoreSignal::Customer(t.customer.clone())));
    // Everything else A does reaches B in commit order, ending with the publication.
    a.claim(t.id, "agent1", 3).unwrap();
    a.set_published(b"x").unwrap();
    loop {
        match next(&mut heard) {
            StoreSignal::Published => break,
            other => assert_eq!(other, StoreSignal::Customer(t.customer.clone())),
        }
    }
    // A desk event announced outside any transaction travels the same way.
    let desk = StoreSignal::Agent {
        kind: "chat_claimed".into(),
        ticket: t.id,
        tenant: "bank".into(),
        group: None,
    };
    a.announce(desk.clone());
    assert_eq!(next(&mut heard), desk);
    // A replica does not hear itself (it signals its own streams directly).
    assert!(matches!(
        own.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
}
