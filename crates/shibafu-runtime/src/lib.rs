//! Running one container: OCI spec generation, the per-container
//! supervisor process (libcontainer inside), and the client the engine uses
//! to talk to a supervisor.
pub mod config;
pub use config::*;
