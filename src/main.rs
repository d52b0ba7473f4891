//! The `kefu` command: a thin shell over the library (anyhow lives only here).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use kefu::config::EngineConfig;
use kefu::engine::{Engine, InboundMessage, ReplyKind};
use kefu::knowledge::bundle::ContentBundle;
use kefu::knowledge::KnowledgeBase;
use kefu::retrieval::dense::Embeddings;
use kefu::retrieval::eval::{self, Fold};
use kefu::retrieval::{Audience, Band, DenseUse, RetrievalConfig, Retriever};
use kefu::store::{Store, UserKey};

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
    /// The agent console, a client of a running `kefu serve`. The token comes from
    /// `KEFU_AGENT_TOKEN` or `--token-file`, never from the command line.
    Agent {
        /// The server's base URL.
        #[arg(
            long,
            global = true,
            env = "KEFU_SERVER",
            default_value = "http://127.0.0.1:8080"
        )]
        server: String,
        /// A file holding the agent's token (instead of KEFU_AGENT_TOKEN).
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Runs the service: customer, agent and admin APIs, live streams, metrics.
    Serve {
        #[command(flatten)]
        setup: Setup,
        /// Address to listen on (overrides `[server] listen`), e.g. 127.0.0.1:8080; port
        /// 0 picks a free port (the address is printed on the first line).
        #[arg(long)]
        listen: Option<String>,
        /// Log lines as JSON (for log collectors) instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Prints the SHA-256 of a token read from standard input, for `token_sha256` in
    /// the configuration (tokens never go on a command line).
    HashToken,
    /// WeChat Official Account (服务号) tools.
    Wechat {
        #[command(subcommand)]
        command: WechatCommand,
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
        /// Rank with the `[retrieval]` and `[embeddings]` settings of this configuration
        /// file (default `kefu.toml` if present).
        #[arg(long)]
        config: Option<PathBuf>,
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
        /// One JSON line per message (--messages) or query (--queries) with its top
        /// candidates and their features (for choosing thresholds and weights on the
        /// tuning data).
        #[arg(long, hide = true)]
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
        /// Evaluate the `[retrieval]` and `[embeddings]` settings of this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Rank with embeddings from this OpenAI-compatible endpoint (overrides
        /// `[embeddings] url`), e.g. `http://127.0.0.1:8080/v1/embeddings`.
        #[arg(long)]
        embeddings_url: Option<String>,
        /// The embedding model to ask for (overrides `[embeddings] model`).
        #[arg(long)]
        embeddings_model: Option<String>,
        /// Where to cache knowledge-base vectors (default `[embeddings] cache_dir`, else
        /// memory only).
        #[arg(long)]
        embeddings_cache: Option<PathBuf>,
        /// Rank lexically even if the configuration turns embeddings on.
        #[arg(long, conflicts_with = "embeddings_url")]
        no_embeddings: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Where the engine's content, configuration and store live.
#[derive(clap::Args)]
struct Setup {
    /// Knowledge-base directory; without it, the content built into kefu (or what was
    /// last published into the store).
    #[arg(long, global = true)]
    kb: Option<PathBuf>,
    /// Intent rules directory (with `--kb`); default `intents` beside it if present.
    #[arg(long, global = true)]
    intents: Option<PathBuf>,
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
        let (content, from_dirs) = match &self.kb {
            Some(kb) => {
                let intents = self
                    .intents
                    .clone()
                    .unwrap_or_else(|| kb.parent().unwrap_or(Path::new(".")).join("intents"));
                let c = ContentBundle::from_dirs(kb, &intents).with_context(|| {
                    format!("cannot read {} / {}", kb.display(), intents.display())
                })?;
                (c, true)
            }
            None => (ContentBundle::bundled(), false),
        };
        let store = match &config.store.url {
            Some(_) => "the PostgreSQL store ([store] url)".to_owned(),
            None => format!("the store in {}", self.data.display()),
        };
        // Explicit directories win over content published into the store.
        Engine::open_bundle(&content, Some(&self.data), config, !from_dirs)
            .with_context(|| format!("cannot start with {store}"))
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
enum WechatCommand {
    /// Posts a message to a running kefu as the platform would (signed, and encrypted in
    /// safe mode), checks the reply's signature, decrypts it and prints it.
    Simulate {
        /// kefu's WeChat URL, as entered in the console.
        #[arg(long)]
        url: String,
        /// The console's Token.
        #[arg(long, env = "KEFU_WECHAT_TOKEN", hide_env_values = true)]
        token: String,
        /// The EncodingAESKey: given, the message is sent in safe mode.
        #[arg(
            long,
            env = "KEFU_WECHAT_AES_KEY",
            hide_env_values = true,
            requires = "app_id"
        )]
        aes_key: Option<String>,
        /// The 公众号's AppID (required with --aes-key).
        #[arg(long)]
        app_id: Option<String>,
        /// A text message from the customer.
        #[arg(long, conflicts_with = "event", required_unless_present = "event")]
        text: Option<String>,
        /// An event instead: `subscribe` or `click:KEY`.
        #[arg(long)]
        event: Option<String>,
        /// The customer's OpenID.
        #[arg(long, default_value = "o_kefu_simulate")]
        openid: String,
        /// The account's original id (gh_…).
        #[arg(long, default_value = "gh_kefu_simulate")]
        account: String,
        /// MsgId; repeat one to see a retry answered without running the engine again.
        #[arg(long)]
        msg_id: Option<u64>,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Questions the bot could not answer, grouped by wording, most frequent first.
    Unanswered {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// The knowledge base whose dictionary groups the wordings; the built-in one by
        /// default.
        #[arg(long)]
        kb: Option<PathBuf>,
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
            server,
            token_file,
            command,
        } => {
            let token = match (token_file, std::env::var("KEFU_AGENT_TOKEN")) {
                (Some(f), _) => std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read token file {}", f.display()))?
                    .trim()
                    .to_owned(),
                (None, Ok(t)) => t,
                (None, Err(_)) => anyhow::bail!("set KEFU_AGENT_TOKEN or give --token-file"),
            };
            agent(&server, &token, command)
        }
        Command::Serve {
            setup,
            listen,
            log_json,
        } => serve(&setup, listen, log_json),
        Command::HashToken => {
            let mut token = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut token)?;
            let token = token.trim();
            anyhow::ensure!(
                token.chars().count() >= 16,
                "a token needs at least 16 characters"
            );
            say!("{}", kefu::handoff::hash_token(token));
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Report {
            command: ReportCommand::Unanswered { data, kb, json },
        } => report_unanswered(&data, kb.as_deref(), json),
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
        Command::Kb {
            command: KbCommand::Check { dir, intents },
        } => kb_check(&dir, &intents),
        Command::Wechat {
            command:
                WechatCommand::Simulate {
                    url,
                    token,
                    aes_key,
                    app_id,
                    text,
                    event,
                    openid,
                    account,
                    msg_id,
                },
        } => {
            use kefu::channels::wechat::simulate::{SimulatedMessage, Simulation};
            let message = match (text, event.as_deref()) {
                (Some(t), _) => SimulatedMessage::Text(t),
                (None, Some("subscribe")) => SimulatedMessage::Subscribe,
                (None, Some(e)) if e.starts_with("click:") => {
                    SimulatedMessage::Click(e["click:".len()..].to_owned())
                }
                (None, other) => anyhow::bail!(
                    "--event must be `subscribe` or `click:KEY`, got {:?}",
                    other.unwrap_or_default()
                ),
            };
            let simulation = Simulation {
                url,
                token,
                encoding_aes_key: aes_key,
                app_id: app_id.unwrap_or_default(),
                openid,
                account,
                message,
                msg_id: msg_id
                    .unwrap_or_else(|| now() as u64 * 1000 + u64::from(std::process::id() % 1000)),
            };
            wechat_simulate(&simulation)
        }
        Command::Ask {
            question,
            kb,
            explain,
            branch,
            config,
        } => {
            let config = match config {
                Some(p) => EngineConfig::load(&p)
                    .with_context(|| format!("configuration {} is invalid", p.display()))?,
                None if Path::new("kefu.toml").is_file() => {
                    EngineConfig::load(Path::new("kefu.toml"))
                        .context("configuration kefu.toml is invalid")?
                }
                None => EngineConfig::default(),
            };
            ask(&kb, &question, explain, branch.as_deref(), &config)
        }
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
            embeddings_url,
            embeddings_model,
            embeddings_cache,
            no_embeddings,
            json,
        } => {
            let today = today.unwrap_or_else(|| time::OffsetDateTime::now_utc().date());
            let config = match config {
                Some(p) => EngineConfig::load(&p)
                    .with_context(|| format!("configuration {} is invalid", p.display()))?,
                None => EngineConfig::default(),
            };
            let retrieval = config.retrieval;
            let mut dense = config.embeddings;
            if let Some(url) = embeddings_url {
                dense.url = url;
            }
            if let Some(model) = embeddings_model {
                dense.model = model;
            }
            if let Some(dir) = embeddings_cache {
                dense.cache_dir = Some(dir);
            }
            if no_embeddings {
                dense.url.clear();
            }
            let embeddings = Embeddings::from_config(&dense, None)
                .context("the [embeddings] settings are unusable")?;
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
                            "history        {} queries, {} picked and learned ({} from a list, {} from under a wrong answer)",
                            report.history,
                            report.learned,
                            report.learned - report.learned_under_answer,
                            report.learned_under_answer
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
                    let r = eval::retriever_for_faq(&faq, retrieval, embeddings)
                        .with_context(|| format!("cannot load {}", faq.display()))?;
                    check_vectors(&r, json)?;
                    if dump {
                        return dump_queries(&r, &queries, fold, today);
                    }
                    eval_recall(&r, &queries, fold, today, json)
                }
                (None, Some(kb), Some(queries), None, None) => {
                    let r = load_retriever(&kb, retrieval, embeddings)?;
                    check_vectors(&r, json)?;
                    if dump {
                        return dump_queries(&r, &queries, fold, today);
                    }
                    eval_recall(&r, &queries, fold, today, json)
                }
                (None, None, None, Some(pairs), None) => {
                    eval_pairs(&pairs, fold, &retrieval, embeddings.as_deref(), json)
                }
                (None, kb, None, None, Some(messages)) => {
                    let kb = kb.unwrap_or_else(|| PathBuf::from("knowledge-base"));
                    let r = load_retriever(&kb, retrieval, embeddings)?;
                    check_vectors(&r, json)?;
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

fn wechat_simulate(
    simulation: &kefu::channels::wechat::simulate::Simulation,
) -> Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mode = if simulation.encoding_aes_key.is_some() {
        "safe mode"
    } else {
        "plain mode"
    };
    let reply = runtime
        .block_on(simulation.run())
        .with_context(|| format!("simulated message to {} failed", simulation.url))?;
    say!("sent ({mode}): {}", simulation.sent_xml_preview());
    let Some(fields) = reply.fields else {
        say!(
            "kefu answered `success` (HTTP {}): nothing to say, or the answer was slower than the deadline and goes out as a 客服消息.",
            reply.status
        );
        return Ok(std::process::ExitCode::SUCCESS);
    };
    if reply.encrypted {
        say!("reply: encrypted, MsgSignature verified, decrypted with the key and AppId");
    }
    let msg_type = fields.text("MsgType").unwrap_or("?");
    say!(
        "reply: MsgType {msg_type}, to {}, from {}",
        fields.text("ToUserName").unwrap_or("?"),
        fields.text("FromUserName").unwrap_or("?")
    );
    match msg_type {
        "text" => say!("{}", fields.get("Content").unwrap_or_default()),
        "transfer_customer_service" => {
            say!("(the chat goes to the platform's own 客服 tools)")
        }
        _ => {}
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn kb_check(dir: &Path, intents: &Path) -> Result<std::process::ExitCode> {
    let mut ok = true;
    match KnowledgeBase::load_dir(dir) {
        Ok(kb) => {
            let s = kb.summary();
            say!(
                "ok: {} entries, {} similar questions, {} categories in {} files; {} user-dictionary words, {} synonyms, {} out-of-scope words, {} products, {} overlapping entry pairs",
                s.entries, s.similar_questions, s.categories, s.files, s.user_words, s.synonyms, s.out_of_scope_words, s.products, s.overlaps
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

fn load_retriever(
    dir: &Path,
    config: RetrievalConfig,
    embeddings: Option<Arc<Embeddings>>,
) -> Result<Retriever> {
    let kb = KnowledgeBase::load_dir(dir)
        .with_context(|| format!("knowledge base {} did not load", dir.display()))?;
    Ok(Retriever::with_embeddings(
        Arc::new(kb),
        config,
        embeddings,
    )?)
}

/// With embeddings on, a measurement without vectors would be a lexical one under
/// another name: refuse it, and say what embedding the knowledge base took.
fn check_vectors(r: &Retriever, json: bool) -> Result<()> {
    if r.lacks_vectors() {
        anyhow::bail!(
            "the embedding service could not embed the knowledge base (see the log above); \
             nothing was measured. Check --embeddings-url, or measure lexically with --no-embeddings"
        );
    }
    if let (Some(stats), Some(service), false) = (r.embed_stats(), r.embeddings(), json) {
        eprintln!(
            "embeddings: model {}, {} questions, {} from the cache, {} embedded in {} requests, {:.1} s",
            service.config().model,
            stats.texts,
            stats.cached,
            stats.embedded,
            stats.requests,
            stats.seconds
        );
    }
    Ok(())
}

fn ask(
    dir: &Path,
    question: &str,
    explain: bool,
    branch: Option<&str>,
    config: &EngineConfig,
) -> Result<std::process::ExitCode> {
    let embeddings = Embeddings::from_config(&config.embeddings, None)
        .context("the [embeddings] settings are unusable")?;
    let r = load_retriever(dir, config.retrieval.clone(), embeddings)?;
    let audience = Audience {
        branch,
        today: time::OffsetDateTime::now_utc().date(),
    };
    let ranking = r.rank(question, audience)?;
    let band = match ranking.band {
        Band::Confident if ranking.near == 1 => {
            "confident; 1 close runner-up is numbered under the answer".to_owned()
        }
        Band::Confident if ranking.near > 1 => format!(
            "confident; {} close runners-up are numbered under the answer",
            ranking.near
        ),
        Band::Confident => "confident".to_owned(),
        Band::Uncertain if ranking.is_confirmation() => "uncertain: confirm the top".to_owned(),
        Band::Uncertain => format!("uncertain: list of {}", ranking.shortlist),
        Band::NoMatch => "no match".to_owned(),
    };
    say!("band: {band}");
    // A content editor must see when the ranking started from other characters than
    // the customer typed: a repaired typo explains a match, or a miss.
    if explain {
        if let Some(read_as) = r.typo_repaired(question) {
            say!("(typo repair: ranked as 「{read_as}」)");
        }
    }
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
            "{:>2}. [{}] {}  score {:.3}  similarity {:.3}{}",
            i + 1,
            e.id,
            e.questions().nth(c.matched_question).unwrap_or(&e.question),
            c.score,
            c.similarity,
            // The band passes over these (see `Ranking::top`); say so even without --explain.
            if c.eligible() || explain {
                ""
            } else {
                "  (never answered or offered)"
            }
        );
        if explain {
            if let Some(top) = ranking.top() {
                if top.entry != c.entry && r.knowledge_base().overlap(top.entry, c.entry) {
                    say!("    overlaps the first entry (overlaps.txt): no rival when deciding whether to answer at once");
                }
            }
            say!(
                "    raw bm25 {:.2}  cover {:.2}  on topic: {}",
                c.bm25,
                c.cover,
                if let Some(n) = c.negated_by {
                    let negative = e.negative.get(n).map(String::as_str).unwrap_or("?");
                    format!("no, its negative question 「{negative}」 speaks about it (closer, or near and naming a word the entry lacks; never answered or offered)")
                } else if c.other_product {
                    "no, the message names a product its question does not (products.txt; never answered or offered)".to_owned()
                } else if c.topical {
                    "yes, shares a content word".to_owned()
                } else {
                    "no content word in common (never answered or offered)".to_owned()
                }
            );
            let (rank_w, sim_w) = match (ranking.embeddings, r.embeddings()) {
                (DenseUse::Used, Some(d)) => (
                    d.config().weights.named(),
                    d.config().similarity_weights.named(),
                ),
                _ => (
                    r.config().weights.named(),
                    r.config().similarity_weights.named(),
                ),
            };
            let cells: Vec<String> = c
                .features
                .named()
                .iter()
                .zip(rank_w.iter().zip(sim_w.iter()))
                .filter(|(_, (rw, sw))| rw.1 > 0.0 || sw.1 > 0.0)
                .map(|((name, v), (rw, sw))| format!("{name} {v:.2} (×{:.2}/×{:.2})", rw.1, sw.1))
                .collect();
            say!("    {}", cells.join("  "));
            for (n, word) in r.overruled_negatives(question, c.entry) {
                if let Some(negative) = e.negative.get(n) {
                    say!(
                        "    its negative question 「{negative}」 is close enough to take it out, but the message names 「{word}」 (or a synonym of it), a word of the entry's own questions that the negative lacks, so it does not apply"
                    );
                }
            }
        }
    }
    if explain {
        // Negated candidates are ranked last, usually below the ten shown: a content
        // editor who wrote a negative wants to see that it took its entry out.
        for c in ranking
            .candidates
            .iter()
            .skip(shown)
            .filter(|c| c.negated())
        {
            let Some(e) = r.entry(c.entry) else { continue };
            let negative = c
                .negated_by
                .and_then(|n| e.negative.get(n))
                .map(String::as_str)
                .unwrap_or("?");
            say!(
                "  – [{}] {}  score {:.3}  similarity {:.3}: taken out by its negative question 「{negative}」",
                e.id,
                e.questions().nth(c.matched_question).unwrap_or(&e.question),
                c.score,
                c.similarity
            );
        }
        let c = r.config();
        let (confident, margin, uncertain, cover_lead) = match (ranking.embeddings, r.embeddings())
        {
            (DenseUse::Used, Some(d)) => {
                let d = d.config();
                (d.confident, d.margin, d.uncertain, d.cover_lead)
            }
            _ => (c.confident, c.margin, c.uncertain, c.cover_lead),
        };
        say!(
            "(feature value (×ranking weight/×similarity weight); bands: confident ≥ {confident:.2} with a lead of {margin}, uncertain ≥ {uncertain:.2}; the lead counts each candidate's cover × {cover_lead}: the share of the message's content words its entry's questions use)",
        );
        // Why a message whose first candidate is close still falls back: the words no
        // knowledge-base question uses (a synonym or a similar question fixes that).
        if ranking.unknown_words > 0.0 {
            say!(
                "(unknown words: {:.0} % of the ranked text's content words are in no knowledge-base question; the top's similarity counts {:.3} less against `uncertain`)",
                ranking.unknown_words * 100.0,
                c.unknown_penalty * ranking.unknown_words
            );
            let words = r.unknown_words(question);
            if !words.is_empty() {
                say!(
                    "(words of the whole message in no question: {})",
                    words.join(" ")
                );
            }
        }
        match ranking.embeddings {
            DenseUse::Used => say!("(embeddings: used; cosine is the sentence-embedding feature)"),
            DenseUse::Fallback => {
                say!("(embeddings: the service failed or was late; ranked lexically)")
            }
            DenseUse::Off => {}
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
        if report.embeddings_used + report.embeddings_fallback > 0 {
            say!(
                "embeddings     {} queries ranked with their vector, {} fell back to lexical",
                report.embeddings_used,
                report.embeddings_fallback
            );
        }
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
        let intent = intents
            .classify_in_scope(&m.text, today, r.knowledge_base().out_of_scope())
            .map(|i| i.name);
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
                    "cover": c.cover,
                    "features": c.features,
                })
            })
            .collect();
        say!(
            "{}",
            serde_json::json!({
                "id": m.id, "text": m.text, "style": m.style,
                "labels": m.labels.iter().map(|l| format!("{l:?}")).collect::<Vec<_>>(),
                "intent": intent, "band": ranking.band, "shortlist": ranking.shortlist, "near": ranking.near, "unknown": ranking.unknown_words,
                "candidates": cands,
            })
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// One JSON line per labelled query of the fold: every re-ranked candidate with its
/// features and whether it is the gold entry. Scores under other weights can be
/// recomputed from it (the features are the weighted mean's inputs), which is how the
/// weights are tuned on one fold and checked on the other.
fn dump_queries(
    r: &Retriever,
    queries: &Path,
    fold: Option<Fold>,
    today: time::Date,
) -> Result<std::process::ExitCode> {
    let qs = eval::load_queries(queries)
        .with_context(|| format!("cannot load {}", queries.display()))?;
    let audience = Audience {
        branch: None,
        today,
    };
    for q in qs
        .iter()
        .filter(|q| fold.is_none_or(|f| f.contains(&q.gold)))
    {
        let ranking = r.rank(&q.query, audience)?;
        let cands: Vec<serde_json::Value> = ranking
            .candidates
            .iter()
            .map(|c| {
                let id = r.entry(c.entry).map(|e| e.id.as_str()).unwrap_or_default();
                serde_json::json!({
                    "id": id,
                    "gold": id == q.gold,
                    "features": c.features,
                })
            })
            .collect();
        say!(
            "{}",
            serde_json::json!({
                "query": q.query, "embeddings": ranking.embeddings, "candidates": cands,
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
    // A share of no messages at all is shown as "-".
    let share_of = |n: usize, x: f64| if n > 0 { pct(x) } else { "    -".to_owned() };
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
        "  wrong answers with the right entry numbered under them: {}",
        c.wrong_with_right_below
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
            // A style without FAQ messages (all actions, all out of scope) has no FAQ
            // figures: "-" rather than a 0.0 % that reads as a failure.
            share_of(c.faq, s.answered),
            share_of(c.answered, s.answered_precision),
            share_of(c.faq, s.seen_right),
            share_of(c.out_of_scope, s.out_of_scope_fallback),
            share_of(c.intent, s.intent_accuracy),
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
    embeddings: Option<&Embeddings>,
    json: bool,
) -> Result<std::process::ExitCode> {
    let mut pairs =
        eval::load_pairs(path).with_context(|| format!("cannot load {}", path.display()))?;
    if let Some(f) = fold {
        pairs = eval::pairs_in_fold(&pairs, f);
    }
    let analyzer = kefu::text::Analyzer::default();
    let report = eval::pairs(&analyzer, config, &pairs, fold, embeddings)
        .context("the embedding service could not embed the pairs")?;
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

fn report_unanswered(data: &Path, kb: Option<&Path>, json: bool) -> Result<std::process::ExitCode> {
    let store = kefu::store::SledStore::open(data)
        .with_context(|| format!("cannot open store {}", data.display()))?;
    let kb = match kb {
        Some(dir) => KnowledgeBase::load_dir(dir)
            .with_context(|| format!("knowledge base {} did not load", dir.display()))?,
        None => ContentBundle::bundled().load()?.0,
    };
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

fn serve(setup: &Setup, listen: Option<String>, log_json: bool) -> Result<std::process::ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEFU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let engine = Arc::new(setup.engine()?);
    let addr = listen.unwrap_or_else(|| engine.config().server.listen.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Everything the configuration can refuse is checked before the address is
        // announced: a script that reads "listening on" must not be told of a service
        // that exits a moment later.
        // The WeChat channel is on when the configuration names its Token.
        let w = &engine.config().wechat;
        let wechat = if w.token.is_some() || w.token_env.is_some() || w.token_file.is_some() {
            let channel = kefu::channels::wechat::WechatChannel::from_config(w, engine.clone())
                .context("the [wechat] configuration is not usable")?;
            Some(Arc::new(channel))
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let version = engine.version().to_owned();
        let entries = engine.knowledge_summary().entries;
        let wechat_on = wechat.is_some();
        kefu::channels::http::serve(
            engine,
            listener,
            shutdown_signal(),
            move |state| match wechat {
                Some(channel) => {
                    let push = Arc::new(kefu::channels::wechat::WechatPush::new(&channel));
                    (
                        Arc::new(state.with_pusher(push)),
                        kefu::channels::wechat::router(channel),
                    )
                }
                None => (Arc::new(state), axum::Router::new()),
            },
            move || {
                // The first line of stdout is the address: scripts and tests read the port.
                // A closed stdout is no reason to stop serving.
                let _ = {
                    use std::io::Write as _;
                    writeln!(std::io::stdout().lock(), "listening on http://{local}")
                };
                tracing::info!(%version, entries, "kefu serving on http://{local}");
                if wechat_on {
                    tracing::info!("WeChat channel on /wechat");
                }
            },
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// SIGTERM (what process managers send) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The agent console: every command is one call to the agent API of a running server.
fn agent(server: &str, token: &str, command: AgentCommand) -> Result<std::process::ExitCode> {
    use serde_json::Value;
    let base = server.trim_end_matches('/').to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let call = |method: reqwest::Method, path: String, body: Option<Value>| -> Result<Value> {
        runtime.block_on(async {
            let mut req = client
                .request(method, format!("{base}{path}"))
                .bearer_auth(token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let res = req
                .send()
                .await
                .with_context(|| format!("cannot reach kefu at {base}"))?;
            let status = res.status();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let msg = v["error"]["message"].as_str().unwrap_or("request failed");
                anyhow::bail!("{msg} ({status})");
            }
            Ok(v)
        })
    };
    let line = |x: &Value| {
        let state = match x["state"].as_str().unwrap_or("") {
            "queued" if x["left_message"].as_bool() == Some(true) => "留言".to_owned(),
            "queued" => "排队".to_owned(),
            "claimed" => format!("{} 接待中", x["agent"].as_str().unwrap_or("")),
            "closed" => "已结束".to_owned(),
            "cancelled" => "已取消".to_owned(),
            _ => "已转回机器人".to_owned(),
        };
        format!(
            "#{:<6} {:<8} 等待 {:<8} 客户 {}/{}（{}）  网点 {}  意图 {}  原因 {}",
            x["ticket"],
            state,
            format!(
                "{} 分钟",
                (x["waited_secs"].as_i64().unwrap_or(0) + 59) / 60
            ),
            x["tenant"].as_str().unwrap_or(""),
            x["customer"].as_str().unwrap_or(""),
            if x["identity"] == "verified" {
                "已绑卡"
            } else {
                "未绑卡"
            },
            x["group"].as_str().unwrap_or("-"),
            x["intent"].as_str().unwrap_or("-"),
            x["reason"].as_str().unwrap_or("")
        )
    };
    let show = |id: &Value| -> Result<()> {
        let v = call(reqwest::Method::GET, format!("/v1/agent/chats/{id}"), None)?;
        say!("{}", line(&v));
        if let Some(c) = v["candidates"].as_array().filter(|c| !c.is_empty()) {
            let c: Vec<&str> = c.iter().filter_map(Value::as_str).collect();
            say!("机器人最后给出的选项：{}", c.join(" / "));
        }
        let who = |from: &str| match from {
            "customer" => "客户",
            "bot" => "机器人",
            _ => "客服",
        };
        say!("—— 转人工前的对话 ——");
        for t in v["transcript"].as_array().into_iter().flatten() {
            say!(
                "[{}] {}",
                who(t["from"].as_str().unwrap_or("")),
                t["text"].as_str().unwrap_or("").replace('\n', "\n        ")
            );
        }
        say!("—— 转人工后的消息 ——");
        for m in v["messages"].as_array().into_iter().flatten() {
            say!(
                "[{}] {}",
                who(m["from"].as_str().unwrap_or("")),
                m["text"].as_str().unwrap_or("")
            );
        }
        Ok(())
    };
    use reqwest::Method;
    match command {
        AgentCommand::List => {
            let v = call(Method::GET, "/v1/agent/queue".into(), None)?;
            let queued = v["queued"].as_array().cloned().unwrap_or_default();
            say!("排队中 {} 个（最早的在前）：", queued.len());
            for x in &queued {
                say!("  {}", line(x));
            }
            let mine = v["mine"].as_array().cloned().unwrap_or_default();
            say!("我正在接待 {} 个：", mine.len());
            for x in &mine {
                say!("  {}", line(x));
            }
        }
        AgentCommand::Show { ticket } => show(&Value::from(ticket))?,
        AgentCommand::Claim { ticket } => {
            let body = serde_json::json!({ "ticket": ticket });
            match call(Method::POST, "/v1/agent/claim".into(), Some(body)) {
                Ok(t) => show(&t["ticket"])?,
                Err(e) if ticket.is_none() && e.to_string().contains("404") => say!("队列是空的。"),
                Err(e) => return Err(e),
            }
        }
        AgentCommand::Reply { ticket, text } => {
            anyhow::ensure!(!text.trim().is_empty(), "the reply is empty");
            call(
                Method::POST,
                format!("/v1/agent/chats/{ticket}/reply"),
                Some(serde_json::json!({ "text": text })),
            )?;
            say!("已发送给 #{ticket} 的客户。");
        }
        AgentCommand::Release { ticket } => {
            call(
                Method::POST,
                format!("/v1/agent/chats/{ticket}/release"),
                None,
            )?;
            say!("#{ticket} 已放回队列，保持原来的位置。");
        }
        AgentCommand::Close { ticket, summary } => {
            call(
                Method::POST,
                format!("/v1/agent/chats/{ticket}/close"),
                Some(serde_json::json!({ "summary": summary })),
            )?;
            say!("#{ticket} 已结束，客户回到机器人服务。");
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
