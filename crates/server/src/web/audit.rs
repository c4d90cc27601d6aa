use axum::Router;

use crate::api::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
