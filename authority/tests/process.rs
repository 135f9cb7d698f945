//! The real `revocast-authority` binary: durability across SIGKILL, the `create-key`
//! subcommand, configuration errors before any port is bound, a private data directory,
//! and no secrets in the logs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_revocast-authority");

/// A running authority process whose stderr is captured.
struct Proc {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

fn spawn(data_dir: &Path) -> Proc {
    spawn_with(data_dir, &[])
}

/// [`spawn`] with more environment variables (`REVOCAST_*` settings).
fn spawn_with(data_dir: &Path, env: &[(&str, &str)]) -> Proc {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("REVOCAST_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line
                .split("addr=")
                .nth(1)
                .filter(|_| line.contains("listening"))
            {
                let _ = addr_tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("authority did not start listening");
    Proc {
        child,
        base: format!("http://{addr}"),
        log,
    }
}

impl Proc {
    fn kill(mut self) -> String {
        self.child.kill().unwrap(); // SIGKILL: no graceful anything.
        self.child.wait().unwrap();
        self.log.lock().unwrap().clone()
    }
}

async fn post(base: &str, key: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn read_key(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn state_survives_sigkill_and_seq_continues() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn(dir.path());
    let admin = read_key(dir.path(), "admin.key");
    let subscriber = read_key(dir.path(), "subscriber.key");
    #[cfg(unix)]
    for f in ["admin.key", "subscriber.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    let base = first.base.clone();
    let kept = post(&base, &admin, "/v1/tokens", json!({ "sub": "keep" })).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = post(&base, &admin, "/v1/tokens", json!({ "sub": "gone" })).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = post(&base, &admin, "/v1/tokens", json!({ "sub": "bob" })).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(&base, &admin, "/v1/revoke", json!({ "token": revoked })).await;
    assert_eq!(r["seq"], 1);
    let s = post(&base, &admin, "/v1/revoke/subject", json!({ "sub": "bob" })).await;
    assert_eq!((s["seq"].clone(), s["gen"].clone()), (json!(2), json!(1)));
    let ready = get(&base, "/readyz").await;
    let jwks = get(&base, "/.well-known/jwks.json").await;
    let log = first.kill();

    let second = spawn(dir.path());
    let base = second.base.clone();
    assert_eq!(
        read_key(dir.path(), "admin.key"),
        admin,
        "keys are not regenerated"
    );
    assert_eq!(read_key(dir.path(), "subscriber.key"), subscriber);
    let after = get(&base, "/readyz").await;
    assert_eq!(after["epoch"], ready["epoch"], "the epoch stays");
    assert_eq!(after["seq"], 2);
    assert_eq!(
        get(&base, "/.well-known/jwks.json").await,
        jwks,
        "the signing key survives"
    );

    let verify = |t: String| {
        let (base, admin) = (base.clone(), admin.clone());
        async move { post(&base, &admin, "/v1/verify", json!({ "token": t })).await }
    };
    assert_eq!(verify(kept).await["valid"], true);
    assert_eq!(verify(revoked.clone()).await["error"], "token_revoked");
    assert_eq!(verify(bob).await["error"], "token_revoked");
    let again = post(&base, &admin, "/v1/revoke", json!({ "token": revoked })).await;
    assert_eq!(
        (again["already_revoked"].clone(), again["seq"].clone()),
        (json!(true), json!(1))
    );
    // The subject generation survived too: the next revocation raises it to 2, seq goes on.
    let s = post(&base, &admin, "/v1/revoke/subject", json!({ "sub": "bob" })).await;
    assert_eq!((s["seq"].clone(), s["gen"].clone()), (json!(3), json!(2)));
    let log = log + &second.kill();

    // Nothing secret reached the logs, even at debug level.
    assert!(log.contains("listening"), "{log}");
    for secret in [&admin, &subscriber, &revoked] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret leaked into the log"
        );
    }
    assert!(log.contains("admin.key"), "the key file path is logged");
}

#[tokio::test]
async fn create_key_subcommand_works_against_a_running_authority() {
    let dir = tempfile::tempdir().unwrap();
    let running = spawn(dir.path());
    let admin = read_key(dir.path(), "admin.key");
    let token = post(&running.base, &admin, "/v1/tokens", json!({ "sub": "z" })).await["token"]
        .as_str()
        .unwrap()
        .to_string();

    let out = Command::new(BIN)
        .args([
            "create-key",
            "--scope",
            "introspect",
            "--label",
            "gateway",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("rvc_"));

    let client = reqwest::Client::new();
    let verify = client
        .post(format!("{}/v1/verify", running.base))
        .bearer_auth(&key)
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), 200);
    let issue = client
        .post(format!("{}/v1/tokens", running.base))
        .bearer_auth(&key)
        .json(&json!({ "sub": "z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(issue.status(), 403);
    running.kill();
}

/// `revocast-authority keys …` against the data directory of `dir`: exit status and output.
fn keys(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = exit_within(
        Command::new(BIN)
            .arg("keys")
            .args(args)
            .arg("--data-dir")
            .arg(dir),
    );
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn keys_list_and_revoke_subcommands_work_against_a_running_authority() {
    let dir = tempfile::tempdir().unwrap();
    let running = spawn(dir.path());
    let admin = read_key(dir.path(), "admin.key");
    let subscriber = read_key(dir.path(), "subscriber.key");
    let (code, key, err) = keys(
        dir.path(),
        &["create", "--scope", "introspect", "--label", "gateway"],
    );
    assert_eq!(code, Some(0), "{err}");
    let key = key.trim().to_string();
    let client = reqwest::Client::new();
    let verify = || {
        client
            .post(format!("{}/v1/verify", running.base))
            .bearer_auth(&key)
            .json(&json!({ "token": "a.b.c" }))
            .send()
    };
    // In use, so the running authority has it cached as valid.
    for _ in 0..3 {
        assert_eq!(verify().await.unwrap().status(), 200);
    }

    let (code, table, err) = keys(dir.path(), &["list"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, lines, err) = keys(dir.path(), &["list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    for secret in [&admin, &subscriber, &key] {
        assert!(!table.contains(secret.as_str()) && !lines.contains(secret.as_str()));
        assert!(!table.contains(&secret[4..16]) && !lines.contains(&secret[4..16]));
    }
    let listed: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{lines}");
    let gateway = listed.iter().find(|k| k["label"] == "gateway").unwrap();
    assert_eq!(gateway["scope"], "introspect");
    assert_eq!(gateway["revoked_at"], Value::Null);
    let id = gateway["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 43);
    // The table: a header, then one line per key with its id, scope and label.
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].starts_with("ID") && rows[0].contains("LABEL"),
        "{table}"
    );
    let row = rows
        .iter()
        .find(|r| r.starts_with(&id))
        .expect("listed by id");
    assert!(
        row.contains("introspect") && row.ends_with("gateway"),
        "{row}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("admin") && r.ends_with("bootstrap admin"))
    );

    // Revoke by a prefix of the id; the running authority refuses the key within a second.
    let (code, out, err) = keys(dir.path(), &["revoke", &id[..10]]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked") && out.contains(&id), "{out}");
    let revoked = std::time::Instant::now();
    loop {
        let status = verify().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the revoked key still works after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, lines, _) = keys(dir.path(), &["list", "--json"]);
    assert!(lines.lines().any(|l| {
        let k: Value = serde_json::from_str(l).unwrap();
        k["id"] == id.as_str() && k["revoked_at"].is_i64()
    }));

    let (code, out, _) = keys(dir.path(), &["revoke", &id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("already revoked"), "{out}");
    for (wrong, says) in [("zzzzzzzzzz", "no API key"), ("ab", "at least 6")] {
        let (code, _, err) = keys(dir.path(), &["revoke", wrong]);
        assert_eq!(code, Some(1), "{wrong}");
        assert!(err.contains(says), "{wrong}: {err}");
    }
    // The admin key still works; a mistyped data directory is refused, not created.
    let status = client
        .get(format!("{}/v1/api-keys", running.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let nowhere = dir.path().join("nowhere");
    let (code, _, err) = keys(&nowhere, &["list"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!nowhere.exists());
    running.kill();
}

#[test]
fn invalid_configuration_exits_2_before_binding_or_writing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never-created");
    for args in [
        vec!["--default-ttl", "2d"],
        vec!["--issuer", "not a url"],
        vec!["--max-ttl", "0"],
        vec!["--listen", "nowhere"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
        assert!(!data.exists(), "{args:?} touched the data directory");
    }
}

/// Permission bits of `path`, in octal (`"0600"`).
#[cfg(unix)]
fn mode(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    format!("{mode:04o}")
}

/// The data directory is `0700` and every secret in it that exists `0600`; returns how many
/// secret files there were.
#[cfg(unix)]
fn assert_private(dir: &Path) -> usize {
    assert_eq!(mode(dir), "0700", "{}", dir.display());
    let secrets = [
        "revocast.db",
        "revocast.db-wal",
        "revocast.db-shm",
        "admin.key",
        "subscriber.key",
    ];
    let present: Vec<_> = secrets
        .iter()
        .map(|name| dir.join(name))
        .filter(|p| p.exists())
        .collect();
    for path in &present {
        assert_eq!(mode(path), "0600", "{}", path.display());
    }
    present.len()
}

#[test]
fn a_data_directory_started_with_another_issuer_exits_2_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    // `spawn` leaves the issuer to its default, the URL of `--listen`.
    spawn(dir.path()).kill();
    let out = exit_within(
        Command::new(BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--issuer",
                "https://other.example",
            ])
            .arg("--data-dir")
            .arg(dir.path()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("http://127.0.0.1:0") && stderr.contains("https://other.example"),
        "{stderr}"
    );
    // The recorded issuer still starts.
    spawn(dir.path()).kill();
}

fn create_key(data_dir: &Path) -> std::process::Output {
    exit_within(
        Command::new(BIN)
            .args(["create-key", "--scope", "introspect", "--data-dir"])
            .arg(data_dir),
    )
}

/// Run `command` to its end, killing it (and failing) if it is still running after 30 s: a
/// start that should be refused must not hang the test instead.
fn exit_within(command: &mut Command) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("still running after 30 s: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[cfg(unix)]
#[test]
fn a_data_directory_made_by_create_key_stays_private_under_serve() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let out = create_key(&data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(assert_private(&data) >= 1, "create-key made no database");

    let running = spawn(&data);
    let secrets = assert_private(&data);
    running.kill();
    assert!(secrets >= 3, "serve wrote no database or key files");
}

#[cfg(unix)]
#[test]
fn an_open_data_directory_and_database_are_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let open = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for serve in [false, true] {
        let parent = tempfile::tempdir().unwrap();
        let data = parent.path().join("data");
        std::fs::create_dir(&data).unwrap();
        open(&data, 0o755);
        // An empty file is an empty SQLite database.
        std::fs::write(data.join("revocast.db"), b"").unwrap();
        open(&data.join("revocast.db"), 0o644);
        if serve {
            spawn(&data).kill();
        } else {
            let out = create_key(&data);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(mode(&data.join("revocast.db")), "0600", "serve: {serve}");
        assert_private(&data);
    }
}

#[cfg(unix)]
#[test]
fn a_secret_open_to_others_that_cannot_be_tightened_refuses_the_start() {
    // procfs refuses every chmod, even root's: `admin.key` pointing at a world-readable
    // /proc file is a secret others can read and nobody can tighten.
    let unchangeable = Path::new("/proc/self/status");
    if !unchangeable.exists() {
        eprintln!(
            "SKIPPED: no {} to stand for an unchangeable file",
            unchangeable.display()
        );
        return;
    }
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(unchangeable, data.join("admin.key")).unwrap();
    let serve = exit_within(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data),
    );
    for (what, out) in [("serve", serve), ("create-key", create_key(&data))] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(&data.join("admin.key").display().to_string())
                && stderr.contains("0444"),
            "{what}: {stderr}"
        );
        assert!(
            !data.join("revocast.db").exists(),
            "{what} opened the database"
        );
    }
}

/// A raw WebSocket subscriber's view: `seq` → `sid` of every session revocation received.
type Seen = std::collections::BTreeMap<u64, String>;

/// Follow `/v1/stream` from `since`, recording events, until the connection ends (the
/// authority was killed) or `until` is reached. Returns the last applied `seq`.
async fn follow(base: &str, key: &str, since: u64, until: Option<u64>, seen: &mut Seen) -> u64 {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/v1/stream?since={since}",
        base.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut last = since;
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await else {
        return last;
    };
    while until.is_none_or(|u| last < u) {
        let Some(Ok(frame)) = ws.next().await else {
            break;
        };
        let Ok(text) = frame.to_text() else { continue };
        let value: Value = serde_json::from_str(text).unwrap();
        let messages = match value {
            Value::Array(items) => items,
            one => vec![one],
        };
        for m in messages {
            let Some(seq) = m["seq"].as_u64().filter(|_| m["type"] == "session") else {
                assert!(
                    ["hello", "heartbeat"].contains(&m["type"].as_str().unwrap()),
                    "unexpected message {m}"
                );
                continue;
            };
            assert_eq!(seq, last + 1, "the stream skipped or repeated a seq");
            seen.insert(seq, m["sid"].as_str().unwrap().to_string());
            last = seq;
        }
    }
    last
}

/// Session revocations from `clients` concurrent clients until the authority dies; returns
/// every one that was acknowledged with `200`, as `seq` → `sid`.
async fn revoke_until_killed(base: &str, admin: &str, round: usize, clients: usize) -> Seen {
    let http = reqwest::Client::new();
    let tasks = (0..clients).map(|c| {
        let (http, base, admin) = (http.clone(), base.to_string(), admin.to_string());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let sid = format!("r{round}-c{c}-{i}");
                let sent = http
                    .post(format!("{base}/v1/revoke/session"))
                    .bearer_auth(&admin)
                    .json(&json!({ "sid": sid }))
                    .send()
                    .await;
                // A refused or cut request: the authority is gone, its outcome unknown.
                let Ok(resp) = sent else { break };
                if resp.status() != 200 {
                    break;
                }
                let Ok(answer) = resp.json::<Value>().await else {
                    break;
                };
                acked.push((answer["seq"].as_u64().unwrap(), sid));
            }
            acked
        })
    });
    let mut acked = Seen::new();
    for task in futures_util::future::join_all(tasks).await {
        for (seq, sid) in task.unwrap() {
            assert!(
                acked.insert(seq, sid).is_none(),
                "a seq was acknowledged twice"
            );
        }
    }
    acked
}

/// Rounds of concurrent revocations cut by SIGKILL at a random moment: after each restart on
/// the same data directory, every acknowledged revocation is in the snapshot with its `seq`,
/// the log is gap-free, and a subscriber that resumes from its last `seq` holds exactly the
/// authority's set.
#[tokio::test]
async fn acknowledged_revocations_survive_sigkill_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn(dir.path());
    let admin = read_key(dir.path(), "admin.key");
    let subscriber = read_key(dir.path(), "subscriber.key");
    let mut acked = Seen::new();
    let mut seen = Seen::new();
    let mut applied = 0;
    for round in 0..5 {
        let base = proc.base.clone();
        // The first session client 0 revokes this round: its token must verify as revoked.
        let token = post(
            &base,
            &admin,
            "/v1/tokens",
            json!({ "sub": "crash", "sid": format!("r{round}-c0-0") }),
        )
        .await["token"]
            .as_str()
            .unwrap()
            .to_string();
        let watcher = {
            let (base, key) = (base.clone(), subscriber.clone());
            let mut seen = std::mem::take(&mut seen);
            tokio::spawn(async move {
                let last = follow(&base, &key, applied, None, &mut seen).await;
                (last, seen)
            })
        };
        let writers = tokio::spawn({
            let (base, admin) = (base.clone(), admin.clone());
            async move { revoke_until_killed(&base, &admin, round, 16).await }
        });
        // A different moment in each round: somewhere in 50..550 ms of steady writing.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        tokio::time::sleep(Duration::from_millis(50 + u64::from(nanos % 500))).await;
        proc.kill();
        let round_acked = writers.await.unwrap();
        assert!(
            !round_acked.is_empty(),
            "round {round}: nothing was acknowledged"
        );
        eprintln!(
            "round {round}: {} revocations acknowledged before SIGKILL",
            round_acked.len()
        );
        acked.extend(round_acked);
        (applied, seen) = watcher.await.unwrap();

        proc = spawn(dir.path());
        let head = get(&proc.base, "/readyz").await["seq"].as_u64().unwrap();
        let max_acked = *acked.keys().next_back().unwrap();
        assert!(
            head >= max_acked,
            "round {round}: head {head} < acknowledged {max_acked}"
        );
        // Every revocation is in force (sessions last max_ttl), so the snapshot is the log.
        let snapshot = reqwest::Client::new()
            .get(format!("{}/v1/snapshot", proc.base))
            .bearer_auth(&subscriber)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(snapshot["seq"], head);
        let held: Seen = snapshot["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["seq"].as_u64().unwrap(),
                    e["sid"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(
            held.keys().copied().eq(1..=head),
            "round {round}: the log has a gap"
        );
        for (seq, sid) in &acked {
            assert_eq!(
                held.get(seq),
                Some(sid),
                "round {round}: acknowledged seq {seq} lost"
            );
        }
        let verdict = post(&proc.base, &admin, "/v1/verify", json!({ "token": token })).await;
        if acked.values().any(|sid| *sid == format!("r{round}-c0-0")) {
            assert_eq!(
                verdict["error"], "token_revoked",
                "round {round}: {verdict}"
            );
        }
        // The subscriber resumes from where it was cut and ends with exactly the same set.
        applied = follow(&proc.base, &subscriber, applied, Some(head), &mut seen).await;
        assert_eq!(applied, head);
        assert_eq!(seen, held, "round {round}: the subscriber's set differs");
    }
    proc.kill();
}

/// `POST /oauth2/token` with `refresh_token`: `Some((status, answer))`, or `None` if the
/// request was refused or cut (the authority is gone: its outcome is unknown).
async fn refresh(http: &reqwest::Client, base: &str, token: &str) -> Option<(u16, Value)> {
    let resp = http
        .post(format!("{base}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=refresh_token&refresh_token={token}"))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

async fn refresh_active(base: &str, admin: &str, token: &str) -> bool {
    let resp = reqwest::Client::new()
        .post(format!("{base}/oauth2/introspect"))
        .bearer_auth(admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["active"] == true
}

/// One session's refresh tokens as a client saw them: every token it was given, oldest first,
/// and whether the last one was being rotated when the authority died (outcome unknown).
struct Family {
    tokens: Vec<String>,
    in_flight: bool,
}

/// Rotate the session of `first` over and over until the authority dies.
async fn rotate_until_killed(base: String, first: String) -> Family {
    let http = reqwest::Client::new();
    let mut tokens = vec![first];
    loop {
        let current = tokens.last().unwrap().clone();
        match refresh(&http, &base, &current).await {
            Some((200, answer)) => tokens.push(answer["refresh_token"].as_str().unwrap().into()),
            Some((status, answer)) => panic!("a rotation was refused: {status} {answer}"),
            None => {
                return Family {
                    tokens,
                    in_flight: true,
                };
            }
        }
    }
}

/// Rounds of concurrent rotations (one session per client) cut by SIGKILL at a random moment.
/// After each restart: every rotation that was acknowledged survived (its new token is live
/// and works, once), no family has two live tokens, and no refresh token is in the log.
#[tokio::test]
async fn acknowledged_rotations_survive_sigkill_and_no_family_has_two_live_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // The clients all come from 127.0.0.1: no per-address limit in this test.
    let env = [("REVOCAST_RATE_LIMIT_TOKENS", "0")];
    let mut proc = spawn_with(dir.path(), &env);
    let admin = read_key(dir.path(), "admin.key");
    for round in 0..4 {
        let base = proc.base.clone();
        let mut clients = Vec::new();
        for c in 0..12 {
            let first = post(
                &base,
                &admin,
                "/v1/tokens",
                json!({ "sub": format!("r{round}-c{c}"), "refresh": true }),
            )
            .await["refresh_token"]
                .as_str()
                .unwrap()
                .to_string();
            clients.push(tokio::spawn(rotate_until_killed(base.clone(), first)));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        tokio::time::sleep(Duration::from_millis(100 + u64::from(nanos % 500))).await;
        let log = proc.kill();
        let mut families = Vec::new();
        for client in clients {
            families.push(client.await.unwrap());
        }
        let rotations: usize = families.iter().map(|f| f.tokens.len() - 1).sum();
        eprintln!("round {round}: {rotations} rotations acknowledged before SIGKILL");
        assert!(rotations > 0, "round {round}: nothing was rotated");
        for token in families.iter().flat_map(|f| &f.tokens) {
            assert!(
                !log.contains(token.as_str()),
                "a refresh token is in the log"
            );
            assert!(
                !log.contains(&token["rvr_".len()..]),
                "a refresh token is in the log"
            );
        }

        proc = spawn_with(dir.path(), &env);
        for (c, family) in families.iter().enumerate() {
            let (last, older) = family.tokens.split_last().unwrap();
            for token in older {
                assert!(
                    !refresh_active(&proc.base, &admin, token).await,
                    "round {round}, client {c}: a rotated token is live again"
                );
            }
            if !refresh_active(&proc.base, &admin, last).await {
                // Only the rotation the kill cut may have landed unacknowledged; then its new
                // token, which nobody saw, is the family's one live token.
                assert!(
                    family.in_flight,
                    "round {round}, client {c}: an acknowledged token was lost"
                );
                continue;
            }
            // The last acknowledged token works, once.
            let (status, answer) = refresh(&reqwest::Client::new(), &proc.base, last)
                .await
                .unwrap();
            assert_eq!(status, 200, "round {round}, client {c}: {answer}");
            let next = answer["refresh_token"].as_str().unwrap();
            assert!(!refresh_active(&proc.base, &admin, last).await);
            assert!(refresh_active(&proc.base, &admin, next).await);
        }
    }
    let log = proc.kill();
    assert!(!log.contains("rvr_"), "a refresh token is in the log");
}
