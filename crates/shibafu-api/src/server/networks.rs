//! `/networks` routes (Docker's) and shibafu's own network routes
//! (`/shibafu/networks/policies`, `/shibafu/networks/reload`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use bollard_stubs::models::{
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};

use super::error::{empty, json_response, parse_json, HttpResult};
use super::query::Query;
use crate::backend::{Backends, NetworkPolicy};

pub(crate) fn routes() -> Router<Backends> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create).get(inspect_create))
        .route("/networks/prune", post(prune).get(inspect_prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .route(
            "/shibafu/networks/policies",
            get(policy_list).post(policy_create),
        )
        .route(
            "/shibafu/networks/policies/{name}",
            get(policy_inspect).delete(policy_remove),
        )
        .route("/shibafu/networks/reload", post(reload))
}

async fn list(State(b): State<Backends>, q: Query) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.networks.network_list(q.filters()?).await?,
    ))
}

async fn inspect(State(b): State<Backends>, Path(id): Path<String>) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.networks.network_inspect(&id).await?,
    ))
}

// Networks may be named like the static routes next to `{id}`.
async fn inspect_create(State(b): State<Backends>) -> HttpResult {
    inspect(State(b), Path("create".into())).await
}
async fn inspect_prune(State(b): State<Backends>) -> HttpResult {
    inspect(State(b), Path("prune".into())).await
}

async fn create(State(b): State<Backends>, body: Bytes) -> HttpResult {
    let req: NetworkCreateRequest = parse_json(&body, "network config")?;
    Ok(json_response(
        StatusCode::CREATED,
        &b.networks.network_create(req).await?,
    ))
}

async fn remove(State(b): State<Backends>, Path(id): Path<String>) -> HttpResult {
    b.networks.network_remove(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn connect(State(b): State<Backends>, Path(id): Path<String>, body: Bytes) -> HttpResult {
    let req: NetworkConnectRequest = parse_json(&body, "network connect config")?;
    b.networks.network_connect(&id, req).await?;
    Ok(empty(StatusCode::OK))
}

async fn disconnect(State(b): State<Backends>, Path(id): Path<String>, body: Bytes) -> HttpResult {
    let req: NetworkDisconnectRequest = parse_json(&body, "network disconnect config")?;
    b.networks.network_disconnect(&id, req).await?;
    Ok(empty(StatusCode::OK))
}

async fn prune(State(b): State<Backends>, q: Query) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.networks.network_prune(q.filters()?).await?,
    ))
}

async fn policy_create(State(b): State<Backends>, body: Bytes) -> HttpResult {
    let p: NetworkPolicy = parse_json(&body, "network policy")?;
    Ok(json_response(
        StatusCode::CREATED,
        &b.networks.policy_create(p).await?,
    ))
}

async fn policy_list(State(b): State<Backends>, q: Query) -> HttpResult {
    let network = q.non_empty("network").map(str::to_string);
    Ok(json_response(
        StatusCode::OK,
        &b.networks.policy_list(network).await?,
    ))
}

async fn policy_inspect(State(b): State<Backends>, Path(name): Path<String>) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.networks.policy_inspect(&name).await?,
    ))
}

async fn policy_remove(State(b): State<Backends>, Path(name): Path<String>) -> HttpResult {
    b.networks.policy_remove(&name).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn reload(State(b): State<Backends>) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.networks.network_reload().await?,
    ))
}
