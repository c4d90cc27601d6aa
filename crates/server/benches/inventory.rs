//! Listing what a person may ask for when the accounts come from AWS
//! Organizations: an `aws-identity-center` target whose cached inventory
//! holds 1,000 accounts in a nested OU tree and 750 permission sets (the
//! size at which AWS TEAM takes minutes and fails).
//!
//! The inventory is built as discovery stores it (the JSON document kept
//! in the `inventories` table), then measured, `BENCH_ROUNDS` (30) times
//! each:
//! - `install`: decoding the stored document, turning it into catalog
//!   resources and roles, swapping the catalog, and the first listing
//!   (which builds the lookup tables): what a replica does when it takes a
//!   refreshed inventory;
//! - listings on the installed catalog (`Catalog::browse_eligible`, what
//!   the request page and `GET /api/v1/eligible?limit=` call): the first
//!   page, a text search, a role + tag filter, the last page, and the
//!   whole list (what the unpaged API builds), for a user eligible for
//!   every permission set below the root.
//!
//! No AWS is called: the config only names the target, as in production,
//! and the catalog is built from the config and the inventory the way the
//! server builds it. `cargo bench -p elevate --bench inventory` (`--json`).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::Result;
use elevate::config::Config;
use elevate_core::browse::BrowseFilter;
use elevate_core::principal::Principal;
use elevate_core::values::{GroupName, Name, UserName};
use elevate_providers::{FoundResource, Inventory};
use serde_json::json;

const ACCOUNTS_PER_OU: usize = 50;
const PERMISSION_SETS: usize = 750;

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| {
        v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
    };
    json!({"p50": p(0.5), "p99": p(0.99), "max": v.last(), "n": v.len()})
}

fn permission_set(i: usize) -> String {
    let kind = [
        "AdministratorAccess",
        "ReadOnly",
        "PowerUser",
        "Billing",
        "DatabaseAdmin",
        "NetworkAdmin",
    ][i % 6];
    format!("{kind}-{i:03}")
}

/// root ⊃ 4 OUs ⊃ 5 OUs each ⊃ 50 accounts each (names, `env` and
/// `team` tags), 750 permission sets, the management account refused.
fn inventory() -> Inventory {
    let found = |id: String, parent: Option<String>, name: String, kind: &str| FoundResource {
        id,
        parent,
        name: Some(name),
        kind: kind.into(),
        tags: BTreeMap::new(),
    };
    let mut resources = vec![found("r-ab12".into(), None, "Root".into(), "root")];
    resources.push(found(
        "111111111111".into(),
        Some("r-ab12".into()),
        "management".into(),
        "account",
    ));
    let mut account = 0u64;
    for a in 0..4 {
        let top = format!("ou-ab12-top{a:05}");
        resources.push(found(
            top.clone(),
            Some("r-ab12".into()),
            format!("division-{a}"),
            "ou",
        ));
        for b in 0..5 {
            let ou = format!("ou-ab12-{a}{b}000000");
            resources.push(found(
                ou.clone(),
                Some(top.clone()),
                format!("team-{a}-{b}"),
                "ou",
            ));
            for _ in 0..ACCOUNTS_PER_OU {
                let mut r = found(
                    format!("{:012}", 200_000_000_000 + account),
                    Some(ou.clone()),
                    format!("workload-{account:04}"),
                    "account",
                );
                r.tags.insert(
                    "env".into(),
                    ["prod", "staging", "dev"][account as usize % 3].into(),
                );
                r.tags
                    .insert("team".into(), format!("t{:02}", account % 20));
                resources.push(r);
                account += 1;
            }
        }
    }
    let roles = (0..PERMISSION_SETS)
        .map(|i| {
            (
                permission_set(i),
                format!("arn:aws:sso:::permissionSet/ssoins-1234567890abcdef/ps-{i:016x}"),
            )
        })
        .collect();
    let refused = [(
        "111111111111".to_owned(),
        "the organization's management account".to_owned(),
    )]
    .into_iter()
    .collect();
    Inventory {
        resources,
        roles,
        refused,
    }
}

fn config() -> String {
    let roles: Vec<String> = (0..PERMISSION_SETS)
        .map(|i| format!("\"{}\"", permission_set(i)))
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
database = "sqlite::memory:"

[[users]]
name = "alice"
groups = ["developers"]

[[targets]]
id = "aws"
kind = "aws-identity-center"
[targets.identity_center]
region = "us-east-1"

[[eligibilities]]
id = "developers-everything"
subjects = ["group:developers"]
target = "aws"
resources = {{ under = ["r-ab12"] }}
roles = [{roles}]
max_duration = "8h"
approval_required = false
"#,
        roles = roles.join(", ")
    )
}

fn main() -> Result<()> {
    let config = Config::parse(&config(), None).map_err(|p| anyhow::anyhow!("config: {p:?}"))?;
    let now = chrono::Utc::now();
    let base = config.catalog(&HashMap::new(), now);
    let target = Name::parse("target", "aws")?;
    let doc = serde_json::to_string(&inventory())?;
    let mut alice = Principal::new(UserName::parse("alice")?);
    alice.groups = [GroupName::parse("developers")?].into_iter().collect();
    let n = rounds();

    // Install: decode, convert, swap in, first listing.
    let mut install = Vec::new();
    let mut catalog = base.clone();
    for _ in 0..n {
        let t = Instant::now();
        let inv: Inventory = serde_json::from_str(&doc)?;
        let (resources, roles) = elevate::discovery::catalog_parts(&inv);
        catalog = base.with_inventory(&target, resources, roles, &Default::default());
        let first = catalog.browse_eligible(&alice, now, &BrowseFilter::default(), 0, 50);
        std::hint::black_box(first.total);
        install.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let everything = catalog
        .browse_eligible(&alice, now, &BrowseFilter::default(), 0, 1)
        .total;

    let mut listings = serde_json::Map::new();
    for (name, filter, offset, limit) in [
        ("first_page", BrowseFilter::default(), 0, 50),
        (
            "search_text",
            BrowseFilter::from_input("team-2-3 admin", "", "", ""),
            0,
            50,
        ),
        (
            "role_and_tag",
            BrowseFilter::from_input("", "", "billing", "env=prod"),
            0,
            50,
        ),
        (
            "last_page",
            BrowseFilter::default(),
            everything.saturating_sub(50),
            50,
        ),
        ("whole_list", BrowseFilter::default(), 0, usize::MAX),
    ] {
        let mut ms = Vec::new();
        let mut total = 0;
        let mut shown = 0;
        for _ in 0..n {
            let t = Instant::now();
            let page = catalog.browse_eligible(&alice, now, &filter, offset, limit);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            total = page.total;
            shown = page.entries.len();
        }
        listings.insert(
            name.into(),
            json!({"ms": stats(ms), "matches": total, "returned": shown}),
        );
    }
    let result = json!({
        "bench": "inventory",
        // The management account is in the tree but never offered.
        "accounts": 1 + 4 * 5 * ACCOUNTS_PER_OU,
        "accounts_offered": 4 * 5 * ACCOUNTS_PER_OU,
        "organizational_units": 4 + 4 * 5,
        "permission_sets": PERMISSION_SETS,
        "choices": everything,
        "stored_document_bytes": doc.len(),
        "install_ms": stats(install),
        "listing": listings,
    });
    if std::env::args().any(|a| a == "--json") {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}
