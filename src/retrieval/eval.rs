//! Recall and pair-similarity evaluation on labelled question sets (the format of
//! `shared/data/bq/README.md`).
//!
//! Every query goes through [`Retriever::rank`], the path chat uses, so a figure here is
//! the engine's figure, not a side model's. Folds split the data by *cluster*, never by
//! row, so a threshold or weight chosen on one fold can be measured honestly on another
//! (a paraphrase cluster split across folds would leak its answer).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{ContentErrors, ContentIssue, Error, Location, Result};
use crate::knowledge::content::read_text;
use crate::knowledge::{Entry, KnowledgeBase, Scope};
use crate::retrieval::dense::Embeddings;
use crate::retrieval::{text_features, Audience, Band, Idf, Prepared, RetrievalConfig, Retriever};
use crate::text::Analyzer;

/// Which part of the data to use: all of it, or fold `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fold {
    pub index: u64,
    pub count: u64,
}

impl Fold {
    /// Parses `1/2` (fold 1 of 2, zero-based index).
    pub fn parse(s: &str) -> Option<Fold> {
        let (i, n) = s.split_once('/')?;
        let (index, count) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
        (count > 0 && index < count).then_some(Fold { index, count })
    }

    /// Whether `key` (a gold id or a cluster name) falls in this fold: 64-bit FNV-1a
    /// of its UTF-8 bytes, modulo `count`. The function is written down here (offset
    /// basis 0xcbf29ce484222325, prime 0x100000001b3) so a fold holds the same
    /// clusters in every build and on every machine; std's `DefaultHasher` promises no
    /// such thing across Rust releases.
    pub fn contains(&self, key: &str) -> bool {
        fnv1a64(key.as_bytes()) % self.count == self.index
    }
}

/// 64-bit FNV-1a: fixed output forever, unlike `std::hash::DefaultHasher`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) fn tsv_rows(path: &Path, columns: &[&str]) -> Result<Vec<(usize, Vec<String>)>> {
    let text = read_text(path).map_err(|i| ContentErrors(vec![i]))?;
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .map(|(_, h)| h.split('\t').map(str::trim).collect())
        .unwrap_or_default();
    let mut positions = Vec::new();
    for c in columns {
        match header.iter().position(|h| h == c) {
            Some(p) => positions.push(p),
            None => {
                return Err(ContentErrors(vec![ContentIssue {
                    location: Location::new(path, 1, None),
                    message: format!("missing column \"{c}\" (header is: {})", header.join(", ")),
                }])
                .into())
            }
        }
    }
    let mut rows = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let row: Option<Vec<String>> = positions
            .iter()
            .map(|&p| fields.get(p).map(|f| f.trim().to_owned()))
            .collect();
        match row {
            Some(r) => rows.push((n + 1, r)),
            None => {
                return Err(ContentErrors(vec![ContentIssue {
                    location: Location::new(path, n + 1, None),
                    message: format!(
                        "row has {} fields, expected at least {}",
                        fields.len(),
                        header.len()
                    ),
                }])
                .into())
            }
        }
    }
    Ok(rows)
}

/// Loads a benchmark FAQ (`id`, `question`, `similar` joined by `|`). The answer of an
/// entry is its id: these sets have no answer texts.
pub fn load_faq(path: &Path) -> Result<KnowledgeBase> {
    let rows = tsv_rows(path, &["id", "question", "similar"])?;
    let entries = rows
        .into_iter()
        .map(|(line, r)| Entry {
            id: r[0].clone(),
            category: String::new(),
            question: r[1].clone(),
            similar: r[2]
                .split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            answer: r[0].clone(),
            related: Vec::new(),
            keywords: Vec::new(),
            negative: Vec::new(),
            scope: Scope::All,
            valid_from: None,
            valid_until: None,
            location: Location::new(path, line, None),
        })
        .collect();
    KnowledgeBase::from_entries_lenient(entries)
}

#[derive(Debug, Clone)]
pub struct LabelledQuery {
    pub query: String,
    pub gold: String,
}

pub fn load_queries(path: &Path) -> Result<Vec<LabelledQuery>> {
    Ok(tsv_rows(path, &["query", "gold_id"])?
        .into_iter()
        .map(|(_, r)| LabelledQuery {
            query: r[0].clone(),
            gold: r[1].clone(),
        })
        .collect())
}

/// Recall figures, named as the README and `--json` print them.
#[derive(Debug, Clone, Serialize)]
pub struct RecallReport {
    pub entries: usize,
    pub queries: usize,
    #[serde(rename = "recall@1")]
    pub recall_at_1: f64,
    #[serde(rename = "recall@3")]
    pub recall_at_3: f64,
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    pub queries_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Share of queries answered at once (confident band), and recall@1 among them:
    /// the figures for choosing the confidence threshold.
    pub confident_share: f64,
    pub confident_precision: f64,
    pub fold: Option<String>,
    /// Queries ranked with their embedding, and queries that fell back to lexical
    /// ranking because the service failed or was late (both 0 with embeddings off).
    pub embeddings_used: usize,
    pub embeddings_fallback: usize,
}

/// Runs every query (of the fold, by gold entry) through the chat's ranking path, as a
/// customer of no particular branch on `today`. The date is a parameter, not the clock:
/// campaign entries expire, and a test that read the clock would start failing on the
/// day one of its gold entries did.
pub fn recall(
    retriever: &Retriever,
    queries: &[LabelledQuery],
    fold: Option<Fold>,
    today: time::Date,
    mut progress: impl FnMut(usize),
) -> Result<RecallReport> {
    let audience = Audience {
        branch: None,
        today,
    };
    let kb = retriever.knowledge_base();
    let selected: Vec<&LabelledQuery> = queries
        .iter()
        .filter(|q| fold.is_none_or(|f| f.contains(&q.gold)))
        .collect();
    for q in &selected {
        if kb.index_of(&q.gold).is_none() {
            return Err(Error::InvalidInput(format!(
                "query \"{}\" names gold id \"{}\", which is not in the FAQ",
                q.query, q.gold
            )));
        }
    }
    let mut latencies = Vec::with_capacity(selected.len());
    let (mut r1, mut r3, mut r10, mut mrr) = (0usize, 0usize, 0usize, 0f64);
    let (mut confident, mut confident_hits) = (0usize, 0usize);
    let (mut used, mut fallback) = (0usize, 0usize);
    let started = Instant::now();
    for (n, q) in selected.iter().enumerate() {
        let t = Instant::now();
        let ranking = retriever.rank(&q.query, audience)?;
        latencies.push(t.elapsed());
        used += usize::from(ranking.embeddings == crate::retrieval::DenseUse::Used);
        fallback += usize::from(ranking.embeddings == crate::retrieval::DenseUse::Fallback);
        let rank = ranking
            .candidates
            .iter()
            .take(10)
            .position(|c| kb.get(c.entry).is_some_and(|e| e.id == q.gold));
        if let Some(r) = rank {
            r1 += usize::from(r < 1);
            r3 += usize::from(r < 3);
            r10 += 1;
            mrr += 1.0 / (r + 1) as f64;
        }
        if ranking.band == Band::Confident {
            confident += 1;
            confident_hits += usize::from(
                ranking
                    .top()
                    .and_then(|c| kb.get(c.entry))
                    .is_some_and(|e| e.id == q.gold),
            );
        }
        progress(n + 1);
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let n = selected.len().max(1) as f64;
    latencies.sort();
    Ok(RecallReport {
        entries: kb.len(),
        queries: selected.len(),
        recall_at_1: r1 as f64 / n,
        recall_at_3: r3 as f64 / n,
        recall_at_10: r10 as f64 / n,
        mrr_at_10: mrr / n,
        queries_per_second: selected.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        confident_share: confident as f64 / n,
        confident_precision: if confident == 0 {
            0.0
        } else {
            confident_hits as f64 / confident as f64
        },
        fold: fold.map(|f| format!("{}/{}", f.index, f.count)),
        embeddings_used: used,
        embeddings_fallback: fallback,
    })
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[derive(Debug, Clone)]
pub struct LabelledPair {
    pub a: String,
    pub b: String,
    pub same: bool,
}

pub fn load_pairs(path: &Path) -> Result<Vec<LabelledPair>> {
    tsv_rows(path, &["question1", "question2", "label"])?
        .into_iter()
        .map(|(line, r)| {
            let same = match r[2].as_str() {
                "1" => true,
                "0" => false,
                other => {
                    return Err(ContentErrors(vec![ContentIssue {
                        location: Location::new(path, line, None),
                        message: format!("label \"{other}\" is neither 0 nor 1"),
                    }])
                    .into())
                }
            };
            Ok(LabelledPair {
                a: r[0].clone(),
                b: r[1].clone(),
                same,
            })
        })
        .collect()
}

/// Restricts pairs to one fold of their paraphrase clusters: clusters are the connected
/// components of the positive pairs, and a pair is kept when both questions' clusters
/// fall in the fold (pairs across folds are dropped, so nothing links the two sides).
pub fn pairs_in_fold(pairs: &[LabelledPair], fold: Fold) -> Vec<LabelledPair> {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for p in pairs {
        for q in [&p.a, &p.b] {
            let n = ids.len();
            ids.entry(q.as_str()).or_insert(n);
        }
    }
    let mut parent: Vec<usize> = (0..ids.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for p in pairs.iter().filter(|p| p.same) {
        let (a, b) = (ids[p.a.as_str()], ids[p.b.as_str()]);
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        parent[ra.max(rb)] = ra.min(rb);
    }
    // A cluster is named by its smallest question text, stable across runs.
    let mut name: HashMap<usize, &str> = HashMap::new();
    for (&q, &i) in &ids {
        let root = find(&mut parent, i);
        let slot = name.entry(root).or_insert(q);
        if q < *slot {
            *slot = q;
        }
    }
    let mut in_fold = |q: &str| {
        let root = find(&mut parent, ids[q]);
        fold.contains(name[&root])
    };
    pairs
        .iter()
        .filter(|p| in_fold(&p.a) && in_fold(&p.b))
        .cloned()
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    pub pairs: usize,
    pub positives: usize,
    pub roc_auc: f64,
    /// The engine's configured "same meaning" threshold (`retrieval.confident`).
    pub threshold: f32,
    pub accuracy: f64,
    pub best_threshold: f32,
    pub best_accuracy: f64,
    /// At the configured threshold: share of same-meaning pairs accepted, and share of
    /// different-meaning pairs accepted. Unlike accuracy these do not depend on the
    /// share of positives, which differs between a fold (cross-fold negatives are
    /// dropped) and the full set.
    pub true_positive_rate: f64,
    pub false_positive_rate: f64,
    /// The threshold with the best balanced accuracy (mean of both rates' successes),
    /// i.e. the best accuracy at equal priors; the basis of `retrieval.uncertain`.
    pub balanced_threshold: f32,
    pub balanced_accuracy: f64,
    pub fold: Option<String>,
}

/// Scores question pairs with the engine's similarity function. IDF comes from the
/// pair file's own questions (no labels involved).
pub fn pairs(
    analyzer: &Analyzer,
    config: &RetrievalConfig,
    pairs: &[LabelledPair],
    fold: Option<Fold>,
    embeddings: Option<&Embeddings>,
) -> Result<PairReport> {
    let prepared: Vec<(Prepared, Prepared, bool)> = pairs
        .iter()
        .map(|p| {
            (
                Prepared::new(analyzer, &p.a),
                Prepared::new(analyzer, &p.b),
                p.same,
            )
        })
        .collect();
    let idf = Idf::from_prepared(prepared.iter().flat_map(|(a, b, _)| [a, b]));
    // With embeddings: every text's vector (through the cache), the cosine as a feature
    // and the similarity weights and threshold of `[embeddings]`.
    let (cosines, weights, threshold) = match embeddings {
        Some(service) => {
            let texts: Vec<String> = prepared
                .iter()
                .flat_map(|(a, b, _)| [a.normalized.clone(), b.normalized.clone()])
                .collect();
            let (vectors, _) = service.passages(&texts)?;
            let cosines: Vec<f32> = vectors
                .chunks_exact(2)
                .map(|ab| {
                    ab[0]
                        .iter()
                        .zip(ab[1].iter())
                        .map(|(x, y)| x * y)
                        .sum::<f32>()
                        .clamp(0.0, 1.0)
                })
                .collect();
            (
                Some(cosines),
                &service.config().similarity_weights,
                service.config().confident,
            )
        }
        None => (None, &config.similarity_weights, config.confident),
    };
    let mut scored: Vec<(f32, bool)> = prepared
        .iter()
        .enumerate()
        .map(|(i, (a, b, same))| {
            let cosine = cosines.as_ref().map_or(0.0, |c| c[i]);
            // Average both directions: the coverage features are asymmetric.
            let mut ab = text_features(a, b, &idf);
            let mut ba = text_features(b, a, &idf);
            ab.cosine = cosine;
            ba.cosine = cosine;
            (
                (ab.similarity(weights) + ba.similarity(weights)) / 2.0,
                *same,
            )
        })
        .collect();
    scored.sort_by(|x, y| x.0.total_cmp(&y.0));
    let positives = scored.iter().filter(|s| s.1).count();
    let negatives = scored.len() - positives;
    let accuracy_at = |t: f32| {
        scored.iter().filter(|(s, same)| (*s >= t) == *same).count() as f64
            / scored.len().max(1) as f64
    };
    // AUC by ranks (ties share their average rank).
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j < scored.len() && scored[j].0 == scored[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += avg_rank * scored[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    let roc_auc = if positives == 0 || negatives == 0 {
        0.0
    } else {
        (rank_sum - (positives * (positives + 1)) as f64 / 2.0) / (positives * negatives) as f64
    };
    let (mut best_threshold, mut best_accuracy) = (0.0, 0.0);
    for (s, _) in &scored {
        let a = accuracy_at(*s);
        if a > best_accuracy {
            (best_threshold, best_accuracy) = (*s, a);
        }
    }
    let rate = |n: usize, of: usize| n as f64 / of.max(1) as f64;
    let accepted = |t: f32, same: bool| {
        scored
            .iter()
            .filter(|(s, sm)| *s >= t && *sm == same)
            .count()
    };
    // `scored` is ascending: before index i everything is rejected at threshold scored[i].
    let (mut balanced_threshold, mut balanced_accuracy) = (0.0, 0.0);
    let (mut rejected_pos, mut rejected_neg) = (0usize, 0usize);
    for (i, (s, same)) in scored.iter().enumerate() {
        if i == 0 || scored[i - 1].0 < *s {
            let b =
                (rate(positives - rejected_pos, positives) + rate(rejected_neg, negatives)) / 2.0;
            if b > balanced_accuracy {
                (balanced_threshold, balanced_accuracy) = (*s, b);
            }
        }
        if *same {
            rejected_pos += 1;
        } else {
            rejected_neg += 1;
        }
    }
    Ok(PairReport {
        pairs: scored.len(),
        positives,
        roc_auc,
        threshold,
        accuracy: accuracy_at(threshold),
        best_threshold,
        best_accuracy,
        true_positive_rate: rate(accepted(threshold, true), positives),
        false_positive_rate: rate(accepted(threshold, false), negatives),
        balanced_threshold,
        balanced_accuracy,
        fold: fold.map(|f| format!("{}/{}", f.index, f.count)),
    })
}

/// Convenience for the CLI and benches: FAQ file → retriever with the given settings.
pub fn retriever_for_faq(
    path: &Path,
    config: RetrievalConfig,
    embeddings: Option<Arc<Embeddings>>,
) -> Result<Retriever> {
    Retriever::with_embeddings(Arc::new(load_faq(path)?), config, embeddings)
}

/// Learning from use, simulated on a benchmark FAQ: what adding customers' list picks
/// as similar questions does to the recall of later customers.
#[derive(Debug, Clone, Serialize)]
pub struct LearningReport {
    /// How each gold entry's queries were split: ordered by FNV-1a of their text, the
    /// first half (rounded down) is "history", the rest "later".
    pub split: String,
    pub history: usize,
    /// History queries asked back with the gold entry offered, or answered wrongly with
    /// the gold entry numbered under the answer as a close runner-up: a customer would
    /// pick it, and the wording becomes a similar question of that entry.
    pub learned: usize,
    /// Of `learned`, the picks from under a wrong answer.
    pub learned_under_answer: usize,
    /// Recall on the later queries before and after learning.
    pub before: RecallReport,
    pub after: RecallReport,
}

/// Runs the simulation (see [`LearningReport`]). Only the signal a customer gives is
/// used: a pick from the offered list, or of a close runner-up under a wrong answer
/// (what `kefu report suggestions` counts). Queries answered right, answered wrongly
/// with the gold entry not shown, or unanswered teach nothing.
pub fn learning_simulation(
    kb: &KnowledgeBase,
    config: &RetrievalConfig,
    queries: &[LabelledQuery],
    fold: Option<Fold>,
    today: time::Date,
) -> Result<LearningReport> {
    let mut by_gold: HashMap<&str, Vec<&LabelledQuery>> = HashMap::new();
    for q in queries
        .iter()
        .filter(|q| fold.is_none_or(|f| f.contains(&q.gold)))
    {
        by_gold.entry(q.gold.as_str()).or_default().push(q);
    }
    let mut golds: Vec<&str> = by_gold.keys().copied().collect();
    golds.sort_unstable();
    let (mut history, mut later) = (Vec::new(), Vec::new());
    for g in golds {
        let mut qs = by_gold[g].clone();
        qs.sort_by_key(|q| (fnv1a64(q.query.as_bytes()), q.query.clone()));
        let h = qs.len() / 2;
        history.extend(qs[..h].iter().map(|q| (*q).clone()));
        later.extend(qs[h..].iter().map(|q| (*q).clone()));
    }
    let base = Retriever::new(Arc::new(kb.clone()), config.clone())?;
    let audience = Audience {
        branch: None,
        today,
    };
    let mut entries: Vec<Entry> = kb.entries().to_vec();
    let (mut learned, mut learned_under_answer) = (0, 0);
    for q in &history {
        let ranking = base.rank(&q.query, audience)?;
        let shown = match ranking.band {
            Band::Uncertain => ranking.offered(),
            Band::Confident => ranking.near_alternatives(),
            Band::NoMatch => continue,
        };
        let picked = shown
            .into_iter()
            .find(|c| kb.get(c.entry).is_some_and(|e| e.id == q.gold));
        if let Some(c) = picked {
            entries[c.entry].similar.push(q.query.clone());
            learned += 1;
            learned_under_answer += usize::from(ranking.band == Band::Confident);
        }
    }
    let taught = Retriever::new(
        Arc::new(KnowledgeBase::from_entries_lenient(entries)?),
        config.clone(),
    )?;
    Ok(LearningReport {
        split: "per gold entry, by FNV-1a of the query: first half history, rest later".into(),
        history: history.len(),
        learned,
        learned_under_answer,
        before: recall(&base, &later, None, today, |_| {})?,
        after: recall(&taught, &later, None, today, |_| {})?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> time::Date {
        crate::knowledge::parse_date("2026-11-24").unwrap()
    }

    fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn recall_counts_ranks() {
        let dir = tempfile::tempdir().unwrap();
        let faq = write(
            dir.path(),
            "faq.tsv",
            "id\tquestion\tsimilar\nA\t银行卡丢了怎么办\t卡丢了|卡不见了\nB\t转账限额是多少\t\nC\t忘记密码怎么办\t\n",
        );
        let queries = write(
            dir.path(),
            "q.tsv",
            "query\tgold_id\n我的银行卡丢了\tA\n转账最多转多少\tB\n密码忘了\tC\n天气如何\tA\n",
        );
        let r = retriever_for_faq(&faq, RetrievalConfig::default(), None).unwrap();
        let report = recall(&r, &load_queries(&queries).unwrap(), None, day(), |_| {}).unwrap();
        assert_eq!(report.queries, 4);
        assert_eq!(report.recall_at_1, 0.75);
        assert!(report.mrr_at_10 >= 0.75 && report.mrr_at_10 < 1.0);
    }

    #[test]
    fn learning_takes_picks_from_lists_and_from_under_a_wrong_answer() {
        let dir = tempfile::tempdir().unwrap();
        let faq = write(
            dir.path(),
            "faq.tsv",
            "id\tquestion\tsimilar\nA\t银行卡丢了怎么办\t卡丢了\nB\t怎么补办银行卡\t补卡要带什么\nC\t忘记密码怎么办\t\n",
        );
        let kb = load_faq(&faq).unwrap();
        // The same wording asked twice: the first is history, the second later.
        let asked = "银行卡丢了要补办吗";
        let queries: Vec<LabelledQuery> = (0..2)
            .map(|_| LabelledQuery {
                query: asked.into(),
                gold: "B".into(),
            })
            .collect();
        let simulate = |confident: f32| {
            let config = RetrievalConfig {
                confident,
                margin: 0.0,
                uncertain: 0.0,
                list_gap: 10.0,
                ..RetrievalConfig::default()
            };
            let r = Retriever::new(Arc::new(kb.clone()), config.clone()).unwrap();
            let ranking = r
                .rank(
                    asked,
                    Audience {
                        branch: None,
                        today: day(),
                    },
                )
                .unwrap();
            // The premise: B is not the top, so an answer is the wrong one.
            assert_ne!(r.entry(ranking.candidates[0].entry).unwrap().id, "B");
            learning_simulation(&kb, &config, &queries, None, day()).unwrap()
        };
        // Answered (wrongly) with B numbered under the answer: a customer picks B.
        let under = simulate(0.0);
        assert_eq!(
            (under.history, under.learned, under.learned_under_answer),
            (1, 1, 1)
        );
        assert_eq!(under.before.recall_at_1, 0.0);
        assert_eq!(under.after.recall_at_1, 1.0);
        // Asked back with B in the list: learned from the list.
        let listed = simulate(2.0);
        assert_eq!((listed.learned, listed.learned_under_answer), (1, 0));
        assert_eq!(listed.after.recall_at_1, 1.0);
    }

    #[test]
    fn unknown_gold_id_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let faq = write(
            dir.path(),
            "faq.tsv",
            "id\tquestion\tsimilar\nA\t卡丢了\t\n",
        );
        let queries = write(dir.path(), "q.tsv", "query\tgold_id\n卡丢了\tZ\n");
        let r = retriever_for_faq(&faq, RetrievalConfig::default(), None).unwrap();
        let err = recall(&r, &load_queries(&queries).unwrap(), None, day(), |_| {}).unwrap_err();
        assert!(err.to_string().contains("\"Z\""));
    }

    #[test]
    fn missing_columns_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let faq = write(dir.path(), "faq.tsv", "id\tq\n");
        assert!(load_faq(&faq)
            .unwrap_err()
            .to_string()
            .contains("missing column \"question\""));
    }

    #[test]
    fn pair_metrics_separate_paraphrases() {
        let pairs = vec![
            LabelledPair {
                a: "银行卡丢了怎么办".into(),
                b: "银行卡丢了咋办".into(),
                same: true,
            },
            LabelledPair {
                a: "怎么还款".into(),
                b: "如何还款".into(),
                same: true,
            },
            LabelledPair {
                a: "怎么还款".into(),
                b: "网点几点开门".into(),
                same: false,
            },
            LabelledPair {
                a: "转账限额".into(),
                b: "忘记密码".into(),
                same: false,
            },
        ];
        let report = super::pairs(
            &Analyzer::default(),
            &RetrievalConfig::default(),
            &pairs,
            None,
            None,
        )
        .unwrap();
        assert_eq!(report.roc_auc, 1.0);
        assert_eq!(report.best_accuracy, 1.0);
    }

    #[test]
    fn folds_keep_clusters_whole() {
        let pairs = vec![
            LabelledPair {
                a: "a".into(),
                b: "b".into(),
                same: true,
            },
            LabelledPair {
                a: "b".into(),
                b: "c".into(),
                same: true,
            },
            LabelledPair {
                a: "x".into(),
                b: "y".into(),
                same: true,
            },
            LabelledPair {
                a: "a".into(),
                b: "x".into(),
                same: false,
            },
        ];
        let f0 = pairs_in_fold(&pairs, Fold { index: 0, count: 2 });
        let f1 = pairs_in_fold(&pairs, Fold { index: 1, count: 2 });
        // The a-b-c cluster is entirely on one side.
        let abc = |v: &[LabelledPair]| v.iter().filter(|p| p.same && p.a != "x").count();
        assert!(abc(&f0) == 2 || abc(&f1) == 2);
        // The negative a-x pair survives only if both clusters landed in the same fold.
        assert!(matches!(f0.len() + f1.len(), 3 | 4));
        assert_eq!(Fold::parse("1/2"), Some(Fold { index: 1, count: 2 }));
        assert_eq!(Fold::parse("2/2"), None);
    }

    #[test]
    fn fold_hash_is_the_published_fnv1a() {
        // Reference values of 64-bit FNV-1a (the empty string is the offset basis).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let f = Fold { index: 0, count: 2 };
        assert_eq!(f.contains("a"), 0xaf63_dc4c_8601_ec8c_u64 % 2 == 0);
    }
}
