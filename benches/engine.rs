//! One customer message through the whole engine (`Engine::handle`: normalization,
//! intents, retrieval, session, masked transcript and events committed and flushed to a
//! real sled store), against the retrieval step alone measured in the same run, so the
//! cost of durability shows as a ratio. Run: `cargo bench --bench engine`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kefu::config::EngineConfig;
use kefu::engine::{Engine, InboundMessage};
use kefu::knowledge::KnowledgeBase;
use kefu::retrieval::{Audience, RetrievalConfig, Retriever};

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(
        &root.join("knowledge-base"),
        &root.join("intents"),
        Some(dir.path()),
        EngineConfig::default(),
    )
    .expect("engine starts");
    let kb = KnowledgeBase::load_dir(&root.join("knowledge-base")).expect("knowledge base");
    let retriever = Retriever::new(Arc::new(kb), RetrievalConfig::default()).expect("index");
    let question = "我的信用卡丢了怎么办";

    let mut g = c.benchmark_group("engine");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    g.bench_function("rank only (baseline)", |b| {
        let audience = Audience {
            branch: None,
            today: time::macros::date!(2026 - 11 - 24),
        };
        b.iter(|| retriever.rank(question, audience).expect("rank"))
    });
    // Many customers, so sessions and transcripts grow as in service.
    let mut n = 0u64;
    g.bench_function("handle a FAQ question (flushed)", |b| {
        b.iter(|| {
            n += 1;
            engine
                .handle(&InboundMessage {
                    tenant: "bench".into(),
                    branch: None,
                    user: format!("u{}", n % 1000),
                    channel: "bench".into(),
                    text: question.into(),
                    message_id: Some(format!("m{n}")),
                    at: 1_795_485_600 + n as i64,
                    event: None,
                })
                .expect("handle")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
