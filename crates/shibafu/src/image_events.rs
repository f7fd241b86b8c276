//! Image events (`import`, `tag`, `untag`, `delete`, `pull`, `push`,
//! `load`, `save`) for `docker events`. The image store knows nothing of
//! the engine's event bus, so the daemon wraps it: each successful image
//! change is reported to the engine. Streamed operations report when their
//! stream ends without an error, as dockerd logs them once they completed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bollard_stubs::models::{
    AuthResponse, EventMessageTypeEnum, ImageDeleteResponseItem, ImageHistoryResponseItem,
    ImageInspect, ImagePruneResponse, ImageSummary,
};
use bytes::Bytes;
use futures::StreamExt;
use shibafu_api::{
    ApiResult, BoxStream, Filters, ImageBackend, ImportOptions, JsonMessage, PullOptions,
    PushOptions, RegistryAuth,
};

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
    async fn image_pull(&self, opts: PullOptions) -> ApiResult<BoxStream<JsonMessage>> {
        // dockerd: ID = the familiar tagged reference, name = the repository.
        let (repo, reference) = familiar(&opts.reference);
        let stream = self.inner.image_pull(opts).await?;
        let sink = self.sink.clone();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        Ok(watch(stream, seen, move || async move {
            let st = s2.lock().unwrap_or_else(|p| p.into_inner());
            if !st.failed && st.final_status {
                sink.image_event("pull", &reference, Some(&repo));
            }
        }))
    }

    async fn image_push(&self, opts: PushOptions) -> ApiResult<BoxStream<JsonMessage>> {
        let (repo, _) = familiar(&opts.name);
        let stream = self.inner.image_push(opts).await?;
        let sink = self.sink.clone();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        Ok(watch(stream, seen, move || async move {
            let st = s2.lock().unwrap_or_else(|p| p.into_inner());
            if st.failed {
                return;
            }
            // One event per tag pushed (the aux `{Tag,Digest,Size}` lines).
            for tag in &st.pushed_tags {
                sink.image_event("push", &format!("{repo}:{tag}"), Some(&repo));
            }
        }))
    }

    async fn image_save(&self, names: Vec<String>) -> ApiResult<BoxStream<std::io::Result<Bytes>>> {
        let mut ids = Vec::new();
        for n in &names {
            if let Ok(Some(id)) = self.inner.image_inspect(n).await.map(|i| i.id) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let stream = self.inner.image_save(names).await?;
        let sink = self.sink.clone();
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f2 = failed.clone();
        let tail = futures::stream::once(async move {
            if !f2.load(std::sync::atomic::Ordering::Relaxed) {
                for id in &ids {
                    sink.image_event("save", id, Some(id));
                }
            }
            None
        });
        Ok(stream
            .inspect(move |r| {
                if r.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            })
            .map(Some)
            .chain(tail)
            .filter_map(|x| async move { x })
            .boxed())
    }

    async fn image_load(
        &self,
        body: BoxStream<std::io::Result<Bytes>>,
        quiet: bool,
    ) -> ApiResult<BoxStream<JsonMessage>> {
        let stream = self.inner.image_load(body, quiet).await?;
        let sink = self.sink.clone();
        let inner = self.inner.clone();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        Ok(watch(stream, seen, move || async move {
            let loaded = std::mem::take(&mut s2.lock().unwrap_or_else(|p| p.into_inner()).loaded);
            // Per image loaded, even when the archive failed later (what
            // was loaded stays loaded).
            for name in loaded {
                let id = inner
                    .image_inspect(&name)
                    .await
                    .ok()
                    .and_then(|i| i.id)
                    .unwrap_or_else(|| name.clone());
                sink.image_event("load", &id, Some(&name));
            }
        }))
    }

    async fn registry_login(&self, auth: RegistryAuth) -> ApiResult<AuthResponse> {
        self.inner.registry_login(auth).await
    }
}

/// What a watched message stream showed.
#[derive(Default)]
struct Seen {
    failed: bool,
    /// A pull's closing `Status: ...` line.
    final_status: bool,
    /// Tags of a push's aux lines.
    pushed_tags: Vec<String>,
    /// Names (or IDs) of `Loaded image: X` / `Loaded image ID: X` lines.
    loaded: Vec<String>,
}

impl Seen {
    fn note(&mut self, m: &JsonMessage) {
        if m.error_detail.is_some() || m.error.is_some() {
            self.failed = true;
        }
        if m.status
            .as_deref()
            .is_some_and(|s| s.starts_with("Status: "))
        {
            self.final_status = true;
        }
        if let Some(t) = m
            .aux
            .as_ref()
            .and_then(|a| a.get("Tag"))
            .and_then(|t| t.as_str())
        {
            self.pushed_tags.push(t.to_string());
        }
        if let Some(s) = &m.stream {
            let line = s.trim_end();
            if let Some(n) = line
                .strip_prefix("Loaded image ID: ")
                .or_else(|| line.strip_prefix("Loaded image: "))
            {
                self.loaded.push(n.trim().to_string());
            }
        }
    }
}

/// Passes `stream` through, noting each message in `seen`, and runs
/// `at_end` once the stream is exhausted (not when the client hangs up).
fn watch<F, Fut>(
    stream: BoxStream<JsonMessage>,
    seen: Arc<Mutex<Seen>>,
    at_end: F,
) -> BoxStream<JsonMessage>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tail = futures::stream::once(async move {
        at_end().await;
        None
    });
    stream
        .inspect(move |m| seen.lock().unwrap_or_else(|p| p.into_inner()).note(m))
        .map(Some)
        .chain(tail)
        .filter_map(|x| async move { x })
        .boxed()
}

/// (familiar repository, familiar reference with `latest` by default):
/// `docker.io/library/busybox` → (`busybox`, `busybox:latest`).
fn familiar(reference: &str) -> (String, String) {
    let (name, suffix) = match reference.split_once('@') {
        Some((n, d)) => (n, format!("@{d}")),
        None => {
            let last = reference.rfind('/').map_or(0, |i| i + 1);
            match reference[last..].rfind(':') {
                Some(i) => (
                    &reference[..last + i],
                    format!(":{}", &reference[last + i + 1..]),
                ),
                None => (reference, ":latest".to_string()),
            }
        }
    };
    let name = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .map(|n| match n.strip_prefix("library/") {
            Some(short) if !short.contains('/') => short,
            _ => n,
        })
        .unwrap_or(name);
    (name.to_string(), format!("{name}{suffix}"))
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
            async fn image_pull(&self, _: PullOptions) -> ApiResult<BoxStream<JsonMessage>> {
                unreachable!()
            }
            async fn image_push(&self, _: PushOptions) -> ApiResult<BoxStream<JsonMessage>> {
                unreachable!()
            }
            async fn image_save(
                &self,
                _: Vec<String>,
            ) -> ApiResult<BoxStream<std::io::Result<Bytes>>> {
                unreachable!()
            }
            async fn image_load(
                &self,
                _: BoxStream<std::io::Result<Bytes>>,
                _: bool,
            ) -> ApiResult<BoxStream<JsonMessage>> {
                unreachable!()
            }
            async fn registry_login(&self, _: RegistryAuth) -> ApiResult<AuthResponse> {
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

    #[test]
    fn familiar_names() {
        assert_eq!(
            familiar("docker.io/library/busybox"),
            ("busybox".into(), "busybox:latest".into())
        );
        assert_eq!(
            familiar("localhost:5000/a/b:v1"),
            ("localhost:5000/a/b".into(), "localhost:5000/a/b:v1".into())
        );
        assert_eq!(
            familiar("docker.io/user/app@sha256:ab"),
            ("user/app".into(), "user/app@sha256:ab".into())
        );
    }

    /// A backend whose pull/push/load/save streams are scripted.
    struct Streams {
        pull: Vec<JsonMessage>,
    }

    #[async_trait]
    impl ImageBackend for Streams {
        async fn image_import(
            &self,
            _: ImportOptions,
            _: BoxStream<std::io::Result<Bytes>>,
        ) -> ApiResult<String> {
            unreachable!()
        }
        async fn image_list(&self, _: bool, _: Filters, _: bool) -> ApiResult<Vec<ImageSummary>> {
            unreachable!()
        }
        async fn image_inspect(&self, name: &str) -> ApiResult<ImageInspect> {
            Ok(ImageInspect {
                id: Some(format!("sha256:id-of-{name}")),
                ..Default::default()
            })
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
        async fn image_pull(&self, _: PullOptions) -> ApiResult<BoxStream<JsonMessage>> {
            Ok(futures::stream::iter(self.pull.clone()).boxed())
        }
        async fn image_push(&self, _: PushOptions) -> ApiResult<BoxStream<JsonMessage>> {
            let aux = |t: &str| JsonMessage {
                aux: Some(serde_json::json!({"Tag": t, "Digest": "sha256:d", "Size": 1})),
                ..Default::default()
            };
            Ok(futures::stream::iter(vec![
                JsonMessage::status("The push refers to repository [localhost:5000/app]"),
                aux("v1"),
                aux("v2"),
            ])
            .boxed())
        }
        async fn image_save(&self, _: Vec<String>) -> ApiResult<BoxStream<std::io::Result<Bytes>>> {
            Ok(futures::stream::iter(vec![Ok(Bytes::from_static(b"tar"))]).boxed())
        }
        async fn image_load(
            &self,
            _: BoxStream<std::io::Result<Bytes>>,
            _: bool,
        ) -> ApiResult<BoxStream<JsonMessage>> {
            let line = |s: &str| JsonMessage {
                stream: Some(s.into()),
                ..Default::default()
            };
            Ok(futures::stream::iter(vec![
                line("Loaded image: a:1\n"),
                line("Loaded image ID: sha256:bare\n"),
                JsonMessage::error("unexpected EOF"),
            ])
            .boxed())
        }
        async fn registry_login(&self, _: RegistryAuth) -> ApiResult<AuthResponse> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn streamed_operations_report_when_they_complete() {
        let ok_pull = vec![
            JsonMessage::layer("latest", "Pulling from library/busybox"),
            JsonMessage::status("Digest: sha256:x"),
            JsonMessage::status("Status: Downloaded newer image for busybox:latest"),
        ];
        let sink = Arc::new(Recorder::default());
        let ev = EventingImages {
            inner: Arc::new(Streams { pull: ok_pull }),
            sink: sink.clone(),
        };
        let opts = PullOptions {
            reference: "docker.io/library/busybox".into(),
            ..Default::default()
        };
        let mut s = ev.image_pull(opts.clone()).await.unwrap();
        s.next().await.unwrap();
        assert!(
            sink.0.lock().is_empty(),
            "nothing before the pull completes"
        );
        while s.next().await.is_some() {}
        assert_eq!(*sink.0.lock(), ["pull busybox:latest"]);

        let ev_failed = EventingImages {
            inner: Arc::new(Streams {
                pull: vec![
                    JsonMessage::layer("latest", "Pulling from x"),
                    JsonMessage::error("digest mismatch"),
                ],
            }),
            sink: sink.clone(),
        };
        let s = ev_failed.image_pull(opts).await.unwrap();
        assert_eq!(s.count().await, 2, "messages pass through unchanged");
        assert_eq!(sink.0.lock().len(), 1, "a failed pull is no event");

        sink.0.lock().clear();
        let s = ev
            .image_push(PushOptions {
                name: "localhost:5000/app".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(s.count().await, 3);
        let s = ev
            .image_load(futures::stream::empty().boxed(), true)
            .await
            .unwrap();
        assert_eq!(s.count().await, 3);
        let s = ev.image_save(vec!["a:1".into()]).await.unwrap();
        assert_eq!(s.count().await, 1);
        assert_eq!(
            *sink.0.lock(),
            [
                "push localhost:5000/app:v1",
                "push localhost:5000/app:v2",
                "load sha256:id-of-a:1",
                "load sha256:id-of-sha256:bare",
                "save sha256:id-of-a:1",
            ]
        );
    }
}
