//! `POST /v1/tokens`: issue a signed access token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use revocast_shared::token::{Audience, RESERVED_CLAIMS, issue as sign};
use revocast_shared::{Claims, UnixSeconds};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{blocking, check_id};
use crate::app::AppState;
use crate::auth::{Admin, Authorized};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::limit::{Limited, Tokens};
use crate::view::IssueRefusal;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    sub: String,
    ttl: Option<i64>,
    aud: Option<Audience>,
    sid: Option<String>,
    claims: Option<Map<String, Value>>,
}

/// Most audiences one token may name.
const MAX_AUDIENCES: usize = 16;

pub async fn issue(
    _: Authorized<Admin>,
    _: Limited<Tokens>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<IssueRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_id("sub", &req.sub)?;
    if let Some(sid) = &req.sid {
        check_id("sid", sid)?;
    }
    match &req.aud {
        Some(Audience::One(a)) => check_id("aud", a)?,
        Some(Audience::Many(all)) => {
            if all.is_empty() || all.len() > MAX_AUDIENCES {
                return Err(ApiError::bad_request(format!(
                    "aud must list 1 to {MAX_AUDIENCES} audiences"
                )));
            }
            for a in all {
                check_id("aud", a)?;
            }
        }
        None => {}
    }
    let ttl = req.ttl.unwrap_or(app.config.default_ttl_secs);
    if !(1..=app.config.max_ttl_secs).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttl must be between 1 and max_ttl ({} s)",
            app.config.max_ttl_secs
        )));
    }
    let custom = req.claims.unwrap_or_default();
    if let Some(name) = custom
        .keys()
        .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "claims must not set the reserved claim {name:?}"
        )));
    }

    let now = UnixSeconds::now();
    let (key, r#gen) = app
        .view
        .issuing(&req.sub, req.sid.as_deref(), now)
        .map_err(|refusal| match refusal {
            IssueRefusal::SessionRevoked => {
                ApiError::bad_request("session is revoked; no new tokens are issued for it")
            }
            IssueRefusal::NoSigningKey => ApiError::unavailable("no active signing key"),
        })?;
    let kid = key.kid();
    let claims = Claims {
        iss: app.config.issuer.clone(),
        sub: req.sub,
        iat: now.get(),
        exp: now.get() + ttl,
        nbf: None,
        aud: req.aud,
        jti: Claims::random_jti().map_err(|e| ApiError::internal(&e))?,
        sid: req.sid,
        r#gen,
        custom,
    };
    let (issued, claims) = blocking(move || sign(&claims, &key).map(|t| (t, claims)))
        .await?
        .map_err(|e| match e {
            revocast_shared::Error::TokenTooLarge { max } => ApiError::bad_request(format!(
                "claims too large: the token would exceed {max} bytes"
            )),
            other => ApiError::internal(&other),
        })?;
    app.metrics.tokens_issued.inc();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": issued.token,
            "rid": issued.rid,
            "kid": kid,
            "jti": claims.jti,
            "iat": claims.iat,
            "exp": claims.exp,
        })),
    ))
}
