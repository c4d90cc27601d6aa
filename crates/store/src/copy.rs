//! Copying a whole store into another, empty one (`elevate db copy`): how
//! an embedded (SQLite) installation moves to PostgreSQL, or any store to
//! any other, with its history and audit chain intact.
//!
//! - Every table but `schema_version` is copied column for column: request
//!   ids, audit sequence numbers and hashes, documents, millisecond times
//!   and NULLs arrive exactly as stored. The one change: job leases
//!   (`jobs.locked_until`) are cleared, since the process that held them is
//!   stopped and the jobs must be claimable at once.
//! - The source is read in one snapshot (one read transaction), in pages of
//!   [`BATCH`] rows; the destination is written in one transaction, one
//!   multi-row `INSERT` per page, so a failure leaves it as it was.
//! - The destination must hold no history (requests, jobs, audit events,
//!   identities, sessions): a copy never merges into a live database. Only
//!   `eligibility_seen`, which any elevate writes when it starts, may hold
//!   rows; the source's first-seen times replace them (they are the older
//!   history).
//! - Both stores must be at this build's schema version.
//! - The auto-increment positions of `jobs` and `job_attempts` are carried
//!   over (PostgreSQL identity sequences, SQLite's `sqlite_sequence`), so
//!   new rows never collide with copied ones.
//! - The source's chain is verified before anything is written; the copy's
//!   chain is verified once committed and must end at the source's head.
//!   Should that ever fail, the copied rows are deleted again.

use std::collections::HashSet;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::audit::GENESIS;
use crate::{Engine, Result, Store, StoreError, SCHEMA_VERSION};

/// Rows per page read from the source and per `INSERT` into the
/// destination (at most 14 columns: 7,000 parameters, far below either
/// engine's limit).
pub const BATCH: usize = 500;

/// How a column is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
}

/// One table as of [`SCHEMA_VERSION`]: every column, and the primary key
/// the source is paged by.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    key: &'static [&'static str],
}

use Kind::{Int, Text};

/// Every table but `schema_version`, parents before the tables that refer
/// to them. A migration that adds a table or a column must add it here
/// (the unit test below fails until it does).
const TABLES: &[Table] = &[
    Table {
        name: "requests",
        columns: &[
            ("id", Text),
            ("requester", Text),
            ("target", Text),
            ("resource", Text),
            ("role", Text),
            ("grant_key", Text),
            ("state", Text),
            ("deadline", Int),
            ("extends", Text),
            ("break_glass", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("doc", Text),
            ("account", Text),
        ],
        key: &["id"],
    },
    Table {
        name: "jobs",
        columns: &[
            ("id", Int),
            ("request_id", Text),
            ("kind", Text),
            ("grant_key", Text),
            ("run_at", Int),
            ("attempts", Int),
            ("last_error", Text),
            ("locked_until", Int),
            ("created_at", Int),
        ],
        key: &["id"],
    },
    Table {
        name: "job_attempts",
        columns: &[
            ("id", Int),
            ("request_id", Text),
            ("kind", Text),
            ("at", Int),
            ("outcome", Text),
            ("error", Text),
        ],
        key: &["id"],
    },
    Table {
        name: "audit",
        columns: &[
            ("seq", Int),
            ("at", Int),
            ("actor", Text),
            ("action", Text),
            ("request_id", Text),
            ("details", Text),
            ("prev_hash", Text),
            ("hash", Text),
        ],
        key: &["seq"],
    },
    Table {
        name: "audit_head",
        columns: &[("id", Int), ("seq", Int), ("hash", Text)],
        key: &["id"],
    },
    Table {
        name: "eligibility_seen",
        columns: &[("id", Text), ("first_seen", Int)],
        key: &["id"],
    },
    Table {
        name: "identities",
        columns: &[
            ("issuer", Text),
            ("subject", Text),
            ("user_name", Text),
            ("profile", Text),
            ("first_seen", Int),
            ("last_seen", Int),
        ],
        key: &["issuer", "subject"],
    },
    Table {
        name: "sessions",
        columns: &[
            ("id_hash", Text),
            ("user_name", Text),
            ("doc", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
        key: &["id_hash"],
    },
    Table {
        name: "login_flows",
        columns: &[("state_hash", Text), ("doc", Text), ("expires_at", Int)],
        key: &["state_hash"],
    },
    Table {
        name: "outbox_cursors",
        columns: &[
            ("name", Text),
            ("last_seq", Int),
            ("run_at", Int),
            ("attempts", Int),
            ("last_error", Text),
            ("locked_until", Int),
        ],
        key: &["name"],
    },
    Table {
        name: "deliveries",
        columns: &[
            ("id", Int),
            ("audit_seq", Int),
            ("request_id", Text),
            ("event", Text),
            ("channel", Text),
            ("recipient", Text),
            ("doc", Text),
            ("state", Text),
            ("run_at", Int),
            ("attempts", Int),
            ("last_error", Text),
            ("locked_until", Int),
            ("created_at", Int),
            ("done_at", Int),
        ],
        key: &["id"],
    },
    Table {
        name: "spent_links",
        columns: &[("nonce", Text), ("used_at", Int), ("expires_at", Int)],
        key: &["nonce"],
    },
    Table {
        name: "followups",
        columns: &[("request_id", Text), ("kind", Text), ("at", Int)],
        key: &["request_id", "kind"],
    },
    Table {
        name: "settings",
        columns: &[("name", Text), ("value", Text)],
        key: &["name"],
    },
    Table {
        name: "inventories",
        columns: &[
            ("target", Text),
            ("doc", Text),
            ("refreshed_at", Int),
            ("failed_at", Int),
            ("last_error", Text),
            ("reconciled_at", Int),
            ("reconciliation", Text),
        ],
        key: &["target"],
    },
];

/// The table whose rows a destination may already hold (see the module
/// doc); every other must be empty.
const REWRITTEN_AT_START: &str = "eligibility_seen";

/// Tables with an auto-increment `id` whose position is carried over.
const SEQUENCED: [&str; 3] = ["jobs", "job_attempts", "deliveries"];

/// What [`copy`] copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Rows copied per table, in copy order.
    pub tables: Vec<TableRows>,
    /// Job leases cleared in the copy.
    pub leases_cleared: u64,
    /// Events in the copy's audit chain (as verified there).
    pub audit_events: i64,
    /// The hash of the last event (64 zeros for an empty chain), the same
    /// in the source and the copy.
    pub audit_head: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRows {
    pub table: &'static str,
    pub rows: u64,
}

impl CopyReport {
    /// Rows copied into `table` (0 for a table not copied).
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|t| t.table == table)
            .map_or(0, |t| t.rows)
    }
}

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

/// Copies everything `from` holds into `to`, which must be empty (see the
/// module doc), and verifies the copy's audit chain.
pub async fn copy(from: &Store, to: &Store) -> Result<CopyReport> {
    copy_in_pages(from, to, BATCH).await
}

/// [`copy`] in pages of `batch` rows (small in tests, to cross pages).
async fn copy_in_pages(from: &Store, to: &Store, batch: usize) -> Result<CopyReport> {
    let expected = SCHEMA_VERSION as i64;
    for (store, which) in [(from, "source"), (to, "destination")] {
        let version = store.schema_version().await?;
        if version != expected {
            return Err(StoreError::Config(format!(
                "the {which} database is at schema version {version} but this elevate writes version {expected}: copy with the elevate version that last ran on it"
            )));
        }
    }
    let checked = from.verify_audit().await?;
    if !checked.ok {
        return Err(StoreError::Config(format!(
            "the source's audit chain does not verify (event {}: {}); nothing was copied",
            checked.broken_at.unwrap_or(0),
            checked.problem.as_deref().unwrap_or("broken")
        )));
    }

    // One snapshot of the source for the whole copy.
    let mut snapshot = from.pool().begin().await?;
    if from.engine() == Engine::Postgres {
        // PostgreSQL's default gives each statement a new snapshot.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *snapshot)
            .await?;
    }
    let source_events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
        .fetch_one(&mut *snapshot)
        .await?;
    let source_head: Option<String> =
        sqlx::query_scalar("SELECT hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *snapshot)
            .await?;
    let source_head = source_head.unwrap_or_else(|| GENESIS.to_owned());

    let mut tx = to.begin().await?;
    refuse_unless_empty(&mut tx.tx).await?;
    let mut copier = Copier {
        batch,
        ..Copier::default()
    };
    let mut tables = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let rows = copier.table(&mut snapshot, &mut tx.tx, table).await?;
        tables.push(TableRows {
            table: table.name,
            rows,
        });
    }
    for (id, parent) in &copier.extends_later {
        sqlx::query("UPDATE requests SET extends = $1 WHERE id = $2")
            .bind(parent)
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
    }
    for table in SEQUENCED {
        let next = next_id(&mut snapshot, from.engine(), table).await?;
        set_next_id(&mut tx.tx, to.engine(), table, next).await?;
    }
    // The same head in the copy, before it is committed.
    let copied_head: Option<String> =
        sqlx::query_scalar("SELECT hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *tx.tx)
            .await?;
    if copied_head.unwrap_or_else(|| GENESIS.to_owned()) != source_head {
        return Err(StoreError::Corrupt(
            "the copy's audit head differs from the source's; nothing was copied".into(),
        ));
    }
    // Every read is done: end the snapshot before the commit, so nothing
    // can fail on the source once the copy is committed.
    snapshot.rollback().await?;
    // Jobs are due in the copy: replicas already listening start on them.
    tx.wake = true;
    tx.commit().await?;

    let verified = to.verify_audit().await?;
    let head = verified.head.clone().unwrap_or_default();
    if !verified.ok || head != source_head || verified.events != source_events {
        let why = if verified.ok {
            format!(
                "it holds {} events ending at {head}, the source {source_events} ending at {source_head}",
                verified.events
            )
        } else {
            format!(
                "event {}: {}",
                verified.broken_at.unwrap_or(0),
                verified.problem.as_deref().unwrap_or("broken")
            )
        };
        let undone = match empty_again(to).await {
            Ok(()) => "the copied rows were deleted again".to_owned(),
            Err(e) => {
                format!("deleting the copied rows failed too ({e}): empty the destination by hand")
            }
        };
        return Err(StoreError::Corrupt(format!(
            "the copy's audit chain does not verify ({why}); {undone}"
        )));
    }
    Ok(CopyReport {
        tables,
        leases_cleared: copier.leases_cleared,
        audit_events: verified.events,
        audit_head: head,
    })
}

/// Fails unless every table but [`REWRITTEN_AT_START`] is empty, naming
/// what the destination holds.
async fn refuse_unless_empty(dst: &mut AnyConnection) -> Result<()> {
    let mut held = Vec::new();
    for table in TABLES.iter().filter(|t| t.name != REWRITTEN_AT_START) {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", table.name))
            .fetch_one(&mut *dst)
            .await?;
        if n > 0 {
            held.push(format!(
                "{}: {n} row{}",
                table.name,
                if n == 1 { "" } else { "s" }
            ));
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    Err(StoreError::Config(format!(
        "the destination database is not empty ({}); elevate db copy never merges into a database in use: give a new, empty one",
        held.join(", ")
    )))
}

/// Copy state kept across tables.
#[derive(Default)]
struct Copier {
    /// Rows per page.
    batch: usize,
    /// Request ids copied so far: an extension whose parent is not among
    /// them yet gets its `extends` set once all requests are in.
    requests: HashSet<String>,
    /// (extension, parent) pairs set after all requests are copied.
    extends_later: Vec<(String, String)>,
    leases_cleared: u64,
}

impl Copier {
    /// Copies one table page by page; returns the number of rows.
    async fn table(
        &mut self,
        src: &mut AnyConnection,
        dst: &mut AnyConnection,
        table: &Table,
    ) -> Result<u64> {
        let select = format!("SELECT {} FROM {}", column_list(table), table.name);
        let order = format!(" ORDER BY {} LIMIT {}", table.key.join(", "), self.batch);
        let key_at: Vec<usize> = table
            .key
            .iter()
            .filter_map(|k| table.columns.iter().position(|(c, _)| c == k))
            .collect();
        let mut after: Option<Vec<Value>> = None;
        let mut total = 0_u64;
        loop {
            let sql = match &after {
                None => format!("{select}{order}"),
                Some(_) => format!("{select} WHERE {}{order}", after_key(table.key)),
            };
            let mut query = sqlx::query(&sql);
            for v in after.iter().flatten() {
                query = bind(query, v.clone());
            }
            let rows = query.fetch_all(&mut *src).await?;
            if rows.is_empty() {
                break;
            }
            let mut page = rows
                .iter()
                .map(|row| read_row(table, row))
                .collect::<Result<Vec<_>>>()?;
            after = page
                .last()
                .map(|last| key_at.iter().map(|&i| last[i].clone()).collect());
            self.adjust(table, &mut page);
            total += page.len() as u64;
            insert(dst, table, page).await?;
        }
        Ok(total)
    }

    /// The copy's only changes: leases cleared, and forward references
    /// between requests put off until every request is in.
    fn adjust(&mut self, table: &Table, page: &mut [Vec<Value>]) {
        match table.name {
            // Leases of the process that held them, which is not running.
            "jobs" | "deliveries" | "outbox_cursors" => {
                let Some(at) = position(table, "locked_until") else {
                    return;
                };
                for row in page {
                    if row[at] != Value::Int(None) {
                        row[at] = Value::Int(None);
                        self.leases_cleared += 1;
                    }
                }
            }
            "requests" => {
                let (Some(id_at), Some(extends_at)) =
                    (position(table, "id"), position(table, "extends"))
                else {
                    return;
                };
                // A page is one INSERT, and both engines check its foreign
                // keys at the end of the statement.
                for row in page.iter() {
                    if let Value::Text(Some(id)) = &row[id_at] {
                        self.requests.insert(id.clone());
                    }
                }
                for row in page {
                    let (Value::Text(Some(id)), Value::Text(Some(parent))) =
                        (&row[id_at], &row[extends_at])
                    else {
                        continue;
                    };
                    if !self.requests.contains(parent) {
                        self.extends_later.push((id.clone(), parent.clone()));
                        row[extends_at] = Value::Text(None);
                    }
                }
            }
            _ => {}
        }
    }
}

fn position(table: &Table, column: &str) -> Option<usize> {
    table.columns.iter().position(|(c, _)| *c == column)
}

fn column_list(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `WHERE` condition for rows after the key `$1, $2, …` in key order
/// (written out rather than as a row value comparison).
fn after_key(key: &[&str]) -> String {
    let mut alternatives = Vec::new();
    for (i, column) in key.iter().enumerate() {
        let mut parts: Vec<String> = key[..i]
            .iter()
            .enumerate()
            .map(|(j, c)| format!("{c} = ${}", j + 1))
            .collect();
        parts.push(format!("{column} > ${}", i + 1));
        alternatives.push(format!("({})", parts.join(" AND ")));
    }
    alternatives.join(" OR ")
}

fn read_row(table: &Table, row: &AnyRow) -> Result<Vec<Value>> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (column, kind))| {
            let value = match kind {
                Kind::Int => row.try_get::<Option<i64>, _>(i).map(Value::Int),
                Kind::Text => row.try_get::<Option<String>, _>(i).map(Value::Text),
            };
            value.map_err(|e| {
                StoreError::Corrupt(format!("cannot read {}.{column}: {e}", table.name))
            })
        })
        .collect()
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind(query: AnyQuery<'_>, value: Value) -> AnyQuery<'_> {
    match value {
        Value::Int(v) => query.bind(v),
        Value::Text(v) => query.bind(v),
    }
}

/// One multi-row `INSERT` of `page`.
async fn insert(dst: &mut AnyConnection, table: &Table, page: Vec<Vec<Value>>) -> Result<()> {
    if page.is_empty() {
        return Ok(());
    }
    let width = table.columns.len();
    let mut n = crate::Params::default();
    let rows: Vec<String> = page
        .iter()
        .map(|_| {
            let row: Vec<String> = (0..width).map(|_| n.next()).collect();
            format!("({})", row.join(", "))
        })
        .collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        table.name,
        column_list(table),
        rows.join(", ")
    );
    if table.name == REWRITTEN_AT_START {
        // Rows an elevate started on the destination wrote: the source's
        // first-seen times are the older history.
        let updates: Vec<String> = table
            .columns
            .iter()
            .filter(|(c, _)| !table.key.contains(c))
            .map(|(c, _)| format!("{c} = excluded.{c}"))
            .collect();
        sql.push_str(&format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            table.key.join(", "),
            updates.join(", ")
        ));
    }
    let mut query = sqlx::query(&sql);
    for value in page.into_iter().flatten() {
        query = bind(query, value);
    }
    query.execute(&mut *dst).await?;
    Ok(())
}

/// The id the source would give the next row of `table`: past both its
/// largest id and its auto-increment position (ids of deleted rows are not
/// handed out again).
async fn next_id(src: &mut AnyConnection, engine: Engine, table: &str) -> Result<i64> {
    let largest: Option<i64> = sqlx::query_scalar(&format!("SELECT MAX(id) FROM {table}"))
        .fetch_one(&mut *src)
        .await?;
    let position: Option<i64> =
        match engine {
            Engine::Sqlite => {
                sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
                    .bind(table)
                    .fetch_optional(&mut *src)
                    .await?
            }
            // NULL until the sequence has been used.
            Engine::Postgres => sqlx::query_scalar(
                "SELECT pg_sequence_last_value(CAST(pg_get_serial_sequence($1, 'id') AS regclass))",
            )
            .bind(table)
            .fetch_one(&mut *src)
            .await?,
        };
    Ok(largest.unwrap_or(0).max(position.unwrap_or(0)) + 1)
}

/// Makes the destination give `next` as the next id of `table`.
async fn set_next_id(
    dst: &mut AnyConnection,
    engine: Engine,
    table: &str,
    next: i64,
) -> Result<()> {
    match engine {
        Engine::Postgres => {
            sqlx::query("SELECT setval(pg_get_serial_sequence($1, 'id'), $2, false)")
                .bind(table)
                .bind(next)
                .execute(&mut *dst)
                .await?;
        }
        Engine::Sqlite => {
            // Copied ids already moved it to their maximum; this also
            // carries over ids of deleted rows.
            sqlx::query("DELETE FROM sqlite_sequence WHERE name = $1")
                .bind(table)
                .execute(&mut *dst)
                .await?;
            if next > 1 {
                sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
                    .bind(table)
                    .bind(next - 1)
                    .execute(&mut *dst)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Deletes every copied row (children first), after a copy that did not
/// verify.
async fn empty_again(to: &Store) -> Result<()> {
    let mut tx = to.begin().await?;
    for table in TABLES.iter().rev() {
        sqlx::query(&format!("DELETE FROM {}", table.name))
            .execute(&mut *tx.tx)
            .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_millis;
    use elevate_core::principal::Actor;
    use elevate_core::request::{Action, Event};
    use elevate_core::values::RequestId;

    async fn memory() -> Store {
        Store::open("sqlite::memory:").await.unwrap()
    }

    /// The copy knows every table and column of the schema: a migration
    /// that adds one must extend [`TABLES`].
    #[tokio::test]
    async fn every_table_and_column_of_the_schema_is_copied() {
        let store = memory().await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'schema_version' ORDER BY name",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let mut known: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        known.sort_unstable();
        assert_eq!(tables, known);
        for table in TABLES {
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                    .bind(table.name)
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            let mut columns = columns;
            columns.sort_unstable();
            let mut known: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
            known.sort_unstable();
            assert_eq!(columns, known, "{}", table.name);
            for key in table.key {
                assert!(position(table, key).is_some(), "{}.{key}", table.name);
            }
        }
    }

    fn event(request: &RequestId, n: usize) -> Event {
        Event {
            action: Action::RequestCreated,
            actor: Actor::System,
            request: request.clone(),
            at: from_millis(1_700_000_000_000 + n as i64).unwrap(),
            details: serde_json::json!({ "n": n, "note": "受注データ" }),
        }
    }

    async fn put_request(store: &Store, id: &str, extends: Option<&str>, account: Option<&str>) {
        sqlx::query(
            "INSERT INTO requests (id, requester, target, resource, role, grant_key, state, deadline, extends, break_glass, created_at, updated_at, doc, account)
             VALUES ($1, 'alice', 'demo', 'orders', 'orders_writer', 'demo/orders/orders_writer', 'active', NULL, $2, 0, 1700000000123, 1700000000456, '{\"doc\":1}', $3)",
        )
        .bind(id)
        .bind(extends)
        .bind(account)
        .execute(store.pool())
        .await
        .unwrap();
    }

    /// A source with more audit events than a page, an extension listed
    /// before its parent, leased and deleted jobs, and identities paged by
    /// a two-column key.
    async fn populated() -> (Store, Vec<RequestId>) {
        let store = memory().await;
        let parent = RequestId::parse("r-zzzzzzzzzzzz").unwrap();
        let child = RequestId::parse("r-aaaaaaaaaaaa").unwrap();
        put_request(&store, parent.as_str(), None, Some("acct")).await;
        put_request(&store, child.as_str(), Some(parent.as_str()), None).await;
        let mut tx = store.begin().await.unwrap();
        for n in 0..(BATCH * 2 + 7) {
            let id = if n % 2 == 0 { &parent } else { &child };
            tx.append_audit(&event(id, n)).await.unwrap();
        }
        let at = from_millis(1_700_000_000_000).unwrap();
        for _ in 0..3 {
            tx.enqueue_job(&parent, crate::JobKind::Apply, "k", at)
                .await
                .unwrap();
        }
        tx.record_attempt(&parent, crate::JobKind::Apply, at, "retry", Some("boom"))
            .await
            .unwrap();
        tx.record_attempt(&parent, crate::JobKind::Apply, at, "ok", None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // A lease held, and the newest job done (deleted): its id is not
        // given out again.
        let claimed = store
            .claim_jobs(at, std::time::Duration::from_secs(60), 1)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        sqlx::query("DELETE FROM jobs WHERE id = 3")
            .execute(store.pool())
            .await
            .unwrap();
        for (issuer, subject) in [("https://a", "2"), ("https://a", "1"), ("https://b", "1")] {
            sqlx::query("INSERT INTO identities (issuer, subject, user_name, profile, first_seen, last_seen) VALUES ($1, $2, $3, '{}', 1, 2)")
                .bind(issuer)
                .bind(subject)
                .bind(format!("{issuer}/{subject}"))
                .execute(store.pool())
                .await
                .unwrap();
        }
        store
            .eligibility_first_seen(&["e1".to_owned()], at)
            .await
            .unwrap();
        (store, vec![parent, child])
    }

    /// Every row of `table` as text, in key order.
    async fn dump(store: &Store, table: &Table) -> Vec<Vec<Value>> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            column_list(table),
            table.name,
            table.key.join(", ")
        );
        let rows = sqlx::query(&sql).fetch_all(store.pool()).await.unwrap();
        rows.iter().map(|r| read_row(table, r).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_copy_holds_every_row_exactly_and_its_chain_verifies() {
        copies_exactly(BATCH).await;
    }

    /// One row per page: an extension comes a page before its parent,
    /// and identities are paged on both key columns.
    #[tokio::test]
    async fn a_copy_one_row_at_a_time_holds_every_row_exactly() {
        copies_exactly(1).await;
    }

    async fn copies_exactly(batch: usize) {
        let (from, _) = populated().await;
        let to = memory().await;
        let report = copy_in_pages(&from, &to, batch).await.unwrap();
        assert_eq!(report.rows("audit"), (BATCH * 2 + 7) as u64);
        assert_eq!(report.rows("requests"), 2);
        assert_eq!(report.rows("jobs"), 2);
        assert_eq!(report.rows("job_attempts"), 2);
        assert_eq!(report.rows("identities"), 3);
        assert_eq!(report.leases_cleared, 1);
        assert_eq!(report.audit_events, (BATCH * 2 + 7) as i64);
        let source = from.verify_audit().await.unwrap();
        assert_eq!(Some(report.audit_head.clone()), source.head);
        assert_eq!(to.verify_audit().await.unwrap(), source);
        for table in TABLES {
            let mut want = dump(&from, table).await;
            if table.name == "jobs" {
                let at = position(table, "locked_until").unwrap();
                for row in &mut want {
                    row[at] = Value::Int(None);
                }
            }
            assert_eq!(dump(&to, table).await, want, "{}", table.name);
        }
        // New jobs are numbered after the source's, deleted ones included.
        let mut tx = to.begin().await.unwrap();
        let id = RequestId::parse("r-zzzzzzzzzzzz").unwrap();
        tx.enqueue_job(&id, crate::JobKind::Remove, "k", chrono::Utc::now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let newest: i64 = sqlx::query_scalar("SELECT MAX(id) FROM jobs")
            .fetch_one(to.pool())
            .await
            .unwrap();
        assert_eq!(newest, 4);
        // The copied lease is free: the job can be claimed at once.
        let claimed = to
            .claim_jobs(chrono::Utc::now(), std::time::Duration::from_secs(60), 10)
            .await
            .unwrap();
        assert!(!claimed.is_empty());
    }

    #[tokio::test]
    async fn a_destination_with_history_is_refused_and_left_unchanged() {
        let (from, ids) = populated().await;
        let to = memory().await;
        let mut tx = to.begin().await.unwrap();
        tx.append_audit(&event(&ids[0], 0)).await.unwrap();
        tx.commit().await.unwrap();
        let before = to.verify_audit().await.unwrap();
        let err = copy(&from, &to).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Config(m) if m.contains("not empty") && m.contains("audit: 1 row")),
            "{err}"
        );
        assert_eq!(to.verify_audit().await.unwrap(), before);
        let requests: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests")
            .fetch_one(to.pool())
            .await
            .unwrap();
        assert_eq!(requests, 0);
    }

    #[tokio::test]
    async fn first_seen_times_of_a_started_destination_give_way_to_the_sources() {
        let (from, _) = populated().await;
        let to = memory().await;
        let later = from_millis(1_800_000_000_000).unwrap();
        to.eligibility_first_seen(&["e1".to_owned(), "e2".to_owned()], later)
            .await
            .unwrap();
        copy(&from, &to).await.unwrap();
        let seen = to
            .eligibility_first_seen(&["e1".to_owned(), "e2".to_owned()], later)
            .await
            .unwrap();
        assert_eq!(seen[0].1, from_millis(1_700_000_000_000).unwrap());
        assert_eq!(seen[1].1, later);
    }

    #[tokio::test]
    async fn a_source_whose_chain_is_broken_is_not_copied() {
        let (from, _) = populated().await;
        sqlx::query("UPDATE audit SET actor = 'user:mallory' WHERE seq = 5")
            .execute(from.pool())
            .await
            .unwrap();
        let to = memory().await;
        let err = copy(&from, &to).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Config(m) if m.contains("does not verify") && m.contains("event 5")),
            "{err}"
        );
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
            .fetch_one(to.pool())
            .await
            .unwrap();
        assert_eq!(events, 0);
    }

    #[tokio::test]
    async fn a_source_at_another_schema_version_is_refused() {
        let (from, _) = populated().await;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(SCHEMA_VERSION as i64 + 1)
            .execute(from.pool())
            .await
            .unwrap();
        let err = copy(&from, &memory().await).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Config(m) if m.contains("schema version")),
            "{err}"
        );
    }

    #[test]
    fn pages_follow_the_whole_key() {
        assert_eq!(after_key(&["id"]), "(id > $1)");
        assert_eq!(
            after_key(&["issuer", "subject"]),
            "(issuer > $1) OR (issuer = $1 AND subject > $2)"
        );
    }
}
