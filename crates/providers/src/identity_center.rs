//! The `aws-identity-center` target's settings, checked by the config
//! loader. They build without the AWS SDK (feature `aws`), so a build
//! without it can still say clearly what it cannot do; the client lives in
//! [`crate::aws_identity_center`].

use std::time::Duration;

use crate::sessions::StaticKeys;

/// One `aws-identity-center` target (`[targets.identity_center]`).
#[derive(Debug, Clone)]
pub struct IdentityCenterConfig {
    pub region: String,
    /// One endpoint for every AWS service the target calls (sso-admin,
    /// identitystore, organizations) instead of AWS's; tests point it at
    /// moto.
    pub endpoint_url: Option<String>,
    /// `None`: the default AWS credential chain.
    pub keys: Option<StaticKeys>,
    /// The IAM Identity Center instance; `None`: the only one
    /// `ListInstances` returns (an error when there are several).
    pub instance_arn: Option<String>,
    /// The Identity Store users are looked up in; `None`: the instance's.
    pub identity_store_id: Option<String>,
    /// The permission sets offered as roles, by name; empty: all of them.
    pub permission_sets: Vec<String>,
    /// Grant in the organization's management account too. Off by
    /// default: access there reaches every account of the organization.
    pub allow_management_account: bool,
    /// How often an assignment's creation or deletion status is asked
    /// while AWS reports it in progress.
    pub poll_interval: Duration,
    /// How long one apply or remove waits for AWS to finish before the
    /// job is retried later (and looks again).
    pub poll_timeout: Duration,
}
