//! The command line of the client half of `elevate`.
//!
//! The `elevate` binary flattens [`ClientArgs`] into its top-level options
//! and [`ClientCommand`] into its subcommands, next to its own `serve`,
//! `check-config` and `token`.

use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use clap::{Args, Subcommand};

/// The server a client talks to when neither `--url` nor a sign-in names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// Where the server is and who is calling.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the elevate server [default: the server of `elevate
    /// login`, else http://127.0.0.1:7070].
    // An Option rather than a clap default: a URL the user did not give must
    // not override the one their stored sign-in belongs to.
    #[arg(long, env = "ELEVATE_URL")]
    pub url: Option<String>,

    /// API token sent as a bearer token; wins over a stored sign-in. Prefer
    /// the environment variable: a token on the command line is visible to
    /// other local users.
    // hide_env_values: `--help` must never print the token itself.
    #[arg(long, env = "ELEVATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Where `elevate login` keeps its credentials [default:
    /// $XDG_CONFIG_HOME/elevate, else ~/.config/elevate].
    #[arg(long, env = "ELEVATE_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    /// Print the server's JSON instead of tables.
    // Listed last in every subcommand's help rather than among its options.
    #[arg(long, global = true, display_order = 1000)]
    pub json: bool,

    /// When a sign-in is needed, only print its address instead of also
    /// opening a browser.
    // Global: besides `login`, any command may sign in again when the server
    // asks for a recent multi-factor sign-in. Falsey parsing so that
    // ELEVATE_NO_BROWSER=1 works (clap's bool parser wants "true").
    #[arg(
        long,
        global = true,
        env = "ELEVATE_NO_BROWSER",
        value_parser = FalseyValueParser::new(),
        display_order = 1001
    )]
    pub no_browser: bool,
}

/// The commands that talk to an elevate server.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Ask for a privileged role for a bounded time.
    #[command(
        after_help = "Example:\n  elevate request --target pg-prod --resource orders \
                            --role orders_writer --for 1h --reason \"fix stuck migration\" --ticket OPS-123"
    )]
    Request {
        /// Target system, as configured on the server.
        #[arg(long)]
        target: String,
        /// Resource on the target (account, database, app, ...).
        #[arg(long)]
        resource: String,
        /// Role to be granted on the resource.
        #[arg(long)]
        role: String,
        /// How long the access should last, e.g. 1h30m.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// When access should start: RFC 3339, +30m, "in 1h" or now (default).
        #[arg(long, value_name = "TIME")]
        start: Option<String>,
        /// Why the access is needed (any language).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Ticket or incident reference.
        #[arg(long, value_name = "ID")]
        ticket: Option<String>,
        /// Emergency access without waiting for approval; alerts are sent and
        /// the use is reviewed afterwards.
        #[arg(long)]
        break_glass: bool,
    },

    /// Approve someone else's request.
    Approve {
        /// Request id (r-...).
        #[arg(value_parser = request_id)]
        id: String,
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },

    /// Reject a request; the comment tells the requester why.
    Reject {
        /// Request id (r-...).
        #[arg(value_parser = request_id)]
        id: String,
        #[arg(long, value_name = "TEXT")]
        comment: String,
    },

    /// Withdraw your own request before it is granted.
    Cancel {
        /// Request id (r-...).
        #[arg(value_parser = request_id)]
        id: String,
    },

    /// End a grant now (as requester, approver or admin).
    Revoke {
        /// Request id (r-...).
        #[arg(value_parser = request_id)]
        id: String,
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },

    /// End your own grant early.
    Deactivate {
        /// Request id (r-...).
        #[arg(value_parser = request_id)]
        id: String,
    },

    /// Ask for more time on a running grant; current access continues until
    /// the extension is decided.
    Extend {
        /// Id of the grant to extend (r-...).
        #[arg(value_parser = request_id)]
        id: String,
        /// Additional time, e.g. 30m.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        #[arg(long, value_name = "TEXT")]
        reason: String,
        #[arg(long, value_name = "ID")]
        ticket: Option<String>,
    },

    /// Print temporary AWS credentials for your active grant on an aws-sts
    /// target (a new session each time, never past the grant's end).
    #[command(
        after_help = "Examples:\n  eval \"$(elevate creds r-abc)\"\n  elevate creds r-abc --format fish | source\n  \
                      AWS CLI profile: credential_process = elevate creds r-abc --format credential-process"
    )]
    Creds {
        /// Id of the grant (r-...).
        #[arg(value_parser = request_id)]
        id: String,
        /// Output: shell exports (env, fish, powershell), the server's JSON,
        /// or the AWS CLI credential_process format.
        #[arg(long, value_enum, default_value_t = CredsFormat::Env)]
        format: CredsFormat,
        /// How long the session should last, e.g. 30m [default: the
        /// target's maximum]; always cut to what is left of the grant.
        #[arg(long, value_name = "DURATION")]
        duration: Option<String>,
    },

    /// Print an AWS console sign-in URL for your active grant on an
    /// aws-sts target.
    Console {
        /// Id of the grant (r-...).
        #[arg(value_parser = request_id)]
        id: String,
        /// How long the console session should last, e.g. 1h.
        #[arg(long, value_name = "DURATION")]
        duration: Option<String>,
    },

    /// Record the after-the-fact review of a break-glass use.
    Acknowledge {
        /// Request id (r-...).
        #[arg(value_parser = request_id)]
        id: String,
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },

    /// Show one request with its approvals, attempts and audit events.
    Show {
        /// Request id (r-...).
        #[arg(value_parser = request_id)]
        id: String,
    },

    /// List requests (yours by default).
    Requests {
        /// Your own requests (default).
        #[arg(long, group = "scope")]
        mine: bool,
        /// Requests waiting for your approval.
        #[arg(long, group = "scope")]
        pending: bool,
        /// Every request you may see.
        #[arg(long, group = "scope")]
        all: bool,
        /// Only requests in these states, comma-separated (pending, active,
        /// ended, ...).
        #[arg(long)]
        state: Option<String>,
    },

    /// List grants (yours by default).
    Grants {
        /// Only grants that are in effect now.
        #[arg(long)]
        active: bool,
        /// Everyone's grants, not just yours.
        #[arg(long)]
        all: bool,
    },

    /// List what you may request: everything, or with a filter or paging
    /// option one page of it (with how many match in all).
    Eligible {
        /// Words that must all appear in the resource (id, path,
        /// description, tags) or the role name, in any case.
        #[arg(long, value_name = "WORDS")]
        search: Option<String>,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Roles whose name contains this.
        #[arg(long)]
        role: Option<String>,
        /// Resources with this tag: KEY or KEY=VALUE.
        #[arg(long, value_name = "KEY[=VALUE]")]
        tag: Option<String>,
        /// At most this many entries (1 to 10000; 500 when filtering).
        #[arg(long)]
        limit: Option<u32>,
        /// Skip this many matching entries (the next page).
        #[arg(long)]
        offset: Option<u64>,
    },

    /// Show who the server thinks you are, how you signed in and until when.
    Whoami,

    /// Sign in through your identity provider in a browser and keep the
    /// token for the next commands.
    #[command(
        after_help = "The address to open is printed on standard error; with --no-browser \
                      (or ELEVATE_NO_BROWSER=1) nothing is opened automatically.\n\
                      The token is stored in the config directory, readable by you only."
    )]
    Login {
        /// Ask for a fresh multi-factor sign-in, as roles that require one do.
        #[arg(long)]
        step_up: bool,
    },

    /// Forget the token stored by `elevate login`.
    Logout,

    /// Targets that read their resources from the system they manage
    /// (aws-identity-center): read them again, or look for access given
    /// outside elevate. Admins only.
    Targets {
        #[command(subcommand)]
        action: TargetsAction,
    },

    /// List audit events; `verify` checks the hash chain, `export` dumps it.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        /// Only events since this time: a duration like 1h (the last hour)
        /// or RFC 3339.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only events of this request.
        #[arg(long, value_name = "ID", value_parser = request_id)]
        request: Option<String>,
        /// At most this many events.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

/// How `elevate creds` prints credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CredsFormat {
    /// `export AWS_ACCESS_KEY_ID=...` lines for sh, bash, zsh.
    Env,
    /// `set -gx AWS_ACCESS_KEY_ID ...` lines for fish.
    Fish,
    /// `$Env:AWS_ACCESS_KEY_ID = "..."` lines for PowerShell.
    Powershell,
    /// The server's JSON.
    Json,
    /// The JSON the AWS CLI and SDKs read from a `credential_process`.
    CredentialProcess,
}

/// `targets` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TargetsAction {
    /// Read the target's accounts, OUs, tags and permission sets now.
    Refresh {
        /// Target id, as in the config.
        #[arg(value_parser = target_id)]
        target: String,
    },
    /// List the assignments of the roles elevate hands out now, and report
    /// (or, with reconcile = "remove", remove) those no grant accounts for.
    Reconcile {
        /// Target id, as in the config.
        #[arg(value_parser = target_id)]
        target: String,
    },
    /// Show the last reconciliation report.
    Reconciliation {
        /// Target id, as in the config.
        #[arg(value_parser = target_id)]
        target: String,
    },
}

/// `audit` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditAction {
    /// Check that the audit chain is intact; fails if it is broken.
    Verify,
    /// Write every audit event to standard output as JSON lines.
    Export,
}

/// A target id as the config names it: one path segment, like
/// [`request_id`], with an error that speaks of targets.
fn target_id(text: &str) -> Result<String, String> {
    if text.is_empty() || text == "." || text == ".." {
        return Err("expected a target id as in the config, like aws".to_string());
    }
    if text.chars().any(|c| c.is_control()) || text.trim() != text {
        return Err("a target id has no control characters or surrounding spaces".to_string());
    }
    Ok(text.to_string())
}

/// Accepts anything that can stand as one path segment. The server owns the
/// id format; this only stops "." and ".." (which a URL would resolve away,
/// silently calling another endpoint) and blanks or control characters
/// (copy-and-paste accidents).
fn request_id(text: &str) -> Result<String, String> {
    if text.is_empty() || text == "." || text == ".." {
        return Err("expected a request id like r-abcd2345efgh".to_string());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a request id contains no spaces or control characters".to_string());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// Stands in for the `elevate` binary, which flattens the client in next
    /// to its own commands.
    #[derive(Debug, Parser)]
    #[command(name = "elevate")]
    struct Elevate {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Serve,
        CheckConfig,
        Token,
        #[command(flatten)]
        Client(ClientCommand),
    }

    fn parse(line: &str) -> Result<Elevate, clap::Error> {
        Elevate::try_parse_from(line.split_whitespace())
    }

    fn client_command(line: &str) -> ClientCommand {
        match parse(line).unwrap().command {
            Top::Client(command) => command,
            other => panic!("{line} parsed as {other:?}"),
        }
    }

    #[test]
    fn command_definition_is_valid() {
        Elevate::command().debug_assert();
    }

    #[test]
    fn every_command_example_parses() {
        let examples = [
            "elevate request --target pg --resource orders --role writer --for 1h --reason fix",
            "elevate request --target pg --resource orders --role writer --for 1h30m --start +30m --reason fix --ticket OPS-1 --break-glass",
            "elevate approve r-abcd2345efgh",
            "elevate approve r-abcd2345efgh --comment ok",
            "elevate reject r-abcd2345efgh --comment no",
            "elevate cancel r-abcd2345efgh",
            "elevate revoke r-abcd2345efgh --comment done",
            "elevate deactivate r-abcd2345efgh",
            "elevate extend r-abcd2345efgh --for 30m --reason more --ticket OPS-2",
            "elevate acknowledge r-abcd2345efgh --comment reviewed",
            "elevate show r-abcd2345efgh",
            "elevate requests",
            "elevate requests --pending",
            "elevate requests --all --state active",
            "elevate grants --active --all",
            "elevate eligible",
            "elevate eligible --search admin --target aws --role billing --tag env=prod --limit 50 --offset 50",
            "elevate whoami",
            "elevate audit --since 1h --request r-abcd2345efgh --limit 50",
            "elevate audit verify",
            "elevate audit export",
            "elevate --json whoami",
            "elevate whoami --json",
            "elevate --url https://elevate.example --token t grants",
            "elevate login",
            "elevate login --step-up --no-browser",
            "elevate --no-browser login",
            "elevate logout",
            "elevate --config-dir /tmp/elevate whoami",
        ];
        for line in examples {
            if let Err(error) = parse(line) {
                panic!("{line}: {error}");
            }
        }
    }

    #[test]
    fn request_reads_for_as_the_duration() {
        let ClientCommand::Request {
            duration,
            start,
            break_glass,
            ..
        } = client_command("elevate request --target pg --resource db --role r --for 2h --start +5m --reason x --break-glass")
        else {
            panic!("not a request");
        };
        assert_eq!(duration, "2h");
        assert_eq!(start.as_deref(), Some("+5m"));
        assert!(break_glass);
    }

    #[test]
    fn ids_that_would_change_the_endpoint_are_refused() {
        assert!(parse("elevate show ..").is_err());
        assert!(parse("elevate approve .").is_err());
        assert!(Elevate::try_parse_from(["elevate", "cancel", "r-1 "]).is_err());
        assert!(Elevate::try_parse_from(["elevate", "cancel", ""]).is_err());
    }

    #[test]
    fn reject_requires_a_comment() {
        assert!(parse("elevate reject r-1").is_err());
    }

    #[test]
    fn request_scopes_are_mutually_exclusive() {
        assert!(parse("elevate requests --mine --all").is_err());
        assert!(parse("elevate requests --pending --all").is_err());
        assert!(parse("elevate requests --mine --pending").is_err());
    }

    #[test]
    fn audit_without_subcommand_lists() {
        let ClientCommand::Audit { action, limit, .. } = client_command("elevate audit --limit 5")
        else {
            panic!("not audit");
        };
        assert!(action.is_none());
        assert_eq!(limit, Some(5));
        let ClientCommand::Audit { action, .. } = client_command("elevate audit verify") else {
            panic!("not audit");
        };
        assert!(matches!(action, Some(AuditAction::Verify)));
    }

    #[test]
    fn json_flag_is_accepted_after_the_command() {
        assert!(parse("elevate grants --json").unwrap().client.json);
    }

    #[test]
    fn url_is_absent_unless_given() {
        // Checked on the definition for the same reason as below: parsing
        // reads ELEVATE_URL, which the environment of the test may set.
        let command = Elevate::command();
        let url = command
            .get_arguments()
            .find(|argument| argument.get_id() == "url")
            .unwrap();
        assert!(url.get_default_values().is_empty());
        let parsed = parse("elevate --url https://elevate.example whoami").unwrap();
        assert_eq!(
            parsed.client.url.as_deref(),
            Some("https://elevate.example")
        );
    }

    #[test]
    fn login_takes_step_up_and_no_browser() {
        let parsed = parse("elevate login --step-up --no-browser").unwrap();
        assert!(parsed.client.no_browser);
        assert!(matches!(
            parsed.command,
            Top::Client(ClientCommand::Login { step_up: true })
        ));
    }

    #[test]
    fn help_never_shows_the_token_value() {
        // Checked on the definition: rendering help with the variable set
        // would mean mutating the environment other tests read.
        let command = Elevate::command();
        let token = command
            .get_arguments()
            .find(|argument| argument.get_id() == "token")
            .unwrap();
        assert!(token.is_hide_env_values_set());
    }
}
