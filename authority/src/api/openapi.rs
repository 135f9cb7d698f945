//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` and checked in as
//! `authority/openapi.json`. Each handler describes itself with `#[utoipa::path]` and its
//! request and answer types derive `ToSchema`; this module holds what they share: the API-key
//! security schemes, the error responses, and the schemas of the `revocast-shared` types that
//! answers carry (that crate stays free of OpenAPI, so their schemas are written here, and a
//! test checks them against the real types' JSON).

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use revocast_shared::VerifyError;
use serde::{Serialize, Serializer};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::info::{InfoBuilder, LicenseBuilder};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ComponentsBuilder, Object, ObjectBuilder, OneOfBuilder,
    Schema, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{OpenApi, OpenApiBuilder, Ref, RefOr, Response};
use utoipa::{IntoResponses, PartialSchema, ToResponse, ToSchema};

use crate::error::{ApiError, ErrorBody};

/// The API-key scopes, each a bearer security scheme of the same name.
const SCOPES: [(&str, &str); 3] = [
    ("admin", "An API key of scope `admin`: every operation."),
    (
        "introspect",
        "An API key of scope `introspect`: `/v1/verify` and `/oauth2/introspect` only, for \
         services that verify remotely and must not mint tokens.",
    ),
    (
        "subscribe",
        "An API key of scope `subscribe`: the revocation stream and snapshot.",
    ),
];

const DESCRIPTION: &str = "\
The revocast authority signs ML-DSA-65 access tokens, records revocations durably with a \
gap-free `seq`, and pushes every revocation to agents.

Credentials are API keys sent as `Authorization: Bearer KEY`; each key has one scope (`admin`, \
`introspect` or `subscribe`), shown here as a security scheme per scope. A missing or unknown \
key is answered `401`, a key of the wrong scope `403`. Every error has the body \
`{\"error\": CODE, \"error_description\": TEXT}`; a path the API does not have is answered \
`404 not_found`, a method a path does not take `405 method_not_allowed`.

Times are Unix seconds; `revoked_at` and `at` carry milliseconds as a fraction. The revocation \
stream (`/v1/events`, `/v1/stream`) and its messages are specified in PROTOCOL.md at the top of \
the repository.";

/// The document's frame: info, tags, security schemes and the shared error responses. The
/// router adds every path to it.
pub(crate) fn base() -> OpenApi {
    let mut components = ComponentsBuilder::new();
    for (scope, description) in SCOPES {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(description.to_string());
        components = components.security_scheme(scope, SecurityScheme::Http(scheme));
    }
    for (name, response) in [
        Unauthorized::response(),
        Forbidden::response(),
        PayloadTooLarge::response(),
        RateLimited::response(),
        ServerError::response(),
        Unavailable::response(),
    ] {
        components = components.response(name, response);
    }
    let components = components
        .schema(ErrorBody::name(), ErrorBody::schema())
        .schemas_from_iter(shared::all());
    let tag = |name: &str, description: &str| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    };
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("revocast authority")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION))
                .license(Some(
                    LicenseBuilder::new()
                        .name("Apache-2.0")
                        .identifier(Some("Apache-2.0"))
                        .build(),
                ))
                .build(),
        )
        .tags(Some([
            tag("tokens", "Issue and verify access tokens."),
            tag("revocation", "Revoke a token, a subject, a session."),
            tag("keys", "Signing keys: rotate, revoke, publish."),
            tag(
                "api-keys",
                "The API keys clients authenticate with: list (never a secret) and revoke.",
            ),
            tag(
                "oauth",
                "RFC 7009 revocation, RFC 7662 introspection, RFC 8414 metadata.",
            ),
            tag(
                "stream",
                "The revocation stream and snapshot agents sync from.",
            ),
            tag(
                "log",
                "The transparency log: signed checkpoints, inclusion and consistency proofs, \
                 and the log key's rotation.",
            ),
            tag(
                "fleet",
                "The subscribers connected, and the seq each acknowledged applying.",
            ),
            tag(
                "operations",
                "Health, readiness, metrics and this document.",
            ),
            tag(
                "console",
                "The operator console: a page for browsers, built into the authority.",
            ),
        ]))
        .components(Some(components.build()))
        .build()
}

/// The document as served and checked in: pretty JSON and a final newline.
pub(crate) fn to_json(document: &OpenApi) -> Result<String, serde_json::Error> {
    let mut json = serde_json::to_string_pretty(document)?;
    json.push('\n');
    Ok(json)
}

/// The document, given to [`document`] by the router that it describes.
#[derive(Clone)]
pub(crate) struct Document(pub(crate) std::sync::Arc<OpenApi>);

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses(
        (status = OK, description = "This OpenAPI 3.1 document.", body = Object,
            content_type = "application/json"),
        (status = INTERNAL_SERVER_ERROR, response = ServerError),
    ),
)]
pub(crate) async fn document(
    Extension(Document(document)): Extension<Document>,
) -> impl IntoResponse {
    to_json(&document)
        .map(|json| ([(header::CONTENT_TYPE, "application/json")], json))
        .map_err(|e| ApiError::internal(&e))
}

/// A schema-only type: an uninhabited enum whose schema is written out, for what has no Rust
/// type of ours to derive it from.
macro_rules! schema {
    ($(#[$doc:meta])* $name:ident => $body:expr) => {
        $(#[$doc])*
        pub enum $name {}

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $body.into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

schema!(
    /// The snapshot's JSON form, which `GET /v1/snapshot` writes piece by piece as it reads the
    /// store.
    Snapshot => ObjectBuilder::new()
        .property("epoch", Ref::from_schema_name("Epoch"))
        .required("epoch")
        .property("seq", Ref::from_schema_name("Seq"))
        .required("seq")
        .property(
            "at",
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .description(Some(
                    "An extension: the authority's time (Unix seconds with a millisecond \
                     fraction) just before the snapshot was read; everything committed by then \
                     is in it. A client that holds it is current as of `at`. Older authorities \
                     leave it out.",
                ))
                .examples([serde_json::json!(1767222000.123)]),
        )
        .property(
            "checkpoint",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "An extension: the signed checkpoint of the log at `seq` (a C2SP signed \
                     note; PROTOCOL.md \"Transparency log\").",
                )),
        )
        .property(
            "frontier",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(
                    "An extension: the Merkle tree's frontier at `seq`, \
                     `{\"size\":N,\"hashes\":[base64,…]}`.",
                )),
        )
        .property(
            "events",
            ArrayBuilder::new()
                .items(Ref::from_schema_name("RevocationEvent"))
                .description(Some("Every revocation still in force as of `seq`.")),
        )
        .required("events")
        .description(Some(
            "Every revocation still in force, and the head `seq` it is as of: resume the \
             stream with `since` = `seq`.",
        ))
);

/// A boolean that is always `true` on the wire (`"valid": true`, `"revoked": true`).
#[derive(Clone, Copy, Debug)]
pub struct True;

/// A boolean that is always `false` on the wire (`"valid": false`, `"active": false`).
#[derive(Clone, Copy, Debug)]
pub struct False;

impl Serialize for True {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(true)
    }
}

impl Serialize for False {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(false)
    }
}

impl PartialSchema for True {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .enum_values(Some([true]))
            .into()
    }
}

impl PartialSchema for False {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .enum_values(Some([false]))
            .into()
    }
}

impl ToSchema for True {}
impl ToSchema for False {}

/// Schemas of `revocast-shared`'s wire types, written here (see the module's documentation).
pub mod shared {
    use super::*;

    fn string(description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    }

    fn integer(description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .description(Some(description))
    }

    /// A base64url SHA-256 digest without padding.
    const DIGEST: &str = "^[A-Za-z0-9_-]{43}$";

    schema!(
        /// `rid`: base64url(SHA-256(the token's raw signature)).
        RevocationId => string(
            "Revocation id: base64url (unpadded) of SHA-256 over the token's raw signature \
             bytes; binds a revocation to one exact token.",
        )
        .pattern(Some(DIGEST))
    );

    schema!(
        /// `kid`: the RFC 7638 thumbprint of a public key.
        KeyId => string(
            "Key id: the RFC 7638 thumbprint (SHA-256, base64url unpadded) over the key's \
             `alg`, `kty` and `pub` (RFC 9964 §6).",
        )
        .pattern(Some(DIGEST))
    );

    schema!(
        /// `seq`: a position in the revocation log.
        Seq => integer(
            "Position in the revocation log: 1 for the first revocation, gap-free, strictly \
             increasing in commit order; 0 for an empty log.",
        )
        .minimum(Some(0))
    );

    schema!(
        /// `epoch`: the random id of a revocation log.
        Epoch => string(
            "Random identity of the revocation log, fixed when it was created; a client that \
             sees another epoch must resync from the snapshot.",
        )
    );

    schema!(
        /// A time in Unix seconds with a millisecond fraction (`UnixMillis` on the wire).
        UnixTime => ObjectBuilder::new()
            .schema_type(Type::Number)
            .description(Some("Unix seconds with a millisecond fraction, e.g. 1767222000.123."))
            .examples([serde_json::json!(1767222000.123)])
    );

    schema!(
        /// The code of a `valid: false` verdict.
        VerifyErrorCode => string("Why the token is not valid.")
            .enum_values(Some(VerifyError::ALL.map(VerifyError::code)))
    );

    fn audience() -> OneOfBuilder {
        OneOfBuilder::new()
            .description(Some(
                "`aud`: one audience or a list of them (RFC 7519 §4.1.3).",
            ))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(
                ArrayBuilder::new()
                    .items(ObjectBuilder::new().schema_type(Type::String))
                    .min_items(Some(1)),
            )
    }

    schema!(
        /// `aud` as requested and as carried in claims.
        Audience => audience()
    );

    schema!(
        /// The claims of an access token.
        Claims => ObjectBuilder::new()
            .description(Some(
                "The token's claims. Members other than the registered ones are the custom \
                 claims given when it was issued.",
            ))
            .property("iss", string("Issuer: the authority's URL."))
            .required("iss")
            .property("sub", string("Subject."))
            .required("sub")
            .property("iat", integer("Issued at, Unix seconds."))
            .required("iat")
            .property("exp", integer("Expires at, Unix seconds."))
            .required("exp")
            .property("nbf", integer("Not before, Unix seconds."))
            .property("aud", Ref::from_schema_name("Audience"))
            .property("jti", string("Token id: 128 random bits, base64url."))
            .required("jti")
            .property("sid", string("Session id."))
            .property(
                "gen",
                integer(
                    "The subject's generation at issue; a subject revocation raises the \
                     minimum accepted generation above it.",
                )
                .minimum(Some(0)),
            )
            .required("gen")
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
    );

    schema!(
        /// A public key as published in the JWKS.
        Jwk => ObjectBuilder::new()
            .description(Some("An ML-DSA-65 public key as an `AKP` JWK (RFC 9964)."))
            .property("kty", string("Key type.").enum_values(Some(["AKP"])))
            .required("kty")
            .property("alg", string("Algorithm.").enum_values(Some(["ML-DSA-65"])))
            .required("alg")
            .property(
                "use",
                string(
                    "Public key use: `sig` for a token key, `revocast-log` for a transparency \
                     log key (checkpoints and snapshot seals, never tokens).",
                )
                .enum_values(Some(["sig", "revocast-log"])),
            )
            .property("kid", Ref::from_schema_name("KeyId"))
            .required("kid")
            .property("pub", string("The 1952-byte public key, base64url unpadded."))
            .required("pub")
    );

    schema!(
        /// `{"keys":[…]}`.
        JwkSet => ObjectBuilder::new()
            .property("keys", ArrayBuilder::new().items(Ref::from_schema_name("Jwk")))
            .required("keys")
    );

    /// One kind of revocation event: `seq`, `type`, `at` and the kind's own members.
    fn event(kind: &str, description: &str, members: &[(&str, RefOr<Schema>)]) -> ObjectBuilder {
        let mut event = ObjectBuilder::new()
            .description(Some(description))
            .property("seq", Ref::from_schema_name("Seq"))
            .required("seq")
            .property(
                "type",
                string("The kind of revocation.").enum_values(Some([kind])),
            )
            .required("type");
        for (name, schema) in members {
            event = event.property(*name, schema.clone()).required(*name);
        }
        event
            .property("at", Ref::from_schema_name("UnixTime"))
            .required("at")
    }

    schema!(
        /// A committed revocation as it appears in the snapshot and the stream.
        RevocationEvent => OneOfBuilder::new()
            .description(Some(
                "A committed revocation. The stream (PROTOCOL.md) carries the same objects.",
            ))
            .item(event(
                "token",
                "One exact token, until its `exp`.",
                &[
                    ("rid", Ref::from_schema_name("RevocationId").into()),
                    ("exp", integer("The token's expiry, Unix seconds.").into()),
                ],
            ))
            .item(event(
                "subject",
                "Every token of `sub` with a generation below `gen`, until `until`.",
                &[
                    ("sub", string("Subject.").into()),
                    ("gen", integer("Lowest generation still accepted.").minimum(Some(0)).into()),
                    ("until", integer("Unix seconds after which the entry can no longer matter.").into()),
                ],
            ))
            .item(event(
                "session",
                "Every token carrying `sid`, until `until`.",
                &[
                    ("sid", string("Session id.").into()),
                    ("until", integer("Unix seconds after which the entry can no longer matter.").into()),
                ],
            ))
            .item(event(
                "key",
                "Every token signed by `kid`, forever.",
                &[("kid", Ref::from_schema_name("KeyId").into())],
            ))
    );

    /// Every schema of this module, for the components of the document.
    pub(crate) fn all() -> Vec<(String, RefOr<Schema>)> {
        fn one<T: ToSchema>() -> (String, RefOr<Schema>) {
            (T::name().into_owned(), T::schema())
        }
        vec![
            one::<RevocationId>(),
            one::<KeyId>(),
            one::<Seq>(),
            one::<Epoch>(),
            one::<UnixTime>(),
            one::<VerifyErrorCode>(),
            one::<Audience>(),
            one::<Claims>(),
            one::<Jwk>(),
            one::<JwkSet>(),
            one::<RevocationEvent>(),
            one::<super::Snapshot>(),
        ]
    }
}

/// An error response with the contract's body.
fn error_with(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build(),
    )
}

macro_rules! error_response {
    ($(#[$doc:meta])* $name:ident => $body:expr) => {
        $(#[$doc])*
        pub enum $name {}

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), $body.build().into())
            }
        }
    };
}

fn challenge(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(Object::with_type(Type::String)))
        .description(Some(description))
        .build()
}

error_response!(
    /// 401.
    Unauthorized => error_with(
        "`invalid_client`: no API key, or one that matches no key.",
    )
    .header("WWW-Authenticate", challenge("`Bearer realm=\"revocast\"`."))
);

error_response!(
    /// 403.
    Forbidden => error_with(
        "`insufficient_scope`: the key's scope does not allow this operation (or, with \
         `--client-ca`, the stream and snapshot need a client certificate).",
    )
    .header(
        "WWW-Authenticate",
        challenge("`Bearer realm=\"revocast\", error=\"insufficient_scope\"`."),
    )
);

error_response!(
    /// 413.
    PayloadTooLarge => error_with("`payload_too_large`: the body exceeds the configured limit.")
);

error_response!(
    /// 429.
    RateLimited => error_with("`rate_limited`: too many requests for this key; retry later.")
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(Object::with_type(Type::Integer)))
                .description(Some("Seconds to wait before retrying."))
                .build(),
        )
);

error_response!(
    /// 500.
    ServerError => error_with("`server_error`: an internal failure (logged, never detailed here).")
);

error_response!(
    /// 503.
    Unavailable => error_with(
        "`temporarily_unavailable`: the store cannot take the request now (or the authority \
         is shutting down); on a replica of a shared database, also: it has not read the \
         shared log recently, so it neither verifies, introspects nor issues from a view that \
         may miss revocations, or a revocation is durable but not yet applied there. Retry \
         later (a repeated revocation is safe), or ask another replica.",
    )
);

/// A route's shared error answers by status, as one entry of its `responses(...)`: references
/// to the responses above, so each is described once.
macro_rules! error_group {
    ($(#[$doc:meta])* $name:ident => [$($status:literal => $response:ident),+ $(,)?]) => {
        $(#[$doc])*
        pub enum $name {}

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$((
                    $status.to_string(),
                    RefOr::Ref(Ref::from_response_name(stringify!($response))),
                )),+]
                .into_iter()
                .collect()
            }
        }
    };
}

error_group!(
    /// A keyed route without a body: the key (401, 403) and the store (500, 503; on a replica,
    /// 503 also while its view of the shared log may be behind).
    KeyedErrors => ["401" => Unauthorized, "403" => Forbidden, "500" => ServerError,
        "503" => Unavailable]
);

error_group!(
    /// A keyed route with a body: [`KeyedErrors`] and the body limit (413).
    BodyErrors => ["401" => Unauthorized, "403" => Forbidden, "413" => PayloadTooLarge,
        "500" => ServerError, "503" => Unavailable]
);

error_group!(
    /// A rate-limited keyed route without a body: [`KeyedErrors`] and the rate limit (429).
    LimitedErrors => ["401" => Unauthorized, "403" => Forbidden, "429" => RateLimited,
        "500" => ServerError, "503" => Unavailable]
);

error_group!(
    /// A rate-limited keyed route with a body: [`BodyErrors`] and the rate limit (429).
    LimitedBodyErrors => ["401" => Unauthorized, "403" => Forbidden, "413" => PayloadTooLarge,
        "429" => RateLimited, "500" => ServerError, "503" => Unavailable]
);
