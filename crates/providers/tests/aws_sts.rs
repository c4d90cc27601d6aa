//! The `aws-sts` provider's session revocation (`revoke_sessions`)
//! against a real AWS API emulator (moto, started by
//! `elevate_testkit::moto`; needs `moto[server]`): what lands in the
//! role's inline policy, read back through IAM outside elevate.
//!
//! moto stores role policies but does not evaluate them, so these tests
//! check the policy elevate writes, not that AWS then refuses the
//! session; the policy's meaning is AWS's documented one.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use chrono::{Duration, Utc};
use elevate_providers::aws_revoked_sessions::{denies, POLICY_NAME};
use elevate_providers::aws_sts::AwsSts;
use elevate_providers::sessions::{AwsStsConfig, StaticKeys};
use elevate_providers::{GrantSpec, Provider};
use elevate_testkit::moto::MotoServer;
use serde_json::{json, Value};

const ADMIN: &str = "arn:aws:iam::123456789012:role/Admin";

fn config(moto: &MotoServer, revoke: bool) -> AwsStsConfig {
    AwsStsConfig {
        region: "us-east-1".to_owned(),
        endpoint_url: Some(moto.url()),
        federation_url: format!("{}/federation", moto.url()),
        console_destination: "https://console.aws.amazon.com/".to_owned(),
        max_session_secs: 3600,
        keys: Some(StaticKeys {
            access_key_id: "testing".to_owned(),
            secret_access_key: "testing".to_owned(),
        }),
        role_arns: BTreeMap::from([
            ("admin".to_owned(), ADMIN.to_owned()),
            (
                "auditor".to_owned(),
                "arn:aws:iam::123456789012:role/teams/Missing".to_owned(),
            ),
        ]),
        revoke_sessions: revoke,
        iam_endpoint_url: Some(moto.url()),
    }
}

/// An IAM client of the test's own on moto.
fn iam(moto: &MotoServer) -> aws_sdk_iam::Client {
    use aws_sdk_iam::config::{BehaviorVersion, Credentials, Region};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_iam::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(moto.url())
        .http_client(http)
        .build();
    aws_sdk_iam::Client::from_conf(conf)
}

async fn create_role(iam: &aws_sdk_iam::Client, name: &str) -> Result<()> {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"]}]});
    iam.create_role()
        .role_name(name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await?;
    Ok(())
}

/// The role's revocation policy as IAM holds it (`None`: none).
async fn policy(iam: &aws_sdk_iam::Client) -> Result<Option<String>> {
    match iam
        .get_role_policy()
        .role_name("Admin")
        .policy_name(POLICY_NAME)
        .send()
        .await
    {
        Ok(out) => Ok(Some(
            elevate_providers::aws_revoked_sessions::decode_document(out.policy_document()),
        )),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A grant of `role` to alice whose window ends at `ends_in` from now
/// (negative: already over).
fn grant(request: &str, role: &str, ends_in: Duration) -> GrantSpec {
    GrantSpec {
        request_id: request.to_owned(),
        target: "aws".to_owned(),
        resource: "prod".to_owned(),
        role: role.to_owned(),
        user: "alice".to_owned(),
        email: None,
        account: None,
        window_ends_at: Some(Utc::now() + ends_in),
    }
}

fn statements(doc: &str) -> Result<Vec<Value>> {
    let v: Value = serde_json::from_str(doc)?;
    Ok(v["Statement"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn a_grant_ended_early_has_its_sessions_denied_on_the_role_and_one_that_ran_out_does_not(
) -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let iam = iam(&moto);
    create_role(&iam, "Admin").await?;
    let provider = AwsSts::new(config(&moto, true)).await?;

    // Ran out: every session was bounded by the window, nothing to write.
    provider
        .remove(&grant("r-ranout", "admin", Duration::seconds(-5)))
        .await?;
    ensure!(
        policy(&iam).await?.is_none(),
        "a policy for an expired grant"
    );

    // Revoked with 20 minutes left: denied, by its request tag only.
    provider
        .remove(&grant("r-first", "admin", Duration::minutes(20)))
        .await?;
    let doc = policy(&iam).await?.context("no policy written")?;
    ensure!(denies(&doc, "r-first"), "{doc}");
    let all = statements(&doc)?;
    ensure!(all.len() == 1, "{doc}");
    let s = &all[0];
    ensure!(
        s["Effect"] == "Deny" && s["Action"] == "*" && s["Resource"] == "*",
        "{s}"
    );
    ensure!(
        s["Condition"]["StringEquals"]["aws:PrincipalTag/elevate-request"] == json!(["r-first"]),
        "{s}"
    );

    // Removing again (a retried job) changes nothing; a second revocation
    // in the same hour joins the same statement.
    provider
        .remove(&grant("r-first", "admin", Duration::minutes(20)))
        .await?;
    ensure!(policy(&iam).await?.as_deref() == Some(doc.as_str()));
    provider
        .remove(&grant("r-second", "admin", Duration::minutes(5)))
        .await?;
    let doc = policy(&iam).await?.context("policy gone")?;
    ensure!(denies(&doc, "r-first") && denies(&doc, "r-second"), "{doc}");
    ensure!(statements(&doc)?.len() == 1, "{doc}");
    ensure!(!denies(&doc, "r-ranout"), "{doc}");
    Ok(())
}

#[tokio::test]
async fn statements_older_than_any_session_are_dropped_and_an_operators_are_kept() -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let iam = iam(&moto);
    create_role(&iam, "Admin").await?;
    let stale_hour = (Utc::now() - Duration::hours(14)).format("%Y%m%d%H");
    let seeded = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Operators", "Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"},
        {"Sid": format!("ElevateRevoked{stale_hour}"), "Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"StringEquals": {"aws:PrincipalTag/elevate-request": ["r-stale"]}}}
    ]});
    iam.put_role_policy()
        .role_name("Admin")
        .policy_name(POLICY_NAME)
        .policy_document(seeded.to_string())
        .send()
        .await?;
    let provider = AwsSts::new(config(&moto, true)).await?;
    provider
        .remove(&grant("r-now", "admin", Duration::minutes(30)))
        .await?;
    let doc = policy(&iam).await?.context("policy gone")?;
    let sids: Vec<&str> = statements(&doc)?
        .iter()
        .filter_map(|s| s["Sid"].as_str())
        .map(|s| {
            if s == "Operators" {
                "Operators"
            } else {
                "elevate"
            }
        })
        .collect();
    ensure!(sids == ["Operators", "elevate"], "{doc}");
    ensure!(denies(&doc, "r-now") && !denies(&doc, "r-stale"), "{doc}");
    Ok(())
}

#[tokio::test]
async fn replicas_revoking_at_once_lose_no_revocation() -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let iam = iam(&moto);
    create_role(&iam, "Admin").await?;
    // Two providers stand for two replicas: each serialises only its own
    // writes, so they race on the one policy document.
    let a = AwsSts::new(config(&moto, true)).await?;
    let b = AwsSts::new(config(&moto, true)).await?;
    let ids: Vec<String> = (0..12).map(|i| format!("r-{i:02}")).collect();
    let mut calls = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let p = if i % 2 == 0 { &a } else { &b };
        calls.push(async move { p.remove(&grant(id, "admin", Duration::minutes(10))).await });
    }
    let results = futures_util::future::join_all(calls).await;
    // A removal that lost every round to the other writer fails and is
    // retried by the job queue; do what the queue would.
    for (id, result) in ids.iter().zip(results) {
        if result.is_err() {
            a.remove(&grant(id, "admin", Duration::minutes(10))).await?;
        }
    }
    let doc = policy(&iam).await?.context("no policy")?;
    for id in &ids {
        ensure!(denies(&doc, id), "{id} is missing from {doc}");
    }
    Ok(())
}

#[tokio::test]
async fn a_missing_role_fails_the_removal_naming_it_and_check_config_says_so() -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let iam = iam(&moto);
    create_role(&iam, "Admin").await?;
    let provider = AwsSts::new(config(&moto, true)).await?;
    let err = provider
        .remove(&grant("r-1", "auditor", Duration::minutes(10)))
        .await
        .err()
        .context("a removal on a missing role succeeded")?;
    ensure!(err.is_retryable(), "{err}");
    ensure!(err.to_string().contains("Missing"), "{err}");
    let problems = provider.validate().await?;
    ensure!(problems.len() == 1, "{problems:?}");
    ensure!(
        problems[0].contains("role auditor") && problems[0].contains("iam:PutRolePolicy"),
        "{problems:?}"
    );

    // Without revoke_sessions nothing is asked of IAM at all.
    let off = AwsSts::new(config(&moto, false)).await?;
    off.remove(&grant("r-2", "auditor", Duration::minutes(10)))
        .await?;
    off.remove(&grant("r-3", "admin", Duration::minutes(10)))
        .await?;
    ensure!(policy(&iam).await?.is_none());
    ensure!(off.validate().await?.is_empty());
    Ok(())
}
