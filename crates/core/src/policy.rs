//! What exists and who may do what: targets with their resources (nested
//! like OUs, tagged) and roles, eligibilities, approval policies, and the
//! admin and auditor lists. Built once from the config file; every question
//! here is a pure function of the catalog, a principal and `now`.
//!
//! Semantics worth knowing:
//! - Eligibilities are allow rules and combine by union: a request is
//!   permitted if any eligibility valid now permits it, and when several do,
//!   the one that asks least of the requester (no approval, longest maximum)
//!   is used.
//! - Approval policies combine the other way: when several match a
//!   (resource, role), all their approvers may approve, the strictest (largest)
//!   quorum applies and the shortest pending timeout applies.
//! - A selector that names nothing matches nothing: deny by default.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use serde::Serialize;

use crate::automation::{AutoApproval, AutoApproveAsk, AutoApproveRule};
use crate::error::DomainError;
use crate::principal::{AuthMethod, Authn, Principal, Subject};
use crate::values::{Name, Span, Ticket, TicketPattern};
use crate::Timestamp;

#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub id: Name,
    /// The enclosing resource (an OU, a cluster, an environment); any depth.
    pub parent: Option<Name>,
    pub tags: BTreeMap<String, String>,
    pub description: Option<String>,
    /// Set when access is never granted on this resource itself, with the
    /// reason shown to people: an OU or organization root (its accounts
    /// are granted, not it), or an account elevate must keep out of (the
    /// organization's management account). Selectors never cover it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_grantable: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub id: Name,
    /// The provider kind (`postgres`, `dry-run`, ...).
    pub kind: String,
    /// True when nothing is changed on a real system: shown in every
    /// listing so nobody mistakes a rehearsal for real access.
    pub dry_run: bool,
    pub roles: BTreeSet<Name>,
    /// Roles an auto-approval rule with `low_risk = true` may approve
    /// (`low_risk_roles` in the config); a subset of `roles`.
    pub low_risk_roles: BTreeSet<Name>,
    pub resources: BTreeMap<Name, Resource>,
    /// Resources and roles come from the target itself (refreshed from
    /// its inventory), not from the config file.
    pub discovered: bool,
}

impl Target {
    /// The chain of parents of `resource`, nearest first. Stops at a cycle
    /// (config validation refuses cycles; this is a second line of defence).
    pub fn ancestors(&self, resource: &Name) -> Vec<Name> {
        let mut out = Vec::new();
        let mut current = self.resources.get(resource).and_then(|r| r.parent.clone());
        while let Some(p) = current {
            if out.contains(&p) || &p == resource {
                break;
            }
            current = self.resources.get(&p).and_then(|r| r.parent.clone());
            out.push(p);
        }
        out
    }

    /// The path from the root down to `resource`, e.g. `prod/orders`. A
    /// discovered target's OUs and accounts are shown by name
    /// (`Root/Workloads/Prod/payments-prod`): their ids (`ou-…`, account
    /// numbers) mean little to people, and names make the path searchable
    /// by OU. The id stays the resource's identity.
    pub fn path(&self, resource: &Name) -> String {
        let label = |n: &Name| match self.resources.get(n).and_then(|r| r.description.as_ref()) {
            Some(name) if self.discovered => name.clone(),
            _ => n.to_string(),
        };
        let mut parts: Vec<String> = self.ancestors(resource).iter().rev().map(label).collect();
        parts.push(label(resource));
        parts.join("/")
    }
}

/// Which resources of a target a rule covers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceSelector {
    /// These resources themselves.
    pub ids: BTreeSet<Name>,
    /// Every resource anywhere below these (not the parents themselves).
    pub under: BTreeSet<Name>,
    /// Every resource carrying all these tags (key = value).
    pub tags: BTreeMap<String, String>,
}

impl ResourceSelector {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.under.is_empty() && self.tags.is_empty()
    }

    pub fn matches(&self, target: &Target, resource: &Resource) -> bool {
        if resource.not_grantable.is_some() {
            return false;
        }
        if self.ids.contains(&resource.id) {
            return true;
        }
        if !self.under.is_empty()
            && target
                .ancestors(&resource.id)
                .iter()
                .any(|a| self.under.contains(a))
        {
            return true;
        }
        !self.tags.is_empty()
            && self
                .tags
                .iter()
                .all(|(k, v)| resource.tags.get(k) == Some(v))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Eligibility {
    pub id: Name,
    pub subjects: Vec<Subject>,
    pub target: Name,
    pub resources: ResourceSelector,
    pub roles: BTreeSet<Name>,
    pub max_duration: Span,
    pub approval_required: bool,
    pub ticket_required: bool,
    /// The form the ticket reference must have (implies `ticket_required`).
    pub ticket_pattern: Option<TicketPattern>,
    /// The configured ticket system that must confirm the ticket is open
    /// at request time (implies `ticket_required`).
    pub ticket_system: Option<Name>,
    pub break_glass: bool,
    /// Activation needs a fresh strong sign-in (see [`StepUpRule`]).
    pub step_up: bool,
    /// Attribute conditions: each named claim of the requester must hold
    /// one of the listed values (`department = ["sre"]`).
    pub conditions: BTreeMap<String, BTreeSet<String>>,
    pub not_before: Option<Timestamp>,
    /// Always set: when the config gives none, the server fills in one year
    /// after the eligibility was first seen.
    pub not_after: Timestamp,
}

impl Eligibility {
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.not_before.is_none_or(|nb| now >= nb) && now < self.not_after
    }

    /// Whether `ticket` has the form this eligibility asks for. The
    /// presence of a ticket is checked by [`Catalog::permit`].
    pub fn check_ticket(&self, ticket: Option<&Ticket>) -> Result<(), DomainError> {
        match (&self.ticket_pattern, ticket) {
            (Some(pattern), Some(t)) if !pattern.matches(t) => Err(DomainError::TicketMismatch {
                ticket: t.as_str().to_owned(),
                pattern: pattern.as_str().to_owned(),
            }),
            (Some(_), None) => Err(DomainError::TicketRequired),
            _ => Ok(()),
        }
    }

    /// Whether `p`'s attributes meet every condition.
    pub fn conditions_hold(&self, p: &Principal) -> bool {
        self.conditions
            .iter()
            .all(|(claim, allowed)| p.attributes.get(claim).is_some_and(|v| allowed.contains(v)))
    }
}

/// What counts as a fresh strong sign-in, for eligibilities and approval
/// policies marked `step_up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepUpRule {
    /// `acr` values that count as strong (asked for with `acr_values`).
    pub acr_values: Vec<String>,
    /// `amr` methods (RFC 8176) of which one suffices.
    pub amr: Vec<String>,
    /// How long ago the sign-in may have happened.
    pub max_age: Span,
}

impl Default for StepUpRule {
    fn default() -> Self {
        StepUpRule {
            acr_values: Vec::new(),
            // RFC 8176 methods that are a second factor or stronger.
            amr: [
                "mfa", "otp", "hwk", "swk", "sc", "fpt", "face", "iris", "retina", "vbm",
            ]
            .map(String::from)
            .to_vec(),
            max_age: Span::from_secs(15 * 60),
        }
    }
}

impl StepUpRule {
    /// Whether `auth` is a strong sign-in no older than `max_age`; the
    /// error says what is missing, for the person to act on.
    pub fn check(&self, auth: Option<&Authn>, now: Timestamp) -> Result<(), DomainError> {
        let refuse = |reason: String| {
            Err(DomainError::StepUpRequired {
                reason,
                acr_values: self.acr_values.join(" "),
                max_age_secs: self.max_age.secs(),
            })
        };
        let Some(auth) = auth.filter(|a| a.method != AuthMethod::Token) else {
            return refuse(
                "an API token cannot prove a multi-factor sign-in; sign in through the identity provider"
                    .into(),
            );
        };
        let strong_acr = auth
            .acr
            .as_ref()
            .is_some_and(|acr| self.acr_values.contains(acr));
        let strong_amr = auth.amr.iter().any(|m| self.amr.contains(m));
        if !strong_acr && !strong_amr {
            let used = if auth.amr.is_empty() {
                "no stated method".to_owned()
            } else {
                auth.amr.join(", ")
            };
            return refuse(format!(
                "this needs a multi-factor sign-in and yours used {used}"
            ));
        }
        let Some(at) = auth.auth_time else {
            return refuse("your sign-in does not say when it happened (no auth_time)".into());
        };
        let age = now.signed_duration_since(at);
        if age > self.max_age.as_chrono() {
            let minutes = age.num_minutes();
            return refuse(format!(
                "this needs a sign-in within the last {}, and yours was {minutes} minute(s) ago",
                self.max_age
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApprovalPolicy {
    pub id: Name,
    pub target: Name,
    pub resources: ResourceSelector,
    /// `None`: every role on the matching resources.
    pub roles: Option<BTreeSet<Name>>,
    pub approvers: Vec<Subject>,
    pub quorum: u32,
    pub pending_timeout: Span,
    /// Approvers must have signed in strongly and recently.
    pub step_up: bool,
    /// Rules that approve a request at creation without a person; see
    /// [`Catalog::auto_approval`].
    pub auto_approve: Vec<AutoApproveRule>,
    /// A pending request is brought to its approvers' attention again
    /// this long after it was created.
    pub remind_after: Option<Span>,
    /// This long after creation a pending request is escalated: the
    /// `escalate_to` subjects may approve it too.
    pub escalate_after: Option<Span>,
    pub escalate_to: Vec<Subject>,
}

/// What it takes to approve one (target, resource, role), combined over
/// every matching policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRequirement {
    pub policies: Vec<Name>,
    pub approvers: Vec<Subject>,
    pub quorum: u32,
    pub pending_timeout: Span,
    /// Some matching policy asks approvers for a step-up sign-in.
    pub step_up: bool,
    /// The earliest reminder any matching policy asks for.
    pub remind_after: Option<Span>,
    /// The earliest escalation any matching policy asks for ...
    pub escalate_after: Option<Span>,
    /// ... to the fallback approvers of every matching policy.
    pub escalate_to: Vec<Subject>,
}

impl ApprovalRequirement {
    pub fn allows(&self, principal: &Principal) -> bool {
        principal.matches_any(&self.approvers)
    }

    /// The requirement for one request: once it was escalated, its
    /// fallback approvers approve (and see) it like the others. The
    /// requester still never approves their own request (checked by the
    /// transitions).
    pub fn with_escalation(mut self, escalated: bool) -> Self {
        if escalated {
            for s in std::mem::take(&mut self.escalate_to) {
                if !self.approvers.contains(&s) {
                    self.approvers.push(s);
                }
            }
        }
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Shortest access window anyone may ask for.
    pub min_duration: Span,
    /// How far ahead a start may be scheduled.
    pub max_schedule_ahead: Span,
    /// Pending timeout when no policy sets one.
    pub default_pending_timeout: Span,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_duration: Span::from_secs(60),
            max_schedule_ahead: Span::from_secs(30 * 86_400),
            default_pending_timeout: Span::from_secs(3 * 3600),
        }
    }
}

/// Lookup tables derived from a catalog on first use, so a decision looks
/// only at the rules that can apply to the asking principal instead of
/// scanning every eligibility (there may be millions).
#[derive(Debug, Clone, Default)]
pub struct CatalogIndex(OnceLock<IndexTables>);

#[derive(Debug, Clone, Default)]
struct IndexTables {
    eligibilities_by_subject: HashMap<Subject, Vec<usize>>,
    /// (target, resource) → the approval policies covering it.
    policies_by_resource: HashMap<(Name, Name), Vec<usize>>,
    /// Per target: resource → its direct children.
    children: HashMap<Name, HashMap<Name, Vec<Name>>>,
    /// Per target: (tag key, value) → resources carrying it.
    tagged: HashMap<Name, HashMap<(String, String), Vec<Name>>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Catalog {
    pub targets: BTreeMap<Name, Target>,
    pub eligibilities: Vec<Eligibility>,
    pub approval_policies: Vec<ApprovalPolicy>,
    /// May see everything and revoke anything. Admins are not approvers
    /// unless a policy says so: approving is a separate, scoped right.
    pub admins: Vec<Subject>,
    /// May read every request and the audit trail; may change nothing.
    pub auditors: Vec<Subject>,
    pub limits: Limits,
    /// What `step_up` eligibilities and policies ask of a sign-in.
    pub step_up: StepUpRule,
    /// Derived from the fields above; leave it `Default`.
    #[serde(skip)]
    pub index: CatalogIndex,
}

/// The resources of `target` that `selector` covers, through the children
/// and tag tables.
fn select<'a>(
    tables: &IndexTables,
    target: &'a Target,
    selector: &ResourceSelector,
) -> Vec<&'a Resource> {
    let mut found: BTreeSet<&Name> = BTreeSet::new();
    for id in &selector.ids {
        if let Some((k, _)) = target.resources.get_key_value(id) {
            found.insert(k);
        }
    }
    if let Some(children) = tables.children.get(&target.id) {
        let mut stack: Vec<&Name> = selector.under.iter().collect();
        let mut seen: BTreeSet<&Name> = BTreeSet::new();
        while let Some(n) = stack.pop() {
            for c in children.get(n).into_iter().flatten() {
                // `seen` also stops a (refused at load) cycle.
                if seen.insert(c) {
                    if let Some((k, _)) = target.resources.get_key_value(c) {
                        found.insert(k);
                    }
                    stack.push(c);
                }
            }
        }
    }
    if let (Some((k, v)), Some(tagged)) =
        (selector.tags.iter().next(), tables.tagged.get(&target.id))
    {
        for id in tagged.get(&(k.clone(), v.clone())).into_iter().flatten() {
            if let Some((key, r)) = target.resources.get_key_value(id) {
                if selector.tags.iter().all(|(k, v)| r.tags.get(k) == Some(v)) {
                    found.insert(key);
                }
            }
        }
    }
    found
        .into_iter()
        .filter_map(|id| target.resources.get(id))
        .filter(|r| r.not_grantable.is_none())
        .collect()
}

/// One (target, resource, role) the principal may request, with the terms.
#[derive(Debug, Clone, Serialize)]
pub struct EligibleRole {
    pub target: Name,
    pub target_kind: String,
    pub dry_run: bool,
    pub resource: Name,
    pub resource_path: String,
    pub role: Name,
    pub max_duration: Span,
    pub approval_required: bool,
    pub ticket_required: bool,
    pub break_glass: bool,
    /// Activation needs a fresh multi-factor sign-in.
    pub step_up: bool,
    pub eligibility: Name,
    pub not_after: Timestamp,
}

impl EligibleRole {
    /// The terms one eligibility gives for (target, resource, role).
    pub fn new(
        target: &Target,
        resource: &Name,
        role: &Name,
        e: &Eligibility,
        resource_path: String,
    ) -> EligibleRole {
        EligibleRole {
            target: target.id.clone(),
            target_kind: target.kind.clone(),
            dry_run: target.dry_run,
            resource: resource.clone(),
            resource_path,
            role: role.clone(),
            max_duration: e.max_duration,
            approval_required: e.approval_required,
            ticket_required: e.ticket_required,
            break_glass: e.break_glass,
            step_up: e.step_up,
            eligibility: e.id.clone(),
            not_after: e.not_after,
        }
    }

    /// Overlapping eligibilities merge into the most permissive terms the
    /// requester can actually get.
    pub fn merge(&mut self, e: &Eligibility) {
        self.max_duration = self.max_duration.max(e.max_duration);
        self.approval_required &= e.approval_required;
        self.ticket_required &= e.ticket_required;
        self.break_glass |= e.break_glass;
        self.step_up &= e.step_up;
        self.not_after = self.not_after.max(e.not_after);
    }
}

/// The eligibility chosen for a request and what it implies.
#[derive(Debug, Clone)]
pub struct Permit<'a> {
    pub eligibility: &'a Eligibility,
}

/// What a requester asks for, already parsed.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub target: &'a Name,
    pub resource: &'a Name,
    pub role: &'a Name,
    pub duration: Span,
    pub has_ticket: bool,
    pub break_glass: bool,
    /// Test the caller's sign-in against step-up eligibilities. Off when
    /// elevate re-checks a stored request, where the activation's sign-in
    /// was already checked.
    pub check_step_up: bool,
}

impl Catalog {
    /// This catalog with `target`'s resources and roles replaced by what
    /// the target reported (a discovering target's refreshed inventory).
    /// The lookup tables are built again on first use. `low_risk` is the
    /// configured set of low-risk roles: those that exist now are kept (a
    /// role missing from one inventory is low risk again when it returns).
    pub fn with_inventory(
        &self,
        target: &Name,
        resources: BTreeMap<Name, Resource>,
        roles: BTreeSet<Name>,
        low_risk: &BTreeSet<Name>,
    ) -> Catalog {
        let mut next = Catalog {
            index: CatalogIndex::default(),
            ..self.clone()
        };
        if let Some(t) = next.targets.get_mut(target) {
            t.low_risk_roles = low_risk.intersection(&roles).cloned().collect();
            t.resources = resources;
            t.roles = roles;
        }
        next
    }

    fn tables(&self) -> &IndexTables {
        self.index.0.get_or_init(|| {
            let mut t = IndexTables::default();
            for (i, e) in self.eligibilities.iter().enumerate() {
                for s in &e.subjects {
                    t.eligibilities_by_subject
                        .entry(s.clone())
                        .or_default()
                        .push(i);
                }
            }
            for target in self.targets.values() {
                let children = t.children.entry(target.id.clone()).or_default();
                let tagged = t.tagged.entry(target.id.clone()).or_default();
                for r in target.resources.values() {
                    if let Some(parent) = &r.parent {
                        children
                            .entry(parent.clone())
                            .or_default()
                            .push(r.id.clone());
                    }
                    for (k, v) in &r.tags {
                        tagged
                            .entry((k.clone(), v.clone()))
                            .or_default()
                            .push(r.id.clone());
                    }
                }
            }
            // Resolved once here, so "who approves this?" is a lookup, not
            // a test of every policy (there may be hundreds per target).
            for (i, p) in self.approval_policies.iter().enumerate() {
                let Some(target) = self.targets.get(&p.target) else {
                    continue;
                };
                for r in select(&t, target, &p.resources) {
                    t.policies_by_resource
                        .entry((target.id.clone(), r.id.clone()))
                        .or_default()
                        .push(i);
                }
            }
            t
        })
    }

    /// The eligibilities naming `p` directly or through a group, each once.
    pub(crate) fn eligibilities_of<'a>(&'a self, p: &Principal) -> Vec<&'a Eligibility> {
        let tables = self.tables();
        let mut idx: Vec<usize> = std::iter::once(Subject::User(p.name.clone()))
            .chain(p.groups.iter().cloned().map(Subject::Group))
            .filter_map(|s| tables.eligibilities_by_subject.get(&s))
            .flatten()
            .copied()
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .filter_map(|i| self.eligibilities.get(i))
            .filter(|e| e.conditions_hold(p))
            .collect()
    }

    /// Every resource of `target` that `selector` covers, found through
    /// the index (children and tag tables) rather than by testing each
    /// resource of the target.
    pub fn resources_matching<'a>(
        &'a self,
        target: &'a Target,
        selector: &ResourceSelector,
    ) -> Vec<&'a Resource> {
        select(self.tables(), target, selector)
    }

    pub fn is_admin(&self, p: &Principal) -> bool {
        p.matches_any(&self.admins)
    }

    pub fn is_auditor(&self, p: &Principal) -> bool {
        p.matches_any(&self.auditors)
    }

    /// Checks that target, resource and role exist.
    pub fn resolve(
        &self,
        target: &Name,
        resource: &Name,
        role: &Name,
    ) -> Result<(&Target, &Resource), DomainError> {
        let t = self
            .targets
            .get(target)
            .ok_or_else(|| DomainError::UnknownTarget(target.to_string()))?;
        let r = t
            .resources
            .get(resource)
            .ok_or_else(|| DomainError::UnknownResource {
                target: target.to_string(),
                resource: resource.to_string(),
            })?;
        if !t.roles.contains(role) {
            return Err(DomainError::UnknownRole {
                target: target.to_string(),
                role: role.to_string(),
            });
        }
        Ok((t, r))
    }

    /// Decides whether `p` may make this request now, and under which
    /// eligibility. The refusal names the closest reason, so a requester
    /// learns the maximum duration rather than just "not eligible".
    pub fn permit<'a>(
        &'a self,
        p: &Principal,
        ask: Ask<'_>,
        now: Timestamp,
    ) -> Result<Permit<'a>, DomainError> {
        let (target, resource) = self.resolve(ask.target, ask.resource, ask.role)?;
        if let Some(reason) = &resource.not_grantable {
            return Err(DomainError::NotGrantable {
                target: target.id.to_string(),
                resource: resource.id.to_string(),
                reason: reason.clone(),
            });
        }
        let covering: Vec<&Eligibility> = self
            .eligibilities_of(p)
            .into_iter()
            .filter(|e| {
                e.target == target.id
                    && e.valid_at(now)
                    && e.roles.contains(ask.role)
                    && e.resources.matches(target, resource)
            })
            .collect();
        if covering.is_empty() {
            return Err(DomainError::NotEligible {
                target: ask.target.to_string(),
                resource: ask.resource.to_string(),
                role: ask.role.to_string(),
            });
        }
        if ask.duration < self.limits.min_duration {
            return Err(DomainError::DurationTooShort {
                requested: ask.duration.to_string(),
                minimum: self.limits.min_duration.to_string(),
            });
        }
        let break_glass_ok: Vec<&Eligibility> = covering
            .iter()
            .copied()
            .filter(|e| !ask.break_glass || e.break_glass)
            .collect();
        if break_glass_ok.is_empty() {
            return Err(DomainError::BreakGlassNotAllowed);
        }
        let long_enough: Vec<&Eligibility> = break_glass_ok
            .iter()
            .copied()
            .filter(|e| ask.duration <= e.max_duration)
            .collect();
        if long_enough.is_empty() {
            let maximum = break_glass_ok
                .iter()
                .map(|e| e.max_duration)
                .max()
                .unwrap_or(ask.duration);
            return Err(DomainError::DurationTooLong {
                requested: ask.duration.to_string(),
                maximum: maximum.to_string(),
            });
        }
        let with_ticket: Vec<&Eligibility> = long_enough
            .iter()
            .copied()
            .filter(|e| ask.has_ticket || !e.ticket_required)
            .collect();
        // Prefer the rule that needs no approval, then the one that lasts
        // longest: eligibilities are a union of permissions.
        if with_ticket.is_empty() {
            return Err(DomainError::TicketRequired);
        }
        let step_up = if ask.check_step_up {
            self.step_up.check(p.auth.as_ref(), now)
        } else {
            Ok(())
        };
        let chosen = with_ticket
            .iter()
            .copied()
            .filter(|e| !e.step_up || step_up.is_ok())
            .min_by_key(|e| (e.approval_required, std::cmp::Reverse(e.not_after)));
        let Some(chosen) = chosen else {
            // Every covering eligibility wants a step-up the caller lacks.
            step_up?;
            return Err(DomainError::TicketRequired);
        };
        Ok(Permit {
            eligibility: chosen,
        })
    }

    /// Everything `p` may request now.
    pub fn eligible_roles(&self, p: &Principal, now: Timestamp) -> Vec<EligibleRole> {
        let mut best: BTreeMap<(Name, Name, Name), EligibleRole> = BTreeMap::new();
        for e in self
            .eligibilities_of(p)
            .into_iter()
            .filter(|e| e.valid_at(now))
        {
            let Some(target) = self.targets.get(&e.target) else {
                continue;
            };
            for resource in self.resources_matching(target, &e.resources) {
                for role in e.roles.iter().filter(|r| target.roles.contains(*r)) {
                    let key = (target.id.clone(), resource.id.clone(), role.clone());
                    match best.get_mut(&key) {
                        Some(existing) => existing.merge(e),
                        None => {
                            let path = target.path(&resource.id);
                            best.insert(
                                key,
                                EligibleRole::new(target, &resource.id, role, e, path),
                            );
                        }
                    }
                }
            }
        }
        best.into_values().collect()
    }

    /// Every eligibility that names (target, resource, role), whoever its
    /// subjects are and whether or not it is valid now: the administrator's
    /// question "who can get this?". A scan of all eligibilities, fine for
    /// an occasional question, not for a decision.
    pub fn eligibilities_covering(
        &self,
        target: &Name,
        resource: &Name,
        role: &Name,
    ) -> Vec<&Eligibility> {
        let Some(t) = self.targets.get(target) else {
            return Vec::new();
        };
        let Some(r) = t.resources.get(resource) else {
            return Vec::new();
        };
        if !t.roles.contains(role) {
            return Vec::new();
        }
        self.eligibilities
            .iter()
            .filter(|e| &e.target == target && e.roles.contains(role) && e.resources.matches(t, r))
            .collect()
    }

    /// Who approves (target, resource, role) and how many must agree.
    /// `None` when no policy covers it.
    pub fn approval_requirement(
        &self,
        target: &Name,
        resource: &Name,
        role: &Name,
    ) -> Option<ApprovalRequirement> {
        let t = self.targets.get(target)?;
        let r = t.resources.get(resource)?;
        let mut policies = Vec::new();
        let mut approvers: Vec<Subject> = Vec::new();
        let mut quorum = 0;
        let mut timeout: Option<Span> = None;
        let mut step_up = false;
        let mut remind_after: Option<Span> = None;
        let mut escalate_after: Option<Span> = None;
        let mut escalate_to: Vec<Subject> = Vec::new();
        let earliest = |a: Option<Span>, b: Option<Span>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let candidates = self
            .tables()
            .policies_by_resource
            .get(&(t.id.clone(), r.id.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for p in candidates
            .iter()
            .filter_map(|i| self.approval_policies.get(*i))
            .filter(|p| p.roles.as_ref().is_none_or(|roles| roles.contains(role)))
        {
            policies.push(p.id.clone());
            for a in &p.approvers {
                if !approvers.contains(a) {
                    approvers.push(a.clone());
                }
            }
            quorum = quorum.max(p.quorum.max(1));
            step_up |= p.step_up;
            timeout = Some(timeout.map_or(p.pending_timeout, |t| t.min(p.pending_timeout)));
            remind_after = earliest(remind_after, p.remind_after);
            if p.escalate_after.is_some() {
                escalate_after = earliest(escalate_after, p.escalate_after);
                for s in &p.escalate_to {
                    if !escalate_to.contains(s) {
                        escalate_to.push(s.clone());
                    }
                }
            }
        }
        if policies.is_empty() {
            return None;
        }
        Some(ApprovalRequirement {
            policies,
            approvers,
            quorum,
            pending_timeout: timeout.unwrap_or(self.limits.default_pending_timeout),
            step_up,
            remind_after,
            escalate_after,
            escalate_to,
        })
    }

    /// Whether any approval policy asks for reminders or escalation (the
    /// scheduler skips looking for them otherwise).
    pub fn has_followups(&self) -> bool {
        self.approval_policies
            .iter()
            .any(|p| p.remind_after.is_some() || p.escalate_after.is_some())
    }

    /// The auto-approval rule that approves this request, if one does.
    /// Called only for a request an eligibility already permitted (rules
    /// approve, they never widen what may be asked for). Safety limits:
    /// - never for break-glass (it needs no approval, and its after-the-fact
    ///   review is a person's job);
    /// - every approval policy covering the request must have a rule that
    ///   fires: policies combine strictly, so one policy's rule cannot
    ///   waive another policy's approvers;
    /// - time-dependent conditions must hold at `now` and, for a scheduled
    ///   request, at its start too: being on call today does not approve
    ///   access next week.
    ///
    /// Pure: the answer depends only on the catalog, the arguments and
    /// `now`.
    pub fn auto_approval(
        &self,
        requester: &Principal,
        ask: Ask<'_>,
        starts_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<AutoApproval> {
        if ask.break_glass {
            return None;
        }
        let target = self.targets.get(ask.target)?;
        let resource = target.resources.get(ask.resource)?;
        let candidates = self
            .tables()
            .policies_by_resource
            .get(&(target.id.clone(), resource.id.clone()))?;
        let rule_ask = AutoApproveAsk {
            requester,
            duration: ask.duration,
            low_risk_role: target.low_risk_roles.contains(ask.role),
        };
        let mut first: Option<AutoApproval> = None;
        for p in candidates
            .iter()
            .filter_map(|i| self.approval_policies.get(*i))
            .filter(|p| {
                p.roles
                    .as_ref()
                    .is_none_or(|roles| roles.contains(ask.role))
            })
        {
            let fired = p.auto_approve.iter().find(|r| {
                r.fires(&rule_ask, now)
                    && starts_at
                        .filter(|s| *s > now && r.time_dependent())
                        .is_none_or(|s| r.fires(&rule_ask, s))
            })?;
            first.get_or_insert_with(|| AutoApproval {
                rule: fired.name.clone(),
                policy: p.id.clone(),
            });
        }
        first
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::values::{GroupName, UserName};
    use chrono::TimeZone;

    pub fn n(s: &str) -> Name {
        Name::parse("test", s).unwrap()
    }

    pub fn t0() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap()
    }

    pub fn user(name: &str, groups: &[&str]) -> Principal {
        let mut p = Principal::new(UserName::parse(name).unwrap());
        p.groups = groups
            .iter()
            .map(|g| GroupName::parse(g).unwrap())
            .collect();
        p
    }

    fn resource(id: &str, parent: Option<&str>, tags: &[(&str, &str)]) -> Resource {
        Resource {
            id: n(id),
            parent: parent.map(n),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            description: None,
            not_grantable: None,
        }
    }

    /// prod ⊃ eu ⊃ orders (tag team=orders), prod ⊃ billing, staging.
    pub fn catalog() -> Catalog {
        let resources = [
            resource("prod", None, &[]),
            resource("eu", Some("prod"), &[]),
            resource("orders", Some("eu"), &[("team", "orders"), ("env", "prod")]),
            resource("billing", Some("prod"), &[("env", "prod")]),
            resource("staging", None, &[("env", "staging")]),
        ];
        let target = Target {
            id: n("pg"),
            kind: "postgres".into(),
            dry_run: false,
            roles: [n("writer"), n("reader")].into_iter().collect(),
            low_risk_roles: [n("reader")].into_iter().collect(),
            resources: resources.into_iter().map(|r| (r.id.clone(), r)).collect(),
            discovered: false,
        };
        Catalog {
            targets: [(n("pg"), target)].into_iter().collect(),
            eligibilities: vec![Eligibility {
                id: n("sre-prod"),
                subjects: vec![Subject::parse("group:sre").unwrap()],
                target: n("pg"),
                resources: ResourceSelector {
                    under: [n("prod")].into_iter().collect(),
                    ..Default::default()
                },
                roles: [n("writer")].into_iter().collect(),
                max_duration: Span::from_secs(3600),
                approval_required: true,
                ticket_required: false,
                ticket_pattern: None,
                ticket_system: None,
                break_glass: true,
                step_up: false,
                conditions: BTreeMap::new(),
                not_before: None,
                not_after: t0() + chrono::Duration::days(365),
            }],
            approval_policies: vec![
                ApprovalPolicy {
                    id: n("prod-dba"),
                    target: n("pg"),
                    resources: ResourceSelector {
                        under: [n("prod")].into_iter().collect(),
                        ..Default::default()
                    },
                    roles: None,
                    approvers: vec![Subject::parse("group:dba").unwrap()],
                    quorum: 1,
                    pending_timeout: Span::from_secs(3 * 3600),
                    step_up: false,
                    auto_approve: Vec::new(),
                    remind_after: None,
                    escalate_after: None,
                    escalate_to: Vec::new(),
                },
                ApprovalPolicy {
                    id: n("orders-team"),
                    target: n("pg"),
                    resources: ResourceSelector {
                        tags: [("team".to_string(), "orders".to_string())]
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    },
                    roles: Some([n("writer")].into_iter().collect()),
                    approvers: vec![Subject::parse("user:olivia").unwrap()],
                    quorum: 2,
                    pending_timeout: Span::from_secs(3600),
                    step_up: false,
                    auto_approve: Vec::new(),
                    remind_after: None,
                    escalate_after: None,
                    escalate_to: Vec::new(),
                },
            ],
            admins: vec![Subject::parse("group:security").unwrap()],
            auditors: vec![],
            limits: Limits::default(),
            step_up: StepUpRule::default(),
            index: CatalogIndex::default(),
        }
    }

    fn ask<'a>(resource: &'a Name, role: &'a Name, target: &'a Name, secs: u64) -> Ask<'a> {
        Ask {
            target,
            resource,
            role,
            duration: Span::from_secs(secs),
            has_ticket: false,
            break_glass: false,
            check_step_up: true,
        }
    }

    fn oidc(amr: &[&str], acr: Option<&str>, minutes_ago: i64) -> Authn {
        Authn {
            method: AuthMethod::Oidc,
            issuer: Some("https://idp.example".into()),
            acr: acr.map(String::from),
            amr: amr.iter().map(|m| m.to_string()).collect(),
            auth_time: Some(t0() - chrono::Duration::minutes(minutes_ago)),
            expires_at: None,
        }
    }

    #[test]
    fn step_up_needs_a_strong_and_recent_sign_in() {
        let rule = StepUpRule {
            acr_values: vec!["urn:mfa".into()],
            ..StepUpRule::default()
        };
        let code = |a: Option<&Authn>| rule.check(a, t0()).err().map(|e| e.code());
        assert_eq!(code(None), Some("step_up_required"));
        assert_eq!(code(Some(&Authn::token())), Some("step_up_required"));
        assert_eq!(
            code(Some(&oidc(&["pwd"], None, 1))),
            Some("step_up_required")
        );
        assert_eq!(code(Some(&oidc(&["pwd", "otp"], None, 1))), None);
        assert_eq!(code(Some(&oidc(&["pwd"], Some("urn:mfa"), 1))), None);
        // Strong but too old: max_age is 15 minutes.
        let old = rule
            .check(Some(&oidc(&["hwk"], None, 20)), t0())
            .unwrap_err();
        assert!(old.to_string().contains("20 minute"), "{old}");
        let mut no_time = oidc(&["otp"], None, 0);
        no_time.auth_time = None;
        assert_eq!(code(Some(&no_time)), Some("step_up_required"));
    }

    #[test]
    fn a_step_up_eligibility_refuses_weak_sign_ins_unless_another_rule_covers() {
        let mut c = catalog();
        c.eligibilities[0].step_up = true;
        let (pg, writer, orders) = (n("pg"), n("writer"), n("orders"));
        let mut alice = user("alice", &["sre"]);
        alice.auth = Some(oidc(&["pwd"], None, 1));
        let e = c
            .permit(&alice, ask(&orders, &writer, &pg, 600), t0())
            .unwrap_err();
        assert_eq!(e.code(), "step_up_required");
        // Re-checks of stored requests do not re-test the sign-in.
        let mut recheck = ask(&orders, &writer, &pg, 600);
        recheck.check_step_up = false;
        assert!(c.permit(&alice, recheck, t0()).is_ok());
        alice.auth = Some(oidc(&["pwd", "otp"], None, 1));
        assert!(c
            .permit(&alice, ask(&orders, &writer, &pg, 600), t0())
            .is_ok());
        // A second eligibility without step-up covers the weak sign-in.
        let mut plain = c.eligibilities[0].clone();
        plain.id = n("sre-plain");
        plain.step_up = false;
        c.eligibilities.push(plain);
        c.index = CatalogIndex::default();
        alice.auth = Some(oidc(&["pwd"], None, 1));
        let permit = c
            .permit(&alice, ask(&orders, &writer, &pg, 600), t0())
            .unwrap();
        assert_eq!(permit.eligibility.id.as_str(), "sre-plain");
    }

    #[test]
    fn attribute_conditions_must_all_hold() {
        let mut c = catalog();
        c.eligibilities[0].conditions = [(
            "department".to_string(),
            ["sre".to_string(), "dba".to_string()].into_iter().collect(),
        )]
        .into_iter()
        .collect();
        let (pg, writer, orders) = (n("pg"), n("writer"), n("orders"));
        let mut alice = user("alice", &["sre"]);
        let refused = c.permit(&alice, ask(&orders, &writer, &pg, 600), t0());
        assert_eq!(refused.unwrap_err().code(), "not_eligible");
        assert!(c.eligible_roles(&alice, t0()).is_empty());
        alice
            .attributes
            .insert("department".into(), "marketing".into());
        assert!(c
            .permit(&alice, ask(&orders, &writer, &pg, 600), t0())
            .is_err());
        alice.attributes.insert("department".into(), "sre".into());
        assert!(c
            .permit(&alice, ask(&orders, &writer, &pg, 600), t0())
            .is_ok());
        assert!(!c.eligible_roles(&alice, t0()).is_empty());
    }

    #[test]
    fn eligibility_under_a_parent_reaches_nested_resources_but_not_the_parent() {
        let c = catalog();
        let alice = user("alice", &["SRE"]);
        let (pg, writer) = (n("pg"), n("writer"));
        for r in ["eu", "orders", "billing"] {
            let r = n(r);
            assert!(c.permit(&alice, ask(&r, &writer, &pg, 600), t0()).is_ok());
        }
        for r in ["prod", "staging"] {
            let r = n(r);
            assert_eq!(
                c.permit(&alice, ask(&r, &writer, &pg, 600), t0())
                    .unwrap_err()
                    .code(),
                "not_eligible"
            );
        }
    }

    #[test]
    fn permit_explains_duration_and_unknown_names() {
        let c = catalog();
        let alice = user("alice", &["sre"]);
        let (pg, writer, orders) = (n("pg"), n("writer"), n("orders"));
        let e = c
            .permit(&alice, ask(&orders, &writer, &pg, 7200), t0())
            .unwrap_err();
        assert_eq!(e.code(), "duration_too_long");
        let nope = n("nope");
        assert_eq!(
            c.permit(&alice, ask(&nope, &writer, &pg, 60), t0())
                .unwrap_err()
                .code(),
            "unknown_resource"
        );
        assert_eq!(
            c.permit(&alice, ask(&orders, &nope, &pg, 60), t0())
                .unwrap_err()
                .code(),
            "unknown_role"
        );
        assert_eq!(
            c.permit(&alice, ask(&orders, &writer, &nope, 60), t0())
                .unwrap_err()
                .code(),
            "unknown_target"
        );
    }

    #[test]
    fn an_inventory_replaces_resources_and_roles_and_ungrantable_resources_are_never_covered() {
        let c = catalog();
        let alice = user("alice", &["sre"]);
        let (pg, writer) = (n("pg"), n("writer"));
        // A discovered tree: prod (an OU) ⊃ eu (an OU) ⊃ acct-1, and the
        // management account acct-0 under prod too.
        let mut ou = resource("eu", Some("prod"), &[]);
        ou.not_grantable = Some("an organizational unit".into());
        let mut prod = resource("prod", None, &[]);
        prod.not_grantable = Some("an organizational unit".into());
        let mut mgmt = resource("acct-0", Some("prod"), &[]);
        mgmt.not_grantable = Some("the management account".into());
        let acct = resource("acct-1", Some("eu"), &[]);
        let resources = [prod, ou, mgmt, acct]
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let configured = c.targets[&pg].low_risk_roles.clone();
        let next = c.with_inventory(
            &pg,
            resources,
            [writer.clone()].into_iter().collect(),
            &configured,
        );
        // The old catalog is untouched; the new one has the new tree.
        assert!(c.targets[&pg].resources.contains_key(&n("orders")));
        assert!(!next.targets[&pg].resources.contains_key(&n("orders")));
        // `reader` is gone, so it is no longer low risk either; back in a
        // later inventory, it is low risk again.
        assert!(next.targets[&pg].low_risk_roles.is_empty());
        let back = next.with_inventory(
            &pg,
            next.targets[&pg].resources.clone(),
            [writer.clone(), n("reader")].into_iter().collect(),
            &configured,
        );
        assert!(back.targets[&pg].low_risk_roles.contains(&n("reader")));
        let acct_1 = n("acct-1");
        assert!(next
            .permit(&alice, ask(&acct_1, &writer, &pg, 60), t0())
            .is_ok());
        for (id, reason) in [("eu", "organizational unit"), ("acct-0", "management")] {
            let id = n(id);
            let e = next
                .permit(&alice, ask(&id, &writer, &pg, 60), t0())
                .unwrap_err();
            assert_eq!(e.code(), "not_grantable");
            assert!(e.to_string().contains(reason), "{e}");
        }
        let covered: Vec<String> = next
            .resources_matching(&next.targets[&pg], &next.eligibilities[0].resources)
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(covered, vec!["acct-1".to_owned()]);
    }

    #[test]
    fn eligibility_expires() {
        let c = catalog();
        let alice = user("alice", &["sre"]);
        let (pg, writer, orders) = (n("pg"), n("writer"), n("orders"));
        let later = t0() + chrono::Duration::days(366);
        assert_eq!(
            c.permit(&alice, ask(&orders, &writer, &pg, 60), later)
                .unwrap_err()
                .code(),
            "not_eligible"
        );
        assert!(c.eligible_roles(&alice, later).is_empty());
        assert_eq!(c.eligible_roles(&alice, t0()).len(), 3);
    }

    #[test]
    fn the_index_finds_exactly_the_resources_a_selector_matches() {
        let c = catalog();
        let t = &c.targets[&n("pg")];
        let tag = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let selectors = [
            ResourceSelector {
                under: [n("prod")].into_iter().collect(),
                ..Default::default()
            },
            ResourceSelector {
                ids: [n("staging"), n("nope")].into_iter().collect(),
                tags: tag(&[("env", "prod")]),
                ..Default::default()
            },
            ResourceSelector {
                tags: tag(&[("env", "prod"), ("team", "orders")]),
                ..Default::default()
            },
            ResourceSelector::default(),
        ];
        for sel in selectors {
            let mut by_index: Vec<&str> = c
                .resources_matching(t, &sel)
                .iter()
                .map(|r| r.id.as_str())
                .collect();
            let mut by_scan: Vec<&str> = t
                .resources
                .values()
                .filter(|r| sel.matches(t, r))
                .map(|r| r.id.as_str())
                .collect();
            by_index.sort();
            by_scan.sort();
            assert_eq!(by_index, by_scan, "{sel:?}");
        }
    }

    #[test]
    fn matching_policies_combine_approvers_and_take_the_strictest_quorum() {
        let c = catalog();
        let req = c
            .approval_requirement(&n("pg"), &n("orders"), &n("writer"))
            .unwrap();
        assert_eq!(req.quorum, 2);
        assert_eq!(req.pending_timeout.secs(), 3600);
        assert_eq!(req.approvers.len(), 2);
        assert!(req.allows(&user("OLIVIA", &[])));
        assert!(req.allows(&user("dan", &["dba"])));
        assert!(!req.allows(&user("eve", &["sre"])));
        // The reader role is outside the orders-team policy.
        let reader = c
            .approval_requirement(&n("pg"), &n("orders"), &n("reader"))
            .unwrap();
        assert_eq!(reader.quorum, 1);
        assert!(c
            .approval_requirement(&n("pg"), &n("staging"), &n("writer"))
            .is_none());
    }
    #[test]
    fn eligibilities_covering_names_the_rules_for_one_resource_and_role() {
        let c = catalog();
        let ids = |resource: &str, role: &str| -> Vec<String> {
            c.eligibilities_covering(&n("pg"), &n(resource), &n(role))
                .iter()
                .map(|e| e.id.to_string())
                .collect()
        };
        assert_eq!(ids("orders", "writer"), vec!["sre-prod"]);
        // Below prod, but not prod itself; reader is not in the rule.
        assert!(ids("prod", "writer").is_empty());
        assert!(ids("orders", "reader").is_empty());
        assert!(ids("staging", "writer").is_empty());
        assert!(ids("nowhere", "writer").is_empty());
        assert!(c
            .eligibilities_covering(&n("other"), &n("orders"), &n("writer"))
            .is_empty());
    }

    fn on_call_rule(name: &str) -> AutoApproveRule {
        AutoApproveRule {
            name: n(name),
            on_call_group: Some(crate::values::GroupName::parse("oncall").unwrap()),
            on_call_schedule: None,
            business_hours: None,
            max_duration: Some(Span::from_secs(3600)),
            low_risk: false,
        }
    }

    #[test]
    fn auto_approval_needs_a_firing_rule_in_every_covering_policy() {
        let mut c = catalog();
        c.approval_policies[0].auto_approve = vec![on_call_rule("on-call")];
        let (pg, writer, reader, billing, orders) =
            (n("pg"), n("writer"), n("reader"), n("billing"), n("orders"));
        let alice = user("alice", &["sre", "oncall"]);
        let eve = user("eve", &["sre"]);
        let fired = c
            .auto_approval(&alice, ask(&billing, &writer, &pg, 600), None, t0())
            .unwrap();
        assert_eq!(
            (fired.rule.as_str(), fired.policy.as_str()),
            ("on-call", "prod-dba")
        );
        assert!(c
            .auto_approval(&eve, ask(&billing, &writer, &pg, 600), None, t0())
            .is_none());
        // Too long for the rule.
        assert!(c
            .auto_approval(&alice, ask(&billing, &writer, &pg, 7200), None, t0())
            .is_none());
        // Never for break-glass.
        let mut bg = ask(&billing, &writer, &pg, 600);
        bg.break_glass = true;
        assert!(c.auto_approval(&alice, bg, None, t0()).is_none());
        // orders/writer is also covered by orders-team, which has no rule.
        assert!(c
            .auto_approval(&alice, ask(&orders, &writer, &pg, 600), None, t0())
            .is_none());
        // orders/reader is covered by prod-dba only.
        assert!(c
            .auto_approval(&alice, ask(&orders, &reader, &pg, 600), None, t0())
            .is_some());
    }

    #[test]
    fn low_risk_rules_approve_only_roles_the_target_lists_as_low_risk() {
        let mut c = catalog();
        let mut rule = on_call_rule("low-risk");
        rule.on_call_group = None;
        rule.max_duration = None;
        rule.low_risk = true;
        c.approval_policies[0].auto_approve = vec![rule];
        let (pg, writer, reader, billing) = (n("pg"), n("writer"), n("reader"), n("billing"));
        let alice = user("alice", &["sre"]);
        assert!(c
            .auto_approval(&alice, ask(&billing, &reader, &pg, 600), None, t0())
            .is_some());
        assert!(c
            .auto_approval(&alice, ask(&billing, &writer, &pg, 600), None, t0())
            .is_none());
    }

    #[test]
    fn time_dependent_rules_must_also_hold_at_a_scheduled_start() {
        let mut c = catalog();
        let mut rule = on_call_rule("hours");
        rule.on_call_group = None;
        // t0 is Thursday 2026-01-01 09:00 UTC.
        rule.business_hours = Some(
            crate::automation::BusinessHours::parse("mon-fri", "08:00", "18:00", None).unwrap(),
        );
        c.approval_policies[0].auto_approve = vec![rule];
        let (pg, writer, billing) = (n("pg"), n("writer"), n("billing"));
        let alice = user("alice", &["sre"]);
        let a = ask(&billing, &writer, &pg, 600);
        assert!(c.auto_approval(&alice, a, None, t0()).is_some());
        let tonight = t0() + chrono::Duration::hours(12);
        assert!(c.auto_approval(&alice, a, Some(tonight), t0()).is_none());
        let later_today = t0() + chrono::Duration::hours(2);
        assert!(c
            .auto_approval(&alice, a, Some(later_today), t0())
            .is_some());
        assert!(c.auto_approval(&alice, a, None, tonight).is_none());
    }

    #[test]
    fn escalation_adds_the_fallback_approvers_of_every_covering_policy() {
        let mut c = catalog();
        c.approval_policies[0].remind_after = Some(Span::from_secs(1800));
        c.approval_policies[0].escalate_after = Some(Span::from_secs(7200));
        c.approval_policies[0].escalate_to = vec![Subject::parse("group:leads").unwrap()];
        c.approval_policies[1].remind_after = Some(Span::from_secs(600));
        let req = c
            .approval_requirement(&n("pg"), &n("orders"), &n("writer"))
            .unwrap();
        assert_eq!(req.remind_after, Some(Span::from_secs(600)));
        assert_eq!(req.escalate_after, Some(Span::from_secs(7200)));
        let lead = user("lena", &["leads"]);
        assert!(!req.clone().with_escalation(false).allows(&lead));
        assert!(req.clone().with_escalation(true).allows(&lead));
        assert!(c.has_followups());
        assert!(!catalog().has_followups());
    }

    #[test]
    fn an_eligibility_with_a_ticket_pattern_refuses_other_forms() {
        let mut e = catalog().eligibilities[0].clone();
        assert!(e.check_ticket(None).is_ok());
        e.ticket_pattern = Some(TicketPattern::parse("CHG-[0-9]+").unwrap());
        let t = |s: &str| Ticket::parse(s).unwrap();
        assert!(e.check_ticket(Some(&t("CHG-1"))).is_ok());
        assert_eq!(
            e.check_ticket(Some(&t("INC-1"))).unwrap_err().code(),
            "ticket_mismatch"
        );
        assert_eq!(e.check_ticket(None).unwrap_err().code(), "ticket_required");
    }
}
