//! The request/grant lifecycle.
//!
//! ```text
//! create ─► pending ─┬─ quorum reached ─► approved ─► active ─► ending ─► ended
//!                    │          └─► scheduled ─┘         └─ revoke ─► ending ─► revoked
//!                    ├─ no approval needed / break-glass ─► approved | scheduled
//!                    ├─ rejected   ├─ cancelled   └─ expired (pending timeout)
//! approved ─ provider refuses for good, or the window ends first ─► failed
//! ```
//!
//! `approved` means "being applied on the target": a grant is only `active`
//! once the provider said so. `ending` means "the window is over (or it was
//! revoked) and the role is being removed"; it becomes `ended` or `revoked`
//! only once the provider confirmed the removal, so a removal that keeps
//! failing stays visible.
//!
//! An extension is a request of its own, linked to the grant it extends.
//! While it is pending the grant runs unchanged; once approved it moves to
//! `extended` and the grant's window grows.
//!
//! Every transition returns a [`Change`]: the new request, exactly one audit
//! event, and the provider work to enqueue. The caller stores all of it in
//! one transaction.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::automation::AutoApproval;
use crate::error::DomainError;
use crate::policy::ApprovalRequirement;
use crate::principal::{Actor, Principal};
use crate::values::{Comment, Justification, Name, RequestId, Span, Ticket, UserName};
use crate::Timestamp;

/// `[starts_at, ends_at)` of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
}

impl Window {
    fn starting(at: Timestamp, duration: Span) -> Self {
        Window {
            starts_at: at,
            ends_at: at + duration.as_chrono(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub by: UserName,
    pub at: Timestamp,
    pub comment: Comment,
}

/// Why a grant is being removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Removal {
    /// The window ran out.
    Ended,
    /// Someone ended it early: an approver or admin, or the requester
    /// deactivating it.
    Revoked { by: UserName, reason: Comment },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Pending {
        expires_at: Timestamp,
    },
    Scheduled {
        window: Window,
    },
    /// Approved; the provider is applying it.
    Approved {
        window: Window,
    },
    Active {
        window: Window,
        since: Timestamp,
    },
    /// The role is being removed from the target.
    Ending {
        window: Window,
        removal: Removal,
    },
    Ended {
        window: Window,
        at: Timestamp,
    },
    Revoked {
        window: Option<Window>,
        at: Timestamp,
        by: UserName,
        reason: Comment,
    },
    Rejected {
        at: Timestamp,
        by: UserName,
        comment: Comment,
    },
    Cancelled {
        at: Timestamp,
        by: Actor,
        reason: String,
    },
    Expired {
        at: Timestamp,
    },
    Failed {
        window: Option<Window>,
        at: Timestamp,
        reason: String,
    },
    /// An extension request whose time was added to the grant it extends.
    Extended {
        at: Timestamp,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Pending { .. } => "pending",
            State::Scheduled { .. } => "scheduled",
            State::Approved { .. } => "approved",
            State::Active { .. } => "active",
            State::Ending { .. } => "ending",
            State::Ended { .. } => "ended",
            State::Revoked { .. } => "revoked",
            State::Rejected { .. } => "rejected",
            State::Cancelled { .. } => "cancelled",
            State::Expired { .. } => "expired",
            State::Failed { .. } => "failed",
            State::Extended { .. } => "extended",
        }
    }

    pub fn window(&self) -> Option<Window> {
        match self {
            State::Scheduled { window }
            | State::Approved { window }
            | State::Active { window, .. }
            | State::Ending { window, .. }
            | State::Ended { window, .. } => Some(*window),
            State::Revoked { window, .. } | State::Failed { window, .. } => *window,
            _ => None,
        }
    }

    /// When the scheduler must next look at a request in this state.
    pub fn deadline(&self) -> Option<Timestamp> {
        match self {
            State::Pending { expires_at } => Some(*expires_at),
            State::Scheduled { window } => Some(window.starts_at),
            State::Approved { window } | State::Active { window, .. } => Some(window.ends_at),
            _ => None,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            State::Ended { .. }
                | State::Revoked { .. }
                | State::Rejected { .. }
                | State::Cancelled { .. }
                | State::Expired { .. }
                | State::Failed { .. }
                | State::Extended { .. }
        )
    }

    /// States in which the role must be held on the target (or is being
    /// put there). A removal is skipped while another grant of the same
    /// role is in one of these, so overlapping grants never cut each other
    /// short.
    pub const NEEDS_ROLE: [&'static str; 2] = ["approved", "active"];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    Access,
    Extension { of: RequestId },
}

/// After-the-fact review of a break-glass grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Review {
    NotNeeded,
    Awaiting,
    Acknowledged {
        by: UserName,
        at: Timestamp,
        comment: Comment,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub kind: Kind,
    pub requester: UserName,
    pub target: Name,
    pub resource: Name,
    pub role: Name,
    pub justification: Justification,
    pub ticket: Option<Ticket>,
    pub duration: Span,
    /// The start asked for; `None` means "as soon as approved".
    pub requested_start: Option<Timestamp>,
    pub break_glass: bool,
    /// The eligibility that permitted it, kept for the audit trail.
    pub eligibility: Name,
    pub created_at: Timestamp,
    pub approvals: Vec<Approval>,
    pub review: Review,
    pub state: State,
    /// When a pending request was escalated to its policies' fallback
    /// approvers (`escalate_to`), who may approve it from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<Timestamp>,
}

/// Audit actions. The strings are stored and exported: never change one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    RequestCreated,
    ApprovalRecorded,
    RequestApproved,
    RequestRejected,
    RequestCancelled,
    RequestExpired,
    GrantStarting,
    GrantActivated,
    GrantFailed,
    GrantWindowEnded,
    GrantRevoked,
    GrantDeactivated,
    GrantRemoved,
    GrantExtended,
    BreakGlassAcknowledged,
    /// A pending request's approvers were reminded of it.
    RequestReminded,
    /// A pending request was escalated to its policy's fallback approvers.
    RequestEscalated,
    /// The grant's window ends soon (a notice, no change of state).
    GrantEndingSoon,
    /// Removing the grant from the target failed; it is being retried.
    GrantRemovalFailing,
    /// Temporary credentials or a console session were issued for an
    /// active grant (targets that hand out sessions, e.g. `aws-sts`).
    GrantSessionIssued,
    /// Reconciliation found assignments of a target's managed roles that
    /// no grant accounts for (and, configured so, removed them). About a
    /// target, not a request: the event has no request id.
    TargetUnmanagedAccess,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::RequestCreated => "request.created",
            Action::ApprovalRecorded => "request.approval_recorded",
            Action::RequestApproved => "request.approved",
            Action::RequestRejected => "request.rejected",
            Action::RequestCancelled => "request.cancelled",
            Action::RequestExpired => "request.expired",
            Action::GrantStarting => "grant.starting",
            Action::GrantActivated => "grant.activated",
            Action::GrantFailed => "grant.failed",
            Action::GrantWindowEnded => "grant.window_ended",
            Action::GrantRevoked => "grant.revoked",
            Action::GrantDeactivated => "grant.deactivated",
            Action::GrantRemoved => "grant.removed",
            Action::GrantExtended => "grant.extended",
            Action::BreakGlassAcknowledged => "break_glass.acknowledged",
            Action::RequestReminded => "request.reminded",
            Action::RequestEscalated => "request.escalated",
            Action::GrantEndingSoon => "grant.ending_soon",
            Action::GrantRemovalFailing => "grant.removal_failing",
            Action::GrantSessionIssued => "grant.session_issued",
            Action::TargetUnmanagedAccess => "target.unmanaged_access",
        }
    }
}

/// One audit event, before it is chained and stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub action: Action,
    pub actor: Actor,
    pub request: RequestId,
    pub at: Timestamp,
    pub details: serde_json::Value,
}

/// Provider work implied by a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Put the role on the target.
    Apply,
    /// Take the role off the target (unless another grant still needs it),
    /// and drop any apply still queued.
    Remove,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub request: Request,
    pub event: Event,
    pub effect: Option<Effect>,
}

/// The parsed contents of a new request.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: RequestId,
    pub kind: Kind,
    pub target: Name,
    pub resource: Name,
    pub role: Name,
    pub justification: Justification,
    pub ticket: Option<Ticket>,
    pub duration: Span,
    pub requested_start: Option<Timestamp>,
    pub break_glass: bool,
}

fn invalid(state: &State, action: &'static str) -> DomainError {
    DomainError::InvalidState {
        state: state.name().to_owned(),
        action,
    }
}

impl Request {
    /// Creates a request that an eligibility already permitted.
    /// `approval` is `None` when the eligibility needs no approval;
    /// break-glass needs no approval by definition.
    pub fn create(
        new: NewRequest,
        requester: &Principal,
        eligibility: &Name,
        approval: Option<&ApprovalRequirement>,
        now: Timestamp,
    ) -> Result<Change, DomainError> {
        Self::create_with(new, requester, eligibility, approval, None, now)
    }

    /// [`Request::create`], approved at once by the auto-approval rule
    /// `auto` when one fired (see `Catalog::auto_approval`). The one
    /// `request.created` event names the rule. Never for break-glass.
    pub fn create_with(
        new: NewRequest,
        requester: &Principal,
        eligibility: &Name,
        approval: Option<&ApprovalRequirement>,
        auto_approval: Option<AutoApproval>,
        now: Timestamp,
    ) -> Result<Change, DomainError> {
        if new.break_glass && new.requested_start.is_some() {
            return Err(DomainError::BreakGlassScheduled);
        }
        // Rules approve what needs approval; break-glass needs none and
        // its review is a person's job.
        let auto_approval = auto_approval.filter(|_| !new.break_glass && approval.is_some());
        let auto = new.break_glass || approval.is_none() || auto_approval.is_some();
        let state = if auto {
            match new.kind {
                // Nothing to approve: the caller extends the grant at once.
                Kind::Extension { .. } => State::Extended { at: now },
                Kind::Access => granted_state(new.requested_start, new.duration, now),
            }
        } else {
            let timeout = approval.map_or(Span::from_secs(3 * 3600), |a| a.pending_timeout);
            State::Pending {
                expires_at: now + timeout.as_chrono(),
            }
        };
        let effect = matches!(state, State::Approved { .. }).then_some(Effect::Apply);
        let request = Request {
            id: new.id,
            kind: new.kind,
            requester: requester.name.clone(),
            target: new.target,
            resource: new.resource,
            role: new.role,
            justification: new.justification,
            ticket: new.ticket,
            duration: new.duration,
            requested_start: new.requested_start,
            break_glass: new.break_glass,
            eligibility: eligibility.clone(),
            created_at: now,
            approvals: Vec::new(),
            review: if new.break_glass {
                Review::Awaiting
            } else {
                Review::NotNeeded
            },
            state,
            escalated_at: None,
        };
        let event = Event {
            action: Action::RequestCreated,
            actor: Actor::User(requester.name.clone()),
            request: request.id.clone(),
            at: now,
            details: json!({
                "kind": request.kind,
                "target": request.target,
                "resource": request.resource,
                "role": request.role,
                "duration": request.duration,
                "requested_start": request.requested_start,
                "justification": request.justification,
                "ticket": request.ticket,
                "break_glass": request.break_glass,
                "eligibility": request.eligibility,
                "approval_required": approval.is_some() && !new.break_glass,
                "approvers": approval.map(|a| &a.approvers),
                "quorum": approval.map(|a| a.quorum),
                "state": request.state,
            }),
        };
        let mut event = event;
        if let (Some(a), Some(details)) = (&auto_approval, event.details.as_object_mut()) {
            details.insert(
                "auto_approval".into(),
                json!({ "rule": a.rule, "policy": a.policy }),
            );
        }
        Ok(Change {
            request,
            event,
            effect,
        })
    }

    /// The reminder of a pending request to its approvers: an audit event
    /// only (no change of state). `None` unless it is still pending.
    pub fn remind(&self, requirement: &ApprovalRequirement, now: Timestamp) -> Option<Event> {
        if !matches!(self.state, State::Pending { expires_at } if now < expires_at) {
            return None;
        }
        let approvers: Vec<String> = requirement
            .clone()
            .with_escalation(self.escalated_at.is_some())
            .approvers
            .iter()
            .map(|s| s.to_string())
            .collect();
        Some(Event {
            action: Action::RequestReminded,
            actor: Actor::System,
            request: self.id.clone(),
            at: now,
            details: json!({
                "approvers": approvers,
                "remind_after": requirement.remind_after,
                "approvals": self.approvals.len(),
                "quorum": requirement.quorum,
                "waiting_since": self.created_at,
            }),
        })
    }

    /// Escalates a pending request to the fallback approvers: from now on
    /// they may approve it too. `None` unless it is still pending and has
    /// somewhere to escalate to.
    pub fn escalate(mut self, requirement: &ApprovalRequirement, now: Timestamp) -> Option<Change> {
        if !matches!(self.state, State::Pending { expires_at } if now < expires_at)
            || requirement.escalate_to.is_empty()
            || self.escalated_at.is_some()
        {
            return None;
        }
        self.escalated_at = Some(now);
        let escalate_to: Vec<String> = requirement
            .escalate_to
            .iter()
            .map(|s| s.to_string())
            .collect();
        let details = json!({
            "escalate_to": escalate_to,
            "escalate_after": requirement.escalate_after,
            "approvals": self.approvals.len(),
            "quorum": requirement.quorum,
            "waiting_since": self.created_at,
        });
        let state = self.state.clone();
        Some(self.change(
            state,
            Action::RequestEscalated,
            Actor::System,
            now,
            details,
            None,
        ))
    }

    /// The notice that an active grant's window ends soon: an audit event
    /// only. `None` unless the grant is active and not yet over.
    pub fn ending_soon(&self, now: Timestamp) -> Option<Event> {
        let State::Active { window, .. } = self.state else {
            return None;
        };
        if now >= window.ends_at {
            return None;
        }
        Some(Event {
            action: Action::GrantEndingSoon,
            actor: Actor::System,
            request: self.id.clone(),
            at: now,
            details: json!({
                "ends_at": window.ends_at,
                "remaining_secs": (window.ends_at - now).num_seconds(),
            }),
        })
    }

    fn change(
        mut self,
        state: State,
        action: Action,
        actor: Actor,
        now: Timestamp,
        details: serde_json::Value,
        effect: Option<Effect>,
    ) -> Change {
        self.state = state;
        let mut details = details;
        if let Some(obj) = details.as_object_mut() {
            obj.insert("state".into(), json!(self.state));
        }
        let event = Event {
            action,
            actor,
            request: self.id.clone(),
            at: now,
            details,
        };
        Change {
            request: self,
            event,
            effect,
        }
    }

    /// Records one approval. Reaching the quorum approves the request
    /// (for an extension: marks it extended; the caller then extends the
    /// grant with [`Request::extend_by`]).
    pub fn approve(
        mut self,
        approver: &Principal,
        requirement: &ApprovalRequirement,
        comment: Comment,
        now: Timestamp,
    ) -> Result<Change, DomainError> {
        // The requester may be in the approver group; they still never
        // count towards their own quorum.
        if approver.name == self.requester {
            return Err(DomainError::SelfApproval);
        }
        if !requirement.allows(approver) {
            return Err(DomainError::NotApprover);
        }
        self.check_pending(now, "approval")?;
        if self.approvals.iter().any(|a| a.by == approver.name) {
            return Err(DomainError::AlreadyApproved);
        }
        self.approvals.push(Approval {
            by: approver.name.clone(),
            at: now,
            comment: comment.clone(),
        });
        let count = self.approvals.len() as u32;
        let details = json!({
            "comment": comment,
            "approvals": count,
            "quorum": requirement.quorum,
        });
        let actor = Actor::User(approver.name.clone());
        if count < requirement.quorum {
            let state = self.state.clone();
            return Ok(self.change(state, Action::ApprovalRecorded, actor, now, details, None));
        }
        let state = match self.kind {
            Kind::Extension { .. } => State::Extended { at: now },
            Kind::Access => granted_state(self.requested_start, self.duration, now),
        };
        let effect = matches!(state, State::Approved { .. }).then_some(Effect::Apply);
        Ok(self.change(state, Action::RequestApproved, actor, now, details, effect))
    }

    pub fn reject(
        self,
        approver: &Principal,
        requirement: &ApprovalRequirement,
        comment: Comment,
        now: Timestamp,
    ) -> Result<Change, DomainError> {
        if approver.name == self.requester {
            return Err(DomainError::SelfApproval);
        }
        if !requirement.allows(approver) {
            return Err(DomainError::NotApprover);
        }
        self.check_pending(now, "rejection")?;
        if comment.is_empty() {
            return Err(DomainError::invalid(
                "comment",
                "a rejection needs a comment telling the requester why",
            ));
        }
        let state = State::Rejected {
            at: now,
            by: approver.name.clone(),
            comment: comment.clone(),
        };
        let actor = Actor::User(approver.name.clone());
        Ok(self.change(
            state,
            Action::RequestRejected,
            actor,
            now,
            json!({ "comment": comment }),
            None,
        ))
    }

    /// The requester withdraws a request that has not started.
    pub fn cancel(
        self,
        by: &Principal,
        comment: Comment,
        now: Timestamp,
    ) -> Result<Change, DomainError> {
        if by.name != self.requester {
            return Err(DomainError::NotRequester);
        }
        if !matches!(self.state, State::Scheduled { .. }) {
            self.check_pending(now, "cancelling")?;
        }
        let state = State::Cancelled {
            at: now,
            by: Actor::User(by.name.clone()),
            reason: "cancelled by the requester".into(),
        };
        let actor = Actor::User(by.name.clone());
        let details = json!({ "comment": comment });
        Ok(self.change(state, Action::RequestCancelled, actor, now, details, None))
    }

    /// A decision is only possible while the request is pending and its
    /// pending timeout has not passed, even if the scheduler has not yet
    /// marked it expired: the timeout is the rule, the scheduler only
    /// records it.
    fn check_pending(&self, now: Timestamp, action: &'static str) -> Result<(), DomainError> {
        match self.state {
            State::Pending { expires_at } if expires_at <= now => Err(DomainError::InvalidState {
                state: "expired".into(),
                action,
            }),
            State::Pending { .. } => Ok(()),
            _ => Err(invalid(&self.state, action)),
        }
    }

    /// elevate withdraws a pending extension whose grant ended first.
    pub fn cancel_by_system(self, reason: &str, now: Timestamp) -> Result<Change, DomainError> {
        if !matches!(self.state, State::Pending { .. } | State::Scheduled { .. }) {
            return Err(invalid(&self.state, "cancelling"));
        }
        let state = State::Cancelled {
            at: now,
            by: Actor::System,
            reason: reason.to_owned(),
        };
        Ok(self.change(
            state,
            Action::RequestCancelled,
            Actor::System,
            now,
            json!({ "reason": reason }),
            None,
        ))
    }

    /// Ends a grant early. The caller decides who may (the requester, an
    /// approver in scope, an admin); the event says whether it was the
    /// requester deactivating their own access or someone else revoking it.
    pub fn revoke(
        self,
        by: &Principal,
        reason: Comment,
        now: Timestamp,
    ) -> Result<Change, DomainError> {
        let action = if by.name == self.requester {
            Action::GrantDeactivated
        } else {
            Action::GrantRevoked
        };
        let actor = Actor::User(by.name.clone());
        let details = json!({ "reason": reason });
        // A window that is over ends by itself; revoking it now would
        // rewrite how it ended.
        if let State::Approved { window } | State::Active { window, .. } = self.state {
            if window.ends_at <= now {
                return Err(DomainError::InvalidState {
                    state: "ended".into(),
                    action: "revocation",
                });
            }
        }
        match self.state {
            // Nothing was applied yet: it simply never starts.
            State::Scheduled { window } => {
                let state = State::Revoked {
                    window: Some(window),
                    at: now,
                    by: by.name.clone(),
                    reason,
                };
                Ok(self.change(state, action, actor, now, details, None))
            }
            State::Approved { window } | State::Active { window, .. } => {
                let state = State::Ending {
                    window,
                    removal: Removal::Revoked {
                        by: by.name.clone(),
                        reason,
                    },
                };
                Ok(self.change(state, action, actor, now, details, Some(Effect::Remove)))
            }
            _ => Err(invalid(&self.state, "revocation")),
        }
    }

    /// Applies whatever deadline has passed. `None` when nothing is due.
    pub fn on_deadline(self, now: Timestamp) -> Option<Change> {
        match self.state {
            State::Pending { expires_at } if expires_at <= now => {
                let state = State::Expired { at: now };
                let details = json!({ "expires_at": expires_at });
                Some(self.change(
                    state,
                    Action::RequestExpired,
                    Actor::System,
                    now,
                    details,
                    None,
                ))
            }
            // The whole window passed while elevate was down: granting it
            // now would give access for a time that is already over.
            State::Scheduled { window } if window.ends_at <= now => {
                let state = State::Failed {
                    window: Some(window),
                    at: now,
                    reason: "the window passed before it could start (elevate was not running)"
                        .into(),
                };
                let details = json!({ "reason": "window passed before it started" });
                Some(self.change(
                    state,
                    Action::GrantFailed,
                    Actor::System,
                    now,
                    details,
                    None,
                ))
            }
            State::Scheduled { window } if window.starts_at <= now => {
                let state = State::Approved { window };
                Some(self.change(
                    state,
                    Action::GrantStarting,
                    Actor::System,
                    now,
                    json!({}),
                    Some(Effect::Apply),
                ))
            }
            State::Approved { window } if window.ends_at <= now => {
                let state = State::Failed {
                    window: Some(window),
                    at: now,
                    reason: "the window ended before the target accepted the grant".into(),
                };
                // Removal as cleanup: an apply may have half-succeeded
                // (a timeout after the target committed).
                Some(self.change(
                    state,
                    Action::GrantFailed,
                    Actor::System,
                    now,
                    json!({ "reason": "window ended before the grant could be applied" }),
                    Some(Effect::Remove),
                ))
            }
            State::Active { window, .. } if window.ends_at <= now => {
                let state = State::Ending {
                    window,
                    removal: Removal::Ended,
                };
                let details = json!({ "ends_at": window.ends_at });
                Some(self.change(
                    state,
                    Action::GrantWindowEnded,
                    Actor::System,
                    now,
                    details,
                    Some(Effect::Remove),
                ))
            }
            _ => None,
        }
    }

    /// The provider confirmed the role is on the target. `None` if the
    /// grant moved on meanwhile (revoked while applying): its removal is
    /// already queued behind this apply.
    pub fn on_applied(self, now: Timestamp) -> Option<Change> {
        match self.state {
            State::Approved { window } => {
                let state = State::Active { window, since: now };
                let details =
                    json!({ "latency_ms": (now - window.starts_at).num_milliseconds().max(0) });
                Some(self.change(
                    state,
                    Action::GrantActivated,
                    Actor::System,
                    now,
                    details,
                    None,
                ))
            }
            _ => None,
        }
    }

    /// The provider refused in a way retrying cannot fix.
    pub fn on_apply_failed(self, reason: &str, now: Timestamp) -> Option<Change> {
        match self.state {
            State::Approved { window } => {
                let state = State::Failed {
                    window: Some(window),
                    at: now,
                    reason: reason.to_owned(),
                };
                Some(self.change(
                    state,
                    Action::GrantFailed,
                    Actor::System,
                    now,
                    json!({ "reason": reason }),
                    Some(Effect::Remove),
                ))
            }
            _ => None,
        }
    }

    /// The provider confirmed the role is gone (or another grant still
    /// needs it, `kept_for` names it, and it was deliberately left).
    pub fn on_removed(self, kept_for: Option<&RequestId>, now: Timestamp) -> Option<Change> {
        let State::Ending { window, removal } = self.state.clone() else {
            return None;
        };
        let state = match removal {
            Removal::Ended => State::Ended { window, at: now },
            Removal::Revoked { by, reason } => State::Revoked {
                window: Some(window),
                at: now,
                by,
                reason,
            },
        };
        let details = json!({
            "lateness_ms": (now - window.ends_at).num_milliseconds().max(0),
            "role_kept_for": kept_for,
        });
        Some(self.change(
            state,
            Action::GrantRemoved,
            Actor::System,
            now,
            details,
            None,
        ))
    }

    /// Grows the window of a grant by an approved extension.
    pub fn extend_by(
        self,
        extension: &RequestId,
        by: Span,
        now: Timestamp,
    ) -> Result<Change, DomainError> {
        let grow = |w: Window| Window {
            starts_at: w.starts_at,
            ends_at: w.ends_at + by.as_chrono(),
        };
        if self.state.window().is_some_and(|w| w.ends_at <= now)
            && !matches!(self.state, State::Scheduled { .. })
        {
            return Err(DomainError::InvalidState {
                state: "ended".into(),
                action: "extension",
            });
        }
        let (state, old) = match &self.state {
            State::Scheduled { window } => (
                State::Scheduled {
                    window: grow(*window),
                },
                *window,
            ),
            State::Approved { window } => (
                State::Approved {
                    window: grow(*window),
                },
                *window,
            ),
            State::Active { window, since } => (
                State::Active {
                    window: grow(*window),
                    since: *since,
                },
                *window,
            ),
            _ => return Err(invalid(&self.state, "extension")),
        };
        let details = json!({
            "extension": extension,
            "from": old.ends_at,
            "to": old.ends_at + by.as_chrono(),
        });
        let actor = Actor::System;
        Ok(self.change(state, Action::GrantExtended, actor, now, details, None))
    }

    /// Checks that `requester` may extend this grant, before an extension
    /// request is created for it.
    pub fn check_extendable(&self, requester: &Principal) -> Result<(), DomainError> {
        if requester.name != self.requester {
            return Err(DomainError::NotRequester);
        }
        if self.kind != Kind::Access {
            return Err(DomainError::invalid(
                "id",
                "extend the grant itself, not one of its extensions",
            ));
        }
        match self.state {
            State::Scheduled { .. } | State::Approved { .. } | State::Active { .. } => Ok(()),
            _ => Err(invalid(&self.state, "extension")),
        }
    }

    /// An approver in scope (never the requester) confirms they reviewed a
    /// break-glass grant.
    pub fn acknowledge(
        mut self,
        reviewer: &Principal,
        requirement: Option<&ApprovalRequirement>,
        is_admin: bool,
        comment: Comment,
        now: Timestamp,
    ) -> Result<Change, DomainError> {
        if reviewer.name == self.requester {
            return Err(DomainError::SelfApproval);
        }
        if !is_admin && !requirement.is_some_and(|r| r.allows(reviewer)) {
            return Err(DomainError::NotApprover);
        }
        if self.review != Review::Awaiting {
            return Err(DomainError::NothingToAcknowledge);
        }
        self.review = Review::Acknowledged {
            by: reviewer.name.clone(),
            at: now,
            comment: comment.clone(),
        };
        let state = self.state.clone();
        let actor = Actor::User(reviewer.name.clone());
        Ok(self.change(
            state,
            Action::BreakGlassAcknowledged,
            actor,
            now,
            json!({ "comment": comment }),
            None,
        ))
    }
}

/// The state of a request the moment it is approved: scheduled if its
/// start is still ahead, otherwise approved (being applied) from now. A
/// scheduled start that passed while the request waited starts now and
/// still gets its full duration.
fn granted_state(requested_start: Option<Timestamp>, duration: Span, now: Timestamp) -> State {
    match requested_start {
        Some(start) if start > now => State::Scheduled {
            window: Window::starting(start, duration),
        },
        _ => State::Approved {
            window: Window::starting(now, duration),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{catalog, n, t0, user};
    use chrono::Duration;

    fn new_request(start: Option<Timestamp>, break_glass: bool) -> NewRequest {
        NewRequest {
            id: RequestId::from_random(42),
            kind: Kind::Access,
            target: n("pg"),
            resource: n("orders"),
            role: n("writer"),
            justification: Justification::parse("障害対応 INC-1").unwrap(),
            ticket: None,
            duration: Span::from_secs(3600),
            requested_start: start,
            break_glass,
        }
    }

    fn requirement() -> ApprovalRequirement {
        catalog()
            .approval_requirement(&n("pg"), &n("orders"), &n("writer"))
            .unwrap()
    }

    fn pending() -> Request {
        let alice = user("alice", &["sre", "dba"]);
        Request::create(
            new_request(None, false),
            &alice,
            &n("e"),
            Some(&requirement()),
            t0(),
        )
        .unwrap()
        .request
    }

    #[test]
    fn requester_cannot_approve_own_request_even_as_an_approver() {
        let alice = user("ALICE", &["dba"]);
        let err = pending()
            .approve(&alice, &requirement(), Comment::default(), t0())
            .unwrap_err();
        assert_eq!(err, DomainError::SelfApproval);
    }

    #[test]
    fn quorum_of_two_needs_two_distinct_approvers() {
        let req = requirement();
        let dan = user("dan", &["dba"]);
        let once = pending()
            .approve(&dan, &req, Comment::default(), t0())
            .unwrap();
        assert_eq!(once.event.action, Action::ApprovalRecorded);
        assert!(matches!(once.request.state, State::Pending { .. }));
        assert_eq!(once.effect, None);
        let again =
            once.request
                .clone()
                .approve(&user("Dan", &["dba"]), &req, Comment::default(), t0());
        assert_eq!(again.unwrap_err(), DomainError::AlreadyApproved);
        let twice = once
            .request
            .approve(&user("olivia", &[]), &req, Comment::default(), t0())
            .unwrap();
        assert_eq!(twice.event.action, Action::RequestApproved);
        assert_eq!(twice.effect, Some(Effect::Apply));
        assert!(matches!(twice.request.state, State::Approved { .. }));
    }

    #[test]
    fn approver_outside_scope_is_refused() {
        let eve = user("eve", &["sre"]);
        let err = pending()
            .approve(&eve, &requirement(), Comment::default(), t0())
            .unwrap_err();
        assert_eq!(err, DomainError::NotApprover);
    }

    #[test]
    fn rejection_needs_a_comment_and_ends_the_request() {
        let dan = user("dan", &["dba"]);
        assert!(pending()
            .reject(&dan, &requirement(), Comment::default(), t0())
            .is_err());
        let c = pending()
            .reject(&dan, &requirement(), Comment::parse("no").unwrap(), t0())
            .unwrap();
        assert_eq!(c.request.state.name(), "rejected");
    }

    #[test]
    fn pending_request_expires_at_its_timeout_and_not_before() {
        let p = pending();
        let deadline = p.state.deadline().unwrap();
        assert_eq!(deadline, t0() + Duration::hours(1));
        assert!(p
            .clone()
            .on_deadline(deadline - Duration::seconds(1))
            .is_none());
        let c = p.on_deadline(deadline).unwrap();
        assert_eq!(c.request.state.name(), "expired");
    }

    #[test]
    fn no_decision_after_the_pending_timeout_even_before_the_scheduler_records_it() {
        let p = pending();
        let deadline = p.state.deadline().unwrap();
        let dan = user("dan", &["dba"]);
        let late = p
            .clone()
            .approve(&dan, &requirement(), Comment::default(), deadline);
        assert!(
            matches!(late, Err(DomainError::InvalidState { .. })),
            "{late:?}"
        );
        let late = p.clone().reject(
            &dan,
            &requirement(),
            Comment::parse("no").unwrap(),
            deadline,
        );
        assert!(matches!(late, Err(DomainError::InvalidState { .. })));
        let alice = user("alice", &["sre"]);
        assert!(p
            .clone()
            .cancel(&alice, Comment::default(), deadline)
            .is_err());
        assert!(p
            .approve(
                &dan,
                &requirement(),
                Comment::default(),
                deadline - Duration::milliseconds(1)
            )
            .is_ok());
    }

    #[test]
    fn an_ended_window_can_be_neither_revoked_nor_extended() {
        let alice = user("alice", &["sre"]);
        let c = Request::create(new_request(None, false), &alice, &n("e"), None, t0()).unwrap();
        let active = c.request.on_applied(t0()).unwrap().request;
        let end = t0() + Duration::hours(1);
        assert!(active
            .clone()
            .revoke(&alice, Comment::default(), end)
            .is_err());
        assert!(active
            .clone()
            .extend_by(&RequestId::from_random(1), Span::from_secs(60), end)
            .is_err());
        assert!(active
            .revoke(&alice, Comment::default(), end - Duration::seconds(1))
            .is_ok());
    }

    #[test]
    fn scheduled_grant_starts_at_its_start_time() {
        let start = t0() + Duration::hours(2);
        let alice = user("alice", &["sre"]);
        let c =
            Request::create(new_request(Some(start), false), &alice, &n("e"), None, t0()).unwrap();
        assert_eq!(c.effect, None);
        assert_eq!(c.request.state.deadline(), Some(start));
        assert!(c
            .request
            .clone()
            .on_deadline(start - Duration::seconds(1))
            .is_none());
        let started = c.request.on_deadline(start).unwrap();
        assert_eq!(started.effect, Some(Effect::Apply));
        assert_eq!(
            started.request.state.window().unwrap().ends_at,
            start + Duration::hours(1)
        );
    }

    #[test]
    fn a_scheduled_window_that_passed_entirely_is_never_applied() {
        let start = t0() + Duration::hours(2);
        let alice = user("alice", &["sre"]);
        let c =
            Request::create(new_request(Some(start), false), &alice, &n("e"), None, t0()).unwrap();
        let late = c.request.on_deadline(start + Duration::hours(3)).unwrap();
        assert_eq!(late.request.state.name(), "failed");
        assert_eq!(late.effect, None);
    }

    #[test]
    fn full_lifecycle_applies_then_removes_at_the_deadline() {
        let alice = user("alice", &["sre"]);
        let c = Request::create(new_request(None, false), &alice, &n("e"), None, t0()).unwrap();
        assert_eq!(c.effect, Some(Effect::Apply));
        let active = c.request.on_applied(t0() + Duration::seconds(1)).unwrap();
        assert_eq!(active.request.state.name(), "active");
        let end = t0() + Duration::hours(1);
        let ending = active.request.on_deadline(end).unwrap();
        assert_eq!(ending.effect, Some(Effect::Remove));
        assert_eq!(ending.request.state.name(), "ending");
        let ended = ending
            .request
            .on_removed(None, end + Duration::milliseconds(5))
            .unwrap();
        assert_eq!(ended.request.state.name(), "ended");
        assert_eq!(ended.event.details["lateness_ms"], 5);
    }

    #[test]
    fn break_glass_is_granted_at_once_and_awaits_review() {
        let alice = user("alice", &["sre"]);
        let c = Request::create(
            new_request(None, true),
            &alice,
            &n("e"),
            Some(&requirement()),
            t0(),
        )
        .unwrap();
        assert_eq!(c.request.state.name(), "approved");
        assert_eq!(c.request.review, Review::Awaiting);
        let self_ack = c.request.clone().acknowledge(
            &alice,
            Some(&requirement()),
            false,
            Comment::default(),
            t0(),
        );
        assert_eq!(self_ack.unwrap_err(), DomainError::SelfApproval);
        let ack = c
            .request
            .acknowledge(
                &user("dan", &["dba"]),
                Some(&requirement()),
                false,
                Comment::default(),
                t0(),
            )
            .unwrap();
        assert!(matches!(ack.request.review, Review::Acknowledged { .. }));
        let start = t0() + Duration::hours(1);
        assert_eq!(
            Request::create(new_request(Some(start), true), &alice, &n("e"), None, t0())
                .unwrap_err(),
            DomainError::BreakGlassScheduled
        );
    }

    #[test]
    fn revoking_an_active_grant_removes_it_and_deactivation_is_named_so() {
        let alice = user("alice", &["sre"]);
        let c = Request::create(new_request(None, false), &alice, &n("e"), None, t0()).unwrap();
        let active = c.request.on_applied(t0()).unwrap().request;
        let own = active
            .clone()
            .revoke(&alice, Comment::default(), t0())
            .unwrap();
        assert_eq!(own.event.action, Action::GrantDeactivated);
        assert_eq!(own.effect, Some(Effect::Remove));
        let other = active
            .revoke(&user("dan", &[]), Comment::default(), t0())
            .unwrap();
        assert_eq!(other.event.action, Action::GrantRevoked);
        let revoked = other.request.on_removed(None, t0()).unwrap();
        assert_eq!(revoked.request.state.name(), "revoked");
    }

    #[test]
    fn extension_grows_the_window_without_interrupting_it() {
        let alice = user("alice", &["sre"]);
        let c = Request::create(new_request(None, false), &alice, &n("e"), None, t0()).unwrap();
        let active = c.request.on_applied(t0()).unwrap().request;
        active.check_extendable(&alice).unwrap();
        assert_eq!(
            active.check_extendable(&user("bob", &[])).unwrap_err(),
            DomainError::NotRequester
        );
        let ext = active
            .extend_by(&RequestId::from_random(7), Span::from_secs(1800), t0())
            .unwrap();
        assert_eq!(ext.request.state.name(), "active");
        assert_eq!(ext.effect, None);
        assert_eq!(
            ext.request.state.window().unwrap().ends_at,
            t0() + Duration::minutes(90)
        );
    }

    #[test]
    fn an_apply_arriving_after_revocation_changes_nothing() {
        let alice = user("alice", &["sre"]);
        let c = Request::create(new_request(None, false), &alice, &n("e"), None, t0()).unwrap();
        let ending = c
            .request
            .revoke(&alice, Comment::default(), t0())
            .unwrap()
            .request;
        assert!(ending.on_applied(t0()).is_none());
    }

    #[test]
    fn an_auto_approved_request_is_granted_at_once_and_names_its_rule() {
        let alice = user("alice", &["sre"]);
        let auto = AutoApproval {
            rule: n("on-call"),
            policy: n("prod-dba"),
        };
        let c = Request::create_with(
            new_request(None, false),
            &alice,
            &n("e"),
            Some(&requirement()),
            Some(auto.clone()),
            t0(),
        )
        .unwrap();
        assert!(matches!(c.request.state, State::Approved { .. }));
        assert_eq!(c.effect, Some(Effect::Apply));
        assert_eq!(c.event.action, Action::RequestCreated);
        assert_eq!(
            c.event.details["auto_approval"],
            serde_json::json!({"rule": "on-call", "policy": "prod-dba"})
        );
        // Never for break-glass: it stays a break-glass grant awaiting review.
        let bg = Request::create_with(
            new_request(None, true),
            &alice,
            &n("e"),
            Some(&requirement()),
            Some(auto),
            t0(),
        )
        .unwrap();
        assert!(bg.event.details.get("auto_approval").is_none());
        assert_eq!(bg.request.review, Review::Awaiting);
    }

    #[test]
    fn escalation_happens_once_and_lets_the_fallback_approvers_approve() {
        let mut req = requirement();
        req.escalate_to = vec![crate::principal::Subject::parse("group:leads").unwrap()];
        let lena = user("lena", &["leads"]);
        let before = pending()
            .approve(
                &lena,
                &req.clone().with_escalation(false),
                Comment::default(),
                t0(),
            )
            .unwrap_err();
        assert_eq!(before, DomainError::NotApprover);
        // The pending timeout of orders/writer is 1h.
        let at = t0() + Duration::minutes(30);
        let escalated = pending().escalate(&req, at).unwrap();
        assert_eq!(escalated.event.action, Action::RequestEscalated);
        assert_eq!(
            escalated.event.details["escalate_to"],
            serde_json::json!(["group:leads"])
        );
        assert_eq!(escalated.request.escalated_at, Some(at));
        assert!(escalated.request.clone().escalate(&req, at).is_none());
        let r = escalated.request;
        let widened = req.clone().with_escalation(r.escalated_at.is_some());
        let once = r.approve(&lena, &widened, Comment::default(), at).unwrap();
        assert_eq!(once.event.action, Action::ApprovalRecorded);
        // Nothing to remind of or escalate once the request is decided or expired.
        let expired = t0() + Duration::hours(4);
        assert!(pending().remind(&req, expired).is_none());
        assert!(pending().escalate(&req, expired).is_none());
        let reminder = pending().remind(&req, t0()).unwrap();
        assert_eq!(reminder.action, Action::RequestReminded);
        assert!(reminder.details["approvers"].as_array().unwrap().len() >= 2);
    }

    #[test]
    fn requests_stored_before_escalation_existed_still_load() {
        let mut doc = serde_json::to_value(pending()).unwrap();
        doc.as_object_mut().unwrap().remove("escalated_at");
        let back: Request = serde_json::from_value(doc).unwrap();
        assert_eq!(back.escalated_at, None);
    }
}
