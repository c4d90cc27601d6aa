//! The `aws-identity-center` target: a grant is an IAM Identity Center
//! account assignment (a user holding a permission set in an AWS
//! account).
//!
//! - Resources are the Organization's accounts, found with their OUs and
//!   tags by [`Provider::discover`]; roles are the instance's permission
//!   sets, by name. The management account is refused unless the config
//!   allows it: access there reaches the whole organization.
//! - A grant's user is the Identity Store user with the requester's
//!   e-mail address (or, for a requester without one, user name),
//!   ignoring ASCII case, found in a listing of the store kept for a few
//!   minutes and confirmed with one `DescribeUser` (see
//!   [`directory::Directory`]). When the request is made, the user id and the
//!   permission set's ARN are recorded with the grant
//!   ([`GrantSpec::account`], `"{user_id} {permission_set_arn}"`), so
//!   that its removal reaches the assignment that was made whatever
//!   happens to the permission set's name or the config meanwhile.
//! - AWS changes assignments asynchronously: create and delete answer a
//!   request id whose status is polled every `poll_interval`; a call
//!   waits (for the account, for AWS) at most `poll_timeout` in all, then
//!   answers [`ProviderError::Busy`] and the job queue tries again.
//!   Changes in one account are made one at a time (AWS runs one per
//!   account and answers `ConflictException` otherwise).
//! - A creation not seen to finish is remembered (in memory), and the
//!   next apply or remove of that assignment waits for it first: a
//!   removal that looked only at the assignments listed would miss one
//!   AWS is still creating, which would then outlive its grant. Only
//!   this process knows of them: after a restart, or on another replica,
//!   a removal cannot wait for a creation it did not start.
//! - The sso-admin client that changes assignments has the SDK's retries
//!   off: a throttled change comes back to the job queue, which retries
//!   with backoff and records every attempt. Listings and other reads
//!   (Organizations, Identity Store, permission sets) keep the SDK's
//!   retries, so one throttle does not fail a whole reconciliation.
//!
//! Submodules: [`api`] (the assignment calls and AWS errors),
//! `faults` (injected faults for tests; feature `faults`), [`discovery`],
//! [`directory`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::SdkConfig;
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::{OnceCell, OwnedMutexGuard};
use tokio::time::Instant;

use crate::identity_center::IdentityCenterConfig;
use crate::{Assignment, GrantSpec, Inventory, Presence, Provider, ProviderError};

mod api;
mod directory;
mod discovery;
#[cfg(feature = "faults")]
pub mod faults;

use api::{AssignmentApi, AssignmentTarget, AwsError, OperationStatus, PrincipalKind, Stage};
use directory::UserMatch;
use discovery::ResourceKind;

/// AWS calls are cut off after this; well below the job lease and an
/// HTTP client's patience.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times a listing of assignments is tried when AWS throttles
/// it or fails (the SDK's standard retries, with backoff).
const LISTING_ATTEMPTS: u32 = 5;

/// How many per-item AWS calls (tags, permission set names, assignment
/// listings, principal names) run at once: enough to make a large
/// organization quick, few enough to stay under AWS's request rates.
const CONCURRENCY: usize = 8;

/// Shown when elevate is asked to grant in the management account, and
/// recorded with that reason in a discovered inventory.
const MANAGEMENT_ACCOUNT_REFUSED: &str = "the organization's management account: elevate grants \
     there only with allow_management_account = true";

pub struct AwsIdentityCenter {
    config: IdentityCenterConfig,
    organizations: aws_sdk_organizations::Client,
    identity_store: aws_sdk_identitystore::Client,
    /// For reads (instances, permission sets), with the SDK's retries.
    sso_admin: aws_sdk_ssoadmin::Client,
    /// Assignment changes and listings (see [`api::SdkAssignments`]); in
    /// tests possibly wrapped in `faults::Faulty`.
    assignments: Arc<dyn AssignmentApi>,
    /// The instance and its Identity Store, asked once (they do not
    /// change while elevate runs).
    instance: OnceCell<Instance>,
    /// The Organization's management account (it never changes), asked
    /// once, or read from an adopted inventory. Refusals check it
    /// besides the adopted inventory, which may be a cache from when the
    /// config allowed it.
    management_account: OnceCell<String>,
    /// What the last adopted inventory says.
    adopted: RwLock<Adopted>,
    /// One lock per AWS account: AWS runs one assignment change per
    /// account at a time, and a second one only earns a conflict.
    account_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Creations elevate asked AWS for and has not seen succeed or fail
    /// (the call ended first): request ids by assignment. Apply waits
    /// for them rather than create again; remove waits for them before
    /// it looks, so that a creation cannot finish after its removal.
    /// In memory: a restart forgets them.
    pending_creations: Mutex<HashMap<AssignmentTarget, BTreeSet<String>>>,
    /// The Identity Store's users, listed at most every few minutes.
    directory: directory::Directory,
}

#[derive(Debug, Clone)]
struct Instance {
    arn: String,
    identity_store_id: String,
}

#[derive(Debug, Default)]
struct Adopted {
    /// Role name → permission set ARN.
    roles: BTreeMap<String, String>,
    /// Account → why an adopted inventory says elevate does not grant
    /// there. Not the management account: the config decides about it
    /// now ([`AwsIdentityCenter::refusal`]), whatever it said when the
    /// inventory was discovered.
    refused: BTreeMap<String, String>,
    /// Every account of the organization (refused ones included).
    accounts: BTreeSet<String>,
}

/// Why elevate does not grant in an account.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// The organization's management account, which the config does not
    /// allow.
    ManagementAccount,
    /// Not among the accounts of the last discovery.
    NotInOrganization,
    /// A reason an adopted inventory gives.
    Recorded(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ManagementAccount => f.write_str(MANAGEMENT_ACCOUNT_REFUSED),
            Refusal::NotInOrganization => {
                f.write_str("not an active account of the organization as last discovered")
            }
            Refusal::Recorded(reason) => f.write_str(reason),
        }
    }
}

impl Refusal {
    fn error(&self, account: &str) -> ProviderError {
        ProviderError::Permanent(format!("AWS account {account} is {self}"))
    }
}

/// What a grant records of its account on this target
/// ([`GrantSpec::account`]): `"{user_id} {permission_set_arn}"`. Neither
/// part contains a space (AWS's patterns for both forbid it). Grants
/// recorded before the ARN was hold the user id alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordedAccount<'a> {
    user_id: &'a str,
    permission_set_arn: Option<&'a str>,
}

impl<'a> RecordedAccount<'a> {
    fn parse(account: &'a str) -> Self {
        match account.trim().split_once(' ') {
            Some((user_id, arn)) => RecordedAccount {
                user_id,
                permission_set_arn: Some(arn.trim()).filter(|arn| !arn.is_empty()),
            },
            None => RecordedAccount {
                user_id: account.trim(),
                permission_set_arn: None,
            },
        }
    }

    fn of(grant: &'a GrantSpec) -> Option<Self> {
        grant.account.as_deref().map(RecordedAccount::parse)
    }
}

impl fmt::Display for RecordedAccount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.permission_set_arn {
            Some(arn) => write!(f, "{} {arn}", self.user_id),
            None => f.write_str(self.user_id),
        }
    }
}

/// Which way an assignment changes; decides the calls and the words.
#[derive(Debug, Clone, Copy)]
enum Change {
    Creation,
    Deletion,
}

/// How an assignment change ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    /// With AWS's reason.
    Failed(String),
}

/// What every client shares: region, credentials, endpoint, time-outs.
async fn sdk_config(config: &IdentityCenterConfig) -> SdkConfig {
    crate::aws_common::sdk_config(
        &config.region,
        config.endpoint_url.as_deref(),
        config.keys.as_ref(),
        CALL_TIMEOUT,
    )
    .await
}

fn sso_admin_client(sdk: &SdkConfig, retries: RetryConfig) -> aws_sdk_ssoadmin::Client {
    let config = aws_sdk_ssoadmin::config::Builder::from(sdk)
        .retry_config(retries)
        .build();
    aws_sdk_ssoadmin::Client::from_conf(config)
}

/// The clients for assignments: changes tried once per call, so that
/// every throttle reaches elevate's job queue, which retries with
/// backoff and records each attempt; listings retried by the SDK.
fn assignment_clients(sdk: &SdkConfig) -> api::SdkAssignments {
    api::SdkAssignments {
        changes: sso_admin_client(sdk, RetryConfig::disabled()),
        listings: sso_admin_client(
            sdk,
            RetryConfig::standard().with_max_attempts(LISTING_ATTEMPTS),
        ),
    }
}

impl AwsIdentityCenter {
    /// Builds the clients. Calls nothing on AWS: the instance is looked
    /// up when first needed, so elevate starts while AWS is unreachable.
    pub async fn new(config: IdentityCenterConfig) -> Result<Self, ProviderError> {
        let sdk = sdk_config(&config).await;
        let assignments = Arc::new(assignment_clients(&sdk));
        Ok(Self::with_assignments(config, &sdk, assignments))
    }

    /// Same, with a fault-injecting wrapper around the real assignment
    /// client (tests; see `faults`).
    #[cfg(feature = "faults")]
    pub async fn with_faults(
        config: IdentityCenterConfig,
        faults: Arc<faults::Faults>,
    ) -> Result<Self, ProviderError> {
        let sdk = sdk_config(&config).await;
        let real = Arc::new(assignment_clients(&sdk));
        let wrapped = Arc::new(faults::Faulty::new(real, faults));
        Ok(Self::with_assignments(config, &sdk, wrapped))
    }

    fn with_assignments(
        config: IdentityCenterConfig,
        sdk: &SdkConfig,
        assignments: Arc<dyn AssignmentApi>,
    ) -> Self {
        Self {
            organizations: aws_sdk_organizations::Client::new(sdk),
            identity_store: aws_sdk_identitystore::Client::new(sdk),
            sso_admin: aws_sdk_ssoadmin::Client::new(sdk),
            assignments,
            instance: OnceCell::new(),
            management_account: OnceCell::new(),
            adopted: RwLock::default(),
            account_locks: Mutex::default(),
            pending_creations: Mutex::default(),
            directory: directory::Directory::default(),
            config,
        }
    }

    /// How many times the Identity Store has been listed to find users
    /// (tests, diagnostics): lookups share a listing for a few minutes.
    pub fn directory_listings(&self) -> u64 {
        self.directory.listings()
    }

    fn adopted(&self) -> RwLockReadGuard<'_, Adopted> {
        // Adopted is replaced whole, so a panic elsewhere cannot have
        // left it half-written.
        self.adopted.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configured instance, or the only one there is.
    async fn instance(&self) -> Result<&Instance, ProviderError> {
        self.instance
            .get_or_try_init(|| async {
                if let (Some(arn), Some(store)) =
                    (&self.config.instance_arn, &self.config.identity_store_id)
                {
                    return Ok(Instance {
                        arn: arn.clone(),
                        identity_store_id: store.clone(),
                    });
                }
                let instances: Vec<_> = self
                    .sso_admin
                    .list_instances()
                    .into_paginator()
                    .items()
                    .send()
                    .collect::<Result<_, _>>()
                    .await
                    .map_err(|e| AwsError::from_sdk("ListInstances", &e))?;
                let found: Vec<(String, String)> = instances
                    .iter()
                    .filter_map(|i| {
                        Some((
                            i.instance_arn()?.to_owned(),
                            i.identity_store_id()?.to_owned(),
                        ))
                    })
                    .collect();
                let (arn, store) = match &self.config.instance_arn {
                    Some(wanted) => found
                        .into_iter()
                        .find(|(arn, _)| arn == wanted)
                        .ok_or_else(|| {
                            ProviderError::Permanent(format!(
                                "the IAM Identity Center instance {wanted} is not among those \
                                 ListInstances shows"
                            ))
                        })?,
                    None => match <[_; 1]>::try_from(found) {
                        Ok([only]) => only,
                        Err(found) if found.is_empty() => {
                            return Err(ProviderError::Permanent(
                                "no IAM Identity Center instance in this account and region"
                                    .to_owned(),
                            ))
                        }
                        Err(found) => {
                            let arns: Vec<&str> = found.iter().map(|(a, _)| a.as_str()).collect();
                            return Err(ProviderError::Permanent(format!(
                                "several IAM Identity Center instances ({}): set instance_arn",
                                arns.join(", ")
                            )));
                        }
                    },
                };
                Ok(Instance {
                    arn,
                    identity_store_id: self.config.identity_store_id.clone().unwrap_or(store),
                })
            })
            .await
    }

    /// The permission set ARN of `role`, from the adopted inventory.
    fn permission_set(&self, role: &str) -> Result<String, ProviderError> {
        self.adopted().roles.get(role).cloned().ok_or_else(|| {
            ProviderError::Permanent(format!(
                "the role \"{role}\" is not a permission set this target offers \
                 (unknown, filtered out, or not discovered yet)"
            ))
        })
    }

    /// The Organization's management account.
    async fn management_account(&self) -> Result<&str, ProviderError> {
        let id = self
            .management_account
            .get_or_try_init(|| discovery::management_account(&self.organizations))
            .await?;
        Ok(id)
    }

    /// Why elevate does not grant in `account`, if it does not.
    async fn refusal(&self, account: &str) -> Result<Option<Refusal>, ProviderError> {
        if let Some(reason) = self.adopted().refused.get(account) {
            return Ok(Some(Refusal::Recorded(reason.clone())));
        }
        if self.config.allow_management_account {
            return Ok(None);
        }
        let management = self.management_account().await?;
        Ok((management == account).then_some(Refusal::ManagementAccount))
    }

    /// Refuses to change anything in an account elevate does not grant
    /// in.
    async fn refuse_if_refused(&self, account: &str) -> Result<(), ProviderError> {
        match self.refusal(account).await? {
            Some(refusal) => Err(refusal.error(account)),
            None => Ok(()),
        }
    }

    /// The Identity Store user id of the grant's user (see
    /// [`directory::choose`]).
    async fn find_user(&self, grant: &GrantSpec) -> Result<String, ProviderError> {
        if grant.email_unverified {
            // The user name alone would be weaker evidence than the
            // address this person would otherwise be matched by.
            return Err(ProviderError::Permanent(format!(
                "the identity provider has not verified the e-mail address of \"{}\", and the \
                 IAM Identity Center user is found by a verified one; ask an administrator",
                grant.user
            )));
        }
        let instance = self.instance().await?;
        let store = &instance.identity_store_id;
        let found = self
            .directory
            .find_user(
                &self.identity_store,
                store,
                &grant.user,
                grant.email.as_deref(),
            )
            .await?;
        let who = format!("\"{}\"{}", grant.user, email_suffix(grant));
        match found {
            UserMatch::One(id) => Ok(id),
            UserMatch::None => Err(ProviderError::Permanent(format!(
                "no user {who} in the IAM Identity Center identity store {store}; ask an \
                 administrator to provision them"
            ))),
            UserMatch::OtherEmail { user_name } => Err(ProviderError::Permanent(format!(
                "the identity store user \"{user_name}\" has another e-mail address; ask an \
                 administrator"
            ))),
            UserMatch::NoEmail { user_name } => Err(ProviderError::Permanent(format!(
                "the identity store user \"{user_name}\" has no e-mail address to tell that \
                 it is {who}; ask an administrator"
            ))),
            UserMatch::Several(found) => {
                // Who the others are is for administrators: the message
                // goes to the requester.
                tracing::warn!(
                    user = %grant.user,
                    email = grant.email.as_deref().unwrap_or(""),
                    identity_store = %store,
                    matches = %found.join(", "),
                    "several Identity Store users match an elevate user; none is granted"
                );
                Err(ProviderError::Permanent(format!(
                    "several users in the IAM Identity Center identity store match the user \
                     name or e-mail address of {who}; an administrator must resolve this"
                )))
            }
        }
    }

    /// The assignment a grant stands for: the user and permission set
    /// recorded with it, or (grants recorded before either was) the ones
    /// found now.
    async fn target_of(&self, grant: &GrantSpec) -> Result<AssignmentTarget, ProviderError> {
        let (principal_id, permission_set_arn) = match RecordedAccount::of(grant) {
            Some(RecordedAccount {
                user_id,
                permission_set_arn: Some(arn),
            }) => (user_id.to_owned(), arn.to_owned()),
            Some(RecordedAccount {
                user_id,
                permission_set_arn: None,
            }) => (user_id.to_owned(), self.permission_set(&grant.role)?),
            None => {
                let arn = self.permission_set(&grant.role)?;
                (self.find_user(grant).await?, arn)
            }
        };
        let instance = self.instance().await?;
        Ok(AssignmentTarget {
            instance_arn: instance.arn.clone(),
            account: grant.resource.clone(),
            permission_set_arn,
            principal_type: PrincipalKind::User,
            principal_id,
        })
    }

    /// Whether the target's principal holds its permission set now.
    async fn is_present(&self, target: &AssignmentTarget) -> Result<bool, ProviderError> {
        let holders = self
            .assignments
            .list_assignments(
                &target.instance_arn,
                &target.account,
                &target.permission_set_arn,
            )
            .await?;
        Ok(holders.iter().any(|holder| {
            holder.principal_id == target.principal_id
                && holder.principal_type == target.principal_type
        }))
    }

    /// Waits (until `deadline`) to be the one changing assignments in
    /// `account`.
    async fn lock_account(
        &self,
        account: &str,
        deadline: Instant,
    ) -> Result<OwnedMutexGuard<()>, ProviderError> {
        let lock = {
            let mut locks = self
                .account_locks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            locks.entry(account.to_owned()).or_default().clone()
        };
        tokio::time::timeout_at(deadline, lock.lock_owned())
            .await
            .map_err(|_| {
                ProviderError::Busy(format!(
                    "another assignment change in AWS account {account} is still running; \
                     elevate tries again later"
                ))
            })
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<AssignmentTarget, BTreeSet<String>>> {
        // Each change leaves the map whole, so a panic elsewhere cannot
        // have left it half-written.
        self.pending_creations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn forget_creation(&self, target: &AssignmentTarget, request_id: &str) {
        let mut pending = self.pending();
        if let Some(requests) = pending.get_mut(target) {
            requests.remove(request_id);
            if requests.is_empty() {
                pending.remove(target);
            }
        }
    }

    /// Waits (until `deadline`) for the creations of `target` started
    /// earlier and not seen to finish. Returns AWS's reason when one
    /// failed.
    async fn settle_creations(
        &self,
        target: &AssignmentTarget,
        deadline: Instant,
    ) -> Result<Option<String>, ProviderError> {
        let requests: Vec<String> = self
            .pending()
            .get(target)
            .map(|requests| requests.iter().cloned().collect())
            .unwrap_or_default();
        let mut failure = None;
        for request_id in requests {
            let status = match self
                .assignments
                .describe_creation(&target.instance_arn, &request_id)
                .await
            {
                Ok(status) => status,
                // AWS keeps a status for a while only: one it no longer
                // knows finished long ago (the listing says how).
                Err(error) if error.has_code("ResourceNotFoundException") => {
                    self.forget_creation(target, &request_id);
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            if let Outcome::Failed(reason) = self
                .wait(target, status, Change::Creation, deadline)
                .await?
            {
                failure = Some(reason);
            }
        }
        Ok(failure)
    }

    /// Creates the assignment unless it is there, and waits for AWS.
    async fn create(&self, target: &AssignmentTarget) -> Result<(), ProviderError> {
        let deadline = Instant::now() + self.config.poll_timeout;
        let _one_change_per_account = self.lock_account(&target.account, deadline).await?;
        // An earlier attempt's creation, still running when that attempt
        // ended, is waited for rather than made a second time.
        if let Some(reason) = self.settle_creations(target, deadline).await? {
            return Err(Change::Creation.failed(&reason));
        }
        // Looked at first, so that a repeated apply asks AWS for nothing
        // (moto would even store a second copy).
        if self.is_present(target).await? {
            return Ok(());
        }
        let status = self.assignments.create(target).await?;
        // Remembered before waiting: if this call is cut off, the next
        // apply or remove of the assignment still knows about it.
        self.pending()
            .entry(target.clone())
            .or_default()
            .insert(status.request_id.clone());
        match self
            .wait(target, status, Change::Creation, deadline)
            .await?
        {
            Outcome::Succeeded => Ok(()),
            Outcome::Failed(reason) => Err(Change::Creation.failed(&reason)),
        }
    }

    /// Deletes the assignment if it is there, and waits for AWS.
    async fn delete(&self, target: &AssignmentTarget) -> Result<(), ProviderError> {
        let deadline = Instant::now() + self.config.poll_timeout;
        let _one_change_per_account = self.lock_account(&target.account, deadline).await?;
        // A creation still running would not be listed yet, and would
        // finish after this removal: the access would outlive its grant.
        // A failed one made nothing, which the listing shows.
        self.settle_creations(target, deadline).await?;
        if !self.is_present(target).await? {
            return Ok(());
        }
        let status = match self.assignments.delete(target).await {
            Ok(status) => status,
            Err(error) if error.has_code("ResourceNotFoundException") => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        match self
            .wait(target, status, Change::Deletion, deadline)
            .await?
        {
            Outcome::Succeeded => Ok(()),
            Outcome::Failed(reason) => Err(Change::Deletion.failed(&reason)),
        }
    }

    /// Asks for the change's status until it is done or failed; `Busy`
    /// once `deadline` has passed.
    async fn wait(
        &self,
        target: &AssignmentTarget,
        mut status: OperationStatus,
        change: Change,
        deadline: Instant,
    ) -> Result<Outcome, ProviderError> {
        let instance_arn = &target.instance_arn;
        loop {
            let outcome = match status.stage {
                Stage::Succeeded => Some(Outcome::Succeeded),
                Stage::Failed(reason) => Some(Outcome::Failed(reason)),
                Stage::InProgress => None,
            };
            if let Some(outcome) = outcome {
                if let Change::Creation = change {
                    self.forget_creation(target, &status.request_id);
                }
                return Ok(outcome);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ProviderError::Busy(format!(
                    "AWS IAM Identity Center is still {} the assignment (request {}); \
                     elevate looks again on the next attempt",
                    change.verb(),
                    status.request_id
                )));
            }
            tokio::time::sleep(self.config.poll_interval.min(deadline - now)).await;
            status = match change {
                Change::Creation => {
                    self.assignments
                        .describe_creation(instance_arn, &status.request_id)
                        .await?
                }
                Change::Deletion => {
                    self.assignments
                        .describe_deletion(instance_arn, &status.request_id)
                        .await?
                }
            };
        }
    }
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Creation => "creating",
            Change::Deletion => "deleting",
        }
    }

    /// A failed creation needs someone to fix something (AWS says what);
    /// a failed deletion is retried, since removals never give up.
    fn failed(self, reason: &str) -> ProviderError {
        match self {
            Change::Creation => ProviderError::Permanent(format!(
                "AWS IAM Identity Center could not create the assignment: {reason}"
            )),
            Change::Deletion => ProviderError::Retryable(format!(
                "AWS IAM Identity Center could not delete the assignment: {reason}"
            )),
        }
    }
}

fn email_suffix(grant: &GrantSpec) -> String {
    grant
        .email
        .as_deref()
        .map(|email| format!(" ({email})"))
        .unwrap_or_default()
}

#[async_trait]
impl Provider for AwsIdentityCenter {
    fn kind(&self) -> &'static str {
        "aws-identity-center"
    }

    /// An assignment is an Identity Store user holding a permission set
    /// in an account: two grants of it share it, whatever the request
    /// and whichever elevate user asked. Grants recorded before the user
    /// id or the ARN was fall back to the role or the elevate user name.
    fn grant_key(&self, grant: &GrantSpec) -> String {
        let account = &grant.resource;
        match RecordedAccount::of(grant) {
            Some(RecordedAccount {
                user_id,
                permission_set_arn: Some(arn),
            }) => format!("{account}/{arn}/{user_id}"),
            Some(RecordedAccount {
                user_id,
                permission_set_arn: None,
            }) => format!("{account}/{}/{user_id}", grant.role),
            None => format!("{account}/{}/{}", grant.role, grant.user),
        }
    }

    fn discovers(&self) -> bool {
        true
    }

    /// Refuses what cannot be granted and finds the user, so that the
    /// requester hears at once, not after approval. Records the user id
    /// and the permission set's ARN (see the module docs).
    async fn prepare(&self, grant: &GrantSpec) -> Result<Option<String>, ProviderError> {
        self.refuse_if_refused(&grant.resource).await?;
        if !self.adopted().accounts.contains(&grant.resource) {
            return Err(Refusal::NotInOrganization.error(&grant.resource));
        }
        let permission_set_arn = self.permission_set(&grant.role)?;
        let user_id = self.find_user(grant).await?;
        let recorded = RecordedAccount {
            user_id: &user_id,
            permission_set_arn: Some(&permission_set_arn),
        };
        Ok(Some(recorded.to_string()))
    }

    fn principal_of(&self, account: &str) -> String {
        RecordedAccount::parse(account).user_id.to_owned()
    }

    async fn discover(&self) -> Result<Inventory, ProviderError> {
        let tree = discovery::organization(&self.organizations).await?;
        // Already set means the same value: an Organization's management
        // account never changes.
        let _ = self.management_account.set(tree.management_account.clone());
        let instance = self.instance().await?;
        let sets = discovery::permission_sets(&self.sso_admin, &instance.arn).await?;
        let wanted: BTreeSet<&str> = self
            .config
            .permission_sets
            .iter()
            .map(String::as_str)
            .collect();
        let mut roles = BTreeMap::new();
        for (name, arn) in sets {
            if !wanted.is_empty() && !wanted.contains(name.as_str()) {
                continue;
            }
            if roles.contains_key(&name) {
                tracing::warn!(
                    permission_set = %name,
                    %arn,
                    "two permission sets share a name; the first is offered"
                );
                continue;
            }
            roles.insert(name, arn);
        }
        // A configured name that is missing is a warning, not an error:
        // one deleted permission set should not stop the others from
        // being offered. `validate` reports it too.
        for name in wanted.iter().filter(|name| !roles.contains_key(**name)) {
            tracing::warn!(
                permission_set = %name,
                instance = %instance.arn,
                "a configured permission set does not exist; it is not offered"
            );
        }
        let mut refused = BTreeMap::new();
        if !self.config.allow_management_account {
            refused.insert(
                tree.management_account.clone(),
                Refusal::ManagementAccount.to_string(),
            );
        }
        Ok(Inventory {
            resources: tree.resources,
            roles,
            refused,
        })
    }

    /// A cached inventory may predate the config: its management-account
    /// refusal is not taken over (`refusal` asks the config now); the
    /// account it names is remembered, which saves asking AWS.
    fn adopt(&self, inventory: &Inventory) {
        let management = Refusal::ManagementAccount.to_string();
        let mut refused = BTreeMap::new();
        for (account, reason) in &inventory.refused {
            if *reason == management {
                // Already set means the same value: an Organization's
                // management account never changes.
                let _ = self.management_account.set(account.clone());
            } else {
                refused.insert(account.clone(), reason.clone());
            }
        }
        let adopted = Adopted {
            roles: inventory.roles.clone(),
            refused,
            accounts: inventory
                .resources
                .iter()
                .filter(|r| r.kind == ResourceKind::Account.as_str())
                .map(|r| r.id.clone())
                .collect(),
        };
        *self.adopted.write().unwrap_or_else(PoisonError::into_inner) = adopted;
    }

    /// Lists the assignments of `roles` in every account elevate may
    /// grant in. Refused accounts are left out: elevate does not manage
    /// access there, so nothing there is its to take away.
    async fn assignments(
        &self,
        roles: &[String],
    ) -> Result<Option<Vec<Assignment>>, ProviderError> {
        let instance = self.instance().await?;
        let management = if self.config.allow_management_account {
            None
        } else {
            Some(self.management_account().await?)
        };
        let pairs: Vec<(String, String, String)> = {
            let adopted = self.adopted();
            let sets: Vec<(&String, &String)> = roles
                .iter()
                .filter_map(|role| Some((role, adopted.roles.get(role)?)))
                .collect();
            adopted
                .accounts
                .iter()
                .filter(|account| {
                    !adopted.refused.contains_key(*account) && management != Some(account.as_str())
                })
                .flat_map(|account| {
                    sets.iter()
                        .map(move |(role, arn)| (account.clone(), (*role).clone(), (*arn).clone()))
                })
                .collect()
        };
        let listed: Vec<Vec<(Assignment, PrincipalKind)>> = stream::iter(pairs)
            .map(|(account, role, arn)| async move {
                let holders = self
                    .assignments
                    .list_assignments(&instance.arn, &account, &arn)
                    .await?;
                Ok::<_, AwsError>(
                    holders
                        .into_iter()
                        .map(|holder| {
                            let assignment = Assignment {
                                resource: account.clone(),
                                role: role.clone(),
                                principal_type: holder.principal_type.as_str().to_owned(),
                                principal_id: holder.principal_id,
                                principal_name: None,
                            };
                            (assignment, holder.principal_type)
                        })
                        .collect(),
                )
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let found: Vec<(Assignment, PrincipalKind)> = listed.into_iter().flatten().collect();

        let principals: BTreeSet<(PrincipalKind, String)> = found
            .iter()
            .map(|(assignment, kind)| (*kind, assignment.principal_id.clone()))
            .collect();
        let names: HashMap<(PrincipalKind, String), String> = stream::iter(principals)
            .map(|(kind, id)| async move {
                let name = directory::principal_name(
                    &self.identity_store,
                    &instance.identity_store_id,
                    kind,
                    &id,
                )
                .await;
                name.map(|name| ((kind, id), name))
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(|named| async move { named })
            .collect()
            .await;
        let named = found
            .into_iter()
            .map(|(mut assignment, kind)| {
                assignment.principal_name =
                    names.get(&(kind, assignment.principal_id.clone())).cloned();
                assignment
            })
            .collect();
        Ok(Some(named))
    }

    async fn remove_assignment(&self, assignment: &Assignment) -> Result<(), ProviderError> {
        self.refuse_if_refused(&assignment.resource).await?;
        let principal_type = PrincipalKind::parse(&assignment.principal_type).ok_or_else(|| {
            ProviderError::Permanent(format!(
                "unknown principal type \"{}\" (USER or GROUP)",
                assignment.principal_type
            ))
        })?;
        let permission_set_arn = self.permission_set(&assignment.role)?;
        let instance = self.instance().await?;
        self.delete(&AssignmentTarget {
            instance_arn: instance.arn.clone(),
            account: assignment.resource.clone(),
            permission_set_arn,
            principal_type,
            principal_id: assignment.principal_id.clone(),
        })
        .await
    }

    /// Checked again here, not only in prepare: the config or the
    /// permission sets may have changed between the request and its
    /// approval, and what was approved is the permission set of then.
    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        self.refuse_if_refused(&grant.resource).await?;
        let target = self.target_of(grant).await?;
        let offered = self.permission_set(&grant.role)?;
        if offered != target.permission_set_arn {
            return Err(ProviderError::Permanent(format!(
                "the role \"{}\" is the permission set {offered} now, not {} as when the \
                 request was made; ask again",
                grant.role, target.permission_set_arn
            )));
        }
        self.create(&target).await
    }

    /// Not refused in refused accounts, and not dependent on today's
    /// permission sets: whatever a grant put somewhere must be removable,
    /// whatever the config or AWS's names say now.
    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let target = self.target_of(grant).await?;
        self.delete(&target).await
    }

    async fn check(&self, grant: &GrantSpec) -> Result<Presence, ProviderError> {
        let target = self.target_of(grant).await?;
        Ok(if self.is_present(&target).await? {
            Presence::Present
        } else {
            Presence::Absent
        })
    }

    async fn validate(&self) -> Result<Vec<String>, ProviderError> {
        let mut problems = Vec::new();
        if let Err(e) = self.sso_admin.list_instances().send().await {
            problems.push(AwsError::from_sdk("ListInstances", &e).to_string());
        }
        if let Err(error) = discovery::management_account(&self.organizations).await {
            problems.push(error.to_string());
        }
        match self.instance().await {
            Err(error) => problems.push(error.to_string()),
            Ok(instance) if !self.config.permission_sets.is_empty() => {
                match discovery::permission_sets(&self.sso_admin, &instance.arn).await {
                    Err(error) => problems.push(error.to_string()),
                    Ok(sets) => {
                        let names: BTreeSet<&str> = sets.iter().map(|(n, _)| n.as_str()).collect();
                        for wanted in &self.config.permission_sets {
                            if !names.contains(wanted.as_str()) {
                                problems.push(format!(
                                    "permission set \"{wanted}\" does not exist in {}",
                                    instance.arn
                                ));
                            }
                        }
                    }
                }
            }
            Ok(_) => {}
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::StaticKeys;

    fn config() -> IdentityCenterConfig {
        IdentityCenterConfig {
            region: "us-east-1".to_owned(),
            endpoint_url: Some("http://127.0.0.1:9".to_owned()),
            keys: Some(StaticKeys {
                access_key_id: "testing".to_owned(),
                secret_access_key: "testing".to_owned(),
            }),
            instance_arn: None,
            identity_store_id: None,
            permission_sets: Vec::new(),
            allow_management_account: false,
            poll_interval: Duration::from_millis(10),
            poll_timeout: Duration::from_millis(100),
        }
    }

    fn attempts(config: &aws_sdk_ssoadmin::Config) -> Option<u32> {
        config.retry_config().map(|retry| retry.max_attempts())
    }

    fn grant(account: Option<&str>) -> GrantSpec {
        GrantSpec {
            request_id: "req-1".to_owned(),
            target: "aws".to_owned(),
            resource: "111111111111".to_owned(),
            role: "ReadOnly".to_owned(),
            user: "alice".to_owned(),
            email: Some("alice@example.com".to_owned()),
            account: account.map(str::to_owned),
            window_ends_at: None,
            ended_early: false,
            email_unverified: false,
        }
    }

    const ARN: &str = "arn:aws:sso:::permissionSet/ssoins-1/ps-1";

    /// moto never throttles, so the integration tests cannot see the
    /// SDK retrying behind elevate's back; its configuration can.
    #[tokio::test]
    async fn assignment_changes_are_tried_once_and_listings_and_reads_retried() {
        let sdk = sdk_config(&config()).await;
        let clients = assignment_clients(&sdk);
        assert_eq!(attempts(clients.changes.config()), Some(1));
        assert_eq!(attempts(clients.listings.config()), Some(LISTING_ATTEMPTS));
        let reads = aws_sdk_ssoadmin::Client::new(&sdk);
        assert!(attempts(reads.config()).is_some_and(|n| n > 1));
    }

    #[test]
    fn throttling_is_retryable_and_conflicts_busy_and_both_name_the_code() {
        let error = |code: &str| AwsError {
            operation: "CreateAccountAssignment",
            code: Some(code.to_owned()),
            message: "no".to_owned(),
        };
        for code in ["ThrottlingException", "TooManyRequestsException"] {
            match ProviderError::from(error(code)) {
                ProviderError::Retryable(message) => assert!(message.contains(code), "{message}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        for code in ["ConflictException", "ConcurrentModificationException"] {
            match ProviderError::from(error(code)) {
                ProviderError::Busy(message) => assert!(message.contains(code), "{message}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        for code in ["AccessDeniedException", "ValidationException"] {
            assert!(!ProviderError::from(error(code)).is_retryable(), "{code}");
        }
        let unreachable = AwsError {
            operation: "ListAccountAssignments",
            code: None,
            message: "connection refused".to_owned(),
        };
        assert!(matches!(
            ProviderError::from(unreachable),
            ProviderError::Retryable(_)
        ));
    }

    /// The lock is taken before anything is asked of AWS (here
    /// unreachable), so this needs no AWS.
    #[tokio::test]
    async fn a_change_that_waits_too_long_for_its_account_is_busy() -> Result<(), ProviderError> {
        let provider = AwsIdentityCenter::new(config()).await?;
        let target = AssignmentTarget {
            instance_arn: "arn:aws:sso:::instance/ssoins-1".to_owned(),
            account: "111111111111".to_owned(),
            permission_set_arn: ARN.to_owned(),
            principal_type: PrincipalKind::User,
            principal_id: "u-1".to_owned(),
        };
        let far = Instant::now() + Duration::from_secs(60);
        let _another_change = provider.lock_account(&target.account, far).await?;
        for result in [
            provider.create(&target).await,
            provider.delete(&target).await,
        ] {
            match result {
                Err(ProviderError::Busy(message)) => {
                    assert!(message.contains("111111111111"), "{message}");
                    assert!(message.contains("another assignment change"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn the_recorded_account_holds_the_user_id_and_maybe_the_permission_set() {
        let both = RecordedAccount::parse("u-1 arn:aws:sso:::permissionSet/ssoins-1/ps-1");
        assert_eq!(
            both,
            RecordedAccount {
                user_id: "u-1",
                permission_set_arn: Some(ARN),
            }
        );
        assert_eq!(both.to_string(), format!("u-1 {ARN}"));
        let old = RecordedAccount::parse("u-1");
        assert_eq!(
            old,
            RecordedAccount {
                user_id: "u-1",
                permission_set_arn: None,
            }
        );
        assert_eq!(old.to_string(), "u-1");
    }

    #[tokio::test]
    async fn the_grant_key_and_principal_follow_the_recorded_account() -> Result<(), ProviderError>
    {
        let provider = AwsIdentityCenter::new(config()).await?;
        let recorded = format!("u-1 {ARN}");
        assert_eq!(provider.principal_of(&recorded), "u-1");
        assert_eq!(provider.principal_of("u-1"), "u-1");
        assert_eq!(
            provider.grant_key(&grant(Some(&recorded))),
            format!("111111111111/{ARN}/u-1")
        );
        // Another elevate user found to be the same Identity Store user.
        let other = GrantSpec {
            user: "asmith".to_owned(),
            email: None,
            ..grant(Some(&recorded))
        };
        assert_eq!(
            provider.grant_key(&other),
            provider.grant_key(&grant(Some(&recorded)))
        );
        assert_eq!(
            provider.grant_key(&grant(Some("u-1"))),
            "111111111111/ReadOnly/u-1"
        );
        assert_eq!(
            provider.grant_key(&grant(None)),
            "111111111111/ReadOnly/alice"
        );
        Ok(())
    }
}
