//! `docker exec`: create, start (hijacked), resize, inspect.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use bollard_stubs::models::{ExecConfig, ExecStartConfig};
use http_body_util::BodyExt;

use super::attach;
use super::error::{
    bad_request, empty, json_response, parse_json, parse_json_or_default, HttpResult,
};
use super::query::Query;
use super::wrap::ReqVersion;
use crate::backend::Backends;

/// Bodies of `exec start` are a few bytes of JSON; refuse anything huge.
const MAX_START_BODY: usize = 64 * 1024;

pub(crate) fn routes() -> Router<Backends> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
        .route("/exec/{id}/json", get(inspect))
}

async fn create(State(b): State<Backends>, Path(id): Path<String>, body: Bytes) -> HttpResult {
    let config: ExecConfig = parse_json(&body, "exec config")?;
    if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(bad_request("No exec command specified"));
    }
    let created = b.containers.exec_create(&id, config).await?;
    // bollard's IdResponse serialises as "id"; clients read "Id".
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({ "Id": created.id }),
    ))
}

/// The upgrade handle is taken before the body is read: the CLI sends the
/// JSON config and the upgrade request together.
async fn start(
    State(b): State<Backends>,
    Path(id): Path<String>,
    version: ReqVersion,
    mut req: Request,
) -> HttpResult {
    let upgrade = attach::wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let body = http_body_util::Limited::new(req.into_body(), MAX_START_BODY)
        .collect()
        .await
        .map_err(|e| bad_request(format!("reading exec start body: {e}")))?
        .to_bytes();
    let config: ExecStartConfig = parse_json_or_default(&body, "exec start config")?;
    match b.containers.exec_start(&id, config).await? {
        None => Ok(empty(StatusCode::OK)),
        Some(streams) => {
            let keys = attach::parse_detach_keys(None)?;
            Ok(attach::respond(
                upgrade,
                Body::empty(),
                streams,
                Some(keys),
                version,
            ))
        }
    }
}

async fn resize(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let (h, w) = (q.require_int("h")?, q.require_int("w")?);
    b.containers.exec_resize(&id, h, w).await?;
    Ok(empty(StatusCode::OK))
}

async fn inspect(State(b): State<Backends>, Path(id): Path<String>) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.containers.exec_inspect(&id).await?,
    ))
}
