//! Throwaway real peers for elevate's integration tests.
//!
//! - [`free_port`]: a TCP port on 127.0.0.1 that nothing listens on right now.
//! - [`PgCluster`]: a private PostgreSQL cluster in a temporary directory,
//!   listening on 127.0.0.1 and a free port, removed when dropped.
//! - [`database_url`] / [`on_postgres`]: the database a test gives elevate's
//!   store, on SQLite or on a PostgreSQL server as `ELEVATE_TEST_DATABASE`
//!   says (see [`database`]).
//! - [`aws_org`]: seeds a moto server ([`moto`]) with an AWS Organization
//!   and an IAM Identity Center instance, and looks at its assignments.
//! - [`oidc`]: a real OpenID Connect provider (`oidc-provider` on Node.js)
//!   and a cookie-keeping [`oidc::Browser`] that signs users in without a
//!   real browser.
//!
//! Needs PostgreSQL's server binaries (Debian: `apt-get install -y
//! postgresql`, which puts them in `/usr/lib/postgresql/<major>/bin`; the
//! highest major version found is used, or the directory named by
//! `ELEVATE_PG_BINDIR`). PostgreSQL refuses to run as root, so when the tests
//! run as root the cluster directory is handed to the `postgres` user and the
//! server binaries run through `runuser -u postgres --`.
//!
//! Starting and stopping peers is blocking `std::process` work, so it is
//! usable from plain `#[test]`s and from `#[tokio::test]`s alike (a second or
//! so per cluster); only the HTTP helpers in [`oidc`] are async.

use std::ffi::OsStr;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, bail, Context};

pub mod aws_org;
pub mod database;
pub mod moto;
pub mod oidc;
mod python_peer;
pub mod smtp;

pub use database::{database_url, on_postgres, DATABASE_ENV};

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process may
/// take it before the caller binds it; callers that can, retry.
///
/// Chosen below the kernel's ephemeral range (`ip_local_port_range`), so
/// that no `bind(0)` and no outgoing connection of any test can be given
/// it: a peer stopped and started again on its port (a target outage, a
/// restart) finds it still free. Only ports that take a bind are returned;
/// when the range below is too small, the kernel picks.
pub fn free_port() -> anyhow::Result<u16> {
    let (low, _) = ephemeral_range();
    // Up to 12,000 ports below the ephemeral range, above 10,000.
    let floor = low.saturating_sub(12_000).max(10_000);
    if low > floor + 1_000 {
        // Never the same port twice in this process: one handed out may
        // not be bound yet, or be a stopped peer's, waiting to come back.
        static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for _ in 0..64 {
            let port = floor + u16::try_from(random() % u64::from(low - floor)).unwrap_or(0);
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The kernel's range for ports it assigns; Linux's default when unread.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            match (parts.next(), parts.next()) {
                (Some(Ok(low)), Some(Ok(high))) => Some((low, high)),
                _ => None,
            }
        })
        .unwrap_or((32_768, 60_999))
}

/// A number that differs between calls and between processes (tests in
/// parallel pick different ports); not for anything secret.
fn random() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// How many ports [`PgCluster::start`] tries before giving up; only a port
/// taken between [`free_port`] and the server's bind causes a retry.
const START_ATTEMPTS: usize = 5;

/// A private PostgreSQL cluster: superuser `postgres`, `trust`
/// authentication, listening on 127.0.0.1 only (and on a Unix socket in its
/// own directory). Stopped with `-m immediate` and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    /// Holds `data/` (the cluster), `log` (the server log) and the Unix
    /// socket; deleted when the cluster is dropped.
    dir: tempfile::TempDir,
    /// Where `initdb`, `pg_ctl` and `psql` live.
    bin: PathBuf,
    /// Fixed for the cluster's life so that [`PgCluster::start_again`]
    /// brings the same server back where clients expect it.
    port: u16,
    /// True when we are root and must run the server binaries as `postgres`.
    as_postgres: bool,
}

impl PgCluster {
    /// Creates and starts a new cluster. Takes about a second.
    pub fn start() -> anyhow::Result<PgCluster> {
        let bin = find_bin_dir()?;
        let as_postgres = running_as_root()?;
        let dir = tempfile::Builder::new()
            .prefix("elevate-pg-")
            .tempdir()
            .context("creating the cluster's temporary directory")?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("handing {} to postgres", dir.path().display()))?;
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        cluster.initdb()?;
        let mut last_error = anyhow!("no attempt made");
        for _ in 0..START_ATTEMPTS {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(error) if cluster.log_says_port_taken() => last_error = error,
                Err(error) => return Err(error),
            }
        }
        Err(last_error.context(format!(
            "PostgreSQL could not bind a free port in {START_ATTEMPTS} attempts"
        )))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the cluster's Unix socket (usable as `host`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `postgres://` URL for `user` on database `db` over 127.0.0.1.
    /// User, password and database are percent-encoded.
    pub fn url(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let credentials = match password {
            Some(password) => format!("{}:{}", percent_encode(user), percent_encode(password)),
            None => percent_encode(user),
        };
        format!(
            "postgres://{credentials}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// Runs `sql` as superuser `postgres` on database `postgres`; returns
    /// the trimmed, unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_db("postgres", sql)
    }

    /// Runs `sql` (one or more statements, stopping at the first error) as
    /// superuser `postgres` on database `db`; returns the trimmed,
    /// unaligned, tuples-only output. The error carries psql's stderr.
    pub fn psql_db(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let port = self.port.to_string();
        // psql is only a client, so it can run as whoever we are.
        let mut child = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", db])
            .args(["-f", "-"])
            .env_remove("PGPASSWORD")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting psql")?;
        {
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| anyhow!("psql has no stdin"))?;
            stdin.write_all(sql.as_bytes())?;
        }
        let output = child.wait_with_output().context("waiting for psql")?;
        if !output.status.success() {
            bail!(
                "psql on database {db} failed ({}): {}\nSQL: {sql}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Stops the server (`-m fast`: sessions are ended, data kept), for
    /// outage tests. [`PgCluster::start_again`] brings it back.
    pub fn stop(&self) -> anyhow::Result<()> {
        let output = self.pg_ctl(["stop", "-w", "-m", "fast"])?;
        check("pg_ctl stop", &output)
    }

    /// Starts the server again on the same port with the same data.
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }

    /// The server log so far, for diagnosing a failed test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let data = self.data_dir();
        let output = self
            .server_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "--no-instructions",
            ])
            .args(["-E", "UTF8", "--locale", "C"])
            .output()
            .context("running initdb")?;
        check("initdb", &output)
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let output = self.pg_ctl([
            OsStr::new("start"),
            OsStr::new("-w"),
            OsStr::new("-o"),
            OsStr::new(&options),
            OsStr::new("-l"),
            log.as_os_str(),
        ])?;
        check("pg_ctl start", &output).with_context(|| format!("server log:\n{}", self.log()))
    }

    fn pg_ctl<I, S>(&self, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .output()
            .context("running pg_ctl")
    }

    /// A command for one of the server binaries, run as `postgres` when we
    /// are root, from the cluster directory (so `postgres` can read its
    /// working directory).
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .stdin(Stdio::null());
        command
    }

    fn log_says_port_taken(&self) -> bool {
        self.log().contains("Address already in use")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: a test is over, nobody needs a clean shutdown, and a
        // dropped cluster must never outlive the test run.
        let _ = self.pg_ctl(["stop", "-w", "-m", "immediate"]);
    }
}

fn check(what: &str, output: &Output) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// `ELEVATE_PG_BINDIR`, or the highest `/usr/lib/postgresql/<major>/bin`
/// that has `initdb`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ELEVATE_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(root).with_context(|| {
        format!(
            "reading {}: is PostgreSQL installed (apt-get install -y postgresql)?",
            root.display()
        )
    })?;
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in entries {
        let entry = entry?;
        let Some(major) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        if bin.join("initdb").exists() && best.as_ref().is_none_or(|(seen, _)| major > *seen) {
            best = Some((major, bin));
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "no /usr/lib/postgresql/<major>/bin/initdb found: install PostgreSQL \
             (apt-get install -y postgresql) or set ELEVATE_PG_BINDIR"
        )
    })
}

fn running_as_root() -> anyhow::Result<bool> {
    Ok(id(&["-u"])? == 0)
}

fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let uid =
        id(&["-u", "postgres"]).context("the `postgres` user must exist when running as root")?;
    let gid = id(&["-g", "postgres"])?;
    Ok((uid, gid))
}

/// Runs `id ARGS` and parses the number it prints (std has no safe geteuid,
/// and unsafe code is forbidden in this workspace).
fn id(args: &[&str]) -> anyhow::Result<u32> {
    let output = Command::new("id")
        .args(args)
        .output()
        .context("running id")?;
    check(&format!("id {}", args.join(" ")), &output)?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("id printed {text:?}"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(percent_encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(
            percent_encode("p@ss:w/rd \"é\""),
            "p%40ss%3Aw%2Frd%20%22%C3%A9%22"
        );
    }

    #[test]
    fn a_cluster_answers_stops_and_comes_back() {
        let cluster = PgCluster::start().unwrap();
        assert_eq!(cluster.psql("SELECT 1 + 1").unwrap(), "2");
        cluster
            .psql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
            .unwrap();
        let error = cluster.psql("SELECT * FROM missing").unwrap_err();
        assert!(format!("{error:#}").contains("does not exist"), "{error:#}");

        cluster.stop().unwrap();
        assert!(cluster.psql("SELECT 1").is_err());
        cluster.start_again().unwrap();
        assert_eq!(cluster.psql("SELECT n FROM kept").unwrap(), "7");

        let dir = cluster.socket_dir().to_path_buf();
        drop(cluster);
        assert!(!dir.exists());
    }
}
