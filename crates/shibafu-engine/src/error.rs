//! The engine's error type and its mapping onto the API's status codes.

use shibafu_api::ApiError;

/// Everything the engine can fail with. Each variant maps to one Docker
/// status code (see [`From<EngineError> for ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 400.
    #[error("{0}")]
    Invalid(String),
    /// 304.
    #[error("not modified")]
    NotModified,
    /// The state database failed.
    #[error("state database: {0}")]
    Db(String),
    /// A filesystem operation failed; the string says which and where.
    #[error("{0}")]
    Io(String),
    /// The runtime (supervisor, libcontainer) failed.
    #[error("{0}")]
    Runtime(String),
}

impl EngineError {
    pub fn io(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        EngineError::Io(format!("{what}: {err}"))
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(m) => ApiError::NotFound(m),
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::Invalid(m) => ApiError::InvalidArgument(m),
            EngineError::NotModified => ApiError::NotModified,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for EngineError {
            fn from(e: $t) -> Self { EngineError::Db(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
