//! The keys routes of the local Key Vault.

use axum::Router;

use super::state::AppState;

/// The keys routes, merged into the vault router by [`super::app`].
pub fn routes() -> Router<AppState> {
    Router::new()
}
