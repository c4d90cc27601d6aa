//! The cached inventories of targets that discover their resources (an
//! AWS Organization's OU tree and permission sets): one row per target,
//! holding the last good inventory as JSON. Listings and decisions read
//! the in-memory catalog built from it, never the target; the row lets a
//! restarted server or another replica have the tree at once.
//!
//! A failed refresh keeps the last good inventory (access decisions go on
//! with what was last known) and records the failure beside it.

use elevate_core::Timestamp;
use sqlx::Row;

use crate::{from_millis, to_millis, Result, Store};

/// One target's cached inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedInventory {
    pub target: String,
    /// The inventory as JSON (the providers crate's `Inventory`).
    pub doc: String,
    pub refreshed_at: Timestamp,
    /// The last failed refresh after `refreshed_at`, with its error.
    pub failure: Option<(Timestamp, String)>,
}

impl Store {
    /// Stores a freshly read inventory and clears any recorded failure,
    /// unless a newer one is stored already (a slower refresh started
    /// earlier, on this replica or another, must not overwrite it). True
    /// when stored.
    pub async fn save_inventory(&self, target: &str, doc: &str, at: Timestamp) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Portable upsert: the write lock keeps another replica from
        // inserting in between.
        let inserted = sqlx::query(
            "INSERT INTO inventories (target, doc, refreshed_at) SELECT $1, $2, $3
             WHERE NOT EXISTS (SELECT 1 FROM inventories WHERE target = $1)",
        )
        .bind(target)
        .bind(doc)
        .bind(to_millis(at))
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        let updated = if inserted == 0 {
            sqlx::query(
                "UPDATE inventories SET doc = $2, refreshed_at = $3, failed_at = NULL, last_error = NULL
                 WHERE target = $1 AND refreshed_at < $3",
            )
            .bind(target)
            .bind(doc)
            .bind(to_millis(at))
            .execute(&mut *tx.tx)
            .await?
            .rows_affected()
        } else {
            0
        };
        tx.commit().await?;
        Ok(inserted + updated > 0)
    }

    /// Claims the next reconciliation of `target` when none was made (or
    /// claimed) after `due_before`: true for exactly one replica, which
    /// then runs it. Moves `reconciled_at` to `now`.
    pub async fn claim_reconciliation(
        &self,
        target: &str,
        now: Timestamp,
        due_before: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let claimed = sqlx::query(
            "UPDATE inventories SET reconciled_at = $2
             WHERE target = $1 AND (reconciled_at IS NULL OR reconciled_at <= $3)",
        )
        .bind(target)
        .bind(to_millis(now))
        .bind(to_millis(due_before))
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(claimed == 1)
    }

    /// Records a failed refresh; the last good inventory stays. A target
    /// never read successfully gets no row (there is nothing to keep).
    pub async fn inventory_failed(&self, target: &str, error: &str, at: Timestamp) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE inventories SET failed_at = $2, last_error = $3 WHERE target = $1")
            .bind(target)
            .bind(to_millis(at))
            .bind(error)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await
    }

    /// The cached inventory of `target`, if it was ever read.
    pub async fn inventory(&self, target: &str) -> Result<Option<CachedInventory>> {
        let row = sqlx::query(
            "SELECT target, doc, refreshed_at, failed_at, last_error FROM inventories WHERE target = $1",
        )
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let failed_at: Option<i64> = row.try_get(3)?;
        let last_error: Option<String> = row.try_get(4)?;
        let failure = match (failed_at, last_error) {
            (Some(at), Some(e)) => Some((from_millis(at)?, e)),
            _ => None,
        };
        Ok(Some(CachedInventory {
            target: row.try_get(0)?,
            doc: row.try_get(1)?,
            refreshed_at: from_millis(row.try_get(2)?)?,
            failure,
        }))
    }

    /// Stores the last reconciliation report of `target` (JSON). Kept
    /// only beside an inventory: a target never read is never reconciled.
    pub async fn save_reconciliation(&self, target: &str, doc: &str, at: Timestamp) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE inventories SET reconciled_at = $2, reconciliation = $3 WHERE target = $1",
        )
        .bind(target)
        .bind(to_millis(at))
        .bind(doc)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// The last reconciliation report of `target` and when it was made.
    pub async fn reconciliation(&self, target: &str) -> Result<Option<(Timestamp, String)>> {
        let row =
            sqlx::query("SELECT reconciled_at, reconciliation FROM inventories WHERE target = $1")
                .bind(target)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let at: Option<i64> = row.try_get(0)?;
        let doc: Option<String> = row.try_get(1)?;
        match (at, doc) {
            (Some(at), Some(doc)) => Ok(Some((from_millis(at)?, doc))),
            _ => Ok(None),
        }
    }

    /// Every stored reconciliation report, by target (for metrics read
    /// at scrape time, the same on every replica).
    pub async fn reconciliations(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT target, reconciliation FROM inventories WHERE reconciliation IS NOT NULL ORDER BY target",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// When `target`'s cached inventory was last read: a cheap question
    /// replicas ask often to notice a refresh made by another.
    pub async fn inventory_refreshed_at(&self, target: &str) -> Result<Option<Timestamp>> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT refreshed_at FROM inventories WHERE target = $1")
                .bind(target)
                .fetch_optional(&self.pool)
                .await?;
        at.map(from_millis).transpose()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use crate::Store;

    #[tokio::test]
    async fn an_inventory_is_replaced_and_a_failure_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let url = elevate_testkit::database_url(&dir.path().join("s.db")).unwrap();
        let store = Store::open(&url).await.unwrap();
        let t0 = Utc.timestamp_millis_opt(1_000_000).single().unwrap();
        let t1 = t0 + chrono::Duration::minutes(15);
        assert_eq!(store.inventory("aws").await.unwrap(), None);
        // A failure before any success leaves nothing to show.
        store
            .inventory_failed("aws", "unreachable", t0)
            .await
            .unwrap();
        assert_eq!(store.inventory("aws").await.unwrap(), None);
        assert!(store.save_inventory("aws", "{\"a\":1}", t0).await.unwrap());
        store
            .inventory_failed("aws", "AccessDenied", t1)
            .await
            .unwrap();
        let cached = store.inventory("aws").await.unwrap();
        let cached = cached.unwrap();
        assert_eq!(cached.doc, "{\"a\":1}");
        assert_eq!(cached.refreshed_at, t0);
        assert_eq!(cached.failure, Some((t1, "AccessDenied".to_owned())));
        assert!(store.save_inventory("aws", "{\"a\":2}", t1).await.unwrap());
        // An older read finishing late does not overwrite it.
        assert!(!store.save_inventory("aws", "{\"a\":0}", t0).await.unwrap());
        let cached = store.inventory("aws").await.unwrap();
        let cached = cached.unwrap();
        assert_eq!((cached.doc.as_str(), cached.failure), ("{\"a\":2}", None));
        assert_eq!(store.inventory_refreshed_at("aws").await.unwrap(), Some(t1));
        assert_eq!(store.inventory_refreshed_at("other").await.unwrap(), None);
        assert_eq!(store.reconciliation("aws").await.unwrap(), None);
        store.save_reconciliation("aws", "{}", t1).await.unwrap();
        assert_eq!(
            store.reconciliation("aws").await.unwrap(),
            Some((t1, "{}".to_owned()))
        );
        assert_eq!(
            store.reconciliations().await.unwrap(),
            vec![("aws".to_owned(), "{}".to_owned())]
        );
        // One claim per period, whoever asks.
        let t2 = t1 + chrono::Duration::hours(1);
        assert!(store.claim_reconciliation("aws", t2, t1).await.unwrap());
        assert!(!store.claim_reconciliation("aws", t2, t1).await.unwrap());
        assert!(store
            .claim_reconciliation("aws", t2 + chrono::Duration::hours(1), t2)
            .await
            .unwrap());
        assert!(!store.claim_reconciliation("other", t2, t1).await.unwrap());
    }
}
