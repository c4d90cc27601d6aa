//! A provider that changes nothing and records what it would have done.
//! Used by `elevate serve --dev` and for trying elevate out; every listing
//! labels its grants as dry-run.

use std::collections::BTreeSet;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::{GrantSpec, Presence, Provider, ProviderError};

#[derive(Debug, Default)]
pub struct DryRun {
    /// The grants that would be on the target now, by grant key.
    present: Mutex<BTreeSet<String>>,
    /// Every call, in order, so tests and demos can show what happened.
    log: Mutex<Vec<String>>,
}

impl DryRun {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the provider was asked to do, oldest first.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn record(&self, line: String) {
        tracing::info!(target: "elevate::dry_run", "{line}");
        if let Ok(mut log) = self.log.lock() {
            log.push(line);
        }
    }
}

#[async_trait]
impl Provider for DryRun {
    fn kind(&self) -> &'static str {
        "dry-run"
    }

    fn is_dry_run(&self) -> bool {
        true
    }

    fn grant_key(&self, g: &GrantSpec) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            g.target, g.resource, g.role, g.user
        )
    }

    async fn apply(&self, g: &GrantSpec) -> Result<(), ProviderError> {
        self.record(format!(
            "dry-run: would grant {} on {}/{} to {} ({})",
            g.role, g.target, g.resource, g.user, g.request_id
        ));
        if let Ok(mut p) = self.present.lock() {
            p.insert(self.grant_key(g));
        }
        Ok(())
    }

    async fn remove(&self, g: &GrantSpec) -> Result<(), ProviderError> {
        self.record(format!(
            "dry-run: would revoke {} on {}/{} from {} ({})",
            g.role, g.target, g.resource, g.user, g.request_id
        ));
        if let Ok(mut p) = self.present.lock() {
            p.remove(&self.grant_key(g));
        }
        Ok(())
    }

    async fn check(&self, g: &GrantSpec) -> Result<Presence, ProviderError> {
        let present = self
            .present
            .lock()
            .map(|p| p.contains(&self.grant_key(g)))
            .unwrap_or(false);
        Ok(if present {
            Presence::Present
        } else {
            Presence::Absent
        })
    }

    async fn validate(&self) -> Result<Vec<String>, ProviderError> {
        Ok(Vec::new())
    }
}
