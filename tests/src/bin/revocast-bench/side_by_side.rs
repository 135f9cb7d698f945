//! Both ML-DSA-65 backends side by side in one run: the `sign` scenario, and the figures of
//! `verify` that depend on the backend. Each figure `F` is reported as `F_<backend>` for every
//! backend compiled in (`F_aws_lc`, `F_rustcrypto`), as plain `F` for the default backend (the
//! name earlier runs used), and, when both ran, as `aws_lc_over_rustcrypto_F`: AWS-LC's time
//! over the pure-Rust one's, measured in the same run on the same machine.

use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use revocast_shared::crypto::{MlDsa65Backend, SigningSeed, backends, default_backend};
use revocast_shared::token::issue;
use revocast_shared::{Claims, SigningKey};
use serde_json::{Map, Value, json};

use crate::stats::round3;

/// How long one backend signs before the other takes over. Alternating spreads any load from
/// elsewhere on the machine over both backends alike, so their ratio holds even when the
/// absolute figures wobble.
const SIGN_SLICE: Duration = Duration::from_millis(200);

/// The JSON key of figure `name` for `backend`: `us_per_token_aws_lc`.
pub fn key(name: &str, backend: &dyn MlDsa65Backend) -> String {
    format!("{name}_{}", backend.name().replace('-', "_"))
}

/// Record `value` of figure `name` for `backend`, and as plain `name` for the default one.
pub fn insert(
    figures: &mut Map<String, Value>,
    name: &str,
    backend: &dyn MlDsa65Backend,
    value: f64,
) {
    if backend.name() == default_backend().name() {
        figures.insert(name.to_string(), json!(value));
    }
    figures.insert(key(name, backend), json!(value));
}

/// `aws_lc_over_rustcrypto_<name>` from the two backends' figures, when both ran.
pub fn insert_ratio(figures: &mut Map<String, Value>, name: &str) {
    let figure = |backend: &str| {
        figures
            .get(&format!("{name}_{backend}"))
            .and_then(Value::as_f64)
    };
    if let (Some(aws_lc), Some(rustcrypto)) = (figure("aws_lc"), figure("rustcrypto")) {
        figures.insert(
            format!("aws_lc_over_rustcrypto_{name}"),
            json!(round3(aws_lc / rustcrypto.max(f64::MIN_POSITIVE))),
        );
    }
}

/// The backends measured and the one the authority and agents use by default.
pub fn header() -> Map<String, Value> {
    let mut figures = Map::new();
    figures.insert(
        "backends".into(),
        json!(backends().iter().map(|b| b.name()).collect::<Vec<_>>()),
    );
    figures.insert("default_backend".into(), json!(default_backend().name()));
    figures
}

/// Tokens signed per second on one core by each backend, one key (one seed) expanded by each,
/// taking turns of [`SIGN_SLICE`] until each has signed for `seconds`.
pub fn sign(seconds: u64) -> anyhow::Result<Value> {
    let seed = SigningSeed::generate()?;
    let keys = backends()
        .iter()
        .map(|b| SigningKey::from_seed_with(seed.clone(), *b))
        .collect::<Result<Vec<_>, _>>()?;
    let claims = Claims {
        iss: "http://bench".into(),
        sub: "bench".into(),
        iat: 0,
        exp: i64::MAX / 2,
        nbf: None,
        aud: None,
        jti: "j".into(),
        sid: None,
        r#gen: 0,
        custom: Default::default(),
    };
    let budget = Duration::from_secs(seconds.max(1));
    let mut signed = vec![0u64; keys.len()];
    let mut spent = vec![Duration::ZERO; keys.len()];
    while spent.iter().any(|s| *s < budget) {
        for (i, key) in keys.iter().enumerate() {
            let start = Instant::now();
            while start.elapsed() < SIGN_SLICE {
                std::hint::black_box(issue(&claims, key)?);
                signed[i] += 1;
            }
            spent[i] += start.elapsed();
        }
    }
    let mut figures = header();
    for (i, backend) in backends().iter().enumerate() {
        let per_second = signed[i] as f64 / spent[i].as_secs_f64();
        insert(
            &mut figures,
            "tokens_per_second_per_core",
            *backend,
            round3(per_second),
        );
        insert(
            &mut figures,
            "us_per_token",
            *backend,
            round3(1e6 / per_second),
        );
    }
    insert_ratio(&mut figures, "us_per_token");
    Ok(json!({ "sign": figures }))
}

/// Nanoseconds of a raw ML-DSA-65 verify of each token's signing input and signature under
/// `public_key`, one sorted list per backend; the backends take turns token by token.
pub fn mldsa_verify_ns(public_key: &[u8], tokens: &[String]) -> anyhow::Result<Vec<Vec<u64>>> {
    let verifiers = backends()
        .iter()
        .map(|b| b.verifier(public_key))
        .collect::<Result<Vec<_>, _>>()?;
    let mut times = vec![Vec::with_capacity(tokens.len()); verifiers.len()];
    for t in tokens {
        let (input, sig) = t.rsplit_once('.').context("jws")?;
        let sig = URL_SAFE_NO_PAD.decode(sig)?;
        for (verifier, times) in verifiers.iter().zip(&mut times) {
            let start = Instant::now();
            let ok = verifier.verify(input.as_bytes(), &sig);
            times.push(start.elapsed().as_nanos() as u64);
            anyhow::ensure!(ok, "raw verify failed");
        }
    }
    for t in &mut times {
        t.sort_unstable();
    }
    Ok(times)
}
