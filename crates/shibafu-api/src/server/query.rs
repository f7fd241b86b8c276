//! Query-string parsing with Docker's conventions: booleans as
//! `1/0/true/false/True/False` (docker-py sends Python's spelling), empty
//! values meaning "not set", and `filters` JSON in both of its shapes.

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::backend::{ApiError, Filters};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("invalid boolean value {value:?} for query parameter {key:?}: use 1/0 or true/false")]
    Bool { key: String, value: String },
    #[error("invalid value {value:?} for query parameter {key:?}: expected {expected}")]
    Value {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("missing query parameter {0:?}")]
    Missing(String),
    #[error("invalid filters: {0}")]
    Filters(String),
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::InvalidArgument(e.to_string())
    }
}

/// Parses a Docker boolean. `""` is false (Go's `r.Form.Get` of `k=`).
pub fn parse_bool(key: &str, value: &str) -> Result<bool, QueryError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "" | "0" | "false" | "no" | "none" => Ok(false),
        _ => Err(QueryError::Bool {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

/// Normalises Docker's `filters` JSON: `{"status":{"running":true}}` (the
/// CLI's map form) and `{"status":["running"]}` (docker-py's list form) both
/// become `{"status": ["running"]}`. Empty input is no filter.
pub fn parse_filters(raw: &str) -> Result<Filters, QueryError> {
    let mut out = Filters::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| QueryError::Filters(format!("{e} in {raw:?}")))?;
    let obj = match value {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Null => return Ok(out),
        other => {
            return Err(QueryError::Filters(format!(
                "expected a JSON object, got {other}"
            )));
        }
    };
    for (key, val) in obj {
        let values = out.entry(key.clone()).or_default();
        match val {
            serde_json::Value::Array(items) => {
                for item in items {
                    values.push(scalar(&key, item)?);
                }
            }
            serde_json::Value::Object(map) => {
                for (name, flag) in map {
                    match flag {
                        serde_json::Value::Bool(true) => values.push(name),
                        serde_json::Value::Bool(false) => {}
                        other => {
                            return Err(QueryError::Filters(format!(
                            "filter {key:?}: value of {name:?} must be true or false, got {other}"
                        )))
                        }
                    }
                }
            }
            serde_json::Value::Null => {}
            other => values.push(scalar(&key, other)?),
        }
    }
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}

fn scalar(key: &str, v: serde_json::Value) -> Result<String, QueryError> {
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        other => Err(QueryError::Filters(format!(
            "filter {key:?}: values must be strings, got {other}"
        ))),
    }
}

/// A decoded query string (keys may repeat, order kept). Extracting it from a
/// request never fails; the typed getters report bad values.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Query { pairs }
    }

    /// First value of `key` (Go's `Form.Get`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// First value of `key` unless absent or empty.
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Absent => `default`.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, QueryError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_bool(key, v),
        }
    }

    /// Absent => false.
    pub fn bool(&self, key: &str) -> Result<bool, QueryError> {
        self.bool_or(key, false)
    }

    /// Absent or empty => `None`.
    pub fn int<T: FromStr>(&self, key: &str) -> Result<Option<T>, QueryError> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| QueryError::Value {
                key: key.to_string(),
                value: v.to_string(),
                expected: "an integer in range",
            }),
        }
    }

    /// Required integer.
    pub fn require_int<T: FromStr>(&self, key: &str) -> Result<T, QueryError> {
        self.int(key)?
            .ok_or_else(|| QueryError::Missing(key.to_string()))
    }

    /// Unix seconds, possibly fractional (`1700000000.123456789`). Absent,
    /// empty or `0` => `None`.
    pub fn unix_time(&self, key: &str) -> Result<Option<f64>, QueryError> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(t) if t.is_finite() && t >= 0.0 => Ok(if t == 0.0 { None } else { Some(t) }),
                _ => Err(QueryError::Value {
                    key: key.to_string(),
                    value: v.to_string(),
                    expected: "a unix timestamp in seconds",
                }),
            },
        }
    }

    /// The `filters` parameter, normalised.
    pub fn filters(&self) -> Result<Filters, QueryError> {
        self.get("filters")
            .map(parse_filters)
            .unwrap_or_else(|| Ok(Filters::new()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Query::parse(parts.uri.query()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_in_every_client_spelling() {
        for v in ["1", "true", "True", "TRUE", "yes"] {
            assert!(parse_bool("k", v).unwrap(), "{v}");
        }
        for v in ["", "0", "false", "False", "no"] {
            assert!(!parse_bool("k", v).unwrap(), "{v}");
        }
        let err = parse_bool("all", "maybe").unwrap_err();
        assert!(err.to_string().contains("\"all\""), "{err}");
    }

    #[test]
    fn filters_in_both_shapes() {
        let a = parse_filters(r#"{"status":{"running":true,"exited":false}}"#).unwrap();
        let b = parse_filters(r#"{"status":["running"]}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a["status"], vec!["running".to_string()]);
        assert!(parse_filters("").unwrap().is_empty());
        assert!(parse_filters("[1]").is_err());
        assert!(parse_filters("{").is_err());
        assert!(parse_filters(r#"{"status":{"running":"yes"}}"#).is_err());
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("a=1&b=&c=x%20y+z&c=2&t=-3&since=1700000000.5"));
        assert!(q.bool("a").unwrap());
        assert!(!q.bool("b").unwrap());
        assert!(q.bool_or("missing", true).unwrap());
        assert_eq!(q.get("c"), Some("x y z"));
        assert_eq!(q.get_all("c"), vec!["x y z", "2"]);
        assert_eq!(q.int::<i64>("t").unwrap(), Some(-3));
        assert_eq!(q.int::<i64>("b").unwrap(), None);
        assert!(q.int::<u16>("t").is_err());
        assert_eq!(q.unix_time("since").unwrap(), Some(1_700_000_000.5));
        assert!(matches!(
            q.require_int::<u16>("h"),
            Err(QueryError::Missing(_))
        ));
    }
}
