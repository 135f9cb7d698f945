//! The operator console (`GET /console`): its headers and page (strict CSP, no inline script
//! or style, no markup sink in the script), the observer stream it reads, and — in a real
//! headless Chromium driven through chromedriver — the whole operator story against a real
//! authority and real agents: sign in, see the agents appear, revoke a subject waiting for the
//! fleet, see a stopped agent and a frozen one turn stale. Each step is screenshotted under
//! the target directory (`console-screenshots/`, kept by CI) and the PNGs are checked.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them
//! and sets `REVOCAST_REQUIRE_BROWSER=1`, which turns a missing browser into a failure).
//! `REVOCAST_CHROMIUM` and `REVOCAST_CHROMEDRIVER` override the paths.

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use revocast_agent::{Agent, AgentConfig, Transport};
use revocast_tests::stream_client::{Subscriber, Transport as Raw};
use revocast_tests::{PATIENCE, TestAuthority, eventually};
use serde_json::{Value, json};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'none'";

/// A subscriber name that is markup: the console must show it as these characters.
const MARKUP_NAME: &str = "<img src=x onerror=alert(1)>";

async fn get(a: &TestAuthority, path: &str, etag: Option<&str>) -> reqwest::Response {
    let mut req = a.http.get(format!("{}{path}", a.base));
    if let Some(tag) = etag {
        req = req.header("if-none-match", tag);
    }
    req.send().await.expect("console request")
}

#[tokio::test]
async fn console_files_carry_a_strict_csp_and_the_other_security_headers() {
    let a = TestAuthority::start().await;
    for (path, content_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "text/css; charset=utf-8"),
    ] {
        // No key needed: the files hold no data and no secret.
        let resp = get(&a, path, None).await;
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], content_type, "{path}");
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin", "{path}");
        let etag = h["etag"].to_str().unwrap().to_string();
        assert!(!resp.text().await.unwrap().is_empty(), "{path}");
        // Revalidation: the same version is not sent again, still with the policy.
        let again = get(&a, path, Some(&etag)).await;
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["content-security-policy"], CSP, "{path}");
        assert_eq!(get(&a, path, Some("\"other\"")).await.status(), 200);
    }

    // The page: one external script and stylesheet of this origin, nothing inline.
    let page = get(&a, "/console", None).await.text().await.unwrap();
    let lower = page.to_ascii_lowercase();
    assert_eq!(lower.matches("<script").count(), 1, "one script tag");
    assert!(
        lower.contains(r#"<script src="/console/app.js" defer></script>"#),
        "the script is external and empty"
    );
    assert!(
        lower.contains(r#"<link rel="stylesheet" href="/console/app.css">"#),
        "the stylesheet is external"
    );
    assert!(!lower.contains("<style"), "no inline stylesheet");
    assert!(!lower.contains(" style="), "no inline style attribute");
    assert!(!lower.contains("javascript:"), "no javascript: URL");
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " oninput=",
    ] {
        assert!(!lower.contains(handler), "no inline handler {handler}");
    }
    // Every address the page loads is this origin's console or inline data.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in lower.match_indices(attr) {
            let value = &lower[i + attr.len()..];
            let value = &value[..value.find('"').unwrap_or(value.len())];
            assert!(
                value.starts_with("/console/") || value.starts_with("data:"),
                "nothing from elsewhere: {value}"
            );
        }
    }

    // The script builds no markup from strings, and keeps the key out of lasting storage.
    let script = get(&a, "/console/app.js", None).await.text().await.unwrap();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "createContextualFragment",
        "DOMParser",
        "srcdoc",
        "eval(",
        "new Function",
        "localStorage",
        "document.cookie",
        "http://",
        "https://",
    ] {
        assert!(!script.contains(sink), "app.js must not use {sink}");
    }
    assert!(script.contains("sessionStorage"), "the key is kept per tab");
    assert!(script.contains("textContent"), "text is set as text");
    let style = get(&a, "/console/app.css", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !style.contains("@import") && !style.contains("url("),
        "no remote CSS"
    );
}

#[tokio::test]
async fn an_observer_stream_is_not_in_the_fleet_and_needs_an_admin_key() {
    let a = TestAuthority::start().await;
    // The console's stream: an admin key with observe=true.
    let mut observer = Subscriber::connect(Raw::Sse, &a.base, Some(&a.admin_key), "observe=true")
        .await
        .expect("an admin key may observe");
    let hello = observer.next().await.expect("hello");
    assert_eq!(hello["type"], "hello", "{hello}");
    assert!(
        hello.get("conn").is_none(),
        "an observer has no ack handle: {hello}"
    );
    let fleet = a.admin_get("/v1/fleet").await;
    assert_eq!(fleet["totals"]["subscribers"], 0, "{fleet}");
    // Nor is it waited for: with nobody else connected the fleet wait ends at once, complete.
    let answer = a
        .admin_post(
            "/v1/revoke/session",
            json!({"sid": "s-1", "wait": "fleet", "wait_timeout_ms": 10_000}),
        )
        .await;
    assert_eq!(
        answer["propagation"],
        json!({"applied": 0, "of": 0, "slowest_ms": null, "missing": []}),
        "{answer}"
    );
    let seq = answer["seq"].as_u64().unwrap();
    assert_eq!(
        observer.events_through(seq).await,
        vec![seq],
        "it still sees events"
    );
    // A subscriber key cannot hide from the fleet, on either transport.
    for transport in [Raw::Sse, Raw::WebSocket] {
        let refused =
            Subscriber::connect(transport, &a.base, Some(&a.subscriber_key), "observe=true")
                .await
                .err()
                .expect("refused");
        assert_eq!(refused.status, 403, "{transport:?}: {:?}", refused.body);
    }
    // observe=false is an ordinary subscription.
    let _joined = Subscriber::connect(
        Raw::Sse,
        &a.base,
        Some(&a.subscriber_key),
        "observe=false&name=plain",
    )
    .await
    .expect("connects");
    eventually("the plain subscriber is listed", || async {
        a.admin_get("/v1/fleet").await["totals"]["subscribers"] == 1
    })
    .await;
}

// ---- the browser ---------------------------------------------------------------------------

/// The chromium and chromedriver binaries, or `None` (the test is skipped, loudly) when they
/// are missing and `REVOCAST_REQUIRE_BROWSER` is not `1`.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let path = |var: &str, default: &str| {
        PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()))
    };
    let chromium = path("REVOCAST_CHROMIUM", "/usr/bin/chromium");
    let driver = path("REVOCAST_CHROMEDRIVER", "/usr/bin/chromedriver");
    if chromium.exists() && driver.exists() {
        return Some((chromium, driver));
    }
    let required = std::env::var("REVOCAST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "REVOCAST_REQUIRE_BROWSER=1 but {} or {} is missing (apt-get install chromium \
         chromium-driver)",
        chromium.display(),
        driver.display()
    );
    eprintln!(
        "SKIPPED: the console browser test needs {} and {} (apt-get install chromium \
         chromium-driver); set REVOCAST_REQUIRE_BROWSER=1 to make this a failure",
        chromium.display(),
        driver.display()
    );
    None
}

/// A chromedriver process of ours, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(driver: &Path) -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    eventually("chromedriver is ready", || async {
        match http.get(format!("{}/status", d.url)).send().await {
            Ok(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["value"]["ready"] == true),
            Err(_) => false,
        }
    })
    .await;
    d
}

async fn open_browser(chromium: &Path, driver: &Driver, profile: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium.to_str().expect("a UTF-8 path"),
            // As root in a container, without GPU; the closed network refuses Chromium's own
            // background connections, so they are turned off.
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--hide-scrollbars", "--force-device-scale-factor=1",
                "--window-size=1440,960",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!("a JSON object")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session in chromium")
}

/// Run `script` (a function body) in the page and return its result.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect("script in the page")
}

/// Poll `script` until it returns `true`, panicking with `what` (and the last `detail`).
async fn until(c: &Client, what: &str, script: &str, detail: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if js(c, script).await == Value::Bool(true) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting until {what}: {}", js(c, detail).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fleet table as drawn: one object per rendered row, in order.
const ROWS: &str = "return Array.from(document.querySelectorAll('#fleet-rows .row')).map(r => ({
    name: r.children[1].textContent, state: r.children[0].textContent, cls: r.className,
    applied: r.children[5].textContent, lag: r.children[6].textContent,
    since: r.children[8].textContent }));";

fn rows_where(condition: &str) -> String {
    format!(
        "const rows = Array.from(document.querySelectorAll('#fleet-rows .row')).map(r => ({{
            name: r.children[1].textContent, state: r.children[0].textContent,
            cls: r.className }}));
         return {condition};"
    )
}

fn agent_config(a: &TestAuthority, name: &str, transport: Transport) -> AgentConfig {
    let mut c = AgentConfig::new(&a.base, a.subscriber_key.clone());
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.name = name.to_string();
    c.transport = transport;
    c
}

/// Where the screenshots go: `console-screenshots/` in the target directory.
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("console-screenshots")
}

/// Screenshots taken so far by one test (their names start with `prefix`), each checked
/// against the previous.
struct Shots {
    dir: PathBuf,
    prefix: &'static str,
    previous: Option<Png>,
}

impl Shots {
    /// Start a series, removing this test's screenshots of an earlier run.
    fn new(prefix: &'static str) -> Self {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        for entry in std::fs::read_dir(&dir).expect("screenshot dir").flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(prefix) && name.ends_with(".png") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Self {
            dir,
            prefix,
            previous: None,
        }
    }

    /// Save a screenshot as `name`.png and check it: a PNG that decodes, of the viewport's
    /// size, not blank, and (after the first) visibly different from the step before.
    async fn take(&mut self, c: &Client, name: &str) {
        let bytes = c.screenshot().await.expect("screenshot");
        let name = format!("{}{name}", self.prefix);
        let path = self.dir.join(format!("{name}.png"));
        std::fs::write(&path, &bytes).expect("write screenshot");
        let png = Png::decode(&bytes).unwrap_or_else(|e| panic!("{name}.png: {e}"));
        let size = js(
            c,
            "return [Math.round(window.innerWidth * devicePixelRatio), \
                     Math.round(window.innerHeight * devicePixelRatio)];",
        )
        .await;
        assert_eq!(
            json!([png.width, png.height]),
            size,
            "{name}.png has the viewport's size"
        );
        assert!(
            png.colours() >= 8,
            "{name}.png is not blank ({} colours)",
            png.colours()
        );
        if let Some(before) = &self.previous {
            let changed = png.changed_pixels(before);
            let total = (png.width * png.height) as usize;
            assert!(
                changed * 1000 >= total,
                "{name}.png differs from the step before ({changed} of {total} pixels changed)"
            );
        }
        eprintln!("screenshot: {}", path.display());
        self.previous = Some(png);
    }
}

/// Start chromedriver and a headless Chromium, run `test` with the session, then close the
/// browser and stop the driver, whatever `test` did. Skips when there is no browser.
async fn in_browser<F, Fut>(test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((chromium, driver_bin)) = browser_binaries() else {
        return;
    };
    let driver = start_driver(&driver_bin).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let c = open_browser(&chromium, &driver, profile.path()).await;
    let outcome = AssertUnwindSafe(test(c.clone())).catch_unwind().await;
    let _ = c.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn the_console_in_a_real_browser_follows_the_fleet_through_a_revocation() {
    in_browser(|c| async move {
        let a = TestAuthority::start().await;
        drive(&a, &c).await;
    })
    .await;
}

async fn drive(a: &TestAuthority, c: &Client) {
    let mut shots = Shots::new("step-");

    // 1. The sign-in page; a wrong key is refused and nothing is kept.
    c.goto(&format!("{}/console", a.base)).await.expect("open");
    let key_input = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("#login-key"))
        .await
        .expect("the key field");
    assert!(
        !c.find(Locator::Id("app-view"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    key_input.send_keys("not-a-key").await.unwrap();
    c.find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        c,
        "the wrong key is refused",
        "return document.getElementById('login-error').textContent.includes('Sign-in failed');",
        "return document.getElementById('login-error').textContent;",
    )
    .await;
    assert_eq!(js(c, "return sessionStorage.length;").await, 0);
    shots.take(c, "01-sign-in").await;

    // 2. Sign in; then agents start and appear, one of them named with markup.
    key_input.clear().await.unwrap();
    key_input.send_keys(&a.admin_key).await.unwrap();
    c.find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        c,
        "the console is shown",
        "return !document.getElementById('app-view').hidden \
            && document.getElementById('health-stream').dataset.state === 'ok';",
        "return document.body.innerText.slice(0, 500);",
    )
    .await;
    // The key is in this tab's session storage only.
    let kept = js(
        c,
        "return [sessionStorage.getItem('revocast.console.adminKey'), localStorage.length, \
                 document.cookie];",
    )
    .await;
    assert_eq!(kept, json!([a.admin_key, 0, ""]));
    let mut agents = Vec::new();
    for (name, transport) in [
        ("edge-1", Transport::Websocket),
        ("edge-2", Transport::Sse),
        ("edge-3", Transport::Websocket),
        (MARKUP_NAME, Transport::Websocket),
    ] {
        let agent = Agent::start(agent_config(a, name, transport)).expect("agent");
        assert!(agent.wait_until_synced(PATIENCE).await, "{name} synced");
        agents.push(agent);
    }
    until(
        c,
        "the four agents are listed, current",
        &rows_where(
            "rows.length === 4 && rows.every(r => r.cls === 'row s-current') \
             && document.getElementById('t-current').textContent === '4'",
        ),
        ROWS,
    )
    .await;
    // The markup name is shown as its characters, and no element came of it.
    let names = js(c, ROWS).await;
    assert!(
        names
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == MARKUP_NAME),
        "{names}"
    );
    assert_eq!(
        js(c, "return document.querySelectorAll('img').length;").await,
        0
    );
    // The console's own stream is not one of the fleet.
    let fleet = a.admin_get("/v1/fleet").await;
    assert_eq!(fleet["totals"]["subscribers"], 4, "{fleet}");
    assert_eq!(
        c.find(Locator::Id("health-live"))
            .await
            .unwrap()
            .attr("data-state")
            .await
            .unwrap(),
        Some("ok".into())
    );
    assert_eq!(
        c.find(Locator::Id("health-ready"))
            .await
            .unwrap()
            .attr("data-state")
            .await
            .unwrap(),
        Some("ok".into())
    );
    shots.take(c, "02-fleet").await;

    // 3. Revoke a subject from the form, waiting for the fleet: every agent acknowledges.
    c.find(Locator::Id("revoke-value"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    c.find(Locator::Id("revoke-reason"))
        .await
        .unwrap()
        .send_keys("laptop stolen")
        .await
        .unwrap();
    c.find(Locator::Id("revoke-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        c,
        "the propagation is shown complete",
        "return document.getElementById('revoke-result').dataset.state === 'complete';",
        "return document.getElementById('revoke-result').textContent;",
    )
    .await;
    let title = c
        .find(Locator::Id("revoke-title"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(title.contains("4 of 4"), "{title}");
    let head = a.head();
    let detail = c
        .find(Locator::Id("revoke-detail"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(detail.contains(&format!("seq {head}")), "{detail}");
    for agent in &agents {
        assert!(agent.watch_applied().borrow().get() >= head, "applied");
    }
    until(
        c,
        "the latest revocation shows the whole fleet applied it",
        &format!(
            "const li = document.querySelector('#revocations li');
             return !!li && li.dataset.seq === '{head}'
                && li.querySelector('.kind').textContent === 'subject'
                && li.querySelector('.target').textContent === 'alice'
                && li.querySelector('.share').textContent === '100%';"
        ),
        "return document.getElementById('revocations').textContent;",
    )
    .await;
    until(
        c,
        "every row shows the revocation applied",
        &rows_where(&format!(
            "rows.length === 4 && Array.from(document.querySelectorAll('#fleet-rows .row'))\
             .every(r => r.children[5].textContent === '{head}')"
        )),
        ROWS,
    )
    .await;
    shots.take(c, "03-revoked").await;

    // 4. Stop an agent: it is kept in the table, marked disconnected, sorted first by lag.
    let stopped = agents.remove(2);
    drop(stopped);
    until(
        c,
        "the stopped agent is marked disconnected",
        &rows_where(
            "rows.length === 4 && rows[0].name === 'edge-3' && rows[0].cls === 'row s-gone' \
             && rows[0].state.startsWith('disconnected') \
             && document.getElementById('t-gone').textContent === '1' \
             && document.getElementById('t-connected').textContent === '3'",
        ),
        ROWS,
    )
    .await;
    shots.take(c, "04-stopped").await;

    // 5. A subscriber that stops applying (connected, silent) turns stale once the
    //    revocation it lacks is older than the threshold.
    let mut frozen = Subscriber::connect(
        Raw::WebSocket,
        &a.base,
        Some(&a.subscriber_key),
        "name=frozen-1&version=0.0.9",
    )
    .await
    .expect("connects");
    let hello = frozen.next().await.expect("hello");
    let at = hello["seq"].as_u64().unwrap();
    frozen
        .send_text(&json!({"type": "ack", "seq": at, "epoch": a.epoch().to_string()}).to_string())
        .await;
    until(
        c,
        "the frozen subscriber is listed, current",
        &rows_where("rows.some(r => r.name === 'frozen-1' && r.cls === 'row s-current')"),
        ROWS,
    )
    .await;
    let lacked = a.revoke_session("s-frozen").await;
    until(
        c,
        "the frozen subscriber is marked stale (and sorted just after the disconnected one)",
        &rows_where(
            "rows.length === 5 && rows[0].name === 'edge-3' && rows[1].name === 'frozen-1' \
             && rows[1].cls === 'row s-stale' \
             && document.getElementById('t-stale').textContent === '1'",
        ),
        ROWS,
    )
    .await;
    let rows = js(c, ROWS).await;
    assert_eq!(rows[1]["applied"], at.to_string(), "{rows}");
    assert!(
        rows[1]["lag"].as_str().unwrap().starts_with("1 · "),
        "{rows}"
    );
    // The agents connected more than the stale threshold (5 s) ago.
    assert_ne!(rows[2]["since"], "now", "{rows}");
    // The agents still running applied it; the revocation's share says 3 of 4.
    until(
        c,
        "the latest revocation shows 3 of 4",
        &format!(
            "const li = document.querySelector('#revocations li');
             return !!li && li.dataset.seq === '{lacked}'
                && li.querySelector('.share').textContent === '75%';"
        ),
        "return document.getElementById('revocations').textContent;",
    )
    .await;
    shots.take(c, "05-stale").await;

    // Sign out: the key leaves the tab.
    c.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        c,
        "signed out",
        "return !document.getElementById('login-view').hidden && sessionStorage.length === 0;",
        "return sessionStorage.length;",
    )
    .await;
    drop(frozen);
}

/// A fleet of 10,000 in the page: `/v1/fleet` answered inside the browser (by a stand-in for
/// `fetch` installed before sign-in) with 10,000 subscribers, 100 of them stale, so the
/// console's own work is what is measured: parsing, sorting and drawing every poll.
const TEN_THOUSAND: &str = r#"
    const now = Date.now() / 1000;
    const subscribers = [];
    for (let i = 1; i <= 10000; i++) {
        const stale = i % 100 === 0;
        subscribers.push({replica: "r1", id: i, name: "agent-" + String(i).padStart(5, "0"),
            version: "0.1.0", transport: i % 2 ? "websocket" : "sse",
            remote: "10.0." + (i >> 8) + "." + (i & 255) + ":51234", connected_at: now - 600,
            applied: stale ? 5 : 10, lag_events: stale ? 5 : 0, lag_ms: stale ? 8000 : 0,
            last_heard: now, resyncs: 1, acks_ignored: 0});
    }
    const body = JSON.stringify({epoch: "e", head: 10, at: now, totals: {}, subscribers});
    const real = window.fetch.bind(window);
    window.polls = 0;
    window.fetch = (url, init) => {
        if (!String(url).startsWith("/v1/fleet")) return real(url, init);
        window.polls += 1;
        return Promise.resolve(new Response(body, {status: 200,
            headers: {"content-type": "application/json"}}));
    };
    // The longest gap between two animation frames: how long the page was unresponsive.
    window.longestFrame = 0;
    let last = performance.now();
    const frame = (t) => {
        window.longestFrame = Math.max(window.longestFrame, t - last);
        last = t;
        requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    return body.length;
"#;

#[tokio::test]
async fn the_console_draws_only_the_visible_rows_of_10000_subscribers() {
    in_browser(|c| async move {
        let a = TestAuthority::start().await;
        let mut shots = Shots::new("scale-");
        c.goto(&format!("{}/console", a.base)).await.expect("open");
        let key = c
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css("#login-key"))
            .await
            .expect("the key field");
        let bytes = js(&c, TEN_THOUSAND).await;
        key.send_keys(&a.admin_key).await.unwrap();
        c.find(Locator::Id("login-submit"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(
            &c,
            "10,000 subscribers are counted, 100 stale first",
            "return document.getElementById('t-connected').textContent === '10000'
                && document.getElementById('t-stale').textContent === '100'
                && document.querySelector('#fleet-rows .row .c-name').textContent
                    === 'agent-00100';",
            "return document.getElementById('tiles').textContent;",
        )
        .await;
        // Only the rows in view (plus a few either side) exist.
        let drawn = js(
            &c,
            "return document.querySelectorAll('#fleet-rows .row').length;",
        )
        .await;
        let drawn = drawn.as_u64().unwrap();
        assert!((10..=100).contains(&drawn), "{drawn} rows drawn of 10,000");
        // Scrolled to row 5,000, the rows there are drawn, and still only those: after the 100
        // stale ones come the rest by id, so row 5,000 is the 4,901st id that is not a
        // multiple of 100, agent-04950.
        js(
            &c,
            "const v = document.getElementById('fleet-viewport'); v.scrollTop = 5000 * 30; \
             return v.scrollTop;",
        )
        .await;
        until(
            &c,
            "the middle of the table is drawn",
            "const rows = Array.from(document.querySelectorAll('#fleet-rows .row'));
             return rows.length <= 100 && rows.some(r => r.children[1].textContent
                 === 'agent-04950');",
            "return Array.from(document.querySelectorAll('#fleet-rows .row'))
                 .map(r => r.children[1].textContent).join(' ');",
        )
        .await;
        // A few polls of 10,000 at the fast rate (a revocation makes it poll 4 times a second).
        js(&c, "window.polls = 0; window.longestFrame = 0; return 0;").await;
        a.revoke_session("s-scale").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let measured = js(&c, "return [window.polls, window.longestFrame];").await;
        let polls = measured[0].as_u64().unwrap();
        assert!(
            polls >= 2,
            "the fleet is polled while a revocation propagates: {measured}"
        );
        eprintln!(
            "10,000 subscribers ({bytes} bytes of fleet JSON per poll): {drawn} rows drawn; \
             {polls} polls in 5 s; longest gap between frames {:.0} ms",
            measured[1].as_f64().unwrap_or(f64::NAN)
        );
        shots.take(&c, "10000").await;
    })
    .await;
}

// ---- PNG -----------------------------------------------------------------------------------

/// A decoded 8-bit RGB or RGBA, non-interlaced PNG (what Chromium's screenshots are): enough
/// of a decoder to prove the file is whole and compare two of them pixel by pixel.
struct Png {
    width: u32,
    height: u32,
    /// Bytes per pixel: 3 or 4.
    bpp: usize,
    pixels: Vec<u8>,
}

impl Png {
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
        let mut rest = bytes.strip_prefix(SIGNATURE).ok_or("not a PNG signature")?;
        let (mut header, mut data, mut ended) = (None, Vec::new(), false);
        while !rest.is_empty() {
            let len =
                u32::from_be_bytes(rest.get(..4).ok_or("truncated")?.try_into().unwrap()) as usize;
            let chunk = rest.get(4..8 + len).ok_or("truncated chunk")?;
            let crc = rest.get(8 + len..12 + len).ok_or("truncated CRC")?;
            if crc32(chunk).to_be_bytes() != crc {
                return Err(format!(
                    "bad CRC in {:?}",
                    String::from_utf8_lossy(&chunk[..4])
                ));
            }
            let (kind, body) = chunk.split_at(4);
            match kind {
                b"IHDR" => header = Some(body.to_vec()),
                b"IDAT" => data.extend_from_slice(body),
                b"IEND" => ended = true,
                _ => {}
            }
            rest = &rest[12 + len..];
        }
        let h = header.ok_or("no IHDR")?;
        if !ended || h.len() != 13 {
            return Err("no IEND, or a bad IHDR".into());
        }
        let width = u32::from_be_bytes(h[0..4].try_into().unwrap());
        let height = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let bpp = match (h[8], h[9], h[12]) {
            (8, 6, 0) => 4,
            (8, 2, 0) => 3,
            other => return Err(format!("unexpected depth/colour/interlace {other:?}")),
        };
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&data[..]), &mut raw)
            .map_err(|e| format!("image data does not inflate: {e}"))?;
        let stride = width as usize * bpp;
        if raw.len() != height as usize * (stride + 1) {
            return Err(format!(
                "{} bytes of image data for {width}×{height}",
                raw.len()
            ));
        }
        let mut pixels = vec![0u8; height as usize * stride];
        for y in 0..height as usize {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for x in 0..stride {
                let a = if x >= bpp {
                    pixels[y * stride + x - bpp]
                } else {
                    0
                };
                let b = if y > 0 {
                    pixels[(y - 1) * stride + x]
                } else {
                    0
                };
                let c = if x >= bpp && y > 0 {
                    pixels[(y - 1) * stride + x - bpp]
                } else {
                    0
                };
                let predicted = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((a as u16 + b as u16) / 2) as u8,
                    4 => paeth(a, b, c),
                    f => return Err(format!("unknown filter {f}")),
                };
                pixels[y * stride + x] = line[x].wrapping_add(predicted);
            }
        }
        Ok(Self {
            width,
            height,
            bpp,
            pixels,
        })
    }

    fn pixel(&self, i: usize) -> &[u8] {
        &self.pixels[i * self.bpp..i * self.bpp + 3]
    }

    /// Distinct colours (up to 1000): a blank page has one or two.
    fn colours(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        for i in 0..(self.width * self.height) as usize {
            seen.insert(self.pixel(i).to_vec());
            if seen.len() >= 1000 {
                break;
            }
        }
        seen.len()
    }

    fn changed_pixels(&self, other: &Png) -> usize {
        if (self.width, self.height) != (other.width, other.height) {
            return (self.width * self.height) as usize;
        }
        (0..(self.width * self.height) as usize)
            .filter(|&i| self.pixel(i) != other.pixel(i))
            .count()
    }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = (
        (p - a as i16).abs(),
        (p - b as i16).abs(),
        (p - c as i16).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
