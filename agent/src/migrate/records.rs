//! Migration records in an embedded transactional store (redb), written before each step they
//! guard: whatever happens to the agent, a restarted one knows what every migration it took
//! part in was doing, and resolves it (see [`super::resolve`]).
//!
//! Two tables, keyed by migration id: `migrations` (each value the `MigrationRecord` protobuf)
//! and, on the origin, `relays`: what the relay of a stub needs after an agent restart (a
//! `TransferHeader` holding only the id and the `RelayEndpoint`s), written before the stub's
//! `execve` and removed when the relay ended.

use std::path::{Path, PathBuf};

use ferry_proto::v1::{ExitStatus, MigrationRecord, RelayEndpoint, TransferHeader};
use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

pub use crate::node::{now_ms, state_dir};

use super::state::{DestState, OriginState, Role, State};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("migrations");
const RELAYS: TableDefinition<&str, &[u8]> = TableDefinition::new("relays");

/// Why the records store failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The store could not be opened or created.
    #[error("open the records store {path}")]
    Open {
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// A transaction failed.
    #[error("records store: {step}")]
    Db {
        /// Which step.
        step: &'static str,
        /// Cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored value is not a record.
    #[error("record {id} is unreadable")]
    Decode {
        /// Its key.
        id: String,
        /// Cause.
        #[source]
        source: prost::DecodeError,
    },
}

fn db<E: Into<redb::Error>>(step: &'static str) -> impl FnOnce(E) -> RecordsError {
    move |e| RecordsError::Db {
        step,
        source: Box::new(e.into()),
    }
}

/// The store.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Default for Store {
    /// A store that lives in memory only (for tests and tools; `ferryd` uses [`Store::open`]).
    fn default() -> Self {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory database always opens");
        let store = Self { db };
        store
            .init()
            .expect("an in-memory database always takes a table");
        store
    }
}

impl Store {
    /// Opens (or creates) `records.redb` in `dir`, creating the directory.
    pub fn open(dir: &Path) -> Result<Self, RecordsError> {
        let path = dir.join("records.redb");
        let open_err = |e: redb::Error| RecordsError::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        let db = crate::node::db::open(&path).map_err(open_err)?;
        let store = Self { db };
        store.init()?;
        Ok(store)
    }

    /// Opens the store in [`state_dir`].
    pub fn open_default() -> Result<Self, RecordsError> {
        Self::open(&state_dir())
    }

    fn init(&self) -> Result<(), RecordsError> {
        let w = self.db.begin_write().map_err(db("begin"))?;
        w.open_table(RECORDS).map_err(db("open table"))?;
        w.open_table(RELAYS).map_err(db("open table"))?;
        w.commit().map_err(db("commit"))
    }

    /// Origin: keeps (durably) the relayed endpoints of migration `id`, for a restarted agent
    /// to serve its stub again.
    pub fn put_relay(&self, id: &str, endpoints: &[RelayEndpoint]) -> Result<(), RecordsError> {
        let bytes = TransferHeader {
            migration_id: id.to_string(),
            relays: endpoints.to_vec(),
            ..Default::default()
        }
        .encode_to_vec();
        let w = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut t = w.open_table(RELAYS).map_err(db("open table"))?;
            t.insert(id, bytes.as_slice()).map_err(db("insert"))?;
        }
        w.commit().map_err(db("commit"))
    }

    /// Origin: the relayed endpoints kept for migration `id`, if its relay did not end.
    pub fn relay(&self, id: &str) -> Result<Option<Vec<RelayEndpoint>>, RecordsError> {
        let r = self.db.begin_read().map_err(db("begin"))?;
        let t = r.open_table(RELAYS).map_err(db("open table"))?;
        let Some(v) = t.get(id).map_err(db("get"))? else {
            return Ok(None);
        };
        TransferHeader::decode(v.value())
            .map(|h| Some(h.relays))
            .map_err(|source| RecordsError::Decode {
                id: id.to_string(),
                source,
            })
    }

    /// Origin: the relay of migration `id` ended for good.
    pub fn remove_relay(&self, id: &str) -> Result<(), RecordsError> {
        let w = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut t = w.open_table(RELAYS).map_err(db("open table"))?;
            t.remove(id).map_err(db("remove"))?;
        }
        w.commit().map_err(db("commit"))
    }

    /// Writes `rec` (durably: the transaction is committed when this returns), stamping its
    /// update time.
    pub fn put(&self, rec: &mut MigrationRecord) -> Result<(), RecordsError> {
        rec.updated_unix_ms = now_ms();
        if rec.started_unix_ms == 0 {
            rec.started_unix_ms = rec.updated_unix_ms;
        }
        let bytes = rec.encode_to_vec();
        let mut w = self.db.begin_write().map_err(db("begin"))?;
        if lazy(rec) {
            w.set_durability(Durability::None)
                .map_err(|e| RecordsError::Db {
                    step: "set durability",
                    source: Box::new(redb::Error::from(e)),
                })?;
        }
        {
            let mut t = w.open_table(RECORDS).map_err(db("open table"))?;
            t.insert(rec.migration_id.as_str(), bytes.as_slice())
                .map_err(db("insert"))?;
        }
        w.commit().map_err(db("commit"))
    }

    /// Sets the state (typed and as text, with its role) and the detail of `rec` and writes
    /// it (durably unless [`lazy`]).
    pub fn set(
        &self,
        rec: &mut MigrationRecord,
        state: impl Into<State>,
        detail: impl Into<String>,
    ) -> Result<(), RecordsError> {
        state.into().write(rec);
        rec.detail = detail.into();
        self.put(rec)
    }

    /// Sets only the detail of `rec` (its state stays) and writes it.
    pub fn set_detail(
        &self,
        rec: &mut MigrationRecord,
        detail: impl Into<String>,
    ) -> Result<(), RecordsError> {
        rec.detail = detail.into();
        self.put(rec)
    }

    /// The record of one migration.
    pub fn get(&self, id: &str) -> Result<Option<MigrationRecord>, RecordsError> {
        let r = self.db.begin_read().map_err(db("begin"))?;
        let t = r.open_table(RECORDS).map_err(db("open table"))?;
        let Some(v) = t.get(id).map_err(db("get"))? else {
            return Ok(None);
        };
        MigrationRecord::decode(v.value())
            .map(Some)
            .map_err(|source| RecordsError::Decode {
                id: id.to_string(),
                source,
            })
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Result<Vec<MigrationRecord>, RecordsError> {
        let r = self.db.begin_read().map_err(db("begin"))?;
        let t = r.open_table(RECORDS).map_err(db("open table"))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db("iterate"))? {
            let (k, v) = item.map_err(db("read"))?;
            out.push(MigrationRecord::decode(v.value()).map_err(|source| {
                RecordsError::Decode {
                    id: k.value().to_string(),
                    source,
                }
            })?);
        }
        out.sort_by_key(|r| (r.started_unix_ms, r.migration_id.clone()));
        Ok(out)
    }
}

/// Whether a record's state is final (`done` is final for the migration; the process it
/// moved may still end later: `ended`; `lost`: on the origin, after `done`, the copy could
/// not be relayed any more and the stub was ended). A state this agent does not know is not.
pub fn is_final(rec: &MigrationRecord) -> bool {
    State::of(rec).is_some_and(State::is_final)
}

/// How an exit status reads in a record's detail.
pub fn exit_text(st: Option<&ExitStatus>) -> String {
    match st {
        Some(s) if s.signal != 0 => format!(
            "killed by signal {}{}",
            s.signal,
            if s.core_dumped { " (core dumped)" } else { "" }
        ),
        Some(s) => format!("exited with code {}", s.code),
        None => "exit status unknown".to_string(),
    }
}

impl Store {
    /// The process of `rec` ended (`status`, when it could be learnt): records `ended` with
    /// the status, `where_` saying where it ran ("on h2 as pid 7").
    pub fn ended(
        &self,
        rec: &mut MigrationRecord,
        status: Option<&ExitStatus>,
        where_: &str,
    ) -> Result<(), RecordsError> {
        rec.exit_known = status.is_some();
        rec.exit_code = status.map_or(0, |s| s.code);
        rec.exit_signal = status.map_or(0, |s| s.signal);
        let text = format!("the process ended {where_}: {}", exit_text(status));
        self.set(rec, State::ended(Role::of(rec)), text)
    }
}

/// States written without waiting for the disk (each fsync costs milliseconds of the
/// process's downtime, up to tens of them on a busy disk). Losing one in a crash leaves the
/// previous durable state, from which resolution does the same thing: origin `prepared` and
/// `committing` fall back to `frozen`, which is durable and resolved by what the process is
/// (a stub with the recorded start time: the `execve` happened, commit; otherwise abort,
/// the original went on), as `committing` always was; origin `committed` to `committing`
/// or `frozen` (Commit again, which is idempotent); destination `committed`/`done` to
/// `prepared` (the origin is asked, says commit: SIGCONT again). Destination `receiving`
/// stays durable: without it a restarted agent would not know it took part in the migration
/// (a destination that dies a few milliseconds into a small final image would otherwise
/// leave no record; `migrate.rs` `fault_dest_exits_mid_stream`). The states that guard an irreversible
/// step are always durable: destination `prepared` (before the origin may destroy its
/// original), origin `frozen` (before the stub's `execve`: written while the image
/// streams) and a lazy migration's `committing` (before its original is tied to the agent).
fn lazy(rec: &MigrationRecord) -> bool {
    use {DestState as D, OriginState as O};
    match State::of(rec) {
        Some(State::Origin(O::Prepared | O::Committed)) => true,
        Some(State::Origin(O::Committing)) => !crate::migrate::lazy::is_lazy(rec),
        Some(State::Destination(D::Committed | D::Done)) => true,
        _ => false,
    }
}
