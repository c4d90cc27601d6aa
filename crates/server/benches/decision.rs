//! Decision latency at scale: "may this user request X?" and "is this user
//! elevated for X now?", in process and over HTTP under concurrent load.
//!
//! The catalog: `BENCH_USERS` users (100,000), each in 3 of 1,000 groups;
//! one target with 20,000 accounts in a 3-level OU tree (10 × 10 × 20 OUs,
//! 10 accounts each); 10 roles; `BENCH_RULES` eligibility rules (2,500),
//! each giving a group 2 roles on every account under a second-level OU
//! (200 accounts), i.e. 1,000,000 (group, account, role) entries reached
//! through groups and OUs. `BENCH_GRANTS` (10,000) active grants are in the
//! database for the "elevated now?" question.
//!
//! `cargo bench -p elevate --bench decision` (`--json` for JSON).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use elevate::config::Config;
use elevate_core::policy::Ask;
use elevate_core::principal::Principal;
use elevate_core::request::{Kind, NewRequest, Request};
use elevate_core::values::{Justification, Name, RequestId, Span, UserName};
use rand::{Rng, SeedableRng};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
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

struct World {
    users: usize,
    rules: usize,
}

impl World {
    fn groups_of(&self, u: usize) -> [usize; 3] {
        [u % 1000, (u * 7 + 3) % 1000, (u * 13 + 5) % 1000]
    }
    /// Account `a` lives under OU ou{a/2000}-{(a/200)%10}-{(a/10)%20}.
    fn account_ou2(a: usize) -> (usize, usize) {
        (a / 2000, (a / 200) % 10)
    }
    fn rule(&self, k: usize) -> (usize, (usize, usize), [usize; 2]) {
        // Rule k: group k % 1000, OU level 2 number k % 100, roles k%10, (k+3)%10.
        (k % 1000, ((k % 100) / 10, k % 10), [k % 10, (k + 3) % 10])
    }

    fn config(&self, db: &std::path::Path) -> String {
        let mut s = String::with_capacity(64 << 20);
        s.push_str("admins = [\"group:g0\"]\n");
        s.push_str(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"sqlite://{}\"\n[limits]\nmin_duration = \"1s\"\n",
            db.display()
        ));
        for u in 0..self.users {
            let g = self.groups_of(u);
            s.push_str(&format!(
                "[[users]]\nname = \"u{u}\"\ngroups = [\"g{}\", \"g{}\", \"g{}\"]\ntoken_hashes = [\"{}\"]\n",
                g[0],
                g[1],
                g[2],
                elevate::auth::token_hash(&format!("t-u{u}"))
            ));
        }
        s.push_str("[[targets]]\nid = \"aws\"\nkind = \"dry-run\"\nroles = [");
        s.push_str(
            &(0..10)
                .map(|r| format!("\"r{r}\""))
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push_str("]\n");
        for a in 0..10 {
            s.push_str(&format!("[[targets.resources]]\nid = \"ou{a}\"\n"));
            for b in 0..10 {
                s.push_str(&format!(
                    "[[targets.resources]]\nid = \"ou{a}-{b}\"\nparent = \"ou{a}\"\n"
                ));
                for c in 0..20 {
                    s.push_str(&format!(
                        "[[targets.resources]]\nid = \"ou{a}-{b}-{c}\"\nparent = \"ou{a}-{b}\"\n"
                    ));
                }
            }
        }
        for acct in 0..20_000 {
            let (a, b, c) = (acct / 2000, (acct / 200) % 10, (acct / 10) % 20);
            let env = if acct % 2 == 0 { "prod" } else { "dev" };
            s.push_str(&format!(
                "[[targets.resources]]\nid = \"{acct:012}\"\nparent = \"ou{a}-{b}-{c}\"\ntags = {{ env = \"{env}\" }}\n"
            ));
        }
        for k in 0..self.rules {
            let (g, (a, b), roles) = self.rule(k);
            s.push_str(&format!(
                "[[eligibilities]]\nid = \"rule{k}\"\nsubjects = [\"group:g{g}\"]\ntarget = \"aws\"\nresources = {{ under = [\"ou{a}-{b}\"] }}\nroles = [\"r{}\", \"r{}\"]\nmax_duration = \"8h\"\n",
                roles[0], roles[1]
            ));
        }
        for a in 0..10 {
            s.push_str(&format!(
                "[[approval_policies]]\nid = \"p{a}\"\ntarget = \"aws\"\nresources = {{ under = [\"ou{a}\"] }}\napprovers = [\"group:g{a}\"]\n"
            ));
        }
        s
    }

    /// A question: (user, account, role), about half of them answerable
    /// with "yes".
    fn question(&self, rng: &mut impl Rng) -> (usize, usize, usize) {
        let u = rng.gen_range(0..self.users);
        if rng.gen_bool(0.5) {
            // Pick one of the user's rules, if they have any.
            let g = self.groups_of(u)[rng.gen_range(0..3)];
            let ks: Vec<usize> = (0..self.rules).filter(|k| k % 1000 == g).collect();
            if let Some(&k) = ks.get(rng.gen_range(0..ks.len().max(1))) {
                let (_, (a, b), roles) = self.rule(k);
                let acct = a * 2000 + b * 200 + rng.gen_range(0..200);
                debug_assert_eq!(World::account_ou2(acct), (a, b));
                return (u, acct, roles[rng.gen_range(0..2)]);
            }
        }
        (u, rng.gen_range(0..20_000), rng.gen_range(0..10))
    }
}

async fn run() -> Result<serde_json::Value> {
    let world = World {
        users: env("BENCH_USERS", 100_000),
        rules: env("BENCH_RULES", 2_500),
    };
    let grants = env("BENCH_GRANTS", 10_000);
    let dir = tempfile::tempdir()?;
    let text = world.config(&dir.path().join("elevate.db"));
    let t = Instant::now();
    let config = Config::parse(&text, None).map_err(|p| anyhow::anyhow!("{:?}", p.first()))?;
    let parse_secs = t.elapsed().as_secs_f64();
    let entries: usize = world.rules * 200 * 2;

    // Active grants for "elevated now?": written straight to the store.
    let broker = elevate::build_broker(&config).await?;
    let provider = broker
        .providers
        .values()
        .next()
        .context("provider")?
        .clone();
    let now = Utc::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut granted = Vec::new();
    let mut tx = broker.store.begin().await?;
    for i in 0..grants {
        let (u, acct, role) = world.question(&mut rng);
        let principal = Principal::new(UserName::parse(&format!("u{u}"))?);
        let new = NewRequest {
            id: RequestId::from_random((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            kind: Kind::Access,
            target: Name::parse("t", "aws")?,
            resource: Name::parse("r", &format!("{acct:012}"))?,
            role: Name::parse("r", &format!("r{role}"))?,
            justification: Justification::parse("bench")?,
            ticket: None,
            duration: Span::from_secs(8 * 3600),
            requested_start: None,
            break_glass: false,
        };
        let created = Request::create(new, &principal, &Name::parse("e", "bench")?, None, now)?;
        let active = created.request.clone().on_applied(now).context("apply")?;
        let spec = elevate_providers::GrantSpec {
            request_id: active.request.id.to_string(),
            target: "aws".into(),
            resource: format!("{acct:012}"),
            role: format!("r{role}"),
            user: format!("u{u}"),
            email: None,
            account: None,
            window_ends_at: None,
            ended_early: false,
            email_unverified: false,
        };
        tx.put_request(&active.request, &provider.grant_key(&spec), now)
            .await?;
        tx.append_audit(&created.event).await?;
        tx.append_audit(&active.event).await?;
        granted.push((u, acct, role));
    }
    tx.commit().await?;

    // In process: the catalog question and the store question.
    let catalog = broker.catalog();
    let directory = broker.directory.clone();
    let warm = Instant::now();
    let _ = catalog.eligible_roles(&Principal::new(UserName::parse("u0")?), now);
    let index_secs = warm.elapsed().as_secs_f64();
    let mut may = Vec::new();
    let mut yes = 0usize;
    for _ in 0..20_000 {
        let (u, acct, role) = world.question(&mut rng);
        let p = directory
            .get(&UserName::parse(&format!("u{u}"))?)
            .context("user")?
            .clone();
        let (target, resource, role) = (
            Name::parse("t", "aws")?,
            Name::parse("r", &format!("{acct:012}"))?,
            Name::parse("r", &format!("r{role}"))?,
        );
        let t = Instant::now();
        let ok = catalog
            .permit(
                &p,
                Ask {
                    target: &target,
                    resource: &resource,
                    role: &role,
                    duration: Span::from_secs(3600),
                    has_ticket: true,
                    break_glass: false,
                    check_step_up: true,
                },
                now,
            )
            .is_ok();
        may.push(t.elapsed().as_secs_f64() * 1e6);
        yes += usize::from(ok);
    }
    let mut elevated = Vec::new();
    let mut hits = 0usize;
    for i in 0..5_000 {
        let (u, acct, role) = if i % 2 == 0 {
            granted[rng.gen_range(0..granted.len())]
        } else {
            world.question(&mut rng)
        };
        let t = Instant::now();
        let g = broker
            .store
            .active_grant(
                &format!("u{u}"),
                "aws",
                &format!("{acct:012}"),
                &format!("r{role}"),
                Utc::now(),
            )
            .await?;
        elevated.push(t.elapsed().as_secs_f64() * 1e6);
        hits += usize::from(g.is_some());
    }
    broker.store.close().await;
    drop(broker);

    // Over HTTP: GET /api/v1/check (authentication, both questions, JSON)
    // at increasing concurrency, client and server on the same 2 cores.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = elevate::start(config, Some(listener)).await?;
    let base = format!("http://{}/api/v1/check", running.addr);
    let world = Arc::new(world);
    let mut levels = Vec::new();
    for clients in [1usize, 4, 16, 64] {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()?;
        let stop = Instant::now() + Duration::from_secs(5);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let (http, base, world) = (http.clone(), base.clone(), world.clone());
            tasks.spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
                let mut lat = Vec::new();
                let mut errors = 0usize;
                while Instant::now() < stop {
                    let (u, acct, role) = world.question(&mut rng);
                    let t = Instant::now();
                    let r = http
                        .get(format!(
                            "{base}?target=aws&resource={acct:012}&role=r{role}"
                        ))
                        .bearer_auth(format!("t-u{u}"))
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status().is_success() => {
                            let _ = resp.bytes().await;
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            });
        }
        let mut lat = Vec::new();
        let mut errors = 0;
        while let Some(r) = tasks.join_next().await {
            let (l, e) = r?;
            lat.extend(l);
            errors += e;
        }
        let n = lat.len();
        levels.push(json!({"clients": clients, "requests_per_sec": n as f64 / 5.0, "errors": errors, "latency_ms": stats(lat)}));
    }
    running.shutdown().await;
    Ok(json!({
        "users": world.users,
        "eligibility_rules": world.rules,
        "eligibility_entries": entries,
        "accounts": 20_000,
        "active_grants": grants,
        "config_parse_secs": parse_secs,
        "index_build_secs": index_secs,
        "may_request_us": stats(may),
        "may_request_yes_share": yes as f64 / 20_000.0,
        "elevated_now_us": stats(elevated),
        "elevated_hits": hits,
        "http_check": levels,
    }))
}

fn main() -> Result<()> {
    let json_out = std::env::args().any(|a| a == "--json");
    let r = tokio::runtime::Runtime::new()?.block_on(run())?;
    if json_out {
        println!("{r}");
        return Ok(());
    }
    let f = |k: &str, p: &str| r[k][p].as_f64().unwrap_or(f64::NAN);
    println!(
        "elevate decisions: {} users, {} rules = {} eligibility entries, {} accounts, {} active grants (config parsed in {:.1}s)",
        r["users"], r["eligibility_rules"], r["eligibility_entries"], r["accounts"], r["active_grants"], r["config_parse_secs"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "  may request? (in process)  p50 {:7.1} µs  p99 {:7.1} µs  max {:7.1} µs",
        f("may_request_us", "p50"),
        f("may_request_us", "p99"),
        f("may_request_us", "max")
    );
    println!(
        "  elevated now? (store)      p50 {:7.1} µs  p99 {:7.1} µs  max {:7.1} µs",
        f("elevated_now_us", "p50"),
        f("elevated_now_us", "p99"),
        f("elevated_now_us", "max")
    );
    for l in r["http_check"].as_array().into_iter().flatten() {
        println!(
            "  HTTP /check, {:>2} clients   {:7.0} req/s  p50 {:6.2} ms  p99 {:6.2} ms  errors {}",
            l["clients"],
            l["requests_per_sec"].as_f64().unwrap_or(0.0),
            l["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            l["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            l["errors"]
        );
    }
    Ok(())
}
