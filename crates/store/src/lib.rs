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
pub mod copy;
pub mod followups;
pub mod identity;
pub mod inventory;
pub mod outbox;
mod schema;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use elevate_core::request::{Event, Request, State};
use elevate_core::values::RequestId;
use elevate_core::Timestamp;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row, Transaction};
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

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One process per database file (embedded default).
    Sqlite,
    /// Several replicas may share the database.
    Postgres,
}

impl Engine {
    /// The engine a database URL names, or why it names none.
    pub fn of_url(url: &str) -> Result<Engine> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else if url.contains("://") && !url.starts_with("sqlite://") {
            Err(StoreError::Config(format!(
                "unsupported database URL scheme in {}: use sqlite://PATH or postgres://USER@HOST/DATABASE",
                redact_url(url)
            )))
        } else {
            Ok(Engine::Sqlite)
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Numbered placeholders (`$1`, `$2`, …) for statements built piece by
/// piece; both engines accept them.
#[derive(Default)]
pub(crate) struct Params(usize);

impl Params {
    pub(crate) fn next(&mut self) -> String {
        self.0 += 1;
        format!("${}", self.0)
    }
}

/// Serialises writers on PostgreSQL across every replica (see
/// [`Store::begin`]); a constant so all replicas agree.
const WRITE_LOCK_KEY: i64 = 0x656c_6576_0001;
/// Held while migrating, so replicas starting together migrate once.
const MIGRATE_LOCK_KEY: i64 = 0x656c_6576_0002;
/// The channel that tells other replicas new work or deadlines exist.
pub const WAKE_CHANNEL: &str = "elevate_wake";

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
    /// The lease this claim holds (its `locked_until`). Recording the
    /// outcome checks it is still ours: a worker that outlived its lease
    /// (another replica has claimed the job again since) records nothing.
    pub lease: i64,
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
    pool: AnyPool,
    engine: Engine,
    /// The URL the store was opened with (PostgreSQL: for the wake-up
    /// listener's own connection).
    url: String,
    /// Serialises this process's writers (see the module doc).
    write_lock: Arc<Mutex<()>>,
    /// Names this process in its wake-up notifications, so its own
    /// (already handled in-process) are ignored.
    instance: Arc<str>,
    /// SQLite only: an exclusive lock on `DATABASE.lock`, held while the
    /// store is open: the in-process write lock, job leases and the lease
    /// release at start all assume one process per database file, so a
    /// second `elevate serve` on the same file is refused.
    _process_lock: Option<Arc<std::fs::File>>,
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx<'a> {
    tx: Transaction<'static, Any>,
    _guard: MutexGuard<'a, ()>,
    engine: Engine,
    instance: &'a str,
    /// Set when the transaction adds work or moves a deadline: other
    /// replicas are told on commit.
    wake: bool,
}

/// SQLite settings applied to every connection: WAL so readers never
/// block the writer; FULL so a committed grant decision survives power
/// loss, not just a process crash; a busy timeout instead of instant
/// `SQLITE_BUSY`.
const SQLITE_PRAGMAS: [&str; 4] = [
    "PRAGMA busy_timeout = 10000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
];

async fn sqlite_pragmas(conn: &mut AnyConnection) -> std::result::Result<(), sqlx::Error> {
    for pragma in SQLITE_PRAGMAS {
        sqlx::query(pragma).execute(&mut *conn).await?;
    }
    Ok(())
}

impl Store {
    /// Opens the database named by `url` and applies pending migrations:
    /// - `sqlite://PATH` or a plain file path (created if missing);
    ///   `sqlite::memory:` for a throwaway store;
    /// - `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (the database must
    ///   exist); several replicas may open the same one.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        match Engine::of_url(url)? {
            Engine::Postgres => Self::open_postgres(url).await,
            Engine::Sqlite => Self::open_sqlite(url).await,
        }
    }

    async fn open_postgres(url: &str) -> Result<Store> {
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Writers hold one lock shared by every replica (see
                    // `begin`): a replica that stalls inside a transaction
                    // (a paused VM, a partition) must not hold the others'
                    // writes for long. PostgreSQL ends such a session.
                    sqlx::query("SET idle_in_transaction_session_timeout = '30s'")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(connect_error)?;
        {
            let mut conn = pool.acquire().await?;
            // One replica migrates; the others wait here, then find the
            // schema current.
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATE_LOCK_KEY)
                .execute(&mut *conn)
                .await?;
            let migrated = schema::migrate(&mut conn, Engine::Postgres).await;
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATE_LOCK_KEY)
                .execute(&mut *conn)
                .await;
            migrated?;
            unlocked?;
        }
        Ok(Store {
            pool,
            engine: Engine::Postgres,
            url: url.to_owned(),
            write_lock: Arc::new(Mutex::new(())),
            instance: instance_id(),
            _process_lock: None,
        })
    }

    async fn open_sqlite(url: &str) -> Result<Store> {
        let (any_url, options) = if url.starts_with("sqlite:") {
            (url.to_owned(), SqliteConnectOptions::from_str(url)?)
        } else {
            (
                format!("sqlite://{url}"),
                SqliteConnectOptions::new().filename(url),
            )
        };
        let memory = url.contains(":memory:");
        // Create the file if missing, unless the URL says otherwise.
        let any_url = if memory || any_url.contains("mode=") {
            any_url
        } else if any_url.contains('?') {
            format!("{any_url}&mode=rwc")
        } else {
            format!("{any_url}?mode=rwc")
        };
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
            let mut first = AnyConnection::connect(&any_url).await?;
            sqlite_pragmas(&mut first).await?;
            schema::migrate(&mut first, Engine::Sqlite).await?;
            first.close().await?;
        }
        let pool = AnyPoolOptions::new()
            // An in-memory database exists once per connection.
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(|conn, _| Box::pin(sqlite_pragmas(conn)))
            .connect(&any_url)
            .await?;
        let store = Store {
            pool,
            engine: Engine::Sqlite,
            url: any_url,
            write_lock: Arc::new(Mutex::new(())),
            instance: instance_id(),
            _process_lock: process_lock,
        };
        if memory {
            let mut conn = store.pool.acquire().await?;
            schema::migrate(&mut conn, Engine::Sqlite).await?;
        }
        Ok(store)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Whether other processes may share this database (and its job
    /// leases).
    pub fn shared(&self) -> bool {
        self.engine == Engine::Postgres
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction. Writers are serialised: within the
    /// process by a mutex, and on PostgreSQL across replicas by a
    /// transaction-scoped advisory lock. One writer at a time is what keeps
    /// the audit chain linear and makes "read the request, decide, write
    /// it" safe without per-row locking, on both engines alike.
    pub async fn begin(&self) -> Result<Tx<'_>> {
        let guard = self.write_lock.lock().await;
        let tx = match self.engine {
            // One round trip for both.
            Engine::Postgres => {
                self.pool
                    .begin_with(format!(
                        "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"
                    ))
                    .await?
            }
            Engine::Sqlite => self.pool.begin().await?,
        };
        Ok(Tx {
            tx,
            _guard: guard,
            engine: self.engine,
            instance: &self.instance,
            wake: false,
        })
    }

    /// Calls `wake` whenever another replica reports new work or a moved
    /// deadline (PostgreSQL `LISTEN`), and once after every reconnection
    /// (notifications sent while disconnected are lost). Returns at once on
    /// SQLite, where there is no other replica. Runs until the process ends.
    pub async fn watch_wakeups(&self, wake: impl Fn() + Send + Sync) {
        if self.engine != Engine::Postgres {
            return;
        }
        loop {
            match sqlx::postgres::PgListener::connect(&self.url).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(WAKE_CHANNEL).await {
                        tracing::warn!(error = %e, "cannot listen for wake-ups; retrying");
                    } else {
                        wake();
                        loop {
                            match listener.recv().await {
                                // This process woke its own tasks already.
                                Ok(n) if n.payload() == &*self.instance => {}
                                Ok(_) => wake(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "wake-up listener lost its connection; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect the wake-up listener; retrying")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn get_request(&self, id: &RequestId) -> Result<Option<StoredRequest>> {
        let row = sqlx::query(&format!("{SELECT_REQUEST} WHERE r.id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| stored_request(&r)).transpose()
    }

    /// The request and its grant key, without the attempt counters that
    /// only listings need (the job worker's read).
    pub async fn get_request_plain(&self, id: &RequestId) -> Result<Option<StoredRequest>> {
        let row = sqlx::query("SELECT doc, grant_key, 0, 0, account FROM requests WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| stored_request(&r)).transpose()
    }

    pub async fn list_requests(&self, filter: &RequestFilter) -> Result<Vec<StoredRequest>> {
        let mut sql = format!("{SELECT_REQUEST} WHERE 1=1");
        let mut n = Params::default();
        if filter.requester.is_some() {
            sql.push_str(&format!(" AND r.requester = {}", n.next()));
        }
        if !filter.states.is_empty() {
            let list: Vec<String> = filter.states.iter().map(|_| n.next()).collect();
            sql.push_str(&format!(" AND r.state IN ({})", list.join(",")));
        }
        sql.push_str(&format!(
            " ORDER BY r.created_at DESC, r.id LIMIT {}",
            n.next()
        ));
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
            "{SELECT_REQUEST} WHERE r.requester = $1 AND r.target = $2 AND r.resource = $3 AND r.role = $4 AND r.state = 'active'"
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
            "SELECT id FROM requests WHERE grant_key = $1 AND id <> $2 AND state IN ($3, $4) LIMIT 1",
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
            "{SELECT_REQUEST} WHERE r.extends = $1 ORDER BY r.created_at DESC"
        ))
        .bind(parent.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_request).collect()
    }

    /// Requests whose deadline (pending timeout, start or end) has come.
    pub async fn due_requests(&self, now: Timestamp, limit: i64) -> Result<Vec<RequestId>> {
        let rows = sqlx::query(
            "SELECT id FROM requests WHERE deadline IS NOT NULL AND deadline <= $1 ORDER BY deadline LIMIT $2",
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
        let mut tx = self.begin().await?;
        let jobs = tx.claim_jobs(now, lease, limit).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    /// When the next job becomes due (for the worker's sleep).
    pub async fn next_job_at(&self) -> Result<Option<Timestamp>> {
        // Jobs running now are not counted: the worker learns of their end
        // directly. Walks the run_at index from the front, so it stays
        // cheap with a large backlog.
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(run_at) FROM jobs WHERE locked_until IS NULL OR locked_until < $1",
        )
        .bind(to_millis(chrono::Utc::now()))
        .fetch_one(&self.pool)
        .await?;
        v.map(from_millis).transpose()
    }

    /// Frees every lease. Only for a single-process store at start-up: no
    /// other worker can hold one, and waiting for leases of the process that
    /// crashed would delay catching up. Does nothing on a shared
    /// (PostgreSQL) store, where the leases may be other replicas' live
    /// work: there a dead replica's jobs run again when their lease ends.
    pub async fn release_all_leases(&self) -> Result<u64> {
        if self.shared() {
            return Ok(0);
        }
        let _guard = self.write_lock.lock().await;
        let r = sqlx::query("UPDATE jobs SET locked_until = NULL WHERE locked_until IS NOT NULL")
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn attempts(&self, id: &RequestId) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(
            "SELECT kind, at, outcome, error FROM job_attempts WHERE request_id = $1 ORDER BY id",
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
        let row = sqlx::query("SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) FROM jobs")
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
            sqlx::query("INSERT INTO eligibility_seen (id, first_seen) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(id)
                .bind(to_millis(now))
                .execute(&mut *tx.tx)
                .await?;
            let ms: i64 =
                sqlx::query_scalar("SELECT first_seen FROM eligibility_seen WHERE id = $1")
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

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

async fn claim(
    conn: &mut AnyConnection,
    now: Timestamp,
    lease: Duration,
    limit: usize,
) -> Result<Vec<Job>> {
    let now_ms = to_millis(now);
    let until = now_ms + lease.as_millis() as i64;
    let rows = sqlx::query(
        "UPDATE jobs SET locked_until = $1
         WHERE id IN (
           SELECT MIN(j.id) FROM (
             -- Only the earliest due jobs are considered, so a large
             -- backlog does not make every claim scan all of it.
             SELECT id, grant_key, run_at FROM jobs
             WHERE run_at <= $2 AND (locked_until IS NULL OR locked_until < $2)
             ORDER BY run_at, id LIMIT $3 * 4) j
           WHERE NOT EXISTS (
               SELECT 1 FROM jobs k
               WHERE k.grant_key = j.grant_key AND k.id <> j.id
                 AND k.locked_until IS NOT NULL AND k.locked_until >= $2)
           GROUP BY j.grant_key
           ORDER BY MIN(j.run_at), MIN(j.id) LIMIT $3)
         RETURNING id, request_id, kind, grant_key, attempts, locked_until",
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
                lease: r.get(5),
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

fn stored_request(row: &AnyRow) -> Result<StoredRequest> {
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

/// A random name for this process's store (see `Store::instance`).
fn instance_id() -> Arc<str> {
    use sha2::Digest;
    // Process id, time and a stack address (randomised by ASLR): unique
    // among replicas without a random-number dependency in this crate.
    let marker = 0_u8;
    let seed = format!(
        "{}-{:?}-{:p}",
        std::process::id(),
        std::time::SystemTime::now(),
        &marker
    );
    Arc::from(hex::encode(&sha2::Sha256::digest(seed.as_bytes())[..8]))
}

/// The caller names the (redacted) URL; sqlx's own message never holds
/// the password.
fn connect_error(e: sqlx::Error) -> StoreError {
    StoreError::Config(format!("cannot connect: {e}"))
}

fn parse_id(s: &str) -> Result<RequestId> {
    RequestId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Tx<'_> {
    pub async fn commit(mut self) -> Result<()> {
        if self.wake && self.engine == Engine::Postgres {
            // Delivered to every listening replica when (and only if) the
            // transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WAKE_CHANNEL)
                .bind(self.instance)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }

    /// The request and its grant key, without the attempt counters that
    /// only listings need.
    pub async fn get_request(&mut self, id: &RequestId) -> Result<Option<StoredRequest>> {
        let row = sqlx::query("SELECT doc, grant_key, 0, 0, account FROM requests WHERE id = $1")
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
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
        .bind(i64::from(request.break_glass))
        .bind(to_millis(request.created_at))
        .bind(to_millis(now))
        .bind(doc)
        .execute(&mut *self.tx)
        .await?;
        if request.state.deadline().is_some() {
            self.wake = true;
        }
        Ok(())
    }

    /// Records the target account of a new request (see
    /// `GrantSpec::account`); never changed afterwards.
    pub async fn set_account(&mut self, id: &RequestId, account: &str) -> Result<()> {
        sqlx::query("UPDATE requests SET account = $1 WHERE id = $2 AND account IS NULL")
            .bind(account)
            .bind(id.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The pending extension of `parent`, if any.
    pub async fn pending_extension(&mut self, parent: &RequestId) -> Result<Option<StoredRequest>> {
        let row = sqlx::query(&format!(
            "{SELECT_REQUEST} WHERE r.extends = $1 AND r.state = 'pending' LIMIT 1"
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
            "INSERT INTO jobs (request_id, kind, grant_key, run_at, attempts, created_at) VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(request.as_str())
        .bind(kind.as_str())
        .bind(grant_key)
        .bind(to_millis(run_at))
        .bind(to_millis(run_at))
        .execute(&mut *self.tx)
        .await?;
        self.wake = true;
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
            "DELETE FROM jobs WHERE request_id = $1 AND kind = $2 AND (locked_until IS NULL OR locked_until < $3)",
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

    /// Removes a finished job. False when the claim's lease was lost (the
    /// job was claimed again after it ran out): the new holder records it.
    pub async fn finish_job(&mut self, job: &Job) -> Result<bool> {
        let done = sqlx::query("DELETE FROM jobs WHERE id = $1 AND locked_until = $2")
            .bind(job.id)
            .bind(job.lease)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Puts a failed job back for `run_at`; false when the lease was lost
    /// (see [`Tx::finish_job`]).
    pub async fn retry_job(&mut self, job: &Job, run_at: Timestamp, error: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET attempts = attempts + 1, run_at = $1, locked_until = NULL, last_error = $2 WHERE id = $3 AND locked_until = $4",
        )
        .bind(to_millis(run_at))
        .bind(error)
        .bind(job.id)
        .bind(job.lease)
        .execute(&mut *self.tx)
        .await?;
        self.wake = true;
        Ok(done.rows_affected() > 0)
    }

    pub async fn record_attempt(
        &mut self,
        request: &RequestId,
        kind: JobKind,
        at: Timestamp,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO job_attempts (request_id, kind, at, outcome, error) VALUES ($1, $2, $3, $4, $5)")
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

    /// Appends an event elevate's own processes cause about a target as a
    /// whole, not about one request (reconciliation findings).
    pub async fn append_target_audit(
        &mut self,
        action: elevate_core::request::Action,
        at: Timestamp,
        details: &serde_json::Value,
    ) -> Result<AuditRecord> {
        audit::append_parts(
            &mut self.tx,
            at,
            &elevate_core::principal::Actor::System.to_stored(),
            action.as_str(),
            None,
            details,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_their_engine_and_never_show_a_password() {
        assert_eq!(Engine::of_url("sqlite://e.db").unwrap(), Engine::Sqlite);
        assert_eq!(Engine::of_url("e.db").unwrap(), Engine::Sqlite);
        assert_eq!(Engine::of_url("sqlite::memory:").unwrap(), Engine::Sqlite);
        assert_eq!(
            Engine::of_url("postgres://u@h/db").unwrap(),
            Engine::Postgres
        );
        assert_eq!(
            Engine::of_url("postgresql://u@h/db").unwrap(),
            Engine::Postgres
        );
        let refused = Engine::of_url("mysql://u:hunter2@h/db")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("unsupported"), "{refused}");
        assert!(!refused.contains("hunter2"), "{refused}");
        assert_eq!(
            redact_url("postgres://elevate:s3cr%40t@db.internal:5432/elevate?sslmode=verify-full"),
            "postgres://elevate:***@db.internal:5432/elevate?sslmode=verify-full"
        );
        assert_eq!(
            redact_url("postgres://elevate@db/x"),
            "postgres://elevate@db/x"
        );
        assert_eq!(redact_url("sqlite://a@b.db"), "sqlite://a@b.db");
    }

    /// A request row for jobs to refer to (the domain value is not read).
    async fn request_row(store: &Store, id: &str) {
        sqlx::query(
            "INSERT INTO requests (id, requester, target, resource, role, grant_key, state, deadline, extends, break_glass, created_at, updated_at, doc)
             VALUES ($1, 'alice', 'demo', 'orders', 'orders_writer', 'k', 'approved', NULL, NULL, 0, 0, 0, '{}')",
        )
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_claim_whose_lease_ran_out_and_was_taken_again_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = elevate_testkit::database_url(&dir.path().join("e.db")).unwrap();
        let store = Store::open(&url).await.unwrap();
        let id = RequestId::parse("r-aaaaaaaaaaaa").unwrap();
        request_row(&store, id.as_str()).await;
        let t0 = from_millis(1_700_000_000_000).unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.enqueue_job(&id, JobKind::Apply, "k", t0).await.unwrap();
        tx.commit().await.unwrap();
        let lease = Duration::from_secs(60);

        let first = store.claim_jobs(t0, lease, 10).await.unwrap();
        assert_eq!(first.len(), 1);
        // Still leased: nobody else gets it.
        let during = t0 + chrono::Duration::seconds(30);
        assert!(store
            .claim_jobs(during, lease, 10)
            .await
            .unwrap()
            .is_empty());
        // The lease ran out: another worker claims it again.
        let after = t0 + chrono::Duration::seconds(61);
        let second = store.claim_jobs(after, lease, 10).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].lease, second[0].lease);

        let mut tx = store.begin().await.unwrap();
        assert!(
            !tx.finish_job(&first[0]).await.unwrap(),
            "a lost lease records nothing"
        );
        assert!(!tx.retry_job(&first[0], after, "late").await.unwrap());
        assert!(
            tx.finish_job(&second[0]).await.unwrap(),
            "the new holder records it"
        );
        tx.commit().await.unwrap();
        assert_eq!(store.job_backlog().await.unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn replicas_wake_each_other_on_new_work_but_not_themselves() {
        // Always PostgreSQL: this is the cross-replica mechanism itself.
        let cluster = elevate_testkit::PgCluster::start().unwrap();
        cluster.psql("CREATE DATABASE wake").unwrap();
        let url = cluster.url("postgres", None, "wake");
        let a = Store::open(&url).await.unwrap();
        let b = Store::open(&url).await.unwrap();
        let (tx_wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
        let watcher = b.clone();
        let watching = tokio::spawn(async move {
            watcher
                .watch_wakeups(move || {
                    let _ = tx_wake.send(());
                })
                .await
        });
        let within = Duration::from_secs(10);
        // One wake-up once listening (anything sent before was missed).
        tokio::time::timeout(within, woken.recv()).await.unwrap();

        // Work queued through the other replica wakes this one.
        let id = RequestId::parse("r-bbbbbbbbbbbb").unwrap();
        request_row(&a, id.as_str()).await;
        let mut tx = a.begin().await.unwrap();
        tx.enqueue_job(&id, JobKind::Apply, "k", chrono::Utc::now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        tokio::time::timeout(within, woken.recv()).await.unwrap();

        // A transaction that adds no work wakes nobody; this replica's own
        // work does not wake itself (it woke its tasks in-process).
        let mut tx = a.begin().await.unwrap();
        tx.set_account(&id, "x").await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = b.begin().await.unwrap();
        tx.enqueue_job(&id, JobKind::Remove, "k", chrono::Utc::now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Then one more from the other replica: the first wake-up to arrive
        // must be this one, so none came in between.
        let mut tx = a.begin().await.unwrap();
        tx.enqueue_job(&id, JobKind::Remove, "k", chrono::Utc::now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        tokio::time::timeout(within, woken.recv()).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(500), woken.recv())
                .await
                .is_err(),
            "only the other replica's work may wake this one"
        );
        watching.abort();
    }

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
