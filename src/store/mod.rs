//! Persistence of sessions, transcripts, analytics events and processed message ids.
//!
//! The engine talks to [`Store`]; [`SledStore`] is the embedded default. Two rules make
//! it safe to run a bank's chat on:
//! - one customer turn (session, transcript lines, events, the reply kept for
//!   de-duplication) is one sled transaction, flushed to disk before the reply leaves;
//! - keys carry a version prefix and values are JSON read with `#[serde(default)]`, so a
//!   newer kefu reads an older store and added fields never break a load.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::error::{Error, Result};
use crate::intents::AuthLevel;
use crate::retrieval::Band;

/// A customer of one tenant (bank or branch deployment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserKey {
    pub tenant: String,
    pub user: String,
}

impl UserKey {
    pub fn new(tenant: impl Into<String>, user: impl Into<String>) -> Self {
        UserKey {
            tenant: tenant.into(),
            user: user.into(),
        }
    }

    /// Key prefix; the 0 byte cannot occur in either part (channels reject it).
    fn prefix(&self, kind: &str) -> Vec<u8> {
        let mut k = format!("v1/{kind}/").into_bytes();
        k.extend_from_slice(self.tenant.as_bytes());
        k.push(0);
        k.extend_from_slice(self.user.as_bytes());
        k.push(0);
        k
    }
}

/// One entry of a numbered list the customer may answer with a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum MenuItem {
    /// A knowledge-base entry, by id (ids survive a knowledge-base reload; positions don't).
    Entry { id: String, label: String },
    /// Hand the chat to a person.
    Handoff { label: String },
}

impl MenuItem {
    pub fn label(&self) -> &str {
        match self {
            MenuItem::Entry { label, .. } | MenuItem::Handoff { label } => label,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Menu {
    pub items: Vec<MenuItem>,
    /// Unix seconds; a menu older than the configured TTL no longer takes numbers.
    pub created_at: i64,
}

/// What the bot remembers about one customer between messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    pub menu: Option<Menu>,
    /// Consecutive messages that got the fallback.
    pub misses: u32,
    /// The entry last answered, for 满意 / 不满意 feedback.
    pub last_answer: Option<String>,
    /// The hand-off ticket while the chat is queued or with an agent.
    pub handoff: Option<u64>,
    /// The most recent ticket, open or not: an agent's closing line arrives after the
    /// chat is back with the bot and must still reach the customer.
    pub last_ticket: Option<u64>,
    /// Agent messages of `last_ticket` up to this sequence number were delivered.
    pub delivered_seq: u64,
    pub auth: AuthLevel,
    pub updated_at: i64,
    /// Card binding and the account dialogue in progress (engine::account).
    pub account: crate::engine::account::AccountState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Customer,
    Bot,
    Agent,
}

/// A transcript line, personal data already masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub at: i64,
    pub from: Speaker,
    pub text: String,
    #[serde(default)]
    pub message_id: Option<String>,
}

/// An analytics event: what the content team and the benchmark people read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: i64,
    pub tenant: String,
    pub user: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum EventKind {
    Question {
        /// Masked question text.
        text: String,
        band: Band,
        /// Best candidates as (entry id, score).
        #[serde(default)]
        top: Vec<(String, f32)>,
        #[serde(default)]
        answered: Option<String>,
    },
    MenuPick {
        number: usize,
        #[serde(default)]
        entry: Option<String>,
    },
    Intent {
        name: String,
    },
    Feedback {
        entry: String,
        positive: bool,
    },
}

/// Everything one customer turn changes, written atomically.
#[derive(Debug, Clone)]
pub struct TurnCommit<'a> {
    pub key: &'a UserKey,
    pub session: &'a Session,
    pub turns: &'a [Turn],
    pub events: &'a [Event],
    /// (message id, reply as stored) for de-duplication of channel retries.
    pub processed: Option<(&'a str, &'a [u8])>,
}

pub trait Store: Send + Sync {
    fn session(&self, key: &UserKey) -> Result<Option<Session>>;
    /// The stored reply to a message id already processed, if any.
    fn processed(&self, key: &UserKey, message_id: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a turn atomically and durably: returns only after the data is on disk.
    fn commit(&self, commit: TurnCommit<'_>) -> Result<()>;
    fn transcript(&self, key: &UserKey) -> Result<Vec<Turn>>;
    fn events(&self) -> Result<Vec<Event>>;
}

pub struct SledStore {
    db: sled::Db,
    sessions: sled::Tree,
    transcripts: sled::Tree,
    processed: sled::Tree,
    events: sled::Tree,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. A directory that holds something other
    /// than a kefu store, or a damaged one, is refused with the reason; nothing in it
    /// is modified or removed.
    pub fn open(dir: &Path) -> Result<Self> {
        let refuse = |reason: String| Error::StoreOpen {
            path: dir.to_owned(),
            reason,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(refuse("it is a file, not a directory".into()));
        }
        if dir.is_dir() {
            let foreign = std::fs::read_dir(dir)
                .map_err(|e| refuse(format!("cannot list it: {e}")))?
                .filter_map(|e| e.ok())
                .any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    !(name == "db"
                        || name == "conf"
                        || name == "blobs"
                        || name.starts_with("snap."))
                });
            if foreign {
                return Err(refuse(
                    "it holds files that are not a kefu store; choose an empty or kefu-owned directory".into(),
                ));
            }
        }
        let db = std::panic::catch_unwind(|| sled::Config::new().path(dir).open())
            .map_err(|_| refuse("the store files are damaged (sled could not read them)".into()))?
            .map_err(|e| match e {
                // sled reports a held lock as a generic I/O error whose text names it.
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    refuse("another kefu process is using it (one process per store)".into())
                }
                other => refuse(format!(
                    "the store files are damaged or unreadable: {other}"
                )),
            })?;
        SledStore::with_db(db, Some(dir.to_owned()))
    }

    /// A throw-away store for `kefu ask`, benches and tests that need no persistence.
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open()?;
        SledStore::with_db(db, None)
    }

    fn with_db(db: sled::Db, path: Option<PathBuf>) -> Result<Self> {
        Ok(SledStore {
            sessions: db.open_tree("sessions")?,
            transcripts: db.open_tree("transcripts")?,
            processed: db.open_tree("processed")?,
            events: db.open_tree("events")?,
            db,
            path,
        })
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Store(format!("cannot encode: {e}")))
}

pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Store(format!("cannot decode a stored value: {e}")))
}

pub(crate) fn tx_error(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

pub(crate) fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

impl Store for SledStore {
    fn session(&self, key: &UserKey) -> Result<Option<Session>> {
        self.sessions
            .get(key.prefix("session"))?
            .map(|v| from_json(&v))
            .transpose()
    }

    fn processed(&self, key: &UserKey, message_id: &str) -> Result<Option<Vec<u8>>> {
        let mut k = key.prefix("processed");
        k.extend_from_slice(message_id.as_bytes());
        Ok(self.processed.get(k)?.map(|v| v.to_vec()))
    }

    fn commit(&self, c: TurnCommit<'_>) -> Result<()> {
        let session = to_json(c.session)?;
        // Ids come from sled's monotonic generator, so transcript order survives restarts.
        let mut turns = Vec::with_capacity(c.turns.len());
        for t in c.turns {
            let mut k = c.key.prefix("turn");
            k.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
            turns.push((k, to_json(t)?));
        }
        let mut events = Vec::with_capacity(c.events.len());
        for e in c.events {
            let k = self.db.generate_id()?.to_be_bytes().to_vec();
            events.push((k, to_json(e)?));
        }
        (
            &self.sessions,
            &self.transcripts,
            &self.processed,
            &self.events,
        )
            .transaction(|(s, t, p, e)| {
                s.insert(c.key.prefix("session"), session.as_slice())?;
                for (k, v) in &turns {
                    t.insert(k.as_slice(), v.as_slice())?;
                }
                for (k, v) in &events {
                    e.insert(k.as_slice(), v.as_slice())?;
                }
                if let Some((id, reply)) = c.processed {
                    let mut k = c.key.prefix("processed");
                    k.extend_from_slice(id.as_bytes());
                    p.insert(k, reply)?;
                }
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(tx_error)?;
        self.db.flush()?;
        Ok(())
    }

    fn transcript(&self, key: &UserKey) -> Result<Vec<Turn>> {
        self.transcripts
            .scan_prefix(key.prefix("turn"))
            .map(|kv| from_json(&kv?.1))
            .collect()
    }

    fn events(&self) -> Result<Vec<Event>> {
        self.events.iter().map(|kv| from_json(&kv?.1)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(text: &str) -> Turn {
        Turn {
            at: 1,
            from: Speaker::Customer,
            text: text.into(),
            message_id: None,
        }
    }

    #[test]
    fn a_committed_turn_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let key = UserKey::new("bank", "u1");
        {
            let store = SledStore::open(dir.path()).unwrap();
            let session = Session {
                misses: 1,
                ..Session::default()
            };
            store
                .commit(TurnCommit {
                    key: &key,
                    session: &session,
                    turns: &[turn("a"), turn("b")],
                    events: &[],
                    processed: Some(("m1", b"reply")),
                })
                .unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.session(&key).unwrap().unwrap().misses, 1);
        let texts: Vec<String> = store
            .transcript(&key)
            .unwrap()
            .into_iter()
            .map(|t| t.text)
            .collect();
        assert_eq!(texts, vec!["a", "b"]);
        assert_eq!(
            store.processed(&key, "m1").unwrap().as_deref(),
            Some(&b"reply"[..])
        );
        assert!(store
            .transcript(&UserKey::new("bank", "u"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_store_in_use_is_reported_as_in_use_not_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another kefu process is using it"), "{err}");
        assert!(!err.contains("damaged"), "{err}");
    }

    #[test]
    fn old_values_with_missing_fields_still_load() {
        let s: Session = from_json(br#"{"misses":3}"#).unwrap();
        assert_eq!(s.misses, 3);
        let s: Session = from_json(br#"{"misses":1,"field_from_the_future":true}"#).unwrap();
        assert_eq!(s.misses, 1);
    }

    #[test]
    fn foreign_or_damaged_directories_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("thesis.docx"), b"precious").unwrap();
        let err = SledStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a kefu store"), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("thesis.docx")).unwrap(),
            b"precious"
        );

        let file = dir.path().join("thesis.docx");
        assert!(SledStore::open(&file)
            .unwrap_err()
            .to_string()
            .contains("is a file"));

        let damaged = tempfile::tempdir().unwrap();
        std::fs::write(damaged.path().join("conf"), b"\xff\xfe garbage").unwrap();
        std::fs::write(damaged.path().join("db"), vec![0xAB; 4096]).unwrap();
        let err = SledStore::open(damaged.path()).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        assert_eq!(
            std::fs::read(damaged.path().join("db")).unwrap(),
            vec![0xAB; 4096]
        );
    }
}
