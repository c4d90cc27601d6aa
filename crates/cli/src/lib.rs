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
//! Supporting modules: `args` (the clap definitions), `api` (lenient
//! answer types), `time` (time arguments), `table` and `text`
//! (width-aware, escape-safe terminal output), `error`.

mod api;
mod args;
mod client;
mod error;
mod plan;
mod present;
mod table;
mod text;
mod time;

use std::io::{ErrorKind, Write};

use chrono::{Local, Utc};

pub use args::{AuditAction, ClientArgs, ClientCommand};
pub use error::CliError;

use client::Client;
use plan::{plan, Method};
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
/// embedding). Times are shown in the local time zone.
pub async fn run_to(
    args: ClientArgs,
    command: ClientCommand,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let now = Utc::now();
    let call = plan(&command, now)?;
    let client = Client::new(&args.url, args.token.as_deref())?;
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
        return chain_failure(&command, &answer);
    }
    Presenter::new(now, Local).present(&command, &answer, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn run_can_be_spawned_on_a_multi_threaded_runtime() {
        let args = ClientArgs {
            url: "http://127.0.0.1:7070".into(),
            token: None,
            json: false,
        };
        let future = run(args, ClientCommand::Whoami);
        assert_send(&future);
    }
}
