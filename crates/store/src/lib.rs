//! elevate's persistence.
//!
//! - `requests`: one row per request, the whole domain value as JSON plus
//!   the columns queries need (state, deadline, grant key, requester).
//! - `jobs`: the durable outbox of provider work (apply, remove). A job is
//!   claimed with a lease; at most one job per grant key runs at a time, so
//!   an apply and a removal of the same role never race on the target.
//! - `job_attempts`: every provider call and its outcome, shown to users.
//! - `audit`: append-only, hash-chained events; see [`audit`].
//!
//! Every write goes through [`Store::begin`], which serialises writers:
//! SQLite allows one writer anyway, and taking the lock in-process avoids
//! `SQLITE_BUSY` on lock upgrades. A state change, its audit event and its
//! jobs are written in one transaction.
//!
//! Times are stored as milliseconds since the Unix epoch (`INTEGER`), which
//! reads the same in SQLite and PostgreSQL.

pub mod audit;
pub mod identity;
mod schema;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use elevate_core::request::{Event, Request, State};
use elevate_core::values::RequestId;
use elevate_core::Timestamp;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

pub use audit::{AuditFilter, AuditRecord, Verification};
pub use identity::{Binding, Identity, SessionRow};
pub use schema::CURRENT as SCHEMA_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub fn to_millis(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> Result<Timestamp> {
    chrono::Utc
        .timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Apply,
    Remove,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Apply => "apply",
            JobKind::Remove => "remove",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        match s {
            "apply" => Ok(JobKind::Apply),
            "remove" => Ok(JobKind::Remove),
            other => Err(StoreError::Corrupt(format!("unknown job kind {other}"))),
        }
    }
}

/// A claimed unit of provider work.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub request_id: RequestId,
    pub kind: JobKind,
    pub grant_key: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// One provider call, as shown in a grant's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    pub kind: String,
    pub at: Timestamp,
    /// `ok`, `retry` (failed, will be retried), `failed` (given up),
    /// `skipped` (another grant still needs the role).
    pub outcome: String,
    pub error: Option<String>,
}

/// A stored request with the bookkeeping the domain does not carry.
#[derive(Debug, Clone)]
pub struct StoredRequest {
    pub request: Request,
    pub grant_key: String,
    /// Failed removal attempts since the last success: > 0 means
    /// "revocation failing".
    pub removal_failures: i64,
    pub apply_failures: i64,
    /// The target account recorded when the request was made.
    pub account: Option<String>,
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub requester: Option<String>,
    pub states: Vec<String>,
    pub limit: Option<i64>,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Serialises writers (see the module doc).
    write_lock: Arc<Mutex<()>>,
    /// An exclusive lock on `DATABASE.lock`, held while the store is open:
    /// the in-process write lock, job leases and the lease release at start
    /// all assume one process per database file, so a second `elevate
    /// serve` on the same file is refused.
    _process_lock: Option<Arc<std::fs::File>>,
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx<'a> {
    tx: Transaction<'static, Sqlite>,
    _guard: MutexGuard<'a, ()>,
}

impl Store {
    /// Opens (creating if needed) the database named by `url`: a
    /// `sqlite://PATH` URL or a plain file path; `sqlite::memory:` for a
    /// throwaway store. Applies pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let options = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(StoreError::Config(
                "the PostgreSQL store is not available in this version; use a sqlite:// database"
                    .into(),
            ));
        } else if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed grant decision survives power loss, not
            // just a process crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let memory = url.contains(":memory:");
        let process_lock = if memory {
            None
        } else {
            let mut path = options.get_filename().as_os_str().to_owned();
            path.push(".lock");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| {
                    StoreError::Config(format!("cannot open {}: {e}", path.to_string_lossy()))
                })?;
            file.try_lock().map_err(|_| {
                StoreError::Config(format!(
                    "another elevate process is using this database ({} is locked); run one instance per database file",
                    path.to_string_lossy()
                ))
            })?;
            Some(Arc::new(file))
        };
        if !memory {
            // One connection first: switching a new file to WAL from several
            // connections at once can fail with SQLITE_BUSY, and migrations
            // must run before anyone reads.
            let mut first = SqliteConnection::connect_with(&options).await?;
            schema::migrate(&mut first).await?;
            first.close().await?;
        }
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection.
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        let store = Store {
            pool,
            write_lock: Arc::new(Mutex::new(())),
            _process_lock: process_lock,
        };
        if memory {
            let mut conn = store.pool.acquire().await?;
            schema::migrate(&mut conn).await?;
        }
        Ok(store)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn begin(&self) -> Result<Tx<'_>> {
        let guard = self.write_lock.lock().await;
        let tx = self.pool.begin().await?;
        Ok(Tx { tx, _guard: guard })
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn get_request(&self, id: &RequestId) -> Result<Option<StoredRequest>> {
        let row = sqlx::query(&format!("{SELECT_REQUEST} WHERE r.id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| stored_request(&r)).transpose()
    }

    /// The request and its grant key, without the attempt counters that
    /// only listings need (the job worker's read).
    pub async fn get_request_plain(&self, id: &RequestId) -> Result<Option<StoredRequest>> {
        let row = sqlx::query("SELECT doc, grant_key, 0, 0, account FROM requests WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| stored_request(&r)).transpose()
    }

    pub async fn list_requests(&self, filter: &RequestFilter) -> Result<Vec<StoredRequest>> {
        let mut sql = format!("{SELECT_REQUEST} WHERE 1=1");
        if filter.requester.is_some() {
            sql.push_str(" AND r.requester = ?");
        }
        if !filter.states.is_empty() {
            sql.push_str(" AND r.state IN (");
            sql.push_str(&vec!["?"; filter.states.len()].join(","));
            sql.push(')');
        }
        sql.push_str(" ORDER BY r.created_at DESC, r.id LIMIT ?");
        let mut q = sqlx::query(&sql);
        if let Some(r) = &filter.requester {
            q = q.bind(r);
        }
        for s in &filter.states {
            q = q.bind(s);
        }
        q = q.bind(filter.limit.unwrap_or(500));
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(stored_request).collect()
    }

    /// The active grant of `requester` on (target, resource, role) whose
    /// window contains `now`, if any: "is this user elevated for X now?".
    pub async fn active_grant(
        &self,
        requester: &str,
        target: &str,
        resource: &str,
        role: &str,
        now: Timestamp,
    ) -> Result<Option<StoredRequest>> {
        let rows = sqlx::query(&format!(
            "{SELECT_REQUEST} WHERE r.requester = ? AND r.target = ? AND r.resource = ? AND r.role = ? AND r.state = 'active'"
        ))
        .bind(requester)
        .bind(target)
        .bind(resource)
        .bind(role)
        .fetch_all(&self.pool)
        .await?;
        let mut best: Option<StoredRequest> = None;
        for row in &rows {
            let s = stored_request(row)?;
            let Some(w) = s.request.state.window() else {
                continue;
            };
            if w.starts_at <= now
                && now < w.ends_at
                && best
                    .as_ref()
                    .and_then(|b| b.request.state.window())
                    .is_none_or(|b| b.ends_at < w.ends_at)
            {
                best = Some(s);
            }
        }
        Ok(best)
    }

    /// Another request holding the role behind `grant_key` (approved or
    /// active), if any: its removal must then leave the role in place.
    pub async fn other_holder(
        &self,
        grant_key: &str,
        except: &RequestId,
    ) -> Result<Option<RequestId>> {
        let row: Option<String> = sqlx::query_scalar(
            "SELECT id FROM requests WHERE grant_key = ? AND id <> ? AND state IN (?, ?) LIMIT 1",
        )
        .bind(grant_key)
        .bind(except.as_str())
        .bind(State::NEEDS_ROLE[0])
        .bind(State::NEEDS_ROLE[1])
        .fetch_optional(&self.pool)
        .await?;
        row.map(|s| parse_id(&s)).transpose()
    }

    /// Extensions of `parent`, newest first.
    pub async fn extensions_of(&self, parent: &RequestId) -> Result<Vec<StoredRequest>> {
        let rows = sqlx::query(&format!(
            "{SELECT_REQUEST} WHERE r.extends = ? ORDER BY r.created_at DESC"
        ))
        .bind(parent.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_request).collect()
    }

    /// Requests whose deadline (pending timeout, start or end) has come.
    pub async fn due_requests(&self, now: Timestamp, limit: i64) -> Result<Vec<RequestId>> {
        let rows = sqlx::query(
            "SELECT id FROM requests WHERE deadline IS NOT NULL AND deadline <= ? ORDER BY deadline LIMIT ?",
        )
        .bind(to_millis(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parse_id(&r.get::<String, _>(0)))
            .collect()
    }

    pub async fn next_deadline(&self) -> Result<Option<Timestamp>> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MIN(deadline) FROM requests WHERE deadline IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        v.map(from_millis).transpose()
    }

    /// Claims up to `limit` due jobs, at most one per grant key and none
    /// whose key already has a job running, for `lease`. A worker that dies
    /// loses its lease and the job is claimed again: providers are
    /// idempotent, so a repeat is harmless. One statement claims the whole
    /// batch, so a burst of deadlines costs one commit, not one per job.
    pub async fn claim_jobs(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let _guard = self.write_lock.lock().await;
        let mut conn = self.pool.acquire().await?;
        claim(&mut conn, now, lease, limit).await
    }

    /// When the next job becomes due (for the worker's sleep).
    pub async fn next_job_at(&self) -> Result<Option<Timestamp>> {
        // Jobs running now are not counted: the worker learns of their end
        // directly. Walks the run_at index from the front, so it stays
        // cheap with a large backlog.
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(run_at) FROM jobs WHERE locked_until IS NULL OR locked_until < ?",
        )
        .bind(to_millis(chrono::Utc::now()))
        .fetch_one(&self.pool)
        .await?;
        v.map(from_millis).transpose()
    }

    /// Frees every lease. Only for a single-process store at start-up: no
    /// other worker can hold one, and waiting for leases of the process that
    /// crashed would delay catching up.
    pub async fn release_all_leases(&self) -> Result<u64> {
        let _guard = self.write_lock.lock().await;
        let r = sqlx::query("UPDATE jobs SET locked_until = NULL WHERE locked_until IS NOT NULL")
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn attempts(&self, id: &RequestId) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(
            "SELECT kind, at, outcome, error FROM job_attempts WHERE request_id = ? ORDER BY id",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Attempt {
                    kind: r.get(0),
                    at: from_millis(r.get(1))?,
                    outcome: r.get(2),
                    error: r.get(3),
                })
            })
            .collect()
    }

    /// Counts of requests per state, for metrics.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM requests GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Provider attempts per (kind, outcome), for metrics.
    pub async fn attempt_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows =
            sqlx::query("SELECT kind, outcome, COUNT(*) FROM job_attempts GROUP BY kind, outcome")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Jobs waiting, and how many of them have failed at least once.
    pub async fn job_backlog(&self) -> Result<(i64, i64)> {
        let row = sqlx::query("SELECT COUNT(*), COALESCE(SUM(attempts > 0), 0) FROM jobs")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// When each eligibility was first seen, recording `now` for new ones:
    /// an eligibility without `not_after` is valid for a year from then.
    pub async fn eligibility_first_seen(
        &self,
        ids: &[String],
        now: Timestamp,
    ) -> Result<Vec<(String, Timestamp)>> {
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            sqlx::query("INSERT INTO eligibility_seen (id, first_seen) VALUES (?, ?) ON CONFLICT (id) DO NOTHING")
                .bind(id)
                .bind(to_millis(now))
                .execute(&mut *tx.tx)
                .await?;
            let ms: i64 =
                sqlx::query_scalar("SELECT first_seen FROM eligibility_seen WHERE id = ?")
                    .bind(id)
                    .fetch_one(&mut *tx.tx)
                    .await?;
            out.push((id.clone(), from_millis(ms)?));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The schema version the database is at (for readiness checks).
    pub async fn schema_version(&self) -> Result<i64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

async fn claim(
    conn: &mut sqlx::SqliteConnection,
    now: Timestamp,
    lease: Duration,
    limit: usize,
) -> Result<Vec<Job>> {
    let now_ms = to_millis(now);
    let until = now_ms + lease.as_millis() as i64;
    let rows = sqlx::query(
        "UPDATE jobs SET locked_until = ?1
         WHERE id IN (
           SELECT MIN(j.id) FROM (
             -- Only the earliest due jobs are considered, so a large
             -- backlog does not make every claim scan all of it.
             SELECT id, grant_key, run_at FROM jobs
             WHERE run_at <= ?2 AND (locked_until IS NULL OR locked_until < ?2)
             ORDER BY run_at, id LIMIT ?3 * 4) j
           WHERE NOT EXISTS (
               SELECT 1 FROM jobs k
               WHERE k.grant_key = j.grant_key AND k.id <> j.id
                 AND k.locked_until IS NOT NULL AND k.locked_until >= ?2)
           GROUP BY j.grant_key
           ORDER BY MIN(j.run_at), MIN(j.id) LIMIT ?3)
         RETURNING id, request_id, kind, grant_key, attempts",
    )
    .bind(until)
    .bind(now_ms)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Job {
                id: r.get(0),
                request_id: parse_id(&r.get::<String, _>(1))?,
                kind: JobKind::parse(&r.get::<String, _>(2))?,
                grant_key: r.get(3),
                attempts: r.get(4),
            })
        })
        .collect()
}

const SELECT_REQUEST: &str = "SELECT r.doc, r.grant_key,
    (SELECT COUNT(*) FROM job_attempts a WHERE a.request_id = r.id AND a.kind = 'remove' AND a.outcome = 'retry'
       AND a.id > COALESCE((SELECT MAX(b.id) FROM job_attempts b WHERE b.request_id = r.id AND b.kind = 'remove' AND b.outcome IN ('ok','skipped')), 0)),
    (SELECT COUNT(*) FROM job_attempts a WHERE a.request_id = r.id AND a.kind = 'apply' AND a.outcome IN ('retry','failed'))
    , r.account
    FROM requests r";

fn stored_request(row: &sqlx::sqlite::SqliteRow) -> Result<StoredRequest> {
    let doc: String = row.get(0);
    let request: Request = serde_json::from_str(&doc)
        .map_err(|e| StoreError::Corrupt(format!("request document: {e}")))?;
    Ok(StoredRequest {
        request,
        grant_key: row.get(1),
        removal_failures: row.get(2),
        apply_failures: row.get(3),
        account: row.get(4),
    })
}

fn parse_id(s: &str) -> Result<RequestId> {
    RequestId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// The request and its grant key, without the attempt counters that
    /// only listings need.
    pub async fn get_request(&mut self, id: &RequestId) -> Result<Option<StoredRequest>> {
        let row = sqlx::query("SELECT doc, grant_key, 0, 0, account FROM requests WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| stored_request(&r)).transpose()
    }

    /// Inserts or updates a request row from its domain value.
    pub async fn put_request(
        &mut self,
        request: &Request,
        grant_key: &str,
        now: Timestamp,
    ) -> Result<()> {
        let doc = serde_json::to_string(request)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode request: {e}")))?;
        let extends = match &request.kind {
            elevate_core::request::Kind::Extension { of } => Some(of.as_str().to_owned()),
            elevate_core::request::Kind::Access => None,
        };
        sqlx::query(
            "INSERT INTO requests (id, requester, target, resource, role, grant_key, state, deadline, extends, break_glass, created_at, updated_at, doc)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, deadline = excluded.deadline,
               updated_at = excluded.updated_at, doc = excluded.doc",
        )
        .bind(request.id.as_str())
        .bind(request.requester.as_str())
        .bind(request.target.as_str())
        .bind(request.resource.as_str())
        .bind(request.role.as_str())
        .bind(grant_key)
        .bind(request.state.name())
        .bind(request.state.deadline().map(to_millis))
        .bind(extends)
        .bind(request.break_glass)
        .bind(to_millis(request.created_at))
        .bind(to_millis(now))
        .bind(doc)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records the target account of a new request (see
    /// `GrantSpec::account`); never changed afterwards.
    pub async fn set_account(&mut self, id: &RequestId, account: &str) -> Result<()> {
        sqlx::query("UPDATE requests SET account = ? WHERE id = ? AND account IS NULL")
            .bind(account)
            .bind(id.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The pending extension of `parent`, if any.
    pub async fn pending_extension(&mut self, parent: &RequestId) -> Result<Option<StoredRequest>> {
        let row = sqlx::query(&format!(
            "{SELECT_REQUEST} WHERE r.extends = ? AND r.state = 'pending' LIMIT 1"
        ))
        .bind(parent.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| stored_request(&r)).transpose()
    }

    pub async fn enqueue_job(
        &mut self,
        request: &RequestId,
        kind: JobKind,
        grant_key: &str,
        run_at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO jobs (request_id, kind, grant_key, run_at, attempts, created_at) VALUES (?, ?, ?, ?, 0, ?)",
        )
        .bind(request.as_str())
        .bind(kind.as_str())
        .bind(grant_key)
        .bind(to_millis(run_at))
        .bind(to_millis(run_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Drops queued (not running) jobs of `kind` for a request, e.g. an
    /// apply that is no longer wanted because the grant was revoked.
    pub async fn drop_queued_jobs(
        &mut self,
        request: &RequestId,
        kind: JobKind,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM jobs WHERE request_id = ? AND kind = ? AND (locked_until IS NULL OR locked_until < ?)",
        )
        .bind(request.as_str())
        .bind(kind.as_str())
        .bind(to_millis(now))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Claims due jobs inside this transaction (see [`Store::claim_jobs`]):
    /// the worker records finished jobs and claims the next ones with one
    /// commit.
    pub async fn claim_jobs(
        &mut self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Job>> {
        claim(&mut self.tx, now, lease, limit).await
    }

    pub async fn finish_job(&mut self, job: &Job) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = ?")
            .bind(job.id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn retry_job(&mut self, job: &Job, run_at: Timestamp, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET attempts = attempts + 1, run_at = ?, locked_until = NULL, last_error = ? WHERE id = ?",
        )
        .bind(to_millis(run_at))
        .bind(error)
        .bind(job.id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn record_attempt(
        &mut self,
        request: &RequestId,
        kind: JobKind,
        at: Timestamp,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO job_attempts (request_id, kind, at, outcome, error) VALUES (?, ?, ?, ?, ?)")
            .bind(request.as_str())
            .bind(kind.as_str())
            .bind(to_millis(at))
            .bind(outcome)
            .bind(error)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Appends one event to the audit chain.
    pub async fn append_audit(&mut self, event: &Event) -> Result<AuditRecord> {
        audit::append(&mut self.tx, event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_process_on_the_same_database_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("e.db").display());
        let first = Store::open(&url).await.unwrap();
        let second = Store::open(&url).await;
        assert!(
            matches!(&second, Err(StoreError::Config(m)) if m.contains("another elevate")),
            "{:?}",
            second.err()
        );
        first.close().await;
        drop(first);
        Store::open(&url).await.unwrap();
    }
}
