//! The ML-DSA-65 primitive behind one small trait, so that the token code never names an
//! implementation. Two implement it: [`RustCrypto`] (the pure-Rust `ml-dsa` crate), always
//! compiled, and `AwsLc` (AWS-LC through `aws-lc-rs`), compiled with the `aws-lc` feature and
//! then the default, being about 7× faster at signing and 2.7× at verifying (README,
//! "Choosing a crypto backend"). [`backends`] lists those compiled in and
//! [`backend_named`] picks one by name, for benchmarks and cross-checks.
//!
//! Both derive a key from the same 32-byte seed (FIPS 204 ξ, the RFC 9964 private key), so a
//! key has the same public key and `kid` whichever backend expanded it, and each verifies the
//! other's signatures.
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
pub trait MlDsa65Backend: Send + Sync + fmt::Debug {
    /// The name [`backend_named`] knows it by: `rustcrypto` or `aws-lc`.
    fn name(&self) -> &'static str;
    /// The key expanded from `seed`. Fails only if the implementation cannot allocate or
    /// expand it, which no seed causes: every 32 bytes are a valid FIPS 204 seed.
    fn signer(&self, seed: &SigningSeed) -> Result<Box<dyn MessageSigner>, Error>;
    /// [`Error::InvalidPublicKey`] unless `public_key` is an encoded ML-DSA-65 public key.
    fn verifier(&self, public_key: &[u8]) -> Result<Box<dyn MessageVerifier>, Error>;
}

/// RustCrypto's pure-Rust `ml-dsa`: always compiled, the default without the `aws-lc` feature.
#[derive(Debug, Default, Clone, Copy)]
pub struct RustCrypto;

#[cfg(feature = "aws-lc")]
mod aws_lc;
#[cfg(feature = "aws-lc")]
pub use aws_lc::AwsLc;

#[cfg(feature = "aws-lc")]
static BACKENDS: [&dyn MlDsa65Backend; 2] = [&AwsLc, &RustCrypto];
#[cfg(not(feature = "aws-lc"))]
static BACKENDS: [&dyn MlDsa65Backend; 1] = [&RustCrypto];

/// Every backend compiled in, the default first.
pub fn backends() -> &'static [&'static dyn MlDsa65Backend] {
    &BACKENDS
}

/// The backend used when the caller names none: `AwsLc` when the `aws-lc` feature compiled
/// it in (enabling the feature is how a deployment chooses it), [`RustCrypto`] otherwise.
pub fn default_backend() -> &'static dyn MlDsa65Backend {
    backends()[0]
}

/// The compiled-in backend called `name` (see [`MlDsa65Backend::name`]).
pub fn backend_named(name: &str) -> Option<&'static dyn MlDsa65Backend> {
    backends().iter().copied().find(|b| b.name() == name)
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
        fn name(&self) -> &'static str {
            "rustcrypto"
        }

        fn signer(&self, seed: &SigningSeed) -> Result<Box<dyn MessageSigner>, Error> {
            let seed = ml_dsa::Seed::from(*seed.expose_secret());
            Ok(Box::new(Signer(SigningKey::<MlDsa65>::from_seed(&seed))))
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
    //! Every test runs against every backend compiled in; the `cross_` ones against every pair
    //! (signed by one, verified by the other), which with `aws-lc` includes both directions.

    use super::*;

    fn pairs() -> impl Iterator<Item = (&'static dyn MlDsa65Backend, &'static dyn MlDsa65Backend)> {
        backends()
            .iter()
            .flat_map(|&a| backends().iter().map(move |&b| (a, b)))
    }

    #[test]
    fn hedged_signatures_differ_and_verify() {
        for backend in backends() {
            let name = backend.name();
            let seed = SigningSeed::generate().unwrap();
            let signer = backend.signer(&seed).unwrap();
            let verifier = backend.verifier(&signer.public_key()).unwrap();
            let a = signer.sign(b"m").unwrap();
            let b = signer.sign(b"m").unwrap();
            assert_eq!(a.len(), SIGNATURE_LEN, "{name}");
            assert_ne!(a, b, "{name}: hedged signing must randomize");
            assert!(
                verifier.verify(b"m", &a) && verifier.verify(b"m", &b),
                "{name}"
            );
            assert!(!verifier.verify(b"n", &a), "{name}");
            assert!(!verifier.verify(b"m", &a[..SIGNATURE_LEN - 1]), "{name}");
            assert!(
                !verifier.verify(b"m", &[a.clone(), vec![0]].concat()),
                "{name}"
            );
        }
    }

    #[test]
    fn a_signature_verifies_only_under_its_own_context() {
        for backend in backends() {
            let name = backend.name();
            let seed = SigningSeed::generate().unwrap();
            let signer = backend.signer(&seed).unwrap();
            let verifier = backend.verifier(&signer.public_key()).unwrap();
            let in_role = signer.sign_in_context(b"m", b"revocast/test/v1").unwrap();
            assert_eq!(in_role.len(), SIGNATURE_LEN, "{name}");
            assert!(
                verifier.verify_in_context(b"m", b"revocast/test/v1", &in_role),
                "{name}"
            );
            assert!(
                !verifier.verify_in_context(b"m", b"revocast/test/v2", &in_role),
                "{name}"
            );
            assert!(!verifier.verify(b"m", &in_role), "{name}");
            assert!(
                !verifier.verify_in_context(b"n", b"revocast/test/v1", &in_role),
                "{name}"
            );
            let plain = signer.sign(b"m").unwrap();
            assert!(
                !verifier.verify_in_context(b"m", b"revocast/test/v1", &plain),
                "{name}"
            );
            let longest = [7; MAX_CONTEXT_LEN];
            let at_the_limit = signer.sign_in_context(b"m", &longest).unwrap();
            assert!(
                verifier.verify_in_context(b"m", &longest, &at_the_limit),
                "{name}"
            );
            let too_long = [7; MAX_CONTEXT_LEN + 1];
            assert!(signer.sign_in_context(b"m", &too_long).is_err(), "{name}");
            assert!(
                !verifier.verify_in_context(b"m", &too_long, &at_the_limit),
                "{name}"
            );
        }
    }

    #[test]
    fn cross_one_seed_gives_one_public_key() {
        let seed = SigningSeed::generate().unwrap();
        let keys: Vec<Vec<u8>> = backends()
            .iter()
            .map(|b| b.signer(&seed).unwrap().public_key())
            .collect();
        for (backend, key) in backends().iter().zip(&keys) {
            assert_eq!(key.len(), PUBLIC_KEY_LEN, "{}", backend.name());
            assert_eq!(
                key,
                &keys[0],
                "{} vs {}",
                backend.name(),
                backends()[0].name()
            );
        }
    }

    #[test]
    fn cross_signed_by_one_verified_by_the_other() {
        for (signing, verifying) in pairs() {
            let names = format!(
                "signed by {}, verified by {}",
                signing.name(),
                verifying.name()
            );
            let seed = SigningSeed::generate().unwrap();
            let signer = signing.signer(&seed).unwrap();
            let verifier = verifying.verifier(&signer.public_key()).unwrap();
            let message = b"eyJhbGciOiJNTC1EU0EtNjUifQ.e30";

            let plain = signer.sign(message).unwrap();
            assert!(verifier.verify(message, &plain), "{names}");
            let mut flipped = plain.clone();
            flipped[SIGNATURE_LEN / 2] ^= 1;
            assert!(!verifier.verify(message, &flipped), "{names}");
            assert!(!verifier.verify(b"eyJ", &plain), "{names}");

            let context = b"revocast/checkpoint/v1";
            let in_role = signer.sign_in_context(message, context).unwrap();
            assert!(
                verifier.verify_in_context(message, context, &in_role),
                "{names}"
            );
            assert!(!verifier.verify(message, &in_role), "{names}");
            assert!(
                !verifier.verify_in_context(message, b"revocast/checkpoint/v2", &in_role),
                "{names}"
            );
            assert!(
                !verifier.verify_in_context(message, context, &plain),
                "{names}"
            );

            // Another key's signature.
            let other = signing.signer(&SigningSeed::generate().unwrap()).unwrap();
            assert!(
                !verifier.verify(message, &other.sign(message).unwrap()),
                "{names}"
            );
        }
    }

    #[test]
    fn the_feature_chooses_the_default_and_names_find_backends() {
        let expected = if cfg!(feature = "aws-lc") {
            "aws-lc"
        } else {
            "rustcrypto"
        };
        assert_eq!(default_backend().name(), expected);
        for backend in backends() {
            assert_eq!(
                backend_named(backend.name()).unwrap().name(),
                backend.name()
            );
        }
        assert!(backend_named("rustcrypto").is_some());
        assert_eq!(backend_named("aws-lc").is_some(), cfg!(feature = "aws-lc"));
        assert!(backend_named("openssl").is_none());
    }

    #[test]
    fn seed_debug_is_redacted() {
        let seed = SigningSeed::from_bytes([7; 32]);
        assert_eq!(format!("{seed:?}"), "SigningSeed(<redacted>)");
    }

    #[test]
    fn wrong_length_public_key_is_an_error() {
        for backend in backends() {
            for len in [0, 10, PUBLIC_KEY_LEN - 1, PUBLIC_KEY_LEN + 1] {
                assert!(
                    backend.verifier(&vec![0; len]).is_err(),
                    "{} accepted {len} bytes",
                    backend.name()
                );
            }
        }
    }
}
