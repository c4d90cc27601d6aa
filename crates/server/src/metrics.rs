//! Prometheus metrics. Counters of this process live here; gauges that
//! describe stored state (requests by state, queued jobs) are read from the
//! database at scrape time, so they are right after a restart too.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use elevate_store::Store;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Audit actions seen by this process.
    transitions: Mutex<BTreeMap<String, u64>>,
    /// HTTP responses by status code.
    http: Mutex<BTreeMap<u16, u64>>,
    /// Provider calls by (job kind, outcome) made by this process.
    attempts: Mutex<BTreeMap<(String, String), u64>>,
    /// How late the last deadline was handled, in milliseconds.
    last_lateness_ms: AtomicI64,
    max_lateness_ms: AtomicI64,
    deadlines_handled: AtomicU64,
    scheduler_errors: AtomicU64,
    /// Notification attempts by (channel kind, outcome) made by this
    /// process: `sent`, `retry`, `abandoned`.
    notifications: Mutex<BTreeMap<(String, String), u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key).or_insert(0) += 1;
    }
}

/// Label values are config-controlled names: escape them per the text format.
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn transition(&self, action: &str) {
        bump(&self.transitions, action.to_owned());
    }
    pub fn http_response(&self, status: u16) {
        bump(&self.http, status);
    }
    pub fn job_attempt(&self, kind: &str, outcome: &str) {
        bump(&self.attempts, (kind.to_owned(), outcome.to_owned()));
    }
    pub fn deadline_handled(&self, lateness_ms: i64) {
        let l = lateness_ms.max(0);
        self.last_lateness_ms.store(l, Ordering::Relaxed);
        self.max_lateness_ms.fetch_max(l, Ordering::Relaxed);
        self.deadlines_handled.fetch_add(1, Ordering::Relaxed);
    }
    pub fn notification(&self, channel: &str, outcome: &str) {
        bump(
            &self.notifications,
            (channel.to_owned(), outcome.to_owned()),
        );
    }
    pub fn scheduler_error(&self) {
        self.scheduler_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP elevate_requests Requests by lifecycle state.");
        let _ = writeln!(out, "# TYPE elevate_requests gauge");
        let mut active = 0;
        if let Ok(states) = store.count_by_state().await {
            for (state, n) in states {
                if state == "active" {
                    active = n;
                }
                let _ = writeln!(out, "elevate_requests{{state=\"{}\"}} {n}", label(&state));
            }
        }
        let _ = writeln!(
            out,
            "# HELP elevate_grants_active Grants currently active on their targets."
        );
        let _ = writeln!(out, "# TYPE elevate_grants_active gauge");
        let _ = writeln!(out, "elevate_grants_active {active}");
        if let Ok((queued, failing)) = store.job_backlog().await {
            let _ = writeln!(
                out,
                "# HELP elevate_jobs_queued Provider jobs waiting or running."
            );
            let _ = writeln!(out, "# TYPE elevate_jobs_queued gauge");
            let _ = writeln!(out, "elevate_jobs_queued {queued}");
            let _ = writeln!(
                out,
                "# HELP elevate_jobs_failing Queued provider jobs that failed at least once."
            );
            let _ = writeln!(out, "# TYPE elevate_jobs_failing gauge");
            let _ = writeln!(out, "elevate_jobs_failing {failing}");
        }
        let _ = writeln!(out, "# HELP elevate_job_attempts_total Provider calls by job kind and outcome (retry = failed and rescheduled), over the whole history.");
        let _ = writeln!(out, "# TYPE elevate_job_attempts_total counter");
        if let Ok(counts) = store.attempt_counts().await {
            for (kind, outcome, n) in counts {
                let _ = writeln!(
                    out,
                    "elevate_job_attempts_total{{kind=\"{}\",outcome=\"{}\"}} {n}",
                    label(&kind),
                    label(&outcome)
                );
            }
        }
        let retries: u64 = self
            .attempts
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((_, o), _)| o == "retry")
                    .map(|(_, n)| *n)
                    .sum()
            })
            .unwrap_or(0);
        let _ = writeln!(out, "# HELP elevate_job_retries_total Provider calls that failed and were rescheduled, since this process started.");
        let _ = writeln!(out, "# TYPE elevate_job_retries_total counter");
        let _ = writeln!(out, "elevate_job_retries_total {retries}");
        let _ = writeln!(
            out,
            "# HELP elevate_scheduler_lag_seconds How late the most recent deadline was handled."
        );
        let _ = writeln!(out, "# TYPE elevate_scheduler_lag_seconds gauge");
        let _ = writeln!(
            out,
            "elevate_scheduler_lag_seconds {:.3}",
            self.last_lateness_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "# HELP elevate_scheduler_lag_max_seconds The latest any deadline was handled since start (includes catching up after downtime).");
        let _ = writeln!(out, "# TYPE elevate_scheduler_lag_max_seconds gauge");
        let _ = writeln!(
            out,
            "elevate_scheduler_lag_max_seconds {:.3}",
            self.max_lateness_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "# HELP elevate_deadlines_handled_total Deadlines (timeouts, starts, ends) handled since start.");
        let _ = writeln!(out, "# TYPE elevate_deadlines_handled_total counter");
        let _ = writeln!(
            out,
            "elevate_deadlines_handled_total {}",
            self.deadlines_handled.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE elevate_scheduler_errors_total counter");
        let _ = writeln!(
            out,
            "elevate_scheduler_errors_total {}",
            self.scheduler_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP elevate_transitions_total Lifecycle events recorded since start, by audit action.");
        let _ = writeln!(out, "# TYPE elevate_transitions_total counter");
        if let Ok(m) = self.transitions.lock() {
            for (action, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "elevate_transitions_total{{action=\"{}\"}} {n}",
                    label(action)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP elevate_http_responses_total API responses by status code."
        );
        let _ = writeln!(out, "# TYPE elevate_http_responses_total counter");
        if let Ok(m) = self.http.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "elevate_http_responses_total{{status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP elevate_notification_outcomes_total Notification attempts by channel (email, chat, webhook) and outcome (sent, retry = failed and rescheduled, abandoned), since this process started.");
        let _ = writeln!(out, "# TYPE elevate_notification_outcomes_total counter");
        if let Ok(m) = self.notifications.lock() {
            for ((channel, outcome), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "elevate_notification_outcomes_total{{channel=\"{}\",outcome=\"{}\"}} {n}",
                    label(channel),
                    label(outcome)
                );
            }
        }
        // Read from the stored reports, so every replica shows the same
        // figure, also after a restart.
        let _ = writeln!(out, "# HELP elevate_unmanaged_assignments Assignments of elevate-managed roles that no grant accounts for and that are still there, as the last reconciliation of each target found them.");
        let _ = writeln!(out, "# TYPE elevate_unmanaged_assignments gauge");
        for (target, doc) in store.reconciliations().await.unwrap_or_default() {
            if let Ok(report) = serde_json::from_str::<crate::discovery::ReconcileReport>(&doc) {
                let left = report.unmanaged.iter().filter(|f| !f.removed).count();
                let _ = writeln!(
                    out,
                    "elevate_unmanaged_assignments{{target=\"{}\"}} {left}",
                    label(&target)
                );
            }
        }
        crate::notify::run::render_metrics(store, &mut out).await;
        out
    }
}
