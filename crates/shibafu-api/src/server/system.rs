//! `/_ping`, `/version`, `/info`, `/system/df`, `/events`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt;

use super::error::{json_response, HttpResult, JSON};
use super::query::Query;
use super::{API_VERSION, MIN_API_VERSION};
use crate::backend::Backends;
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

pub(crate) async fn df(State(b): State<Backends>) -> HttpResult {
    Ok(json_response(StatusCode::OK, &b.system.system_df().await?))
}

/// JSON lines, one event each, flushed as they happen; ends at `until`.
pub(crate) async fn events(State(b): State<Backends>, q: Query) -> HttpResult {
    let since = q.unix_time("since")?.map(|t| t.floor() as i64);
    let until = q.unix_time("until")?.map(|t| t.floor() as i64);
    let filters = q.filters()?;
    let stream = b.system.events(since, until, filters).await?;
    let body = stream.map(|ev| {
        let mut line = serde_json::to_vec(&ev).map_err(std::io::Error::other)?;
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
