//! The `kefu` command: a thin shell over the library (anyhow lives only here).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use kefu::config::EngineConfig;
use kefu::engine::{Engine, InboundMessage, ReplyKind};
use kefu::knowledge::KnowledgeBase;
use kefu::retrieval::eval::{self, Fold};
use kefu::retrieval::{Audience, Band, RetrievalConfig, Retriever};
use kefu::store::{Speaker, Store, UserKey};

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
    /// Chat with the bot: one customer message per line on stdin, replies on stdout.
    Chat {
        #[command(flatten)]
        setup: Setup,
        /// Customer id for the session (keeps menus and transcript across runs).
        #[arg(long, default_value = "terminal")]
        user: String,
        /// Answer as a customer of this branch.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Reports for the content team.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// The agent console: take escalated chats from the hand-off queue.
    Agent {
        #[command(flatten)]
        setup: Setup,
        /// The agent's token from the configuration ([[handoff.agents]]).
        #[arg(long, global = true, env = "KEFU_AGENT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Crash-test child for the hand-off durability test (prints acknowledgements).
    #[command(hide = true)]
    Torture {
        #[command(flatten)]
        setup: Setup,
        #[arg(long, default_value_t = 4)]
        customers: usize,
        #[arg(long, default_value_t = 2)]
        agents: usize,
        #[arg(long, default_value_t = 40)]
        messages: usize,
        /// Prefix for user ids, so runs on one store do not collide.
        #[arg(long, default_value = "run")]
        run: String,
    },
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
    /// Measures recall (--faq/--queries), pair similarity (--pairs), or the first reply
    /// to labelled customer messages (--messages, on --kb with --intents).
    Eval {
        /// A benchmark FAQ (`id`, `question`, `similar` TSV).
        #[arg(long, conflicts_with = "kb")]
        faq: Option<PathBuf>,
        /// A knowledge-base directory, to measure on your own content.
        #[arg(long)]
        kb: Option<PathBuf>,
        /// Labelled queries (`query`, `gold_id` TSV).
        #[arg(long)]
        queries: Option<PathBuf>,
        #[arg(long, conflicts_with_all = ["faq", "queries"])]
        pairs: Option<PathBuf>,
        /// Labelled customer messages (`id text labels style half` TSV, e.g.
        /// `eval/customer-messages.tsv`): first-reply figures as chat decides them.
        #[arg(long, conflicts_with_all = ["faq", "queries", "pairs"])]
        messages: Option<PathBuf>,
        /// With --messages: only this half (`tune` or `test`).
        #[arg(long, requires = "messages", value_parser = ["tune", "test"])]
        half: Option<String>,
        /// With --messages: intent rules tried before retrieval, as in chat.
        #[arg(long, default_value = "intents")]
        intents: PathBuf,
        /// With --messages: list every message whose first reply was not right.
        #[arg(long, requires = "messages")]
        misses: bool,
        /// With --messages: one JSON line per message with its intent and top candidates
        /// (for choosing thresholds on the tune half).
        #[arg(long, requires = "messages", hide = true)]
        dump: bool,
        /// With --faq/--queries: simulate learning from list picks (history half of each
        /// gold entry's queries) and report the later half's recall before and after.
        #[arg(long)]
        simulate_learning: bool,
        /// The day to evaluate on (YYYY-MM-DD; campaigns expire); default today (UTC).
        #[arg(long, value_parser = parse_day)]
        today: Option<time::Date>,
        /// Use one fold of the data, split by cluster: `0/2` or `1/2`.
        #[arg(long, value_parser = parse_fold)]
        fold: Option<Fold>,
        /// Evaluate the `[retrieval]` settings of this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Where the engine's content, configuration and store live.
#[derive(clap::Args)]
struct Setup {
    #[arg(long, global = true, default_value = "knowledge-base")]
    kb: PathBuf,
    #[arg(long, global = true, default_value = "intents")]
    intents: PathBuf,
    /// Store directory (sessions, transcripts, hand-off queue).
    #[arg(long, global = true, default_value = "data")]
    data: PathBuf,
    /// Engine configuration; `kefu.toml` is used if present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

impl Setup {
    fn engine(&self) -> Result<Engine> {
        let config = match &self.config {
            Some(p) => EngineConfig::load(p)
                .with_context(|| format!("configuration {} is invalid", p.display()))?,
            None if Path::new("kefu.toml").is_file() => EngineConfig::load(Path::new("kefu.toml"))
                .context("configuration kefu.toml is invalid")?,
            None => EngineConfig::default(),
        };
        Engine::open(&self.kb, &self.intents, Some(&self.data), config).with_context(|| {
            format!(
                "cannot start on {} / {} / {}",
                self.kb.display(),
                self.intents.display(),
                self.data.display()
            )
        })
    }
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Queued chats (oldest first) and the chats you hold.
    List,
    /// One chat: customer, reason, intent, what the bot offered, the transcript.
    Show { ticket: u64 },
    /// Take a chat: the given one, or the oldest queued.
    Claim { ticket: Option<u64> },
    /// Write to the customer of a chat you hold.
    Reply { ticket: u64, text: String },
    /// Put a chat you hold back in the queue, keeping its place.
    Release { ticket: u64 },
    /// End a chat you hold; the bot serves the customer again.
    Close {
        ticket: u64,
        #[arg(long)]
        summary: Option<String>,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Questions the bot could not answer, grouped by wording, most frequent first.
    Unanswered {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[arg(long, default_value = "knowledge-base")]
        kb: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Suggested similar questions from use: list picks after "您是不是想问", 没用 after
    /// an answer, and unanswered questions, each with its target entry and counts.
    Suggestions {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[arg(long, default_value = "knowledge-base")]
        kb: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Writes suggestion N (as numbered by `report suggestions`) into its entry's
    /// `similar` list in the knowledge-base file, then validates the knowledge base.
    Accept {
        number: usize,
        /// Add it to this entry instead of the suggested one.
        #[arg(long)]
        entry: Option<String>,
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[arg(long, default_value = "knowledge-base")]
        kb: PathBuf,
    },
}

#[derive(Subcommand)]
enum KbCommand {
    /// Validates a knowledge-base directory without starting anything.
    Check {
        #[arg(default_value = "knowledge-base")]
        dir: PathBuf,
        /// Intent rules to check too (skipped if the directory does not exist).
        #[arg(long, default_value = "intents")]
        intents: PathBuf,
    },
}

/// `println!` that returns the write error instead of panicking: `kefu ask … | head`
/// closes the pipe early, and that is not a crash.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

fn parse_day(s: &str) -> Result<time::Date, String> {
    kefu::knowledge::parse_date(s)
        .ok_or_else(|| format!("expected a date like 2026-11-24, got \"{s}\""))
}

fn parse_fold(s: &str) -> Result<Fold, String> {
    Fold::parse(s).ok_or_else(|| format!("expected INDEX/COUNT like 0/2, got \"{s}\""))
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kefu: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Chat {
            setup,
            user,
            branch,
        } => chat(&setup, &user, branch),
        Command::Agent {
            setup,
            token,
            command,
        } => {
            let token = token.context("give --token or set KEFU_AGENT_TOKEN")?;
            agent(&setup, &token, command)
        }
        Command::Report {
            command: ReportCommand::Unanswered { data, kb, json },
        } => report_unanswered(&data, &kb, json),
        Command::Report {
            command: ReportCommand::Suggestions { data, kb, json },
        } => report_suggestions(&data, &kb, json),
        Command::Report {
            command:
                ReportCommand::Accept {
                    number,
                    entry,
                    data,
                    kb,
                },
        } => report_accept(&data, &kb, number, entry),
        Command::Torture {
            setup,
            customers,
            agents,
            messages,
            run,
        } => torture(&setup, customers, agents, messages, &run),
        Command::Kb {
            command: KbCommand::Check { dir, intents },
        } => kb_check(&dir, &intents),
        Command::Ask {
            question,
            kb,
            explain,
            branch,
        } => ask(&kb, &question, explain, branch.as_deref()),
        Command::Eval {
            faq,
            kb,
            queries,
            pairs,
            messages,
            half,
            intents,
            misses,
            dump,
            simulate_learning,
            today,
            fold,
            config,
            json,
        } => {
            let today = today.unwrap_or_else(|| time::OffsetDateTime::now_utc().date());
            let retrieval = match config {
                Some(p) => {
                    EngineConfig::load(&p)
                        .with_context(|| format!("configuration {} is invalid", p.display()))?
                        .retrieval
                }
                None => RetrievalConfig::default(),
            };
            match (faq, kb, queries, pairs, messages) {
                (Some(faq), None, Some(queries), None, None) if simulate_learning => {
                    let kb = eval::load_faq(&faq)
                        .with_context(|| format!("cannot load {}", faq.display()))?;
                    let qs = eval::load_queries(&queries)
                        .with_context(|| format!("cannot load {}", queries.display()))?;
                    let report = eval::learning_simulation(&kb, &retrieval, &qs, fold, today)?;
                    if json {
                        say!("{}", serde_json::to_string(&report)?);
                    } else {
                        say!("split          {}", report.split);
                        say!(
                            "history        {} queries, {} picked from an offered list and learned",
                            report.history,
                            report.learned
                        );
                        for (name, r) in [("before", &report.before), ("after", &report.after)] {
                            say!(
                                "later, {name:<7} {} queries: recall@1 {:.3}  recall@10 {:.3}  MRR@10 {:.3}",
                                r.queries,
                                r.recall_at_1,
                                r.recall_at_10,
                                r.mrr_at_10
                            );
                        }
                    }
                    Ok(std::process::ExitCode::SUCCESS)
                }
                (Some(faq), None, Some(queries), None, None) => {
                    let r = eval::retriever_for_faq(&faq, retrieval)
                        .with_context(|| format!("cannot load {}", faq.display()))?;
                    eval_recall(&r, &queries, fold, today, json)
                }
                (None, Some(kb), Some(queries), None, None) => eval_recall(
                    &load_retriever(&kb, retrieval)?,
                    &queries,
                    fold,
                    today,
                    json,
                ),
                (None, None, None, Some(pairs), None) => eval_pairs(&pairs, fold, &retrieval, json),
                (None, kb, None, None, Some(messages)) => {
                    let kb = kb.unwrap_or_else(|| PathBuf::from("knowledge-base"));
                    let r = load_retriever(&kb, retrieval)?;
                    let set = kefu::intents::IntentSet::load_dir(&intents).with_context(|| {
                        format!("intent rules {} did not load", intents.display())
                    })?;
                    if dump {
                        return dump_messages(&r, &set, &messages, half.as_deref(), today);
                    }
                    eval_messages(&r, &set, &messages, half.as_deref(), today, misses, json)
                }
                _ => anyhow::bail!(
                    "give --faq (or --kb) with --queries, or --pairs, or --messages (with --kb)"
                ),
            }
        }
    }
}

fn kb_check(dir: &Path, intents: &Path) -> Result<std::process::ExitCode> {
    let mut ok = true;
    match KnowledgeBase::load_dir(dir) {
        Ok(kb) => {
            let s = kb.summary();
            say!(
                "ok: {} entries, {} similar questions, {} categories in {} files; {} user-dictionary words, {} synonyms",
                s.entries, s.similar_questions, s.categories, s.files, s.user_words, s.synonyms
            );
        }
        Err(kefu::Error::Content(errors)) => {
            eprint!("{errors}");
            ok = false;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot check {}", dir.display())),
    }
    if intents.is_dir() {
        match kefu::intents::IntentSet::load_dir(intents) {
            Ok(set) => {
                let examples: usize = set
                    .intents()
                    .iter()
                    .map(|i| i.examples.len() + i.near_misses.len())
                    .sum();
                say!(
                    "ok: {} intents, {} examples and near misses pass",
                    set.len(),
                    examples
                );
            }
            Err(kefu::Error::Content(errors)) => {
                eprint!("{errors}");
                ok = false;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot check {}", intents.display())),
        }
    }
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn load_retriever(dir: &Path, config: RetrievalConfig) -> Result<Retriever> {
    let kb = KnowledgeBase::load_dir(dir)
        .with_context(|| format!("knowledge base {} did not load", dir.display()))?;
    Ok(Retriever::new(Arc::new(kb), config)?)
}

fn ask(
    dir: &Path,
    question: &str,
    explain: bool,
    branch: Option<&str>,
) -> Result<std::process::ExitCode> {
    let r = load_retriever(dir, RetrievalConfig::default())?;
    let audience = Audience {
        branch,
        today: time::OffsetDateTime::now_utc().date(),
    };
    let ranking = r.rank(question, audience)?;
    let band = match ranking.band {
        Band::Confident => "confident".to_owned(),
        Band::Uncertain if ranking.is_confirmation() => "uncertain: confirm the top".to_owned(),
        Band::Uncertain => format!("uncertain: list of {}", ranking.shortlist),
        Band::NoMatch => "no match".to_owned(),
    };
    say!("band: {band}");
    let shown = if explain {
        ranking.candidates.len().min(10)
    } else {
        3
    };
    for (i, c) in ranking.candidates.iter().take(shown).enumerate() {
        let e = r
            .entry(c.entry)
            .context("candidate outside the knowledge base")?;
        say!(
            "{:>2}. [{}] {}  score {:.3}  similarity {:.3}",
            i + 1,
            e.id,
            e.questions().nth(c.matched_question).unwrap_or(&e.question),
            c.score,
            c.similarity
        );
        if explain {
            say!(
                "    raw bm25 {:.2}  shares a content word: {}",
                c.bm25,
                if c.negated {
                    "closer to a negative question (never answered or offered)"
                } else if c.topical {
                    "yes"
                } else {
                    "no (never answered or offered)"
                }
            );
            let (rank_w, sim_w) = (
                r.config().weights.named(),
                r.config().similarity_weights.named(),
            );
            let cells: Vec<String> = c
                .features
                .named()
                .iter()
                .zip(rank_w.iter().zip(sim_w.iter()))
                .filter(|(_, (rw, sw))| rw.1 > 0.0 || sw.1 > 0.0)
                .map(|((name, v), (rw, sw))| format!("{name} {v:.2} (×{:.2}/×{:.2})", rw.1, sw.1))
                .collect();
            say!("    {}", cells.join("  "));
        }
    }
    if explain {
        let c = r.config();
        say!(
            "(feature value (×ranking weight/×similarity weight); bands: confident ≥ {:.2} with a lead of {:.2}, uncertain ≥ {:.2})",
            c.confident, c.margin, c.uncertain
        );
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
    r: &Retriever,
    queries: &Path,
    fold: Option<Fold>,
    today: time::Date,
    json: bool,
) -> Result<std::process::ExitCode> {
    let qs = eval::load_queries(queries)
        .with_context(|| format!("cannot load {}", queries.display()))?;
    let bar = progress_bar(qs.len());
    let report = eval::recall(r, &qs, fold, today, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    if json {
        say!("{}", serde_json::to_string(&report)?);
    } else {
        say!("entries        {}", report.entries);
        say!(
            "queries        {}{}",
            report.queries,
            report
                .fold
                .as_deref()
                .map(|f| format!(" (fold {f})"))
                .unwrap_or_default()
        );
        say!("recall@1       {:.3}", report.recall_at_1);
        say!("recall@3       {:.3}", report.recall_at_3);
        say!("recall@10      {:.3}", report.recall_at_10);
        say!("MRR@10         {:.3}", report.mrr_at_10);
        say!("queries/s      {:.0}", report.queries_per_second);
        say!("latency p50    {:.2} ms", report.p50_ms);
        say!("latency p99    {:.2} ms", report.p99_ms);
        say!(
            "confident      {:.1}% of queries, recall@1 {:.3} among them",
            report.confident_share * 100.0,
            report.confident_precision
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn dump_messages(
    r: &Retriever,
    intents: &kefu::intents::IntentSet,
    path: &Path,
    half: Option<&str>,
    today: time::Date,
) -> Result<std::process::ExitCode> {
    use kefu::retrieval::messages;
    let msgs =
        messages::load_messages(path).with_context(|| format!("cannot load {}", path.display()))?;
    for m in msgs.iter().filter(|m| half.is_none_or(|h| m.half == h)) {
        let intent = intents.classify(&m.text, today).map(|i| i.name);
        let ranking = r.rank(
            &m.text,
            Audience {
                branch: None,
                today,
            },
        )?;
        let cands: Vec<serde_json::Value> = ranking
            .candidates
            .iter()
            .take(8)
            .map(|c| {
                serde_json::json!({
                    "id": r.entry(c.entry).map(|e| e.id.clone()),
                    "score": c.score,
                    "similarity": c.similarity,
                    "eligible": c.eligible(),
                    "features": c.features,
                })
            })
            .collect();
        say!(
            "{}",
            serde_json::json!({
                "id": m.id, "text": m.text, "style": m.style,
                "labels": m.labels.iter().map(|l| format!("{l:?}")).collect::<Vec<_>>(),
                "intent": intent, "band": ranking.band, "shortlist": ranking.shortlist, "unknown": ranking.unknown_words,
                "candidates": cands,
            })
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn eval_messages(
    r: &Retriever,
    intents: &kefu::intents::IntentSet,
    path: &Path,
    half: Option<&str>,
    today: time::Date,
    show_misses: bool,
    json: bool,
) -> Result<std::process::ExitCode> {
    use kefu::retrieval::messages;
    let msgs =
        messages::load_messages(path).with_context(|| format!("cannot load {}", path.display()))?;
    let audience = Audience {
        branch: None,
        today,
    };
    let mut report = messages::evaluate(r, Some(intents), &msgs, half, audience)?;
    if !show_misses {
        report.misses.clear();
    }
    if !report.unknown_labels.is_empty() {
        eprintln!(
            "kefu: labels name entries that are not in the knowledge base (never right): {}",
            report.unknown_labels.join(", ")
        );
    }
    if json {
        say!("{}", serde_json::to_string(&report)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let pct = |x: f64| format!("{:5.1}%", x * 100.0);
    let c = &report.counts;
    say!(
        "messages {} ({}): {} FAQ, {} intent, {} out of scope",
        c.messages,
        report.half.as_deref().unwrap_or("both halves"),
        c.faq,
        c.intent,
        c.out_of_scope
    );
    let s = &report.shares;
    say!(
        "answered in the first reply   {}  ({} of {} FAQ messages)",
        pct(s.answered),
        c.answered,
        c.faq
    );
    say!(
        "  right among those           {}  ({} of {})",
        pct(s.answered_precision),
        c.answered_right,
        c.answered
    );
    say!(
        "right entry seen in 1st reply {}  (answer, confirmation or list: {})",
        pct(s.seen_right),
        c.seen_right
    );
    say!(
        "  asked back: {} confirmations, {} lists; {} taken by an intent rule",
        c.confirmed,
        c.listed,
        c.taken_by_intent
    );
    say!(
        "out of scope → fallback       {}  ({} of {}; {} answered)",
        pct(s.out_of_scope_fallback),
        c.out_of_scope_fallback,
        c.out_of_scope,
        c.out_of_scope_answered
    );
    say!(
        "intent accuracy               {}  ({} of {})",
        pct(s.intent_accuracy),
        c.intent_right,
        c.intent
    );
    say!("by style (FAQ answered / right / seen; out-of-scope fallback; intents):");
    for st in &report.styles {
        let (c, s) = (&st.counts, &st.shares);
        say!(
            "  {:<14} n={:<4} {} / {} / {}   oos {}   intent {}",
            st.style,
            c.messages,
            pct(s.answered),
            pct(s.answered_precision),
            pct(s.seen_right),
            if c.out_of_scope > 0 {
                pct(s.out_of_scope_fallback)
            } else {
                "    -".into()
            },
            if c.intent > 0 {
                pct(s.intent_accuracy)
            } else {
                "    -".into()
            },
        );
    }
    for m in &report.misses {
        say!("miss {}\t{}\t{}\t→ {}", m.id, m.text, m.labels, m.reply);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn eval_pairs(
    path: &Path,
    fold: Option<Fold>,
    config: &RetrievalConfig,
    json: bool,
) -> Result<std::process::ExitCode> {
    let mut pairs =
        eval::load_pairs(path).with_context(|| format!("cannot load {}", path.display()))?;
    if let Some(f) = fold {
        pairs = eval::pairs_in_fold(&pairs, f);
    }
    let analyzer = kefu::text::Analyzer::default();
    let report = eval::pairs(&analyzer, config, &pairs, fold);
    if json {
        say!("{}", serde_json::to_string(&report)?);
    } else {
        say!(
            "pairs          {} ({} same meaning){}",
            report.pairs,
            report.positives,
            report
                .fold
                .as_deref()
                .map(|f| format!(", fold {f}"))
                .unwrap_or_default()
        );
        say!("ROC-AUC        {:.3}", report.roc_auc);
        say!(
            "accuracy       {:.3} at the configured threshold {:.3}",
            report.accuracy,
            report.threshold
        );
        say!(
            "best           {:.3} at threshold {:.3} (chosen on this data)",
            report.best_accuracy,
            report.best_threshold
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Longer lines are not read into memory: a pasted file is not a question.
const MAX_LINE_BYTES: u64 = 64 * 1024;

fn chat(setup: &Setup, user: &str, branch: Option<String>) -> Result<std::process::ExitCode> {
    use std::io::{BufRead, Read, Write};
    let engine = setup.engine()?;
    let interactive = std::io::stdin().is_terminal();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout().lock();
    let key = UserKey::new("default", user);
    if interactive {
        let s = engine.knowledge_summary();
        writeln!(
            out,
            "kefu 智能客服（知识库 {} 条）。输入问题后回车；Ctrl-D 退出。",
            s.entries
        )?;
    }
    loop {
        // What agents wrote since the last delivery comes before the next reply.
        for m in engine.outbox(&key)? {
            writeln!(out, "【人工客服】{}\n", m.text)?;
        }
        if interactive {
            write!(out, "> ")?;
        }
        out.flush()?;
        let mut line = Vec::new();
        let n = input
            .by_ref()
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let reply_text = if !line.ends_with(b"\n") && n as u64 == MAX_LINE_BYTES {
            skip_line(&mut input)?;
            format!(
                "您的消息超过了{} KB，请用一两句话描述您的问题。",
                MAX_LINE_BYTES / 1024
            )
        } else {
            match String::from_utf8(line) {
                Err(_) => "无法识别这条消息的文字编码，请使用 UTF-8 输入。".to_owned(),
                Ok(text) => {
                    let text = text.trim_end_matches(['\n', '\r']).to_owned();
                    let msg = InboundMessage {
                        tenant: key.tenant.clone(),
                        branch: branch.clone(),
                        user: key.user.clone(),
                        channel: "terminal".into(),
                        text,
                        message_id: None,
                        at: now(),
                        event: None,
                    };
                    let reply = engine.handle(&msg)?;
                    if reply.kind == ReplyKind::Relayed {
                        "（已转给人工客服）".to_owned()
                    } else {
                        reply.plain_text()
                    }
                }
            }
        };
        writeln!(out, "{reply_text}\n")?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Discards input up to and including the next newline without holding it in memory.
fn skip_line(input: &mut impl std::io::BufRead) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

fn report_unanswered(data: &Path, kb: &Path, json: bool) -> Result<std::process::ExitCode> {
    let store = kefu::store::SledStore::open(data)
        .with_context(|| format!("cannot open store {}", data.display()))?;
    let kb = KnowledgeBase::load_dir(kb)
        .with_context(|| format!("knowledge base {} did not load", kb.display()))?;
    let analyzer = kefu::text::Analyzer::new(kb.user_words(), kb.synonyms().clone());
    let groups = kefu::report::unanswered(&store.events()?, &analyzer);
    if json {
        say!("{}", serde_json::to_string_pretty(&groups)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if groups.is_empty() {
        say!("no unanswered questions recorded in {}", data.display());
    }
    for g in &groups {
        say!(
            "{:>5}  {}{}",
            g.count,
            g.question,
            g.nearest_entry
                .as_deref()
                .map(|e| format!("   (nearest entry: {e})"))
                .unwrap_or_default()
        );
        for v in g.variants.iter().take(5) {
            say!("       · {v}");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn suggestions_from(data: &Path, kb: &Path) -> Result<Vec<kefu::report::Suggestion>> {
    let store = kefu::store::SledStore::open(data)
        .with_context(|| format!("cannot open store {}", data.display()))?;
    let kb = KnowledgeBase::load_dir(kb)
        .with_context(|| format!("knowledge base {} did not load", kb.display()))?;
    Ok(kefu::report::suggestions(&store.events()?, &kb))
}

fn report_suggestions(data: &Path, kb: &Path, json: bool) -> Result<std::process::ExitCode> {
    let list = suggestions_from(data, kb)?;
    if json {
        say!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if list.is_empty() {
        say!(
            "no suggestions: no list picks, unanswered questions or 没用 recorded in {}",
            data.display()
        );
    }
    for s in &list {
        let mut why = Vec::new();
        if s.picks > 0 {
            why.push(format!("picked {}×", s.picks));
        }
        if s.unanswered > 0 {
            why.push(format!("unanswered {}×", s.unanswered));
        }
        if let Some(e) = &s.unhelpful_entry {
            why.push(format!("没用 {}× after the answer of {e}", s.unhelpful));
        }
        say!(
            "{:>4}. {}  → {}   ({})",
            s.number,
            s.question,
            s.entry.as_deref().unwrap_or("(no entry: write a new one)"),
            why.join(", ")
        );
    }
    if !list.is_empty() {
        say!("accept one with: kefu report accept N [--entry ID]");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn report_accept(
    data: &Path,
    kb: &Path,
    number: usize,
    entry: Option<String>,
) -> Result<std::process::ExitCode> {
    let list = suggestions_from(data, kb)?;
    let s = list
        .iter()
        .find(|s| s.number == number)
        .with_context(|| format!("no suggestion {number} (there are {})", list.len()))?;
    let target = entry
        .or_else(|| s.entry.clone())
        .context("this suggestion has no entry; give one with --entry ID")?;
    let path = kefu::report::accept_similar(kb, &target, &s.question)
        .with_context(|| format!("cannot add \"{}\" to {target}", s.question))?;
    say!(
        "added \"{}\" to the similar questions of {target} in {}",
        s.question,
        path.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs customers and agents concurrently and prints one line per acknowledged
/// operation, flushed, so a parent that kills this process knows what was promised.
fn torture(
    setup: &Setup,
    customers: usize,
    agents: usize,
    messages: usize,
    run: &str,
) -> Result<std::process::ExitCode> {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let engine = setup.engine()?;
    let out = std::sync::Mutex::new(std::io::stdout());
    let ack = |line: String| {
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        // A closed pipe means the parent is gone: nothing left to promise to.
        let _ = writeln!(o, "{line}").and_then(|_| o.flush());
    };
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for c in 0..customers {
            let (engine, ack, failed) = (&engine, &ack, &failed);
            s.spawn(move || {
                let user = format!("{run}-c{c}");
                let send = |text: String| {
                    engine.handle(&InboundMessage {
                        tenant: "torture".into(),
                        branch: None,
                        user: user.clone(),
                        channel: "torture".into(),
                        text,
                        message_id: None,
                        at: now(),
                        event: None,
                    })
                };
                match send("转人工".into()) {
                    Ok(r) => ack(format!(
                        "enqueue {user} {}",
                        r.handoff.map_or(0, |h| h.ticket)
                    )),
                    Err(e) => {
                        eprintln!("enqueue failed: {e}");
                        failed.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                for k in 0..messages {
                    match send(format!("第{k}条消息")) {
                        Ok(_) => ack(format!("message {user} {k}")),
                        Err(e) => {
                            eprintln!("message failed: {e}");
                            failed.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            });
        }
        for a in 0..agents {
            let (engine, ack, failed) = (&engine, &ack, &failed);
            s.spawn(move || {
                let agent = format!("{run}-a{a}");
                // Stop after a second without work: the customers are done.
                let mut idle = 0;
                while idle < 200 {
                    match engine.queue().claim_next(&agent, &[], now()) {
                        Ok(Some(t)) => {
                            idle = 0;
                            ack(format!("claim {} {agent}", t.id));
                            match engine.queue().post(
                                t.id,
                                Speaker::Agent,
                                Some(&agent),
                                "您好，我是人工客服",
                                now(),
                            ) {
                                Ok(m) => ack(format!("reply {} {agent} {}", t.id, m.seq)),
                                Err(e) => {
                                    eprintln!("reply failed: {e}");
                                    failed.store(true, Ordering::SeqCst);
                                }
                            }
                        }
                        Ok(None) => {
                            idle += 1;
                            std::thread::sleep(std::time::Duration::from_millis(5));
                        }
                        Err(e) => {
                            eprintln!("claim failed: {e}");
                            failed.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            });
        }
    });
    ack("done".into());
    Ok(if failed.load(Ordering::SeqCst) {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn agent(setup: &Setup, token: &str, command: AgentCommand) -> Result<std::process::ExitCode> {
    use kefu::handoff::{Ticket, TicketState};
    let engine = setup.engine()?;
    let me_agent = engine.agents().authenticate(token)?.clone();
    let me = me_agent.id.clone();
    let queue = engine.queue();
    let t = now();
    let age = |since: i64| format!("{} 分钟", ((t - since).max(0) + 59) / 60);
    let line = |x: &Ticket| {
        let state = match &x.state {
            TicketState::Queued if x.left_message => "留言".to_owned(),
            TicketState::Queued => "排队".to_owned(),
            TicketState::Claimed { agent, .. } => format!("{agent} 接待中"),
            TicketState::Closed { .. } => "已结束".to_owned(),
            TicketState::Cancelled { .. } => "已取消".to_owned(),
            TicketState::Returned { .. } => "已转回机器人".to_owned(),
        };
        format!(
            "#{:<6} {:<8} 等待 {:<8} 客户 {}/{}  网点 {}  意图 {}  原因 {}",
            x.id,
            state,
            age(x.enqueued_at),
            x.customer.tenant,
            x.customer.user,
            x.group.as_deref().unwrap_or("-"),
            x.intent.as_deref().unwrap_or("-"),
            x.reason
        )
    };
    let show = |x: &Ticket| -> Result<()> {
        say!("{}", line(x));
        if !x.candidates.is_empty() {
            say!("机器人最后给出的选项：{}", x.candidates.join(" / "));
        }
        say!("—— 转人工前的对话 ——");
        for turn in &x.transcript {
            let who = match turn.from {
                Speaker::Customer => "客户",
                Speaker::Bot => "机器人",
                Speaker::Agent => "客服",
            };
            say!("[{who}] {}", turn.text.replace('\n', "\n        "));
        }
        say!("—— 转人工后的消息 ——");
        for m in queue.messages(x.id, 0)? {
            let who = match m.from {
                Speaker::Agent => m.agent.clone().unwrap_or_else(|| "客服".into()),
                _ => "客户".into(),
            };
            say!("[{who}] {}", m.text);
        }
        Ok(())
    };
    let ticket = |id: u64| -> Result<Ticket> {
        queue
            .ticket(id)?
            .with_context(|| format!("no hand-off ticket #{id}"))
    };
    match command {
        AgentCommand::List => {
            let queued = queue.queued(200)?;
            say!("排队中 {} 个（最早的在前）：", queued.len());
            for x in &queued {
                say!("  {}", line(x));
            }
            let mine = queue.claimed_by(&me)?;
            say!("{me} 正在接待 {} 个：", mine.len());
            for x in &mine {
                say!("  {}", line(x));
            }
        }
        AgentCommand::Show { ticket: id } => show(&ticket(id)?)?,
        AgentCommand::Claim { ticket: Some(id) } => show(&queue.claim(id, &me, t)?)?,
        AgentCommand::Claim { ticket: None } => match queue.claim_next(&me, &me_agent.groups, t)? {
            Some(x) => show(&x)?,
            None => say!("队列是空的。"),
        },
        AgentCommand::Reply { ticket: id, text } => {
            if text.trim().is_empty() {
                anyhow::bail!("the reply is empty");
            }
            queue.post(id, Speaker::Agent, Some(&me), &text, t)?;
            say!("已发送给 #{id} 的客户。");
        }
        AgentCommand::Release { ticket: id } => {
            queue.release(id, &me, t)?;
            say!("#{id} 已放回队列，保持原来的位置。");
        }
        AgentCommand::Close {
            ticket: id,
            summary,
        } => {
            engine.close_chat(id, &me, summary.as_deref(), t)?;
            say!("#{id} 已结束，客户回到机器人服务。");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
