//! `/v1/snapshot`, `/v1/events` (SSE) and `/v1/stream` (WebSocket): the transports of the
//! revocation stream. What to send comes from a [`Feed`]; these handlers frame it, write each
//! batch with one write, and count what they do.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};
use prometheus_client::metrics::counter::Counter;
use revocast_shared::keys::LogSigningKey;
use revocast_shared::tlog::snapshot::end_line;
use revocast_shared::tlog::{Frontier, SnapshotDigest, SnapshotSeal};
use revocast_shared::{Epoch, Seq, UnixMillis, UnixSeconds};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use utoipa::IntoParams;

use crate::apikeys::{KeyDigest, KeyWatch, Verdict};
use crate::app::{App, AppState};
use crate::auth::{Authorized, Subscribe};
use crate::config::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::extract::QueryParams;
use crate::fleet::{self, Identity, Registration};
use crate::metrics::SubscriberGuard;
use crate::net::Peer;
use crate::slots::SnapshotSlot;
use crate::store::SnapshotPart;
use crate::stream::{End, Feed, Frame, SubscribeError, sse_of};
use crate::websocket::{self, Inbound, ReadEnd, Socket, Upgrade, close_code};

use super::openapi;

/// Stream query parameters. `epoch` is an extension: a client that names the epoch its `since`
/// belongs to gets `reset` instead of a resume when the log has changed.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this `seq`: the stream sends `since + 1` to the head, then live events.
    /// Absent, it starts at the head. A `since` the log no longer holds is answered `reset`.
    #[param(value_type = Option<u64>)]
    since: Option<String>,
    /// The epoch `since` belongs to; if the log's differs, the stream answers `reset`.
    #[param(value_type = Option<String>)]
    epoch: Option<String>,
    /// What the subscriber calls itself in `GET /v1/fleet` (1 to 128 bytes, no control
    /// characters; untrusted text). Unnamed subscribers are listed by id.
    #[param(value_type = Option<String>)]
    name: Option<String>,
    /// The subscriber's software version (1 to 64 bytes, no control characters).
    #[param(value_type = Option<String>)]
    version: Option<String>,
    /// `true`: watch the stream without joining the fleet — not listed in `GET /v1/fleet`,
    /// not waited for by `wait=fleet`, no `conn` in `hello`. For observers that enforce
    /// nothing, such as the operator console; admin keys only (`403` otherwise).
    #[param(value_type = Option<bool>)]
    observe: Option<bool>,
}

impl StreamQuery {
    fn identity(&self) -> Result<Identity, ApiError> {
        if let Some(name) = &self.name {
            fleet::check_identity("name", name, fleet::MAX_NAME_LEN)
                .map_err(ApiError::bad_request)?;
        }
        if let Some(version) = &self.version {
            fleet::check_identity("version", version, fleet::MAX_VERSION_LEN)
                .map_err(ApiError::bad_request)?;
        }
        Ok(Identity {
            name: self.name.clone(),
            version: self.version.clone(),
        })
    }

    /// Whether the connection only observes; refused unless the key is an admin key, so a
    /// subscriber key cannot keep an enforcing agent out of the operator's sight.
    fn observe(&self, scope: Scope) -> Result<bool, ApiError> {
        match self.observe {
            Some(true) if scope != Scope::Admin => Err(ApiError::forbidden(
                "observe=true needs an admin key; subscribers join the fleet",
            )),
            Some(observe) => Ok(observe),
            None => Ok(false),
        }
    }
}

/// The client's address, if the request came through the listener.
pub(super) struct Remote(Option<SocketAddr>);

impl FromRequestParts<AppState> for Remote {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<Peer>>()
                .map(|info| info.0.addr),
        ))
    }
}

/// Who is subscribing: the key that authenticated, what it says it is, where it is.
struct Joining {
    key: KeyDigest,
    identity: Identity,
    transport: &'static str,
    remote: Option<SocketAddr>,
    /// Not listed in the fleet (`observe=true`).
    observe: bool,
}

/// The SSE response header carrying the connection's handle for `POST /v1/ack`.
pub(super) const CONNECTION_HEADER: &str = "revocast-connection";

fn parse_since(value: &str, what: &str) -> Result<Seq, ApiError> {
    u64::from_str(value.trim())
        .map(Seq::new)
        .map_err(|_| ApiError::bad_request(format!("{what} must be a non-negative integer seq")))
}

/// Join the hub at the requested position, register in the fleet (unless the connection only
/// observes), and build the connection's feed.
async fn open_feed(
    app: &Arc<App>,
    since: Option<Seq>,
    epoch: Option<String>,
    joining: Joining,
) -> Result<(Feed, Option<Registration>), ApiError> {
    let mut joined = app.hub.subscribe(since);
    if let Err(SubscribeError::BeyondHead { .. }) = joined {
        // On a shared database another replica may have served this client a snapshot or
        // events we have not read yet: read the log once before calling `since` impossible.
        app.tail.catch_up().await?;
        joined = app.hub.subscribe(since);
    }
    let subscription = joined.map_err(|e| match e {
        SubscribeError::BeyondHead { head } => ApiError::bad_request(format!(
            "since is beyond the head seq {head}; the log never reached it"
        )),
        SubscribeError::ShuttingDown => ApiError::unavailable("the authority is shutting down"),
    })?;
    let epoch = epoch.map(Epoch::new);
    // After joining the hub: a revocation published before this registration is one this
    // connection is not waited for.
    let registration = (!joining.observe).then(|| {
        app.fleet.register(
            joining.key,
            joining.identity,
            joining.transport,
            joining.remote,
        )
    });
    let feed = Feed::new(
        Arc::clone(&app.hub),
        Arc::clone(&app.store),
        subscription,
        epoch.as_ref(),
        app.config.stream_pacing,
        registration.as_ref().map(|r| r.subscriber().conn()),
    );
    Ok((feed, registration))
}

fn events_in(batch: &[Frame]) -> u64 {
    batch.iter().map(Frame::events).sum()
}

/// Per-transport counters, looked up once per connection rather than per write.
struct Counters {
    sent: Counter,
    slow: Counter,
    _connected: SubscriberGuard,
}

impl Counters {
    fn new(app: &App, transport: &'static str) -> Self {
        let label = vec![("transport", transport)];
        Self {
            sent: app.metrics.events_sent.get_or_create(&label).clone(),
            slow: app.metrics.slow_disconnects.get_or_create(&label).clone(),
            _connected: SubscriberGuard::new(&app.metrics, transport),
        }
    }
}

/// `GET /v1/events`: Server-Sent Events. `Last-Event-ID` (set by reconnecting `EventSource`s)
/// wins over `since`.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "stream",
    operation_id = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header,
            description = "As `since`, and preferred to it (set by a reconnecting `EventSource`)."),
    ),
    responses(
        (status = OK, description = "The revocation stream as Server-Sent Events: `hello`, then \
            every revocation after `since` and live ones, with heartbeats; `id: SEQ` on \
            revocations, `event: TYPE`, `data: JSON`. PROTOCOL.md in the repository specifies \
            the messages, resume and reset.",
            body = String, content_type = "text/event-stream"),
        (status = BAD_REQUEST, body = ErrorBody, description = "`invalid_request`: a `since` or \
            `Last-Event-ID` that is not a seq or is beyond the log's head, or an unknown query \
            parameter."),
        (status = UNAUTHORIZED, response = openapi::Unauthorized),
        (status = FORBIDDEN, response = openapi::Forbidden),
        (status = SERVICE_UNAVAILABLE, response = openapi::Unavailable),
    ),
    security(("subscribe" = []), ("admin" = [])),
)]
pub async fn events(
    authorized: Authorized<Subscribe>,
    State(app): State<AppState>,
    QueryParams(query): QueryParams<StreamQuery>,
    Extension(key): Extension<KeyDigest>,
    Extension(scope): Extension<Scope>,
    Remote(remote): Remote,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let identity = query.identity()?;
    let observe = query.observe(scope)?;
    let since = match headers.get("last-event-id") {
        Some(value) => Some(parse_since(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID must be a seq"))?,
            "Last-Event-ID",
        )?),
        None => query
            .since
            .as_deref()
            .map(|s| parse_since(s, "since"))
            .transpose()?,
    };
    let joining = Joining {
        key,
        identity,
        transport: "sse",
        remote,
        observe,
    };
    let (feed, registration) = open_feed(&app, since, query.epoch, joining).await?;
    let conn = registration
        .as_ref()
        .map(|r| HeaderValue::from_str(r.subscriber().conn()))
        .transpose()
        .map_err(|e| ApiError::internal(&e))?;
    let mut watch = app.api_keys.watch(authorized.digest());
    let counters = Counters::new(&app, "sse");
    // The registration lives as long as the response body: the subscriber is listed while
    // it is connected.
    let body = stream::unfold(Some((feed, counters, registration)), |state| async move {
        let (mut feed, counters, registration) = state?;
        match feed.next().await {
            Ok(batch) => {
                counters.sent.inc_by(events_in(&batch));
                Some((
                    Ok::<Bytes, Infallible>(sse_of(&batch)),
                    Some((feed, counters, registration)),
                ))
            }
            // Say why, then end the response; `EventSource` reconnects by itself.
            Err(End::Reset(reset)) => Some((Ok(reset.sse), None)),
            Err(End::Lagged) => {
                counters.slow.inc();
                None
            }
            Err(End::ShuttingDown | End::Failed) => None,
        }
    })
    // Its key revoked (or unverifiable for long), the response ends; the reconnect is
    // answered 401 (or 503), which stops an `EventSource`.
    .take_until(async move { watch.ended().await });
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Tell nginx and friends not to buffer the stream.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response();
    // The handle for `POST /v1/ack` (also in `hello`, for clients that cannot read headers);
    // an observer has none.
    if let Some(conn) = conn {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static(CONNECTION_HEADER), conn);
    }
    Ok(response)
}

/// `GET /v1/stream`: the WebSocket transport.
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "stream",
    operation_id = "stream",
    params(StreamQuery),
    responses(
        (status = SWITCHING_PROTOCOLS, description = "Upgraded to a WebSocket (RFC 6455) that \
            carries the revocation stream in text frames, each one JSON message or an array of \
            them. PROTOCOL.md in the repository specifies the messages, resume, reset and close \
            codes."),
        (status = BAD_REQUEST, body = ErrorBody, description = "`invalid_request`: not a \
            WebSocket upgrade, or a `since` that is not a seq or is beyond the log's head, or \
            an unknown query parameter."),
        (status = UPGRADE_REQUIRED, body = ErrorBody,
            description = "`invalid_request`: the connection cannot be upgraded (HTTP/1.1 needed)."),
        openapi::KeyedErrors,
    ),
    security(("subscribe" = []), ("admin" = [])),
)]
pub async fn websocket(
    authorized: Authorized<Subscribe>,
    State(app): State<AppState>,
    QueryParams(query): QueryParams<StreamQuery>,
    Extension(key): Extension<KeyDigest>,
    Extension(scope): Extension<Scope>,
    Remote(remote): Remote,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let identity = query.identity()?;
    let observe = query.observe(scope)?;
    let since = query
        .since
        .as_deref()
        .map(|s| parse_since(s, "since"))
        .transpose()?;
    // Joined before the upgrade, so `since` beyond the head is a plain 400 and nothing
    // published during the handshake is missed.
    let joining = Joining {
        key,
        identity,
        transport: "websocket",
        remote,
        observe,
    };
    let (feed, registration) = open_feed(&app, since, query.epoch, joining).await?;
    let watch = app.api_keys.watch(authorized.digest());
    Ok(upgrade.respond(move |socket| serve_websocket(socket, feed, watch, app, registration)))
}

/// Take a text message from a WebSocket subscriber: an acknowledgment is recorded or ignored
/// (and counted); any other message type is ignored, for forward compatibility.
fn take_text(app: &App, registration: Option<&Registration>, text: &[u8]) {
    // An observer's messages are read and dropped: it is not in the fleet.
    let Some(subscriber) = registration.map(Registration::subscriber) else {
        return;
    };
    subscriber.heard();
    match fleet::parse_client_message(text) {
        Ok(Some(ack)) => {
            let _ = app
                .fleet
                .ack(subscriber, &ack, app.hub.head(), app.hub.epoch());
        }
        Ok(None) => {}
        Err(()) => app.fleet.count_malformed(Some(subscriber)),
    }
}

async fn serve_websocket(
    mut socket: Socket,
    feed: Feed,
    mut key: KeyWatch,
    app: AppState,
    registration: Option<Registration>,
) {
    let counters = Counters::new(&app, "websocket");
    let write_timeout = app.config.write_timeout;
    // The feed's pending `next` lives inside the stream, so an acknowledgment read in between
    // (ten thousand subscribers send ~20,000 a second) does not drop and remake it: that
    // would leave and rejoin the live channel's waiter list, under the lock the publisher
    // holds while it wakes every connection, and re-arm the linger's timer.
    let feed = stream::unfold(feed, |mut feed| async move {
        let step = feed.next().await;
        Some((step, feed))
    });
    let mut feed = std::pin::pin!(feed);
    let end = loop {
        tokio::select! {
            step = feed.next() => match step.unwrap_or(Err(End::Failed)) {
                Ok(batch) => {
                    let events = events_in(&batch);
                    let frames: Vec<Bytes> = batch.iter().map(Frame::ws).collect();
                    match tokio::time::timeout(write_timeout, socket.send_frames(&frames)).await {
                        Ok(Ok(())) => {
                            counters.sent.inc_by(events);
                        }
                        Ok(Err(e)) if e.kind() != std::io::ErrorKind::TimedOut => {
                            tracing::debug!(error = &e as &dyn std::error::Error, "subscriber write failed");
                            return;
                        }
                        // Our timeout, or the listener's write timeout underneath it.
                        Ok(Err(_)) | Err(_) => {
                            tracing::info!("subscriber accepted nothing for the write timeout; disconnecting");
                            counters.slow.inc();
                            return;
                        }
                    }
                }
                Err(end) => break end,
            },
            incoming = socket.recv() => {
                // Anything a subscriber may say is answered here: acknowledgments are
                // recorded, binary messages are read and dropped by `recv` itself.
                let (code, reason) = match incoming {
                    Ok(Inbound::Text(text)) => {
                        take_text(&app, registration.as_ref(), &text);
                        continue;
                    }
                    Ok(Inbound::Ping(payload)) => {
                        if let Some(r) = &registration {
                            r.subscriber().heard();
                        }
                        match tokio::time::timeout(write_timeout, socket.pong(&payload)).await {
                            Ok(Ok(())) => continue,
                            _ => return,
                        }
                    }
                    Ok(Inbound::Close(code)) => (code.unwrap_or(close_code::NORMAL), ""),
                    Err(ReadEnd::Refused(code, reason)) => (code, reason),
                    Err(ReadEnd::Gone) => return,
                };
                let _ = tokio::time::timeout(write_timeout, socket.close(code, reason)).await;
                return;
            }
            verdict = key.ended() => {
                let (code, reason) = match verdict {
                    Verdict::Revoked => (close_code::POLICY, "API key revoked"),
                    Verdict::Valid | Verdict::Unverifiable => (
                        close_code::AGAIN,
                        "API key could not be re-checked: reconnect",
                    ),
                };
                let _ = tokio::time::timeout(write_timeout, socket.close(code, reason)).await;
                return;
            }
        }
    };
    let (code, reason) = match end {
        End::Reset(reset) => {
            let frame = websocket::text_frame(reset.json.as_bytes());
            match tokio::time::timeout(write_timeout, socket.send_frames(&[frame])).await {
                Ok(Ok(())) => {}
                _ => return,
            }
            (close_code::NORMAL, "reset: resync from /v1/snapshot")
        }
        End::Lagged => {
            counters.slow.inc();
            tracing::info!("subscriber fell a whole queue behind; disconnecting");
            (
                close_code::AGAIN,
                "too slow: reconnect with since=your last seq",
            )
        }
        End::ShuttingDown => (close_code::AWAY, "shutting down"),
        End::Failed => (
            close_code::ERROR,
            "stream failed: reconnect with since=your last seq",
        ),
    };
    let _ = tokio::time::timeout(write_timeout, socket.close(code, reason)).await;
}

/// How a snapshot is framed: the contract's one JSON document, or (an extension, chosen with
/// `Accept: application/x-ndjson`) one JSON object per line, which a client can parse and
/// apply while the rest is still arriving instead of buffering ~150 MB first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SnapshotFormat {
    Json,
    Ndjson,
}

const NDJSON: &str = "application/x-ndjson";

impl SnapshotFormat {
    fn from_accept(headers: &HeaderMap) -> Self {
        let wants_ndjson = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|media| {
                media
                    .split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case(NDJSON))
            });
        if wants_ndjson {
            Self::Ndjson
        } else {
            Self::Json
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => NDJSON,
        }
    }

    /// `at` is the authority's time just before the store read began: the snapshot holds
    /// everything committed by then, so a client is current as of `at` once it has loaded it.
    /// The transparency log's `checkpoint` (signed at exactly `seq`) and `frontier` follow.
    fn head(
        self,
        epoch: &Epoch,
        seq: Seq,
        at: UnixMillis,
        checkpoint: &str,
        frontier: &Frontier,
    ) -> Result<String, serde_json::Error> {
        let epoch = serde_json::to_string(epoch)?;
        let at = serde_json::to_string(&at)?;
        let log = format!(
            r#""checkpoint":{},"frontier":{}"#,
            serde_json::to_string(checkpoint)?,
            serde_json::to_string(frontier)?
        );
        Ok(match self {
            Self::Json => format!(r#"{{"epoch":{epoch},"seq":{seq},"at":{at},{log},"events":["#),
            Self::Ndjson => format!(r#"{{"epoch":{epoch},"seq":{seq},"at":{at},{log}}}"#),
        })
    }

    /// Written before each event: a comma between JSON array elements, a newline in NDJSON.
    fn separator(self, first: bool) -> &'static [u8] {
        match (self, first) {
            (Self::Json, true) => b"",
            (Self::Json, false) => b",",
            (Self::Ndjson, _) => b"\n",
        }
    }

    /// The end marker: a client that does not see it must treat the snapshot as incomplete.
    /// The NDJSON form's end line is sealed when a log key is given: `digest` has every byte
    /// before the end line but the newline that ends the last line before it.
    async fn tail(
        self,
        events: u64,
        digest: Option<SnapshotDigest>,
        key: Option<Arc<LogSigningKey>>,
    ) -> Result<String, std::io::Error> {
        match (self, digest, key) {
            (Self::Json, ..) => Ok("]}".to_string()),
            (Self::Ndjson, Some(mut digest), Some(key)) => {
                digest.update(b"\n");
                let seal =
                    tokio::task::spawn_blocking(move || SnapshotSeal::sign(&key, digest.finish()))
                        .await
                        .map_err(std::io::Error::other)?
                        .map_err(std::io::Error::other)?;
                Ok(format!("\n{}", end_line(events, &seal)))
            }
            (Self::Ndjson, ..) => Ok(format!("\n{{\"end\":{{\"events\":{events}}}}}\n")),
        }
    }
}

// No subscriber, however slow, can hold the store: the chunks are read on pooled connections
// released before each chunk waits for the network (see `Store::snapshot`), and at most two
// read-ahead chunks wait here. What a slow subscriber can still hold — a connection, a few
// MB, a slot of its key — is bounded by `--snapshot-deadline` and `--max-snapshots-per-key`.
/// `GET /v1/snapshot`: `{"epoch","seq","at","events":[…]}`, streamed chunk by chunk up to one head
/// `seq`, so memory stays flat however many revocations are in force.
///
/// One API key may have at most `--max-snapshots-per-key` (default 64) downloads in progress;
/// over it, `429 rate_limited` with `Retry-After`.
#[utoipa::path(
    get,
    path = "/v1/snapshot",
    tag = "stream",
    operation_id = "snapshot",
    params(
        ("Accept" = Option<String>, Header, description = "`application/x-ndjson` for the \
            NDJSON form; anything else gets JSON."),
        ("Accept-Encoding" = Option<String>, Header,
            description = "`gzip` for a compressed answer."),
    ),
    responses(
        (status = OK, description = "Every revocation still in force, and the `seq` it is as \
            of, and (an extension) `at`, the authority's time just before it was read. As NDJSON (an \
            extension, a client can apply it while it arrives): a first line \
            `{\"epoch\",\"seq\",\"at\"}`, one event per line, and a last line \
            `{\"end\":{\"events\":N}}`; without that last line the snapshot is incomplete. \
            A response still running after `--snapshot-deadline` (default 120 s) is cut off: \
            discard what arrived and retry.",
            content(
                (openapi::Snapshot = "application/json"),
                (String = "application/x-ndjson"),
            )),
        openapi::LimitedErrors,
    ),
    security(("subscribe" = []), ("admin" = [])),
)]
pub async fn snapshot(
    _: Authorized<Subscribe>,
    // After `Authorized`: only keys that authenticated take a slot. Over the key's cap: 429.
    slot: SnapshotSlot,
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + app.config.snapshot_deadline;
    let format = SnapshotFormat::from_accept(&headers);
    // Two chunks read ahead at most: what waits for a slow subscriber is bounded.
    let (tx, mut rx) = mpsc::channel(2);
    let store = Arc::clone(&app.store);
    // Taken before the read starts: whatever was committed by `at` is in the snapshot.
    let at = UnixMillis::now();
    // Entries just past expiry stay in: agents may still accept their tokens within leeway.
    let now = UnixSeconds::now().saturating_sub_secs(app.config.expiry_grace_secs);
    tokio::spawn(async move {
        // The reader stops at the deadline too, even if a query hangs.
        match tokio::time::timeout_at(deadline, store.snapshot(now, tx)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                error = &e as &dyn std::error::Error,
                "reading the snapshot failed"
            ),
            Err(_) => tracing::debug!("snapshot read stopped at the deadline"),
        }
    });
    let Ok(Some(SnapshotPart::Head { epoch, seq, tree })) =
        tokio::time::timeout_at(deadline, rx.recv()).await
    else {
        return Err(ApiError::unavailable("the snapshot could not be read"));
    };
    // Served as of a checkpoint of exactly its `seq` (signed now if the latest is of another
    // head: at most once per head, however many snapshots are asked for).
    let checkpoint = app
        .checkpointer
        .at(&tree)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let head = format
        .head(&epoch, seq, at, &checkpoint.note, &tree)
        .map_err(|e| ApiError::internal(&e))?;
    let (digest, seal_key) = match format {
        SnapshotFormat::Ndjson => {
            let mut digest = SnapshotDigest::new();
            digest.update(head.as_bytes());
            (
                Some(digest),
                app.checkpointer.keys().signer(UnixMillis::now()),
            )
        }
        SnapshotFormat::Json => (None, None),
    };
    let state = SnapshotBody {
        rx,
        format,
        digest,
        seal_key,
        pending: Bytes::from(head),
        ended: false,
        written: 0,
        deadline,
        cut_off: app.metrics.snapshots_cut_off.clone(),
        _slot: slot,
    };
    let body = stream::unfold(state, |mut state| async move {
        let piece = state.next_piece().await?;
        Some((piece, state))
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        // Fused: the compression layer polls the body once more after its end.
        Body::from_stream(body.fuse()),
    )
        .into_response())
}

/// Most bytes handed to the HTTP layer at once. The deadline is checked each time the HTTP
/// layer asks for more, which it does when a piece has gone to the socket: a small piece keeps
/// a response from running on long past the deadline on what was handed over before. (A peer
/// that reads so slowly that the socket never has room is the write timeout's: the listener
/// drops it after `--write-timeout` without progress.)
const PIECE: usize = 8 * 1024;

struct SnapshotBody {
    rx: mpsc::Receiver<SnapshotPart>,
    format: SnapshotFormat,
    /// NDJSON: the running digest of the body, and the log key that seals it.
    digest: Option<SnapshotDigest>,
    seal_key: Option<Arc<LogSigningKey>>,
    /// Encoded but not yet handed over.
    pending: Bytes,
    /// The end marker is in `pending` (or was sent).
    ended: bool,
    /// Events written so far (the JSON form needs a comma before all but the first).
    written: u64,
    deadline: Instant,
    cut_off: Counter,
    /// Held until the body is dropped: finished, cut off, or the client went away.
    _slot: SnapshotSlot,
}

impl SnapshotBody {
    /// The next piece of the body, or an error that aborts the response (the client sees an
    /// incomplete snapshot); `None` once the end marker was handed over.
    async fn next_piece(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.pending.is_empty() {
            if self.ended {
                return None;
            }
            let part = match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
                Ok(part) => part,
                Err(_) => return Some(Err(self.cut())),
            };
            match self.encode(part).await {
                Ok(bytes) => self.pending = bytes,
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            }
        } else if Instant::now() >= self.deadline {
            return Some(Err(self.cut()));
        }
        let n = self.pending.len().min(PIECE);
        Some(Ok(self.pending.split_to(n)))
    }

    /// Past the deadline: abort, and stop the reader (it sees the channel close).
    fn cut(&mut self) -> std::io::Error {
        self.ended = true;
        self.pending = Bytes::new();
        self.rx.close();
        self.cut_off.inc();
        tracing::info!("snapshot response ran past --snapshot-deadline; cut off");
        std::io::Error::other("snapshot deadline passed")
    }

    async fn encode(&mut self, part: Option<SnapshotPart>) -> Result<Bytes, std::io::Error> {
        match part {
            Some(SnapshotPart::Events(events)) => {
                let mut out = Vec::with_capacity(events.len() * 160);
                for event in &events {
                    out.extend_from_slice(self.format.separator(self.written == 0));
                    self.written += 1;
                    serde_json::to_writer(&mut out, event).map_err(std::io::Error::other)?;
                }
                if let Some(digest) = &mut self.digest {
                    digest.update(&out);
                }
                Ok(Bytes::from(out))
            }
            Some(SnapshotPart::End) => {
                self.ended = true;
                let tail = self
                    .format
                    .tail(self.written, self.digest.take(), self.seal_key.take())
                    .await?;
                Ok(Bytes::from(tail))
            }
            // The reader failed mid-way: abort the response rather than end it with a valid
            // but incomplete document.
            Some(SnapshotPart::Head { .. }) | None => {
                Err(std::io::Error::other("snapshot read failed mid-way"))
            }
        }
    }
}
