//! `/containers/...` routes.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bollard_stubs::models::{
    ContainerCreateBody, ContainerUpdateBody, ContainerWaitExitError, ContainerWaitResponse,
};
use futures::StreamExt;

use super::attach;
use super::error::{
    bad_request, empty, json_response, parse_json, parse_json_or_default, HttpResult, JSON,
};
use super::query::Query;
use super::wrap::ReqVersion;
use crate::backend::{ApiError, AttachOptions, Backends, LogsOptions, PathStat, WaitCondition};

pub(crate) fn routes() -> Router<Backends> {
    Router::new()
        .route("/containers/create", post(create).delete(remove_create))
        .route("/containers/json", get(list).delete(remove_json))
        .route("/containers/prune", post(prune).delete(remove_prune))
        .route("/containers/{id}", axum::routing::delete(remove))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/update", post(update))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/attach", post(attach_handler))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/logs", get(logs))
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
}

/// Docker's container-name rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`, optional
/// leading `/`).
fn validate_name(name: &str) -> Result<(), ApiError> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let ok = n.len() >= 2
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(bad_request(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

async fn create(State(b): State<Backends>, q: Query, body: Bytes) -> HttpResult {
    let name = q.non_empty("name").map(str::to_string);
    if let Some(n) = &name {
        validate_name(n)?;
    }
    if body.trim_ascii().is_empty() || body.trim_ascii() == b"null" {
        return Err(bad_request(
            "config cannot be empty in order to create a container",
        ));
    }
    let mut config: ContainerCreateBody = parse_json(&body, "container config")?;
    migrate_mac_address(&body, &mut config).map_err(bad_request)?;
    let created = b.containers.container_create(name, config).await?;
    Ok(json_response(StatusCode::CREATED, &created))
}

/// Docker's deprecated top-level `Config.MacAddress` (docker-py's
/// `mac_address=` still sends it; our models no longer carry the field):
/// moved onto the primary network's endpoint, as dockerd does for API
/// >= 1.44, so it is not silently lost.
fn migrate_mac_address(raw: &[u8], cfg: &mut ContainerCreateBody) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct TopLevel {
        #[serde(rename = "MacAddress", default)]
        mac: Option<String>,
    }
    let Some(mac) = serde_json::from_slice::<TopLevel>(raw)
        .ok()
        .and_then(|t| t.mac)
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
    else {
        return Ok(());
    };
    let mode = cfg
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "default".into());
    if mode == "none" || mode == "host" || mode.starts_with("container:") {
        return Err("conflicting options: mac-address and the network mode".into());
    }
    let eps = cfg
        .networking_config
        .get_or_insert_with(Default::default)
        .endpoints_config
        .get_or_insert_with(Default::default);
    let key = if eps.contains_key(&mode) {
        mode
    } else if mode == "default" || mode == "bridge" {
        ["default", "bridge"]
            .into_iter()
            .find(|k| eps.contains_key(*k))
            .unwrap_or("default")
            .to_string()
    } else {
        mode
    };
    let ep = eps.entry(key.clone()).or_default();
    match ep.mac_address.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        None => ep.mac_address = Some(mac),
        Some(m) if m.eq_ignore_ascii_case(&mac) => {}
        Some(m) => {
            return Err(format!(
                "the container's MacAddress {mac} does not match the MacAddress {m} of its endpoint on network {key}"
            ))
        }
    }
    Ok(())
}

async fn list(State(b): State<Backends>, q: Query) -> HttpResult {
    let limit = q
        .int::<i64>("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let list = b
        .containers
        .container_list(q.bool("all")?, limit, q.bool("size")?, q.filters()?)
        .await?;
    Ok(json_response(StatusCode::OK, &list))
}

async fn inspect(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let c = b.containers.container_inspect(&id, q.bool("size")?).await?;
    Ok(json_response(StatusCode::OK, &c))
}

async fn start(State(b): State<Backends>, Path(id): Path<String>) -> HttpResult {
    b.containers.container_start(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn stop(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let signal = q.non_empty("signal").map(str::to_string);
    b.containers
        .container_stop(&id, signal, q.int("t")?)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn restart(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let signal = q.non_empty("signal").map(str::to_string);
    b.containers
        .container_restart(&id, signal, q.int("t")?)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn kill(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let signal = q.non_empty("signal").map(str::to_string);
    b.containers.container_kill(&id, signal).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn pause(State(b): State<Backends>, Path(id): Path<String>) -> HttpResult {
    b.containers.container_pause(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn unpause(State(b): State<Backends>, Path(id): Path<String>) -> HttpResult {
    b.containers.container_unpause(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn rename(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let name = q
        .non_empty("name")
        .ok_or_else(|| bad_request("missing query parameter \"name\""))?;
    validate_name(name)?;
    b.containers.container_rename(&id, name).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn update(State(b): State<Backends>, Path(id): Path<String>, body: Bytes) -> HttpResult {
    let body: ContainerUpdateBody = parse_json_or_default(&body, "container update")?;
    let resp = b.containers.container_update(&id, body).await?;
    Ok(json_response(StatusCode::OK, &resp))
}

async fn resize(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let (h, w) = (q.require_int("h")?, q.require_int("w")?);
    b.containers.container_resize(&id, h, w).await?;
    Ok(empty(StatusCode::OK))
}

async fn remove_by(b: &Backends, id: &str, q: &Query) -> HttpResult {
    if q.bool("link")? {
        return Err(bad_request("container links are not supported"));
    }
    b.containers
        .container_remove(id, q.bool("force")?, q.bool("v")?)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn remove(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    remove_by(&b, &id, &q).await
}

// Containers may be named like the static routes next to `{id}`.
async fn remove_create(State(b): State<Backends>, q: Query) -> HttpResult {
    remove_by(&b, "create", &q).await
}
async fn remove_json(State(b): State<Backends>, q: Query) -> HttpResult {
    remove_by(&b, "json", &q).await
}
async fn remove_prune(State(b): State<Backends>, q: Query) -> HttpResult {
    remove_by(&b, "prune", &q).await
}

fn parse_condition(q: &Query) -> Result<WaitCondition, ApiError> {
    match q.get("condition").unwrap_or("") {
        "" | "not-running" => Ok(WaitCondition::NotRunning),
        "next-exit" => Ok(WaitCondition::NextExit),
        "removed" => Ok(WaitCondition::Removed),
        other => Err(bad_request(format!(
            "invalid condition {other:?}: use not-running, next-exit or removed"
        ))),
    }
}

/// The docker CLI sends `start` only once the headers of this reply have
/// arrived, so they go out at once and the body follows when the condition
/// is met.
async fn wait(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let condition = parse_condition(&q)?;
    let exited = b.containers.container_wait(&id, condition).await?;
    let body = futures::stream::once(async move {
        let resp = match exited.await {
            Ok(code) => ContainerWaitResponse {
                status_code: code,
                error: None,
            },
            Err(e) => ContainerWaitResponse {
                status_code: -1,
                error: Some(ContainerWaitExitError {
                    message: Some(e.to_string()),
                }),
            },
        };
        let mut line = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
        line.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(line))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
    Ok(resp)
}

async fn attach_handler(
    State(b): State<Backends>,
    Path(id): Path<String>,
    q: Query,
    version: ReqVersion,
    mut req: Request,
) -> HttpResult {
    let detach_keys = attach::parse_detach_keys(q.get("detachKeys"))?;
    let opts = AttachOptions {
        stream: q.bool("stream")?,
        logs: q.bool("logs")?,
        stdin: q.bool("stdin")?,
        stdout: q.bool("stdout")?,
        stderr: q.bool("stderr")?,
        detach_keys: q.non_empty("detachKeys").map(str::to_string),
    };
    let upgrade = attach::wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let streams = b.containers.container_attach(&id, opts).await?;
    Ok(attach::respond(
        upgrade,
        req.into_body(),
        streams,
        Some(detach_keys),
        version,
    ))
}

async fn top(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let ps_args = q.non_empty("ps_args").map(str::to_string);
    Ok(json_response(
        StatusCode::OK,
        &b.containers.container_top(&id, ps_args).await?,
    ))
}

/// One JSON document per line; a single one with `stream=0`.
async fn stats(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let stream = q.bool_or("stream", true)?;
    let one_shot = q.bool("one-shot")?;
    if one_shot && stream {
        return Err(bad_request("cannot have stream=true and one-shot=true"));
    }
    let items = b.containers.container_stats(&id, stream, one_shot).await?;
    let body = items.map(|s| {
        let mut line = serde_json::to_vec(&s).map_err(std::io::Error::other)?;
        line.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(line))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
    Ok(resp)
}

fn parse_tail(q: &Query) -> Result<Option<usize>, ApiError> {
    match q.get("tail").map(str::trim) {
        None | Some("") | Some("all") => Ok(None),
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n < 0 => Ok(None),
            Ok(n) => Ok(Some(n as usize)),
            Err(_) => Err(bad_request(format!(
                "invalid value {n:?} for query parameter \"tail\": expected \"all\" or a number"
            ))),
        },
    }
}

async fn logs(
    State(b): State<Backends>,
    Path(id): Path<String>,
    q: Query,
    version: ReqVersion,
) -> HttpResult {
    let opts = LogsOptions {
        follow: q.bool("follow")?,
        stdout: q.bool("stdout")?,
        stderr: q.bool("stderr")?,
        since: q.unix_time("since")?,
        until: q.unix_time("until")?,
        timestamps: q.bool("timestamps")?,
        tail: parse_tail(&q)?,
    };
    if !opts.stdout && !opts.stderr {
        return Err(bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let timestamps = opts.timestamps;
    let logs = b.containers.container_logs(&id, opts).await?;
    let tty = logs.tty;
    let body = logs.entries.map(move |e| {
        let data = if timestamps {
            let mut d = Vec::with_capacity(e.time.len() + 1 + e.data.len());
            d.extend_from_slice(e.time.as_bytes());
            d.push(b' ');
            d.extend_from_slice(&e.data);
            Bytes::from(d)
        } else {
            e.data
        };
        Ok::<_, std::io::Error>(attach::encode(
            tty,
            crate::backend::OutputChunk {
                stream: e.stream,
                data,
            },
        ))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        attach::stream_content_type(tty, version),
    );
    Ok(resp)
}

fn archive_path(q: &Query) -> Result<&str, ApiError> {
    q.non_empty("path")
        .ok_or_else(|| bad_request("missing query parameter \"path\""))
}

/// `X-Docker-Container-Path-Stat`: base64 of the stat JSON.
fn stat_header(stat: &PathStat) -> Result<HeaderValue, ApiError> {
    let json = serde_json::to_vec(stat)
        .map_err(|e| ApiError::Internal(format!("encoding path stat: {e}")))?;
    HeaderValue::from_str(&base64_std(&json))
        .map_err(|e| ApiError::Internal(format!("path stat header: {e}")))
}

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

async fn archive_head(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let stat = b
        .containers
        .container_archive_stat(&id, archive_path(&q)?)
        .await?;
    let mut resp = empty(StatusCode::OK);
    resp.headers_mut().insert(STAT_HEADER, stat_header(&stat)?);
    Ok(resp)
}

async fn archive_get(State(b): State<Backends>, Path(id): Path<String>, q: Query) -> HttpResult {
    let (stat, tar) = b
        .containers
        .container_archive_get(&id, archive_path(&q)?)
        .await?;
    let mut resp = Response::new(Body::from_stream(tar));
    resp.headers_mut().insert(STAT_HEADER, stat_header(&stat)?);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}

async fn archive_put(
    State(b): State<Backends>,
    Path(id): Path<String>,
    q: Query,
    body: Body,
) -> HttpResult {
    let path = archive_path(&q)?.to_string();
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other))
        .boxed();
    b.containers
        .container_archive_put(
            &id,
            &path,
            q.bool("noOverwriteDirNonDir")?,
            q.bool("copyUIDGID")?,
            stream,
        )
        .await?;
    Ok(empty(StatusCode::OK))
}

async fn prune(State(b): State<Backends>, q: Query) -> HttpResult {
    Ok(json_response(
        StatusCode::OK,
        &b.containers.container_prune(q.filters()?).await?,
    ))
}

/// Standard base64 with padding (the CLI decodes with Go's StdEncoding).
pub(crate) fn base64_std(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrated(raw: &str) -> Result<ContainerCreateBody, String> {
        let mut c: ContainerCreateBody = serde_json::from_str(raw).unwrap();
        migrate_mac_address(raw.as_bytes(), &mut c).map(|()| c)
    }

    fn endpoint_mac(c: &ContainerCreateBody, net: &str) -> Option<String> {
        c.networking_config.as_ref()?.endpoints_config.as_ref()?[net]
            .mac_address
            .clone()
    }

    #[test]
    fn top_level_mac_moves_to_the_primary_endpoint() {
        let c = migrated(r#"{"Image":"x","MacAddress":"02:42:ac:11:00:09"}"#).unwrap();
        assert_eq!(
            endpoint_mac(&c, "default").as_deref(),
            Some("02:42:ac:11:00:09")
        );
        let c = migrated(
            r#"{"Image":"x","MacAddress":"02:42:ac:11:00:09","HostConfig":{"NetworkMode":"web"},
                "NetworkingConfig":{"EndpointsConfig":{"web":{"Aliases":["a"]}}}}"#,
        )
        .unwrap();
        assert_eq!(
            endpoint_mac(&c, "web").as_deref(),
            Some("02:42:ac:11:00:09")
        );
        let c = migrated(r#"{"Image":"x"}"#).unwrap();
        assert!(c.networking_config.is_none());
        // The same address twice is fine; a different one is refused.
        assert!(migrated(
            r#"{"MacAddress":"02:42:AC:11:00:09","NetworkingConfig":{"EndpointsConfig":{"default":{"MacAddress":"02:42:ac:11:00:09"}}}}"#
        )
        .is_ok());
        let e = migrated(
            r#"{"MacAddress":"02:42:ac:11:00:09","NetworkingConfig":{"EndpointsConfig":{"bridge":{"MacAddress":"02:42:ac:11:00:08"}}}}"#,
        )
        .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let e =
            migrated(r#"{"MacAddress":"02:42:ac:11:00:09","HostConfig":{"NetworkMode":"host"}}"#)
                .unwrap_err();
        assert!(e.contains("conflicting options"), "{e}");
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_std(i.as_bytes()), o);
        }
    }

    #[test]
    fn container_names() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("/web-1.a_b").is_ok());
        assert!(validate_name("a").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a b").is_err());
    }

    #[test]
    fn tail_values() {
        let t = |s: &str| parse_tail(&Query::parse(Some(s)));
        assert_eq!(t("tail=all").unwrap(), None);
        assert_eq!(t("tail=5").unwrap(), Some(5));
        assert_eq!(t("tail=-1").unwrap(), None);
        assert_eq!(t("").unwrap(), None);
        assert!(t("tail=x").is_err());
    }
}
