//! The durability proof for the hand-off queue: a child process runs the engine with
//! several concurrent customers and agents and prints each acknowledged operation; the
//! test kills it with SIGKILL at an arbitrary moment, reopens the same store, and checks
//! that everything acknowledged is there, in order, and no chat has two agents.
//! Repeated many times on one store, bounded in time, so recovery is exercised too.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::repo;
use kefu::handoff::{HandoffQueue, SledQueue, TicketState};
use kefu::store::{SledStore, Speaker, Store, UserKey};

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
        let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
            .args([
                "torture",
                "--customers",
                "5",
                "--agents",
                "3",
                "--messages",
                "60",
                "--run",
                &run,
            ])
            .arg("--kb")
            .arg(repo("knowledge-base"))
            .arg("--intents")
            .arg(repo("intents"))
            .arg("--data")
            .arg(store_dir.path())
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
            !stderr.contains("failed"),
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

fn verify(dir: &std::path::Path, acks: &Acks, run: &str) {
    let store = SledStore::open(dir).expect("the store reopens after SIGKILL");
    let queue = SledQueue::new(store.db()).unwrap();

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
        let said: Vec<usize> = transcript
            .iter()
            .filter(|t| t.from == Speaker::Customer)
            .filter_map(|t| {
                t.text
                    .strip_prefix('第')?
                    .strip_suffix("条消息")?
                    .parse()
                    .ok()
            })
            .collect();
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
