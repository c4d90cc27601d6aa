//! Targets that discover their resources (IAM Identity Center: the
//! Organization's OU tree, account names and tags, permission sets).
//!
//! - **The catalog is replaced whole.** Decisions and listings read the
//!   in-memory [`Catalog`]; a refresh builds a new one with the target's
//!   new tree and swaps it in, so a decision never sees half a tree and
//!   never waits for AWS.
//! - **The store holds the last good inventory** (`inventories`), so a
//!   restart or another replica lists resources at once. Each replica
//!   asks every few seconds when the stored one was read (one indexed
//!   read) and takes it when newer than its own; whichever replica finds
//!   it older than `refresh` reads the target again (a slower, older read
//!   never overwrites a newer one). A failed read keeps the last good tree
//!   and is recorded beside it.
//! - **Reconciliation** lists every assignment of the permission sets
//!   elevate hands out (the roles its eligibilities name) and reports each
//!   one no approved, active or ending grant accounts for: access given
//!   outside elevate. With `reconcile = "remove"` it also takes them away,
//!   after checking once more, for each, that no grant appeared
//!   meanwhile. One replica per period runs it (a claim in the store); the
//!   last report is kept with the inventory.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use elevate_core::policy::{Catalog, Resource};
use elevate_core::values::Name;
use elevate_core::Timestamp;
use elevate_providers::{Assignment, Inventory, Provider};
use elevate_store::RequestFilter;
use serde::{Deserialize, Serialize};

use crate::config::ReconcileMode;
use crate::engine::Broker;
use crate::error::ApiError;

/// How often a replica looks at the store for a newer inventory or a due
/// refresh or reconciliation.
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// What a refresh found, for the API and the CLI.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshSummary {
    pub target: String,
    pub refreshed_at: Timestamp,
    pub accounts: usize,
    pub organizational_units: usize,
    pub roles: usize,
    /// Accounts present but never granted, with the reason.
    pub refused: BTreeMap<String, String>,
}

/// One assignment no grant accounts for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    #[serde(flatten)]
    pub assignment: Assignment,
    /// The account's name, when the inventory has it.
    pub resource_name: Option<String>,
    /// True once elevate removed it (`reconcile = "remove"`).
    pub removed: bool,
    /// Why removing it failed.
    pub error: Option<String>,
}

/// The outcome of one reconciliation of a target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub target: String,
    pub at: Timestamp,
    /// `report` or `remove`.
    pub mode: String,
    /// The permission sets looked at: those elevate's eligibilities hand out.
    pub roles: Vec<String>,
    /// Assignments of those roles found on the target.
    pub assignments: usize,
    /// Those no grant accounts for.
    pub unmanaged: Vec<Finding>,
}

/// The resources and roles of an inventory, as the catalog holds them.
/// Only accounts are granted; OUs and roots are there for `under`
/// selectors and for the tree people browse.
pub fn catalog_parts(inventory: &Inventory) -> (BTreeMap<Name, Resource>, BTreeSet<Name>) {
    let mut resources = BTreeMap::new();
    for found in &inventory.resources {
        let Ok(id) = Name::parse("resource", &found.id) else {
            tracing::warn!(resource = %found.id, "skipping a resource whose id elevate cannot use");
            continue;
        };
        let parent = found
            .parent
            .as_deref()
            .and_then(|p| Name::parse("resource", p).ok());
        let not_grantable = match (found.kind.as_str(), inventory.refused.get(&found.id)) {
            (_, Some(reason)) => Some(reason.clone()),
            ("account", None) => None,
            ("root", None) => {
                Some("the organization root: access is granted in its accounts".into())
            }
            (_, None) => Some("an organizational unit: access is granted in its accounts".into()),
        };
        resources.insert(
            id.clone(),
            Resource {
                id,
                parent,
                tags: found.tags.clone(),
                description: found.name.clone(),
                not_grantable,
            },
        );
    }
    let roles = inventory
        .roles
        .keys()
        .filter_map(|r| match Name::parse("role", r) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(role = %r, error = %e, "skipping a role whose name elevate cannot use");
                None
            }
        })
        .collect();
    (resources, roles)
}

/// A stored document elevate cannot read or write back: a server-side
/// failure (500), with the details in the log only.
fn corrupt(message: String) -> ApiError {
    ApiError::Store(elevate_store::StoreError::Corrupt(message))
}

/// Whether a grant in `holders` accounts for `a`. Grants go to users
/// only: a group assignment is never elevate's.
fn held_in(holders: &HashSet<(String, String, String)>, a: &Assignment) -> bool {
    a.principal_type == "USER"
        && holders.contains(&(a.resource.clone(), a.role.clone(), a.principal_id.clone()))
}

/// The states in which a grant may hold its assignment on the target:
/// being applied, active, being removed.
const HOLDING_STATES: [&str; 3] = ["approved", "active", "ending"];

impl Broker {
    /// The catalog as it is now. Callers keep the `Arc` for the whole of
    /// one decision, so a refresh in between cannot mix two trees.
    pub fn catalog(&self) -> Arc<Catalog> {
        match self.catalog_now.read() {
            Ok(c) => c.clone(),
            // A panic while swapping cannot leave a half-written Arc.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `inventory` into the catalog and hands it to the provider.
    pub fn install_inventory(&self, target: &Name, inventory: &Inventory) {
        if let Some(provider) = self.providers.get(target) {
            provider.adopt(inventory);
        }
        let (resources, roles) = catalog_parts(inventory);
        let low_risk = self
            .catalog_config
            .targets
            .get(target)
            .map(|t| t.low_risk_roles.clone())
            .unwrap_or_default();
        let mut cell = match self.catalog_now.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = cell.with_inventory(target, resources, roles, &low_risk);
        *cell = Arc::new(next);
    }

    /// Reads `target` again, stores the inventory and installs it. A
    /// failure is recorded beside the last good inventory, which stays.
    pub async fn refresh_target(&self, target: &Name) -> Result<RefreshSummary, ApiError> {
        let provider = self.discovering(target)?;
        let now = Utc::now();
        let inventory = match provider.discover().await {
            Ok(inv) => inv,
            Err(e) => {
                tracing::warn!(target_id = %target, error = %e, "reading the target's inventory failed; keeping the last one");
                self.store
                    .inventory_failed(target.as_str(), &e.to_string(), now)
                    .await?;
                return Err(ApiError::client(
                    reqwest::StatusCode::BAD_GATEWAY,
                    "target_unavailable",
                    format!("reading target \"{target}\" failed: {e}"),
                ));
            }
        };
        let doc = serde_json::to_string(&inventory)
            .map_err(|e| corrupt(format!("cannot encode the inventory: {e}")))?;
        if self
            .store
            .save_inventory(target.as_str(), &doc, now)
            .await?
        {
            self.install_inventory(target, &inventory);
            self.note_installed(target, now);
        } else {
            // A newer read (another replica's) is stored: use that one.
            self.take_stored(target).await?;
        }
        let count = |kind: &str| {
            inventory
                .resources
                .iter()
                .filter(|r| r.kind == kind)
                .count()
        };
        tracing::info!(target_id = %target, accounts = count("account"), roles = inventory.roles.len(), "target inventory refreshed");
        Ok(RefreshSummary {
            target: target.to_string(),
            refreshed_at: now,
            accounts: count("account"),
            organizational_units: count("ou"),
            roles: inventory.roles.len(),
            refused: inventory.refused.clone(),
        })
    }

    /// The provider of a target that discovers its resources; 404 for any
    /// other name.
    fn discovering(&self, target: &Name) -> Result<Arc<dyn Provider>, ApiError> {
        self.providers
            .get(target)
            .filter(|p| p.discovers())
            .cloned()
            .ok_or_else(|| {
                ApiError::client(
                    reqwest::StatusCode::NOT_FOUND,
                    "not_discovering",
                    format!("\"{target}\" is not a target that discovers its resources"),
                )
            })
    }

    fn note_installed(&self, target: &Name, at: Timestamp) {
        if let Ok(mut seen) = self.inventory_seen.lock() {
            seen.insert(target.clone(), at);
        }
    }

    fn installed_at(&self, target: &Name) -> Option<Timestamp> {
        self.inventory_seen
            .lock()
            .ok()
            .and_then(|seen| seen.get(target).copied())
    }

    /// Installs the stored inventory of `target` when it is newer than
    /// the one installed here. True when one was installed.
    async fn take_stored(&self, target: &Name) -> Result<bool, ApiError> {
        // The cheap question first: the document itself is large (some
        // hundred kilobytes for a thousand accounts) and rarely new.
        let stored_at = self.store.inventory_refreshed_at(target.as_str()).await?;
        let installed = self.installed_at(target);
        if stored_at.is_none() || installed.is_some_and(|at| Some(at) >= stored_at) {
            return Ok(false);
        }
        let Some(cached) = self.store.inventory(target.as_str()).await? else {
            return Ok(false);
        };
        if self
            .installed_at(target)
            .is_some_and(|at| at >= cached.refreshed_at)
        {
            return Ok(false);
        }
        let inventory: Inventory = serde_json::from_str(&cached.doc).map_err(|e| {
            corrupt(format!(
                "the stored inventory of {target} is unreadable: {e}"
            ))
        })?;
        self.install_inventory(target, &inventory);
        self.note_installed(target, cached.refreshed_at);
        Ok(true)
    }

    /// The roles reconciliation looks at: those the eligibilities of
    /// `target` hand out and the target has.
    fn managed_roles(&self, target: &Name) -> Vec<String> {
        let catalog = self.catalog();
        let Some(t) = catalog.targets.get(target) else {
            return Vec::new();
        };
        let named: BTreeSet<&Name> = catalog
            .eligibilities
            .iter()
            .filter(|e| &e.target == target)
            .flat_map(|e| e.roles.iter())
            .filter(|r| t.roles.contains(*r))
            .collect();
        named.into_iter().map(|r| r.to_string()).collect()
    }

    /// (resource, role, principal id) of every grant of `target` that may
    /// hold its assignment now.
    async fn holders(
        &self,
        target: &Name,
        provider: &dyn Provider,
    ) -> Result<HashSet<(String, String, String)>, ApiError> {
        let rows = self
            .store
            .list_requests(&RequestFilter {
                states: HOLDING_STATES.iter().map(|s| s.to_string()).collect(),
                limit: Some(i64::MAX),
                ..Default::default()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter(|s| &s.request.target == target)
            .filter_map(|s| {
                let account = s.account?;
                Some((
                    s.request.resource.to_string(),
                    s.request.role.to_string(),
                    provider.principal_of(&account),
                ))
            })
            .collect())
    }

    /// Lists the assignments of the managed roles on `target`, reports
    /// those no grant accounts for and, with `reconcile = "remove"`,
    /// removes them. The report is stored with the inventory.
    pub async fn reconcile_target(&self, target: &Name) -> Result<ReconcileReport, ApiError> {
        let mode = self
            .discovery
            .get(target)
            .map(|d| d.reconcile)
            .unwrap_or(ReconcileMode::Off);
        let provider = self.discovering(target)?;
        let roles = self.managed_roles(target);
        // Grants are read before and after the (slow) listing: an
        // assignment seen during it belongs to a grant that held it at
        // one of the two moments, unless its whole life fitted in between.
        let before = self.holders(target, provider.as_ref()).await?;
        let found = provider
            .assignments(&roles)
            .await
            .map_err(|e| {
                ApiError::client(
                    reqwest::StatusCode::BAD_GATEWAY,
                    "target_unavailable",
                    format!("listing the assignments of target \"{target}\" failed: {e}"),
                )
            })?
            .unwrap_or_default();
        let after = self.holders(target, provider.as_ref()).await?;
        let catalog = self.catalog();
        let names = catalog.targets.get(target);
        let mut unmanaged = Vec::new();
        for a in &found {
            if held_in(&before, a) || held_in(&after, a) {
                continue;
            }
            let resource_name = names.and_then(|t| {
                Name::parse("resource", &a.resource)
                    .ok()
                    .and_then(|n| t.resources.get(&n).and_then(|r| r.description.clone()))
            });
            tracing::warn!(target_id = %target, account = %a.resource, role = %a.role, principal_type = %a.principal_type,
                principal = %a.principal_name.as_deref().unwrap_or(&a.principal_id), "assignment not given through elevate");
            unmanaged.push(Finding {
                assignment: a.clone(),
                resource_name,
                removed: false,
                error: None,
            });
        }
        if mode == ReconcileMode::Remove && !unmanaged.is_empty() {
            for f in &mut unmanaged {
                let a = &f.assignment;
                // Again just before each removal: a grant approved since
                // the listing keeps its assignment. The provider runs one
                // change per account at a time, so a grant applied after
                // this check finds the assignment gone and creates it.
                if held_in(&self.holders(target, provider.as_ref()).await?, a) {
                    continue;
                }
                match provider.remove_assignment(a).await {
                    Ok(()) => {
                        f.removed = true;
                        tracing::warn!(target_id = %target, account = %a.resource, role = %a.role, principal = %a.principal_id, "removed an assignment not given through elevate");
                    }
                    Err(e) => {
                        tracing::error!(target_id = %target, account = %a.resource, role = %a.role, error = %e, "could not remove an assignment not given through elevate");
                        f.error = Some(e.to_string());
                    }
                }
            }
        }
        let report = ReconcileReport {
            target: target.to_string(),
            at: Utc::now(),
            mode: match mode {
                ReconcileMode::Remove => "remove",
                _ => "report",
            }
            .into(),
            roles,
            assignments: found.len(),
            unmanaged,
        };
        // Into the audit trail (and so to signed webhooks) when something
        // changed since the last report: a new finding, one gone, or a
        // removal. A finding that stays is not repeated every period.
        let key = |f: &Finding| {
            let a = &f.assignment;
            (
                a.resource.clone(),
                a.role.clone(),
                a.principal_type.clone(),
                a.principal_id.clone(),
            )
        };
        let before: BTreeSet<_> = self
            .last_reconciliation(target)
            .await
            .ok()
            .flatten()
            .map(|r| r.unmanaged.iter().filter(|f| !f.removed).map(key).collect())
            .unwrap_or_default();
        let now_set: BTreeSet<_> = report
            .unmanaged
            .iter()
            .filter(|f| !f.removed)
            .map(key)
            .collect();
        let removed = report.unmanaged.iter().any(|f| f.removed);
        if before != now_set || removed {
            let mut tx = self.store.begin().await?;
            tx.append_target_audit(
                elevate_core::request::Action::TargetUnmanagedAccess,
                report.at,
                &serde_json::json!({
                    "target": report.target,
                    "mode": report.mode,
                    "assignments": report.assignments,
                    "unmanaged": report.unmanaged,
                    "newly_found": now_set.difference(&before).count(),
                }),
            )
            .await?;
            tx.commit().await?;
            self.notifier.events_written();
        }
        let doc = serde_json::to_string(&report)
            .map_err(|e| corrupt(format!("cannot encode the report: {e}")))?;
        self.store
            .save_reconciliation(target.as_str(), &doc, report.at)
            .await?;
        Ok(report)
    }

    /// The last stored reconciliation report of `target`.
    pub async fn last_reconciliation(
        &self,
        target: &Name,
    ) -> Result<Option<ReconcileReport>, ApiError> {
        let Some((_, doc)) = self.store.reconciliation(target.as_str()).await? else {
            return Ok(None);
        };
        serde_json::from_str(&doc)
            .map(Some)
            .map_err(|e| corrupt(format!("the stored report is unreadable: {e}")))
    }
}

/// Reads the cached inventories at start (so listings work before any
/// target answers), then keeps every discovering target fresh: takes
/// newer inventories stored by other replicas, refreshes when the stored
/// one is older than `refresh`, reconciles every `reconcile_every`.
pub async fn run_discovery(broker: Arc<Broker>, shutdown: crate::Shutdown) {
    if broker.discovery.is_empty() {
        shutdown.wait().await;
        return;
    }
    // Targets that keep failing are asked again after a while, not every
    // few seconds.
    let mut failed_at: BTreeMap<Name, Timestamp> = BTreeMap::new();
    // Each target is read once at start whatever the age of the stored
    // inventory: the config may have changed what it should hold (which
    // permission sets, whether the management account is granted).
    let mut read_since_start: BTreeSet<Name> = BTreeSet::new();
    let resting = |map: &BTreeMap<Name, Timestamp>, target: &Name, now: Timestamp| {
        map.get(target)
            .is_some_and(|at| now - *at < chrono::Duration::seconds(60))
    };
    loop {
        for (target, settings) in &broker.discovery {
            if let Err(e) = broker.take_stored(target).await {
                tracing::warn!(target_id = %target, error = %e, "cannot read the stored inventory");
            }
            let now = Utc::now();
            let stored = broker
                .store
                .inventory_refreshed_at(target.as_str())
                .await
                .ok()
                .flatten();
            let due = !read_since_start.contains(target)
                || stored.is_none_or(|at| now - at >= settings.refresh.as_chrono());
            if due && !resting(&failed_at, target, now) {
                match broker.refresh_target(target).await {
                    Ok(_) => {
                        failed_at.remove(target);
                        read_since_start.insert(target.clone());
                    }
                    Err(_) => {
                        failed_at.insert(target.clone(), now);
                    }
                }
            }
            if settings.reconcile == ReconcileMode::Off || broker.installed_at(target).is_none() {
                continue;
            }
            // One replica per period: the claim moves the period on, so a
            // failed run is tried again only after `reconcile_every`
            // (or at once with `elevate targets reconcile`).
            let period = settings.reconcile_every.as_chrono();
            match broker
                .store
                .claim_reconciliation(target.as_str(), now, now - period)
                .await
            {
                Ok(true) => {
                    if let Err(e) = broker.reconcile_target(target).await {
                        tracing::warn!(target_id = %target, error = %e, "reconciliation failed; next try in one period");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(target_id = %target, error = %e, "cannot claim the reconciliation")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Installs the stored inventories before the broker serves anything.
pub async fn load_stored(broker: &Broker) {
    for target in broker.discovery.keys() {
        match broker.take_stored(target).await {
            Ok(true) => tracing::info!(target_id = %target, "target inventory read from the store"),
            Ok(false) => {
                tracing::info!(target_id = %target, "no stored inventory yet; reading the target")
            }
            Err(e) => {
                tracing::warn!(target_id = %target, error = %e, "cannot read the stored inventory")
            }
        }
    }
}
