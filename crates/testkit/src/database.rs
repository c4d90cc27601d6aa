//! Which database engine elevate's store runs on in a test, chosen for the
//! whole run by one environment variable, [`DATABASE_ENV`]:
//!
//! - unset, empty or `sqlite`: every test gets `sqlite://PATH`, a file in its
//!   own temporary directory (the default, and what tests always did);
//! - `postgres://USER@HOST:PORT/DBNAME`: the admin URL of a throwaway
//!   PostgreSQL server (`scripts/test.sh` starts one). Every test gets a
//!   database of its own on that server, named after the SQLite path it
//!   would have used, so a test that starts elevate again on the same path
//!   finds its data again.
//!
//! Tests build their configs with [`database_url`] instead of writing
//! `sqlite://` themselves; the few that check SQLite-only behaviour keep
//! their `sqlite://` URL and say why.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// The environment variable that picks the store's engine for a test run.
pub const DATABASE_ENV: &str = "ELEVATE_TEST_DATABASE";

/// How many times a `CREATE DATABASE` that lost a race with another one
/// (PostgreSQL refuses two copies of the template at once) is tried again.
const CREATE_ATTEMPTS: u32 = 10;

/// The engine [`DATABASE_ENV`] names.
enum Engine {
    Sqlite,
    /// The admin URL of the server.
    Postgres(String),
}

fn engine() -> anyhow::Result<Engine> {
    let value = std::env::var(DATABASE_ENV).unwrap_or_default();
    let value = value.trim();
    if value.is_empty() || value == "sqlite" {
        Ok(Engine::Sqlite)
    } else if is_postgres_url(value) {
        Ok(Engine::Postgres(value.to_owned()))
    } else {
        bail!(
            "{DATABASE_ENV}={value:?}: expected nothing, \"sqlite\" or a \
             postgres://USER@HOST:PORT/DBNAME admin URL"
        )
    }
}

fn is_postgres_url(value: &str) -> bool {
    value.starts_with("postgres://") || value.starts_with("postgresql://")
}

/// True when [`DATABASE_ENV`] names a PostgreSQL server, so the tests'
/// stores live there.
pub fn on_postgres() -> bool {
    std::env::var(DATABASE_ENV).is_ok_and(|value| is_postgres_url(value.trim()))
}

/// The database URL a test should give elevate for a store that would live
/// at `sqlite_path`:
///
/// - on SQLite (see [`DATABASE_ENV`]): `sqlite://{sqlite_path}`;
/// - on PostgreSQL: a database of its own on the server named by
///   [`DATABASE_ENV`], `elevate_` followed by the first 24 hex digits of
///   the SHA-256 of the path's bytes, created if it does not exist yet
///   (blocking: runs `psql`), as a `postgres://` URL with the admin URL's
///   user, password, host, port and parameters.
pub fn database_url(sqlite_path: &Path) -> anyhow::Result<String> {
    match engine()? {
        Engine::Sqlite => Ok(format!("sqlite://{}", sqlite_path.display())),
        Engine::Postgres(admin) => {
            let name = database_name(sqlite_path);
            ensure_database(&admin, &name)?;
            with_database(&admin, &name)
        }
    }
}

/// `elevate_` and the first 24 hex digits of SHA-256(`sqlite_path`).
fn database_name(sqlite_path: &Path) -> String {
    let digest = Sha256::digest(sqlite_path.as_os_str().as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("elevate_{}", &hex[..24])
}

/// `admin` with its database replaced by `name` (which needs no encoding).
fn with_database(admin: &str, name: &str) -> anyhow::Result<String> {
    let (scheme, rest) = admin
        .split_once("://")
        .with_context(|| format!("{DATABASE_ENV} is not a URL"))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |at| &tail[at..]);
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

/// Databases this process already made sure of: a test that builds its
/// config twice (or restarts elevate) asks the server once.
fn known() -> &'static Mutex<HashSet<String>> {
    static KNOWN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

/// Creates database `name` on the server `admin` points at unless it
/// exists. Another test (or process) creating it at the same moment is
/// fine.
fn ensure_database(admin: &str, name: &str) -> anyhow::Result<()> {
    if known()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .contains(name)
    {
        return Ok(());
    }
    // `\gexec` runs the CREATE only when the SELECT returns it: one psql
    // run checks and creates.
    let sql = format!(
        "SELECT 'CREATE DATABASE {name}' \
         WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}') \\gexec\n"
    );
    let mut attempt = 0;
    loop {
        attempt += 1;
        match psql(admin, &sql) {
            Ok(()) => break,
            Err(error) => {
                let text = format!("{error:#}");
                if text.contains("already exists") || text.contains("pg_database_datname_index") {
                    // Created concurrently by someone else: what we wanted.
                    break;
                }
                // PostgreSQL copies the template database for one CREATE
                // at a time; a concurrent one may be refused with this.
                if text.contains("is being accessed by other users") && attempt < CREATE_ATTEMPTS {
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                    continue;
                }
                return Err(error.context(format!("creating test database {name}")));
            }
        }
    }
    known()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(name.to_owned());
    Ok(())
}

/// Runs `sql` with `psql` (found next to the server binaries) against the
/// connection URL `url`, stopping at the first error.
fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let bin = crate::find_bin_dir()?;
    let mut child = Command::new(bin.join("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg("-d")
        .arg(url)
        .args(["-f", "-"])
        .env_remove("PGOPTIONS")
        .env_remove("PGDATABASE")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting psql")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("psql has no stdin")?;
        stdin.write_all(sql.as_bytes())?;
    }
    let output = child.wait_with_output().context("waiting for psql")?;
    if !output.status.success() {
        bail!(
            "psql on {DATABASE_ENV}'s server failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_name_is_a_hash_of_the_path() {
        let name = database_name(Path::new("/tmp/.tmpAbC/elevate.db"));
        assert!(name.starts_with("elevate_"), "{name}");
        assert_eq!(name.len(), "elevate_".len() + 24, "{name}");
        assert!(name["elevate_".len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(name, database_name(Path::new("/tmp/.tmpAbC/elevate.db")));
        assert_ne!(name, database_name(Path::new("/tmp/.tmpAbC/other.db")));
    }

    #[test]
    fn the_admin_urls_database_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "elevate_x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/elevate_x"
        );
        assert_eq!(
            with_database("postgresql://u:p@h:1/admin?sslmode=disable", "elevate_x").unwrap(),
            "postgresql://u:p@h:1/elevate_x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:1", "elevate_x").unwrap(),
            "postgres://u@h:1/elevate_x"
        );
        assert_eq!(
            with_database("postgres://u@h:1?sslmode=disable", "elevate_x").unwrap(),
            "postgres://u@h:1/elevate_x?sslmode=disable"
        );
    }

    /// Against a cluster of its own, whatever the environment says: the
    /// database is created once, and asking again (a restart) is fine.
    #[test]
    fn a_database_is_created_once_and_found_again() {
        let cluster = crate::PgCluster::start().unwrap();
        let admin = cluster.url("postgres", None, "postgres");
        let name = database_name(Path::new("/nonexistent/testkit/elevate.db"));
        ensure_database(&admin, &name).unwrap();
        known().lock().unwrap().remove(&name);
        ensure_database(&admin, &name).unwrap();
        let url = with_database(&admin, &name).unwrap();
        assert_eq!(
            cluster
                .psql(&format!(
                    "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
                ))
                .unwrap(),
            "1"
        );
        psql(&url, "CREATE TABLE t (n int)").unwrap();
        // Concurrent creators of one database all succeed.
        let other = database_name(Path::new("/nonexistent/testkit/raced.db"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let admin = admin.clone();
                let other = other.clone();
                std::thread::spawn(move || ensure_database(&admin, &other))
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
    }
}
