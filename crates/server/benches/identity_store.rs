//! Finding the requester in a large IAM Identity Center identity store,
//! which every request to an `aws-identity-center` target does (the
//! e-mail decides, compared ignoring ASCII case, so elevate compares over
//! a listing of the store rather than trusting an exact-match filter).
//!
//! A real `moto_server` on loopback holds `BENCH_USERS` (2,000) users. The
//! provider, as the server builds it, then answers:
//! - `cold`: the first lookup, which lists the whole store (what every
//!   request paid before the listing was kept);
//! - `warm`: `BENCH_ROUNDS` (200) lookups of random users, each answered
//!   from the kept listing and confirmed with one `DescribeUser`;
//! - `new_user`: a user provisioned after the listing, found by listing
//!   again.
//!
//! moto answers faster than AWS (no network, no TLS): the figures compare
//! the two paths, they do not predict AWS's latency.
//! `cargo bench -p elevate --bench identity_store` (`--json`). Needs
//! `moto[server]` (scripts/test.sh installs it).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use elevate_providers::aws_identity_center::AwsIdentityCenter;
use elevate_providers::identity_center::IdentityCenterConfig;
use elevate_providers::sessions::StaticKeys;
use elevate_providers::{GrantSpec, Provider};
use elevate_testkit::aws_org;
use elevate_testkit::moto::MotoServer;
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| {
        v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
    };
    json!({"p50": p(0.5), "p99": p(0.99), "max": v.last(), "n": v.len()})
}

fn ask(account: &str, i: usize) -> GrantSpec {
    GrantSpec {
        request_id: format!("r-bench{i}"),
        target: "aws".into(),
        resource: account.into(),
        role: "ReadOnly".into(),
        user: format!("user{i}"),
        // Capitals the store does not have: compared ignoring case.
        email: Some(format!("User{i}@Example.com")),
        account: None,
        window_ends_at: None,
        ended_early: false,
        email_unverified: false,
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    let users = env_or("BENCH_USERS", 2_000);
    let rounds = env_or("BENCH_ROUNDS", 200);
    let moto = MotoServer::start()?;
    let people: Vec<serde_json::Value> = (0..users)
        .map(|i| json!({"user_name": format!("user{i}"), "emails": [format!("user{i}@example.com")]}))
        .collect();
    let seeded = aws_org::seed_typed(
        &moto.url(),
        &json!({"accounts": [{"name": "bench"}], "users": people, "permission_sets": ["ReadOnly"]}),
    )?;
    let account = seeded.accounts.get("bench").context("no account")?.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let provider = AwsIdentityCenter::new(IdentityCenterConfig {
            region: "us-east-1".into(),
            endpoint_url: Some(moto.url()),
            keys: Some(StaticKeys {
                access_key_id: "testing".into(),
                secret_access_key: "testing".into(),
            }),
            instance_arn: None,
            identity_store_id: None,
            permission_sets: Vec::new(),
            allow_management_account: false,
            poll_interval: Duration::from_millis(200),
            poll_timeout: Duration::from_secs(10),
        })
        .await?;
        let inventory = provider.discover().await?;
        provider.adopt(&inventory);

        let t = Instant::now();
        provider.prepare(&ask(&account, 0)).await?;
        let cold = ms(t);
        let mut warm = Vec::with_capacity(rounds);
        for round in 0..rounds {
            // Spread over the store (a fixed stride, so runs compare).
            let i = (round * 7_919) % users;
            let t = Instant::now();
            let found = provider.prepare(&ask(&account, i)).await?;
            warm.push(ms(t));
            ensure!(found.is_some(), "user{i} not found");
        }
        let listings = provider.directory_listings();
        let url = moto.url();
        tokio::task::spawn_blocking(move || {
            aws_org::add_user(
                &url,
                &json!({"user_name": "newcomer", "emails": ["newcomer@example.com"]}),
            )
        })
        .await??;
        let mut newcomer = ask(&account, 0);
        newcomer.user = "newcomer".into();
        newcomer.email = Some("newcomer@example.com".into());
        let t = Instant::now();
        provider.prepare(&newcomer).await?;
        let new_user = ms(t);
        anyhow::Ok(json!({
            "bench": "identity_store",
            "users": users,
            "cold_ms": cold,
            "warm_ms": stats(warm),
            "listings_for_warm_lookups": listings,
            "new_user_ms": new_user,
        }))
    })?;
    if std::env::args().any(|a| a == "--json") {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}
