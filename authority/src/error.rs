//! Errors: [`Error`] for the authority's own failures (configuration, storage, I/O) and
//! [`ApiError`], the one JSON shape every HTTP error takes:
//! `{"error": CODE, "error_description": TEXT}`.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The authority's failures outside a single request. Each variant's message says only what
/// failed; the cause is its [`source`](std::error::Error::source), for a chain printer (such as
/// `main`'s) to add once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("storage")]
    Store(#[from] StoreError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] revocast_shared::Error),
    /// A secret in the data directory that other users can reach and this process cannot
    /// make private (`what` names the path and its mode): a start refused like a
    /// configuration error.
    #[error("invalid configuration: {what}")]
    Exposed {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The store was first started with another issuer: tokens it already issued carry
    /// `stored`, which this process's own verification would reject. A start refused like a
    /// configuration error.
    #[error(
        "invalid configuration: this database records the issuer {stored:?}, but this process \
         is configured with {configured:?}; every replica of one database, and every restart \
         of one data directory, must use the same issuer: pass --issuer {stored:?} explicitly \
         (by default the issuer is the URL of --listen)"
    )]
    IssuerMismatch { stored: String, configured: String },
    /// The stored log no longer is the tree this authority signed (see `tlog::audit`): a row
    /// was deleted or changed behind its back. It refuses to serve or sign anything.
    #[error(
        "the transparency log does not extend its last signed checkpoint: {0}; refusing to          serve or sign"
    )]
    LogTampered(String),
}

/// Failures of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the commit failed; nothing of its batch was written")]
    CommitFailed,
    #[error("the store did not answer in time")]
    TimedOut,
    #[error("the commit queue is closed (shutting down)")]
    Closed,
    /// The commit is durable, but this replica could not read the log up to it in time, so it
    /// does not enforce it yet: the answer must not say it is done. Retrying is safe (every
    /// revocation is idempotent) and answers once it is applied.
    #[error("committed durably, but not yet applied on this replica")]
    NotApplied,
    /// A rule the store keeps broke inside this process (a bug, not bad data).
    #[error("internal invariant broken: {0}")]
    Invariant(&'static str),
}

/// An HTTP error in the contract's shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: Cow<'static, str>,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    /// 429 `rate_limited`, with `Retry-After`.
    pub fn rate_limited(description: impl Into<Cow<'static, str>>, wait: Duration) -> Self {
        Self {
            retry_after: Some(wait),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", description)
        }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 401: no credentials, or credentials that match no key.
    pub fn unauthorized(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    /// 403: a valid key whose scope does not allow the request.
    pub fn forbidden(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "insufficient_scope", description)
    }

    pub fn not_found(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", description)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }

    /// 503: the store cannot take the request right now; the client may retry.
    pub fn unavailable(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        )
    }

    /// 500, with the cause logged (never sent to the client).
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        )
    }

    /// The same error with another `error` code (e.g. `token_expired` for a 400).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = &e as &dyn std::error::Error, "store failure");
        match e {
            StoreError::NotApplied => Self::unavailable(
                "the revocation is durable, but this replica cannot read the log to apply it \
                 yet; retrying the same request is safe",
            ),
            _ => Self::unavailable("storage is unavailable; retry later"),
        }
    }
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody<'a> {
    /// A machine-readable code, e.g. `invalid_request`, `token_expired`, `invalid_client`.
    error: &'a str,
    /// What went wrong, for a person.
    error_description: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(ErrorBody {
            error: self.code,
            error_description: &self.description,
        });
        let mut response = (self.status, body).into_response();
        let challenge = match self.status {
            StatusCode::UNAUTHORIZED => Some(r#"Bearer realm="revocast""#),
            StatusCode::FORBIDDEN => Some(r#"Bearer realm="revocast", error="insufficient_scope""#),
            _ => None,
        };
        if let Some(c) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
