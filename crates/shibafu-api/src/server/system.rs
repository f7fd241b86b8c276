//! `/_ping`, `/version`, `/info`, `/system/df`, `/events`, `/auth`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt;

use super::error::{json_response, parse_json, HttpResult, JSON};
use super::query::Query;
use super::{API_VERSION, MIN_API_VERSION};
use crate::backend::{ApiError, Backends, RegistryAuth};
use bollard_stubs::models::{SystemVersion, SystemVersionComponents};

/// Every docker CLI command starts with `HEAD /_ping` and reads these
/// headers; a HEAD reply has no body.
pub(crate) async fn ping(method: Method) -> Response {
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from("OK")
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    if method == Method::HEAD {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    resp
}

/// The API versions are the HTTP layer's to state, whatever the backend says.
pub(crate) async fn version(State(b): State<Backends>) -> HttpResult {
    let mut v = b.system.version().await?;
    v.api_version = Some(API_VERSION.to_string());
    v.min_api_version = Some(MIN_API_VERSION.to_string());
    if v.os.is_none() {
        v.os = Some("linux".into());
    }
    fill_engine_component(&mut v);
    Ok(json_response(StatusCode::OK, &v))
}

pub(crate) async fn info(State(b): State<Backends>) -> HttpResult {
    Ok(json_response(StatusCode::OK, &b.system.info().await?))
}

/// `POST /auth` (`docker login`): the body is Docker's `AuthConfig`; the
/// image store checks it against the registry. 200 `{"Status":"Login
/// Succeeded"}` (plus `IdentityToken` when the registry issued one).
pub(crate) async fn auth(State(b): State<Backends>, body: bytes::Bytes) -> HttpResult {
    let auth: RegistryAuth = parse_json(&body, "login")?;
    let mut resp = b.images.registry_login(auth).await?;
    if resp.status.is_empty() {
        resp.status = "Login Succeeded".into();
    }
    if resp.identity_token.as_deref() == Some("") {
        resp.identity_token = None;
    }
    Ok(json_response(StatusCode::OK, &resp))
}

/// Adds the pre-1.22 `status`/`id`/`from` fields that older SDK code still
/// reads from container and image events (dockerd sends them too).
fn legacy_event_fields(v: &mut serde_json::Value) {
    use serde_json::Value;
    let Some(m) = v.as_object_mut() else { return };
    if !matches!(
        m.get("Type").and_then(Value::as_str),
        Some("container" | "image")
    ) {
        return;
    }
    let action = m.get("Action").cloned();
    let actor = m.get("Actor").cloned().unwrap_or(Value::Null);
    if let Some(a) = action {
        m.insert("status".into(), a);
    }
    if let Some(id) = actor.get("ID") {
        m.insert("id".into(), id.clone());
    }
    if let Some(from) = actor.get("Attributes").and_then(|a| a.get("image")) {
        m.insert("from".into(), from.clone());
    }
}

/// API 1.52's `*Usage` objects plus the pre-1.52 fields (`LayersSize`,
/// `Images`, `Containers`, `Volumes`, `BuildCache`) that docker CLI 28 and
/// docker-py read for `system df`.
pub(crate) async fn df(State(b): State<Backends>) -> HttpResult {
    let usage = b.system.system_df().await?;
    let images = b
        .images
        .image_list(false, Default::default(), false)
        .await?;
    let mut v = serde_json::to_value(&usage).map_err(|e| ApiError::Internal(e.to_string()))?;
    legacy_df(&mut v, images);
    Ok(json_response(StatusCode::OK, &v))
}

fn legacy_df(v: &mut serde_json::Value, images: Vec<bollard_stubs::models::ImageSummary>) {
    use serde_json::{json, Value};
    let items = |key: &str| v.get(key).and_then(|u| u.get("Items")).cloned();
    let containers = items("ContainerUsage").unwrap_or_else(|| json!([]));
    let volumes = items("VolumeUsage").unwrap_or_else(|| json!([]));
    let layers_size = v
        .get("ImageUsage")
        .and_then(|u| u.get("TotalSize"))
        .cloned()
        .unwrap_or(json!(0));
    let users = |id: &str| {
        containers.as_array().map_or(0, |cs| {
            cs.iter()
                .filter(|c| c.get("ImageID").and_then(Value::as_str) == Some(id))
                .count() as i64
        })
    };
    let images: Vec<Value> = images
        .into_iter()
        .map(|mut i| {
            i.containers = users(&i.id);
            serde_json::to_value(i).unwrap_or(Value::Null)
        })
        .collect();
    if let Value::Object(m) = v {
        m.insert("LayersSize".into(), layers_size);
        m.insert("Images".into(), Value::Array(images));
        m.insert("Containers".into(), containers);
        m.insert("Volumes".into(), volumes);
        m.insert("BuildCache".into(), json!([]));
    }
}

/// JSON lines, one event each, flushed as they happen; ends at `until`.
pub(crate) async fn events(State(b): State<Backends>, q: Query) -> HttpResult {
    let since = q.unix_time("since")?.map(|t| t.floor() as i64);
    let until = q.unix_time("until")?.map(|t| t.floor() as i64);
    let filters = q.filters()?;
    let stream = b.system.events(since, until, filters).await?;
    let body = stream.map(|ev| {
        let mut v = serde_json::to_value(&ev).map_err(std::io::Error::other)?;
        legacy_event_fields(&mut v);
        let mut line = serde_json::to_vec(&v).map_err(std::io::Error::other)?;
        line.push(b'\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(line))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
    Ok(resp)
}

/// `docker version` prints the server from `Components[Name=Engine].Details`
/// (ApiVersion, MinAPIVersion, GitCommit, GoVersion, Os, Arch, ...), not the
/// top-level fields: mirror them there unless the backend already did.
fn fill_engine_component(v: &mut SystemVersion) {
    let version = v.version.clone().unwrap_or_default();
    let components = v.components.get_or_insert_with(Vec::new);
    if !components.iter().any(|c| c.name == "Engine") {
        components.insert(
            0,
            SystemVersionComponents {
                name: "Engine".into(),
                version,
                details: None,
            },
        );
    }
    let engine = components
        .iter_mut()
        .find(|c| c.name == "Engine")
        .expect("inserted above");
    let details = engine.details.get_or_insert_with(Default::default);
    let top = [
        ("ApiVersion", v.api_version.clone()),
        ("MinAPIVersion", v.min_api_version.clone()),
        ("GitCommit", v.git_commit.clone()),
        ("GoVersion", v.go_version.clone()),
        ("Os", v.os.clone()),
        ("Arch", v.arch.clone()),
        ("KernelVersion", v.kernel_version.clone()),
        ("BuildTime", v.build_time.clone()),
        (
            "Experimental",
            Some(v.experimental.unwrap_or(false).to_string()),
        ),
    ];
    for (key, value) in top {
        if let Some(value) = value {
            details.entry(key.to_string()).or_insert(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_events_get_legacy_fields() {
        let mut v = json!({"Type":"container","Action":"start",
            "Actor":{"ID":"abc","Attributes":{"image":"busybox","name":"web"}}});
        legacy_event_fields(&mut v);
        assert_eq!(v["status"], "start");
        assert_eq!(v["id"], "abc");
        assert_eq!(v["from"], "busybox");
        let mut n = json!({"Type":"volume","Action":"create","Actor":{"ID":"v"}});
        legacy_event_fields(&mut n);
        assert!(n.get("status").is_none());
    }

    #[test]
    fn df_has_the_pre_1_52_fields() {
        let mut v = json!({"ImageUsage":{"TotalSize":100},
            "ContainerUsage":{"Items":[{"Id":"c1","ImageID":"sha256:i1"}]},
            "VolumeUsage":{"Items":[]}});
        let img = bollard_stubs::models::ImageSummary {
            id: "sha256:i1".into(),
            ..Default::default()
        };
        legacy_df(&mut v, vec![img]);
        assert_eq!(v["LayersSize"], 100);
        assert_eq!(v["Images"][0]["Containers"], 1);
        assert_eq!(v["Containers"][0]["Id"], "c1");
        assert_eq!(v["BuildCache"], json!([]));
    }
}
