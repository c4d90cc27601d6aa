//! The refusals the domain can give. Each carries a stable machine-readable
//! code (the API returns it verbatim, scripts match on it) and a message a
//! person understands. The HTTP status is decided in one place in the server.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// A value failed to parse (bad duration, empty justification, ...).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },

    #[error("unknown target \"{0}\"")]
    UnknownTarget(String),
    #[error("unknown resource \"{resource}\" on target \"{target}\"")]
    UnknownResource { target: String, resource: String },
    #[error("unknown role \"{role}\" on target \"{target}\"")]
    UnknownRole { target: String, role: String },
    /// The resource exists but access is not given on it (an OU, or the
    /// organization's management account); the reason says why.
    #[error("no access is granted on {target}/{resource}: {reason}")]
    NotGrantable {
        target: String,
        resource: String,
        reason: String,
    },

    /// No eligibility (valid now) covers this user, resource and role.
    #[error("you are not eligible for role \"{role}\" on {target}/{resource}")]
    NotEligible {
        target: String,
        resource: String,
        role: String,
    },
    #[error("requested duration {requested} exceeds the maximum of {maximum} for this role")]
    DurationTooLong { requested: String, maximum: String },
    #[error("requested duration {requested} is below the minimum of {minimum}")]
    DurationTooShort { requested: String, minimum: String },
    #[error("a ticket reference is required for this role")]
    TicketRequired,
    /// The ticket reference does not have the form the eligibility asks
    /// for (`ticket_pattern`).
    #[error("ticket \"{ticket}\" does not match the required form {pattern}")]
    TicketMismatch { ticket: String, pattern: String },
    /// The ticket system answered, and the ticket is not open.
    #[error("ticket \"{ticket}\" is not open in {system} (status: {status}); access needs an open ticket")]
    TicketNotOpen {
        system: String,
        ticket: String,
        status: String,
    },
    /// The ticket system does not know the ticket (HTTP 404).
    #[error("ticket \"{ticket}\" does not exist in {system}")]
    TicketUnknown { system: String, ticket: String },
    /// The ticket system could not confirm the ticket (unreachable, timed
    /// out, an error or an answer elevate cannot read). Deny by default:
    /// an unconfirmed ticket is no ticket.
    #[error("the ticket system {system} could not confirm ticket \"{ticket}\" ({reason}); try again later")]
    TicketSystemUnavailable {
        system: String,
        ticket: String,
        reason: String,
    },
    #[error("break-glass is not allowed for this role")]
    BreakGlassNotAllowed,
    #[error("a break-glass request starts at once; it cannot be scheduled")]
    BreakGlassScheduled,
    #[error("the requested start {0} is in the past")]
    StartInPast(String),
    #[error("the requested start is too far in the future (at most {0} ahead)")]
    StartTooFar(String),
    /// Deny by default: a request that needs approval but has nobody who
    /// could approve it is refused at creation rather than left to expire.
    #[error("no approval policy covers this resource and role, so nobody could approve it")]
    NoApprovalPolicy,

    #[error("you cannot approve or reject your own request")]
    SelfApproval,
    #[error("you are not an approver for this request")]
    NotApprover,
    #[error("you have already approved this request")]
    AlreadyApproved,
    #[error("only the requester can do this")]
    NotRequester,
    #[error("you are not allowed to do this")]
    Forbidden,
    #[error("the request is {state}; {action} is not possible")]
    InvalidState { state: String, action: &'static str },
    #[error("an extension of this grant is already pending ({0})")]
    ExtensionPending(String),
    #[error("this grant has no break-glass review to acknowledge")]
    NothingToAcknowledge,
    /// The caller must sign in again, strongly and recently (RFC 9470).
    #[error("a fresh multi-factor sign-in is required: {reason}")]
    StepUpRequired {
        reason: String,
        /// Space-separated `acr_values` to ask the provider for.
        acr_values: String,
        max_age_secs: u64,
    },
}

impl DomainError {
    /// Stable code for clients; never change an existing one.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Invalid { .. } => "invalid_input",
            DomainError::UnknownTarget(_) => "unknown_target",
            DomainError::UnknownResource { .. } => "unknown_resource",
            DomainError::UnknownRole { .. } => "unknown_role",
            DomainError::NotGrantable { .. } => "not_grantable",
            DomainError::NotEligible { .. } => "not_eligible",
            DomainError::DurationTooLong { .. } => "duration_too_long",
            DomainError::DurationTooShort { .. } => "duration_too_short",
            DomainError::TicketRequired => "ticket_required",
            DomainError::TicketMismatch { .. } => "ticket_mismatch",
            DomainError::TicketNotOpen { .. } => "ticket_not_open",
            DomainError::TicketUnknown { .. } => "ticket_unknown",
            DomainError::TicketSystemUnavailable { .. } => "ticket_system_unavailable",
            DomainError::BreakGlassNotAllowed => "break_glass_not_allowed",
            DomainError::BreakGlassScheduled => "break_glass_scheduled",
            DomainError::StartInPast(_) => "start_in_past",
            DomainError::StartTooFar(_) => "start_too_far",
            DomainError::NoApprovalPolicy => "no_approval_policy",
            DomainError::SelfApproval => "self_approval",
            DomainError::NotApprover => "not_approver",
            DomainError::AlreadyApproved => "already_approved",
            DomainError::NotRequester => "not_requester",
            DomainError::Forbidden => "forbidden",
            DomainError::InvalidState { .. } => "invalid_state",
            DomainError::ExtensionPending(_) => "extension_pending",
            DomainError::NothingToAcknowledge => "nothing_to_acknowledge",
            DomainError::StepUpRequired { .. } => "step_up_required",
        }
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        DomainError::Invalid {
            field,
            message: message.into(),
        }
    }
}
