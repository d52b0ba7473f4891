//! The `kefu` command: a thin shell over the library (anyhow lives only here).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use kefu::eval::{self, Fold};
use kefu::knowledge::KnowledgeBase;
use kefu::retrieval::{Audience, Band, RetrievalConfig, Retriever};

#[derive(Parser)]
#[command(
    name = "kefu",
    version,
    about = "Customer-service engine for Chinese retail banks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Knowledge-base tools.
    Kb {
        #[command(subcommand)]
        command: KbCommand,
    },
    /// Ranks the knowledge base for one question.
    Ask {
        question: String,
        #[arg(long, default_value = "knowledge-base")]
        kb: PathBuf,
        /// Show every candidate with its feature scores.
        #[arg(long)]
        explain: bool,
        /// Answer as a customer of this branch.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Measures recall (--faq/--queries) or pair similarity (--pairs) on a question set.
    Eval {
        #[arg(long, requires = "queries")]
        faq: Option<PathBuf>,
        #[arg(long, requires = "faq")]
        queries: Option<PathBuf>,
        #[arg(long, conflicts_with_all = ["faq", "queries"])]
        pairs: Option<PathBuf>,
        /// Use one fold of the data, split by cluster: `0/2` or `1/2`.
        #[arg(long, value_parser = parse_fold)]
        fold: Option<Fold>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KbCommand {
    /// Validates a knowledge-base directory without starting anything.
    Check {
        #[arg(default_value = "knowledge-base")]
        dir: PathBuf,
    },
}

fn parse_fold(s: &str) -> Result<Fold, String> {
    Fold::parse(s).ok_or_else(|| format!("expected INDEX/COUNT like 0/2, got \"{s}\""))
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kefu: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Kb {
            command: KbCommand::Check { dir },
        } => kb_check(&dir),
        Command::Ask {
            question,
            kb,
            explain,
            branch,
        } => ask(&kb, &question, explain, branch.as_deref()),
        Command::Eval {
            faq,
            queries,
            pairs,
            fold,
            json,
        } => match (faq, queries, pairs) {
            (Some(faq), Some(queries), None) => eval_recall(&faq, &queries, fold, json),
            (None, None, Some(pairs)) => eval_pairs(&pairs, fold, json),
            _ => anyhow::bail!("give --faq and --queries, or --pairs"),
        },
    }
}

fn kb_check(dir: &Path) -> Result<std::process::ExitCode> {
    match KnowledgeBase::load_dir(dir) {
        Ok(kb) => {
            let s = kb.summary();
            println!(
                "ok: {} entries, {} similar questions, {} categories in {} files; {} user-dictionary words, {} synonyms",
                s.entries, s.similar_questions, s.categories, s.files, s.user_words, s.synonyms
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(kefu::Error::Content(errors)) => {
            eprint!("{errors}");
            Ok(std::process::ExitCode::FAILURE)
        }
        Err(e) => Err(e).with_context(|| format!("cannot check {}", dir.display())),
    }
}

fn load_retriever(dir: &Path) -> Result<Retriever> {
    let kb = KnowledgeBase::load_dir(dir)
        .with_context(|| format!("knowledge base {} did not load", dir.display()))?;
    Ok(Retriever::new(Arc::new(kb), RetrievalConfig::default())?)
}

fn ask(
    dir: &Path,
    question: &str,
    explain: bool,
    branch: Option<&str>,
) -> Result<std::process::ExitCode> {
    let r = load_retriever(dir)?;
    let audience = Audience {
        branch,
        today: time::OffsetDateTime::now_utc().date(),
    };
    let ranking = r.rank(question, audience)?;
    let band = match ranking.band {
        Band::Confident => "confident",
        Band::Uncertain => "uncertain",
        Band::NoMatch => "no match",
    };
    println!("band: {band}");
    let shown = if explain {
        ranking.candidates.len().min(10)
    } else {
        3
    };
    for (i, c) in ranking.candidates.iter().take(shown).enumerate() {
        let e = r
            .entry(c.entry)
            .context("candidate outside the knowledge base")?;
        println!(
            "{:>2}. [{}] {}  score {:.3}  similarity {:.3}",
            i + 1,
            e.id,
            e.questions().nth(c.matched_question).unwrap_or(&e.question),
            c.score,
            c.similarity
        );
        if explain {
            let f = &c.features;
            println!(
                "    bm25 {:.2} (raw {:.2})  grams {:.2}  words {:.2}  edit {:.2}  query_cover {:.2}  candidate_cover {:.2}  keyword {:.0}",
                f.bm25, c.bm25, f.grams, f.words, f.edit, f.query_cover, f.candidate_cover, f.keyword
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn progress_bar(len: usize) -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(len as u64)
    } else {
        indicatif::ProgressBar::hidden()
    }
}

fn eval_recall(
    faq: &Path,
    queries: &Path,
    fold: Option<Fold>,
    json: bool,
) -> Result<std::process::ExitCode> {
    let r = eval::retriever_for_faq(faq, RetrievalConfig::default())
        .with_context(|| format!("cannot load {}", faq.display()))?;
    let qs = eval::load_queries(queries)
        .with_context(|| format!("cannot load {}", queries.display()))?;
    let bar = progress_bar(qs.len());
    let report = eval::recall(&r, &qs, fold, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("entries        {}", report.entries);
        println!(
            "queries        {}{}",
            report.queries,
            report
                .fold
                .as_deref()
                .map(|f| format!(" (fold {f})"))
                .unwrap_or_default()
        );
        println!("recall@1       {:.3}", report.recall_at_1);
        println!("recall@3       {:.3}", report.recall_at_3);
        println!("recall@10      {:.3}", report.recall_at_10);
        println!("MRR@10         {:.3}", report.mrr_at_10);
        println!("queries/s      {:.0}", report.queries_per_second);
        println!("latency p50    {:.2} ms", report.p50_ms);
        println!("latency p99    {:.2} ms", report.p99_ms);
        println!(
            "confident      {:.1}% of queries, recall@1 {:.3} among them",
            report.confident_share * 100.0,
            report.confident_precision
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn eval_pairs(path: &Path, fold: Option<Fold>, json: bool) -> Result<std::process::ExitCode> {
    let mut pairs =
        eval::load_pairs(path).with_context(|| format!("cannot load {}", path.display()))?;
    if let Some(f) = fold {
        pairs = eval::pairs_in_fold(&pairs, f);
    }
    let config = RetrievalConfig::default();
    let analyzer = kefu::text::Analyzer::default();
    let report = eval::pairs(&analyzer, &config, &pairs, fold);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "pairs          {} ({} same meaning){}",
            report.pairs,
            report.positives,
            report
                .fold
                .as_deref()
                .map(|f| format!(", fold {f}"))
                .unwrap_or_default()
        );
        println!("ROC-AUC        {:.3}", report.roc_auc);
        println!(
            "accuracy       {:.3} at the configured threshold {:.3}",
            report.accuracy, report.threshold
        );
        println!(
            "best           {:.3} at threshold {:.3} (chosen on this data)",
            report.best_accuracy, report.best_threshold
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
