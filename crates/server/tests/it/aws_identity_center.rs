//! The `aws-identity-center` target against a real AWS API emulator
//! (moto, started by `elevate_testkit::moto`, seeded through boto3 by
//! `elevate_testkit::aws_org`): an Organization with nested OUs and
//! tagged accounts, Identity Store users, permission sets.
//!
//! moto creates every account assignment at once (status SUCCEEDED), never
//! throttles and never conflicts: the tests of FAILED creations and of
//! throttling put elevate's fault-injecting wrapper around the real client
//! (`AwsIdentityCenter::with_faults`) and say so. Everything else talks to
//! moto unwrapped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use elevate_core::values::Name;
use elevate_providers::aws_identity_center::faults::{Call, Faults};
use elevate_providers::aws_identity_center::AwsIdentityCenter;
use elevate_providers::identity_center::IdentityCenterConfig;
use elevate_providers::sessions::StaticKeys;
use elevate_providers::Provider;
use elevate_testkit::aws_org;
use elevate_testkit::moto::MotoServer;
use elevate_testkit::smtp::{ReceivedMail, SmtpServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{cli, cli_ok, eventually, users_toml, TestApp};
use crate::web_common::{page, signed_in};

const WAIT: Duration = Duration::from_secs(30);
const ADMIN_PS: &str = "AdministratorAccess";

/// root ⊃ Workloads ⊃ Prod ⊃ {payments-prod, orders-prod};
/// Workloads ⊃ shared-services; root ⊃ Sandbox ⊃ sandbox-1.
/// In the Identity Store: "asmith" (alice, matched only by her e-mail,
/// stored in another case), bob, carol, dave, mallory. eve is not there.
fn org_spec() -> Value {
    json!({
        "ous": [
            {"name": "Workloads",
             "accounts": [{"name": "shared-services", "tags": {"env": "shared"}}],
             "ous": [{"name": "Prod", "accounts": [
                 {"name": "payments-prod", "tags": {"env": "prod", "team": "payments"}},
                 {"name": "orders-prod", "tags": {"env": "prod", "team": "orders"}}
             ]}]},
            {"name": "Sandbox", "accounts": [{"name": "sandbox-1", "tags": {"env": "dev"}}]}
        ],
        "users": [
            {"user_name": "asmith", "display_name": "Alice Smith", "emails": ["Alice@Example.COM"]},
            {"user_name": "bob", "display_name": "Bob", "emails": ["bob@example.com"]},
            {"user_name": "carol", "display_name": "Carol", "emails": ["carol@example.com"]},
            {"user_name": "dave", "display_name": "Dave", "emails": ["dave@example.com"]},
            {"user_name": "mallory", "display_name": "Mallory", "emails": ["mallory@example.com"]}
        ],
        "groups": [{"name": "platform-admins", "members": ["mallory"]}],
        "permission_sets": [ADMIN_PS, "ReadOnlyAccess"]
    })
}

struct Org {
    moto: MotoServer,
    seeded: Value,
}

impl Org {
    fn id(&self, kind: &str, name: &str) -> Result<String> {
        self.seeded[kind][name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {kind} {name} in {}", self.seeded))
    }

    fn instance(&self) -> Result<String> {
        self.seeded["instance_arn"]
            .as_str()
            .map(str::to_owned)
            .context("no instance")
    }

    /// Principal ids holding `ps` on `account`, as moto lists them.
    async fn holders(&self, account: &str, ps: &str) -> Result<Vec<String>> {
        let (url, instance, ps_arn) = (
            self.moto.url(),
            self.instance()?,
            self.id("permission_sets", ps)?,
        );
        let account = account.to_owned();
        let list = tokio::task::spawn_blocking(move || {
            aws_org::list_assignments(&url, &instance, &account, &ps_arn)
        })
        .await??;
        Ok(list.into_iter().map(|(_, id)| id).collect())
    }
}

async fn org() -> Result<Org> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let url = moto.url();
    let seeded = tokio::task::spawn_blocking(move || aws_org::seed(&url, &org_spec())).await??;
    Ok(Org { moto, seeded })
}

/// developers may ask for AdministratorAccess in every account below
/// Workloads (nested OUs included); one DBA approves it in accounts tagged
/// env=prod (nobody in others); dave is admin.
fn config(dir: &Path, org: &Org, reconcile: &str) -> Result<String> {
    let db = elevate_testkit::database_url(&dir.join("elevate.db"))?;
    Ok(format!(
        r#"
admins = ["group:security"]
auditors = ["group:security"]

[limits]
min_duration = "1s"

{users}
[server]
listen = "127.0.0.1:0"
database = "{db}"
retry_max_backoff = "1s"

[[eligibilities]]
id = "developers-workloads"
subjects = ["group:developers"]
target = "aws"
resources = {{ under = ["{workloads}"] }}
roles = ["{ADMIN_PS}"]
max_duration = "2h"

[[approval_policies]]
id = "dba-approves-prod"
target = "aws"
resources = {{ tags = {{ env = "prod" }} }}
roles = ["{ADMIN_PS}"]
approvers = ["group:dba"]
quorum = 1

[[targets]]
id = "aws"
kind = "aws-identity-center"
[targets.identity_center]
region = "us-east-1"
endpoint_url = "{moto}"
access_key_id = "testing"
secret_access_key = "testing"
poll_interval = "1s"
poll_timeout = "5s"
reconcile = "{reconcile}"
"#,
        users = users_toml(),
        workloads = org.id("ous", "Workloads")?,
        moto = org.moto.url(),
    ))
}

fn ic_config(org: &Org) -> IdentityCenterConfig {
    IdentityCenterConfig {
        region: "us-east-1".into(),
        endpoint_url: Some(org.moto.url()),
        keys: Some(StaticKeys {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        }),
        instance_arn: None,
        identity_store_id: None,
        permission_sets: Vec::new(),
        allow_management_account: false,
        poll_interval: Duration::from_millis(200),
        // Generous: a poll that outlasts it counts as one more retry, which
        // the retry-counting test would see on a slow machine.
        poll_timeout: Duration::from_secs(10),
    }
}

async fn start(org: &Org, dir: &Path, faults: Option<Arc<Faults>>) -> Result<TestApp> {
    start_config(org, &config(dir, org, "report")?, faults).await
}

/// elevate on `text`, once it has read the organization.
async fn start_config(org: &Org, text: &str, faults: Option<Arc<Faults>>) -> Result<TestApp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut providers: BTreeMap<Name, Arc<dyn Provider>> = BTreeMap::new();
    if let Some(faults) = faults {
        let wrapped = AwsIdentityCenter::with_faults(ic_config(org), faults).await?;
        providers.insert(Name::parse("target", "aws")?, Arc::new(wrapped));
    }
    let app = TestApp::start_with(text, listener, providers).await?;
    // The first inventory is read in the background at start.
    eventually("the organization is read", WAIT, || async {
        let (_, v) = app.get("alice", "/api/v1/eligible?target=aws").await?;
        Ok(v.to_string().contains("payments-prod"))
    })
    .await?;
    Ok(app)
}

fn ask(account: &str, duration: &str) -> Value {
    json!({"target": "aws", "resource": account, "role": ADMIN_PS,
           "duration": duration, "reason": "障害対応 INC-9: 決済の調査"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_two_ous_down_is_assigned_after_approval_and_unassigned_at_the_deadline_overlaps_kept(
) -> Result<()> {
    let org = org().await?;
    let dir = tempfile::tempdir()?;
    let app = start(&org, dir.path(), None).await?;
    let payments = org.id("accounts", "payments-prod")?;
    let alice = org.id("users", "asmith")?;

    // The listing shows the accounts below Workloads, at any depth, with
    // their names, and nothing outside it.
    let (status, eligible) = app.get("alice", "/api/v1/eligible?target=aws").await?;
    ensure!(status == StatusCode::OK, "{status} {eligible}");
    let text = eligible.to_string();
    for name in ["payments-prod", "orders-prod", "shared-services"] {
        ensure!(text.contains(name), "{name} missing from {text}");
    }
    ensure!(!text.contains("sandbox-1"), "sandbox listed: {text}");
    // Approval follows the account's tag: shared-services (env=shared)
    // is eligible, but no policy approves it, so it is refused now.
    let shared = org.id("accounts", "shared-services")?;
    let (status, v) = app
        .post("alice", "/api/v1/requests", ask(&shared, "1h"))
        .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && v["code"] == "no_approval_policy",
        "{status} {v}"
    );

    // Two requests for the same account and permission set; the second
    // lasts longer. The first must outlast the second's approval (several
    // calls to moto on a loaded machine).
    let first = app.request("alice", ask(&payments, "20s")).await?;
    ensure!(
        org.holders(&payments, ADMIN_PS).await?.is_empty(),
        "assigned before approval"
    );
    app.approve("bob", &first).await?;
    app.wait_state(&first, "active", WAIT).await?;
    // Active only once AWS said so: the assignment is there now.
    assert_eq!(org.holders(&payments, ADMIN_PS).await?, vec![alice.clone()]);
    let second = app.request("alice", ask(&payments, "45s")).await?;
    app.approve("carol", &second).await?;
    app.wait_state(&second, "active", WAIT).await?;
    // Applied once: the second grant did not add a second assignment.
    assert_eq!(org.holders(&payments, ADMIN_PS).await?, vec![alice.clone()]);

    let ended = app.wait_state(&first, "ended", WAIT).await?;
    assert_eq!(
        org.holders(&payments, ADMIN_PS).await?,
        vec![alice.clone()],
        "the first grant's end took the assignment the second still needs: {ended}"
    );
    // It was kept on purpose, because of the second grant (not because
    // the second was applied again after a removal).
    let kept = ended["attempts"].as_array().is_some_and(|a| {
        a.iter().any(|x| {
            x["outcome"] == "skipped"
                && x["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(second.as_str()))
        })
    });
    ensure!(
        kept,
        "the first removal did not keep the role for {second}: {ended}"
    );
    ensure!(
        app.show(&second).await?["state"] == "active",
        "the second grant is no longer active"
    );
    app.wait_state(&second, "ended", 2 * WAIT).await?;
    eventually("the assignment is removed", WAIT, || async {
        Ok(org.holders(&payments, ADMIN_PS).await?.is_empty())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_found_by_email_in_any_case_and_a_missing_user_is_told_at_request_time(
) -> Result<()> {
    let org = org().await?;
    let dir = tempfile::tempdir()?;
    let app = start(&org, dir.path(), None).await?;
    let orders = org.id("accounts", "orders-prod")?;

    // alice is "asmith" in the Identity Store, found by her e-mail
    // (Alice@Example.COM there, alice@example.com in elevate).
    let id = app.request("alice", ask(&orders, "1h")).await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    assert_eq!(
        org.holders(&orders, ADMIN_PS).await?,
        vec![org.id("users", "asmith")?]
    );

    // eve is eligible but not in the Identity Store: refused now, with
    // what to do, and nothing is created.
    let (status, v) = app
        .post("eve", "/api/v1/requests", ask(&orders, "1h"))
        .await?;
    ensure!(status == StatusCode::UNPROCESSABLE_ENTITY, "{status} {v}");
    assert_eq!(v["code"], "target_refused");
    let message = v["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("eve") && message.contains("identity store"),
        "{message}"
    );
    let (_, mine) = app.get("eve", "/api/v1/requests").await?;
    ensure!(
        mine["requests"].as_array().is_some_and(Vec::is_empty),
        "{mine}"
    );

    // An OU is not an account, and the management account is kept out.
    let (status, v) = app
        .post(
            "alice",
            "/api/v1/requests",
            ask(&org.id("ous", "Prod")?, "1h"),
        )
        .await?;
    ensure!(status == StatusCode::UNPROCESSABLE_ENTITY, "{status} {v}");
    assert_eq!(v["code"], "not_grantable");
    let management = org.seeded["management_account"]
        .as_str()
        .context("no management account")?;
    let (status, v) = app
        .post("alice", "/api/v1/requests", ask(management, "1h"))
        .await?;
    ensure!(status == StatusCode::UNPROCESSABLE_ENTITY, "{status} {v}");
    assert_eq!(v["code"], "not_grantable");
    ensure!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("management account"),
        "{v}"
    );
    Ok(())
}

/// Uses the fault-injecting wrapper: moto never reports FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_assignment_is_never_shown_active_and_its_reason_is_visible() -> Result<()> {
    let org = org().await?;
    let dir = tempfile::tempdir()?;
    let faults = Faults::new();
    let app = start(&org, dir.path(), Some(faults.clone())).await?;
    let payments = org.id("accounts", "payments-prod")?;
    let reason = "Received a 404 status error: Not supported policy arn:aws:iam::aws:policy/Gone.";
    faults.fail_next_creation(reason);
    let id = app.request("alice", ask(&payments, "1h")).await?;
    app.approve("bob", &id).await?;
    let failed = app.wait_state(&id, "failed", WAIT).await?;
    ensure!(
        failed.to_string().contains("Not supported policy"),
        "reason not shown: {failed}"
    );
    // Nobody saw it active, and nothing is left in AWS.
    let (_, audit) = app
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await?;
    ensure!(!audit.to_string().contains("grant.activated"), "{audit}");
    ensure!(audit.to_string().contains("grant.failed"), "{audit}");
    assert!(org.holders(&payments, ADMIN_PS).await?.is_empty());
    // The requester and the approver both see the reason.
    for who in ["alice", "bob"] {
        let (status, v) = app.get(who, &format!("/api/v1/requests/{id}")).await?;
        ensure!(status == StatusCode::OK, "{who}: {status} {v}");
        ensure!(
            v.to_string().contains("Not supported policy"),
            "{who} does not see it: {v}"
        );
    }
    Ok(())
}

/// Uses the fault-injecting wrapper: moto never throttles or conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_conflicts_are_retried_with_backoff_and_recorded_until_success() -> Result<()>
{
    let org = org().await?;
    let dir = tempfile::tempdir()?;
    let faults = Faults::new();
    let app = start(&org, dir.path(), Some(faults.clone())).await?;
    let payments = org.id("accounts", "payments-prod")?;
    faults.throttle(Call::Create, 2);
    faults.conflict(Call::Create, 1);
    faults.in_progress(2);
    let id = app.request("alice", ask(&payments, "1h")).await?;
    app.approve("bob", &id).await?;
    let active = app.wait_state(&id, "active", WAIT).await?;
    assert_eq!(
        org.holders(&payments, ADMIN_PS).await?,
        vec![org.id("users", "asmith")?]
    );
    // Each refused call is an attempt on record, with AWS's error code.
    let attempts = active["attempts"].as_array().context("no attempts")?;
    let retries: Vec<&Value> = attempts
        .iter()
        .filter(|a| a["outcome"] == "retry")
        .collect();
    ensure!(retries.len() == 3, "expected 3 retries: {attempts:?}");
    let errors = json!(retries).to_string();
    ensure!(
        errors.contains("ThrottlingException") && errors.contains("ConflictException"),
        "{errors}"
    );
    ensure!(
        faults.calls(Call::Create) >= 4,
        "create called {} times",
        faults.calls(Call::Create)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_reports_an_assignment_made_outside_elevate_and_can_remove_it() -> Result<()>
{
    let org = org().await?;
    let dir = tempfile::tempdir()?;
    // Admins are told of what reconciliation finds by mail.
    let smtp = SmtpServer::start(&dir.path().join("smtp"))?;
    let mail = format!(
        "\n[notifications]\nretry_max_backoff = \"1s\"\n[notifications.email]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"elevate <elevate@example.com>\"\n",
        smtp.port()
    );
    let app = start_config(
        &org,
        &format!("{}{mail}", config(dir.path(), &org, "report")?),
        None,
    )
    .await?;
    let (orders, payments) = (
        org.id("accounts", "orders-prod")?,
        org.id("accounts", "payments-prod")?,
    );
    let id = app.request("alice", ask(&payments, "1h")).await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    // Someone gives mallory AdministratorAccess in the AWS console.
    let (url, instance, ps) = (
        org.moto.url(),
        org.instance()?,
        org.id("permission_sets", ADMIN_PS)?,
    );
    let mallory_id = org.id("users", "mallory")?;
    let (account, mallory) = (orders.clone(), mallory_id.clone());
    tokio::task::spawn_blocking(move || {
        aws_org::create_assignment_directly(&url, &instance, &account, &ps, "USER", &mallory)
    })
    .await??;
    // And a group standing AdministratorAccess in shared-services.
    let (url, instance, ps) = (
        org.moto.url(),
        org.instance()?,
        org.id("permission_sets", ADMIN_PS)?,
    );
    let (shared, group) = (
        org.id("accounts", "shared-services")?,
        org.id("groups", "platform-admins")?,
    );
    let account = shared.clone();
    tokio::task::spawn_blocking(move || {
        aws_org::create_assignment_directly(&url, &instance, &account, &ps, "GROUP", &group)
    })
    .await??;

    // Only admins run it; the report names mallory's and not alice's.
    let (status, _) = app
        .post("alice", "/api/v1/targets/aws/reconcile", json!({}))
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, report) = app
        .post("dave", "/api/v1/targets/aws/reconcile", json!({}))
        .await?;
    ensure!(status == StatusCode::OK, "{status} {report}");
    let unmanaged = report["unmanaged"].as_array().context("no findings")?;
    ensure!(unmanaged.len() == 2, "{report}");
    let user = unmanaged
        .iter()
        .find(|f| f["principal_type"] == "USER")
        .context("no user finding")?;
    assert_eq!(user["resource"], orders.as_str());
    assert_eq!(user["principal_name"], "mallory");
    assert_eq!(user["resource_name"], "orders-prod");
    assert_eq!(user["removed"], false);
    let group = unmanaged
        .iter()
        .find(|f| f["principal_type"] == "GROUP")
        .context("no group finding")?;
    assert_eq!(group["resource"], shared.as_str());
    assert_eq!(group["principal_name"], "platform-admins");
    // alice's, mallory's and the group's.
    assert_eq!(report["assignments"], 3);
    // In the audit trail (a target event, no request), once: the same
    // finding again does not repeat it.
    let audited = |v: &Value| {
        v["events"].as_array().map_or(0, |e| {
            e.iter()
                .filter(|x| x["action"] == "target.unmanaged_access" && x["request"].is_null())
                .count()
        })
    };
    let (_, audit) = app.get("dave", "/api/v1/audit").await?;
    ensure!(audited(&audit) >= 1, "{audit}");
    let first_count = audited(&audit);
    ensure!(audit.to_string().contains(&mallory_id), "{audit}");
    // Kept: auditors read it later, the CLI prints it, metrics count it.
    let (status, last) = app
        .get("dave", "/api/v1/targets/aws/reconciliation")
        .await?;
    ensure!(
        status == StatusCode::OK && last["unmanaged"] == report["unmanaged"],
        "{status} {last}"
    );
    let printed = cli_ok(&app.url, "dave", &["targets", "reconcile", "aws"])?;
    ensure!(
        printed.contains("orders-prod") && printed.contains("mallory"),
        "{printed}"
    );
    let (_, audit) = app.get("dave", "/api/v1/audit").await?;
    ensure!(audited(&audit) == first_count, "repeated: {audit}");
    let metrics = reqwest::get(format!("{}/metrics", app.url))
        .await?
        .text()
        .await?;
    ensure!(
        metrics.contains("elevate_unmanaged_assignments{target=\"aws\"} 2"),
        "{metrics}"
    );
    // The admin page shows when the tree was read and the finding.
    let browser = signed_in(&app, "dave").await?;
    let (status, html) = page(&app, &browser, "/admin").await?;
    ensure!(status == StatusCode::OK, "{status}");
    ensure!(
        html.contains("2 not given through elevate")
            && html.contains("orders-prod")
            && html.contains("mallory"),
        "{html}"
    );
    ensure!(html.contains("Read from the target"), "{html}");
    // The admin (dave) got one mail naming both findings; nobody else
    // (the requester, the approvers) hears of the target.
    let found = "2 assignments on aws were not given through elevate";
    let told = wait_for_subject(&smtp, found, 1).await?;
    ensure!(told[0].to == ["dave@example.com"], "{:?}", told[0].to);
    for expected in [
        &format!("user mallory: {ADMIN_PS} on orders-prod ({orders})"),
        &format!("group platform-admins: {ADMIN_PS} on shared-services ({shared})"),
        &"elevate targets reconciliation aws".to_owned(),
    ] {
        ensure!(
            told[0].text.contains(expected.as_str()),
            "{expected} not in {}",
            told[0].text
        );
    }
    ensure!(told[0].html.contains("mallory"), "{}", told[0].html);
    app.stop().await;

    // The same server configured to remove what it finds.
    let text = format!("{}{mail}", config(dir.path(), &org, "remove")?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = TestApp::start_with(&text, listener, BTreeMap::new()).await?;
    let (status, report) = app
        .post("dave", "/api/v1/targets/aws/reconcile", json!({}))
        .await?;
    ensure!(status == StatusCode::OK, "{status} {report}");
    // The period's reconciliation was made before the restart, so this
    // is the one that finds mallory's assignment and removes it; alice's
    // grant keeps hers.
    let findings = report["unmanaged"].as_array().context("no findings")?;
    ensure!(
        findings.len() == 2 && findings.iter().all(|f| f["removed"] == true),
        "{report}"
    );
    ensure!(
        org.holders(&shared, ADMIN_PS).await?.is_empty(),
        "the group's assignment stayed"
    );
    assert!(org.holders(&orders, ADMIN_PS).await?.is_empty());
    assert_eq!(
        org.holders(&payments, ADMIN_PS).await?,
        vec![org.id("users", "asmith")?]
    );
    // The findings changed (now removed): dave hears that too.
    let told = wait_for_subject(&smtp, found, 2).await?;
    ensure!(
        told[1].text.contains("(removed by elevate)"),
        "{}",
        told[1].text
    );
    Ok(())
}

/// The mails whose subject contains `marker`, once there are `n`; more
/// than `n` is an error (a target event mailed twice, or to others).
async fn wait_for_subject(smtp: &SmtpServer, marker: &str, n: usize) -> Result<Vec<ReceivedMail>> {
    eventually("the reconciliation mail", WAIT, || async {
        let seen = smtp.messages()?;
        Ok(seen.iter().filter(|m| m.subject.contains(marker)).count() >= n)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all: Vec<ReceivedMail> = smtp
        .messages()?
        .into_iter()
        .filter(|m| m.subject.contains(marker))
        .collect();
    ensure!(all.len() == n, "{} mails about it, {n} expected", all.len());
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_refresh_reads_a_new_account_at_once_and_only_for_admins() -> Result<()> {
    let org = org().await?;
    let dir = tempfile::tempdir()?;
    let app = start(&org, dir.path(), None).await?;
    let url = org.moto.url();
    let prod = org.id("ous", "Prod")?;
    tokio::task::spawn_blocking(move || {
        aws_org::add_account(&url, &prod, "ledger-prod", &json!({"env": "prod"}))
    })
    .await??;
    let out = cli(&app.url, "alice", &["targets", "refresh", "aws"])?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("only admins"));
    let printed = cli_ok(&app.url, "dave", &["targets", "refresh", "aws"])?;
    ensure!(
        printed.contains("6 accounts") && printed.contains("never granted"),
        "{printed}"
    );
    let (_, eligible) = app
        .get("alice", "/api/v1/eligible?target=aws&q=ledger")
        .await?;
    ensure!(eligible.to_string().contains("ledger-prod"), "{eligible}");

    // The tree is kept in the store: restarted while AWS cannot be
    // reached, elevate still lists it.
    let text = config(dir.path(), &org, "report")?;
    app.stop().await;
    drop(org);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = TestApp::start_with(&text, listener, BTreeMap::new()).await?;
    let (_, eligible) = app
        .get("alice", "/api/v1/eligible?target=aws&q=ledger")
        .await?;
    ensure!(eligible.to_string().contains("ledger-prod"), "{eligible}");
    // A refresh now fails with the reason and keeps the tree.
    let (status, v) = app
        .post("dave", "/api/v1/targets/aws/refresh", json!({}))
        .await?;
    ensure!(
        status == StatusCode::BAD_GATEWAY && v["code"] == "target_unavailable",
        "{status} {v}"
    );
    let (_, eligible) = app.get("alice", "/api/v1/eligible?target=aws").await?;
    ensure!(eligible.to_string().contains("payments-prod"), "{eligible}");
    Ok(())
}
