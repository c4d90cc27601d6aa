//! elevate's domain, with no IO and no clock: every function that depends on
//! time takes `now` as an argument, so the whole lifecycle can be tested with
//! fixed instants.
//!
//! - [`values`]: parsed newtypes (names, e-mails, justifications, durations)
//!   that cannot hold an invalid value.
//! - [`principal`]: who is acting, with their groups.
//! - [`policy`]: targets, resources (nested like OUs, tagged), eligibilities
//!   and approval policies, and the questions asked of them ("may this user
//!   request X?", "who approves X, and how many?").
//! - [`request`]: the request/grant lifecycle as a state machine. Each
//!   transition returns the new request, the audit events it produces and the
//!   provider work it implies; the caller persists all three in one
//!   transaction.
//! - [`automation`]: auto-approval rules (on-call, business hours, low
//!   risk) and the on-call schedule file, as pure functions of `now`.
//! - [`browse`]: paging through a person's choices in large catalogs.
//! - [`error`]: the domain's refusals, each with a stable code.

pub mod automation;
pub mod browse;
pub mod error;
pub mod policy;
pub mod principal;
pub mod request;
pub mod values;

pub use error::DomainError;

/// Instants are UTC everywhere in the domain; presentation converts.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
