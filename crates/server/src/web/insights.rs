//! Insights for auditors and admins: why people elevate and where. Counts
//! and granted time per target, resource, role, team and month, the words
//! justifications use most, the tickets cited most, and break-glass grants
//! still waiting for their after-the-fact review.
//!
//! Everything is computed from stored requests on each visit; charts are
//! inline SVG drawn here (no script), each with the same numbers in a
//! table beside it.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use elevate_core::request::{Request, Review, State as RState};
use elevate_core::values::UserName;
use elevate_core::Timestamp;
use elevate_store::RequestFilter;
use maud::{html, Markup};

use super::audit::{parse_instant, refusal_unless_auditor, text_field, FieldError};
use super::{
    break_glass_badge, error_page, human_secs, page, page_with_status, state_badge, time, Form,
    Nav, Viewer,
};
use crate::api::AppState;
use crate::engine::Broker;
use crate::error::ApiError;

/// At most this many requests (the newest) are read per visit.
const MAX_REQUESTS: i64 = 10_000;
const TOP_WORDS: usize = 30;
const TOP_TICKETS: usize = 20;
/// Bars per chart, so a chart stays readable; tables list everything.
const CHART_BARS: usize = 24;

pub fn routes() -> Router<AppState> {
    Router::new().route("/insights", get(insights_page))
}

// ---- counting -----------------------------------------------------------------

/// Requests in one group and the granted time of those that were granted.
#[derive(Default)]
struct Tally {
    requests: u64,
    /// Seconds granted, one entry per granted request.
    granted: Vec<i64>,
}

impl Tally {
    fn add(&mut self, granted: Option<i64>) {
        self.requests += 1;
        if let Some(secs) = granted {
            self.granted.push(secs);
        }
    }

    fn total(&self) -> i64 {
        self.granted.iter().sum()
    }

    fn median(&self) -> Option<i64> {
        let mut sorted = self.granted.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(sorted[n / 2]),
            _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
        }
    }
}

/// Tallies by a name, listed most requested first.
#[derive(Default)]
struct Breakdown(BTreeMap<String, Tally>);

impl Breakdown {
    fn add(&mut self, key: &str, granted: Option<i64>) {
        self.0.entry(key.to_owned()).or_default().add(granted);
    }

    fn by_count(&self) -> Vec<(&str, &Tally)> {
        let mut rows: Vec<(&str, &Tally)> = self.0.iter().map(|(k, t)| (k.as_str(), t)).collect();
        rows.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
        rows
    }

    fn by_name(&self) -> Vec<(&str, &Tally)> {
        self.0.iter().map(|(k, t)| (k.as_str(), t)).collect()
    }
}

/// The time a request held (or holds) its role: the length of its
/// approved window, cut short where it was revoked. `None` when it was
/// never granted.
fn granted_secs(r: &Request) -> Option<i64> {
    let secs = match &r.state {
        RState::Scheduled { window }
        | RState::Approved { window }
        | RState::Active { window, .. }
        | RState::Ending { window, .. }
        | RState::Ended { window, .. } => (window.ends_at - window.starts_at).num_seconds(),
        RState::Revoked {
            window: Some(window),
            at,
            ..
        } => ((*at).min(window.ends_at) - window.starts_at).num_seconds(),
        _ => return None,
    };
    Some(secs.max(0))
}

#[derive(Default)]
struct Insights {
    considered: usize,
    /// The store held more requests than were read.
    truncated: bool,
    break_glass: usize,
    all: Tally,
    targets: Breakdown,
    resources: Breakdown,
    roles: Breakdown,
    teams: Breakdown,
    months: Breakdown,
    /// Word → requests whose justification uses it.
    words: HashMap<String, u64>,
    tickets: HashMap<String, u64>,
    awaiting_review: Vec<Request>,
}

async fn gather(
    b: &Broker,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) -> Result<Insights, ApiError> {
    let stored = b
        .store
        .list_requests(&RequestFilter {
            requester: None,
            states: vec![],
            limit: Some(MAX_REQUESTS),
        })
        .await?;
    let mut out = Insights {
        truncated: stored.len() as i64 >= MAX_REQUESTS,
        ..Insights::default()
    };
    let mut groups: HashMap<UserName, Vec<String>> = HashMap::new();
    for s in stored {
        let r = s.request;
        // Waiting for review is work to do, whenever it was asked.
        if r.review == Review::Awaiting {
            out.awaiting_review.push(r.clone());
        }
        if since.is_some_and(|t| r.created_at < t) || until.is_some_and(|t| r.created_at >= t) {
            continue;
        }
        out.considered += 1;
        if r.break_glass {
            out.break_glass += 1;
        }
        let granted = granted_secs(&r);
        out.all.add(granted);
        out.targets.add(r.target.as_str(), granted);
        let path = b
            .catalog()
            .targets
            .get(&r.target)
            .map_or_else(|| r.resource.to_string(), |t| t.path(&r.resource));
        out.resources
            .add(&format!("{} · {path}", r.target), granted);
        out.roles.add(r.role.as_str(), granted);
        out.months
            .add(&r.created_at.format("%Y-%m").to_string(), granted);
        if !groups.contains_key(&r.requester) {
            let found = match b.person(&r.requester).await {
                Ok(Some(p)) => p.groups.iter().map(|g| g.to_string()).collect(),
                Ok(None) => Vec::new(),
                Err(e) => {
                    tracing::warn!(error = %e.log_text(), user = %r.requester, "groups unknown for insights");
                    Vec::new()
                }
            };
            groups.insert(r.requester.clone(), found);
        }
        match groups.get(&r.requester).map(Vec::as_slice) {
            Some(teams) if !teams.is_empty() => {
                for team in teams {
                    out.teams.add(team, granted);
                }
            }
            _ => out.teams.add("(no group)", granted),
        }
        let distinct: HashSet<String> = words(r.justification.as_str()).into_iter().collect();
        for word in distinct {
            *out.words.entry(word).or_default() += 1;
        }
        if let Some(ticket) = &r.ticket {
            *out.tickets.entry(ticket.as_str().to_owned()).or_default() += 1;
        }
    }
    out.awaiting_review.sort_by_key(|r| r.created_at);
    Ok(out)
}

fn top(counts: &HashMap<String, u64>, n: usize) -> Vec<(&str, u64)> {
    let mut rows: Vec<(&str, u64)> = counts.iter().map(|(k, c)| (k.as_str(), *c)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    rows.truncate(n);
    rows
}

// ---- words ----------------------------------------------------------------------

/// Common English words that say nothing about why.
const STOP_WORDS: &[&str] = &[
    "about", "access", "after", "all", "also", "and", "any", "are", "because", "been", "before",
    "but", "can", "could", "for", "from", "get", "had", "has", "have", "into", "its", "need",
    "needed", "needs", "not", "our", "out", "please", "should", "some", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "was", "were", "what",
    "when", "which", "while", "will", "with", "would", "you", "your",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Letters and digits of scripts that separate words with spaces.
    Word,
    Han,
    Hiragana,
    Katakana,
    Other,
}

fn script(c: char) -> Script {
    match u32::from(c) {
        // 々 and 〇 behave as kanji.
        0x3005
        | 0x3007
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xF900..=0xFAFF
        | 0x20000..=0x3FFFF => Script::Han,
        0x3041..=0x309F => Script::Hiragana,
        // ・ (0x30FB) separates words, it is not one.
        0x30A1..=0x30FA | 0x30FC..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Katakana,
        _ if c.is_alphanumeric() => Script::Word,
        _ => Script::Other,
    }
}

/// The words of a justification, lowercased, for counting:
/// - letters and digits of space-separated scripts: runs of three or more
///   characters that are not stop words;
/// - kanji (Han) runs, which have no spaces between words: character
///   bigrams (`障害対応` → 障害, 害対, 対応), so compounds are counted
///   without a dictionary;
/// - katakana runs (loanwords, set off by the change of script): whole;
/// - hiragana runs are particles and inflections (の, を, する): skipped.
pub(super) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut run: Vec<char> = Vec::new();
    let mut kind = Script::Other;
    for c in text.chars().flat_map(char::to_lowercase) {
        let k = script(c);
        if k != kind {
            flush(&run, kind, &mut out);
            run.clear();
            kind = k;
        }
        run.push(c);
    }
    flush(&run, kind, &mut out);
    out
}

fn flush(run: &[char], kind: Script, out: &mut Vec<String>) {
    match kind {
        Script::Word if run.len() >= 3 => {
            let word: String = run.iter().collect();
            if !STOP_WORDS.contains(&word.as_str()) {
                out.push(word);
            }
        }
        Script::Han => out.extend(run.windows(2).map(|pair| pair.iter().collect::<String>())),
        Script::Katakana if run.len() >= 2 => out.push(run.iter().collect()),
        _ => {}
    }
}

// ---- the page -------------------------------------------------------------------

async fn insights_page(
    State(b): State<AppState>,
    v: Viewer,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = refusal_unless_auditor(&v) {
        return refused;
    }
    let form = Form::parse(query.unwrap_or_default().as_bytes());
    let since_text = form.text("since").unwrap_or_default();
    let until_text = form.text("until").unwrap_or_default();
    let mut errors = Vec::new();
    let mut read = |field: &'static str, text: &str, end: bool| {
        if text.is_empty() {
            return None;
        }
        parse_instant(text, end)
            .map_err(|message| errors.push(FieldError { field, message }))
            .ok()
    };
    let since = read("since", &since_text, false);
    let until = read("until", &until_text, true);
    if let (Some(s), Some(u)) = (since, until) {
        if u <= s {
            errors.push(FieldError {
                field: "until",
                message: "must be later than \"since\"".into(),
            });
        }
    }
    if !errors.is_empty() {
        return page_with_status(
            Some(&v),
            Nav::Insights,
            StatusCode::BAD_REQUEST,
            "Insights",
            html! {
                p.notice.error role="alert" { "The time range could not be used: fix the fields marked below." }
                (range_form(&since_text, &until_text, &errors))
            },
        );
    }
    let insights = match gather(&b, since, until).await {
        Ok(i) => i,
        Err(e) => return error_page(Some(&v), &e),
    };
    page(
        Some(&v),
        Nav::Insights,
        "Insights",
        html! {
            (range_form(&since_text, &until_text, &[]))
            (body(&insights, since, until))
        },
    )
}

fn range_form(since: &str, until: &str, errors: &[FieldError]) -> Markup {
    let field = |name: &'static str, label: &str, value: &str, placeholder: &str| {
        text_field(errors, name, label, value, placeholder)
    };
    html! {
        form.filters method="get" action="/insights" aria-label="Time range" {
            (field("since", "Requested since", since, "2026-01-01"))
            (field("until", "Until", until, "2026-03-31 (inclusive)"))
            div {
                button type="submit" { "Show" }
                " "
                a href="/insights" { "All time" }
            }
        }
    }
}

fn body(i: &Insights, since: Option<Timestamp>, until: Option<Timestamp>) -> Markup {
    let months: Vec<(String, u64)> = i
        .months
        .by_name()
        .into_iter()
        .map(|(m, t)| (m.to_owned(), t.requests))
        .collect();
    let recent_months = &months[months.len().saturating_sub(CHART_BARS)..];
    let targets: Vec<(String, u64)> = i
        .targets
        .by_count()
        .into_iter()
        .take(CHART_BARS)
        .map(|(k, t)| (k.to_owned(), t.requests))
        .collect();
    html! {
        p {
            strong { (i.considered) } " requests"
            @if let Some(s) = since { " since " (time(s)) }
            @if let Some(u) = until { " before " (time(u)) }
            ", " (i.all.granted.len()) " granted for " (human_secs(i.all.total())) " in all"
            @if let Some(m) = i.all.median() { " (median " (human_secs(m)) ")" }
            ", " (i.break_glass) " break-glass."
        }
        @if i.truncated {
            p.notice.warn { "Only the newest " (MAX_REQUESTS) " requests were read; older ones are not counted." }
        }
        p.muted {
            "Granted time is the length of each approved window, cut short where it was revoked. "
            "A request counts once for each group (team) of the person who asked."
        }
        h2 #review { "Break-glass awaiting review" }
        (review_list(&i.awaiting_review))
        @if i.considered > 0 {
            h2 { "Requests per month" }
            div.grid {
                (bar_chart("chart-months", "Requests per month", recent_months))
                (tally_table("Month", &i.months.by_name()))
            }
            h2 { "Where: per target" }
            div.grid {
                (bar_chart("chart-targets", "Requests per target", &targets))
                (tally_table("Target", &i.targets.by_count()))
            }
            div.grid {
                div {
                    h2 { "Per resource" }
                    (tally_table("Target · resource", &i.resources.by_count()))
                }
                div {
                    h2 { "Per role" }
                    (tally_table("Role", &i.roles.by_count()))
                }
            }
            h2 { "Who: per team" }
            (tally_table("Team (group)", &i.teams.by_count()))
            div.grid {
                div {
                    h2 { "Why: words in justifications" }
                    p.muted { "Japanese and Chinese text is counted in two-character pieces." }
                    (count_table("Word", "Requests", &top(&i.words, TOP_WORDS)))
                }
                div {
                    h2 { "Tickets cited most" }
                    (count_table("Ticket", "Requests", &top(&i.tickets, TOP_TICKETS)))
                }
            }
        } @else {
            p.muted { "No requests in this time range." }
        }
    }
}

fn review_list(requests: &[Request]) -> Markup {
    html! {
        @if requests.is_empty() {
            p.muted { "None: every break-glass grant has been reviewed." }
        } @else {
            p { (requests.len()) " break-glass grant(s) wait for an approver to review them (in any time range)." }
            table.list {
                thead {
                    tr {
                        th scope="col" { "Request" }
                        th scope="col" { "Requested" }
                        th scope="col" { "By" }
                        th scope="col" { "Access" }
                        th scope="col" { "State" }
                        th scope="col" { "Justification" }
                    }
                }
                tbody {
                    @for r in requests {
                        tr {
                            td { a href={"/requests/" (r.id)} { (r.id) } " " (break_glass_badge()) }
                            td { (time(r.created_at)) }
                            td { (r.requester) }
                            td { (r.role) " on " (r.target) " · " (r.resource) }
                            td { (state_badge(&r.state)) }
                            td.justification { (r.justification.as_str()) }
                        }
                    }
                }
            }
        }
    }
}

fn tally_table(name: &str, rows: &[(&str, &Tally)]) -> Markup {
    html! {
        table.list {
            thead {
                tr {
                    th scope="col" { (name) }
                    th.num scope="col" { "Requests" }
                    th.num scope="col" { "Granted" }
                    th.num scope="col" { "Granted time" }
                    th.num scope="col" { "Median" }
                }
            }
            tbody {
                @for (key, t) in rows {
                    tr {
                        th scope="row" { (key) }
                        td.num { (t.requests) }
                        td.num { (t.granted.len()) }
                        td.num { (human_secs(t.total())) }
                        td.num {
                            @if let Some(m) = t.median() { (human_secs(m)) } @else { span.muted { "—" } }
                        }
                    }
                }
            }
        }
    }
}

fn count_table(name: &str, count: &str, rows: &[(&str, u64)]) -> Markup {
    html! {
        @if rows.is_empty() {
            p.muted { "None." }
        } @else {
            table.list {
                thead { tr { th scope="col" { (name) } th.num scope="col" { (count) } } }
                tbody {
                    @for (key, n) in rows {
                        tr { td { (key) } td.num { (n) } }
                    }
                }
            }
        }
    }
}

/// A horizontal bar chart as inline SVG: a label, a bar and the number on
/// each row. The same numbers are in a table next to it, so the picture
/// is never the only way to read them.
fn bar_chart(id: &str, title: &str, rows: &[(String, u64)]) -> Markup {
    const LABEL: u64 = 170;
    const BARS: u64 = 330;
    const ROW: u64 = 24;
    const WIDTH: u64 = LABEL + BARS + 60;
    let height = ROW * rows.len() as u64 + 8;
    let max = rows.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let title_id = format!("{id}-title");
    html! {
        svg.chart id=(id) xmlns="http://www.w3.org/2000/svg" role="img"
            aria-labelledby=(title_id) width=(WIDTH) height=(height)
            viewBox={"0 0 " (WIDTH) " " (height)} {
            title id=(title_id) { (title) }
            @for (row, (label, n)) in rows.iter().enumerate() {
                @let y = 4 + ROW * row as u64;
                @let width = (n * BARS / max).max(1);
                text x=(LABEL - 8) y=(y + 14) text-anchor="end" { (short(label, 24)) }
                rect.bar x=(LABEL) y=(y) width=(width) height="16" {
                    title { (label) ": " (n) }
                }
                text x=(LABEL + width + 6) y=(y + 14) { (n) }
            }
        }
    }
}

/// At most `max` characters, with an ellipsis when cut.
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_words_drop_short_and_stop_words() {
        assert_eq!(
            words("Need access for the DB migration, INC-42 and migration v2"),
            vec!["migration", "inc", "migration"]
        );
    }

    #[test]
    fn japanese_is_counted_in_kanji_bigrams_and_katakana_words() {
        assert_eq!(
            words("<script>alert(1)</script> 本番DBの障害対応"),
            vec!["script", "alert", "script", "本番", "障害", "害対", "対応"]
        );
        assert_eq!(words("受注データの修正"), vec!["受注", "データ", "修正"]);
        assert_eq!(words("お願いします"), Vec::<String>::new());
    }

    #[test]
    fn medians_of_even_and_odd_counts() {
        let mut t = Tally::default();
        assert_eq!(t.median(), None);
        t.add(Some(60));
        t.add(Some(180));
        assert_eq!(t.median(), Some(120));
        t.add(Some(30));
        t.add(None);
        assert_eq!(t.median(), Some(60));
        assert_eq!(t.requests, 4);
        assert_eq!(t.total(), 270);
    }

    #[test]
    fn long_labels_are_shortened() {
        assert_eq!(short("abc", 5), "abc");
        assert_eq!(short("abcdefgh", 5), "abcd…");
    }
}
