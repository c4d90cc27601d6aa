//! The `aws-identity-center` provider against a real AWS API emulator
//! (moto, started by `elevate_testkit::moto`; needs `moto[server]`).
//! Every test starts its own moto and seeds it (`elevate_testkit::aws_org`)
//! with an Organization, Identity Store users and permission sets, so
//! tests are independent and run in parallel. Effects are checked on moto
//! through boto3, outside elevate.
//!
//! moto's assignment changes always succeed at once and it never
//! throttles; the tests of the asynchronous and failure paths inject
//! those answers around the real client (`faults`), and say so. Hence
//! this binary needs the `faults` feature:
//! `cargo test -p elevate-providers --features faults`.
//!
//! The seeding helpers and `MotoServer::start` are blocking: they run
//! before or between the provider's calls, never during one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use elevate_providers::aws_identity_center::faults::{Call, Faults};
use elevate_providers::aws_identity_center::AwsIdentityCenter;
use elevate_providers::identity_center::IdentityCenterConfig;
use elevate_providers::sessions::StaticKeys;
use elevate_providers::{GrantSpec, Inventory, Presence, Provider, ProviderError};
use elevate_testkit::aws_org::{self, Seeded};
use elevate_testkit::moto::MotoServer;
use serde_json::{json, Value};

/// An organization of a few accounts at several depths, users whose
/// names and addresses differ in case from elevate's, and two permission
/// sets.
fn small_org() -> Value {
    json!({
        "accounts": [{"name": "sandbox", "tags": {"env": "dev"}}],
        "ous": [{
            "name": "Workloads",
            "tags": {"team": "platform"},
            "ous": [{
                "name": "Prod",
                "accounts": [{"name": "payments-prod", "tags": {"env": "prod", "owner": "payments"}}],
                "ous": [{"name": "Critical", "accounts": [{"name": "ledger-prod"}]}]
            }]
        }],
        "users": [
            {"user_name": "asmith", "display_name": "Alice Smith", "emails": ["Alice@Example.COM"]},
            {"user_name": "Bob", "display_name": "Bob Jones", "emails": ["bob@example.com"]},
            {"user_name": "carol", "display_name": "Carol", "emails": ["carol@example.com"]},
            {"user_name": "dan", "display_name": "Dan, no e-mail"},
            // U+212A KELVIN SIGN, which `to_lowercase` turns into "k".
            {"user_name": "kelvin", "display_name": "Kelvin", "emails": ["\u{212A}im@example.com"]}
        ],
        "groups": [{"name": "ops", "members": ["carol"]}],
        "permission_sets": ["ReadOnly", "Admin"]
    })
}

fn config(moto: &MotoServer) -> IdentityCenterConfig {
    IdentityCenterConfig {
        region: "us-east-1".to_owned(),
        endpoint_url: Some(moto.url()),
        keys: Some(StaticKeys {
            access_key_id: "testing".to_owned(),
            secret_access_key: "testing".to_owned(),
        }),
        instance_arn: None,
        identity_store_id: None,
        permission_sets: Vec::new(),
        allow_management_account: false,
        poll_interval: Duration::from_millis(20),
        poll_timeout: Duration::from_secs(5),
    }
}

struct Fixture {
    moto: MotoServer,
    seeded: Seeded,
    provider: AwsIdentityCenter,
    /// The provider's fault script (empty unless a test writes one).
    faults: Arc<Faults>,
    inventory: Inventory,
}

/// moto seeded with `spec`, and a provider on it that has discovered and
/// adopted the inventory. With `faulty`, the provider's assignment calls
/// go through the fault wrapper.
async fn start_with(
    spec: Value,
    faulty: bool,
    adjust: impl FnOnce(&mut IdentityCenterConfig),
) -> anyhow::Result<Fixture> {
    let moto = MotoServer::start()?;
    let seeded = aws_org::seed_typed(&moto.url(), &spec)?;
    let mut config = config(&moto);
    adjust(&mut config);
    let faults = Faults::new();
    let provider = if faulty {
        AwsIdentityCenter::with_faults(config, faults.clone()).await?
    } else {
        AwsIdentityCenter::new(config).await?
    };
    let inventory = provider.discover().await?;
    provider.adopt(&inventory);
    Ok(Fixture {
        moto,
        seeded,
        provider,
        faults,
        inventory,
    })
}

async fn start() -> anyhow::Result<Fixture> {
    start_with(small_org(), false, |_| {}).await
}

async fn start_faulty() -> anyhow::Result<Fixture> {
    start_with(small_org(), true, |_| {}).await
}

impl Fixture {
    fn account(&self, name: &str) -> String {
        self.seeded.accounts[name].clone()
    }

    /// A grant of `role` in account `account` (by name) to elevate user
    /// `user`, with the account the provider recorded when it was
    /// prepared.
    async fn grant(
        &self,
        account: &str,
        role: &str,
        user: &str,
        email: &str,
    ) -> anyhow::Result<GrantSpec> {
        let mut grant = spec(&self.account(account), role, user, Some(email));
        grant.account = self.provider.prepare(&grant).await?;
        Ok(grant)
    }

    /// `(principal_type, principal_id)` holding `role` in `account`,
    /// as moto says.
    fn holders(&self, account: &str, role: &str) -> anyhow::Result<Vec<(String, String)>> {
        aws_org::list_assignments(
            &self.moto.url(),
            &self.seeded.instance_arn,
            &self.account(account),
            &self.seeded.permission_sets[role],
        )
    }

    fn user(&self, name: &str) -> (String, String) {
        ("USER".to_owned(), self.seeded.users[name].clone())
    }

    /// What a grant records: the Identity Store user id and the
    /// permission set's ARN.
    fn recorded(&self, user: &str, role: &str) -> String {
        format!(
            "{} {}",
            self.seeded.users[user], self.seeded.permission_sets[role]
        )
    }
}

fn spec(resource: &str, role: &str, user: &str, email: Option<&str>) -> GrantSpec {
    GrantSpec {
        request_id: "req-1".to_owned(),
        target: "aws".to_owned(),
        resource: resource.to_owned(),
        role: role.to_owned(),
        user: user.to_owned(),
        email: email.map(str::to_owned),
        account: None,
        window_ends_at: None,
        ended_early: false,
        email_unverified: false,
    }
}

fn permanent(result: Result<impl std::fmt::Debug, ProviderError>) -> anyhow::Result<String> {
    match result {
        Err(ProviderError::Permanent(message)) => Ok(message),
        other => bail!("expected a permanent error, got {other:?}"),
    }
}

fn retryable(result: Result<impl std::fmt::Debug, ProviderError>) -> anyhow::Result<String> {
    match result {
        Err(ProviderError::Retryable(message)) => Ok(message),
        other => bail!("expected a retryable error, got {other:?}"),
    }
}

fn busy(result: Result<impl std::fmt::Debug, ProviderError>) -> anyhow::Result<String> {
    match result {
        Err(ProviderError::Busy(message)) => Ok(message),
        other => bail!("expected a busy answer, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_finds_nested_ous_names_tags_and_every_page_of_accounts() -> anyhow::Result<()> {
    let mut org = small_org();
    // More accounts in one OU than moto answers in one page (20).
    let many: Vec<Value> = (1..=25)
        .map(|n| json!({"name": format!("stage-{n:02}")}))
        .collect();
    org["ous"]
        .as_array_mut()
        .context("ous")?
        .push(json!({"name": "Staging", "accounts": many}));
    let f = start_with(org, false, |_| {}).await.context("started")?;
    let by_id: BTreeMap<&str, _> = f
        .inventory
        .resources
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();

    let root = by_id[f.seeded.root.as_str()];
    assert_eq!((root.kind.as_str(), root.parent.as_deref()), ("root", None));
    let workloads = &f.seeded.ous["Workloads"];
    let prod = &f.seeded.ous["Prod"];
    let critical = &f.seeded.ous["Critical"];
    assert_eq!(by_id[workloads.as_str()].kind, "ou");
    assert_eq!(by_id[workloads.as_str()].name.as_deref(), Some("Workloads"));
    assert_eq!(
        by_id[workloads.as_str()].parent.as_deref(),
        Some(f.seeded.root.as_str())
    );
    assert_eq!(
        by_id[prod.as_str()].parent.as_deref(),
        Some(workloads.as_str())
    );
    assert_eq!(
        by_id[critical.as_str()].parent.as_deref(),
        Some(prod.as_str())
    );

    // Three OUs deep.
    let ledger = by_id[f.account("ledger-prod").as_str()];
    assert_eq!(ledger.kind, "account");
    assert_eq!(ledger.name.as_deref(), Some("ledger-prod"));
    assert_eq!(ledger.parent.as_deref(), Some(critical.as_str()));

    let payments = by_id[f.account("payments-prod").as_str()];
    assert_eq!(payments.parent.as_deref(), Some(prod.as_str()));
    assert_eq!(
        payments.tags,
        BTreeMap::from([
            ("env".to_owned(), "prod".to_owned()),
            ("owner".to_owned(), "payments".to_owned())
        ])
    );
    let sandbox = by_id[f.account("sandbox").as_str()];
    assert_eq!(sandbox.parent.as_deref(), Some(f.seeded.root.as_str()));
    assert_eq!(sandbox.tags["env"], "dev");

    let staging = &f.seeded.ous["Staging"];
    let staged = f
        .inventory
        .resources
        .iter()
        .filter(|r| r.kind == "account" && r.parent.as_deref() == Some(staging.as_str()))
        .count();
    assert_eq!(staged, 25);

    assert_eq!(
        f.inventory.roles,
        BTreeMap::from([
            (
                "Admin".to_owned(),
                f.seeded.permission_sets["Admin"].clone()
            ),
            (
                "ReadOnly".to_owned(),
                f.seeded.permission_sets["ReadOnly"].clone()
            ),
        ])
    );
    assert_eq!(f.inventory.refused.len(), 1);
    let reason = &f.inventory.refused[&f.seeded.management_account];
    assert!(reason.contains("management account"), "{reason}");
    assert!(reason.contains("allow_management_account"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn discovery_offers_only_configured_permission_sets_and_validate_names_missing_ones(
) -> anyhow::Result<()> {
    let f = start_with(small_org(), false, |c| {
        c.permission_sets = vec!["ReadOnly".to_owned(), "Missing".to_owned()];
        c.allow_management_account = true;
    })
    .await
    .context("started")?;
    assert_eq!(
        f.inventory.roles.keys().collect::<Vec<_>>(),
        vec!["ReadOnly"]
    );
    assert!(f.inventory.refused.is_empty(), "{:?}", f.inventory.refused);
    let problems = f.provider.validate().await.context("validated")?;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("\"Missing\""), "{problems:?}");
    Ok(())
}

#[tokio::test]
async fn validate_is_content_with_a_working_setup() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    assert_eq!(
        f.provider.validate().await.context("validated")?,
        Vec::<String>::new()
    );
    Ok(())
}

#[tokio::test]
async fn prepare_finds_the_user_by_email_or_user_name_ignoring_case() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    let account = f.account("payments-prod");

    // The store has "asmith" with "Alice@Example.COM".
    let alice = spec(&account, "ReadOnly", "alice", Some("alice@example.com"));
    let recorded = f.provider.prepare(&alice).await.context("found")?;
    assert_eq!(recorded, Some(f.recorded("asmith", "ReadOnly")));
    assert_eq!(
        f.provider.principal_of(&recorded.context("recorded")?),
        f.seeded.users["asmith"]
    );
    // The store has "Bob"; a requester without an e-mail is found by
    // user name.
    let bob = spec(&account, "Admin", "bob", None);
    assert_eq!(
        f.provider.prepare(&bob).await.context("found")?,
        Some(f.recorded("Bob", "Admin"))
    );
    Ok(())
}

#[tokio::test]
async fn lookups_share_a_listing_of_the_store_yet_see_its_changes_at_once() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    let account = f.account("payments-prod");
    let user_of = |recorded: Option<String>| {
        recorded
            .and_then(|r| r.split(' ').next().map(str::to_owned))
            .unwrap_or_default()
    };
    let alice = spec(&account, "ReadOnly", "alice", Some("alice@example.com"));
    let bob = spec(&account, "ReadOnly", "bob", None);
    assert_eq!(
        user_of(f.provider.prepare(&alice).await?),
        f.seeded.users["asmith"]
    );
    let listed = f.provider.directory_listings();
    // Many lookups, found and confirmed, list the store no more.
    for _ in 0..5 {
        assert_eq!(
            user_of(f.provider.prepare(&alice).await?),
            f.seeded.users["asmith"]
        );
        assert_eq!(
            user_of(f.provider.prepare(&bob).await?),
            f.seeded.users["Bob"]
        );
    }
    assert_eq!(f.provider.directory_listings(), listed);

    // Someone provisioned after the listing is found at once.
    let url = f.moto.url();
    let zoe = tokio::task::spawn_blocking(move || {
        aws_org::add_user(
            &url,
            &json!({"user_name": "zoe", "emails": ["Zoe@Example.com"]}),
        )
    })
    .await??;
    let asks_zoe = spec(&account, "ReadOnly", "zoe", Some("zoe@example.com"));
    assert_eq!(user_of(f.provider.prepare(&asks_zoe).await?), zoe);

    // alice's address moves to a new user (the old one deleted): the
    // listing still names the old one, which the store no longer
    // confirms, so the new one is found, never the old.
    let (url, old) = (f.moto.url(), f.seeded.users["asmith"].clone());
    let moved = tokio::task::spawn_blocking(move || {
        aws_org::delete_user(&url, &old)?;
        aws_org::add_user(
            &url,
            &json!({"user_name": "alice.smith", "emails": ["alice@example.com"]}),
        )
    })
    .await??;
    assert_eq!(user_of(f.provider.prepare(&alice).await?), moved);

    // Someone the store does not know, asking again and again, costs at
    // most one listing per period, not one per request.
    let before = f.provider.directory_listings();
    let stranger = spec(&account, "ReadOnly", "mallory", Some("mallory@example.com"));
    for _ in 0..5 {
        permanent(f.provider.prepare(&stranger).await)?;
    }
    anyhow::ensure!(
        f.provider.directory_listings() <= before + 1,
        "{} listings for 5 lookups",
        f.provider.directory_listings() - before
    );
    Ok(())
}

#[tokio::test]
async fn prepare_refuses_a_user_name_match_without_the_requesters_email() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    let account = f.account("payments-prod");
    // "Bob" in the store has bob@example.com.
    let impostor = spec(&account, "ReadOnly", "bob", Some("bob@elsewhere.example"));
    let message = permanent(f.provider.prepare(&impostor).await)?;
    assert!(
        message.contains("the identity store user \"Bob\" has another e-mail address"),
        "{message}"
    );
    assert!(message.contains("ask an administrator"), "{message}");
    // "dan" in the store has no e-mail to tell.
    let dan = spec(&account, "ReadOnly", "dan", Some("dan@example.com"));
    let message = permanent(f.provider.prepare(&dan).await)?;
    assert!(
        message.contains("the identity store user \"dan\" has no e-mail address"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn an_email_with_a_kelvin_sign_is_not_an_ascii_k() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    // The store has \u{212A}im@example.com, which Unicode lowercases to
    // kim@example.com.
    let kim = spec(
        &f.account("sandbox"),
        "ReadOnly",
        "kim",
        Some("kim@example.com"),
    );
    let message = permanent(f.provider.prepare(&kim).await)?;
    assert!(
        message.contains("no user \"kim\" (kim@example.com)"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn prepare_refuses_a_user_the_identity_store_does_not_have() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    let dave = spec(
        &f.account("payments-prod"),
        "ReadOnly",
        "dave",
        Some("dave@example.com"),
    );
    let message = permanent(f.provider.prepare(&dave).await)?;
    assert!(
        message.contains("no user \"dave\" (dave@example.com)"),
        "{message}"
    );
    assert!(message.contains(&f.seeded.identity_store_id), "{message}");
    assert!(message.contains("ask an administrator"), "{message}");

    // "Bob" is in the store, found by user name for a requester without
    // an e-mail; but not for one whose provider gave an address it has
    // not verified: the user name is weaker evidence than that address.
    let mut unverified = spec(&f.account("payments-prod"), "ReadOnly", "bob", None);
    unverified.email_unverified = true;
    let message = permanent(f.provider.prepare(&unverified).await)?;
    assert!(
        message.contains("has not verified the e-mail address of \"bob\""),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn prepare_refuses_an_ambiguous_user() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    // "bob" is Bob's user name, carol@example.com is Carol's address.
    let both = spec(
        &f.account("sandbox"),
        "ReadOnly",
        "bob",
        Some("CAROL@example.com"),
    );
    let message = permanent(f.provider.prepare(&both).await)?;
    assert!(message.contains("several users"), "{message}");
    assert!(
        message.contains("an administrator must resolve"),
        "{message}"
    );
    // Who the others are is not the requester's to see.
    for (name, id) in [("Bob", "Bob"), ("(carol)", "carol")] {
        assert!(!message.contains(name), "{message}");
        assert!(!message.contains(&f.seeded.users[id]), "{message}");
    }
    Ok(())
}

#[tokio::test]
async fn prepare_refuses_the_management_account_unknown_accounts_and_roles() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    let management = spec(
        &f.seeded.management_account,
        "ReadOnly",
        "alice",
        Some("alice@example.com"),
    );
    let message = permanent(f.provider.prepare(&management).await)?;
    assert!(message.contains("management account"), "{message}");
    // apply refuses it too (the config may change after a request).
    let message = permanent(f.provider.apply(&management).await)?;
    assert!(message.contains("management account"), "{message}");

    let unknown_account = spec("999999999999", "ReadOnly", "alice", None);
    let message = permanent(f.provider.prepare(&unknown_account).await)?;
    assert!(message.contains("999999999999"), "{message}");

    let unknown_role = spec(&f.account("sandbox"), "PowerUser", "alice", None);
    let message = permanent(f.provider.prepare(&unknown_role).await)?;
    assert!(message.contains("\"PowerUser\""), "{message}");
    Ok(())
}

#[tokio::test]
async fn apply_is_idempotent_and_remove_takes_the_assignment_away() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    let grant = f
        .grant("payments-prod", "ReadOnly", "alice", "alice@example.com")
        .await?;
    assert_eq!(
        f.provider.check(&grant).await.context("checked")?,
        Presence::Absent
    );

    f.provider.apply(&grant).await.context("applied")?;
    assert_eq!(
        f.holders("payments-prod", "ReadOnly")?,
        vec![f.user("asmith")]
    );
    assert_eq!(
        f.provider.check(&grant).await.context("checked")?,
        Presence::Present
    );

    // moto would store a second copy: the provider must not ask it to.
    f.provider.apply(&grant).await.context("applied again")?;
    assert_eq!(
        f.holders("payments-prod", "ReadOnly")?,
        vec![f.user("asmith")]
    );
    assert!(f.holders("payments-prod", "Admin")?.is_empty());

    f.provider.remove(&grant).await.context("removed")?;
    assert!(f.holders("payments-prod", "ReadOnly")?.is_empty());
    assert_eq!(
        f.provider.check(&grant).await.context("checked")?,
        Presence::Absent
    );
    f.provider.remove(&grant).await.context("removed again")?;

    // Same Identity Store user, account and permission set: one
    // assignment, one key, whichever elevate user asked ("asmith"
    // without an e-mail is found by user name).
    let mut other = spec(&f.account("payments-prod"), "ReadOnly", "asmith", None);
    other.request_id = "req-2".to_owned();
    other.account = f.provider.prepare(&other).await?;
    assert_eq!(f.provider.grant_key(&grant), f.provider.grant_key(&other));
    assert_eq!(
        f.provider.grant_key(&grant),
        format!(
            "{}/{}/{}",
            f.account("payments-prod"),
            f.seeded.permission_sets["ReadOnly"],
            f.seeded.users["asmith"]
        )
    );
    Ok(())
}

#[tokio::test]
async fn grants_recorded_without_the_user_or_permission_set_use_todays() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    let grant = spec(
        &f.account("ledger-prod"),
        "Admin",
        "ALICE",
        Some("alice@EXAMPLE.com"),
    );
    f.provider.apply(&grant).await.context("applied")?;
    assert_eq!(f.holders("ledger-prod", "Admin")?, vec![f.user("asmith")]);
    f.provider.remove(&grant).await.context("removed")?;
    assert!(f.holders("ledger-prod", "Admin")?.is_empty());

    // Recorded before the ARN was: the user id alone.
    let mut grant = spec(&f.account("ledger-prod"), "Admin", "someone", None);
    grant.account = Some(f.seeded.users["carol"].clone());
    f.provider.apply(&grant).await.context("applied")?;
    assert_eq!(f.holders("ledger-prod", "Admin")?, vec![f.user("carol")]);
    f.provider.remove(&grant).await.context("removed")?;
    assert!(f.holders("ledger-prod", "Admin")?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_grant_is_removed_whatever_became_of_its_permission_sets_name() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    let grant = f
        .grant("payments-prod", "ReadOnly", "alice", "alice@example.com")
        .await?;
    assert_eq!(grant.account, Some(f.recorded("asmith", "ReadOnly")));
    f.provider.apply(&grant).await.context("applied")?;

    // "ReadOnly" now names another permission set (renamed, or the old
    // one deleted and the name reused).
    let mut renamed = f.inventory.clone();
    renamed.roles.insert(
        "ReadOnly".to_owned(),
        f.seeded.permission_sets["Admin"].clone(),
    );
    f.provider.adopt(&renamed);
    assert_eq!(f.provider.check(&grant).await?, Presence::Present);
    // What was approved was the permission set of then.
    let message = permanent(f.provider.apply(&grant).await)?;
    assert!(message.contains("ask again"), "{message}");

    // And then no permission set of that name is offered at all
    // (deleted, or dropped from `permission_sets`).
    let mut dropped = f.inventory.clone();
    dropped.roles.remove("ReadOnly");
    f.provider.adopt(&dropped);
    f.provider.remove(&grant).await.context("removed")?;
    assert!(f.holders("payments-prod", "ReadOnly")?.is_empty());
    assert!(f.holders("payments-prod", "Admin")?.is_empty());
    assert_eq!(f.provider.check(&grant).await?, Presence::Absent);
    f.provider.remove(&grant).await.context("removed again")?;
    Ok(())
}

/// Injected: moto never fails a creation.
#[tokio::test]
async fn a_failed_creation_is_permanent_with_aws_reason_and_leaves_nothing() -> anyhow::Result<()> {
    let f = start_faulty().await.context("started")?;
    let grant = f
        .grant("payments-prod", "ReadOnly", "alice", "alice@example.com")
        .await?;
    f.faults.fail_next_creation(
        "Received a 404 status error: Not supported policy arn:aws:iam::aws:policy/Nope.",
    );
    let message = permanent(f.provider.apply(&grant).await)?;
    assert!(
        message.contains("could not create the assignment"),
        "{message}"
    );
    assert!(
        message.contains("Not supported policy arn:aws:iam::aws:policy/Nope."),
        "{message}"
    );
    assert!(f.holders("payments-prod", "ReadOnly")?.is_empty());
    Ok(())
}

/// Injected: moto never throttles.
#[tokio::test]
async fn a_throttled_creation_is_retryable_until_aws_lets_it_through() -> anyhow::Result<()> {
    let f = start_faulty().await.context("started")?;
    let grant = f
        .grant("payments-prod", "ReadOnly", "alice", "alice@example.com")
        .await?;
    f.faults.throttle(Call::Create, 2);
    for _ in 0..2 {
        let message = retryable(f.provider.apply(&grant).await)?;
        assert!(message.contains("ThrottlingException"), "{message}");
        assert!(message.contains("CreateAccountAssignment"), "{message}");
    }
    f.provider.apply(&grant).await.context("applied")?;
    // One call per attempt, each seen by the caller.
    assert_eq!(f.faults.calls(Call::Create), 3);
    assert_eq!(
        f.holders("payments-prod", "ReadOnly")?,
        vec![f.user("asmith")]
    );
    Ok(())
}

/// Injected: moto never reports another change in progress.
#[tokio::test]
async fn a_conflicting_change_is_an_expected_wait() -> anyhow::Result<()> {
    let f = start_faulty().await.context("started")?;
    let grant = f
        .grant("sandbox", "Admin", "alice", "alice@example.com")
        .await?;
    f.faults.conflict(Call::Create, 1);
    let message = busy(f.provider.apply(&grant).await)?;
    assert!(message.contains("ConflictException"), "{message}");
    f.provider.apply(&grant).await.context("applied")?;
    assert_eq!(f.holders("sandbox", "Admin")?, vec![f.user("asmith")]);

    f.faults.conflict(Call::Delete, 1);
    let message = busy(f.provider.remove(&grant).await)?;
    assert!(message.contains("ConflictException"), "{message}");
    f.provider.remove(&grant).await.context("removed")?;
    assert!(f.holders("sandbox", "Admin")?.is_empty());
    Ok(())
}

/// Injected: moto's changes never stay in progress.
#[tokio::test]
async fn an_assignment_in_progress_is_waited_for() -> anyhow::Result<()> {
    let f = start_faulty().await.context("started")?;
    let grant = f
        .grant("payments-prod", "ReadOnly", "alice", "alice@example.com")
        .await?;
    f.faults.in_progress(2);
    f.provider.apply(&grant).await.context("applied")?;
    assert_eq!(f.faults.calls(Call::DescribeCreation), 3);
    assert_eq!(
        f.holders("payments-prod", "ReadOnly")?,
        vec![f.user("asmith")]
    );

    f.faults.in_progress(2);
    f.provider.remove(&grant).await.context("removed")?;
    assert_eq!(f.faults.calls(Call::DescribeDeletion), 3);
    assert!(f.holders("payments-prod", "ReadOnly")?.is_empty());
    Ok(())
}

/// How many in-progress answers outlast two calls of 200 ms at one
/// poll every 20 ms (at most 11 polls per call), but not many more.
const BEYOND_TWO_CALLS: usize = 30;

async fn start_impatient() -> anyhow::Result<Fixture> {
    start_with(small_org(), true, |c| {
        c.poll_timeout = Duration::from_millis(200);
    })
    .await
}

/// Injected: moto's changes never stay in progress.
#[tokio::test]
async fn a_creation_still_in_progress_is_waited_for_not_made_again() -> anyhow::Result<()> {
    let f = start_impatient().await.context("started")?;
    let grant = f
        .grant("payments-prod", "ReadOnly", "alice", "alice@example.com")
        .await?;
    f.faults.in_progress(BEYOND_TWO_CALLS);
    let message = busy(f.provider.apply(&grant).await)?;
    assert!(message.contains("still creating"), "{message}");
    assert!(message.contains("request "), "{message}");

    // Later attempts ask how that creation went until AWS says it is done.
    let mut attempts = 1;
    while let Err(error) = f.provider.apply(&grant).await {
        assert!(matches!(error, ProviderError::Busy(_)), "{error:?}");
        attempts += 1;
        assert!(attempts < 30, "still in progress after {attempts} attempts");
    }
    assert!(attempts >= 2, "the second attempt should still have waited");
    assert_eq!(f.faults.calls(Call::Create), 1);
    assert!(f.faults.calls(Call::DescribeCreation) > BEYOND_TWO_CALLS);
    assert_eq!(
        f.holders("payments-prod", "ReadOnly")?,
        vec![f.user("asmith")]
    );
    Ok(())
}

/// Injected: moto's changes never stay in progress. On AWS, a creation
/// in progress is not listed yet: a removal that only looked would find
/// nothing, succeed, and the creation would finish after it.
#[tokio::test]
async fn a_removal_waits_for_a_creation_still_in_progress_then_deletes_it() -> anyhow::Result<()> {
    let f = start_impatient().await.context("started")?;
    let grant = f
        .grant("payments-prod", "ReadOnly", "alice", "alice@example.com")
        .await?;
    f.faults.in_progress(BEYOND_TWO_CALLS);
    busy(f.provider.apply(&grant).await)?;

    // The grant is revoked while AWS is still creating. Removals wait
    // (and say so) until the injected answers are used up; the last
    // ones may be the deletion's.
    let mut removals = 0;
    loop {
        removals += 1;
        assert!(removals < 30, "still waiting after {removals} removals");
        match f.provider.remove(&grant).await {
            Ok(()) => break,
            Err(ProviderError::Busy(message)) if message.contains("still creating") => {
                assert_eq!(f.faults.calls(Call::Delete), 0, "deleted while creating");
            }
            Err(ProviderError::Busy(message)) if message.contains("still deleting") => {}
            Err(other) => bail!("removal failed: {other:?}"),
        }
    }
    assert!(removals >= 2, "the first removal should have waited");
    assert_eq!(f.faults.calls(Call::Delete), 1);
    assert!(f.holders("payments-prod", "ReadOnly")?.is_empty());
    // Nothing left to wait for: the next removal asks AWS nothing more.
    let described = f.faults.calls(Call::DescribeCreation);
    f.provider.remove(&grant).await.context("removed again")?;
    assert_eq!(f.faults.calls(Call::DescribeCreation), described);
    Ok(())
}

/// Injected: moto never fails a deletion.
#[tokio::test]
async fn a_failed_deletion_is_retryable_with_aws_reason() -> anyhow::Result<()> {
    let f = start_faulty().await.context("started")?;
    let grant = f
        .grant("payments-prod", "ReadOnly", "alice", "alice@example.com")
        .await?;
    f.provider.apply(&grant).await.context("applied")?;
    f.faults.fail_next_deletion("Internal failure, try again");
    let message = retryable(f.provider.remove(&grant).await)?;
    assert!(
        message.contains("could not delete the assignment"),
        "{message}"
    );
    assert!(message.contains("Internal failure, try again"), "{message}");
    f.provider.remove(&grant).await.context("removed")?;
    assert!(f.holders("payments-prod", "ReadOnly")?.is_empty());
    Ok(())
}

#[tokio::test]
async fn assignments_include_those_made_outside_elevate_with_names() -> anyhow::Result<()> {
    let f = start().await.context("started")?;
    let grant = f
        .grant("payments-prod", "ReadOnly", "alice", "alice@example.com")
        .await?;
    f.provider.apply(&grant).await.context("applied")?;
    let url = f.moto.url();
    let readonly = &f.seeded.permission_sets["ReadOnly"];
    aws_org::create_assignment_directly(
        &url,
        &f.seeded.instance_arn,
        &f.account("sandbox"),
        readonly,
        "USER",
        &f.seeded.users["carol"],
    )
    .context("created")?;
    aws_org::create_assignment_directly(
        &url,
        &f.seeded.instance_arn,
        &f.account("ledger-prod"),
        readonly,
        "GROUP",
        &f.seeded.groups["ops"],
    )
    .context("created")?;

    let found = f
        .provider
        .assignments(&["ReadOnly".to_owned(), "NoSuchRole".to_owned()])
        .await
        .context("listed")?
        .context("listable")?;
    let mut seen: Vec<(String, String, String, String, Option<String>)> = found
        .into_iter()
        .map(|a| {
            (
                a.resource,
                a.role,
                a.principal_type,
                a.principal_id,
                a.principal_name,
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (
            f.account("payments-prod"),
            "ReadOnly".to_owned(),
            "USER".to_owned(),
            f.seeded.users["asmith"].clone(),
            Some("asmith".to_owned()),
        ),
        (
            f.account("sandbox"),
            "ReadOnly".to_owned(),
            "USER".to_owned(),
            f.seeded.users["carol"].clone(),
            Some("carol".to_owned()),
        ),
        (
            f.account("ledger-prod"),
            "ReadOnly".to_owned(),
            "GROUP".to_owned(),
            f.seeded.groups["ops"].clone(),
            Some("ops".to_owned()),
        ),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    // Reconciliation takes away what no grant accounts for.
    let carol = elevate_providers::Assignment {
        resource: f.account("sandbox"),
        role: "ReadOnly".to_owned(),
        principal_type: "USER".to_owned(),
        principal_id: f.seeded.users["carol"].clone(),
        principal_name: Some("carol".to_owned()),
    };
    f.provider
        .remove_assignment(&carol)
        .await
        .context("removed")?;
    assert!(f.holders("sandbox", "ReadOnly")?.is_empty());
    f.provider
        .remove_assignment(&carol)
        .await
        .context("removed again")?;
    Ok(())
}

#[tokio::test]
async fn a_cached_inventory_does_not_outlive_the_management_account_setting() -> anyhow::Result<()>
{
    // Discovered while the management account was allowed...
    let f = start_with(small_org(), false, |c| c.allow_management_account = true).await?;
    assert!(f.inventory.refused.is_empty());
    let management = spec(
        &f.seeded.management_account,
        "ReadOnly",
        "alice",
        Some("alice@example.com"),
    );
    assert!(f.provider.prepare(&management).await?.is_some());

    // ...and read back from the cache after the config stopped allowing it.
    let strict = AwsIdentityCenter::new(config(&f.moto)).await?;
    strict.adopt(&f.inventory);
    let message = permanent(strict.prepare(&management).await)?;
    assert!(message.contains("management account"), "{message}");
    let message = permanent(strict.apply(&management).await)?;
    assert!(message.contains("management account"), "{message}");
    let readonly = &f.seeded.permission_sets["ReadOnly"];
    aws_org::create_assignment_directly(
        &f.moto.url(),
        &f.seeded.instance_arn,
        &f.seeded.management_account,
        readonly,
        "USER",
        &f.seeded.users["carol"],
    )?;
    let found = strict
        .assignments(&["ReadOnly".to_owned()])
        .await?
        .context("listable")?;
    assert!(found.is_empty(), "{found:?}");

    // The other way round: a cached refusal is dropped once allowed.
    let strict_inventory = strict.discover().await?;
    assert!(!strict_inventory.refused.is_empty());
    let lenient = AwsIdentityCenter::new(IdentityCenterConfig {
        allow_management_account: true,
        ..config(&f.moto)
    })
    .await?;
    lenient.adopt(&strict_inventory);
    assert!(lenient.prepare(&management).await?.is_some());
    Ok(())
}
