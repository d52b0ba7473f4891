//! Exact cosine search over a knowledge base's question vectors
//! ([`kefu::retrieval::dense::DenseIndex::nearest`]), the dense half of hybrid retrieval,
//! at 20 000, 60 000 and 120 000 questions of 384 dimensions (multilingual-e5-small's
//! size). The vectors are pseudo-random unit vectors: the cost of an exact search does
//! not depend on what they mean. Run with `cargo bench --bench dense -- --quick`.
//!
//! Besides criterion's figures it prints p50 and p99 of 200 calls per size, the numbers
//! the README quotes.
//!
//! A second group times `Retriever::rank` on the bundled knowledge base with embeddings
//! off and on, the "service" being an in-process function (hashed character vectors,
//! 384 dimensions) that answers at once: kefu's own cost of hybrid ranking (more
//! candidates, the cosine feature, the search), without the service's time, which
//! `benches/embeddings/run.sh` measures with a real model.

use std::sync::Arc;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kefu::knowledge::KnowledgeBase;
use kefu::retrieval::dense::{
    DenseIndex, EmbedError, Embedder, Embeddings, EmbeddingsConfig, VectorCache,
};
use kefu::retrieval::{Audience, DenseUse, RetrievalConfig, Retriever};

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

/// Character unigrams and bigrams hashed into 384 dimensions: a deterministic stand-in
/// for a model, answering at once.
struct HashedGrams;

impl Embedder for HashedGrams {
    fn embed(&self, texts: &[String], _: Duration) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; DIM];
                let chars: Vec<char> = t.chars().collect();
                for (i, c) in chars.iter().enumerate() {
                    v[(*c as usize).wrapping_mul(2_654_435_761) % DIM] += 1.0;
                    if let Some(n) = chars.get(i + 1) {
                        v[((*c as usize) * 31 + *n as usize).wrapping_mul(40_503) % DIM] += 0.5;
                    }
                }
                v[0] += 0.01;
                v
            })
            .collect())
    }
}

const QUERIES: [&str; 4] = [
    "信用卡丢了怎么办",
    "手机银行登录不上去提示设备异常",
    "我上个月在国外刷了一笔钱现在想分期还能不能办啊",
    "钱包被偷了",
];

fn hybrid_rank(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("knowledge-base");
    let Ok(kb) = KnowledgeBase::load_dir(&dir) else {
        eprintln!("no bundled knowledge base: skipping hybrid_rank");
        return;
    };
    let kb = Arc::new(kb);
    let config = EmbeddingsConfig {
        url: "http://127.0.0.1:9/unused".into(),
        model: "hashed-grams".into(),
        ..EmbeddingsConfig::default()
    };
    let service = Arc::new(
        Embeddings::new(config, Arc::new(HashedGrams), VectorCache::memory())
            .expect("valid settings"),
    );
    let lexical = Retriever::new(kb.clone(), RetrievalConfig::default()).expect("index");
    let hybrid =
        Retriever::with_embeddings(kb, RetrievalConfig::default(), Some(service)).expect("index");
    let audience = Audience {
        branch: None,
        today: time::macros::date!(2026 - 11 - 30),
    };
    let mut group = c.benchmark_group("hybrid_rank_bundled");
    for (name, r) in [("lexical", &lexical), ("hybrid", &hybrid)] {
        let mut times = Vec::new();
        for q in QUERIES {
            let used = r.rank(q, audience).expect("ranks").embeddings;
            assert_eq!(used == DenseUse::Used, name == "hybrid");
            for _ in 0..200 {
                let t = std::time::Instant::now();
                std::hint::black_box(r.rank(std::hint::black_box(q), audience).expect("ranks"));
                times.push(t.elapsed());
            }
        }
        times.sort();
        let ms = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
        println!(
            "hybrid_rank_bundled/{name}: p50 {:.3} ms  p99 {:.3} ms  ({} calls over {} queries)",
            ms(0.5),
            ms(0.99),
            times.len(),
            QUERIES.len()
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                for q in QUERIES {
                    std::hint::black_box(r.rank(q, audience).expect("ranks"));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, nearest, hybrid_rank);
criterion_main!(benches);
