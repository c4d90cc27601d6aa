//! Schema migrations, applied in order on open. Each entry runs once, in a
//! transaction together with the bump of `schema_version`; never edit a
//! released entry, append a new one.

use sqlx::{AnyConnection, Connection};

use crate::{Engine, Result};

const MIGRATIONS: &[&str] = &[
    // 1: requests, jobs, attempts, audit chain.
    "CREATE TABLE requests (
        id          TEXT PRIMARY KEY,
        requester   TEXT NOT NULL,
        target      TEXT NOT NULL,
        resource    TEXT NOT NULL,
        role        TEXT NOT NULL,
        grant_key   TEXT NOT NULL,
        state       TEXT NOT NULL,
        deadline    INTEGER,
        extends     TEXT REFERENCES requests(id),
        break_glass INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        doc         TEXT NOT NULL
    );
    CREATE INDEX requests_deadline ON requests(deadline) WHERE deadline IS NOT NULL;
    CREATE INDEX requests_requester ON requests(requester, created_at);
    CREATE INDEX requests_key_state ON requests(grant_key, state);
    CREATE INDEX requests_state ON requests(state, created_at);
    CREATE INDEX requests_extends ON requests(extends) WHERE extends IS NOT NULL;

    CREATE TABLE jobs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id   TEXT NOT NULL REFERENCES requests(id),
        kind         TEXT NOT NULL,
        grant_key    TEXT NOT NULL,
        run_at       INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        locked_until INTEGER,
        created_at   INTEGER NOT NULL
    );
    CREATE INDEX jobs_due ON jobs(run_at);
    CREATE INDEX jobs_key ON jobs(grant_key);
    CREATE INDEX jobs_request ON jobs(request_id);

    CREATE TABLE job_attempts (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL REFERENCES requests(id),
        kind       TEXT NOT NULL,
        at         INTEGER NOT NULL,
        outcome    TEXT NOT NULL,
        error      TEXT
    );
    CREATE INDEX job_attempts_request ON job_attempts(request_id, kind);

    CREATE TABLE audit (
        seq        INTEGER PRIMARY KEY,
        at         INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        request_id TEXT,
        details    TEXT NOT NULL,
        prev_hash  TEXT NOT NULL,
        hash       TEXT NOT NULL
    );
    CREATE INDEX audit_request ON audit(request_id);
    CREATE INDEX audit_at ON audit(at);
    -- The newest link, kept apart so that deleting events from the end of
    -- the chain is detected too.
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash TEXT NOT NULL
    );

    CREATE TABLE eligibility_seen (
        id         TEXT PRIMARY KEY,
        first_seen INTEGER NOT NULL
    );",
    // 2: "is this user elevated for X now?" must not scan every active
    // grant.
    "CREATE INDEX requests_holder ON requests(requester, target, resource, role, state);",
    // 3: the target account a grant was given to, fixed when it was made.
    "ALTER TABLE requests ADD COLUMN account TEXT;",
    // 4: identities from the identity provider, browser sessions, sign-ins
    // in progress (see identity.rs).
    "CREATE TABLE identities (
        issuer     TEXT NOT NULL,
        subject    TEXT NOT NULL,
        user_name  TEXT NOT NULL UNIQUE,
        profile    TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        PRIMARY KEY (issuer, subject)
    );
    CREATE TABLE sessions (
        id_hash    TEXT PRIMARY KEY,
        user_name  TEXT NOT NULL,
        doc        TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX sessions_expiry ON sessions(expires_at);
    CREATE TABLE login_flows (
        state_hash TEXT PRIMARY KEY,
        doc        TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );",
    // 5: notifications and follow-ups (outbox.rs, followups.rs).
    // `outbox_cursors`: how far each reader of the audit chain (the
    // notifier, each signed webhook) has got, claimed with a lease like a
    // job. `deliveries`: one message to one recipient on one channel,
    // retried until sent or given up. `spent_links`: approval links used
    // once. `followups`: reminders, escalations and "ending soon" notices
    // already given, so each happens once. `settings`: values the
    // replicas share, such as the key approval links are signed with.
    "CREATE TABLE outbox_cursors (
        name         TEXT PRIMARY KEY,
        last_seq     INTEGER NOT NULL,
        run_at       INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        locked_until INTEGER
    );
    CREATE TABLE deliveries (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        audit_seq    INTEGER NOT NULL,
        request_id   TEXT,
        event        TEXT NOT NULL,
        channel      TEXT NOT NULL,
        recipient    TEXT NOT NULL,
        doc          TEXT NOT NULL,
        state        TEXT NOT NULL,
        run_at       INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        locked_until INTEGER,
        created_at   INTEGER NOT NULL,
        done_at      INTEGER
    );
    CREATE INDEX deliveries_due ON deliveries(state, run_at);
    CREATE INDEX deliveries_request ON deliveries(request_id);
    CREATE TABLE spent_links (
        nonce      TEXT PRIMARY KEY,
        used_at    INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE followups (
        request_id TEXT NOT NULL REFERENCES requests(id),
        kind       TEXT NOT NULL,
        at         INTEGER NOT NULL,
        PRIMARY KEY (request_id, kind)
    );
    CREATE TABLE settings (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 6: what targets that discover their resources found (inventory.rs):
    // the last good inventory of each (JSON), when it was read, and the
    // last failed attempt since, so a restart or another replica lists
    // resources at once without asking the target; and the last
    // reconciliation report.
    "CREATE TABLE inventories (
        target       TEXT PRIMARY KEY,
        doc          TEXT NOT NULL,
        refreshed_at INTEGER NOT NULL,
        failed_at    INTEGER,
        last_error   TEXT,
        reconciled_at  INTEGER,
        reconciliation TEXT
    );",
];

pub async fn migrate(conn: &mut AnyConnection, engine: Engine) -> Result<()> {
    sqlx::query(&for_engine(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        engine,
    ))
    .execute(&mut *conn)
    .await?;
    let mut tx = conn.begin().await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *tx)
        .await?;
    let current = current.unwrap_or(0) as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        sqlx::raw_sql(&for_engine(sql, engine))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind((i + 1) as i64)
            .execute(&mut *tx)
            .await?;
        tracing::info!(
            version = i + 1,
            engine = engine.name(),
            "applied database migration"
        );
    }
    tx.commit().await?;
    Ok(())
}

/// The migrations are written once, in SQLite's dialect; PostgreSQL reads
/// the same statements with 64-bit integers (every integer column holds
/// milliseconds, ids or counts) and identity columns for SQLite's
/// auto-increment keys. Only these two spellings differ in the schema.
fn for_engine(sql: &str, engine: Engine) -> String {
    match engine {
        Engine::Sqlite => sql.to_owned(),
        Engine::Postgres => sql
            .replace(
                "INTEGER PRIMARY KEY AUTOINCREMENT",
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            )
            .replace("INTEGER", "BIGINT"),
    }
}

/// The schema version this build expects (for readiness checks).
pub const CURRENT: usize = MIGRATIONS.len();
