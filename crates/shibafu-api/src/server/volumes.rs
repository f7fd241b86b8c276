//! `/volumes` routes.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use bollard_stubs::models::VolumeCreateRequest;

use super::error::{empty, json_response, parse_json_or_default, HttpResult};
use super::query::Query;
use crate::backend::Backends;

pub(crate) fn routes() -> Router<Backends> {
    Router::new()
        .route("/volumes", get(list))
        .route(
            "/volumes/create",
            post(create).get(inspect_create).delete(remove_create),
        )
        .route(
            "/volumes/prune",
            post(prune).get(inspect_prune).delete(remove_prune),
        )
        .route("/volumes/{name}", get(inspect).delete(remove))
}

async fn create(State(b): State<Backends>, body: Bytes) -> HttpResult {
    let req: VolumeCreateRequest = parse_json_or_default(&body, "volume config")?;
    Ok(json_response(
        StatusCode::CREATED,
        &b.volumes.volume_create(req).await?,
    ))
}

async fn list(State(b): State<Backends>, q: Query) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.volumes.volume_list(q.filters()?).await?,
    ))
}

async fn inspect_by(b: &Backends, name: &str) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.volumes.volume_inspect(name).await?,
    ))
}

async fn remove_by(b: &Backends, name: &str, q: &Query) -> HttpResult {
    b.volumes.volume_remove(name, q.bool("force")?).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn inspect(State(b): State<Backends>, Path(name): Path<String>) -> HttpResult {
    inspect_by(&b, &name).await
}

async fn remove(State(b): State<Backends>, Path(name): Path<String>, q: Query) -> HttpResult {
    remove_by(&b, &name, &q).await
}

// Volumes may be named like the static routes next to `{name}`.
async fn inspect_create(State(b): State<Backends>) -> HttpResult {
    inspect_by(&b, "create").await
}
async fn remove_create(State(b): State<Backends>, q: Query) -> HttpResult {
    remove_by(&b, "create", &q).await
}
async fn inspect_prune(State(b): State<Backends>) -> HttpResult {
    inspect_by(&b, "prune").await
}
async fn remove_prune(State(b): State<Backends>, q: Query) -> HttpResult {
    remove_by(&b, "prune", &q).await
}

async fn prune(State(b): State<Backends>, q: Query) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.volumes.volume_prune(q.filters()?).await?,
    ))
}
