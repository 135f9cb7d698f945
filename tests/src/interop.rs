//! Running the independent Python checks in `tests/interop/` (dilithium-py for ML-DSA-65,
//! hashlib for the transparency log's tree): whether they can run here, and running one.
//! `.ci/run` installs dilithium-py and sets `REVOCAST_REQUIRE_INTEROP=1`, so CI cannot skip
//! them; elsewhere they are skipped with a visible message when Python lacks it.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn python_has_dilithium() -> bool {
    Command::new("python3")
        .args(["-c", "import dilithium_py.ml_dsa"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether to run `test`: dilithium-py is there, or it is not required (then say so).
pub fn can_run(test: &str) -> bool {
    if python_has_dilithium() {
        return true;
    }
    assert!(
        std::env::var_os("REVOCAST_REQUIRE_INTEROP").is_none(),
        "REVOCAST_REQUIRE_INTEROP is set but python3 cannot import dilithium_py"
    );
    eprintln!("SKIPPED {test}: `pip install dilithium-py` to run it");
    false
}

/// Run `tests/interop/<script>` with `input` on stdin: `Ok(stdout)` if it exits 0, else
/// `Err` with everything it printed.
pub fn run(script: &str, input: &Value) -> Result<String, String> {
    let path = format!("{}/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.to_string().as_bytes())
        .map_err(|e| format!("{script} stdin: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{script}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Run `script` with `input`; its stdout, which must start with `expect`, or a test failure
/// with everything it printed.
pub fn python(script: &str, input: &Value, expect: &str) -> String {
    match run(script, input) {
        Ok(stdout) if stdout.starts_with(expect) => stdout,
        Ok(stdout) => panic!("{script}: {stdout}"),
        Err(printed) => panic!("{script}: {printed}"),
    }
}
