//! [`shibafu_api::ImageBackend`] for [`ImageStore`]: list, inspect,
//! history, tag, rmi, prune and import, with Docker's payloads and errors.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bollard_stubs::models::AuthResponse;
use bollard_stubs::models::{
    DriverData, ImageConfig, ImageDeleteResponseItem, ImageHistoryResponseItem, ImageInspect,
    ImageInspectMetadata, ImageInspectRootFs, ImagePruneResponse, ImageSummary,
};
use futures::StreamExt;
use shibafu_api::{
    ApiError, ApiResult, BoxStream, Filters, ImageBackend, ImportOptions, JsonMessage, PullOptions,
    PushOptions, RegistryAuth,
};

use crate::db::Op;
use crate::filters::{self, FilterError};
use crate::import::{bad_ref, channel, prepare};
use crate::{reference, unix_of, Image, ImageStore, Inner, State, StoreError};

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn filter_err(e: FilterError) -> ApiError {
    ApiError::InvalidArgument(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("image store task failed: {e}"))),
    }
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

fn labels_of(img: &Image) -> HashMap<String, String> {
    img.config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
}

fn created_unix(img: &Image) -> i64 {
    unix_of(img.config.created().as_deref())
}

impl Inner {
    fn summary(&self, st: &State, img: &Image) -> ImageSummary {
        ImageSummary {
            id: format!("sha256:{}", img.rec.id),
            parent_id: String::new(),
            repo_tags: st.tags_of(&img.rec.id),
            repo_digests: img.rec.repo_digests.clone(),
            created: created_unix(img),
            size: img.rec.size as i64,
            shared_size: -1,
            labels: labels_of(img),
            containers: -1,
            manifests: None,
            descriptor: None,
        }
    }

    fn inspect(&self, st: &State, img: &Image) -> ImageInspect {
        let c = img.config.config().clone().unwrap_or_default();
        let mut data = HashMap::new();
        let diffs: Vec<String> = img
            .rec
            .layers
            .iter()
            .map(|ch| self.layer_diff(ch).display().to_string())
            .collect();
        if let Some((top, lower)) = diffs.split_last() {
            data.insert("UpperDir".to_string(), top.clone());
            if !lower.is_empty() {
                let highest_first: Vec<&str> = lower.iter().rev().map(String::as_str).collect();
                data.insert("LowerDir".to_string(), highest_first.join(":"));
            }
        }
        let comment = img
            .config
            .history()
            .as_ref()
            .and_then(|h| h.last())
            .and_then(|h| h.comment().clone())
            .unwrap_or_default();
        ImageInspect {
            id: Some(format!("sha256:{}", img.rec.id)),
            repo_tags: Some(st.tags_of(&img.rec.id)),
            repo_digests: Some(img.rec.repo_digests.clone()),
            comment: Some(comment),
            created: img.config.created().clone(),
            author: Some(img.config.author().clone().unwrap_or_default()),
            config: Some(ImageConfig {
                user: Some(c.user().clone().unwrap_or_default()),
                exposed_ports: c.exposed_ports().clone(),
                env: c.env().clone(),
                cmd: c.cmd().clone(),
                volumes: c.volumes().clone(),
                working_dir: Some(c.working_dir().clone().unwrap_or_default()),
                entrypoint: c.entrypoint().clone(),
                labels: c.labels().clone(),
                stop_signal: c.stop_signal().clone(),
                ..Default::default()
            }),
            architecture: Some(img.config.architecture().to_string()),
            variant: img.config.variant().clone(),
            os: Some(img.config.os().to_string()),
            size: Some(img.rec.size as i64),
            graph_driver: Some(DriverData {
                name: "overlay2".to_string(),
                data,
            }),
            root_fs: Some(ImageInspectRootFs {
                typ: "layers".to_string(),
                layers: Some(img.config.rootfs().diff_ids().clone()),
            }),
            metadata: Some(ImageInspectMetadata {
                last_tag_time: Some(
                    img.rec
                        .last_tag_time
                        .clone()
                        .unwrap_or_else(|| ZERO_TIME.to_string()),
                ),
            }),
            ..Default::default()
        }
    }

    fn history(&self, st: &State, img: &Image) -> Vec<ImageHistoryResponseItem> {
        let mut sizes = img
            .rec
            .layers
            .iter()
            .map(|c| st.layers.get(c).map_or(0, |l| l.size as i64));
        let mut items: Vec<ImageHistoryResponseItem> = img
            .config
            .history()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|h| ImageHistoryResponseItem {
                id: "<missing>".to_string(),
                created: unix_of(h.created().as_deref()),
                created_by: h.created_by().clone().unwrap_or_default(),
                tags: Vec::new(),
                size: if h.empty_layer().unwrap_or(false) {
                    0
                } else {
                    sizes.next().unwrap_or(0)
                },
                comment: h.comment().clone().unwrap_or_default(),
            })
            .collect();
        items.reverse();
        if let Some(top) = items.first_mut() {
            top.id = format!("sha256:{}", img.rec.id);
            top.tags = st.tags_of(&img.rec.id);
        }
        items
    }

    fn tag(&self, name: &str, repo: &str, tag: Option<&str>) -> Result<(), StoreError> {
        let target = reference::repo_tag(repo, tag).map_err(bad_ref)?;
        let _w = self.write.lock();
        let (id, mut rec) = {
            let st = self.state.read();
            let f = st.find(name)?;
            (f.id.clone(), st.images[&f.id].rec.clone())
        };
        rec.last_tag_time =
            Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        self.meta.commit(&[
            Op::PutTag(target.clone(), id.clone()),
            Op::PutImage(rec.clone()),
        ])?;
        let mut st = self.state.write();
        st.tags.insert(target, id.clone());
        if let Some(img) = st.images.get_mut(&id) {
            img.rec = rec;
        }
        Ok(())
    }

    fn remove(&self, name: &str, force: bool) -> Result<Vec<ImageDeleteResponseItem>, StoreError> {
        let in_use = self.users_in_use();
        let _w = self.write.lock();
        let (found, tags) = {
            let st = self.state.read();
            let f = st.find(name)?;
            let tags = st.tags_of(&f.id);
            (f, tags)
        };
        let used = in_use.contains(&format!("sha256:{}", found.id));
        let sid = short(&found.id).to_string();
        let in_use_conflict = || {
            StoreError::Conflict(format!(
                "conflict: unable to delete {sid} (must be forced) - image is being used by a container"
            ))
        };
        let untag = |names: &[String]| -> Result<Vec<ImageDeleteResponseItem>, StoreError> {
            let ops: Vec<Op> = names.iter().map(|t| Op::DelTag(t.clone())).collect();
            self.meta.commit(&ops)?;
            let mut st = self.state.write();
            Ok(names
                .iter()
                .map(|t| {
                    st.tags.remove(t);
                    ImageDeleteResponseItem {
                        untagged: Some(t.clone()),
                        deleted: None,
                    }
                })
                .collect())
        };
        match &found.tag {
            Some(t) if tags.len() > 1 => untag(std::slice::from_ref(t)),
            by_tag => {
                if by_tag.is_none() && tags.len() > 1 && !force {
                    return Err(StoreError::Conflict(format!(
                        "conflict: unable to delete {sid} (must be forced) - image is referenced in multiple repositories"
                    )));
                }
                if used {
                    if !force {
                        return Err(in_use_conflict());
                    }
                    // Forced: drop the names, keep the image its containers run on.
                    return untag(&tags);
                }
                let (items, _) = self.delete_images(std::slice::from_ref(&found.id), true)?;
                Ok(items)
            }
        }
    }

    fn prune(&self, filters: &Filters) -> Result<ImagePruneResponse, StoreError> {
        let fe = |e: FilterError| StoreError::InvalidArgument(e.to_string());
        filters::check_keys(filters, &["dangling", "until", "label", "label!"]).map_err(fe)?;
        let dangling_only = filters::dangling(filters).map_err(fe)?.unwrap_or(true);
        let now = chrono::Utc::now().timestamp();
        let until = match filters.get("until").and_then(|v| v.first()) {
            Some(v) => Some(filters::parse_time("until", v, now).map_err(fe)?),
            None => None,
        };
        let in_use = self.users_in_use();
        let _w = self.write.lock();
        let doomed: Vec<String> = {
            let st = self.state.read();
            st.images
                .values()
                .filter(|img| !in_use.contains(&format!("sha256:{}", img.rec.id)))
                .filter(|img| !dangling_only || st.tags_of(&img.rec.id).is_empty())
                .filter(|img| until.is_none_or(|u| created_unix(img) < u))
                .filter(|img| filters::labels_match(filters, &labels_of(img)))
                .map(|img| img.rec.id.clone())
                .collect()
        };
        let (items, freed) = self.delete_images(&doomed, true)?;
        Ok(ImagePruneResponse {
            images_deleted: Some(items),
            space_reclaimed: Some(freed as i64),
        })
    }

    fn list(&self, filters: &Filters) -> Result<Vec<ImageSummary>, ApiError> {
        filters::check_keys(
            filters,
            &["dangling", "reference", "label", "before", "since", "until"],
        )
        .map_err(filter_err)?;
        let dangling = filters::dangling(filters).map_err(filter_err)?;
        let now = chrono::Utc::now().timestamp();
        let until = match filters.get("until").and_then(|v| v.first()) {
            Some(v) => Some(filters::parse_time("until", v, now).map_err(filter_err)?),
            None => None,
        };
        let st = self.state.read();
        let created_of = |key: &str| -> ApiResult<Option<i64>> {
            match filters.get(key).and_then(|v| v.first()) {
                None => Ok(None),
                Some(r) => {
                    let f = st.find(r).map_err(ApiError::from)?;
                    Ok(Some(created_unix(&st.images[&f.id])))
                }
            }
        };
        let before = created_of("before")?;
        let since = created_of("since")?;
        let mut out: Vec<(i64, ImageSummary)> = st
            .images
            .values()
            .filter_map(|img| {
                let s = self.summary(&st, img);
                let ok = dangling.is_none_or(|d| d == s.repo_tags.is_empty())
                    && filters
                        .get("reference")
                        .is_none_or(|p| filters::reference_match(p, &s.repo_tags))
                    && filters::labels_match(filters, &s.labels)
                    && before.is_none_or(|b| s.created < b)
                    && since.is_none_or(|t| s.created > t)
                    && until.is_none_or(|u| s.created < u);
                ok.then_some((s.created, s))
            })
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }
}

#[async_trait]
impl ImageBackend for ImageStore {
    async fn image_import(
        &self,
        opts: ImportOptions,
        mut body: BoxStream<std::io::Result<bytes::Bytes>>,
    ) -> ApiResult<String> {
        let prep = prepare(&opts)?;
        let (tx, reader) = channel();
        let inner = Arc::clone(&self.inner);
        let work = tokio::task::spawn_blocking(move || inner.import(prep, reader));
        let pump = async move {
            while let Some(item) = body.next().await {
                // The receiver is gone when the import failed early: stop.
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        };
        let ((), res) = tokio::join!(pump, work);
        match res {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => Err(ApiError::Internal(format!("image import task failed: {e}"))),
        }
    }

    async fn image_list(
        &self,
        _all: bool,
        filters: Filters,
        _digests: bool,
    ) -> ApiResult<Vec<ImageSummary>> {
        self.inner.list(&filters)
    }

    async fn image_inspect(&self, name: &str) -> ApiResult<ImageInspect> {
        let st = self.inner.state.read();
        let f = st.find(name)?;
        Ok(self.inner.inspect(&st, &st.images[&f.id]))
    }

    async fn image_history(&self, name: &str) -> ApiResult<Vec<ImageHistoryResponseItem>> {
        let st = self.inner.state.read();
        let f = st.find(name)?;
        Ok(self.inner.history(&st, &st.images[&f.id]))
    }

    async fn image_tag(&self, name: &str, repo: &str, tag: Option<&str>) -> ApiResult<()> {
        let inner = Arc::clone(&self.inner);
        let (name, repo, tag) = (name.to_string(), repo.to_string(), tag.map(str::to_string));
        blocking(move || inner.tag(&name, &repo, tag.as_deref())).await
    }

    async fn image_remove(
        &self,
        name: &str,
        force: bool,
        _noprune: bool,
    ) -> ApiResult<Vec<ImageDeleteResponseItem>> {
        let inner = Arc::clone(&self.inner);
        let name = name.to_string();
        blocking(move || inner.remove(&name, force)).await
    }

    async fn image_prune(&self, filters: Filters) -> ApiResult<ImagePruneResponse> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.prune(&filters)).await
    }
    async fn image_pull(&self, opts: PullOptions) -> ApiResult<BoxStream<JsonMessage>> {
        crate::pull::pull(self, opts).await
    }

    async fn image_push(&self, opts: PushOptions) -> ApiResult<BoxStream<JsonMessage>> {
        crate::push::push(self, opts).await
    }

    async fn image_save(
        &self,
        names: Vec<String>,
    ) -> ApiResult<BoxStream<std::io::Result<bytes::Bytes>>> {
        crate::archive::save(self, names).await
    }

    async fn image_load(
        &self,
        body: BoxStream<std::io::Result<bytes::Bytes>>,
        quiet: bool,
    ) -> ApiResult<BoxStream<JsonMessage>> {
        crate::archive::load(self, body, quiet).await
    }

    async fn registry_login(&self, auth: RegistryAuth) -> ApiResult<AuthResponse> {
        crate::pull::login(self, auth).await
    }
}
