//! The `elevate` binary: the server (`serve`), config checking
//! (`check-config`), token generation (`token new`), and the client
//! commands that talk to a server over the API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use elevate::config::Config;

#[derive(Parser)]
#[command(
    name = "elevate",
    version,
    about = "Just-in-time privileged access: request, approve, grant, revoke."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: elevate_cli::ClientArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the elevate server.
    Serve {
        /// The config file.
        #[arg(long, short, env = "ELEVATE_CONFIG", conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Demo mode: built-in users, a dry-run target, a local database.
        #[arg(long)]
        dev: bool,
        /// Listen address, overriding the config.
        #[arg(long)]
        listen: Option<String>,
        /// Database URL, overriding the config (sqlite://PATH).
        #[arg(long)]
        database: Option<String>,
    },
    /// Check a config file and report every problem with its location.
    /// With an [oidc] section, also checks that the identity provider is
    /// reachable and accepts elevate's client credentials.
    CheckConfig {
        file: PathBuf,
        /// Skip the checks that need the network (identity provider).
        #[arg(long)]
        offline: bool,
    },
    /// Send a test message through every channel in the config's
    /// [notifications]: an e-mail to --to, a post to each chat channel, a
    /// signed `elevate.test` event to each webhook. Exits non-zero if any
    /// failed, with one line per channel.
    NotifyTest {
        file: PathBuf,
        /// Where to send the test e-mail.
        #[arg(long, value_name = "ADDRESS")]
        to: Option<String>,
    },
    /// API tokens for local users.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Database maintenance: `db copy` moves a store to another database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    #[command(flatten)]
    Client(elevate_cli::ClientCommand),
}

#[derive(Subcommand)]
enum DbCommand {
    /// Copy a whole store, with its history and audit chain, into a new,
    /// empty database (e.g. from SQLite to PostgreSQL). Stop elevate first.
    #[command(
        after_help = "Example:\n  elevate db copy --from sqlite:///var/lib/elevate/elevate.db \\\n    --to postgres://elevate@db.internal/elevate\n\n\
                      A PostgreSQL password can come from PGPASSWORD or ~/.pgpass instead of the URL."
    )]
    Copy {
        /// The store to copy: sqlite://PATH (elevate must not be running on
        /// it) or postgres://USER@HOST/DATABASE.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The new store: an empty database (a SQLite file is created if
        /// missing; a PostgreSQL database must exist).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token and the hash to put in the user's
    /// `token_hashes`.
    New,
    /// Print the hash of a token read from standard input.
    Hash,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ELEVATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn print_problems(file: &str, problems: &[elevate::config::Problem]) {
    for p in problems {
        eprintln!("{file}: {p}");
    }
}

async fn serve(
    config: Option<PathBuf>,
    dev: bool,
    listen: Option<String>,
    database: Option<String>,
) -> anyhow::Result<()> {
    let (mut config, label) = if dev {
        let listen = listen.clone().unwrap_or_else(|| "127.0.0.1:7070".into());
        let database = database
            .clone()
            .unwrap_or_else(|| "sqlite://elevate-dev.db".into());
        let text = elevate::dev::config_text(&database, &listen);
        let config = Config::parse(&text, None).map_err(|p| {
            print_problems("dev config", &p);
            anyhow::anyhow!("the built-in dev config is invalid")
        })?;
        if !config.settings.listen.ip().is_loopback() {
            anyhow::bail!("--dev uses fixed demo tokens and only listens on loopback addresses");
        }
        let mut config = config;
        config.settings.demo = true;
        (config, "dev".to_string())
    } else {
        let path =
            config.ok_or_else(|| anyhow::anyhow!("give --config FILE (or --dev for a demo)"))?;
        let label = path.display().to_string();
        let config = Config::load_file(&path).map_err(|p| {
            print_problems(&label, &p);
            anyhow::anyhow!(
                "{label}: the config has {} error(s); not starting",
                p.iter().filter(|p| !p.warning).count()
            )
        })?;
        (config, label)
    };
    for w in &config.warnings {
        tracing::warn!("{label}: {w}");
    }
    if let Some(l) = listen {
        config.settings.listen = l.parse().map_err(|_| {
            anyhow::anyhow!("--listen: \"{l}\" is not an address like 127.0.0.1:7070")
        })?;
    }
    if let Some(d) = database {
        config.settings.database = d;
    }
    let running = elevate::start(config.clone(), None).await?;
    if dev {
        let url = format!("http://{}", running.addr);
        println!(
            "elevate dev mode: dry-run target \"demo-db\", database {}",
            config.settings.database
        );
        println!("  export ELEVATE_URL={url}");
        for (name, group, token) in elevate::dev::USERS {
            println!("  {name:<6} group {group:<11} export ELEVATE_TOKEN={token}");
        }
        println!("  admins and auditors: group security (dave)");
    }
    running.wait(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// Discovery, keys and client credentials of the configured provider.
fn check_identity_provider(label: &str, settings: &elevate::oidc::OidcSettings) -> bool {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{label}: cannot start the network checks: {e}");
            return false;
        }
    };
    runtime.block_on(async {
        let oidc = match elevate::oidc::Oidc::new(settings.clone()) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("{label}: error: oidc: {e}");
                return false;
            }
        };
        if let Err(e) = oidc.discover().await {
            eprintln!("{label}: error: oidc.issuer: {e}");
            return false;
        }
        if let Err(e) = oidc.probe_client().await {
            eprintln!("{label}: error: oidc.client_secret: {e}");
            return false;
        }
        println!(
            "{label}: identity provider {} reachable; client credentials accepted",
            settings.issuer
        );
        true
    })
}

fn check_config(file: &std::path::Path, offline: bool) -> ExitCode {
    let label = file.display().to_string();
    match Config::load_file(file) {
        Ok(config) => {
            print_problems(&label, &config.warnings);
            if let (Some(oidc), false) = (&config.oidc, offline) {
                if !check_identity_provider(&label, oidc) {
                    return ExitCode::FAILURE;
                }
            }
            println!(
                "{label}: OK ({} users, {} targets, {} eligibilities, {} warning(s))",
                config.users.len(),
                config.connections.len(),
                config.eligibility_ids().len(),
                config.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            print_problems(&label, &problems);
            eprintln!(
                "{label}: {} error(s)",
                problems.iter().filter(|p| !p.warning).count()
            );
            ExitCode::FAILURE
        }
    }
}

/// The file a SQLite URL (or plain path) names; None for other engines
/// and in-memory databases.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if elevate_store::Engine::of_url(url).ok()? != elevate_store::Engine::Sqlite
        || url.contains(":memory:")
    {
        return None;
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Some(PathBuf::from(path))
}

/// `elevate db copy`: copies the store at `from` into the empty one at
/// `to` and prints what it copied. URLs are only ever shown redacted.
async fn db_copy(from: &str, to: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use elevate_store::{redact_url, Store};

    for (flag, url) in [("--from", from), ("--to", to)] {
        elevate_store::Engine::of_url(url).with_context(|| flag.to_owned())?;
    }
    if from == to {
        anyhow::bail!("--from and --to name the same database");
    }
    if let Some(path) = sqlite_file(from) {
        // Opening a missing file would create an empty store to copy.
        if !path.is_file() {
            anyhow::bail!("the source database {} does not exist", redact_url(from));
        }
    }
    let source = Store::open(from)
        .await
        .with_context(|| format!("cannot open the source database {}", redact_url(from)))?;
    let destination = Store::open(to)
        .await
        .with_context(|| format!("cannot open the destination database {}", redact_url(to)))?;
    let copied = elevate_store::copy::copy(&source, &destination).await;
    destination.close().await;
    source.close().await;
    let report = copied
        .with_context(|| format!("cannot copy {} to {}", redact_url(from), redact_url(to)))?;
    println!("copied {} to {}", redact_url(from), redact_url(to));
    for t in &report.tables {
        let plural = if t.rows == 1 { "" } else { "s" };
        println!("  {:<18} {:>9} row{plural}", t.table, t.rows);
    }
    if report.leases_cleared > 0 {
        println!(
            "  {} job lease(s) cleared: the jobs run as soon as elevate starts on the copy",
            report.leases_cleared
        );
    }
    println!(
        "audit events: {}, head {}",
        report.audit_events, report.audit_head
    );
    println!("audit chain verified");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file, offline } => check_config(&file, offline),
        Command::NotifyTest { file, to } => notify_test(&file, to.as_deref()),
        Command::Token {
            command: TokenCommand::New,
        } => {
            let (token, hash) = elevate::auth::new_token();
            println!("token: {token}");
            println!("token_hashes = [\"{hash}\"]");
            ExitCode::SUCCESS
        }
        Command::Token {
            command: TokenCommand::Hash,
        } => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() || line.trim().is_empty() {
                eprintln!("error: give the token on standard input");
                return ExitCode::FAILURE;
            }
            println!("{}", elevate::auth::token_hash(line.trim()));
            ExitCode::SUCCESS
        }
        Command::Serve {
            config,
            dev,
            listen,
            database,
        } => {
            init_logging();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config, dev, listen, database)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Db {
            command: DbCommand::Copy { from, to },
        } => {
            let runtime = match one_thread_runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(db_copy(&from, &to)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client(command) => {
            let runtime = match one_thread_runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(elevate_cli::run(cli.client, command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn notify_test(file: &std::path::Path, to: Option<&str>) -> ExitCode {
    let config = match elevate::config::Config::load_file(file) {
        Ok(c) => c,
        Err(problems) => {
            print_problems(&file.display().to_string(), &problems);
            return ExitCode::FAILURE;
        }
    };
    let n = &config.notifications;
    if !n.any_channel() && n.webhooks.is_empty() {
        eprintln!(
            "error: {} configures no notification channel",
            file.display()
        );
        return ExitCode::FAILURE;
    }
    let runtime = match one_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let public_url = config
        .settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.settings.listen));
    let outcomes = runtime.block_on(elevate::notify::run::send_test(n, to, &public_url));
    let mut failed = false;
    for (channel, outcome) in outcomes {
        match outcome {
            Ok(()) => println!("{channel}: sent"),
            Err(why) => {
                failed = true;
                eprintln!("error: {channel}: {why}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The runtime of a one-shot command (client calls, `db copy`): one thread
/// is plenty. On failure the error line is printed already.
fn one_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}
