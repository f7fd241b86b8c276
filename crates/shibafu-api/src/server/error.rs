//! Docker's error shape: `{"message": "..."}` with `Content-Type` exactly
//! `application/json` (with a charset the docker CLI prints the raw JSON).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::backend::ApiError;

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::NOT_MODIFIED {
            return empty(status);
        }
        error_response(status, &self.to_string())
    }
}

/// `{"message": msg}` with the given status.
pub(crate) fn error_response(status: StatusCode, msg: &str) -> Response {
    #[derive(Serialize)]
    struct Msg<'a> {
        message: &'a str,
    }
    json_response(status, &Msg { message: msg })
}

/// A JSON body with Docker's exact content type.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            // Go's encoder ends every document with a newline; some clients
            // split on it.
            body.push(b'\n');
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status;
            resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to encode a response");
            let mut resp = Response::new(Body::from(format!(
                "{{\"message\":\"failed to encode the response: {}\"}}\n",
                e.to_string().replace(['"', '\\'], "'")
            )));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
            resp
        }
    }
}

/// A response with no body (204, 304, 201 of `tag`, ...).
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

/// Unknown routes and methods: Docker answers both with this 404.
pub(crate) async fn page_not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "page not found")
}

/// Handler result: errors render as Docker errors.
pub(crate) type HttpResult = Result<Response, ApiError>;

/// 400 with the given message.
pub(crate) fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument(msg.into())
}

/// Decodes a JSON request body; an empty body is an error naming `what`.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request(format!(
            "{what}: request body is empty, expected JSON"
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("{what}: invalid JSON in request body: {e}")))
}

/// Decodes a JSON request body that may be empty (or `null`): then `T::default()`.
pub(crate) fn parse_json_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    parse_json(body, what)
}
