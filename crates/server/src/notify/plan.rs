//! From an audit event to the deliveries it causes: which route applies,
//! who is in each audience, what each of them receives.

use std::collections::BTreeMap;

use elevate_core::principal::{Principal, Subject};
use elevate_core::request::{Request, State};
use elevate_core::values::UserName;
use elevate_store::audit::AuditRecord;
use elevate_store::outbox::NewDelivery;

use super::render::{self, Role};
use super::{Audience, Route, Settings, BREAK_GLASS_USED};
use crate::engine::Broker;
use crate::error::ApiError;

/// Everyone elevate could write to: configured users and people who
/// signed in through the identity provider, with their latest profile.
pub struct People(Vec<Principal>);

/// Sign-ins read per planning round, at most: past this, people who have
/// not signed in for longest are not mailed as members of a group (a
/// person named directly is always found).
const MAX_IDENTITIES: i64 = 100_000;

impl People {
    pub async fn load(b: &Broker) -> Result<People, ApiError> {
        let mut all: Vec<Principal> = b.directory.users().cloned().collect();
        for identity in b.store.identities(MAX_IDENTITIES).await? {
            let Ok(name) = UserName::parse(&identity.user_name) else {
                continue;
            };
            if b.directory.get(&name).is_some() {
                continue;
            }
            let Ok(profile) = serde_json::from_str::<crate::identity::Profile>(&identity.profile)
            else {
                continue;
            };
            all.push(profile.principal(name));
        }
        Ok(People(all))
    }

    fn matching(&self, subjects: &[Subject]) -> Vec<&Principal> {
        self.0.iter().filter(|p| p.matches_any(subjects)).collect()
    }

    fn named(&self, name: &UserName) -> Option<&Principal> {
        self.0.iter().find(|p| &p.name == name)
    }
}

/// The route a stored event takes: a break-glass creation is routed on
/// its own, an auto-approved one as an approval.
pub fn route_key(rec: &AuditRecord) -> &str {
    let details = &rec.details;
    if rec.action == "request.created" {
        if details.get("break_glass").and_then(|v| v.as_bool()) == Some(true) {
            return BREAK_GLASS_USED;
        }
        if details.get("auto_approval").is_some_and(|v| v.is_object()) {
            return "request.approved";
        }
    }
    &rec.action
}

/// Whether approvers hearing of this event are asked to decide: the
/// request waits for them (still pending when planned).
fn asks_for_decision(key: &str, r: &Request) -> bool {
    matches!(
        key,
        "request.created" | "request.reminded" | "request.escalated"
    ) && matches!(r.state, State::Pending { .. })
}

fn subjects_in(details: &serde_json::Value, field: &str) -> Vec<Subject> {
    details
        .get(field)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .filter_map(|s| Subject::parse(s).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Adds `p` to the recipients unless their address is there already in a
/// role at least as involved.
fn add<'p>(to: &mut BTreeMap<String, (&'p Principal, Role)>, p: &'p Principal, role: Role) {
    let Some(email) = &p.email else { return };
    let k = email.as_str().to_lowercase();
    if to.get(&k).is_none_or(|(_, had)| *had < role) {
        to.insert(k, (p, role));
    }
}

/// A mail as the outbox stores it.
fn encoded(mail: &render::Mail) -> Result<String, ApiError> {
    serde_json::to_string(mail).map_err(|e| {
        ApiError::Store(elevate_store::StoreError::Corrupt(format!(
            "cannot encode a message: {e}"
        )))
    })
}

/// The deliveries `rec` causes under `settings`.
pub async fn plan(
    b: &Broker,
    settings: &Settings,
    people: &People,
    rec: &AuditRecord,
) -> Result<Vec<NewDelivery>, ApiError> {
    let key = route_key(rec);
    let Some(route) = settings.routes.get(key) else {
        return Ok(Vec::new());
    };
    let Some(id) = rec.request.as_deref() else {
        // The one event about a target rather than a request; any other
        // without a request is not routed.
        if key == super::TARGET_UNMANAGED_ACCESS {
            return plan_target(b, settings, people, rec, key, route);
        }
        return Ok(Vec::new());
    };
    let Ok(id) = elevate_core::values::RequestId::parse(id) else {
        return Ok(Vec::new());
    };
    let Some(stored) = b.store.get_request(&id).await? else {
        return Ok(Vec::new());
    };
    let r = &stored.request;
    let actor = rec.actor.strip_prefix("user:");
    let mut out = Vec::new();
    let new = |channel: String, recipient: String, doc: String| NewDelivery {
        audit_seq: rec.seq,
        request_id: Some(r.id.to_string()),
        event: key.to_owned(),
        channel,
        recipient,
        doc,
    };

    if settings.email.is_some() && !route.email.is_empty() {
        // One message per address: the most involved role decides its
        // wording (an approver who is also an admin is asked to decide).
        let mut to: BTreeMap<String, (&Principal, Role)> = BTreeMap::new();
        // Once escalated, the fallback approvers are approvers too: they
        // hear of the outcome like the others.
        let requirement = b.requirement_of(r);
        let deciding = asks_for_decision(key, r);
        for audience in &route.email {
            let (subjects, role): (Vec<Subject>, Role) = match audience {
                Audience::Requester => {
                    // Whoever caused the event knows of it, except that
                    // the requester gets a copy of what they asked for.
                    let own_doing = actor == Some(r.requester.as_str())
                        && !matches!(key, "request.created" | BREAK_GLASS_USED);
                    if let Some(p) = people.named(&r.requester).filter(|_| !own_doing) {
                        add(&mut to, p, Role::Requester);
                    }
                    continue;
                }
                Audience::Approvers => (
                    requirement
                        .as_ref()
                        .map(|q| q.approvers.clone())
                        .unwrap_or_default(),
                    if deciding {
                        Role::Decider
                    } else {
                        Role::Approver
                    },
                ),
                Audience::Admins => (b.catalog().admins.clone(), Role::Admin),
                Audience::Escalation => (
                    subjects_in(&rec.details, "escalate_to"),
                    if deciding {
                        Role::Decider
                    } else {
                        Role::Approver
                    },
                ),
            };
            for p in people.matching(&subjects) {
                // The requester never decides their own request, and
                // whoever caused the event knows of it.
                if p.name == r.requester || actor == Some(p.name.as_str()) {
                    continue;
                }
                // Someone who approved already is not reminded (a quorum
                // of two reminds only those still to decide).
                if matches!(key, "request.reminded" | "request.escalated")
                    && r.approvals.iter().any(|a| a.by == p.name)
                {
                    continue;
                }
                add(&mut to, p, role);
            }
        }
        for (address, (p, role)) in to {
            let doc = encoded(&render::email(b, rec, key, r, p, role))?;
            out.push(new("email".into(), address, doc));
        }
    }

    if route.chat {
        for c in settings
            .chats
            .iter()
            .filter(|c| c.targets.is_empty() || c.targets.contains(&r.target))
        {
            let payload = render::chat(b, rec, key, r, c.format);
            out.push(new(
                format!("chat:{}", c.name),
                c.name.clone(),
                payload.to_string(),
            ));
        }
    }
    Ok(out)
}

/// The deliveries of an event about a target rather than a request
/// (access found outside elevate): mail to the admins, a post to every
/// chat channel whose scope covers the target.
fn plan_target(
    b: &Broker,
    settings: &Settings,
    people: &People,
    rec: &AuditRecord,
    key: &str,
    route: &Route,
) -> Result<Vec<NewDelivery>, ApiError> {
    let Some(target) = rec.details.get("target").and_then(|v| v.as_str()) else {
        return Ok(Vec::new());
    };
    let new = |channel: String, recipient: String, doc: String| NewDelivery {
        audit_seq: rec.seq,
        request_id: None,
        event: key.to_owned(),
        channel,
        recipient,
        doc,
    };
    let mut out = Vec::new();
    if settings.email.is_some() && route.email.contains(&Audience::Admins) {
        let mut to: BTreeMap<String, (&Principal, Role)> = BTreeMap::new();
        for p in people.matching(&b.catalog().admins) {
            add(&mut to, p, Role::Admin);
        }
        for (address, (p, _)) in to {
            let doc = encoded(&render::target_email(b, rec, target, p))?;
            out.push(new("email".into(), address, doc));
        }
    }
    if route.chat {
        for c in settings
            .chats
            .iter()
            .filter(|c| c.targets.is_empty() || c.targets.iter().any(|t| t.as_str() == target))
        {
            let payload = render::target_chat(b, rec, target, c.format);
            out.push(new(
                format!("chat:{}", c.name),
                c.name.clone(),
                payload.to_string(),
            ));
        }
    }
    Ok(out)
}
