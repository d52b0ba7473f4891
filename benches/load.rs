//! In-process load: `Engine::handle` from many threads at once, each thread a stream of
//! distinct customers, every turn committed durably (group commit) to a real sled store.
//! This is the baseline that `benches/load/run.sh` reports next to the same load sent
//! over HTTP to `kefu serve`, measured in the same run.
//!
//! `cargo bench --bench load` (env: KEFU_LOAD_SECS, default 10; KEFU_LOAD_CONCURRENCY,
//! default 64). Prints one JSON line: messages/s, p50 and p99 in milliseconds.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kefu::config::EngineConfig;
use kefu::engine::{Engine, InboundMessage};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = if quick { 1 } else { env("KEFU_LOAD_SECS", 10) };
    let threads = env("KEFU_LOAD_CONCURRENCY", 64) as usize;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let questions: Vec<String> = std::fs::read_to_string(root.join("eval/bundled-queries.tsv"))
        .expect("eval/bundled-queries.tsv")
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next().map(str::to_owned))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(
        Engine::open(
            &root.join("knowledge-base"),
            &root.join("intents"),
            Some(dir.path()),
            EngineConfig::default(),
        )
        .expect("engine starts"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let base = 1_795_485_600i64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (engine, stop, questions) = (engine.clone(), stop.clone(), questions.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let msg = InboundMessage {
                        tenant: "bank".into(),
                        branch: None,
                        user: format!("load-{t}-{}", n / 4),
                        channel: "bench".into(),
                        text: questions[(t * 31 + n) % questions.len()].clone(),
                        message_id: Some(format!("{t}-{n}")),
                        at: base + n as i64,
                        event: None,
                    };
                    let start = Instant::now();
                    engine.handle(&msg).expect("handled");
                    lat.push(start.elapsed());
                    n += 1;
                }
                lat
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "{{\"what\":\"in-process Engine::handle\",\"concurrency\":{threads},\"seconds\":{elapsed:.1},\"messages\":{},\"messages_per_sec\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}
