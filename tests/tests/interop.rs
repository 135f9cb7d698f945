//! An independent ML-DSA-65 implementation (Python `dilithium-py`) verifies a token issued by
//! the authority against its JWKS — proof that our tokens are standard RFC 9964 JWS, not merely
//! self-consistent. `.ci/run` installs dilithium-py and sets `REVOCAST_REQUIRE_INTEROP=1`, so CI
//! cannot skip this; elsewhere it is skipped with a visible message when Python lacks it.

use std::io::Write;
use std::process::{Command, Stdio};

use revocast_tests::TestAuthority;
use serde_json::{Value, json};

fn python_has_dilithium() -> bool {
    Command::new("python3")
        .args(["-c", "import dilithium_py.ml_dsa"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn dilithium_py_verifies_an_issued_token() {
    if !python_has_dilithium() {
        assert!(
            std::env::var_os("REVOCAST_REQUIRE_INTEROP").is_none(),
            "REVOCAST_REQUIRE_INTEROP is set but python3 cannot import dilithium_py"
        );
        eprintln!(
            "SKIPPED dilithium_py_verifies_an_issued_token: `pip install dilithium-py` to run it"
        );
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

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/verify_jws.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = json!({ "jwks": jwks, "token": issued["token"] }).to_string();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok: sub=interop"), "{stdout}");
}
