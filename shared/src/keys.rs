//! Signing and verifying keys and their public form, the RFC 9964 `AKP` JWK whose `kid` is the
//! RFC 7638 thumbprint over `{"alg","kty","pub"}`.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::{
    MessageSigner, MessageVerifier, MlDsa65Backend, PUBLIC_KEY_LEN, SigningSeed, default_backend,
};
use crate::{B64, Error, KeyId};

/// The only algorithm revocast signs or accepts.
pub const ALG: &str = "ML-DSA-65";
/// RFC 9964 key type for algorithm key pairs.
pub const KTY: &str = "AKP";

/// RFC 7638 thumbprint of an ML-DSA-65 public key: SHA-256 over the canonical JSON of the
/// required members in lexicographic order.
pub fn thumbprint(public_key: &[u8]) -> KeyId {
    let canonical = format!(
        r#"{{"alg":"{ALG}","kty":"{KTY}","pub":"{}"}}"#,
        B64.encode(public_key)
    );
    KeyId::from_bytes(Sha256::digest(canonical.as_bytes()).into())
}

/// A public key as published in the JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub alg: String,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    pub kid: String,
    #[serde(rename = "pub")]
    pub public: String,
}

/// `{"keys":[…]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// A private signing key: its seed, the expanded key used to sign, and its public half.
pub struct SigningKey {
    seed: SigningSeed,
    signer: Box<dyn MessageSigner>,
    public: VerifyingKey,
}

impl SigningKey {
    /// Expand `seed` with the default backend.
    pub fn from_seed(seed: SigningSeed) -> Self {
        // Every 32 bytes are a valid seed (see from_seed_with).
        Self::from_seed_with(seed, default_backend())
            .expect("the default backend expands every seed")
    }

    /// Expand `seed` with `backend`. No seed makes this fail: only a backend that cannot
    /// allocate, or that produces a public key it cannot itself decode (a backend bug).
    pub fn from_seed_with(seed: SigningSeed, backend: &dyn MlDsa65Backend) -> Result<Self, Error> {
        let signer = backend.signer(&seed)?;
        let public = VerifyingKey::from_public_key_with(&signer.public_key(), backend)?;
        Ok(Self {
            seed,
            signer,
            public,
        })
    }

    /// A new key from fresh OS randomness.
    pub fn generate() -> Result<Self, Error> {
        Ok(Self::from_seed(SigningSeed::generate()?))
    }

    pub fn kid(&self) -> KeyId {
        self.public.kid
    }

    pub fn seed(&self) -> &SigningSeed {
        &self.seed
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Hedged ML-DSA-65 signature (empty context) over `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.signer.sign(message)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .field("seed", &self.seed)
            .finish()
    }
}

/// A public key able to verify signatures, named by its thumbprint. Cheap to clone.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: KeyId,
    public_key: Arc<[u8]>,
    verifier: Arc<dyn MessageVerifier>,
}

impl VerifyingKey {
    /// Decode an encoded ML-DSA-65 public key with the default backend.
    pub fn from_public_key(public_key: &[u8]) -> Result<Self, Error> {
        Self::from_public_key_with(public_key, default_backend())
    }

    pub fn from_public_key_with(
        public_key: &[u8],
        backend: &dyn MlDsa65Backend,
    ) -> Result<Self, Error> {
        if public_key.len() != PUBLIC_KEY_LEN {
            return Err(Error::InvalidPublicKey(
                "an ML-DSA-65 public key is 1952 bytes",
            ));
        }
        Ok(Self {
            kid: thumbprint(public_key),
            verifier: Arc::from(backend.verifier(public_key)?),
            public_key: Arc::from(public_key),
        })
    }

    /// Accept a JWK only if it is an `AKP`/`ML-DSA-65` key whose `kid` is its own thumbprint, so
    /// a JWKS cannot name one key with another's id.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, Error> {
        Self::from_jwk_with(jwk, default_backend())
    }

    /// [`VerifyingKey::from_jwk`], verifying with `backend`.
    pub fn from_jwk_with(jwk: &Jwk, backend: &dyn MlDsa65Backend) -> Result<Self, Error> {
        if jwk.kty != KTY {
            return Err(Error::InvalidJwk("kty must be AKP"));
        }
        if jwk.alg != ALG {
            return Err(Error::InvalidJwk("alg must be ML-DSA-65"));
        }
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(Error::InvalidJwk("use must be sig"));
        }
        let public = B64
            .decode(&jwk.public)
            .map_err(|_| Error::InvalidJwk("pub is not unpadded base64url"))?;
        let key = Self::from_public_key_with(&public, backend)?;
        if jwk.kid != key.kid.to_string() {
            return Err(Error::InvalidJwk(
                "kid is not the RFC 7638 thumbprint of pub",
            ));
        }
        Ok(key)
    }

    pub fn kid(&self) -> KeyId {
        self.kid
    }

    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The JWK published for this key.
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: KTY.into(),
            alg: ALG.into(),
            use_: Some("sig".into()),
            kid: self.kid.to_string(),
            public: B64.encode(&self.public_key),
        }
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify(message, signature)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwk_round_trips_and_kid_must_match() {
        let key = SigningKey::generate().unwrap();
        let jwk = key.verifying_key().to_jwk();
        let back = VerifyingKey::from_jwk(&jwk).unwrap();
        assert_eq!(back.kid(), key.kid());

        let other = SigningKey::generate().unwrap();
        let mut lying = jwk.clone();
        lying.kid = other.kid().to_string();
        assert!(VerifyingKey::from_jwk(&lying).is_err());

        let mut wrong_alg = jwk.clone();
        wrong_alg.alg = "ML-DSA-44".into();
        assert!(VerifyingKey::from_jwk(&wrong_alg).is_err());

        let mut short = jwk;
        short.public.truncate(100);
        assert!(VerifyingKey::from_jwk(&short).is_err());
    }

    #[test]
    fn signing_key_debug_hides_the_seed() {
        let key = SigningKey::from_seed(SigningSeed::from_bytes([0x42; 32]));
        let dbg = format!("{key:?}");
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains("42, 42"));
    }
}
