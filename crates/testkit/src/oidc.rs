//! A real OpenID Connect provider for tests, and a stand-in for the browser.
//!
//! - [`OidcPeer`]: panva's certified `oidc-provider` (npm), run by
//!   `testpeers/oidc/provider.mjs` on 127.0.0.1 and a free port. Its login and
//!   consent pages are replaced by a handler that signs in the user named by
//!   the authorization request's `login_hint`, so no browser is needed. Two
//!   clients: a confidential web client and a public native CLI client whose
//!   loopback redirect URI may use any port (RFC 8252 §7.3). PKCE S256 is
//!   required; ID tokens carry `acr`, `amr`, `auth_time`, `groups`; access
//!   tokens are RS256 JWTs for `urn:elevate:api`. See the header of
//!   `provider.mjs` for everything it does.
//! - [`Browser`]: a cookie-keeping HTTP client that follows redirects only
//!   when asked, to play the user's part in the authorization code flow.
//! - [`decode_jwt_unverified`]: a JWT's header and claims, for assertions.
//!
//! Needs Node.js (`node` on the `PATH`, or `ELEVATE_NODE`) and the peer's
//! npm packages (`scripts/test.sh` installs them; or `npm ci` in
//! `testpeers/oidc`). Starting takes a few hundred milliseconds.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::free_port;

/// How many ports [`OidcPeer::start`] tries; only a port taken between
/// [`free_port`] and the provider's bind causes a retry.
const START_ATTEMPTS: usize = 5;

/// How long the provider may take to print `ready`: about a second when
/// the machine is idle, but loading its modules has taken over 30 s on a
/// loaded two-core machine running the whole suite. A wait, not a speed
/// check.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A user the provider can sign in. Serialized as-is into the accounts file
/// that `provider.mjs` re-reads on every lookup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OidcUser {
    /// The subject (`sub`); also accepted as `login_hint`.
    pub sub: String,
    /// Released as `preferred_username`; the usual `login_hint`
    /// (matched case-insensitively).
    pub username: String,
    /// Released as `email`, with `email_verified: true` unless [`Self::claims`]
    /// says otherwise.
    pub email: String,
    /// Released as `name`.
    pub name: String,
    /// Released as `groups` (scope `groups`).
    pub groups: Vec<String>,
    /// Further claims (say `department`), released under scope `profile` and
    /// in access tokens. Released last, so they override any claim above.
    pub claims: Map<String, Value>,
}

impl OidcUser {
    /// `username` with sub `sub-<username>`, e-mail `<username>@example.com`,
    /// name `<username>`, the given groups and no further claims.
    pub fn new(username: &str, groups: &[&str]) -> OidcUser {
        OidcUser {
            sub: format!("sub-{username}"),
            username: username.to_owned(),
            email: format!("{username}@example.com"),
            name: username.to_owned(),
            groups: groups.iter().map(|group| (*group).to_owned()).collect(),
            claims: Map::new(),
        }
    }
}

/// What [`OidcPeer::start`] sets up.
#[derive(Debug, Clone)]
pub struct OidcOptions {
    pub users: Vec<OidcUser>,
    /// The confidential web client (`client_secret_basic` or
    /// `client_secret_post`).
    pub web_client_id: String,
    pub web_client_secret: String,
    /// Redirect URIs registered for the web client, matched exactly.
    pub web_redirect_uris: Vec<String>,
    /// The public native client (no secret), redirect URI
    /// `http://127.0.0.1:<any port>/callback`.
    pub cli_client_id: String,
    /// Names of extra user claims [`OidcPeer::set_users`] may bring later;
    /// those found in [`Self::users`] are declared anyway. The provider
    /// releases only claims it declared when it started.
    pub extra_claims: Vec<String>,
}

impl Default for OidcOptions {
    fn default() -> OidcOptions {
        OidcOptions {
            users: Vec::new(),
            web_client_id: "elevate-web".to_owned(),
            web_client_secret: "web-secret".to_owned(),
            web_redirect_uris: Vec::new(),
            cli_client_id: "elevate-cli".to_owned(),
            extra_claims: Vec::new(),
        }
    }
}

/// A running `oidc-provider` with issuer `http://127.0.0.1:<port>`. Killed
/// on drop. Its state (sessions, codes, tokens) lives in memory only and is
/// lost by [`OidcPeer::stop`], [`OidcPeer::rotate_keys`] and
/// [`OidcPeer::start_again`]; users and keys survive.
#[derive(Debug)]
pub struct OidcPeer {
    /// Holds `config.json`, `accounts.json`, `keys/` and `log`; deleted on
    /// drop.
    dir: tempfile::TempDir,
    /// `testpeers/oidc`: `provider.mjs` and its `node_modules`.
    peer_dir: PathBuf,
    /// Fixed for the peer's life so that restarts bring the issuer back
    /// where relying parties expect it.
    port: u16,
    /// The user claim names the provider releases besides the standard ones;
    /// fixed at start because `oidc-provider` reads its claims once.
    extra_claims: BTreeSet<String>,
    /// The running process (if any) and the key ids, behind a lock so that
    /// a shared `&OidcPeer` can be stopped and restarted.
    state: Mutex<PeerState>,
    /// For [`OidcPeer::sign`].
    http: reqwest::Client,
}

#[derive(Debug)]
struct PeerState {
    child: Option<Child>,
    /// Key ids in `keys/`, the signing key first; all are published.
    kids: Vec<String>,
    /// Numbers the next generated key id.
    next_key: u32,
}

impl OidcPeer {
    /// Writes the configuration and starts the provider on a free port.
    /// Fails with a clear message when Node.js or the peer's npm packages
    /// are missing.
    pub fn start(options: OidcOptions) -> anyhow::Result<OidcPeer> {
        let peer_dir = find_peer_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("elevate-oidc-")
            .tempdir()
            .context("creating the provider's temporary directory")?;
        let mut extra_claims: BTreeSet<String> = options.extra_claims.iter().cloned().collect();
        for user in &options.users {
            extra_claims.extend(user.claims.keys().cloned());
        }
        let mut peer = OidcPeer {
            dir,
            peer_dir,
            port: 0,
            extra_claims,
            state: Mutex::new(PeerState {
                child: None,
                kids: vec!["key-1".to_owned()],
                next_key: 2,
            }),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .context("building an HTTP client")?,
        };
        peer.write_users(&options.users)?;
        let mut last_error = anyhow!("no attempt made");
        for _ in 0..START_ATTEMPTS {
            peer.port = free_port()?;
            peer.write_config(&options, &peer.lock().kids)?;
            match peer.spawn() {
                Ok(()) => return Ok(peer),
                // spawn's error carries what the provider printed.
                Err(error) if format!("{error:#}").contains("EADDRINUSE") => last_error = error,
                Err(error) => return Err(error),
            }
        }
        Err(last_error.context(format!(
            "the OpenID provider could not bind a free port in {START_ATTEMPTS} attempts"
        )))
    }

    /// `http://127.0.0.1:<port>`, exactly as in the tokens' `iss`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The published key ids, the one that signs now first.
    pub fn kids(&self) -> Vec<String> {
        self.lock().kids.clone()
    }

    /// Replaces the users; the provider sees the change on its next lookup
    /// (next sign-in, code exchange or token refresh). Fails if a user has a
    /// claim that was not declared at start (see [`OidcOptions::extra_claims`]).
    pub fn set_users(&self, users: &[OidcUser]) -> anyhow::Result<()> {
        for user in users {
            if let Some(name) = user
                .claims
                .keys()
                .find(|name| !self.extra_claims.contains(*name))
            {
                bail!(
                    "user {}: claim {name:?} was not declared when the provider started; \
                     name it in OidcOptions::extra_claims",
                    user.username
                );
            }
        }
        self.write_users(users)
    }

    /// Restarts the provider on the same port with a new signing key; the
    /// key that signed until now stays published (older ones are dropped).
    pub fn rotate_keys(&self) -> anyhow::Result<()> {
        let mut state = self.lock();
        kill(&mut state);
        let new_kid = format!("key-{}", state.next_key);
        state.next_key += 1;
        let previous = state.kids.first().cloned();
        state.kids = std::iter::once(new_kid).chain(previous).collect();
        self.rewrite_kids(&state.kids)?;
        drop(state);
        self.spawn()
    }

    /// Kills the provider, for "issuer unreachable" tests.
    /// [`OidcPeer::start_again`] brings it back.
    pub fn stop(&self) {
        kill(&mut self.lock());
    }

    /// Starts the provider again on the same port with the same users and
    /// keys (a no-op if it runs).
    pub fn start_again(&self) -> anyhow::Result<()> {
        {
            let mut state = self.lock();
            if let Some(child) = state.child.as_mut() {
                if child.try_wait()?.is_none() {
                    return Ok(());
                }
                state.child = None;
            }
        }
        self.spawn()
    }

    /// A compact JWS of `claims`, signed by the provider's current signing
    /// key: RS256 and its kid unless `header` overrides them (`Value::Null`
    /// or `{}` for none). A `kid` of another published key signs with that
    /// key; alg `HS256` uses the public key's PEM as HMAC secret (the
    /// algorithm-confusion attack); alg `none` leaves the signature empty.
    /// For tokens that a relying party must refuse although the signature
    /// is good: wrong `iss`/`aud`, expired, not yet valid, and so on.
    pub async fn sign(&self, claims: Value, header: Value) -> anyhow::Result<String> {
        self.sign_request(json!({ "claims": claims, "header": null_to_object(header) }))
            .await
    }

    /// Like [`OidcPeer::sign`], but with an RSA key that is not published
    /// (kid `untrusted` unless `header` names another).
    pub async fn sign_untrusted(&self, claims: Value, header: Value) -> anyhow::Result<String> {
        self.sign_request(json!({
            "claims": claims,
            "header": null_to_object(header),
            "untrusted": true,
        }))
        .await
    }

    /// Everything the provider printed so far (all runs), for failure
    /// messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn sign_request(&self, body: Value) -> anyhow::Result<String> {
        let url = format!("{}/test/sign", self.issuer());
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("POST {url}: {status}: {}", text.trim());
        }
        Ok(text.trim().to_owned())
    }

    fn lock(&self) -> MutexGuard<'_, PeerState> {
        // A panic while holding the lock leaves nothing half-done that
        // matters here, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    fn write_config(&self, options: &OidcOptions, kids: &[String]) -> anyhow::Result<()> {
        let config = json!({
            "port": self.port,
            "accountsFile": "accounts.json",
            "keysDir": "keys",
            "kids": kids,
            "extraClaims": self.extra_claims,
            "webClient": {
                "id": options.web_client_id,
                "secret": options.web_client_secret,
                "redirectUris": options.web_redirect_uris,
            },
            "cliClient": { "id": options.cli_client_id },
        });
        write_atomically(&self.config_path(), &config)
    }

    fn rewrite_kids(&self, kids: &[String]) -> anyhow::Result<()> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut config: Value = serde_json::from_str(&text)?;
        config["kids"] = json!(kids);
        write_atomically(&path, &config)
    }

    /// Written to a temporary file and renamed, so that the provider never
    /// reads half a file.
    fn write_users(&self, users: &[OidcUser]) -> anyhow::Result<()> {
        write_atomically(&self.dir.path().join("accounts.json"), &json!(users))
    }

    /// Starts `node provider.mjs config.json` and waits until it prints
    /// `ready`.
    fn spawn(&self) -> anyhow::Result<()> {
        let mut state = self.lock();
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_start = log.metadata()?.len();
        let node = std::env::var_os("ELEVATE_NODE").unwrap_or_else(|| "node".into());
        let child = Command::new(&node)
            .arg(self.peer_dir.join("provider.mjs"))
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .env("NODE_ENV", "test")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (is Node.js installed?)",
                    node.to_string_lossy()
                )
            })?;
        state.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let output = read_from(&log_path, log_start);
            if output.lines().any(|line| line.starts_with("ready ")) {
                return Ok(());
            }
            if let Some(child) = state.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    state.child = None;
                    bail!("the OpenID provider exited ({status}) before it was ready:\n{output}");
                }
            }
            if Instant::now() > deadline {
                kill(&mut state);
                bail!(
                    "the OpenID provider was not ready after {READY_TIMEOUT:?}:\n{}",
                    read_from(&log_path, log_start)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OidcPeer {
    fn drop(&mut self) {
        kill(&mut self.lock());
    }
}

fn kill(state: &mut PeerState) {
    if let Some(mut child) = state.child.take() {
        // SIGKILL: all the provider's state is in memory and meant to go.
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn null_to_object(header: Value) -> Value {
    if header.is_null() {
        json!({})
    } else {
        header
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

fn write_atomically(path: &Path, value: &Value) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    let file =
        File::create(&temporary).with_context(|| format!("creating {}", temporary.display()))?;
    serde_json::to_writer_pretty(file, value)?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))
}

/// `testpeers/oidc` next to this crate, with its npm packages installed.
fn find_peer_dir() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testpeers/oidc");
    let dir = dir
        .canonicalize()
        .with_context(|| format!("finding the OpenID provider in {}", dir.display()))?;
    if !dir.join("node_modules/oidc-provider").is_dir() {
        bail!(
            "{} has no node_modules/oidc-provider: run scripts/test.sh or `npm ci` in testpeers/oidc",
            dir.display()
        );
    }
    Ok(dir)
}

/// The header and claims of a compact JWS, WITHOUT checking the signature:
/// for looking at tokens in tests, never for trusting them.
pub fn decode_jwt_unverified(token: &str) -> anyhow::Result<(Value, Value)> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a compact JWS (three dot-separated parts): {token:?}");
    };
    let decode = |part: &str, what: &str| -> anyhow::Result<Value> {
        let bytes = base64url_decode(part).with_context(|| format!("the JWT's {what}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("the JWT's {what} is not JSON"))
    };
    Ok((decode(header, "header")?, decode(claims, "claims")?))
}

/// Base64url without padding (RFC 4648 §5), as used in JWTs and PKCE.
pub fn base64url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut encoded = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let group = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            let index = (group >> (18 - 6 * i)) & 0x3f;
            encoded.push(char::from(ALPHABET[index as usize]));
        }
    }
    encoded
}

/// Decodes base64url with or without padding.
pub fn base64url_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for character in text.bytes() {
        let value = match character {
            b'A'..=b'Z' => character - b'A',
            b'a'..=b'z' => character - b'a' + 26,
            b'0'..=b'9' => character - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => bail!("{:?} is not base64url", char::from(character)),
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Ok(bytes)
}

/// Plays the browser's part in a sign-in: a cookie-keeping HTTP client that
/// never follows redirects by itself. Cookies are kept per host, not per
/// port (RFC 6265), so on 127.0.0.1 the provider's and the relying party's
/// cookies share one jar, as in a real browser.
#[derive(Debug, Clone)]
pub struct Browser {
    client: reqwest::Client,
}

/// Redirects [`Browser::follow_until`] follows before giving up.
const MAX_HOPS: usize = 20;

impl Browser {
    pub fn new() -> anyhow::Result<Browser> {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the browser's HTTP client")?;
        Ok(Browser { client })
    }

    /// The underlying client (with the cookie jar), for requests the helpers
    /// below do not cover.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GETs `url` and follows 3xx `Location`s (relative ones resolved),
    /// keeping cookies, until one starts with `stop_at`; returns that URL
    /// without requesting it. Fails, with the status and the start of the
    /// body, on an answer that is not a redirect, and after 20 hops.
    pub async fn follow_until(&self, url: &str, stop_at: &str) -> anyhow::Result<String> {
        let mut current = reqwest::Url::parse(url).with_context(|| format!("parsing {url}"))?;
        for _ in 0..MAX_HOPS {
            let response = self.get(current.as_str()).await?;
            let status = response.status();
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|value| value.to_str().map(str::to_owned));
            let location = match (status.is_redirection(), location) {
                (true, Some(Ok(location))) => location,
                (true, Some(Err(_))) => bail!("GET {current}: {status} with a non-ASCII Location"),
                _ => {
                    let body = response.text().await.unwrap_or_default();
                    bail!(
                        "GET {current}: {status}, not a redirect towards {stop_at}: {}",
                        excerpt(&body)
                    );
                }
            };
            let next = current
                .join(&location)
                .with_context(|| format!("GET {current}: bad Location {location:?}"))?;
            if next.as_str().starts_with(stop_at) {
                return Ok(next.into());
            }
            current = next;
        }
        bail!("no redirect to {stop_at} after {MAX_HOPS} hops from {url} (last: {current})")
    }

    /// A plain GET with the cookie jar; redirects are not followed.
    pub async fn get(&self, url: &str) -> anyhow::Result<reqwest::Response> {
        self.client
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))
    }

    /// A form POST with the cookie jar; redirects are not followed.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<reqwest::Response> {
        self.client
            .post(url)
            .form(form)
            .send()
            .await
            .with_context(|| format!("POST {url}"))
    }
}

/// The start of a response body, on one line, for error messages.
fn excerpt(body: &str) -> String {
    const LIMIT: usize = 500;
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_every_length() {
        for length in 0..10 {
            let bytes: Vec<u8> = (0..length).map(|i| (i * 37 + 250) as u8).collect();
            let encoded = base64url_encode(&bytes);
            assert!(!encoded.contains(['=', '+', '/']), "{encoded}");
            assert_eq!(base64url_decode(&encoded).unwrap(), bytes);
        }
        assert_eq!(base64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(base64url_decode("aGk=").unwrap(), b"hi");
    }

    #[test]
    fn a_jwt_is_decoded_without_its_signature_being_checked() {
        let token = format!(
            "{}.{}.",
            base64url_encode(br#"{"alg":"none"}"#),
            base64url_encode(br#"{"sub":"alice"}"#)
        );
        let (header, claims) = decode_jwt_unverified(&token).unwrap();
        assert_eq!(header["alg"], "none");
        assert_eq!(claims["sub"], "alice");
        assert!(decode_jwt_unverified("a.b").is_err());
    }
}
