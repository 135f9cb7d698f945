//! RFC 7515 JWS compact serialization with RFC 9964 ML-DSA-65, for untrusted input.
//!
//! Parsing is ordered so that the cheapest, most decisive checks run first and nothing is
//! decoded beyond what is needed: the length cap, then the segment count, then the header,
//! whose `alg` is checked against the allow-list before anything else is looked at.

use base64::Engine;
use serde::Deserialize;

use crate::crypto::SIGNATURE_LEN;
use crate::keys::{ALG, SigningKey, VerifyingKey};
use crate::{B64, Error, KeyId, RevocationId, VerifyError};

/// Longest compact JWS accepted, checked before any decoding. An ML-DSA-65 signature alone is
/// 4412 characters; this leaves room for a header and several kilobytes of claims.
pub const MAX_JWS_LEN: usize = 16 * 1024;
/// Length of the base64url signature segment.
pub const SIGNATURE_B64_LEN: usize = 4412;
/// Longest header segment accepted (ours is about 120 characters).
const MAX_HEADER_B64_LEN: usize = 1024;

/// Header parameters whose presence is refused: each would let the token choose how it is
/// verified (embedded or remote keys, certificate chains, critical extensions).
const FORBIDDEN_HEADER_PARAMS: [&str; 5] = ["jwk", "jku", "x5c", "x5u", "crit"];

/// The header fields revocast reads. Other (non-forbidden) parameters are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kid: KeyId,
    pub typ: Option<String>,
}

/// A compact JWS split into its parts, header parsed and checked, signature not yet verified.
#[derive(Debug)]
pub struct CompactJws<'a> {
    /// `BASE64URL(header) "." BASE64URL(payload)`: the bytes the signature covers.
    signing_input: &'a str,
    payload_b64: &'a str,
    signature_b64: &'a str,
    header: Header,
}

impl<'a> CompactJws<'a> {
    /// Split and check a compact JWS without verifying it.
    pub fn parse(jws: &'a str) -> Result<Self, VerifyError> {
        if jws.len() > MAX_JWS_LEN {
            return Err(VerifyError::Malformed);
        }
        let mut parts = jws.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let header = parse_header(header_b64)?;
        // Unpadded base64url only (RFC 7515 §2): padding, whitespace or foreign characters
        // make a token malformed, whatever its signature would say. (After the header: a
        // foreign `alg` such as `none` with an empty signature is reported as that.) The
        // signature's characters are checked where it is decoded, not scanned twice here.
        if !is_base64url(payload_b64) || signature_b64.is_empty() || signature_b64.ends_with('=') {
            return Err(VerifyError::Malformed);
        }
        let signing_input = &jws[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Self {
            signing_input,
            payload_b64,
            signature_b64,
            header,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn kid(&self) -> KeyId {
        self.header.kid
    }

    /// Verify the signature under `key` (which must be the key the header names) and return the
    /// decoded payload and the token's revocation id.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(Vec<u8>, RevocationId), VerifyError> {
        if key.kid() != self.header.kid {
            return Err(VerifyError::UnknownKey);
        }
        if self.signature_b64.len() != SIGNATURE_B64_LEN {
            // A signature of the wrong size is not the key's; one that is not even base64url
            // is a malformed token.
            return Err(if is_base64url(self.signature_b64) {
                VerifyError::InvalidSignature
            } else {
                VerifyError::Malformed
            });
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        match B64.decode_slice(self.signature_b64, &mut signature) {
            Ok(SIGNATURE_LEN) => {}
            _ => return Err(VerifyError::Malformed),
        }
        if !key.verify(self.signing_input.as_bytes(), &signature) {
            return Err(VerifyError::InvalidSignature);
        }
        let payload = B64
            .decode(self.payload_b64)
            .map_err(|_| VerifyError::Malformed)?;
        Ok((payload, RevocationId::of_signature(&signature)))
    }
}

/// Non-empty and only characters of the unpadded base64url alphabet.
fn is_base64url(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_header(header_b64: &str) -> Result<Header, VerifyError> {
    if header_b64.len() > MAX_HEADER_B64_LEN {
        return Err(VerifyError::Malformed);
    }
    let bytes = B64.decode(header_b64).map_err(|_| VerifyError::Malformed)?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)?;
    // The algorithm allow-list comes first: nothing else about a token with a foreign `alg`
    // (including `none`) is worth reading.
    match map.get("alg") {
        Some(serde_json::Value::String(alg)) if alg == ALG => {}
        _ => return Err(VerifyError::UnsupportedAlgorithm),
    }
    if FORBIDDEN_HEADER_PARAMS.iter().any(|p| map.contains_key(*p)) {
        return Err(VerifyError::Malformed);
    }
    #[derive(Deserialize)]
    struct Known {
        kid: String,
        typ: Option<String>,
    }
    let known: Known = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|_| VerifyError::Malformed)?;
    let kid = known.kid.parse().map_err(|_| VerifyError::Malformed)?;
    Ok(Header {
        kid,
        typ: known.typ,
    })
}

/// Sign `payload` as a compact JWS with the given protected header JSON (which must name
/// `ML-DSA-65` and the key's `kid`; callers in this crate guarantee it).
pub(crate) fn sign_compact(
    header_json: &[u8],
    payload: &[u8],
    key: &SigningKey,
) -> Result<(String, RevocationId), Error> {
    let mut out = String::with_capacity(
        (header_json.len() + payload.len()).div_ceil(3) * 4 + 2 + SIGNATURE_B64_LEN,
    );
    B64.encode_string(header_json, &mut out);
    out.push('.');
    B64.encode_string(payload, &mut out);
    let signature = key.sign(out.as_bytes())?;
    out.push('.');
    B64.encode_string(&signature, &mut out);
    Ok((out, RevocationId::of_signature(&signature)))
}

#[cfg(test)]
mod tests {
    //! The RFC 9964 ML-DSA-65 JOSE vector (`shared/tests/vectors/`), reproduced exactly.

    use super::*;
    use crate::crypto::{MlDsa65Backend, SigningSeed, backends, sign_deterministic};
    use crate::keys::Jwk;

    #[derive(Deserialize)]
    struct Vector {
        #[serde(rename = "priv")]
        seed_hex: String,
        jwk: VectorJwk,
        jws: String,
        raw_to_be_signed: String,
        raw_signature: String,
        raw_public_key: String,
    }

    #[derive(Deserialize)]
    struct VectorJwk {
        kid: String,
        kty: String,
        alg: String,
        #[serde(rename = "pub")]
        public: String,
    }

    fn vector() -> Vector {
        serde_json::from_str(include_str!("../tests/vectors/rfc9964-ml-dsa-65.jose.json")).unwrap()
    }

    /// The vector's key (the all-zero seed) expanded by `backend`.
    fn vector_key(backend: &dyn MlDsa65Backend) -> SigningKey {
        SigningKey::from_seed_with(SigningSeed::from_bytes([0; 32]), backend).unwrap()
    }

    #[test]
    fn zero_seed_gives_the_vectors_public_key_and_kid() {
        let v = vector();
        let seed: [u8; 32] = hex::decode(&v.seed_hex).unwrap().try_into().unwrap();
        assert_eq!(seed, [0u8; 32]);
        for backend in backends() {
            let name = backend.name();
            let key = SigningKey::from_seed_with(SigningSeed::from_bytes(seed), *backend).unwrap();
            let public = key.verifying_key();
            assert_eq!(hex::encode(public.public_key()), v.raw_public_key, "{name}");
            assert_eq!(key.kid().to_string(), v.jwk.kid, "{name}");
            let jwk: Jwk = public.to_jwk();
            assert_eq!(
                (jwk.kty.as_str(), jwk.alg.as_str()),
                (v.jwk.kty.as_str(), v.jwk.alg.as_str())
            );
            assert_eq!(jwk.public, v.jwk.public, "{name}");
        }
    }

    #[test]
    fn the_vectors_jws_verifies() {
        let v = vector();
        for backend in backends() {
            let name = backend.name();
            let key = vector_key(*backend);
            let jws = CompactJws::parse(&v.jws).unwrap();
            assert_eq!(jws.kid(), key.kid());
            assert_eq!(hex::encode(jws.signing_input), v.raw_to_be_signed);
            let (payload, rid) = jws.verify(key.verifying_key()).unwrap();
            assert_eq!(
                payload,
                "It’s a dangerous business, Frodo, going out your door.".as_bytes(),
                "{name}"
            );
            let sig = hex::decode(&v.raw_signature).unwrap();
            assert_eq!(rid, RevocationId::of_signature(&sig), "{name}");
        }
    }

    /// Only RustCrypto offers deterministic signing (AWS-LC signs hedged only), so only it can
    /// reproduce the vector's signature bytes; every backend's hedged signature of the vector's
    /// input is checked against the vector's key by every backend below.
    #[test]
    fn deterministic_signing_gives_the_vectors_signature_bytes() {
        let v = vector();
        let seed = SigningSeed::from_bytes([0; 32]);
        let tbs = hex::decode(&v.raw_to_be_signed).unwrap();
        let sig = sign_deterministic(&seed, &tbs);
        assert_eq!(hex::encode(&sig), v.raw_signature);
        let jws_sig = v.jws.rsplit('.').next().unwrap();
        assert_eq!(B64.encode(&sig), jws_sig);
    }

    #[test]
    fn every_backend_signs_the_vectors_input_for_every_backend() {
        let v = vector();
        let parts: Vec<&str> = v.jws.split('.').collect();
        let (header, payload) = (B64.decode(parts[0]).unwrap(), B64.decode(parts[1]).unwrap());
        for signing in backends() {
            let key = vector_key(*signing);
            let (jws, rid) = sign_compact(&header, &payload, &key).unwrap();
            assert!(jws.starts_with(&format!("{}.{}.", parts[0], parts[1])));
            for verifying in backends() {
                let names = format!(
                    "signed by {}, verified by {}",
                    signing.name(),
                    verifying.name()
                );
                let public = VerifyingKey::from_public_key_with(
                    &hex::decode(&v.raw_public_key).unwrap(),
                    *verifying,
                )
                .unwrap();
                let (decoded, verified_rid) = CompactJws::parse(&jws)
                    .unwrap()
                    .verify(&public)
                    .unwrap_or_else(|e| panic!("{names}: {e:?}"));
                assert_eq!((decoded, verified_rid), (payload.clone(), rid), "{names}");
            }
        }
    }

    #[test]
    fn header_checks_run_alg_first() {
        let enc = |h: &str| format!("{}.e30.{}", B64.encode(h), "A".repeat(SIGNATURE_B64_LEN));
        let kid = SigningKey::from_seed(SigningSeed::from_bytes([0; 32])).kid();
        let cases = [
            (
                r#"{"alg":"none"}"#.to_string(),
                VerifyError::UnsupportedAlgorithm,
            ),
            (
                r#"{"alg":"HS256","kid":"x"}"#.to_string(),
                VerifyError::UnsupportedAlgorithm,
            ),
            (
                r#"{"kid":"x"}"#.to_string(),
                VerifyError::UnsupportedAlgorithm,
            ),
            (
                r#"{"alg":["ML-DSA-65"]}"#.to_string(),
                VerifyError::UnsupportedAlgorithm,
            ),
            (r#"{"alg":"ML-DSA-65"}"#.to_string(), VerifyError::Malformed),
            (
                r#"{"alg":"ML-DSA-65","kid":"short"}"#.to_string(),
                VerifyError::Malformed,
            ),
            (
                r#"{"alg":"ML-DSA-65","kid":7}"#.to_string(),
                VerifyError::Malformed,
            ),
            (
                format!(r#"{{"alg":"ML-DSA-65","kid":"{kid}","crit":["exp"]}}"#),
                VerifyError::Malformed,
            ),
            (
                format!(r#"{{"alg":"ML-DSA-65","kid":"{kid}","jwk":{{}}}}"#),
                VerifyError::Malformed,
            ),
            (
                format!(r#"{{"alg":"ML-DSA-65","kid":"{kid}","jku":"http://x"}}"#),
                VerifyError::Malformed,
            ),
            (
                format!(r#"{{"alg":"ML-DSA-65","kid":"{kid}","x5u":"http://x"}}"#),
                VerifyError::Malformed,
            ),
            (
                format!(r#"{{"alg":"ML-DSA-65","kid":"{kid}","x5c":[]}}"#),
                VerifyError::Malformed,
            ),
            ("not json".to_string(), VerifyError::Malformed),
        ];
        for (header, want) in cases {
            assert_eq!(
                CompactJws::parse(&enc(&header)).unwrap_err(),
                want,
                "{header}"
            );
        }
        let ok = format!(r#"{{"alg":"ML-DSA-65","kid":"{kid}"}}"#);
        assert!(CompactJws::parse(&enc(&ok)).is_ok());
    }

    #[test]
    fn structural_malformations_are_malformed() {
        let v = vector();
        for bad in [
            String::new(),
            "a.b".into(),
            format!("{}.extra", v.jws),
            format!("{}=", v.jws.split('.').next().unwrap()),
            "x".repeat(MAX_JWS_LEN + 1),
            format!("=={}", v.jws),
            format!("{}=", v.jws),
            format!("{}.", v.jws.rsplit_once('.').unwrap().0),
            v.jws.replacen('.', ". ", 2),
        ] {
            assert_eq!(CompactJws::parse(&bad).unwrap_err(), VerifyError::Malformed);
        }
    }

    #[test]
    fn tampering_with_any_part_fails_verification() {
        for backend in backends() {
            tampering_with_any_part_fails_verification_with(*backend);
        }
    }

    fn tampering_with_any_part_fails_verification_with(backend: &dyn MlDsa65Backend) {
        let v = vector();
        let key = vector_key(backend);
        let name = backend.name();
        let parts: Vec<&str> = v.jws.split('.').collect();
        let flip = |s: &str, i: usize| {
            let mut b = s.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        };
        let tampered_payload = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode("Its a safe business"),
            parts[2]
        );
        let tampered_sig = format!("{}.{}.{}", parts[0], parts[1], flip(parts[2], 100));
        // A header with the same alg and kid but one more (harmless) parameter.
        let header = format!(r#"{{"alg":"ML-DSA-65","kid":"{}","x":1}}"#, key.kid());
        let tampered_header = format!("{}.{}.{}", B64.encode(header), parts[1], parts[2]);
        for t in [tampered_header, tampered_payload, tampered_sig] {
            let jws = CompactJws::parse(&t).unwrap();
            assert_eq!(
                jws.verify(key.verifying_key()).unwrap_err(),
                VerifyError::InvalidSignature,
                "{name}"
            );
        }
        // Truncated and oversized signatures.
        let short = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 4]
        );
        let long = format!("{}.{}.{}AAAA", parts[0], parts[1], parts[2]);
        for t in [short, long] {
            let jws = CompactJws::parse(&t).unwrap();
            assert_eq!(
                jws.verify(key.verifying_key()).unwrap_err(),
                VerifyError::InvalidSignature,
                "{name}"
            );
        }
        // A different key than the header names.
        let other = SigningKey::from_seed_with(SigningSeed::generate().unwrap(), backend).unwrap();
        let jws = CompactJws::parse(&v.jws).unwrap();
        assert_eq!(
            jws.verify(other.verifying_key()).unwrap_err(),
            VerifyError::UnknownKey,
            "{name}"
        );
    }
}
