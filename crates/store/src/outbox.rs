//! The durable outbox behind notifications and signed webhooks.
//!
//! The audit chain is the queue. Every event that could interest someone
//! is already there, written in the same transaction as the change it
//! describes, so nothing can be lost between "the request changed" and
//! "someone is told". Readers keep a **cursor** (`outbox_cursors`): the
//! last audit `seq` they have handled.
//!
//! - The notifier's cursor turns events into **deliveries**: one message
//!   to one recipient on one channel, each retried on its own, so a mail
//!   server that refuses one address does not resend to everyone else.
//! - Each signed webhook has a cursor of its own and POSTs events one at a
//!   time in chain order; the cursor moves only past an event the receiver
//!   accepted, so a receiver outage delays events and never skips one.
//!
//! Cursors and deliveries are claimed with a lease, exactly like provider
//! jobs: on a shared PostgreSQL store one replica handles each, and one
//! that dies loses its claim when the lease runs out. Recording an outcome
//! checks the lease is still the one claimed (`locked_until` is the claim
//! token), so a replica that outlived its lease records nothing.

use std::time::Duration;

use elevate_core::Timestamp;
use sqlx::Row;

use crate::{from_millis, to_millis, Result, Store, StoreError, Tx};

/// A reader's position in the audit chain, claimed for a while.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub name: String,
    /// The last event handled.
    pub last_seq: i64,
    /// Failed attempts at the event after `last_seq`.
    pub attempts: i64,
    /// The claim token (see the module doc).
    pub lease: i64,
}

/// A cursor as shown in metrics.
#[derive(Debug, Clone)]
pub struct CursorStatus {
    pub name: String,
    pub last_seq: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub audit_seq: i64,
    pub request_id: Option<String>,
    /// The audit action that caused it, e.g. `request.created`.
    pub event: String,
    /// `email`, `chat:NAME`.
    pub channel: String,
    /// An e-mail address, or the chat channel's name.
    pub recipient: String,
    /// What to send, as the sender understands it (JSON).
    pub doc: String,
}

/// A claimed delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub audit_seq: i64,
    pub request_id: Option<String>,
    pub event: String,
    pub channel: String,
    pub recipient: String,
    pub doc: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: Timestamp,
    pub lease: i64,
}

/// A delivery as listed for a request's history and for tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub audit_seq: i64,
    pub event: String,
    pub channel: String,
    pub recipient: String,
    /// `queued`, `sent` or `abandoned`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// What became of one send.
#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    Sent,
    /// Failed; due again at `at`.
    Retry {
        at: Timestamp,
        error: String,
    },
    /// Failed for good, or for too long.
    Abandoned {
        error: String,
    },
}

/// A row of `SELECT id, audit_seq, event, channel, recipient, state,
/// attempts, last_error`.
fn delivery_row(r: &sqlx::any::AnyRow) -> DeliveryRow {
    DeliveryRow {
        id: r.get(0),
        audit_seq: r.get(1),
        event: r.get(2),
        channel: r.get(3),
        recipient: r.get(4),
        state: r.get(5),
        attempts: r.get(6),
        last_error: r.get(7),
    }
}

fn lease_until(now: Timestamp, lease: Duration) -> i64 {
    to_millis(now) + lease.as_millis() as i64
}

impl Store {
    /// Creates cursor `name` if it does not exist, starting after the
    /// newest event: a reader added to a running elevate follows what
    /// happens from then on instead of replaying the whole history.
    /// Returns where the cursor stands.
    pub async fn ensure_cursor(&self, name: &str, now: Timestamp) -> Result<i64> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO outbox_cursors (name, last_seq, run_at, attempts)
             SELECT $1, COALESCE((SELECT seq FROM audit_head WHERE id = 1), 0), $2, 0
             WHERE NOT EXISTS (SELECT 1 FROM outbox_cursors WHERE name = $1)",
        )
        .bind(name)
        .bind(to_millis(now))
        .execute(&mut *tx.tx)
        .await?;
        let seq: i64 = sqlx::query_scalar("SELECT last_seq FROM outbox_cursors WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Forgets cursor `name`: a reader turned off starts again at the
    /// newest event when it is turned back on.
    pub async fn drop_cursor(&self, name: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM outbox_cursors WHERE name = $1")
            .bind(name)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims cursor `name` for `lease` if it is due and nobody holds it.
    pub async fn claim_cursor(
        &self,
        name: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Option<Cursor>> {
        // A cheap read first: an idle reader must not take the write lock
        // every time it looks.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM outbox_cursors WHERE name = $1 AND run_at <= $2
               AND (locked_until IS NULL OR locked_until < $2)
               AND last_seq < COALESCE((SELECT seq FROM audit_head WHERE id = 1), 0)",
        )
        .bind(name)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(None);
        }
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE outbox_cursors SET locked_until = $1
             WHERE name = $2 AND run_at <= $3 AND (locked_until IS NULL OR locked_until < $3)
             RETURNING name, last_seq, attempts, locked_until",
        )
        .bind(lease_until(now, lease))
        .bind(name)
        .bind(to_millis(now))
        .fetch_optional(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| Cursor {
            name: r.get(0),
            last_seq: r.get(1),
            attempts: r.get(2),
            lease: r.get(3),
        }))
    }

    /// Lets go of a cursor that has nothing more to do (keeps its place).
    pub async fn release_cursor(&self, cursor: &Cursor) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE outbox_cursors SET locked_until = NULL WHERE name = $1 AND locked_until = $2",
        )
        .bind(&cursor.name)
        .bind(cursor.lease)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a failure at the event after the cursor: released, due again
    /// at `run_at`. False when the lease was lost.
    pub async fn retry_cursor(
        &self,
        cursor: &Cursor,
        run_at: Timestamp,
        error: &str,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE outbox_cursors SET attempts = attempts + 1, run_at = $1, last_error = $2, locked_until = NULL
             WHERE name = $3 AND locked_until = $4",
        )
        .bind(to_millis(run_at))
        .bind(error)
        .bind(&cursor.name)
        .bind(cursor.lease)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Moves a claimed cursor past `seq` in its own transaction (a webhook
    /// after each accepted event). False when the lease was lost.
    pub async fn advance_cursor(&self, cursor: &Cursor, seq: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let moved = tx.advance_cursor(cursor, seq).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Every cursor, for metrics.
    pub async fn cursors(&self) -> Result<Vec<CursorStatus>> {
        let rows = sqlx::query(
            "SELECT name, last_seq, attempts, last_error FROM outbox_cursors ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CursorStatus {
                name: r.get(0),
                last_seq: r.get(1),
                attempts: r.get(2),
                last_error: r.get(3),
            })
            .collect())
    }

    /// The newest event's `seq` (0 for an empty chain).
    pub async fn audit_head_seq(&self) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Claims up to `limit` due deliveries for `lease`.
    pub async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let now_ms = to_millis(now);
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE state = 'queued' AND run_at <= $1
               AND (locked_until IS NULL OR locked_until < $1) LIMIT 1",
        )
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE deliveries SET locked_until = $1
             WHERE id IN (SELECT id FROM deliveries
                          WHERE state = 'queued' AND run_at <= $2
                            AND (locked_until IS NULL OR locked_until < $2)
                          ORDER BY run_at, id LIMIT $3)
             RETURNING id, audit_seq, request_id, event, channel, recipient, doc, attempts, created_at, locked_until",
        )
        .bind(lease_until(now, lease))
        .bind(now_ms)
        .bind(limit as i64)
        .fetch_all(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.get(0),
                    audit_seq: r.get(1),
                    request_id: r.get(2),
                    event: r.get(3),
                    channel: r.get(4),
                    recipient: r.get(5),
                    doc: r.get(6),
                    attempts: r.get(7),
                    created_at: from_millis(r.get(8))?,
                    lease: r.get(9),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // RETURNING has no order; send in the order they were queued.
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    /// When the next queued delivery is due (for the sender's sleep).
    pub async fn next_delivery_at(&self) -> Result<Option<Timestamp>> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(run_at) FROM deliveries WHERE state = 'queued'
               AND (locked_until IS NULL OR locked_until < $1)",
        )
        .bind(to_millis(chrono::Utc::now()))
        .fetch_one(&self.pool)
        .await?;
        v.map(from_millis).transpose()
    }

    /// Records the outcomes of sent deliveries in one transaction.
    /// Outcomes whose lease was lost are not recorded; returns how many
    /// were.
    pub async fn record_deliveries(
        &self,
        outcomes: &[(Delivery, DeliveryOutcome)],
        now: Timestamp,
    ) -> Result<usize> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let mut recorded = 0;
        for (d, outcome) in outcomes {
            let q = match outcome {
                DeliveryOutcome::Sent => sqlx::query(
                    "UPDATE deliveries SET state = 'sent', attempts = attempts + 1, done_at = $1,
                       locked_until = NULL, last_error = NULL WHERE id = $2 AND locked_until = $3",
                )
                .bind(to_millis(now))
                .bind(d.id)
                .bind(d.lease),
                DeliveryOutcome::Retry { at, error } => sqlx::query(
                    "UPDATE deliveries SET attempts = attempts + 1, run_at = $1, last_error = $4,
                       locked_until = NULL WHERE id = $2 AND locked_until = $3",
                )
                .bind(to_millis(*at))
                .bind(d.id)
                .bind(d.lease)
                .bind(error.as_str()),
                DeliveryOutcome::Abandoned { error } => sqlx::query(
                    "UPDATE deliveries SET state = 'abandoned', attempts = attempts + 1, done_at = $1,
                       last_error = $4, locked_until = NULL WHERE id = $2 AND locked_until = $3",
                )
                .bind(to_millis(now))
                .bind(d.id)
                .bind(d.lease)
                .bind(error.as_str()),
            };
            if q.execute(&mut *tx.tx).await?.rows_affected() > 0 {
                recorded += 1;
            }
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Deliveries of one request (or all, newest last), for its history
    /// and for tests.
    pub async fn deliveries(&self, request_id: Option<&str>) -> Result<Vec<DeliveryRow>> {
        const SELECT: &str =
            "SELECT id, audit_seq, event, channel, recipient, state, attempts, last_error
             FROM deliveries";
        let rows = match request_id {
            Some(id) => {
                sqlx::query(&format!("{SELECT} WHERE request_id = $1 ORDER BY id"))
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("{SELECT} ORDER BY id"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows.iter().map(delivery_row).collect())
    }

    /// Forgets sent and given-up deliveries finished before `before`:
    /// the audit trail keeps what happened; this table only has to hold
    /// what is still to send and recent history.
    pub async fn prune_deliveries(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM deliveries WHERE state <> 'queued' AND done_at < $1")
            .bind(to_millis(before))
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// The latest deliveries that failed at least once (still retried or
    /// given up), newest first, for the admin page.
    pub async fn troubled_deliveries(&self, limit: i64) -> Result<Vec<DeliveryRow>> {
        let rows = sqlx::query(
            "SELECT id, audit_seq, event, channel, recipient, state, attempts, last_error
             FROM deliveries WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(delivery_row).collect())
    }

    /// (channel, state, count, attempts) over all deliveries, for metrics.
    pub async fn delivery_counts(&self) -> Result<Vec<(String, String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT channel, state, COUNT(*), CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM deliveries
             GROUP BY channel, state ORDER BY channel, state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// The value of shared setting `name`, set to `init()` on first use.
    /// Every replica gets the same value: the first to ask wins.
    pub async fn setting_or_init(
        &self,
        name: &str,
        init: impl FnOnce() -> String,
    ) -> Result<String> {
        if let Some(v) =
            sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
        {
            return Ok(v);
        }
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO settings (name, value) SELECT $1, $2
             WHERE NOT EXISTS (SELECT 1 FROM settings WHERE name = $1)",
        )
        .bind(name)
        .bind(init())
        .execute(&mut *tx.tx)
        .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(v)
    }

    /// Marks a one-time link used. False when it was used before. Spent
    /// links past their expiry are dropped on the way: they would be
    /// refused as expired anyway.
    pub async fn spend_link(
        &self,
        nonce: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let spent = tx.spend_link(nonce, now, expires_at).await?;
        tx.commit().await?;
        Ok(spent)
    }

    /// Whether a one-time link was used already (for the confirmation page).
    pub async fn link_spent(&self, nonce: &str) -> Result<bool> {
        let v: Option<i64> = sqlx::query_scalar("SELECT 1 FROM spent_links WHERE nonce = $1")
            .bind(nonce)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.is_some())
    }
}

impl Tx<'_> {
    /// Moves a claimed cursor past `seq`, keeping the claim. False when
    /// the lease was lost (nothing is changed).
    pub async fn advance_cursor(&mut self, cursor: &Cursor, seq: i64) -> Result<bool> {
        if seq < cursor.last_seq {
            return Err(StoreError::Corrupt(format!(
                "cursor {} cannot move back from {} to {seq}",
                cursor.name, cursor.last_seq
            )));
        }
        let done = sqlx::query(
            "UPDATE outbox_cursors SET last_seq = $1, attempts = 0, last_error = NULL
             WHERE name = $2 AND locked_until = $3",
        )
        .bind(seq)
        .bind(&cursor.name)
        .bind(cursor.lease)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn insert_delivery(&mut self, d: &NewDelivery, now: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO deliveries (audit_seq, request_id, event, channel, recipient, doc, state, run_at, attempts, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, 0, $7)",
        )
        .bind(d.audit_seq)
        .bind(d.request_id.as_deref())
        .bind(&d.event)
        .bind(&d.channel)
        .bind(&d.recipient)
        .bind(&d.doc)
        .bind(to_millis(now))
        .execute(&mut *self.tx)
        .await?;
        self.wake = true;
        Ok(())
    }

    /// See [`Store::spend_link`].
    pub async fn spend_link(
        &mut self,
        nonce: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool> {
        sqlx::query("DELETE FROM spent_links WHERE expires_at < $1")
            .bind(to_millis(now))
            .execute(&mut *self.tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO spent_links (nonce, used_at, expires_at) SELECT $1, $2, $3
             WHERE NOT EXISTS (SELECT 1 FROM spent_links WHERE nonce = $1)",
        )
        .bind(nonce)
        .bind(to_millis(now))
        .bind(to_millis(expires_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(inserted.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elevate_core::principal::Actor;
    use elevate_core::request::{Action, Event};
    use elevate_core::values::RequestId;

    async fn store(dir: &std::path::Path) -> Store {
        let url = elevate_testkit::database_url(&dir.join("e.db")).unwrap();
        Store::open(&url).await.unwrap()
    }

    async fn event(store: &Store, n: usize) {
        let mut tx = store.begin().await.unwrap();
        for _ in 0..n {
            tx.append_audit(&Event {
                action: Action::RequestCreated,
                actor: Actor::System,
                request: RequestId::parse("r-aaaaaaaaaaaa").unwrap(),
                at: chrono::Utc::now(),
                details: serde_json::json!({}),
            })
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_cursor_starts_at_the_newest_event_and_moves_only_under_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        event(&store, 3).await;
        let t0 = from_millis(1_700_000_000_000).unwrap();
        let lease = Duration::from_secs(60);
        // Created after three events: it starts past them, and says so
        // again when asked twice.
        assert_eq!(store.ensure_cursor("w", t0).await.unwrap(), 3);
        assert_eq!(store.ensure_cursor("w", t0).await.unwrap(), 3);
        // Nothing new: nothing to claim.
        assert!(store.claim_cursor("w", t0, lease).await.unwrap().is_none());
        event(&store, 2).await;
        let first = store.claim_cursor("w", t0, lease).await.unwrap().unwrap();
        assert_eq!(first.last_seq, 3);
        // Held: nobody else gets it until the lease ends.
        let during = t0 + chrono::Duration::seconds(30);
        assert!(store
            .claim_cursor("w", during, lease)
            .await
            .unwrap()
            .is_none());
        let after = t0 + chrono::Duration::seconds(61);
        let second = store
            .claim_cursor("w", after, lease)
            .await
            .unwrap()
            .unwrap();
        // The first holder's moves record nothing any more.
        assert!(!store.advance_cursor(&first, 5).await.unwrap());
        assert!(!store.retry_cursor(&first, after, "late").await.unwrap());
        assert!(store.advance_cursor(&second, 4).await.unwrap());
        // Never backwards.
        let mut tx = store.begin().await.unwrap();
        let mut moved = second.clone();
        moved.last_seq = 4;
        assert!(tx.advance_cursor(&moved, 3).await.is_err());
        drop(tx);
        // A failure puts it off until its retry time.
        assert!(store
            .retry_cursor(&moved, after + chrono::Duration::seconds(10), "503")
            .await
            .unwrap());
        assert!(store
            .claim_cursor("w", after, lease)
            .await
            .unwrap()
            .is_none());
        let status = store.cursors().await.unwrap();
        assert_eq!((status[0].last_seq, status[0].attempts), (4, 1));
        assert_eq!(status[0].last_error.as_deref(), Some("503"));
        let again = store
            .claim_cursor("w", after + chrono::Duration::seconds(10), lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.last_seq, again.attempts), (4, 1));
    }

    #[tokio::test]
    async fn deliveries_are_claimed_once_and_recorded_only_by_their_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let t0 = from_millis(1_700_000_000_000).unwrap();
        let lease = Duration::from_secs(60);
        let mut tx = store.begin().await.unwrap();
        for to in ["a@example.com", "b@example.com", "c@example.com"] {
            tx.insert_delivery(
                &NewDelivery {
                    audit_seq: 1,
                    request_id: Some("r-aaaaaaaaaaaa".into()),
                    event: "request.created".into(),
                    channel: "email".into(),
                    recipient: to.into(),
                    doc: "{}".into(),
                },
                t0,
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let claimed = store.claim_deliveries(t0, lease, 10).await.unwrap();
        assert_eq!(claimed.len(), 3);
        assert!(claimed.windows(2).all(|w| w[0].id < w[1].id));
        assert!(store
            .claim_deliveries(t0, lease, 10)
            .await
            .unwrap()
            .is_empty());
        let later = t0 + chrono::Duration::seconds(5);
        let recorded = store
            .record_deliveries(
                &[
                    (claimed[0].clone(), DeliveryOutcome::Sent),
                    (
                        claimed[1].clone(),
                        DeliveryOutcome::Retry {
                            at: later,
                            error: "451 try later".into(),
                        },
                    ),
                    (
                        claimed[2].clone(),
                        DeliveryOutcome::Abandoned {
                            error: "550 no such user".into(),
                        },
                    ),
                ],
                t0,
            )
            .await
            .unwrap();
        assert_eq!(recorded, 3);
        let rows = store.deliveries(Some("r-aaaaaaaaaaaa")).await.unwrap();
        let states: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r.state.as_str(), r.attempts))
            .collect();
        assert_eq!(states, [("sent", 1), ("queued", 1), ("abandoned", 1)]);
        assert_eq!(store.next_delivery_at().await.unwrap(), Some(later));
        // Due again at its retry time; a stale claim of it records nothing.
        let retried = store.claim_deliveries(later, lease, 10).await.unwrap();
        assert_eq!(retried.len(), 1);
        assert_eq!(retried[0].attempts, 1);
        let stale = (claimed[1].clone(), DeliveryOutcome::Sent);
        assert_eq!(store.record_deliveries(&[stale], later).await.unwrap(), 0);
        let fresh = (retried[0].clone(), DeliveryOutcome::Sent);
        assert_eq!(store.record_deliveries(&[fresh], later).await.unwrap(), 1);
        // Per channel and state, with attempts (both engines' types).
        let counts = store.delivery_counts().await.unwrap();
        assert_eq!(
            counts,
            [
                ("email".to_owned(), "abandoned".to_owned(), 1, 1),
                ("email".to_owned(), "sent".to_owned(), 2, 3),
            ]
        );
        // Finished ones are pruned when old enough; queued ones never.
        assert_eq!(store.prune_deliveries(t0).await.unwrap(), 0);
        let pruned = store
            .prune_deliveries(later + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(pruned, 3);
    }

    #[tokio::test]
    async fn a_link_is_spent_once_and_a_setting_is_set_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let now = from_millis(1_700_000_000_000).unwrap();
        let exp = now + chrono::Duration::hours(1);
        assert!(!store.link_spent("n1").await.unwrap());
        assert!(store.spend_link("n1", now, exp).await.unwrap());
        assert!(!store.spend_link("n1", now, exp).await.unwrap());
        assert!(store.link_spent("n1").await.unwrap());
        let a = store.setting_or_init("k", || "first".into()).await.unwrap();
        let b = store
            .setting_or_init("k", || "second".into())
            .await
            .unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("first", "first"));
    }
}
