//! The tamper-evident audit trail.
//!
//! Each event stores the hash of the one before it, and its own hash covers
//! that link and every field, so editing, inserting or deleting any row
//! breaks the chain at a point [`verify`] reports. The newest link is also
//! kept in `audit_head`, so deleting events at the end is detected unless
//! the head row is rewritten too. Someone able to write the database can
//! do that, or rewrite the whole chain: exporting the chain or its head
//! hash elsewhere (e.g. to a SIEM) is what pins it.
//!
//! Hash: SHA-256 over `prev_hash \n seq \n at_ms \n actor \n action \n
//! request \n details`, hex-encoded; the first event links to 64 zeros.
//! `details` is hashed exactly as stored.

use elevate_core::request::Event;
use elevate_core::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use crate::{from_millis, to_millis, Result, Store, StoreError};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub request: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    pub ok: bool,
    pub events: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

fn link_hash(
    prev: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    request: Option<&str>,
    details: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &seq.to_string(),
        &at_ms.to_string(),
        actor,
        action,
        request.unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.update(details.as_bytes());
    hex::encode(h.finalize())
}

pub(crate) async fn append(
    tx: &mut Transaction<'static, Any>,
    event: &Event,
) -> Result<AuditRecord> {
    append_parts(
        tx,
        event.at,
        &event.actor.to_stored(),
        event.action.as_str(),
        Some(event.request.as_str()),
        &event.details,
    )
    .await
}

/// Appends one event; `request` is `None` for events about a target
/// rather than a request (reconciliation findings).
pub(crate) async fn append_parts(
    tx: &mut Transaction<'static, Any>,
    at: Timestamp,
    actor: &str,
    action: &str,
    request: Option<&str>,
    details: &serde_json::Value,
) -> Result<AuditRecord> {
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (prev_seq, prev_hash) = match head {
        Some(r) => (r.get::<i64, _>(0), r.get::<String, _>(1)),
        None => (0, GENESIS.to_owned()),
    };
    let seq = prev_seq + 1;
    let at_ms = to_millis(at);
    let encoded = serde_json::to_string(details)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode audit details: {e}")))?;
    let hash = link_hash(&prev_hash, seq, at_ms, actor, action, request, &encoded);
    sqlx::query(
        "INSERT INTO audit (seq, at, actor, action, request_id, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(at_ms)
    .bind(actor)
    .bind(action)
    .bind(request)
    .bind(&encoded)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(seq)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    Ok(AuditRecord {
        seq,
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        request: request.map(str::to_owned),
        details: details.clone(),
        prev_hash,
        hash,
    })
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<Timestamp>,
    pub request: Option<String>,
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}

/// A narrower read for people browsing the trail: a time range, one
/// actor, one action, one request, newest first a page at a time.
/// [`AuditFilter`] is the subset the API and exports need.
#[derive(Debug, Clone, Default)]
pub struct AuditSearch {
    /// Events at or after this instant.
    pub since: Option<Timestamp>,
    /// Events strictly before this instant.
    pub until: Option<Timestamp>,
    /// The stored actor, e.g. `user:alice` or `system`.
    pub actor: Option<String>,
    /// The stored action, e.g. `request.created`.
    pub action: Option<String>,
    pub request: Option<String>,
    /// Events with a smaller seq: the next page when reading newest first.
    pub before_seq: Option<i64>,
    /// Events with a larger seq: the next page when reading in chain order.
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
    /// Newest first instead of chain order.
    pub newest_first: bool,
}

impl From<&AuditFilter> for AuditSearch {
    fn from(f: &AuditFilter) -> Self {
        AuditSearch {
            since: f.since,
            request: f.request.clone(),
            after_seq: f.after_seq,
            limit: f.limit,
            ..AuditSearch::default()
        }
    }
}

/// One stored link, read without panicking on altered column types.
struct Link {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    request: Option<String>,
    details: String,
    prev_hash: String,
    hash: String,
}

impl Link {
    fn read(row: &sqlx::any::AnyRow) -> std::result::Result<Link, sqlx::Error> {
        Ok(Link {
            seq: row.try_get(0)?,
            at: row.try_get(1)?,
            actor: row.try_get(2)?,
            action: row.try_get(3)?,
            request: row.try_get(4)?,
            details: row.try_get(5)?,
            prev_hash: row.try_get(6)?,
            hash: row.try_get(7)?,
        })
    }
}

fn record(row: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    let link = Link::read(row)
        .map_err(|e| StoreError::Corrupt(format!("an audit event cannot be read: {e}")))?;
    Ok(AuditRecord {
        seq: link.seq,
        at: from_millis(link.at)?,
        actor: link.actor,
        action: link.action,
        request: link.request,
        // A row edited into invalid JSON still shows (verify flags it).
        details: serde_json::from_str(&link.details)
            .unwrap_or(serde_json::Value::String(link.details)),
        prev_hash: link.prev_hash,
        hash: link.hash,
    })
}

impl Store {
    /// Events in chain order.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        self.search_audit(&AuditSearch::from(filter)).await
    }

    /// Events matching every given condition, in chain order or newest
    /// first.
    pub async fn search_audit(&self, search: &AuditSearch) -> Result<Vec<AuditRecord>> {
        let mut sql = String::from(
            "SELECT seq, at, actor, action, request_id, details, prev_hash, hash FROM audit WHERE 1=1",
        );
        let mut n = crate::Params::default();
        if search.since.is_some() {
            sql.push_str(&format!(" AND at >= {}", n.next()));
        }
        if search.until.is_some() {
            sql.push_str(&format!(" AND at < {}", n.next()));
        }
        if search.actor.is_some() {
            sql.push_str(&format!(" AND actor = {}", n.next()));
        }
        if search.action.is_some() {
            sql.push_str(&format!(" AND action = {}", n.next()));
        }
        if search.request.is_some() {
            sql.push_str(&format!(" AND request_id = {}", n.next()));
        }
        if search.before_seq.is_some() {
            sql.push_str(&format!(" AND seq < {}", n.next()));
        }
        if search.after_seq.is_some() {
            sql.push_str(&format!(" AND seq > {}", n.next()));
        }
        sql.push_str(if search.newest_first {
            " ORDER BY seq DESC"
        } else {
            " ORDER BY seq"
        });
        sql.push_str(&format!(" LIMIT {}", n.next()));
        let mut q = sqlx::query(&sql);
        if let Some(s) = search.since {
            q = q.bind(to_millis(s));
        }
        if let Some(u) = search.until {
            q = q.bind(to_millis(u));
        }
        if let Some(a) = &search.actor {
            q = q.bind(a);
        }
        if let Some(a) = &search.action {
            q = q.bind(a);
        }
        if let Some(r) = &search.request {
            q = q.bind(r);
        }
        if let Some(b) = search.before_seq {
            q = q.bind(b);
        }
        if let Some(a) = search.after_seq {
            q = q.bind(a);
        }
        q = q.bind(search.limit.unwrap_or(i64::MAX));
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(record).collect()
    }

    /// Walks the whole chain and reports the first broken link.
    pub async fn verify_audit(&self) -> Result<Verification> {
        let mut expected_seq = 1_i64;
        let mut prev = GENESIS.to_owned();
        let mut count = 0_i64;
        let broken = |seq: i64, count: i64, problem: String| Verification {
            ok: false,
            events: count,
            head: None,
            broken_at: Some(seq),
            problem: Some(problem),
        };
        // One read transaction: the pages and the head come from the same
        // snapshot, so events appended meanwhile cannot look like tampering.
        let mut snapshot = self.pool().begin().await?;
        if self.engine() == crate::Engine::Postgres {
            // PostgreSQL's default gives each statement a new snapshot.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *snapshot)
                .await?;
        }
        // Read in pages so verifying a long history needs little memory.
        let mut after = 0_i64;
        loop {
            let rows = sqlx::query(
                "SELECT seq, at, actor, action, request_id, details, prev_hash, hash FROM audit WHERE seq > $1 ORDER BY seq LIMIT 5000",
            )
            .bind(after)
            .fetch_all(&mut *snapshot)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                count += 1;
                // A column edited to a value of another type is tampering
                // too: report it, do not fail the whole check.
                let Ok(Link {
                    seq,
                    at,
                    actor,
                    action,
                    request,
                    details,
                    prev_hash,
                    hash,
                }) = Link::read(row)
                else {
                    return Ok(broken(
                        expected_seq,
                        count,
                        format!(
                            "event {expected_seq} cannot be read: one of its columns was altered"
                        ),
                    ));
                };
                after = seq;
                if seq != expected_seq {
                    return Ok(broken(
                        expected_seq,
                        count,
                        format!(
                            "event {expected_seq} is missing: the chain jumps from event {} to event {seq}",
                            expected_seq - 1
                        ),
                    ));
                }
                if prev_hash != prev {
                    return Ok(broken(
                        seq,
                        count,
                        format!("event {seq} does not link to event {}: an event was inserted, deleted or replaced before it", seq - 1),
                    ));
                }
                let computed = link_hash(
                    &prev_hash,
                    seq,
                    at,
                    &actor,
                    &action,
                    request.as_deref(),
                    &details,
                );
                if computed != hash {
                    return Ok(broken(
                        seq,
                        count,
                        format!("event {seq} was modified: its contents no longer match its hash"),
                    ));
                }
                prev = hash;
                expected_seq += 1;
            }
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *snapshot)
            .await?;
        let last = expected_seq - 1;
        match head {
            Some(h) => {
                let (Ok(head_seq), Ok(head_hash)) =
                    (h.try_get::<i64, _>(0), h.try_get::<String, _>(1))
                else {
                    return Ok(broken(
                        last + 1,
                        count,
                        "the recorded head of the chain was altered".into(),
                    ));
                };
                if head_seq != last || head_hash != prev {
                    // The first event the recorded head does not vouch for:
                    // a deleted tail (head ahead) or an appended forgery
                    // (chain ahead).
                    return Ok(broken(
                        last.min(head_seq) + 1,
                        count,
                        format!(
                            "the chain ends at event {last} but the recorded head is event {head_seq}: events at the end were deleted or the head was altered"
                        ),
                    ));
                }
            }
            None if last > 0 => {
                return Ok(broken(
                    last,
                    count,
                    "the recorded head of the chain is missing".into(),
                ))
            }
            None => {}
        }
        Ok(Verification {
            ok: true,
            events: count,
            head: Some(prev),
            broken_at: None,
            problem: None,
        })
    }
}
