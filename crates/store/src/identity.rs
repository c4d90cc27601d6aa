//! Who signed in through the identity provider, and their browser
//! sessions.
//!
//! - `identities`: the stable subject (`iss` + `sub`) bound to an elevate
//!   user name on first sign-in. Later sign-ins find the same person by
//!   subject, so a renamed account or a changed e-mail at the provider is
//!   still the same user, and a second subject claiming a name already
//!   bound is refused instead of inheriting its grants. `profile` is the
//!   latest e-mail, groups and attributes seen (JSON, owned by the server),
//!   used when elevate re-checks eligibility without a caller present.
//! - `sessions`: browser sessions, keyed by the SHA-256 of the cookie value
//!   so a database reader cannot hijack them.
//! - `login_flows`: state, nonce and PKCE verifier of sign-ins in
//!   progress, keyed by the SHA-256 of `state`, used once.
//!
//! Server-side rows rather than signed cookies: sign-out really ends a
//! session, and every replica sharing the database sees the same ones.

use elevate_core::Timestamp;
use sqlx::Row;

use crate::{from_millis, to_millis, Result, Store};

/// A stored identity binding.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub user_name: String,
    pub profile: String,
    pub last_seen: Timestamp,
}

/// What binding a subject to a user name did.
#[derive(Debug, Clone)]
pub enum Binding {
    /// The subject was known (possibly under an older profile) or is now
    /// bound; `user_name` is the name to use.
    Bound { user_name: String },
    /// The name is bound to another subject.
    NameTaken { user_name: String },
}

/// A browser session row.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user_name: String,
    pub doc: String,
    pub expires_at: Timestamp,
}

/// Profiles are rewritten when they change, or at most this often to keep
/// `last_seen` roughly current without a write per API call.
const LAST_SEEN_RESOLUTION_MS: i64 = 60_000;

fn identity(row: &sqlx::any::AnyRow) -> Result<Identity> {
    Ok(Identity {
        issuer: row.try_get(0)?,
        subject: row.try_get(1)?,
        user_name: row.try_get(2)?,
        profile: row.try_get(3)?,
        last_seen: from_millis(row.try_get(4)?)?,
    })
}

const SELECT_IDENTITY: &str =
    "SELECT issuer, subject, user_name, profile, last_seen FROM identities";

impl Store {
    /// Binds `issuer`/`subject` to `user_name` on first sight, or finds the
    /// name it was bound to before, updating the stored profile.
    pub async fn bind_identity(
        &self,
        issuer: &str,
        subject: &str,
        user_name: &str,
        profile: &str,
        now: Timestamp,
    ) -> Result<Binding> {
        // Most calls are a known subject with an unchanged profile: answer
        // those without taking the write lock.
        if let Some(known) = self.identity_by_subject(issuer, subject).await? {
            if known.profile == profile
                && to_millis(now) - to_millis(known.last_seen) < LAST_SEEN_RESOLUTION_MS
            {
                return Ok(Binding::Bound {
                    user_name: known.user_name,
                });
            }
        }
        let mut tx = self.begin().await?;
        let known: Option<String> = sqlx::query_scalar(
            "SELECT user_name FROM identities WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&mut *tx.tx)
        .await?;
        if let Some(name) = known {
            sqlx::query(
                "UPDATE identities SET profile = $1, last_seen = $2 WHERE issuer = $3 AND subject = $4",
            )
            .bind(profile)
            .bind(to_millis(now))
            .bind(issuer)
            .bind(subject)
            .execute(&mut *tx.tx)
            .await?;
            tx.commit().await?;
            return Ok(Binding::Bound { user_name: name });
        }
        let taken: Option<String> =
            sqlx::query_scalar("SELECT subject FROM identities WHERE user_name = $1")
                .bind(user_name)
                .fetch_optional(&mut *tx.tx)
                .await?;
        if taken.is_some() {
            return Ok(Binding::NameTaken {
                user_name: user_name.to_owned(),
            });
        }
        sqlx::query(
            "INSERT INTO identities (issuer, subject, user_name, profile, first_seen, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(issuer)
        .bind(subject)
        .bind(user_name)
        .bind(profile)
        .bind(to_millis(now))
        .bind(to_millis(now))
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(Binding::Bound {
            user_name: user_name.to_owned(),
        })
    }

    pub async fn identity_by_subject(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<Identity>> {
        let row = sqlx::query(&format!(
            "{SELECT_IDENTITY} WHERE issuer = $1 AND subject = $2"
        ))
        .bind(issuer)
        .bind(subject)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(identity).transpose()
    }

    /// People who signed in through the identity provider, by user name,
    /// at most `limit` of them.
    pub async fn identities(&self, limit: i64) -> Result<Vec<Identity>> {
        let rows = sqlx::query(&format!("{SELECT_IDENTITY} ORDER BY user_name LIMIT $1"))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(identity).collect()
    }

    pub async fn identity_by_user(&self, user_name: &str) -> Result<Option<Identity>> {
        let row = sqlx::query(&format!("{SELECT_IDENTITY} WHERE user_name = $1"))
            .bind(user_name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(identity).transpose()
    }

    pub async fn create_session(
        &self,
        id_hash: &str,
        user_name: &str,
        doc: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        // Sign-ins are rare next to API calls: clearing expired rows here
        // keeps the tables small without a separate sweeper.
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(to_millis(now))
            .execute(&mut *tx.tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_name, doc, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_name)
        .bind(doc)
        .bind(to_millis(now))
        .bind(to_millis(expires_at))
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// The unexpired session with this id hash.
    pub async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT user_name, doc, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(to_millis(now))
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(SessionRow {
                user_name: r.try_get(0)?,
                doc: r.try_get(1)?,
                expires_at: from_millis(r.try_get(2)?)?,
            })
        })
        .transpose()
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let gone = sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone > 0)
    }

    pub async fn put_login_flow(
        &self,
        state_hash: &str,
        doc: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM login_flows WHERE expires_at <= $1")
            .bind(to_millis(now))
            .execute(&mut *tx.tx)
            .await?;
        sqlx::query("INSERT INTO login_flows (state_hash, doc, expires_at) VALUES ($1, $2, $3)")
            .bind(state_hash)
            .bind(doc)
            .bind(to_millis(expires_at))
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await
    }

    /// Removes and returns the unexpired flow with this state hash: a
    /// state is good for one callback only.
    pub async fn take_login_flow(
        &self,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<Option<String>> {
        let mut tx = self.begin().await?;
        let row: Option<(String, i64)> = sqlx::query_as(
            "DELETE FROM login_flows WHERE state_hash = $1 RETURNING doc, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(row.and_then(|(doc, exp)| (exp > to_millis(now)).then_some(doc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// A fresh store on the engine the suite runs on
    /// (`ELEVATE_TEST_DATABASE`); the directory keeps the path (and so the
    /// PostgreSQL database name) unique.
    async fn test_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = elevate_testkit::database_url(&dir.path().join("e.db")).unwrap();
        (dir, Store::open(&url).await.unwrap())
    }

    #[tokio::test]
    async fn a_subject_keeps_its_name_and_a_second_subject_cannot_take_it() {
        let (_dir, store) = test_store().await;
        let now = Utc::now();
        let b = store
            .bind_identity("https://idp", "sub-1", "alice", "{}", now)
            .await
            .unwrap();
        assert!(matches!(b, Binding::Bound { ref user_name } if user_name == "alice"));
        // Renamed at the provider: still alice.
        let b = store
            .bind_identity(
                "https://idp",
                "sub-1",
                "alice2",
                r#"{"email":"new@x"}"#,
                now,
            )
            .await
            .unwrap();
        assert!(matches!(b, Binding::Bound { ref user_name } if user_name == "alice"));
        let stored = store.identity_by_user("alice").await.unwrap().unwrap();
        assert_eq!(stored.profile, r#"{"email":"new@x"}"#);
        // Another subject claiming "alice" is refused.
        let b = store
            .bind_identity("https://idp", "sub-2", "alice", "{}", now)
            .await
            .unwrap();
        assert!(matches!(b, Binding::NameTaken { .. }));
        // The same subject at another issuer is another person.
        let b = store
            .bind_identity("https://other", "sub-1", "alice", "{}", now)
            .await
            .unwrap();
        assert!(matches!(b, Binding::NameTaken { .. }));
    }

    #[tokio::test]
    async fn sessions_expire_and_login_flows_are_used_once() {
        let (_dir, store) = test_store().await;
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(10);
        store
            .create_session("h1", "alice", "{}", now, later)
            .await
            .unwrap();
        assert!(store.session("h1", now).await.unwrap().is_some());
        assert!(store.session("h1", later).await.unwrap().is_none());
        assert!(store.delete_session("h1").await.unwrap());
        assert!(store.session("h1", now).await.unwrap().is_none());

        store.put_login_flow("s1", "doc", now, later).await.unwrap();
        assert_eq!(
            store.take_login_flow("s1", now).await.unwrap().as_deref(),
            Some("doc")
        );
        assert!(store.take_login_flow("s1", now).await.unwrap().is_none());
        store.put_login_flow("s2", "doc", now, later).await.unwrap();
        assert!(store.take_login_flow("s2", later).await.unwrap().is_none());
    }
}
