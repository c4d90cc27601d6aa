use axum::response::Response;
use axum::Router;
use maud::html;

use super::{page, Nav, Viewer};
use crate::api::AppState;
use crate::engine::Broker;

pub fn routes() -> Router<AppState> {
    Router::new()
}

pub async fn dashboard(_b: &Broker, v: &Viewer) -> Response {
    page(Some(v), Nav::Home, "elevate", html! { p { "Signed in as " (v.p.name) } })
}
