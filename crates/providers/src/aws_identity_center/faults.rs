//! Faults injected around the real sso-admin client, for tests (feature
//! `faults`, off in the server's build).
//!
//! This exists because moto, the AWS emulator the tests run against,
//! never produces the paths that matter most on AWS: its assignment
//! changes succeed at once (never `IN_PROGRESS`, never `FAILED`), and it
//! never throttles or reports a conflict. [`Faults`] is a script of such
//! answers; the provider built by
//! [`super::AwsIdentityCenter::with_faults`] consults it before (and
//! sometimes after) each real call, so everything else (the requests,
//! the state in moto) stays real.
//!
//! Like AWS and unlike moto, a wrapped client's create and delete answer
//! `IN_PROGRESS`, so the provider always asks for the status at least once
//! and status faults are reached as they would be on AWS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::api::{AssignmentApi, AssignmentTarget, AwsError, Holder, OperationStatus, Stage};

/// An sso-admin call the provider makes to change or list assignments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Create,
    Delete,
    DescribeCreation,
    DescribeDeletion,
    ListAssignments,
}

impl Call {
    fn operation(self) -> &'static str {
        match self {
            Call::Create => "CreateAccountAssignment",
            Call::Delete => "DeleteAccountAssignment",
            Call::DescribeCreation => "DescribeAccountAssignmentCreationStatus",
            Call::DescribeDeletion => "DescribeAccountAssignmentDeletionStatus",
            Call::ListAssignments => "ListAccountAssignments",
        }
    }
}

/// A script of faults, shared between a test and the provider it built.
/// Each fault is used up by the call it applies to.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    throttles: HashMap<Call, usize>,
    conflicts: HashMap<Call, usize>,
    in_progress: usize,
    failed_creation: Option<String>,
    failed_deletion: Option<String>,
    calls: HashMap<Call, usize>,
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock left a usable script.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `times` calls of `call` fail with `ThrottlingException`.
    pub fn throttle(&self, call: Call, times: usize) {
        *self.state().throttles.entry(call).or_default() += times;
    }

    /// The next `times` calls of `call` fail with `ConflictException`.
    pub fn conflict(&self, call: Call, times: usize) {
        *self.state().conflicts.entry(call).or_default() += times;
    }

    /// The next `times` status questions (creation or deletion) answer
    /// `IN_PROGRESS` without asking moto.
    pub fn in_progress(&self, times: usize) {
        self.state().in_progress += times;
    }

    /// The next creation status answers `FAILED` with `reason`; the
    /// assignment moto made is deleted, as if AWS had made none.
    pub fn fail_next_creation(&self, reason: &str) {
        self.state().failed_creation = Some(reason.to_owned());
    }

    /// The next deletion status answers `FAILED` with `reason` (moto has
    /// deleted the assignment all the same).
    pub fn fail_next_deletion(&self, reason: &str) {
        self.state().failed_deletion = Some(reason.to_owned());
    }

    /// How many times `call` was made, faulted or not.
    pub fn calls(&self, call: Call) -> usize {
        self.state().calls.get(&call).copied().unwrap_or(0)
    }

    /// Counts the call and answers the throttle or conflict scripted for
    /// it, if any.
    fn enter(&self, call: Call) -> Result<(), AwsError> {
        let mut state = self.state();
        *state.calls.entry(call).or_default() += 1;
        let injected = |code: &str, message: &str| AwsError {
            operation: call.operation(),
            code: Some(code.to_owned()),
            message: format!("{message} (injected)"),
        };
        if let Some(left) = state.throttles.get_mut(&call).filter(|left| **left > 0) {
            *left -= 1;
            return Err(injected("ThrottlingException", "Rate exceeded"));
        }
        if let Some(left) = state.conflicts.get_mut(&call).filter(|left| **left > 0) {
            *left -= 1;
            return Err(injected(
                "ConflictException",
                "another assignment change is in progress for this account",
            ));
        }
        Ok(())
    }

    /// True when the next status question is scripted to be in progress.
    fn take_in_progress(&self) -> bool {
        let mut state = self.state();
        if state.in_progress > 0 {
            state.in_progress -= 1;
            true
        } else {
            false
        }
    }
}

/// The real client, with [`Faults`] in front of it.
pub(crate) struct Faulty {
    pub(crate) inner: Arc<dyn AssignmentApi>,
    pub(crate) faults: Arc<Faults>,
    /// What each creation request was for, so that a creation scripted to
    /// fail can take back what moto made.
    creations: Mutex<HashMap<String, AssignmentTarget>>,
}

impl Faulty {
    pub(crate) fn new(inner: Arc<dyn AssignmentApi>, faults: Arc<Faults>) -> Self {
        Faulty {
            inner,
            faults,
            creations: Mutex::default(),
        }
    }

    fn creations(&self) -> MutexGuard<'_, HashMap<String, AssignmentTarget>> {
        self.creations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// AWS answers a create or delete before the change is made.
fn as_aws_answers(status: OperationStatus) -> OperationStatus {
    OperationStatus {
        stage: Stage::InProgress,
        ..status
    }
}

fn in_progress(request_id: &str) -> OperationStatus {
    OperationStatus {
        request_id: request_id.to_owned(),
        stage: Stage::InProgress,
    }
}

#[async_trait]
impl AssignmentApi for Faulty {
    async fn create(&self, target: &AssignmentTarget) -> Result<OperationStatus, AwsError> {
        self.faults.enter(Call::Create)?;
        let status = self.inner.create(target).await?;
        self.creations()
            .insert(status.request_id.clone(), target.clone());
        Ok(as_aws_answers(status))
    }

    async fn describe_creation(
        &self,
        instance_arn: &str,
        request_id: &str,
    ) -> Result<OperationStatus, AwsError> {
        self.faults.enter(Call::DescribeCreation)?;
        if self.faults.take_in_progress() {
            return Ok(in_progress(request_id));
        }
        let failure = self.faults.state().failed_creation.take();
        if let Some(reason) = failure {
            let made = self.creations().remove(request_id);
            if let Some(target) = made {
                self.inner.delete(&target).await?;
            }
            return Ok(OperationStatus {
                request_id: request_id.to_owned(),
                stage: Stage::Failed(reason),
            });
        }
        self.inner.describe_creation(instance_arn, request_id).await
    }

    async fn delete(&self, target: &AssignmentTarget) -> Result<OperationStatus, AwsError> {
        self.faults.enter(Call::Delete)?;
        Ok(as_aws_answers(self.inner.delete(target).await?))
    }

    async fn describe_deletion(
        &self,
        instance_arn: &str,
        request_id: &str,
    ) -> Result<OperationStatus, AwsError> {
        self.faults.enter(Call::DescribeDeletion)?;
        if self.faults.take_in_progress() {
            return Ok(in_progress(request_id));
        }
        let failure = self.faults.state().failed_deletion.take();
        if let Some(reason) = failure {
            return Ok(OperationStatus {
                request_id: request_id.to_owned(),
                stage: Stage::Failed(reason),
            });
        }
        self.inner.describe_deletion(instance_arn, request_id).await
    }

    async fn list_assignments(
        &self,
        instance_arn: &str,
        account: &str,
        permission_set_arn: &str,
    ) -> Result<Vec<Holder>, AwsError> {
        self.faults.enter(Call::ListAssignments)?;
        self.inner
            .list_assignments(instance_arn, account, permission_set_arn)
            .await
    }
}
