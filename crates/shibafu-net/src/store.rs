//! Network records and container endpoints, persisted in
//! `<dir>/networks.redb` next to the IPAM store.
//!
//! Why it looks like this:
//! - The record is what `network inspect` shows and what the daemon needs
//!   to rebuild bridges and the firewall after a crash or reboot; the IPAM
//!   store keeps the address plan, keyed by the same network id.
//! - Container endpoints (and their published ports) are persisted too, so
//!   a restarted daemon can re-apply the firewall and knows which veths and
//!   addresses belong to live containers.
//! - Bridges shibafu created are recorded *before* they are created (an
//!   intent log): reconcile may then delete exactly those after a crash,
//!   and never a bridge of someone else (Docker's are also `br-<id12>`).
//! - Names follow Docker's rule and are unique; lookups accept a full id,
//!   a full name or an unambiguous id prefix, in that order (as Docker).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::ipam::SubnetConfig;
use crate::ports::PublishedPort;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid network name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("network with name {0} already exists")]
    NameExists(String),
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network {prefix} is ambiguous ({} matches found on id prefix)", matches.len())]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("network store: {0}")]
    Store(String),
    #[error("network policy with name {0} already exists")]
    PolicyExists(String),
    #[error("network policy {0} not found")]
    PolicyNotFound(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Option keys of `network create -o` that shibafu acts on.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
pub const OPT_DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";

/// A network as persisted and shown by `network inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// 64 hex.
    pub id: String,
    pub name: String,
    /// Always `bridge` for now.
    pub driver: String,
    /// Subnets with gateway (and `--ip-range`) filled in.
    pub subnets: Vec<SubnetConfig>,
    pub ipv6: bool,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub created: DateTime<Utc>,
    /// The Linux bridge: `br-<id12>`, `shibafu0` for the default network,
    /// or the `com.docker.network.bridge.name` option.
    pub bridge: String,
    pub mtu: Option<u32>,
    /// The predefined `bridge` network (cannot be removed).
    pub default: bool,
}

impl NetworkRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
    pub fn subnets(&self) -> Vec<IpNet> {
        self.subnets.iter().map(|s| s.subnet).collect()
    }
}

/// One container interface on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    pub network_name: String,
    /// 64 hex, Docker's `EndpointID`.
    pub endpoint_id: String,
    /// `eth0`, `eth1`, ...
    pub ifname: String,
    /// Host end of the veth (`vsf...`).
    pub host_veth: String,
    pub mac: String,
    /// Addresses with prefix (one per family).
    pub addresses: Vec<IpNet>,
    /// Gateways of the subnets the addresses are in.
    pub gateways: Vec<IpAddr>,
    pub aliases: Vec<String>,
    /// `--ip`/`--ip6` as asked (inspect's `IPAMConfig`).
    #[serde(default)]
    pub static_ips: Vec<IpAddr>,
    /// The container's default route goes through this endpoint; ports
    /// are published to its addresses.
    pub is_gateway: bool,
}

impl Endpoint {
    pub fn ip(&self, v6: bool) -> Option<IpNet> {
        self.addresses
            .iter()
            .find(|a| a.addr().is_ipv6() == v6)
            .copied()
    }
    pub fn gateway(&self, v6: bool) -> Option<IpAddr> {
        self.gateways.iter().find(|a| a.is_ipv6() == v6).copied()
    }
}

/// Everything networking knows about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerNet {
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PublishedPort>,
}

impl ContainerNet {
    /// The endpoint ports are published to.
    pub fn gateway_endpoint(&self) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.is_gateway)
    }
}

/// Docker's network name rule.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_string()))
    }
}

/// A fresh 64-hex id.
pub fn new_id() -> String {
    let b: [u8; 32] = rand::random();
    hex::encode(b)
}

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
/// bridge name -> id of the network it was created for.
const BRIDGES: TableDefinition<&str, &str> = TableDefinition::new("owned_bridges");
/// policy id -> [`PolicyRecord`].
const POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("policies");

/// One rule of a network policy: traffic from the containers of network
/// `from` (its id), to every port or to one `(proto, port)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyRule {
    pub from: String,
    pub port: Option<(crate::firewall::Proto, u16)>,
}

/// A network policy: ingress rules for the containers of `network` (an
/// id). Deny wins over allow; what matches no rule follows the default
/// (same network allowed, other networks isolated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub id: String,
    pub name: String,
    pub network: String,
    pub deny: Vec<PolicyRule>,
    pub allow: Vec<PolicyRule>,
    pub created: DateTime<Utc>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Store(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(err)
}

/// The persisted network store.
pub struct NetworkStore {
    db: Database,
}

impl NetworkStore {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let db = Database::create(dir.join("networks.redb")).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(NETWORKS).map_err(err)?;
        tx.open_table(CONTAINERS).map_err(err)?;
        tx.open_table(BRIDGES).map_err(err)?;
        tx.open_table(POLICIES).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(NetworkStore { db })
    }

    /// Add a network; refused when the name is taken.
    pub fn insert(&self, rec: &NetworkRecord) -> Result<()> {
        validate_name(&rec.name)?;
        self.insert_unique(NETWORKS, &rec.id, rec, |r: &NetworkRecord| {
            (r.name == rec.name || r.id == rec.id).then(|| StoreError::NameExists(rec.name.clone()))
        })
    }

    /// Remove a network by id; returns the record if it existed.
    pub fn remove(&self, id: &str) -> Result<Option<NetworkRecord>> {
        self.remove_from(NETWORKS, id)
    }

    pub fn get(&self, id: &str) -> Result<Option<NetworkRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(NETWORKS).map_err(err)?;
        let v = t.get(id).map_err(err)?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// All networks, by name.
    pub fn list(&self) -> Result<Vec<NetworkRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(NETWORKS).map_err(err)?;
        let mut out: Vec<NetworkRecord> = Vec::new();
        for row in t.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.push(decode(v.value())?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Full id, then full name, then unambiguous id prefix.
    pub fn resolve(&self, key: &str) -> Result<NetworkRecord> {
        let all = self.list()?;
        if let Some(r) = all.iter().find(|r| r.id == key) {
            return Ok(r.clone());
        }
        if let Some(r) = all.iter().find(|r| r.name == key) {
            return Ok(r.clone());
        }
        let hits: Vec<&NetworkRecord> = if key.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|r| r.id.starts_with(key)).collect()
        };
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StoreError::NotFound(key.to_string())),
            many => Err(StoreError::Ambiguous {
                prefix: key.to_string(),
                matches: many.iter().map(|r| r.id.clone()).collect(),
            }),
        }
    }

    pub fn container(&self, id: &str) -> Result<Option<ContainerNet>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(CONTAINERS).map_err(err)?;
        let v = t.get(id).map_err(err)?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// Store (or, when it has no endpoints and no ports, forget) a
    /// container's networking.
    pub fn put_container(&self, id: &str, c: &ContainerNet) -> Result<()> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(CONTAINERS).map_err(err)?;
            if c.endpoints.is_empty() && c.ports.is_empty() {
                t.remove(id).map_err(err)?;
            } else {
                let bytes = serde_json::to_vec(c).map_err(err)?;
                t.insert(id, bytes.as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    pub fn remove_container(&self, id: &str) -> Result<Option<ContainerNet>> {
        self.remove_container_with(id, redb::Durability::Immediate)
    }

    /// [`Self::remove_container`] for a container that is gone (detach),
    /// not fsynced: after a crash reconcile drops the records of containers
    /// that are not alive anyway, and the next synced commit persists it.
    pub fn remove_container_unsynced(&self, id: &str) -> Result<Option<ContainerNet>> {
        self.remove_container_with(id, redb::Durability::None)
    }

    fn remove_container_with(
        &self,
        id: &str,
        durability: redb::Durability,
    ) -> Result<Option<ContainerNet>> {
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(durability).map_err(err)?;
        let old = {
            let mut t = tx.open_table(CONTAINERS).map_err(err)?;
            let v = t.remove(id).map_err(err)?;
            v.map(|v| decode(v.value())).transpose()?
        };
        tx.commit().map_err(err)?;
        Ok(old)
    }

    /// Every container's networking, by container id.
    pub fn containers(&self) -> Result<BTreeMap<String, ContainerNet>> {
        self.container_rows()
    }

    /// Every row of the containers table, decoded as `T` (a view of
    /// [`ContainerNet`]; fields it lacks are skipped, not built).
    fn container_rows<T: serde::de::DeserializeOwned>(&self) -> Result<BTreeMap<String, T>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(CONTAINERS).map_err(err)?;
        let mut out = BTreeMap::new();
        for row in t.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            out.insert(k.value().to_string(), decode(v.value())?);
        }
        Ok(out)
    }

    /// Every container's endpoints, by container id: [`Self::containers`]
    /// without building the published ports (a container may have a
    /// thousand; the DNS table is rebuilt from this at every start).
    pub fn container_endpoints(&self) -> Result<BTreeMap<String, Vec<Endpoint>>> {
        #[derive(Deserialize)]
        struct EndpointsOnly {
            endpoints: Vec<Endpoint>,
        }
        Ok(self
            .container_rows::<EndpointsOnly>()?
            .into_iter()
            .map(|(id, c)| (id, c.endpoints))
            .collect())
    }

    /// Record that shibafu is about to create `bridge` for `network_id`.
    pub fn own_bridge(&self, bridge: &str, network_id: &str) -> Result<()> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(BRIDGES)
            .map_err(err)?
            .insert(bridge, network_id)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Remove a network and the policies of its containers in one
    /// commit, recording in the same commit that shibafu owns bridge
    /// `own.0` (for network id `own.1`, see [`Self::own_bridge`]); returns
    /// the network record if it existed and the policies removed.
    pub fn remove_with_policies(
        &self,
        id: &str,
        own: Option<(&str, &str)>,
    ) -> Result<(Option<NetworkRecord>, Vec<PolicyRecord>)> {
        let tx = self.db.begin_write().map_err(err)?;
        if let Some((bridge, network_id)) = own {
            tx.open_table(BRIDGES)
                .map_err(err)?
                .insert(bridge, network_id)
                .map_err(err)?;
        }
        let out = {
            let mut nets = tx.open_table(NETWORKS).map_err(err)?;
            let rec: Option<NetworkRecord> = nets
                .remove(id)
                .map_err(err)?
                .map(|v| decode(v.value()))
                .transpose()?;
            let mut pols = tx.open_table(POLICIES).map_err(err)?;
            let mut gone: Vec<PolicyRecord> = Vec::new();
            for row in pols.iter().map_err(err)? {
                let (_, v) = row.map_err(err)?;
                let p: PolicyRecord = decode(v.value())?;
                if p.network == id {
                    gone.push(p);
                }
            }
            for p in &gone {
                pols.remove(p.id.as_str()).map_err(err)?;
            }
            (rec, gone)
        };
        tx.commit().map_err(err)?;
        Ok(out)
    }

    pub fn disown_bridge(&self, bridge: &str) -> Result<()> {
        self.disown_bridge_with(bridge, redb::Durability::Immediate)
    }

    /// [`Self::disown_bridge`] for a bridge already deleted, not fsynced:
    /// after a crash reconcile finds it owned by no network, and not in
    /// the kernel, and drops the record.
    pub fn disown_bridge_unsynced(&self, bridge: &str) -> Result<()> {
        self.disown_bridge_with(bridge, redb::Durability::None)
    }

    fn disown_bridge_with(&self, bridge: &str, durability: redb::Durability) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(durability).map_err(err)?;
        tx.open_table(BRIDGES)
            .map_err(err)?
            .remove(bridge)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Add a policy; refused when the name is taken.
    pub fn insert_policy(&self, p: &PolicyRecord) -> Result<()> {
        validate_name(&p.name)?;
        self.insert_unique(POLICIES, &p.id, p, |r: &PolicyRecord| {
            (r.name == p.name).then(|| StoreError::PolicyExists(p.name.clone()))
        })
    }

    pub fn remove_policy(&self, id: &str) -> Result<Option<PolicyRecord>> {
        self.remove_from(POLICIES, id)
    }

    /// Inserts `value` under `key` in one transaction, unless an existing
    /// row clashes with it (`clash` names the error).
    fn insert_unique<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
        clash: impl Fn(&T) -> Option<StoreError>,
    ) -> Result<()> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(table).map_err(err)?;
            for row in t.iter().map_err(err)? {
                let (_, v) = row.map_err(err)?;
                if let Some(e) = clash(&decode(v.value())?) {
                    return Err(e);
                }
            }
            let bytes = serde_json::to_vec(value).map_err(err)?;
            t.insert(key, bytes.as_slice()).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Removes `key`; returns the row if it existed.
    fn remove_from<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>> {
        let tx = self.db.begin_write().map_err(err)?;
        let old = {
            let mut t = tx.open_table(table).map_err(err)?;
            let v = t.remove(key).map_err(err)?;
            v.map(|v| decode(v.value())).transpose()?
        };
        tx.commit().map_err(err)?;
        Ok(old)
    }

    /// All policies, by name.
    pub fn policies(&self) -> Result<Vec<PolicyRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(POLICIES).map_err(err)?;
        let mut out: Vec<PolicyRecord> = Vec::new();
        for row in t.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.push(decode(v.value())?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A policy by full id, name or unambiguous id prefix.
    pub fn resolve_policy(&self, key: &str) -> Result<PolicyRecord> {
        let all = self.policies()?;
        if let Some(p) = all.iter().find(|p| p.id == key || p.name == key) {
            return Ok(p.clone());
        }
        let hits: Vec<&PolicyRecord> = if key.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|p| p.id.starts_with(key)).collect()
        };
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StoreError::PolicyNotFound(key.to_string())),
            many => Err(StoreError::Ambiguous {
                prefix: key.to_string(),
                matches: many.iter().map(|p| p.id.clone()).collect(),
            }),
        }
    }

    /// Bridges shibafu created: bridge name -> network id.
    pub fn owned_bridges(&self) -> Result<BTreeMap<String, String>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(BRIDGES).map_err(err)?;
        let mut out = BTreeMap::new();
        for row in t.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            out.insert(k.value().to_string(), v.value().to_string());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::validate_subnet;

    fn rec(id: &str, name: &str) -> NetworkRecord {
        NetworkRecord {
            id: id.to_string(),
            name: name.to_string(),
            driver: "bridge".into(),
            subnets: vec![validate_subnet("10.1.0.0/24".parse().unwrap(), None, None).unwrap()],
            ipv6: false,
            internal: false,
            attachable: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            created: Utc::now(),
            bridge: format!("br-{}", &id[..12]),
            mtu: None,
            default: false,
        }
    }

    #[test]
    fn names_follow_docker_rule() {
        for ok in ["a", "frontend", "my_net.1-x", "0net"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "ä"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(new_id().len(), 64);
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn insert_resolve_remove_persist() {
        let d = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(d.path()).unwrap();
        let a = "aaaa1111".repeat(8);
        let b = "aaaa2222".repeat(8);
        s.insert(&rec(&a, "front")).unwrap();
        s.insert(&rec(&b, "back")).unwrap();
        let e = s.insert(&rec(&new_id(), "front")).unwrap_err();
        assert_eq!(e.to_string(), "network with name front already exists");
        assert_eq!(s.resolve("front").unwrap().id, a);
        assert_eq!(s.resolve(&b).unwrap().name, "back");
        assert_eq!(s.resolve("aaaa2").unwrap().name, "back");
        let e = s.resolve("aaaa").unwrap_err();
        assert!(matches!(e, StoreError::Ambiguous { .. }), "{e}");
        assert_eq!(
            s.resolve("nope").unwrap_err().to_string(),
            "network nope not found"
        );
        // A name that looks like another network's id prefix: name wins.
        s.insert(&rec(&new_id(), "aaaa1")).unwrap();
        assert_eq!(s.resolve("aaaa1").unwrap().name, "aaaa1");
        assert_eq!(
            s.list()
                .unwrap()
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["aaaa1", "back", "front"]
        );
        drop(s);
        let s = NetworkStore::open(d.path()).unwrap();
        assert_eq!(s.remove(&a).unwrap().unwrap().name, "front");
        assert!(s.remove(&a).unwrap().is_none());
        assert!(s.get(&a).unwrap().is_none());
    }

    #[test]
    fn containers_and_owned_bridges() {
        let d = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(d.path()).unwrap();
        let c = ContainerNet {
            endpoints: vec![Endpoint {
                network_id: "n".into(),
                network_name: "net".into(),
                endpoint_id: new_id(),
                ifname: "eth0".into(),
                host_veth: "vsf0".into(),
                mac: "02:42:0a:01:00:02".into(),
                addresses: vec!["10.1.0.2/24".parse().unwrap()],
                gateways: vec!["10.1.0.1".parse().unwrap()],
                aliases: vec![],
                static_ips: vec![],
                is_gateway: true,
            }],
            ports: vec![],
        };
        s.put_container("c1", &c).unwrap();
        assert_eq!(s.container("c1").unwrap().unwrap(), c);
        assert_eq!(
            c.gateway_endpoint().unwrap().ip(false),
            Some("10.1.0.2/24".parse().unwrap())
        );
        assert_eq!(s.containers().unwrap().len(), 1);
        // Empty means forgotten.
        s.put_container("c1", &ContainerNet::default()).unwrap();
        assert!(s.container("c1").unwrap().is_none());
        s.put_container("c1", &c).unwrap();
        assert_eq!(s.remove_container("c1").unwrap(), Some(c));
        assert!(s.remove_container("c1").unwrap().is_none());

        s.own_bridge("br-x", "n1").unwrap();
        assert_eq!(s.owned_bridges().unwrap()["br-x"], "n1");
        s.disown_bridge("br-x").unwrap();
        assert!(s.owned_bridges().unwrap().is_empty());
    }
}
