//! An independent ML-DSA-65 implementation (Python `dilithium-py`) verifies a token issued by
//! the authority against its JWKS — proof that our tokens are standard RFC 9964 JWS, not merely
//! self-consistent — and does the same for every crypto backend compiled in (with the `aws-lc`
//! feature, both AWS-LC and the pure-Rust one): their tokens, their public key derived from a
//! seed, and their FIPS 204 context signatures, while each backend verifies dilithium-py's
//! signatures in turn. `.ci/run` installs dilithium-py and sets `REVOCAST_REQUIRE_INTEROP=1`,
//! with and without the feature, so CI cannot skip this; elsewhere it is skipped with a visible
//! message when Python lacks it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use revocast_shared::crypto::{MlDsa65Backend, SigningSeed, backends};
use revocast_shared::token::issue;
use revocast_shared::{Claims, JwkSet, SigningKey};
use revocast_tests::TestAuthority;
use revocast_tests::interop::{can_run, python};
use serde_json::{Value, json};

#[tokio::test]
async fn dilithium_py_verifies_an_issued_token() {
    if !can_run("dilithium_py_verifies_an_issued_token") {
        return;
    }
    let authority = TestAuthority::start().await;
    let http = reqwest::Client::new();
    let issued: Value = http
        .post(format!("{}/v1/tokens", authority.base))
        .bearer_auth(&authority.admin_key)
        .json(&json!({ "sub": "interop", "claims": { "note": "ünïcödé" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks: Value = http
        .get(format!("{}/.well-known/jwks.json", authority.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let input = json!({ "jwks": jwks, "token": issued["token"] });
    python("verify_jws.py", &input, "ok: sub=interop");
}

/// A token signed by `backend`, checked by dilithium-py against a JWKS holding its key.
fn check_token(backend: &dyn MlDsa65Backend) {
    let key = SigningKey::from_seed_with(SigningSeed::generate().unwrap(), backend).unwrap();
    let claims = Claims {
        iss: "http://interop".into(),
        sub: format!("interop-{}", backend.name()),
        iat: 1_767_222_000,
        exp: 1_767_225_600,
        nbf: None,
        aud: None,
        jti: Claims::random_jti().unwrap(),
        sid: None,
        r#gen: 0,
        custom: serde_json::Map::from_iter([("note".into(), json!("ünïcödé"))]),
    };
    let token = issue(&claims, &key).unwrap().token;
    let jwks = JwkSet {
        keys: vec![key.verifying_key().to_jwk()],
    };
    let input = json!({ "jwks": jwks, "token": token });
    python("verify_jws.py", &input, &format!("ok: sub={}", claims.sub));
}

/// `backend`'s key from a seed and its signatures under a context, checked by dilithium-py;
/// then dilithium-py's signatures by the same key verified by `backend`.
fn check_seed_and_context(backend: &dyn MlDsa65Backend) {
    let name = backend.name();
    let seed = SigningSeed::generate().unwrap();
    let signer = backend.signer(&seed).unwrap();
    let public_key = signer.public_key();
    let context = "revocast/checkpoint/v1";
    let message = b"revocast checkpoint\n42\nAAAA";
    let signatures: Vec<String> = (0..2)
        .map(|_| B64.encode(signer.sign_in_context(message, context.as_bytes()).unwrap()))
        .collect();
    let seed_hex: String = seed
        .expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let input = json!({
        "seed": seed_hex,
        "public_key": B64.encode(&public_key),
        "context": context,
        "message": B64.encode(message),
        "signatures": signatures,
    });
    let answer: Value = serde_json::from_str(&python("seed_and_context.py", &input, "{")).unwrap();
    let theirs = |field: &str| B64.decode(answer[field].as_str().unwrap()).unwrap();
    let verifier = backend.verifier(&public_key).unwrap();
    let (in_context, empty) = (theirs("in_context"), theirs("empty_context"));
    assert!(
        verifier.verify_in_context(message, context.as_bytes(), &in_context),
        "{name}"
    );
    assert!(!verifier.verify(message, &in_context), "{name}");
    assert!(verifier.verify(message, &empty), "{name}");
    assert!(
        !verifier.verify_in_context(message, context.as_bytes(), &empty),
        "{name}"
    );
}

#[test]
fn dilithium_py_and_every_backend_check_each_other() {
    if !can_run("dilithium_py_and_every_backend_check_each_other") {
        return;
    }
    for backend in backends() {
        check_token(*backend);
        check_seed_and_context(*backend);
    }
}
