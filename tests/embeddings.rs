//! Hybrid retrieval against a fake OpenAI-compatible embedding service on 127.0.0.1:
//! batching, the on-disk cache and its invalidation, a model upgrade, and a service
//! that is down, slow or answers the wrong dimension. The fake's vectors are
//! deterministic: a few "concept" dimensions (挂失/丢/偷 are one concept) plus hashed
//! characters, so a paraphrase in other words is close and nothing depends on a model.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use kefu::config::EngineConfig;
use kefu::engine::Engine;
use kefu::knowledge::KnowledgeBase;
use kefu::retrieval::dense::{Embeddings, EmbeddingsConfig, VectorCache};
use kefu::retrieval::{Audience, Band, DenseUse, RetrievalConfig, Retriever, Weights};
use serde_json::{json, Value};

const DIM: usize = 32;
const CONCEPTS: &[&[&str]] = &[
    &["挂失", "丢", "偷", "不见", "找不到"],
    &["利率", "利息", "收益"],
    &["转账", "汇款", "打钱"],
    &["额度", "提额"],
];

fn vector(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    for (i, words) in CONCEPTS.iter().enumerate() {
        if words.iter().any(|w| text.contains(w)) {
            v[i] += 3.0;
        }
    }
    let free = dim - CONCEPTS.len();
    for c in text.chars() {
        v[CONCEPTS.len() + (c as usize).wrapping_mul(2_654_435_761) % free] += 0.3;
    }
    v
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const SLOW: u8 = 2;
const WRONG_DIM: u8 = 3;

#[derive(Default)]
struct Fake {
    mode: AtomicU8,
    /// Per request: model, number of texts, Authorization header.
    requests: Mutex<Vec<(String, usize, Option<String>)>>,
    texts: AtomicU64,
}

impl Fake {
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
    fn texts(&self) -> u64 {
        self.texts.load(Ordering::SeqCst)
    }
    fn requests(&self) -> Vec<(String, usize, Option<String>)> {
        self.requests.lock().unwrap().clone()
    }
}

async fn embed(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let auth = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    fake.requests
        .lock()
        .unwrap()
        .push((model, inputs.len(), auth));
    let mode = fake.mode.load(Ordering::SeqCst);
    match mode {
        DOWN => return Err(StatusCode::SERVICE_UNAVAILABLE),
        SLOW => tokio::time::sleep(Duration::from_secs(3)).await,
        _ => {}
    }
    fake.texts.fetch_add(inputs.len() as u64, Ordering::SeqCst);
    let dim = if mode == WRONG_DIM { DIM / 2 } else { DIM };
    // Items in reverse order, numbered: a client must put them back by `index`.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector(t, dim)}))
        .collect();
    Ok(Json(
        json!({"object": "list", "data": data, "model": "fake"}),
    ))
}

/// Starts the fake on a free loopback port; it lives as long as the test process.
fn start_fake() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let state = fake.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new()
                .route("/v1/embeddings", post(embed))
                .with_state(state);
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/v1/embeddings"), fake)
}

const KB: &str = r#"
[[entry]]
id = "card-lost"
category = "银行卡"
question = "银行卡挂失怎么办理"
answer = "在手机银行挂失，再到网点补卡。"

[[entry]]
id = "deposit-rate"
category = "存款"
question = "定期存款利率是多少"
similar = ["存一年定期有多少利息"]
answer = "以网点公布的利率为准。"

[[entry]]
id = "transfer-limit"
category = "转账"
question = "手机银行转账限额是多少"
answer = "默认单笔五万元。"

[[entry]]
id = "credit-limit"
category = "信用卡"
question = "信用卡额度怎么提高"
answer = "用卡满半年可申请提额。"
"#;

fn write_kb(dir: &Path, body: &str) -> std::path::PathBuf {
    let kb = dir.join("knowledge-base");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(kb.join("entries.toml"), body).unwrap();
    kb
}

fn config(url: &str, model: &str) -> EmbeddingsConfig {
    EmbeddingsConfig {
        url: url.into(),
        model: model.into(),
        batch_size: 2,
        query_timeout_ms: 1_000,
        timeout_ms: 10_000,
        topic_cosine: 0.9,
        weights: Weights {
            cosine: 0.5,
            ..Weights::default()
        },
        similarity_weights: Weights {
            cosine: 1.0,
            ..Weights::similarity_default()
        },
        confident: 0.6,
        margin: 0.05,
        uncertain: 0.25,
        list_gap: 0.2,
        ..EmbeddingsConfig::default()
    }
}

fn service(c: EmbeddingsConfig, cache: &Path) -> Arc<Embeddings> {
    let key = std::env::var(&c.key_env).ok();
    let embedder = kefu::retrieval::dense::OpenAiEmbedder::new(&c.url, &c.model, key).unwrap();
    Arc::new(Embeddings::new(c, Arc::new(embedder), VectorCache::open(cache).unwrap()).unwrap())
}

fn retriever(kb_dir: &Path, service: Option<Arc<Embeddings>>) -> Retriever {
    let kb = KnowledgeBase::load_dir(kb_dir).unwrap();
    Retriever::with_embeddings(Arc::new(kb), RetrievalConfig::default(), service).unwrap()
}

fn audience() -> Audience<'static> {
    Audience {
        branch: None,
        today: time::macros::date!(2026 - 11 - 30),
    }
}

fn top_id(r: &Retriever, text: &str) -> (Option<String>, Band, DenseUse) {
    let ranking = r.rank(text, audience()).unwrap();
    let top = ranking
        .offered()
        .first()
        .and_then(|c| r.entry(c.entry))
        .map(|e| e.id.clone());
    (top, ranking.band, ranking.embeddings)
}

#[test]
fn a_paraphrase_in_other_words_is_found_only_with_embeddings() {
    let (url, _fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path(), KB);
    // 钱包被偷了 shares no character with 银行卡挂失怎么办理.
    let lexical = retriever(&kb, None);
    assert_eq!(
        top_id(&lexical, "钱包被偷了"),
        (None, Band::NoMatch, DenseUse::Off)
    );
    let hybrid = retriever(
        &kb,
        Some(service(config(&url, "m1"), &dir.path().join("c"))),
    );
    let (top, band, used) = top_id(&hybrid, "钱包被偷了");
    assert_eq!(top.as_deref(), Some("card-lost"));
    assert_ne!(band, Band::NoMatch);
    assert_eq!(used, DenseUse::Used);
    // The cosine is a feature of the winning candidate.
    let ranking = hybrid.rank("钱包被偷了", audience()).unwrap();
    assert!(ranking.candidates[0].features.cosine > 0.9);
    // Off-topic stays off-topic: a message near no question is not offered anything.
    assert_eq!(top_id(&hybrid, "周末去哪里吃火锅").0, None);
}

#[test]
fn questions_are_embedded_in_batches_and_cached_across_restarts() {
    let (url, fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let kb = write_kb(dir.path(), KB);
    // Five questions, batches of two: three requests.
    let r = retriever(&kb, Some(service(config(&url, "m1"), &cache)));
    assert!(!r.lacks_vectors());
    let batches: Vec<usize> = fake.requests().iter().map(|r| r.1).collect();
    assert_eq!(batches, vec![2, 2, 1]);
    assert_eq!(r.embed_stats().unwrap().embedded, 5);
    assert!(cache.join("vectors.bin").is_file());

    // A restart with the same model: every vector from the cache, nothing sent.
    let before = fake.texts();
    let r = retriever(&kb, Some(service(config(&url, "m1"), &cache)));
    assert_eq!(fake.texts(), before);
    assert_eq!(r.embed_stats().unwrap().cached, 5);

    // An edited question: only the new text is sent.
    let edited = KB.replace("信用卡额度怎么提高", "信用卡怎样申请提额");
    let kb = write_kb(dir.path(), &edited);
    let r = retriever(&kb, Some(service(config(&url, "m1"), &cache)));
    assert_eq!(fake.texts(), before + 1);
    assert_eq!(r.embed_stats().unwrap().embedded, 1);

    // A new model name re-embeds everything, under its own name.
    let before = fake.texts();
    retriever(&kb, Some(service(config(&url, "m2"), &cache)));
    assert_eq!(fake.texts(), before + 5);
    assert_eq!(fake.requests().last().unwrap().0, "m2");
}

#[test]
fn the_key_is_sent_from_the_environment_and_never_stored_in_the_config() {
    let (url, fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path(), KB);
    let var = "KEFU_TEST_EMBEDDINGS_KEY_7f3a";
    // A variable no other test reads.
    std::env::set_var(var, "s3cret-key");
    let c = EmbeddingsConfig {
        key_env: var.into(),
        ..config(&url, "m1")
    };
    retriever(&kb, Some(service(c, &dir.path().join("c"))));
    let auth = fake.requests()[0].2.clone();
    assert_eq!(auth.as_deref(), Some("Bearer s3cret-key"));
}

#[test]
fn a_service_that_is_down_slow_or_wrong_falls_back_to_lexical_ranking() {
    let (url, fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path(), KB);
    let lexical = retriever(&kb, None);
    let hybrid = retriever(
        &kb,
        Some(service(config(&url, "m1"), &dir.path().join("c"))),
    );
    let question = "定期存款利率是多少";
    let (want, want_band, _) = top_id(&lexical, question);
    assert_eq!(want.as_deref(), Some("deposit-rate"));

    for mode in [DOWN, SLOW, WRONG_DIM] {
        fake.set(mode);
        let (top, band, used) = top_id(&hybrid, question);
        assert_eq!(used, DenseUse::Fallback, "mode {mode}");
        // Exactly the lexical answer, with the lexical bands.
        assert_eq!(
            (top.as_deref(), band),
            (want.as_deref(), want_band),
            "mode {mode}"
        );
    }
    fake.set(UP);
    assert_eq!(top_id(&hybrid, question).2, DenseUse::Used);
}

#[test]
fn a_knowledge_base_loaded_while_the_service_is_down_gets_vectors_when_it_returns() {
    let (url, fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path(), KB);
    fake.set(DOWN);
    let engine_config = EngineConfig {
        embeddings: config(&url, "m1"),
        ..EngineConfig::default()
    };
    let engine = Engine::open(
        &kb,
        &dir.path().join("no-intents"),
        Some(&dir.path().join("data")),
        engine_config,
    )
    .expect("the engine starts although the embedding service is down");
    // Lexical meanwhile: the paraphrase is not understood, but the customer is answered.
    let reply = common::say(&engine, "u1", "钱包被偷了", common::MORNING);
    assert_eq!(reply.entry, None);
    assert!(reply.options.iter().all(|o| o.entry.is_none()));
    let reply = common::say(
        &engine,
        "u1",
        "手机银行转账限额是多少",
        common::MORNING + 10,
    );
    assert_eq!(reply.entry.as_deref(), Some("transfer-limit"));
    assert_eq!(engine.embeddings_state(), "lexical");
    // Still down: nothing changes.
    assert!(!engine.retry_embeddings().unwrap());

    fake.set(UP);
    // The engine waits between attempts: a fresh engine on the same data shows the
    // retry path without a sleep; the cache there starts empty.
    let engine_config = EngineConfig {
        embeddings: config(&url, "m1"),
        ..EngineConfig::default()
    };
    fake.set(DOWN);
    let engine = Engine::open(
        &kb,
        &dir.path().join("no-intents"),
        Some(&dir.path().join("data2")),
        engine_config,
    )
    .unwrap();
    fake.set(UP);
    assert!(
        engine.retry_embeddings().unwrap(),
        "first retry runs at once"
    );
    assert!(dir.path().join("data2/embeddings/vectors.bin").is_file());
    assert_eq!(engine.embeddings_state(), "ready");
    let reply = common::say(&engine, "u2", "钱包被偷了", common::MORNING + 20);
    let offered: Vec<Option<&str>> = std::iter::once(reply.entry.as_deref())
        .chain(reply.options.iter().map(|o| o.entry.as_deref()))
        .collect();
    assert!(
        offered.contains(&Some("card-lost")),
        "with vectors the paraphrase finds its entry: {reply:?}"
    );
    // One message, one call: the related questions after an answer use the stored
    // vectors, not the service.
    let before = fake.texts();
    let reply = common::say(
        &engine,
        "u3",
        "手机银行转账限额是多少",
        common::MORNING + 30,
    );
    assert_eq!(reply.entry.as_deref(), Some("transfer-limit"), "{reply:?}");
    assert_eq!(fake.texts(), before + 1);
}

#[test]
fn a_misconfigured_service_is_refused_at_start_with_a_clear_error() {
    let mut c = EmbeddingsConfig {
        url: "not a url".into(),
        model: "m".into(),
        ..EmbeddingsConfig::default()
    };
    let e = Embeddings::from_config(&c, None).unwrap_err().to_string();
    assert!(e.contains("embeddings.url"), "{e}");
    c.url = "http://127.0.0.1:9/v1/embeddings".into();
    c.model = " ".into();
    let e = Embeddings::from_config(&c, None).unwrap_err().to_string();
    assert!(e.contains("embeddings.model"), "{e}");
    // Unknown keys in the table are refused with their line, like the rest.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kefu.toml");
    std::fs::write(
        &p,
        "[embeddings]\nurl = \"http://x/v1/embeddings\"\nmodle = \"e5\"\n",
    )
    .unwrap();
    let e = EngineConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("modle") && e.contains(":3"), "{e}");
}

#[test]
fn the_served_engine_uses_the_service_and_counts_its_failures() {
    use common::server::{client, config as server_config, get, say, Server};
    let (url, fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let extra =
        format!("[embeddings]\nurl = \"{url}\"\nmodel = \"e5-query\"\nquery_timeout_ms = 2000\n");
    let server = Server::start(dir.path(), &server_config(&extra));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = client();
        // The bundled knowledge base was embedded at start and cached in the store.
        assert!(fake.texts() > 1000, "{} texts embedded", fake.texts());
        assert!(dir.path().join("store/embeddings/vectors.bin").is_file());
        let (_, health) = get(&c, &server, "/healthz", "").await;
        assert_eq!(health["embeddings"], "ready", "{health}");
        let reply = say(
            &c,
            &server,
            json!({"user": "e1", "text": "信用卡年费怎么收"}),
        )
        .await;
        assert_eq!(reply["kind"], "answer", "{reply}");
        let sent = fake.texts();
        fake.set(DOWN);
        // Down: the customer is still answered, lexically.
        let reply = say(
            &c,
            &server,
            json!({"user": "e2", "text": "信用卡年费怎么收"}),
        )
        .await;
        assert_eq!(reply["kind"], "answer", "{reply}");
        assert_eq!(fake.texts(), sent);
        let metrics = common::server::metrics_text(&c, &server).await;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("kefu_embeddings_fallback_total"))
            .unwrap_or_else(|| panic!("no fallback metric in\n{metrics}"));
        assert!(line.contains("reason=\"unavailable\""), "{line}");
    });
}

#[test]
fn ask_explain_shows_the_cosine_and_eval_runs_with_embeddings_on_or_off() {
    let (url, fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    write_kb(dir.path(), KB);
    let bands = "confident = 0.6\nmargin = 0.05\nuncertain = 0.25\ntopic_cosine = 0.9\n";
    std::fs::write(
        dir.path().join("kefu.toml"),
        format!("[embeddings]\nurl = \"{url}\"\nmodel = \"m1\"\n{bands}"),
    )
    .unwrap();
    let out = common::kefu(
        &[
            "ask",
            "--kb",
            "knowledge-base",
            "--explain",
            "--config",
            "kefu.toml",
            "钱包被偷了",
        ],
        b"",
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[card-lost]"), "{stdout}");
    assert!(stdout.contains("cosine 0.9"), "{stdout}");
    assert!(stdout.contains("embeddings: used"), "{stdout}");

    std::fs::write(
        dir.path().join("queries.tsv"),
        "query\tgold_id\n钱包被偷了\tcard-lost\n存款利息多少\tdeposit-rate\n",
    )
    .unwrap();
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--kb",
            "knowledge-base",
            "--queries",
            "queries.tsv",
            "--config",
            "kefu.toml",
        ];
        args.extend_from_slice(extra);
        let out = common::kefu(&args, b"", dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (on, log) = eval(&[]);
    assert!(on.contains("2 queries ranked with their vector"), "{on}");
    assert!(on.contains("recall@1       1.000"), "{on}");
    assert!(log.contains("5 questions"), "{log}");
    let (off, _) = eval(&["--no-embeddings"]);
    assert!(!off.contains("ranked with their vector"), "{off}");
    assert!(off.contains("recall@1       0.500"), "{off}");

    // A service that cannot embed the knowledge base measures nothing, and says so.
    fake.set(DOWN);
    let out = common::kefu(
        &[
            "eval",
            "--kb",
            "knowledge-base",
            "--queries",
            "queries.tsv",
            "--config",
            "kefu.toml",
        ],
        b"",
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing was measured"), "{err}");
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn the_cosine_feature_is_the_entrys_nearest_question_not_only_the_matched_one() {
    let (url, _fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(
        dir.path(),
        r#"
[[entry]]
id = "card-lost"
category = "银行卡"
question = "银行卡挂失怎么办理"
similar = ["钱包丢了"]
answer = "在手机银行挂失，再到网点补卡。"

[[entry]]
id = "deposit-rate"
category = "存款"
question = "定期存款利率是多少"
answer = "以网点公布的利率为准。"
"#,
    );
    let r = retriever(
        &kb,
        Some(service(config(&url, "m1"), &dir.path().join("c"))),
    );
    let message = "钱包被偷了怎么办理";
    let ranking = r.rank(message, audience()).unwrap();
    let top = &ranking.candidates[0];
    assert_eq!(r.entry(top.entry).unwrap().id, "card-lost");
    let m = vector(message, DIM);
    let cosines = [
        cosine(&m, &vector("银行卡挂失怎么办理", DIM)),
        cosine(&m, &vector("钱包丢了", DIM)),
    ];
    let best = cosines[0].max(cosines[1]);
    // The case is only a test if the matched wording is not the nearest in meaning.
    assert!(
        cosines[top.matched_question] < best,
        "matched {} with cosines {cosines:?}",
        top.matched_question
    );
    assert!(
        (top.features.cosine - best).abs() < 1e-4,
        "feature {} against the nearest question's {best}",
        top.features.cosine
    );
}

/// `product_bonus` is for lexical rankings: with embeddings the cosine already weighs the
/// product word, and the bonus cost the tuning sets right answers (`RetrievalConfig`).
/// A message that falls back to lexical ranking because the service is down gets it.
#[test]
fn the_product_bonus_lifts_lexical_rankings_only() {
    let (url, _fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let kb_dir = write_kb(dir.path(), KB);
    std::fs::write(kb_dir.join("products.txt"), "信用卡 贷记卡\n").unwrap();
    let kb = Arc::new(KnowledgeBase::load_dir(&kb_dir).unwrap());
    let score = |bonus: f32, service: Option<Arc<Embeddings>>| {
        let config = RetrievalConfig {
            product_bonus: bonus,
            ..RetrievalConfig::default()
        };
        let r = Retriever::with_embeddings(kb.clone(), config, service).unwrap();
        let ranking = r.rank("信用卡额度能提高吗", audience()).unwrap();
        let c = ranking
            .candidates
            .iter()
            .find(|c| r.entry(c.entry).is_some_and(|e| e.id == "credit-limit"))
            .expect("the credit-card entry is ranked");
        (c.score, ranking.embeddings)
    };
    let (off, used) = score(0.0, None);
    let (on, _) = score(0.25, None);
    assert_eq!(used, DenseUse::Off);
    assert!((on - off - 0.25).abs() < 1e-5, "lexical: {off} → {on}");
    let hybrid = || Some(service(config(&url, "m1"), &dir.path().join("c")));
    let (off, used) = score(0.0, hybrid());
    let (on, _) = score(0.25, hybrid());
    assert_eq!(used, DenseUse::Used);
    assert!((on - off).abs() < 1e-6, "with embeddings: {off} → {on}");
    // The service down (here from the start, so the knowledge base has no vectors): the
    // ranking is lexical again, and so is the bonus.
    let down = Some(service(
        config("http://127.0.0.1:9/v1/embeddings", "m1"),
        &dir.path().join("d"),
    ));
    let (off, used) = score(0.0, down.clone());
    let (on, _) = score(0.25, down);
    assert_ne!(used, DenseUse::Used);
    assert!((on - off - 0.25).abs() < 1e-5, "fallback: {off} → {on}");
}
