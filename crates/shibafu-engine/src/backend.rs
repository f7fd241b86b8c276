//! The API contract implemented by [`Engine`].

use std::collections::HashSet;

use async_trait::async_trait;
use bollard_stubs::models::*;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use shibafu_api::{
    ApiResult, AttachOptions, AttachStreams, BoxStream, ContainerBackend, Filters, ImageUsers,
    LogsOptions, LogsStream, PathStat, SystemBackend, VolumeBackend, WaitCondition,
};

use crate::model::Status;
use crate::Engine;

#[async_trait]
impl ContainerBackend for Engine {
    async fn container_create(
        &self,
        name: Option<String>,
        body: ContainerCreateBody,
    ) -> ApiResult<ContainerCreateResponse> {
        Ok(self.create(name, body).await?)
    }

    async fn container_list(
        &self,
        all: bool,
        limit: Option<usize>,
        size: bool,
        filters: Filters,
    ) -> ApiResult<Vec<ContainerSummary>> {
        Ok(self.list(all, limit, size, &filters)?)
    }

    async fn container_inspect(
        &self,
        id_or_name: &str,
        size: bool,
    ) -> ApiResult<ContainerInspectResponse> {
        let c = self.lookup(id_or_name)?;
        let exec_ids = c.exec_ids.lock().clone();
        Ok(self.inspect_view(&c.rec(), size, exec_ids))
    }

    async fn container_start(&self, id_or_name: &str) -> ApiResult<()> {
        Ok(self.start(id_or_name).await?)
    }

    async fn container_stop(
        &self,
        id_or_name: &str,
        signal: Option<String>,
        timeout: Option<i64>,
    ) -> ApiResult<()> {
        Ok(self.stop(id_or_name, signal, timeout).await?)
    }

    async fn container_restart(
        &self,
        id_or_name: &str,
        signal: Option<String>,
        timeout: Option<i64>,
    ) -> ApiResult<()> {
        Ok(self.restart(id_or_name, signal, timeout).await?)
    }

    async fn container_kill(&self, id_or_name: &str, signal: Option<String>) -> ApiResult<()> {
        Ok(self.kill(id_or_name, signal).await?)
    }

    async fn container_pause(&self, id_or_name: &str) -> ApiResult<()> {
        Ok(self.pause(id_or_name, true).await?)
    }

    async fn container_unpause(&self, id_or_name: &str) -> ApiResult<()> {
        Ok(self.pause(id_or_name, false).await?)
    }

    async fn container_remove(
        &self,
        id_or_name: &str,
        force: bool,
        volumes: bool,
    ) -> ApiResult<()> {
        Ok(self.remove(id_or_name, force, volumes).await?)
    }

    async fn container_rename(&self, id_or_name: &str, new_name: &str) -> ApiResult<()> {
        Ok(self.rename(id_or_name, new_name).await?)
    }

    async fn container_update(
        &self,
        id_or_name: &str,
        body: ContainerUpdateBody,
    ) -> ApiResult<ContainerUpdateResponse> {
        let warnings = self.update_container(id_or_name, body).await?;
        Ok(ContainerUpdateResponse {
            warnings: Some(warnings),
        })
    }

    async fn container_wait(
        &self,
        id_or_name: &str,
        condition: WaitCondition,
    ) -> ApiResult<BoxFuture<'static, ApiResult<i64>>> {
        let fut = self.wait(id_or_name, condition)?;
        Ok(fut.map(|r| r.map_err(Into::into)).boxed())
    }

    async fn container_top(
        &self,
        id_or_name: &str,
        ps_args: Option<String>,
    ) -> ApiResult<ContainerTopResponse> {
        Ok(self.top(id_or_name, ps_args).await?)
    }

    async fn container_stats(
        &self,
        id_or_name: &str,
        stream: bool,
        one_shot: bool,
    ) -> ApiResult<BoxStream<ContainerStatsResponse>> {
        Ok(self.stats(id_or_name, stream, one_shot).await?)
    }

    async fn container_logs(&self, id_or_name: &str, opts: LogsOptions) -> ApiResult<LogsStream> {
        Ok(self.logs(id_or_name, opts)?)
    }

    async fn container_attach(
        &self,
        id_or_name: &str,
        opts: AttachOptions,
    ) -> ApiResult<AttachStreams> {
        Ok(self.attach(id_or_name, opts).await?)
    }

    async fn container_resize(&self, id_or_name: &str, height: u16, width: u16) -> ApiResult<()> {
        Ok(self.resize(id_or_name, height, width).await?)
    }

    async fn container_archive_get(
        &self,
        id_or_name: &str,
        path: &str,
    ) -> ApiResult<(PathStat, BoxStream<std::io::Result<Bytes>>)> {
        Ok(self.archive_get(id_or_name, path).await?)
    }

    async fn container_archive_stat(&self, id_or_name: &str, path: &str) -> ApiResult<PathStat> {
        Ok(self.archive_stat(id_or_name, path).await?)
    }

    async fn container_archive_put(
        &self,
        id_or_name: &str,
        path: &str,
        no_overwrite_dir_non_dir: bool,
        copy_uid_gid: bool,
        body: BoxStream<std::io::Result<Bytes>>,
    ) -> ApiResult<()> {
        Ok(self
            .archive_put(
                id_or_name,
                path,
                no_overwrite_dir_non_dir,
                copy_uid_gid,
                body,
            )
            .await?)
    }

    async fn container_prune(&self, filters: Filters) -> ApiResult<ContainerPruneResponse> {
        Ok(self.prune(&filters).await?)
    }

    async fn exec_create(&self, id_or_name: &str, config: ExecConfig) -> ApiResult<IdResponse> {
        Ok(Engine::exec_new(self, id_or_name, config)?)
    }

    async fn exec_start(
        &self,
        exec_id: &str,
        config: ExecStartConfig,
    ) -> ApiResult<Option<AttachStreams>> {
        Ok(Engine::exec_run(self, exec_id, config).await?)
    }

    async fn exec_resize(&self, exec_id: &str, height: u16, width: u16) -> ApiResult<()> {
        Ok(Engine::exec_resize_tty(self, exec_id, height, width).await?)
    }

    async fn exec_inspect(&self, exec_id: &str) -> ApiResult<ExecInspectResponse> {
        Ok(Engine::exec_view(self, exec_id)?)
    }
}

impl Engine {
    /// `container prune`: stopped containers matching `until`/`label`.
    pub(crate) async fn prune(
        &self,
        filters: &Filters,
    ) -> crate::error::Result<ContainerPruneResponse> {
        let mut until: Option<chrono::DateTime<chrono::Utc>> = None;
        for (k, v) in filters {
            match k.as_str() {
                "until" => {
                    let s = v.first().cloned().unwrap_or_default();
                    until = Some(parse_until(&s).ok_or_else(|| {
                        crate::EngineError::Invalid(format!("invalid filter 'until={s}'"))
                    })?);
                }
                "label" | "label!" => {}
                other => {
                    return Err(crate::EngineError::Invalid(format!(
                        "invalid filter '{other}'"
                    )))
                }
            }
        }
        let candidates: Vec<_> = self.ctrs.lock().values().cloned().collect();
        let mut deleted = Vec::new();
        let mut reclaimed = 0i64;
        for c in candidates {
            let rec = c.rec();
            if !matches!(
                rec.state.status,
                Status::Exited | Status::Created | Status::Dead
            ) {
                continue;
            }
            if until.is_some_and(|u| rec.created >= u) {
                continue;
            }
            let labels = rec.config.labels.clone().unwrap_or_default();
            if !filters
                .get("label")
                .is_none_or(|ls| ls.iter().all(|l| crate::views::label_match(&labels, l)))
            {
                continue;
            }
            if filters
                .get("label!")
                .is_some_and(|ls| ls.iter().any(|l| crate::views::label_match(&labels, l)))
            {
                continue;
            }
            let size = self
                .summary_view(&rec, true, chrono::Utc::now())
                .size_rw
                .unwrap_or(0);
            let _g = c.op.lock().await;
            if c.status().is_live() || c.wait_tx.borrow().removed {
                continue;
            }
            match self.remove_locked(&c, false).await {
                Ok(()) => {
                    deleted.push(rec.id.clone());
                    reclaimed += size;
                }
                Err(e) => tracing::warn!(container = %rec.id, error = %e, "prune"),
            }
        }
        Ok(ContainerPruneResponse {
            containers_deleted: Some(deleted),
            space_reclaimed: Some(reclaimed),
        })
    }
}

/// `until`: unix seconds, RFC 3339, or a Go duration ("24h") ago.
pub fn parse_until(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(n) = s.parse::<f64>() {
        return chrono::DateTime::from_timestamp(n as i64, 0);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let d = humantime::parse_duration(s).ok()?;
    Some(chrono::Utc::now() - chrono::Duration::from_std(d).ok()?)
}

#[async_trait]
impl VolumeBackend for Engine {
    async fn volume_create(&self, req: VolumeCreateRequest) -> ApiResult<Volume> {
        Ok(Engine::vol_create(self, req).await?)
    }
    async fn volume_list(&self, filters: Filters) -> ApiResult<VolumeListResponse> {
        Ok(Engine::vol_list(self, &filters)?)
    }
    async fn volume_inspect(&self, name: &str) -> ApiResult<Volume> {
        Ok(Engine::vol_inspect(self, name)?)
    }
    async fn volume_remove(&self, name: &str, force: bool) -> ApiResult<()> {
        Ok(Engine::vol_remove(self, name, force).await?)
    }
    async fn volume_prune(&self, filters: Filters) -> ApiResult<VolumePruneResponse> {
        Ok(Engine::vol_prune(self, &filters).await?)
    }
}

#[async_trait]
impl SystemBackend for Engine {
    async fn version(&self) -> ApiResult<SystemVersion> {
        Ok(Engine::version_view(self))
    }
    async fn info(&self) -> ApiResult<SystemInfo> {
        Ok(Engine::info_view(self))
    }
    async fn system_df(&self) -> ApiResult<SystemDataUsageResponse> {
        Ok(self.df())
    }
    async fn events(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        filters: Filters,
    ) -> ApiResult<BoxStream<EventMessage>> {
        Ok(self.events.subscribe(since, until, filters))
    }
}

impl ImageUsers for Engine {
    fn images_in_use(&self) -> HashSet<String> {
        self.image_ids_in_use()
    }
}
