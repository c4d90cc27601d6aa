//! Where a request becomes a grant.
//!
//! The [`Broker`] turns calls from the API into domain transitions and
//! stores each one — new request state, its audit event, the provider jobs
//! it implies — in a single transaction. Two background loops do the rest:
//!
//! - the **scheduler** sleeps until the earliest deadline (pending timeout,
//!   scheduled start, end of a window), is woken early when an earlier one
//!   appears, and on start catches up with every deadline that passed while
//!   elevate was down; it also records the follow-ups that are due
//!   (reminders, escalations, "ending soon" notices; see
//!   [`Broker::run_followups_once`]), each once;
//! - the **worker** runs provider jobs from the durable queue, retrying
//!   failures with exponential backoff. An apply that fails is never
//!   reported active; a removal that fails is retried until it succeeds and
//!   shows as "revocation failing" meanwhile.
//!
//! Both expose `run_once(now)` so tests can drive them step by step.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use elevate_core::policy::{ApprovalRequirement, Ask, Catalog, Eligibility};
use elevate_core::principal::Principal;
use elevate_core::request::{Change, Effect, Kind, NewRequest, Removal, Request, State};
use elevate_core::values::{Comment, Justification, Name, RequestId, Span, Ticket};
use elevate_core::{DomainError, Timestamp};
use elevate_providers::{GrantSpec, Provider, ProviderError};
use elevate_store::followups::Followup;
use elevate_store::{Job, JobKind, Store, StoredRequest, Tx};
use rand::Rng;
use tokio::sync::Notify;

use crate::auth::Directory;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// A start at most this far in the past means "now": clocks of clients
/// and server differ by a little.
const START_SLACK_SECS: i64 = 60;

/// The longest the scheduler and the worker sleep without looking again.
const IDLE_RECHECK: Duration = Duration::from_secs(2);

pub struct Broker {
    pub store: Store,
    /// What exists and who may do what. Replaced whole when a
    /// discovering target's inventory changes (see `discovery.rs`);
    /// readers take the current one with [`Broker::catalog`] and keep it
    /// for the whole decision.
    pub catalog_now: std::sync::RwLock<Arc<Catalog>>,
    /// The catalog as the config file alone describes it (discovered
    /// targets empty): what refreshed inventories are laid over.
    pub catalog_config: Arc<Catalog>,
    /// Targets that discover their resources, with their schedules.
    pub discovery: BTreeMap<Name, crate::config::Discovery>,
    /// When the inventory installed here of each discovering target was
    /// read (to notice a newer one stored by another replica).
    pub inventory_seen: std::sync::Mutex<BTreeMap<Name, Timestamp>>,
    pub directory: Directory,
    /// The identity provider, when one is configured.
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// Where people reach elevate (for redirects and cookie flags).
    pub public_url: String,
    pub providers: BTreeMap<Name, Arc<dyn Provider>>,
    pub metrics: Arc<Metrics>,
    /// Wakes the scheduler when a deadline earlier than the one it sleeps
    /// towards may have appeared.
    pub scheduler_wake: Notify,
    /// Wakes the worker when a job was queued.
    pub worker_wake: Notify,
    /// Upper bound of the wait between two attempts of a failing job.
    pub retry_max_backoff: Duration,
    /// How long a claimed job is reserved for this replica. Provider calls
    /// are cut off at half of it, so a job is never claimed a second time
    /// while its first call could still land.
    pub job_lease: Duration,
    /// `serve --dev`: the sign-in page lists the demo tokens.
    pub demo: bool,
    /// The last audit-chain check the audit page made, and when: walking
    /// a long chain on every page view would make the page slow, and
    /// concurrent views wait for one walk instead of starting their own.
    pub audit_checked: tokio::sync::Mutex<Option<(Timestamp, elevate_store::Verification)>>,
    /// The change/incident systems eligibilities ask whether a ticket is
    /// open (`ticket_system`), by name.
    pub ticket_systems: BTreeMap<Name, Arc<crate::tickets::TicketSystem>>,
    /// How long before a grant's end its "ending soon" notice is recorded
    /// (`[notifications] ending_soon`); `None`: never.
    pub ending_soon: Option<chrono::Duration>,
    /// E-mail, chat and signed webhooks; approval-link keys.
    pub notifier: Arc<crate::notify::run::Notifier>,
}

/// A request as the API asks for it, still unparsed.
#[derive(Debug, Clone)]
pub struct CreateInput {
    pub target: String,
    pub resource: String,
    pub role: String,
    pub duration: String,
    pub start: Option<Timestamp>,
    pub reason: String,
    pub ticket: Option<String>,
    pub break_glass: bool,
}

fn new_id() -> RequestId {
    RequestId::from_random(rand::rngs::OsRng.gen::<u64>())
}

/// Records what the ticket system said in the `request.created` event, as
/// `ticket_check: {system, ticket, open, status}`.
fn record_ticket_check(change: &mut Change, answer: Option<&crate::tickets::TicketAnswer>) {
    if let (Some(a), Some(details)) = (answer, change.event.details.as_object_mut()) {
        details.insert("ticket_check".into(), serde_json::json!(a));
    }
}

/// Spends a one-time approval link in `tx`, if one is given; refuses a
/// link used before.
async fn spend_link(
    tx: &mut Tx<'_>,
    spend: Option<(&str, Timestamp)>,
    now: Timestamp,
) -> Result<(), ApiError> {
    if let Some((nonce, expires_at)) = spend {
        if !tx.spend_link(nonce, now, expires_at).await? {
            return Err(ApiError::client(
                reqwest::StatusCode::GONE,
                "link_used",
                "this link was used already: each approval link works once",
            ));
        }
    }
    Ok(())
}

/// How often the scheduler looks for due reminders, escalations and
/// "ending soon" notices (each is recorded within about this, plus the
/// scheduler's idle re-check, of its time).
const FOLLOWUP_INTERVAL: Duration = Duration::from_secs(1);

impl Broker {
    fn provider(&self, target: &Name) -> Result<&Arc<dyn Provider>, ApiError> {
        self.providers
            .get(target)
            .ok_or_else(|| ApiError::Domain(DomainError::UnknownTarget(target.to_string())))
    }

    async fn grant_spec(&self, r: &Request) -> Result<GrantSpec, ApiError> {
        let person = self.person(&r.requester).await?;
        let email = person
            .as_ref()
            .and_then(|p| p.email.as_ref().map(|e| e.as_str().to_owned()));
        let email_unverified = person.as_ref().is_some_and(|p| p.email_unverified);
        Ok(GrantSpec {
            request_id: r.id.to_string(),
            target: r.target.to_string(),
            resource: r.resource.to_string(),
            role: r.role.to_string(),
            user: r.requester.to_string(),
            email,
            email_unverified,
            account: None,
            window_ends_at: r.state.window().map(|w| w.ends_at),
            ended_early: !matches!(
                r.state,
                State::Ending {
                    removal: Removal::Ended,
                    ..
                } | State::Ended { .. }
            ),
        })
    }

    /// Stores a transition: the request, its audit event and its jobs.
    async fn persist(
        &self,
        tx: &mut Tx<'_>,
        change: &Change,
        grant_key: &str,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        tx.put_request(&change.request, grant_key, now).await?;
        tx.append_audit(&change.event).await?;
        // A longer window deserves its own "ending soon" notice.
        if change.event.action == elevate_core::request::Action::GrantExtended {
            tx.forget_followup(&change.request.id, Followup::EndingSoon)
                .await?;
        }
        match change.effect {
            Some(Effect::Apply) => {
                tx.enqueue_job(&change.request.id, JobKind::Apply, grant_key, now)
                    .await?;
            }
            Some(Effect::Remove) => {
                tx.drop_queued_jobs(&change.request.id, JobKind::Apply, now)
                    .await?;
                tx.enqueue_job(&change.request.id, JobKind::Remove, grant_key, now)
                    .await?;
            }
            None => {}
        }
        // A grant that stopped holding a window takes its pending extension
        // with it: there is nothing left to extend.
        if change.request.kind == Kind::Access
            && !matches!(
                change.request.state,
                State::Scheduled { .. }
                    | State::Approved { .. }
                    | State::Active { .. }
                    | State::Pending { .. }
            )
        {
            if let Some(ext) = tx.pending_extension(&change.request.id).await? {
                let key = ext.grant_key.clone();
                let cancelled = ext
                    .request
                    .cancel_by_system("the grant it extends has ended", now)?;
                tx.put_request(&cancelled.request, &key, now).await?;
                tx.append_audit(&cancelled.event).await?;
            }
        }
        Ok(())
    }

    fn after_commit(&self, changes: &[&Change]) {
        if !changes.is_empty() {
            self.notifier.events_written();
        }
        for c in changes {
            self.metrics.transition(c.event.action.as_str());
            if c.effect.is_some() {
                self.worker_wake.notify_one();
            }
            if c.request.state.deadline().is_some() {
                self.scheduler_wake.notify_one();
            }
        }
    }

    /// A new access request.
    pub async fn create(
        &self,
        who: &Principal,
        input: CreateInput,
    ) -> Result<StoredRequest, ApiError> {
        let now = Utc::now();
        // One catalog for the whole decision: a refresh of a discovering
        // target meanwhile must not mix two trees.
        let catalog = self.catalog();
        let target = Name::parse("target", &input.target)?;
        let resource = Name::parse("resource", &input.resource)?;
        let role = Name::parse("role", &input.role)?;
        let duration = Span::parse("duration", &input.duration)?;
        let justification = Justification::parse(&input.reason)?;
        let ticket = input.ticket.as_deref().map(Ticket::parse).transpose()?;
        let start = match input.start {
            // A start a little in the past is clock skew between client and
            // server: start now.
            Some(s) if s <= now => {
                if s < now - chrono::Duration::seconds(START_SLACK_SECS) {
                    return Err(DomainError::StartInPast(s.to_rfc3339()).into());
                }
                None
            }
            Some(s) => {
                if s > now + catalog.limits.max_schedule_ahead.as_chrono() {
                    return Err(DomainError::StartTooFar(
                        catalog.limits.max_schedule_ahead.to_string(),
                    )
                    .into());
                }
                Some(s)
            }
            None => None,
        };
        let ask = Ask {
            target: &target,
            resource: &resource,
            role: &role,
            duration,
            has_ticket: ticket.is_some(),
            break_glass: input.break_glass,
            check_step_up: true,
        };
        let permit = catalog.permit(who, ask, now)?;
        let eligibility = permit.eligibility;
        eligibility.check_ticket(ticket.as_ref())?;
        let window_end = start.unwrap_or(now) + duration.as_chrono();
        if window_end > eligibility.not_after {
            return Err(DomainError::invalid(
                "duration",
                format!(
                    "the window would end after your eligibility ends ({}); ask for less time",
                    eligibility.not_after.to_rfc3339()
                ),
            )
            .into());
        }
        let requirement = catalog.approval_requirement(&target, &resource, &role);
        let approval = if eligibility.approval_required && !input.break_glass {
            Some(requirement.as_ref().ok_or(DomainError::NoApprovalPolicy)?)
        } else {
            None
        };
        // Rules only approve what the eligibility above already permitted
        // and what needs approval; never break-glass (see
        // `Catalog::auto_approval` for the other limits).
        let auto_approval = approval.and_then(|_| catalog.auto_approval(who, ask, start, now));
        let provider = self.provider(&target)?;
        // Asked last, once everything cheap has passed, and before the write
        // transaction: a slow ticket system must not hold other writers.
        let ticket_check = self.confirm_ticket(eligibility, ticket.as_ref()).await?;
        let new = NewRequest {
            id: new_id(),
            kind: Kind::Access,
            target,
            resource,
            role,
            justification,
            ticket,
            duration,
            requested_start: start,
            break_glass: input.break_glass,
        };
        let mut change = Request::create_with(
            new,
            who,
            &eligibility.id,
            approval,
            auto_approval.clone(),
            now,
        )?;
        record_ticket_check(&mut change, ticket_check.as_ref());
        let mut spec = self.grant_spec(&change.request).await?;
        // The caller is here: their e-mail is the freshest there is.
        if let Some(e) = &who.email {
            spec.email = Some(e.as_str().to_owned());
        }
        // Asked before the write transaction, like the ticket system: a
        // user the target does not know is told now, not after approval.
        let account = provider.prepare(&spec).await.map_err(|e| match e {
            ProviderError::Permanent(m) => ApiError::client(
                reqwest::StatusCode::UNPROCESSABLE_ENTITY,
                "target_refused",
                format!("target \"{}\" cannot grant this: {m}", spec.target),
            ),
            ProviderError::Retryable(m) | ProviderError::Busy(m) => ApiError::client(
                reqwest::StatusCode::FAILED_DEPENDENCY,
                "target_unavailable",
                format!(
                    "target \"{}\" could not be asked about this request ({m}); try again later",
                    spec.target
                ),
            ),
        })?;
        let key = provider.grant_key(&GrantSpec {
            account: account.clone(),
            ..spec
        });
        let mut tx = self.store.begin().await?;
        self.persist(&mut tx, &change, &key, now).await?;
        if let Some(account) = account {
            tx.set_account(&change.request.id, &account).await?;
        }
        tx.commit().await?;
        self.after_commit(&[&change]);
        if input.break_glass {
            tracing::warn!(request = %change.request.id, requester = %who.name, target = %change.request.target,
                resource = %change.request.resource, role = %change.request.role, "break-glass access granted without approval");
        }
        if let Some(a) = &auto_approval {
            tracing::info!(request = %change.request.id, requester = %who.name, policy = %a.policy, rule = %a.rule, "request approved by an auto-approval rule");
        }
        self.load(&change.request.id).await
    }

    /// The eligibility that lets `who` extend `pr` by `duration`, with
    /// its ticket rules met by `ticket` (the system is asked separately).
    fn extension_eligibility(
        &self,
        who: &Principal,
        pr: &Request,
        duration: Span,
        ticket: Option<&Ticket>,
        now: Timestamp,
    ) -> Result<Eligibility, ApiError> {
        let catalog = self.catalog();
        let permit = catalog.permit(
            who,
            Ask {
                target: &pr.target,
                resource: &pr.resource,
                role: &pr.role,
                duration,
                has_ticket: ticket.is_some(),
                break_glass: false,
                check_step_up: true,
            },
            now,
        )?;
        permit.eligibility.check_ticket(ticket)?;
        Ok(permit.eligibility.clone())
    }

    /// Asks the eligibility's ticket system, if it names one, whether
    /// `ticket` is open. `Ok(None)`: no system to ask. Any doubt refuses.
    async fn confirm_ticket(
        &self,
        eligibility: &Eligibility,
        ticket: Option<&Ticket>,
    ) -> Result<Option<crate::tickets::TicketAnswer>, ApiError> {
        let Some(name) = &eligibility.ticket_system else {
            return Ok(None);
        };
        let ticket = ticket.ok_or(DomainError::TicketRequired)?;
        let system =
            self.ticket_systems
                .get(name)
                .ok_or_else(|| DomainError::TicketSystemUnavailable {
                    system: name.to_string(),
                    ticket: ticket.as_str().to_owned(),
                    reason: "it is not configured".into(),
                })?;
        Ok(Some(system.confirm_open(ticket).await?))
    }

    /// Who approves `r` and how many must agree: its scope's policies,
    /// and, once `r` was escalated, their fallback approvers (`escalate_to`)
    /// too. `None` when no policy covers it.
    pub fn requirement_of(&self, r: &Request) -> Option<ApprovalRequirement> {
        self.catalog()
            .approval_requirement(&r.target, &r.resource, &r.role)
            .map(|q| q.with_escalation(r.escalated_at.is_some()))
    }

    /// Whether the requester of `r` may still hold what it grants, at
    /// `now`: still a known user, still eligible for this duration, and the
    /// window ends before the eligibility does. The error says why not.
    pub(crate) async fn still_eligible(
        &self,
        r: &Request,
        now: Timestamp,
    ) -> Result<Result<(), String>, ApiError> {
        let Some(requester) = self.person(&r.requester).await? else {
            return Ok(Err(format!(
                "the requester \"{}\" is no longer a user",
                r.requester
            )));
        };
        Ok(self.still_eligible_as(&requester, r, now))
    }

    fn still_eligible_as(
        &self,
        requester: &Principal,
        r: &Request,
        now: Timestamp,
    ) -> Result<(), String> {
        let catalog = self.catalog();
        let permit = catalog
            .permit(
                requester,
                Ask {
                    target: &r.target,
                    resource: &r.resource,
                    role: &r.role,
                    duration: r.duration,
                    has_ticket: r.ticket.is_some(),
                    break_glass: false,
                    // The sign-in was checked when the request was made.
                    check_step_up: false,
                },
                now,
            )
            .map_err(|e| format!("the requester is no longer eligible ({e})"))?;
        let ends_at = match r.state.window() {
            Some(w) => w.ends_at,
            None => now + r.duration.as_chrono(),
        };
        if r.kind == Kind::Access && ends_at > permit.eligibility.not_after {
            return Err(format!(
                "the window would end after the requester's eligibility ends ({})",
                permit.eligibility.not_after.to_rfc3339()
            ));
        }
        Ok(())
    }

    pub async fn load(&self, id: &RequestId) -> Result<StoredRequest, ApiError> {
        self.store.get_request(id).await?.ok_or(ApiError::NotFound)
    }

    /// May `who` see this request? The requester, admins, auditors, and
    /// the approvers of its scope (with the fallback approvers once it was
    /// escalated). Others are told it does not exist.
    pub fn can_see(&self, who: &Principal, r: &Request) -> bool {
        let catalog = self.catalog();
        r.requester == who.name
            || catalog.is_admin(who)
            || catalog.is_auditor(who)
            || self.requirement_of(r).is_some_and(|req| req.allows(who))
    }

    async fn load_visible(
        &self,
        tx: &mut Tx<'_>,
        who: &Principal,
        id: &RequestId,
    ) -> Result<StoredRequest, ApiError> {
        let stored = tx.get_request(id).await?.ok_or(ApiError::NotFound)?;
        if !self.can_see(who, &stored.request) {
            return Err(ApiError::NotFound);
        }
        Ok(stored)
    }

    pub async fn approve(
        &self,
        who: &Principal,
        id: &RequestId,
        comment: Comment,
    ) -> Result<StoredRequest, ApiError> {
        self.approve_spending(who, id, comment, None).await
    }

    /// [`Broker::approve`], spending the one-time approval link `spend`
    /// (nonce, expiry) in the same transaction: a decision refused for
    /// any reason (a step-up needed, already decided) leaves the link
    /// usable, and a link used twice decides once.
    pub async fn approve_spending(
        &self,
        who: &Principal,
        id: &RequestId,
        comment: Comment,
        spend: Option<(&str, Timestamp)>,
    ) -> Result<StoredRequest, ApiError> {
        let now = Utc::now();
        let mut tx = self.store.begin().await?;
        spend_link(&mut tx, spend, now).await?;
        let stored = self.load_visible(&mut tx, who, id).await?;
        let r = &stored.request;
        let requirement = self.requirement_of(r).ok_or(DomainError::NotApprover)?;
        // Only an approver in scope learns that a step-up is needed.
        if requirement.step_up && requirement.allows(who) && r.requester != who.name {
            self.catalog().step_up.check(who.auth.as_ref(), now)?;
        }
        let mut change = stored
            .request
            .clone()
            .approve(who, &requirement, comment, now)?;
        // The quorum grants access only if the requester may still have it:
        // they may have left the group, or the eligibility expired, while
        // the request waited.
        let granted = matches!(
            change.request.state,
            State::Approved { .. } | State::Scheduled { .. } | State::Extended { .. }
        );
        if granted {
            if let Err(why) = self.still_eligible(&change.request, now).await? {
                change = stored.request.clone().cancel_by_system(&why, now)?;
            }
        }
        self.persist(&mut tx, &change, &stored.grant_key, now)
            .await?;
        let mut changes = vec![change];
        if let (State::Extended { .. }, Kind::Extension { of }) =
            (&changes[0].request.state, &changes[0].request.kind)
        {
            let of = of.clone();
            let duration = changes[0].request.duration;
            let parent = tx.get_request(&of).await?.ok_or(ApiError::NotFound)?;
            let extended = parent.request.extend_by(id, duration, now)?;
            self.persist(&mut tx, &extended, &parent.grant_key, now)
                .await?;
            changes.push(extended);
        }
        tx.commit().await?;
        self.after_commit(&changes.iter().collect::<Vec<_>>());
        self.load(id).await
    }

    /// One decision on one visible request, stored with its event in one
    /// transaction: `decide` gets the request and the approval requirement
    /// of its scope and returns the transition.
    async fn decide(
        &self,
        who: &Principal,
        id: &RequestId,
        spend: Option<(&str, Timestamp)>,
        decide: impl FnOnce(
            Request,
            Option<&ApprovalRequirement>,
            Timestamp,
        ) -> Result<Change, ApiError>,
    ) -> Result<StoredRequest, ApiError> {
        let now = Utc::now();
        let mut tx = self.store.begin().await?;
        spend_link(&mut tx, spend, now).await?;
        let stored = self.load_visible(&mut tx, who, id).await?;
        let requirement = self.requirement_of(&stored.request);
        let change = decide(stored.request.clone(), requirement.as_ref(), now)?;
        self.persist(&mut tx, &change, &stored.grant_key, now)
            .await?;
        tx.commit().await?;
        self.after_commit(&[&change]);
        self.load(id).await
    }

    pub async fn reject(
        &self,
        who: &Principal,
        id: &RequestId,
        comment: Comment,
    ) -> Result<StoredRequest, ApiError> {
        self.reject_spending(who, id, comment, None).await
    }

    /// [`Broker::reject`], spending a one-time link (see
    /// [`Broker::approve_spending`]).
    pub async fn reject_spending(
        &self,
        who: &Principal,
        id: &RequestId,
        comment: Comment,
        spend: Option<(&str, Timestamp)>,
    ) -> Result<StoredRequest, ApiError> {
        self.decide(who, id, spend, |r, requirement, now| {
            let requirement = requirement.ok_or(DomainError::NotApprover)?;
            Ok(r.reject(who, requirement, comment, now)?)
        })
        .await
    }

    pub async fn cancel(
        &self,
        who: &Principal,
        id: &RequestId,
        comment: Comment,
    ) -> Result<StoredRequest, ApiError> {
        self.decide(who, id, None, |r, _, now| Ok(r.cancel(who, comment, now)?))
            .await
    }

    /// Ends a grant early: the requester (deactivation), an approver of its
    /// scope, or an admin.
    pub async fn revoke(
        &self,
        who: &Principal,
        id: &RequestId,
        reason: Comment,
    ) -> Result<StoredRequest, ApiError> {
        self.decide(who, id, None, |r, requirement, now| {
            let allowed = r.requester == who.name
                || self.catalog().is_admin(who)
                || requirement.is_some_and(|req| req.allows(who));
            if !allowed {
                return Err(DomainError::Forbidden.into());
            }
            Ok(r.revoke(who, reason, now)?)
        })
        .await
    }

    pub async fn acknowledge(
        &self,
        who: &Principal,
        id: &RequestId,
        comment: Comment,
    ) -> Result<StoredRequest, ApiError> {
        let is_admin = self.catalog().is_admin(who);
        self.decide(who, id, None, |r, requirement, now| {
            Ok(r.acknowledge(who, requirement, is_admin, comment, now)?)
        })
        .await
    }

    /// Asks for more time on a grant. The grant keeps running unchanged
    /// while the extension waits for approval.
    pub async fn extend(
        &self,
        who: &Principal,
        id: &RequestId,
        duration: &str,
        reason: &str,
        ticket: Option<&str>,
    ) -> Result<StoredRequest, ApiError> {
        let now = Utc::now();
        let duration = Span::parse("duration", duration)?;
        let justification = Justification::parse(reason)?;
        let ticket = ticket.map(Ticket::parse).transpose()?;
        // The ticket is checked, and its system asked, before the write
        // transaction (a slow system must not hold other writers); the
        // grant's target, resource and role never change, so the
        // eligibility found here is the one found again below.
        let ticket_check = {
            let parent = self.load(id).await?;
            if !self.can_see(who, &parent.request) {
                return Err(ApiError::NotFound);
            }
            let pr = &parent.request;
            pr.check_extendable(who)?;
            let eligibility =
                self.extension_eligibility(who, pr, duration, ticket.as_ref(), now)?;
            self.confirm_ticket(&eligibility, ticket.as_ref()).await?
        };
        let mut tx = self.store.begin().await?;
        let parent = self.load_visible(&mut tx, who, id).await?;
        parent.request.check_extendable(who)?;
        if let Some(p) = tx.pending_extension(id).await? {
            return Err(DomainError::ExtensionPending(p.request.id.to_string()).into());
        }
        let pr = &parent.request;
        let eligibility = self.extension_eligibility(who, pr, duration, ticket.as_ref(), now)?;
        if let Some(w) = pr.state.window() {
            if w.ends_at + duration.as_chrono() > eligibility.not_after {
                return Err(DomainError::invalid(
                    "duration",
                    format!(
                        "the grant would outlast your eligibility, which ends {}",
                        eligibility.not_after.to_rfc3339()
                    ),
                )
                .into());
            }
        }
        let requirement = self
            .catalog()
            .approval_requirement(&pr.target, &pr.resource, &pr.role);
        let approval = if eligibility.approval_required {
            Some(requirement.as_ref().ok_or(DomainError::NoApprovalPolicy)?)
        } else {
            None
        };
        let new = NewRequest {
            id: new_id(),
            kind: Kind::Extension { of: pr.id.clone() },
            target: pr.target.clone(),
            resource: pr.resource.clone(),
            role: pr.role.clone(),
            justification,
            ticket,
            duration,
            requested_start: None,
            break_glass: false,
        };
        // Auto-approval rules are not applied to extensions: a rule's
        // limits (max_duration, on-call) are about one window, and chained
        // extensions would add up past them.
        let mut change = Request::create(new, who, &eligibility.id, approval, now)?;
        record_ticket_check(&mut change, ticket_check.as_ref());
        self.persist(&mut tx, &change, &parent.grant_key, now)
            .await?;
        let mut changes = vec![change];
        if matches!(changes[0].request.state, State::Extended { .. }) {
            let ext_id = changes[0].request.id.clone();
            let extended = parent.request.clone().extend_by(&ext_id, duration, now)?;
            self.persist(&mut tx, &extended, &parent.grant_key, now)
                .await?;
            changes.push(extended);
        }
        tx.commit().await?;
        self.after_commit(&changes.iter().collect::<Vec<_>>());
        self.load(&changes[0].request.id).await
    }

    // ---- scheduler ------------------------------------------------------

    /// Applies every deadline that has passed by `now`. Returns how many
    /// requests changed.
    pub async fn run_deadlines_once(&self, now: Timestamp) -> Result<usize, ApiError> {
        // Deadlines are handled in batches, one transaction each: a burst of
        // grants ending together costs a few commits, not one per grant.
        const BATCH: i64 = 256;
        let mut changed = 0;
        let mut seen = HashSet::new();
        loop {
            let due = self.store.due_requests(now, BATCH).await?;
            let fresh: Vec<RequestId> = due
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect();
            if fresh.is_empty() {
                break;
            }
            // Stamp transitions with the time they really happen.
            let at = now.max(Utc::now());
            let mut tx = self.store.begin().await?;
            let mut batch = Vec::with_capacity(fresh.len());
            for id in fresh {
                let Some(stored) = tx.get_request(&id).await? else {
                    continue;
                };
                let deadline = stored.request.state.deadline();
                // A scheduled grant starts only if its requester is still
                // eligible then.
                let starting = matches!(&stored.request.state,
                    State::Scheduled { window } if window.starts_at <= at && at < window.ends_at);
                let verdict = if starting {
                    self.still_eligible(&stored.request, at).await?
                } else {
                    Ok(())
                };
                let change = match verdict {
                    Err(why) => Some(stored.request.cancel_by_system(&why, at)?),
                    Ok(()) => stored.request.on_deadline(at),
                };
                let Some(change) = change else {
                    continue;
                };
                self.persist(&mut tx, &change, &stored.grant_key, at)
                    .await?;
                batch.push((change, deadline));
            }
            tx.commit().await?;
            let done = Utc::now();
            for (change, deadline) in &batch {
                if let Some(d) = deadline {
                    self.metrics
                        .deadline_handled((done - *d).num_milliseconds());
                }
                self.after_commit(&[change]);
            }
            changed += batch.len();
        }
        Ok(changed)
    }

    /// Records every reminder, escalation and "ending soon" notice due by
    /// `now` that was not given yet, each once (the `followups` table
    /// remembers, across restarts and replicas). Returns how many it
    /// recorded.
    pub async fn run_followups_once(&self, now: Timestamp) -> Result<usize, ApiError> {
        let mut recorded = 0;
        if self.catalog().has_followups() {
            let earliest = |pick: fn(&elevate_core::policy::ApprovalPolicy) -> Option<Span>| {
                self.catalog()
                    .approval_policies
                    .iter()
                    .filter_map(pick)
                    .min()
            };
            if let Some(after) = earliest(|p| p.remind_after) {
                recorded += self
                    .pending_followups(Followup::Reminded, after, now)
                    .await?;
            }
            if let Some(after) = earliest(|p| p.escalate_after) {
                recorded += self
                    .pending_followups(Followup::Escalated, after, now)
                    .await?;
            }
        }
        if let Some(lead) = self.ending_soon {
            recorded += self.ending_soon_notices(lead, now).await?;
        }
        Ok(recorded)
    }

    /// Reminders or escalations of pending requests. `earliest` is the
    /// shortest delay any policy sets: only requests at least that old
    /// are read (through the `(state, created_at)` index), a page at a
    /// time, and each one's own policies decide whether it is due.
    async fn pending_followups(
        &self,
        kind: Followup,
        earliest: Span,
        now: Timestamp,
    ) -> Result<usize, ApiError> {
        const PAGE: i64 = 256;
        let delay = |q: &ApprovalRequirement| match kind {
            Followup::Reminded => q.remind_after,
            Followup::Escalated => q.escalate_after.filter(|_| !q.escalate_to.is_empty()),
            Followup::EndingSoon | Followup::RemovalFailing => None,
        };
        let cutoff = now - earliest.as_chrono();
        let mut recorded = 0;
        let mut after: Option<(Timestamp, RequestId)> = None;
        loop {
            let page = self
                .store
                .pending_without(kind, cutoff, after.as_ref(), PAGE)
                .await?;
            let full = page.len() as i64 == PAGE;
            after = page
                .last()
                .map(|s| (s.request.created_at, s.request.id.clone()));
            let due: Vec<RequestId> = page
                .into_iter()
                .filter(|s| {
                    self.catalog()
                        .approval_requirement(
                            &s.request.target,
                            &s.request.resource,
                            &s.request.role,
                        )
                        .as_ref()
                        .and_then(delay)
                        .is_some_and(|d| s.request.created_at + d.as_chrono() <= now)
                })
                .map(|s| s.request.id)
                .collect();
            if !due.is_empty() {
                // Stamped with the time they really happen.
                let at = now.max(Utc::now());
                let mut tx = self.store.begin().await?;
                let mut changes = Vec::new();
                for id in due {
                    // Read again under the write lock: it may have been
                    // decided since.
                    let Some(current) = tx.get_request(&id).await? else {
                        continue;
                    };
                    let Some(requirement) = self.catalog().approval_requirement(
                        &current.request.target,
                        &current.request.resource,
                        &current.request.role,
                    ) else {
                        continue;
                    };
                    let change = match kind {
                        Followup::Reminded => {
                            current
                                .request
                                .remind(&requirement, now)
                                .map(|event| Change {
                                    request: current.request.clone(),
                                    event,
                                    effect: None,
                                })
                        }
                        _ => current.request.clone().escalate(&requirement, now),
                    };
                    let Some(mut change) = change else {
                        continue;
                    };
                    change.event.at = at;
                    // Another replica (or an earlier run) did it already.
                    if !tx.claim_followup(&id, kind, at).await? {
                        continue;
                    }
                    if kind == Followup::Escalated {
                        self.persist(&mut tx, &change, &current.grant_key, at)
                            .await?;
                    } else {
                        tx.append_audit(&change.event).await?;
                    }
                    changes.push(change);
                }
                tx.commit().await?;
                self.after_commit(&changes.iter().collect::<Vec<_>>());
                recorded += changes.len();
            }
            if !full {
                break;
            }
        }
        Ok(recorded)
    }

    /// "Ending soon" notices of active grants whose window ends within
    /// `lead` of `now` (through the deadline index).
    async fn ending_soon_notices(
        &self,
        lead: chrono::Duration,
        now: Timestamp,
    ) -> Result<usize, ApiError> {
        const PAGE: i64 = 256;
        let mut recorded = 0;
        loop {
            let page = self
                .store
                .active_ending_without_notice(now, now + lead, PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            let at = now.max(Utc::now());
            let mut tx = self.store.begin().await?;
            let mut changes = Vec::new();
            for s in &page {
                let Some(current) = tx.get_request(&s.request.id).await? else {
                    continue;
                };
                let Some(mut event) = current.request.ending_soon(now) else {
                    continue;
                };
                event.at = at;
                if !tx
                    .claim_followup(&current.request.id, Followup::EndingSoon, at)
                    .await?
                {
                    continue;
                }
                tx.append_audit(&event).await?;
                changes.push(Change {
                    request: current.request,
                    event,
                    effect: None,
                });
            }
            tx.commit().await?;
            self.after_commit(&changes.iter().collect::<Vec<_>>());
            recorded += changes.len();
            // A page where nothing could be claimed would come back
            // unchanged.
            if changes.is_empty() || (page.len() as i64) < PAGE {
                break;
            }
        }
        Ok(recorded)
    }

    /// The scheduler loop; returns when `shutdown` fires.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: crate::Shutdown) {
        let mut followups_checked: Option<std::time::Instant> = None;
        loop {
            let now = Utc::now();
            if let Err(e) = self.run_deadlines_once(now).await {
                tracing::error!(error = %e.log_text(), "scheduler step failed; retrying shortly");
                self.metrics.scheduler_error();
            }
            // Follow-ups need second precision, not the deadlines' instant
            // reaction: looked for at most once a second however often the
            // loop is woken, and at least every IDLE_RECHECK.
            if followups_checked.is_none_or(|t| t.elapsed() >= FOLLOWUP_INTERVAL) {
                followups_checked = Some(std::time::Instant::now());
                if let Err(e) = self.run_followups_once(now).await {
                    tracing::error!(error = %e.log_text(), "follow-up step failed; retrying shortly");
                    self.metrics.scheduler_error();
                }
            }
            let sleep = match self.store.next_deadline().await {
                Ok(Some(next)) => (next - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                Ok(None) => IDLE_RECHECK,
                Err(_) => Duration::from_secs(1),
            };
            // Never sleep long: a wake-up lost (a client that hung up
            // between commit and notify) costs at most this.
            let sleep = sleep.min(IDLE_RECHECK);
            // Deadlines are in milliseconds; never sleep less than 1 ms so a
            // deadline a hair in the future does not spin.
            let sleep = sleep.max(Duration::from_millis(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.scheduler_wake.notified() => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    // ---- worker ---------------------------------------------------------

    /// Provider calls end well inside the lease (see `job_lease`).
    fn call_limit(&self) -> Duration {
        PROVIDER_CALL_LIMIT.min(self.job_lease / 2)
    }

    fn backoff(&self, attempts: i64) -> Duration {
        let base_ms = 500u64.saturating_mul(1u64 << attempts.clamp(0, 20));
        let capped = base_ms.min(self.retry_max_backoff.as_millis() as u64);
        // Jitter (±20 %) so many failing jobs do not retry in lockstep.
        let jitter = rand::rngs::OsRng.gen_range(0.8..1.2);
        Duration::from_millis(((capped as f64) * jitter) as u64)
    }

    /// Runs every job due by `now`, up to `limit`, and records the results
    /// in one transaction. Returns how many ran.
    pub async fn run_jobs_once(
        self: &Arc<Self>,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, ApiError> {
        let jobs = self.store.claim_jobs(now, self.job_lease, limit).await?;
        let count = jobs.len();
        let mut running = tokio::task::JoinSet::new();
        for job in jobs {
            let this = Arc::clone(self);
            running.spawn(async move { this.execute(job).await });
        }
        let mut outcomes = Vec::with_capacity(count);
        while let Some(r) = running.join_next().await {
            if let Some(o) = joined(r) {
                outcomes.push(o);
            }
        }
        self.record(outcomes, 0).await?;
        Ok(count)
    }

    /// Calls the provider for one job. Writes nothing: the worker records
    /// outcomes in batches (group commit), so a thousand grants ending
    /// together cost a few commits, not a thousand.
    async fn execute(&self, job: Job) -> Outcome {
        let stored = match self.store.get_request_plain(&job.request_id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Outcome {
                    job,
                    result: Done::Drop,
                }
            }
            Err(e) => {
                let result = Done::Retry(format!("cannot read the request: {e}"));
                return Outcome { job, result };
            }
        };
        let Some(provider) = self.providers.get(&stored.request.target).cloned() else {
            let result = Done::Retry(format!(
                "target \"{}\" is no longer configured",
                stored.request.target
            ));
            return Outcome { job, result };
        };
        let mut spec = match self.grant_spec(&stored.request).await {
            Ok(spec) => spec,
            Err(e) => {
                let result = Done::Retry(format!("cannot look up the requester: {e}"));
                return Outcome { job, result };
            }
        };
        // The account recorded when the request was made, not today's
        // mapping: a removal must reach whoever was given the role.
        spec.account = stored.account.clone();
        let result = match job.kind {
            JobKind::Apply => {
                let ended = stored
                    .request
                    .state
                    .window()
                    .is_some_and(|w| w.ends_at <= Utc::now());
                if !matches!(stored.request.state, State::Approved { .. }) || ended {
                    // Revoked or ended before it was applied: the removal
                    // queued behind this job (or the scheduler, for a window
                    // that is over) takes care of the target.
                    Done::Drop
                } else {
                    match bounded(self.call_limit(), provider.apply(&spec)).await {
                        Ok(()) => Done::Applied,
                        Err(ProviderError::Permanent(reason)) => Done::Refused(reason),
                        Err(ProviderError::Busy(e)) => Done::Busy(e),
                        Err(e) => Done::Retry(e.to_string()),
                    }
                }
            }
            JobKind::Remove => {
                // The claim holds every other job of this grant key off, so
                // nothing can grant the role between this check and the
                // removal below.
                match self
                    .store
                    .other_holder(&job.grant_key, &job.request_id)
                    .await
                {
                    Ok(Some(holder)) => Done::Kept(holder),
                    Ok(None) => match bounded(self.call_limit(), provider.remove(&spec)).await {
                        Ok(()) => Done::Removed,
                        Err(ProviderError::Busy(e)) => Done::Busy(e),
                        // A removal is never given up: access left behind
                        // is the failure this tool exists to prevent.
                        Err(e) => Done::Retry(e.to_string()),
                    },
                    Err(e) => Done::Retry(format!("cannot check other grants: {e}")),
                }
            }
        };
        Outcome { job, result }
    }

    /// Stores the outcomes of provider calls, all in one transaction, and
    /// claims up to `claim` next jobs in the same commit (a grant key's next
    /// job becomes claimable exactly when its previous one is recorded).
    async fn record(&self, outcomes: Vec<Outcome>, claim: usize) -> Result<Vec<Job>, ApiError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let mut changes = Vec::new();
        let mut removal_failing = false;
        let mut tx = self.store.begin().await?;
        for Outcome { job, result } in &outcomes {
            let kind = job.kind;
            // The job row goes first: if its lease ran out and another
            // replica claimed it again, that replica owns the outcome and
            // this one records nothing (no second attempt row, no second
            // state change).
            let held = match result {
                Done::Retry(error) | Done::Busy(error) => {
                    let run_at = now
                        + chrono::Duration::from_std(self.backoff(job.attempts))
                            .unwrap_or_default();
                    tx.retry_job(job, run_at, error).await?
                }
                _ => tx.finish_job(job).await?,
            };
            if !held {
                tracing::warn!(request = %job.request_id, job = kind.as_str(), "job lease ran out before its outcome was recorded; the replica that claimed it again records it");
                self.metrics.job_attempt(kind.as_str(), "lease_lost");
                continue;
            }
            let (outcome, error) = match result {
                Done::Drop => continue,
                Done::Applied | Done::Removed => ("ok", None),
                Done::Kept(holder) => (
                    "skipped",
                    Some(format!("role kept: still needed by {holder}")),
                ),
                Done::Refused(reason) => ("failed", Some(reason.clone())),
                Done::Retry(error) | Done::Busy(error) => ("retry", Some(error.clone())),
            };
            tx.record_attempt(&job.request_id, kind, now, outcome, error.as_deref())
                .await?;
            self.metrics.job_attempt(kind.as_str(), outcome);
            if let Done::Busy(error) = result {
                tracing::info!(request = %job.request_id, job = kind.as_str(), attempt = job.attempts + 1, error = %error, "the target is still busy; will look again");
                continue;
            }
            if let Done::Retry(error) = result {
                tracing::warn!(request = %job.request_id, job = kind.as_str(), attempt = job.attempts + 1, error = %error, "provider call failed; will retry");
                // A removal that starts failing is a security event: the
                // person keeps access past its end. Recorded (and so
                // notified) once per removal, at its first failure;
                // expected waits (`Busy`) before it do not count.
                if kind == JobKind::Remove
                    && tx
                        .claim_followup(&job.request_id, Followup::RemovalFailing, now)
                        .await?
                {
                    tx.append_audit(&elevate_core::request::Event {
                        action: elevate_core::request::Action::GrantRemovalFailing,
                        actor: elevate_core::principal::Actor::System,
                        request: job.request_id.clone(),
                        at: now,
                        details: serde_json::json!({ "error": error, "attempt": job.attempts + 1 }),
                    })
                    .await?;
                    removal_failing = true;
                }
                continue;
            }
            let Some(current) = tx.get_request(&job.request_id).await? else {
                continue;
            };
            let change = match result {
                Done::Applied => current.request.on_applied(now),
                Done::Refused(reason) => {
                    tracing::error!(request = %job.request_id, error = %reason, "provider refused the grant");
                    current.request.on_apply_failed(reason, now)
                }
                Done::Removed => current.request.on_removed(None, now),
                Done::Kept(holder) => current.request.on_removed(Some(holder), now),
                Done::Drop | Done::Retry(_) | Done::Busy(_) => None,
            };
            if let Some(c) = change {
                self.persist(&mut tx, &c, &current.grant_key, now).await?;
                changes.push(c);
            }
        }
        let next = if claim > 0 {
            tx.claim_jobs(Utc::now(), self.job_lease, claim).await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        self.after_commit(&changes.iter().collect::<Vec<_>>());
        if removal_failing {
            self.notifier.events_written();
        }
        Ok(next)
    }

    /// The worker loop; returns when `shutdown` fires. Jobs run
    /// concurrently (one per grant key at a time): a slow or unreachable
    /// target never holds up grants on other targets. Finished jobs are
    /// recorded together.
    pub async fn run_worker(self: Arc<Self>, shutdown: crate::Shutdown) {
        const CONCURRENCY: usize = 256;
        let mut running = tokio::task::JoinSet::new();
        loop {
            let mut claimed = false;
            // Claiming is a write: look first (a read) whether anything is
            // due at all, so a wake-up with nothing to do does not queue
            // behind every other writer.
            let due = match self.store.next_job_at().await {
                Ok(Some(next)) => next <= Utc::now(),
                Ok(None) => false,
                Err(_) => true,
            };
            if due && running.len() < CONCURRENCY {
                match self
                    .store
                    .claim_jobs(Utc::now(), self.job_lease, CONCURRENCY - running.len())
                    .await
                {
                    Ok(jobs) => {
                        claimed = !jobs.is_empty();
                        for job in jobs {
                            let this = Arc::clone(&self);
                            running.spawn(async move { this.execute(job).await });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot claim jobs; retrying shortly"),
                }
            }
            let sleep = match self.store.next_job_at().await {
                Ok(Some(next)) => (next - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                Ok(None) => IDLE_RECHECK,
                Err(_) => Duration::from_secs(1),
            };
            let sleep = sleep.min(IDLE_RECHECK);
            // A due job that could not be claimed waits for a running job of
            // the same grant key: that job's end wakes us, no need to poll.
            let sleep = if !claimed && !running.is_empty() && sleep < Duration::from_millis(50) {
                Duration::from_secs(1)
            } else {
                sleep.max(Duration::from_millis(5))
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.worker_wake.notified() => {}
                Some(first) = running.join_next(), if !running.is_empty() => {
                    let mut outcomes: Vec<Outcome> = joined(first).into_iter().collect();
                    while let Some(more) = running.try_join_next() {
                        outcomes.extend(joined(more));
                    }
                    let room = CONCURRENCY.saturating_sub(running.len());
                    match self.record(outcomes, room).await {
                        Ok(next) => {
                            for job in next {
                                let this = Arc::clone(&self);
                                running.spawn(async move { this.execute(job).await });
                            }
                        }
                        Err(e) => tracing::error!(error = %e.log_text(), "cannot record job results; the jobs run again when their lease ends"),
                    }
                }
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// Longest a provider call may take with the default lease.
const PROVIDER_CALL_LIMIT: Duration = Duration::from_secs(30);

async fn bounded(
    limit: Duration,
    call: impl std::future::Future<Output = Result<(), ProviderError>>,
) -> Result<(), ProviderError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ProviderError::Retryable(format!(
            "the target did not answer within {}s",
            limit.as_secs_f64()
        )))
    })
}

/// What a provider call came to.
enum Done {
    Applied,
    /// The provider refused for good.
    Refused(String),
    Removed,
    /// Another grant still needs the role; it was left in place.
    Kept(RequestId),
    Retry(String),
    /// The target is still working on it (or on another change it runs
    /// one at a time): retried, but not an alarm.
    Busy(String),
    /// Nothing to do any more (the request moved on or is gone).
    Drop,
}

struct Outcome {
    job: Job,
    result: Done,
}

fn joined(r: Result<Outcome, tokio::task::JoinError>) -> Option<Outcome> {
    match r {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::error!(error = %e, "job task ended abnormally; it runs again when its lease ends");
            None
        }
    }
}
