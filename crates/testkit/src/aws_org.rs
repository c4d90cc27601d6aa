//! Seeds a running moto ([`crate::moto::MotoServer`]) with an AWS
//! Organization and an IAM Identity Center instance, and looks at its
//! account assignments from outside elevate, for the
//! `aws-identity-center` tests. Runs `aws_org.py` (next to this file)
//! with boto3, which comes with `moto[server]`, in the interpreter moto
//! runs in (`ELEVATE_PYTHON` or `python3`). Region `us-east-1`, keys
//! `testing`/`testing`.
//!
//! A seed spec (every key optional):
//!
//! ```json
//! {
//!   "accounts": [{"name": "sandbox", "email": "…", "tags": {"k": "v"}}],
//!   "ous": [{"name": "Workloads", "tags": {}, "accounts": [],
//!            "ous": [{"name": "Prod", "accounts": [{"name": "payments-prod"}]}]}],
//!   "users": [{"user_name": "alice", "display_name": "Alice",
//!              "emails": ["Alice@Example.COM"]}],
//!   "groups": [{"name": "ops", "members": ["alice"]}],
//!   "permission_sets": ["ReadOnly"]
//! }
//! ```
//!
//! moto quirks worth knowing: its sso-admin makes one instance per
//! account and region on first `ListInstances`; assignments succeed at
//! once and duplicates are stored twice; Identity Store lookups compare
//! exactly (case-sensitive).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};

const SCRIPT: &str = include_str!("aws_org.py");

/// The ids moto gave what [`seed`] created, by name.
#[derive(Debug, Clone, Deserialize)]
pub struct Seeded {
    pub instance_arn: String,
    pub identity_store_id: String,
    pub management_account: String,
    /// The root's id (`r-…`).
    pub root: String,
    /// OU name → `ou-…`.
    pub ous: BTreeMap<String, String>,
    /// Account name → 12-digit id.
    pub accounts: BTreeMap<String, String>,
    /// User name → Identity Store user id.
    pub users: BTreeMap<String, String>,
    /// Group name → Identity Store group id.
    pub groups: BTreeMap<String, String>,
    /// Permission set name → ARN.
    pub permission_sets: BTreeMap<String, String>,
}

/// Runs one command of `aws_org.py` with `input` on stdin; its JSON answer.
fn run(command: &str, moto_url: &str, input: &Value) -> anyhow::Result<Value> {
    let python = std::env::var_os("ELEVATE_PYTHON").unwrap_or_else(|| "python3".into());
    let mut child = Command::new(python)
        .args(["-c", SCRIPT, command, moto_url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting Python 3 (is it installed?)")?;
    {
        let mut stdin = child
            .stdin
            .take()
            .context("the seeding script has no stdin")?;
        stdin.write_all(input.to_string().as_bytes())?;
    }
    let output = child
        .wait_with_output()
        .context("waiting for the seeding script")?;
    if !output.status.success() {
        bail!(
            "aws_org.py {command} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "aws_org.py {command} printed no JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Creates what `spec` describes (see the module docs) in moto, and the
/// organization itself; returns the ids as JSON (see [`Seeded`]).
pub fn seed(moto_url: &str, spec: &Value) -> anyhow::Result<Value> {
    run("seed", moto_url, spec)
}

/// [`seed`], with the answer typed.
pub fn seed_typed(moto_url: &str, spec: &Value) -> anyhow::Result<Seeded> {
    Ok(serde_json::from_value(seed(moto_url, spec)?)?)
}

/// Every `(principal_type, principal_id)` holding the permission set in
/// the account, duplicates included (moto keeps them).
pub fn list_assignments(
    moto_url: &str,
    instance_arn: &str,
    account_id: &str,
    permission_set_arn: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let found = run(
        "list_assignments",
        moto_url,
        &json!({
            "instance_arn": instance_arn,
            "account_id": account_id,
            "permission_set_arn": permission_set_arn,
        }),
    )?;
    Ok(serde_json::from_value(found)?)
}

/// Creates an assignment behind elevate's back (as an administrator in
/// the AWS console would). `principal_type` is `USER` or `GROUP`.
pub fn create_assignment_directly(
    moto_url: &str,
    instance_arn: &str,
    account_id: &str,
    permission_set_arn: &str,
    principal_type: &str,
    principal_id: &str,
) -> anyhow::Result<()> {
    run(
        "create_assignment",
        moto_url,
        &json!({
            "instance_arn": instance_arn,
            "account_id": account_id,
            "permission_set_arn": permission_set_arn,
            "principal_type": principal_type,
            "principal_id": principal_id,
        }),
    )?;
    Ok(())
}

/// Adds an account named `name` with `tags` under `parent_id` (an OU or
/// the root) to the organization [`seed`] made; its new id.
pub fn add_account(
    moto_url: &str,
    parent_id: &str,
    name: &str,
    tags: &Value,
) -> anyhow::Result<String> {
    let id = run(
        "add_account",
        moto_url,
        &json!({"parent_id": parent_id, "name": name, "tags": tags}),
    )?;
    id.as_str()
        .map(str::to_owned)
        .context("aws_org.py add_account printed no account id")
}

/// Adds an Identity Store user as the seeding does (`{"user_name": …,
/// "emails": […]}`), behind elevate's back; the new user's id.
pub fn add_user(moto_url: &str, user: &Value) -> anyhow::Result<String> {
    let id = run("add_user", moto_url, user)?;
    id.as_str()
        .map(str::to_owned)
        .context("aws_org.py add_user printed no user id")
}

/// Deletes an Identity Store user, behind elevate's back.
pub fn delete_user(moto_url: &str, user_id: &str) -> anyhow::Result<()> {
    run("delete_user", moto_url, &json!({ "user_id": user_id }))?;
    Ok(())
}
