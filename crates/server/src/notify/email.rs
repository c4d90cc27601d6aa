//! Sending e-mail over SMTP.
//!
//! [`Mailer`] holds a pool of connections to one relay and sends [`Email`]s
//! as `multipart/alternative` (text and HTML) messages. It decides nothing
//! about who is told what or when; it only delivers, and says whether a
//! failure is worth retrying ([`SendError::permanent`]).
//!
//! Security is chosen explicitly ([`Security`]): implicit TLS, STARTTLS that
//! must be offered (a relay that does not offer it fails rather than
//! receiving credentials and mail in clear text), or none at all, for local
//! relays and tests. TLS is rustls with the ring provider and Mozilla's
//! roots (`webpki-roots`), as elsewhere in elevate.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How the connection to the relay is protected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Clear text. Only for relays on the same host or a trusted network,
    /// and for tests; credentials, if any, cross the wire unprotected.
    None,
    /// Plain connection upgraded with STARTTLS, usually port 587. The relay
    /// must offer STARTTLS; otherwise sending fails before anything is sent.
    StartTls,
    /// TLS from the first byte ("SMTPS"), usually port 465.
    Tls,
}

/// Where and how to send.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Both or neither of `username` and `password`.
    pub username: Option<String>,
    pub password: Option<String>,
    /// The `From` of every message: `elevate <elevate@example.com>` or a bare
    /// address. Its domain also names the Message-IDs.
    pub from: String,
    /// Bounds each SMTP command (connecting included), so a relay that
    /// hangs cannot hold a sender forever.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One message to one recipient.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Email {
    /// The recipient's address.
    pub to: String,
    /// The recipient's display name, if known.
    pub to_name: Option<String>,
    pub subject: String,
    /// The text/plain alternative.
    pub text: String,
    /// The text/html alternative.
    pub html: String,
    /// Messages with the same thread (a request id) refer to one root
    /// Message-ID, so mail programs show them as one conversation.
    #[serde(default)]
    pub thread: Option<String>,
}

/// Why a message was not sent.
#[derive(Debug)]
pub struct SendError {
    /// For logs and operators. Never contains the relay password.
    pub message: String,
    /// True when retrying cannot help: the relay answered 5xx, or the
    /// message itself is invalid (say, a malformed recipient address).
    /// Connection failures, timeouts, TLS failures and 4xx replies are not
    /// permanent.
    pub permanent: bool,
}

impl fmt::Display for SendError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for SendError {}

/// Sends [`Email`]s through one relay, reusing connections between sends
/// (a broken pooled connection is noticed and replaced). Clones share the
/// pool.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port`, to say in errors which relay failed.
    relay: String,
    /// The password and the forms it takes on the wire (AUTH PLAIN and
    /// LOGIN send it base64-encoded), blanked out of every error message:
    /// a relay may echo what it was sent, and errors end up in logs and in
    /// the admin UI.
    secrets: Vec<String>,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Mailer")
            .field("relay", &self.relay)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Checks the settings and builds the (still unconnected) transport.
    /// Must be called inside a Tokio runtime: the connection pool keeps a
    /// task there that closes idle connections.
    pub fn new(settings: &SmtpSettings) -> Result<Mailer, String> {
        let from = parse_from(&settings.from)?;
        let host = settings.host.trim();
        if host.is_empty() {
            return Err("SMTP host is empty".to_owned());
        }
        if settings.port == 0 {
            return Err("SMTP port 0 is not a port".to_owned());
        }
        let credentials = match (&settings.username, &settings.password) {
            (Some(username), Some(password)) => {
                Some(Credentials::new(username.clone(), password.clone()))
            }
            (None, None) => None,
            (Some(_), None) => return Err("SMTP username given without a password".to_owned()),
            (None, Some(_)) => return Err("SMTP password given without a username".to_owned()),
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the mailer must be created inside a Tokio runtime".to_owned());
        }
        let builder = match settings.security {
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            Security::StartTls | Security::Tls => {
                let parameters = TlsParameters::new(host.to_owned())
                    .map_err(|error| format!("SMTP TLS settings for {host}: {error}"))?;
                let tls = if settings.security == Security::Tls {
                    Tls::Wrapper(parameters)
                } else {
                    Tls::Required(parameters)
                };
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).tls(tls)
            }
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            relay: format!("{host}:{}", settings.port),
            secrets: secrets(settings.username.as_deref(), settings.password.as_deref()),
        })
    }

    /// Sends one message. `Ok` means the relay accepted it (250 after DATA).
    /// Only a refusal of the mailbox itself is permanent; any other
    /// failure, a 5xx about the relay's own setup included (535 bad
    /// credentials, 530 TLS required), is retried: a relay mended within
    /// `give_up_after` still delivers every message queued meanwhile.
    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        let message = self.message(email)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|error| {
                let permanent = refused_mailbox(&error);
                self.error(format!("SMTP relay {}: {error}", self.relay), permanent)
            })
    }

    /// The message as it goes on the wire: `multipart/alternative` with
    /// UTF-8 parts (lettre picks quoted-printable or base64, so the body is
    /// 7-bit and needs no 8BITMIME), RFC 2047 encoded subject and name,
    /// a Message-ID in the sender's domain, and the Date.
    fn message(&self, email: &Email) -> Result<Message, SendError> {
        let address = Address::from_str(email.to.trim()).map_err(|error| {
            self.error(
                format!("invalid recipient address {:?}: {error}", email.to),
                true,
            )
        })?;
        let to = Mailbox::new(email.to_name.as_deref().map(one_line), address);
        let body = MultiPart::alternative_plain_html(email.text.clone(), email.html.clone());
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(one_line(&email.subject))
            .message_id(Some(message_id(self.from.email.domain())))
            .date_now();
        if let Some(thread) = email
            .thread
            .as_deref()
            .and_then(|t| thread_root(t, self.from.email.domain()))
        {
            builder = builder.in_reply_to(thread.clone()).references(thread);
        }
        builder
            .multipart(body)
            .map_err(|error| self.error(format!("building the message: {error}"), true))
    }

    fn error(&self, message: String, permanent: bool) -> SendError {
        SendError {
            message: redact(message, &self.secrets),
            permanent,
        }
    }
}

/// `elevate <elevate@example.com>` or `elevate@example.com`, nothing more.
fn parse_from(from: &str) -> Result<Mailbox, String> {
    let from = from.trim();
    let refuse = || format!("SMTP from {from:?} is not an address or `Name <address>`");
    let mailbox = Mailbox::from_str(from).map_err(|_| refuse())?;
    // lettre's parser stops at the end of the first mailbox and ignores the
    // rest, so "a@example.com, b@example.com" would quietly lose one; only
    // a value that is exactly one mailbox is accepted.
    let address = mailbox.email.to_string();
    let exact = from == address
        || from
            .strip_suffix(&format!("<{address}>"))
            .is_some_and(|name| {
                let name = name.trim();
                !name.contains(['<', '>', ',', '@']) || name.starts_with('"')
            });
    if exact {
        Ok(mailbox)
    } else {
        Err(refuse())
    }
}

/// Header text on one line: a line break in a subject or a name is never
/// meant, and must not start a header of its own.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_control())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `<random@domain>`: 128 random bits make it unique without a hostname.
/// The Message-ID every message of one thread refers to: made of the
/// thread's name when that is safe in a header, otherwise none.
fn thread_root(thread: &str, domain: &str) -> Option<String> {
    let safe = !thread.is_empty()
        && thread.len() <= 64
        && thread
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    safe.then(|| format!("<{thread}@{domain}>"))
}

fn message_id(domain: &str) -> String {
    format!("<{:032x}@{domain}>", rand::random::<u128>())
}

/// The password as it may appear anywhere: as itself, and base64-encoded
/// alone (AUTH LOGIN) and in AUTH PLAIN's `\0user\0password`.
fn secrets(username: Option<&str>, password: Option<&str>) -> Vec<String> {
    let Some(password) = password.filter(|password| !password.is_empty()) else {
        return Vec::new();
    };
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut secrets = vec![password.to_owned(), base64.encode(password)];
    if let Some(username) = username {
        secrets.push(base64.encode(format!("\0{username}\0{password}")));
    }
    // Longest first, so that a secret containing another is blanked whole.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets
}

fn redact(mut message: String, secrets: &[String]) -> String {
    for secret in secrets {
        if message.contains(secret.as_str()) {
            message = message.replace(secret.as_str(), "[redacted]");
        }
    }
    message
}

/// Whether the relay refused the recipient's mailbox for good: 550
/// (mailbox unavailable), 551 (not local) or 553 (name not allowed).
fn refused_mailbox(error: &lettre::transport::smtp::Error) -> bool {
    error.is_permanent()
        && error
            .status()
            .is_some_and(|code| matches!(code.to_string().as_str(), "550" | "551" | "553"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use elevate_testkit::smtp::{ReceivedMail, SmtpServer};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    const PASSWORD: &str = "s3cret-Pa55";

    fn settings(port: u16) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".to_owned(),
            port,
            security: Security::None,
            username: None,
            password: None,
            from: "elevate <elevate@example.com>".to_owned(),
            timeout: Duration::from_secs(10),
        }
    }

    fn approval_request() -> Email {
        Email {
            to: "Yamada@Example.com".to_owned(),
            to_name: Some("山田 太郎".to_owned()),
            subject: "承認依頼: 本番DBへのアクセス".to_owned(),
            text: "障害対応のため本番データベースを確認します。\n\
                   承認: https://elevate.example.com/requests/42\n"
                .to_owned(),
            html: "<p>障害対応のため本番データベースを確認します。</p>\n\
                   <p><a href=\"https://elevate.example.com/requests/42?token=a&amp;b=c\">承認する</a></p>\n"
                .to_owned(),
            thread: Some("r-42".to_owned()),
        }
    }

    #[test]
    fn security_is_written_in_lowercase() {
        for (security, text) in [
            (Security::None, "\"none\""),
            (Security::StartTls, "\"starttls\""),
            (Security::Tls, "\"tls\""),
        ] {
            assert_eq!(serde_json::to_string(&security).unwrap(), text);
            assert_eq!(serde_json::from_str::<Security>(text).unwrap(), security);
        }
        assert!(serde_json::from_str::<Security>("\"ssl\"").is_err());
    }

    #[test]
    fn from_is_one_address_with_or_without_a_name() {
        for good in [
            "elevate@example.com",
            "elevate <elevate@example.com>",
            "  Elevate Broker <elevate@example.com> ",
            "\"Elevate, the broker\" <elevate@example.com>",
            "<elevate@example.com>",
        ] {
            assert!(parse_from(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "elevate",
            "elevate@",
            "@example.com",
            "elevate <elevate@example.com",
            "a@example.com, b@example.com",
            "a@example.com b@example.com",
            "x <a@example.com> trailing",
            "elevate@example.com\r\nBcc: victim@example.com",
        ] {
            assert!(parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn settings_are_checked_when_the_mailer_is_built() {
        let mut half = settings(25);
        half.username = Some("elevate".to_owned());
        assert!(Mailer::new(&half)
            .unwrap_err()
            .contains("without a password"));
        let mut half = settings(25);
        half.password = Some(PASSWORD.to_owned());
        let error = Mailer::new(&half).unwrap_err();
        assert!(error.contains("without a username"), "{error}");
        assert!(!error.contains(PASSWORD));
        let mut no_host = settings(25);
        no_host.host = " ".to_owned();
        assert!(Mailer::new(&no_host).is_err());
        let mut bad_from = settings(25);
        bad_from.from = "not an address".to_owned();
        assert!(Mailer::new(&bad_from)
            .unwrap_err()
            .contains("not an address"));
        for security in [Security::None, Security::StartTls, Security::Tls] {
            let mut good = settings(25);
            good.security = security;
            assert!(Mailer::new(&good).is_ok());
        }
    }

    #[test]
    fn building_a_mailer_outside_a_runtime_is_an_error_not_a_panic() {
        let error = Mailer::new(&settings(25)).unwrap_err();
        assert!(error.contains("Tokio runtime"), "{error}");
    }

    #[tokio::test]
    async fn an_invalid_recipient_is_a_permanent_failure() {
        // Nothing listens on the port: the address is refused before any
        // connection is tried.
        let mailer = Mailer::new(&settings(elevate_testkit::free_port().unwrap())).unwrap();
        for to in [
            "",
            "yamada",
            "yamada@",
            "yamada@example.com, bob@example.com",
        ] {
            let email = Email {
                to: to.to_owned(),
                ..approval_request()
            };
            let error = mailer.send(&email).await.unwrap_err();
            assert!(error.permanent, "{to:?}: {error}");
            assert!(error.message.contains("recipient"), "{error}");
        }
    }

    #[test]
    fn the_password_is_blanked_in_every_form_it_travels_in() {
        let secrets = secrets(Some("elevate"), Some(PASSWORD));
        let base64 = base64::engine::general_purpose::STANDARD;
        let plain = base64.encode(format!("\0elevate\0{PASSWORD}"));
        let login = base64.encode(PASSWORD);
        let message = format!("535 no: {PASSWORD} / AUTH PLAIN {plain} / {login}");
        let redacted = redact(message, &secrets);
        assert_eq!(
            redacted,
            "535 no: [redacted] / AUTH PLAIN [redacted] / [redacted]"
        );
        assert!(secrets.iter().all(|secret| !redacted.contains(secret)));
        assert!(super::secrets(Some("elevate"), Some("")).is_empty());
        assert!(super::secrets(None, None).is_empty());
    }

    #[test]
    fn a_line_break_cannot_start_a_header() {
        assert_eq!(one_line("a\r\nBcc: x@example.com"), "a Bcc: x@example.com");
        assert_eq!(one_line("承認依頼\t本番"), "承認依頼 本番");
    }

    /// A scripted relay on loopback: greets, offers AUTH, and answers each
    /// command with the next reply in `replies` (`{line}` is replaced by the
    /// command it answers, as a relay that echoes its input would). Returns
    /// its port.
    async fn scripted_relay(replies: &'static [&'static str]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
            let ehlo = lines.next_line().await.unwrap().unwrap();
            assert!(ehlo.starts_with("EHLO"), "{ehlo}");
            write
                .write_all(b"250-scripted\r\n250 AUTH PLAIN LOGIN\r\n")
                .await
                .unwrap();
            for reply in replies {
                let Ok(Some(line)) = lines.next_line().await else {
                    return;
                };
                let reply = reply.replace("{line}", &line);
                write
                    .write_all(format!("{reply}\r\n").as_bytes())
                    .await
                    .unwrap();
            }
            let _ = lines.next_line().await;
        });
        port
    }

    #[tokio::test]
    async fn a_relay_echoing_the_credentials_in_a_5xx_reply_is_retried_and_redacted() {
        let port = scripted_relay(&["535 5.7.8 authentication failed for {line}"]).await;
        let mut settings = settings(port);
        settings.username = Some("elevate".to_owned());
        settings.password = Some(PASSWORD.to_owned());
        let mailer = Mailer::new(&settings).unwrap();
        let error = mailer.send(&approval_request()).await.unwrap_err();
        // Bad credentials are the relay's setup, mended by an operator:
        // worth retrying, unlike a refused mailbox.
        assert!(!error.permanent, "{error}");
        assert!(error.message.contains("535"), "{error}");
        assert!(error.message.contains("[redacted]"), "{error}");
        for secret in secrets(Some("elevate"), Some(PASSWORD)) {
            assert!(!error.message.contains(&secret), "{error}");
            assert!(!format!("{error:?}").contains(&secret), "{error:?}");
        }
    }

    #[tokio::test]
    async fn a_4xx_reply_is_transient_and_a_refused_mailbox_permanent() {
        let port = scripted_relay(&["250 ok", "451 4.3.0 try again later"]).await;
        let error = Mailer::new(&settings(port))
            .unwrap()
            .send(&approval_request())
            .await
            .unwrap_err();
        assert!(!error.permanent, "{error}");
        assert!(error.message.contains("451"), "{error}");

        let port = scripted_relay(&["250 ok", "550 5.1.1 no such user"]).await;
        let error = Mailer::new(&settings(port))
            .unwrap()
            .send(&approval_request())
            .await
            .unwrap_err();
        assert!(error.permanent, "{error}");
        assert!(error.message.contains("550"), "{error}");

        // A 5xx about the relay itself is retried.
        let port = scripted_relay(&["250 ok", "554 5.7.1 relaying denied"]).await;
        let error = Mailer::new(&settings(port))
            .unwrap()
            .send(&approval_request())
            .await
            .unwrap_err();
        assert!(!error.permanent, "{error}");
    }

    #[tokio::test]
    async fn japanese_subject_body_and_name_arrive_intact() {
        let dir = tempfile::tempdir().unwrap();
        let server = SmtpServer::start(dir.path()).unwrap();
        let mailer = Mailer::new(&settings(server.port())).unwrap();
        let email = approval_request();
        mailer.send(&email).await.unwrap();

        let messages = server
            .wait_for_messages(1, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(messages.len(), 1);
        let mail = &messages[0];
        assert_eq!(mail.to, ["yamada@example.com"]);
        assert_eq!(mail.from, "elevate@example.com");
        assert_eq!(mail.subject, email.subject);
        assert_eq!(mail.text, email.text);
        assert_eq!(mail.html, email.html);
        assert!(mail
            .html
            .contains("href=\"https://elevate.example.com/requests/42?token=a&amp;b=c\""));
        assert_eq!(mail.header("X-RcptTo"), Some("Yamada@Example.com"));
        let message_id = mail.header("Message-ID").unwrap();
        assert!(
            message_id.starts_with('<') && message_id.ends_with("@example.com>"),
            "{message_id}"
        );
        assert!(mail.header("Date").is_some());
        let content_type = mail.header("Content-Type").unwrap();
        assert!(
            content_type.starts_with("multipart/alternative"),
            "{content_type}"
        );
        // The display name travels RFC 2047-encoded; decoded as a subject
        // it is the name again.
        let to = mail.header("To").unwrap();
        assert!(to.is_ascii(), "{to}");
        let (name, address) = to.split_once('<').unwrap();
        assert_eq!(address, "Yamada@Example.com>");
        let name_as_subject = format!("Subject: {}\r\n\r\n", name.trim());
        let decoded = ReceivedMail::parse(name_as_subject.as_bytes()).unwrap();
        assert_eq!(decoded.subject, "山田 太郎");
    }

    #[tokio::test]
    async fn a_stopped_relay_fails_transiently_and_a_restarted_one_delivers() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = SmtpServer::start(dir.path()).unwrap();
        let mailer = Mailer::new(&settings(server.port())).unwrap();
        let email = approval_request();
        // The pool now holds a connection that the outage breaks.
        mailer.send(&email).await.unwrap();

        server.stop();
        let started = Instant::now();
        let error = mailer.send(&email).await.unwrap_err();
        assert!(!error.permanent, "{error}");
        assert!(
            error
                .message
                .contains(&format!("127.0.0.1:{}", server.port())),
            "{error}"
        );
        // Refused, not timed out: an outage is noticed at once.
        assert!(started.elapsed() < Duration::from_secs(5));

        server.restart().unwrap();
        mailer.send(&email).await.unwrap();
        let messages = server
            .wait_for_messages(2, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].subject, email.subject);
    }

    #[tokio::test]
    async fn starttls_that_is_not_offered_fails_before_anything_is_sent() {
        // aiosmtpd offers no STARTTLS.
        let dir = tempfile::tempdir().unwrap();
        let server = SmtpServer::start(dir.path()).unwrap();
        let mut settings = settings(server.port());
        settings.security = Security::StartTls;
        settings.username = Some("elevate".to_owned());
        settings.password = Some(PASSWORD.to_owned());
        let error = Mailer::new(&settings)
            .unwrap()
            .send(&approval_request())
            .await
            .unwrap_err();
        assert!(error.message.contains("STARTTLS"), "{error}");
        assert!(!error.message.contains(PASSWORD), "{error}");

        settings.security = Security::Tls;
        let error = Mailer::new(&settings)
            .unwrap()
            .send(&approval_request())
            .await
            .unwrap_err();
        assert!(!error.permanent, "{error}");
        assert!(server.messages().unwrap().is_empty());
    }
}
