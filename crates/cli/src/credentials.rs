//! The sign-in `elevate login` keeps between commands, and which token a
//! command sends.
//!
//! The file is `credentials.json` in the config directory
//! (`--config-dir`/`ELEVATE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/elevate`,
//! else `~/.config/elevate`). It holds a bearer token, so it is only ever
//! written with mode 0600 (in a directory created 0700), replaced atomically
//! so a crash never leaves half a token, and refused when other users could
//! read it: someone else may have had the token already.
//!
//! [`choose`] decides the credential: a token given with `--token` or
//! `ELEVATE_TOKEN` wins; else the stored sign-in, for its own server only,
//! and only while it has not expired.

use std::ffi::OsString;
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::args::DEFAULT_URL;
use crate::client::same_server;
use crate::error::CliError;
use crate::oidc::random_secret;

const FILE_NAME: &str = "credentials.json";
/// The largest credentials file read; a token is a few kilobytes.
const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The config directory, from what the user set (`explicit`), else the XDG
/// base directory, else the home directory; `None` when there is no home.
/// The environment is passed in, so tests do not touch the process's.
pub(crate) fn config_dir(
    explicit: Option<&Path>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    if let Some(explicit) = explicit.filter(|dir| !dir.as_os_str().is_empty()) {
        return Some(explicit.to_path_buf());
    }
    // The XDG spec says relative paths in these variables are invalid and
    // must be ignored.
    let xdg = xdg_config_home
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute());
    if let Some(xdg) = xdg {
        return Some(xdg.join("elevate"));
    }
    let home = home
        .map(PathBuf::from)
        .filter(|dir| !dir.as_os_str().is_empty())?;
    Some(home.join(".config").join("elevate"))
}

/// [`config_dir`] with the process's environment.
pub(crate) fn config_dir_from_env(explicit: Option<&Path>) -> Option<PathBuf> {
    config_dir(
        explicit,
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// A sign-in as stored: the server it is for, the provider that issued the
/// token, the token, and when it stops being accepted.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Credentials {
    pub(crate) url: String,
    pub(crate) issuer: String,
    pub(crate) id_token: String,
    pub(crate) expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Credentials {
    // Debug output ends up in logs and panics; the token never does.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("url", &self.url)
            .field("issuer", &self.issuer)
            .field("id_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The credentials file in one config directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CredentialsFile {
    dir: PathBuf,
}

impl CredentialsFile {
    pub(crate) fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    fn error(&self, reason: impl Into<String>) -> CliError {
        CliError::Credentials {
            path: self.path().display().to_string(),
            reason: reason.into(),
        }
    }

    /// The stored sign-in; `None` when there is none. Refuses a file that
    /// users other than its owner may read or write.
    pub(crate) fn load(&self) -> Result<Option<Credentials>, CliError> {
        let path = self.path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.error(format!("cannot read it: {error}"))),
        };
        // Checked on the open file rather than the path, so the file read is
        // the file checked.
        let metadata = file
            .metadata()
            .map_err(|error| self.error(format!("cannot read it: {error}")))?;
        if !metadata.is_file() {
            return Err(self.error("not a regular file"));
        }
        #[cfg(unix)]
        {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(self.error(format!(
                    "other users may access it (mode {mode:03o}), so it is not used; \
                     run 'chmod 600 {}' or 'elevate login'",
                    path.display()
                )));
            }
        }
        let mut text = String::new();
        file.take(MAX_FILE_SIZE)
            .read_to_string(&mut text)
            .map_err(|error| self.error(format!("cannot read it: {error}")))?;
        let credentials = serde_json::from_str(&text).map_err(|_| {
            self.error("it is not a sign-in this version understands; run 'elevate login'")
        })?;
        Ok(Some(credentials))
    }

    /// Stores `credentials`, replacing any earlier sign-in. The directory is
    /// created 0700; the file is written 0600 under a temporary name in the
    /// same directory and renamed over the old one, so readers see the old
    /// or the new file, never a partial one, and never a readable one.
    pub(crate) fn save(&self, credentials: &Credentials) -> Result<(), CliError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(&self.dir).map_err(|error| {
            self.error(format!("cannot create {}: {error}", self.dir.display()))
        })?;
        let text = serde_json::to_string_pretty(credentials)
            .map_err(|error| self.error(format!("cannot encode the sign-in: {error}")))?;
        let temporary = self
            .dir
            .join(format!(".{FILE_NAME}.{}.tmp", &random_secret()[..16]));
        let written = write_private(&temporary, text.as_bytes())
            .and_then(|()| fs::rename(&temporary, self.path()));
        if let Err(error) = written {
            let _ = fs::remove_file(&temporary);
            return Err(self.error(format!("cannot write it: {error}")));
        }
        // Makes the rename itself durable; a failure here loses nothing
        // that a new `elevate login` would not restore.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Removes the stored sign-in; `false` when there was none.
    pub(crate) fn remove(&self) -> Result<bool, CliError> {
        match fs::remove_file(self.path()) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
            Err(error) => Err(self.error(format!("cannot remove it: {error}"))),
        }
    }
}

/// A new file at `path` that only its owner may read, holding `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The token a command sends, the server it goes to, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Credential {
    /// `--token` or `ELEVATE_TOKEN`.
    Given { url: String, token: String },
    /// The sign-in of `elevate login`, which can be renewed by signing in
    /// again (as a step-up asks).
    Stored {
        url: String,
        credentials: Credentials,
    },
}

impl Credential {
    pub(crate) fn url(&self) -> &str {
        match self {
            Credential::Given { url, .. } | Credential::Stored { url, .. } => url,
        }
    }

    pub(crate) fn token(&self) -> &str {
        match self {
            Credential::Given { token, .. } => token,
            Credential::Stored { credentials, .. } => &credentials.id_token,
        }
    }
}

/// The token given on the command line or in the environment, if any;
/// blank counts as none.
pub(crate) fn given_token(token: Option<&str>) -> Option<&str> {
    token.map(str::trim).filter(|token| !token.is_empty())
}

/// Which credential a command uses (see the module documentation). `zone`
/// is where an expiry time is shown.
pub(crate) fn choose<Tz: TimeZone>(
    given_token: Option<&str>,
    given_url: Option<&str>,
    stored: Option<Credentials>,
    now: DateTime<Utc>,
    zone: &Tz,
) -> Result<Credential, CliError>
where
    Tz::Offset: Display,
{
    if let Some(token) = given_token {
        return Ok(Credential::Given {
            url: given_url.unwrap_or(DEFAULT_URL).to_string(),
            token: token.to_string(),
        });
    }
    let credentials = stored.ok_or(CliError::NoToken)?;
    if let Some(url) = given_url {
        if !same_server(url, &credentials.url) {
            return Err(CliError::SignedInElsewhere {
                signed_in: credentials.url,
                url: url.to_string(),
            });
        }
    }
    if credentials.expires_at <= now {
        return Err(CliError::SignInExpired {
            url: credentials.url,
            at: local_time(credentials.expires_at, zone),
        });
    }
    Ok(Credential::Stored {
        url: given_url.unwrap_or(&credentials.url).to_string(),
        credentials,
    })
}

/// `YYYY-MM-DD HH:MM` in `zone`, as times are shown everywhere else.
pub(crate) fn local_time<Tz: TimeZone>(instant: DateTime<Utc>, zone: &Tz) -> String
where
    Tz::Offset: Display,
{
    instant
        .with_timezone(zone)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, TimeDelta};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
    }

    fn credentials() -> Credentials {
        Credentials {
            url: "https://elevate.example".into(),
            issuer: "https://id.example".into(),
            id_token: "eyJ.secret.token".into(),
            expires_at: now() + TimeDelta::hours(1),
        }
    }

    #[test]
    fn explicit_config_dir_wins() {
        let dir = config_dir(
            Some(Path::new("/etc/elevate-test")),
            Some("/home/a/.xdg".into()),
            Some("/home/a".into()),
        );
        assert_eq!(dir, Some(PathBuf::from("/etc/elevate-test")));
    }

    #[test]
    fn xdg_config_home_comes_before_home() {
        let dir = config_dir(None, Some("/home/a/.xdg".into()), Some("/home/a".into()));
        assert_eq!(dir, Some(PathBuf::from("/home/a/.xdg/elevate")));
    }

    #[test]
    fn home_config_is_the_fallback() {
        let dir = config_dir(None, None, Some("/home/a".into()));
        assert_eq!(dir, Some(PathBuf::from("/home/a/.config/elevate")));
    }

    #[test]
    fn relative_or_empty_settings_are_ignored() {
        let dir = config_dir(
            Some(Path::new("")),
            Some("relative/xdg".into()),
            Some("/home/a".into()),
        );
        assert_eq!(dir, Some(PathBuf::from("/home/a/.config/elevate")));
        assert_eq!(config_dir(None, Some("".into()), Some("".into())), None);
    }

    #[test]
    fn credentials_round_trip_through_the_file() {
        let temporary = tempfile::tempdir().unwrap();
        let file = CredentialsFile::in_dir(&temporary.path().join("elevate"));
        assert_eq!(file.load().unwrap(), None);
        file.save(&credentials()).unwrap();
        assert_eq!(file.load().unwrap(), Some(credentials()));
        let mut renewed = credentials();
        renewed.id_token = "eyJ.renewed.token".into();
        file.save(&renewed).unwrap();
        assert_eq!(file.load().unwrap(), Some(renewed));
        let names: Vec<_> = fs::read_dir(temporary.path().join("elevate"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("credentials.json")]);
    }

    #[cfg(unix)]
    #[test]
    fn directory_is_0700_and_file_0600() {
        let temporary = tempfile::tempdir().unwrap();
        let dir = temporary.path().join("config").join("elevate");
        let file = CredentialsFile::in_dir(&dir);
        file.save(&credentials()).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file.path()), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused() {
        let temporary = tempfile::tempdir().unwrap();
        let file = CredentialsFile::in_dir(temporary.path());
        file.save(&credentials()).unwrap();
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let message = file.load().unwrap_err().to_string();
        assert!(
            message.contains("other users may access it (mode 644)"),
            "{message}"
        );
        assert!(message.contains("chmod 600"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        // Signing in again replaces it with a private file.
        file.save(&credentials()).unwrap();
        assert!(file.load().is_ok());
    }

    #[test]
    fn a_damaged_file_says_to_sign_in_again() {
        let temporary = tempfile::tempdir().unwrap();
        let file = CredentialsFile::in_dir(temporary.path());
        write_private(&file.path(), b"{\"url\": ").unwrap();
        let message = file.load().unwrap_err().to_string();
        assert!(message.ends_with("run 'elevate login'"), "{message}");
    }

    #[test]
    fn removing_reports_whether_there_was_a_sign_in() {
        let temporary = tempfile::tempdir().unwrap();
        let file = CredentialsFile::in_dir(temporary.path());
        assert!(!file.remove().unwrap());
        file.save(&credentials()).unwrap();
        assert!(file.remove().unwrap());
        assert_eq!(file.load().unwrap(), None);
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        assert!(!format!("{:?}", credentials()).contains("secret"));
    }

    #[test]
    fn a_given_token_wins_over_the_stored_sign_in() {
        let chosen = choose(Some("elv_abc"), None, Some(credentials()), now(), &Utc).unwrap();
        assert_eq!(
            chosen,
            Credential::Given {
                url: DEFAULT_URL.into(),
                token: "elv_abc".into()
            }
        );
    }

    #[test]
    fn the_stored_sign_in_brings_its_server() {
        let chosen = choose(None, None, Some(credentials()), now(), &Utc).unwrap();
        assert_eq!(chosen.url(), "https://elevate.example");
        assert_eq!(chosen.token(), "eyJ.secret.token");
        let chosen = choose(
            None,
            Some("https://elevate.example/"),
            Some(credentials()),
            now(),
            &Utc,
        )
        .unwrap();
        assert!(matches!(chosen, Credential::Stored { .. }));
    }

    #[test]
    fn the_stored_token_is_not_sent_to_another_server() {
        let error = choose(
            None,
            Some("https://staging.example"),
            Some(credentials()),
            now(),
            &Utc,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "you are signed in to https://elevate.example, not https://staging.example: \
             run 'elevate --url https://staging.example login' or pass --token"
        );
    }

    #[test]
    fn an_expired_sign_in_says_when_and_what_to_do() {
        let later = now() + TimeDelta::hours(2);
        let tokyo = FixedOffset::east_opt(9 * 3600).unwrap();
        let error = choose(None, None, Some(credentials()), later, &tokyo).unwrap_err();
        assert_eq!(
            error.to_string(),
            "your sign-in to https://elevate.example expired at 2026-11-24 19:00; \
             run 'elevate login'"
        );
    }

    #[test]
    fn nothing_at_all_suggests_logging_in() {
        let error = choose(None, None, None, now(), &Utc).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no API token: set ELEVATE_TOKEN, pass --token, or run 'elevate login'"
        );
    }

    #[test]
    fn blank_given_token_counts_as_none() {
        assert_eq!(given_token(Some("  ")), None);
        assert_eq!(given_token(Some(" elv_x ")), Some("elv_x"));
    }
}
