//! shibafu's HTTP API: the Docker Engine API (and shibafu's own routes) on a
//! unix socket. `backend` is the contract with the engine; `server` is the
//! HTTP layer that speaks it.
pub mod backend;
pub use backend::*;
