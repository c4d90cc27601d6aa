//! Administration: the policy elevate has loaded, read-only, for admins and
//! auditors, and two questions asked of it:
//!
//! - "who can get ROLE on RESOURCE?" (`/admin/who`): the eligibilities that
//!   cover it, the people they name (groups expanded to the members elevate
//!   knows), the approval terms, and who holds it now;
//! - "what is USER eligible for?" (`/admin/user`): everything one person
//!   may request, as elevate would decide it for them now.
//!
//! Catalogs can be large (hundreds of thousands of resources and
//! eligibilities), so every list is capped and filterable, and nothing here
//! walks more than the catalog once per page.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use elevate_core::browse::BrowseFilter;
use elevate_core::policy::{Catalog, Eligibility, ResourceSelector, Target};
use elevate_core::principal::{Principal, Subject};
use elevate_core::values::{GroupName, Name, UserName};
use elevate_core::Timestamp;
use elevate_store::{RequestFilter, StoredRequest};
use maud::{html, Markup};

use super::{
    break_glass_badge, error_page, message_page, opt_time, page, page_with_status, remaining,
    state_badge, time, Form, Nav, Viewer,
};
use crate::api::AppState;
use crate::engine::Broker;
use crate::error::ApiError;

/// Rows of one list rendered at once; a filter finds the rest.
const SHOWN: usize = 200;

/// Eligible roles per page on the user page.
const PER_PAGE: usize = 200;

/// Members listed per group before "and N more".
const MEMBERS_SHOWN: usize = 50;

/// Grants loaded to find who holds something now.
const GRANTS_LOADED: i64 = 10_000;

/// People who signed in through the identity provider considered when
/// expanding groups; the page says when there were more.
const IDENTITIES_LOADED: i64 = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/who", get(who))
        .route("/admin/user", get(user))
}

/// Only admins and auditors read the whole policy: it says who could get
/// what, which is itself worth protecting.
fn forbidden(v: &Viewer) -> Response {
    message_page(
        Some(v),
        StatusCode::FORBIDDEN,
        "Not allowed",
        "forbidden",
        "Only administrators and auditors can see the loaded policy.",
    )
}

fn query_of(raw: Option<String>) -> Form {
    Form::parse(raw.unwrap_or_default().as_bytes())
}

fn contains(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(needle)
}

fn joined<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- the loaded policy --------------------------------------------------

async fn overview(State(b): State<AppState>, v: Viewer, RawQuery(raw): RawQuery) -> Response {
    if !v.sees_all() {
        return forbidden(&v);
    }
    let query = query_of(raw);
    let filter = query.text("q");
    let needle = filter.as_deref().map(str::to_lowercase);
    let c = &b.catalog();
    let now = Utc::now();
    let resource_total: usize = c.targets.values().map(|t| t.resources.len()).sum();
    // Discovering targets: when their tree was read, whether reading it
    // fails now, and what the last reconciliation found.
    let mut discovered = HashMap::new();
    for id in b.discovery.keys() {
        let cached = b.store.inventory(id.as_str()).await.ok().flatten();
        let report = b.last_reconciliation(id).await.ok().flatten();
        discovered.insert(id.clone(), (cached, report));
    }

    let eligibilities: Vec<&Eligibility> = c
        .eligibilities
        .iter()
        .filter(|e| needle.as_deref().is_none_or(|n| eligibility_matches(e, n)))
        .collect();
    let policies: Vec<_> = c
        .approval_policies
        .iter()
        .filter(|p| {
            needle.as_deref().is_none_or(|n| {
                contains(p.id.as_str(), n)
                    || contains(p.target.as_str(), n)
                    || p.approvers.iter().any(|s| contains(&s.to_string(), n))
                    || selector_matches(&p.resources, n)
                    || p.roles.iter().flatten().any(|r| contains(r.as_str(), n))
            })
        })
        .collect();

    let body = html! {
        (questions(c, None, None))
        form.filters method="get" action="/admin" role="search" {
            div {
                label for="q" { "Filter resources, eligibilities and policies" }
                input #q type="search" name="q" value=[filter.as_deref()];
            }
            button type="submit" { "Filter" }
            @if filter.is_some() { a href="/admin" { "Clear" } }
        }
        h2 { "Summary" }
        dl.kv {
            dt { "Targets" } dd { (c.targets.len()) }
            dt { "Resources" } dd { (resource_total) }
            dt { "Eligibilities" } dd { (c.eligibilities.len()) }
            dt { "Approval policies" } dd { (c.approval_policies.len()) }
            dt { "Administrators" } dd { (subjects_or_none(&c.admins)) }
            dt { "Auditors" } dd { (subjects_or_none(&c.auditors)) }
            dt { "Notifications" } dd { a href="/admin/notifications" { "Channels and deliveries" } }
        }
        h2 { "Limits" }
        dl.kv {
            dt { "Shortest window" } dd { (c.limits.min_duration) }
            dt { "Furthest scheduled start" } dd { (c.limits.max_schedule_ahead) }
            dt { "Default pending timeout" } dd { (c.limits.default_pending_timeout) }
            dt { "Step-up: acr values" } dd { (or_none(&joined(&c.step_up.acr_values))) }
            dt { "Step-up: methods (amr)" } dd { (or_none(&joined(&c.step_up.amr))) }
            dt { "Step-up: sign-in at most" } dd { (c.step_up.max_age) " ago" }
        }
        h2 { "Targets (" (c.targets.len()) ")" }
        @for t in c.targets.values() {
            (target_card(t, needle.as_deref(), discovered.get(&t.id)))
        }
        h2 { "Eligibilities (" (counted(eligibilities.len(), c.eligibilities.len(), needle.is_some())) ")" }
        @if eligibilities.is_empty() {
            p.muted { "None." }
        } @else {
            (eligibility_table(&eligibilities, now, true))
            (cut_note(eligibilities.len()))
        }
        h2 { "Approval policies (" (counted(policies.len(), c.approval_policies.len(), needle.is_some())) ")" }
        @if policies.is_empty() {
            p.muted { "None: every request that needs approval is refused." }
        } @else {
            table.list {
                thead { tr {
                    th scope="col" { "Id" }
                    th scope="col" { "Target" }
                    th scope="col" { "Resources" }
                    th scope="col" { "Roles" }
                    th scope="col" { "Approvers" }
                    th.num scope="col" { "Quorum" }
                    th scope="col" { "Pending timeout" }
                    th scope="col" { "Step-up" }
                } }
                tbody {
                    @for p in policies.iter().take(SHOWN) {
                        tr {
                            td { (p.id) }
                            td { (p.target) }
                            td { (selector(&p.resources)) }
                            td {
                                @match &p.roles {
                                    Some(roles) => (joined(roles)),
                                    None => span.muted { "every role" },
                                }
                            }
                            td { (joined(&p.approvers)) }
                            td.num { (p.quorum) }
                            td { (p.pending_timeout) }
                            td { (yes_no(p.step_up)) }
                        }
                    }
                }
            }
            (cut_note(policies.len()))
        }
    };
    page(Some(&v), Nav::Admin, "Administration", body)
}

fn counted(shown: usize, total: usize, filtered: bool) -> String {
    if filtered {
        format!("{shown} of {total} match")
    } else {
        total.to_string()
    }
}

fn cut_note(len: usize) -> Markup {
    html! {
        @if len > SHOWN {
            p.muted { "Showing the first " (SHOWN) " of " (len) "; filter to find others." }
        }
    }
}

fn or_none(s: &str) -> Markup {
    if s.is_empty() {
        html! { span.muted { "none" } }
    } else {
        html! { (s) }
    }
}

fn subjects_or_none(subjects: &[Subject]) -> Markup {
    or_none(&joined(subjects))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn selector_matches(s: &ResourceSelector, needle: &str) -> bool {
    s.ids
        .iter()
        .chain(&s.under)
        .any(|n| contains(n.as_str(), needle))
        || s.tags
            .iter()
            .any(|(k, v)| contains(&format!("{k}={v}"), needle))
}

fn eligibility_matches(e: &Eligibility, needle: &str) -> bool {
    contains(e.id.as_str(), needle)
        || contains(e.target.as_str(), needle)
        || e.subjects.iter().any(|s| contains(&s.to_string(), needle))
        || e.roles.iter().any(|r| contains(r.as_str(), needle))
        || selector_matches(&e.resources, needle)
}

fn selector(s: &ResourceSelector) -> Markup {
    html! {
        @if s.is_empty() { span.muted { "nothing" } }
        @if !s.ids.is_empty() { div { "ids: " (joined(&s.ids)) } }
        @if !s.under.is_empty() { div { "under: " (joined(&s.under)) } }
        @if !s.tags.is_empty() {
            div { "tags: " (joined(s.tags.iter().map(|(k, v)| format!("{k}={v}")))) }
        }
    }
}

fn terms(e: &Eligibility) -> Markup {
    html! {
        (if e.approval_required { "approval" } else { "no approval" })
        @if e.ticket_required { br; "ticket required" }
        @if e.break_glass { br; (break_glass_badge()) " allowed" }
        @if e.step_up { br; "step-up sign-in" }
    }
}

fn conditions(e: &Eligibility) -> Markup {
    html! {
        @if e.conditions.is_empty() { span.muted { "none" } }
        @for (claim, allowed) in &e.conditions {
            div { (claim) " ∈ {" (joined(allowed)) "}" }
        }
    }
}

fn validity(e: &Eligibility, now: Timestamp) -> Markup {
    html! {
        @if let Some(nb) = e.not_before { "from " (time(nb)) br; }
        "until " (time(e.not_after))
        @if !e.valid_at(now) {
            br;
            span.badge { (if now >= e.not_after { "expired" } else { "not yet valid" }) }
        }
    }
}

fn eligibility_table(list: &[&Eligibility], now: Timestamp, with_scope: bool) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Id" }
                th scope="col" { "Subjects" }
                @if with_scope {
                    th scope="col" { "Target" }
                    th scope="col" { "Resources" }
                    th scope="col" { "Roles" }
                }
                th scope="col" { "Longest" }
                th scope="col" { "Terms" }
                th scope="col" { "Conditions" }
                th scope="col" { "Validity" }
            } }
            tbody {
                @for e in list.iter().take(SHOWN) {
                    tr {
                        td { (e.id) }
                        td { (joined(&e.subjects)) }
                        @if with_scope {
                            td { (e.target) }
                            td { (selector(&e.resources)) }
                            td { (joined(&e.roles)) }
                        }
                        td { (e.max_duration) }
                        td { (terms(e)) }
                        td { (conditions(e)) }
                        td { (validity(e, now)) }
                    }
                }
            }
        }
    }
}

/// What a discovering target's card shows besides its tree.
type Discovered = (
    Option<elevate_store::inventory::CachedInventory>,
    Option<crate::discovery::ReconcileReport>,
);

fn target_card(t: &Target, needle: Option<&str>, discovered: Option<&Discovered>) -> Markup {
    let total = t.resources.len();
    html! {
        section.card {
            h3 { (t.id) }
            dl.kv {
                dt { "Kind" } dd { (t.kind) }
                dt { "Dry run" } dd {
                    @if t.dry_run { span.badge { "dry-run" } " nothing is changed on a real system" } @else { "no" }
                }
                dt { "Roles" } dd { (or_none(&joined(&t.roles))) }
                dt { "Resources" } dd { (total) }
                @if let Some((cached, report)) = discovered {
                    dt { "Read from the target" } dd {
                        @match cached {
                            Some(c) => { (c.refreshed_at.to_rfc3339()) }
                            None => span.muted { "not yet" },
                        }
                        @if let Some((at, error)) = cached.as_ref().and_then(|c| c.failure.as_ref()) {
                            br; span.badge { "failing" } " since " (at.to_rfc3339()) ": " (error)
                        }
                    }
                    dt { "Reconciliation" } dd {
                        @match report {
                            Some(r) if r.unmanaged.is_empty() => {
                                (r.at.to_rfc3339()) ": " (r.assignments) " assignments, all given through elevate"
                            }
                            Some(r) => {
                                (r.at.to_rfc3339()) ": " span.badge { (r.unmanaged.len()) " not given through elevate" }
                                ul {
                                    @for f in &r.unmanaged {
                                        li {
                                            (f.assignment.resource)
                                            @if let Some(n) = &f.resource_name { " (" (n) ")" }
                                            " " (f.assignment.role) " " (f.assignment.principal_type) " "
                                            (f.assignment.principal_name.as_deref().unwrap_or(&f.assignment.principal_id))
                                            @if f.removed { " (removed)" }
                                            @if let Some(e) = &f.error { " (removal failed: " (e) ")" }
                                        }
                                    }
                                }
                            }
                            None => span.muted { "not yet" },
                        }
                    }
                }
            }
            @if needle.is_none() && total <= SHOWN {
                details open[total <= 50] {
                    summary { "Resource tree" }
                    (tree(t))
                }
            } @else {
                (resource_table(t, needle))
            }
        }
    }
}

/// Resources of a small target as nested lists, roots first.
fn tree(t: &Target) -> Markup {
    let mut children: HashMap<&Name, Vec<&Name>> = HashMap::new();
    let mut roots = Vec::new();
    for r in t.resources.values() {
        match &r.parent {
            Some(p) if t.resources.contains_key(p) => children.entry(p).or_default().push(&r.id),
            _ => roots.push(&r.id),
        }
    }
    let mut seen = BTreeSet::new();
    html! { ul { @for r in roots { (branch(t, &children, r, &mut seen)) } } }
}

fn branch<'a>(
    t: &'a Target,
    children: &HashMap<&'a Name, Vec<&'a Name>>,
    id: &'a Name,
    seen: &mut BTreeSet<&'a Name>,
) -> Markup {
    // Config loading refuses cycles; `seen` keeps a page from looping if
    // one ever got through.
    if !seen.insert(id) {
        return html! {};
    }
    let tags = t.resources.get(id).map(|r| &r.tags);
    let kids = children.get(id).map(Vec::as_slice).unwrap_or_default();
    let inner: Vec<Markup> = kids.iter().map(|k| branch(t, children, k, seen)).collect();
    html! {
        li {
            (id)
            @if let Some(tags) = tags.filter(|t| !t.is_empty()) {
                " " span.muted { "(" (joined(tags.iter().map(|(k, v)| format!("{k}={v}")))) ")" }
            }
            @if !inner.is_empty() {
                ul { @for m in inner { (m) } }
            }
        }
    }
}

/// Resources of a large (or filtered) target: the first matching ones, in
/// a collapsed table.
fn resource_table(t: &Target, needle: Option<&str>) -> Markup {
    let mut matching = 0usize;
    let mut shown = Vec::new();
    for r in t.resources.values() {
        // Paths are only computed when a filter needs them or a row is shown.
        let hit = match needle {
            None => true,
            Some(n) => {
                contains(r.id.as_str(), n)
                    || r.tags.iter().any(|(k, v)| contains(&format!("{k}={v}"), n))
                    || contains(&t.path(&r.id), n)
            }
        };
        if !hit {
            continue;
        }
        matching += 1;
        if shown.len() < SHOWN {
            shown.push((t.path(&r.id), r));
        }
    }
    html! {
        details open[needle.is_some() && matching > 0] {
            summary {
                "Resources: " (matching)
                @if needle.is_some() { " of " (t.resources.len()) " match" }
                @if matching > SHOWN { ", first " (SHOWN) " shown" }
            }
            @if shown.is_empty() {
                p.muted { "No resource matches." }
            } @else {
                table.list {
                    thead { tr {
                        th scope="col" { "Path" }
                        th scope="col" { "Tags" }
                        th scope="col" { "Description" }
                    } }
                    tbody {
                        @for (path, r) in &shown {
                            tr {
                                td { (path) }
                                td { (joined(r.tags.iter().map(|(k, v)| format!("{k}={v}")))) }
                                td { (r.description.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The two question forms, filled in with what was asked.
fn questions(c: &Catalog, asked_who: Option<&Form>, asked_user: Option<&str>) -> Markup {
    let get = |f: &str| asked_who.and_then(|q| q.text(f));
    let chosen_target = get("target");
    let roles: BTreeSet<&Name> = c.targets.values().flat_map(|t| &t.roles).collect();
    html! {
        div.grid {
            form.card method="get" action="/admin/who" {
                h2 { "Who can get a role on a resource?" }
                label for="who-target" { "Target" }
                @if c.targets.len() <= 100 {
                    select #who-target name="target" {
                        @for t in c.targets.keys() {
                            option value=(t) selected[chosen_target.as_deref() == Some(t.as_str())] { (t) }
                        }
                    }
                } @else {
                    input #who-target type="text" name="target" required value=[chosen_target.as_deref()];
                }
                label for="who-resource" { "Resource (its id)" }
                input #who-resource type="text" name="resource" required value=[get("resource").as_deref()];
                label for="who-role" { "Role" }
                input #who-role type="text" name="role" required list="known-roles" value=[get("role").as_deref()];
                datalist #known-roles {
                    @for r in roles.iter().take(500) { option value=(r) {} }
                }
                div.actions { button type="submit" { "Ask" } }
            }
            form.card method="get" action="/admin/user" {
                h2 { "What is a person eligible for?" }
                label for="user-name" { "User name" }
                input #user-name type="text" name="name" required value=[asked_user];
                div.actions { button type="submit" { "Ask" } }
            }
        }
    }
}

// ---- who can get ROLE on RESOURCE? ----------------------------------------

/// A refusal shown with the question forms, so the asker can correct it.
fn refused(
    v: &Viewer,
    b: &Broker,
    status: StatusCode,
    title: &str,
    asked: &Form,
    message: &str,
) -> Response {
    page_with_status(
        Some(v),
        Nav::Admin,
        status,
        title,
        html! {
            p.notice.error role="alert" { (message) }
            (questions(&b.catalog(), Some(asked), None))
        },
    )
}

async fn who(State(b): State<AppState>, v: Viewer, RawQuery(raw): RawQuery) -> Response {
    if !v.sees_all() {
        return forbidden(&v);
    }
    let asked = query_of(raw);
    let title = "Who can get it?";
    let fields = ["target", "resource", "role"].map(|f| asked.text(f));
    if fields.iter().all(Option::is_none) {
        return page(
            Some(&v),
            Nav::Admin,
            title,
            questions(&b.catalog(), None, None),
        );
    }
    let mut parsed = Vec::new();
    for (field, value) in ["target", "resource", "role"].into_iter().zip(&fields) {
        let Some(value) = value else {
            let message = format!("Give a {field} as well.");
            return refused(&v, &b, StatusCode::BAD_REQUEST, title, &asked, &message);
        };
        match Name::parse(field, value) {
            Ok(n) => parsed.push(n),
            Err(e) => {
                return refused(
                    &v,
                    &b,
                    StatusCode::BAD_REQUEST,
                    title,
                    &asked,
                    &e.to_string(),
                )
            }
        }
    }
    let [target, resource, role] = match <[Name; 3]>::try_from(parsed) {
        Ok(three) => three,
        Err(_) => {
            return refused(
                &v,
                &b,
                StatusCode::BAD_REQUEST,
                title,
                &asked,
                "Give a target, a resource and a role.",
            )
        }
    };
    let c = &b.catalog();
    let t = match c.resolve(&target, &resource, &role) {
        Ok((t, _)) => t,
        Err(e) => {
            return refused(
                &v,
                &b,
                StatusCode::NOT_FOUND,
                "Not found",
                &asked,
                &e.to_string(),
            )
        }
    };
    let now = Utc::now();
    let path = t.path(&resource);
    let requirement = c.approval_requirement(&target, &resource, &role);
    let covering = c.eligibilities_covering(&target, &resource, &role);

    // People named by user subjects who are not configured users may have
    // signed in through the identity provider: look them up (bounded).
    let mut named: BTreeSet<&UserName> = BTreeSet::new();
    for e in &covering {
        for s in &e.subjects {
            if let Subject::User(u) = s {
                if b.directory.get(u).is_none() {
                    named.insert(u);
                }
            }
        }
    }
    // Everyone who signed in through the identity provider, with the
    // groups they had then: group members elevate can name.
    let mut signed_in: HashMap<UserName, Principal> =
        match b.store.identities(IDENTITIES_LOADED).await {
            Ok(list) => list
                .into_iter()
                .filter_map(|i| {
                    let name = UserName::parse(&i.user_name).ok()?;
                    let profile: crate::identity::Profile =
                        serde_json::from_str(&i.profile).ok()?;
                    Some((name.clone(), profile.principal(name)))
                })
                .collect(),
            Err(e) => return error_page(Some(&v), &e.into()),
        };
    let identities_cut = signed_in.len() as i64 >= IDENTITIES_LOADED;
    let unknown: Vec<&UserName> = named
        .into_iter()
        .filter(|u| !signed_in.contains_key(*u))
        .take(SHOWN)
        .collect();
    for u in unknown {
        match b.person(u).await {
            Ok(Some(p)) => {
                signed_in.insert(u.clone(), p);
            }
            Ok(None) => {}
            Err(e) => return error_page(Some(&v), &e),
        }
    }
    // Who could ask for it now: every person elevate can enumerate whom a
    // valid covering eligibility names and whose attributes meet its
    // conditions.
    // Indexed by subject so this costs one lookup per user and group of
    // each person, however many eligibilities cover the role.
    let mut by_subject: HashMap<&Subject, Vec<&Eligibility>> = HashMap::new();
    for e in covering.iter().filter(|e| e.valid_at(now)) {
        for s in &e.subjects {
            by_subject.entry(s).or_default().push(e);
        }
    }
    let can_now = |p: &Principal| {
        std::iter::once(Subject::User(p.name.clone()))
            .chain(p.groups.iter().cloned().map(Subject::Group))
            .any(|s| {
                by_subject
                    .get(&s)
                    .is_some_and(|list| list.iter().any(|e| e.conditions_hold(p)))
            })
    };
    let members = members_by_group(b.directory.users().chain(signed_in.values()));
    let people: BTreeSet<&UserName> = b
        .directory
        .users()
        .chain(signed_in.values())
        .filter(|p| can_now(p))
        .map(|p| &p.name)
        .collect();

    let holders: Vec<StoredRequest> = match b
        .store
        .list_requests(&RequestFilter {
            requester: None,
            states: ["scheduled", "approved", "active", "ending"]
                .map(String::from)
                .to_vec(),
            limit: Some(GRANTS_LOADED),
        })
        .await
    {
        Ok(list) => list
            .into_iter()
            .filter(|s| {
                let r = &s.request;
                r.target == target && r.resource == resource && r.role == role
            })
            .collect(),
        Err(e) => return error_page(Some(&v), &ApiError::from(e)),
    };

    let body = html! {
        p {
            "Role " strong { (role) } " on " strong { (path) } " (target " (target)
            @if t.dry_run { ", " span.badge { "dry-run" } }
            ")."
        }
        h2 { "Approval" }
        @match &requirement {
            Some(q) => {
                dl.kv {
                    dt { "Approvers" } dd { (subject_list(&b, &members, None, &q.approvers)) }
                    dt { "Approvals needed" } dd { (q.quorum) " (the requester never counts)" }
                    dt { "Pending timeout" } dd { (q.pending_timeout) }
                    dt { "Approver step-up" } dd { (yes_no(q.step_up)) }
                    dt { "From policies" } dd { (joined(&q.policies)) }
                }
            }
            None => {
                p.notice.warn {
                    "No approval policy covers this. Eligibilities that need approval cannot be used; "
                    "only those without approval (or break-glass, where allowed) can."
                }
            }
        }
        h2 { "Eligibilities covering it (" (covering.len()) ")" }
        @if covering.is_empty() {
            p.muted { "None: nobody can request this." }
        } @else {
            table.list {
                thead { tr {
                    th scope="col" { "Id" }
                    th scope="col" { "Subjects" }
                    th scope="col" { "Longest" }
                    th scope="col" { "Terms" }
                    th scope="col" { "Conditions" }
                    th scope="col" { "Validity" }
                } }
                tbody {
                    @for e in covering.iter().take(SHOWN) {
                        tr {
                            td { (e.id) }
                            td { (subject_list(&b, &members, Some(&signed_in), &e.subjects)) }
                            td { (e.max_duration) }
                            td { (terms(e)) }
                            td { (conditions(e)) }
                            td { (validity(e, now)) }
                        }
                    }
                }
            }
            (cut_note(covering.len()))
        }
        h2 { "People who can request it now (" (people.len()) ")" }
        @if people.is_empty() {
            p.muted { "No person elevate knows of." }
        } @else {
            p { (joined(people.iter().take(SHOWN * 5))) @if people.len() > SHOWN * 5 { ", …" } }
        }
        p.muted {
            "Configured users, and people who signed in through the identity provider when an "
            "eligibility names them; group members at the identity provider are known only "
            "once they have signed in, with the groups they had then."
            @if identities_cut {
                " Only the first " (IDENTITIES_LOADED) " people who signed in were considered."
            }
        }
        h2 { "Held now (" (holders.len()) ")" }
        @if holders.is_empty() {
            p.muted { "Nobody holds it now." }
        } @else {
            (holders_table(&holders))
        }
        (questions(c, Some(&asked), None))
    };
    page(Some(&v), Nav::Admin, title, body)
}

/// Known people by group (configured users and people who signed in
/// through the identity provider), computed once per page.
fn members_by_group<'a>(
    people: impl Iterator<Item = &'a Principal>,
) -> HashMap<&'a GroupName, Vec<&'a UserName>> {
    let mut members: HashMap<&GroupName, Vec<&UserName>> = HashMap::new();
    for p in people {
        for g in &p.groups {
            members.entry(g).or_default().push(&p.name);
        }
    }
    for list in members.values_mut() {
        list.sort();
    }
    members
}

/// Subjects, groups followed by the members elevate knows. `signed_in`:
/// the named users found among identity-provider sign-ins, when they were
/// looked up.
fn subject_list(
    b: &Broker,
    members: &HashMap<&GroupName, Vec<&UserName>>,
    signed_in: Option<&HashMap<UserName, Principal>>,
    subjects: &[Subject],
) -> Markup {
    html! {
        @for s in subjects {
            div {
                (s)
                @match s {
                    Subject::Group(g) => {
                        @let members = members.get(g).map(Vec::as_slice).unwrap_or_default();
                        @if members.is_empty() {
                            " " span.muted { "(no member known to elevate)" }
                        } @else {
                            " (members known to elevate: "
                            (joined(members.iter().take(MEMBERS_SHOWN)))
                            @if members.len() > MEMBERS_SHOWN {
                                " and " (members.len() - MEMBERS_SHOWN) " more"
                            }
                            ")"
                        }
                    }
                    Subject::User(u) => {
                        @if b.directory.get(u).is_some() {
                            " " span.muted { "(configured user)" }
                        } @else if let Some(known) = signed_in {
                            @if known.contains_key(u) {
                                " " span.muted { "(signed in through the identity provider)" }
                            } @else {
                                " " span.muted { "(has never signed in)" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn holders_table(holders: &[StoredRequest]) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Request" }
                th scope="col" { "Requester" }
                th scope="col" { "State" }
                th scope="col" { "Ends" }
                th scope="col" { "Flags" }
            } }
            tbody {
                @for s in holders.iter().take(SHOWN) {
                    @let r = &s.request;
                    tr {
                        td { a href={"/requests/" (r.id)} { (r.id) } }
                        td { (r.requester) }
                        td { (state_badge(&r.state)) }
                        td {
                            @if let Some(w) = r.state.window() {
                                (time(w.ends_at)) br; (remaining(w.ends_at))
                            }
                        }
                        td { @if r.break_glass { (break_glass_badge()) } }
                    }
                }
            }
        }
        (cut_note(holders.len()))
    }
}

// ---- what is USER eligible for? ---------------------------------------------

async fn user(State(b): State<AppState>, v: Viewer, RawQuery(raw): RawQuery) -> Response {
    if !v.sees_all() {
        return forbidden(&v);
    }
    let asked = query_of(raw);
    let title = "What can this person request?";
    let Some(raw_name) = asked.text("name") else {
        return page(
            Some(&v),
            Nav::Admin,
            title,
            questions(&b.catalog(), None, None),
        );
    };
    let user_refused = |status: StatusCode, heading: &str, message: &str| {
        page_with_status(
            Some(&v),
            Nav::Admin,
            status,
            heading,
            html! {
                p.notice.error role="alert" { (message) }
                (questions(&b.catalog(), None, Some(&raw_name)))
            },
        )
    };
    let name = match UserName::parse(&raw_name) {
        Ok(n) => n,
        Err(e) => return user_refused(StatusCode::BAD_REQUEST, title, &e.to_string()),
    };
    let page_number = match asked.text("page").map(|p| p.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            return user_refused(
                StatusCode::BAD_REQUEST,
                title,
                "page: must be a whole number from 1",
            )
        }
    };
    let person = match b.person(&name).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            let message = format!(
                "No user named \"{name}\" is known to elevate: not a configured user, and nobody of that name has signed in through the identity provider."
            );
            return user_refused(StatusCode::NOT_FOUND, "Not found", &message);
        }
        Err(e) => return error_page(Some(&v), &e),
    };
    let c = &b.catalog();
    let now = Utc::now();
    let configured = b.directory.get(&name).is_some();
    let filter = asked.text("q");
    // Paged by the catalog itself: a person may have hundreds of thousands
    // of choices, and only one page of them is built.
    let browse = BrowseFilter::from_input(filter.as_deref().unwrap_or(""), "", "", "");
    let mut found = c.browse_eligible(
        &person,
        now,
        &browse,
        (page_number - 1) * PER_PAGE,
        PER_PAGE,
    );
    let pages = found.total.div_ceil(PER_PAGE).max(1);
    if page_number > pages {
        // Past the end (an old link, a narrower filter): the last page.
        found = c.browse_eligible(&person, now, &browse, (pages - 1) * PER_PAGE, PER_PAGE);
    }
    let page_number = page_number.min(pages);
    let first = (page_number - 1) * PER_PAGE;
    let total = found.total;
    let shown = found.entries;
    let grants = match b
        .store
        .list_requests(&RequestFilter {
            requester: Some(name.to_string()),
            states: ["scheduled", "approved", "active", "ending"]
                .map(String::from)
                .to_vec(),
            limit: Some(GRANTS_LOADED),
        })
        .await
    {
        Ok(g) => g,
        Err(e) => return error_page(Some(&v), &ApiError::from(e)),
    };
    let link = |page: usize| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("name", name.as_str());
        if let Some(f) = &filter {
            q.append_pair("q", f);
        }
        q.append_pair("page", &page.to_string());
        format!("/admin/user?{}", q.finish())
    };

    let body = html! {
        dl.kv {
            dt { "User" } dd { (person.name) }
            dt { "Name" } dd { (person.display_name.as_deref().unwrap_or("—")) }
            dt { "E-mail" } dd { (person.email.as_ref().map_or("—", |e| e.as_str())) }
            dt { "Groups" } dd { (or_none(&joined(&person.groups))) }
            @if !person.attributes.is_empty() {
                dt { "Attributes" } dd { (joined(person.attributes.iter().map(|(k, v)| format!("{k}={v}")))) }
            }
            dt { "Known as" } dd {
                @if configured { "a configured user (API token)" }
                @else { "someone who signed in through the identity provider (groups and attributes as of their last sign-in)" }
            }
            dt { "Administrator" } dd { (yes_no(c.is_admin(&person))) }
            dt { "Auditor" } dd { (yes_no(c.is_auditor(&person))) }
        }
        h2 {
            "Eligible now (" (total)
            @if filter.is_some() { " matching the filter" }
            ")"
        }
        form.filters method="get" action="/admin/user" role="search" {
            input type="hidden" name="name" value=(name);
            div {
                label for="q" { "Filter by resource, tag or role (words)" }
                input #q type="search" name="q" value=[filter.as_deref()];
            }
            button type="submit" { "Filter" }
        }
        @if shown.is_empty() {
            p.muted { "Nothing." }
        } @else {
            table.list {
                thead { tr {
                    th scope="col" { "Target" }
                    th scope="col" { "Resource" }
                    th scope="col" { "Role" }
                    th scope="col" { "Longest" }
                    th scope="col" { "Approval" }
                    th scope="col" { "Ticket" }
                    th scope="col" { "Break-glass" }
                    th scope="col" { "Step-up" }
                    th scope="col" { "Eligibility" }
                    th scope="col" { "Until" }
                } }
                tbody {
                    @for e in &shown {
                        tr {
                            td { (e.target) @if e.dry_run { " " span.badge { "dry-run" } } }
                            td { (e.resource_path) }
                            td { (e.role) }
                            td { (e.max_duration) }
                            td { (yes_no(e.approval_required)) }
                            td { (yes_no(e.ticket_required)) }
                            td { (yes_no(e.break_glass)) }
                            td { (yes_no(e.step_up)) }
                            td { (e.eligibility) }
                            td { (time(e.not_after)) }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page_number > 1 { a href=(link(page_number - 1)) rel="prev" { "Previous" } }
                    span { "Page " (page_number) " of " (pages) " (rows " (first + 1) "–" ((first + PER_PAGE).min(total)) ")" }
                    @if page_number < pages { a href=(link(page_number + 1)) rel="next" { "Next" } }
                }
            }
        }
        h2 { "Holding now (" (grants.len()) ")" }
        @if grants.is_empty() {
            p.muted { "Nothing granted." }
        } @else {
            table.list {
                thead { tr {
                    th scope="col" { "Request" }
                    th scope="col" { "Target" }
                    th scope="col" { "Resource" }
                    th scope="col" { "Role" }
                    th scope="col" { "State" }
                    th scope="col" { "Starts" }
                    th scope="col" { "Ends" }
                } }
                tbody {
                    @for s in grants.iter().take(SHOWN) {
                        @let r = &s.request;
                        @let w = r.state.window();
                        tr {
                            td { a href={"/requests/" (r.id)} { (r.id) } }
                            td { (r.target) }
                            td { (c.targets.get(&r.target).map_or_else(|| r.resource.to_string(), |t| t.path(&r.resource))) }
                            td { (r.role) }
                            td { (state_badge(&r.state)) @if r.break_glass { " " (break_glass_badge()) } }
                            td { (opt_time(w.map(|w| w.starts_at))) }
                            td { @if let Some(w) = w { (time(w.ends_at)) br; (remaining(w.ends_at)) } }
                        }
                    }
                }
            }
        }
        (questions(c, None, Some(name.as_str())))
    };
    page(
        Some(&v),
        Nav::Admin,
        &format!("What {name} can request"),
        body,
    )
}
