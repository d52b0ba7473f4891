//! Shared set-up: an engine on the bundled knowledge base and intents, with a real sled
//! store in a temp dir.
#![allow(dead_code)]

pub mod browser;
pub mod postgres;
pub mod server;
pub mod xlsx;

use std::path::{Path, PathBuf};

use kefu::config::EngineConfig;
use kefu::engine::{Engine, InboundMessage, Reply};
use kefu::knowledge::KnowledgeBase;

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn engine(data: &Path) -> Engine {
    engine_with(data, EngineConfig::default())
}

pub fn engine_with(data: &Path, config: EngineConfig) -> Engine {
    Engine::open(
        &repo("knowledge-base"),
        &repo("intents"),
        Some(data),
        config,
    )
    .expect("engine starts on the bundled content")
}

pub fn bundled_kb() -> KnowledgeBase {
    KnowledgeBase::load_dir(&repo("knowledge-base")).expect("bundled knowledge base loads")
}

/// 2026-11-24 10:00 Beijing time.
pub const MORNING: i64 = 1_795_485_600;

pub fn msg(user: &str, text: &str, at: i64) -> InboundMessage {
    InboundMessage {
        tenant: "bank".into(),
        branch: None,
        user: user.into(),
        channel: "test".into(),
        text: text.into(),
        message_id: None,
        at,
        event: None,
    }
}

pub fn say(engine: &Engine, user: &str, text: &str, at: i64) -> Reply {
    engine
        .handle(&msg(user, text, at))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The question text of an entry id, to check which entry a number picked.
pub fn question_of(kb: &KnowledgeBase, id: &str) -> String {
    let i = kb.index_of(id).unwrap_or_else(|| panic!("no entry {id}"));
    kb.get(i).map(|e| e.question.clone()).unwrap_or_default()
}

/// An agent as configured: token given by its hash.
pub fn agent(id: &str, groups: &[&str]) -> kefu::handoff::Agent {
    kefu::handoff::Agent {
        id: id.into(),
        name: format!("客服{id}"),
        token_sha256: Some(kefu::handoff::hash_token(&format!("{id}-token-0123456789"))),
        token_env: None,
        token_file: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        tenant: None,
    }
}

/// Runs the `kefu` binary in `cwd` with `stdin` fed from a thread (so a large input
/// cannot deadlock against a full stdout pipe), and returns its output.
pub fn kefu(args: &[&str], stdin: &[u8], cwd: &Path) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kefu");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// [`kefu`] for a command that must succeed: its stdout, or a panic showing its stderr.
pub fn kefu_ok(args: &[&str], stdin: &[u8], cwd: &Path) -> String {
    let out = kefu(args, stdin, cwd);
    assert!(
        out.status.success(),
        "kefu {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
