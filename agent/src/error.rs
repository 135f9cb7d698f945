//! The agent's errors: [`Rejection`], what a verify answers when a token is not accepted, and
//! [`Error`], what can go wrong starting or syncing.

use std::fmt;

use revocast_shared::VerifyError;

/// Why a token was not accepted. [`code`](Self::code) is the contract's wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The token itself is bad: malformed, wrong algorithm, unknown key, bad signature,
    /// expired, not yet valid, wrong issuer or audience, or revoked.
    Invalid(VerifyError),
    /// The agent cannot vouch for its revocation set: not yet synced, or stale and failing
    /// closed.
    Unavailable,
}

impl Rejection {
    pub const fn code(self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Unavailable => "unavailable",
        }
    }

    /// Every code a verify can answer, for metrics.
    pub fn all_codes() -> impl Iterator<Item = &'static str> {
        VerifyError::ALL
            .iter()
            .map(|e| e.code())
            .chain(["unavailable"])
    }
}

impl From<VerifyError> for Rejection {
    fn from(e: VerifyError) -> Self {
        Self::Invalid(e)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for Rejection {}

/// Starting or syncing failed. Each variant's message says only what failed; the cause is its
/// [`source`](std::error::Error::source), for a chain printer (`main`'s, or `tracing` given
/// the error as `&dyn Error`) to add once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("request to the authority failed")]
    Http(#[from] reqwest::Error),
    #[error("the authority answered {status} to {what}")]
    Status { what: &'static str, status: u16 },
    #[error("WebSocket failed")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("the authority sent something outside the protocol: {0}")]
    Protocol(String),
    #[error("the stream went silent")]
    Silent,
    #[error("the stream ended")]
    Ended,
    #[error("the authority's key set is unusable")]
    Keys(#[from] revocast_shared::Error),
    #[error("the transparency log did not verify")]
    Log(#[from] revocast_shared::tlog::Mismatch),
}
