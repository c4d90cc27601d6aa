//! What the AWS target kinds share: one TLS stack and one way to build
//! the SDK configuration every client of a target starts from.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sts::config::{Credentials, SharedCredentialsProvider, SharedHttpClient};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::sessions::StaticKeys;

/// rustls with ring, as the rest of elevate: the SDK's default TLS stack
/// would build aws-lc.
pub(crate) fn https_ring() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Region, credentials (static keys when configured, otherwise the
/// default AWS chain: environment, profile, web identity, container or
/// instance role), an endpoint for every service when one is given (tests
/// point it at moto), each operation cut off after `timeout`, and the SDK's
/// standard retries (clients that must see every throttle turn them off).
pub(crate) async fn sdk_config(
    region: &str,
    endpoint_url: Option<&str>,
    keys: Option<&StaticKeys>,
    timeout: Duration,
) -> SdkConfig {
    let timeouts = TimeoutConfig::builder().operation_timeout(timeout).build();
    let region = Region::new(region.to_owned());
    match keys {
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
            if let Some(url) = endpoint_url {
                builder = builder.endpoint_url(url);
            }
            builder.build()
        }
        None => {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .region(region)
                .http_client(https_ring())
                .timeout_config(timeouts);
            if let Some(url) = endpoint_url {
                loader = loader.endpoint_url(url);
            }
            loader.load().await
        }
    }
}
