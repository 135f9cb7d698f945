//! The crate's error types: [`Error`] for failures of the caller's own operations (signing, key
//! decoding) and [`VerifyError`], the closed set of reasons a token is refused.

use std::fmt;

/// Failures of signing and key handling. Crypto causes stay opaque on purpose: an attacker learns
/// nothing from "signing failed" that a detailed cause would tell them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the operating system's random number generator failed")]
    Randomness,
    #[error("ML-DSA signing failed")]
    Signing,
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    #[error("invalid JWK: {0}")]
    InvalidJwk(&'static str),
    #[error("token is larger than {max} bytes once encoded")]
    TokenTooLarge { max: usize },
    #[error("claims could not be encoded")]
    Encoding(#[source] serde_json::Error),
}

/// Why a token was refused. The [`code`](VerifyError::code) strings are part of the public
/// contract: they appear in `/v1/verify` answers and in agent verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyError {
    /// Not a well-formed compact JWS or access token of ours (segments, base64url, JSON, claims,
    /// forbidden header parameters, oversize).
    Malformed,
    /// `alg` is missing or is not `ML-DSA-65`.
    UnsupportedAlgorithm,
    /// The `kid` names no key the verifier knows.
    UnknownKey,
    /// The signature does not verify under the named key.
    InvalidSignature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    NotYetValid,
    /// `iss` differs from the policy's issuer (extension of the contract's codes).
    InvalidIssuer,
    /// `aud` does not contain the policy's audience (extension of the contract's codes).
    InvalidAudience,
    /// Genuine, but revoked: by token, subject generation, session or key.
    Revoked,
}

impl VerifyError {
    /// The wire code, e.g. `token_expired`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::InvalidSignature => "invalid_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::InvalidIssuer => "invalid_issuer",
            Self::InvalidAudience => "invalid_audience",
            Self::Revoked => "token_revoked",
        }
    }

    /// Every variant, for exhaustive tests and metric label pre-registration.
    pub const ALL: [VerifyError; 9] = [
        Self::Malformed,
        Self::UnsupportedAlgorithm,
        Self::UnknownKey,
        Self::InvalidSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::InvalidIssuer,
        Self::InvalidAudience,
        Self::Revoked,
    ];
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for VerifyError {}
