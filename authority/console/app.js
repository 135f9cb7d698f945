// revocast operator console. Plain JavaScript, no build step, no dependencies.
//
// Safety rules this file keeps (SECURITY.md; tests/tests/console.rs checks them):
// - Everything that came from the network (subscriber names and versions are whatever a
//   subscriber said; subjects and sessions are whatever an admin revoked) is put into the
//   page as text only: textContent, never markup. This file has no markup sink at all.
// - The admin key lives in sessionStorage (this tab only) and travels only as a bearer
//   header to this origin.
"use strict";

(() => {
  const KEY_STORAGE = "revocast.console.adminKey";
  // As the authority's "behind" count (`BEHIND_AFTER`): a subscriber whose oldest unapplied
  // revocation was committed longer ago than this is stale.
  const STALE_AFTER_MS = 5000;
  // Disconnected subscribers stay listed (as stale) this long, at most this many.
  const GONE_KEEP_MS = 10 * 60 * 1000;
  const GONE_MAX = 10000;
  const ROW_HEIGHT = 30;
  const OVERSCAN = 8;
  // At most four renders a second, however fast data arrives.
  const RENDER_EVERY_MS = 250;
  const FLEET_POLL_MS = 1000;
  const FLEET_POLL_FAST_MS = 250;
  const HEALTH_POLL_MS = 2000;
  const REVOCATIONS_KEPT = 50;
  const HISTORY = 30;

  const $ = (id) => document.getElementById(id);

  const state = {
    key: null,
    session: 0, // bumped on sign-in and sign-out: loops of an older session stop
    streamAbort: null,
    epoch: null,
    head: null,
    lastSeq: null,
    rows: [], // live rows from the last /v1/fleet, plus disconnected ones
    gone: new Map(), // key -> row, with goneAt
    view: [], // rows filtered and sorted
    appliedSorted: new Float64Array(0), // applied seqs of acknowledging subscribers, ascending
    sort: { key: "lag", dir: "desc" },
    filter: "",
    revocations: [], // newest first: {seq, type, target, at}
    pending: null, // the revocation being waited for
    fastUntil: 0,
    dirty: false,
    renderTimer: null,
    lastRender: 0,
    fleetAt: 0,
  };

  // ---- helpers ---------------------------------------------------------------------------

  function text(el, value) {
    const s = value == null ? "" : String(value);
    if (el.textContent !== s) el.textContent = s;
  }

  function el(tag, className, content) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (content != null) e.textContent = String(content);
    return e;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function ago(ms) {
    if (ms == null || !isFinite(ms)) return "–";
    if (ms < 1000) return "now";
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min";
    const h = Math.floor(m / 60);
    if (h < 48) return h + " h";
    return Math.floor(h / 24) + " d";
  }

  function duration(ms) {
    if (ms == null) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + " s";
  }

  function authHeaders(extra) {
    const h = { Authorization: "Bearer " + state.key };
    return Object.assign(h, extra || {});
  }

  class AuthError extends Error {}

  async function api(path, init) {
    const resp = await fetch(path, Object.assign({ cache: "no-store", credentials: "omit" }, init));
    if (resp.status === 401 || resp.status === 403) {
      let why = "the key was refused";
      try {
        const body = await resp.json();
        if (body && typeof body.error_description === "string") why = body.error_description;
      } catch (_) { /* not JSON */ }
      throw new AuthError(why);
    }
    return resp;
  }

  // ---- sign in and out -------------------------------------------------------------------

  async function signIn(key, fromForm) {
    state.key = key;
    const submit = $("login-submit");
    submit.disabled = true;
    text($("login-error"), "");
    try {
      const resp = await api("/v1/fleet", { headers: authHeaders() });
      if (!resp.ok) throw new Error("the authority answered " + resp.status);
      const fleet = await resp.json();
      try {
        sessionStorage.setItem(KEY_STORAGE, key);
      } catch (_) { /* storage disabled: the key lives in memory for this page only */ }
      state.session += 1;
      $("login-view").hidden = true;
      $("app-view").hidden = false;
      $("logout").hidden = false;
      $("login-key").value = "";
      takeFleet(fleet);
      startLoops(state.session);
    } catch (e) {
      state.key = null;
      try { sessionStorage.removeItem(KEY_STORAGE); } catch (_) { /* ignore */ }
      if (fromForm) text($("login-error"), "Sign-in failed: " + e.message);
    } finally {
      submit.disabled = false;
    }
  }

  function signOut(message) {
    state.session += 1;
    state.key = null;
    try { sessionStorage.removeItem(KEY_STORAGE); } catch (_) { /* ignore */ }
    if (state.streamAbort) state.streamAbort.abort();
    state.streamAbort = null;
    state.rows = [];
    state.gone.clear();
    state.view = [];
    state.revocations = [];
    state.lastSeq = null;
    state.pending = null;
    $("app-view").hidden = true;
    $("logout").hidden = true;
    $("login-view").hidden = false;
    text($("login-error"), message || "");
    setPill("health-stream", "unknown", "stream");
    $("login-key").focus();
  }

  function startLoops(session) {
    fleetLoop(session);
    streamLoop(session);
    healthLoop(session);
  }

  // ---- health ----------------------------------------------------------------------------

  function setPill(id, s, label) {
    const p = $(id);
    if (p.dataset.state !== s) p.dataset.state = s;
    text(p, label);
  }

  async function healthLoop(session) {
    while (state.session === session) {
      try {
        const live = await fetch("/healthz", { cache: "no-store" });
        setPill("health-live", live.ok ? "ok" : "bad", live.ok ? "live" : "not live");
      } catch (_) {
        setPill("health-live", "bad", "unreachable");
      }
      try {
        const ready = await fetch("/readyz", { cache: "no-store" });
        if (ready.ok) {
          const r = await ready.json();
          setPill("health-ready", "ok", "ready");
          noteHead(r.seq, r.epoch);
        } else {
          setPill("health-ready", "bad", "not ready (" + ready.status + ")");
        }
      } catch (_) {
        setPill("health-ready", "bad", "not ready");
      }
      await sleep(HEALTH_POLL_MS);
    }
  }

  function noteHead(seq, epoch) {
    if (typeof seq === "number" && (state.head == null || seq > state.head)) state.head = seq;
    if (typeof epoch === "string" && epoch !== state.epoch && state.epoch == null) state.epoch = epoch;
    text($("health-head"), state.head == null ? "–" : state.head);
    text($("health-epoch"), state.epoch == null ? "–" : state.epoch.slice(0, 10));
  }

  // ---- the fleet -------------------------------------------------------------------------

  async function fleetLoop(session) {
    while (state.session === session) {
      const started = performance.now();
      try {
        const resp = await api("/v1/fleet", { headers: authHeaders() });
        if (resp.ok && state.session === session) takeFleet(await resp.json());
      } catch (e) {
        if (e instanceof AuthError) {
          if (state.session === session) signOut("Signed out: " + e.message);
          return;
        }
      }
      const took = performance.now() - started;
      const fast = state.pending != null || Date.now() < state.fastUntil;
      // Never more than a few polls a second; a slow answer (a huge fleet, a slow link)
      // spaces them further.
      await sleep(Math.max(fast ? FLEET_POLL_FAST_MS : FLEET_POLL_MS, 2 * took));
    }
  }

  function takeFleet(fleet) {
    const now = Date.now();
    const subscribers = Array.isArray(fleet.subscribers) ? fleet.subscribers : [];
    noteHead(fleet.head, fleet.epoch);
    const live = new Set();
    const names = new Set();
    // A connection is known by its replica and that replica's number for it.
    const keyOf = (s) => String(s.replica) + "/" + s.id;
    for (const s of subscribers) {
      live.add(keyOf(s));
      if (s.name != null) names.add(s.name);
    }
    // Whoever was listed before and is not now has disconnected: keep it, marked, until it
    // comes back (under the same name) or long enough has passed.
    for (const r of state.rows) {
      if (!r.gone && !live.has(r.key)) state.gone.set(r.key, Object.assign({}, r, { gone: true, goneAt: now }));
    }
    for (const [key, r] of state.gone) {
      if (now - r.goneAt > GONE_KEEP_MS || (r.name != null && names.has(r.name)) || live.has(key)) {
        state.gone.delete(key);
      }
    }
    while (state.gone.size > GONE_MAX) state.gone.delete(state.gone.keys().next().value);
    // Times on the wire are Unix seconds (with a millisecond fraction); shift them by the
    // authority's clock offset so ages are right even if the clocks differ.
    const offset = typeof fleet.at === "number" ? now - fleet.at * 1000 : 0;
    const rows = subscribers.map((s) => {
      const r = {
        key: keyOf(s),
        id: s.id,
        replica: s.replica == null ? "" : String(s.replica),
        name: s.name,
        label: s.name != null ? String(s.name) : "#" + s.id,
        version: s.version,
        transport: s.transport,
        remote: s.remote,
        connectedAt: s.connected_at * 1000 + offset,
        applied: s.applied,
        lagEvents: s.lag_events,
        lagMs: s.lag_ms,
        heardAt: s.last_heard == null ? null : s.last_heard * 1000 + offset,
        gone: false,
      };
      r.search = (r.label + " " + (r.version || "") + " " + (r.remote || "") + " " + r.replica).toLowerCase();
      return r;
    });
    for (const r of state.gone.values()) rows.push(r);
    state.rows = rows;
    const applied = subscribers.filter((s) => s.applied != null).map((s) => s.applied);
    state.appliedSorted = Float64Array.from(applied).sort();
    state.fleetAt = now;
    resort();
    scheduleRender();
  }

  function statusOf(r) {
    if (r.gone) return "gone";
    if (r.applied == null) return "silent";
    if ((r.lagMs != null && r.lagMs > STALE_AFTER_MS) || (r.lagEvents > 0 && r.lagMs == null)) {
      return "stale";
    }
    if (r.lagEvents > 0) return "applying";
    return "current";
  }

  const STATUS_LABEL = {
    current: "current",
    applying: "applying",
    stale: "stale",
    gone: "disconnected",
    silent: "no acks",
  };
  const STATUS_RANK = { gone: 4, stale: 3, applying: 2, current: 1, silent: 0 };

  function lagKey(r) {
    if (r.gone) return Number.MAX_VALUE;
    if (r.applied == null) return -1;
    if (r.lagMs == null) return r.lagEvents > 0 ? Number.MAX_VALUE / 2 : 0;
    return r.lagMs + (r.lagEvents || 0) * 1e-6;
  }

  const SORT_KEYS = {
    lag: lagKey,
    status: (r) => STATUS_RANK[statusOf(r)] * 1e15 + Math.max(lagKey(r), 0) / 1e6,
    name: (r) => r.label.toLowerCase(),
    version: (r) => (r.version || "").toLowerCase(),
    transport: (r) => r.transport || "",
    remote: (r) => r.remote || "",
    applied: (r) => (r.applied == null ? -1 : r.applied),
    heard: (r) => (r.heardAt == null ? 0 : r.heardAt),
    since: (r) => r.connectedAt,
  };

  function resort() {
    const f = state.filter;
    const rows = f ? state.rows.filter((r) => r.search.includes(f)) : state.rows.slice();
    const key = SORT_KEYS[state.sort.key] || lagKey;
    const dir = state.sort.dir === "asc" ? 1 : -1;
    const keyed = rows.map((r) => [key(r), r]);
    keyed.sort((a, b) => {
      if (a[0] < b[0]) return -dir;
      if (a[0] > b[0]) return dir;
      return a[1].id - b[1].id || (a[1].key < b[1].key ? -1 : 1);
    });
    state.view = keyed.map((k) => k[1]);
  }

  /// How many acknowledging subscribers applied `seq` (binary search in the sorted seqs).
  function appliedCount(seq) {
    const a = state.appliedSorted;
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid] < seq) lo = mid + 1;
      else hi = mid;
    }
    return a.length - lo;
  }

  // ---- the stream ------------------------------------------------------------------------

  // Browsers' EventSource cannot send an Authorization header, so the stream is read with
  // fetch() and parsed here (the SSE format of PROTOCOL.md). `observe=true` keeps this tab
  // out of the fleet it watches.
  async function streamLoop(session) {
    let backoff = 250;
    let first = true;
    while (state.session === session) {
      const abort = new AbortController();
      state.streamAbort = abort;
      let url = "/v1/events?observe=true";
      if (state.lastSeq != null && state.epoch != null) {
        url += "&since=" + state.lastSeq + "&epoch=" + encodeURIComponent(state.epoch);
      } else if (first && state.head != null) {
        // Show the last few revocations too, not only those from now on.
        url += "&since=" + Math.max(0, state.head - HISTORY);
      }
      first = false;
      try {
        const resp = await api(url, {
          headers: authHeaders({ Accept: "text/event-stream" }),
          signal: abort.signal,
        });
        if (resp.status === 400) {
          // A position this replica does not know: start from the head.
          state.lastSeq = null;
          throw new Error("position refused");
        }
        if (!resp.ok || !resp.body) throw new Error("stream answered " + resp.status);
        setPill("health-stream", "ok", "stream live");
        backoff = 250;
        await readEvents(resp.body, session);
      } catch (e) {
        if (e instanceof AuthError) {
          if (state.session === session) signOut("Signed out: " + e.message);
          return;
        }
      }
      if (state.session !== session) return;
      setPill("health-stream", "warn", "stream reconnecting");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  async function readEvents(body, session) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done || state.session !== session) return;
      buffer += value;
      // Lines end with \n, \r\n or \r; a trailing \r may be half of a \r\n.
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c !== "\n" && c !== "\r") continue;
        if (c === "\r" && i + 1 === buffer.length) break;
        const line = buffer.slice(start, i);
        if (c === "\r" && buffer[i + 1] === "\n") i++;
        start = i + 1;
        if (line === "") {
          if (data.length) dispatch(data.join("\n"));
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line[5] === " " ? 6 : 5));
        }
        // `event:` repeats the JSON's `type`, `id:` its `seq`; comments are ignored.
      }
      buffer = buffer.slice(start);
      if (buffer.length > 1 << 20) throw new Error("an event over 1 MiB");
    }
  }

  function dispatch(json) {
    let m;
    try {
      m = JSON.parse(json);
    } catch (_) {
      return;
    }
    if (!m || typeof m !== "object") return;
    switch (m.type) {
      case "hello":
        if (state.epoch != null && m.epoch !== state.epoch) state.revocations = [];
        state.epoch = m.epoch;
        noteHead(m.seq, m.epoch);
        break;
      case "heartbeat":
        noteHead(m.seq);
        break;
      case "reset":
        // Another log: what we showed belongs to the old one.
        state.epoch = m.epoch;
        state.head = null;
        state.lastSeq = null;
        state.revocations = [];
        noteHead(m.seq, m.epoch);
        break;
      case "token":
      case "subject":
      case "session":
      case "key":
        takeRevocation(m);
        break;
      default:
        return;
    }
    scheduleRender();
  }

  function takeRevocation(m) {
    if (typeof m.seq !== "number") return;
    if (state.lastSeq != null && m.seq <= state.lastSeq) return;
    state.lastSeq = m.seq;
    noteHead(m.seq);
    const target = m.type === "token" ? m.rid : m.type === "subject" ? m.sub : m.type === "session" ? m.sid : m.kid;
    const r = { seq: m.seq, type: m.type, target: target == null ? "" : String(target), at: m.at };
    state.revocations.unshift(r);
    if (state.revocations.length > REVOCATIONS_KEPT) state.revocations.length = REVOCATIONS_KEPT;
    // Follow this one's propagation closely for a while.
    state.fastUntil = Date.now() + 10000;
    const p = state.pending;
    if (p && p.seq == null && p.kind === m.type && p.value === r.target) p.seq = m.seq;
  }

  // ---- revoke ----------------------------------------------------------------------------

  const KIND = {
    subject: { path: "/v1/revoke/subject", field: "sub", label: "Subject (sub)" },
    session: { path: "/v1/revoke/session", field: "sid", label: "Session (sid)" },
    token: { path: "/v1/revoke", field: "token", label: "Token" },
  };

  function selectedKind() {
    const checked = document.querySelector('input[name="kind"]:checked');
    return checked ? checked.value : "subject";
  }

  async function revoke(event) {
    event.preventDefault();
    const kind = selectedKind();
    const value = $("revoke-value").value.trim();
    const reason = $("revoke-reason").value.trim();
    const timeout = Number($("revoke-timeout").value) || 10000;
    if (!value) return;
    const k = KIND[kind];
    const body = { wait: "fleet", wait_timeout_ms: timeout };
    body[k.field] = value;
    if (reason) body.reason = reason;
    const display = kind === "token" ? value.slice(0, 16) + "…" : value;
    state.pending = { kind, value, display, seq: null, started: Date.now() };
    $("revoke-submit").disabled = true;
    showResult("waiting", "Revoking " + kind + " " + display + " — waiting for the fleet…", null, "", "");
    scheduleRender();
    try {
      const resp = await api(k.path, {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify(body),
      });
      let answer = null;
      try { answer = await resp.json(); } catch (_) { /* no body */ }
      if (!resp.ok) {
        const why = answer && answer.error_description ? answer.error_description : "status " + resp.status;
        showResult("error", "Not revoked: " + why, 0, "", "");
        return;
      }
      const p = answer.propagation || { applied: 0, of: 0, slowest_ms: null, missing: [] };
      const complete = p.applied === p.of;
      const share = p.of === 0 ? 1 : p.applied / p.of;
      const title = (complete ? "Applied by the whole fleet: " : "Not yet applied everywhere: ") +
        p.applied + " of " + p.of;
      const detail = "Revoked " + kind + " " + display + " at seq " + answer.seq +
        (p.slowest_ms != null ? " · slowest acknowledgment " + duration(p.slowest_ms) : "") +
        (p.of === 0 ? " · no subscriber was connected" : "");
      const missing = p.missing && p.missing.length
        ? "Missing: " + p.missing.join(", ") + (p.missing.length < p.of - p.applied ? " …" : "")
        : "";
      showResult(complete ? "complete" : "incomplete", title, share, detail, missing);
      $("revoke-value").value = "";
    } catch (e) {
      if (e instanceof AuthError) {
        signOut("Signed out: " + e.message);
        return;
      }
      showResult("error", "Not revoked: " + e.message, 0, "", "");
    } finally {
      state.pending = null;
      $("revoke-submit").disabled = false;
    }
  }

  function showResult(s, title, share, detail, missing) {
    const box = $("revoke-result");
    box.hidden = false;
    box.dataset.state = s;
    text($("revoke-title"), title);
    text($("revoke-detail"), detail);
    text($("revoke-missing"), missing);
    if (share != null) $("revoke-bar").style.width = (share * 100).toFixed(1) + "%";
  }

  /// While waiting, show how far the revocation got so far (from the fleet polls).
  function renderPending() {
    const p = state.pending;
    if (!p || p.seq == null) return;
    const of = state.appliedSorted.length;
    const applied = appliedCount(p.seq);
    $("revoke-bar").style.width = (of ? (applied / of) * 100 : 0).toFixed(1) + "%";
    text($("revoke-detail"), "seq " + p.seq + ": applied by " + applied + " of " + of +
      " acknowledging so far (" + duration(Date.now() - p.started) + ")");
  }

  // ---- rendering -------------------------------------------------------------------------

  function scheduleRender() {
    state.dirty = true;
    if (state.renderTimer != null) return;
    const wait = Math.max(0, state.lastRender + RENDER_EVERY_MS - performance.now());
    state.renderTimer = setTimeout(() => {
      state.renderTimer = null;
      requestAnimationFrame(render);
    }, wait);
  }

  function render() {
    if (!state.dirty) return;
    state.dirty = false;
    state.lastRender = performance.now();
    renderTiles();
    renderRows();
    renderRevocations();
    renderPending();
  }

  function renderTiles() {
    const c = { current: 0, applying: 0, stale: 0, gone: 0, silent: 0 };
    for (const r of state.rows) c[statusOf(r)] += 1;
    text($("t-connected"), state.rows.length - c.gone);
    text($("t-current"), c.current);
    text($("t-applying"), c.applying);
    text($("t-stale"), c.stale);
    text($("t-gone"), c.gone);
    text($("t-silent"), c.silent);
    const shown = state.view.length;
    text($("fleet-count"), state.filter ? shown + " of " + state.rows.length : state.rows.length + " listed");
    $("fleet-empty").hidden = state.rows.length !== 0;
  }

  const COLUMNS = ["c-status", "c-name", "c-version", "c-transport", "c-remote", "c-applied num", "c-lag num", "c-heard num", "c-since num"];
  const pool = [];

  function rowElement(i) {
    while (pool.length <= i) {
      const row = el("div", "row");
      row.setAttribute("role", "row");
      for (const c of COLUMNS) {
        const cell = el("span", c);
        cell.setAttribute("role", "cell");
        row.appendChild(cell);
      }
      row.firstChild.appendChild(el("span", "state"));
      pool.push(row);
    }
    return pool[i];
  }

  /// Draw only the rows in view (plus a few either side), reusing the same elements.
  function renderRows() {
    const viewport = $("fleet-viewport");
    const rowsBox = $("fleet-rows");
    const total = state.view.length;
    $("fleet-spacer").style.height = total * ROW_HEIGHT + "px";
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const count = Math.min(total - first, Math.ceil(viewport.clientHeight / ROW_HEIGHT) + 2 * OVERSCAN);
    const now = Date.now();
    for (let i = 0; i < Math.max(count, 0); i++) {
      const r = state.view[first + i];
      const row = rowElement(i);
      if (row.parentNode !== rowsBox) rowsBox.appendChild(row);
      const s = statusOf(r);
      const cls = "row s-" + s;
      if (row.className !== cls) row.className = cls;
      row.style.transform = "translateY(" + (first + i) * ROW_HEIGHT + "px)";
      const cells = row.children;
      const stateLabel = s === "gone" ? "disconnected " + ago(now - r.goneAt) : STATUS_LABEL[s];
      text(cells[0].firstChild, stateLabel);
      text(cells[1], r.label);
      cells[1].title = r.label;
      text(cells[2], r.version || "–");
      text(cells[3], r.transport === "websocket" ? "ws" : r.transport || "–");
      text(cells[4], r.remote || "–");
      cells[4].title = r.replica ? "via replica " + r.replica : "";
      text(cells[5], r.applied == null ? "–" : r.applied);
      let lag = "–";
      if (r.applied != null) {
        lag = r.lagEvents === 0 ? "0" : (r.lagEvents || 0) + " · " + (r.lagMs == null ? "?" : duration(r.lagMs));
      }
      text(cells[6], lag);
      text(cells[7], r.heardAt == null ? "never" : ago(now - r.heardAt));
      text(cells[8], ago(now - r.connectedAt));
    }
    // Rows no longer needed leave the document (they stay pooled).
    for (let i = Math.max(count, 0); i < pool.length && pool[i].parentNode; i++) {
      rowsBox.removeChild(pool[i]);
    }
    for (const th of document.querySelectorAll(".th")) {
      const dir = th.dataset.sort === state.sort.key ? state.sort.dir : "";
      if ((th.dataset.dir || "") !== dir) th.dataset.dir = dir;
    }
  }

  function renderRevocations() {
    const list = $("revocations");
    const of = state.appliedSorted.length;
    const items = state.revocations.slice(0, HISTORY).map((r) => {
      const applied = appliedCount(r.seq);
      const share = of ? applied / of : 0;
      const li = el("li", of && applied === of ? "done" : "");
      li.appendChild(el("span", "kind", r.type));
      const target = el("span", "target", r.target);
      target.title = r.target;
      li.appendChild(target);
      li.appendChild(el("span", "share", of ? Math.floor(share * 100) + "%" : "–"));
      li.appendChild(el("span", "when", "#" + r.seq));
      const track = el("div", "bar-track");
      const fill = el("div", "bar-fill");
      fill.style.width = (share * 100).toFixed(1) + "%";
      track.appendChild(fill);
      li.appendChild(track);
      li.appendChild(el("span", "when", of ? applied + "/" + of : "no acks"));
      li.dataset.seq = String(r.seq);
      return li;
    });
    list.replaceChildren(...items);
    $("revocations-empty").hidden = items.length !== 0;
  }

  // ---- wiring ----------------------------------------------------------------------------

  function init() {
    text($("stale-after"), STALE_AFTER_MS / 1000);
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("login-key").value.trim();
      if (key) signIn(key, true);
    });
    $("logout").addEventListener("click", () => signOut(""));
    $("revoke-form").addEventListener("submit", revoke);
    for (const radio of document.querySelectorAll('input[name="kind"]')) {
      radio.addEventListener("change", () => text($("revoke-value-label"), KIND[selectedKind()].label));
    }
    for (const th of document.querySelectorAll(".th")) {
      th.addEventListener("click", () => {
        const key = th.dataset.sort;
        if (state.sort.key === key) {
          state.sort.dir = state.sort.dir === "asc" ? "desc" : "asc";
        } else {
          state.sort = { key, dir: key === "lag" || key === "status" || key === "heard" ? "desc" : "asc" };
        }
        resort();
        scheduleRender();
      });
    }
    $("filter").addEventListener("input", () => {
      state.filter = $("filter").value.trim().toLowerCase();
      resort();
      scheduleRender();
    });
    // Scrolling draws at once (only the visible rows, so it is cheap).
    $("fleet-viewport").addEventListener("scroll", () => requestAnimationFrame(renderRows), { passive: true });
    window.addEventListener("resize", () => requestAnimationFrame(renderRows));
    // Ages ("3 s ago") move on even when nothing else does.
    setInterval(() => { if (state.key) scheduleRender(); }, 1000);
    let saved = null;
    try { saved = sessionStorage.getItem(KEY_STORAGE); } catch (_) { /* storage disabled */ }
    if (saved) signIn(saved, false);
    else $("login-key").focus();
  }

  init();
})();
