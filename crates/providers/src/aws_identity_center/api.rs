//! The sso-admin calls that change or list account assignments, behind a
//! trait so that tests can wrap the real client ([`super::faults`]), and
//! the one error type every AWS call of this target is reduced to.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_ssoadmin::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ssoadmin::types::{
    AccountAssignmentOperationStatus, PrincipalType, StatusValues, TargetType,
};

use crate::ProviderError;

/// What an AWS call answered instead of a result: AWS's error code and
/// message, or (no code) what kept the call from reaching AWS. Holds no
/// secret: the request's signature is never part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwsError {
    /// The AWS operation, e.g. `CreateAccountAssignment`.
    pub(crate) operation: &'static str,
    /// AWS's error code; `None` when the call never got an answer.
    pub(crate) code: Option<String>,
    pub(crate) message: String,
}

/// Codes AWS services use for "slow down" (sso-admin and identitystore
/// say `ThrottlingException`, Organizations `TooManyRequestsException`).
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "TooManyRequests",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
];

/// Codes that say another change is running where this one wants to go
/// (AWS makes one assignment change per account at a time).
const CONFLICT_CODES: &[&str] = &["ConflictException", "ConcurrentModificationException"];

/// Codes that say AWS itself failed; the same call later may well
/// succeed.
const TRANSIENT_CODES: &[&str] = &[
    "InternalServerException",
    "InternalFailure",
    "ServiceException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

impl AwsError {
    pub(crate) fn from_sdk<E, R>(operation: &'static str, error: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        match error.code() {
            Some(code) => AwsError {
                operation,
                code: Some(code.to_owned()),
                message: error.message().unwrap_or_default().to_owned(),
            },
            None => AwsError {
                operation,
                code: None,
                message: DisplayErrorContext(error).to_string(),
            },
        }
    }

    /// An answer AWS should not have given (a field it documents as
    /// always present is missing).
    pub(crate) fn malformed(operation: &'static str, what: &str) -> Self {
        AwsError {
            operation,
            code: None,
            message: format!("AWS answered {operation} without {what}"),
        }
    }

    pub(crate) fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub(crate) fn is_throttling(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|code| THROTTLING_CODES.contains(&code))
    }

    pub(crate) fn is_conflict(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|code| CONFLICT_CODES.contains(&code))
    }

    /// Throttling, AWS's own failures and calls that never got an answer
    /// are worth retrying; anything AWS refused on the merits (access
    /// denied, validation, not found) is not. Conflicts are neither: see
    /// the conversion to [`ProviderError`].
    pub(crate) fn is_retryable(&self) -> bool {
        match self.code.as_deref() {
            None => true,
            Some(code) => self.is_throttling() || TRANSIENT_CODES.contains(&code),
        }
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operation = self.operation;
        let message = &self.message;
        match self.code.as_deref() {
            Some(code) if self.is_throttling() => {
                write!(f, "AWS throttled {operation}: {code}: {message}")
            }
            Some(code) if message.is_empty() => write!(f, "AWS refused {operation}: {code}"),
            Some(code) => write!(f, "AWS refused {operation}: {code}: {message}"),
            None => write!(f, "AWS unreachable ({operation}): {message}"),
        }
    }
}

/// A conflict is another change in the same account that AWS is still
/// making: an expected wait (`Busy`), not a fault. Throttling and
/// unreachable endpoints stay `Retryable`: they say something is wrong.
impl From<AwsError> for ProviderError {
    fn from(error: AwsError) -> Self {
        if error.is_conflict() {
            ProviderError::Busy(error.to_string())
        } else if error.is_retryable() {
            ProviderError::Retryable(error.to_string())
        } else {
            ProviderError::Permanent(error.to_string())
        }
    }
}

/// Who an assignment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PrincipalKind {
    User,
    Group,
}

impl PrincipalKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "USER",
            PrincipalKind::Group => "GROUP",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "USER" => Some(PrincipalKind::User),
            "GROUP" => Some(PrincipalKind::Group),
            _ => None,
        }
    }

    fn sdk(self) -> PrincipalType {
        match self {
            PrincipalKind::User => PrincipalType::User,
            PrincipalKind::Group => PrincipalType::Group,
        }
    }

    fn from_sdk(kind: &PrincipalType) -> Option<Self> {
        match kind {
            PrincipalType::User => Some(PrincipalKind::User),
            PrincipalType::Group => Some(PrincipalKind::Group),
            _ => None,
        }
    }
}

/// One account assignment: a principal holding a permission set in an
/// account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AssignmentTarget {
    pub(crate) instance_arn: String,
    pub(crate) account: String,
    pub(crate) permission_set_arn: String,
    pub(crate) principal_type: PrincipalKind,
    pub(crate) principal_id: String,
}

/// A principal found holding a permission set in an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) principal_type: PrincipalKind,
    pub(crate) principal_id: String,
}

/// Where an asynchronous assignment change stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    InProgress,
    Succeeded,
    /// With AWS's reason.
    Failed(String),
}

/// What a create or delete (or asking about one) answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OperationStatus {
    /// The id to ask about the change with.
    pub(crate) request_id: String,
    pub(crate) stage: Stage,
}

/// The sso-admin calls that change assignments. AWS runs these
/// asynchronously: create and delete answer a request id whose status is
/// asked until it is no longer in progress. Listings are here too, so
/// that tests can inject faults into them.
#[async_trait]
pub(crate) trait AssignmentApi: Send + Sync {
    async fn create(&self, target: &AssignmentTarget) -> Result<OperationStatus, AwsError>;
    async fn describe_creation(
        &self,
        instance_arn: &str,
        request_id: &str,
    ) -> Result<OperationStatus, AwsError>;
    async fn delete(&self, target: &AssignmentTarget) -> Result<OperationStatus, AwsError>;
    async fn describe_deletion(
        &self,
        instance_arn: &str,
        request_id: &str,
    ) -> Result<OperationStatus, AwsError>;
    /// Every principal holding the permission set in the account (all
    /// pages).
    async fn list_assignments(
        &self,
        instance_arn: &str,
        account: &str,
        permission_set_arn: &str,
    ) -> Result<Vec<Holder>, AwsError>;
}

/// The real clients.
pub(crate) struct SdkAssignments {
    /// Creates, deletes and asks about changes, with the SDK's retries
    /// off: a throttled change goes back to elevate's job queue, which
    /// retries it with backoff and records each attempt.
    pub(crate) changes: aws_sdk_ssoadmin::Client,
    /// Lists assignments, with the SDK's retries on: a reconciliation
    /// lists every account and should not fail whole on one throttle.
    pub(crate) listings: aws_sdk_ssoadmin::Client,
}

fn operation_status(
    operation: &'static str,
    status: Option<&AccountAssignmentOperationStatus>,
) -> Result<OperationStatus, AwsError> {
    let status = status.ok_or_else(|| AwsError::malformed(operation, "a status"))?;
    let request_id = status
        .request_id()
        .ok_or_else(|| AwsError::malformed(operation, "a request id"))?
        .to_owned();
    let stage = match status.status() {
        Some(StatusValues::Succeeded) => Stage::Succeeded,
        Some(StatusValues::Failed) => Stage::Failed(
            status
                .failure_reason()
                .filter(|reason| !reason.is_empty())
                .unwrap_or("AWS gave no reason")
                .to_owned(),
        ),
        // IN_PROGRESS, or a status this SDK does not know yet: ask again
        // until the poll times out rather than guess an outcome.
        _ => Stage::InProgress,
    };
    Ok(OperationStatus { request_id, stage })
}

#[async_trait]
impl AssignmentApi for SdkAssignments {
    async fn create(&self, target: &AssignmentTarget) -> Result<OperationStatus, AwsError> {
        const OPERATION: &str = "CreateAccountAssignment";
        let answer = self
            .changes
            .create_account_assignment()
            .instance_arn(&target.instance_arn)
            .target_id(&target.account)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(&target.permission_set_arn)
            .principal_type(target.principal_type.sdk())
            .principal_id(&target.principal_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, &e))?;
        operation_status(OPERATION, answer.account_assignment_creation_status())
    }

    async fn describe_creation(
        &self,
        instance_arn: &str,
        request_id: &str,
    ) -> Result<OperationStatus, AwsError> {
        const OPERATION: &str = "DescribeAccountAssignmentCreationStatus";
        let answer = self
            .changes
            .describe_account_assignment_creation_status()
            .instance_arn(instance_arn)
            .account_assignment_creation_request_id(request_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, &e))?;
        operation_status(OPERATION, answer.account_assignment_creation_status())
    }

    async fn delete(&self, target: &AssignmentTarget) -> Result<OperationStatus, AwsError> {
        const OPERATION: &str = "DeleteAccountAssignment";
        let answer = self
            .changes
            .delete_account_assignment()
            .instance_arn(&target.instance_arn)
            .target_id(&target.account)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(&target.permission_set_arn)
            .principal_type(target.principal_type.sdk())
            .principal_id(&target.principal_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, &e))?;
        operation_status(OPERATION, answer.account_assignment_deletion_status())
    }

    async fn describe_deletion(
        &self,
        instance_arn: &str,
        request_id: &str,
    ) -> Result<OperationStatus, AwsError> {
        const OPERATION: &str = "DescribeAccountAssignmentDeletionStatus";
        let answer = self
            .changes
            .describe_account_assignment_deletion_status()
            .instance_arn(instance_arn)
            .account_assignment_deletion_request_id(request_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, &e))?;
        operation_status(OPERATION, answer.account_assignment_deletion_status())
    }

    async fn list_assignments(
        &self,
        instance_arn: &str,
        account: &str,
        permission_set_arn: &str,
    ) -> Result<Vec<Holder>, AwsError> {
        const OPERATION: &str = "ListAccountAssignments";
        let items: Vec<_> = self
            .listings
            .list_account_assignments()
            .instance_arn(instance_arn)
            .account_id(account)
            .permission_set_arn(permission_set_arn)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, &e))?;
        Ok(items
            .iter()
            .filter_map(|assignment| {
                let principal_id = assignment.principal_id()?.to_owned();
                let kind = assignment.principal_type()?;
                let Some(principal_type) = PrincipalKind::from_sdk(kind) else {
                    // AWS knows only users and groups today; a new kind
                    // is not elevate's to manage, but worth a look.
                    tracing::warn!(
                        principal_type = kind.as_str(),
                        %principal_id,
                        account,
                        "an assignment to an unknown kind of principal is left out"
                    );
                    return None;
                };
                Some(Holder {
                    principal_type,
                    principal_id,
                })
            })
            .collect())
    }
}
