//! The ML-DSA-65 primitive behind one small trait, so a faster backend (e.g. `aws-lc-rs`) can be
//! added as a cargo feature without touching the token code. [`RustCrypto`] (the `ml-dsa`
//! crate) is the default.
//!
//! Signing here is always *hedged* (FIPS 204 randomized signing: fresh randomness mixed with the
//! key), which protects against fault and side-channel attacks on deterministic signing. The
//! deterministic variant exists only in this crate's tests, to reproduce the RFC 9964 vector.

use std::fmt;

use zeroize::Zeroizing;

use crate::Error;

/// Length of an ML-DSA private key seed (FIPS 204 ξ), the private key format of RFC 9964 §4.
pub const SEED_LEN: usize = 32;
/// Length of an encoded ML-DSA-65 public key.
pub const PUBLIC_KEY_LEN: usize = 1952;
/// Length of an encoded ML-DSA-65 signature.
pub const SIGNATURE_LEN: usize = 3309;

/// The 32-byte private key seed. Zeroized on drop; `Debug` never prints it.
#[derive(Clone)]
pub struct SigningSeed(Zeroizing<[u8; SEED_LEN]>);

impl SigningSeed {
    /// A fresh seed from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        getrandom::fill(seed.as_mut()).map_err(|_| Error::Randomness)?;
        Ok(Self(seed))
    }

    pub fn from_bytes(bytes: [u8; SEED_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Wrap a seed read from storage; `None` unless exactly [`SEED_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; SEED_LEN] = bytes.try_into().ok()?;
        Some(Self::from_bytes(arr))
    }

    /// The secret bytes, for persisting the key. Named so that every use stands out in review.
    pub fn expose_secret(&self) -> &[u8; SEED_LEN] {
        &self.0
    }
}

impl fmt::Debug for SigningSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSeed(<redacted>)")
    }
}

/// The longest FIPS 204 context string (its length is encoded in one byte).
pub const MAX_CONTEXT_LEN: usize = 255;

/// Signs messages with one private key (pure ML-DSA-65, hedged).
///
/// The context string (FIPS 204 `ctx`) separates roles: a signature made under one context
/// never verifies under another, so a key used for two purposes still cannot have one
/// purpose's signature passed off as the other's. JWS (RFC 9964) uses the empty context.
pub trait MessageSigner: Send + Sync {
    /// The encoded public key ([`PUBLIC_KEY_LEN`] bytes).
    fn public_key(&self) -> Vec<u8>;
    /// A hedged signature over `message` under `context` ([`SIGNATURE_LEN`] bytes);
    /// [`Error::Signing`] for a context longer than [`MAX_CONTEXT_LEN`].
    fn sign_in_context(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>, Error>;
    /// A hedged signature over `message` under the empty context.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.sign_in_context(message, &[])
    }
}

/// Verifies signatures under one public key (pure ML-DSA-65).
pub trait MessageVerifier: Send + Sync {
    /// `true` only for a valid signature of exactly [`SIGNATURE_LEN`] bytes made under
    /// exactly `context`.
    fn verify_in_context(&self, message: &[u8], context: &[u8], signature: &[u8]) -> bool;
    /// [`MessageVerifier::verify_in_context`] under the empty context.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify_in_context(message, &[], signature)
    }
}

/// A source of ML-DSA-65 signers and verifiers.
pub trait MlDsa65Backend: Send + Sync {
    fn signer(&self, seed: &SigningSeed) -> Box<dyn MessageSigner>;
    fn verifier(&self, public_key: &[u8]) -> Result<Box<dyn MessageVerifier>, Error>;
}

/// The default backend, RustCrypto's pure-Rust `ml-dsa`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RustCrypto;

/// The backend used when the caller names none.
pub fn default_backend() -> &'static dyn MlDsa65Backend {
    &RustCrypto
}

mod rustcrypto {
    use ml_dsa::{EncodedVerifyingKey, MlDsa65, Signature, SigningKey, VerifyingKey};

    use super::*;

    pub(super) struct Signer(pub(super) SigningKey<MlDsa65>);
    pub(super) struct Verifier(VerifyingKey<MlDsa65>);

    impl MessageSigner for Signer {
        fn public_key(&self) -> Vec<u8> {
            use ml_dsa::Keypair;
            self.0.verifying_key().encode().to_vec()
        }

        fn sign_in_context(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>, Error> {
            let sig = self
                .0
                .expanded_key()
                .sign_randomized(message, context, &mut getrandom::SysRng)
                .map_err(|_| Error::Signing)?;
            Ok(sig.encode().to_vec())
        }
    }

    impl MessageVerifier for Verifier {
        fn verify_in_context(&self, message: &[u8], context: &[u8], signature: &[u8]) -> bool {
            let Ok(encoded) = signature.try_into() else {
                return false;
            };
            let Some(sig) = Signature::<MlDsa65>::decode(encoded) else {
                return false;
            };
            self.0.verify_with_context(message, context, &sig)
        }
    }

    impl MlDsa65Backend for RustCrypto {
        fn signer(&self, seed: &SigningSeed) -> Box<dyn MessageSigner> {
            let seed = ml_dsa::Seed::from(*seed.expose_secret());
            Box::new(Signer(SigningKey::<MlDsa65>::from_seed(&seed)))
        }

        fn verifier(&self, public_key: &[u8]) -> Result<Box<dyn MessageVerifier>, Error> {
            let encoded: &EncodedVerifyingKey<MlDsa65> = public_key
                .try_into()
                .map_err(|_| Error::InvalidPublicKey("an ML-DSA-65 public key is 1952 bytes"))?;
            Ok(Box::new(Verifier(VerifyingKey::decode(encoded))))
        }
    }

    /// Deterministic signing (FIPS 204 with rnd = 0), only to reproduce published vectors.
    #[cfg(test)]
    pub(crate) fn sign_deterministic(seed: &SigningSeed, message: &[u8]) -> Vec<u8> {
        sign_deterministic_in_context(seed, message, &[])
    }

    /// Deterministic signing under a context, for the worked example in PROTOCOL.md.
    #[cfg(test)]
    pub(crate) fn sign_deterministic_in_context(
        seed: &SigningSeed,
        message: &[u8],
        context: &[u8],
    ) -> Vec<u8> {
        let seed = ml_dsa::Seed::from(*seed.expose_secret());
        let key = SigningKey::<MlDsa65>::from_seed(&seed);
        key.expanded_key()
            .sign_deterministic(message, context)
            .expect("test contexts are short")
            .encode()
            .to_vec()
    }
}

#[cfg(test)]
pub(crate) use rustcrypto::{sign_deterministic, sign_deterministic_in_context};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hedged_signatures_differ_and_verify() {
        let seed = SigningSeed::generate().unwrap();
        let signer = default_backend().signer(&seed);
        let verifier = default_backend().verifier(&signer.public_key()).unwrap();
        let a = signer.sign(b"m").unwrap();
        let b = signer.sign(b"m").unwrap();
        assert_eq!(a.len(), SIGNATURE_LEN);
        assert_ne!(a, b, "hedged signing must randomize");
        assert!(verifier.verify(b"m", &a) && verifier.verify(b"m", &b));
        assert!(!verifier.verify(b"n", &a));
        assert!(!verifier.verify(b"m", &a[..SIGNATURE_LEN - 1]));
        assert!(!verifier.verify(b"m", &[a.clone(), vec![0]].concat()));
    }

    #[test]
    fn a_signature_verifies_only_under_its_own_context() {
        let seed = SigningSeed::generate().unwrap();
        let signer = default_backend().signer(&seed);
        let verifier = default_backend().verifier(&signer.public_key()).unwrap();
        let in_role = signer.sign_in_context(b"m", b"revocast/test/v1").unwrap();
        assert!(verifier.verify_in_context(b"m", b"revocast/test/v1", &in_role));
        assert!(!verifier.verify_in_context(b"m", b"revocast/test/v2", &in_role));
        assert!(!verifier.verify(b"m", &in_role));
        let plain = signer.sign(b"m").unwrap();
        assert!(!verifier.verify_in_context(b"m", b"revocast/test/v1", &plain));
        assert!(
            signer
                .sign_in_context(b"m", &[0; MAX_CONTEXT_LEN + 1])
                .is_err()
        );
    }

    #[test]
    fn seed_debug_is_redacted() {
        let seed = SigningSeed::from_bytes([7; 32]);
        assert_eq!(format!("{seed:?}"), "SigningSeed(<redacted>)");
    }

    #[test]
    fn wrong_length_public_key_is_an_error() {
        assert!(default_backend().verifier(&[0; 10]).is_err());
    }
}
