//! Exact cosine search over a knowledge base's question vectors
//! ([`kefu::retrieval::dense::DenseIndex::nearest`]), the dense half of hybrid retrieval,
//! at 20 000, 60 000 and 120 000 questions of 384 dimensions (multilingual-e5-small's
//! size). The vectors are pseudo-random unit vectors: the cost of an exact search does
//! not depend on what they mean. Run with `cargo bench --bench dense -- --quick`.
//!
//! Besides criterion's figures it prints p50 and p99 of 200 calls per size, the numbers
//! the README quotes. The embedding service's own time is not here: `kefu eval` with
//! embeddings reports the latency of whole rankings (see `benches/embeddings/run.sh`).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kefu::retrieval::dense::DenseIndex;

const DIM: usize = 384;
/// Questions per entry, about the bundled knowledge base's mean.
const PER_ENTRY: usize = 6;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    fn unit(&mut self) -> Arc<[f32]> {
        let v: Vec<f32> = (0..DIM).map(|_| self.next()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<_>>().into()
    }
}

fn index(questions: usize, rng: &mut Rng) -> DenseIndex {
    let entries = questions / PER_ENTRY;
    DenseIndex::new(
        (0..entries)
            .map(|_| (0..PER_ENTRY).map(|_| rng.unit()).collect())
            .collect(),
    )
    .expect("one dimension throughout")
}

fn nearest(c: &mut Criterion) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut group = c.benchmark_group("dense_nearest");
    for questions in [20_000, 60_000, 120_000] {
        let idx = index(questions, &mut rng);
        let query = rng.unit();
        let mut times: Vec<std::time::Duration> = (0..200)
            .map(|_| {
                let t = std::time::Instant::now();
                std::hint::black_box(idx.nearest(std::hint::black_box(&query), 50, |_| true));
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "dense_nearest/{questions}: p50 {:.3} ms  p99 {:.3} ms  (200 calls, top 50 entries)",
            times[100].as_secs_f64() * 1000.0,
            times[198].as_secs_f64() * 1000.0
        );
        group.bench_with_input(BenchmarkId::from_parameter(questions), &query, |b, q| {
            b.iter(|| idx.nearest(q, 50, |_| true))
        });
    }
    group.finish();
}

criterion_group!(benches, nearest);
criterion_main!(benches);
