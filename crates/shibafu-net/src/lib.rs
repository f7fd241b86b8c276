//! shibafu's networking library: everything a bridge network needs, built
//! bottom-up so each layer is testable on its own.
//!
//! - [`ipam`]: subnets, gateways, address allocation, persisted in redb so
//!   that allocations survive crashes and can be reconciled against the
//!   containers that really live.
//! - [`netlink`]: bridges and veths through rtnetlink, behind a trait.
//! - [`firewall`]: the nftables ruleset as a pure function of the desired
//!   state, applied as one JSON batch per change.
//! - [`nftlib`]: libnftables loaded in-process (the `nft` binary is the
//!   fallback).
//! - [`store`]: network records and container endpoints, persisted.
//! - [`ports`]: `-p`/`-P` parsing, host-port allocation, `ps`/`inspect`
//!   rendering.
//! - [`bridge`]: [`bridge::BridgeNetworks`], the orchestration of all of the
//!   above that the daemon calls.

pub mod bridge;
pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod nftlib;
pub mod ports;
pub mod store;
