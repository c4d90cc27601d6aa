//! The `aws-sts` provider's session revocation (`revoke_sessions`)
//! against a real AWS API emulator (moto, started by
//! `elevate_testkit::moto`; needs `moto[server]`): what lands in the
//! role's inline policy, read back through IAM outside elevate.
//!
//! moto stores role policies but does not evaluate them, so these tests
//! check the policies elevate writes, not that AWS then refuses the
//! session; the policies' meaning is AWS's documented one.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use chrono::{Duration, Utc};
use elevate_providers::aws_revoked_sessions::{
    decode_document, document, policy_name, until_of, GRACE, POLICY_PREFIX,
};
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
            (
                "partner".to_owned(),
                "arn:aws:iam::999999999999:role/Partner".to_owned(),
            ),
        ]),
        revoke_sessions: revoke,
        iam_endpoint_url: Some(moto.url()),
        revoke_via_role: None,
    }
}

/// An IAM client of the test's own on moto, in moto's default account.
fn iam(moto: &MotoServer) -> aws_sdk_iam::Client {
    iam_as(
        moto,
        aws_sdk_iam::config::Credentials::new("testing", "testing", None, None, "test"),
    )
}

fn iam_as(moto: &MotoServer, credentials: aws_sdk_iam::config::Credentials) -> aws_sdk_iam::Client {
    use aws_sdk_iam::config::{BehaviorVersion, Region};
    let conf = aws_sdk_iam::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(moto.url())
        .http_client(https())
        .build();
    aws_sdk_iam::Client::from_conf(conf)
}

fn https() -> aws_sdk_iam::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// An IAM client acting in `account`: moto keeps accounts apart by the
/// account of the credentials, so these are an assumed role's there.
async fn iam_in_account(moto: &MotoServer, account: &str) -> Result<aws_sdk_iam::Client> {
    use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(moto.url())
        .http_client(https())
        .build();
    let out = aws_sdk_sts::Client::from_conf(conf)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/Tester"))
        .role_session_name("tester")
        .send()
        .await?;
    let c = out.credentials().context("no credentials")?;
    Ok(iam_as(
        moto,
        aws_sdk_iam::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "test",
        ),
    ))
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

/// elevate's revocation policies on `role`, by name, with their documents.
async fn revocations(iam: &aws_sdk_iam::Client, role: &str) -> Result<Vec<(String, Value)>> {
    let names = iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await?
        .policy_names()
        .to_vec();
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| n.starts_with(POLICY_PREFIX)) {
        let doc = iam
            .get_role_policy()
            .role_name(role)
            .policy_name(&name)
            .send()
            .await?;
        let doc: Value = serde_json::from_str(&decode_document(doc.policy_document()))?;
        out.push((name, doc));
    }
    Ok(out)
}

/// The request ids the role's revocation policies deny.
async fn denied(iam: &aws_sdk_iam::Client, role: &str) -> Result<Vec<String>> {
    let mut ids: Vec<String> = revocations(iam, role)
        .await?
        .iter()
        .filter_map(|(_, doc)| {
            let s = &doc["Statement"][0];
            (s["Effect"] == "Deny" && s["Action"] == "*" && s["Resource"] == "*")
                .then(|| {
                    s["Condition"]["StringEquals"]["aws:PrincipalTag/elevate-request"].as_str()
                })
                .flatten()
                .map(str::to_owned)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// A grant of `role` to alice whose window ends at `ends_in` from now
/// (negative: already over), ended early or not.
fn grant(request: &str, role: &str, ends_in: Duration, early: bool) -> GrantSpec {
    GrantSpec {
        request_id: request.to_owned(),
        target: "aws".to_owned(),
        resource: "prod".to_owned(),
        role: role.to_owned(),
        user: "alice".to_owned(),
        email: None,
        account: None,
        window_ends_at: Some(Utc::now() + ends_in),
        ended_early: early,
        email_unverified: false,
    }
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
        .remove(&grant("r-ranout", "admin", Duration::seconds(-1), false))
        .await?;
    // Ended early, but so long ago that every session has expired.
    provider
        .remove(&grant("r-old", "admin", Duration::minutes(-30), true))
        .await?;
    ensure!(revocations(&iam, "Admin").await?.is_empty());

    // Revoked with 20 minutes left: denied, by its request tag only.
    let first = grant("r-first", "admin", Duration::minutes(20), true);
    provider.remove(&first).await?;
    let written = revocations(&iam, "Admin").await?;
    ensure!(written.len() == 1, "{written:?}");
    let (name, doc) = &written[0];
    let until = until_of(name).context("not elevate's name")?;
    let end = first.window_ends_at.context("window")?;
    ensure!(
        until >= end + GRACE && until <= end + GRACE + Duration::minutes(2),
        "{name} for a window ending {end}"
    );
    ensure!(name.ends_with("-r-first"), "{name}");
    ensure!(doc["Version"] == "2012-10-17", "{doc}");
    ensure!(denied(&iam, "Admin").await? == ["r-first"]);

    // Removing again (a retried job) changes nothing; a second revocation
    // gets a policy of its own.
    provider.remove(&first).await?;
    ensure!(revocations(&iam, "Admin").await?.len() == 1);
    provider
        .remove(&grant("r-second", "admin", Duration::minutes(5), true))
        .await?;
    ensure!(denied(&iam, "Admin").await? == ["r-first", "r-second"]);

    // A long window: no session outlives max_session (1 h here) after the
    // revocation, so the deny goes then, not at the window's end.
    let long = grant("r-long", "admin", Duration::hours(3), true);
    let revoked_at = Utc::now();
    provider.remove(&long).await?;
    let written = revocations(&iam, "Admin").await?;
    let name = written
        .iter()
        .map(|(n, _)| n)
        .find(|n| n.ends_with("-r-long"))
        .context("no deny for r-long")?;
    let until = until_of(name).context("not elevate's name")?;
    ensure!(
        until >= revoked_at + Duration::hours(1) + GRACE
            && until <= revoked_at + Duration::hours(2) + GRACE,
        "{name} for a revocation at {revoked_at}"
    );
    Ok(())
}

#[tokio::test]
async fn expired_revocations_are_deleted_and_other_policies_kept() -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let iam = iam(&moto);
    create_role(&iam, "Admin").await?;
    let put = |name: String, doc: Value| {
        let iam = iam.clone();
        async move {
            iam.put_role_policy()
                .role_name("Admin")
                .policy_name(name)
                .policy_document(doc.to_string())
                .send()
                .await
        }
    };
    let operators = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"}]});
    put("Operators".into(), operators).await?;
    let stale = policy_name("r-stale", Utc::now() - Duration::hours(1));
    put(stale.clone(), serde_json::from_str(&document("r-stale"))?).await?;
    let live = policy_name("r-live", Utc::now() + Duration::hours(1));
    put(live.clone(), serde_json::from_str(&document("r-live"))?).await?;

    let provider = AwsSts::new(config(&moto, true)).await?;
    provider
        .remove(&grant("r-now", "admin", Duration::minutes(30), true))
        .await?;
    let names = iam
        .list_role_policies()
        .role_name("Admin")
        .send()
        .await?
        .policy_names()
        .to_vec();
    ensure!(names.contains(&"Operators".to_owned()), "{names:?}");
    ensure!(names.contains(&live), "{names:?}");
    ensure!(!names.contains(&stale), "{names:?}");
    ensure!(denied(&iam, "Admin").await? == ["r-live", "r-now"]);
    Ok(())
}

#[tokio::test]
async fn replicas_revoking_at_once_lose_no_revocation() -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let iam = iam(&moto);
    create_role(&iam, "Admin").await?;
    // Two providers stand for two replicas writing to one role at once.
    let a = AwsSts::new(config(&moto, true)).await?;
    let b = AwsSts::new(config(&moto, true)).await?;
    let ids: Vec<String> = (0..12).map(|i| format!("r-{i:02}")).collect();
    let calls = ids.iter().enumerate().map(|(i, id)| {
        let p = if i % 2 == 0 { &a } else { &b };
        async move {
            p.remove(&grant(id, "admin", Duration::minutes(10), true))
                .await
        }
    });
    // Every one succeeds at once: no write can undo another.
    for result in futures_util::future::join_all(calls).await {
        result?;
    }
    ensure!(denied(&iam, "Admin").await? == ids);
    Ok(())
}

#[tokio::test]
async fn the_role_recorded_at_request_time_is_denied_too() -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let iam = iam(&moto);
    create_role(&iam, "Admin").await?;
    create_role(&iam, "OldAdmin").await?;
    let provider = AwsSts::new(config(&moto, true)).await?;
    // What the request recorded: the role's ARN at that time.
    let spec = grant("r-moved", "admin", Duration::minutes(10), true);
    ensure!(provider.account(&spec).as_deref() == Some(ADMIN));
    // Sessions may have been issued on the old ARN and on today's.
    let moved = GrantSpec {
        account: Some("arn:aws:iam::123456789012:role/OldAdmin".to_owned()),
        ..spec
    };
    provider.remove(&moved).await?;
    ensure!(denied(&iam, "OldAdmin").await? == ["r-moved"]);
    ensure!(denied(&iam, "Admin").await? == ["r-moved"]);
    // The recorded role deleted since (why the mapping changed): its
    // sessions cannot act any more, and today's role is still denied.
    let gone = GrantSpec {
        request_id: "r-gone".to_owned(),
        account: Some("arn:aws:iam::123456789012:role/DeletedAdmin".to_owned()),
        ..moved.clone()
    };
    provider.remove(&gone).await?;
    ensure!(denied(&iam, "Admin").await? == ["r-gone", "r-moved"]);
    // Grants are keyed by request: another grant of the same person and
    // role never keeps one from being handled.
    let other = grant("r-other", "admin", Duration::minutes(10), true);
    ensure!(provider.grant_key(&moved) != provider.grant_key(&other));
    Ok(())
}

#[tokio::test]
async fn a_missing_role_fails_the_removal_naming_it_and_check_config_says_so() -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let iam = iam(&moto);
    create_role(&iam, "Admin").await?;
    let provider = AwsSts::new(config(&moto, true)).await?;
    let err = provider
        .remove(&grant("r-1", "auditor", Duration::minutes(10), true))
        .await
        .err()
        .context("a removal on a missing role succeeded")?;
    ensure!(err.is_retryable(), "{err}");
    ensure!(err.to_string().contains("Missing"), "{err}");
    let problems = provider.validate().await?;
    ensure!(problems.len() == 2, "{problems:?}");
    ensure!(
        problems[0].contains("role auditor") && problems[0].contains("iam:PutRolePolicy"),
        "{problems:?}"
    );
    // A role in another account: IAM's role calls act in elevate's own.
    ensure!(
        problems[1].contains("role partner") && problems[1].contains("account 123456789012"),
        "{problems:?}"
    );
    let err = provider
        .remove(&grant("r-4", "partner", Duration::minutes(10), true))
        .await
        .err()
        .context("a deny in another account was reported written")?;
    ensure!(
        err.to_string().contains("999999999999:role/Partner"),
        "{err}"
    );

    // Without revoke_sessions nothing is asked of IAM at all.
    let off = AwsSts::new(config(&moto, false)).await?;
    off.remove(&grant("r-2", "auditor", Duration::minutes(10), true))
        .await?;
    off.remove(&grant("r-3", "admin", Duration::minutes(10), true))
        .await?;
    ensure!(revocations(&iam, "Admin").await?.is_empty());
    ensure!(off.validate().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn roles_in_other_accounts_are_denied_through_the_revoker_role_there() -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let own = iam(&moto);
    create_role(&own, "Admin").await?;
    let partner = iam_in_account(&moto, "999999999999").await?;
    create_role(&partner, "Partner").await?;
    // moto does not check who may assume ElevateRevoker (nor that it
    // exists): what is checked is that the policy lands in the partner
    // account, through credentials there.
    let mut config = config(&moto, true);
    config.revoke_via_role = Some("arn:aws:iam::{account}:role/ElevateRevoker".to_owned());
    let provider = AwsSts::new(config).await?;
    let problems = provider.validate().await?;
    ensure!(
        problems.len() == 1 && problems[0].contains("role auditor"),
        "{problems:?}"
    );
    provider
        .remove(&grant("r-partner", "partner", Duration::minutes(10), true))
        .await?;
    ensure!(denied(&partner, "Partner").await? == ["r-partner"]);
    ensure!(denied(&own, "Admin").await?.is_empty());
    // A second revocation there.
    provider
        .remove(&grant(
            "r-partner-2",
            "partner",
            Duration::minutes(10),
            true,
        ))
        .await?;
    ensure!(denied(&partner, "Partner").await? == ["r-partner", "r-partner-2"]);
    Ok(())
}
