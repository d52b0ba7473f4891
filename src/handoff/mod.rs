//! The hand-off queue: chats escalated to human agents.
//!
//! States: `queued → claimed → closed` (then the bot serves again); a queued chat may be
//! `cancelled` by the customer or `returned` to the bot after a timeout, and a claimed
//! chat may be released back to the queue, keeping its place.
//!
//! Durability contract (the point of this module): every transition is one sled
//! transaction over the ticket, the queue order and the per-customer index, and is
//! flushed to disk before the call returns. A caller that got `Ok` may tell the
//! customer or agent; after a crash at any instant the store holds every acknowledged
//! transition and no chat is claimed by two agents (the claim re-reads the state inside
//! the transaction, and sled transactions are serializable).
//!
//! Threading: all methods take `&self` and may be called from any number of threads.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional, TransactionalTree};

use crate::error::{Error, Result};
use crate::store::{abort, from_json, to_json, tx_error, GroupFlush, Speaker, Turn, UserKey};

pub type TicketId = u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TicketState {
    Queued,
    Claimed {
        agent: String,
        at: i64,
    },
    Closed {
        agent: String,
        at: i64,
        #[serde(default)]
        summary: Option<String>,
    },
    Cancelled {
        at: i64,
    },
    /// Waited past the timeout and was handed back to the bot (if configured so).
    Returned {
        at: i64,
    },
}

impl TicketState {
    pub fn is_open(&self) -> bool {
        matches!(self, TicketState::Queued | TicketState::Claimed { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            TicketState::Queued => "queued",
            TicketState::Claimed { .. } => "claimed",
            TicketState::Closed { .. } => "closed",
            TicketState::Cancelled { .. } => "cancelled",
            TicketState::Returned { .. } => "returned to the bot",
        }
    }
}

/// An escalated chat, with what an agent needs to pick it up without asking again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub customer: UserKey,
    pub state: TicketState,
    pub enqueued_at: i64,
    /// Ordering key in the queue; kept on release so a released chat keeps its place.
    pub queue_key: u64,
    #[serde(default)]
    pub group: Option<String>,
    /// Why the chat was escalated, in words an agent reads ("客户要求转人工", …).
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub intent: Option<String>,
    /// The FAQ candidates the bot last offered, so the agent sees what did not help.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// The masked bot transcript up to the escalation.
    #[serde(default)]
    pub transcript: Vec<Turn>,
    /// Left outside service hours: a message for when people are back.
    #[serde(default)]
    pub left_message: bool,
    #[serde(default)]
    pub timeout_notified: bool,
    /// The customer's identity level when they asked for a person (never their card
    /// number): an agent sees whether the customer has verified a card.
    #[serde(default)]
    pub auth: crate::intents::AuthLevel,
}

/// A message exchanged after escalation (masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketMessage {
    pub seq: u64,
    pub at: i64,
    pub from: Speaker,
    #[serde(default)]
    pub agent: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    pub customer: UserKey,
    pub group: Option<String>,
    pub reason: String,
    pub intent: Option<String>,
    pub candidates: Vec<String>,
    pub transcript: Vec<Turn>,
    pub left_message: bool,
    pub now: i64,
}

impl TicketMessage {
    /// A message as it is stored: personal data masked.
    pub fn new(seq: u64, at: i64, from: Speaker, agent: Option<&str>, text: &str) -> Self {
        TicketMessage {
            seq,
            at,
            from,
            agent: agent.map(str::to_owned),
            text: crate::pii::mask(text).into_owned(),
        }
    }
}

/// A customer-side queue change that belongs to a conversation turn. The store applies
/// it in the same transaction as the turn (session, transcript, de-duplication record),
/// so a crash can never leave a queued message without its turn or the reverse: a
/// channel retry of the same message id then either finds the whole turn done or none
/// of it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueOp {
    /// Queue a new ticket (ids allocated by the engine). If the customer has an open
    /// ticket by the time of the commit, the commit fails with [`Error::Conflict`] and
    /// the engine decides the turn again.
    Enqueue(Ticket),
    /// A customer message to a queued or claimed chat.
    Post {
        ticket: TicketId,
        message: TicketMessage,
    },
    /// The customer leaves the queue.
    Cancel { ticket: TicketId, at: i64 },
}

pub trait HandoffQueue: Send + Sync {
    /// Queues the customer's chat, or returns their open ticket if they have one.
    fn enqueue(&self, req: EnqueueRequest) -> Result<Ticket>;
    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>>;
    fn open_ticket_for(&self, customer: &UserKey) -> Result<Option<Ticket>>;
    /// 1-based place among queued chats, `None` if the ticket is not queued.
    fn position(&self, id: TicketId) -> Result<Option<usize>>;
    /// Queued chats, oldest first.
    fn queued(&self, limit: usize) -> Result<Vec<Ticket>>;
    /// How many chats are queued (the place a new chat would take, minus one).
    fn queued_len(&self) -> Result<usize>;
    fn claimed_by(&self, agent: &str) -> Result<Vec<Ticket>>;
    /// Claims a queued chat; exactly one of several racing agents wins, the others get
    /// [`Error::Conflict`].
    fn claim(&self, id: TicketId, agent: &str, now: i64) -> Result<Ticket>;
    /// Claims the oldest queued chat this agent may take ([`Agent::may_handle`]): their
    /// tenant, and their groups or no group (a branch agent covers general chats, not
    /// other branches'); an agent without groups takes the oldest of all.
    fn claim_next(&self, agent: &Agent, now: i64) -> Result<Option<Ticket>>;
    /// Appends a message. Customers may write while queued or claimed (never dropped);
    /// an agent only to a chat they hold.
    fn post(
        &self,
        id: TicketId,
        from: Speaker,
        agent: Option<&str>,
        text: &str,
        now: i64,
    ) -> Result<TicketMessage>;
    fn messages(&self, id: TicketId, after_seq: u64) -> Result<Vec<TicketMessage>>;
    fn release(&self, id: TicketId, agent: &str, now: i64) -> Result<Ticket>;
    fn close(&self, id: TicketId, agent: &str, summary: Option<&str>, now: i64) -> Result<Ticket>;
    fn cancel(&self, id: TicketId, now: i64) -> Result<Ticket>;
    /// Queued chats older than `timeout_secs` not yet told so: marks them notified (or
    /// returns them to the bot when `return_to_bot`) and lists them for the channels.
    fn expire(&self, now: i64, timeout_secs: i64, return_to_bot: bool) -> Result<Vec<Ticket>>;
    /// Mean claim-to-close seconds over recently closed chats, for wait estimates.
    fn recent_handle_secs(&self) -> Result<Option<f64>>;
}

pub struct SledQueue {
    db: sled::Db,
    trees: QueueTrees,
    durable: Arc<GroupFlush>,
}

/// The queue's sled trees. The store opens the same trees to apply a turn's
/// [`QueueOp`] inside the turn's transaction.
#[derive(Clone)]
pub(crate) struct QueueTrees {
    pub(crate) tickets: sled::Tree,
    pub(crate) order: sled::Tree,
    pub(crate) open: sled::Tree,
    pub(crate) messages: sled::Tree,
    pub(crate) handled: sled::Tree,
}

impl QueueTrees {
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(QueueTrees {
            tickets: db.open_tree("handoff_tickets")?,
            order: db.open_tree("handoff_order")?,
            open: db.open_tree("handoff_open")?,
            messages: db.open_tree("handoff_messages")?,
            handled: db.open_tree("handoff_handled")?,
        })
    }
}

const RECENT_CLOSED: usize = 20;

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

fn open_key(customer: &UserKey) -> Vec<u8> {
    let mut k = b"v1/".to_vec();
    k.extend_from_slice(customer.tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(customer.user.as_bytes());
    k
}

fn message_key(id: TicketId, seq: u64) -> Vec<u8> {
    let mut key = id.to_be_bytes().to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Inserts `fresh` unless the customer already has an open ticket, which is returned
/// instead (one open chat per customer).
fn tx_enqueue(
    tickets: &TransactionalTree,
    order: &TransactionalTree,
    open: &TransactionalTree,
    fresh: &Ticket,
) -> TxResult<Ticket> {
    let key = open_key(&fresh.customer);
    if let Some(existing) = open.get(&key)? {
        if let Some(bytes) = tickets.get(&existing)? {
            let t: Ticket = from_json(&bytes).map_err(abort)?;
            if t.state.is_open() {
                return Ok(t);
            }
        }
    }
    tickets.insert(&fresh.id.to_be_bytes(), to_json(fresh).map_err(abort)?)?;
    order.insert(&fresh.queue_key.to_be_bytes(), &fresh.id.to_be_bytes())?;
    open.insert(key.as_slice(), &fresh.id.to_be_bytes())?;
    Ok(fresh.clone())
}

/// Appends a message after checking, inside the transaction, that the chat is open for
/// it: a message must not land on a chat that was closed a moment ago.
fn tx_post(
    tickets: &TransactionalTree,
    messages: &TransactionalTree,
    id: TicketId,
    msg: &TicketMessage,
) -> TxResult<()> {
    let raw = tickets
        .get(id.to_be_bytes())?
        .ok_or_else(|| abort(Error::NotFound(format!("hand-off ticket {id}"))))?;
    let t: Ticket = from_json(&raw).map_err(abort)?;
    match (&t.state, msg.from, msg.agent.as_deref()) {
        (TicketState::Queued | TicketState::Claimed { .. }, Speaker::Customer, _) => {}
        (TicketState::Claimed { agent: holder, .. }, Speaker::Agent, Some(a)) if holder == a => {}
        (TicketState::Claimed { .. }, Speaker::Agent, _) => {
            return Err(abort(Error::Conflict(format!(
                "hand-off ticket {id} is held by another agent"
            ))))
        }
        _ => return Err(abort(wrong_state(&t, "open for this message"))),
    }
    messages.insert(message_key(id, msg.seq), to_json(msg).map_err(abort)?)?;
    Ok(())
}

type Tx4<'a> = (
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
);

/// Runs `change` on the ticket and keeps the queue order and the per-customer index in
/// step with its new state. Trees: tickets, order, open, handled.
fn tx_transition(
    (tickets, order, open, handled): Tx4<'_>,
    id: TicketId,
    change: &dyn Fn(&mut Ticket) -> Result<()>,
    extra: Option<&(Vec<u8>, Vec<u8>)>,
) -> TxResult<Ticket> {
    let bytes = tickets
        .get(id.to_be_bytes())?
        .ok_or_else(|| abort(Error::NotFound(format!("hand-off ticket {id}"))))?;
    let mut t: Ticket = from_json(&bytes).map_err(abort)?;
    let was_queued = t.state == TicketState::Queued;
    change(&mut t).map_err(abort)?;
    let queued = t.state == TicketState::Queued;
    if was_queued && !queued {
        order.remove(&t.queue_key.to_be_bytes())?;
    } else if !was_queued && queued {
        order.insert(&t.queue_key.to_be_bytes(), &id.to_be_bytes())?;
    }
    if !t.state.is_open() {
        open.remove(open_key(&t.customer))?;
    }
    if let Some((k, v)) = extra {
        handled.insert(k.as_slice(), v.as_slice())?;
    }
    tickets.insert(&id.to_be_bytes(), to_json(&t).map_err(abort)?)?;
    Ok(t)
}

fn cancel_change(now: i64) -> impl Fn(&mut Ticket) -> Result<()> {
    move |t| {
        if t.state != TicketState::Queued {
            return Err(wrong_state(t, "queued"));
        }
        t.state = TicketState::Cancelled { at: now };
        Ok(())
    }
}

/// Applies a turn's queue change inside the turn's transaction (see [`QueueOp`]).
/// Trees: tickets, order, open, messages, handled.
pub(crate) fn tx_apply(
    (tickets, order, open, messages, handled): (
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
    ),
    op: &QueueOp,
) -> TxResult<()> {
    match op {
        QueueOp::Enqueue(fresh) => {
            let t = tx_enqueue(tickets, order, open, fresh)?;
            if t.id != fresh.id {
                return Err(abort(Error::Conflict(format!(
                    "customer already has open hand-off ticket {}",
                    t.id
                ))));
            }
        }
        QueueOp::Post { ticket, message } => tx_post(tickets, messages, *ticket, message)?,
        QueueOp::Cancel { ticket, at } => {
            tx_transition(
                (tickets, order, open, handled),
                *ticket,
                &cancel_change(*at),
                None,
            )?;
        }
    }
    Ok(())
}

impl SledQueue {
    /// A queue over `db` with its own flusher. [`crate::store::SledStore::queue`] gives
    /// one that shares the store's flusher, so turns and agent actions group-commit
    /// together.
    pub fn new(db: &sled::Db) -> Result<Self> {
        SledQueue::with_flush(db, Arc::new(GroupFlush::new(db.clone())))
    }

    pub(crate) fn with_flush(db: &sled::Db, durable: Arc<GroupFlush>) -> Result<Self> {
        Ok(SledQueue {
            db: db.clone(),
            trees: QueueTrees::open(db)?,
            durable,
        })
    }

    fn load(&self, id: TicketId) -> Result<Ticket> {
        self.ticket(id)?
            .ok_or_else(|| Error::NotFound(format!("hand-off ticket {id}")))
    }

    /// Runs `change` on the ticket inside a transaction with the queue index and the
    /// per-customer index, then makes it durable. `change` sees the current state, so
    /// checks in it are race-free.
    fn transition(
        &self,
        id: TicketId,
        change: impl Fn(&mut Ticket) -> Result<()>,
        extra: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Ticket> {
        let tr = &self.trees;
        let ticket = (&tr.tickets, &tr.order, &tr.open, &tr.handled)
            .transaction(|(tickets, order, open, handled)| {
                tx_transition((tickets, order, open, handled), id, &change, extra.as_ref())
            })
            .map_err(tx_error)?;
        self.durable.flush()?;
        Ok(ticket)
    }
}

/// Ticket ids are stored big-endian so sled orders them; a value of another length
/// means the index was damaged.
fn decode_id(bytes: &[u8], what: &str) -> Result<TicketId> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Store(format!("malformed {what}")))
}

fn wrong_state(t: &Ticket, wanted: &str) -> Error {
    Error::Conflict(format!(
        "hand-off ticket {} is {}, not {wanted}",
        t.id,
        t.state.name()
    ))
}

impl HandoffQueue for SledQueue {
    fn enqueue(&self, req: EnqueueRequest) -> Result<Ticket> {
        let id = self.db.generate_id()?;
        let queue_key = self.db.generate_id()?;
        let fresh = Ticket {
            id,
            customer: req.customer.clone(),
            state: TicketState::Queued,
            enqueued_at: req.now,
            queue_key,
            group: req.group.clone(),
            reason: req.reason.clone(),
            intent: req.intent.clone(),
            candidates: req.candidates.clone(),
            transcript: req.transcript.clone(),
            left_message: req.left_message,
            timeout_notified: false,
            auth: crate::intents::AuthLevel::default(),
        };
        let tr = &self.trees;
        let ticket = (&tr.tickets, &tr.order, &tr.open)
            .transaction(|(tickets, order, open)| tx_enqueue(tickets, order, open, &fresh))
            .map_err(tx_error)?;
        self.durable.flush()?;
        Ok(ticket)
    }

    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>> {
        self.trees
            .tickets
            .get(id.to_be_bytes())?
            .map(|v| from_json(&v))
            .transpose()
    }

    fn open_ticket_for(&self, customer: &UserKey) -> Result<Option<Ticket>> {
        let Some(id) = self.trees.open.get(open_key(customer))? else {
            return Ok(None);
        };
        let id = decode_id(&id, "hand-off index")?;
        Ok(self.ticket(id)?.filter(|t| t.state.is_open()))
    }

    fn position(&self, id: TicketId) -> Result<Option<usize>> {
        let Some(t) = self.ticket(id)? else {
            return Ok(None);
        };
        if t.state != TicketState::Queued {
            return Ok(None);
        }
        // O(chats ahead): sled has no order statistics; `benches/handoff` measures it.
        Ok(Some(
            self.trees.order.range(..t.queue_key.to_be_bytes()).count() + 1,
        ))
    }

    fn queued(&self, limit: usize) -> Result<Vec<Ticket>> {
        let mut out = Vec::new();
        for kv in self.trees.order.iter().take(limit) {
            let (_, id) = kv?;
            let id = decode_id(&id, "queue entry")?;
            if let Some(t) = self.ticket(id)? {
                out.push(t);
            }
        }
        Ok(out)
    }

    fn queued_len(&self) -> Result<usize> {
        Ok(self.trees.order.len())
    }

    fn claimed_by(&self, agent: &str) -> Result<Vec<Ticket>> {
        let mut out = Vec::new();
        for kv in self.trees.open.iter() {
            let (_, id) = kv?;
            let id = decode_id(&id, "hand-off index")?;
            if let Some(t) = self.ticket(id)? {
                if matches!(&t.state, TicketState::Claimed { agent: a, .. } if a == agent) {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    fn claim(&self, id: TicketId, agent: &str, now: i64) -> Result<Ticket> {
        self.transition(
            id,
            |t| {
                if t.state != TicketState::Queued {
                    return Err(wrong_state(t, "queued"));
                }
                t.state = TicketState::Claimed {
                    agent: agent.to_owned(),
                    at: now,
                };
                Ok(())
            },
            None,
        )
    }

    fn claim_next(&self, agent: &Agent, now: i64) -> Result<Option<Ticket>> {
        // Another agent may win a candidate between the scan and the claim: try the next.
        for candidate in self.queued(usize::MAX)? {
            if !agent.may_handle(&candidate) {
                continue;
            }
            match self.claim(candidate.id, &agent.id, now) {
                Ok(t) => return Ok(Some(t)),
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn post(
        &self,
        id: TicketId,
        from: Speaker,
        agent: Option<&str>,
        text: &str,
        now: i64,
    ) -> Result<TicketMessage> {
        let msg = TicketMessage::new(self.db.generate_id()?, now, from, agent, text);
        let tr = &self.trees;
        (&tr.tickets, &tr.messages)
            .transaction(|(tickets, messages)| tx_post(tickets, messages, id, &msg))
            .map_err(tx_error)?;
        self.durable.flush()?;
        Ok(msg)
    }

    fn messages(&self, id: TicketId, after_seq: u64) -> Result<Vec<TicketMessage>> {
        let mut start = id.to_be_bytes().to_vec();
        start.extend_from_slice(&after_seq.saturating_add(1).to_be_bytes());
        let mut end = id.to_be_bytes().to_vec();
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut out = Vec::new();
        for kv in self.trees.messages.range(start..=end) {
            out.push(from_json(&kv?.1)?);
        }
        Ok(out)
    }

    fn release(&self, id: TicketId, agent: &str, _now: i64) -> Result<Ticket> {
        self.transition(
            id,
            |t| match &t.state {
                TicketState::Claimed { agent: holder, .. } if holder == agent => {
                    t.state = TicketState::Queued;
                    Ok(())
                }
                _ => Err(wrong_state(t, &format!("claimed by {agent}"))),
            },
            None,
        )
    }

    fn close(&self, id: TicketId, agent: &str, summary: Option<&str>, now: i64) -> Result<Ticket> {
        let current = self.load(id)?;
        let handled = match &current.state {
            TicketState::Claimed { at, .. } => now.saturating_sub(*at).max(0),
            _ => 0,
        };
        let record = (
            self.db.generate_id()?.to_be_bytes().to_vec(),
            handled.to_be_bytes().to_vec(),
        );
        self.transition(
            id,
            |t| match &t.state {
                TicketState::Claimed { agent: holder, .. } if holder == agent => {
                    t.state = TicketState::Closed {
                        agent: agent.to_owned(),
                        at: now,
                        summary: summary.map(|s| crate::pii::mask(s).into_owned()),
                    };
                    Ok(())
                }
                _ => Err(wrong_state(t, &format!("claimed by {agent}"))),
            },
            Some(record),
        )
    }

    fn cancel(&self, id: TicketId, now: i64) -> Result<Ticket> {
        self.transition(id, cancel_change(now), None)
    }

    fn expire(&self, now: i64, timeout_secs: i64, return_to_bot: bool) -> Result<Vec<Ticket>> {
        let mut out = Vec::new();
        for t in self.queued(usize::MAX)? {
            if t.timeout_notified || now.saturating_sub(t.enqueued_at) < timeout_secs {
                continue;
            }
            let changed = self.transition(
                t.id,
                |t| {
                    if t.state != TicketState::Queued || t.timeout_notified {
                        return Err(wrong_state(t, "queued and not yet notified"));
                    }
                    t.timeout_notified = true;
                    if return_to_bot {
                        t.state = TicketState::Returned { at: now };
                    }
                    Ok(())
                },
                None,
            );
            match changed {
                Ok(t) => out.push(t),
                Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn recent_handle_secs(&self) -> Result<Option<f64>> {
        let mut total = 0f64;
        let mut n = 0usize;
        for kv in self.trees.handled.iter().rev().take(RECENT_CLOSED) {
            let (_, v) = kv?;
            let secs = i64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| Error::Store("malformed handling record".into()))?,
            );
            total += secs as f64;
            n += 1;
        }
        Ok((n > 0).then(|| total / n as f64))
    }
}

/// An agent allowed to take chats, from configuration.
///
/// The configuration never holds the token itself: either its SHA-256 (`token_sha256`,
/// from `kefu hash-token`), or the name of an environment variable (`token_env`) or a
/// file (`token_file`) that holds it, read once at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Branch codes or skills whose chats this agent takes (besides ungrouped chats);
    /// empty means every group.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The bank (tenant) whose chats this agent sees; `None` means every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

impl Agent {
    /// May this agent see and act on `t`? Tenant first, then group: an agent of the
    /// 0571 branch never opens a 0755 chat, whatever the call.
    pub fn may_handle(&self, t: &Ticket) -> bool {
        let tenant_ok = self.tenant.as_ref().is_none_or(|x| *x == t.customer.tenant);
        let group_ok = match &t.group {
            Some(g) => self.groups.is_empty() || self.groups.contains(g),
            None => true,
        };
        tenant_ok && group_ok
    }
}

/// SHA-256 of a secret as lower-case hex: what the configuration holds.
pub fn hash_token(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Resolves a secret given by hash, environment variable or file into its SHA-256.
/// Exactly one must be given; a token shorter than 16 characters is refused.
pub fn resolve_secret(
    what: &str,
    sha256: Option<&str>,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<[u8; 32]> {
    let refuse = |why: String| Error::InvalidInput(format!("{what}: {why}"));
    let plain = |token: String| -> Result<[u8; 32]> {
        let token = token.trim();
        if token.chars().count() < 16 {
            return Err(refuse("the token is shorter than 16 characters".into()));
        }
        use sha2::{Digest, Sha256};
        Ok(Sha256::digest(token.as_bytes()).into())
    };
    match (sha256, env, file) {
        (Some(h), None, None) => {
            let bytes = hex::decode(h.trim())
                .map_err(|_| refuse("token_sha256 must be 64 hex digits".into()))?;
            bytes
                .try_into()
                .map_err(|_| refuse("token_sha256 must be 64 hex digits".into()))
        }
        (None, Some(var), None) => match std::env::var(var) {
            Ok(v) => plain(v),
            Err(_) => Err(refuse(format!("environment variable {var} is not set"))),
        },
        (None, None, Some(path)) => {
            let v = std::fs::read_to_string(path)
                .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
            plain(v)
        }
        (None, None, None) => Err(refuse(
            "give token_sha256, token_env or token_file (the token itself never goes in the configuration)".into(),
        )),
        _ => Err(refuse(
            "give only one of token_sha256, token_env and token_file".into(),
        )),
    }
}

/// Token check for agents. No anonymous access: an empty registry admits nobody.
#[derive(Debug, Clone, Default)]
pub struct Agents {
    agents: Vec<(Agent, [u8; 32])>,
}

impl Agents {
    pub fn new(agents: Vec<Agent>) -> Result<Self> {
        let mut out = Vec::with_capacity(agents.len());
        for a in agents {
            let hash = resolve_secret(
                &format!("agent \"{}\"", a.id),
                a.token_sha256.as_deref(),
                a.token_env.as_deref(),
                a.token_file.as_deref(),
            )?;
            if out.iter().any(|(b, _): &(Agent, _)| b.id == a.id) {
                return Err(Error::InvalidInput(format!(
                    "agent \"{}\" is configured twice",
                    a.id
                )));
            }
            out.push((a, hash));
        }
        Ok(Agents { agents: out })
    }

    /// Compares hashes in constant time against every agent, so response timing does
    /// not reveal which agent or how much of a token was right.
    pub fn authenticate(&self, token: &str) -> Result<&Agent> {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (a, hash) in &self.agents {
            if bool::from(hash.ct_eq(&given)) {
                found = Some(a);
            }
        }
        found.ok_or_else(|| Error::Unauthorized("unknown agent token".into()))
    }

    pub fn get(&self, id: &str) -> Option<&Agent> {
        self.agents.iter().map(|(a, _)| a).find(|a| a.id == id)
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(user: &str, now: i64) -> EnqueueRequest {
        EnqueueRequest {
            customer: UserKey::new("bank", user),
            group: None,
            reason: "customer asked".into(),
            intent: Some("handoff".into()),
            candidates: vec![],
            transcript: vec![],
            left_message: false,
            now,
        }
    }

    fn queue() -> (tempfile::TempDir, SledQueue) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let q = SledQueue::new(&db).unwrap();
        (dir, q)
    }

    #[test]
    fn full_lifecycle_and_positions() {
        let (_d, q) = queue();
        let a = q.enqueue(req("a", 10)).unwrap();
        let b = q.enqueue(req("b", 11)).unwrap();
        assert_eq!(
            q.enqueue(req("a", 12)).unwrap().id,
            a.id,
            "one open ticket per customer"
        );
        assert_eq!(q.position(a.id).unwrap(), Some(1));
        assert_eq!(q.position(b.id).unwrap(), Some(2));
        q.post(a.id, Speaker::Customer, None, "还在吗", 13).unwrap();
        let claimed = q.claim(a.id, "agent1", 20).unwrap();
        assert!(matches!(claimed.state, TicketState::Claimed { .. }));
        assert_eq!(q.position(b.id).unwrap(), Some(1));
        assert!(q
            .post(a.id, Speaker::Agent, Some("agent2"), "hi", 21)
            .is_err());
        q.post(
            a.id,
            Speaker::Agent,
            Some("agent1"),
            "您好，我是客服小王",
            21,
        )
        .unwrap();
        let released = q.release(a.id, "agent1", 22).unwrap();
        assert_eq!(released.state, TicketState::Queued);
        assert_eq!(
            q.position(a.id).unwrap(),
            Some(1),
            "a released chat keeps its place"
        );
        q.claim(a.id, "agent2", 23).unwrap();
        let closed = q.close(a.id, "agent2", Some("已解答"), 83).unwrap();
        assert!(matches!(closed.state, TicketState::Closed { .. }));
        assert!(q.open_ticket_for(&a.customer).unwrap().is_none());
        assert_eq!(q.recent_handle_secs().unwrap(), Some(60.0));
        let texts: Vec<String> = q
            .messages(a.id, 0)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, vec!["还在吗", "您好，我是客服小王"]);
        assert!(q.post(a.id, Speaker::Customer, None, "late", 90).is_err());
        // A new escalation after closing gets a new ticket.
        assert_ne!(q.enqueue(req("a", 100)).unwrap().id, a.id);
    }

    #[test]
    fn cancel_and_wrong_transitions() {
        let (_d, q) = queue();
        let a = q.enqueue(req("a", 1)).unwrap();
        assert!(matches!(
            q.close(a.id, "x", None, 2),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(q.release(a.id, "x", 2), Err(Error::Conflict(_))));
        q.cancel(a.id, 3).unwrap();
        assert!(matches!(q.cancel(a.id, 4), Err(Error::Conflict(_))));
        assert!(matches!(q.claim(a.id, "x", 4), Err(Error::Conflict(_))));
        assert!(matches!(q.claim(999, "x", 4), Err(Error::NotFound(_))));
        assert!(q.queued(10).unwrap().is_empty());
    }

    #[test]
    fn racing_claims_have_exactly_one_winner() {
        let (_d, q) = queue();
        let q = std::sync::Arc::new(q);
        for round in 0..20 {
            let t = q.enqueue(req(&format!("u{round}"), round)).unwrap();
            let winners: usize = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|agent| {
                        let q = q.clone();
                        s.spawn(move || q.claim(t.id, &format!("agent{agent}"), round).is_ok())
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| usize::from(h.join().unwrap()))
                    .sum()
            });
            assert_eq!(winners, 1, "round {round}");
        }
    }

    #[test]
    fn agents_take_chats_of_their_groups_or_without_a_group() {
        let (_d, q) = queue();
        let mut other = req("hz", 1);
        other.group = Some("0571".into());
        let hz = q.enqueue(other).unwrap();
        let mut mine = req("sz", 2);
        mine.group = Some("0755".into());
        let sz = q.enqueue(mine).unwrap();
        let general = q.enqueue(req("any", 3)).unwrap();
        let mut shenzhen = agent("sz-agent", "long-enough-token-1");
        shenzhen.groups = vec!["0755".to_owned()];
        assert_eq!(q.claim_next(&shenzhen, 4).unwrap().unwrap().id, sz.id);
        assert_eq!(q.claim_next(&shenzhen, 4).unwrap().unwrap().id, general.id);
        assert!(
            q.claim_next(&shenzhen, 4).unwrap().is_none(),
            "not another branch's chat"
        );
        let head = agent("head-office", "long-enough-token-2");
        assert_eq!(q.claim_next(&head, 5).unwrap().unwrap().id, hz.id);
    }

    #[test]
    fn timeouts_notify_once_or_return_to_bot() {
        let (_d, q) = queue();
        let a = q.enqueue(req("a", 0)).unwrap();
        let b = q.enqueue(req("b", 500)).unwrap();
        let expired = q.expire(700, 600, false).unwrap();
        assert_eq!(expired.iter().map(|t| t.id).collect::<Vec<_>>(), vec![a.id]);
        assert!(q.expire(800, 600, false).unwrap().is_empty(), "told once");
        assert_eq!(q.position(a.id).unwrap(), Some(1), "still queued");
        let returned = q.expire(1200, 600, true).unwrap();
        assert_eq!(returned[0].id, b.id);
        assert!(matches!(returned[0].state, TicketState::Returned { .. }));
        assert!(q.open_ticket_for(&b.customer).unwrap().is_none());
    }

    fn agent(id: &str, token: &str) -> Agent {
        Agent {
            id: id.into(),
            name: "小王".into(),
            token_sha256: Some(hash_token(token)),
            token_env: None,
            token_file: None,
            groups: vec![],
            tenant: None,
        }
    }

    #[test]
    fn agents_need_a_known_token() {
        let agents = Agents::new(vec![agent("a1", "0123456789abcdef-secret")]).unwrap();
        assert_eq!(
            agents.authenticate("0123456789abcdef-secret").unwrap().id,
            "a1"
        );
        assert!(agents.authenticate("0123456789abcdef-secreT").is_err());
        assert!(agents.authenticate("").is_err());
        assert!(Agents::default().authenticate("anything").is_err());
        let mut bad = agent("x", "whatever-long-enough");
        bad.token_sha256 = Some("abc".into());
        assert!(Agents::new(vec![bad]).is_err());
        let mut none = agent("x", "whatever-long-enough");
        none.token_sha256 = None;
        let err = Agents::new(vec![none]).unwrap_err().to_string();
        assert!(err.contains("never goes in the configuration"), "{err}");
        assert!(Agents::new(vec![
            agent("a", "long-enough-token-1"),
            agent("a", "long-enough-token-2")
        ])
        .is_err());
    }

    #[test]
    fn tokens_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "file-token-0123456789\n").unwrap();
        let mut a = agent("f", "unused");
        a.token_sha256 = None;
        a.token_file = Some(f);
        let agents = Agents::new(vec![a]).unwrap();
        assert!(agents.authenticate("file-token-0123456789").is_ok());
        std::fs::write(dir.path().join("short"), "short").unwrap();
        let mut s = agent("s", "unused");
        s.token_sha256 = None;
        s.token_file = Some(dir.path().join("short"));
        assert!(Agents::new(vec![s])
            .unwrap_err()
            .to_string()
            .contains("shorter than 16"));
        let mut e = agent("e", "unused");
        e.token_sha256 = None;
        e.token_env = Some("KEFU_TEST_SURELY_UNSET_VARIABLE".into());
        assert!(Agents::new(vec![e])
            .unwrap_err()
            .to_string()
            .contains("is not set"));
    }

    #[test]
    fn agents_see_only_their_tenant_and_groups() {
        let t = |tenant: &str, group: Option<&str>| Ticket {
            id: 1,
            customer: UserKey::new(tenant, "u"),
            state: TicketState::Queued,
            enqueued_at: 0,
            queue_key: 1,
            group: group.map(str::to_owned),
            reason: String::new(),
            intent: None,
            candidates: vec![],
            transcript: vec![],
            left_message: false,
            timeout_notified: false,
            auth: crate::intents::AuthLevel::default(),
        };
        let mut hz = agent("hz", "long-enough-token-1");
        hz.groups = vec!["0571".into()];
        hz.tenant = Some("bank".into());
        assert!(hz.may_handle(&t("bank", Some("0571"))));
        assert!(hz.may_handle(&t("bank", None)));
        assert!(!hz.may_handle(&t("bank", Some("0755"))));
        assert!(!hz.may_handle(&t("other-bank", Some("0571"))));
        let head = agent("head", "long-enough-token-2");
        assert!(head.may_handle(&t("other-bank", Some("0755"))));
    }
}
