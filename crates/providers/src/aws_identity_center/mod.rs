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
//!   ignoring ASCII case; the user id found when the request is made is
//!   recorded with the grant ([`GrantSpec::account`]).
//! - AWS changes assignments asynchronously: create and delete answer a
//!   request id whose status is polled every `poll_interval` for at most
//!   `poll_timeout`; a change still running then is retried later by the
//!   job queue. Changes in one account are made one at a time (AWS runs
//!   one per account and answers `ConflictException` otherwise).
//! - The sso-admin client that changes assignments has the SDK's retries
//!   off: a throttled call comes back to the job queue, which retries
//!   with backoff and records every attempt. Reads (Organizations,
//!   Identity Store, permission sets) keep the SDK's standard retries.
//!
//! Submodules: [`api`] (the assignment calls and AWS errors),
//! `faults` (injected faults for tests; feature `faults`), [`discovery`],
//! [`directory`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ssoadmin::config::{Credentials, SharedCredentialsProvider, SharedHttpClient};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;
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

/// AWS calls are cut off after this; well below the job lease and an
/// HTTP client's patience.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// How many per-item AWS calls (tags, permission set names, assignment
/// listings, principal names) run at once: enough to make a large
/// organization quick, few enough to stay under AWS's request rates.
const CONCURRENCY: usize = 8;

/// Shown when elevate is asked to grant in the management account.
const MANAGEMENT_ACCOUNT_REFUSED: &str = "the organization's management account: elevate grants \
     there only with allow_management_account = true";

pub struct AwsIdentityCenter {
    config: IdentityCenterConfig,
    organizations: aws_sdk_organizations::Client,
    identity_store: aws_sdk_identitystore::Client,
    /// For reads (instances, permission sets), with the SDK's retries.
    sso_admin: aws_sdk_ssoadmin::Client,
    /// Assignment changes and listings, without the SDK's retries; in
    /// tests possibly wrapped in `faults::Faulty`.
    assignments: Arc<dyn AssignmentApi>,
    /// The instance and its Identity Store, asked once (they do not
    /// change while elevate runs).
    instance: OnceCell<Instance>,
    /// The Organization's management account (it never changes), asked
    /// once. Refusals check it besides the adopted inventory, which may
    /// be a cache from when the config allowed it.
    management_account: OnceCell<String>,
    /// What the last adopted inventory says.
    adopted: RwLock<Adopted>,
    /// One lock per AWS account: AWS runs one assignment change per
    /// account at a time, and a second one only earns a conflict.
    account_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
    /// Account → why elevate does not grant there.
    refused: BTreeMap<String, String>,
    /// Every account of the organization (refused ones included).
    accounts: BTreeSet<String>,
}

/// Which way an assignment changes; decides the calls and the words.
#[derive(Debug, Clone, Copy)]
enum Change {
    Creation,
    Deletion,
}

/// rustls with ring, as the rest of elevate: the SDK's default TLS stack
/// would build aws-lc.
fn https_ring() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// What every client shares: region, credentials (static keys when
/// configured, otherwise the default AWS chain), endpoint, time-outs.
async fn sdk_config(config: &IdentityCenterConfig) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(CALL_TIMEOUT)
        .build();
    let region = Region::new(config.region.clone());
    match &config.keys {
        Some(keys) => {
            let mut builder = SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(region)
                .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                    keys.access_key_id.clone(),
                    keys.secret_access_key.clone(),
                    None,
                    None,
                    "elevate-config",
                )))
                .http_client(https_ring())
                .timeout_config(timeouts)
                .retry_config(RetryConfig::standard());
            if let Some(url) = &config.endpoint_url {
                builder = builder.endpoint_url(url.clone());
            }
            builder.build()
        }
        None => {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .region(region)
                .http_client(https_ring())
                .timeout_config(timeouts);
            if let Some(url) = &config.endpoint_url {
                loader = loader.endpoint_url(url.clone());
            }
            loader.load().await
        }
    }
}

/// The sso-admin client for assignment changes and listings: one
/// attempt per call, so that every throttle reaches elevate's job queue,
/// which retries with backoff and records each attempt.
fn assignment_client(sdk: &SdkConfig) -> aws_sdk_ssoadmin::Client {
    let config = aws_sdk_ssoadmin::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_ssoadmin::Client::from_conf(config)
}

impl AwsIdentityCenter {
    /// Builds the clients. Calls nothing on AWS: the instance is looked
    /// up when first needed, so elevate starts while AWS is unreachable.
    pub async fn new(config: IdentityCenterConfig) -> Result<Self, ProviderError> {
        let sdk = sdk_config(&config).await;
        let assignments = Arc::new(api::SdkAssignments {
            client: assignment_client(&sdk),
        });
        Ok(Self::with_assignments(config, &sdk, assignments))
    }

    /// Same, with a fault-injecting wrapper around the real client
    /// (tests; see `faults`).
    #[cfg(feature = "faults")]
    pub async fn with_faults(
        config: IdentityCenterConfig,
        faults: Arc<faults::Faults>,
    ) -> Result<Self, ProviderError> {
        let sdk = sdk_config(&config).await;
        let real = Arc::new(api::SdkAssignments {
            client: assignment_client(&sdk),
        });
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
            config,
        }
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
            .get_or_try_init(|| async {
                let answer = self
                    .organizations
                    .describe_organization()
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("DescribeOrganization", &e))?;
                answer
                    .organization()
                    .and_then(|o| o.master_account_id())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        AwsError::malformed("DescribeOrganization", "a management account id")
                    })
            })
            .await?;
        Ok(id)
    }

    /// Why elevate does not grant in `account`, if it does not.
    async fn refusal(&self, account: &str) -> Result<Option<String>, ProviderError> {
        if let Some(reason) = self.adopted().refused.get(account) {
            return Ok(Some(reason.clone()));
        }
        if self.config.allow_management_account {
            return Ok(None);
        }
        let management = self.management_account().await?;
        Ok((management == account).then(|| MANAGEMENT_ACCOUNT_REFUSED.to_owned()))
    }

    /// The Identity Store user id of the grant's user (see
    /// [`directory::choose`]).
    async fn find_user(&self, grant: &GrantSpec) -> Result<String, ProviderError> {
        let instance = self.instance().await?;
        let store = &instance.identity_store_id;
        let found = directory::find_user(
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

    /// The user id recorded with the grant, or the one found now.
    async fn user_id(&self, grant: &GrantSpec) -> Result<String, ProviderError> {
        match &grant.account {
            Some(id) => Ok(id.clone()),
            None => self.find_user(grant).await,
        }
    }

    /// The assignment a grant stands for.
    async fn target_of(&self, grant: &GrantSpec) -> Result<AssignmentTarget, ProviderError> {
        let permission_set_arn = self.permission_set(&grant.role)?;
        let instance = self.instance().await?;
        Ok(AssignmentTarget {
            instance_arn: instance.arn.clone(),
            account: grant.resource.clone(),
            permission_set_arn,
            principal_type: PrincipalKind::User,
            principal_id: self.user_id(grant).await?,
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
                && holder.principal_type == target.principal_type.as_str()
        }))
    }

    fn account_lock(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .account_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.entry(account.to_owned()).or_default().clone()
    }

    /// Creates the assignment unless it is there, and waits for AWS.
    async fn create(&self, target: &AssignmentTarget) -> Result<(), ProviderError> {
        let lock = self.account_lock(&target.account);
        let _one_change_per_account = lock.lock().await;
        // Looked at first, so that a repeated apply asks AWS for nothing
        // (moto would even store a second copy).
        if self.is_present(target).await? {
            return Ok(());
        }
        let status = self.assignments.create(target).await?;
        self.wait(&target.instance_arn, status, Change::Creation)
            .await
    }

    /// Deletes the assignment if it is there, and waits for AWS.
    async fn delete(&self, target: &AssignmentTarget) -> Result<(), ProviderError> {
        let lock = self.account_lock(&target.account);
        let _one_change_per_account = lock.lock().await;
        if !self.is_present(target).await? {
            return Ok(());
        }
        let status = match self.assignments.delete(target).await {
            Ok(status) => status,
            Err(error) if error.has_code("ResourceNotFoundException") => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        self.wait(&target.instance_arn, status, Change::Deletion)
            .await
    }

    /// Asks for the change's status until it is done, failed, or
    /// `poll_timeout` has passed.
    async fn wait(
        &self,
        instance_arn: &str,
        mut status: OperationStatus,
        change: Change,
    ) -> Result<(), ProviderError> {
        let deadline = Instant::now() + self.config.poll_timeout;
        loop {
            match status.stage {
                Stage::Succeeded => return Ok(()),
                Stage::Failed(reason) => return Err(change.failed(&reason)),
                Stage::InProgress => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ProviderError::Retryable(format!(
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

    /// An assignment is a user holding a permission set in an account:
    /// two grants of it share it, whatever the request.
    fn grant_key(&self, grant: &GrantSpec) -> String {
        format!("{}/{}/{}", grant.resource, grant.role, grant.user)
    }

    fn discovers(&self) -> bool {
        true
    }

    /// Refuses what cannot be granted and finds the user, so that the
    /// requester hears at once, not after approval.
    async fn prepare(&self, grant: &GrantSpec) -> Result<Option<String>, ProviderError> {
        if let Some(reason) = self.refusal(&grant.resource).await? {
            return Err(ProviderError::Permanent(format!(
                "AWS account {} is {reason}",
                grant.resource
            )));
        }
        if !self.adopted().accounts.contains(&grant.resource) {
            return Err(ProviderError::Permanent(format!(
                "AWS account {} is not an active account of the organization as last \
                 discovered",
                grant.resource
            )));
        }
        self.permission_set(&grant.role)?;
        Ok(Some(self.find_user(grant).await?))
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
                MANAGEMENT_ACCOUNT_REFUSED.to_owned(),
            );
        }
        Ok(Inventory {
            resources: tree.resources,
            roles,
            refused,
        })
    }

    /// A cached inventory may predate the config: its management-account
    /// refusal is dropped when the config now allows it, and added back
    /// (`refusal`) when it no longer does.
    fn adopt(&self, inventory: &Inventory) {
        let mut refused = inventory.refused.clone();
        if self.config.allow_management_account {
            refused.retain(|_, reason| reason != MANAGEMENT_ACCOUNT_REFUSED);
        }
        let adopted = Adopted {
            roles: inventory.roles.clone(),
            refused,
            accounts: inventory
                .resources
                .iter()
                .filter(|r| r.kind == "account")
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
        let listed: Vec<Vec<Assignment>> = stream::iter(pairs)
            .map(|(account, role, arn)| async move {
                let holders = self
                    .assignments
                    .list_assignments(&instance.arn, &account, &arn)
                    .await?;
                Ok::<_, AwsError>(
                    holders
                        .into_iter()
                        .map(|holder| Assignment {
                            resource: account.clone(),
                            role: role.clone(),
                            principal_type: holder.principal_type,
                            principal_id: holder.principal_id,
                            principal_name: None,
                        })
                        .collect(),
                )
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut found: Vec<Assignment> = listed.into_iter().flatten().collect();

        let principals: BTreeSet<(String, String)> = found
            .iter()
            .map(|a| (a.principal_type.clone(), a.principal_id.clone()))
            .collect();
        let names: HashMap<(String, String), String> = stream::iter(principals)
            .map(|(kind, id)| async move {
                let name = directory::principal_name(
                    &self.identity_store,
                    &instance.identity_store_id,
                    &kind,
                    &id,
                )
                .await;
                name.map(|name| ((kind, id), name))
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(|named| async move { named })
            .collect()
            .await;
        for assignment in &mut found {
            let key = (
                assignment.principal_type.clone(),
                assignment.principal_id.clone(),
            );
            assignment.principal_name = names.get(&key).cloned();
        }
        Ok(Some(found))
    }

    async fn remove_assignment(&self, assignment: &Assignment) -> Result<(), ProviderError> {
        if let Some(reason) = self.refusal(&assignment.resource).await? {
            return Err(ProviderError::Permanent(format!(
                "AWS account {} is {reason}; elevate changes nothing there",
                assignment.resource
            )));
        }
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

    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        // Checked again here, not only in prepare: the config may have
        // changed between the request and its approval.
        if let Some(reason) = self.refusal(&grant.resource).await? {
            return Err(ProviderError::Permanent(format!(
                "AWS account {} is {reason}",
                grant.resource
            )));
        }
        let target = self.target_of(grant).await?;
        self.create(&target).await
    }

    /// Not refused in refused accounts: whatever a grant put somewhere
    /// must be removable, whatever the config says now.
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
        if let Err(e) = self.organizations.describe_organization().send().await {
            problems.push(AwsError::from_sdk("DescribeOrganization", &e).to_string());
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

    /// moto never throttles, so the integration tests cannot see the
    /// SDK retrying behind elevate's back; its configuration can.
    #[tokio::test]
    async fn assignment_changes_are_tried_once_and_reads_retried() {
        let sdk = sdk_config(&config()).await;
        assert_eq!(attempts(assignment_client(&sdk).config()), Some(1));
        let reads = aws_sdk_ssoadmin::Client::new(&sdk);
        assert!(attempts(reads.config()).is_some_and(|n| n > 1));
    }

    #[test]
    fn throttling_and_conflicts_are_retryable_and_name_the_code() {
        let error = |code: &str| AwsError {
            operation: "CreateAccountAssignment",
            code: Some(code.to_owned()),
            message: "no".to_owned(),
        };
        for code in [
            "ThrottlingException",
            "TooManyRequestsException",
            "ConflictException",
        ] {
            match ProviderError::from(error(code)) {
                ProviderError::Retryable(message) => assert!(message.contains(code), "{message}"),
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
        assert!(ProviderError::from(unreachable).is_retryable());
    }
}
