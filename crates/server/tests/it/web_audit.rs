//! The audit and insights pages: only auditors and admins see them; the
//! history filters, pages and verifies; what people wrote is escaped on
//! the page, exact in the JSON Lines export and quoted (and defused as a
//! formula) in the CSV export; insights count requests per target, role,
//! month and team, and split Japanese justifications into words.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use elevate_testkit::oidc::Browser;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{body, connect_store, dry_run_config, Setup, TestApp};
use crate::web_common::{page, signed_in};

const WAIT: Duration = Duration::from_secs(20);
const SCRIPT_REASON: &str = "<script>alert(1)</script> 本番DBの障害対応";
const FORMULA_REASON: &str = "=HYPERLINK(\"http://x\")";

struct Env {
    _dir: tempfile::TempDir,
    app: TestApp,
    /// Approved by bob and active, justified with [`SCRIPT_REASON`].
    approved: String,
    /// Still pending, justified with [`FORMULA_REASON`], ticket `CHG-7`.
    pending: String,
    /// Break-glass, active, awaiting review.
    break_glass: String,
}

/// Three requests by alice on the demo target: one approved, one pending,
/// one break-glass.
async fn env() -> Result<Env> {
    let dir = tempfile::tempdir()?;
    let app = TestApp::start(&dry_run_config(
        &dir.path().join("elevate.db"),
        &Setup::default(),
    )?)
    .await?;
    let mut first = body("demo", "orders", "orders_reader", "30m");
    first["reason"] = json!(SCRIPT_REASON);
    let approved = app.request("alice", first).await?;
    app.approve("bob", &approved).await?;
    app.wait_state(&approved, "active", WAIT).await?;
    let mut second = body("demo", "orders", "orders_writer", "30m");
    second["reason"] = json!(FORMULA_REASON);
    second["ticket"] = json!("CHG-7");
    let pending = app.request("alice", second).await?;
    let mut third = body("demo", "orders", "orders_writer", "30m");
    third["break_glass"] = json!(true);
    third["reason"] = json!("障害対応: orders outage");
    let break_glass = app.request("alice", third).await?;
    app.wait_state(&break_glass, "active", WAIT).await?;
    Ok(Env {
        _dir: dir,
        app,
        approved,
        pending,
        break_glass,
    })
}

async fn download(app: &TestApp, browser: &Browser, path: &str) -> Result<(StatusCode, String)> {
    let resp = browser.get(&format!("{}{path}", app.url)).await?;
    let status = resp.status();
    ensure!(
        status != StatusCode::OK
            || resp
                .headers()
                .get(reqwest::header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("attachment; filename=\"elevate-audit-")),
        "{path} is not offered as a download"
    );
    Ok((status, resp.text().await?))
}

/// RFC 4180 records: quoted fields may hold commas, quotes (doubled) and
/// line breaks; records end with CRLF.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {
                ensure!(chars.next() == Some('\n'), "CR without LF ends a record");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    ensure!(
        !quoted && field.is_empty() && record.is_empty(),
        "the CSV ends inside a record"
    );
    Ok(records)
}

/// The CSV as maps from column name to value, after checking the header.
fn csv_rows(text: &str) -> Result<Vec<std::collections::HashMap<String, String>>> {
    let records = parse_csv(text)?;
    let (header, rows) = records.split_first().context("no header row")?;
    ensure!(
        header.first().map(String::as_str) == Some("seq"),
        "header: {header:?}"
    );
    rows.iter()
        .map(|r| {
            ensure!(r.len() == header.len(), "ragged row {r:?}");
            Ok(header.iter().cloned().zip(r.iter().cloned()).collect())
        })
        .collect()
}

fn jsonl(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect()
}

#[tokio::test]
async fn people_who_are_not_auditors_are_refused_audit_insights_and_exports() -> Result<()> {
    let env = env().await?;
    let alice = signed_in(&env.app, "alice").await?;
    for path in [
        "/audit".to_owned(),
        "/insights".to_owned(),
        "/audit/export.csv".to_owned(),
        "/audit/export.jsonl".to_owned(),
        format!("/audit/requests/{}", env.approved),
    ] {
        let (status, html) = page(&env.app, &alice, &path).await?;
        ensure!(status == StatusCode::FORBIDDEN, "{path}: {status}");
        ensure!(html.contains("forbidden"), "{path}: no refusal code");
        ensure!(!html.contains(&env.approved), "{path} leaks a request id");
    }
    Ok(())
}

#[tokio::test]
async fn auditor_sees_every_event_newest_first_under_a_verified_chain() -> Result<()> {
    let env = env().await?;
    let dave = signed_in(&env.app, "dave").await?;
    let (status, html) = page(&env.app, &dave, "/audit").await?;
    ensure!(status == StatusCode::OK, "{status}: {html}");
    ensure!(html.contains("Audit chain verified."), "no chain status");
    for id in [&env.approved, &env.pending, &env.break_glass] {
        ensure!(
            html.contains(&format!("href=\"/requests/{id}\"")),
            "{id} not linked"
        );
    }
    let newest = html
        .find(&env.break_glass)
        .context("break-glass request missing")?;
    let oldest = html.find(&env.approved).context("first request missing")?;
    ensure!(newest < oldest, "events are not newest first");
    ensure!(
        html.contains("<code>request.created</code>")
            && html.contains("<code>grant.activated</code>"),
        "actions missing"
    );
    ensure!(
        html.contains("href=\"/audit/export.csv\"")
            && html.contains("href=\"/audit/export.jsonl\""),
        "export links missing"
    );
    ensure!(!html.contains("Older"), "a single page offers older events");
    Ok(())
}

#[tokio::test]
async fn justifications_are_escaped_on_the_page_and_exact_in_the_exports() -> Result<()> {
    let env = env().await?;
    let dave = signed_in(&env.app, "dave").await?;
    let (_, html) = page(&env.app, &dave, "/audit").await?;
    ensure!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; 本番DBの障害対応"),
        "justification not shown escaped"
    );
    ensure!(
        !html.contains("<script>alert"),
        "markup from a justification ran"
    );

    let (status, csv) = download(&env.app, &dave, "/audit/export.csv").await?;
    ensure!(status == StatusCode::OK, "csv: {status}");
    let rows = csv_rows(&csv)?;
    let created = rows
        .iter()
        .find(|r| r["request"] == env.approved && r["action"] == "request.created")
        .context("no request.created row")?;
    ensure!(
        created["justification"] == SCRIPT_REASON,
        "{:?}",
        created["justification"]
    );
    let details: Value = serde_json::from_str(&created["details"])?;
    ensure!(details["justification"] == SCRIPT_REASON, "{details}");
    ensure!(csv.contains(SCRIPT_REASON), "UTF-8 text was altered");

    let (status, lines) = download(&env.app, &dave, "/audit/export.jsonl").await?;
    ensure!(status == StatusCode::OK, "jsonl: {status}");
    let events = jsonl(&lines)?;
    ensure!(events.len() == rows.len(), "exports disagree on the count");
    let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    ensure!(
        seqs.windows(2).all(|w| w[0] + 1 == w[1]) && seqs.first() == Some(&1),
        "jsonl not in chain order: {seqs:?}"
    );
    ensure!(
        events.iter().any(|e| e["request"] == env.approved.as_str()
            && e["details"]["justification"] == SCRIPT_REASON),
        "justification altered in JSON Lines"
    );
    ensure!(
        events
            .iter()
            .all(|e| e["hash"].is_string() && e["prev_hash"].is_string()),
        "hashes missing"
    );
    Ok(())
}

#[tokio::test]
async fn a_justification_that_looks_like_a_formula_is_text_in_the_csv() -> Result<()> {
    let env = env().await?;
    let dave = signed_in(&env.app, "dave").await?;
    let (_, csv) = download(&env.app, &dave, "/audit/export.csv").await?;
    ensure!(
        csv.contains(",\"'=HYPERLINK(\"\"http://x\"\")\","),
        "formula not defused and quoted"
    );
    let rows = csv_rows(&csv)?;
    let row = rows
        .iter()
        .find(|r| r["request"] == env.pending)
        .context("no row for the pending request")?;
    ensure!(row["justification"] == format!("'{FORMULA_REASON}"));
    for r in &rows {
        for (column, value) in r {
            ensure!(
                !value.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{column} starts like a formula: {value}"
            );
        }
    }
    // JSON Lines is data, not a spreadsheet: it keeps the text as written.
    let (_, lines) = download(&env.app, &dave, "/audit/export.jsonl").await?;
    ensure!(jsonl(&lines)?
        .iter()
        .any(|e| e["details"]["justification"] == FORMULA_REASON));
    Ok(())
}

#[tokio::test]
async fn filters_narrow_the_history_and_its_exports() -> Result<()> {
    let env = env().await?;
    let dave = signed_in(&env.app, "dave").await?;

    let (status, html) = page(&env.app, &dave, "/audit?action=request.approved").await?;
    ensure!(status == StatusCode::OK, "{status}");
    ensure!(html.contains("<code>request.approved</code>"));
    ensure!(
        !html.contains("<code>request.created</code>"),
        "action filter ignored"
    );
    ensure!(
        html.contains("href=\"/audit/export.csv?action=request.approved\""),
        "export link loses the filter"
    );

    let (_, html) = page(&env.app, &dave, &format!("/audit?request={}", env.pending)).await?;
    ensure!(html.contains(&format!("href=\"/requests/{}\"", env.pending)));
    ensure!(
        !html.contains(&format!("href=\"/requests/{}\"", env.approved)),
        "request filter ignored"
    );

    let (_, html) = page(&env.app, &dave, "/audit?actor=bob").await?;
    ensure!(html.contains("<code>request.approved</code>"));
    ensure!(
        !html.contains("<code>request.created</code>"),
        "actor filter ignored"
    );

    let (_, html) = page(&env.app, &dave, "/audit?until=2000-01-01").await?;
    ensure!(html.contains("No events match."), "until filter ignored");

    let (_, html) = page(&env.app, &dave, "/audit?before=2").await?;
    ensure!(html.contains("<td class=\"num\">1</td>"));
    ensure!(!html.contains("<td class=\"num\">2</td>"), "paging ignored");
    ensure!(html.contains("Newest"), "no way back to the newest events");

    let path = format!(
        "/audit/export.jsonl?request={}&action=request.created",
        env.approved
    );
    let (_, lines) = download(&env.app, &dave, &path).await?;
    let events = jsonl(&lines)?;
    ensure!(events.len() == 1, "{events:?}");
    let (_, csv) = download(
        &env.app,
        &dave,
        &format!("/audit/export.csv?request={}", env.break_glass),
    )
    .await?;
    let rows = csv_rows(&csv)?;
    ensure!(!rows.is_empty() && rows.iter().all(|r| r["request"] == env.break_glass));
    Ok(())
}

#[tokio::test]
async fn bad_filter_input_is_a_400_naming_the_field_not_a_500() -> Result<()> {
    let env = env().await?;
    let dave = signed_in(&env.app, "dave").await?;
    for (path, shown) in [
        (
            "/audit?since=yesterday",
            "&quot;yesterday&quot; is not a date",
        ),
        ("/audit?until=2026-13-40", "is not a date"),
        (
            "/audit?since=2026-02-01&until=2026-01-01",
            "must be later than",
        ),
        (
            "/audit?request=%3Cb%3Ex",
            "&quot;&lt;b&gt;x&quot; is not a request id",
        ),
        ("/audit?action=drop.tables", "is not one of the actions"),
        ("/audit?actor=group%3Aadmins", "is not a user name"),
        ("/audit?before=-1", "is not an event number"),
        ("/insights?since=soon", "&quot;soon&quot; is not a date"),
    ] {
        let (status, html) = page(&env.app, &dave, path).await?;
        ensure!(status == StatusCode::BAD_REQUEST, "{path}: {status}");
        ensure!(html.contains(shown), "{path}: no message {shown:?}");
        ensure!(
            html.contains("class=\"field-error\"") || path.contains("before"),
            "{path}: not next to the field"
        );
    }
    let (_, html) = page(&env.app, &dave, "/audit?since=yesterday&actor=alice").await?;
    ensure!(
        html.contains("value=\"yesterday\"") && html.contains("value=\"alice\""),
        "the form was not refilled"
    );
    for path in [
        "/audit/export.csv?since=nope",
        "/audit/export.jsonl?request=nope",
    ] {
        let (status, text) = download(&env.app, &dave, path).await?;
        ensure!(status == StatusCode::BAD_REQUEST, "{path}: {status}");
        ensure!(text.contains("invalid_query"), "{path}: {text}");
    }
    let (status, _) = page(&env.app, &dave, "/audit/requests/not-an-id").await?;
    ensure!(
        status == StatusCode::NOT_FOUND,
        "timeline of a bad id: {status}"
    );
    Ok(())
}

#[tokio::test]
async fn the_history_pages_to_older_events_a_hundred_at_a_time() -> Result<()> {
    let env = env().await?;
    // Six events so far; 95 more requests make 101.
    for _ in 0..95 {
        env.app
            .request("alice", body("demo", "orders", "orders_reader", "5m"))
            .await?;
    }
    let dave = signed_in(&env.app, "dave").await?;
    let (_, first) = page(&env.app, &dave, "/audit?action=request.created").await?;
    ensure!(!first.contains("rel=\"next\""), "98 events fit on one page");
    let (_, first) = page(&env.app, &dave, "/audit").await?;
    ensure!(first.contains("<td class=\"num\">101</td>"));
    ensure!(first.contains("<td class=\"num\">2</td>"));
    ensure!(
        !first.contains("<td class=\"num\">1</td>"),
        "more than 100 shown"
    );
    ensure!(
        first.contains("<a href=\"/audit?before=2\" rel=\"next\">"),
        "no link to older events"
    );
    let (_, older) = page(&env.app, &dave, "/audit?before=2").await?;
    ensure!(older.contains("<td class=\"num\">1</td>"));
    ensure!(
        !older.contains("rel=\"next\""),
        "the oldest page links further"
    );
    let (status, lines) = download(&env.app, &dave, "/audit/export.jsonl").await?;
    ensure!(status == StatusCode::OK);
    ensure!(
        jsonl(&lines)?.len() == 101,
        "the export is not the whole trail"
    );
    Ok(())
}

#[tokio::test]
async fn an_edited_event_shows_the_chain_broken_where_it_was_edited() -> Result<()> {
    use sqlx::Connection;
    let env = env().await?;
    let mut db = connect_store(&env.app.db_url).await?;
    let edited = sqlx::query(
        r#"UPDATE audit SET details = '{"justification":"<i>nothing to see</i>"}' WHERE seq = 2"#,
    )
    .execute(&mut db)
    .await?;
    db.close().await?;
    ensure!(edited.rows_affected() == 1);
    let dave = signed_in(&env.app, "dave").await?;
    let (status, html) = page(&env.app, &dave, "/audit").await?;
    ensure!(status == StatusCode::OK, "{status}");
    ensure!(
        !html.contains("Audit chain verified."),
        "tampering not shown"
    );
    ensure!(
        html.contains("<strong>Audit chain broken</strong> at event 2."),
        "the break is not located"
    );
    ensure!(html.contains("event 2 was modified"), "no explanation");
    ensure!(html.contains("&lt;i&gt;nothing to see&lt;/i&gt;"));
    Ok(())
}

/// The page reuses a chain check for a minute (walking a long chain on
/// every view would make it slow), says when it checked, and checks again
/// on demand: an edit made after a check shows at the next one.
#[tokio::test]
async fn the_chain_check_says_when_it_ran_and_runs_again_on_demand() -> Result<()> {
    use sqlx::Connection;
    let env = env().await?;
    let dave = signed_in(&env.app, "dave").await?;
    let (_, html) = page(&env.app, &dave, "/audit").await?;
    ensure!(html.contains("Audit chain verified."), "{html}");
    ensure!(html.contains("Checked <time"), "when it checked: {html}");
    ensure!(html.contains("href=\"/audit?verify=now\""), "{html}");

    let mut db = connect_store(&env.app.db_url).await?;
    sqlx::query(r#"UPDATE audit SET actor = 'user:mallory' WHERE seq = 1"#)
        .execute(&mut db)
        .await?;
    db.close().await?;

    let (_, html) = page(&env.app, &dave, "/audit?verify=now").await?;
    ensure!(
        html.contains("<strong>Audit chain broken</strong> at event 1."),
        "a check on demand walks the chain again: {html}"
    );
    // And that result is what the next views show.
    let (_, html) = page(&env.app, &dave, "/audit").await?;
    ensure!(!html.contains("Audit chain verified."), "{html}");
    Ok(())
}

#[tokio::test]
async fn a_request_timeline_lists_its_events_in_order() -> Result<()> {
    let env = env().await?;
    let dave = signed_in(&env.app, "dave").await?;
    let (status, html) = page(
        &env.app,
        &dave,
        &format!("/audit/requests/{}", env.approved),
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}");
    ensure!(html.contains("<ol class=\"timeline\">"));
    let created = html
        .find("<code>request.created</code>")
        .context("created missing")?;
    let approved = html
        .find("<code>request.approved</code>")
        .context("approved missing")?;
    let active = html
        .find("<code>grant.activated</code>")
        .context("activated missing")?;
    ensure!(created < approved && approved < active, "not in order");
    ensure!(
        !html.contains(&env.pending),
        "another request's events shown"
    );
    ensure!(html.contains("&lt;script&gt;"), "details not escaped");
    Ok(())
}

#[tokio::test]
async fn insights_count_where_and_why_people_elevate() -> Result<()> {
    let env = env().await?;
    let dave = signed_in(&env.app, "dave").await?;
    let (status, html) = page(&env.app, &dave, "/insights").await?;
    ensure!(status == StatusCode::OK, "{status}: {html}");
    // Three requests, two granted for 30 minutes each.
    let cells = |name: &str, requests: u32, granted: u32, total: &str, median: &str| {
        format!(
            "<th scope=\"row\">{name}</th><td class=\"num\">{requests}</td><td class=\"num\">{granted}</td><td class=\"num\">{total}</td><td class=\"num\">{median}</td>"
        )
    };
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    for expected in [
        cells("demo", 3, 2, "1h", "30m"),
        cells("demo · prod/orders", 3, 2, "1h", "30m"),
        cells("orders_writer", 2, 1, "30m", "30m"),
        cells("orders_reader", 1, 1, "30m", "30m"),
        cells("developers", 3, 2, "1h", "30m"),
        cells(&month, 3, 2, "1h", "30m"),
    ] {
        ensure!(html.contains(&expected), "missing row {expected}");
    }
    ensure!(
        html.contains("<td>障害</td><td class=\"num\">2</td>"),
        "Japanese bigram not counted"
    );
    ensure!(html.contains("<td>対応</td>"));
    ensure!(
        html.contains("<td>CHG-7</td><td class=\"num\">1</td>"),
        "ticket"
    );
    ensure!(
        html.contains("id=\"chart-months\"") && html.contains("id=\"chart-targets\""),
        "charts missing"
    );
    ensure!(html.contains("<svg class=\"chart\""));
    ensure!(html.contains("role=\"img\""));
    ensure!(html.contains("<title id=\"chart-targets-title\">Requests per target</title>"));
    ensure!(html.contains("<rect class=\"bar\""));
    ensure!(
        html.contains(&format!("href=\"/requests/{}\"", env.break_glass)),
        "break-glass awaiting review not listed"
    );
    ensure!(
        !html.contains("<script>alert"),
        "a justification ran as markup"
    );

    let (_, html) = page(
        &env.app,
        &dave,
        "/insights?since=2000-01-01&until=2000-12-31",
    )
    .await?;
    ensure!(
        html.contains("No requests in this time range."),
        "range ignored"
    );
    ensure!(
        html.contains(&format!("href=\"/requests/{}\"", env.break_glass)),
        "awaiting review hidden by the range"
    );
    Ok(())
}
