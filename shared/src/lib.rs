//! Everything the authority and the agents must agree on. With its default features the crate
//! does no I/O and needs no async runtime; the `runtime` feature, off by default, adds the one
//! module that does, for the binaries.
//!
//! - [`ids`]: newtypes for key ids, revocation ids, sequence numbers, epochs and timestamps.
//! - [`crypto`]: the small ML-DSA-65 backend trait and its implementations: RustCrypto's, and
//!   AWS-LC's with the `aws-lc` feature.
//! - [`keys`]: signing and verifying keys, the `AKP` JWK and its RFC 7638 thumbprint.
//! - [`jws`]: RFC 7515 compact serialization with RFC 9964 ML-DSA-65, untrusted-input parsing.
//! - [`token`]: access-token claims, issuing, and the typestate `UnverifiedToken` →
//!   `VerifiedToken` verification under an explicit [`token::Validation`] policy.
//! - [`event`]: revocation events and control messages of the wire protocol.
//! - [`tlog`]: the revocation transparency log: Merkle tree, proofs, signed checkpoints.
//! - [`revset`]: the in-memory revocation set both sides apply events to and check tokens against.
//! - [`duration`]: the duration syntax of the binaries' flags (`900`, `500ms`, `1h 30m`).
//! - [`error`]: the crate's error types.
//! - `runtime` (feature `runtime`): the shutdown signal (SIGINT, SIGTERM) and the tracing set-up
//!   of the authority, the agent's sidecar and the benchmark.

// The `aws-lc` feature brings the one module with `unsafe` code (crypto/aws_lc/ffi.rs, calls
// into AWS-LC), which allows it for itself; everything else is denied it. Without the feature
// nothing may allow it.
#![cfg_attr(not(feature = "aws-lc"), forbid(unsafe_code))]
#![cfg_attr(feature = "aws-lc", deny(unsafe_code))]

pub mod crypto;
pub mod duration;
pub mod error;
pub mod event;
pub mod ids;
pub mod jws;
pub mod keys;
pub mod revset;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod tlog;
pub mod token;

pub use error::{Error, VerifyError};
pub use ids::{Epoch, KeyId, RevocationId, Seq, UnixMillis, UnixSeconds};
pub use keys::{Jwk, JwkSet, LogSigningKey, LogVerifyingKey, SigningKey, VerifyingKey};
pub use token::{Claims, UnverifiedToken, Validation, VerifiedToken};

/// The base64url alphabet without padding, as JOSE requires. Decoding is strict: padding,
/// non-alphabet bytes and non-canonical trailing bits are all rejected.
pub(crate) const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;
