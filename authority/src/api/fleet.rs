//! The fleet: `GET /v1/fleet` lists the subscribers connected to this process with what they
//! acknowledged; `POST /v1/ack` is how an SSE subscriber acknowledges (a WebSocket subscriber
//! sends its acks on the socket).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use revocast_shared::{Epoch, Seq, UnixMillis};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi;
use crate::apikeys::KeyDigest;
use crate::app::AppState;
use crate::auth::{Admin, Authorized, Subscribe};
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::fleet::{self, Ack, Ignored, Row, Totals};

/// One connected subscriber.
#[derive(Serialize, ToSchema)]
pub struct FleetSubscriber {
    /// The replica it is connected to (see `replica` of the answer).
    replica: String,
    /// The replica's number for the connection, in connection order.
    id: u64,
    /// The name it gave when it subscribed (untrusted text: render it as text, never markup).
    name: Option<String>,
    /// The version it gave (untrusted text).
    version: Option<String>,
    /// `websocket` or `sse`.
    transport: String,
    /// Its address as the listener saw it (a proxy's, behind one).
    remote: Option<String>,
    #[schema(value_type = openapi::shared::UnixTime)]
    connected_at: UnixMillis,
    /// The `seq` it acknowledged applying; `null` if it never acknowledged (it still gets
    /// every event).
    #[schema(value_type = Option<openapi::shared::Seq>)]
    applied: Option<Seq>,
    /// Revocations published here that it has not acknowledged; `null` if it never acknowledged.
    lag_events: Option<u64>,
    /// How long ago the oldest revocation it has not acknowledged was committed; 0 when
    /// current, `null` if it never acknowledged (or that revocation is too old to be
    /// remembered).
    lag_ms: Option<i64>,
    /// When anything (an ack, a ping) last arrived from it.
    #[schema(value_type = Option<openapi::shared::UnixTime>)]
    last_heard: Option<UnixMillis>,
    /// Snapshot loads it reports since it started, if it reports them.
    resyncs: Option<u64>,
    /// Its acknowledgments that were ignored (above the head, another epoch, a flood, …).
    acks_ignored: u64,
}

impl From<Row> for FleetSubscriber {
    fn from(r: Row) -> Self {
        Self {
            replica: r.replica,
            id: r.id,
            name: r.name,
            version: r.version,
            transport: r.transport,
            remote: r.remote,
            connected_at: r.connected_at,
            applied: r.applied,
            lag_events: r.lag_events,
            lag_ms: r.lag_ms,
            last_heard: r.last_heard,
            resyncs: r.resyncs,
            acks_ignored: r.acks_ignored,
        }
    }
}

/// Counts over the listed subscribers.
#[derive(Serialize, ToSchema)]
pub struct FleetTotals {
    /// Connected.
    subscribers: u64,
    /// Acknowledged at least once.
    acknowledging: u64,
    /// Never acknowledged (older agents, or clients that do not): they still get every event.
    never_acknowledged: u64,
    /// Acknowledged the head.
    current: u64,
    /// Acknowledged, but the oldest revocation they lack was committed more than 5 s ago.
    behind: u64,
}

impl From<Totals> for FleetTotals {
    fn from(t: Totals) -> Self {
        Self {
            subscribers: t.subscribers,
            acknowledging: t.acknowledging,
            never_acknowledged: t.never_acknowledged,
            current: t.current,
            behind: t.behind,
        }
    }
}

/// `GET /v1/fleet`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Fleet {
    /// The id of the replica answering (random per start). On a shared database the list holds
    /// every replica's subscribers, the others' as they shared them within the last few
    /// seconds (each replica shares its own every second).
    replica: String,
    #[schema(value_type = openapi::shared::Epoch)]
    epoch: Epoch,
    /// The head this process has published: lags are counted from it.
    #[schema(value_type = openapi::shared::Seq)]
    head: Seq,
    #[schema(value_type = openapi::shared::UnixTime)]
    at: UnixMillis,
    totals: FleetTotals,
    /// Every subscriber connected to this replica, in connection order, then (on a shared
    /// database) those of the other replicas.
    subscribers: Vec<FleetSubscriber>,
}

/// The subscribers connected to this replica — and, on a shared database, to every replica:
/// who they say they are, what they acknowledged applying, how far behind they are.
#[utoipa::path(
    get,
    path = "/v1/fleet",
    tag = "fleet",
    operation_id = "fleet",
    responses(
        (status = OK, description = "The fleet connected here, with totals.", body = Fleet),
        openapi::KeyedErrors,
    ),
    security(("admin" = [])),
)]
pub async fn list(_: Authorized<Admin>, State(app): State<AppState>) -> Json<Fleet> {
    let head = app.hub.head();
    let (rows, totals) = app.fleet.rows(head);
    Json(Fleet {
        replica: app.fleet.replica().to_string(),
        epoch: app.hub.epoch().clone(),
        head,
        at: UnixMillis::now(),
        totals: totals.into(),
        subscribers: rows.into_iter().map(FleetSubscriber::from).collect(),
    })
}

/// `POST /v1/ack`'s body.
#[derive(Deserialize, ToSchema)]
pub struct AckRequest {
    /// The connection's handle: the `Revocast-Connection` header of the `/v1/events`
    /// response, also `conn` in its `hello`.
    conn: String,
    /// The `seq` applied.
    #[schema(value_type = openapi::shared::Seq)]
    seq: Seq,
    /// The epoch that `seq` belongs to.
    #[schema(value_type = openapi::shared::Epoch)]
    epoch: Epoch,
    /// Snapshot loads since the subscriber started (optional).
    resyncs: Option<u64>,
}

/// Acknowledge, for an SSE connection opened with the same key, the `seq` applied. Send at most
/// one every 50 ms (coalesce); faster ones are refused.
#[utoipa::path(
    post,
    path = "/v1/ack",
    tag = "fleet",
    operation_id = "ack",
    request_body = AckRequest,
    responses(
        (status = NO_CONTENT, description = "Recorded."),
        (status = BAD_REQUEST, body = ErrorBody, description = "`invalid_request`: a malformed \
            body, or an ack ignored: a `seq` above this authority's head, another epoch, or \
            below what this connection acknowledged before."),
        (status = NOT_FOUND, body = ErrorBody, description = "`unknown_connection`: no open \
            stream of this key has this handle (it ended, or another key opened it)."),
        (status = TOO_MANY_REQUESTS, body = ErrorBody, description = "`rate_limited`: acks \
            faster than one per 50 ms (beyond a small burst); this one is ignored."),
        openapi::BodyErrors,
    ),
    security(("subscribe" = []), ("admin" = [])),
)]
pub async fn ack(
    _: Authorized<Subscribe>,
    Extension(key): Extension<KeyDigest>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<AckRequest>,
) -> Result<StatusCode, ApiError> {
    let Some(subscriber) = app.fleet.by_conn(&req.conn, key) else {
        app.fleet.count_ignored(Ignored::UnknownConnection);
        return Err(
            ApiError::not_found("no open stream of this key has this handle")
                .with_code("unknown_connection"),
        );
    };
    let ack = Ack {
        seq: req.seq,
        epoch: req.epoch,
        resyncs: req.resyncs,
    };
    match app
        .fleet
        .ack(&subscriber, &ack, app.hub.head(), app.hub.epoch())
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(Ignored::Flood) => Err(ApiError::rate_limited(
            "acknowledge at most once per 50 ms",
            fleet::ACK_INTERVAL,
        )),
        Err(why) => Err(ApiError::bad_request(format!(
            "acknowledgment ignored: {}",
            why.reason().replace('_', " ")
        ))),
    }
}
