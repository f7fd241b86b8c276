//! shibafu's HTTP API: the Docker Engine API (and shibafu's own routes) on a
//! unix socket. `backend` is the contract with the engine; `server` is the
//! HTTP layer that speaks it.
pub mod backend;
pub mod server;
pub use backend::*;
pub use server::{bind_unix, router, serve, API_VERSION, MIN_API_VERSION};
