//! `/images/...` routes. Image names hold `/` and `:`, so everything under
//! `/images/` comes here and the action is split off the end.
//!
//! Pull, push and load answer Docker's JSON message stream: one object per
//! line, `\r\n`-terminated as dockerd writes them, each sent as its own
//! chunk the moment the backend yields it (the docker CLI redraws its bars
//! per message). Headers go out with the first message, as dockerd's
//! write-flusher does, so a failure before it is a plain HTTP error and one
//! after it an in-stream `errorDetail` under 200.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt;

use super::error::{bad_request, empty, json_response, page_not_found, HttpResult, JSON};
use super::query::Query;
use crate::backend::{
    ApiError, Backends, BoxStream, ImportOptions, JsonMessage, PullOptions, PushOptions,
    RegistryAuth,
};

/// Header carrying the client's registry credentials (URL-safe base64 JSON).
pub(crate) const AUTH_HEADER: &str = "X-Registry-Auth";

const TAR: HeaderValue = HeaderValue::from_static("application/x-tar");

pub(crate) async fn dispatch(
    State(b): State<Backends>,
    method: Method,
    Path(rest): Path<String>,
    q: Query,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let rest = rest.trim_start_matches('/');
    match (method, rest) {
        (Method::GET | Method::HEAD, "json") => {
            let list = b
                .images
                .image_list(q.bool("all")?, q.filters()?, q.bool("digests")?)
                .await?;
            Ok(json_response(StatusCode::OK, &list))
        }
        (Method::POST, "create") => create(&b, &q, &headers, body).await,
        (Method::POST, "load") => load(&b, &q, body).await,
        (Method::GET, "get") => {
            let names: Vec<String> = q
                .get_all("names")
                .into_iter()
                .filter(|n| !n.trim().is_empty())
                .map(str::to_string)
                .collect();
            if names.is_empty() {
                return Err(bad_request("missing query parameter \"names\""));
            }
            save(&b, &q, names).await
        }
        (Method::POST, "prune") => Ok(json_response(
            StatusCode::OK,
            &b.images.image_prune(q.filters()?).await?,
        )),
        (Method::DELETE, name) if !name.is_empty() => {
            let deleted = b
                .images
                .image_remove(name, q.bool("force")?, q.bool("noprune")?)
                .await?;
            Ok(json_response(StatusCode::OK, &deleted))
        }
        (method, rest) => match (method, rest.rsplit_once('/')) {
            (Method::GET | Method::HEAD, Some((name, "json"))) if !name.is_empty() => Ok(
                json_response(StatusCode::OK, &b.images.image_inspect(name).await?),
            ),
            (Method::GET | Method::HEAD, Some((name, "history"))) if !name.is_empty() => Ok(
                json_response(StatusCode::OK, &b.images.image_history(name).await?),
            ),
            (Method::GET, Some((name, "get"))) if !name.is_empty() => {
                save(&b, &q, vec![name.to_string()]).await
            }
            (Method::POST, Some((name, "push"))) if !name.is_empty() => {
                push(&b, name, &q, &headers, body).await
            }
            (Method::POST, Some((name, "tag"))) if !name.is_empty() => {
                let repo = q
                    .non_empty("repo")
                    .ok_or_else(|| bad_request("missing query parameter \"repo\""))?;
                b.images.image_tag(name, repo, q.non_empty("tag")).await?;
                Ok(empty(StatusCode::CREATED))
            }
            _ => Ok(page_not_found().await),
        },
    }
}

/// `POST /images/create`: import from the request body (`fromSrc=-`) or
/// pull (`fromImage`).
async fn create(b: &Backends, q: &Query, headers: &HeaderMap, body: Body) -> HttpResult {
    if let Some(src) = q.non_empty("fromSrc") {
        if src != "-" {
            return Err(bad_request(format!(
                "importing from a URL is not supported ({src}): send the tarball as the request body with fromSrc=-"
            )));
        }
        let opts = ImportOptions {
            repo: q.non_empty("repo").map(str::to_string),
            tag: q.non_empty("tag").map(str::to_string),
            changes: q
                .get_all("changes")
                .into_iter()
                .filter(|c| !c.trim().is_empty())
                .map(str::to_string)
                .collect(),
            message: q.non_empty("message").map(str::to_string),
            platform: q.non_empty("platform").map(str::to_string),
        };
        let stream = body
            .into_data_stream()
            .map(|r| r.map_err(std::io::Error::other))
            .boxed();
        let id = b.images.image_import(opts, stream).await?;
        let mut line = serde_json::to_vec(&serde_json::json!({ "status": id }))
            .map_err(|e| ApiError::Internal(format!("encoding import result: {e}")))?;
        line.extend_from_slice(b"\r\n");
        let mut resp = Response::new(Body::from(line));
        resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
        return Ok(resp);
    }
    if let Some(image) = q.non_empty("fromImage") {
        let opts = PullOptions {
            reference: pull_reference(image, q.non_empty("tag")),
            // dockerd pulls every tag when neither `tag` nor the name has one
            // (what `docker pull --all-tags` sends).
            all_tags: q.non_empty("tag").is_none() && !names_tag_or_digest(image),
            platform: q.non_empty("platform").map(str::to_string),
            // Docker ignores undecodable credentials on pull.
            auth: header_auth(headers),
        };
        let stream = b.images.image_pull(opts).await?;
        return message_stream(stream).await;
    }
    Err(bad_request(
        "POST /images/create needs fromSrc=- (import) or fromImage (pull)",
    ))
}

/// Whether a name carries a tag or a digest (`a:1`, `a@sha256:..`, but
/// not the port of `localhost:5000/a`).
fn names_tag_or_digest(image: &str) -> bool {
    image.contains('@')
        || image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// `fromImage` + `tag` as one reference, the name kept as the client
/// qualified it. A `sha256:` tag is a digest (`name@sha256:..`); a tag
/// replaces one already in `fromImage`; no tag leaves `fromImage` as is.
pub(crate) fn pull_reference(image: &str, tag: Option<&str>) -> String {
    let Some(tag) = tag.map(str::trim).filter(|t| !t.is_empty()) else {
        return image.to_string();
    };
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    };
    if tag.contains(':') {
        format!("{name}@{tag}")
    } else {
        format!("{name}:{tag}")
    }
}

/// Decoded `X-Registry-Auth`, `None` when absent or undecodable.
fn header_auth(headers: &HeaderMap) -> Option<RegistryAuth> {
    headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RegistryAuth::from_header)
}

/// `POST /images/{name}/push?tag=`. Credentials come from `X-Registry-Auth`
/// or, for clients older than that header, from a JSON body; neither is
/// required (dockerd 25+ pushes anonymously then).
async fn push(b: &Backends, name: &str, q: &Query, headers: &HeaderMap, body: Body) -> HttpResult {
    refuse_platform(q, "push")?;
    let auth = match header_auth(headers) {
        Some(a) => Some(a),
        None if !headers.contains_key(AUTH_HEADER) => {
            let bytes = axum::body::to_bytes(body, 1 << 20)
                .await
                .map_err(|e| bad_request(format!("reading the request body: {e}")))?;
            let trimmed = bytes.trim_ascii();
            if trimmed.is_empty() || trimmed == b"null" || trimmed == b"{}" {
                None
            } else {
                Some(
                    serde_json::from_slice::<RegistryAuth>(trimmed).map_err(|e| {
                        bad_request(format!("bad parameters and missing X-Registry-Auth: {e}"))
                    })?,
                )
            }
        }
        None => None,
    };
    let opts = PushOptions {
        name: name.to_string(),
        tag: q.non_empty("tag").map(str::to_string),
        auth,
    };
    let stream = b.images.image_push(opts).await?;
    message_stream(stream).await
}

/// shibafu keeps one platform per image (as dockerd's classic store), so a
/// `platform` for push, save or load could only be ignored: refused instead,
/// naming why.
fn refuse_platform(q: &Query, what: &str) -> Result<(), ApiError> {
    match q.non_empty("platform") {
        Some(p) => Err(ApiError::InvalidArgument(format!(
            "{what} of a chosen platform ({p}) is not supported: shibafu keeps one platform per image; {what} without --platform"
        ))),
        None => Ok(()),
    }
}

/// `GET /images/get` and `/images/{name}/get`: the archive as it is written.
async fn save(b: &Backends, q: &Query, names: Vec<String>) -> HttpResult {
    refuse_platform(q, "save")?;
    let stream = b.images.image_save(names).await?;
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, TAR);
    Ok(resp)
}

/// `POST /images/load?quiet=`. dockerd answers 200 whatever happens and
/// reports failures in-stream (the docker CLI prints them without the
/// "Error response from daemon" prefix); so does this.
async fn load(b: &Backends, q: &Query, body: Body) -> HttpResult {
    refuse_platform(q, "load")?;
    let quiet = q.bool("quiet")?;
    let input: BoxStream<std::io::Result<bytes::Bytes>> = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other))
        .boxed();
    let stream = match b.images.image_load(input, quiet).await {
        Ok(s) => s,
        Err(e) => futures::stream::once(async move { JsonMessage::error(e.to_string()) }).boxed(),
    };
    let body = stream.map(|m| encode_line(&m));
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
    Ok(resp)
}

/// One message as a dockerd line: compact JSON + `\r\n`.
fn encode_line(m: &JsonMessage) -> std::io::Result<bytes::Bytes> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.extend_from_slice(b"\r\n");
    Ok(bytes::Bytes::from(line))
}

/// Streams messages as JSON lines. The first message is awaited before the
/// headers go out: when it is already an error, nothing was sent yet and
/// the client gets a plain HTTP error (dockerd's `!output.Flushed()` case).
async fn message_stream(mut stream: BoxStream<JsonMessage>) -> HttpResult {
    let first = stream.next().await;
    if let Some(m) = &first {
        if m.status.is_none() && m.stream.is_none() && m.aux.is_none() {
            if let Some(e) = &m.error_detail {
                return Err(error_for(e.code, &e.message));
            }
            if let Some(e) = &m.error {
                return Err(error_for(None, e));
            }
        }
    }
    let body = futures::stream::iter(first)
        .chain(stream)
        .map(|m| encode_line(&m));
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
    Ok(resp)
}

/// An in-stream error turned into an HTTP one: its code when that is an
/// HTTP error status, else 500.
fn error_for(code: Option<i64>, message: &str) -> ApiError {
    let message = message.to_string();
    match code {
        Some(401) => ApiError::Unauthorized(message),
        Some(404) => ApiError::NotFound(message),
        Some(409) => ApiError::Conflict(message),
        Some(c) if (400..500).contains(&c) => ApiError::InvalidArgument(message),
        _ => ApiError::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::pull_reference;

    #[test]
    fn pull_reference_joins_name_tag_and_digest() {
        assert_eq!(
            pull_reference("docker.io/library/busybox", Some("latest")),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            pull_reference("localhost:5000/a/b", Some("v1")),
            "localhost:5000/a/b:v1"
        );
        assert_eq!(
            pull_reference("busybox", Some("sha256:abcd")),
            "busybox@sha256:abcd"
        );
        assert_eq!(pull_reference("busybox:1.36", None), "busybox:1.36");
        assert_eq!(pull_reference("busybox:1.36", Some("2")), "busybox:2");
        assert_eq!(
            pull_reference("localhost:5000/x@sha256:ab", Some("")),
            "localhost:5000/x@sha256:ab"
        );
        assert_eq!(pull_reference("localhost:5000/x", None), "localhost:5000/x");
    }
}
