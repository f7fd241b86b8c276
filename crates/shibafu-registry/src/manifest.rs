//! What the registry needs to know about a manifest: the blobs and child
//! manifests it references (checked on PUT, marked by GC), its subject (the
//! referrers API) and the descriptor it is listed under as a referrer. Any
//! JSON object is accepted, so artifact manifests of any type round-trip.

use serde_json::Value;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error("mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
}

/// References out of one manifest.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ManifestRefs {
    /// config, layers and `blobs` (the draft artifact manifest), except
    /// foreign layers that carry `urls` and are fetched from elsewhere.
    pub blobs: Vec<Digest>,
    /// `manifests` of an index or manifest list.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, else (image manifests) the config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<Value>,
    /// `mediaType` from the body, if present.
    pub media_type: Option<String>,
}

fn descriptor_digest(v: &Value, field: &str) -> Result<Digest, ManifestError> {
    let bad = |reason: &str| ManifestError::Field {
        field: field.to_string(),
        reason: reason.to_string(),
    };
    let d = v
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("descriptor without a digest"))?;
    d.parse()
        .map_err(|e: crate::digest::DigestError| bad(&e.to_string()))
}

fn has_urls(v: &Value) -> bool {
    v.get("urls")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty())
}

/// Parses a manifest body. `content_type` is the PUT's header; when both it
/// and the body's `mediaType` are set they must agree.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<ManifestRefs, ManifestError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ManifestError::Json("top level is not an object".into()))?;
    let mut refs = ManifestRefs {
        media_type: obj
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string),
        annotations: obj.get("annotations").filter(|a| a.is_object()).cloned(),
        ..Default::default()
    };
    if let (Some(body_mt), Some(header_mt)) = (&refs.media_type, specific(content_type)) {
        if header_mt != body_mt {
            return Err(ManifestError::MediaTypeMismatch {
                body: body_mt.clone(),
                header: header_mt.to_string(),
            });
        }
    }
    let array = |field: &str| -> Result<Vec<Value>, ManifestError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(ManifestError::Field {
                field: field.to_string(),
                reason: "not an array".into(),
            }),
        }
    };
    if let Some(cfg) = obj.get("config") {
        refs.blobs.push(descriptor_digest(cfg, "config")?);
    }
    for field in ["layers", "blobs"] {
        for d in array(field)? {
            if !has_urls(&d) {
                refs.blobs.push(descriptor_digest(&d, field)?);
            }
        }
    }
    for d in array("manifests")? {
        refs.children.push(descriptor_digest(&d, "manifests")?);
    }
    if let Some(s) = obj.get("subject").filter(|s| !s.is_null()) {
        refs.subject = Some(descriptor_digest(s, "subject")?);
    }
    refs.artifact_type = obj
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            obj.get("config")
                .and_then(|c| c.get("mediaType"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    Ok(refs)
}

/// A Content-Type that names a media type, without parameters; generic
/// ones (`application/json`, `application/octet-stream`) name none.
fn specific(content_type: Option<&str>) -> Option<&str> {
    content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/octet-stream" && *c != "application/json")
}

/// The media type a manifest is stored and served under: the header's, else
/// the body's, else by shape (an index if it lists manifests).
pub fn effective_media_type(content_type: Option<&str>, refs: &ManifestRefs) -> String {
    specific(content_type)
        .map(str::to_string)
        .or_else(|| refs.media_type.clone())
        .unwrap_or_else(|| {
            if refs.children.is_empty() {
                OCI_MANIFEST.to_string()
            } else {
                OCI_INDEX.to_string()
            }
        })
}

/// The descriptor a referrer is listed under in its subject's referrers
/// index.
pub fn referrer_descriptor(
    media_type: &str,
    digest: &Digest,
    size: u64,
    refs: &ManifestRefs,
) -> Value {
    let mut d = serde_json::json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": size,
    });
    if let Some(a) = &refs.artifact_type {
        d["artifactType"] = Value::String(a.clone());
    }
    if let Some(a) = &refs.annotations {
        d["annotations"] = a.clone();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dg('a'), "size": 2},
            "layers": [
                {"mediaType": "x", "digest": dg('b'), "size": 1},
                {"mediaType": "y", "digest": dg('c'), "size": 1, "urls": ["https://example.invalid/l"]}
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": dg('d'), "size": 9},
            "annotations": {"k": "v"}
        })
        .to_string();
        let r = parse(body.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(
            r.blobs,
            vec![dg('a').parse().unwrap(), dg('b').parse().unwrap()]
        );
        assert_eq!(r.subject, Some(dg('d').parse().unwrap()));
        assert_eq!(
            r.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(effective_media_type(None, &r), OCI_MANIFEST);
        let desc = referrer_descriptor(OCI_MANIFEST, &dg('e').parse().unwrap(), 10, &r);
        assert_eq!(desc["annotations"]["k"], "v");
        assert!(matches!(
            parse(body.as_bytes(), Some(OCI_INDEX)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        // Generic content types defer to the body.
        let r = parse(body.as_bytes(), Some("application/json; charset=utf-8")).unwrap();
        assert_eq!(
            effective_media_type(Some("application/json"), &r),
            OCI_MANIFEST
        );
        assert_eq!(
            effective_media_type(Some(&format!("{OCI_MANIFEST}; x=y")), &r),
            OCI_MANIFEST
        );
    }

    #[test]
    fn index_and_errors() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": dg('1'), "size": 3}],
            "artifactType": "application/x-thing"
        })
        .to_string();
        let r = parse(body.as_bytes(), None).unwrap();
        assert_eq!(r.children.len(), 1);
        assert_eq!(effective_media_type(None, &r), OCI_INDEX);
        assert_eq!(effective_media_type(Some(DOCKER_LIST), &r), DOCKER_LIST);
        assert_eq!(r.artifact_type.as_deref(), Some("application/x-thing"));
        assert!(parse(b"[]", None).is_err());
        assert!(parse(b"{nope", None).is_err());
        assert!(parse(br#"{"layers":[{"digest":"sha256:zz"}]}"#, None).is_err());
        assert!(parse(br#"{"layers":{}}"#, None).is_err());
    }
}
