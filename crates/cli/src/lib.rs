//! The client half of the `elevate` binary: request, approve, revoke and
//! inspect privileged access through a running elevate server.
//!
//! The binary flattens [`ClientArgs`] and [`ClientCommand`] into its own
//! command line and calls [`run`]. A command goes through three steps, each
//! in its own module:
//!
//! * [`plan`](crate::plan): the command becomes one HTTP call, pure, so bad
//!   arguments (times) fail before any traffic;
//! * [`client`](crate::client): the only module that speaks HTTP (`get`,
//!   `post`), and where transport and server errors become [`CliError`];
//! * [`present`](crate::present): the answer becomes one line, a table or a
//!   detail view (or pretty JSON with `--json`).
//!
//! The token comes from `--token`/`ELEVATE_TOKEN`, else from the sign-in
//! stored by `elevate login` (`credentials`). Signing in is its own flow
//! (`login`): the OpenID Connect protocol pieces are pure (`oidc`), the
//! browser's answer arrives at a loopback listener (`callback`). A command
//! refused for want of a recent multi-factor sign-in signs in again and is
//! retried once, when the token came from `elevate login`.
//!
//! Supporting modules: `args` (the clap definitions), `api` (lenient
//! answer types), `time` (time arguments), `table` and `text`
//! (width-aware, escape-safe terminal output), `error`.

mod api;
mod args;
mod callback;
mod client;
mod credentials;
mod error;
mod login;
mod oidc;
mod plan;
mod present;
mod sessions;
mod table;
mod targets;
mod text;
mod time;

use std::io::{ErrorKind, Write};

use chrono::{DateTime, Local, Utc};

pub use args::{AuditAction, ClientArgs, ClientCommand, CredsFormat, DEFAULT_URL};
pub use error::CliError;
pub use login::ADDRESS_PROMPT;
pub use oidc::StepUp;

use client::Client;
use credentials::{choose, given_token, Credential};
use login::{credentials_file, sign_in, signed_in_line, SignInOptions, LOGIN_TIMEOUT};
use plan::{plan, Call, Method};
use present::{chain_failure, Presenter};

/// Runs one client command against the server, printing to standard output.
///
/// Errors display as one line, meant to be printed as `error: {e}` before
/// exiting 1. A reader that closes the pipe early (`elevate audit export |
/// head`) is not an error.
pub async fn run(args: ClientArgs, command: ClientCommand) -> Result<(), CliError> {
    match run_to(args, command, &mut std::io::stdout()).await {
        Err(CliError::Output(error)) if error.kind() == ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}

/// [`run`], writing to `out` instead of standard output (for tests and
/// embedding). Notices (the sign-in address, why a sign-in is repeated) go
/// to standard error. Times are shown in the local time zone.
pub async fn run_to(
    args: ClientArgs,
    command: ClientCommand,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    run_with_notices(args, command, out, &mut std::io::stderr()).await
}

/// [`run_to`], with notices written to `notices` instead of standard error:
/// among them the one line starting with [`ADDRESS_PROMPT`] that a test
/// reads to play the browser.
pub async fn run_with_notices(
    args: ClientArgs,
    command: ClientCommand,
    out: &mut (dyn Write + Send),
    notices: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match &command {
        ClientCommand::Login { step_up } => {
            return login::login(&args, *step_up, out, notices, &Local).await
        }
        ClientCommand::Logout => return login::logout(&args, out),
        _ => {}
    }
    let now = Utc::now();
    let call = plan(&command, now)?;
    let credential = credential(&args, now)?;
    match execute(&args, &command, &call, &credential, now, out).await {
        Err(CliError::StepUpRequired { message, step_up })
            if matches!(credential, Credential::Stored { .. }) =>
        {
            // A role that needs a recent multi-factor sign-in: the user
            // signed in through the browser before, so do it again, with
            // what the server asks for, and retry once. The refused call
            // changed nothing, so repeating it is safe.
            writeln!(notices, "{message}; signing in again")?;
            let options = SignInOptions {
                step_up: Some(&step_up),
                open_browser: !args.no_browser,
                timeout: LOGIN_TIMEOUT,
            };
            let signed_in = sign_in(credential.url(), options, notices).await?;
            credentials_file(&args)?.save(&signed_in.credentials)?;
            writeln!(notices, "{}", signed_in_line(&signed_in, &Local)?)?;
            let renewed = Credential::Stored {
                url: credential.url().to_string(),
                credentials: signed_in.credentials,
            };
            execute(&args, &command, &call, &renewed, Utc::now(), out).await
        }
        result => result,
    }
}

/// The credential this command uses: a given token as is; otherwise the
/// stored sign-in, read only then (so its problems never stand in the way
/// of a given token).
fn credential(args: &ClientArgs, now: DateTime<Utc>) -> Result<Credential, CliError> {
    let token = given_token(args.token.as_deref());
    let stored = match (token, credentials_file(args)) {
        (None, Ok(file)) => file.load()?,
        _ => None,
    };
    choose(token, args.url.as_deref(), stored, now, &Local)
}

/// Makes the call with `credential` and presents the answer.
async fn execute(
    args: &ClientArgs,
    command: &ClientCommand,
    call: &Call,
    credential: &Credential,
    now: DateTime<Utc>,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let client = Client::new(credential.url(), Some(credential.token()))?;
    let answer = match &call.method {
        Method::GetStream => return client.get_to(&call.path, out).await,
        Method::Get => client.get(&call.path, &call.query).await?,
        Method::Post(body) => client.post(&call.path, body).await?,
    };
    if args.json {
        let pretty = serde_json::to_string_pretty(&answer)
            .map_err(|error| CliError::Protocol(error.to_string()))?;
        writeln!(out, "{pretty}")?;
        out.flush()?;
        return chain_failure(command, &answer);
    }
    Presenter::new(now, Local).present(command, &answer, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn run_can_be_spawned_on_a_multi_threaded_runtime() {
        let args = ClientArgs {
            url: Some("http://127.0.0.1:7070".into()),
            token: None,
            config_dir: None,
            json: false,
            no_browser: true,
        };
        assert_send(&run(args.clone(), ClientCommand::Whoami));
        assert_send(&run(args, ClientCommand::Login { step_up: true }));
    }
}
