//! `elevate check-config FILE` accepts a valid config and, for an invalid
//! one, exits 1 naming each problem with its line, all at once; `elevate
//! serve` refuses to start on the same mistakes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::common::{binary, dry_run_config, store_created, Setup};

/// Runs `elevate check-config PATH`.
fn check_config(path: &Path) -> Result<Output> {
    Ok(Command::new(binary())
        .arg("check-config")
        .arg(path)
        .env_remove("ELEVATE_CONFIG")
        .output()?)
}

/// `text` with `from` (which must occur exactly once) replaced by `to`.
fn edit(text: &str, from: &str, to: &str) -> Result<String> {
    let found = text.matches(from).count();
    ensure!(found == 1, "{from:?} occurs {found} times in the config");
    Ok(text.replacen(from, to, 1))
}

/// The 1-based line of the first occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> Result<usize> {
    let at = text
        .find(needle)
        .with_context(|| format!("{needle:?} not in the config"))?;
    Ok(text[..at].matches('\n').count() + 1)
}

/// The line of the last `header` (e.g. `[[eligibilities]]`) at or before
/// the line holding `needle`: where the entry that holds it starts.
fn header_of(text: &str, header: &str, needle: &str) -> Result<usize> {
    let inside = line_of(text, needle)?;
    text.lines()
        .enumerate()
        .take(inside)
        .filter(|(_, l)| l.trim() == header)
        .map(|(i, _)| i + 1)
        .last()
        .with_context(|| format!("no {header} before {needle:?}"))
}

/// The error lines on stderr (warnings and the summary left out), each
/// with the config line it names, if any.
fn error_lines(stderr: &str) -> Vec<(Option<usize>, String)> {
    stderr
        .lines()
        .filter(|l| l.contains("error: "))
        .map(|l| {
            let line = l.split_once(": line ").and_then(|(_, rest)| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            });
            (line, l.to_owned())
        })
        .collect()
}

/// One mistake in an otherwise valid config.
struct Case {
    name: &'static str,
    text: String,
    /// Every one of these must appear in the error line.
    says: Vec<&'static str>,
    /// The error must name one of these lines.
    lines: Vec<usize>,
    /// Whether the mistake must give exactly one error (no cascade).
    single: bool,
}

fn cases(valid: &str) -> Result<Vec<Case>> {
    let mut cases = Vec::new();

    let text = edit(valid, "quorum = 2", "quorum = = 2")?;
    cases.push(Case {
        name: "a TOML syntax error",
        lines: vec![line_of(&text, "quorum = = 2")?],
        says: vec![],
        single: true,
        text,
    });

    let text = edit(
        valid,
        "break_glass = true",
        "break_glass = true\napproval_requried = true",
    )?;
    cases.push(Case {
        name: "a misspelt key",
        lines: vec![line_of(&text, "approval_requried")?],
        says: vec!["unknown field", "approval_requried"],
        single: true,
        text,
    });

    let eligibility_roles = "roles = [\"orders_writer\", \"orders_reader\"]\nmax_duration";
    let text = edit(
        valid,
        eligibility_roles,
        "roles = [\"orders_writer\", \"orders_admin\"]\nmax_duration",
    )?;
    cases.push(Case {
        name: "an unknown role in an eligibility",
        lines: vec![header_of(&text, "[[eligibilities]]", "orders_admin")?],
        says: vec!["unknown role \"orders_admin\"", "developers-prod"],
        single: true,
        text,
    });

    let text = edit(
        valid,
        "resources = { ids = [\"billing\"] }",
        "resources = { ids = [\"billing\", \"payroll\"] }",
    )?;
    cases.push(Case {
        name: "an unknown resource in a selector",
        lines: vec![header_of(&text, "[[approval_policies]]", "payroll")?],
        says: vec!["unknown resource \"payroll\"", "billing-two-person"],
        single: true,
        text,
    });

    let text = edit(
        valid,
        "id = \"billing\"\nparent = \"prod\"",
        "id = \"billing\"\nparent = \"nowhere\"",
    )?;
    cases.push(Case {
        name: "an unknown parent resource",
        lines: vec![
            header_of(&text, "[[targets]]", "nowhere")?,
            header_of(&text, "[[targets.resources]]", "nowhere")?,
            line_of(&text, "nowhere")?,
        ],
        says: vec!["unknown parent \"nowhere\""],
        single: true,
        text,
    });

    let text = edit(
        valid,
        "id = \"prod\"\n",
        "id = \"prod\"\nparent = \"orders\"\n",
    )?;
    cases.push(Case {
        name: "resources whose parents form a cycle",
        lines: vec![
            header_of(&text, "[[targets]]", "parent = \"orders\"")?,
            header_of(&text, "[[targets.resources]]", "parent = \"orders\"")?,
            line_of(&text, "parent = \"orders\"")?,
        ],
        says: vec!["cycle"],
        // Every resource on the cycle may be named.
        single: false,
        text,
    });

    let text = edit(valid, "max_duration = \"1h\"", "max_duration = \"8 hours\"")?;
    cases.push(Case {
        name: "a duration in words",
        lines: vec![header_of(&text, "[[eligibilities]]", "8 hours")?],
        says: vec!["max_duration", "8 hours"],
        single: true,
        text,
    });

    let text = edit(valid, "quorum = 1", "quorum = 0")?;
    cases.push(Case {
        name: "a quorum of 0",
        lines: vec![header_of(&text, "[[approval_policies]]", "quorum = 0")?],
        says: vec!["quorum", "at least 1", "prod-dba"],
        single: true,
        text,
    });

    let text = edit(valid, "id = \"billing-two-person\"", "id = \"prod-dba\"")?;
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "id = \"prod-dba\"")
        .map(|(i, _)| i + 1)
        .last()
        .context("no second prod-dba")?;
    let second_header = text
        .lines()
        .enumerate()
        .take(second)
        .filter(|(_, l)| l.trim() == "[[approval_policies]]")
        .map(|(i, _)| i + 1)
        .last()
        .context("no header")?;
    cases.push(Case {
        name: "a duplicate approval policy id",
        lines: vec![second_header],
        says: vec!["duplicate approval policy id \"prod-dba\""],
        single: true,
        text,
    });

    // A second resource "orders" at the end of the target's resources.
    let text = format!("{valid}\n[[targets.resources]]\nid = \"orders\"\n");
    let mut lines = vec![header_of(&text, "[[targets]]", "id = \"demo\"")?];
    lines.push(text.lines().count() - 1);
    cases.push(Case {
        name: "a duplicate resource id",
        lines,
        says: vec!["duplicate resource id \"orders\""],
        single: true,
        text,
    });

    let text = edit(
        valid,
        "subjects = [\"group:developers\"]",
        "subjects = [\"developers\"]",
    )?;
    cases.push(Case {
        name: "a subject without user: or group:",
        lines: vec![header_of(
            &text,
            "[[eligibilities]]",
            "subjects = [\"developers\"]",
        )?],
        says: vec!["developers", "user:NAME or group:NAME"],
        // Also reported: the list then names nobody valid.
        single: false,
        text,
    });

    let text = edit(
        valid,
        "kind = \"dry-run\"\nroles = [\"orders_writer\", \"orders_reader\"]\n",
        "kind = \"postgres\"\nroles = [\"orders_writer\", \"orders_reader\"]\n[targets.postgres]\nuser = \"broker\"\npassword_file = \"/nonexistent/elevate-password\"\n",
    )?;
    cases.push(Case {
        name: "a missing password_file",
        lines: vec![
            header_of(&text, "[[targets]]", "kind = \"postgres\"")?,
            line_of(&text, "password_file")?,
        ],
        says: vec![
            "password_file",
            "cannot read",
            "/nonexistent/elevate-password",
        ],
        single: true,
        text,
    });

    let text = edit(valid, "kind = \"dry-run\"", "kind = \"oracle\"")?;
    cases.push(Case {
        name: "an unknown target kind",
        lines: vec![
            header_of(&text, "[[targets]]", "oracle")?,
            line_of(&text, "oracle")?,
        ],
        says: vec!["unknown target kind \"oracle\"", "dry-run"],
        single: true,
        text,
    });
    Ok(cases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_config_is_ok_and_creates_no_database() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("elevate.db");
    let file = dir.path().join("elevate.toml");
    std::fs::write(&file, dry_run_config(&db, &Setup::default())?)?;

    let out = check_config(&file)?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        out.status.code() == Some(0),
        "check-config failed ({:?}): {stdout} {stderr}",
        out.status
    );
    ensure!(
        stdout.contains("OK") && stdout.contains("5 users") && stdout.contains("1 targets"),
        "stdout should say OK and what was loaded: {stdout}"
    );
    ensure!(
        !stderr.contains("error"),
        "a valid config printed errors: {stderr}"
    );
    ensure!(
        !store_created(&db).await?,
        "check-config created the database"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_mistake_is_reported_with_its_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("elevate.db");
    let valid = dry_run_config(&db, &Setup::default())?;
    let mut failures = Vec::new();

    for case in cases(&valid)? {
        let file = dir.path().join("elevate.toml");
        std::fs::write(&file, &case.text)?;
        let out = check_config(&file)?;
        let stdout = String::from_utf8(out.stdout)?;
        let stderr = String::from_utf8(out.stderr)?;
        let errors = error_lines(&stderr);
        let problem = if out.status.code() != Some(1) {
            Some(format!("exit status {:?}", out.status))
        } else if stdout.contains("OK") {
            Some(format!("stdout says OK: {stdout}"))
        } else if errors.is_empty() {
            Some("no error line".to_owned())
        } else if case.single && errors.len() != 1 {
            Some(format!("{} error lines for one mistake", errors.len()))
        } else if !errors.iter().any(|(line, text)| {
            line.is_some_and(|l| case.lines.contains(&l))
                && case.says.iter().all(|s| text.contains(s))
                && text.contains(&file.display().to_string())
        }) {
            Some(format!(
                "no error line names the file, one of lines {:?} and all of {:?}",
                case.lines, case.says
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            failures.push(format!("{}: {problem}\n{stderr}", case.name));
        }
    }
    ensure!(
        !store_created(&db).await?,
        "check-config created the database"
    );
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_mistakes_are_all_reported_at_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let valid = dry_run_config(&dir.path().join("elevate.db"), &Setup::default())?;
    let text = edit(
        &valid,
        "max_duration = \"1h\"",
        "max_duration = \"8 hours\"",
    )?;
    let text = edit(&text, "quorum = 1", "quorum = 0")?;
    let text = edit(
        &text,
        "resources = { ids = [\"billing\"] }",
        "resources = { ids = [\"payroll\"] }",
    )?;
    let file = dir.path().join("elevate.toml");
    std::fs::write(&file, &text)?;

    let out = check_config(&file)?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status);
    let errors = error_lines(&stderr);
    ensure!(
        errors.len() == 3,
        "expected 3 error lines, got {}:\n{stderr}",
        errors.len()
    );
    for expected in ["8 hours", "at least 1", "unknown resource \"payroll\""] {
        ensure!(
            errors
                .iter()
                .any(|(line, text)| line.is_some() && text.contains(expected)),
            "no error line with a line number mentions {expected:?}:\n{stderr}"
        );
    }
    ensure!(
        stderr.contains("3 error(s)"),
        "the summary should count 3 errors:\n{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_file_is_one_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("does-not-exist.toml");
    let out = check_config(&file)?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status);
    let errors = error_lines(&stderr);
    ensure!(errors.len() == 1, "expected one error line, got:\n{stderr}");
    let (_, line) = &errors[0];
    ensure!(
        line.contains(&file.display().to_string()) && line.contains("cannot read"),
        "the error should name the file and why: {line}"
    );
    ensure!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// Runs `elevate serve ARGS`, which must exit by itself within `within`;
/// killed otherwise.
fn serve_must_exit(args: &[&str], dir: &Path, within: Duration) -> Result<Output> {
    let mut child = Command::new(binary())
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env_remove("ELEVATE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "`elevate serve {}` still running after {within:?}; stderr: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_on_an_invalid_config() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("elevate.db");
    let valid = dry_run_config(&db, &Setup::default())?;
    let text = edit(
        &valid,
        "roles = [\"orders_writer\", \"orders_reader\"]\nmax_duration",
        "roles = [\"orders_writer\", \"orders_admin\"]\nmax_duration",
    )?;
    let file = dir.path().join("elevate.toml");
    std::fs::write(&file, &text)?;
    let path = file.display().to_string();

    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        let path = path.clone();
        move || {
            serve_must_exit(
                &["--config", &path, "--listen", "127.0.0.1:0"],
                &dir,
                Duration::from_secs(10),
            )
        }
    })
    .await??;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        !out.status.success(),
        "serve started on an invalid config: {stderr}"
    );
    ensure!(
        stderr.contains("unknown role \"orders_admin\"") && stderr.contains("not starting"),
        "stderr should say what is wrong and that it does not start:\n{stderr}"
    );
    ensure!(
        !store_created(&db).await?,
        "the refused server created its database"
    );

    let missing = dir.path().join("missing.toml").display().to_string();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || serve_must_exit(&["--config", &missing], &dir, Duration::from_secs(10))
    })
    .await??;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        !out.status.success() && stderr.contains("missing.toml"),
        "serve with a missing config: {:?} {stderr}",
        out.status
    );

    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || serve_must_exit(&[], &dir, Duration::from_secs(10))
    })
    .await??;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        !out.status.success() && stderr.contains("--config"),
        "serve without a config should ask for one: {:?} {stderr}",
        out.status
    );
    Ok(())
}
