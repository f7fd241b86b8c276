//! The CLI's error type and how each error maps to docker's exit codes.

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The socket could not be reached at all.
    #[error("Cannot connect to the shibafu daemon at {host}. Is the daemon running?")]
    Connect { host: String },
    /// The daemon answered with an error status (message from its `{"message"}` body).
    #[error("Error response from daemon: {message}")]
    Daemon { status: u16, message: String },
    /// Bad command-line input, found before anything was sent (docker exits 125).
    #[error("{0}")]
    Usage(String),
    /// A client-side failure after the command started (file missing, bad template, ...).
    #[error("{0}")]
    Other(String),
    /// Exit silently with this code (a container's or exec's exit status, or errors
    /// already printed per argument).
    #[error("exit status {0}")]
    Status(i32),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("error during connect: {0}")]
    Http(String),
    #[error("invalid response from daemon: {0}")]
    Json(#[from] serde_json::Error),
}

impl CliError {
    pub fn other(msg: impl Into<String>) -> Self {
        CliError::Other(msg.into())
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    /// True for a daemon 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CliError::Daemon { status: 404, .. })
    }

    /// The daemon's message, or the whole error text for other kinds.
    pub fn message(&self) -> String {
        match self {
            CliError::Daemon { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

impl From<hyper::Error> for CliError {
    fn from(e: hyper::Error) -> Self {
        CliError::Http(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, CliError>;
