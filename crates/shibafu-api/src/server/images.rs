//! `/images/...` routes. Image names hold `/` and `:`, so everything under
//! `/images/` comes here and the action is split off the end.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt;

use super::error::{bad_request, empty, json_response, page_not_found, HttpResult, JSON};
use super::query::Query;
use crate::backend::{ApiError, Backends, ImportOptions};

pub(crate) async fn dispatch(
    State(b): State<Backends>,
    method: Method,
    Path(rest): Path<String>,
    q: Query,
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
        (Method::POST, "create") => create(&b, &q, body).await,
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

/// `POST /images/create`: import from the request body (`fromSrc=-`). Pulls
/// (`fromImage`) get a 404 that says how to get the image instead; the
/// docker CLI prints it as is.
async fn create(b: &Backends, q: &Query, body: Body) -> HttpResult {
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
        let name = match q.non_empty("tag") {
            Some(tag) if tag.starts_with("sha256:") => format!("{image}@{tag}"),
            Some(tag) => format!("{image}:{tag}"),
            None if image.contains('@')
                || image.rsplit('/').next().is_some_and(|l| l.contains(':')) =>
            {
                image.to_string()
            }
            None => format!("{image}:latest"),
        };
        // The CLI qualifies names (docker.io/library/busybox): show them as typed.
        let name = name.strip_prefix("docker.io/").unwrap_or(&name);
        let name = name.strip_prefix("library/").unwrap_or(name);
        return Err(ApiError::NotFound(format!(
            "No such image: {name} (pulling from registries is not available in this build of shibafu; \
             import the image from a root filesystem tarball instead: `shibafu import ROOTFS.tar {name}` \
             or `docker import ROOTFS.tar {name}`)"
        )));
    }
    Err(bad_request(
        "POST /images/create needs fromSrc=- (import) or fromImage (pull)",
    ))
}
