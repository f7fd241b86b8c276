//! What goes over the wire besides the protocol flow: registry error
//! bodies and statuses as distribution's errcode prints them, network
//! failures as Go prints them (dockerd's users know those texts), digests,
//! references and manifest media types.

use reqwest::{Method, StatusCode};
use sha2::Digest as _;

use crate::{media, Error};

/// The error for a non-success status: the registry's error body when it
/// sent one, else the status's usual meaning.
pub(crate) fn error_from(status: StatusCode, body: &[u8]) -> Error {
    let parsed = parse_errors(body);
    let code = parsed.as_ref().map(|(c, _)| c.clone());
    let message = parsed.map(|(_, m)| m);
    match (status, code.as_deref()) {
        (StatusCode::UNAUTHORIZED, _) | (_, Some("UNAUTHORIZED")) => Error::Unauthorized(
            message.unwrap_or_else(|| "unauthorized: authentication required".to_string()),
        ),
        (StatusCode::FORBIDDEN, _) | (_, Some("DENIED")) => {
            Error::Denied(message.unwrap_or_else(|| {
                "denied: requested access to the resource is denied".to_string()
            }))
        }
        (StatusCode::NOT_FOUND, _) => Error::NotFound {
            code,
            message: message.unwrap_or_else(|| "not found".to_string()),
        },
        _ => Error::Registry {
            status: status.as_u16(),
            message: message.unwrap_or_else(|| {
                format!(
                    "received unexpected HTTP status: {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )
            }),
        },
    }
}

/// `{"errors":[{"code","message","detail"}]}` → (first code, the text
/// distribution's errcode prints: `manifest unknown: manifest unknown`).
pub(crate) fn parse_errors(body: &[u8]) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let b: Body = serde_json::from_slice(body).ok()?;
    let first = b.errors.first()?.code.to_ascii_uppercase();
    let texts: Vec<String> = b
        .errors
        .iter()
        .map(|e| {
            let code = if e.code.is_empty() {
                "unknown".to_string()
            } else {
                e.code.to_lowercase().replace('_', " ")
            };
            if e.message.is_empty() {
                code
            } else {
                format!("{code}: {}", e.message)
            }
        })
        .collect();
    let text = if texts.len() == 1 {
        texts.into_iter().next().unwrap_or_default()
    } else {
        let mut s = "errors:\n".to_string();
        for t in texts {
            s.push_str(&t);
            s.push('\n');
        }
        s
    };
    Some((first, text))
}

/// Go's capitalised method in `Get "url": ...`.
pub(crate) fn go_method(m: &Method) -> String {
    let s = m.as_str();
    let mut out = s[..1].to_string();
    out.push_str(&s[1..].to_lowercase());
    out
}

pub(crate) fn unreachable(method: &Method, url: &str, e: &reqwest::Error) -> Error {
    Error::Unreachable {
        method: go_method(method),
        url: url.to_string(),
        reason: go_reason(url, e),
    }
}

/// `host:port` of a URL, as Go's dialer prints it.
pub(crate) fn dial_addr(url: &str) -> (String, String) {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("").to_string();
            let port = u.port_or_known_default().unwrap_or(0);
            (host.clone(), format!("{host}:{port}"))
        }
        Err(_) => (String::new(), String::new()),
    }
}

/// Imitates Go's net errors for what users see most: refused, timed out,
/// unknown host; anything else is the error chain.
pub(crate) fn go_reason(url: &str, e: &reqwest::Error) -> String {
    let (host, addr) = dial_addr(url);
    let mut chain = Vec::new();
    let mut io_kind = None;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        chain.push(s.to_string());
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        src = s.source();
    }
    let text = chain.join(": ");
    if text.contains("dns error") || text.contains("failed to lookup address") {
        let unknown = [
            "Name or service not known",
            "No address associated",
            "nodename nor servname",
        ];
        return if unknown.iter().any(|u| text.contains(u)) {
            format!("dial tcp: lookup {host}: no such host")
        } else {
            let last = chain.last().map(String::as_str).unwrap_or("");
            format!("dial tcp: lookup {host}: {last}")
        };
    }
    use std::io::ErrorKind as K;
    match io_kind {
        Some(K::ConnectionRefused) => {
            return format!("dial tcp {addr}: connect: connection refused")
        }
        Some(K::ConnectionReset) => {
            return format!("read tcp {addr}: read: connection reset by peer")
        }
        Some(K::HostUnreachable) => return format!("dial tcp {addr}: connect: no route to host"),
        Some(K::NetworkUnreachable) => {
            return format!("dial tcp {addr}: connect: network is unreachable")
        }
        _ => {}
    }
    if e.is_timeout() {
        return if e.is_connect() {
            format!("dial tcp {addr}: i/o timeout")
        } else {
            format!("read tcp {addr}: i/o timeout")
        };
    }
    if text.contains("connection closed before message completed")
        || text.contains("IncompleteMessage")
    {
        return "EOF".to_string();
    }
    // Skip reqwest's own "error sending request for url (...)" prefix.
    match chain.len() {
        0 | 1 => text,
        _ => chain[1..].join(": "),
    }
}

/// The text of a failed body read.
pub(crate) fn read_reason(url: &str, e: &reqwest::Error) -> String {
    let (_, addr) = dial_addr(url);
    if e.is_timeout() {
        return format!("read tcp {addr}: i/o timeout");
    }
    let mut chain = Vec::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        chain.push(s.to_string());
        src = s.source();
    }
    if chain.iter().any(|c| c.contains("connection reset")) {
        return format!("read tcp {addr}: read: connection reset by peer");
    }
    if chain.iter().any(|c| {
        c.contains("end of file before message length reached") || c.contains("IncompleteBody")
    }) {
        return "unexpected EOF".to_string();
    }
    chain.join(": ")
}

/// Content-Types that say nothing about the manifest kind.
pub(crate) fn is_generic_type(ct: &str) -> bool {
    matches!(
        ct,
        "" | "application/json" | "text/plain" | "application/octet-stream" | "binary/octet-stream"
    )
}

/// The manifest's own `mediaType`, or its kind guessed from its fields.
pub(crate) fn body_media_type(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(rename = "schemaVersion", default)]
        schema_version: u32,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
        #[serde(rename = "fsLayers", default)]
        fs_layers: Option<serde_json::Value>,
    }
    let Ok(p) = serde_json::from_slice::<Probe>(bytes) else {
        return "application/octet-stream".to_string();
    };
    if !p.media_type.is_empty() {
        p.media_type
    } else if p.manifests.is_some() {
        media::OCI_INDEX.to_string()
    } else if p.config.is_some() {
        media::OCI_MANIFEST.to_string()
    } else if p.schema_version == 1 || p.fs_layers.is_some() {
        "application/vnd.docker.distribution.manifest.v1+json".to_string()
    } else {
        "application/octet-stream".to_string()
    }
}

pub(crate) fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// `b` hashed with the algorithm of `digest` (sha256, sha512).
pub(crate) fn digest_of(digest: &str, b: &[u8]) -> Option<String> {
    match digest.split_once(':')?.0 {
        "sha256" => Some(sha256_digest(b)),
        "sha512" => Some(format!("sha512:{}", hex::encode(sha2::Sha512::digest(b)))),
        _ => None,
    }
}

pub(crate) fn verify_digest(expected: &str, b: &[u8]) -> Result<(), Error> {
    let actual = digest_of(expected, b)
        .ok_or_else(|| Error::InvalidName(format!("unsupported digest algorithm: {expected}")))?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(Error::DigestMismatch {
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

pub(crate) fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

/// `algorithm:encoded` as the OCI spec's digest grammar.
pub(crate) fn validate_digest(d: &str) -> Result<(), Error> {
    let ok = d.split_once(':').is_some_and(|(alg, enc)| {
        !alg.is_empty()
            && alg
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+._-".contains(&c))
            && enc.len() >= 32
            && enc
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"=_-".contains(&c))
    });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(format!("invalid digest {d:?}")))
    }
}

/// A tag (`[\w][\w.-]{0,127}`) or a digest.
pub(crate) fn validate_reference(r: &str) -> Result<(), Error> {
    if is_digest(r) {
        return validate_digest(r);
    }
    let b = r.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b.is_empty()
        || b.len() > 128
        || !word(b[0])
        || !b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
    {
        return Err(Error::InvalidName(format!("invalid tag {r:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media;

    #[test]
    fn error_bodies_print_like_errcode() {
        let e = error_from(
            StatusCode::NOT_FOUND,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
        );
        assert_eq!(e.to_string(), "manifest unknown: manifest unknown");
        assert!(matches!(e, Error::NotFound { code: Some(ref c), .. } if c == "MANIFEST_UNKNOWN"));
        let e = error_from(
            StatusCode::NOT_FOUND,
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "name unknown: repository name not known to registry"
        );
        let e = error_from(StatusCode::UNAUTHORIZED, b"");
        assert!(matches!(e, Error::Unauthorized(_)));
        assert_eq!(e.to_string(), "unauthorized: authentication required");
        let e = error_from(StatusCode::FORBIDDEN, b"nope");
        assert_eq!(
            e.to_string(),
            "denied: requested access to the resource is denied"
        );
        let e = error_from(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(
            e.to_string(),
            "received unexpected HTTP status: 502 Bad Gateway"
        );
        let e = error_from(
            StatusCode::BAD_REQUEST,
            br#"{"errors":[{"code":"DIGEST_INVALID","message":"a"},{"code":"SIZE_INVALID","message":"b"}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "errors:\ndigest invalid: a\nsize invalid: b\n"
        );
    }

    #[test]
    fn media_type_from_body() {
        assert_eq!(body_media_type(br#"{"mediaType":"x/y"}"#), "x/y");
        assert_eq!(
            body_media_type(br#"{"schemaVersion":2,"manifests":[]}"#),
            media::OCI_INDEX
        );
        assert_eq!(
            body_media_type(br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            media::OCI_MANIFEST
        );
    }

    #[test]
    fn digests() {
        let d = sha256_digest(b"abc");
        assert!(verify_digest(&d, b"abc").is_ok());
        assert!(matches!(
            verify_digest(&d, b"abd"),
            Err(Error::DigestMismatch { .. })
        ));
    }
    #[test]
    fn references() {
        assert!(validate_reference("latest").is_ok());
        assert!(validate_reference("v1.2_3-x").is_ok());
        assert!(validate_reference(".x").is_err());
        assert!(validate_reference("a/b").is_err());
        assert!(validate_reference(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(validate_reference("sha256:zz").is_err());
    }
}
