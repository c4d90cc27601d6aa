//! elevate: a self-hosted just-in-time privileged access broker.
//!
//! - [`config`]: the one config file, parsed and checked (`check-config`).
//! - [`auth`]: turning an API token into a principal.
//! - [`engine`]: where a request becomes a grant — the broker, the
//!   deadline scheduler and the provider job worker.
//! - [`api`]: the HTTP JSON API; [`error`] maps failures to responses.
//! - [`metrics`]: Prometheus text at `/metrics`.
//! - [`dev`]: the `serve --dev` demo setup.
//! - [`openapi`]: the API description served at `/api/v1/openapi.json`.
//! - [`tickets`]: asking a change/incident system whether a ticket is
//!   open (`ticket_system` on an eligibility).

pub mod api;
pub mod auth;
pub mod config;
pub mod dev;
pub mod discovery;
pub mod engine;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod notify;
pub mod oidc;
pub mod openapi;
pub mod sessions;
pub mod tickets;
pub mod web;
pub mod web_auth;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use elevate_core::values::Name;
use elevate_providers::dry_run::DryRun;
use elevate_providers::postgres::PostgresProvider;
use elevate_providers::Provider;
use elevate_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::auth::Directory;
use crate::config::{Config, TargetConnection};
use crate::engine::Broker;
use crate::metrics::Metrics;

/// A shutdown signal every background task waits on.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// A running elevate: HTTP server, scheduler and worker.
pub struct Running {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting requests, lets in-flight work finish, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.broker.store.close().await;
    }

    /// Waits until a task ends on its own (it should not) or `stop` fires.
    pub async fn wait(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::select! {
            _ = stop => {}
            _ = self.tasks.join_next() => {
                tracing::error!("a background task ended unexpectedly; shutting down");
            }
        }
        self.shutdown().await;
    }
}

/// How long start-up waits for the identity provider's discovery and client
/// check before going on without them. Long enough for a healthy provider
/// (so sign-ins right after start find it discovered), short enough that a
/// provider that does not answer delays revocations only a little.
const STARTUP_PROVIDER_WAIT: Duration = Duration::from_secs(3);

/// Discovery and the client-credentials probe, logged: what start-up
/// learns about the identity provider.
async fn check_identity_provider(oidc: Arc<oidc::Oidc>) {
    let issuer = oidc.settings.issuer.clone();
    if let Err(e) = oidc.discover().await {
        tracing::error!(%issuer, error = %e, "identity provider not usable; sign-ins fail until it is");
    } else if let Err(e) = oidc.probe_client().await {
        tracing::error!(%issuer, error = %e, "identity provider refuses elevate's client");
    }
}

/// Builds the broker from a checked config: opens the store, resolves
/// eligibility validity, creates one provider per target.
pub async fn build_broker(config: &Config) -> anyhow::Result<Broker> {
    let store = Store::open(&config.settings.database)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                elevate_store::redact_url(&config.settings.database)
            )
        })?;
    // Single process owns the SQLite file: leases left by a crashed run
    // would only delay catching up (a no-op on a shared PostgreSQL store).
    let released = store.release_all_leases().await?;
    if released > 0 {
        tracing::info!(jobs = released, "released jobs held by a previous run");
    }
    let now = chrono::Utc::now();
    let first_seen: HashMap<String, chrono::DateTime<chrono::Utc>> = store
        .eligibility_first_seen(&config.eligibility_ids(), now)
        .await?
        .into_iter()
        .collect();
    let catalog = Arc::new(config.catalog(&first_seen, now));
    let oidc = match &config.oidc {
        Some(settings) => {
            let oidc = Arc::new(oidc::Oidc::new(settings.clone()).map_err(anyhow::Error::msg)?);
            // A provider that is down must not keep elevate from revoking
            // grants: start anyway, say why loudly, and discover again on
            // first use (a sign-in or a bearer token). One that does not
            // answer at all would hold the start for a timeout per call
            // (discovery, keys, probe), so the check is waited for only
            // briefly and finishes, and logs, in the background.
            let check = tokio::spawn(check_identity_provider(oidc.clone()));
            if tokio::time::timeout(STARTUP_PROVIDER_WAIT, check)
                .await
                .is_err()
            {
                tracing::warn!(
                    issuer = %settings.issuer,
                    "identity provider has not answered within {}s; starting without waiting for it",
                    STARTUP_PROVIDER_WAIT.as_secs()
                );
            }
            Some(oidc)
        }
        None => None,
    };
    let notifier = Arc::new(
        notify::run::Notifier::new(config.notifications.clone(), &store)
            .await
            .context("cannot set up notifications")?,
    );
    let mut providers: BTreeMap<_, Arc<dyn Provider>> = BTreeMap::new();
    for (id, connection) in &config.connections {
        let provider: Arc<dyn Provider> = match connection {
            TargetConnection::DryRun => Arc::new(DryRun::new()),
            TargetConnection::Postgres(pg) => Arc::new(
                PostgresProvider::new(pg.clone())
                    .map_err(|e| anyhow::anyhow!("target {id}: {e}"))?,
            ),
            #[cfg(feature = "aws")]
            TargetConnection::AwsSts(aws) => Arc::new(
                elevate_providers::aws_sts::AwsSts::new(aws.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("target {id}: {e}"))?,
            ),
            #[cfg(feature = "aws")]
            TargetConnection::AwsIdentityCenter(ic) => Arc::new(
                elevate_providers::aws_identity_center::AwsIdentityCenter::new(ic.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("target {id}: {e}"))?,
            ),
            // The config loader refuses the kinds in a build without AWS.
            #[cfg(not(feature = "aws"))]
            TargetConnection::AwsSts(_) | TargetConnection::AwsIdentityCenter(_) => {
                anyhow::bail!("target {id}: this build of elevate lacks AWS support")
            }
        };
        providers.insert(id.clone(), provider);
    }
    Ok(Broker {
        store,
        catalog_now: std::sync::RwLock::new(catalog.clone()),
        catalog_config: catalog,
        discovery: config.discovery.clone(),
        inventory_seen: std::sync::Mutex::new(BTreeMap::new()),
        directory: Directory::new(config.users.clone()),
        oidc,
        public_url: config
            .settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.settings.listen)),
        providers,
        metrics: Arc::new(Metrics::default()),
        scheduler_wake: Notify::new(),
        worker_wake: Notify::new(),
        retry_max_backoff: Duration::from_secs(config.settings.retry_max_backoff.secs()),
        job_lease: Duration::from_secs(config.settings.job_lease.secs()),
        demo: config.settings.demo,
        audit_checked: tokio::sync::Mutex::new(None),
        ticket_systems: config
            .ticket_systems
            .iter()
            .map(|t| {
                tickets::TicketSystem::new(t.clone())
                    .map(|system| (t.name.clone(), Arc::new(system)))
                    .map_err(anyhow::Error::msg)
            })
            .collect::<anyhow::Result<_>>()?,
        // A notice nobody receives would only lengthen the audit trail.
        ending_soon: config
            .notifications
            .ending_soon
            .filter(|_| {
                config.notifications.any_channel() || !config.notifications.webhooks.is_empty()
            })
            .map(|s| s.as_chrono()),
        notifier,
    })
}

/// Starts elevate on `listener` (or on the configured address).
pub async fn start(config: Config, listener: Option<TcpListener>) -> anyhow::Result<Running> {
    start_with(config, listener, BTreeMap::new()).await
}

/// Like [`start`], with some targets' providers given instead of built
/// from the config: tests put a fault-injecting wrapper around a real
/// client this way.
pub async fn start_with(
    mut config: Config,
    listener: Option<TcpListener>,
    providers: BTreeMap<Name, Arc<dyn Provider>>,
) -> anyhow::Result<Running> {
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(config.settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.settings.listen))?,
    };
    let addr = listener.local_addr()?;
    // Sign-in redirects need the address really bound (port 0 in tests).
    if config.settings.public_url.is_none() {
        config.settings.public_url = Some(format!("http://{addr}"));
    }
    let mut broker = build_broker(&config).await?;
    broker.providers.extend(providers);
    // Listings and decisions work from the last known tree at once; the
    // discovery loop reads the targets again in the background.
    discovery::load_stored(&broker).await;
    let broker = Arc::new(broker);
    let (stop, rx) = watch::channel(false);
    let shutdown = Shutdown(rx);
    let mut tasks = JoinSet::new();

    // Check every target in the background: a target that is down must
    // not keep the broker (and the removal of other grants) from starting.
    for (id, provider) in broker.providers.clone() {
        let done = shutdown.clone();
        tasks.spawn(async move {
            match provider.validate().await {
                Ok(problems) if problems.is_empty() => {
                    tracing::info!(target_id = %id, kind = provider.kind(), "target ready")
                }
                Ok(problems) => {
                    for p in problems {
                        tracing::warn!(target_id = %id, problem = %p, "target misconfigured");
                    }
                }
                Err(e) => tracing::warn!(target_id = %id, error = %e, "target not reachable yet; grants will be retried"),
            }
            // Ending early would read as "a background task died".
            done.wait().await;
        });
    }
    // Other replicas on the same PostgreSQL announce new jobs and moved
    // deadlines; without this a deadline set through another replica would
    // wait for the next idle re-check here.
    let woken = broker.clone();
    let done = shutdown.clone();
    tasks.spawn(async move {
        let wake = || {
            woken.scheduler_wake.notify_one();
            woken.worker_wake.notify_one();
            woken.notifier.events_written();
        };
        tokio::select! {
            _ = woken.store.watch_wakeups(wake) => {}
            _ = done.wait() => return,
        }
        // SQLite: nothing to watch. Ending early would read as "a
        // background task died".
        done.wait().await;
    });
    tasks.spawn(broker.clone().run_scheduler(shutdown.clone()));
    tasks.spawn(broker.clone().run_worker(shutdown.clone()));
    tasks.spawn(notify::run::run_planner(broker.clone(), shutdown.clone()));
    tasks.spawn(notify::run::run_webhooks(broker.clone(), shutdown.clone()));
    tasks.spawn(notify::run::run_sender(broker.clone(), shutdown.clone()));
    tasks.spawn(discovery::run_discovery(broker.clone(), shutdown.clone()));
    let app = api::router(broker.clone(), config.settings.max_body_bytes);
    let http_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(%addr, "elevate is listening");
    Ok(Running {
        addr,
        broker,
        stop,
        tasks,
    })
}
