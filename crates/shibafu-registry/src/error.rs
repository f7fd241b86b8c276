//! The spec's error codes and their HTTP statuses, rendered as
//! `{"errors":[{"code","message","detail"}]}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error a client sees. Internal failures are logged with their cause and
/// answered 500 without it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("blob unknown to registry")]
    BlobUnknown(String),
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown(String),
    #[error("provided digest did not match uploaded content")]
    DigestInvalid(String),
    #[error("manifest references a manifest or blob unknown to registry")]
    ManifestBlobUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown to registry")]
    ManifestUnknown(String),
    #[error("invalid repository name")]
    NameInvalid(String),
    #[error("repository name not known to registry")]
    NameUnknown(String),
    #[error("provided length did not match content length")]
    SizeInvalid(String),
    #[error("content too large: {0}")]
    TooLarge(String),
    #[error("requested access to the resource is denied")]
    Denied(String),
    #[error("the operation is unsupported")]
    Unsupported(String),
    /// A path that is no endpoint of the API.
    #[error("not found")]
    NotFound(String),
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    /// Out-of-order upload chunk; `offset` is what the registry has.
    #[error("upload chunk out of order")]
    RangeInvalid { offset: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BlobUnknown(_) => "BLOB_UNKNOWN",
            ApiError::BlobUploadInvalid(_) | ApiError::RangeInvalid { .. } => "BLOB_UPLOAD_INVALID",
            ApiError::BlobUploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            ApiError::DigestInvalid(_) => "DIGEST_INVALID",
            ApiError::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            ApiError::ManifestInvalid(_) => "MANIFEST_INVALID",
            ApiError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            ApiError::NameInvalid(_) => "NAME_INVALID",
            ApiError::NameUnknown(_) => "NAME_UNKNOWN",
            ApiError::SizeInvalid(_) | ApiError::TooLarge(_) => "SIZE_INVALID",
            ApiError::Denied(_) => "DENIED",
            ApiError::Unsupported(_) => "UNSUPPORTED",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::RangeNotSatisfiable { .. } => "RANGE_INVALID",
            ApiError::Internal(_) => "UNKNOWN",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BlobUnknown(_)
            | ApiError::BlobUploadUnknown(_)
            | ApiError::ManifestUnknown(_)
            | ApiError::NameUnknown(_)
            | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BlobUploadInvalid(_)
            | ApiError::DigestInvalid(_)
            | ApiError::ManifestBlobUnknown(_)
            | ApiError::ManifestInvalid(_)
            | ApiError::NameInvalid(_)
            | ApiError::SizeInvalid(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Denied(_) => StatusCode::FORBIDDEN,
            ApiError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RangeNotSatisfiable { .. } | ApiError::RangeInvalid { .. } => {
                StatusCode::RANGE_NOT_SATISFIABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn detail(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            ApiError::BlobUnknown(d)
            | ApiError::DigestInvalid(d)
            | ApiError::ManifestBlobUnknown(d) => json!({ "digest": d }),
            ApiError::NameInvalid(n) | ApiError::NameUnknown(n) => json!({ "name": n }),
            ApiError::ManifestUnknown(r) => json!({ "reference": r }),
            ApiError::BlobUploadUnknown(u) => json!({ "uuid": u }),
            ApiError::RangeInvalid { offset } => json!({ "offset": offset }),
            ApiError::RangeNotSatisfiable { size } => json!({ "size": size }),
            ApiError::Internal(_) => serde_json::Value::Null,
            ApiError::BlobUploadInvalid(s)
            | ApiError::ManifestInvalid(s)
            | ApiError::SizeInvalid(s)
            | ApiError::TooLarge(s)
            | ApiError::Denied(s)
            | ApiError::Unsupported(s)
            | ApiError::NotFound(s) => json!(s),
        }
    }

    /// `{"errors":[...]}` for this error.
    pub fn body(&self) -> String {
        let message = match self {
            ApiError::Internal(_) => "internal server error".to_string(),
            e => e.to_string(),
        };
        serde_json::json!({
            "errors": [{ "code": self.code(), "message": message, "detail": self.detail() }]
        })
        .to_string()
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!("internal error: {cause}");
        }
        let mut resp = (self.status(), self.body()).into_response();
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        match &self {
            ApiError::RangeInvalid { offset } => {
                if let Ok(v) = HeaderValue::from_str(&crate::range::upload_range(*offset)) {
                    h.insert("range", v);
                }
            }
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert("content-range", v);
                }
            }
            _ => {}
        }
        resp
    }
}
