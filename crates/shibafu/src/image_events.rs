//! Image events (`import`, `tag`, `untag`, `delete`) for `docker events`.
//! The image store knows nothing of the engine's event bus, so the daemon
//! wraps it: each successful image change is reported to the engine.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bollard_stubs::models::{
    EventMessageTypeEnum, ImageDeleteResponseItem, ImageHistoryResponseItem, ImageInspect,
    ImagePruneResponse, ImageSummary,
};
use bytes::Bytes;
use shibafu_api::{ApiResult, BoxStream, Filters, ImageBackend, ImportOptions};

/// Where image events go (the engine in the daemon, a recorder in tests).
pub trait EventSink: Send + Sync + 'static {
    fn image_event(&self, action: &str, id: &str, name: Option<&str>);
}

impl EventSink for shibafu_engine::Engine {
    fn image_event(&self, action: &str, id: &str, name: Option<&str>) {
        let attrs: HashMap<String, String> = name
            .map(|n| HashMap::from([("name".to_string(), n.to_string())]))
            .unwrap_or_default();
        self.emit_event(EventMessageTypeEnum::IMAGE, action, id, attrs);
    }
}

pub struct EventingImages<S: EventSink> {
    pub inner: Arc<dyn ImageBackend>,
    pub sink: Arc<S>,
}

/// `repo` + optional `tag` as Docker names the tagged reference.
fn tagged(repo: &str, tag: Option<&str>) -> String {
    match tag {
        Some(t) if !t.is_empty() => format!("{repo}:{t}"),
        _ if repo
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':')) =>
        {
            repo.to_string()
        }
        _ => format!("{repo}:latest"),
    }
}

#[async_trait]
impl<S: EventSink> ImageBackend for EventingImages<S> {
    async fn image_import(
        &self,
        opts: ImportOptions,
        body: BoxStream<std::io::Result<Bytes>>,
    ) -> ApiResult<String> {
        let name = opts.repo.as_deref().map(|r| tagged(r, opts.tag.as_deref()));
        let id = self.inner.image_import(opts, body).await?;
        self.sink.image_event("import", &id, name.as_deref());
        Ok(id)
    }

    async fn image_list(
        &self,
        all: bool,
        filters: Filters,
        digests: bool,
    ) -> ApiResult<Vec<ImageSummary>> {
        self.inner.image_list(all, filters, digests).await
    }

    async fn image_inspect(&self, name: &str) -> ApiResult<ImageInspect> {
        self.inner.image_inspect(name).await
    }

    async fn image_history(&self, name: &str) -> ApiResult<Vec<ImageHistoryResponseItem>> {
        self.inner.image_history(name).await
    }

    async fn image_tag(&self, name: &str, repo: &str, tag: Option<&str>) -> ApiResult<()> {
        self.inner.image_tag(name, repo, tag).await?;
        let id = self
            .inner
            .image_inspect(name)
            .await
            .ok()
            .and_then(|i| i.id)
            .unwrap_or_else(|| name.to_string());
        self.sink.image_event("tag", &id, Some(&tagged(repo, tag)));
        Ok(())
    }

    async fn image_remove(
        &self,
        name: &str,
        force: bool,
        noprune: bool,
    ) -> ApiResult<Vec<ImageDeleteResponseItem>> {
        let items = self.inner.image_remove(name, force, noprune).await?;
        self.report_deletions(&items);
        Ok(items)
    }

    async fn image_prune(&self, filters: Filters) -> ApiResult<ImagePruneResponse> {
        let resp = self.inner.image_prune(filters).await?;
        if let Some(items) = &resp.images_deleted {
            self.report_deletions(items);
        }
        Ok(resp)
    }
}

impl<S: EventSink> EventingImages<S> {
    /// Docker lists an image's deletion as `Untagged...`, then `Deleted`
    /// for the image, then `Deleted` for each freed layer: only the first
    /// `Deleted` of each such group is an image.
    fn report_deletions(&self, items: &[ImageDeleteResponseItem]) {
        let mut after_deleted = false;
        for item in items {
            if let Some(tag) = &item.untagged {
                self.sink.image_event("untag", tag, Some(tag));
            }
            match &item.deleted {
                Some(id) if !after_deleted => {
                    self.sink.image_event("delete", id, None);
                    after_deleted = true;
                }
                Some(_) => {}
                None => after_deleted = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(parking_lot::Mutex<Vec<String>>);
    impl EventSink for Recorder {
        fn image_event(&self, action: &str, id: &str, _name: Option<&str>) {
            self.0.lock().push(format!("{action} {id}"));
        }
    }

    fn item(untagged: Option<&str>, deleted: Option<&str>) -> ImageDeleteResponseItem {
        ImageDeleteResponseItem {
            untagged: untagged.map(String::from),
            deleted: deleted.map(String::from),
        }
    }

    #[test]
    fn only_images_not_layers_make_delete_events() {
        struct NoImages;
        #[async_trait]
        impl ImageBackend for NoImages {
            async fn image_import(
                &self,
                _: ImportOptions,
                _: BoxStream<std::io::Result<Bytes>>,
            ) -> ApiResult<String> {
                unreachable!()
            }
            async fn image_list(
                &self,
                _: bool,
                _: Filters,
                _: bool,
            ) -> ApiResult<Vec<ImageSummary>> {
                unreachable!()
            }
            async fn image_inspect(&self, _: &str) -> ApiResult<ImageInspect> {
                unreachable!()
            }
            async fn image_history(&self, _: &str) -> ApiResult<Vec<ImageHistoryResponseItem>> {
                unreachable!()
            }
            async fn image_tag(&self, _: &str, _: &str, _: Option<&str>) -> ApiResult<()> {
                unreachable!()
            }
            async fn image_remove(
                &self,
                _: &str,
                _: bool,
                _: bool,
            ) -> ApiResult<Vec<ImageDeleteResponseItem>> {
                unreachable!()
            }
            async fn image_prune(&self, _: Filters) -> ApiResult<ImagePruneResponse> {
                unreachable!()
            }
        }
        let sink = Arc::new(Recorder::default());
        let ev = EventingImages {
            inner: Arc::new(NoImages),
            sink: sink.clone(),
        };
        ev.report_deletions(&[
            item(Some("a:latest"), None),
            item(None, Some("sha256:img1")),
            item(None, Some("sha256:layer1")),
            item(Some("b:latest"), None),
            item(None, Some("sha256:img2")),
        ]);
        assert_eq!(
            *sink.0.lock(),
            vec![
                "untag a:latest",
                "delete sha256:img1",
                "untag b:latest",
                "delete sha256:img2"
            ]
        );
    }

    #[test]
    fn tagged_names_follow_docker() {
        assert_eq!(tagged("busybox", None), "busybox:latest");
        assert_eq!(tagged("busybox", Some("1.0")), "busybox:1.0");
        assert_eq!(tagged("busybox:1.0", None), "busybox:1.0");
        assert_eq!(tagged("localhost:5000/x", None), "localhost:5000/x:latest");
    }
}
