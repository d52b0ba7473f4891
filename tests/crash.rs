//! The durability proof for the hand-off queue: a child process runs the engine with
//! several concurrent customers and agents and prints each acknowledged operation; the
//! test kills it with SIGKILL at an arbitrary moment, reopens the same store, and checks
//! that everything acknowledged is there, in order, and no chat has two agents.
//! Repeated many times on one store, bounded in time, so recovery is exercised too.
//!
//! After each kill the test also plays the channel: it re-sends, with the same message
//! ids, the last acknowledged message and the first unacknowledged one of every
//! customer, as WeChat or an app retries a request that got no answer. Each message
//! must then be in the transcript and in the agent's chat exactly once: a turn and its
//! hand-off queue change are one transaction, so a crash cannot leave one without the
//! other.
//!
//! The child is this test binary itself, re-run with `KEFU_TORTURE` set (the workload
//! is test-only code, not part of the `kefu` binary).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::repo;
use kefu::config::EngineConfig;
use kefu::engine::{Engine, InboundMessage};
use kefu::handoff::TicketState;
use kefu::store::{Speaker, UserKey};

#[derive(Default)]
struct Acks {
    enqueued: Vec<(String, u64)>,
    messages: HashMap<String, Vec<usize>>,
    claims: Vec<(u64, String)>,
    replies: Vec<(u64, String, u64)>,
    lines: usize,
}

fn parse(lines: &[String]) -> Acks {
    let mut a = Acks::default();
    for l in lines {
        // The test harness prints its own lines around the child's.
        let Some(l) = l.strip_prefix("ACK ") else {
            continue;
        };
        let f: Vec<&str> = l.split(' ').collect();
        match f.as_slice() {
            ["enqueue", user, ticket] => {
                a.enqueued.push((user.to_string(), ticket.parse().unwrap()))
            }
            ["message", user, k] => a
                .messages
                .entry(user.to_string())
                .or_default()
                .push(k.parse().unwrap()),
            ["claim", ticket, agent] => a.claims.push((ticket.parse().unwrap(), agent.to_string())),
            ["reply", ticket, agent, seq] => a.replies.push((
                ticket.parse().unwrap(),
                agent.to_string(),
                seq.parse().unwrap(),
            )),
            ["done"] => {}
            other => panic!("unexpected ack line {other:?}"),
        }
    }
    a.lines = lines.len();
    a
}

#[test]
fn sigkill_loses_no_acknowledged_queue_operation() {
    let store_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut rounds = 0;
    let mut killed_mid_work = 0;
    let mut total_acks = 0;
    // Bounded: at most 12 rounds or ~40 s, at least 4 rounds.
    while rounds < 12 && (rounds < 4 || started.elapsed() < Duration::from_secs(40)) {
        let run = format!("r{rounds}");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "torture_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("KEFU_TORTURE", format!("{run} 5 3 60"))
            .env("KEFU_TORTURE_DATA", store_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kefu torture");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill after a varying number of acknowledgements: early, mid-way, late.
        let kill_after = 20 + (rounds * 37) % 200;
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while lines.len() < kill_after && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => lines.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(_) => break,
            }
        }
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        reader.join().unwrap();
        // Lines the child flushed before dying were acknowledged too.
        lines.extend(rx.try_iter());
        if !status.success() {
            killed_mid_work += 1;
        }
        let mut stderr = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(
            !stderr.contains("operation failed"),
            "child reported failures: {stderr}"
        );

        let acks = parse(&lines);
        total_acks += acks.lines;
        verify(store_dir.path(), &acks, &run);
        rounds += 1;
    }
    assert!(
        killed_mid_work >= rounds / 2,
        "most rounds must be killed while working ({killed_mid_work}/{rounds})"
    );
    assert!(
        total_acks > 100,
        "the child did real work ({total_acks} acknowledgements)"
    );
}

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(
        &repo("knowledge-base"),
        &repo("intents"),
        Some(dir),
        EngineConfig::default(),
    )
    .expect("the store reopens after SIGKILL")
}

fn customer_message(user: &str, k: usize) -> InboundMessage {
    InboundMessage {
        tenant: "torture".into(),
        branch: None,
        user: user.into(),
        channel: "torture".into(),
        text: format!("第{k}条消息"),
        message_id: Some(format!("{user}-m{k}")),
        at: now(),
        event: None,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Numbers of "第k条消息" lines by the customer.
fn numbers<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<usize> {
    texts
        .filter_map(|t| t.strip_prefix('第')?.strip_suffix("条消息")?.parse().ok())
        .collect()
}

fn verify(dir: &std::path::Path, acks: &Acks, run: &str) {
    let engine = open(dir);
    let store = engine.store();
    let queue = engine.queue();

    // The channel retries: the last acknowledged message (a duplicate) and the first
    // unacknowledged one (done or not, nobody knows) of every customer.
    for (user, _) in &acks.enqueued {
        let ks = acks.messages.get(user).cloned().unwrap_or_default();
        let next = ks.last().map_or(0, |k| k + 1);
        for k in ks.last().copied().into_iter().chain([next]) {
            engine
                .handle(&customer_message(user, k))
                .expect("a retried message is handled");
        }
        // Each of those, and every earlier one, is in the chat exactly once.
        let t = queue
            .open_ticket_for(&UserKey::new("torture", user))
            .unwrap();
        if let Some(t) = t {
            let said = numbers(
                queue
                    .messages(t.id, 0)
                    .unwrap()
                    .iter()
                    .filter(|m| m.from == Speaker::Customer)
                    .map(|m| m.text.as_str()),
            );
            for k in 0..=next {
                assert_eq!(
                    said.iter().filter(|s| **s == k).count(),
                    1,
                    "{user}: message {k} missing or doubled in the agent's chat {said:?}"
                );
            }
        }
    }

    for (user, ticket) in &acks.enqueued {
        let t = queue
            .ticket(*ticket)
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged ticket {ticket} of {user} lost"));
        assert_eq!(&t.customer, &UserKey::new("torture", user));
    }
    for (user, ks) in &acks.messages {
        assert!(user.starts_with(run));
        // Every acknowledged message is in the transcript, once, in order.
        let transcript = store.transcript(&UserKey::new("torture", user)).unwrap();
        let said = numbers(
            transcript
                .iter()
                .filter(|t| t.from == Speaker::Customer)
                .map(|t| t.text.as_str()),
        );
        for k in ks {
            assert_eq!(
                said.iter().filter(|s| *s == k).count(),
                1,
                "{user}: message {k} missing or doubled in {said:?}"
            );
        }
        assert!(
            said.windows(2).all(|w| w[0] < w[1]),
            "{user}: out of order {said:?}"
        );
    }
    // No chat is claimed by two agents, and every acknowledged claim stands.
    let mut holder: HashMap<u64, &str> = HashMap::new();
    for (ticket, agent) in &acks.claims {
        if let Some(prev) = holder.insert(*ticket, agent) {
            panic!("ticket {ticket} acknowledged as claimed by {prev} and {agent}");
        }
        let t = queue.ticket(*ticket).unwrap().unwrap();
        match &t.state {
            TicketState::Claimed { agent: a, .. } => assert_eq!(a, agent, "ticket {ticket}"),
            other => panic!("ticket {ticket} acknowledged as claimed by {agent} is {other:?}"),
        }
    }
    for (ticket, agent, seq) in &acks.replies {
        let msgs = queue.messages(*ticket, 0).unwrap();
        assert!(
            msgs.iter()
                .any(|m| m.seq == *seq && m.agent.as_deref() == Some(agent)),
            "agent reply {seq} on ticket {ticket} lost"
        );
    }
    // Queue order is consistent: every queued ticket is listed once.
    let queued = queue.queued(usize::MAX).unwrap();
    let mut ids: Vec<u64> = queued.iter().map(|t| t.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), queued.len());
    assert!(queued.iter().all(|t| t.state == TicketState::Queued));
}

/// The child's workload: customers escalate and write, agents claim and reply, every
/// acknowledged operation printed (and flushed) as `ACK …` so that the parent knows what
/// was promised. Run by the parent with `KEFU_TORTURE="RUN CUSTOMERS AGENTS MESSAGES"`;
/// run directly by the test runner, it does a small round in a temp dir and checks it
/// like the parent would.
#[test]
fn torture_child() {
    let (spec, dir, temp) = match std::env::var("KEFU_TORTURE") {
        Ok(spec) => {
            let dir = std::path::PathBuf::from(std::env::var("KEFU_TORTURE_DATA").unwrap());
            (spec, dir, None)
        }
        Err(_) => {
            let temp = tempfile::tempdir().unwrap();
            ("small 2 1 5".to_owned(), temp.path().to_owned(), Some(temp))
        }
    };
    let f: Vec<&str> = spec.split(' ').collect();
    let (run, customers, agents, messages) = (
        f[0],
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
    );
    let lines = torture(&dir, run, customers, agents, messages);
    if temp.is_some() {
        let acks = parse(&lines);
        assert_eq!(acks.enqueued.len(), customers);
        assert_eq!(
            acks.messages.values().map(Vec::len).sum::<usize>(),
            customers * messages
        );
        verify(&dir, &acks, run);
    }
}

fn torture(
    dir: &std::path::Path,
    run: &str,
    customers: usize,
    agents: usize,
    messages: usize,
) -> Vec<String> {
    use std::io::Write;
    use std::sync::Mutex;
    let engine = open(dir);
    let out = Mutex::new((std::io::stdout(), Vec::new()));
    let ack = |line: String| {
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        // A closed pipe means the parent is gone: nothing left to promise to.
        let _ = writeln!(o.0, "ACK {line}").and_then(|_| o.0.flush());
        o.1.push(format!("ACK {line}"));
    };
    std::thread::scope(|s| {
        for c in 0..customers {
            let (engine, ack) = (&engine, &ack);
            s.spawn(move || {
                let user = format!("{run}-c{c}");
                let mut first = customer_message(&user, 0);
                first.text = "转人工".into();
                first.message_id = Some(format!("{user}-handoff"));
                match engine.handle(&first) {
                    Ok(r) => ack(format!(
                        "enqueue {user} {}",
                        r.handoff.map_or(0, |h| h.ticket)
                    )),
                    Err(e) => {
                        eprintln!("enqueue operation failed: {e}");
                        return;
                    }
                }
                for k in 0..messages {
                    match engine.handle(&customer_message(&user, k)) {
                        Ok(_) => ack(format!("message {user} {k}")),
                        Err(e) => {
                            eprintln!("message operation failed: {e}");
                            return;
                        }
                    }
                }
            });
        }
        for a in 0..agents {
            let (engine, ack) = (&engine, &ack);
            s.spawn(move || {
                let agent = common::agent(&format!("{run}-a{a}"), &[]);
                // Stop after a second without work: the customers are done.
                let mut idle = 0;
                while idle < 200 {
                    match engine.queue().claim_next(&agent, now()) {
                        Ok(Some(t)) => {
                            idle = 0;
                            ack(format!("claim {} {}", t.id, agent.id));
                            match engine.queue().post(
                                t.id,
                                Speaker::Agent,
                                Some(&agent.id),
                                "您好，我是人工客服",
                                now(),
                            ) {
                                Ok(m) => ack(format!("reply {} {} {}", t.id, agent.id, m.seq)),
                                Err(e) => eprintln!("reply operation failed: {e}"),
                            }
                        }
                        Ok(None) => {
                            idle += 1;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => {
                            eprintln!("claim operation failed: {e}");
                            return;
                        }
                    }
                }
            });
        }
    });
    ack("done".into());
    let lines = std::mem::take(&mut out.lock().unwrap_or_else(|p| p.into_inner()).1);
    lines
}
