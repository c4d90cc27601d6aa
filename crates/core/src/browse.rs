//! Paging through what a person may request, for pickers over large
//! catalogs (1,000 accounts × 750 permission sets is 750,000 choices).
//!
//! [`Catalog::eligible_roles`] materialises every choice; this walks the
//! same eligibilities resource by resource, tests roles with precomputed
//! bit masks, counts every match and builds only the page it returns.

use std::collections::{BTreeMap, HashMap};

use crate::policy::{Catalog, Eligibility, EligibleRole, Target};
use crate::principal::Principal;
use crate::values::Name;
use crate::Timestamp;

/// At most this many free-text terms are honoured (they are ANDed).
const MAX_TERMS: usize = 16;

/// What to narrow the choices to. Text matching is case-insensitive.
#[derive(Debug, Clone, Default)]
pub struct BrowseFilter {
    /// Every term must appear in the resource (id, path, description, tag
    /// keys and values) or in the role name.
    pub terms: Vec<String>,
    pub target: Option<String>,
    /// Exactly this resource (used to show one resource's roles).
    pub resource: Option<String>,
    /// A substring of the role name.
    pub role: Option<String>,
    /// `key` or `key=value` among the resource's tags.
    pub tag: Option<(String, Option<String>)>,
}

impl BrowseFilter {
    /// A filter from what a person typed in a search box and the fields
    /// beside it; blank fields filter nothing.
    pub fn from_input(q: &str, target: &str, role: &str, tag: &str) -> BrowseFilter {
        let blank = |s: &str| {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        };
        BrowseFilter {
            terms: q
                .split_whitespace()
                .take(MAX_TERMS)
                .map(str::to_lowercase)
                .collect(),
            target: blank(target),
            resource: None,
            role: blank(role).map(|r| r.to_lowercase()),
            tag: blank(tag).map(|t| match t.split_once('=') {
                Some((k, v)) => (k.trim().to_lowercase(), Some(v.trim().to_lowercase())),
                None => (t.to_lowercase(), None),
            }),
        }
    }
}

/// One page of choices.
#[derive(Debug, Clone)]
pub struct BrowsePage {
    /// How many choices match in all.
    pub total: usize,
    pub entries: Vec<EligibleRole>,
    /// The targets the person may request anything on (for a picker).
    pub targets: Vec<Name>,
}

impl Catalog {
    /// The choices `p` has now that match `filter`, ordered by target,
    /// resource path and role, from `offset`, at most `limit` of them.
    pub fn browse_eligible(
        &self,
        p: &Principal,
        now: Timestamp,
        filter: &BrowseFilter,
        offset: usize,
        limit: usize,
    ) -> BrowsePage {
        let mut by_target: BTreeMap<&Name, Vec<&Eligibility>> = BTreeMap::new();
        for e in self
            .eligibilities_of(p)
            .into_iter()
            .filter(|e| e.valid_at(now))
        {
            by_target.entry(&e.target).or_default().push(e);
        }
        let targets: Vec<Name> = by_target.keys().map(|t| (*t).clone()).collect();
        let terms: Vec<&str> = filter
            .terms
            .iter()
            .take(MAX_TERMS)
            .map(String::as_str)
            .collect();
        let all_terms: u32 = (1u32 << terms.len()) - 1;
        let mut total = 0;
        let mut entries = Vec::new();
        for (target_id, eligibilities) in &by_target {
            if filter
                .target
                .as_deref()
                .is_some_and(|t| t != target_id.as_str())
            {
                continue;
            }
            let Some(target) = self.targets.get(*target_id) else {
                continue;
            };
            let roles: Vec<&Name> = target.roles.iter().collect();
            // Per role: may the filter show it, and which terms it matches.
            let role_terms: Vec<Option<u32>> = roles
                .iter()
                .map(|r| {
                    let name = r.as_str().to_lowercase();
                    if filter.role.as_deref().is_some_and(|f| !name.contains(f)) {
                        return None;
                    }
                    Some(term_mask(&terms, |t| name.contains(t)))
                })
                .collect();
            // Per eligibility: which of the target's roles it grants.
            let masks: Vec<Vec<bool>> = eligibilities
                .iter()
                .map(|e| roles.iter().map(|r| e.roles.contains(*r)).collect())
                .collect();
            // Resource → the eligibilities (by position) covering it.
            let mut covering: HashMap<&Name, Vec<usize>> = HashMap::new();
            for (i, e) in eligibilities.iter().enumerate() {
                for r in self.resources_matching(target, &e.resources) {
                    let list = covering.entry(&r.id).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
            let mut resources: Vec<(String, &Name, &Vec<usize>)> = covering
                .iter()
                .filter(|(r, _)| {
                    filter
                        .resource
                        .as_deref()
                        .is_none_or(|want| want == r.as_str())
                })
                .map(|(r, es)| (target.path(r), *r, es))
                .collect();
            resources.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut granted = vec![false; roles.len()];
            for (path, resource, es) in resources {
                let Some(res) = target.resources.get(resource) else {
                    continue;
                };
                if let Some((key, value)) = &filter.tag {
                    let hit = res.tags.iter().any(|(k, v)| {
                        k.to_lowercase() == *key
                            && value.as_ref().is_none_or(|want| v.to_lowercase() == *want)
                    });
                    if !hit {
                        continue;
                    }
                }
                let resource_terms = if terms.is_empty() {
                    0
                } else {
                    let mut text = path.to_lowercase();
                    // A discovered target's path holds names: the id (an
                    // account number) is searchable too.
                    if target.discovered {
                        text.push(' ');
                        text.push_str(&res.id.as_str().to_lowercase());
                    }
                    if let Some(d) = &res.description {
                        text.push(' ');
                        text.push_str(&d.to_lowercase());
                    }
                    for (k, v) in &res.tags {
                        text.push(' ');
                        text.push_str(&k.to_lowercase());
                        text.push('=');
                        text.push_str(&v.to_lowercase());
                    }
                    term_mask(&terms, |t| text.contains(t))
                };
                granted.iter_mut().for_each(|g| *g = false);
                for i in es {
                    if let Some(mask) = masks.get(*i) {
                        for (g, m) in granted.iter_mut().zip(mask) {
                            *g |= *m;
                        }
                    }
                }
                for (k, role) in roles.iter().enumerate() {
                    let Some(Some(rt)) = role_terms.get(k) else {
                        continue;
                    };
                    if !granted[k] || (resource_terms | rt) != all_terms {
                        continue;
                    }
                    if total >= offset && entries.len() < limit {
                        let covering: Vec<&Eligibility> = es
                            .iter()
                            .filter_map(|i| eligibilities.get(*i))
                            .copied()
                            .collect();
                        if let Some(entry) = merged_entry(target, resource, role, &covering, &path)
                        {
                            entries.push(entry);
                        }
                    }
                    total += 1;
                }
            }
        }
        BrowsePage {
            total,
            entries,
            targets,
        }
    }

    /// The terms `p` may request (target, resource, role) on now, merged
    /// over every eligibility that allows it; `None` when none does.
    pub fn eligible_role(
        &self,
        p: &Principal,
        now: Timestamp,
        target: &str,
        resource: &str,
        role: &str,
    ) -> Option<EligibleRole> {
        let filter = BrowseFilter {
            target: Some(target.to_owned()),
            resource: Some(resource.to_owned()),
            ..BrowseFilter::default()
        };
        // One resource has at most as many choices as its target's roles.
        let limit = self
            .targets
            .values()
            .find(|t| t.id.as_str() == target)
            .map_or(0, |t| t.roles.len());
        self.browse_eligible(p, now, &filter, 0, limit)
            .entries
            .into_iter()
            .find(|e| e.role.as_str() == role)
    }
}

/// The bits of the terms `hit` says are matched.
fn term_mask(terms: &[&str], hit: impl Fn(&str) -> bool) -> u32 {
    terms
        .iter()
        .enumerate()
        .filter(|(_, t)| hit(t))
        .fold(0, |m, (i, _)| m | (1 << i))
}

/// The most permissive terms the eligibilities in `covering` that grant
/// `role` give together, the way [`Catalog::eligible_roles`] merges them.
fn merged_entry(
    target: &Target,
    resource: &Name,
    role: &Name,
    covering: &[&Eligibility],
    path: &str,
) -> Option<EligibleRole> {
    let mut out: Option<EligibleRole> = None;
    for e in covering.iter().filter(|e| e.roles.contains(role)) {
        match out.as_mut() {
            Some(existing) => existing.merge(e),
            None => {
                out = Some(EligibleRole::new(
                    target,
                    resource,
                    role,
                    e,
                    path.to_owned(),
                ))
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{catalog, n, t0, user};
    use crate::policy::{Resource, ResourceSelector};
    use crate::values::Span;

    fn keys(entries: &[EligibleRole]) -> Vec<(String, String, String)> {
        let mut k: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.target.to_string(),
                    e.resource.to_string(),
                    e.role.to_string(),
                )
            })
            .collect();
        k.sort();
        k
    }

    /// The fixture catalog plus a second, overlapping eligibility
    /// (readers and writers on everything tagged env=prod, no approval).
    fn overlapping() -> crate::policy::Catalog {
        let mut c = catalog();
        let mut e = c.eligibilities[0].clone();
        e.id = n("sre-tagged");
        e.resources = ResourceSelector {
            tags: [("env".to_string(), "prod".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        e.roles = [n("reader"), n("writer")].into_iter().collect();
        e.approval_required = false;
        e.max_duration = Span::from_secs(600);
        e.break_glass = false;
        c.eligibilities.push(e);
        c
    }

    #[test]
    fn without_a_filter_it_lists_exactly_what_eligible_roles_lists_with_the_same_terms() {
        let c = overlapping();
        let p = user("sam", &["sre"]);
        let all = c.eligible_roles(&p, t0());
        let page = c.browse_eligible(&p, t0(), &BrowseFilter::default(), 0, 1000);
        assert_eq!(page.total, all.len());
        assert_eq!(keys(&page.entries), keys(&all));
        for e in &page.entries {
            let same = all
                .iter()
                .find(|a| a.resource == e.resource && a.role == e.role)
                .map(|a| {
                    (
                        a.max_duration,
                        a.approval_required,
                        a.break_glass,
                        a.resource_path.clone(),
                    )
                });
            assert_eq!(
                same,
                Some((
                    e.max_duration,
                    e.approval_required,
                    e.break_glass,
                    e.resource_path.clone()
                ))
            );
        }
        // Merged: orders is covered by both; writer there needs no approval
        // and may last the longer of the two.
        let w = c
            .eligible_role(&p, t0(), "pg", "orders", "writer")
            .map(|e| (e.approval_required, e.max_duration.secs(), e.break_glass));
        assert_eq!(w, Some((false, 3600, true)));
        assert!(c
            .eligible_role(&p, t0(), "pg", "staging", "writer")
            .is_none());
        assert!(c
            .eligible_role(&user("x", &[]), t0(), "pg", "orders", "writer")
            .is_none());
    }

    #[test]
    fn terms_match_the_resource_or_the_role_case_insensitively() {
        let c = overlapping();
        let p = user("sam", &["sre"]);
        let f = |q: &str, role: &str, tag: &str| {
            keys(
                &c.browse_eligible(
                    &p,
                    t0(),
                    &BrowseFilter::from_input(q, "", role, tag),
                    0,
                    100,
                )
                .entries,
            )
        };
        let k = |r: &str, role: &str| ("pg".to_string(), r.to_string(), role.to_string());
        assert_eq!(f("ORDERS read", "", ""), vec![k("orders", "reader")]);
        // eu itself (an OU under prod) and what is below it.
        assert_eq!(
            f("prod/eu", "", ""),
            vec![
                k("eu", "writer"),
                k("orders", "reader"),
                k("orders", "writer")
            ]
        );
        assert_eq!(f("team=orders", "", ""), f("orders", "", ""));
        assert_eq!(
            f("", "WRIT", "env=prod"),
            vec![k("billing", "writer"), k("orders", "writer")]
        );
        assert_eq!(f("", "", "team"), f("orders", "", ""));
        assert!(f("nothing-like-this", "", "").is_empty());
        let other = BrowseFilter {
            target: Some("elsewhere".into()),
            ..BrowseFilter::default()
        };
        assert_eq!(c.browse_eligible(&p, t0(), &other, 0, 10).total, 0);
    }

    #[test]
    fn pages_cover_everything_once_in_path_order() {
        // 60 accounts under nested OUs × 25 permission sets.
        let mut c = overlapping();
        if let Some(t) = c.targets.get_mut(&n("pg")) {
            for i in 0..25 {
                t.roles.insert(n(&format!("ps-{i:02}")));
            }
            for i in 0..60 {
                let id = n(&format!("acct-{i:03}"));
                t.resources.insert(
                    id.clone(),
                    Resource {
                        id,
                        parent: Some(n(if i % 2 == 0 { "eu" } else { "prod" })),
                        tags: Default::default(),
                        description: None,
                        not_grantable: None,
                    },
                );
            }
        }
        c.eligibilities[0].roles = c.targets[&n("pg")].roles.clone();
        c.index = Default::default();
        let p = user("sam", &["sre"]);
        let full = c.browse_eligible(&p, t0(), &BrowseFilter::default(), 0, usize::MAX);
        assert_eq!(full.total, c.eligible_roles(&p, t0()).len());
        let mut paged = Vec::new();
        let mut offset = 0;
        loop {
            let page = c.browse_eligible(&p, t0(), &BrowseFilter::default(), offset, 37);
            assert_eq!(page.total, full.total);
            if page.entries.is_empty() {
                break;
            }
            offset += page.entries.len();
            paged.extend(page.entries);
        }
        let order = |e: &[EligibleRole]| {
            e.iter()
                .map(|x| (x.resource_path.clone(), x.role.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&paged), order(&full.entries));
        let mut sorted = order(&paged);
        sorted.sort();
        assert_eq!(sorted, order(&paged), "path order, then role");
    }
}
