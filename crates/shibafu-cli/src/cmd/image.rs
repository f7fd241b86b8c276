//! Image commands: `images`, `import`, `tag`, `rmi`, `history`, `image prune`.

use serde_json::{json, Value};

use crate::cli::{HistoryArgs, ImagePruneArgs, ImagesArgs, ImportArgs, RmiArgs, TagArgs};
use crate::client::{body_stream, query, reader_body, JsonLines};
use crate::cmd::{confirm, filters_json, s, seg};
use crate::config::io_reason;
use crate::error::{CliError, Result};
use crate::human::{ago, ellipsis, human_size, short_id};
use crate::template::{render_list, Format};
use crate::Ctx;

/// Splits `repo:tag` at the last colon after the last slash (no default tag).
fn split_repo_tag(r: &str) -> (String, Option<String>) {
    let last_slash = r.rfind('/').map(|i| i + 1).unwrap_or(0);
    match r[last_slash..].rfind(':') {
        Some(i) => (
            r[..last_slash + i].to_string(),
            Some(r[last_slash + i + 1..].to_string()),
        ),
        None => (r.to_string(), None),
    }
}

fn valid_reference(r: &str) -> bool {
    !r.is_empty()
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && !r
            .chars()
            .any(|c| c.is_ascii_uppercase() && !r.contains(':'))
}

pub async fn import(ctx: &Ctx, a: ImportArgs) -> Result<i32> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(r) = &a.reference {
        let (repo, tag) = split_repo_tag(r);
        if !valid_reference(r) || repo.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(CliError::other(format!(
                "invalid reference format: repository name ({repo}) must be lowercase"
            )));
        }
        pairs.push(("repo", repo));
        if let Some(t) = tag {
            pairs.push(("tag", t));
        }
    }
    for c in &a.change {
        pairs.push(("changes", c.clone()));
    }
    if let Some(m) = &a.message {
        pairs.push(("message", m.clone()));
    }
    if let Some(p) = &a.platform {
        pairs.push(("platform", p.clone()));
    }
    let body = if a.source == "-" {
        pairs.insert(0, ("fromSrc", "-".into()));
        let stdin = ctx
            .take_stdin()
            .ok_or_else(|| CliError::other("stdin is not available"))?;
        reader_body(stdin)
    } else if a.source.starts_with("http://") || a.source.starts_with("https://") {
        pairs.insert(0, ("fromSrc", a.source.clone()));
        crate::client::empty_body()
    } else {
        let f = tokio::fs::File::open(&a.source)
            .await
            .map_err(|e| CliError::other(format!("open {}: {}", a.source, io_reason(&e))))?;
        pairs.insert(0, ("fromSrc", "-".into()));
        reader_body(f)
    };
    let resp = ctx
        .client
        .request(
            hyper::Method::POST,
            &format!("/images/create{}", query(&pairs)),
            body,
            Some("application/x-tar"),
        )
        .await?;
    let mut lines = JsonLines::new(body_stream(resp));
    let mut last_status = String::new();
    while let Some(v) = lines.next().await {
        let v = v?;
        if let Some(err) = v.get("error").and_then(Value::as_str) {
            let msg = v
                .pointer("/errorDetail/message")
                .and_then(Value::as_str)
                .unwrap_or(err);
            return Err(CliError::Daemon {
                status: 500,
                message: msg.to_string(),
            });
        }
        let st = s(&v, "status");
        if !st.is_empty() {
            last_status = st.to_string();
        }
    }
    if !last_status.is_empty() {
        ctx.outln(&last_status);
    }
    Ok(0)
}

fn image_rows(images: &[Value], no_trunc: bool) -> Vec<Value> {
    let mut rows = Vec::new();
    for img in images {
        let id = s(img, "Id");
        let id = if no_trunc {
            id.to_string()
        } else {
            short_id(id)
        };
        let created = img.get("Created").and_then(Value::as_i64).unwrap_or(0);
        let size = img.get("Size").and_then(Value::as_i64).unwrap_or(0);
        let created_at = chrono::DateTime::from_timestamp(created, 0)
            .map(|t| {
                let l = t.with_timezone(&chrono::Local);
                let zone = if l.offset().local_minus_utc() == 0 {
                    "UTC".to_string()
                } else {
                    l.format("%Z").to_string()
                };
                format!("{} {}", l.format("%Y-%m-%d %H:%M:%S %z"), zone)
            })
            .unwrap_or_default();
        let repo_digests: Vec<String> = img
            .get("RepoDigests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let digest_for = |repo: &str| {
            repo_digests
                .iter()
                .find_map(|d| {
                    d.split_once('@')
                        .filter(|(r, _)| *r == repo)
                        .map(|(_, d)| d.to_string())
                })
                .unwrap_or_else(|| "<none>".into())
        };
        let tags: Vec<(String, String)> = img
            .get("RepoTags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|t| *t != "<none>:<none>")
            .map(|t| {
                let (r, tag) = split_repo_tag(t);
                (r, tag.unwrap_or_else(|| "<none>".into()))
            })
            .collect();
        let tags = if tags.is_empty() {
            vec![("<none>".to_string(), "<none>".to_string())]
        } else {
            tags
        };
        for (repo, tag) in tags {
            let digest = digest_for(&repo);
            rows.push(json!({
                "Repository": repo,
                "Tag": tag,
                "ID": id,
                "Digest": digest,
                "CreatedSince": ago(created),
                "CreatedAt": created_at,
                "Size": human_size(size as f64),
                "VirtualSize": crate::human::human_size_prec(size as f64, 4),
                "SharedSize": img.get("SharedSize").and_then(Value::as_i64).filter(|s| *s >= 0).map(|s| human_size(s as f64)).unwrap_or_else(|| "N/A".into()),
                "UniqueSize": "N/A",
                "Containers": img.get("Containers").and_then(Value::as_i64).filter(|c| *c >= 0).map(|c| c.to_string()).unwrap_or_else(|| "N/A".into()),
            }));
        }
    }
    rows
}

pub async fn images(ctx: &Ctx, a: ImagesArgs) -> Result<i32> {
    let format = Format::parse(a.format.as_deref()).map_err(|e| CliError::other(e.to_string()))?;
    let mut filters = a.filter.clone();
    if let Some(r) = &a.reference {
        filters.push(format!("reference={r}"));
    }
    let mut pairs = Vec::new();
    if a.all {
        pairs.push(("all", "1".to_string()));
    }
    if let Some(f) = filters_json(&filters)? {
        pairs.push(("filters", f));
    }
    if a.digests {
        pairs.push(("digests", "1".to_string()));
    }
    let list = ctx
        .client
        .get_json(&format!("/images/json{}", query(&pairs)))
        .await?;
    let mut items = list.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|i| std::cmp::Reverse(i.get("Created").and_then(Value::as_i64).unwrap_or(0)));
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for i in &items {
            let id = s(i, "Id");
            let id = if a.no_trunc {
                id.to_string()
            } else {
                short_id(id)
            };
            if seen.insert(id.clone()) {
                ctx.outln(&id);
            }
        }
        return Ok(0);
    }
    let rows = image_rows(&items, a.no_trunc);
    let headers = json!({
        "Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST", "CreatedSince": "CREATED",
        "CreatedAt": "CREATED AT", "Size": "SIZE", "VirtualSize": "VIRTUAL SIZE", "SharedSize": "SHARED SIZE",
        "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS",
    });
    let default = if a.digests {
        "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    ctx.out(
        &render_list(&format, default, &headers, &rows)
            .map_err(|e| CliError::other(e.to_string()))?,
    );
    Ok(0)
}

pub async fn tag(ctx: &Ctx, a: TagArgs) -> Result<i32> {
    let (repo, tag) = split_repo_tag(&a.target);
    if !valid_reference(&a.target)
        || repo.chars().any(|c| c.is_ascii_uppercase())
        || repo.is_empty()
    {
        return Err(CliError::other(format!(
            "Error parsing reference: {:?} is not a valid repository/tag: invalid reference format",
            a.target
        )));
    }
    let q = query(&[
        ("repo", repo),
        ("tag", tag.unwrap_or_else(|| "latest".into())),
    ]);
    ctx.client
        .post::<()>(&format!("/images/{}/tag{q}", seg(&a.source)), None)
        .await?;
    Ok(0)
}

pub async fn rmi(ctx: &Ctx, a: RmiArgs) -> Result<i32> {
    let mut pairs = Vec::new();
    if a.force {
        pairs.push(("force", "1".to_string()));
    }
    if a.no_prune {
        pairs.push(("noprune", "1".to_string()));
    }
    let q = query(&pairs);
    let mut failed = false;
    for img in &a.images {
        match ctx.client.delete(&format!("/images/{}{q}", seg(img))).await {
            Ok(body) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                for item in v.as_array().into_iter().flatten() {
                    if let Some(u) = item.get("Untagged").and_then(Value::as_str) {
                        ctx.outln(&format!("Untagged: {u}"));
                    }
                    if let Some(d) = item.get("Deleted").and_then(Value::as_str) {
                        ctx.outln(&format!("Deleted: {d}"));
                    }
                }
            }
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => {
                failed = true;
                ctx.errln(&e.to_string());
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn history(ctx: &Ctx, a: HistoryArgs) -> Result<i32> {
    let format = Format::parse(a.format.as_deref()).map_err(|e| CliError::other(e.to_string()))?;
    let v = ctx
        .client
        .get_json(&format!("/images/{}/history", seg(&a.image)))
        .await?;
    let items = v.as_array().cloned().unwrap_or_default();
    if a.quiet {
        for i in &items {
            let id = s(i, "Id");
            ctx.outln(&if a.no_trunc {
                id.to_string()
            } else {
                short_id(id)
            });
        }
        return Ok(0);
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|i| {
            let id = s(i, "Id");
            let id = if id.is_empty() || id == "<missing>" {
                "<missing>".to_string()
            } else if a.no_trunc {
                id.to_string()
            } else {
                short_id(id)
            };
            let created = i.get("Created").and_then(Value::as_i64).unwrap_or(0);
            let size = i.get("Size").and_then(Value::as_i64).unwrap_or(0);
            let by = s(i, "CreatedBy").replace('\t', " ");
            let by = if a.no_trunc { by } else { ellipsis(&by, 45) };
            let (since, size) = if a.human {
                (ago(created), human_size(size as f64))
            } else {
                (
                    chrono::DateTime::from_timestamp(created, 0).map(|t| t.with_timezone(&chrono::Local).to_rfc3339()).unwrap_or_default(),
                    size.to_string(),
                )
            };
            json!({"ID": id, "CreatedSince": since, "CreatedBy": by, "Size": size, "Comment": s(i, "Comment")})
        })
        .collect();
    let headers = json!({"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"});
    let default = "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";
    ctx.out(
        &render_list(&format, default, &headers, &rows)
            .map_err(|e| CliError::other(e.to_string()))?,
    );
    Ok(0)
}

pub async fn prune(ctx: &Ctx, a: ImagePruneArgs) -> Result<i32> {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !a.force && !confirm(ctx, warning) {
        return Ok(0);
    }
    let mut filters = a.filter.clone();
    filters.push(format!("dangling={}", !a.all));
    let q = query(&[("filters", filters_json(&filters)?.unwrap_or_default())]);
    let v = ctx
        .client
        .post_json::<()>(&format!("/images/prune{q}"), None)
        .await?;
    let deleted = v
        .get("ImagesDeleted")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !deleted.is_empty() {
        ctx.outln("Deleted Images:");
        for d in deleted {
            if let Some(u) = d.get("Untagged").and_then(Value::as_str) {
                ctx.outln(&format!("untagged: {u}"));
            }
            if let Some(x) = d.get("Deleted").and_then(Value::as_str) {
                ctx.outln(&format!("deleted: {x}"));
            }
        }
        ctx.outln("");
    }
    crate::cmd::print_reclaimed(ctx, &v);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_table_like_docker() {
        let now = chrono::Utc::now().timestamp();
        let imgs = vec![
            json!({"Id": "sha256:0123456789abcdef", "RepoTags": ["busybox:latest", "bb:1"], "Created": now - 7200, "Size": 4_261_000}),
            json!({"Id": "sha256:fedcba9876543210", "RepoTags": [], "Created": now - 30, "Size": 999}),
        ];
        let rows = image_rows(&imgs, false);
        assert_eq!(rows.len(), 3);
        let headers = json!({"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED", "Size": "SIZE"});
        let out = render_list(
            &Format::DefaultTable,
            "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
            &headers,
            &rows,
        )
        .unwrap();
        assert_eq!(
            out,
            "REPOSITORY   TAG       IMAGE ID       CREATED          SIZE\n\
             busybox      latest    0123456789ab   2 hours ago      4.26MB\n\
             bb           1         0123456789ab   2 hours ago      4.26MB\n\
             <none>       <none>    fedcba987654   30 seconds ago   999B\n"
        );
    }

    #[test]
    fn repo_tag_split() {
        assert_eq!(split_repo_tag("a/b:1"), ("a/b".into(), Some("1".into())));
        assert_eq!(split_repo_tag("host:5000/a"), ("host:5000/a".into(), None));
        assert!(valid_reference("localhost:5000/x/y:v1"));
        assert!(!valid_reference("bad ref"));
    }
}
