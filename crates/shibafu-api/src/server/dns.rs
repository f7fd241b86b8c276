//! shibafu's service-discovery and DNS diagnostic routes
//! (`/shibafu/services`, `/shibafu/dns/trace`); the `/vX.Y` prefix is
//! stripped before routing, so both spellings reach them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::error::{json_response, HttpResult};
use super::query::{Query, QueryError};
use crate::backend::{Backends, DnsTraceQuery};

pub(crate) fn routes() -> Router<Backends> {
    Router::new()
        .route("/shibafu/services", get(service_list))
        .route("/shibafu/services/{name}", get(service_inspect))
        .route("/shibafu/dns/trace", get(trace))
}

async fn service_list(State(b): State<Backends>, q: Query) -> HttpResult {
    let network = q.non_empty("network").map(str::to_string);
    Ok(json_response(
        StatusCode::OK,
        &b.dns.service_list(network).await?,
    ))
}

async fn service_inspect(State(b): State<Backends>, Path(name): Path<String>) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.dns.service_inspect(&name).await?,
    ))
}

async fn trace(State(b): State<Backends>, q: Query) -> HttpResult {
    let name = q
        .non_empty("name")
        .ok_or_else(|| QueryError::Missing("name".into()))?
        .to_string();
    let query = DnsTraceQuery {
        name,
        qtype: q.non_empty("type").map(str::to_string),
        from: q.non_empty("from").map(str::to_string),
        network: q.non_empty("network").map(str::to_string),
    };
    Ok(json_response(
        StatusCode::OK,
        &b.dns.dns_trace(query).await?,
    ))
}
