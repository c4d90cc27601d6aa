//! PostgreSQL role membership: a grant of `role` to an elevate user is
//! `GRANT "role" TO "login"` on one PostgreSQL cluster (a target), and its
//! removal is `REVOKE` plus ending the login's sessions.
//!
//! Security decisions, and why:
//! - **Sessions are terminated on removal.** A session that already ran
//!   `SET ROLE x` keeps x's privileges after `REVOKE x FROM login`;
//!   PostgreSQL re-checks membership only at the next `SET ROLE`. The only way
//!   to take those privileges back is to end the session, so `remove` ends
//!   every session of the login (`pg_terminate_backend`, which needs the
//!   broker to be in `pg_signal_backend`) and waits until they are gone. We
//!   cannot tell which sessions used the role, so all of them end.
//! - **The grant key ignores the resource.** Role membership is cluster-wide:
//!   a grant "on database A" and one "on database B" put the same membership
//!   in place, so they share one key and removing one must not silently
//!   remove the other (the engine counts holders per key).
//! - **Only configured roles are granted.** With `CREATEROLE` (PostgreSQL
//!   15) the broker can grant almost any role, including predefined ones
//!   like `pg_execute_server_program`; `apply` refuses a role that is not in
//!   [`PostgresConfig::roles`] even if the caller asked for it. `remove` and
//!   `check` accept any role, so grants outlive a config change safely.
//! - **Identifiers are always quoted**, and names that PostgreSQL would
//!   truncate or reject (empty, NUL, over 63 bytes) or that hold control
//!   characters are refused, so a name can never change the meaning of a
//!   statement or silently hit another role. Values in queries are bound
//!   parameters.
//! - **The password never appears in messages**: it lives only in the
//!   connection options, which are never formatted; `Debug` redacts it.
//!
//! Constructing the provider never touches the network (the pool connects
//! lazily), so the broker starts while a target is down; calls then fail
//! with [`ProviderError::Retryable`] until it is back.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};

use crate::{GrantSpec, Presence, Provider, ProviderError};

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), which would
/// make a long name silently refer to a different role.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// How long `remove` waits for each terminated session to be really gone
/// before calling the removal unfinished (and so retryable).
const SESSION_END_TIMEOUT_MILLIS: i64 = 5_000;

/// Separates the parts of a grant key. Login and role are written
/// escaped (`{:?}`), so the separator inside a name cannot make two
/// different grants share a key.
const KEY_SEPARATOR: char = '\u{1f}';

/// One PostgreSQL target as written in config. The server resolves the
/// password (from `password_file` / `password_env`) and fills `roles` from
/// the catalogue before building this.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The database the broker connects to; role membership is
    /// cluster-wide, so any database the broker may connect to will do.
    #[serde(default = "default_database")]
    pub database: String,
    /// The broker's own login on the cluster.
    pub user: String,
    /// The broker's password, already resolved; never printed.
    #[serde(default)]
    pub password: Option<String>,
    /// Upper bound on waiting for a connection, so an unreachable target
    /// fails a job quickly (and retryably) instead of hanging it.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// elevate user name → PostgreSQL login, for users whose login differs;
    /// everyone else logs in under their elevate user name.
    #[serde(default)]
    pub user_map: BTreeMap<String, String>,
    /// The roles elevate may grant on this target. `apply` refuses others;
    /// `validate` checks each exists and is grantable by the broker.
    #[serde(default)]
    pub roles: Vec<String>,
}

fn default_host() -> String {
    "127.0.0.1".to_owned()
}

fn default_port() -> u16 {
    5432
}

fn default_database() -> String {
    "postgres".to_owned()
}

fn default_connect_timeout_secs() -> u64 {
    5
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("user_map", &self.user_map)
            .field("roles", &self.roles)
            .finish()
    }
}

/// A PostgreSQL identifier that is safe to quote into a statement: not
/// empty, no control characters (NUL included), at most 63 bytes. Anything else is accepted, because it
/// is always written double-quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identifier(String);

impl Identifier {
    /// `what` names the identifier in the error ("role", "login").
    fn parse(what: &str, name: &str) -> Result<Self, ProviderError> {
        let problem = if name.is_empty() {
            Some("is empty".to_owned())
        } else if name.chars().any(char::is_control) {
            Some("contains a control character".to_owned())
        } else if name.len() > MAX_IDENTIFIER_BYTES {
            Some(format!(
                "is {} bytes long; PostgreSQL names are at most {MAX_IDENTIFIER_BYTES}",
                name.len()
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(ProviderError::Permanent(format!(
                "PostgreSQL {what} name {name:?} {problem}"
            ))),
            None => Ok(Identifier(name.to_owned())),
        }
    }

    fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier double-quoted, inner double quotes doubled.
    fn quoted(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

/// Grants PostgreSQL role membership. Holds a small lazily-connecting pool.
pub struct PostgresProvider {
    config: PostgresConfig,
    pool: PgPool,
}

impl fmt::Debug for PostgresProvider {
    // By hand: the pool's connect options hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PostgresProvider {
    /// Builds the provider without connecting. Must be called inside a
    /// Tokio runtime (the pool runs a background task that closes idle
    /// connections).
    pub fn new(config: PostgresConfig) -> Result<Self, ProviderError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ProviderError::Permanent(
                "the PostgreSQL provider must be created inside a Tokio runtime".to_owned(),
            ));
        }
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&config.host)
            .port(config.port)
            .database(&config.database)
            .username(&config.user)
            .application_name("elevate");
        if let Some(password) = &config.password {
            options = options.password(password);
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(config.connect_timeout_secs))
            .connect_lazy_with(options);
        Ok(PostgresProvider { config, pool })
    }

    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// The PostgreSQL login for an elevate user.
    fn login_name<'a>(&'a self, user: &'a str) -> &'a str {
        self.config
            .user_map
            .get(user)
            .map(String::as_str)
            .unwrap_or(user)
    }

    /// The login of a grant: the one recorded with it, else the mapping.
    fn login_of<'a>(&'a self, grant: &'a GrantSpec) -> &'a str {
        grant
            .account
            .as_deref()
            .unwrap_or_else(|| self.login_name(&grant.user))
    }

    fn names(&self, grant: &GrantSpec) -> Result<(Identifier, Identifier), ProviderError> {
        let role = Identifier::parse("role", &grant.role)?;
        let login = Identifier::parse("login", self.login_of(grant))?;
        Ok((role, login))
    }

    fn endpoint(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    /// Turns an sqlx error into a retryable or permanent provider error
    /// whose message says what we were doing, where, and PostgreSQL's own
    /// SQLSTATE and message.
    fn error(&self, doing: &str, error: sqlx::Error) -> ProviderError {
        let at = format!("PostgreSQL at {}", self.endpoint());
        match &error {
            sqlx::Error::Database(database_error) => {
                let code = database_error.code().unwrap_or_default().into_owned();
                let mut message = format!(
                    "{doing} on {at} failed: SQLSTATE {code}: {}",
                    database_error.message()
                );
                if let Some(pg) = database_error.try_downcast_ref::<PgDatabaseError>() {
                    if let Some(detail) = pg.detail() {
                        message.push_str(&format!(" ({detail})"));
                    }
                    if let Some(hint) = pg.hint() {
                        message.push_str(&format!(" hint: {hint}"));
                    }
                }
                if sqlstate_is_retryable(&code) {
                    ProviderError::Retryable(message)
                } else {
                    ProviderError::Permanent(message)
                }
            }
            sqlx::Error::PoolTimedOut => ProviderError::Retryable(format!(
                "{doing}: cannot connect to {at} within {} s",
                self.config.connect_timeout_secs
            )),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => {
                ProviderError::Retryable(format!("{doing}: connection to {at} failed: {error}"))
            }
            _ => ProviderError::Permanent(format!("{doing} on {at} failed: {error}")),
        }
    }

    /// Direct membership of `login` in `role`, as a grant puts it there.
    /// Missing roles simply match nothing.
    async fn is_member(&self, role: &Identifier, login: &Identifier) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_auth_members m
                 JOIN pg_roles r ON r.oid = m.roleid
                 JOIN pg_roles u ON u.oid = m.member
                 WHERE r.rolname = $1 AND u.rolname = $2)",
        )
        .bind(role.as_str())
        .bind(login.as_str())
        .fetch_one(&self.pool)
        .await
    }

    /// Ends every session of `login` and waits for them to be gone.
    /// Returns how many were ended.
    async fn end_sessions(&self, login: &Identifier) -> Result<i64, ProviderError> {
        let row = sqlx::query(
            "SELECT count(*), count(*) FILTER (WHERE NOT ended)
             FROM (SELECT pg_terminate_backend(pid, $2) AS ended
                   FROM pg_stat_activity
                   WHERE usename = $1 AND pid <> pg_backend_pid()) AS terminated",
        )
        .bind(login.as_str())
        .bind(SESSION_END_TIMEOUT_MILLIS)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.error(&format!("ending the sessions of {login}"), e))?;
        let (ended, still_running): (i64, i64) = (
            row.try_get(0)
                .map_err(|e| self.error("reading the session count", e))?,
            row.try_get(1)
                .map_err(|e| self.error("reading the session count", e))?,
        );
        if still_running > 0 {
            // Also the answer when a session ended by itself between being
            // listed and being signalled; the retry then finds nothing.
            return Err(ProviderError::Retryable(format!(
                "{still_running} of {ended} sessions of {login} on PostgreSQL at {} \
                 had not ended {} ms after pg_terminate_backend",
                self.endpoint(),
                SESSION_END_TIMEOUT_MILLIS
            )));
        }
        Ok(ended)
    }

    /// Why a connection cannot be opened: the pool only says it timed out
    /// (it retries refused connections until then), so try once directly.
    async fn connect_failure(&self, error: sqlx::Error) -> ProviderError {
        let cause = if matches!(error, sqlx::Error::PoolTimedOut) {
            let options = self.pool.connect_options();
            let timeout = Duration::from_secs(self.config.connect_timeout_secs.max(1));
            match tokio::time::timeout(timeout, PgConnection::connect_with(&*options)).await {
                Ok(Err(direct)) => direct.to_string(),
                Ok(Ok(_)) => "timed out waiting for a pooled connection".to_owned(),
                Err(_) => format!("no answer within {} s", timeout.as_secs()),
            }
        } else {
            error.to_string()
        };
        let message = format!(
            "cannot connect to PostgreSQL at {}: {cause}",
            self.endpoint()
        );
        match self.error("connecting", error) {
            ProviderError::Permanent(_) => ProviderError::Permanent(message),
            ProviderError::Retryable(_) | ProviderError::Busy(_) => {
                ProviderError::Retryable(message)
            }
        }
    }
}

/// SQLSTATEs worth retrying: the server or connection is going away or
/// coming back, is out of resources, or a lock or conflict got in the way.
/// Everything else (undefined object, insufficient privilege, invalid grant,
/// bad password, ...) needs a person to change something.
fn sqlstate_is_retryable(code: &str) -> bool {
    let class = code.get(..2).unwrap_or_default();
    matches!(class, "08" | "40" | "53" | "57" | "58")
        || code == "55P03" // lock not available
        // read-only transaction: we reached a standby, as during a failover.
        || code == "25006"
}

#[async_trait]
impl Provider for PostgresProvider {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn grant_key(&self, grant: &GrantSpec) -> String {
        format!(
            "{}{KEY_SEPARATOR}{:?}{KEY_SEPARATOR}{:?}",
            grant.target,
            self.login_of(grant),
            grant.role
        )
    }

    fn account(&self, grant: &GrantSpec) -> Option<String> {
        Some(self.login_name(&grant.user).to_owned())
    }

    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let (role, login) = self.names(grant)?;
        if !self.config.roles.iter().any(|r| r == role.as_str()) {
            return Err(ProviderError::Permanent(format!(
                "role {role} is not configured as grantable on target {}",
                grant.target
            )));
        }
        // Repeating it is only a NOTICE in PostgreSQL: idempotent.
        let statement = format!("GRANT {role} TO {login}");
        sqlx::raw_sql(&statement)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(&format!("granting {role} to {login}"), e))?;
        tracing::info!(
            target: "elevate::postgres",
            target_name = %grant.target, %role, %login, request = %grant.request_id,
            "granted role membership"
        );
        Ok(())
    }

    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let (role, login) = self.names(grant)?;
        let statement = format!("REVOKE {role} FROM {login}");
        match sqlx::raw_sql(&statement).execute(&self.pool).await {
            Ok(_) => {}
            // The login or the role does not exist, so neither does the
            // grant. Sessions are still ended below: harmless if there are
            // none, and a retry after a crash must finish the job.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42704") => {
                tracing::debug!(
                    target: "elevate::postgres",
                    target_name = %grant.target, %role, %login,
                    "nothing to revoke: {}", e.message()
                );
            }
            Err(e) => return Err(self.error(&format!("revoking {role} from {login}"), e)),
        }
        let ended = self.end_sessions(&login).await?;
        // PostgreSQL 16+ records who granted a membership, and REVOKE only
        // takes back the broker's own grants (with a WARNING). Success must
        // mean the membership is gone, so look.
        if self
            .is_member(&role, &login)
            .await
            .map_err(|e| self.error(&format!("checking {login} in {role}"), e))?
        {
            return Err(ProviderError::Permanent(format!(
                "{login} is still a member of {role} on PostgreSQL at {} after REVOKE: \
                 the membership was granted by another role; revoke it as that role \
                 or as a superuser",
                self.endpoint()
            )));
        }
        tracing::info!(
            target: "elevate::postgres",
            target_name = %grant.target, %role, %login, request = %grant.request_id,
            sessions_ended = ended,
            "revoked role membership"
        );
        Ok(())
    }

    async fn check(&self, grant: &GrantSpec) -> Result<Presence, ProviderError> {
        let (role, login) = self.names(grant)?;
        let member = self
            .is_member(&role, &login)
            .await
            .map_err(|e| self.error(&format!("checking {login} in {role}"), e))?;
        Ok(if member {
            Presence::Present
        } else {
            Presence::Absent
        })
    }

    async fn validate(&self) -> Result<Vec<String>, ProviderError> {
        let mut connection = match self.pool.acquire().await {
            Ok(connection) => connection,
            Err(error) => return Err(self.connect_failure(error).await),
        };
        let broker = sqlx::query(
            "SELECT current_user::text, rolsuper, rolcreaterole,
                    current_setting('server_version_num')::int4,
                    current_setting('server_version'),
                    pg_has_role(current_user, 'pg_signal_backend', 'USAGE')
             FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&mut *connection)
        .await
        .map_err(|e| self.error("reading the broker's privileges", e))?;
        let read = |e| self.error("reading the broker's privileges", e);
        let name: String = broker.try_get(0).map_err(read)?;
        let superuser: bool = broker.try_get(1).map_err(read)?;
        let createrole: bool = broker.try_get(2).map_err(read)?;
        let version_num: i32 = broker.try_get(3).map_err(read)?;
        let version: String = broker.try_get(4).map_err(read)?;
        let can_signal: bool = broker.try_get(5).map_err(read)?;

        let mut problems = Vec::new();
        if version_num < 140_000 {
            problems.push(format!(
                "PostgreSQL {version} is too old: elevate needs 14 or later \
                 (pg_terminate_backend with a timeout)"
            ));
        }
        if !superuser && !can_signal {
            problems.push(format!(
                "role {name} is not a member of pg_signal_backend, so it cannot end the \
                 sessions of users whose grant is removed (GRANT pg_signal_backend TO \"{name}\")"
            ));
        }
        if self.config.roles.is_empty() {
            problems.push("no grantable roles are configured for this target".to_owned());
        }
        for role_name in &self.config.roles {
            let role = match Identifier::parse("role", role_name) {
                Ok(role) => role,
                Err(error) => {
                    problems.push(error.to_string());
                    continue;
                }
            };
            let found = sqlx::query(
                "SELECT r.rolsuper, EXISTS (
                     SELECT 1 FROM pg_auth_members m
                     WHERE m.roleid = r.oid AND m.admin_option
                       AND pg_has_role(current_user, m.member, 'MEMBER'))
                 FROM pg_roles r WHERE r.rolname = $1",
            )
            .bind(role.as_str())
            .fetch_optional(&mut *connection)
            .await
            .map_err(|e| self.error(&format!("looking up role {role}"), e))?;
            let Some(found) = found else {
                problems.push(format!("role {role} does not exist"));
                continue;
            };
            let read = |e| self.error(&format!("looking up role {role}"), e);
            let role_is_superuser: bool = found.try_get(0).map_err(read)?;
            let admin_option: bool = found.try_get(1).map_err(read)?;
            if superuser {
                continue;
            }
            if role_is_superuser {
                problems.push(format!(
                    "role {role} is a superuser; only a superuser can grant it"
                ));
            } else if version_num >= 160_000 && !admin_option {
                problems.push(format!(
                    "role {name} cannot grant {role}: PostgreSQL 16+ requires \
                     GRANT {role} TO \"{name}\" WITH ADMIN OPTION"
                ));
            } else if version_num < 160_000 && !createrole && !admin_option {
                problems.push(format!(
                    "role {name} cannot grant {role}: it has neither CREATEROLE nor \
                     ADMIN OPTION on {role}"
                ));
            }
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PostgresConfig {
        PostgresConfig {
            host: "db.example".to_owned(),
            port: 5432,
            database: "postgres".to_owned(),
            user: "broker".to_owned(),
            password: Some("hunter2-secret".to_owned()),
            connect_timeout_secs: 5,
            user_map: BTreeMap::from([("alice".to_owned(), "Alice_PG".to_owned())]),
            roles: vec!["orders_writer".to_owned()],
        }
    }

    fn grant(resource: &str) -> GrantSpec {
        GrantSpec {
            request_id: "r1".to_owned(),
            target: "prod".to_owned(),
            resource: resource.to_owned(),
            role: "orders_writer".to_owned(),
            user: "alice".to_owned(),
            email: None,
            account: None,
            window_ends_at: None,
            ended_early: false,
            email_unverified: false,
        }
    }

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        let id = Identifier::parse("role", r#"a "b"; DROP"#).unwrap();
        assert_eq!(id.quoted(), r#""a ""b""; DROP""#);
    }

    #[test]
    fn empty_nul_and_overlong_names_are_refused() {
        for name in ["", "a\0b", "a\u{1f}b", "a\nb", &"x".repeat(64)] {
            let error = Identifier::parse("role", name).unwrap_err();
            assert!(!error.is_retryable());
        }
        assert!(Identifier::parse("role", &"é".repeat(31)).is_ok()); // 62 bytes
        assert!(Identifier::parse("role", &"é".repeat(32)).is_err()); // 64 bytes
    }

    #[test]
    fn sqlstates_are_classified() {
        for code in [
            "08006", "57P01", "57P03", "53300", "40001", "40P01", "55P03", "58000",
        ] {
            assert!(sqlstate_is_retryable(code), "{code}");
        }
        for code in ["42704", "42501", "0LP01", "28P01", "3D000", "XX000", ""] {
            assert!(!sqlstate_is_retryable(code), "{code}");
        }
    }

    #[test]
    fn config_defaults_apply_and_unknown_fields_are_refused() {
        let config: PostgresConfig = serde_json::from_str(r#"{"user": "broker"}"#).unwrap();
        assert_eq!(config.host, "127.0.0.1");
        assert_eq!(config.port, 5432);
        assert_eq!(config.database, "postgres");
        assert_eq!(config.connect_timeout_secs, 5);
        assert!(config.password.is_none() && config.user_map.is_empty());
        assert!(
            serde_json::from_str::<PostgresConfig>(r#"{"user": "b", "pasword": "x"}"#).is_err()
        );
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_password() {
        let provider = PostgresProvider::new(config()).unwrap();
        assert!(!format!("{:?}", provider.config()).contains("hunter2"));
        assert!(!format!("{provider:?}").contains("hunter2"));
        assert!(format!("{provider:?}").contains("<redacted>"));
    }

    #[tokio::test]
    async fn the_grant_key_uses_the_login_and_ignores_the_resource() {
        let provider = PostgresProvider::new(config()).unwrap();
        assert_eq!(
            provider.grant_key(&grant("db_a")),
            provider.grant_key(&grant("db_b"))
        );
        assert_eq!(
            provider.grant_key(&grant("db_a")),
            "prod\u{1f}\"Alice_PG\"\u{1f}\"orders_writer\""
        );
    }

    #[tokio::test]
    async fn names_containing_the_separator_cannot_share_a_key() {
        let provider = PostgresProvider::new(config()).unwrap();
        let mut first = grant("db");
        first.user = "a\u{1f}b".to_owned();
        first.role = "c".to_owned();
        let mut second = grant("db");
        second.user = "a".to_owned();
        second.role = "b\u{1f}c".to_owned();
        assert_ne!(provider.grant_key(&first), provider.grant_key(&second));
    }

    #[test]
    fn construction_outside_a_runtime_is_an_error_not_a_panic() {
        let error = PostgresProvider::new(config()).unwrap_err();
        assert!(error.to_string().contains("Tokio runtime"));
    }
}
