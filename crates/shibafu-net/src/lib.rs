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
//! - [`nfnl`]: set element updates sent over nfnetlink directly, so a
//!   change costs the same however many elements the sets hold.
//! - [`store`]: network records and container endpoints, persisted.
//! - [`ports`]: `-p`/`-P` parsing, host-port allocation, `ps`/`inspect`
//!   rendering.
//! - [`socklb`]: cgroup eBPF programs that translate host-local connects
//!   to published ports at connect time (no per-packet NAT).
//! - [`bridge`]: [`bridge::BridgeNetworks`], the orchestration of all of the
//!   above that the daemon calls.

pub mod bridge;
pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod nfnl;
pub mod nftlib;
pub mod ports;
pub mod socklb;
pub mod store;
