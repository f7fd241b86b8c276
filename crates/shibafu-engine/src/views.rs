//! What clients read: `inspect`, `ps` rows and their filters.

use std::collections::HashMap;

use bollard_stubs::models::{
    BollardDate, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
    ContainerSummary, ContainerSummaryHealth, ContainerSummaryHealthStatusEnum,
    ContainerSummaryHostConfig, ContainerSummaryNetworkSettings, ContainerSummaryStateEnum,
    DriverData, Health, HealthStatusEnum, HealthcheckResult, MountPoint, NetworkSettings,
    PortSummary, PortSummaryTypeEnum,
};
use chrono::{DateTime, SecondsFormat, Utc};
use shibafu_api::Filters;
use shibafu_net::ports::PublishedPort;

use crate::error::{EngineError, Result};
use crate::model::{ContainerRecord, HealthStatus, MountKind, Status};
use crate::Engine;

/// Docker's RFC 3339 with nanoseconds.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Go's zero time, which Docker shows for "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A `BollardDate` whichever representation bollard-stubs was built with
/// (String without features, chrono/time with them).
pub fn date(t: &DateTime<Utc>) -> BollardDate {
    serde_json::from_value(serde_json::Value::String(rfc3339(t)))
        .expect("RFC 3339 parses as a BollardDate")
}

pub fn label_match(labels: &HashMap<String, String>, f: &str) -> bool {
    match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(f),
    }
}

pub fn parse_bool_filter(key: &str, vals: &[String]) -> Result<bool> {
    match vals.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        _ => Err(EngineError::Invalid(format!(
            "invalid filter '{key}={}'",
            vals.join(",")
        ))),
    }
}

fn state_enum(s: Status) -> ContainerStateStatusEnum {
    match s {
        Status::Created => ContainerStateStatusEnum::CREATED,
        Status::Running => ContainerStateStatusEnum::RUNNING,
        Status::Paused => ContainerStateStatusEnum::PAUSED,
        Status::Restarting => ContainerStateStatusEnum::RESTARTING,
        Status::Removing => ContainerStateStatusEnum::REMOVING,
        Status::Exited => ContainerStateStatusEnum::EXITED,
        Status::Dead => ContainerStateStatusEnum::DEAD,
    }
}

fn summary_state(s: Status) -> ContainerSummaryStateEnum {
    match s {
        Status::Created => ContainerSummaryStateEnum::CREATED,
        Status::Running => ContainerSummaryStateEnum::RUNNING,
        Status::Paused => ContainerSummaryStateEnum::PAUSED,
        Status::Restarting => ContainerSummaryStateEnum::RESTARTING,
        Status::Removing => ContainerSummaryStateEnum::REMOVING,
        Status::Exited => ContainerSummaryStateEnum::EXITED,
        Status::Dead => ContainerSummaryStateEnum::DEAD,
    }
}

pub fn mount_points(rec: &ContainerRecord) -> Vec<MountPoint> {
    rec.mounts
        .iter()
        .map(|m| MountPoint {
            typ: Some(m.kind.as_str().to_string()),
            name: (m.kind == MountKind::Volume).then(|| m.name.clone()),
            source: Some(m.source.clone()),
            destination: Some(m.destination.clone()),
            driver: (m.kind == MountKind::Volume).then(|| "local".to_string()),
            mode: Some(m.mode.clone()),
            rw: Some(m.rw),
            propagation: Some(if m.kind == MountKind::Bind {
                "rprivate".into()
            } else {
                String::new()
            }),
        })
        .collect()
}

/// `ps`'s `Ports`: every published port (host address and port), then
/// the exposed ports that are not published, as Docker lists them.
fn port_summaries(rec: &ContainerRecord, published: &[PublishedPort]) -> Vec<PortSummary> {
    if !rec.state.status.is_live() {
        return vec![];
    }
    let typ_of = |proto: &str| match proto {
        "udp" => PortSummaryTypeEnum::UDP,
        "sctp" => PortSummaryTypeEnum::SCTP,
        _ => PortSummaryTypeEnum::TCP,
    };
    let mut out: Vec<PortSummary> = published
        .iter()
        .map(|p| PortSummary {
            ip: Some(p.host_ip.to_string()),
            private_port: p.container_port,
            public_port: Some(p.host_port),
            typ: Some(typ_of(p.proto.as_str())),
        })
        .collect();
    let exposed = rec.config.exposed_ports.iter().flatten().filter_map(|p| {
        let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
        let port: u16 = port.parse().ok()?;
        let typ = typ_of(proto);
        if published
            .iter()
            .any(|q| q.container_port == port && q.proto.as_str() == proto)
        {
            return None;
        }
        Some(PortSummary {
            ip: None,
            private_port: port,
            public_port: None,
            typ: Some(typ),
        })
    });
    out.extend(exposed);
    out.sort_by_key(|p| (p.private_port, p.ip.clone(), p.public_port));
    out
}

impl Engine {
    fn size_rw(&self, rec: &ContainerRecord) -> i64 {
        let upper = self.rootfs_dir(&rec.id).join("upper");
        walkdir::WalkDir::new(upper)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.path().symlink_metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len() as i64)
            .sum()
    }

    fn image_size(&self, rec: &ContainerRecord) -> i64 {
        self.images
            .resolve(&rec.image_id)
            .map(|i| i.size)
            .unwrap_or(0)
    }

    pub(crate) fn inspect_view(
        &self,
        rec: &ContainerRecord,
        size: bool,
        exec_ids: Vec<String>,
    ) -> ContainerInspectResponse {
        let st = &rec.state;
        let health = st.health.as_ref().map(|h| Health {
            status: Some(match h.status {
                HealthStatus::Starting => HealthStatusEnum::STARTING,
                HealthStatus::Healthy => HealthStatusEnum::HEALTHY,
                HealthStatus::Unhealthy => HealthStatusEnum::UNHEALTHY,
            }),
            failing_streak: Some(h.failing_streak),
            log: Some(
                h.log
                    .iter()
                    .map(|l| HealthcheckResult {
                        start: Some(date(&l.start)),
                        end: Some(date(&l.end)),
                        exit_code: Some(l.exit_code),
                        output: Some(l.output.clone()),
                    })
                    .collect(),
            ),
        });
        let state = ContainerState {
            status: Some(state_enum(st.status)),
            running: Some(matches!(
                st.status,
                Status::Running | Status::Paused | Status::Restarting
            )),
            paused: Some(st.status == Status::Paused),
            restarting: Some(st.status == Status::Restarting),
            oom_killed: Some(st.oom_killed),
            dead: Some(st.status == Status::Dead),
            pid: Some(st.pid),
            exit_code: Some(st.exit_code),
            error: Some(st.error.clone()),
            started_at: Some(
                st.started_at
                    .as_ref()
                    .map(rfc3339)
                    .unwrap_or_else(|| ZERO_TIME.into()),
            ),
            finished_at: Some(
                st.finished_at
                    .as_ref()
                    .map(rfc3339)
                    .unwrap_or_else(|| ZERO_TIME.into()),
            ),
            health,
        };
        let dir = self.ctr_dir(&rec.id);
        let rootfs = self.rootfs_dir(&rec.id);
        let lower: Vec<String> = rec
            .layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let graph = DriverData {
            name: "overlay2".into(),
            data: HashMap::from([
                ("LowerDir".to_string(), lower.join(":")),
                (
                    "UpperDir".to_string(),
                    rootfs.join("upper").display().to_string(),
                ),
                (
                    "MergedDir".to_string(),
                    rootfs.join("merged").display().to_string(),
                ),
                (
                    "WorkDir".to_string(),
                    rootfs.join("work").display().to_string(),
                ),
            ]),
        };
        let live = st.status.is_live();
        let ports: bollard_stubs::models::PortMap = if live {
            shibafu_net::ports::port_map(
                &self.net().published(rec),
                rec.config
                    .exposed_ports
                    .iter()
                    .flatten()
                    .map(|p| p.as_str()),
            )
        } else {
            HashMap::new()
        };
        let network_settings = NetworkSettings {
            sandbox_id: Some(if live { rec.id.clone() } else { String::new() }),
            sandbox_key: Some(if live && st.pid > 0 {
                format!("/proc/{}/ns/net", st.pid)
            } else {
                String::new()
            }),
            ports: Some(ports),
            networks: Some(self.net().endpoints(rec)),
        };
        let (size_rw, size_root) = if size {
            let rw = self.size_rw(rec);
            (Some(rw), Some(rw + self.image_size(rec)))
        } else {
            (None, None)
        };
        ContainerInspectResponse {
            id: Some(rec.id.clone()),
            created: Some(date(&rec.created)),
            path: Some(rec.path.clone()),
            args: Some(rec.args.clone()),
            state: Some(state),
            image: Some(rec.image_id.clone()),
            resolv_conf_path: Some(dir.join("resolv.conf").display().to_string()),
            hostname_path: Some(dir.join("hostname").display().to_string()),
            hosts_path: Some(dir.join("hosts").display().to_string()),
            log_path: Some(self.log_path(&rec.id).display().to_string()),
            name: Some(format!("/{}", rec.name)),
            restart_count: Some(rec.restart_count),
            driver: Some("overlay2".into()),
            platform: Some("linux".into()),
            image_manifest_descriptor: None,
            mount_label: Some(String::new()),
            process_label: Some(String::new()),
            app_armor_profile: Some(String::new()),
            exec_ids: if exec_ids.is_empty() {
                None
            } else {
                Some(exec_ids)
            },
            host_config: Some(rec.host_config.clone()),
            graph_driver: Some(graph),
            storage: None,
            size_rw,
            size_root_fs: size_root,
            mounts: Some(mount_points(rec)),
            config: Some(rec.config.clone()),
            network_settings: Some(network_settings),
        }
    }

    pub(crate) fn summary_view(
        &self,
        rec: &ContainerRecord,
        size: bool,
        now: DateTime<Utc>,
    ) -> ContainerSummary {
        let (size_rw, size_root) = if size {
            let rw = self.size_rw(rec);
            (Some(rw), Some(rw + self.image_size(rec)))
        } else {
            (None, None)
        };
        let network_mode = rec
            .host_config
            .network_mode
            .clone()
            .unwrap_or_else(|| "bridge".into());
        ContainerSummary {
            id: Some(rec.id.clone()),
            names: Some(vec![format!("/{}", rec.name)]),
            image: Some(rec.image.clone()),
            image_id: Some(rec.image_id.clone()),
            image_manifest_descriptor: None,
            command: Some(rec.command()),
            created: Some(rec.created.timestamp()),
            ports: Some(port_summaries(rec, &self.net().published(rec))),
            size_rw,
            size_root_fs: size_root,
            labels: Some(rec.config.labels.clone().unwrap_or_default()),
            state: Some(summary_state(rec.state.status)),
            status: Some(crate::status::status_text(rec, now)),
            host_config: Some(ContainerSummaryHostConfig {
                network_mode: Some(network_mode),
                annotations: None,
            }),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(self.net().endpoints(rec)),
            }),
            mounts: Some(mount_points(rec)),
            health: rec.state.health.as_ref().map(|h| ContainerSummaryHealth {
                status: Some(match h.status {
                    HealthStatus::Starting => ContainerSummaryHealthStatusEnum::STARTING,
                    HealthStatus::Healthy => ContainerSummaryHealthStatusEnum::HEALTHY,
                    HealthStatus::Unhealthy => ContainerSummaryHealthStatusEnum::UNHEALTHY,
                }),
                failing_streak: Some(h.failing_streak),
            }),
        }
    }

    pub(crate) fn list(
        &self,
        all: bool,
        limit: Option<usize>,
        size: bool,
        filters: &Filters,
    ) -> Result<Vec<ContainerSummary>> {
        let mut recs: Vec<ContainerRecord> = self.ctrs.lock().values().map(|c| c.rec()).collect();
        recs.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        let f = ListFilter::parse(self, filters, &recs)?;
        let limit = limit.filter(|l| *l > 0);
        let all = all || limit.is_some() || f.wants_non_running();
        let now = Utc::now();
        let mut out = Vec::new();
        for r in &recs {
            if !all
                && !matches!(
                    r.state.status,
                    Status::Running | Status::Paused | Status::Restarting
                )
            {
                continue;
            }
            if !f.matches(r) {
                continue;
            }
            out.push(self.summary_view(r, size, now));
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }
}

/// Docker's `ps --filter` set, parsed once per request.
#[derive(Default)]
pub struct ListFilter {
    status: Vec<Status>,
    names: Vec<regex::Regex>,
    ids: Vec<String>,
    labels: Vec<String>,
    exited: Vec<i64>,
    ancestors: Vec<(String, Option<String>)>,
    before: Option<DateTime<Utc>>,
    since: Option<DateTime<Utc>>,
    health: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl ListFilter {
    pub fn parse(
        engine: &Engine,
        filters: &Filters,
        recs: &[ContainerRecord],
    ) -> Result<ListFilter> {
        let mut f = ListFilter::default();
        let bad = |k: &str, v: &str| EngineError::Invalid(format!("invalid filter '{k}={v}'"));
        let created_of = |reference: &str| -> Result<DateTime<Utc>> {
            let items: Vec<(&str, &str)> = recs
                .iter()
                .map(|r| (r.id.as_str(), r.name.as_str()))
                .collect();
            match crate::names::resolve(reference, items.into_iter()) {
                crate::names::Lookup::Found(id) => Ok(recs
                    .iter()
                    .find(|r| r.id == id)
                    .map(|r| r.created)
                    .unwrap_or_default()),
                _ => Err(EngineError::NotFound(format!(
                    "No such container: {reference}"
                ))),
            }
        };
        for (k, vals) in filters {
            for v in vals {
                match k.as_str() {
                    "status" => f.status.push(match v.as_str() {
                        "created" => Status::Created,
                        "running" => Status::Running,
                        "paused" => Status::Paused,
                        "restarting" => Status::Restarting,
                        "removing" => Status::Removing,
                        "exited" => Status::Exited,
                        "dead" => Status::Dead,
                        _ => return Err(bad(k, v)),
                    }),
                    "name" => f.names.push(regex::Regex::new(v).map_err(|_| bad(k, v))?),
                    "id" => f.ids.push(v.clone()),
                    "label" => f.labels.push(v.clone()),
                    "exited" => f.exited.push(v.parse().map_err(|_| bad(k, v))?),
                    "ancestor" => {
                        let id = engine.images.resolve(v).map(|i| i.id);
                        f.ancestors.push((v.clone(), id));
                    }
                    "before" => f.before = Some(created_of(v)?),
                    "since" => f.since = Some(created_of(v)?),
                    "health" => {
                        if !["starting", "healthy", "unhealthy", "none"].contains(&v.as_str()) {
                            return Err(bad(k, v));
                        }
                        f.health.push(v.clone())
                    }
                    "volume" => f.volumes.push(v.clone()),
                    "network" => f.networks.push(v.clone()),
                    "is-task" | "publish" | "expose" | "isolation" => {}
                    _ => return Err(EngineError::Invalid(format!("invalid filter '{k}'"))),
                }
            }
        }
        Ok(f)
    }

    /// Filters that only make sense over stopped containers imply `-a`.
    fn wants_non_running(&self) -> bool {
        !self.exited.is_empty()
            || self
                .status
                .iter()
                .any(|s| !matches!(s, Status::Running | Status::Paused | Status::Restarting))
    }

    pub fn matches(&self, r: &ContainerRecord) -> bool {
        let labels = r.config.labels.clone().unwrap_or_default();
        if !self.status.is_empty() && !self.status.contains(&r.state.status) {
            return false;
        }
        if !self.names.is_empty() {
            let slashed = format!("/{}", r.name);
            if !self
                .names
                .iter()
                .any(|re| re.is_match(&slashed) || re.is_match(&r.name))
            {
                return false;
            }
        }
        if !self.ids.is_empty() && !self.ids.iter().any(|i| r.id.starts_with(i.as_str())) {
            return false;
        }
        if !self.labels.iter().all(|l| label_match(&labels, l)) {
            return false;
        }
        let exited_ok =
            r.state.status == Status::Exited && self.exited.contains(&r.state.exit_code);
        if !self.exited.is_empty() && !exited_ok {
            return false;
        }
        if !self.ancestors.is_empty()
            && !self.ancestors.iter().any(|(given, id)| {
                r.image == *given
                    || id.as_deref() == Some(r.image_id.as_str())
                    || r.image_id
                        .trim_start_matches("sha256:")
                        .starts_with(given.trim_start_matches("sha256:"))
            })
        {
            return false;
        }
        if self.before.is_some_and(|b| r.created >= b) {
            return false;
        }
        if self.since.is_some_and(|s| r.created <= s) {
            return false;
        }
        if !self.health.is_empty() {
            let h = r
                .state
                .health
                .as_ref()
                .map(|h| h.status.as_str())
                .unwrap_or("none");
            if !self.health.iter().any(|x| x == h) {
                return false;
            }
        }
        if !self.volumes.is_empty()
            && !r.mounts.iter().any(|m| {
                self.volumes
                    .iter()
                    .any(|v| *v == m.name || *v == m.destination || *v == m.source)
            })
        {
            return false;
        }
        if !self.networks.is_empty() {
            let n = r.network.network_name().unwrap_or("");
            let mode = r.host_config.network_mode.clone().unwrap_or_default();
            if !self.networks.iter().any(|x| x == n || *x == mode) {
                return false;
            }
        }
        true
    }
}
