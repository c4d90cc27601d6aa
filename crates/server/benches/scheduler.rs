//! Deadline → access removed, at scale: N grants (default 100,000) active
//! at once, ending spread over a window, on the dry-run provider so the
//! scheduler and the job worker themselves are measured (not a target).
//!
//! Reports how late each deadline was handled (grant.window_ended) and how
//! late each removal was confirmed (grant.removed `lateness_ms`), as
//! p50/p99/max, and writes the removal-lateness histogram as an SVG.
//!
//! `cargo bench -p elevate --bench scheduler` — environment:
//! `BENCH_GRANTS` (100000), `BENCH_WINDOW_SECS` (120), `BENCH_LEAD_SECS`
//! (time between set-up and the first deadline, 60), `BENCH_SVG` (path of
//! the histogram, default `docs/lateness.svg` under the workspace).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use elevate::config::Config;
use elevate_core::principal::Principal;
use elevate_core::request::{Kind, NewRequest, Request};
use elevate_core::values::{Justification, Name, RequestId, Span, UserName};
use serde_json::json;
use sqlx::Row;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn svg_histogram(values: &[f64], title: &str) -> String {
    let max = values.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    let bins = 60usize;
    let width = max / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in values {
        let i = ((v / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let (w, h, left, bottom) = (720.0, 320.0, 60.0, 40.0);
    let bar = (w - left - 20.0) / bins as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\">{title}</text>\n",
        w / 2.0
    );
    for (i, c) in counts.iter().enumerate() {
        let bh = (*c as f64 / top) * (h - bottom - 30.0);
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#3b6ea5\"><title>{:.1}–{:.1} ms: {c}</title></rect>\n",
            left + i as f64 * bar,
            h - bottom - bh,
            bar - 1.0,
            bh,
            i as f64 * width,
            (i + 1) as f64 * width
        ));
    }
    out.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"black\"/>\n<text x=\"{left}\" y=\"{ty}\">0 ms</text>\n<text x=\"{x2}\" y=\"{ty}\" text-anchor=\"end\">{max:.0} ms</text>\n<text x=\"{mid}\" y=\"{ty}\" text-anchor=\"middle\">lateness after the deadline</text>\n<text x=\"12\" y=\"{cy}\" transform=\"rotate(-90 12 {cy})\" text-anchor=\"middle\">grants (max bin {top})</text>\n</svg>\n",
        y = h - bottom,
        x2 = w - 20.0,
        ty = h - bottom + 18.0,
        mid = (w + left) / 2.0,
        cy = (h - bottom) / 2.0,
    ));
    out
}

async fn run() -> Result<serde_json::Value> {
    let grants = env("BENCH_GRANTS", 100_000) as usize;
    let window_ms = env("BENCH_WINDOW_SECS", 120) * 1000;
    let lead = env("BENCH_LEAD_SECS", 60);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("elevate.db");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"sqlite://{}\"\n[limits]\nmin_duration = \"1s\"\n[[targets]]\nid = \"demo\"\nkind = \"dry-run\"\nroles = [\"admin\"]\n[[targets.resources]]\nid = \"r\"\n",
        db.display()
    );
    let config = Config::parse(&text, None).map_err(|p| anyhow::anyhow!("{p:?}"))?;

    // Set-up: N active grants written straight to the store (creating them
    // through the API would measure something else), each with its audit
    // events so the chain stays whole.
    let setup = Instant::now();
    let broker = elevate::build_broker(&config).await?;
    let provider = broker
        .providers
        .values()
        .next()
        .context("no provider")?
        .clone();
    let now0 = Utc::now();
    let first_end = now0 + chrono::Duration::seconds(lead as i64);
    let (target, resource, role) = (
        Name::parse("t", "demo")?,
        Name::parse("r", "r")?,
        Name::parse("r", "admin")?,
    );
    let eligibility = Name::parse("e", "bench")?;
    let mut i = 0usize;
    while i < grants {
        let mut tx = broker.store.begin().await?;
        for _ in 0..2000 {
            if i >= grants {
                break;
            }
            // Created an hour ago at a millisecond offset so that the ends
            // spread evenly over the window.
            let offset = (i as u64 * window_ms / grants as u64) as i64;
            let created =
                first_end - chrono::Duration::hours(1) + chrono::Duration::milliseconds(offset);
            let principal = Principal::new(UserName::parse(&format!("u{i}"))?);
            let new = NewRequest {
                id: RequestId::from_random(rand_bits(i)),
                kind: Kind::Access,
                target: target.clone(),
                resource: resource.clone(),
                role: role.clone(),
                justification: Justification::parse("bench")?,
                ticket: None,
                duration: Span::from_secs(3600),
                requested_start: None,
                break_glass: false,
            };
            let created_change = Request::create(new, &principal, &eligibility, None, created)?;
            let active = created_change
                .request
                .clone()
                .on_applied(created)
                .context("apply")?;
            let spec = elevate_providers::GrantSpec {
                request_id: active.request.id.to_string(),
                target: "demo".into(),
                resource: "r".into(),
                role: "admin".into(),
                user: principal.name.to_string(),
                email: None,
                account: None,
                window_ends_at: None,
                ended_early: false,
                email_unverified: false,
            };
            let key = provider.grant_key(&spec);
            tx.put_request(&active.request, &key, created).await?;
            tx.append_audit(&created_change.event).await?;
            tx.append_audit(&active.event).await?;
            i += 1;
        }
        tx.commit().await?;
    }
    broker.store.close().await;
    drop(broker);
    let setup_secs = setup.elapsed().as_secs_f64();
    let behind = (Utc::now() - first_end).num_milliseconds();
    if behind > 0 {
        eprintln!("warning: set-up took {setup_secs:.0}s, {behind} ms past the first deadline; raise BENCH_LEAD_SECS");
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = elevate::start(config, Some(listener)).await?;
    let pool = running.broker.store.pool().clone();
    let last_end = first_end + chrono::Duration::milliseconds(window_ms as i64);
    let give_up = Instant::now() + Duration::from_secs(lead + window_ms / 1000 + 600);
    loop {
        let ended: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE state = 'ended'")
            .fetch_one(&pool)
            .await?;
        if ended as usize >= grants {
            break;
        }
        if Instant::now() > give_up {
            anyhow::bail!("only {ended} of {grants} grants ended");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let finished = Utc::now();
    let rows = sqlx::query(
        "SELECT action, at, details FROM audit WHERE action IN ('grant.window_ended', 'grant.removed')",
    )
    .fetch_all(&pool)
    .await?;
    let mut deadline_lateness = Vec::with_capacity(grants);
    let mut removal_lateness = Vec::with_capacity(grants);
    for r in &rows {
        let action: String = r.get(0);
        let at: i64 = r.get(1);
        let details: serde_json::Value = serde_json::from_str(&r.get::<String, _>(2))?;
        if action == "grant.removed" {
            removal_lateness.push(details["lateness_ms"].as_f64().unwrap_or(f64::NAN));
        } else if let Some(end) = details["ends_at"].as_str() {
            let end = chrono::DateTime::parse_from_rfc3339(end)?.timestamp_millis();
            deadline_lateness.push((at - end).max(0) as f64);
        }
    }
    let verify = running.broker.store.verify_audit().await?;
    running.shutdown().await;
    deadline_lateness.sort_by(|a, b| a.total_cmp(b));
    removal_lateness.sort_by(|a, b| a.total_cmp(b));
    let svg_path = std::env::var("BENCH_SVG").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/lateness.svg").to_owned()
    });
    std::fs::write(
        &svg_path,
        svg_histogram(
            &removal_lateness,
            &format!(
                "deadline → role removed, {grants} grants over {}s (dry-run)",
                window_ms / 1000
            ),
        ),
    )?;
    let stats =
        |v: &[f64]| json!({"p50": percentile(v, 0.5), "p99": percentile(v, 0.99), "max": v.last()});
    Ok(json!({
        "grants": grants,
        "window_secs": window_ms / 1000,
        "setup_secs": setup_secs,
        "deadline_handled_lateness_ms": stats(&deadline_lateness),
        "removed_lateness_ms": stats(&removal_lateness),
        "removals_per_sec_over_window": grants as f64 / ((finished - first_end).num_milliseconds().max(1) as f64 / 1000.0),
        "last_removal_after_last_deadline_ms": (finished - last_end).num_milliseconds(),
        "audit_chain_ok": verify.ok,
        "svg": svg_path,
    }))
}

/// Deterministic, distinct ids (60 bits from the index, mixed).
fn rand_bits(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995
}

fn main() -> Result<()> {
    let json_out = std::env::args().any(|a| a == "--json");
    let runtime = tokio::runtime::Runtime::new()?;
    let r = runtime.block_on(run())?;
    if json_out {
        println!("{r}");
        return Ok(());
    }
    let f = |k: &str, p: &str| r[k][p].as_f64().unwrap_or(f64::NAN);
    println!(
        "elevate scheduler: {} grants ending over {}s (dry-run provider; set-up {:.0}s)",
        r["grants"],
        r["window_secs"],
        r["setup_secs"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  deadline → handled        p50 {:8.1} ms  p99 {:8.1} ms  max {:8.1} ms",
        f("deadline_handled_lateness_ms", "p50"),
        f("deadline_handled_lateness_ms", "p99"),
        f("deadline_handled_lateness_ms", "max")
    );
    println!(
        "  deadline → role removed   p50 {:8.1} ms  p99 {:8.1} ms  max {:8.1} ms",
        f("removed_lateness_ms", "p50"),
        f("removed_lateness_ms", "p99"),
        f("removed_lateness_ms", "max")
    );
    println!(
        "  audit chain verified: {}; histogram: {}",
        r["audit_chain_ok"],
        r["svg"].as_str().unwrap_or("")
    );
    Ok(())
}
