//! Follow-ups already given: reminders, escalations and "ending soon"
//! notices, one row per (request, kind) in `followups`, so each happens
//! once whatever the number of replicas or restarts.
//!
//! The scheduler asks cheap questions ("pending requests created before X
//! without a reminder yet", through the `(state, created_at)` index; "active
//! grants ending before Y without a notice yet", through the deadline
//! index), then, in a write transaction, claims each follow-up by inserting
//! its row and appends the audit event in the same transaction. An existing
//! row means another replica (or an earlier run) did it already.

use elevate_core::values::RequestId;
use elevate_core::Timestamp;
use sqlx::Row;

use crate::{
    from_millis, stored_request, to_millis, Result, Store, StoredRequest, Tx, SELECT_REQUEST,
};

/// The kinds of follow-up (the `kind` column; never change one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followup {
    Reminded,
    Escalated,
    EndingSoon,
    /// The "removal failing" alarm of a grant (once, at its removal's
    /// first real failure; expected waits do not count).
    RemovalFailing,
}

impl Followup {
    pub fn as_str(self) -> &'static str {
        match self {
            Followup::Reminded => "reminded",
            Followup::Escalated => "escalated",
            Followup::EndingSoon => "ending_soon",
            Followup::RemovalFailing => "removal_failing",
        }
    }
}

impl Store {
    /// Pending requests created at or before `created_before` that have no
    /// `kind` follow-up yet, oldest first, a page of `limit` after the
    /// (created_at, id) `after` of the previous page.
    pub async fn pending_without(
        &self,
        kind: Followup,
        created_before: Timestamp,
        after: Option<&(Timestamp, RequestId)>,
        limit: i64,
    ) -> Result<Vec<StoredRequest>> {
        let page = if after.is_some() {
            "AND (r.created_at > $4 OR (r.created_at = $4 AND r.id > $5))"
        } else {
            ""
        };
        let sql = format!(
            "{SELECT_REQUEST} WHERE r.state = 'pending' AND r.created_at <= $1 {page}
               AND NOT EXISTS (SELECT 1 FROM followups f WHERE f.request_id = r.id AND f.kind = $2)
             ORDER BY r.created_at, r.id LIMIT $3"
        );
        let mut q = sqlx::query(&sql)
            .bind(to_millis(created_before))
            .bind(kind.as_str())
            .bind(limit);
        if let Some((at, id)) = after {
            q = q.bind(to_millis(*at)).bind(id.as_str().to_owned());
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(stored_request).collect()
    }

    /// Active grants whose window ends in `(after, until]` and that have
    /// no "ending soon" notice yet, soonest first. (The deadline of an
    /// active grant is the end of its window.)
    pub async fn active_ending_without_notice(
        &self,
        after: Timestamp,
        until: Timestamp,
        limit: i64,
    ) -> Result<Vec<StoredRequest>> {
        let rows = sqlx::query(&format!(
            "{SELECT_REQUEST} WHERE r.deadline IS NOT NULL AND r.deadline > $1 AND r.deadline <= $2
               AND r.state = 'active'
               AND NOT EXISTS (SELECT 1 FROM followups f WHERE f.request_id = r.id AND f.kind = $3)
             ORDER BY r.deadline, r.id LIMIT $4"
        ))
        .bind(to_millis(after))
        .bind(to_millis(until))
        .bind(Followup::EndingSoon.as_str())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(stored_request).collect()
    }

    /// The follow-ups given for `request`, in the order given.
    pub async fn followups_of(&self, request: &RequestId) -> Result<Vec<(String, Timestamp)>> {
        let rows =
            sqlx::query("SELECT kind, at FROM followups WHERE request_id = $1 ORDER BY at, kind")
                .bind(request.as_str())
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| Ok((r.get::<String, _>(0), from_millis(r.get::<i64, _>(1))?)))
            .collect()
    }
}

impl Tx<'_> {
    /// Forgets that the `kind` follow-up of `request` was given, so it is
    /// given again: an extended grant gets a new "ending soon" notice
    /// before its new end.
    pub async fn forget_followup(&mut self, request: &RequestId, kind: Followup) -> Result<()> {
        sqlx::query("DELETE FROM followups WHERE request_id = $1 AND kind = $2")
            .bind(request.as_str())
            .bind(kind.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Claims the `kind` follow-up of `request`: `true` if this call
    /// recorded it, `false` if it was recorded already (by another replica
    /// or an earlier run), in which case the caller does nothing more.
    pub async fn claim_followup(
        &mut self,
        request: &RequestId,
        kind: Followup,
        at: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO followups (request_id, kind, at) VALUES ($1, $2, $3)
             ON CONFLICT (request_id, kind) DO NOTHING",
        )
        .bind(request.as_str())
        .bind(kind.as_str())
        .bind(to_millis(at))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request_row(store: &Store, id: &str, state: &str, created_at: i64, deadline: i64) {
        sqlx::query(
            "INSERT INTO requests (id, requester, target, resource, role, grant_key, state, deadline, extends, break_glass, created_at, updated_at, doc)
             VALUES ($1, 'alice', 'demo', 'orders', 'orders_writer', 'k', $2, $3, NULL, 0, $4, 0, '{}')",
        )
        .bind(id)
        .bind(state)
        .bind(deadline)
        .bind(created_at)
        .execute(store.pool())
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_followup_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = elevate_testkit::database_url(&dir.path().join("e.db")).unwrap();
        let store = Store::open(&url).await.unwrap();
        request_row(&store, "r-aaaaaaaaaaaa", "pending", 0, 10_000).await;
        let id = RequestId::parse("r-aaaaaaaaaaaa").unwrap();
        let at = from_millis(1_000).unwrap();
        let mut tx = store.begin().await.unwrap();
        assert!(tx
            .claim_followup(&id, Followup::Reminded, at)
            .await
            .unwrap());
        assert!(!tx
            .claim_followup(&id, Followup::Reminded, at)
            .await
            .unwrap());
        assert!(tx
            .claim_followup(&id, Followup::Escalated, at)
            .await
            .unwrap());
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        assert!(!tx
            .claim_followup(&id, Followup::Escalated, at)
            .await
            .unwrap());
        drop(tx);
        let kinds: Vec<String> = store
            .followups_of(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kinds, vec!["escalated", "reminded"]);
    }
}
