//! The conversation engine: one customer message in, one structured reply out.
//!
//! [`Engine::handle`] is the whole flow of a message, in the order of the design card:
//! 1. normalize and validate the text;
//! 2. return the stored reply if this message id was already processed (channel retries);
//! 3. load the session and decide, first match wins:
//!    a. the chat is with the hand-off queue → relay, cancel, or report the place;
//!    b. a numbered list is pending and the message is a number → resolve it;
//!    c. an intent rule matches → act (hand-off, feedback, greeting, account actions);
//!    d. otherwise retrieval → answer + related / ask back / fallback;
//! 4. commit session, masked transcript, events and the reply in one flushed write.
//!
//! Architecture invariant: no channel types here. The engine knows no HTTP, JSON
//! protocol or WeChat XML; it is deterministic given the knowledge base, intents, store
//! contents and the message (including its timestamp), so tests need no network or clock.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset};

pub mod account;

use crate::banking::{BackendKind, BankingBackend};

use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::handoff::{Agents, HandoffQueue, QueueOp, Ticket, TicketId, TicketMessage, TicketState};
use crate::intents::{Action, IntentMatch, IntentSet};
use crate::knowledge::bundle::ContentBundle;
use crate::knowledge::wording::Wording;
use crate::knowledge::{KnowledgeBase, Summary};
use crate::pii::mask;
use crate::retrieval::dense::Embeddings;
use crate::retrieval::{Audience, Band, Ranking, Retriever};
use crate::store::{
    from_json, to_json, Event, EventKind, Menu, MenuItem, Session, SledStore, Speaker, Store, Turn,
    TurnCommit, UserKey,
};
use crate::text::{parse_choice, search_form};

/// A customer message as a channel hands it over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The bank (or deployment) the customer belongs to.
    pub tenant: String,
    /// The customer's branch code, if known: branch entries answer only them.
    #[serde(default)]
    pub branch: Option<String>,
    pub user: String,
    /// Where it came from ("wechat", "web", "terminal"); informational only.
    #[serde(default)]
    pub channel: String,
    pub text: String,
    /// The channel's id for the message; the same id twice is processed once.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Unix seconds when the channel received it.
    pub at: i64,
    /// A channel event instead of (or besides) typed text: following the account, a menu
    /// button bound to an entry, a shared location.
    #[serde(default)]
    pub event: Option<ChannelEvent>,
}

/// Things a channel reports that are not typed text. The channel maps its own protocol
/// (WeChat `subscribe`, `CLICK` keys, `LOCATION`) onto these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ChannelEvent {
    /// The customer followed the account or opened the chat: show the welcome menu.
    Subscribe,
    /// A menu button bound to a knowledge-base entry.
    ShowEntry { id: String },
    /// The customer shared a location (for the branch search).
    Location {
        latitude: f64,
        longitude: f64,
        #[serde(default)]
        label: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// A knowledge-base answer.
    Answer,
    /// "您是不是想问" with numbered candidates.
    Clarify,
    /// Nothing matched.
    Fallback,
    Welcome,
    /// An intent's reply (thanks, feedback, account actions).
    Intent,
    /// The chat was escalated, or its queue status.
    Handoff,
    /// Passed to the agent holding the chat; the bot says nothing.
    Relayed,
    /// Input problems and menu misuse.
    Notice,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyOption {
    pub number: usize,
    pub label: String,
    /// The knowledge-base entry behind the option (none for 转人工).
    #[serde(default)]
    pub entry: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffStatus {
    pub ticket: TicketId,
    pub state: String,
    #[serde(default)]
    pub position: Option<usize>,
    #[serde(default)]
    pub wait_minutes: Option<u32>,
}

/// A structured reply; channels render it (numbered text for WeChat and terminals,
/// buttons on a web page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub kind: ReplyKind,
    pub text: String,
    #[serde(default)]
    pub options_title: Option<String>,
    #[serde(default)]
    pub options: Vec<ReplyOption>,
    /// The knowledge-base entry answered, if any.
    #[serde(default)]
    pub entry: Option<String>,
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub handoff: Option<HandoffStatus>,
}

impl Reply {
    /// A plain reply (channels build notices of their own with it).
    pub fn new_public(kind: ReplyKind, text: impl Into<String>) -> Self {
        Reply::new(kind, text)
    }

    fn new(kind: ReplyKind, text: impl Into<String>) -> Self {
        Reply {
            kind,
            text: text.into(),
            options_title: None,
            options: Vec::new(),
            entry: None,
            intent: None,
            handoff: None,
        }
    }

    fn with_options(mut self, title: &str, items: &[MenuItem]) -> Self {
        if !items.is_empty() {
            self.options_title = Some(title.to_owned());
            self.options = items
                .iter()
                .enumerate()
                .map(|(i, item)| ReplyOption {
                    number: i + 1,
                    label: item.label().to_owned(),
                    entry: match item {
                        MenuItem::Entry { id, .. } => Some(id.clone()),
                        MenuItem::Handoff { .. } => None,
                    },
                })
                .collect();
        }
        self
    }

    /// The reply as plain text with numbered options (WeChat, terminal, SMS).
    pub fn plain_text(&self) -> String {
        let mut out = self.text.clone();
        if let Some(title) = &self.options_title {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(title);
            for o in &self.options {
                out.push_str(&format!("\n{}. {}", o.number, o.label));
            }
        }
        out
    }
}

/// What the engine serves from; replaced whole on reload or publish, so a message in
/// flight finishes on the knowledge it started with.
struct Knowledge {
    retriever: Retriever,
    intents: Arc<IntentSet>,
    /// The content version serving ([`ContentBundle::version`], or "local" for a
    /// directory loaded without one).
    version: String,
}

pub struct Engine {
    knowledge: RwLock<Arc<Knowledge>>,
    store: Arc<dyn Store>,
    queue: Arc<dyn HandoffQueue>,
    agents: Agents,
    config: EngineConfig,
    /// The bank's system for account actions (see `account`).
    banking: Arc<dyn BankingBackend>,
    /// The bank's embedding service (`[embeddings]`), shared by every knowledge base
    /// this engine loads, so its vector cache carries over a publish.
    embeddings: Option<Arc<Embeddings>>,
    /// When the last [`Engine::retry_embeddings`] attempt started; held during one.
    embed_retry: Mutex<Option<std::time::Instant>>,
    /// Which customers bound which bank customer's card, for transaction alerts.
    bindings: Option<account::BindingIndex>,
    /// Striped per-customer locks: one customer's messages are handled one at a time
    /// (a session is read, changed and written), different customers in parallel.
    locks: Vec<Mutex<()>>,
    /// The store's publication stamp of the content serving (see
    /// [`Engine::refresh_published`]); 0 when none was seen.
    published_seen: std::sync::atomic::AtomicU64,
}

/// A store, its queue, and the local sled database of what is not shared yet.
type OpenedStore = (Arc<dyn Store>, Arc<dyn HandoffQueue>, sled::Db);

const LOCK_STRIPES: usize = 64;
const MAX_ID_LEN: usize = 128;
const TRANSCRIPT_FOR_AGENT: usize = 50;
/// 2000-01-01 and 2100-01-01 (UTC).
const MIN_TIME: i64 = 946_684_800;
const MAX_TIME: i64 = 4_102_444_800;

/// How often [`Engine::retry_embeddings`] asks a service that failed.
const EMBED_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The embedding cache goes in the data directory unless the configuration says where.
fn with_cache_dir(mut config: EngineConfig, data: Option<&Path>) -> EngineConfig {
    if config.embeddings.cache_dir.is_none() {
        config.embeddings.cache_dir = data.map(|d| d.join("embeddings"));
    }
    config
}

impl Engine {
    pub fn new(
        knowledge_base: KnowledgeBase,
        intents: IntentSet,
        store: Arc<dyn Store>,
        queue: Arc<dyn HandoffQueue>,
        config: EngineConfig,
    ) -> Result<Self> {
        let embeddings = Embeddings::from_config(&config.embeddings, None)?;
        let retriever = Retriever::with_embeddings(
            Arc::new(knowledge_base),
            config.retrieval.clone(),
            embeddings.clone(),
        )?;
        let agents = Agents::new(config.handoff.agents.clone())?;
        Ok(Engine {
            embeddings,
            embed_retry: Mutex::new(None),
            knowledge: RwLock::new(Arc::new(Knowledge {
                retriever,
                intents: Arc::new(intents),
                version: "local".into(),
            })),
            store,
            queue,
            agents,
            config,
            // Built without a bank: account actions answer "unavailable", never panic.
            banking: Arc::new(crate::banking::NotConnected),
            bindings: None,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            published_seen: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The same engine on another banking backend (tests inject slow or failing ones).
    pub fn with_banking(mut self, banking: Arc<dyn BankingBackend>) -> Self {
        self.banking = banking;
        self
    }

    pub fn banking(&self) -> &Arc<dyn BankingBackend> {
        &self.banking
    }

    /// Loads content from directories and opens the store: a sled directory, or a
    /// temporary store when `data` is `None`.
    pub fn open(
        kb_dir: &Path,
        intents_dir: &Path,
        data: Option<&Path>,
        config: EngineConfig,
    ) -> Result<Self> {
        let kb = KnowledgeBase::load_dir(kb_dir)?;
        let intents = if intents_dir.is_dir() {
            IntentSet::load_dir(intents_dir)?
        } else {
            IntentSet::default()
        };
        let store = match data {
            Some(dir) => SledStore::open(dir)?,
            None => SledStore::temporary()?,
        };
        Engine::assemble(kb, intents, store, with_cache_dir(config, data))
    }

    /// The engine over a sled store: queue, banking backend (from the configuration)
    /// and binding index all live in that one store.
    fn assemble(
        kb: KnowledgeBase,
        intents: IntentSet,
        store: SledStore,
        config: EngineConfig,
    ) -> Result<Self> {
        let queue = store.queue()?;
        let db = store.db().clone();
        Engine::assemble_on(kb, intents, Arc::new(store), Arc::new(queue), &db, config)
    }

    /// The engine over any store and queue; the demo banking backend and the binding
    /// index live in the sled database `local` (with PostgreSQL, a per-process
    /// temporary one: they are not shared between replicas yet).
    fn assemble_on(
        kb: KnowledgeBase,
        intents: IntentSet,
        store: Arc<dyn Store>,
        queue: Arc<dyn HandoffQueue>,
        local: &sled::Db,
        config: EngineConfig,
    ) -> Result<Self> {
        let banking: Arc<dyn BankingBackend> = match config.banking.backend {
            BackendKind::Demo => Arc::new(crate::banking::demo::DemoBank::open(local)?),
            BackendKind::Http => {
                Arc::new(crate::banking::http::HttpBank::new(&config.banking.http)?)
            }
        };
        let bindings = account::BindingIndex::open(local)?;
        let mut engine = Engine::new(kb, intents, store, queue, config)?.with_banking(banking);
        engine.bindings = Some(bindings);
        Ok(engine)
    }

    /// Opens the configured store: PostgreSQL when `[store] url` is set (with a
    /// temporary local sled database for what is not shared yet), else sled in `data`.
    fn open_store(data: Option<&Path>, config: &EngineConfig) -> Result<OpenedStore> {
        if let Some(url) = &config.store.url {
            let pg = Arc::new(crate::store::PgStore::connect(url)?);
            let local = SledStore::temporary()?;
            return Ok((pg.clone(), pg, local.db().clone()));
        }
        let store = match data {
            Some(dir) => SledStore::open(dir)?,
            None => SledStore::temporary()?,
        };
        let queue = store.queue()?;
        let db = store.db().clone();
        Ok((Arc::new(store), Arc::new(queue), db))
    }

    /// Opens the store and serves `content`; with `prefer_published`, the content last
    /// published into the store wins (a restart keeps what the content team published).
    pub fn open_bundle(
        content: &ContentBundle,
        data: Option<&Path>,
        config: EngineConfig,
        prefer_published: bool,
    ) -> Result<Self> {
        let config = with_cache_dir(config, data);
        let (store, queue, local) = Engine::open_store(data, &config)?;
        let stamp = store.published_version()?;
        let published = match store.published()? {
            Some(bytes) if prefer_published => Some(from_json::<ContentBundle>(&bytes)?),
            _ => None,
        };
        let content = published.as_ref().unwrap_or(content);
        let (kb, intents) = content.load()?;
        let mut engine = Engine::assemble_on(kb, intents, store, queue, &local, config)?;
        // Publications from now on are loaded (`refresh_published`); the one already in
        // the store was used or, with explicit content, deliberately not.
        engine.published_seen = std::sync::atomic::AtomicU64::new(stamp.unwrap_or(0));
        if let Some(k) = Arc::get_mut(
            engine
                .knowledge
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()),
        ) {
            k.version = content.version();
        }
        Ok(engine)
    }

    /// Reloads content. On any error the engine keeps serving the last good knowledge
    /// base and intents, and the error says what to fix.
    pub fn reload(&self, kb_dir: &Path, intents_dir: &Path) -> Result<Summary> {
        let kb = KnowledgeBase::load_dir(kb_dir)?;
        let intents = if intents_dir.is_dir() {
            IntentSet::load_dir(intents_dir)?
        } else {
            IntentSet::default()
        };
        self.install(kb, intents, "local".into())
    }

    /// Validates `content`, builds its index, stores it durably (a restart serves it),
    /// then swaps it in. Messages in flight finish on the old knowledge base; on any
    /// error the old one keeps serving and nothing is stored.
    pub fn publish(&self, content: &ContentBundle) -> Result<Summary> {
        let (kb, intents) = content.load()?;
        let retriever = self.retriever(kb)?;
        self.store.set_published(&to_json(content)?)?;
        let summary = retriever.knowledge_base().summary();
        *self.knowledge.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Knowledge {
            retriever,
            intents: Arc::new(intents),
            version: content.version(),
        });
        Ok(summary)
    }

    /// Serves what another replica published: when the store's publication stamp
    /// differs from the one this engine serves, loads the published content and swaps
    /// it in. Cheap when nothing changed (one small read); a no-op on stores without
    /// stamps (sled: one process publishes and serves). Returns whether it swapped.
    pub fn refresh_published(&self) -> Result<bool> {
        use std::sync::atomic::Ordering;
        let Some(stamp) = self.store.published_version()? else {
            return Ok(false);
        };
        if stamp == self.published_seen.load(Ordering::Acquire) {
            return Ok(false);
        }
        let Some(bytes) = self.store.published()? else {
            return Ok(false);
        };
        let content: ContentBundle = from_json(&bytes)?;
        // This replica's own publication is serving already: no second index build.
        if content.version() != self.version() {
            let (kb, intents) = content.load()?;
            self.install(kb, intents, content.version())?;
        }
        self.published_seen.store(stamp, Ordering::Release);
        Ok(true)
    }

    fn install(&self, kb: KnowledgeBase, intents: IntentSet, version: String) -> Result<Summary> {
        let summary = kb.summary();
        let retriever = self.retriever(kb)?;
        let fresh = Arc::new(Knowledge {
            retriever,
            intents: Arc::new(intents),
            version,
        });
        *self.knowledge.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(summary)
    }

    /// The retriever for `kb`, with this engine's embedding service.
    fn retriever(&self, kb: KnowledgeBase) -> Result<Retriever> {
        Retriever::with_embeddings(
            Arc::new(kb),
            self.config.retrieval.clone(),
            self.embeddings.clone(),
        )
    }

    /// `off`, `ready` or `lexical`: whether the knowledge base serving ranks with the
    /// embedding service's vectors (see `/healthz`).
    pub fn embeddings_state(&self) -> &'static str {
        let k = self.current();
        if k.retriever.embeddings().is_none() {
            "off"
        } else if k.retriever.lacks_vectors() {
            "lexical"
        } else {
            "ready"
        }
    }

    /// When the embedding service was down as the serving knowledge base loaded (it
    /// ranks lexically meanwhile), tries to embed it again and swaps in the result.
    /// Cheap otherwise. The server's background duties call it; returns whether it
    /// swapped.
    pub fn retry_embeddings(&self) -> Result<bool> {
        let current = self.current();
        if !current.retriever.lacks_vectors() {
            return Ok(false);
        }
        // One attempt at a time, at most one per EMBED_RETRY_EVERY: a service that is
        // down is not hammered, and a slow one does not pile up blocked threads.
        let Ok(mut last) = self.embed_retry.try_lock() else {
            return Ok(false);
        };
        if last.is_some_and(|t| t.elapsed() < EMBED_RETRY_EVERY) {
            return Ok(false);
        }
        *last = Some(std::time::Instant::now());
        // Ask the service first: while it is down, no index is rebuilt for nothing.
        let Some(service) = current.retriever.embeddings() else {
            return Ok(false);
        };
        if let Err(e) = current.retriever.embed_questions(service) {
            tracing::debug!(error = %e, "embedding service still failing");
            return Ok(false);
        }
        // Every vector is cached now: this build embeds nothing.
        let retriever = Retriever::with_embeddings(
            current.retriever.knowledge_base().clone(),
            self.config.retrieval.clone(),
            self.embeddings.clone(),
        )?;
        if retriever.lacks_vectors() {
            return Ok(false);
        }
        let mut slot = self.knowledge.write().unwrap_or_else(|p| p.into_inner());
        // A publish in the meantime wins: it embedded its own content.
        if !Arc::ptr_eq(&slot, &current) {
            return Ok(false);
        }
        *slot = Arc::new(Knowledge {
            retriever,
            intents: current.intents.clone(),
            version: current.version.clone(),
        });
        tracing::info!("embedding service answered; the knowledge base ranks with vectors again");
        Ok(true)
    }

    /// Unanswered and asked-back questions, grouped, for the content team.
    pub fn unanswered(&self) -> Result<Vec<crate::report::UnansweredGroup>> {
        let k = self.current();
        Ok(crate::report::unanswered(
            &self.store.events()?,
            k.retriever.analyzer(),
        ))
    }

    /// The content version serving now.
    pub fn version(&self) -> String {
        self.current().version.clone()
    }

    /// Knowledge-base search for agents and editors: the best entries for `text` as
    /// (id, question, answer), without the bands a customer would get.
    pub fn search(
        &self,
        text: &str,
        branch: Option<&str>,
        today: time::Date,
        n: usize,
    ) -> Result<Vec<(String, String, String)>> {
        let k = self.current();
        let r = &k.retriever;
        let ranking = r.rank(text, Audience { branch, today })?;
        Ok(ranking
            .candidates
            .iter()
            .take(n)
            .filter_map(|c| r.entry(c.entry))
            .map(|e| (e.id.clone(), e.question.clone(), e.answer.clone()))
            .collect())
    }

    /// Messages of the customer's latest hand-off chat after `after_seq` (any speaker),
    /// with that chat: what a reconnecting stream replays. Nothing is marked delivered.
    pub fn messages_since(
        &self,
        key: &UserKey,
        after_seq: u64,
    ) -> Result<(Option<Ticket>, Vec<TicketMessage>)> {
        let Some(session) = self.store.session(key)? else {
            return Ok((None, Vec::new()));
        };
        let Some(id) = session.last_ticket else {
            return Ok((None, Vec::new()));
        };
        let ticket = self.queue.ticket(id)?;
        let messages = self.queue.messages(id, after_seq)?;
        Ok((ticket, messages))
    }

    fn current(&self) -> Arc<Knowledge> {
        self.knowledge
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn knowledge_summary(&self) -> Summary {
        self.current().retriever.knowledge_base().summary()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn queue(&self) -> &dyn HandoffQueue {
        self.queue.as_ref()
    }

    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn transcript(&self, key: &UserKey) -> Result<Vec<Turn>> {
        self.store.transcript(key)
    }

    /// Handles one customer message. Errors are for the channel (bad ids, a failing
    /// store); everything a customer can type gets a reply.
    pub fn handle(&self, msg: &InboundMessage) -> Result<Reply> {
        for (what, value) in [("tenant", &msg.tenant), ("user", &msg.user)] {
            if value.is_empty() || value.len() > MAX_ID_LEN || value.contains('\0') {
                return Err(Error::InvalidInput(format!(
                    "{what} must be 1-{MAX_ID_LEN} bytes without NUL characters"
                )));
            }
        }
        if msg
            .message_id
            .as_ref()
            .is_some_and(|id| id.len() > MAX_ID_LEN)
        {
            return Err(Error::InvalidInput(format!(
                "message_id must be at most {MAX_ID_LEN} bytes"
            )));
        }
        // Timestamps are subtracted (menu age, queue waits): keep them where that is safe.
        if !(MIN_TIME..=MAX_TIME).contains(&msg.at) {
            return Err(Error::InvalidInput(format!(
                "at must be a Unix time in seconds between {MIN_TIME} and {MAX_TIME}, got {}",
                msg.at
            )));
        }
        let key = UserKey::new(&msg.tenant, &msg.user);
        // An empty id is no id: as a key it would replay one reply to every message.
        let message_id = msg.message_id.as_deref().filter(|id| !id.is_empty());
        let _turn = self.lock(&key)?;
        if let Some(id) = message_id {
            if let Some(stored) = self.store.processed(&key, id)? {
                return from_json(&stored);
            }
        }
        // A turn whose queue change no longer applies at commit time (an agent claimed
        // or closed the chat in between) is decided again on the fresh state.
        let mut attempts = 0;
        loop {
            match self.turn(msg, &key, message_id) {
                Err(Error::Conflict(_)) if attempts < 3 => attempts += 1,
                done => return done,
            }
        }
    }

    /// Decides and commits one turn; the caller holds the customer's lock.
    fn turn(&self, msg: &InboundMessage, key: &UserKey, message_id: Option<&str>) -> Result<Reply> {
        let mut session = self.store.session(key)?.unwrap_or_default();
        let knowledge = self.current();
        let mut turn = TurnState {
            engine: self,
            knowledge: &knowledge,
            msg,
            key,
            events: Vec::new(),
            queue_op: None,
        };
        let reply = turn.decide(&mut session)?;
        session.updated_at = msg.at;
        let mut turns = vec![Turn {
            at: msg.at,
            from: Speaker::Customer,
            text: mask(&truncate_chars(&msg.text, 2000)).into_owned(),
            message_id: msg.message_id.clone(),
        }];
        if reply.kind != ReplyKind::Relayed {
            turns.push(Turn {
                at: msg.at,
                from: Speaker::Bot,
                text: mask(&reply.plain_text()).into_owned(),
                message_id: None,
            });
        }
        let stored = to_json(&reply)?;
        self.store.commit(TurnCommit {
            key,
            session: &session,
            turns: &turns,
            events: &turn.events,
            processed: message_id.map(|id| (id, stored.as_slice())),
            queue: turn.queue_op.as_ref(),
            at: msg.at,
        })?;
        Ok(reply)
    }

    /// Holds the customer for a whole turn: this process's stripe first, then the
    /// store's lock when other processes share the store (PostgreSQL replicas), so two
    /// messages of one customer reaching two replicas are handled one after the other.
    fn lock(
        &self,
        key: &UserKey,
    ) -> Result<(
        std::sync::MutexGuard<'_, ()>,
        Option<crate::store::CustomerLock>,
    )> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let stripe = &self.locks[(h.finish() % LOCK_STRIPES as u64) as usize];
        let local = stripe.lock().unwrap_or_else(|p| p.into_inner());
        let shared = self.store.lock_customer(key)?;
        Ok((local, shared))
    }

    /// Agent messages the customer has not been given yet, for the channel to deliver
    /// (the terminal prints them after each reply; a web page polls). They join the
    /// customer's transcript, and the delivery mark is committed before they are
    /// returned, so each is handed out once.
    pub fn outbox(&self, key: &UserKey) -> Result<Vec<TicketMessage>> {
        let _turn = self.lock(key)?;
        let Some(mut session) = self.store.session(key)? else {
            return Ok(Vec::new());
        };
        let Some(ticket) = session.last_ticket else {
            return Ok(Vec::new());
        };
        let pending: Vec<TicketMessage> = self
            .queue
            .messages(ticket, session.delivered_seq)?
            .into_iter()
            .filter(|m| m.from == Speaker::Agent)
            .collect();
        let Some(last) = pending.last() else {
            return Ok(Vec::new());
        };
        session.delivered_seq = last.seq;
        let turns: Vec<Turn> = pending
            .iter()
            .map(|m| Turn {
                at: m.at,
                from: Speaker::Agent,
                text: m.text.clone(),
                message_id: None,
            })
            .collect();
        self.store.commit(TurnCommit {
            key,
            session: &session,
            turns: &turns,
            events: &[],
            processed: None,
            queue: None,
            at: session.updated_at,
        })?;
        Ok(pending)
    }

    /// Records a notice the bot sends on its own (a transaction alert) in the customer's
    /// transcript. With `dedup_id`, a repeat of the same notice is recognised and not
    /// recorded (nor delivered) again: returns `false`.
    pub fn record_notice(
        &self,
        key: &UserKey,
        text: &str,
        dedup_id: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        let _turn = self.lock(key)?;
        if let Some(id) = dedup_id {
            if self.store.processed(key, id)?.is_some() {
                return Ok(false);
            }
        }
        let session = self.store.session(key)?.unwrap_or_default();
        let turns = [Turn {
            at,
            from: Speaker::Bot,
            text: mask(text).into_owned(),
            message_id: None,
        }];
        self.store.commit(TurnCommit {
            key,
            session: &session,
            turns: &turns,
            events: &[],
            processed: dedup_id.map(|id| (id, &b"null"[..])),
            queue: None,
            at,
        })?;
        Ok(true)
    }

    /// An agent ends a chat: the customer gets a closing line and the bot serves again.
    pub fn close_chat(
        &self,
        ticket: TicketId,
        agent: &str,
        summary: Option<&str>,
        now: i64,
    ) -> Result<Ticket> {
        self.queue.post(
            ticket,
            Speaker::Agent,
            Some(agent),
            &{
                let k = self.current();
                let w = k.retriever.knowledge_base().wording();
                w.say(&w.handoff_closed)
            },
            now,
        )?;
        self.queue.close(ticket, agent, summary, now)
    }

    /// Periodic duty for a server: tells customers whose queued chat passed the timeout.
    pub fn sweep_timeouts(&self, now: i64) -> Result<Vec<(UserKey, Reply)>> {
        let h = &self.config.handoff;
        let expired = self
            .queue
            .expire(now, h.queue_timeout_secs, h.timeout_returns_to_bot)?;
        let k = self.current();
        let w = k.retriever.knowledge_base().wording();
        Ok(expired
            .into_iter()
            .map(|t| {
                let text = if matches!(t.state, TicketState::Returned { .. }) {
                    w.say(&w.handoff_timeout_returned)
                } else {
                    w.say(&w.handoff_timeout_waiting)
                };
                (t.customer.clone(), Reply::new(ReplyKind::Handoff, text))
            })
            .collect())
    }
}

fn truncate_chars(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]).into(),
        None => s.into(),
    }
}

fn entry_item(e: &crate::knowledge::Entry) -> MenuItem {
    MenuItem::Entry {
        id: e.id.clone(),
        label: e.question.clone(),
    }
}

fn handoff_item(w: &Wording) -> MenuItem {
    MenuItem::Handoff {
        label: w.say(&w.handoff_label),
    }
}

/// One message being decided: what it may read, and the events it produces.
struct TurnState<'a> {
    engine: &'a Engine,
    knowledge: &'a Knowledge,
    msg: &'a InboundMessage,
    key: &'a UserKey,
    events: Vec<Event>,
    /// The turn's hand-off queue change, committed with the turn (see [`QueueOp`]).
    queue_op: Option<QueueOp>,
}

impl<'a> TurnState<'a> {
    /// The bot's own texts, from the knowledge base serving this turn.
    fn w(&self) -> &'a Wording {
        self.knowledge.retriever.knowledge_base().wording()
    }
}

impl TurnState<'_> {
    fn local_time(&self) -> OffsetDateTime {
        let offset = UtcOffset::from_hms(self.engine.config.utc_offset_hours, 0, 0)
            .unwrap_or(UtcOffset::UTC);
        OffsetDateTime::from_unix_timestamp(self.msg.at)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .to_offset(offset)
    }

    fn audience(&self) -> Audience<'_> {
        Audience {
            branch: self.msg.branch.as_deref(),
            today: self.local_time().date(),
        }
    }

    fn event(&mut self, kind: EventKind) {
        self.events.push(Event {
            at: self.msg.at,
            tenant: self.key.tenant.clone(),
            user: self.key.user.clone(),
            kind,
        });
    }

    /// Attaches a numbered list to a reply and keeps it in the session, with its time,
    /// so that the customer's next "2" resolves against exactly what they were shown.
    fn offer(
        &self,
        session: &mut Session,
        reply: Reply,
        title: &str,
        items: Vec<MenuItem>,
    ) -> Reply {
        session.menu = (!items.is_empty()).then(|| Menu {
            items: items.clone(),
            created_at: self.msg.at,
        });
        reply.with_options(title, &items)
    }

    fn decide(&mut self, session: &mut Session) -> Result<Reply> {
        if let Some(event) = &self.msg.event {
            return self.on_event(session, event);
        }
        // Nothing searchable (emoji, punctuation, whitespace) is not a question.
        if search_form(&self.msg.text).is_empty() {
            return Ok(Reply::new(
                ReplyKind::Notice,
                self.w().say(&self.w().empty_message),
            ));
        }
        let intent = self.knowledge.intents.classify_in_scope(
            &self.msg.text,
            self.audience().today,
            self.knowledge.retriever.knowledge_base().out_of_scope(),
        );

        // a. The chat is with the hand-off queue.
        if let Some(id) = session.handoff {
            match self.engine.queue.ticket(id)? {
                Some(t) if t.state.is_open() => {
                    return self.while_handed_off(session, t, intent.as_ref())
                }
                _ => session.handoff = None,
            }
        }

        let chars = self.msg.text.chars().count();
        let max = self.engine.config.max_message_chars;
        if chars > max {
            return Ok(Reply::new(
                ReplyKind::Notice,
                self.w().fill(
                    &self.w().too_long,
                    &[("chars", &chars.to_string()), ("max", &max.to_string())],
                ),
            ));
        }

        // An account step in progress (binding, a code, a confirmation, paging) takes
        // the message first; it lets 转人工 and unrelated messages through.
        if let Some(r) = self.account_pending(session, intent.as_ref())? {
            return Ok(r);
        }

        // b. A number answers the pending list.
        if let Some(n) = parse_choice(&self.msg.text) {
            return self.pick(session, n);
        }

        // c. Intents.
        if let Some(m) = intent {
            return self.act(session, m);
        }

        // d. Retrieval.
        self.retrieve(session)
    }

    /// Channel events. While a chat is with a person, events are not relayed (WeChat
    /// forwards only customer messages to its agents, and so does kefu).
    fn on_event(&mut self, session: &mut Session, event: &ChannelEvent) -> Result<Reply> {
        match event {
            ChannelEvent::Subscribe => Ok(self.welcome(session)),
            ChannelEvent::ShowEntry { id } => {
                match self.knowledge.retriever.knowledge_base().index_of(id) {
                    Some(i) => Ok(self.answer(session, i)),
                    None => Ok(Reply::new(
                        ReplyKind::Notice,
                        self.w().say(&self.w().entry_unavailable),
                    )),
                }
            }
            ChannelEvent::Location {
                latitude,
                longitude,
                ..
            } => Ok(self.account_location(session, *latitude, *longitude)),
        }
    }

    fn while_handed_off(
        &mut self,
        session: &mut Session,
        t: Ticket,
        intent: Option<&IntentMatch>,
    ) -> Result<Reply> {
        let now = self.msg.at;
        match &t.state {
            TicketState::Queued if intent.is_some_and(|m| m.action == Action::Cancel) => {
                self.queue_op = Some(QueueOp::Cancel {
                    ticket: t.id,
                    at: now,
                });
                session.handoff = None;
                let mut r = Reply::new(
                    ReplyKind::Handoff,
                    self.w().say(&self.w().handoff_cancelled),
                );
                r.handoff = Some(HandoffStatus {
                    ticket: t.id,
                    state: "cancelled".into(),
                    position: None,
                    wait_minutes: None,
                });
                Ok(r)
            }
            TicketState::Queued => {
                self.post_to_agent(t.id)?;
                let position = self.engine.queue.position(t.id)?;
                let mut r = self.queue_status(
                    &t,
                    position,
                    &self.w().say(&self.w().handoff_message_received),
                )?;
                if now - t.enqueued_at >= self.engine.config.handoff.queue_timeout_secs {
                    r.text.push_str(&self.w().say(&self.w().handoff_busy));
                }
                Ok(r)
            }
            _ => {
                self.post_to_agent(t.id)?;
                let mut r = Reply::new(ReplyKind::Relayed, "");
                r.handoff = Some(HandoffStatus {
                    ticket: t.id,
                    state: "claimed".into(),
                    position: None,
                    wait_minutes: None,
                });
                Ok(r)
            }
        }
    }

    /// The customer's message for the agent, committed with the turn.
    fn post_to_agent(&mut self, ticket: TicketId) -> Result<()> {
        let seq = self.engine.store.next_id()?;
        self.queue_op = Some(QueueOp::Post {
            ticket,
            message: TicketMessage::new(seq, self.msg.at, Speaker::Customer, None, &self.msg.text),
        });
        Ok(())
    }

    fn queue_status(&self, t: &Ticket, position: Option<usize>, lead: &str) -> Result<Reply> {
        let handle = self
            .engine
            .queue
            .recent_handle_secs()?
            .unwrap_or(self.engine.config.handoff.default_handle_secs as f64);
        let agents = self.engine.agents.len().max(1) as f64;
        let wait_minutes =
            position.map(|p| ((p as f64 * handle / agents) / 60.0).ceil().max(1.0) as u32);
        let mut text = lead.to_owned();
        if t.left_message {
            text.push_str(&self.w().say(&self.w().handoff_left_message));
        } else if let (Some(p), Some(m)) = (position, wait_minutes) {
            text.push_str(&self.w().fill(
                &self.w().handoff_place,
                &[("position", &p.to_string()), ("minutes", &m.to_string())],
            ));
        }
        text.push_str(&self.w().say(&self.w().handoff_cancel_hint));
        let mut r = Reply::new(ReplyKind::Handoff, text);
        r.handoff = Some(HandoffStatus {
            ticket: t.id,
            state: "queued".into(),
            position,
            wait_minutes,
        });
        Ok(r)
    }

    fn escalate(
        &mut self,
        session: &mut Session,
        reason: &str,
        intent: Option<&str>,
    ) -> Result<Reply> {
        let h = &self.engine.config.handoff;
        let local = self.local_time();
        let open = h.is_open_at(u32::from(local.hour()) * 60 + u32::from(local.minute()));
        let mut transcript = self.engine.store.transcript(self.key)?;
        let skip = transcript.len().saturating_sub(TRANSCRIPT_FOR_AGENT);
        transcript.drain(..skip);
        transcript.push(Turn {
            at: self.msg.at,
            from: Speaker::Customer,
            text: mask(&self.msg.text).into_owned(),
            message_id: self.msg.message_id.clone(),
        });
        let candidates = session
            .menu
            .as_ref()
            .map(|m| {
                m.items
                    .iter()
                    .filter_map(|i| match i {
                        MenuItem::Entry { label, .. } => Some(label.clone()),
                        MenuItem::Handoff { .. } => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The ticket is written with the turn (one transaction), so it is built here with
        // its ids allocated up front; an open ticket of this customer is reused.
        let (ticket, position) = match self.engine.queue.open_ticket_for(self.key)? {
            Some(t) => {
                let position = self.engine.queue.position(t.id)?;
                (t, position)
            }
            None => {
                let store = &self.engine.store;
                let fresh = Ticket {
                    id: store.next_id()?,
                    customer: self.key.clone(),
                    state: TicketState::Queued,
                    enqueued_at: self.msg.at,
                    queue_key: store.next_id()?,
                    group: self.msg.branch.clone(),
                    reason: reason.to_owned(),
                    intent: intent.map(str::to_owned),
                    candidates,
                    transcript,
                    left_message: !open,
                    timeout_notified: false,
                    auth: session.auth,
                };
                let position = self.engine.queue.queued_len()? + 1;
                self.queue_op = Some(QueueOp::Enqueue(fresh.clone()));
                (fresh, Some(position))
            }
        };
        if session.last_ticket != Some(ticket.id) {
            session.last_ticket = Some(ticket.id);
            session.delivered_seq = 0;
        }
        session.handoff = Some(ticket.id);
        session.menu = None;
        session.misses = 0;
        let lead = if open {
            self.w().say(&self.w().handoff_start)
        } else {
            self.w().fill(
                &self.w().handoff_closed_hours,
                &[("open", &h.open), ("close", &h.close)],
            )
        };
        let mut r = self.queue_status(&ticket, position, &lead)?;
        r.intent = intent.map(str::to_owned);
        Ok(r)
    }

    fn pick(&mut self, session: &mut Session, n: usize) -> Result<Reply> {
        let ttl = self.engine.config.menu_ttl_secs;
        let menu = match &session.menu {
            Some(m) if self.msg.at - m.created_at <= ttl => m.clone(),
            Some(_) => {
                session.menu = None;
                return Ok(Reply::new(
                    ReplyKind::Notice,
                    self.w().say(&self.w().menu_expired),
                ));
            }
            None => {
                return Ok(Reply::new(
                    ReplyKind::Notice,
                    self.w().say(&self.w().no_menu),
                ))
            }
        };
        let Some(item) = menu.items.get(n - 1) else {
            return Ok(Reply::new(
                ReplyKind::Notice,
                self.w().fill(
                    &self.w().out_of_range,
                    &[("max", &menu.items.len().to_string())],
                ),
            ));
        };
        match item {
            MenuItem::Entry { id, .. } => {
                let index = self.knowledge.retriever.knowledge_base().index_of(id);
                self.event(EventKind::MenuPick {
                    number: n,
                    entry: Some(id.clone()),
                });
                match index {
                    Some(i) => Ok(self.answer(session, i)),
                    None => Ok(Reply::new(
                        ReplyKind::Notice,
                        self.w().say(&self.w().entry_changed),
                    )),
                }
            }
            MenuItem::Handoff { .. } => {
                self.event(EventKind::MenuPick {
                    number: n,
                    entry: None,
                });
                self.escalate(session, "从菜单选择了转人工", None)
            }
        }
    }

    fn act(&mut self, session: &mut Session, m: IntentMatch) -> Result<Reply> {
        self.event(EventKind::Intent {
            name: m.name.clone(),
        });
        let mut reply = match m.action {
            Action::Handoff => return self.escalate(session, "客户要求转人工", Some(&m.name)),
            Action::Cancel => {
                let had_menu = session.menu.take().is_some();
                Reply::new(
                    ReplyKind::Intent,
                    if had_menu {
                        self.w().say(&self.w().cancelled_menu)
                    } else {
                        self.w().say(&self.w().cancelled_nothing)
                    },
                )
            }
            Action::Greeting => return Ok(self.welcome(session)),
            Action::Thanks => Reply::new(ReplyKind::Intent, self.w().say(&self.w().thanks)),
            Action::Satisfied | Action::Unsatisfied => {
                let positive = m.action == Action::Satisfied;
                match session.last_answer.take() {
                    Some(entry) => {
                        self.event(EventKind::Feedback { entry, positive });
                        if positive {
                            Reply::new(ReplyKind::Intent, self.w().say(&self.w().feedback_positive))
                        } else {
                            let reply = Reply::new(
                                ReplyKind::Intent,
                                self.w().say(&self.w().feedback_negative),
                            );
                            let w = self.w();
                            self.offer(
                                session,
                                reply,
                                &w.say(&w.choose_title),
                                vec![handoff_item(w)],
                            )
                        }
                    }
                    None => Reply::new(ReplyKind::Intent, self.w().say(&self.w().feedback_other)),
                }
            }
            action => self.account_action(session, action, &m),
        };
        reply.intent = Some(m.name);
        Ok(reply)
    }

    /// Account actions run through the banking backend (see `account`).
    fn account_action(&mut self, session: &mut Session, action: Action, m: &IntentMatch) -> Reply {
        self.account_intent(session, action, m)
    }

    fn welcome(&mut self, session: &mut Session) -> Reply {
        let r = &self.knowledge.retriever;
        let kb = r.knowledge_base();
        let audience = self.audience();
        let usable = |i: &usize| {
            kb.get(*i)
                .is_some_and(|e| e.is_active(audience.today) && e.visible_to(audience.branch))
        };
        let mut picks: Vec<usize> = self
            .engine
            .config
            .welcome
            .iter()
            .filter_map(|id| kb.index_of(id))
            .filter(usable)
            .collect();
        if picks.is_empty() {
            let mut seen = std::collections::HashSet::new();
            picks = (0..kb.len())
                .filter(usable)
                .filter(|&i| kb.get(i).is_some_and(|e| seen.insert(e.category.clone())))
                .take(5)
                .collect();
        }
        let items: Vec<MenuItem> = picks
            .into_iter()
            .filter_map(|i| kb.get(i))
            .map(entry_item)
            .collect();
        let reply = Reply::new(ReplyKind::Welcome, self.w().say(&self.w().welcome));
        self.offer(
            session,
            reply,
            &self.w().say(&self.w().welcome_title),
            items,
        )
    }

    fn answer(&mut self, session: &mut Session, entry: usize) -> Reply {
        self.answer_with(session, entry, &[])
    }

    /// The answer, then numbered questions: `near` first (the message's close
    /// runners-up, see [`Ranking::near_alternatives`]), then the entry's related ones,
    /// `retrieval.related` in all.
    fn answer_with(&mut self, session: &mut Session, entry: usize, near: &[usize]) -> Reply {
        let r = &self.knowledge.retriever;
        let Some(e) = r.entry(entry) else {
            return Reply::new(ReplyKind::Fallback, self.w().say(&self.w().fallback));
        };
        let n = r.config().related;
        let mut picks: Vec<usize> = near.iter().copied().filter(|&i| i != entry).collect();
        for i in r.related(entry, self.audience(), n) {
            if !picks.contains(&i) {
                picks.push(i);
            }
        }
        picks.truncate(n);
        let items: Vec<MenuItem> = picks
            .into_iter()
            .filter_map(|i| r.entry(i))
            .map(entry_item)
            .collect();
        session.last_answer = Some(e.id.clone());
        session.misses = 0;
        let mut reply = Reply::new(ReplyKind::Answer, e.answer.clone());
        reply.entry = Some(e.id.clone());
        self.offer(
            session,
            reply,
            &self.w().say(&self.w().related_title),
            items,
        )
    }

    fn retrieve(&mut self, session: &mut Session) -> Result<Reply> {
        let r = &self.knowledge.retriever;
        let ranking: Ranking = r.rank(&self.msg.text, self.audience())?;
        let top: Vec<(String, f32)> = ranking
            .candidates
            .iter()
            .take(3)
            .filter_map(|c| r.entry(c.entry).map(|e| (e.id.clone(), c.score)))
            .collect();
        let question = mask(&truncate_chars(&self.msg.text, 500)).into_owned();
        let reply = match (ranking.band, ranking.top()) {
            (Band::Confident, Some(answer)) => {
                let entry = answer.entry;
                let near: Vec<usize> = ranking
                    .near_alternatives()
                    .iter()
                    .map(|c| c.entry)
                    .collect();
                let near_ids: Vec<String> = near
                    .iter()
                    .filter_map(|&i| r.entry(i).map(|e| e.id.clone()))
                    .collect();
                let reply = self.answer_with(session, entry, &near);
                self.event(EventKind::Question {
                    text: question,
                    band: Band::Confident,
                    top,
                    answered: reply.entry.clone(),
                    near: near_ids,
                });
                return Ok(reply);
            }
            (Band::Uncertain, _) => {
                // What retrieval judged worth offering: one close candidate is a
                // confirmation, several real alternatives a list.
                let items: Vec<MenuItem> = ranking
                    .offered()
                    .into_iter()
                    .take(r.config().clarify.max(1))
                    .filter_map(|c| r.entry(c.entry))
                    .map(entry_item)
                    .collect();
                session.misses = 0;
                if let ([only], true) = (items.as_slice(), ranking.is_confirmation()) {
                    let w = self.w();
                    let reply = Reply::new(
                        ReplyKind::Clarify,
                        w.fill(&w.confirm, &[("question", only.label())]),
                    );
                    self.offer(session, reply, &w.say(&w.confirm_title), items)
                } else {
                    let reply = Reply::new(ReplyKind::Clarify, self.w().say(&self.w().clarify));
                    self.offer(
                        session,
                        reply,
                        &self.w().say(&self.w().clarify_title),
                        items,
                    )
                }
            }
            // The band is confident only with an eligible top; without one it falls back.
            (Band::NoMatch, _) | (Band::Confident, None) => {
                session.misses += 1;
                session.last_answer = None;
                if session.misses >= self.engine.config.fallbacks_before_offer {
                    let w = self.w();
                    let reply = Reply::new(ReplyKind::Fallback, w.say(&w.offer_handoff));
                    self.offer(
                        session,
                        reply,
                        &w.say(&w.choose_title),
                        vec![handoff_item(w)],
                    )
                } else {
                    session.menu = None;
                    Reply::new(ReplyKind::Fallback, self.w().say(&self.w().fallback))
                }
            }
        };
        self.event(EventKind::Question {
            text: question,
            band: ranking.band,
            top,
            answered: None,
            near: Vec::new(),
        });
        Ok(reply)
    }
}
