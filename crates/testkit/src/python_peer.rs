//! What the Python test peers (aiosmtpd, moto) share: a free port picked
//! again when another process took it first, the interpreter to run them
//! with, and the wait until the server is ready or has died.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::free_port;

/// A free port can be taken by another process between [`free_port`] and
/// the server's bind: that many ports are tried.
const START_ATTEMPTS: usize = 5;

/// Calls `start` with free ports until one is not taken meanwhile (the
/// error of a taken port mentions "Address already in use"); any other
/// error ends the attempts. Returns the port that worked.
pub(crate) fn on_a_free_port(
    what: &str,
    mut start: impl FnMut(u16) -> anyhow::Result<()>,
) -> anyhow::Result<u16> {
    let mut last_error = anyhow!("no attempt made");
    for _ in 0..START_ATTEMPTS {
        let port = free_port()?;
        match start(port) {
            Ok(()) => return Ok(port),
            Err(error) if format!("{error:#}").contains("Address already in use") => {
                last_error = error
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.context(format!(
        "{what} could not bind a free port in {START_ATTEMPTS} attempts"
    )))
}

/// `python3 -u -m MODULE` (or `$ELEVATE_PYTHON`), with `python_options`
/// before `-m`.
pub(crate) fn python_module(python_options: &[&str], module: &str) -> Command {
    let python = std::env::var_os("ELEVATE_PYTHON").unwrap_or_else(|| "python3".into());
    let mut command = Command::new(python);
    command.args(python_options).args(["-u", "-m", module]);
    command
}

/// Why a started peer is not usable.
pub(crate) enum NotReady {
    /// It exited first, with what it printed.
    Exited(ExitStatus, String),
    /// It did not get ready in time (it has been killed).
    TimedOut(String),
}

/// Waits until `ready()` or the child exits or `timeout` passes; `output`
/// reads what the peer printed so far. On a time-out the child is killed.
pub(crate) fn wait_ready(
    child: &mut Option<Child>,
    timeout: Duration,
    poll: Duration,
    ready: impl Fn() -> bool,
    output: impl Fn() -> String,
) -> anyhow::Result<Result<(), NotReady>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(c) = child.as_mut() {
            if let Some(status) = c.try_wait()? {
                *child = None;
                return Ok(Err(NotReady::Exited(status, output())));
            }
        }
        if ready() {
            return Ok(Ok(()));
        }
        if Instant::now() > deadline {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Ok(Err(NotReady::TimedOut(output())));
        }
        std::thread::sleep(poll);
    }
}

/// The error for a peer that exited: the install advice when its module
/// is missing (`missing` are the telltale messages).
pub(crate) fn exited(
    what: &str,
    status: ExitStatus,
    output: &str,
    missing: &[&str],
    not_installed: &str,
) -> anyhow::Error {
    if missing.iter().any(|m| output.contains(m)) {
        anyhow!("{not_installed}\n{output}")
    } else {
        anyhow!("{what} exited ({status}) before it was ready:\n{output}")
    }
}

/// A log file's text from `offset` on (a restarted peer appends).
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}
