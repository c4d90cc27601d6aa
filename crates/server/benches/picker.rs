//! The request page with a large catalog: 1,000 accounts × 750 permission
//! sets (750,000 choices for one person), the size at which
//! list-everything pickers stop working.
//!
//! The generated config: one dry-run target whose 1,000 accounts sit in an
//! OU tree (`org` ⊃ 4 OUs ⊃ 5 OUs each ⊃ 50 tagged accounts each: `env`
//! prod/staging/dev, `team` t00–t19) with 750 roles named like permission
//! sets (`AdministratorAccess-000`, `ReadOnly-001`, `PowerUser-002`,
//! `Billing-003`, …); one eligibility gives group `developers` every role
//! on everything under `org`.
//!
//! Measured, `BENCH_ROUNDS` (30) times each, one at a time:
//! - in process, `Catalog::browse_eligible` (what the page calls) for the
//!   first page unfiltered, a text search, a role + tag filter, the last
//!   page; `Catalog::eligible_roles` (everything materialised in a map)
//!   and `browse_eligible` to the end (what the unpaged
//!   `GET /api/v1/eligible` builds) beside them for comparison;
//! - over HTTP with a signed-in browser session, `GET /request` with the
//!   same filters (lookup + HTML rendering + transfer), and the request
//!   form of one choice.
//!
//! `cargo bench -p elevate --bench picker` (`--json` for JSON).

use std::time::Instant;

use anyhow::{bail, Result};
use elevate::config::Config;
use elevate_core::browse::BrowseFilter;
use serde_json::json;

const ACCOUNTS_PER_OU: usize = 50;
const ROLES: usize = 750;

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

fn role_name(i: usize) -> String {
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

fn config(db: &std::path::Path) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"sqlite://{}\"\n\n",
        db.display()
    ));
    s.push_str(&format!(
        "[[users]]\nname = \"alice\"\ngroups = [\"developers\"]\ntoken_hashes = [\"{}\"]\n\n",
        elevate::auth::token_hash("t-alice")
    ));
    let roles: Vec<String> = (0..ROLES)
        .map(|i| format!("\"{}\"", role_name(i)))
        .collect();
    s.push_str(&format!(
        "[[targets]]\nid = \"aws\"\nkind = \"dry-run\"\nroles = [{}]\n",
        roles.join(", ")
    ));
    s.push_str("[[targets.resources]]\nid = \"org\"\n");
    let mut account = 0;
    for a in 0..4 {
        s.push_str(&format!(
            "[[targets.resources]]\nid = \"ou-{a}\"\nparent = \"org\"\n"
        ));
        for b in 0..5 {
            s.push_str(&format!(
                "[[targets.resources]]\nid = \"ou-{a}-{b}\"\nparent = \"ou-{a}\"\n"
            ));
            for _ in 0..ACCOUNTS_PER_OU {
                let env = ["prod", "staging", "dev"][account % 3];
                let team = account % 20;
                s.push_str(&format!(
                    "[[targets.resources]]\nid = \"{:012}\"\nparent = \"ou-{a}-{b}\"\ndescription = \"account {account}\"\ntags = {{ env = \"{env}\", team = \"t{team:02}\" }}\n",
                    100_000_000_000u64 + account as u64
                ));
                account += 1;
            }
        }
    }
    s.push_str(&format!(
        "\n[[eligibilities]]\nid = \"developers-org\"\nsubjects = [\"group:developers\"]\ntarget = \"aws\"\nresources = {{ under = [\"org\"] }}\nroles = [{}]\nmax_duration = \"8h\"\n",
        roles.join(", ")
    ));
    s.push_str("\n[[approval_policies]]\nid = \"org\"\ntarget = \"aws\"\nresources = { under = [\"org\"] }\napprovers = [\"group:security\"]\n");
    s
}

async fn run() -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let text = config(&dir.path().join("elevate.db"));
    let parsed = Config::parse(&text, None).map_err(|p| anyhow::anyhow!("config: {p:?}"))?;
    let running = elevate::start(parsed, None).await?;
    let url = format!("http://{}", running.addr);
    let catalog = running.broker.catalog();
    let alice = running
        .broker
        .directory
        .authenticate("t-alice")
        .ok_or_else(|| anyhow::anyhow!("no alice"))?;
    let now = chrono::Utc::now();
    let n = rounds();

    let everything = catalog.eligible_roles(&alice, now).len();
    let time_it = |f: &dyn Fn() -> usize| -> (Vec<f64>, usize) {
        let mut v = Vec::new();
        let mut out = 0;
        for _ in 0..n {
            let t = Instant::now();
            out = f();
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        (v, out)
    };
    let browse = |f: BrowseFilter, offset: usize| {
        let c = catalog.clone();
        let p = alice.clone();
        move || c.browse_eligible(&p, now, &f, offset, 50).total
    };
    let mut core = serde_json::Map::new();
    for (name, filter, offset) in [
        ("first_page", BrowseFilter::default(), 0),
        (
            "search_text",
            BrowseFilter::from_input("ou-2-3 admin", "", "", ""),
            0,
        ),
        (
            "role_and_tag",
            BrowseFilter::from_input("", "", "billing", "env=prod"),
            0,
        ),
        ("last_page", BrowseFilter::default(), everything - 50),
    ] {
        let (ms, total) = time_it(&browse(filter, offset));
        core.insert(name.into(), json!({"ms": stats(ms), "matches": total}));
    }
    let (ms, total) = time_it(&|| catalog.eligible_roles(&alice, now).len());
    core.insert(
        "eligible_roles_all".into(),
        json!({"ms": stats(ms), "matches": total}),
    );
    // What the unpaged API answers with: the same walk, to the end.
    let (ms, total) = time_it(&|| {
        catalog
            .browse_eligible(&alice, now, &BrowseFilter::default(), 0, usize::MAX)
            .entries
            .len()
    });
    core.insert(
        "browse_all".into(),
        json!({"ms": stats(ms), "matches": total}),
    );

    let browser = elevate_testkit::oidc::Browser::new()?;
    let signed = browser
        .post_form(&format!("{url}/auth/token"), &[("token", "t-alice")])
        .await?;
    if signed.status() != reqwest::StatusCode::SEE_OTHER {
        bail!("sign-in failed: {}", signed.status());
    }
    let last_page = everything.div_ceil(50);
    let mut http = serde_json::Map::new();
    for (name, path) in [
        ("first_page", "/request".to_owned()),
        ("search_text", "/request?q=ou-2-3+admin".to_owned()),
        (
            "role_and_tag",
            "/request?role=billing&tag=env%3Dprod".to_owned(),
        ),
        ("last_page", format!("/request?page={last_page}")),
        (
            "request_form",
            "/request/new?target=aws&resource=100000000500&role=ReadOnly-001".to_owned(),
        ),
    ] {
        let mut v = Vec::new();
        let mut bytes = 0;
        for _ in 0..n {
            let t = Instant::now();
            let resp = browser.get(&format!("{url}{path}")).await?;
            if resp.status() != reqwest::StatusCode::OK {
                bail!("GET {path}: {}", resp.status());
            }
            bytes = resp.bytes().await?.len();
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        http.insert(
            name.into(),
            json!({"ms": stats(v), "bytes": bytes, "path": path}),
        );
    }
    running.shutdown().await;
    Ok(json!({
        "accounts": 1000,
        "permission_sets": ROLES,
        "choices": everything,
        "core": core,
        "http": http,
    }))
}

fn main() -> Result<()> {
    let json_out = std::env::args().any(|a| a == "--json");
    let r = tokio::runtime::Runtime::new()?.block_on(run())?;
    if json_out {
        println!("{r}");
        return Ok(());
    }
    println!(
        "elevate request page: {} accounts × {} permission sets = {} choices for one person",
        r["accounts"], r["permission_sets"], r["choices"]
    );
    let f = |v: &serde_json::Value, p: &str| v["ms"][p].as_f64().unwrap_or(f64::NAN);
    for (k, v) in r["core"].as_object().into_iter().flatten() {
        println!(
            "  in process {k:<20} p50 {:8.2} ms  p99 {:8.2} ms  ({} matches)",
            f(v, "p50"),
            f(v, "p99"),
            v["matches"]
        );
    }
    for (k, v) in r["http"].as_object().into_iter().flatten() {
        println!(
            "  GET page   {k:<20} p50 {:8.2} ms  p99 {:8.2} ms  ({} bytes)",
            f(v, "p50"),
            f(v, "p99"),
            v["bytes"]
        );
    }
    Ok(())
}
