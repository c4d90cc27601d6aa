//! Turning the server's answers into what people read.
//!
//! Actions print one line saying what happened and what happens next;
//! lists print aligned tables; `show` prints a request with its history.
//! Times are local, `YYYY-MM-DD HH:MM`, with the time left where it matters
//! ("ends in 42m"). "Now" and the time zone are fields of [`Presenter`] so
//! tests pin both.

use std::fmt::Display;
use std::io::Write;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use crate::api::{
    read, value_text, AuditList, AuditVerification, EligibleList, GrantList, Me, RequestList,
    RequestView, Timestamp,
};
use crate::args::{AuditAction, ClientCommand};
use crate::error::CliError;
use crate::table::Table;
use crate::text::{one_line, truncate};

/// Widest a target name may be before " (dry-run)" is appended.
const TARGET_WIDTH: usize = 24;
const NAME_WIDTH: usize = 24;
const REASON_WIDTH: usize = 40;
const STATUS_WIDTH: usize = 36;
const DETAILS_WIDTH: usize = 60;
/// Shown for a field that has no value.
const NONE: &str = "—";

/// Renders answers for one moment in one time zone.
pub(crate) struct Presenter<Tz: TimeZone> {
    now: DateTime<Utc>,
    zone: Tz,
}

impl<Tz: TimeZone> Presenter<Tz>
where
    Tz::Offset: Display,
{
    pub(crate) fn new(now: DateTime<Utc>, zone: Tz) -> Self {
        Self { now, zone }
    }

    /// Writes what `command` got back as `answer`. Fails (after writing the
    /// report) when `audit verify` found a broken chain.
    pub(crate) fn present(
        &self,
        command: &ClientCommand,
        answer: &Value,
        out: &mut (dyn Write + Send),
    ) -> Result<(), CliError> {
        let text = self.render(command, answer)?;
        out.write_all(text.as_bytes())?;
        out.flush()?;
        chain_failure(command, answer)
    }

    fn render(&self, command: &ClientCommand, answer: &Value) -> Result<String, CliError> {
        let text = match command {
            ClientCommand::Request { .. } => {
                let view: RequestView = read(answer, "the new request")?;
                let mut line = format!(
                    "request {} created: {}",
                    shown_id(&view, ""),
                    self.phrase(&view)
                );
                if view.break_glass {
                    line.push_str(
                        "; break-glass: approvers are alerted and the use will be reviewed",
                    );
                }
                line
            }
            ClientCommand::Approve { id, .. } => {
                let view: RequestView = read(answer, "the request")?;
                let id = shown_id(&view, id);
                if view.state == "pending" {
                    format!("{id} approved ({})", approval_progress(&view))
                } else {
                    format!("{id} approved: {}", self.phrase(&view))
                }
            }
            ClientCommand::Reject { id, .. } => {
                let view: RequestView = read(answer, "the request")?;
                self.outcome(&view, id, "rejected", &["rejected"])
            }
            ClientCommand::Cancel { id } => {
                let view: RequestView = read(answer, "the request")?;
                self.outcome(&view, id, "cancelled", &["cancelled"])
            }
            ClientCommand::Revoke { id, .. } => {
                let view: RequestView = read(answer, "the grant")?;
                self.outcome(&view, id, "revoked", &["revoked", "ended"])
            }
            ClientCommand::Deactivate { id } => {
                let view: RequestView = read(answer, "the grant")?;
                self.outcome(&view, id, "deactivated", &["revoked", "ended"])
            }
            ClientCommand::Extend { id, .. } => {
                let view: RequestView = read(answer, "the extension request")?;
                let extended = view
                    .extends
                    .as_deref()
                    .map(one_line)
                    .unwrap_or_else(|| one_line(id));
                format!(
                    "extension {} of {extended} created: {}",
                    shown_id(&view, ""),
                    self.phrase(&view)
                )
            }
            ClientCommand::Acknowledge { id, .. } => {
                let view: RequestView = read(answer, "the request")?;
                format!("{} break-glass use acknowledged", shown_id(&view, id))
            }
            ClientCommand::Show { .. } => {
                return Ok(self.request_detail(&read(answer, "the request")?))
            }
            ClientCommand::Requests {
                mine, pending, all, ..
            } => {
                let list: RequestList = read(answer, "the request list")?;
                let mine = *mine || !(*pending || *all);
                return Ok(self.request_table(&list.requests, !mine));
            }
            ClientCommand::Grants { all, .. } => {
                let list: GrantList = read(answer, "the grant list")?;
                return Ok(self.grant_table(&list.grants, *all));
            }
            ClientCommand::Eligible { .. } => {
                return Ok(self.eligible_table(&read(answer, "your eligibility")?))
            }
            ClientCommand::Whoami => return Ok(self.whoami(&read(answer, "your identity")?)),
            ClientCommand::Targets {
                action: crate::args::TargetsAction::Refresh { .. },
            } => crate::targets::refreshed(&read(answer, "the refresh summary")?),
            ClientCommand::Targets { .. } => {
                return Ok(crate::targets::report(&read(
                    answer,
                    "the reconciliation report",
                )?))
            }
            ClientCommand::Creds { format, .. } => {
                if *format == crate::args::CredsFormat::Json {
                    return serde_json::to_string_pretty(answer)
                        .map(|text| format!("{text}\n"))
                        .map_err(|e| CliError::Protocol(e.to_string()));
                }
                return crate::sessions::credentials(*format, &read(answer, "the credentials")?);
            }
            ClientCommand::Console { .. } => {
                let view: crate::sessions::ConsoleView = read(answer, "the console URL")?;
                view.url
            }
            // Not API calls: `run` handles them before any answer exists.
            ClientCommand::Login { .. } | ClientCommand::Logout => return Ok(String::new()),
            ClientCommand::Audit { action: None, .. } => {
                return Ok(self.audit_table(&read(answer, "the audit events")?))
            }
            ClientCommand::Audit {
                action: Some(AuditAction::Verify),
                ..
            } => verification_report(&read(answer, "the verification result")?),
            // Streamed straight to the output by the client.
            ClientCommand::Audit {
                action: Some(AuditAction::Export),
                ..
            } => return Ok(String::new()),
        };
        Ok(format!("{text}\n"))
    }

    /// "r-… rejected" when the request reached one of `done_states`,
    /// otherwise where it stands now (e.g. still being removed).
    fn outcome(&self, view: &RequestView, id: &str, verb: &str, done_states: &[&str]) -> String {
        let id = shown_id(view, id);
        if view.state.is_empty() || done_states.contains(&view.state.as_str()) {
            format!("{id} {verb}")
        } else {
            format!("{id} {verb}: {}", self.phrase(view))
        }
    }

    /// Where a request stands and what happens next, for action messages.
    fn phrase(&self, view: &RequestView) -> String {
        match view.state.as_str() {
            "pending" => {
                let mut phrase = "pending approval".to_string();
                if !view.approvers.is_empty() {
                    phrase.push_str(" by ");
                    phrase.push_str(&one_line(&view.approvers.join(", ")));
                }
                if !view.approvals.is_empty() {
                    phrase.push_str(&format!(" ({})", approval_progress(view)));
                } else if let Some(quorum) = view.quorum {
                    phrase.push_str(&format!(" (quorum {quorum})"));
                }
                phrase
            }
            "scheduled" => format!(
                "scheduled to start {}{}",
                self.time(view.starts_at.as_ref()),
                self.relative(view.starts_at.as_ref(), "in")
            ),
            "approved" => "access is being granted".to_string(),
            "active" => format!(
                "access is now active until {}{}",
                self.time(view.ends_at.as_ref()),
                self.relative(view.ends_at.as_ref(), "ends in")
            ),
            "ending" => "access is being removed".to_string(),
            _ => status_text(view),
        }
    }

    /// The STATUS cell of request and grant tables.
    fn status_cell(&self, view: &RequestView) -> String {
        let cell = match (view.state.as_str(), view.quorum) {
            ("pending", Some(quorum)) => format!("pending ({}/{quorum})", view.approvals.len()),
            ("scheduled", _) => match self.remaining(view.starts_at.as_ref()) {
                Some(left) => format!("scheduled, starts in {left}"),
                None => "scheduled".to_string(),
            },
            ("active", _) => match self.remaining(view.ends_at.as_ref()) {
                Some(left) => format!("active, ends in {left}"),
                None => "active".to_string(),
            },
            _ => status_text(view),
        };
        // First, so that cutting a long status never hides it.
        if view.break_glass && !cell.contains("break-glass") {
            format!("[break-glass] {cell}")
        } else {
            cell
        }
    }

    /// `YYYY-MM-DD HH:MM` in the presenter's zone; raw text if unparseable.
    fn time(&self, time: Option<&Timestamp>) -> String {
        match time {
            Some(Timestamp {
                instant: Some(instant),
                ..
            }) => instant
                .with_timezone(&self.zone)
                .format("%Y-%m-%d %H:%M")
                .to_string(),
            Some(Timestamp { raw, .. }) if !raw.is_empty() => one_line(raw),
            _ => NONE.to_string(),
        }
    }

    /// " (ends in 42m)" for a time still ahead, "" otherwise.
    fn relative(&self, time: Option<&Timestamp>, lead: &str) -> String {
        self.remaining(time)
            .map(|left| format!(" ({lead} {left})"))
            .unwrap_or_default()
    }

    /// How long until `time` ("42m"), if it is still ahead.
    fn remaining(&self, time: Option<&Timestamp>) -> Option<String> {
        let instant = time.and_then(|time| time.instant)?;
        let seconds = (instant - self.now).num_seconds();
        (seconds > 0).then(|| span(seconds))
    }

    fn request_table(&self, requests: &[RequestView], with_requester: bool) -> String {
        if requests.is_empty() {
            return "no requests\n".to_string();
        }
        let mut headers = vec!["ID"];
        if with_requester {
            headers.push("REQUESTER");
        }
        headers.extend([
            "STATUS", "TARGET", "RESOURCE", "ROLE", "FOR", "CREATED", "REASON",
        ]);
        let offset = usize::from(with_requester);
        let mut table = Table::new(&headers)
            .cap(1, NAME_WIDTH)
            .cap(1 + offset, STATUS_WIDTH)
            .cap(3 + offset, NAME_WIDTH)
            .cap(4 + offset, NAME_WIDTH)
            .cap(7 + offset, REASON_WIDTH);
        for view in requests {
            let mut row = vec![view.id.clone()];
            if with_requester {
                row.push(view.requester.clone());
            }
            let duration = if view.kind == "extension" {
                format!("+{}", view.duration)
            } else {
                view.duration.clone()
            };
            row.extend([
                self.status_cell(view),
                target_cell(&view.target, view.dry_run),
                view.resource.clone(),
                view.role.clone(),
                duration,
                self.time(view.created_at.as_ref()),
                view.justification.clone(),
            ]);
            table.row(row);
        }
        table.render()
    }

    fn grant_table(&self, grants: &[RequestView], with_requester: bool) -> String {
        if grants.is_empty() {
            return "no grants\n".to_string();
        }
        let mut headers = vec!["ID"];
        if with_requester {
            headers.push("REQUESTER");
        }
        headers.extend(["TARGET", "RESOURCE", "ROLE", "STARTS", "ENDS", "STATUS"]);
        let offset = usize::from(with_requester);
        let mut table = Table::new(&headers)
            .cap(1, NAME_WIDTH)
            .cap(2 + offset, NAME_WIDTH)
            .cap(3 + offset, NAME_WIDTH)
            .cap(6 + offset, STATUS_WIDTH);
        for view in grants {
            let mut row = vec![view.id.clone()];
            if with_requester {
                row.push(view.requester.clone());
            }
            row.extend([
                target_cell(&view.target, view.dry_run),
                view.resource.clone(),
                view.role.clone(),
                self.time(view.starts_at.as_ref()),
                self.time(view.ends_at.as_ref()),
                self.status_cell(view),
            ]);
            table.row(row);
        }
        table.render()
    }

    fn eligible_table(&self, list: &EligibleList) -> String {
        if list.eligible.is_empty() {
            return match list.total {
                Some(total) if total > 0 => {
                    format!("nothing on this page: {total} entries match in all\n")
                }
                _ => "nothing to request: you are not eligible for any role (or none matches)\n"
                    .to_string(),
            };
        }
        let mut table = Table::new(&[
            "TARGET",
            "RESOURCE",
            "ROLE",
            "MAX",
            "NEEDS",
            "ELIGIBLE UNTIL",
        ])
        .cap(1, NAME_WIDTH)
        .cap(2, NAME_WIDTH);
        for eligible in &list.eligible {
            let mut needs: Vec<&str> = Vec::new();
            if eligible.approval_required {
                needs.push("approval");
            }
            if eligible.ticket_required {
                needs.push("ticket");
            }
            let mut needs = if needs.is_empty() {
                "nothing".to_string()
            } else {
                needs.join(", ")
            };
            if eligible.break_glass {
                needs.push_str("; break-glass allowed");
            }
            table.row([
                target_cell(&eligible.target, eligible.dry_run),
                eligible.resource.clone(),
                eligible.role.clone(),
                eligible.max_duration.clone(),
                needs,
                self.time(eligible.not_after.as_ref()),
            ]);
        }
        let mut out = table.render();
        if let Some(total) = list.total.filter(|t| *t > list.eligible.len() as u64) {
            out.push_str(&format!(
                "{} of {total} shown; narrow with --search, --role or --tag, or page with --offset\n",
                list.eligible.len()
            ));
        }
        out
    }

    fn audit_table(&self, list: &AuditList) -> String {
        if list.events.is_empty() {
            return "no audit events\n".to_string();
        }
        let mut table = Table::new(&["SEQ", "AT", "ACTOR", "ACTION", "REQUEST", "DETAILS"])
            .cap(2, NAME_WIDTH)
            .cap(5, DETAILS_WIDTH);
        for event in &list.events {
            table.row([
                value_text(&event.seq),
                self.time(event.at.as_ref()),
                event.actor.clone(),
                event.action.clone(),
                event.request.clone().unwrap_or_default(),
                details_text(&event.details),
            ]);
        }
        table.render()
    }

    /// `whoami`: the identity, then how it was proven and until when.
    fn whoami(&self, me: &Me) -> String {
        let mut table = Table::key_value();
        table.row(["name", &me.name]);
        table.row(["email", &or_none(&me.email)]);
        table.row(["display name", &or_none(&me.display_name)]);
        table.row(["groups", &or_none(&me.groups.join(", "))]);
        let mut rights = Vec::new();
        if me.admin {
            rights.push("admin");
        }
        if me.auditor {
            rights.push("auditor");
        }
        table.row(["rights", &or_none(&rights.join(", "))]);
        if let Some(auth) = &me.auth {
            let method = match (auth.method.as_str(), auth.issuer.as_deref()) {
                ("token", _) => "API token".to_string(),
                ("oidc", Some(issuer)) => format!("single sign-on ({issuer})"),
                ("oidc", None) => "single sign-on".to_string(),
                ("session", _) => "web session".to_string(),
                (other, _) => or_unknown(other.to_string()),
            };
            table.row(["signed in with", &method]);
            let expires = match &auth.expires_at {
                None => NONE.to_string(),
                Some(at) => match self.remaining(Some(at)) {
                    Some(left) => format!("{} (in {left})", self.time(Some(at))),
                    None if at.instant.is_some() => format!("{} (expired)", self.time(Some(at))),
                    None => self.time(Some(at)),
                },
            };
            table.row(["expires", &expires]);
            if auth.acr.is_some() || !auth.amr.is_empty() {
                let mut assurance = auth.acr.clone().unwrap_or_else(|| NONE.to_string());
                if !auth.amr.is_empty() {
                    assurance.push_str(&format!(" ({})", auth.amr.join(", ")));
                }
                table.row(["assurance", &assurance]);
            }
            if auth.auth_time.is_some() {
                table.row(["authenticated", &self.time(auth.auth_time.as_ref())]);
            }
        }
        table.render()
    }

    /// `show`: the request, then its approvals, attempts and audit events.
    fn request_detail(&self, view: &RequestView) -> String {
        let mut fields = Table::key_value();
        let id = match &view.extends {
            Some(extends) => format!("{} (extension of {extends})", view.id),
            None => view.id.clone(),
        };
        fields.row(["request", &id]);
        let status = self.status_cell(view);
        fields.row(["status", &status]);
        // The server's own wording carries details (failing attempts, review)
        // that the computed cell may not.
        if !view.status.is_empty() && view.status != view.state && !status.contains(&view.status) {
            fields.row(["", &view.status]);
        }
        fields.row(["requester", &view.requester]);
        let target = match (view.dry_run, view.target_kind.is_empty()) {
            (true, _) => format!("{} (dry-run)", view.target),
            (false, false) => format!("{} ({})", view.target, view.target_kind),
            (false, true) => view.target.clone(),
        };
        fields.row(["target", &target]);
        let resource = if view.resource_path.is_empty() || view.resource_path == view.resource {
            view.resource.clone()
        } else {
            format!("{} ({})", view.resource, view.resource_path)
        };
        fields.row(["resource", &resource]);
        fields.row(["role", &view.role]);
        fields.row(["duration", &or_none(&view.duration)]);
        if view.requested_start.is_some() {
            fields.row(["start asked", &self.time(view.requested_start.as_ref())]);
        }
        if view.starts_at.is_some() || view.ends_at.is_some() {
            let window = format!(
                "{} → {}",
                self.time(view.starts_at.as_ref()),
                self.time(view.ends_at.as_ref())
            );
            fields.row(["window", &window]);
        }
        fields.row(["reason", &view.justification]);
        fields.row([
            "ticket",
            &or_none(view.ticket.as_deref().unwrap_or_default()),
        ]);
        if view.break_glass {
            let review = if view.review.is_empty() {
                "yes".to_string()
            } else {
                format!("yes, review {}", view.review.replace('_', " "))
            };
            fields.row(["break-glass", &review]);
        }
        fields.row(["created", &self.time(view.created_at.as_ref())]);
        if view.state == "pending" && view.expires_at.is_some() {
            let expires = format!(
                "{}{}",
                self.time(view.expires_at.as_ref()),
                self.relative(view.expires_at.as_ref(), "in")
            );
            fields.row(["expires", &expires]);
        }
        let mut approvers = if view.approvers.is_empty() {
            NONE.to_string()
        } else {
            view.approvers.join(", ")
        };
        if let Some(quorum) = view.quorum {
            approvers.push_str(&format!(" (quorum {quorum})"));
        }
        fields.row(["approvers", &approvers]);
        if let Some(decided_by) = &view.decided_by {
            let decision = match &view.decision_comment {
                Some(comment) if !comment.is_empty() => format!("{decided_by}: {comment}"),
                _ => decided_by.clone(),
            };
            fields.row(["decided by", &decision]);
        }
        let mut text = fields.render();

        if !view.extensions.is_empty() {
            let mut extensions = Table::new(&["ID", "STATUS", "FOR", "REASON"])
                .cap(1, STATUS_WIDTH)
                .cap(3, REASON_WIDTH);
            for extension in &view.extensions {
                extensions.row([
                    extension.id.clone(),
                    self.status_cell(extension),
                    format!("+{}", extension.duration),
                    extension.justification.clone(),
                ]);
            }
            text.push_str(&section("extensions", &extensions));
        }

        let mut approvals = Table::new(&["BY", "AT", "COMMENT"]).cap(2, REASON_WIDTH * 2);
        for approval in &view.approvals {
            approvals.row([
                approval.by.clone(),
                self.time(approval.at.as_ref()),
                approval.comment.clone().unwrap_or_default(),
            ]);
        }
        text.push_str(&section("approvals", &approvals));

        let mut attempts = Table::new(&["KIND", "AT", "OUTCOME", "ERROR"]).cap(3, REASON_WIDTH * 2);
        for attempt in &view.attempts {
            attempts.row([
                attempt.kind.clone(),
                self.time(attempt.at.as_ref()),
                attempt.outcome.clone(),
                attempt.error.clone().unwrap_or_default(),
            ]);
        }
        text.push_str(&section("attempts", &attempts));

        let mut events = Table::new(&["SEQ", "AT", "ACTOR", "ACTION", "DETAILS"])
            .cap(2, NAME_WIDTH)
            .cap(4, DETAILS_WIDTH);
        for event in &view.events {
            events.row([
                value_text(&event.seq),
                self.time(event.at.as_ref()),
                event.actor.clone(),
                event.action.clone(),
                details_text(&event.details),
            ]);
        }
        text.push_str(&section("events", &events));
        text
    }
}

/// For `--json` output and table output alike: a broken chain reported by
/// `audit verify` is a failure of the command.
pub(crate) fn chain_failure(command: &ClientCommand, answer: &Value) -> Result<(), CliError> {
    let ClientCommand::Audit {
        action: Some(AuditAction::Verify),
        ..
    } = command
    else {
        return Ok(());
    };
    let verification: AuditVerification = read(answer, "the verification result")?;
    if verification.ok {
        Ok(())
    } else {
        Err(CliError::AuditChainBroken {
            broken_at: or_unknown(value_text(&verification.broken_at)),
        })
    }
}

fn verification_report(verification: &AuditVerification) -> String {
    let events = or_unknown(value_text(&verification.events));
    if verification.ok {
        let head = verification
            .head
            .as_deref()
            .map(one_line)
            .unwrap_or_default();
        format!("audit chain intact: {events} events, head {head}")
    } else {
        let problem = verification
            .problem
            .as_deref()
            .map(one_line)
            .unwrap_or_else(|| "no details given".to_string());
        format!(
            "audit chain BROKEN at event {}: {problem} ({events} events checked)",
            or_unknown(value_text(&verification.broken_at))
        )
    }
}

/// "\napprovals\n  BY  AT  COMMENT\n  ..." or "\napprovals: none\n".
fn section(title: &str, table: &Table) -> String {
    if table.is_empty() {
        return format!("\n{title}: none\n");
    }
    let mut text = format!("\n{title}\n");
    for line in table.render().lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The id to print: the server's, else the one the user typed.
fn shown_id(view: &RequestView, typed: &str) -> String {
    one_line(if view.id.is_empty() { typed } else { &view.id })
}

/// "1 of 2 approvals", or "1 approval so far" without a quorum.
fn approval_progress(view: &RequestView) -> String {
    let given = view.approvals.len();
    match view.quorum {
        Some(quorum) => format!("{given} of {quorum} approvals"),
        None if given == 1 => "1 approval so far".to_string(),
        None => format!("{given} approvals so far"),
    }
}

/// The server's own words for the state, or the bare state.
fn status_text(view: &RequestView) -> String {
    let text = if view.status.is_empty() {
        &view.state
    } else {
        &view.status
    };
    or_unknown(one_line(text))
}

fn target_cell(target: &str, dry_run: bool) -> String {
    let target = truncate(&one_line(target), TARGET_WIDTH);
    if dry_run {
        format!("{target} (dry-run)")
    } else {
        target
    }
}

fn details_text(details: &Value) -> String {
    match details {
        Value::Null => String::new(),
        Value::Object(map) if map.is_empty() => String::new(),
        other => other.to_string(),
    }
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        NONE.to_string()
    } else {
        text.to_string()
    }
}

fn or_unknown(text: String) -> String {
    if text.is_empty() {
        "?".to_string()
    } else {
        text
    }
}

/// A positive number of seconds as "45s", "42m", "1h05m", "2d3h".
fn span(seconds: i64) -> String {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    match seconds {
        s if s < MINUTE => format!("{s}s"),
        s if s < HOUR => format!("{}m", s / MINUTE),
        s if s < DAY => match (s / HOUR, s % HOUR / MINUTE) {
            (hours, 0) => format!("{hours}h"),
            (hours, minutes) => format!("{hours}h{minutes:02}m"),
        },
        s => match (s / DAY, s % DAY / HOUR) {
            (days, 0) => format!("{days}d"),
            (days, hours) => format!("{days}d{hours}h"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn presenter() -> Presenter<Utc> {
        Presenter::new(Utc.with_ymd_and_hms(2026, 11, 24, 9, 18, 0).unwrap(), Utc)
    }

    fn render(command: ClientCommand, answer: Value) -> String {
        presenter().render(&command, &answer).unwrap()
    }

    fn id() -> String {
        "r-abcd2345efgh".to_string()
    }

    fn request_command() -> ClientCommand {
        ClientCommand::Request {
            target: "pg-prod".into(),
            resource: "orders".into(),
            role: "orders_writer".into(),
            duration: "1h".into(),
            start: None,
            reason: "fix".into(),
            ticket: None,
            break_glass: false,
        }
    }

    #[test]
    fn created_request_says_who_must_approve() {
        let text = render(
            request_command(),
            json!({"id": "r-abcd2345efgh", "state": "pending", "approvers": ["group:dba"], "quorum": 2}),
        );
        assert_eq!(
            text,
            "request r-abcd2345efgh created: pending approval by group:dba (quorum 2)\n"
        );
    }

    #[test]
    fn break_glass_request_says_it_will_be_reviewed() {
        let text = render(
            request_command(),
            json!({"id": "r-abcd2345efgh", "state": "approved", "break_glass": true}),
        );
        assert_eq!(
            text,
            "request r-abcd2345efgh created: access is being granted; \
             break-glass: approvers are alerted and the use will be reviewed\n"
        );
    }

    #[test]
    fn break_glass_is_marked_first_in_list_status() {
        let view: RequestView = read(
            &json!({"state": "failed", "status": "revocation failing (3 attempt(s), retrying)", "break_glass": true}),
            "request",
        )
        .unwrap();
        assert!(presenter()
            .status_cell(&view)
            .starts_with("[break-glass] revocation failing"));
    }

    #[test]
    fn approval_short_of_quorum_shows_progress() {
        let text = render(
            ClientCommand::Approve {
                id: id(),
                comment: None,
            },
            json!({"id": "r-abcd2345efgh", "state": "pending", "quorum": 2,
                   "approvals": [{"by": "user:bob", "at": "2026-11-24T09:00:00Z", "comment": null}]}),
        );
        assert_eq!(text, "r-abcd2345efgh approved (1 of 2 approvals)\n");
    }

    #[test]
    fn approval_that_activates_says_until_when() {
        let text = render(
            ClientCommand::Approve {
                id: id(),
                comment: None,
            },
            json!({"id": "r-abcd2345efgh", "state": "active", "ends_at": "2026-11-24T10:00:00Z"}),
        );
        assert_eq!(
            text,
            "r-abcd2345efgh approved: access is now active until 2026-11-24 10:00 (ends in 42m)\n"
        );
    }

    #[test]
    fn revocation_still_in_progress_is_not_reported_as_done() {
        let text = render(
            ClientCommand::Revoke {
                id: id(),
                comment: None,
            },
            json!({"id": "r-abcd2345efgh", "state": "ending"}),
        );
        assert_eq!(text, "r-abcd2345efgh revoked: access is being removed\n");
        let text = render(
            ClientCommand::Deactivate { id: id() },
            json!({"id": "r-abcd2345efgh", "state": "failed", "status": "revocation failing (3 attempts)"}),
        );
        assert_eq!(
            text,
            "r-abcd2345efgh deactivated: revocation failing (3 attempts)\n"
        );
    }

    #[test]
    fn extension_names_the_grant_it_extends() {
        let text = render(
            ClientCommand::Extend {
                id: id(),
                duration: "30m".into(),
                reason: "more".into(),
                ticket: None,
            },
            json!({"id": "r-newext234567", "kind": "extension", "extends": "r-abcd2345efgh",
                   "state": "pending", "approvers": ["group:dba"]}),
        );
        assert_eq!(
            text,
            "extension r-newext234567 of r-abcd2345efgh created: pending approval by group:dba\n"
        );
    }

    #[test]
    fn grants_show_dry_run_and_time_left() {
        let text = render(
            ClientCommand::Grants {
                active: true,
                all: false,
            },
            json!({"grants": [{
                "id": "r-abcd2345efgh", "target": "pg-staging", "dry_run": true,
                "resource": "orders", "role": "orders_writer", "state": "active",
                "starts_at": "2026-11-24T09:00:00Z", "ends_at": "2026-11-24T10:00:00Z"
            }]}),
        );
        assert!(text.contains("pg-staging (dry-run)"), "{text}");
        assert!(text.contains("active, ends in 42m"), "{text}");
        assert!(text.contains("2026-11-24 09:00"), "{text}");
        assert!(!text.contains("REQUESTER"), "{text}");
    }

    #[test]
    fn times_are_shown_in_the_presenters_zone() {
        let tokyo = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
        let presenter = Presenter::new(Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap(), tokyo);
        let time = Timestamp::from("2026-11-24T09:30:00Z".to_string());
        assert_eq!(presenter.time(Some(&time)), "2026-11-24 18:30");
    }

    #[test]
    fn request_list_aligns_japanese_reasons() {
        let text = render(
            ClientCommand::Requests {
                mine: false,
                pending: true,
                all: false,
                state: None,
            },
            json!({"requests": [
                {"id": "r-aaaaaaaaaaaa", "requester": "たなか", "state": "pending", "quorum": 2,
                 "target": "pg", "resource": "orders", "role": "w", "duration": "1h",
                 "created_at": "2026-11-24T09:00:00Z", "justification": "本番障害の調査"},
                {"id": "r-bbbbbbbbbbbb", "requester": "bob", "state": "pending", "quorum": 2,
                 "target": "pg", "resource": "orders", "role": "w", "duration": "1h",
                 "created_at": "2026-11-24T09:00:00Z", "justification": "investigate outage"}
            ]}),
        );
        let lines: Vec<&str> = text.lines().collect();
        let column = |line: &str, cell: &str| crate::text::width(&line[..line.find(cell).unwrap()]);
        assert_eq!(
            column(lines[1], "pending"),
            column(lines[2], "pending"),
            "{text}"
        );
        assert_eq!(
            column(lines[0], "REASON"),
            column(lines[1], "本番"),
            "{text}"
        );
        assert_eq!(
            column(lines[0], "REASON"),
            column(lines[2], "investigate"),
            "{text}"
        );
    }

    #[test]
    fn empty_lists_say_so() {
        assert_eq!(
            render(
                ClientCommand::Grants {
                    active: false,
                    all: false
                },
                json!({"grants": []})
            ),
            "no grants\n"
        );
        assert_eq!(
            render(
                ClientCommand::Requests {
                    mine: true,
                    pending: false,
                    all: false,
                    state: None
                },
                json!({})
            ),
            "no requests\n"
        );
    }

    #[test]
    fn show_lists_approvals_attempts_and_events() {
        let text = render(
            ClientCommand::Show { id: id() },
            json!({
                "id": "r-abcd2345efgh", "requester": "alice", "target": "pg-prod", "target_kind": "postgres",
                "resource": "orders", "role": "orders_writer", "justification": "fix\nreplication",
                "duration": "1h", "state": "active", "status": "active",
                "ends_at": "2026-11-24T10:00:00Z",
                "approvals": [{"by": "user:bob", "at": "2026-11-24T09:00:00Z", "comment": "ok"}],
                "extensions": [{"id": "r-ext234567890", "kind": "extension", "state": "pending",
                                "duration": "30m", "justification": "more"}],
                "attempts": [{"kind": "apply", "at": "2026-11-24T09:00:01Z", "outcome": "ok", "error": null}],
                "events": [{"seq": 7, "at": "2026-11-24T09:00:01Z", "actor": "system",
                            "action": "grant.applied", "request": "r-abcd2345efgh", "details": {}}]
            }),
        );
        let field = |label: &str, value: &str| {
            text.lines()
                .any(|line| line.starts_with(label) && line[label.len()..].trim() == value)
        };
        assert!(field("reason", "fix replication"), "{text}");
        assert!(field("target", "pg-prod (postgres)"), "{text}");
        assert!(text.contains("user:bob"), "{text}");
        assert!(text.contains("grant.applied"), "{text}");
        assert!(text.contains("r-ext234567890"), "{text}");
        assert!(text.contains("apply"), "{text}");
    }

    #[test]
    fn broken_audit_chain_is_reported_then_fails() {
        let command = ClientCommand::Audit {
            action: Some(AuditAction::Verify),
            since: None,
            request: None,
            limit: None,
        };
        let answer =
            json!({"ok": false, "events": 40, "broken_at": 17, "problem": "hash mismatch"});
        let mut out = Vec::new();
        let error = presenter()
            .present(&command, &answer, &mut out)
            .unwrap_err();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "audit chain BROKEN at event 17: hash mismatch (40 events checked)\n"
        );
        assert_eq!(
            error.to_string(),
            "audit chain verification failed at event 17"
        );
    }

    #[test]
    fn intact_audit_chain_succeeds() {
        let command = ClientCommand::Audit {
            action: Some(AuditAction::Verify),
            since: None,
            request: None,
            limit: None,
        };
        let answer = json!({"ok": true, "events": 40, "head": "ab12"});
        let mut out = Vec::new();
        presenter().present(&command, &answer, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "audit chain intact: 40 events, head ab12\n"
        );
    }

    #[test]
    fn whoami_shows_how_and_until_when_you_are_signed_in() {
        // The presenter's now is 09:18 UTC.
        let text = render(
            ClientCommand::Whoami,
            json!({"name": "alice", "email": "alice@example.com", "groups": ["dba"],
                   "admin": true, "auditor": false,
                   "auth": {"method": "oidc", "issuer": "https://id.example",
                            "expires_at": "2026-11-24T10:00:00Z", "acr": "urn:elevate:mfa",
                            "amr": ["pwd", "otp"], "auth_time": "2026-11-24T09:10:00Z"}}),
        );
        let field = |label: &str, value: &str| {
            text.lines()
                .any(|line| line.starts_with(label) && line[label.len()..].trim() == value)
        };
        assert!(field("rights", "admin"), "{text}");
        assert!(
            field("signed in with", "single sign-on (https://id.example)"),
            "{text}"
        );
        assert!(field("expires", "2026-11-24 10:00 (in 42m)"), "{text}");
        assert!(field("assurance", "urn:elevate:mfa (pwd, otp)"), "{text}");
        assert!(field("authenticated", "2026-11-24 09:10"), "{text}");
    }

    #[test]
    fn whoami_with_an_api_token_and_an_expired_or_absent_expiry() {
        let text = render(
            ClientCommand::Whoami,
            json!({"name": "bob", "auth": {"method": "token", "issuer": null,
                   "expires_at": null, "acr": null, "amr": [], "auth_time": null}}),
        );
        assert!(text.contains("API token"), "{text}");
        assert!(!text.contains("assurance"), "{text}");
        let text = render(
            ClientCommand::Whoami,
            json!({"name": "bob", "auth": {"method": "oidc", "expires_at": "2026-11-24T09:00:00Z"}}),
        );
        assert!(text.contains("2026-11-24 09:00 (expired)"), "{text}");
        // An older server sends no `auth` at all.
        let text = render(ClientCommand::Whoami, json!({"name": "bob"}));
        assert!(!text.contains("expires"), "{text}");
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(45), "45s");
        assert_eq!(span(42 * 60 + 59), "42m");
        assert_eq!(span(3600), "1h");
        assert_eq!(span(3600 + 5 * 60), "1h05m");
        assert_eq!(span(2 * 86400 + 3 * 3600), "2d3h");
    }
}
