//! The control plane's one error type, and its single mapping to HTTP and gRPC.

use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but conflicts with other configuration.
    #[error("{0}")]
    Conflict(String),
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// An authenticated admin whose role does not reach this.
    #[error("{0}")]
    PermissionDenied(String),
    /// Details go to the log, never to the caller.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(String),
    /// A singleton job's write after its replica lost the leadership.
    #[error("this control plane is no longer the leader")]
    Fenced,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable, low-cardinality names: the `code` of REST errors and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    Conflict,
    Unauthenticated,
    PermissionDenied,
    Internal,
}

impl ErrorKind {
    /// The one table from which both API surfaces answer, so they never disagree.
    pub fn codes(self) -> (StatusCode, tonic::Code, &'static str) {
        match self {
            ErrorKind::InvalidArgument => (
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                "invalid_argument",
            ),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, tonic::Code::NotFound, "not_found"),
            ErrorKind::AlreadyExists => (
                StatusCode::CONFLICT,
                tonic::Code::AlreadyExists,
                "already_exists",
            ),
            ErrorKind::Conflict => (
                StatusCode::CONFLICT,
                tonic::Code::FailedPrecondition,
                "conflict",
            ),
            ErrorKind::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                tonic::Code::Unauthenticated,
                "unauthenticated",
            ),
            ErrorKind::PermissionDenied => (
                StatusCode::FORBIDDEN,
                tonic::Code::PermissionDenied,
                "permission_denied",
            ),
            ErrorKind::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "internal",
            ),
        }
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unauthenticated => ErrorKind::Unauthenticated,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::Database(_) | Error::Internal(_) | Error::Fenced => ErrorKind::Internal,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    /// Logs what the caller must not see, once, where the error leaves the process.
    pub fn log_if_internal(&self) {
        match self {
            Error::Database(source) => tracing::error!(error = %source, "database error"),
            Error::Internal(detail) => tracing::error!(%detail, "internal error"),
            _ => {}
        }
    }
}

/// Maps a database error, naming `what` when it is a uniqueness violation:
/// `.map_err(already_exists(format!("team {name:?}")))`.
pub fn already_exists(what: String) -> impl FnOnce(sqlx::Error) -> Error {
    move |error| match Error::from(error) {
        Error::AlreadyExists(_) => Error::AlreadyExists(format!("{what} already exists")),
        other => other,
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            if db.is_unique_violation() {
                return Error::AlreadyExists("a resource with this name already exists".into());
            }
            // PostgreSQL cannot store NUL in text (SQLite can): one answer for both.
            if db.code().as_deref() == Some("22021") {
                return Error::InvalidArgument(
                    "a text value contains a NUL character (\\u0000), which is not accepted".into(),
                );
            }
            if db.is_foreign_key_violation() {
                return Error::Conflict(
                    "the change refers to, or removes, a resource that other configuration uses"
                        .into(),
                );
            }
        }
        Error::Database(error)
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        error.log_if_internal();
        let (_, code, _) = error.kind().codes();
        tonic::Status::new(code, error.to_string())
    }
}
