//! Hand-off queue costs on a real sled store: enqueue, claim and relay (each includes
//! the flush that makes it durable), and the wait-position query with 10 000 chats
//! queued ahead. Run: `cargo bench --bench handoff`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kefu::handoff::{EnqueueRequest, HandoffQueue, SledQueue};
use kefu::store::{Speaker, UserKey};

fn request(user: u64) -> EnqueueRequest {
    EnqueueRequest {
        customer: UserKey::new("bench", format!("u{user}")),
        group: None,
        reason: "customer asked".into(),
        intent: Some("handoff".into()),
        candidates: vec![],
        transcript: vec![],
        left_message: false,
        now: 0,
    }
}

fn store() -> (tempfile::TempDir, SledQueue) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::open(dir.path()).expect("sled");
    let q = SledQueue::new(&db).expect("queue");
    (dir, q)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff");
    g.sample_size(20).measurement_time(Duration::from_secs(5));

    let (_d, q) = store();
    let mut n = 0u64;
    g.bench_function("enqueue (flushed)", |b| {
        b.iter(|| {
            n += 1;
            q.enqueue(request(n)).expect("enqueue")
        })
    });

    let (_d2, q2) = store();
    let mut m = 0u64;
    g.bench_function("claim (flushed)", |b| {
        b.iter_batched(
            || {
                m += 1;
                q2.enqueue(request(m)).expect("enqueue").id
            },
            |id| q2.claim(id, "agent", 1).expect("claim"),
            BatchSize::SmallInput,
        )
    });

    let (_d3, q3) = store();
    let t = q3.enqueue(request(0)).expect("enqueue");
    q3.claim(t.id, "agent", 1).expect("claim");
    g.bench_function("relay customer message (flushed)", |b| {
        b.iter(|| {
            q3.post(t.id, Speaker::Customer, None, "我的卡还是用不了", 2)
                .expect("post")
        })
    });

    // 10 000 queued chats; the last one asks for its place.
    let (_d4, q4) = store();
    let started = Instant::now();
    let mut last = 0;
    for i in 0..10_000 {
        last = q4.enqueue(request(i)).expect("enqueue").id;
    }
    eprintln!(
        "set-up: 10 000 flushed enqueues took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    g.bench_function("position of the 10 000th queued chat", |b| {
        b.iter(|| assert_eq!(q4.position(last).expect("position"), Some(10_000)))
    });
    let first = q4.queued(1).expect("queued")[0].id;
    g.bench_function("position of the 1st queued chat", |b| {
        b.iter(|| assert_eq!(q4.position(first).expect("position"), Some(1)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
