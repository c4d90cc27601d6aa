//! Signing in through the browser: `elevate login`, `elevate logout`, and
//! the sign-in a command repeats when the server asks for a step-up.
//!
//! [`sign_in`] runs the whole flow: the server's sign-in settings
//! (`auth/config`), the provider's discovery document, a loopback listener,
//! the address printed as one line on standard error (and opened in a
//! browser unless told not to), the browser's answer, the code exchange, the
//! ID token's nonce, and finally `GET /me` with the new token, so a token the
//! server would refuse is never stored.
//!
//! A test plays the browser: it reads the line starting with
//! [`ADDRESS_PROMPT`] from standard error, follows the address through the
//! provider and lets the provider's redirect reach the loopback listener.

use std::io::Write;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use crate::api::{read, Me};
use crate::args::{ClientArgs, DEFAULT_URL};
use crate::callback::{authorization_code, Arrival, Loopback};
use crate::client::{Client, Provider};
use crate::credentials::{
    config_dir_from_env, given_token, local_time, Credentials, CredentialsFile,
};
use crate::error::CliError;
use crate::oidc::{
    check_id_token, discovery_url, id_token_from_answer, random_secret, token_form, AuthConfig,
    AuthorizationRequest, Discovery, Endpoints, OidcSettings, Pkce, StepUp,
};
use crate::text::one_line;

/// How long `elevate login` waits for the browser.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The start of the one line on standard error that carries the address.
pub const ADDRESS_PROMPT: &str = "Open this address in a browser to sign in:";

/// A completed sign-in: what to store, and who the server says we are.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    pub(crate) credentials: Credentials,
    pub(crate) me: Value,
}

/// What one sign-in asks for beyond the server's defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignInOptions<'a> {
    /// `Some` for a step-up: a fresh sign-in meeting these requirements;
    /// those left out are taken from the server's `auth/config`.
    pub(crate) step_up: Option<&'a StepUp>,
    pub(crate) open_browser: bool,
    pub(crate) timeout: Duration,
}

/// Signs in to the elevate server at `url` through its identity provider.
/// Stores nothing; the caller decides where the credentials go.
pub(crate) async fn sign_in(
    url: &str,
    options: SignInOptions<'_>,
    notices: &mut (dyn Write + Send),
) -> Result<SignedIn, CliError> {
    let server = Client::anonymous(url)?;
    let config = server
        .get(&segments(&["auth", "config"]), &[])
        .await
        .map_err(|error| match error {
            // A server from before sign-in existed (or not elevate at all).
            CliError::Api { status: 404, .. } => CliError::NoIdentityProvider,
            CliError::Http { status } if status.starts_with("404") => CliError::NoIdentityProvider,
            other => other,
        })?;
    let config: AuthConfig = read(&config, "the server's sign-in settings")?;
    let oidc = config.oidc.ok_or(CliError::NoIdentityProvider)?;
    if oidc.issuer.trim().is_empty() || oidc.cli_client_id.trim().is_empty() {
        return Err(CliError::SignIn(
            "the server's sign-in settings name no issuer or client id".to_string(),
        ));
    }
    let provider = Provider::new()?;
    let endpoints = discover(&provider, &oidc.issuer).await?;

    let loopback = Loopback::bind().await?;
    let pkce = Pkce::new();
    let state = random_secret();
    let nonce = random_secret();
    let step_up = step_up_parameters(options.step_up, oidc.step_up.as_ref());
    let scope = oidc.scope();
    let address = AuthorizationRequest {
        endpoint: &endpoints.authorization,
        client_id: &oidc.cli_client_id,
        redirect_uri: loopback.redirect_uri(),
        scope: &scope,
        state: &state,
        nonce: &nonce,
        code_challenge: &pkce.challenge,
        step_up: step_up.as_ref(),
    }
    .url();
    writeln!(notices, "{ADDRESS_PROMPT} {address}")?;
    notices.flush()?;
    if options.open_browser {
        open_in_browser(address.as_str());
    }

    let arrival = loopback.receive(options.timeout).await?;
    let exchange = Exchange {
        url,
        oidc: &oidc,
        endpoints: &endpoints,
        redirect_uri: loopback.redirect_uri(),
        state: &state,
        nonce: &nonce,
        pkce: &pkce,
    };
    let finished = exchange.finish(&provider, &arrival).await;
    // The browser hears the outcome only once the server has accepted the
    // token, so "signed in" there means signed in.
    arrival.answer(finished.as_ref().map(|_| ())).await;
    finished
}

/// What the second half of the flow checks the browser's answer against.
struct Exchange<'a> {
    url: &'a str,
    oidc: &'a OidcSettings,
    endpoints: &'a Endpoints,
    redirect_uri: &'a str,
    state: &'a str,
    nonce: &'a str,
    pkce: &'a Pkce,
}

impl Exchange<'_> {
    async fn finish(&self, provider: &Provider, arrival: &Arrival) -> Result<SignedIn, CliError> {
        let code = authorization_code(&arrival.target, self.state)?;
        let form = token_form(
            &code,
            self.redirect_uri,
            &self.oidc.cli_client_id,
            &self.pkce.verifier,
        );
        let answer = provider.post_form(&self.endpoints.token, &form).await?;
        let id_token = id_token_from_answer(answer.status, &answer.body)?;
        let facts = check_id_token(
            &id_token,
            &self.oidc.issuer,
            &self.oidc.cli_client_id,
            self.nonce,
            Utc::now(),
        )?;
        let me = Client::new(self.url, Some(&id_token))?
            .get(&segments(&["me"]), &[])
            .await?;
        Ok(SignedIn {
            credentials: Credentials {
                url: self.url.to_string(),
                issuer: self.oidc.issuer.clone(),
                id_token,
                expires_at: facts.expires_at,
            },
            me,
        })
    }
}

/// The provider's endpoints from its discovery document.
async fn discover(provider: &Provider, issuer: &str) -> Result<Endpoints, CliError> {
    let address = discovery_url(issuer)?;
    let answer = provider.get(&address).await?;
    if answer.status != 200 {
        return Err(CliError::SignIn(format!(
            "the identity provider's discovery document {address} answered HTTP {}",
            answer.status
        )));
    }
    let discovery: Discovery = serde_json::from_slice(&answer.body).map_err(|error| {
        CliError::SignIn(format!(
            "the identity provider's discovery document is not JSON: {}",
            one_line(&error.to_string())
        ))
    })?;
    discovery.endpoints(issuer)
}

/// The step-up to ask for: what was `requested`, completed from what the
/// server `configured`; `None` for an ordinary sign-in.
fn step_up_parameters(requested: Option<&StepUp>, configured: Option<&StepUp>) -> Option<StepUp> {
    let requested = requested?;
    let configured = configured.cloned().unwrap_or_default();
    Some(StepUp {
        acr_values: requested.acr_values.clone().or(configured.acr_values),
        max_age: requested.max_age.or(configured.max_age),
    })
}

/// Starts the desktop's browser on `address`, if there is one; whether it
/// worked is not ours to know (the address is printed either way). The
/// address is one argument, never passed through a shell.
fn open_in_browser(address: &str) {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(program)
        .arg(address)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = started {
        // Reaped in the background so it does not linger as a zombie.
        std::thread::spawn(move || child.wait());
    }
}

fn segments(path: &[&str]) -> Vec<String> {
    path.iter().map(|segment| segment.to_string()).collect()
}

/// The credentials file of `args`, or why there is none.
pub(crate) fn credentials_file(args: &ClientArgs) -> Result<CredentialsFile, CliError> {
    config_dir_from_env(args.config_dir.as_deref())
        .map(|dir| CredentialsFile::in_dir(&dir))
        .ok_or_else(|| {
            CliError::InvalidArgument(
                "cannot tell where to keep the sign-in: set ELEVATE_CONFIG_DIR or HOME".to_string(),
            )
        })
}

/// `elevate login`: signs in and stores the token, then says as whom.
pub(crate) async fn login<Tz: TimeZone>(
    args: &ClientArgs,
    step_up: bool,
    out: &mut (dyn Write + Send),
    notices: &mut (dyn Write + Send),
    zone: &Tz,
) -> Result<(), CliError>
where
    Tz::Offset: std::fmt::Display,
{
    let file = credentials_file(args)?;
    // Without --url, sign in again to the server of the last sign-in.
    let url = match &args.url {
        Some(url) => url.clone(),
        None => file
            .load()
            .ok()
            .flatten()
            .map(|stored| stored.url)
            .unwrap_or_else(|| DEFAULT_URL.to_string()),
    };
    if given_token(args.token.as_deref()).is_some() {
        writeln!(
            notices,
            "note: a token is set with --token or ELEVATE_TOKEN; commands use it instead of \
             this sign-in while it is set"
        )?;
    }
    let requested = StepUp::default();
    let options = SignInOptions {
        step_up: step_up.then_some(&requested),
        open_browser: !args.no_browser,
        timeout: LOGIN_TIMEOUT,
    };
    let signed_in = sign_in(&url, options, notices).await?;
    file.save(&signed_in.credentials)?;
    if args.json {
        let shown = json!({
            "url": signed_in.credentials.url,
            "issuer": signed_in.credentials.issuer,
            "expires_at": signed_in.credentials.expires_at,
            "me": signed_in.me,
        });
        let pretty = serde_json::to_string_pretty(&shown)
            .map_err(|error| CliError::Protocol(error.to_string()))?;
        writeln!(out, "{pretty}")?;
    } else {
        writeln!(out, "{}", signed_in_line(&signed_in, zone)?)?;
    }
    out.flush()?;
    Ok(())
}

/// "Signed in to <url> as <name> (groups: a, b); expires <local time>".
pub(crate) fn signed_in_line<Tz: TimeZone>(
    signed_in: &SignedIn,
    zone: &Tz,
) -> Result<String, CliError>
where
    Tz::Offset: std::fmt::Display,
{
    let me: Me = read(&signed_in.me, "your identity")?;
    let groups = if me.groups.is_empty() {
        "no groups".to_string()
    } else {
        format!("groups: {}", me.groups.join(", "))
    };
    Ok(one_line(&format!(
        "Signed in to {} as {} ({groups}); expires {}",
        signed_in.credentials.url,
        me.name,
        local_time(signed_in.credentials.expires_at, zone)
    )))
}

/// `elevate logout`: forgets the stored sign-in. Nothing to forget is fine.
///
/// The provider's session in the browser stays; the token itself cannot be
/// recalled, it stops working when it expires.
pub(crate) fn logout(args: &ClientArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let Ok(file) = credentials_file(args) else {
        return Ok(());
    };
    // For the message only; a file that is refused for its permissions is
    // removed all the same.
    let url = file.load().ok().flatten().map(|stored| stored.url);
    if file.remove()? {
        let of = url
            .map(|url| format!(" of {}", one_line(&url)))
            .unwrap_or_default();
        writeln!(
            out,
            "Signed out{of}: removed {}",
            one_line(&file.path().display().to_string())
        )?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;
    use serde_json::json;

    #[test]
    fn step_up_takes_what_was_asked_and_fills_in_the_servers_settings() {
        let configured = StepUp {
            acr_values: Some("urn:elevate:mfa".into()),
            max_age: Some(900),
        };
        let asked = StepUp {
            acr_values: None,
            max_age: Some(300),
        };
        assert_eq!(
            step_up_parameters(Some(&asked), Some(&configured)),
            Some(StepUp {
                acr_values: Some("urn:elevate:mfa".into()),
                max_age: Some(300),
            })
        );
        assert_eq!(step_up_parameters(None, Some(&configured)), None);
        assert_eq!(
            step_up_parameters(Some(&StepUp::default()), None),
            Some(StepUp::default())
        );
    }

    fn signed_in(me: Value) -> SignedIn {
        SignedIn {
            credentials: Credentials {
                url: "https://elevate.example".into(),
                issuer: "https://id.example".into(),
                id_token: "t".into(),
                expires_at: Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap(),
            },
            me,
        }
    }

    #[test]
    fn signed_in_line_names_user_groups_and_local_expiry() {
        let tokyo = FixedOffset::east_opt(9 * 3600).unwrap();
        let line = signed_in_line(
            &signed_in(json!({"name": "alice", "groups": ["dba", "ops"]})),
            &tokyo,
        )
        .unwrap();
        assert_eq!(
            line,
            "Signed in to https://elevate.example as alice (groups: dba, ops); \
             expires 2026-11-24 19:00"
        );
        let line = signed_in_line(&signed_in(json!({"name": "bob\u{1b}[2J"})), &Utc).unwrap();
        assert!(line.contains("(no groups)"), "{line}");
        assert!(!line.contains('\u{1b}'), "{line}");
    }
}
