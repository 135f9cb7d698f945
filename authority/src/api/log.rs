//! The transparency log from outside: the latest checkpoint, RFC 9162 proofs over the stored
//! leaves, and the log key's rotation (PROTOCOL.md "Audit endpoints").

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use revocast_shared::tlog::{LeafHashSource, consistency_proof, inclusion_proof};
use revocast_shared::{KeyId, UnixMillis};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi;
use crate::app::AppState;
use crate::auth::{Admin, Authorized, Subscribe};
use crate::error::{ApiError, ErrorBody};
use crate::extract::QueryParams;

/// The latest signed checkpoint's size: proofs reach no further.
fn signed_size(app: &AppState) -> u64 {
    app.checkpointer.latest().map_or(0, |c| c.size())
}

/// A required non-negative integer parameter.
fn number(value: Option<&str>, name: &str) -> Result<u64, ApiError> {
    value
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))?
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer")))
}

/// `GET /v1/checkpoint`: the latest signed checkpoint, as its note.
#[utoipa::path(
    get,
    path = "/v1/checkpoint",
    tag = "log",
    operation_id = "checkpoint",
    responses(
        (status = OK, description = "The latest signed checkpoint of the transparency log: a \
            C2SP signed note (origin, tree size, root, `revocast-time`, then the signature \
            line of a log key).", body = String, content_type = "text/plain; charset=utf-8"),
        (status = SERVICE_UNAVAILABLE, body = ErrorBody,
            description = "`unavailable`: none signed yet."),
        openapi::KeyedErrors,
    ),
    security(("subscribe" = []), ("admin" = [])),
)]
pub async fn checkpoint(
    _: Authorized<Subscribe>,
    State(app): State<AppState>,
) -> Result<Response, ApiError> {
    let latest = app
        .checkpointer
        .latest()
        .ok_or_else(|| ApiError::unavailable("no checkpoint signed yet"))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        latest.note.to_string(),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The event's `seq` (leaf `seq - 1`).
    #[param(value_type = u64)]
    seq: Option<String>,
    /// The tree size, at most the latest checkpoint's.
    #[param(value_type = u64)]
    size: Option<String>,
}

/// `GET /v1/log/proof/inclusion`'s answer.
#[derive(Serialize, ToSchema)]
pub struct InclusionProof {
    seq: u64,
    leaf_index: u64,
    tree_size: u64,
    /// Standard base64.
    leaf_hash: String,
    /// From the leaf upwards, standard base64.
    inclusion_path: Vec<String>,
}

/// The RFC 9162 inclusion proof of the event `seq` in the tree of `size` leaves.
#[utoipa::path(
    get,
    path = "/v1/log/proof/inclusion",
    tag = "log",
    operation_id = "inclusion_proof",
    params(InclusionQuery),
    responses(
        (status = OK, description = "The proof (RFC 9162 §2.1.3.1).", body = InclusionProof),
        (status = BAD_REQUEST, body = ErrorBody, description = "`invalid_request`: not \
            1 ≤ seq ≤ size ≤ the latest checkpoint's size."),
        openapi::KeyedErrors,
    ),
    security(("subscribe" = []), ("admin" = [])),
)]
pub async fn inclusion(
    _: Authorized<Subscribe>,
    State(app): State<AppState>,
    QueryParams(q): QueryParams<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    let seq = number(q.seq.as_deref(), "seq")?;
    let size = number(q.size.as_deref(), "size")?;
    let signed = signed_size(&app);
    if seq == 0 || seq > size || size > signed {
        return Err(ApiError::bad_request(format!(
            "need 1 <= seq <= size <= {signed} (the latest checkpoint's size)"
        )));
    }
    let levels = app.leaves.upto(app.store.as_ref(), size).await?;
    let path = inclusion_proof(&*levels, seq - 1, size).map_err(|e| ApiError::internal(&e))?;
    let leaf = levels
        .range_root(seq - 1, seq)
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(InclusionProof {
        seq,
        leaf_index: seq - 1,
        tree_size: size,
        leaf_hash: leaf.to_base64(),
        inclusion_path: path.iter().map(|h| h.to_base64()).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The old tree size.
    #[param(value_type = u64)]
    from: Option<String>,
    /// The new tree size, at most the latest checkpoint's.
    #[param(value_type = u64)]
    to: Option<String>,
}

/// `GET /v1/log/proof/consistency`'s answer.
#[derive(Serialize, ToSchema)]
pub struct ConsistencyProof {
    from: u64,
    to: u64,
    /// Standard base64; empty when `from` is 0 or equals `to`.
    consistency_path: Vec<String>,
}

/// The RFC 9162 consistency proof from the tree of `from` leaves to the tree of `to`.
#[utoipa::path(
    get,
    path = "/v1/log/proof/consistency",
    tag = "log",
    operation_id = "consistency_proof",
    params(ConsistencyQuery),
    responses(
        (status = OK, description = "The proof (RFC 9162 §2.1.4.1).", body = ConsistencyProof),
        (status = BAD_REQUEST, body = ErrorBody, description = "`invalid_request`: not \
            0 ≤ from ≤ to ≤ the latest checkpoint's size."),
        openapi::KeyedErrors,
    ),
    security(("subscribe" = []), ("admin" = [])),
)]
pub async fn consistency(
    _: Authorized<Subscribe>,
    State(app): State<AppState>,
    QueryParams(q): QueryParams<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let from = number(q.from.as_deref(), "from")?;
    let to = number(q.to.as_deref(), "to")?;
    let signed = signed_size(&app);
    if from > to || to > signed {
        return Err(ApiError::bad_request(format!(
            "need 0 <= from <= to <= {signed} (the latest checkpoint's size)"
        )));
    }
    let levels = app.leaves.upto(app.store.as_ref(), to).await?;
    let path = consistency_proof(&*levels, from, to).map_err(|e| ApiError::internal(&e))?;
    Ok(Json(ConsistencyProof {
        from,
        to,
        consistency_path: path.iter().map(|h| h.to_base64()).collect(),
    }))
}

/// `POST /v1/log/keys/rotate`'s answer.
#[derive(Serialize, ToSchema)]
pub struct RotateLogKeyAnswer {
    /// The new log key, published in the JWKS from now on.
    #[schema(value_type = openapi::shared::KeyId)]
    kid: KeyId,
    /// When it starts signing (Unix milliseconds): now plus `--log-key-lead`.
    signs_from_ms: i64,
}

/// A new log key is published at once and signs checkpoints and snapshot seals from
/// `--log-key-lead` later; the old one keeps signing until then and stays published while
/// what it signed may still be presented.
#[utoipa::path(
    post,
    path = "/v1/log/keys/rotate",
    tag = "log",
    operation_id = "rotate_log_key",
    responses(
        (status = OK, description = "The new key, and when it starts signing.",
            body = RotateLogKeyAnswer),
        openapi::KeyedErrors,
    ),
    security(("admin" = [])),
)]
pub async fn rotate(
    _: Authorized<Admin>,
    State(app): State<AppState>,
) -> Result<Json<RotateLogKeyAnswer>, ApiError> {
    let (kid, signs_from) = app
        .checkpointer
        .keys()
        .rotate(
            app.store.as_ref(),
            UnixMillis::now(),
            app.config.log_key_lead,
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    tracing::info!(%kid, signs_from = signs_from.as_millis(), "log key rotated");
    Ok(Json(RotateLogKeyAnswer {
        kid,
        signs_from_ms: signs_from.as_millis(),
    }))
}
