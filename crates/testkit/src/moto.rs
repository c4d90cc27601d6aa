//! A real AWS API emulator for tests: `moto_server` (PyPI `moto[server]`)
//! on 127.0.0.1 and a free port. One port serves every service (STS, IAM,
//! ...), routed by the SigV4 scope; clients use any dummy keys and region
//! `us-east-1` with an endpoint override. Killed on drop.
//!
//! Needs `python3` (or the interpreter named by `ELEVATE_PYTHON`) with
//! `moto[server]` installed (`scripts/test.sh` installs it). Ready in about
//! a second on an idle machine.
//!
//! What moto does not do like AWS (see TEST-PEERS.md): AssumeRole does not
//! check the role, ignores `SourceIdentity` and tags, does not validate
//! `DurationSeconds`, and credentials keep working after they expire.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::python_peer::{exited, on_a_free_port, python_module, wait_ready, NotReady};

/// How long moto may take to answer: its imports are slow on a loaded
/// two-core machine running the whole suite. A wait, not a speed check.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// What the error says when Python cannot find the module.
pub const NOT_INSTALLED: &str = "moto not installed: pip install 'moto[server]'";

/// A running `moto_server`. Killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    child: Option<Child>,
    /// Holds moto's log, removed with the server.
    dir: tempfile::TempDir,
}

impl MotoServer {
    /// Starts moto on a free port and waits until it answers HTTP. Fails
    /// with [`NOT_INSTALLED`]'s advice when moto is missing.
    pub fn start() -> anyhow::Result<MotoServer> {
        let mut server = MotoServer {
            port: 0,
            child: None,
            dir: tempfile::tempdir()?,
        };
        on_a_free_port("moto", |port| {
            server.port = port;
            server.spawn()
        })?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the endpoint URL for every service.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("moto.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log_path = self.log_path();
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = python_module(&[], "moto.server")
            .args(["-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting Python 3 (is it installed?)")?;
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let waited = wait_ready(
            &mut self.child,
            READY_TIMEOUT,
            Duration::from_millis(50),
            || answers(address),
            || std::fs::read_to_string(&log_path).unwrap_or_default(),
        )?;
        match waited {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(status, output)) => Err(exited(
                "moto",
                status,
                &output,
                &[
                    "No module named moto",
                    "No module named 'moto",
                    "No module named 'flask",
                    "No module named 'werkzeug",
                ],
                NOT_INSTALLED,
            )),
            Err(NotReady::TimedOut(output)) => {
                bail!("moto did not answer on {address} within {READY_TIMEOUT:?}:\n{output}")
            }
        }
    }

    /// Kills the server. A no-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether moto answers an HTTP request on `address` (its own API, which
/// needs no signature).
fn answers(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
