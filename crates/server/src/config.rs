//! The one config file: server settings, local users, targets with their
//! resources and roles, eligibilities and approval policies.
//!
//! Loading parses the TOML (unknown keys are errors: a misspelt
//! `approval_requried` must not silently mean "no approval"), then checks
//! every reference and reports *all* problems at once, each with its line
//! and a path like `eligibilities[2] "sre-prod" roles`. The server refuses
//! to start on any error; warnings (e.g. an eligibility nobody can approve)
//! are printed but do not stop it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use elevate_core::policy::{
    ApprovalPolicy, Catalog, Eligibility, Limits, Resource, ResourceSelector, StepUpRule, Target,
};
use elevate_core::principal::{Principal, Subject};
use elevate_core::values::{Email, GroupName, Name, Span, UserName};
use elevate_core::Timestamp;
use elevate_providers::postgres::PostgresConfig;
use serde::Deserialize;
use toml::Spanned;

use crate::oidc::OidcSettings;

mod notifications;

/// A problem found in the config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub location: String,
    pub message: String,
    pub warning: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.warning { "warning" } else { "error" };
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        if self.location.is_empty() {
            write!(f, "{kind}: {}", self.message)
        } else {
            write!(f, "{kind}: {}: {}", self.location, self.message)
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:7070".into()
}
fn default_database() -> String {
    "sqlite://elevate.db".into()
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_true() -> bool {
    true
}
fn default_quorum() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    #[serde(default = "default_listen")]
    listen: String,
    /// `sqlite://PATH` (created if missing), a plain path, or
    /// `postgres://USER@HOST:PORT/DATABASE` for replicas sharing one
    /// PostgreSQL.
    #[serde(default = "default_database")]
    database: String,
    /// Largest request body the API accepts.
    #[serde(default = "default_body_limit")]
    max_body_bytes: usize,
    /// Longest wait between two attempts of a failing provider call.
    #[serde(default)]
    retry_max_backoff: Option<String>,
    /// How long a claimed provider job stays reserved for the replica that
    /// claimed it; a replica that dies holds its jobs this long.
    #[serde(default)]
    job_lease: Option<String>,
    /// The address people reach elevate at (`https://elevate.example.com`):
    /// sign-in redirects come back to it, and session cookies are marked
    /// Secure when it is https. Defaults to `http://` + `listen`.
    #[serde(default)]
    public_url: Option<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            database: default_database(),
            max_body_bytes: default_body_limit(),
            retry_max_backoff: None,
            job_lease: None,
            public_url: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    min_duration: Option<String>,
    /// Used when an eligibility names no `max_duration`.
    default_max_duration: Option<String>,
    max_schedule_ahead: Option<String>,
    default_pending_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    email: Option<String>,
    display_name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// `sha256:HEX` of each API token (see `elevate token new`).
    #[serde(default)]
    token_hashes: Vec<String>,
    /// Attributes eligibility conditions may test (`department = "sre"`).
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceEntry {
    id: String,
    parent: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresSection {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    database: Option<String>,
    user: String,
    /// Inline secret: discouraged, prefer `password_file` or `password_env`.
    password: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    connect_timeout: Option<String>,
    #[serde(default)]
    user_map: BTreeMap<String, String>,
}

/// `[targets.aws_sts]`: how an `aws-sts` target reaches STS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsStsSection {
    region: String,
    endpoint_url: Option<String>,
    federation_url: Option<String>,
    console_destination: Option<String>,
    max_session: Option<String>,
    /// With a secret access key: static keys; without: the default AWS
    /// credential chain.
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    secret_access_key_file: Option<String>,
    secret_access_key_env: Option<String>,
    #[serde(default)]
    role_arns: BTreeMap<String, String>,
    /// A grant ended early denies its sessions on the role (an inline
    /// policy); needs iam:GetRolePolicy and iam:PutRolePolicy.
    #[serde(default)]
    revoke_sessions: bool,
    iam_endpoint_url: Option<String>,
    /// The role assumed in another account to write its roles' policies.
    revoke_via_role: Option<String>,
}

/// `[targets.identity_center]`: how an `aws-identity-center` target
/// reaches IAM Identity Center, Organizations and the Identity Store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityCenterSection {
    region: String,
    endpoint_url: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    secret_access_key_file: Option<String>,
    secret_access_key_env: Option<String>,
    instance_arn: Option<String>,
    identity_store_id: Option<String>,
    /// The permission sets offered as roles; all when absent.
    #[serde(default)]
    permission_sets: Vec<String>,
    #[serde(default)]
    allow_management_account: bool,
    poll_interval: Option<String>,
    poll_timeout: Option<String>,
    /// How often the OU tree and permission sets are read again.
    refresh: Option<String>,
    /// `report` (default), `remove` or `off`.
    reconcile: Option<String>,
    reconcile_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    id: String,
    kind: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    resources: Vec<Spanned<ResourceEntry>>,
    postgres: Option<PostgresSection>,
    aws_sts: Option<AwsStsSection>,
    identity_center: Option<IdentityCenterSection>,
    /// Roles auto-approval rules with `low_risk = true` may approve.
    #[serde(default)]
    low_risk_roles: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorEntry {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    under: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EligibilityEntry {
    id: String,
    subjects: Vec<String>,
    target: String,
    resources: SelectorEntry,
    roles: Vec<String>,
    max_duration: Option<String>,
    #[serde(default = "default_true")]
    approval_required: bool,
    #[serde(default)]
    ticket_required: bool,
    /// A regular expression the whole ticket reference must match
    /// (implies `ticket_required`).
    ticket_pattern: Option<String>,
    /// A `[[ticket_systems]]` name that must confirm the ticket is open
    /// (implies `ticket_required`).
    ticket_system: Option<String>,
    #[serde(default)]
    break_glass: bool,
    /// Activation needs a fresh multi-factor sign-in (`[oidc.step_up]`).
    #[serde(default)]
    step_up: bool,
    /// Claim → allowed value(s): `{ department = "sre" }` or
    /// `{ department = ["sre", "dba"] }`.
    #[serde(default)]
    conditions: BTreeMap<String, OneOrMany>,
    not_before: Option<toml::value::Datetime>,
    not_after: Option<toml::value::Datetime>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyEntry {
    id: String,
    target: String,
    resources: SelectorEntry,
    roles: Option<Vec<String>>,
    approvers: Vec<String>,
    #[serde(default = "default_quorum")]
    quorum: u32,
    pending_timeout: Option<String>,
    /// Approvers need a fresh multi-factor sign-in.
    #[serde(default)]
    step_up: bool,
    /// Rules that approve a request without a person (docs/automation.md).
    #[serde(default)]
    auto_approve: Vec<AutoApproveEntry>,
    /// Remind the approvers of a request still pending this long after
    /// it was created.
    remind_after: Option<String>,
    /// Escalate a request still pending this long after it was created
    /// to `escalate_to`, who may then approve it too.
    escalate_after: Option<String>,
    #[serde(default)]
    escalate_to: Vec<String>,
}

/// One auto-approval rule: every condition given must hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoApproveEntry {
    name: String,
    on_call_group: Option<String>,
    /// A file of lines `START END USER` (docs/automation.md).
    on_call_schedule: Option<String>,
    business_hours: Option<BusinessHoursEntry>,
    max_duration: Option<String>,
    #[serde(default)]
    low_risk: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusinessHoursEntry {
    days: String,
    from: String,
    to: String,
    /// `+09:00`; UTC when absent.
    utc_offset: Option<String>,
}

/// A change or incident system asked whether a ticket is open.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketSystemEntry {
    name: String,
    /// `https://changes.example.com/api/tickets/{ticket}`
    url: String,
    /// Bearer token: prefer `token_file` or `token_env`.
    token: Option<String>,
    token_file: Option<String>,
    token_env: Option<String>,
    timeout: Option<String>,
    /// The answer's boolean field that says the ticket is open ...
    open_field: Option<String>,
    /// ... or its status field, open when one of `open_values`.
    status_field: Option<String>,
    #[serde(default)]
    open_values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcSection {
    /// The provider's issuer URL, exactly as its discovery document says.
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    client_secret_env: Option<String>,
    /// Public client used by `elevate login` (loopback redirect + PKCE).
    cli_client_id: Option<String>,
    /// Further audiences accepted in bearer tokens (JWT access tokens).
    #[serde(default)]
    audiences: Vec<String>,
    scopes: Option<Vec<String>>,
    username_claim: Option<String>,
    email_claim: Option<String>,
    groups_claim: Option<String>,
    #[serde(default)]
    attribute_claims: Vec<String>,
    clock_skew: Option<String>,
    session_lifetime: Option<String>,
    /// Shortest time between two JWKS fetches triggered by unknown keys.
    jwks_refresh_interval: Option<String>,
    step_up: Option<StepUpSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepUpSection {
    acr_values: Option<Vec<String>>,
    amr: Option<Vec<String>>,
    max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    auditors: Vec<String>,
    #[serde(default)]
    users: Vec<Spanned<UserEntry>>,
    #[serde(default)]
    targets: Vec<Spanned<TargetEntry>>,
    #[serde(default)]
    eligibilities: Vec<Spanned<EligibilityEntry>>,
    #[serde(default)]
    approval_policies: Vec<Spanned<PolicyEntry>>,
    #[serde(default)]
    ticket_systems: Vec<Spanned<TicketSystemEntry>>,
    oidc: Option<Spanned<OidcSection>>,
    /// E-mail, chat and signed webhooks (see `config/notifications.rs`).
    /// Not `Spanned`: a section that exists only through its subtables
    /// (`[[notifications.webhooks]]` alone) cannot carry a span.
    notifications: Option<notifications::NotificationsSection>,
}

/// A local user and the hashes of their API tokens.
#[derive(Debug, Clone)]
pub struct LocalUser {
    pub principal: Principal,
    /// SHA-256 digests of the user's tokens (never the tokens).
    pub token_digests: Vec<[u8; 32]>,
}

/// How to reach one target.
#[derive(Debug, Clone)]
pub enum TargetConnection {
    DryRun,
    Postgres(PostgresConfig),
    /// Only built with the `aws` feature; the loader refuses the kind
    /// otherwise.
    AwsSts(elevate_providers::sessions::AwsStsConfig),
    /// Only built with the `aws` feature, like `AwsSts`.
    AwsIdentityCenter(elevate_providers::identity_center::IdentityCenterConfig),
}

/// What reconciliation does with an assignment no grant accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileMode {
    Off,
    /// Log it, keep it in the stored report (admin page, API, CLI), count
    /// it in `elevate_unmanaged_assignments`, and record changed findings
    /// in the audit trail (`target.unmanaged_access`).
    Report,
    /// Report it and remove it from the target.
    Remove,
}

/// How a target that discovers its resources keeps its inventory and
/// checks for access given outside elevate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// How often the inventory is read again.
    pub refresh: Span,
    pub reconcile: ReconcileMode,
    pub reconcile_every: Span,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database: String,
    pub max_body_bytes: usize,
    pub retry_max_backoff: Span,
    /// See `ServerSection::job_lease`.
    pub job_lease: Span,
    /// Base URL without a trailing slash; `None`: `http://` + the address
    /// elevate listens on.
    pub public_url: Option<String>,
    /// Set by `serve --dev` only (never from a file): the sign-in page
    /// offers the demo users' fixed tokens.
    pub demo: bool,
}

/// The automation part of an approval policy, checked.
#[derive(Debug, Default)]
struct PolicyAutomation {
    auto_approve: Vec<elevate_core::automation::AutoApproveRule>,
    remind_after: Option<Span>,
    escalate_after: Option<Span>,
    escalate_to: Vec<elevate_core::principal::Subject>,
}

/// An eligibility whose validity window may still depend on when it was
/// first seen.
#[derive(Debug, Clone)]
struct EligibilityDraft {
    eligibility: Eligibility,
    not_after: Option<Timestamp>,
}

/// A loaded, fully checked config.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub oidc: Option<OidcSettings>,
    pub users: Vec<LocalUser>,
    pub connections: BTreeMap<Name, TargetConnection>,
    /// Targets whose resources and roles come from the target itself.
    pub discovery: BTreeMap<Name, Discovery>,
    pub warnings: Vec<Problem>,
    /// Where notifications go; empty when `[notifications]` is absent.
    pub notifications: crate::notify::Settings,
    targets: BTreeMap<Name, Target>,
    eligibilities: Vec<EligibilityDraft>,
    policies: Vec<ApprovalPolicy>,
    admins: Vec<Subject>,
    auditors: Vec<Subject>,
    limits: Limits,
    step_up: StepUpRule,
    /// The `[[ticket_systems]]` eligibilities may name.
    pub ticket_systems: Vec<crate::tickets::TicketSystemSettings>,
}

/// Eligibilities without `not_after` last this long from first sight.
pub const DEFAULT_ELIGIBILITY_VALIDITY_DAYS: i64 = 365;

impl Config {
    /// Ids of every eligibility (to look up when each was first seen).
    pub fn eligibility_ids(&self) -> Vec<String> {
        self.eligibilities
            .iter()
            .map(|e| e.eligibility.id.to_string())
            .collect()
    }

    /// The domain catalog; `first_seen` gives each eligibility's creation
    /// time (from the database), from which a missing `not_after` defaults
    /// to one year later.
    pub fn catalog(&self, first_seen: &HashMap<String, Timestamp>, now: Timestamp) -> Catalog {
        let eligibilities = self
            .eligibilities
            .iter()
            .map(|d| {
                let mut e = d.eligibility.clone();
                e.not_after = d.not_after.unwrap_or_else(|| {
                    first_seen.get(e.id.as_str()).copied().unwrap_or(now)
                        + chrono::Duration::days(DEFAULT_ELIGIBILITY_VALIDITY_DAYS)
                });
                e
            })
            .collect();
        Catalog {
            targets: self.targets.clone(),
            eligibilities,
            approval_policies: self.policies.clone(),
            admins: self.admins.clone(),
            auditors: self.auditors.clone(),
            limits: self.limits.clone(),
            step_up: self.step_up.clone(),
            index: Default::default(),
        }
    }

    pub fn load_file(path: &Path) -> Result<Config, Vec<Problem>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Problem {
                line: None,
                column: None,
                location: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
                warning: false,
            }]
        })?;
        Config::parse(&text, path.parent())
    }

    /// Parses and checks config text. `base` resolves relative
    /// `password_file` paths.
    pub fn parse(text: &str, base: Option<&Path>) -> Result<Config, Vec<Problem>> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_col(text, s.start))
                .map_or((None, None), |(l, c)| (Some(l), Some(c)));
            vec![Problem {
                line,
                column,
                location: String::new(),
                message: e.message().trim().replace('\n', "; "),
                warning: false,
            }]
        })?;
        let mut checker = Checker {
            directory_complete: true,
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            problems: Vec::new(),
        };
        let config = checker.build(file, base);
        let (errors, warnings): (Vec<Problem>, Vec<Problem>) =
            checker.problems.into_iter().partition(|p| !p.warning);
        if !errors.is_empty() {
            let mut all = errors;
            all.extend(warnings);
            return Err(all);
        }
        let mut config = config.ok_or_else(Vec::new)?;
        config.warnings = warnings;
        Ok(config)
    }
}

fn is_loopback(u: &reqwest::Url) -> bool {
    let host = u.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// How many configured users could approve under `approvers`, counting a
/// user named directly and through a group once per subject (an upper
/// bound when subjects overlap; only used for a warning).
fn possible_approvers(
    approvers: &[Subject],
    users: &BTreeSet<UserName>,
    members: &HashMap<&GroupName, usize>,
) -> usize {
    approvers
        .iter()
        .map(|a| match a {
            Subject::User(u) => usize::from(users.contains(u)),
            Subject::Group(g) => members.get(g).copied().unwrap_or(0),
        })
        .sum()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Checker {
    /// Every user and group is listed in the config (no identity
    /// provider), so naming an unknown one is worth a warning.
    directory_complete: bool,
    /// Byte offset where each line starts: spans become line numbers by
    /// binary search, not by rescanning the text for every entry.
    line_starts: Vec<usize>,
    problems: Vec<Problem>,
}

impl Checker {
    fn line_of<T>(&self, s: &Spanned<T>) -> Option<usize> {
        let offset = s.span().start;
        Some(
            self.line_starts
                .partition_point(|&start| start <= offset)
                .max(1),
        )
    }

    fn error(
        &mut self,
        line: Option<usize>,
        location: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            line,
            column: None,
            location: location.into(),
            message: message.into(),
            warning: false,
        });
    }

    fn warn(
        &mut self,
        line: Option<usize>,
        location: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            line,
            column: None,
            location: location.into(),
            message: message.into(),
            warning: true,
        });
    }

    fn span(
        &mut self,
        line: Option<usize>,
        loc: &str,
        field: &'static str,
        raw: &str,
    ) -> Option<Span> {
        match Span::parse(field, raw) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(line, format!("{loc}{field}"), e.to_string());
                None
            }
        }
    }

    fn name(
        &mut self,
        line: Option<usize>,
        loc: &str,
        field: &'static str,
        raw: &str,
    ) -> Option<Name> {
        match Name::parse(field, raw) {
            Ok(n) => Some(n),
            Err(e) => {
                self.error(line, loc.to_string(), e.to_string());
                None
            }
        }
    }

    fn subjects(&mut self, line: Option<usize>, loc: &str, raw: &[String]) -> Vec<Subject> {
        let mut out = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            match Subject::parse(s) {
                Ok(sub) => out.push(sub),
                Err(e) => self.error(line, format!("{loc}[{i}]"), e.to_string()),
            }
        }
        out
    }

    fn selector(
        &mut self,
        line: Option<usize>,
        loc: &str,
        target: Option<&Target>,
        raw: &SelectorEntry,
    ) -> ResourceSelector {
        let mut sel = ResourceSelector {
            tags: raw.tags.clone(),
            ..Default::default()
        };
        for (field, list, dest) in [
            ("ids", &raw.ids, &mut sel.ids),
            ("under", &raw.under, &mut sel.under),
        ] {
            for (i, id) in list.iter().enumerate() {
                let Ok(n) = Name::parse("resource", id) else {
                    self.error(
                        line,
                        format!("{loc}resources.{field}[{i}]"),
                        format!("\"{id}\" is not a valid resource id"),
                    );
                    continue;
                };
                // A discovered target's accounts and OUs are known only
                // once read from it; an id that names nothing there
                // selects nothing (deny by default).
                if let Some(t) = target.filter(|t| !t.discovered) {
                    if !t.resources.contains_key(&n) {
                        self.error(
                            line,
                            format!("{loc}resources.{field}[{i}]"),
                            format!("unknown resource \"{id}\" on target \"{}\"", t.id),
                        );
                    }
                }
                dest.insert(n);
            }
        }
        if sel.is_empty() {
            self.error(
                line,
                format!("{loc}resources"),
                "selects no resources: give ids, under or tags",
            );
        }
        sel
    }

    fn build(&mut self, file: ConfigFile, base: Option<&Path>) -> Option<Config> {
        let settings = self.settings(&file.server);
        let limits = self.limits(&file.limits);
        let users = self.users(&file.users);
        let (oidc, step_up) = match &file.oidc {
            Some(section) => self.oidc(section, base),
            None => (None, StepUpRule::default()),
        };
        // Users and groups from an identity provider are not listed here.
        self.directory_complete = file.oidc.is_none();
        let known_users: BTreeSet<UserName> =
            users.iter().map(|u| u.principal.name.clone()).collect();
        let known_groups: BTreeSet<GroupName> = users
            .iter()
            .flat_map(|u| u.principal.groups.iter().cloned())
            .collect();
        let mut members: HashMap<&GroupName, usize> = HashMap::new();
        for u in &users {
            for g in &u.principal.groups {
                *members.entry(g).or_insert(0) += 1;
            }
        }
        let admins = self.subjects(None, "admins", &file.admins);
        let auditors = self.subjects(None, "auditors", &file.auditors);
        for (list, name) in [(&admins, "admins"), (&auditors, "auditors")] {
            self.check_subjects_known(None, name, list, &known_users, &known_groups);
        }
        let (targets, connections, discovery) = self.targets(&file.targets, base);
        let ticket_systems = self.ticket_systems(&file.ticket_systems, base);
        let default_max = file
            .limits
            .default_max_duration
            .as_deref()
            .and_then(|raw| self.span(None, "limits.", "default_max_duration", raw))
            .unwrap_or(Span::from_secs(8 * 3600));

        let mut eligibilities = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, spanned) in file.eligibilities.iter().enumerate() {
            let line = self.line_of(spanned);
            let e = spanned.get_ref();
            let loc = format!("eligibilities[{i}] \"{}\" ", e.id);
            let Some(id) = self.name(line, &loc, "id", &e.id) else {
                continue;
            };
            if !seen.insert(id.clone()) {
                self.error(
                    line,
                    loc.clone(),
                    format!("duplicate eligibility id \"{id}\""),
                );
            }
            let subjects = self.subjects(line, &format!("{loc}subjects"), &e.subjects);
            if e.subjects.is_empty() {
                self.error(
                    line,
                    format!("{loc}subjects"),
                    "names nobody: add user:NAME or group:NAME",
                );
            }
            self.check_subjects_known(
                line,
                &format!("{loc}subjects"),
                &subjects,
                &known_users,
                &known_groups,
            );
            let target_name = self.name(line, &loc, "target", &e.target);
            let target = target_name.as_ref().and_then(|t| targets.get(t));
            if target.is_none() && target_name.is_some() {
                self.error(
                    line,
                    format!("{loc}target"),
                    format!("unknown target \"{}\"", e.target),
                );
            }
            let resources = self.selector(line, &loc, target, &e.resources);
            let roles = self.roles(line, &loc, target, &e.roles);
            if roles.is_empty() {
                self.error(line, format!("{loc}roles"), "names no role");
            }
            let max_duration = match &e.max_duration {
                Some(raw) => self.span(line, &loc, "max_duration", raw),
                None => Some(default_max),
            };
            if let Some(m) = max_duration {
                if m < limits.min_duration {
                    self.error(
                        line,
                        format!("{loc}max_duration"),
                        format!("{m} is below limits.min_duration ({})", limits.min_duration),
                    );
                }
            }
            let not_before = e
                .not_before
                .as_ref()
                .and_then(|d| self.datetime(line, &loc, "not_before", d));
            let not_after = e
                .not_after
                .as_ref()
                .and_then(|d| self.datetime(line, &loc, "not_after", d));
            if let (Some(nb), Some(na)) = (not_before, not_after) {
                if nb >= na {
                    self.error(line, format!("{loc}not_after"), "must be after not_before");
                }
            }
            if e.step_up && file.oidc.is_none() {
                self.error(
                    line,
                    format!("{loc}step_up"),
                    "needs an [oidc] section: only a sign-in through the identity provider can prove a fresh multi-factor authentication",
                );
            }
            let conditions = self.conditions(line, &loc, &e.conditions);
            let ticket_pattern = e.ticket_pattern.as_deref().and_then(|raw| {
                match elevate_core::values::TicketPattern::parse(raw) {
                    Ok(p) => Some(p),
                    Err(err) => {
                        self.error(line, format!("{loc}ticket_pattern"), err.to_string());
                        None
                    }
                }
            });
            let ticket_system = e.ticket_system.as_deref().and_then(|raw| {
                let known = ticket_systems.iter().any(|t| t.name.as_str() == raw);
                if !known {
                    let names: Vec<&str> = ticket_systems.iter().map(|t| t.name.as_str()).collect();
                    self.error(
                        line,
                        format!("{loc}ticket_system"),
                        if names.is_empty() {
                            format!("unknown ticket system \"{raw}\": no [[ticket_systems]] is configured")
                        } else {
                            format!("unknown ticket system \"{raw}\" (configured: {})", names.join(", "))
                        },
                    );
                }
                Name::parse("ticket_system", raw).ok().filter(|_| known)
            });
            let (Some(target_name), Some(max_duration)) = (target_name, max_duration) else {
                continue;
            };
            eligibilities.push(EligibilityDraft {
                eligibility: Eligibility {
                    id,
                    subjects,
                    target: target_name,
                    resources,
                    roles,
                    max_duration,
                    approval_required: e.approval_required,
                    // A pattern or a system to ask makes no sense without
                    // a ticket.
                    ticket_required: e.ticket_required
                        || e.ticket_pattern.is_some()
                        || e.ticket_system.is_some(),
                    ticket_pattern,
                    ticket_system,
                    break_glass: e.break_glass,
                    step_up: e.step_up,
                    conditions,
                    not_before,
                    // Filled in by `Config::catalog`.
                    not_after: not_after.unwrap_or_default(),
                },
                not_after,
            });
        }

        let mut policies = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, spanned) in file.approval_policies.iter().enumerate() {
            let line = self.line_of(spanned);
            let p = spanned.get_ref();
            let loc = format!("approval_policies[{i}] \"{}\" ", p.id);
            let Some(id) = self.name(line, &loc, "id", &p.id) else {
                continue;
            };
            if !seen.insert(id.clone()) {
                self.error(
                    line,
                    loc.clone(),
                    format!("duplicate approval policy id \"{id}\""),
                );
            }
            let target_name = self.name(line, &loc, "target", &p.target);
            let target = target_name.as_ref().and_then(|t| targets.get(t));
            if target.is_none() && target_name.is_some() {
                self.error(
                    line,
                    format!("{loc}target"),
                    format!("unknown target \"{}\"", p.target),
                );
            }
            let resources = self.selector(line, &loc, target, &p.resources);
            let roles = p.roles.as_ref().map(|r| self.roles(line, &loc, target, r));
            let approvers = self.subjects(line, &format!("{loc}approvers"), &p.approvers);
            if p.approvers.is_empty() {
                self.error(
                    line,
                    format!("{loc}approvers"),
                    "names nobody: add user:NAME or group:NAME",
                );
            }
            self.check_subjects_known(
                line,
                &format!("{loc}approvers"),
                &approvers,
                &known_users,
                &known_groups,
            );
            if p.quorum == 0 {
                self.error(line, format!("{loc}quorum"), "must be at least 1");
            }
            let possible = possible_approvers(&approvers, &known_users, &members);
            if self.directory_complete && !users.is_empty() && (p.quorum as usize) > possible {
                self.warn(
                    line,
                    format!("{loc}quorum"),
                    format!(
                        "needs {} approvers but only {possible} known user(s) can approve",
                        p.quorum
                    ),
                );
            }
            let pending_timeout = match &p.pending_timeout {
                Some(raw) => self.span(line, &loc, "pending_timeout", raw),
                None => Some(limits.default_pending_timeout),
            };
            if p.step_up && file.oidc.is_none() {
                self.error(
                    line,
                    format!("{loc}step_up"),
                    "needs an [oidc] section: only a sign-in through the identity provider can prove a fresh multi-factor authentication",
                );
            }
            let automation = self.policy_automation(
                line,
                &loc,
                p,
                pending_timeout,
                target,
                base,
                (&known_users, &known_groups),
            );
            let (Some(target_name), Some(pending_timeout)) = (target_name, pending_timeout) else {
                continue;
            };
            let automation = automation.unwrap_or_default();
            policies.push(ApprovalPolicy {
                id,
                target: target_name,
                resources,
                roles,
                approvers,
                quorum: p.quorum.max(1),
                pending_timeout,
                step_up: p.step_up,
                auto_approve: automation.auto_approve,
                remind_after: automation.remind_after,
                escalate_after: automation.escalate_after,
                escalate_to: automation.escalate_to,
            });
        }

        let notifications = self.notifications(file.notifications.as_ref(), base, &targets);
        let config = Config {
            settings: settings?,
            oidc,
            users,
            connections,
            discovery,
            warnings: Vec::new(),
            notifications: notifications?,
            targets,
            eligibilities,
            policies,
            admins,
            auditors,
            limits,
            step_up,
            ticket_systems,
        };
        self.check_approvability(&config);
        // An assignment still in progress when the call limit (half the
        // job lease) cuts the call off would be reported as an error
        // rather than looked at again.
        for (id, c) in &config.connections {
            if let TargetConnection::AwsIdentityCenter(ic) = c {
                if ic.poll_timeout.as_secs().saturating_mul(2) >= config.settings.job_lease.secs() {
                    self.error(
                        None,
                        format!("targets \"{id}\" identity_center.poll_timeout"),
                        format!(
                            "must be below half of server.job_lease ({})",
                            config.settings.job_lease
                        ),
                    );
                }
            }
        }
        Some(config)
    }

    /// Warns about (resource, role) pairs someone is eligible for with
    /// approval but that no policy covers: such requests would be refused.
    fn check_approvability(&mut self, config: &Config) {
        let catalog = config.catalog(&HashMap::new(), chrono::Utc::now());
        for e in catalog.eligibilities.iter().filter(|e| e.approval_required) {
            let Some(t) = catalog.targets.get(&e.target) else {
                continue;
            };
            let mut uncovered = Vec::new();
            for r in catalog.resources_matching(t, &e.resources) {
                for role in &e.roles {
                    if catalog.approval_requirement(&t.id, &r.id, role).is_none() {
                        uncovered.push(format!("{}/{role}", r.id));
                    }
                }
            }
            if !uncovered.is_empty() {
                uncovered.truncate(5);
                self.warn(
                    None,
                    format!("eligibilities \"{}\"", e.id),
                    format!(
                        "requires approval but no approval policy covers {}; such requests will be refused",
                        uncovered.join(", ")
                    ),
                );
            }
        }
    }

    fn check_subjects_known(
        &mut self,
        line: Option<usize>,
        loc: &str,
        subjects: &[Subject],
        users: &BTreeSet<UserName>,
        groups: &BTreeSet<GroupName>,
    ) {
        if !self.directory_complete {
            return;
        }
        for s in subjects {
            match s {
                Subject::User(u) if !users.contains(u) => self.warn(
                    line,
                    loc.to_string(),
                    format!("user \"{u}\" is not a configured user"),
                ),
                Subject::Group(g) if !groups.contains(g) => self.warn(
                    line,
                    loc.to_string(),
                    format!("no configured user is in group \"{g}\""),
                ),
                _ => {}
            }
        }
    }

    fn roles(
        &mut self,
        line: Option<usize>,
        loc: &str,
        target: Option<&Target>,
        raw: &[String],
    ) -> BTreeSet<Name> {
        let mut out = BTreeSet::new();
        for (i, r) in raw.iter().enumerate() {
            let Ok(n) = Name::parse("role", r) else {
                self.error(
                    line,
                    format!("{loc}roles[{i}]"),
                    format!("\"{r}\" is not a valid role name"),
                );
                continue;
            };
            if let Some(t) = target.filter(|t| !t.discovered) {
                if !t.roles.contains(&n) {
                    self.error(
                        line,
                        format!("{loc}roles[{i}]"),
                        format!("unknown role \"{r}\" on target \"{}\"", t.id),
                    );
                }
            }
            out.insert(n);
        }
        out
    }

    fn datetime(
        &mut self,
        line: Option<usize>,
        loc: &str,
        field: &str,
        d: &toml::value::Datetime,
    ) -> Option<Timestamp> {
        // Accept a full RFC 3339 instant or a bare date (midnight UTC).
        let text = d.to_string();
        let parsed = chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .ok()
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|n| n.and_utc())
            });
        if parsed.is_none() {
            self.error(
                line,
                format!("{loc}{field}"),
                format!("\"{text}\" must be a date (2026-12-31) or a date-time with offset"),
            );
        }
        parsed
    }

    fn settings(&mut self, s: &ServerSection) -> Option<Settings> {
        let listen = match s.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    None,
                    "server.listen",
                    format!("\"{}\" is not an address like 127.0.0.1:7070", s.listen),
                );
                None
            }
        };
        if s.max_body_bytes < 1024 || s.max_body_bytes > 16 * 1024 * 1024 {
            self.error(
                None,
                "server.max_body_bytes",
                "must be between 1024 and 16777216",
            );
        }
        let backoff = match &s.retry_max_backoff {
            Some(raw) => self.span(None, "server.", "retry_max_backoff", raw),
            None => Some(Span::from_secs(60)),
        };
        if let Err(e) = elevate_store::Engine::of_url(&s.database) {
            self.error(None, "server.database", e.to_string());
        }
        let lease = match &s.job_lease {
            Some(raw) => self
                .span(None, "server.", "job_lease", raw)
                .and_then(|span| {
                    if (2..=3600).contains(&span.secs()) {
                        Some(span)
                    } else {
                        self.error(
                            None,
                            "server.job_lease",
                            "must be between 2s and 1h: provider calls get half of it",
                        );
                        None
                    }
                }),
            None => Some(Span::from_secs(60)),
        };
        let listen = listen?;
        let public_url = match &s.public_url {
            Some(raw) => {
                let trimmed = raw.trim_end_matches('/');
                match reqwest::Url::parse(trimmed) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                        Some(trimmed.to_owned())
                    }
                    _ => {
                        self.error(
                            None,
                            "server.public_url",
                            format!(
                                "\"{raw}\" is not an http(s) URL like https://elevate.example.com"
                            ),
                        );
                        return None;
                    }
                }
            }
            None => None,
        };
        Some(Settings {
            listen,
            database: s.database.clone(),
            max_body_bytes: s.max_body_bytes,
            retry_max_backoff: backoff?,
            job_lease: lease?,
            public_url,
            demo: false,
        })
    }

    fn limits(&mut self, l: &LimitsSection) -> Limits {
        let mut limits = Limits::default();
        if let Some(s) = l
            .min_duration
            .as_deref()
            .and_then(|r| self.span(None, "limits.", "min_duration", r))
        {
            limits.min_duration = s;
        }
        if let Some(s) = l
            .max_schedule_ahead
            .as_deref()
            .and_then(|r| self.span(None, "limits.", "max_schedule_ahead", r))
        {
            limits.max_schedule_ahead = s;
        }
        if let Some(s) = l
            .default_pending_timeout
            .as_deref()
            .and_then(|r| self.span(None, "limits.", "default_pending_timeout", r))
        {
            limits.default_pending_timeout = s;
        }
        limits
    }

    fn users(&mut self, entries: &[Spanned<UserEntry>]) -> Vec<LocalUser> {
        let mut out: Vec<LocalUser> = Vec::new();
        let mut names = BTreeSet::new();
        let mut emails = BTreeSet::new();
        let mut digests = BTreeSet::new();
        for (i, spanned) in entries.iter().enumerate() {
            let line = self.line_of(spanned);
            let u = spanned.get_ref();
            let loc = format!("users[{i}] \"{}\"", u.name);
            let name = match UserName::parse(&u.name) {
                Ok(n) => n,
                Err(e) => {
                    self.error(line, loc, e.to_string());
                    continue;
                }
            };
            if !names.insert(name.clone()) {
                self.error(
                    line,
                    loc.clone(),
                    format!("duplicate user \"{name}\" (names compare case-insensitively)"),
                );
            }
            let mut principal = Principal::new(name);
            principal.display_name = u.display_name.clone();
            if let Some(raw) = &u.email {
                match Email::parse(raw) {
                    Ok(e) => {
                        if !emails.insert(e.clone()) {
                            self.error(
                                line,
                                format!("{loc} email"),
                                format!("e-mail {raw} is used by two users"),
                            );
                        }
                        principal.email = Some(e);
                    }
                    Err(e) => self.error(line, format!("{loc} email"), e.to_string()),
                }
            }
            for g in &u.groups {
                match GroupName::parse(g) {
                    Ok(g) => {
                        principal.groups.insert(g);
                    }
                    Err(e) => self.error(line, format!("{loc} groups"), e.to_string()),
                }
            }
            let mut token_digests = Vec::new();
            for (j, h) in u.token_hashes.iter().enumerate() {
                match crate::auth::parse_token_hash(h) {
                    // One token must never name two users.
                    Some(d) if !digests.insert(d) => self.error(
                        line,
                        format!("{loc} token_hashes[{j}]"),
                        "this token hash is already given to another user (or twice here)",
                    ),
                    Some(d) => token_digests.push(d),
                    None => self.error(
                        line,
                        format!("{loc} token_hashes[{j}]"),
                        "must be \"sha256:\" followed by 64 hex digits (run `elevate token new`)",
                    ),
                }
            }
            principal.attributes = u.attributes.clone();
            out.push(LocalUser {
                principal,
                token_digests,
            });
        }
        out
    }

    fn targets(
        &mut self,
        entries: &[Spanned<TargetEntry>],
        base: Option<&Path>,
    ) -> (
        BTreeMap<Name, Target>,
        BTreeMap<Name, TargetConnection>,
        BTreeMap<Name, Discovery>,
    ) {
        let mut targets = BTreeMap::new();
        let mut connections = BTreeMap::new();
        let mut discovery = BTreeMap::new();
        for (i, spanned) in entries.iter().enumerate() {
            let line = self.line_of(spanned);
            let t = spanned.get_ref();
            let loc = format!("targets[{i}] \"{}\" ", t.id);
            let Some(id) = self.name(line, &loc, "id", &t.id) else {
                continue;
            };
            if targets.contains_key(&id) {
                self.error(line, loc.clone(), format!("duplicate target id \"{id}\""));
                continue;
            }
            let mut roles = BTreeSet::new();
            for (j, r) in t.roles.iter().enumerate() {
                match Name::parse("role", r) {
                    Ok(n) => {
                        if t.kind == "postgres" && (r.len() > 63 || r.contains('\0')) {
                            self.error(
                                line,
                                format!("{loc}roles[{j}]"),
                                format!("\"{r}\" is not a PostgreSQL role name (at most 63 bytes)"),
                            );
                        }
                        roles.insert(n);
                    }
                    Err(e) => self.error(line, format!("{loc}roles[{j}]"), e.to_string()),
                }
            }
            // Accounts and permission sets come from AWS: listing them in
            // the file as well would be a second truth to keep in step.
            let discovered = t.kind == "aws-identity-center";
            if discovered && (!t.roles.is_empty() || !t.resources.is_empty()) {
                self.error(
                    line,
                    loc.clone(),
                    "an aws-identity-center target reads its accounts (resources) and permission sets (roles) from AWS; remove roles and resources",
                );
            } else if roles.is_empty() && !discovered {
                self.error(
                    line,
                    format!("{loc}roles"),
                    "a target needs at least one grantable role",
                );
            }
            let mut resources: BTreeMap<Name, Resource> = BTreeMap::new();
            let mut resource_lines: BTreeMap<Name, Option<usize>> = BTreeMap::new();
            for (j, rs) in t.resources.iter().enumerate() {
                let rline = self.line_of(rs);
                let r = rs.get_ref();
                let rloc = format!("{loc}resources[{j}] \"{}\"", r.id);
                let Some(rid) = self.name(rline, &rloc, "id", &r.id) else {
                    continue;
                };
                if resources.contains_key(&rid) {
                    self.error(
                        rline,
                        rloc.clone(),
                        format!("duplicate resource id \"{rid}\""),
                    );
                }
                let parent = r
                    .parent
                    .as_ref()
                    .and_then(|p| self.name(rline, &rloc, "parent", p));
                resource_lines.insert(rid.clone(), rline);
                resources.insert(
                    rid.clone(),
                    Resource {
                        id: rid,
                        parent,
                        tags: r.tags.clone(),
                        description: r.description.clone(),
                        not_grantable: None,
                    },
                );
            }
            if resources.is_empty() && !discovered {
                self.error(
                    line,
                    format!("{loc}resources"),
                    "a target needs at least one resource",
                );
            }
            // Parents must exist and must not form a cycle (reported once,
            // at the first resource found on it).
            let mut cyclic: BTreeSet<Name> = BTreeSet::new();
            for r in resources.values() {
                let line = resource_lines.get(&r.id).copied().flatten().or(line);
                if cyclic.contains(&r.id) {
                    continue;
                }
                let mut seen = BTreeSet::new();
                let mut current = r.parent.clone();
                while let Some(p) = current {
                    if !resources.contains_key(&p) {
                        self.error(
                            line,
                            format!("{loc}resources \"{}\" parent", r.id),
                            format!("unknown parent \"{p}\""),
                        );
                        break;
                    }
                    if !seen.insert(p.clone()) || p == r.id {
                        // `p` is on the cycle (`r` may only lead into it).
                        if !cyclic.contains(&p) {
                            let at = resource_lines.get(&p).copied().flatten().or(line);
                            self.error(
                                at,
                                format!("{loc}resources \"{p}\" parent"),
                                "the parents form a cycle",
                            );
                        }
                        cyclic.extend(seen);
                        cyclic.insert(r.id.clone());
                        break;
                    }
                    current = resources.get(&p).and_then(|x| x.parent.clone());
                }
            }
            if t.kind != "postgres" && t.postgres.is_some() {
                self.error(
                    line,
                    format!("{loc}postgres"),
                    format!("a {} target takes no [targets.postgres] section", t.kind),
                );
            }
            if t.kind != "aws-sts" && t.aws_sts.is_some() {
                self.error(
                    line,
                    format!("{loc}aws_sts"),
                    format!("a {} target takes no [targets.aws_sts] section", t.kind),
                );
            }
            if !discovered && t.identity_center.is_some() {
                self.error(
                    line,
                    format!("{loc}identity_center"),
                    format!(
                        "a {} target takes no [targets.identity_center] section",
                        t.kind
                    ),
                );
            }
            let connection = match (t.kind.as_str(), &t.postgres, &t.aws_sts) {
                ("dry-run", _, _) => Some(TargetConnection::DryRun),
                ("postgres", Some(pg), _) => self
                    .postgres(line, &loc, pg, &roles, base)
                    .map(TargetConnection::Postgres),
                ("postgres", None, _) => {
                    self.error(
                        line,
                        loc.clone(),
                        "a postgres target needs a [targets.postgres] section",
                    );
                    None
                }
                ("aws-sts", _, _) if !cfg!(feature = "aws") => {
                    self.error(
                        line,
                        format!("{loc}kind"),
                        "this build of elevate lacks AWS support (built without the `aws` feature); kind \"aws-sts\" is not available",
                    );
                    None
                }
                ("aws-sts", _, Some(aws)) => self
                    .aws_sts(line, &loc, aws, &roles, base)
                    .map(TargetConnection::AwsSts),
                ("aws-sts", _, None) => {
                    self.error(
                        line,
                        loc.clone(),
                        "an aws-sts target needs a [targets.aws_sts] section",
                    );
                    None
                }
                ("aws-identity-center", _, _) if !cfg!(feature = "aws") => {
                    self.error(
                        line,
                        format!("{loc}kind"),
                        "this build of elevate lacks AWS support (built without the `aws` feature); kind \"aws-identity-center\" is not available",
                    );
                    None
                }
                ("aws-identity-center", _, _) => match &t.identity_center {
                    Some(section) => {
                        self.identity_center(line, &loc, section, base)
                            .map(|(config, found)| {
                                discovery.insert(id.clone(), found);
                                TargetConnection::AwsIdentityCenter(config)
                            })
                    }
                    None => {
                        self.error(
                            line,
                            loc.clone(),
                            "an aws-identity-center target needs a [targets.identity_center] section",
                        );
                        None
                    }
                },
                (other, _, _) => {
                    self.error(
                        line,
                        format!("{loc}kind"),
                        format!(
                            "unknown target kind \"{other}\" (known: postgres, aws-sts, aws-identity-center, dry-run)"
                        ),
                    );
                    None
                }
            };
            if let Some(c) = connection {
                connections.insert(id.clone(), c);
            }
            let mut low_risk_roles = BTreeSet::new();
            for (j, r) in t.low_risk_roles.iter().enumerate() {
                match Name::parse("role", r) {
                    // A discovered target's permission sets are known
                    // only once read; one that does not exist matches
                    // nothing.
                    Ok(n) if roles.contains(&n) || discovered => {
                        low_risk_roles.insert(n);
                    }
                    Ok(_) => self.error(
                        line,
                        format!("{loc}low_risk_roles[{j}]"),
                        format!("\"{r}\" is not one of this target's roles"),
                    ),
                    Err(e) => self.error(line, format!("{loc}low_risk_roles[{j}]"), e.to_string()),
                }
            }
            targets.insert(
                id.clone(),
                Target {
                    id,
                    kind: t.kind.clone(),
                    dry_run: t.kind == "dry-run",
                    roles,
                    low_risk_roles,
                    resources,
                    discovered,
                },
            );
        }
        (targets, connections, discovery)
    }

    /// A secret given inline, in a file or in an environment variable
    /// (`NAME`, `NAME_file`, `NAME_env`): `Some(None)` when none is given,
    /// `None` after reporting an error.
    fn secret(
        &mut self,
        line: Option<usize>,
        prefix: &str,
        name: &str,
        [inline, file, env]: [&Option<String>; 3],
        base: Option<&Path>,
    ) -> Option<Option<String>> {
        let given = [inline, file, env].iter().filter(|s| s.is_some()).count();
        if given > 1 {
            self.error(
                line,
                format!("{prefix}{name}"),
                format!("give only one of {name}, {name}_file, {name}_env"),
            );
            return None;
        }
        if let Some(p) = inline {
            self.warn(line, format!("{prefix}{name}"), format!("an inline secret is readable by anyone who can read the config; prefer {name}_file or {name}_env"));
            Some(Some(p.clone()))
        } else if let Some(f) = file {
            let path = base.map_or_else(|| Path::new(f).to_path_buf(), |b| b.join(f));
            match std::fs::read_to_string(&path) {
                Ok(s) => Some(Some(s.trim_end_matches(['\n', '\r']).to_owned())),
                Err(e) => {
                    self.error(
                        line,
                        format!("{prefix}{name}_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        } else if let Some(var) = env {
            match std::env::var(var) {
                Ok(v) => Some(Some(v)),
                Err(_) => {
                    self.error(
                        line,
                        format!("{prefix}{name}_env"),
                        format!("environment variable {var} is not set"),
                    );
                    None
                }
            }
        } else {
            Some(None)
        }
    }

    /// `[[ticket_systems]]`: names unique, a URL with `{ticket}`, a way to
    /// read the answer.
    fn ticket_systems(
        &mut self,
        entries: &[Spanned<TicketSystemEntry>],
        base: Option<&Path>,
    ) -> Vec<crate::tickets::TicketSystemSettings> {
        use crate::tickets::{OpenWhen, TicketSystemSettings};
        let mut out: Vec<TicketSystemSettings> = Vec::new();
        for (i, spanned) in entries.iter().enumerate() {
            let line = self.line_of(spanned);
            let t = spanned.get_ref();
            let loc = format!("ticket_systems[{i}] \"{}\" ", t.name);
            let Some(name) = self.name(line, &loc, "name", &t.name) else {
                continue;
            };
            let mut ok = true;
            if out.iter().any(|o| o.name == name) {
                ok = false;
                self.error(
                    line,
                    loc.clone(),
                    format!("duplicate ticket system \"{name}\""),
                );
            }
            let sample = t.url.replace("{ticket}", "CHG-1");
            match reqwest::Url::parse(&sample) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    if !t.url.contains("{ticket}") {
                        ok = false;
                        self.error(
                            line,
                            format!("{loc}url"),
                            "must contain {ticket}, where the ticket reference goes",
                        );
                    } else if u.scheme() == "http" && !is_loopback(&u) {
                        self.warn(
                            line,
                            format!("{loc}url"),
                            "plain http: the token and the answer can be read or forged on the way; use https",
                        );
                    }
                }
                _ => {
                    ok = false;
                    self.error(
                        line,
                        format!("{loc}url"),
                        format!(
                            "\"{}\" is not an http(s) URL like https://changes.example.com/api/tickets/{{ticket}}",
                            t.url
                        ),
                    );
                }
            }
            let token = self.secret(
                line,
                &loc,
                "token",
                [&t.token, &t.token_file, &t.token_env],
                base,
            );
            let timeout = match &t.timeout {
                None => Some(Span::from_secs(5)),
                Some(raw) => self.span(line, &loc, "timeout", raw).and_then(|s| {
                    if s.secs() <= 60 {
                        Some(s)
                    } else {
                        self.error(
                            line,
                            format!("{loc}timeout"),
                            "must be at most 60s: the requester waits for it",
                        );
                        None
                    }
                }),
            };
            let field_ok = |f: &str| !f.is_empty() && f.split('.').all(|p| !p.is_empty());
            let open_when = match (&t.open_field, &t.status_field) {
                (Some(f), _) if !field_ok(f) => {
                    self.error(
                        line,
                        format!("{loc}open_field"),
                        "must name a field, e.g. \"open\" or \"ticket.open\"",
                    );
                    None
                }
                (Some(_), _) if !t.open_values.is_empty() => {
                    self.error(
                        line,
                        format!("{loc}open_values"),
                        "goes with status_field, not with open_field",
                    );
                    None
                }
                (Some(f), _) => Some(OpenWhen::Field(f.clone())),
                (None, Some(f)) if !field_ok(f) => {
                    self.error(
                        line,
                        format!("{loc}status_field"),
                        "must name a field, e.g. \"status\" or \"fields.status.name\"",
                    );
                    None
                }
                (None, Some(_)) if t.open_values.iter().all(|v| v.trim().is_empty()) => {
                    self.error(
                        line,
                        format!("{loc}open_values"),
                        "lists no status: name the statuses that mean open, e.g. [\"open\", \"in progress\"]",
                    );
                    None
                }
                (None, Some(f)) => Some(OpenWhen::Status {
                    field: f.clone(),
                    values: t
                        .open_values
                        .iter()
                        .map(|v| v.trim().to_lowercase())
                        .filter(|v| !v.is_empty())
                        .collect(),
                }),
                (None, None) => {
                    self.error(
                        line,
                        loc.trim_end().to_owned(),
                        "says no way to read the answer: give open_field (a boolean) or status_field and open_values",
                    );
                    None
                }
            };
            if let (true, Some(token), Some(timeout), Some(open_when)) =
                (ok, token, timeout, open_when)
            {
                out.push(TicketSystemSettings {
                    name,
                    url: t.url.clone(),
                    token,
                    timeout: std::time::Duration::from_secs(timeout.secs()),
                    open_when,
                    status_field: t.status_field.clone(),
                });
            }
        }
        out
    }

    /// Reminders, escalation and auto-approval rules of one approval
    /// policy. `None` after reporting an error.
    #[allow(clippy::too_many_arguments)]
    fn policy_automation(
        &mut self,
        line: Option<usize>,
        loc: &str,
        p: &PolicyEntry,
        pending_timeout: Option<Span>,
        target: Option<&Target>,
        base: Option<&Path>,
        (known_users, known_groups): (&BTreeSet<UserName>, &BTreeSet<GroupName>),
    ) -> Option<PolicyAutomation> {
        use elevate_core::automation::{AutoApproveRule, BusinessHours, OnCallSchedule};
        let errors_before = self.problems.iter().filter(|p| !p.warning).count();
        let remind_after = p
            .remind_after
            .as_deref()
            .and_then(|raw| self.span(line, loc, "remind_after", raw));
        let escalate_after = p
            .escalate_after
            .as_deref()
            .and_then(|raw| self.span(line, loc, "escalate_after", raw));
        let escalate_to = self.subjects(line, &format!("{loc}escalate_to"), &p.escalate_to);
        self.check_subjects_known(
            line,
            &format!("{loc}escalate_to"),
            &escalate_to,
            known_users,
            known_groups,
        );
        match (p.escalate_after.is_some(), p.escalate_to.is_empty()) {
            (true, true) => self.error(
                line,
                format!("{loc}escalate_to"),
                "escalate_after needs escalate_to: name the fallback approvers (user:NAME or group:NAME)",
            ),
            (false, false) => self.error(
                line,
                format!("{loc}escalate_after"),
                "escalate_to needs escalate_after: say how long after creation to escalate",
            ),
            _ => {}
        }
        if let Some(timeout) = pending_timeout {
            for (field, value) in [
                ("remind_after", remind_after),
                ("escalate_after", escalate_after),
            ] {
                if value.is_some_and(|v| v >= timeout) {
                    self.error(
                        line,
                        format!("{loc}{field}"),
                        format!("must be shorter than the pending timeout ({timeout}): the request expires before it would fire"),
                    );
                }
            }
        }
        let mut rules: Vec<AutoApproveRule> = Vec::new();
        for (j, r) in p.auto_approve.iter().enumerate() {
            let rloc = format!("{loc}auto_approve[{j}] \"{}\" ", r.name);
            let Some(name) = self.name(line, &rloc, "name", &r.name) else {
                continue;
            };
            if rules.iter().any(|x| x.name == name) {
                self.error(
                    line,
                    rloc.clone(),
                    format!("duplicate rule name \"{name}\" in this policy"),
                );
            }
            let on_call_group =
                r.on_call_group
                    .as_deref()
                    .and_then(|g| match GroupName::parse(g) {
                        Ok(g) => Some(g),
                        Err(e) => {
                            self.error(line, format!("{rloc}on_call_group"), e.to_string());
                            None
                        }
                    });
            if let Some(g) = &on_call_group {
                if self.directory_complete && !known_groups.contains(g) {
                    self.warn(
                        line,
                        format!("{rloc}on_call_group"),
                        format!("no configured user is in group \"{g}\": the rule never fires"),
                    );
                }
            }
            let on_call_schedule = r.on_call_schedule.as_deref().and_then(|f| {
                let path = base.map_or_else(|| Path::new(f).to_path_buf(), |b| b.join(f));
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        self.error(
                            line,
                            format!("{rloc}on_call_schedule"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        return None;
                    }
                };
                match OnCallSchedule::parse(&path.display().to_string(), &text) {
                    Ok(s) => {
                        if s.slots.is_empty() {
                            self.warn(
                                line,
                                format!("{rloc}on_call_schedule"),
                                format!("{} lists no shift: the rule never fires", path.display()),
                            );
                        } else if s.ends().is_some_and(|end| end <= chrono::Utc::now()) {
                            self.warn(
                                line,
                                format!("{rloc}on_call_schedule"),
                                format!(
                                    "every shift in {} is over: the rule never fires",
                                    path.display()
                                ),
                            );
                        }
                        Some(s)
                    }
                    Err(errors) => {
                        for e in errors {
                            self.error(
                                line,
                                format!("{rloc}on_call_schedule"),
                                format!("{} {e}", path.display()),
                            );
                        }
                        None
                    }
                }
            });
            let business_hours =
                r.business_hours.as_ref().and_then(|h| {
                    match BusinessHours::parse(&h.days, &h.from, &h.to, h.utc_offset.as_deref()) {
                        Ok(b) => Some(b),
                        Err(e) => {
                            self.error(line, format!("{rloc}business_hours"), e);
                            None
                        }
                    }
                });
            let max_duration = r
                .max_duration
                .as_deref()
                .and_then(|raw| self.span(line, &rloc, "max_duration", raw));
            if r.low_risk {
                if let Some(t) = target.filter(|t| t.low_risk_roles.is_empty()) {
                    self.warn(
                        line,
                        format!("{rloc}low_risk"),
                        format!(
                            "target \"{}\" lists no low_risk_roles: the rule never fires",
                            t.id
                        ),
                    );
                }
            }
            let rule = AutoApproveRule {
                name,
                on_call_group,
                on_call_schedule,
                business_hours,
                max_duration,
                low_risk: r.low_risk,
            };
            let given = r.on_call_group.is_some()
                || r.on_call_schedule.is_some()
                || r.business_hours.is_some()
                || r.max_duration.is_some()
                || r.low_risk;
            if !given {
                self.error(
                    line,
                    rloc.trim_end().to_owned(),
                    "has no condition and would approve everything: give on_call_group, on_call_schedule, business_hours, max_duration or low_risk (or set approval_required = false on the eligibility, openly)",
                );
            }
            rules.push(rule);
        }
        let errors_after = self.problems.iter().filter(|p| !p.warning).count();
        if errors_after > errors_before {
            return None;
        }
        Some(PolicyAutomation {
            auto_approve: rules,
            remind_after,
            escalate_after,
            escalate_to,
        })
    }

    fn conditions(
        &mut self,
        line: Option<usize>,
        loc: &str,
        raw: &BTreeMap<String, OneOrMany>,
    ) -> BTreeMap<String, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for (claim, values) in raw {
            let values: BTreeSet<String> = match values {
                OneOrMany::One(v) => [v.clone()].into_iter().collect(),
                OneOrMany::Many(v) => v.iter().cloned().collect(),
            };
            if claim.is_empty() || values.is_empty() {
                self.error(
                    line,
                    format!("{loc}conditions"),
                    format!("\"{claim}\" must name a claim and at least one value"),
                );
                continue;
            }
            out.insert(claim.clone(), values);
        }
        out
    }

    fn oidc(
        &mut self,
        section: &Spanned<OidcSection>,
        base: Option<&Path>,
    ) -> (Option<OidcSettings>, StepUpRule) {
        let line = self.line_of(section);
        let o = section.get_ref();
        let loc = "oidc.";
        let mut ok = true;
        let issuer = o.issuer.trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&issuer) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => {}
            Ok(_) => {
                ok = false;
                self.error(
                    line,
                    format!("{loc}issuer"),
                    "must be an https URL (plain http only on a loopback address, for tests)",
                );
            }
            Err(e) => {
                ok = false;
                self.error(
                    line,
                    format!("{loc}issuer"),
                    format!("\"{}\" is not a URL: {e}", o.issuer),
                );
            }
        }
        if o.client_id.trim().is_empty() {
            ok = false;
            self.error(line, format!("{loc}client_id"), "must not be empty");
        }
        let secret = self.secret(
            line,
            loc,
            "client_secret",
            [
                &o.client_secret,
                &o.client_secret_file,
                &o.client_secret_env,
            ],
            base,
        );
        let secret = match secret {
            Some(s) => s,
            None => {
                ok = false;
                None
            }
        };
        let mut span = |field: &'static str, raw: &Option<String>, default: u64, max: u64| -> u64 {
            match raw {
                None => default,
                Some(r) => match self.span(line, loc, field, r) {
                    Some(s) if s.secs() <= max => s.secs(),
                    Some(_) => {
                        self.error(
                            line,
                            format!("{loc}{field}"),
                            format!("must be at most {}", Span::from_secs(max)),
                        );
                        default
                    }
                    None => default,
                },
            }
        };
        let clock_skew = span("clock_skew", &o.clock_skew, 60, 300);
        let session_lifetime = span(
            "session_lifetime",
            &o.session_lifetime,
            8 * 3600,
            7 * 86_400,
        );
        let jwks_refresh = span("jwks_refresh_interval", &o.jwks_refresh_interval, 10, 3600);
        let step = o.step_up.as_ref();
        let mut rule = StepUpRule::default();
        if let Some(v) = step.and_then(|s| s.acr_values.clone()) {
            rule.acr_values = v;
        }
        if let Some(v) = step.and_then(|s| s.amr.clone()) {
            rule.amr = v;
        }
        if let Some(raw) = step.and_then(|s| s.max_age.as_deref()) {
            if let Some(s) = self.span(line, "oidc.step_up.", "max_age", raw) {
                rule.max_age = s;
            }
        }
        if rule.acr_values.is_empty() && rule.amr.is_empty() {
            self.error(
                line,
                "oidc.step_up",
                "names neither acr_values nor amr: nothing could count as a strong sign-in",
            );
        }
        let scopes = o.scopes.clone().unwrap_or_else(|| {
            ["openid", "profile", "email", "groups"]
                .map(String::from)
                .to_vec()
        });
        if !scopes.iter().any(|s| s == "openid") {
            self.error(line, format!("{loc}scopes"), "must include \"openid\"");
        }
        let settings = OidcSettings {
            issuer,
            client_id: o.client_id.clone(),
            client_secret: secret,
            cli_client_id: o.cli_client_id.clone(),
            audiences: o.audiences.clone(),
            scopes,
            username_claim: o
                .username_claim
                .clone()
                .unwrap_or_else(|| "preferred_username".into()),
            email_claim: o.email_claim.clone().unwrap_or_else(|| "email".into()),
            groups_claim: o.groups_claim.clone().unwrap_or_else(|| "groups".into()),
            attribute_claims: o.attribute_claims.clone(),
            clock_skew: std::time::Duration::from_secs(clock_skew),
            session_lifetime: std::time::Duration::from_secs(session_lifetime),
            jwks_refresh_interval: std::time::Duration::from_secs(jwks_refresh),
        };
        (ok.then_some(settings), rule)
    }

    /// `[targets.aws_sts]`: a region, a bounded session length, keys or
    /// the default chain, and an IAM role ARN for every role.
    fn aws_sts(
        &mut self,
        line: Option<usize>,
        loc: &str,
        aws: &AwsStsSection,
        roles: &BTreeSet<Name>,
        base: Option<&Path>,
    ) -> Option<elevate_providers::sessions::AwsStsConfig> {
        use elevate_providers::sessions as s;
        let prefix = format!("{loc}aws_sts.");
        let mut ok = true;
        if aws.region.trim().is_empty() {
            self.error(line, format!("{prefix}region"), "must not be empty");
            ok = false;
        }
        for (field, url) in [
            ("endpoint_url", &aws.endpoint_url),
            ("federation_url", &aws.federation_url),
            ("console_destination", &aws.console_destination),
            ("iam_endpoint_url", &aws.iam_endpoint_url),
        ] {
            if let Some(u) = url {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    self.error(
                        line,
                        format!("{prefix}{field}"),
                        format!("\"{u}\" is not an http(s) URL"),
                    );
                    ok = false;
                }
            }
        }
        if let Some(template) = &aws.revoke_via_role {
            let example = template.replace("{account}", "111122223333");
            // `{account}` must be the ARN's account field: anywhere else,
            // the role assumed would be in one fixed account and the deny
            // would land on a same-named role there.
            if template.split(':').nth(4) != Some("{account}")
                || !example.starts_with("arn:")
                || !example.contains(":role/")
            {
                self.error(
                    line,
                    format!("{prefix}revoke_via_role"),
                    format!(
                        "\"{template}\" must be an IAM role ARN with {{account}} for the account (arn:aws:iam::{{account}}:role/NAME)"
                    ),
                );
                ok = false;
            }
        }
        if aws.revoke_via_role.is_some() && !aws.revoke_sessions {
            self.warn(
                line,
                format!("{prefix}revoke_via_role"),
                "is used only with revoke_sessions = true",
            );
        }
        let max_session_secs = match &aws.max_session {
            Some(raw) => {
                let secs = i64::try_from(self.span(line, &prefix, "max_session", raw)?.secs())
                    .unwrap_or(i64::MAX);
                if !(s::MIN_SESSION_SECS..=s::MAX_SESSION_SECS).contains(&secs) {
                    self.error(
                        line,
                        format!("{prefix}max_session"),
                        "must be between 15m and 12h (AWS's role session limits)",
                    );
                    ok = false;
                }
                secs
            }
            None => 3600,
        };
        let keys = self.aws_keys(
            line,
            &prefix,
            &aws.access_key_id,
            [
                &aws.secret_access_key,
                &aws.secret_access_key_file,
                &aws.secret_access_key_env,
            ],
            base,
            &mut ok,
        )?;
        for role in roles {
            match aws.role_arns.get(role.as_str()) {
                Some(arn) if arn.starts_with("arn:") && arn.contains(":role/") => {}
                Some(arn) => {
                    self.error(
                        line,
                        format!("{prefix}role_arns.{role}"),
                        format!(
                            "\"{arn}\" is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                        ),
                    );
                    ok = false;
                }
                None => {
                    self.error(
                        line,
                        format!("{prefix}role_arns"),
                        format!("the role \"{role}\" has no IAM role ARN"),
                    );
                    ok = false;
                }
            }
        }
        for k in aws.role_arns.keys() {
            if !roles.iter().any(|r| r.as_str() == k) {
                self.error(
                    line,
                    format!("{prefix}role_arns.{k}"),
                    format!("\"{k}\" is not one of this target's roles"),
                );
                ok = false;
            }
        }
        ok.then(|| s::AwsStsConfig {
            region: aws.region.trim().to_owned(),
            endpoint_url: aws.endpoint_url.clone(),
            federation_url: aws
                .federation_url
                .clone()
                .unwrap_or_else(|| s::DEFAULT_FEDERATION_URL.into()),
            console_destination: aws
                .console_destination
                .clone()
                .unwrap_or_else(|| s::DEFAULT_CONSOLE_DESTINATION.into()),
            max_session_secs,
            keys,
            role_arns: aws.role_arns.clone(),
            revoke_sessions: aws.revoke_sessions,
            iam_endpoint_url: aws.iam_endpoint_url.clone(),
            revoke_via_role: aws.revoke_via_role.clone(),
        })
    }

    /// AWS access keys given in a target section: an id with a secret
    /// (inline, file or environment), or neither for the default AWS
    /// credential chain. `None` after a secret that cannot be read;
    /// `ok` turns false when only one half is given.
    fn aws_keys(
        &mut self,
        line: Option<usize>,
        prefix: &str,
        access_key_id: &Option<String>,
        secret: [&Option<String>; 3],
        base: Option<&Path>,
        ok: &mut bool,
    ) -> Option<Option<elevate_providers::sessions::StaticKeys>> {
        let secret = self.secret(line, prefix, "secret_access_key", secret, base)?;
        Some(match (access_key_id, secret) {
            (Some(id), Some(secret)) => Some(elevate_providers::sessions::StaticKeys {
                access_key_id: id.clone(),
                secret_access_key: secret,
            }),
            (None, None) => None,
            _ => {
                self.error(
                    line,
                    format!("{prefix}access_key_id"),
                    "give access_key_id together with a secret_access_key (or neither, for the default AWS credential chain)",
                );
                *ok = false;
                None
            }
        })
    }

    /// `[targets.identity_center]`: a region, keys or the default chain,
    /// bounded polling, how often to read the tree and to reconcile.
    fn identity_center(
        &mut self,
        line: Option<usize>,
        loc: &str,
        ic: &IdentityCenterSection,
        base: Option<&Path>,
    ) -> Option<(
        elevate_providers::identity_center::IdentityCenterConfig,
        Discovery,
    )> {
        let prefix = format!("{loc}identity_center.");
        let mut ok = true;
        if ic.region.trim().is_empty() {
            self.error(line, format!("{prefix}region"), "must not be empty");
            ok = false;
        }
        if let Some(u) = &ic.endpoint_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                self.error(
                    line,
                    format!("{prefix}endpoint_url"),
                    format!("\"{u}\" is not an http(s) URL"),
                );
                ok = false;
            }
        }
        if let Some(arn) = &ic.instance_arn {
            if !arn.starts_with("arn:") || !arn.contains(":instance/") {
                self.error(
                    line,
                    format!("{prefix}instance_arn"),
                    format!("\"{arn}\" is not an IAM Identity Center instance ARN (arn:aws:sso:::instance/ssoins-…)"),
                );
                ok = false;
            }
        }
        for (i, name) in ic.permission_sets.iter().enumerate() {
            if Name::parse("permission set", name).is_err() {
                self.error(
                    line,
                    format!("{prefix}permission_sets[{i}]"),
                    format!("\"{name}\" is not a permission set name"),
                );
                ok = false;
            }
        }
        // A span within bounds, or the default; `None` after an error.
        let mut bounded = |field: &'static str,
                           raw: &Option<String>,
                           default: u64,
                           min: u64,
                           max: u64,
                           what: &str| {
            let span = match raw {
                Some(raw) => self.span(line, &prefix, field, raw)?,
                None => Span::from_secs(default),
            };
            if (min..=max).contains(&span.secs()) {
                Some(span)
            } else {
                self.error(line, format!("{prefix}{field}"), format!("must be {what}"));
                None
            }
        };
        let poll_interval = bounded(
            "poll_interval",
            &ic.poll_interval,
            2,
            1,
            60,
            "between 1s and 1m",
        );
        let poll_timeout = bounded(
            "poll_timeout",
            &ic.poll_timeout,
            20,
            1,
            25,
            // elevate cuts every provider call off at 30 s (and at half
            // the job lease): a longer wait would end as an error instead
            // of an expected "still in progress".
            "between 1s and 25s (and below half of server.job_lease)",
        );
        let refresh = bounded(
            "refresh",
            &ic.refresh,
            15 * 60,
            60,
            7 * 86_400,
            "between 1m and 7d",
        );
        let reconcile_every = bounded(
            "reconcile_every",
            &ic.reconcile_every,
            3600,
            60,
            7 * 86_400,
            "between 1m and 7d",
        );
        let reconcile = match ic.reconcile.as_deref() {
            None | Some("report") => Some(ReconcileMode::Report),
            Some("remove") => Some(ReconcileMode::Remove),
            Some("off") => Some(ReconcileMode::Off),
            Some(other) => {
                self.error(
                    line,
                    format!("{prefix}reconcile"),
                    format!("\"{other}\" is not one of report, remove, off"),
                );
                None
            }
        };
        let keys = self.aws_keys(
            line,
            &prefix,
            &ic.access_key_id,
            [
                &ic.secret_access_key,
                &ic.secret_access_key_file,
                &ic.secret_access_key_env,
            ],
            base,
            &mut ok,
        )?;
        let (poll_interval, poll_timeout, refresh, reconcile_every, reconcile) = (
            poll_interval?,
            poll_timeout?,
            refresh?,
            reconcile_every?,
            reconcile?,
        );
        ok.then(|| {
            (
                elevate_providers::identity_center::IdentityCenterConfig {
                    region: ic.region.trim().to_owned(),
                    endpoint_url: ic.endpoint_url.clone(),
                    keys,
                    instance_arn: ic.instance_arn.clone(),
                    identity_store_id: ic.identity_store_id.clone(),
                    permission_sets: ic.permission_sets.clone(),
                    allow_management_account: ic.allow_management_account,
                    poll_interval: std::time::Duration::from_secs(poll_interval.secs()),
                    poll_timeout: std::time::Duration::from_secs(poll_timeout.secs()),
                },
                Discovery {
                    refresh,
                    reconcile,
                    reconcile_every,
                },
            )
        })
    }

    fn postgres(
        &mut self,
        line: Option<usize>,
        loc: &str,
        pg: &PostgresSection,
        roles: &BTreeSet<Name>,
        base: Option<&Path>,
    ) -> Option<PostgresConfig> {
        let password = self.secret(
            line,
            &format!("{loc}postgres."),
            "password",
            [&pg.password, &pg.password_file, &pg.password_env],
            base,
        )?;
        let timeout = match &pg.connect_timeout {
            Some(raw) => {
                let t = self.span(line, loc, "connect_timeout", raw)?.secs();
                // Provider calls are cut off at 30 s (below the job lease).
                if t > 25 {
                    self.error(
                        line,
                        format!("{loc}postgres.connect_timeout"),
                        "must be at most 25s",
                    );
                }
                t
            }
            None => 5,
        };
        for (k, v) in &pg.user_map {
            if UserName::parse(k).is_err() || v.is_empty() || v.len() > 63 || v.contains('\0') {
                self.error(
                    line,
                    format!("{loc}postgres.user_map"),
                    format!("\"{k}\" = \"{v}\" is not a valid mapping"),
                );
            }
        }
        Some(PostgresConfig {
            host: pg.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            port: pg.port.unwrap_or(5432),
            database: pg.database.clone().unwrap_or_else(|| "postgres".into()),
            user: pg.user.clone(),
            password,
            connect_timeout_secs: timeout,
            user_map: pg
                .user_map
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, None) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .iter()
                .filter(|p| !p.warning)
                .map(|p| p.to_string())
                .collect(),
        }
    }

    const AWS_TARGET: &str = "[[targets]]\nid = \"aws\"\nkind = \"aws-sts\"\nroles = [\"admin\", \"readonly\"]\n[[targets.resources]]\nid = \"acct\"\n[targets.aws_sts]\nregion = \"us-east-1\"\n";

    #[test]
    fn aws_sts_targets_need_an_iam_role_for_every_role_and_bounded_sessions() {
        let text = format!(
            "{AWS_TARGET}max_session = \"13h\"\naccess_key_id = \"AKIA\"\niam_endpoint_url = \"moto\"\nrevoke_via_role = \"arn:aws:iam::111122223333:role/Revoker-{{account}}\"\n[targets.aws_sts.role_arns]\nadmin = \"arn:aws:iam::111122223333:role/Admin\"\nother = \"arn:aws:iam::111122223333:role/X\"\n"
        );
        let e = errors(&text).join("\n");
        if cfg!(feature = "aws") {
            assert!(
                e.contains("the role \"readonly\" has no IAM role ARN"),
                "{e}"
            );
            assert!(
                e.contains("\"other\" is not one of this target's roles"),
                "{e}"
            );
            assert!(e.contains("between 15m and 12h"), "{e}");
            assert!(e.contains("together with a secret_access_key"), "{e}");
            assert!(
                e.contains("iam_endpoint_url: \"moto\" is not an http(s) URL"),
                "{e}"
            );
            assert!(e.contains("revoke_via_role"), "{e}");
            assert!(e.contains("with {account} for the account"), "{e}");
        } else {
            assert!(e.contains("lacks AWS support"), "{e}");
        }
    }

    #[test]
    fn a_complete_aws_sts_target_loads() {
        let text = format!(
            "{AWS_TARGET}revoke_sessions = true\niam_endpoint_url = \"http://127.0.0.1:5000\"\n[targets.aws_sts.role_arns]\nadmin = \"arn:aws:iam::111122223333:role/Admin\"\nreadonly = \"arn:aws:iam::111122223333:role/ReadOnly\"\n"
        );
        let e = errors(&text);
        if cfg!(feature = "aws") {
            assert!(e.is_empty(), "{e:?}");
            let config = Config::parse(&text, None).map_err(|p| format!("{p:?}"));
            let sts = config.ok().and_then(|c| {
                c.connections.into_values().find_map(|t| match t {
                    TargetConnection::AwsSts(s) => Some(s),
                    _ => None,
                })
            });
            assert!(
                sts.as_ref().is_some_and(|s| s.revoke_sessions
                    && s.iam_endpoint_url.as_deref() == Some("http://127.0.0.1:5000")),
                "{sts:?}"
            );
        } else {
            assert!(e.join("\n").contains("lacks AWS support"), "{e:?}");
        }
    }

    const IC_TARGET: &str = "[[targets]]\nid = \"aws\"\nkind = \"aws-identity-center\"\n";

    #[test]
    fn identity_center_targets_read_their_tree_from_aws_and_bound_their_timers() {
        // Accounts and roles named in the file would be a second truth.
        let e = errors(
            "[[targets]]\nid = \"aws\"\nkind = \"aws-identity-center\"\nroles = [\"Admin\"]\n[targets.identity_center]\nregion = \"us-east-1\"\n"
        )
        .join("\n");
        if !cfg!(feature = "aws") {
            assert!(e.contains("lacks AWS support"), "{e}");
            return;
        }
        assert!(
            e.contains("reads its accounts (resources) and permission sets (roles) from AWS"),
            "{e}"
        );
        let e = errors(IC_TARGET).join("\n");
        assert!(
            e.contains("needs a [targets.identity_center] section"),
            "{e}"
        );
        let e = errors(&format!(
            "{IC_TARGET}[targets.identity_center]\nregion = \"\"\nendpoint_url = \"moto\"\ninstance_arn = \"ssoins-1\"\nreconcile = \"delete\"\nrefresh = \"10s\"\npoll_interval = \"2m\"\npoll_timeout = \"40s\"\naccess_key_id = \"AKIA\"\n"
        ))
        .join("\n");
        for expected in [
            "region: must not be empty",
            "\"moto\" is not an http(s) URL",
            "not an IAM Identity Center instance ARN",
            "\"delete\" is not one of report, remove, off",
            "refresh: must be between 1m and 7d",
            "poll_interval: must be between 1s and 1m",
            "poll_timeout: must be between 1s and 25s",
            "together with a secret_access_key",
        ] {
            assert!(e.contains(expected), "{expected} missing from {e}");
        }
        // A poll that outlasts the call limit would read as an error.
        let e = errors(&format!(
            "[server]\njob_lease = \"30s\"\n{IC_TARGET}[targets.identity_center]\nregion = \"us-east-1\"\npoll_timeout = \"15s\"\n"
        ))
        .join("\n");
        assert!(
            e.contains("poll_timeout: must be below half of server.job_lease"),
            "{e}"
        );
        // Another kind takes no such section.
        let e = errors(&format!(
            "{AWS_TARGET}[targets.identity_center]\nregion = \"us-east-1\"\n"
        ))
        .join("\n");
        assert!(
            e.contains("takes no [targets.identity_center] section"),
            "{e}"
        );
    }

    #[test]
    fn policies_may_name_accounts_ous_and_permission_sets_known_only_once_read() {
        let text = format!(
            "{IC_TARGET}low_risk_roles = [\"ReadOnlyAccess\"]\n[targets.identity_center]\nregion = \"us-east-1\"\nreconcile = \"remove\"\nreconcile_every = \"30m\"\n\n[[users]]\nname = \"alice\"\ngroups = [\"sre\"]\n\n[[eligibilities]]\nid = \"sre\"\nsubjects = [\"group:sre\"]\ntarget = \"aws\"\nresources = {{ under = [\"ou-ab12-34567890\"], ids = [\"123456789012\"] }}\nroles = [\"AdministratorAccess\"]\napproval_required = false\n"
        );
        let config = match Config::parse(&text, None) {
            Ok(c) => c,
            Err(p) if !cfg!(feature = "aws") => {
                assert!(format!("{p:?}").contains("lacks AWS support"));
                return;
            }
            Err(p) => panic!("{p:?}"),
        };
        let aws = Name::parse("t", "aws").unwrap();
        let d = &config.discovery[&aws];
        assert_eq!(
            (d.reconcile, d.refresh.secs(), d.reconcile_every.secs()),
            (ReconcileMode::Remove, 900, 1800)
        );
        let catalog = config.catalog(&HashMap::new(), chrono::Utc::now());
        let t = &catalog.targets[&aws];
        assert!(t.discovered && t.resources.is_empty() && t.roles.is_empty());
        let TargetConnection::AwsIdentityCenter(ic) = &config.connections[&aws] else {
            panic!("not an identity center connection");
        };
        assert_eq!(
            (ic.poll_interval.as_secs(), ic.poll_timeout.as_secs()),
            (2, 20)
        );
        assert!(ic.keys.is_none() && !ic.allow_management_account);
    }

    #[test]
    fn the_example_config_is_valid() {
        std::env::set_var("ELEVATE_ORDERS_DB_PASSWORD", "example");
        let text = include_str!("../../../examples/elevate.toml");
        let config = Config::parse(text, None).unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(config.connections.len(), 2);
        let catalog = config.catalog(&HashMap::new(), chrono::Utc::now());
        let req = catalog
            .approval_requirement(
                &Name::parse("t", "orders-db").unwrap(),
                &Name::parse("t", "orders").unwrap(),
                &Name::parse("t", "orders_writer").unwrap(),
            )
            .unwrap();
        assert_eq!(req.quorum, 2);
    }

    #[test]
    fn problems_carry_their_line_and_all_are_reported_at_once() {
        let text = "[[targets]]\nid = \"t\"\nkind = \"dry-run\"\nroles = [\"r\"]\n[[targets.resources]]\nid = \"a\"\nparent = \"nowhere\"\n\n[[eligibilities]]\nid = \"e\"\nsubjects = [\"sre\"]\ntarget = \"t\"\nresources = { ids = [\"b\"] }\nroles = [\"x\"]\nmax_duration = \"8 hours\"\n";
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.contains("unknown parent \"nowhere\"")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("line 9") && e.contains("user:NAME or group:NAME")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("unknown resource \"b\"")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("unknown role \"x\"")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("8 hours")), "{errs:?}");
    }

    #[test]
    fn one_token_hash_cannot_belong_to_two_users() {
        let h = crate::auth::token_hash("t");
        let text = format!("[[users]]\nname = \"a\"\ntoken_hashes = [\"{h}\"]\n[[users]]\nname = \"b\"\ntoken_hashes = [\"{h}\"]\n");
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.contains("already given")), "{errs:?}");
    }

    #[test]
    fn a_misspelt_key_is_an_error_not_a_silent_default() {
        let errs = errors("[[eligibilities]]\nid = \"e\"\napproval_requried = false\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("approval_requried") && errs[0].starts_with("line "),
            "{errs:?}"
        );
    }

    /// A config using every automation key; `{extra_*}` are spliced in.
    fn automation_config(eligibility_extra: &str, policy_extra: &str, systems: &str) -> String {
        format!(
            r#"[[users]]
name = "alice"
groups = ["developers", "oncall"]
[[users]]
name = "bob"
groups = ["dba", "leads"]
[[targets]]
id = "t"
kind = "dry-run"
roles = ["writer", "reader"]
low_risk_roles = ["reader"]
[[targets.resources]]
id = "x"
{systems}
[[eligibilities]]
id = "e"
subjects = ["group:developers"]
target = "t"
resources = {{ ids = ["x"] }}
roles = ["writer", "reader"]
{eligibility_extra}
[[approval_policies]]
id = "p"
target = "t"
resources = {{ ids = ["x"] }}
approvers = ["group:dba"]
pending_timeout = "3h"
{policy_extra}
"#
        )
    }

    const SYSTEM: &str = "[[ticket_systems]]\nname = \"changes\"\nurl = \"http://127.0.0.1:9/tickets/{ticket}\"\nstatus_field = \"state\"\nopen_values = [\"Open\", \"in progress\"]\n";

    #[test]
    fn automation_settings_are_read_into_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("oncall.txt"),
            "# rota\n2026-12-01T00:00:00Z 2099-12-08T00:00:00Z alice\n",
        )
        .unwrap();
        let text = automation_config(
            "ticket_pattern = \"CHG-[0-9]+\"\nticket_system = \"changes\"",
            r#"remind_after = "30m"
escalate_after = "2h"
escalate_to = ["group:leads"]
[[approval_policies.auto_approve]]
name = "on-call"
on_call_group = "oncall"
on_call_schedule = "oncall.txt"
max_duration = "1h"
[[approval_policies.auto_approve]]
name = "office-hours-low-risk"
business_hours = { days = "mon-fri", from = "09:00", to = "18:00", utc_offset = "+09:00" }
low_risk = true"#,
            SYSTEM,
        );
        let config = Config::parse(&text, Some(dir.path())).unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let catalog = config.catalog(&HashMap::new(), chrono::Utc::now());
        let e = &catalog.eligibilities[0];
        assert!(e.ticket_required, "a pattern implies a ticket");
        assert_eq!(
            e.ticket_pattern.as_ref().map(|p| p.as_str()),
            Some("CHG-[0-9]+")
        );
        assert_eq!(
            e.ticket_system.as_ref().map(|n| n.as_str()),
            Some("changes")
        );
        let p = &catalog.approval_policies[0];
        assert_eq!(p.remind_after, Some(Span::from_secs(1800)));
        assert_eq!(p.escalate_after, Some(Span::from_secs(7200)));
        assert_eq!(p.escalate_to, vec![Subject::parse("group:leads").unwrap()]);
        assert_eq!(p.auto_approve.len(), 2);
        assert_eq!(
            p.auto_approve[0]
                .on_call_schedule
                .as_ref()
                .map(|s| s.slots.len()),
            Some(1)
        );
        assert_eq!(
            p.auto_approve[1]
                .business_hours
                .as_ref()
                .map(|h| h.utc_offset),
            Some(9 * 3600)
        );
        let t = &catalog.targets[&Name::parse("t", "t").unwrap()];
        assert!(t
            .low_risk_roles
            .contains(&Name::parse("t", "reader").unwrap()));
        let system = &config.ticket_systems[0];
        assert_eq!(system.timeout, std::time::Duration::from_secs(5));
        assert_eq!(
            system.open_when,
            crate::tickets::OpenWhen::Status {
                field: "state".into(),
                values: vec!["open".into(), "in progress".into()]
            }
        );
    }

    #[test]
    fn bad_automation_values_are_errors_that_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad-rota.txt"),
            "2026-12-01T00:00:00Z 2026-12-08T00:00:00Z alice\n2026-12-08 2026-12-15 bob\n",
        )
        .unwrap();
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "pattern",
                automation_config("ticket_pattern = \"CHG-[0-9\"", "", ""),
                "eligibilities[0] \"e\" ticket_pattern: ticket_pattern: \"CHG-[0-9\" is not a regular expression",
            ),
            (
                "unknown system",
                automation_config("ticket_system = \"jira\"", "", SYSTEM),
                "ticket_system: unknown ticket system \"jira\" (configured: changes)",
            ),
            (
                "no systems",
                automation_config("ticket_system = \"jira\"", "", ""),
                "no [[ticket_systems]] is configured",
            ),
            (
                "url without placeholder",
                automation_config("", "", &SYSTEM.replace("/tickets/{ticket}", "/tickets")),
                "url: must contain {ticket}",
            ),
            (
                "url not http",
                automation_config("", "", &SYSTEM.replace("http://127.0.0.1:9", "ftp://h")),
                "is not an http(s) URL",
            ),
            (
                "no way to read the answer",
                automation_config(
                    "",
                    "",
                    &SYSTEM.replace("status_field = \"state\"\nopen_values = [\"Open\", \"in progress\"]\n", ""),
                ),
                "give open_field (a boolean) or status_field and open_values",
            ),
            (
                "status without values",
                automation_config("", "", &SYSTEM.replace("[\"Open\", \"in progress\"]", "[]")),
                "open_values: lists no status",
            ),
            (
                "two token sources",
                automation_config("", "", &format!("{SYSTEM}token = \"a\"\ntoken_env = \"B\"\n")),
                "give only one of token, token_file, token_env",
            ),
            (
                "long timeout",
                automation_config("", "", &format!("{SYSTEM}timeout = \"2m\"\n")),
                "timeout: must be at most 60s",
            ),
            (
                "escalation without fallback",
                automation_config("", "escalate_after = \"2h\"", ""),
                "escalate_after needs escalate_to",
            ),
            (
                "fallback without escalation",
                automation_config("", "escalate_to = [\"group:leads\"]", ""),
                "escalate_to needs escalate_after",
            ),
            (
                "reminder after expiry",
                automation_config("", "remind_after = \"3h\"", ""),
                "remind_after: must be shorter than the pending timeout (3h)",
            ),
            (
                "bad fallback subject",
                automation_config("", "escalate_after = \"1h\"\nescalate_to = [\"leads\"]", ""),
                "escalate_to[0]",
            ),
            (
                "rule without condition",
                automation_config("", "[[approval_policies.auto_approve]]\nname = \"always\"", ""),
                "has no condition and would approve everything",
            ),
            (
                "bad business hours",
                automation_config("", "[[approval_policies.auto_approve]]\nname = \"h\"\nbusiness_hours = { days = \"mon-fri\", from = \"9am\", to = \"18:00\" }", ""),
                "business_hours: from: \"9am\" is not a time of day like 09:00",
            ),
            (
                "bad offset",
                automation_config("", "[[approval_policies.auto_approve]]\nname = \"h\"\nbusiness_hours = { days = \"mon-fri\", from = \"09:00\", to = \"18:00\", utc_offset = \"JST\" }", ""),
                "utc_offset: \"JST\" is not an offset like +09:00",
            ),
            (
                "bad days",
                automation_config("", "[[approval_policies.auto_approve]]\nname = \"h\"\nbusiness_hours = { days = \"weekdays\", from = \"09:00\", to = \"18:00\" }", ""),
                "days: \"weekdays\" is not a day",
            ),
            (
                "missing schedule",
                automation_config("", "[[approval_policies.auto_approve]]\nname = \"s\"\non_call_schedule = \"nope.txt\"", ""),
                "on_call_schedule: cannot read",
            ),
            (
                "bad schedule line",
                automation_config("", "[[approval_policies.auto_approve]]\nname = \"s\"\non_call_schedule = \"bad-rota.txt\"", ""),
                "bad-rota.txt line 2: \"2026-12-08\" is not an RFC 3339 date-time",
            ),
            (
                "bad low-risk role",
                automation_config("", "", "").replace("low_risk_roles = [\"reader\"]", "low_risk_roles = [\"admin\"]"),
                "low_risk_roles[0]: \"admin\" is not one of this target's roles",
            ),
            (
                "duplicate rule",
                automation_config("", "[[approval_policies.auto_approve]]\nname = \"r\"\nlow_risk = true\n[[approval_policies.auto_approve]]\nname = \"r\"\nmax_duration = \"1h\"", ""),
                "duplicate rule name \"r\"",
            ),
            (
                "misspelt rule key",
                automation_config("", "[[approval_policies.auto_approve]]\nname = \"r\"\non_call_gruop = \"oncall\"", ""),
                "on_call_gruop",
            ),
        ];
        for (name, text, says) in cases {
            let errs = match Config::parse(&text, Some(dir.path())) {
                Ok(_) => Vec::new(),
                Err(problems) => problems
                    .iter()
                    .filter(|p| !p.warning)
                    .map(|p| p.to_string())
                    .collect(),
            };
            assert!(
                errs.iter()
                    .any(|e| e.contains(says) && e.starts_with("line ")),
                "{name}: no error saying {says:?} in {errs:?}"
            );
        }
    }

    #[test]
    fn a_missing_default_validity_is_one_year_from_first_sight() {
        let text = "[[users]]\nname = \"a\"\ngroups = [\"g\"]\n[[targets]]\nid = \"t\"\nkind = \"dry-run\"\nroles = [\"r\"]\n[[targets.resources]]\nid = \"x\"\n[[eligibilities]]\nid = \"e\"\nsubjects = [\"group:g\"]\ntarget = \"t\"\nresources = { ids = [\"x\"] }\nroles = [\"r\"]\napproval_required = false\n";
        let config = Config::parse(text, None).unwrap();
        let first = chrono::Utc::now() - chrono::Duration::days(10);
        let seen: HashMap<String, Timestamp> = [("e".to_string(), first)].into_iter().collect();
        let catalog = config.catalog(&seen, chrono::Utc::now());
        assert_eq!(
            catalog.eligibilities[0].not_after,
            first + chrono::Duration::days(365)
        );
    }
}
