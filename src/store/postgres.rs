//! PostgreSQL store: several `kefu serve` replicas share sessions, transcripts,
//! de-duplication records and the hand-off queue through one database (issue 13).
//!
//! The engine is synchronous (it runs on tokio's blocking pool), so [`PgStore`] owns a
//! small tokio runtime of its own and a `deadpool-postgres` pool on it. Each trait call
//! spawns one future on that runtime and waits for it on a plain channel, which works
//! from any thread, including a thread of another runtime (where `block_on` would
//! panic). Futures therefore own their data: borrowed arguments are encoded first.
//!
//! Semantics match [`super::SledStore`] and [`crate::handoff::SledQueue`]:
//! - a turn is ONE transaction (session, transcript, events, de-duplication record and
//!   the turn's [`QueueOp`]), serialized per customer by a transaction-scoped advisory
//!   lock on a hash of tenant and user, so two replicas handle one customer's messages
//!   one after the other; a queue change that no longer applies rolls everything back
//!   and reports [`Error::Conflict`];
//! - a ticket changes state under its row lock (`SELECT … FOR UPDATE`), so of racing
//!   claims exactly one sees `queued`; `claim_next` skips rows another agent is
//!   claiming (`FOR UPDATE SKIP LOCKED`) instead of queueing behind them;
//! - durability is PostgreSQL's commit with `synchronous_commit = on` (set per
//!   connection), so [`Store::flush`] has nothing left to do.
//!
//! Values are the same JSON as in sled (read with `#[serde(default)]`), in `bytea`
//! columns; the columns beside them are copies the queries filter and order on.

use std::future::Future;
use std::sync::mpsc;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{from_json, to_json, Event, Session, Store, StoreSignal, Turn, TurnCommit, UserKey};
use crate::error::{Error, Result};
use crate::handoff::{
    Agent, EnqueueRequest, HandoffQueue, QueueOp, Ticket, TicketId, TicketMessage, TicketState,
};
use crate::store::Speaker;

/// Versioned schema changes, applied in order at start and recorded in
/// `kefu_schema`. Never edit a released step: add the next one.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r#"
CREATE SEQUENCE kefu_ids;
CREATE TABLE kefu_sessions (
    tenant text NOT NULL, user_id text NOT NULL, body bytea NOT NULL,
    PRIMARY KEY (tenant, user_id));
CREATE TABLE kefu_transcript (
    id bigserial PRIMARY KEY, tenant text NOT NULL, user_id text NOT NULL, body bytea NOT NULL);
CREATE INDEX kefu_transcript_customer ON kefu_transcript (tenant, user_id, id);
CREATE TABLE kefu_events (id bigserial PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE kefu_processed (
    tenant text NOT NULL, user_id text NOT NULL, message_id text NOT NULL,
    at bigint NOT NULL, reply bytea NOT NULL,
    PRIMARY KEY (tenant, user_id, message_id));
CREATE INDEX kefu_processed_at ON kefu_processed (at);
CREATE TABLE kefu_meta (name text PRIMARY KEY, value bytea NOT NULL, version bigint NOT NULL);
CREATE TABLE kefu_tickets (
    id bigint PRIMARY KEY, tenant text NOT NULL, user_id text NOT NULL,
    state text NOT NULL, agent text, grp text, queue_key bigint NOT NULL,
    enqueued_at bigint NOT NULL, timeout_notified boolean NOT NULL, body bytea NOT NULL);
-- The queue order: only queued rows, so place and length count the queue, not history.
CREATE INDEX kefu_tickets_queue ON kefu_tickets (queue_key) WHERE state = 'queued';
-- One open chat per customer, enforced by the database as well as by the code.
CREATE UNIQUE INDEX kefu_tickets_open ON kefu_tickets (tenant, user_id)
    WHERE state IN ('queued', 'claimed');
CREATE INDEX kefu_tickets_claimed ON kefu_tickets (agent) WHERE state = 'claimed';
CREATE TABLE kefu_ticket_messages (
    ticket bigint NOT NULL REFERENCES kefu_tickets (id), seq bigint NOT NULL,
    body bytea NOT NULL, PRIMARY KEY (ticket, seq));
CREATE TABLE kefu_handled (id bigserial PRIMARY KEY, secs bigint NOT NULL);
"#,
)];

/// Any fixed number: the advisory lock that serializes migrations of replicas starting
/// together.
const MIGRATION_LOCK: i64 = 0x6b65_6675_0001;
const RECENT_CLOSED: i64 = 20;
const PUBLISHED: &str = "published";

/// A [`Store`] and [`HandoffQueue`] on PostgreSQL. Cheap to share: wrap it in an `Arc`
/// and hand the same value to the engine as both.
pub struct PgStore {
    pool: Pool,
    /// Connections that hold customers' turn locks ([`Store::lock_customer`]). A pool
    /// of their own: turns waiting for work connections while holding every lock
    /// connection cannot starve each other.
    locks: Pool,
    /// Signals of the other replicas, from the `LISTEN kefu` connection ([`listen`]).
    signals: tokio::sync::broadcast::Sender<StoreSignal>,
    /// This store's random id in the signals it sends.
    origin: u64,
    /// `Some` until drop; shut down in the background so dropping inside another
    /// runtime does not panic.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The error with its causes ("error connecting to server: Connection refused"): the
/// driver's top-level message alone rarely says what to fix.
fn db_err(e: impl std::error::Error) -> Error {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    Error::Store(format!("postgres: {text}"))
}

/// Ids are `u64` in kefu and `bigint` in PostgreSQL; the sequence never exceeds i64.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Store(format!("negative id {v} in the database")))
}

fn state_name(s: &TicketState) -> &'static str {
    match s {
        TicketState::Queued => "queued",
        TicketState::Claimed { .. } => "claimed",
        TicketState::Closed { .. } => "closed",
        TicketState::Cancelled { .. } => "cancelled",
        TicketState::Returned { .. } => "returned",
    }
}

fn holder(s: &TicketState) -> Option<&str> {
    match s {
        TicketState::Claimed { agent, .. } => Some(agent),
        _ => None,
    }
}

/// A ticket state change, as data so the future that applies it owns it (see the
/// module comment). The checks are those of [`crate::handoff::SledQueue`].
#[derive(Debug, Clone)]
enum Change {
    Claim {
        agent: String,
        now: i64,
    },
    Release {
        agent: String,
    },
    Close {
        agent: String,
        summary: Option<String>,
        now: i64,
    },
    Cancel {
        now: i64,
    },
    Expire {
        now: i64,
        return_to_bot: bool,
    },
}

fn wrong_state(t: &Ticket, wanted: &str) -> Error {
    Error::Conflict(format!(
        "hand-off ticket {} is {}, not {wanted}",
        t.id,
        state_name(&t.state)
    ))
}

impl Change {
    /// Applies the change; returns the handling seconds to record when it closes a chat.
    fn apply(&self, t: &mut Ticket) -> Result<Option<i64>> {
        match self {
            Change::Claim { agent, now } => {
                if t.state != TicketState::Queued {
                    return Err(wrong_state(t, "queued"));
                }
                t.state = TicketState::Claimed {
                    agent: agent.clone(),
                    at: *now,
                };
            }
            Change::Release { agent } => {
                if holder(&t.state) != Some(agent) {
                    return Err(wrong_state(t, &format!("claimed by {agent}")));
                }
                t.state = TicketState::Queued;
            }
            Change::Close {
                agent,
                summary,
                now,
            } => {
                let TicketState::Claimed { agent: a, at } = &t.state else {
                    return Err(wrong_state(t, &format!("claimed by {agent}")));
                };
                if a != agent {
                    return Err(wrong_state(t, &format!("claimed by {agent}")));
                }
                let secs = now.saturating_sub(*at).max(0);
                t.state = TicketState::Closed {
                    agent: agent.clone(),
                    at: *now,
                    summary: summary.as_deref().map(|s| crate::pii::mask(s).into_owned()),
                };
                return Ok(Some(secs));
            }
            Change::Cancel { now } => {
                if t.state != TicketState::Queued {
                    return Err(wrong_state(t, "queued"));
                }
                t.state = TicketState::Cancelled { at: *now };
            }
            Change::Expire { now, return_to_bot } => {
                if t.state != TicketState::Queued || t.timeout_notified {
                    return Err(wrong_state(t, "queued and not yet notified"));
                }
                t.timeout_notified = true;
                if *return_to_bot {
                    t.state = TicketState::Returned { at: *now };
                }
            }
        }
        Ok(None)
    }
}

/// Everything of a turn, encoded up front so the transaction's future owns it.
struct OwnedTurn {
    tenant: String,
    user: String,
    session: Vec<u8>,
    turns: Vec<Vec<u8>>,
    events: Vec<Vec<u8>>,
    processed: Option<(String, Vec<u8>)>,
    queue: Option<QueueOp>,
    at: i64,
}

/// Locks the customer for the rest of the transaction: replicas handle one customer's
/// turns one after the other. The key is PostgreSQL's own stable 64-bit text hash, the
/// same on every replica; a collision only serializes two customers, never mixes them.
async fn lock_customer(tx: &impl GenericClient, tenant: &str, user: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(1) || $2, 0))",
        &[&tenant, &user],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// The `NOTIFY` channel of kefu's signals; payloads are JSON [`StoreSignal`]s.
const CHANNEL: &str = "kefu";

/// A signal as sent: who sent it, so a replica skips its own (it signalled itself).
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    origin: u64,
    signal: StoreSignal,
}

fn envelope(origin: u64, signal: &StoreSignal) -> Result<String> {
    serde_json::to_string(&Envelope {
        origin,
        signal: signal.clone(),
    })
    .map_err(|e| Error::Store(format!("cannot encode a signal: {e}")))
}

/// Tells every other replica (once this transaction commits) that `signal` happened.
async fn notify(tx: &impl GenericClient, origin: u64, signal: &StoreSignal) -> Result<()> {
    let payload = envelope(origin, signal)?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Keeps one connection listening on [`CHANNEL`] and forwards what arrives; reconnects
/// after a second when the connection ends (signals sent meanwhile are lost, which
/// readers tolerate by re-reading periodically).
async fn listen(
    config: tokio_postgres::Config,
    origin: u64,
    out: tokio::sync::broadcast::Sender<StoreSignal>,
) {
    use futures_util::StreamExt;
    loop {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let forward = out.clone();
            let driver = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(m)) = messages.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(n) = m {
                        match serde_json::from_str::<Envelope>(n.payload()) {
                            // No receiver (no server running): nothing to tell.
                            Ok(e) if e.origin != origin => drop(forward.send(e.signal)),
                            _ => {}
                        }
                    }
                }
            });
            if client.batch_execute("LISTEN kefu").await.is_ok() {
                let _ = driver.await;
            } else {
                driver.abort();
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn load_ticket_for_update(tx: &impl GenericClient, id: TicketId) -> Result<Ticket> {
    let row = tx
        .query_opt(
            "SELECT body FROM kefu_tickets WHERE id = $1 FOR UPDATE",
            &[&to_i64(id)],
        )
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::NotFound(format!("hand-off ticket {id}")))?;
    from_json(row.get::<_, &[u8]>(0))
}

async fn insert_ticket(tx: &impl GenericClient, t: &Ticket) -> Result<()> {
    tx.execute(
        "INSERT INTO kefu_tickets (id, tenant, user_id, state, agent, grp, queue_key, \
         enqueued_at, timeout_notified, body) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        &[
            &to_i64(t.id),
            &t.customer.tenant,
            &t.customer.user,
            &state_name(&t.state),
            &holder(&t.state),
            &t.group,
            &to_i64(t.queue_key),
            &t.enqueued_at,
            &t.timeout_notified,
            &to_json(t)?,
        ],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn update_ticket(tx: &impl GenericClient, t: &Ticket) -> Result<()> {
    tx.execute(
        "UPDATE kefu_tickets SET state = $2, agent = $3, timeout_notified = $4, body = $5 \
         WHERE id = $1",
        &[
            &to_i64(t.id),
            &state_name(&t.state),
            &holder(&t.state),
            &t.timeout_notified,
            &to_json(t)?,
        ],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// The customer's open ticket, locked. The caller holds the customer's advisory lock,
/// so no other open ticket can appear for them meanwhile.
async fn open_ticket_locked(
    tx: &impl GenericClient,
    tenant: &str,
    user: &str,
) -> Result<Option<Ticket>> {
    let row = tx
        .query_opt(
            "SELECT body FROM kefu_tickets WHERE tenant = $1 AND user_id = $2 \
             AND state IN ('queued', 'claimed') FOR UPDATE",
            &[&tenant, &user],
        )
        .await
        .map_err(db_err)?;
    row.map(|r| from_json(r.get::<_, &[u8]>(0))).transpose()
}

/// Inserts `fresh` unless the customer has an open ticket, which is returned instead.
async fn tx_enqueue(tx: &impl GenericClient, fresh: &Ticket) -> Result<Ticket> {
    let c = &fresh.customer;
    lock_customer(tx, &c.tenant, &c.user).await?;
    if let Some(t) = open_ticket_locked(tx, &c.tenant, &c.user).await? {
        return Ok(t);
    }
    insert_ticket(tx, fresh).await?;
    Ok(fresh.clone())
}

/// Appends a message after checking under the ticket's row lock that the chat is open
/// for it: a message must not land on a chat closed a moment ago.
async fn tx_post(
    tx: &impl GenericClient,
    origin: u64,
    id: TicketId,
    msg: &TicketMessage,
) -> Result<()> {
    let t = load_ticket_for_update(tx, id).await?;
    match (&t.state, msg.from, msg.agent.as_deref()) {
        (TicketState::Queued | TicketState::Claimed { .. }, Speaker::Customer, _) => {}
        (TicketState::Claimed { agent: holder, .. }, Speaker::Agent, Some(a)) if holder == a => {}
        (TicketState::Claimed { .. }, Speaker::Agent, _) => {
            return Err(Error::Conflict(format!(
                "hand-off ticket {id} is held by another agent"
            )))
        }
        _ => return Err(wrong_state(&t, "open for this message")),
    }
    notify(tx, origin, &StoreSignal::Customer(t.customer.clone())).await?;
    tx.execute(
        "INSERT INTO kefu_ticket_messages (ticket, seq, body) VALUES ($1, $2, $3)",
        &[&to_i64(id), &to_i64(msg.seq), &to_json(msg)?],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn tx_transition(
    tx: &impl GenericClient,
    origin: u64,
    id: TicketId,
    change: &Change,
) -> Result<Ticket> {
    let mut t = load_ticket_for_update(tx, id).await?;
    let handled = change.apply(&mut t)?;
    update_ticket(tx, &t).await?;
    notify(tx, origin, &StoreSignal::Customer(t.customer.clone())).await?;
    if let Some(secs) = handled {
        tx.execute("INSERT INTO kefu_handled (secs) VALUES ($1)", &[&secs])
            .await
            .map_err(db_err)?;
    }
    Ok(t)
}

/// A turn's queue change inside the turn's transaction (see [`QueueOp`]).
async fn tx_apply(tx: &impl GenericClient, origin: u64, op: &QueueOp) -> Result<()> {
    match op {
        QueueOp::Enqueue(fresh) => {
            let t = tx_enqueue(tx, fresh).await?;
            if t.id != fresh.id {
                return Err(Error::Conflict(format!(
                    "customer already has open hand-off ticket {}",
                    t.id
                )));
            }
        }
        QueueOp::Post { ticket, message } => tx_post(tx, origin, *ticket, message).await?,
        QueueOp::Cancel { ticket, at } => {
            tx_transition(tx, origin, *ticket, &Change::Cancel { now: *at }).await?;
        }
    }
    Ok(())
}

fn tickets(rows: Vec<tokio_postgres::Row>) -> Result<Vec<Ticket>> {
    rows.iter()
        .map(|r| from_json(r.get::<_, &[u8]>(0)))
        .collect()
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db` or key=value form), runs the
    /// pending migrations and checks the connection. Fails with the reason when the
    /// database cannot be reached, so a misconfigured replica does not start.
    pub fn connect(url: &str) -> Result<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::InvalidInput(format!("[store] url: {e}")))?;
        // Acknowledged means on disk, whatever the server default is.
        config.options("-c synchronous_commit=on");
        config.application_name("kefu");
        config.connect_timeout(std::time::Duration::from_secs(10));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kefu-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::Store(format!("cannot start the database runtime: {e}")))?;
        let pool = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(std::time::Duration::from_secs(30)))
                .create_timeout(Some(std::time::Duration::from_secs(10)))
                .build()
                .map_err(db_err)
        };
        let (signals, _) = tokio::sync::broadcast::channel(1024);
        let origin = rand::random::<u64>();
        runtime.spawn(listen(config.clone(), origin, signals.clone()));
        let store = PgStore {
            pool: pool(16)?,
            locks: pool(64)?,
            signals,
            origin,
            runtime: Some(runtime),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Runs `f` with a pooled connection on the store's runtime and waits for it.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.run_on(&self.pool, f)
    }

    fn run_on<T, F, Fut>(&self, pool: &Pool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let Some(rt) = self.runtime.as_ref() else {
            return Err(Error::Store("the store is shut down".into()));
        };
        let pool = pool.clone();
        let (send, recv) = mpsc::sync_channel(1);
        rt.spawn(async move {
            let result = match pool.get().await {
                Ok(client) => f(client).await,
                Err(e) => Err(db_err(e)),
            };
            // The caller may have gone (it cannot: it waits); nothing to do then.
            let _ = send.send(result);
        });
        recv.recv()
            .map_err(|_| Error::Store("the database task ended without an answer".into()))?
    }

    /// Runs `f` in one transaction, committed if it returns `Ok`, rolled back otherwise.
    fn transaction<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(
                &'t deadpool_postgres::Transaction<'t>,
            )
                -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>
            + Send
            + 'static,
    {
        self.run(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_err)?;
            let out = f(&tx).await;
            match out {
                Ok(v) => {
                    tx.commit().await.map_err(db_err)?;
                    Ok(v)
                }
                Err(e) => {
                    // Dropping the transaction rolls back as well; this reports nothing new.
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        })
    }

    fn migrate(&self) -> Result<()> {
        self.transaction(|tx| {
            Box::pin(async move {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                    .await
                    .map_err(db_err)?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS kefu_schema \
                     (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await
                .map_err(db_err)?;
                let row = tx
                    .query_one("SELECT coalesce(max(version), 0) FROM kefu_schema", &[])
                    .await
                    .map_err(db_err)?;
                let current: i32 = row.get(0);
                let latest = MIGRATIONS.last().map_or(0, |m| m.0);
                if current > latest {
                    return Err(Error::Store(format!(
                        "the database schema is version {current}, newer than this kefu \
                         knows ({latest}); upgrade kefu"
                    )));
                }
                for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
                    tx.batch_execute(sql).await.map_err(|e| {
                        Error::Store(format!("postgres migration {version} failed: {e}"))
                    })?;
                    tx.execute("INSERT INTO kefu_schema (version) VALUES ($1)", &[version])
                        .await
                        .map_err(db_err)?;
                }
                Ok(())
            })
        })
    }

    fn transition(&self, id: TicketId, change: Change) -> Result<Ticket> {
        let origin = self.origin;
        self.transaction(move |tx| {
            Box::pin(async move { tx_transition(tx, origin, id, &change).await })
        })
    }

    async fn fresh_id(c: &deadpool_postgres::Object) -> Result<u64> {
        let row = c
            .query_one("SELECT nextval('kefu_ids')", &[])
            .await
            .map_err(db_err)?;
        to_u64(row.get(0))
    }
}

/// A customer's turn lock: a session-level advisory lock held on a connection of the
/// lock pool. The two-key form lives in another lock space than the one-key
/// transaction locks of [`lock_customer`], so a thread holding this and committing
/// never waits for itself. If the process dies, the server ends the session and the
/// lock with it.
struct TurnLock {
    conn: Option<deadpool_postgres::Object>,
    runtime: tokio::runtime::Handle,
    key: UserKey,
}

const TURN_LOCK_CLASS: i32 = 0x6b65;
const TURN_LOCK_SQL: &str = "SELECT pg_advisory_lock($1, hashtext($2 || chr(1) || $3))";
const TURN_UNLOCK_SQL: &str = "SELECT pg_advisory_unlock($1, hashtext($2 || chr(1) || $3))";

impl Drop for TurnLock {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let key = self.key.clone();
        // Released in the background: the turn's reply need not wait for it. A
        // connection that cannot unlock is closed instead of pooled, which also releases.
        self.runtime.spawn(async move {
            let unlocked = conn
                .query_one(TURN_UNLOCK_SQL, &[&TURN_LOCK_CLASS, &key.tenant, &key.user])
                .await
                .map(|r| r.get::<_, bool>(0));
            if !matches!(unlocked, Ok(true)) {
                drop(deadpool_postgres::Object::take(conn));
            }
        });
    }
}

impl Store for PgStore {
    fn lock_customer(&self, key: &UserKey) -> Result<Option<super::CustomerLock>> {
        let Some(rt) = self.runtime.as_ref() else {
            return Err(Error::Store("the store is shut down".into()));
        };
        let runtime = rt.handle().clone();
        let owned = key.clone();
        let conn = self.run_on(&self.locks, move |c| async move {
            c.execute(
                TURN_LOCK_SQL,
                &[&TURN_LOCK_CLASS, &owned.tenant, &owned.user],
            )
            .await
            .map_err(db_err)?;
            Ok(c)
        })?;
        Ok(Some(Box::new(TurnLock {
            conn: Some(conn),
            runtime,
            key: key.clone(),
        })))
    }

    fn session(&self, key: &UserKey) -> Result<Option<Session>> {
        let key = key.clone();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT body FROM kefu_sessions WHERE tenant = $1 AND user_id = $2",
                    &[&key.tenant, &key.user],
                )
                .await
                .map_err(db_err)?;
            row.map(|r| from_json(r.get::<_, &[u8]>(0))).transpose()
        })
    }

    fn processed(&self, key: &UserKey, message_id: &str) -> Result<Option<Vec<u8>>> {
        let key = key.clone();
        let id = message_id.to_owned();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT reply FROM kefu_processed \
                     WHERE tenant = $1 AND user_id = $2 AND message_id = $3",
                    &[&key.tenant, &key.user, &id],
                )
                .await
                .map_err(db_err)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn commit(&self, c: TurnCommit<'_>) -> Result<()> {
        let turn = OwnedTurn {
            tenant: c.key.tenant.clone(),
            user: c.key.user.clone(),
            session: to_json(c.session)?,
            turns: c.turns.iter().map(to_json).collect::<Result<_>>()?,
            events: c.events.iter().map(to_json).collect::<Result<_>>()?,
            processed: c.processed.map(|(id, r)| (id.to_owned(), r.to_vec())),
            queue: c.queue.cloned(),
            at: c.at,
        };
        let origin = self.origin;
        self.transaction(move |tx| {
            Box::pin(async move {
                let t = &turn;
                lock_customer(tx, &t.tenant, &t.user).await?;
                if let Some(op) = &t.queue {
                    tx_apply(tx, origin, op).await?;
                }
                tx.execute(
                    "INSERT INTO kefu_sessions (tenant, user_id, body) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant, user_id) DO UPDATE SET body = excluded.body",
                    &[&t.tenant, &t.user, &t.session],
                )
                .await
                .map_err(db_err)?;
                for body in &t.turns {
                    tx.execute(
                        "INSERT INTO kefu_transcript (tenant, user_id, body) VALUES ($1, $2, $3)",
                        &[&t.tenant, &t.user, body],
                    )
                    .await
                    .map_err(db_err)?;
                }
                for body in &t.events {
                    tx.execute("INSERT INTO kefu_events (body) VALUES ($1)", &[body])
                        .await
                        .map_err(db_err)?;
                }
                if let Some((id, reply)) = &t.processed {
                    tx.execute(
                        "INSERT INTO kefu_processed (tenant, user_id, message_id, at, reply) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, user_id, message_id) \
                         DO UPDATE SET at = excluded.at, reply = excluded.reply",
                        &[&t.tenant, &t.user, id, &t.at, reply],
                    )
                    .await
                    .map_err(db_err)?;
                }
                Ok(())
            })
        })
    }

    fn next_id(&self) -> Result<u64> {
        self.run(|c| async move { PgStore::fresh_id(&c).await })
    }

    fn expire_processed(&self, before: i64) -> Result<usize> {
        self.run(move |c| async move {
            let n = c
                .execute("DELETE FROM kefu_processed WHERE at < $1", &[&before])
                .await
                .map_err(db_err)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn published(&self) -> Result<Option<Vec<u8>>> {
        self.run(|c| async move {
            let row = c
                .query_opt("SELECT value FROM kefu_meta WHERE name = $1", &[&PUBLISHED])
                .await
                .map_err(db_err)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn set_published(&self, bundle: &[u8]) -> Result<()> {
        let bundle = bundle.to_vec();
        let origin = self.origin;
        self.transaction(move |c| {
            Box::pin(async move {
                notify(c, origin, &StoreSignal::Published).await?;
                c.execute(
                    "INSERT INTO kefu_meta (name, value, version) VALUES ($1, $2, 1) \
                 ON CONFLICT (name) DO UPDATE \
                 SET value = excluded.value, version = kefu_meta.version + 1",
                    &[&PUBLISHED, &bundle],
                )
                .await
                .map_err(db_err)?;
                Ok(())
            })
        })
    }

    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<StoreSignal>> {
        Some(self.signals.subscribe())
    }

    fn announce(&self, signal: StoreSignal) {
        let Some(rt) = self.runtime.as_ref() else {
            return;
        };
        let Ok(payload) = envelope(self.origin, &signal) else {
            return;
        };
        let pool = self.pool.clone();
        // Fire and forget: a lost desk event is covered by the desk's queue view.
        rt.spawn(async move {
            if let Ok(c) = pool.get().await {
                let _ = c
                    .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                    .await;
            }
        });
    }

    /// The version of the published content, bumped by every [`Store::set_published`]:
    /// replicas poll it (cheap: one row) and reload when it changes.
    fn published_version(&self) -> Result<Option<u64>> {
        self.run(|c| async move {
            let row = c
                .query_opt(
                    "SELECT version FROM kefu_meta WHERE name = $1",
                    &[&PUBLISHED],
                )
                .await
                .map_err(db_err)?;
            row.map_or(Ok(Some(0)), |r| to_u64(r.get(0)).map(Some))
        })
    }

    fn flush(&self) -> Result<()> {
        // Every commit was durable when it returned (synchronous_commit = on).
        Ok(())
    }

    fn transcript(&self, key: &UserKey) -> Result<Vec<Turn>> {
        let key = key.clone();
        self.run(move |c| async move {
            let rows = c
                .query(
                    "SELECT body FROM kefu_transcript WHERE tenant = $1 AND user_id = $2 \
                     ORDER BY id",
                    &[&key.tenant, &key.user],
                )
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(|r| from_json(r.get::<_, &[u8]>(0)))
                .collect()
        })
    }

    fn events(&self) -> Result<Vec<Event>> {
        self.run(|c| async move {
            let rows = c
                .query("SELECT body FROM kefu_events ORDER BY id", &[])
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(|r| from_json(r.get::<_, &[u8]>(0)))
                .collect()
        })
    }
}

impl HandoffQueue for PgStore {
    fn enqueue(&self, req: EnqueueRequest) -> Result<Ticket> {
        self.run(move |mut c| async move {
            let id = PgStore::fresh_id(&c).await?;
            let queue_key = PgStore::fresh_id(&c).await?;
            let fresh = Ticket {
                id,
                customer: req.customer,
                state: TicketState::Queued,
                enqueued_at: req.now,
                queue_key,
                group: req.group,
                reason: req.reason,
                intent: req.intent,
                candidates: req.candidates,
                transcript: req.transcript,
                left_message: req.left_message,
                timeout_notified: false,
                auth: crate::intents::AuthLevel::default(),
            };
            let tx = c.transaction().await.map_err(db_err)?;
            let t = tx_enqueue(&tx, &fresh).await?;
            tx.commit().await.map_err(db_err)?;
            Ok(t)
        })
    }

    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>> {
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT body FROM kefu_tickets WHERE id = $1",
                    &[&to_i64(id)],
                )
                .await
                .map_err(db_err)?;
            row.map(|r| from_json(r.get::<_, &[u8]>(0))).transpose()
        })
    }

    fn open_ticket_for(&self, customer: &UserKey) -> Result<Option<Ticket>> {
        let key = customer.clone();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT body FROM kefu_tickets WHERE tenant = $1 AND user_id = $2 \
                     AND state IN ('queued', 'claimed')",
                    &[&key.tenant, &key.user],
                )
                .await
                .map_err(db_err)?;
            row.map(|r| from_json(r.get::<_, &[u8]>(0))).transpose()
        })
    }

    fn position(&self, id: TicketId) -> Result<Option<usize>> {
        self.run(move |c| async move {
            // Counts the partial queue index up to the ticket's key: O(chats ahead), no
            // scan of closed history (same order as sled's range count).
            let row = c
                .query_opt(
                    "SELECT (SELECT count(*) FROM kefu_tickets q \
                       WHERE q.state = 'queued' AND q.queue_key < t.queue_key) \
                     FROM kefu_tickets t WHERE t.id = $1 AND t.state = 'queued'",
                    &[&to_i64(id)],
                )
                .await
                .map_err(db_err)?;
            Ok(row.map(|r| usize::try_from(r.get::<_, i64>(0)).unwrap_or(usize::MAX) + 1))
        })
    }

    fn queued(&self, limit: usize) -> Result<Vec<Ticket>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |c| async move {
            let rows = c
                .query(
                    "SELECT body FROM kefu_tickets WHERE state = 'queued' \
                     ORDER BY queue_key LIMIT $1",
                    &[&limit],
                )
                .await
                .map_err(db_err)?;
            tickets(rows)
        })
    }

    fn queued_len(&self) -> Result<usize> {
        self.run(|c| async move {
            let row = c
                .query_one(
                    "SELECT count(*) FROM kefu_tickets WHERE state = 'queued'",
                    &[],
                )
                .await
                .map_err(db_err)?;
            Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(usize::MAX))
        })
    }

    fn claimed_by(&self, agent: &str) -> Result<Vec<Ticket>> {
        let agent = agent.to_owned();
        self.run(move |c| async move {
            let rows = c
                .query(
                    "SELECT body FROM kefu_tickets WHERE state = 'claimed' AND agent = $1 \
                     ORDER BY queue_key",
                    &[&agent],
                )
                .await
                .map_err(db_err)?;
            tickets(rows)
        })
    }

    fn claim(&self, id: TicketId, agent: &str, now: i64) -> Result<Ticket> {
        self.transition(
            id,
            Change::Claim {
                agent: agent.to_owned(),
                now,
            },
        )
    }

    fn claim_next(&self, agent: &Agent, now: i64) -> Result<Option<Ticket>> {
        let agent = agent.clone();
        let origin = self.origin;
        self.transaction(move |tx| {
            Box::pin(async move {
                // The filter is Agent::may_handle in SQL; rows another agent is claiming
                // right now are skipped, not waited for.
                let row = tx
                    .query_opt(
                        "SELECT id FROM kefu_tickets WHERE state = 'queued' \
                         AND ($1::text IS NULL OR tenant = $1) \
                         AND (grp IS NULL OR cardinality($2::text[]) = 0 OR grp = ANY($2)) \
                         ORDER BY queue_key LIMIT 1 FOR UPDATE SKIP LOCKED",
                        &[&agent.tenant, &agent.groups],
                    )
                    .await
                    .map_err(db_err)?;
                let Some(row) = row else { return Ok(None) };
                let id = to_u64(row.get(0))?;
                let change = Change::Claim {
                    agent: agent.id.clone(),
                    now,
                };
                tx_transition(tx, origin, id, &change).await.map(Some)
            })
        })
    }

    fn post(
        &self,
        id: TicketId,
        from: Speaker,
        agent: Option<&str>,
        text: &str,
        now: i64,
    ) -> Result<TicketMessage> {
        let seq = self.next_id()?;
        let msg = TicketMessage::new(seq, now, from, agent, text);
        let out = msg.clone();
        let origin = self.origin;
        self.transaction(move |tx| Box::pin(async move { tx_post(tx, origin, id, &msg).await }))?;
        Ok(out)
    }

    fn messages(&self, id: TicketId, after_seq: u64) -> Result<Vec<TicketMessage>> {
        self.run(move |c| async move {
            let rows = c
                .query(
                    "SELECT body FROM kefu_ticket_messages WHERE ticket = $1 AND seq > $2 \
                     ORDER BY seq",
                    &[&to_i64(id), &to_i64(after_seq)],
                )
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(|r| from_json(r.get::<_, &[u8]>(0)))
                .collect()
        })
    }

    fn release(&self, id: TicketId, agent: &str, _now: i64) -> Result<Ticket> {
        self.transition(
            id,
            Change::Release {
                agent: agent.to_owned(),
            },
        )
    }

    fn close(&self, id: TicketId, agent: &str, summary: Option<&str>, now: i64) -> Result<Ticket> {
        self.transition(
            id,
            Change::Close {
                agent: agent.to_owned(),
                summary: summary.map(str::to_owned),
                now,
            },
        )
    }

    fn cancel(&self, id: TicketId, now: i64) -> Result<Ticket> {
        self.transition(id, Change::Cancel { now })
    }

    fn expire(&self, now: i64, timeout_secs: i64, return_to_bot: bool) -> Result<Vec<Ticket>> {
        let due = now.saturating_sub(timeout_secs);
        let ids: Vec<i64> = self.run(move |c| async move {
            let rows = c
                .query(
                    "SELECT id FROM kefu_tickets WHERE state = 'queued' \
                     AND NOT timeout_notified AND enqueued_at <= $1 ORDER BY queue_key",
                    &[&due],
                )
                .await
                .map_err(db_err)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        let mut out = Vec::new();
        for id in ids {
            // Another replica's sweep may have been first: that is a conflict, skipped.
            match self.transition(to_u64(id)?, Change::Expire { now, return_to_bot }) {
                Ok(t) => out.push(t),
                Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn recent_handle_secs(&self) -> Result<Option<f64>> {
        self.run(|c| async move {
            let row = c
                .query_one(
                    "SELECT avg(secs)::float8 FROM \
                     (SELECT secs FROM kefu_handled ORDER BY id DESC LIMIT $1) recent",
                    &[&RECENT_CLOSED],
                )
                .await
                .map_err(db_err)?;
            Ok(row.get::<_, Option<f64>>(0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(state: TicketState) -> Ticket {
        Ticket {
            id: 1,
            customer: UserKey::new("bank", "u"),
            state,
            enqueued_at: 0,
            queue_key: 1,
            group: None,
            reason: String::new(),
            intent: None,
            candidates: vec![],
            transcript: vec![],
            left_message: false,
            timeout_notified: false,
            auth: crate::intents::AuthLevel::default(),
        }
    }

    /// The state checks are the sled queue's: only a queued chat is claimed, only its
    /// holder releases or closes it, and closing reports the handling time.
    #[test]
    fn changes_check_the_state_they_start_from() {
        let claim = |agent: &str| Change::Claim {
            agent: agent.into(),
            now: 10,
        };
        let mut t = ticket(TicketState::Queued);
        assert_eq!(claim("a").apply(&mut t).unwrap(), None);
        assert!(matches!(claim("b").apply(&mut t), Err(Error::Conflict(_))));
        let release_b = Change::Release { agent: "b".into() };
        assert!(matches!(release_b.apply(&mut t), Err(Error::Conflict(_))));
        let close = |agent: &str| Change::Close {
            agent: agent.into(),
            summary: Some("卡号6222021234567890".into()),
            now: 70,
        };
        assert!(matches!(close("b").apply(&mut t), Err(Error::Conflict(_))));
        assert_eq!(close("a").apply(&mut t).unwrap(), Some(60));
        match &t.state {
            TicketState::Closed { summary, .. } => {
                assert!(!summary.as_deref().unwrap().contains("6222021234567890"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Change::Cancel { now: 80 }.apply(&mut t),
            Err(Error::Conflict(_))
        ));
        let expire = Change::Expire {
            now: 90,
            return_to_bot: true,
        };
        let mut q = ticket(TicketState::Queued);
        expire.apply(&mut q).unwrap();
        assert!(q.timeout_notified);
        assert_eq!(q.state, TicketState::Returned { at: 90 });
        assert!(matches!(expire.apply(&mut q), Err(Error::Conflict(_))));
    }

    #[test]
    fn ids_round_trip_and_negative_ids_are_refused() {
        assert_eq!(to_u64(to_i64(42)).unwrap(), 42);
        assert_eq!(to_i64(u64::MAX), i64::MAX);
        assert!(to_u64(-1).is_err());
    }
}
