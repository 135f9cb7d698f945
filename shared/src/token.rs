//! Access tokens: the claims, issuing, and verification as a typestate — an [`UnverifiedToken`]
//! becomes a [`VerifiedToken`] only through [`UnverifiedToken::verify`] under an explicit
//! [`Validation`] policy. Revocation is checked separately against a
//! [`RevocationSet`](crate::revset::RevocationSet), because only the caller knows how current its
//! set is.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::jws::{CompactJws, MAX_JWS_LEN, sign_compact};
use crate::keys::{ALG, SigningKey, VerifyingKey};
use crate::{B64, Error, KeyId, RevocationId, VerifyError};

/// The `typ` header of every revocast token (RFC 9068 access token).
pub const TYP: &str = "at+jwt";

/// Claim names set by the authority; callers cannot supply them as custom claims.
pub const RESERVED_CLAIMS: [&str; 10] = [
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "gen", "rid",
];

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Self::One(a) => a == aud,
            Self::Many(all) => all.iter().any(|a| a == aud),
        }
    }
}

/// The claims of a revocast access token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The subject's generation when the token was issued; a subject revocation raises the
    /// minimum accepted generation above it.
    pub r#gen: u64,
    /// Caller-supplied custom claims (never one of [`RESERVED_CLAIMS`]).
    #[serde(flatten)]
    pub custom: Map<String, Value>,
}

impl Claims {
    /// A fresh random `jti`: 128 bits, base64url.
    pub fn random_jti() -> Result<String, Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|_| Error::Randomness)?;
        Ok(B64.encode(bytes))
    }
}

/// A freshly signed token and its revocation id.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub rid: RevocationId,
}

/// Sign `claims` with `key` (hedged ML-DSA-65). Refuses custom claims that shadow reserved names
/// and tokens that would exceed [`MAX_JWS_LEN`] — verifiers would refuse them anyway.
pub fn issue(claims: &Claims, key: &SigningKey) -> Result<IssuedToken, Error> {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'a str,
        typ: &'a str,
        kid: String,
    }
    let header = serde_json::to_vec(&Header {
        alg: ALG,
        typ: TYP,
        kid: key.kid().to_string(),
    })
    .map_err(Error::Encoding)?;
    let payload = serde_json::to_vec(claims).map_err(Error::Encoding)?;
    let encoded_len = (header.len() + payload.len()).div_ceil(3) * 4 + 2 + 4412;
    if encoded_len > MAX_JWS_LEN {
        return Err(Error::TokenTooLarge { max: MAX_JWS_LEN });
    }
    let (token, rid) = sign_compact(&header, &payload, key)?;
    Ok(IssuedToken { token, rid })
}

/// What a verifier requires of a token beyond a valid signature. There is no `Default`: every
/// verifier states its policy.
#[derive(Clone, Debug)]
pub struct Validation {
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: i64,
}

impl Validation {
    /// Check `exp` and `nbf` with `leeway_secs` of clock skew allowed; add issuer and audience
    /// requirements with the builder methods.
    pub fn new(leeway_secs: u32) -> Self {
        Self {
            issuer: None,
            audience: None,
            leeway_secs: i64::from(leeway_secs),
        }
    }

    /// Require `iss` to equal `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Require `aud` to contain `audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }
}

/// A token that has been split and whose header passed the checks, but whose signature and
/// claims have not been verified. The only way forward is [`verify`](Self::verify).
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    jws: CompactJws<'a>,
}

impl<'a> UnverifiedToken<'a> {
    /// Parse untrusted input: size cap, segments, header, `alg` allow-list, forbidden header
    /// parameters, `typ`, `kid`.
    pub fn parse(token: &'a str) -> Result<Self, VerifyError> {
        let jws = CompactJws::parse(token)?;
        if jws.header().typ.as_deref() != Some(TYP) {
            return Err(VerifyError::Malformed);
        }
        Ok(Self { jws })
    }

    /// The key the token claims to be signed by (unauthenticated until verified).
    pub fn kid(&self) -> KeyId {
        self.jws.kid()
    }

    /// Verify the signature with `key` (the caller looked it up by [`kid`](Self::kid)), then the
    /// claims under `validation` at time `now` (Unix seconds).
    pub fn verify(
        self,
        key: &VerifyingKey,
        validation: &Validation,
        now: i64,
    ) -> Result<VerifiedToken, VerifyError> {
        let (payload, rid) = self.jws.verify(key)?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed)?;
        if claims.exp <= now.saturating_sub(validation.leeway_secs) {
            return Err(VerifyError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(validation.leeway_secs))
        {
            return Err(VerifyError::NotYetValid);
        }
        if validation
            .issuer
            .as_ref()
            .is_some_and(|iss| *iss != claims.iss)
        {
            return Err(VerifyError::InvalidIssuer);
        }
        if let Some(want) = &validation.audience
            && !claims.aud.as_ref().is_some_and(|aud| aud.contains(want))
        {
            return Err(VerifyError::InvalidAudience);
        }
        Ok(VerifiedToken {
            claims,
            rid,
            kid: key.kid(),
        })
    }
}

/// A token whose signature and claims were verified. Only [`UnverifiedToken::verify`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    claims: Claims,
    rid: RevocationId,
    kid: KeyId,
}

impl VerifiedToken {
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    pub fn into_claims(self) -> Claims {
        self.claims
    }

    pub fn rid(&self) -> RevocationId {
        self.rid
    }

    pub fn kid(&self) -> KeyId {
        self.kid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{MlDsa65Backend, SigningSeed, backends};

    const NOW: i64 = 1_767_222_000;

    fn claims() -> Claims {
        Claims {
            iss: "https://auth.example".into(),
            sub: "user_1".into(),
            iat: NOW,
            exp: NOW + 3600,
            nbf: None,
            aud: Some(Audience::One("api".into())),
            jti: Claims::random_jti().unwrap(),
            sid: Some("s1".into()),
            r#gen: 3,
            custom: Map::from_iter([("role".to_string(), Value::from("admin"))]),
        }
    }

    fn key() -> SigningKey {
        SigningKey::from_seed(SigningSeed::from_bytes([9; 32]))
    }

    /// The same key as [`key`], expanded by `backend`.
    fn key_with(backend: &dyn MlDsa65Backend) -> SigningKey {
        SigningKey::from_seed_with(SigningSeed::from_bytes([9; 32]), backend).unwrap()
    }

    fn verify(token: &str, key: &SigningKey, v: &Validation) -> Result<VerifiedToken, VerifyError> {
        UnverifiedToken::parse(token)?.verify(key.verifying_key(), v, NOW)
    }

    #[test]
    fn issue_then_verify_round_trips_claims() {
        for backend in backends() {
            let name = backend.name();
            let key = key_with(*backend);
            let c = claims();
            let issued = issue(&c, &key).unwrap();
            let v = Validation::new(0)
                .issuer("https://auth.example")
                .audience("api");
            let verified = verify(&issued.token, &key, &v).unwrap();
            assert_eq!(verified.claims(), &c, "{name}");
            assert_eq!(verified.rid(), issued.rid, "{name}");
            assert_eq!(verified.kid(), key.kid(), "{name}");
            // Identical claims, hedged signing: a different token with a different rid.
            let again = issue(&c, &key).unwrap();
            assert_ne!(again.rid, issued.rid, "{name}");
        }
    }

    #[test]
    fn cross_a_token_issued_with_one_backend_verifies_with_the_other() {
        let v = Validation::new(0).issuer("https://auth.example");
        for issuing in backends() {
            let issued = issue(&claims(), &key_with(*issuing)).unwrap();
            for verifying in backends() {
                let names = format!(
                    "issued by {}, verified by {}",
                    issuing.name(),
                    verifying.name()
                );
                let key = key_with(*verifying);
                assert_eq!(key.kid(), key_with(*issuing).kid(), "{names}");
                let verified =
                    verify(&issued.token, &key, &v).unwrap_or_else(|e| panic!("{names}: {e:?}"));
                assert_eq!(verified.rid(), issued.rid, "{names}");
                let forged = issued.token.replacen(".ey", ".eX", 1);
                assert!(verify(&forged, &key, &v).is_err(), "{names}");
            }
        }
    }

    #[test]
    fn header_is_exactly_the_contracts() {
        let key = key();
        let issued = issue(&claims(), &key).unwrap();
        let header = issued.token.split('.').next().unwrap();
        let json = String::from_utf8(B64.decode(header).unwrap()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"alg":"ML-DSA-65","typ":"at+jwt","kid":"{}"}}"#,
                key.kid()
            )
        );
        assert_eq!(issued.token.rsplit('.').next().unwrap().len(), 4412);
        assert!(!issued.token.contains('='));
    }

    #[test]
    fn time_and_policy_checks() {
        let key = key();
        let mut c = claims();
        c.exp = NOW;
        let t = issue(&c, &key).unwrap().token;
        assert_eq!(
            verify(&t, &key, &Validation::new(0)).unwrap_err(),
            VerifyError::Expired
        );
        assert!(verify(&t, &key, &Validation::new(5)).is_ok());

        let mut c = claims();
        c.nbf = Some(NOW + 10);
        let t = issue(&c, &key).unwrap().token;
        assert_eq!(
            verify(&t, &key, &Validation::new(0)).unwrap_err(),
            VerifyError::NotYetValid
        );
        assert!(verify(&t, &key, &Validation::new(10)).is_ok());

        let t = issue(&claims(), &key).unwrap().token;
        let wrong_iss = Validation::new(0).issuer("https://evil.example");
        assert_eq!(
            verify(&t, &key, &wrong_iss).unwrap_err(),
            VerifyError::InvalidIssuer
        );
        let wrong_aud = Validation::new(0).audience("other");
        assert_eq!(
            verify(&t, &key, &wrong_aud).unwrap_err(),
            VerifyError::InvalidAudience
        );
    }

    #[test]
    fn forged_and_confused_tokens_are_refused() {
        for backend in backends() {
            forged_and_confused_tokens_are_refused_with(*backend);
        }
    }

    fn forged_and_confused_tokens_are_refused_with(backend: &dyn MlDsa65Backend) {
        let key = key_with(backend);
        let good = issue(&claims(), &key).unwrap().token;
        let parts: Vec<&str> = good.split('.').collect();
        let v = Validation::new(0);

        // alg confusion: `none` with an empty signature, HS256 with the public key as secret.
        for alg in ["none", "HS256", "RS256", "ml-dsa-65", "ML-DSA-44"] {
            let h = B64.encode(format!(
                r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#,
                key.kid()
            ));
            for sig in ["", parts[2]] {
                let t = format!("{h}.{}.{sig}", parts[1]);
                assert_eq!(
                    verify(&t, &key, &v).unwrap_err(),
                    VerifyError::UnsupportedAlgorithm,
                    "{alg}"
                );
            }
        }
        // Missing typ, wrong typ.
        for h in [
            format!(r#"{{"alg":"ML-DSA-65","kid":"{}"}}"#, key.kid()),
            format!(r#"{{"alg":"ML-DSA-65","typ":"JWT","kid":"{}"}}"#, key.kid()),
        ] {
            let t = format!("{}.{}.{}", B64.encode(h), parts[1], parts[2]);
            assert_eq!(verify(&t, &key, &v).unwrap_err(), VerifyError::Malformed);
        }
        // Unknown kid: parses, but the caller's lookup fails; a wrong key is UnknownKey.
        let other = SigningKey::from_seed_with(SigningSeed::generate().unwrap(), backend).unwrap();
        assert_eq!(
            verify(&good, &other, &v).unwrap_err(),
            VerifyError::UnknownKey
        );
        // Payload swapped for another (even well-formed) one.
        let mut c = claims();
        c.sub = "root".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert_eq!(
            verify(&forged, &key, &v).unwrap_err(),
            VerifyError::InvalidSignature
        );
        // Extra segments, padded base64.
        assert_eq!(
            verify(&format!("{good}.x"), &key, &v).unwrap_err(),
            VerifyError::Malformed
        );
        let padded = format!("{}=.{}.{}", parts[0], parts[1], parts[2]);
        assert_eq!(
            verify(&padded, &key, &v).unwrap_err(),
            VerifyError::Malformed
        );
    }

    #[test]
    fn non_json_or_incomplete_payload_is_malformed_even_when_signed() {
        let key = key();
        for payload in [&b"not json"[..], br#"{"sub":"x"}"#, b"[]"] {
            let header = format!(
                r#"{{"alg":"ML-DSA-65","typ":"at+jwt","kid":"{}"}}"#,
                key.kid()
            );
            let (t, _) = sign_compact(header.as_bytes(), payload, &key).unwrap();
            assert_eq!(
                verify(&t, &key, &Validation::new(0)).unwrap_err(),
                VerifyError::Malformed
            );
        }
    }

    #[test]
    fn oversized_claims_are_refused_at_issue() {
        let mut c = claims();
        c.custom
            .insert("blob".into(), Value::from("x".repeat(MAX_JWS_LEN)));
        assert!(matches!(
            issue(&c, &key()),
            Err(Error::TokenTooLarge { .. })
        ));
    }
}
