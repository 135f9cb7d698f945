//! Signing and verifying keys and their public form, the RFC 9964 `AKP` JWK whose `kid` is the
//! RFC 7638 thumbprint over `{"alg","kty","pub"}`.
//!
//! Keys have one of two roles, each its own type so that the compiler keeps them apart:
//! [`SigningKey`]/[`VerifyingKey`] sign and verify access tokens (JWS, `"use":"sig"` in the
//! JWKS); [`LogSigningKey`]/[`LogVerifyingKey`] sign and verify the transparency log's
//! checkpoints and snapshots (`"use":"revocast-log"`). Neither converts into the other, the
//! token path refuses a `revocast-log` JWK, and the log path refuses any other; and since each
//! role signs under its own FIPS 204 context, even one key material used in both roles would
//! not make a signature of one role verify in the other.

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
/// JWK `use` of token keys (RFC 7517 §4.2).
pub const TOKEN_KEY_USE: &str = "sig";
/// JWK `use` of transparency-log keys: a value of our own, so that generic JOSE libraries,
/// which pick `sig` keys (or keys without `use`) for tokens, never pick a log key.
pub const LOG_KEY_USE: &str = "revocast-log";

/// What a published key is for, from its JWK `use`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyRole {
    /// Signs access tokens: `"use":"sig"` or no `use`.
    Token,
    /// Signs the transparency log's checkpoints and snapshots: `"use":"revocast-log"`.
    Log,
}

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

    /// Hedged ML-DSA-65 signature under a FIPS 204 context; only [`LogSigningKey`] uses it.
    fn sign_in_context(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>, Error> {
        self.signer.sign_in_context(message, context)
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

    /// Accept a JWK only if it is a token key (`"use":"sig"` or no `use`; never a
    /// `revocast-log` key) of type `AKP`/`ML-DSA-65` whose `kid` is its own thumbprint, so a
    /// JWKS cannot name one key with another's id.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, Error> {
        Self::from_jwk_with(jwk, default_backend())
    }

    /// [`VerifyingKey::from_jwk`], verifying with `backend`.
    pub fn from_jwk_with(jwk: &Jwk, backend: &dyn MlDsa65Backend) -> Result<Self, Error> {
        match jwk.role() {
            Some(KeyRole::Token) => {}
            Some(KeyRole::Log) => {
                return Err(Error::InvalidJwk(
                    "a revocast-log key never verifies tokens",
                ));
            }
            None => return Err(Error::InvalidJwk("use must be sig")),
        }
        Self::from_jwk_material(jwk, backend)
    }

    /// The key of an `AKP`/`ML-DSA-65` JWK whose `kid` is its own thumbprint, whatever its
    /// `use` (the callers check that).
    fn from_jwk_material(jwk: &Jwk, backend: &dyn MlDsa65Backend) -> Result<Self, Error> {
        if jwk.kty != KTY {
            return Err(Error::InvalidJwk("kty must be AKP"));
        }
        if jwk.alg != ALG {
            return Err(Error::InvalidJwk("alg must be ML-DSA-65"));
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
            use_: Some(TOKEN_KEY_USE.into()),
            kid: self.kid.to_string(),
            public: B64.encode(&self.public_key),
        }
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify(message, signature)
    }

    /// Verification under a FIPS 204 context; only [`LogVerifyingKey`] uses it.
    fn verify_in_context(&self, message: &[u8], context: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify_in_context(message, context, signature)
    }
}

impl Jwk {
    /// The role its `use` gives it; `None` for a `use` revocast does not know (such a key is
    /// used for nothing).
    pub fn role(&self) -> Option<KeyRole> {
        match self.use_.as_deref() {
            None | Some(TOKEN_KEY_USE) => Some(KeyRole::Token),
            Some(LOG_KEY_USE) => Some(KeyRole::Log),
            Some(_) => None,
        }
    }
}

/// A JWKS's usable keys, by role (see [`JwkSet::by_role`]).
#[derive(Debug, Default)]
pub struct KeysByRole {
    pub token: Vec<VerifyingKey>,
    pub log: Vec<LogVerifyingKey>,
    /// Keys used for nothing, by `kid`, with the reason.
    pub skipped: Vec<(String, Error)>,
}

impl JwkSet {
    /// Split the set into token keys and log keys. A JWK that is unusable (another `kty`,
    /// `alg` or `use`, a `kid` that is not its thumbprint) is skipped; so is a public key
    /// published in both roles, in both: keys are never shared between roles.
    pub fn by_role(&self) -> KeysByRole {
        self.by_role_with(default_backend())
    }

    /// [`JwkSet::by_role`], verifying with `backend` (an agent's configured backend).
    pub fn by_role_with(&self, backend: &dyn MlDsa65Backend) -> KeysByRole {
        let mut out = KeysByRole::default();
        for jwk in &self.keys {
            let decoded = match jwk.role() {
                Some(KeyRole::Token) => {
                    VerifyingKey::from_jwk_with(jwk, backend).map(|k| (KeyRole::Token, k))
                }
                Some(KeyRole::Log) => {
                    LogVerifyingKey::from_jwk_with(jwk, backend).map(|k| (KeyRole::Log, k.0))
                }
                None => Err(Error::InvalidJwk("use is neither sig nor revocast-log")),
            };
            match decoded {
                Ok((KeyRole::Token, key)) => out.token.push(key),
                Ok((KeyRole::Log, key)) => out.log.push(LogVerifyingKey(key)),
                Err(e) => out.skipped.push((jwk.kid.clone(), e)),
            }
        }
        let shared: Vec<KeyId> = out
            .token
            .iter()
            .map(VerifyingKey::kid)
            .filter(|kid| out.log.iter().any(|l| l.kid() == *kid))
            .collect();
        if !shared.is_empty() {
            out.token.retain(|k| !shared.contains(&k.kid()));
            out.log.retain(|k| !shared.contains(&k.kid()));
            for kid in shared {
                out.skipped.push((
                    kid.to_string(),
                    Error::InvalidJwk("the same key is published as a token key and a log key"),
                ));
            }
        }
        out
    }
}

/// The transparency log's private key: signs checkpoints and snapshot digests, never tokens.
pub struct LogSigningKey(SigningKey);

impl LogSigningKey {
    /// Expand `seed` with the default backend.
    pub fn from_seed(seed: SigningSeed) -> Self {
        Self(SigningKey::from_seed(seed))
    }

    /// Expand `seed` with `backend` (see [`SigningKey::from_seed_with`]).
    pub fn from_seed_with(seed: SigningSeed, backend: &dyn MlDsa65Backend) -> Result<Self, Error> {
        SigningKey::from_seed_with(seed, backend).map(Self)
    }

    /// A new key from fresh OS randomness.
    pub fn generate() -> Result<Self, Error> {
        SigningKey::generate().map(Self)
    }

    pub fn kid(&self) -> KeyId {
        self.0.kid()
    }

    pub fn seed(&self) -> &SigningSeed {
        self.0.seed()
    }

    /// The public half, in its log role.
    pub fn verifying_key(&self) -> LogVerifyingKey {
        LogVerifyingKey(self.0.verifying_key().clone())
    }

    /// A signature under `context`: the `tlog` module's checkpoint and snapshot contexts.
    pub(crate) fn sign_in_context(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.sign_in_context(message, context)
    }
}

impl fmt::Debug for LogSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSigningKey")
            .field("kid", &self.0.kid())
            .field("seed", self.0.seed())
            .finish()
    }
}

/// The transparency log's public key, as published in the JWKS with `"use":"revocast-log"`.
/// Verifies checkpoints and snapshot digests; no token API accepts it. Cheap to clone.
#[derive(Clone)]
pub struct LogVerifyingKey(VerifyingKey);

impl LogVerifyingKey {
    /// Decode an encoded ML-DSA-65 public key as a log key.
    pub fn from_public_key(public_key: &[u8]) -> Result<Self, Error> {
        VerifyingKey::from_public_key(public_key).map(Self)
    }

    /// Accept a JWK only if it is marked `"use":"revocast-log"` and is otherwise a valid
    /// `AKP`/`ML-DSA-65` key whose `kid` is its thumbprint.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, Error> {
        Self::from_jwk_with(jwk, default_backend())
    }

    /// [`LogVerifyingKey::from_jwk`], verifying with `backend`.
    pub fn from_jwk_with(jwk: &Jwk, backend: &dyn MlDsa65Backend) -> Result<Self, Error> {
        if jwk.role() != Some(KeyRole::Log) {
            return Err(Error::InvalidJwk("a log key's use must be revocast-log"));
        }
        VerifyingKey::from_jwk_material(jwk, backend).map(Self)
    }

    pub fn kid(&self) -> KeyId {
        self.0.kid()
    }

    pub fn public_key(&self) -> &[u8] {
        self.0.public_key()
    }

    /// The JWK published for this key: `"use":"revocast-log"`.
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            use_: Some(LOG_KEY_USE.into()),
            ..self.0.to_jwk()
        }
    }

    pub(crate) fn verify_in_context(
        &self,
        message: &[u8],
        context: &[u8],
        signature: &[u8],
    ) -> bool {
        self.0.verify_in_context(message, context, signature)
    }
}

impl fmt::Debug for LogVerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogVerifyingKey")
            .field("kid", &self.0.kid())
            .finish()
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
    fn log_keys_and_token_keys_never_stand_in_for_each_other() {
        let log = LogSigningKey::generate().unwrap();
        let token = SigningKey::generate().unwrap();
        let log_jwk = log.verifying_key().to_jwk();
        assert_eq!(log_jwk.use_.as_deref(), Some(LOG_KEY_USE));
        assert_eq!(log_jwk.kid, log.kid().to_string());
        assert_eq!(log_jwk.role(), Some(KeyRole::Log));
        let token_jwk = token.verifying_key().to_jwk();
        assert_eq!(token_jwk.role(), Some(KeyRole::Token));

        // The token path refuses a log key, the log path a token key (with or without use).
        assert!(VerifyingKey::from_jwk(&log_jwk).is_err());
        assert!(LogVerifyingKey::from_jwk(&token_jwk).is_err());
        let bare = Jwk {
            use_: None,
            ..token_jwk.clone()
        };
        assert!(VerifyingKey::from_jwk(&bare).is_ok());
        assert!(LogVerifyingKey::from_jwk(&bare).is_err());
        assert_eq!(
            LogVerifyingKey::from_jwk(&log_jwk).unwrap().kid(),
            log.kid()
        );
        // A log JWK whose kid lies is refused like a token JWK.
        let lying = Jwk {
            kid: token.kid().to_string(),
            ..log_jwk.clone()
        };
        assert!(LogVerifyingKey::from_jwk(&lying).is_err());

        // A log signature does not verify as a token signature (empty context), nor the reverse.
        let sig = log
            .sign_in_context(b"m", b"revocast/checkpoint/v1")
            .unwrap();
        assert!(
            log.verifying_key()
                .verify_in_context(b"m", b"revocast/checkpoint/v1", &sig)
        );
        assert!(!log.verifying_key().0.verify(b"m", &sig));
        let token_sig = token.sign(b"m").unwrap();
        let as_log = LogVerifyingKey(token.verifying_key().clone());
        assert!(!as_log.verify_in_context(b"m", b"revocast/checkpoint/v1", &token_sig));
    }

    #[test]
    fn a_jwks_splits_by_role_and_drops_keys_published_in_both() {
        let log = LogSigningKey::generate().unwrap();
        let token = SigningKey::generate().unwrap();
        let shared = SigningKey::generate().unwrap();
        let shared_as_log = Jwk {
            use_: Some(LOG_KEY_USE.into()),
            ..shared.verifying_key().to_jwk()
        };
        let unknown_use = Jwk {
            use_: Some("enc".into()),
            ..SigningKey::generate().unwrap().verifying_key().to_jwk()
        };
        let set = JwkSet {
            keys: vec![
                token.verifying_key().to_jwk(),
                log.verifying_key().to_jwk(),
                shared.verifying_key().to_jwk(),
                shared_as_log,
                unknown_use,
            ],
        };
        let split = set.by_role();
        assert_eq!(
            split
                .token
                .iter()
                .map(VerifyingKey::kid)
                .collect::<Vec<_>>(),
            [token.kid()]
        );
        assert_eq!(
            split
                .log
                .iter()
                .map(LogVerifyingKey::kid)
                .collect::<Vec<_>>(),
            [log.kid()]
        );
        assert_eq!(split.skipped.len(), 2);
        assert!(
            split
                .skipped
                .iter()
                .any(|(kid, _)| *kid == shared.kid().to_string())
        );
    }

    #[test]
    fn signing_key_debug_hides_the_seed() {
        let key = SigningKey::from_seed(SigningSeed::from_bytes([0x42; 32]));
        let dbg = format!("{key:?}");
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains("42, 42"));
    }
}
