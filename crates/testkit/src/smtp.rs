//! A real SMTP server for tests, and what it received.
//!
//! - [`SmtpServer`]: `aiosmtpd` (PyPI) on 127.0.0.1 and a free port, storing
//!   every message it accepts in a Maildir the test names. No TLS, no AUTH:
//!   elevate talks to it with `Security::None`. Killed on drop;
//!   [`SmtpServer::stop`] and [`SmtpServer::restart`] play an outage.
//! - [`ReceivedMail`]: one stored message, parsed with `mail-parser`, with
//!   its subject and text/plain and text/html parts decoded.
//!
//! Needs `python3` (or the interpreter named by `ELEVATE_PYTHON`) with
//! `aiosmtpd` installed (`scripts/test.sh` installs it; or `pip install
//! aiosmtpd`). Starting takes a few hundred milliseconds.
//!
//! Starting and stopping are blocking `std::process` work, like the other
//! peers; only [`SmtpServer::wait_for_messages`] is async, because the code
//! under test usually sends from a task on the test's own runtime, which a
//! blocking wait would starve.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::python_peer::{exited, on_a_free_port, python_module, read_from, wait_ready, NotReady};

/// How long aiosmtpd may take to greet: well under a second on an idle
/// machine, but Python's imports crawl on a loaded two-core machine running
/// the whole suite. A wait, not a speed check.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the error says when Python cannot find the module.
const NOT_INSTALLED: &str = "aiosmtpd not installed: pip install aiosmtpd";

/// A running `aiosmtpd` that accepts any sender and recipient and stores
/// each message in its Maildir (`new/`). Killed on drop; the Maildir is the
/// caller's and stays.
#[derive(Debug)]
pub struct SmtpServer {
    /// The Maildir (`cur/`, `new/`, `tmp/`); also holds `aiosmtpd.log`.
    dir: PathBuf,
    /// Fixed for the server's life so that [`SmtpServer::restart`] brings
    /// it back where the mailer under test expects it.
    port: u16,
    /// The running process; `None` while stopped.
    child: Option<Child>,
}

impl SmtpServer {
    /// Creates the Maildir under `dir` (if needed) and starts aiosmtpd on a
    /// free port. Fails with [`NOT_INSTALLED`]'s advice when aiosmtpd is
    /// missing.
    pub fn start(dir: &Path) -> anyhow::Result<SmtpServer> {
        for sub in ["cur", "new", "tmp"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let mut server = SmtpServer {
            dir: dir.to_path_buf(),
            port: 0,
            child: None,
        };
        // spawn's error carries what aiosmtpd printed.
        on_a_free_port("aiosmtpd", |port| {
            server.port = port;
            server.spawn()
        })?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Maildir the messages land in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server (connections drop, nothing listens on the port);
    /// messages already stored stay. A no-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL is safe: the Maildir handler writes each message to
            // tmp/ and renames it into new/ before it answers 250.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same Maildir (a
    /// no-op if it runs).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                return Ok(());
            }
            self.child = None;
        }
        self.spawn()
    }

    /// Every message stored so far (`new/` and `cur/`), oldest first.
    pub fn messages(&self) -> anyhow::Result<Vec<ReceivedMail>> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let path = self.dir.join(sub);
            let entries =
                std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))?;
            for entry in entries {
                let entry = entry?;
                let modified = entry
                    .metadata()
                    .and_then(|metadata| metadata.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                files.push((modified, entry.file_name(), entry.path()));
            }
        }
        // Maildir names start with the delivery time in seconds; the
        // modification time orders messages within one second.
        files.sort();
        files
            .into_iter()
            .map(|(_, _, path)| {
                let raw =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                ReceivedMail::parse(&raw).with_context(|| format!("parsing {}", path.display()))
            })
            .collect()
    }

    /// Polls until at least `count` messages are stored, then returns them
    /// all; fails after `within` with what did arrive and the server log.
    pub async fn wait_for_messages(
        &self,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<ReceivedMail>> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages()?;
            if messages.len() >= count {
                return Ok(messages);
            }
            if Instant::now() > deadline {
                let subjects: Vec<&str> = messages
                    .iter()
                    .map(|message| message.subject.as_str())
                    .collect();
                bail!(
                    "expected {count} messages within {within:?}, got {}: {subjects:?}\naiosmtpd log:\n{}",
                    messages.len(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything aiosmtpd printed so far (all runs), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("aiosmtpd.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.spawn_with(&[])
    }

    /// Starts aiosmtpd with `python_options` before `-m` (for tests of this
    /// module) and waits for its greeting.
    fn spawn_with(&mut self, python_options: &[&str]) -> anyhow::Result<()> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_start = log.metadata()?.len();
        let listen = format!("127.0.0.1:{}", self.port);
        let child = python_module(python_options, "aiosmtpd")
            .args(["-n", "-l", &listen])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting Python 3 (is it installed?)")?;
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        // A greeting, not just an accepted connection: another process may
        // have taken the port, and then ours exits on the next turn.
        let waited = wait_ready(
            &mut self.child,
            READY_TIMEOUT,
            Duration::from_millis(20),
            || greets(address),
            || read_from(&log_path, log_start),
        )?;
        match waited {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(status, output)) => Err(exited(
                "aiosmtpd",
                status,
                &output,
                &["No module named aiosmtpd"],
                NOT_INSTALLED,
            )),
            Err(NotReady::TimedOut(output)) => {
                bail!("aiosmtpd did not greet on {address} within {READY_TIMEOUT:?}:\n{output}")
            }
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when an SMTP server answers on `address` with a 220 greeting.
fn greets(address: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    let mut reader = BufReader::new(&stream);
    let mut greeting = String::new();
    if reader.read_line(&mut greeting).is_err() || !greeting.starts_with("220") {
        return false;
    }
    let _ = (&stream).write_all(b"QUIT\r\n");
    true
}

/// One message as the server stored it, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMail {
    /// The `To` header's addresses, lowercased (display names dropped).
    pub to: Vec<String>,
    /// The `From` header's (first) address, lowercased; empty if none.
    pub from: String,
    /// The subject, RFC 2047 words decoded; empty if none.
    pub subject: String,
    /// The first text/plain part (or a non-multipart body without a
    /// content type), transfer encoding and charset decoded, line ends
    /// `\n` (MIME text travels with CRLF); empty if none.
    pub text: String,
    /// The first text/html part, decoded likewise; empty if none.
    pub html: String,
    /// The top-level headers in order: name as written, raw value unfolded
    /// and trimmed (encoded words left encoded). aiosmtpd adds `X-Peer`,
    /// `X-MailFrom` and `X-RcptTo` (the envelope).
    pub headers: Vec<(String, String)>,
}

impl ReceivedMail {
    /// Parses one stored message.
    pub fn parse(raw: &[u8]) -> anyhow::Result<ReceivedMail> {
        let message = MessageParser::default()
            .parse(raw)
            .ok_or_else(|| anyhow!("not an RFC 5322 message"))?;
        let to = message
            .to()
            .map(|to| {
                to.iter()
                    .filter_map(|addr| addr.address())
                    .map(str::to_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        let from = message
            .from()
            .and_then(|from| from.first())
            .and_then(|addr| addr.address())
            .map(str::to_lowercase)
            .unwrap_or_default();
        let mut text = None;
        let mut html = None;
        for part in &message.parts {
            match &part.body {
                PartType::Text(body)
                    if text.is_none()
                        && (part.content_type().is_none()
                            || part.is_content_type("text", "plain")) =>
                {
                    text = Some(body.replace("\r\n", "\n"));
                }
                PartType::Html(body) if html.is_none() => html = Some(body.replace("\r\n", "\n")),
                _ => {}
            }
        }
        let headers = message
            .headers_raw()
            .map(|(name, value)| (name.to_owned(), unfold(value)))
            .collect();
        Ok(ReceivedMail {
            to,
            from,
            subject: message.subject().unwrap_or_default().to_owned(),
            text: text.unwrap_or_default(),
            html: html.unwrap_or_default(),
            headers,
        })
    }

    /// The first header called `name` (case-insensitively), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A raw header value on one line: folding line breaks removed, trimmed.
fn unfold(value: &str) -> String {
    value
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Delivers `raw` (a complete message, CRLF line ends, no line starting
/// with a dot) to 127.0.0.1:`port` by plain SMTP from `sender` to
/// `recipients`: for testing the server and the parser without elevate's
/// mailer.
pub fn send_raw(port: u16, sender: &str, recipients: &[&str], raw: &str) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    expect_reply(&mut reader, "220")?;
    let mut commands = vec!["EHLO localhost".to_owned(), format!("MAIL FROM:<{sender}>")];
    commands.extend(recipients.iter().map(|to| format!("RCPT TO:<{to}>")));
    for command in commands {
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        expect_reply(&mut reader, "250").with_context(|| command.clone())?;
    }
    stream.write_all(b"DATA\r\n")?;
    expect_reply(&mut reader, "354")?;
    stream.write_all(raw.as_bytes())?;
    if !raw.ends_with("\r\n") {
        stream.write_all(b"\r\n")?;
    }
    stream.write_all(b".\r\n")?;
    expect_reply(&mut reader, "250").context("end of DATA")?;
    stream.write_all(b"QUIT\r\n")?;
    Ok(())
}

/// Reads one (possibly multi-line) SMTP reply; fails unless its code is
/// `code`.
fn expect_reply(reader: &mut impl BufRead, code: &str) -> anyhow::Result<()> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the server closed the connection, expected {code}");
        }
        if !line.starts_with(code) {
            bail!("expected {code}, got {:?}", line.trim_end());
        }
        // "250-..." continues, "250 ..." ends the reply.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "From: Elevate <Elevate@Example.com>\r\n\
To: =?utf-8?b?5bGx55Sw?= <Yamada@Example.com>, bob@example.com\r\n\
Subject: =?utf-8?b?5om/6KqN5L6d6aC8?=\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
5pys55WqREI=\r\n\
--b\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
<p>=E6=9C=AC=E7=95=AADB</p>\r\n\
--b--\r\n";

    #[test]
    fn a_stored_message_is_parsed_and_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let server = SmtpServer::start(dir.path()).unwrap();
        send_raw(
            server.port(),
            "elevate@example.com",
            &["yamada@example.com", "bob@example.com"],
            RAW,
        )
        .unwrap();
        let messages = server.messages().unwrap();
        assert_eq!(messages.len(), 1, "{}", server.log());
        let mail = &messages[0];
        assert_eq!(mail.to, ["yamada@example.com", "bob@example.com"]);
        assert_eq!(mail.from, "elevate@example.com");
        assert_eq!(mail.subject, "承認依頼");
        assert_eq!(mail.text, "本番DB");
        assert_eq!(mail.html, "<p>本番DB</p>");
        assert_eq!(
            mail.header("x-rcptto"),
            Some("yamada@example.com, bob@example.com")
        );
    }

    #[test]
    fn the_server_stops_and_comes_back_on_the_same_port_and_maildir() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = SmtpServer::start(dir.path()).unwrap();
        let port = server.port();
        send_raw(port, "a@example.com", &["b@example.com"], RAW).unwrap();

        server.stop();
        assert!(send_raw(port, "a@example.com", &["b@example.com"], RAW).is_err());
        server.restart().unwrap();
        assert_eq!(server.port(), port);
        send_raw(port, "a@example.com", &["b@example.com"], RAW).unwrap();
        assert_eq!(server.messages().unwrap().len(), 2);

        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[tokio::test]
    async fn waiting_for_more_messages_than_arrive_fails_with_what_came() {
        let dir = tempfile::tempdir().unwrap();
        let server = SmtpServer::start(dir.path()).unwrap();
        send_raw(server.port(), "a@example.com", &["b@example.com"], RAW).unwrap();
        assert_eq!(
            server
                .wait_for_messages(1, Duration::from_secs(5))
                .await
                .unwrap()
                .len(),
            1
        );
        let error = server
            .wait_for_messages(2, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("got 1"), "{error:#}");
    }

    #[test]
    fn a_missing_aiosmtpd_is_reported_with_the_fix() {
        // A Python that cannot import aiosmtpd: `-I` ignores the user's
        // site-packages and PYTHON* variables, `-S` skips site-packages.
        let dir = tempfile::tempdir().unwrap();
        let mut server = SmtpServer {
            dir: dir.path().to_path_buf(),
            port: crate::free_port().unwrap(),
            child: None,
        };
        std::fs::create_dir_all(dir.path().join("new")).unwrap();
        let error = server.spawn_with(&["-I", "-S"]).unwrap_err();
        assert!(format!("{error:#}").contains(NOT_INSTALLED), "{error:#}");
    }
}
