//! The `aws-identity-center` target (placeholder; the client is being
//! written on its own branch).

use std::sync::Arc;

use async_trait::async_trait;

use crate::identity_center::IdentityCenterConfig;
use crate::{GrantSpec, Presence, Provider, ProviderError};

pub mod faults {
    /// A script of faults tests inject around the real client.
    #[derive(Debug, Default)]
    pub struct Faults;
}

pub struct AwsIdentityCenter {
    _config: IdentityCenterConfig,
}

impl AwsIdentityCenter {
    pub async fn new(config: IdentityCenterConfig) -> Result<Self, ProviderError> {
        Ok(Self { _config: config })
    }

    pub async fn with_faults(
        config: IdentityCenterConfig,
        _faults: Arc<faults::Faults>,
    ) -> Result<Self, ProviderError> {
        Self::new(config).await
    }
}

#[async_trait]
impl Provider for AwsIdentityCenter {
    fn kind(&self) -> &'static str {
        "aws-identity-center"
    }
    fn grant_key(&self, grant: &GrantSpec) -> String {
        format!("{}/{}/{}", grant.resource, grant.role, grant.user)
    }
    fn discovers(&self) -> bool {
        true
    }
    async fn apply(&self, _grant: &GrantSpec) -> Result<(), ProviderError> {
        Err(ProviderError::Permanent("not built yet".into()))
    }
    async fn remove(&self, _grant: &GrantSpec) -> Result<(), ProviderError> {
        Err(ProviderError::Permanent("not built yet".into()))
    }
    async fn check(&self, _grant: &GrantSpec) -> Result<Presence, ProviderError> {
        Err(ProviderError::Permanent("not built yet".into()))
    }
    async fn validate(&self) -> Result<Vec<String>, ProviderError> {
        Ok(vec![])
    }
}
