//! `elevate targets`: what a refresh read and what a reconciliation found,
//! as text. Names and ids come from the target (AWS), so every value is
//! made one line before it is printed.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::text::one_line;

#[derive(Debug, Deserialize)]
pub(crate) struct RefreshView {
    target: String,
    accounts: usize,
    organizational_units: usize,
    roles: usize,
    #[serde(default)]
    refused: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct FindingView {
    resource: String,
    role: String,
    principal_type: String,
    principal_id: String,
    principal_name: Option<String>,
    resource_name: Option<String>,
    #[serde(default)]
    removed: bool,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReportView {
    target: String,
    mode: String,
    roles: Vec<String>,
    assignments: usize,
    unmanaged: Vec<FindingView>,
}

pub(crate) fn refreshed(v: &RefreshView) -> String {
    let mut out = format!(
        "target {} refreshed: {} accounts in {} organizational units, {} roles",
        one_line(&v.target),
        v.accounts,
        v.organizational_units,
        v.roles
    );
    for (account, reason) in &v.refused {
        out.push_str(&format!(
            "\n  never granted: {} ({})",
            one_line(account),
            one_line(reason)
        ));
    }
    out
}

pub(crate) fn report(v: &ReportView) -> String {
    let mut out = format!(
        "target {}: {} assignments of {} checked ({}); ",
        one_line(&v.target),
        v.assignments,
        if v.roles.is_empty() {
            "no roles".to_string()
        } else {
            one_line(&v.roles.join(", "))
        },
        one_line(&v.mode)
    );
    if v.unmanaged.is_empty() {
        out.push_str("every one is accounted for by a grant\n");
        return out;
    }
    out.push_str(&format!(
        "{} not given through elevate:\n",
        v.unmanaged.len()
    ));
    for f in &v.unmanaged {
        let account = match &f.resource_name {
            Some(name) => format!("{} ({})", one_line(&f.resource), one_line(name)),
            None => one_line(&f.resource),
        };
        let who = f.principal_name.as_deref().unwrap_or(&f.principal_id);
        let status = match (&f.error, f.removed) {
            (Some(e), _) => format!("  [removal failed: {}]", one_line(e)),
            (None, true) => "  [removed]".to_string(),
            (None, false) => String::new(),
        };
        out.push_str(&format!(
            "  {account}  {}  {} {}{status}\n",
            one_line(&f.role),
            one_line(&f.principal_type),
            one_line(who)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_each_unmanaged_assignment_and_what_was_done() {
        let v: ReportView = serde_json::from_value(serde_json::json!({
            "target": "aws", "mode": "remove", "roles": ["Admin"], "assignments": 3,
            "unmanaged": [
                {"resource": "111122223333", "resource_name": "payments\nprod", "role": "Admin",
                 "principal_type": "USER", "principal_id": "u-1", "principal_name": "mallory",
                 "removed": true, "error": null},
                {"resource": "111122223334", "resource_name": null, "role": "Admin",
                 "principal_type": "GROUP", "principal_id": "g-1", "principal_name": null,
                 "removed": false, "error": "AccessDenied"}
            ]
        }))
        .unwrap();
        let text = report(&v);
        assert!(
            text.contains("3 assignments of Admin checked (remove); 2 not given through elevate"),
            "{text}"
        );
        assert!(
            text.contains("111122223333 (payments prod)  Admin  USER mallory  [removed]"),
            "{text}"
        );
        assert!(
            text.contains("111122223334  Admin  GROUP g-1  [removal failed: AccessDenied]"),
            "{text}"
        );
        let clean: ReportView = serde_json::from_value(serde_json::json!({
            "target": "aws", "mode": "report", "roles": [], "assignments": 0, "unmanaged": []
        }))
        .unwrap();
        assert!(report(&clean).contains("no roles checked (report); every one is accounted for"));
    }
}
