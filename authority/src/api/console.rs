//! The operator console: one page, its script and its stylesheet, compiled into the binary
//! from `authority/console/` (plain files, no build step). The page is public — it holds no
//! data and no secret; everything it shows it fetches with the admin key the operator types,
//! from the same API every other client uses.
//!
//! Every answer carries a Content-Security-Policy that allows only this origin's own script,
//! style and API, no inline script or style, no framing: even if fleet data (names, versions:
//! whatever a subscriber said) were ever put into the page as markup, the browser would run
//! none of it. The script itself only ever sets text (`textContent`), never markup.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const PAGE: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/app.css");

/// Only this origin's own files and API; no inline script or style (`'self'` allows neither),
/// no plugins, no framing, no `<base>`, no form posts (the page's forms are handled by its
/// script). `img-src data:` is for the inline favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'none'";

/// One built-in file with its validator, computed once.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Self {
            body,
            content_type,
            // A quoted hex string is always a valid header value.
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
        }
    }

    /// The file, or `304` if the client holds this version; with the console's headers
    /// either way.
    fn serve(&self, request: &HeaderMap) -> Response {
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .any(|t| t.trim() == "*" || t.trim() == self.etag)
            });
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(self.content_type),
                )],
                self.body,
            )
                .into_response()
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        for (name, value) in SECURITY_HEADERS {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// Sent with every console file.
const SECURITY_HEADERS: [(HeaderName, &str); 7] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    // For browsers that predate `frame-ancestors`.
    (header::X_FRAME_OPTIONS, "DENY"),
    // Revalidate every time (with the ETag): a new authority version serves new files at
    // the same paths.
    (header::CACHE_CONTROL, "no-cache"),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
    (
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    ),
];

static PAGE_ASSET: LazyLock<Asset> = LazyLock::new(|| Asset::new(PAGE, "text/html; charset=utf-8"));
static SCRIPT_ASSET: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(SCRIPT, "text/javascript; charset=utf-8"));
static STYLE_ASSET: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(STYLE, "text/css; charset=utf-8"));

/// The operator console: the fleet, the latest revocations and how far each has propagated,
/// a revoke form that waits for the fleet, and the authority's health. The page asks for the
/// admin key and keeps it in the tab's session storage only.
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    operation_id = "console",
    responses(
        (status = OK, description = "The console's page; it loads `/console/app.js` and \
            `/console/app.css` and calls the API with the key the operator enters.",
            body = String, content_type = "text/html",
            headers(
                ("Content-Security-Policy" = String, description = "Only this origin's own \
                    script, style and API; no inline script or style; no framing."),
                ("ETag" = String, description = "The file's version."),
            )),
        (status = NOT_MODIFIED, description = "`If-None-Match` names this version."),
    ),
)]
pub async fn page(request: HeaderMap) -> Response {
    PAGE_ASSET.serve(&request)
}

/// The console's script.
#[utoipa::path(
    get,
    path = "/console/app.js",
    tag = "console",
    operation_id = "console_script",
    responses(
        (status = OK, description = "The console's script.", body = String,
            content_type = "text/javascript"),
        (status = NOT_MODIFIED, description = "`If-None-Match` names this version."),
    ),
)]
pub async fn script(request: HeaderMap) -> Response {
    SCRIPT_ASSET.serve(&request)
}

/// The console's stylesheet.
#[utoipa::path(
    get,
    path = "/console/app.css",
    tag = "console",
    operation_id = "console_style",
    responses(
        (status = OK, description = "The console's stylesheet.", body = String,
            content_type = "text/css"),
        (status = NOT_MODIFIED, description = "`If-None-Match` names this version."),
    ),
)]
pub async fn style(request: HeaderMap) -> Response {
    STYLE_ASSET.serve(&request)
}
