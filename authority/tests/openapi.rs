//! The OpenAPI document: the checked-in `authority/openapi.json` is the one the authority
//! serves, the router serves exactly the operations it documents with the scopes it documents,
//! and real answers fit the documented schemas.
//!
//! Regenerate the checked-in copy after changing the API:
//! `REVOCAST_UPDATE_OPENAPI=1 cargo test -p revocast-authority --test openapi`.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod common;

use common::{Server, start};

impl Server {
    /// `method path` with an optional key and JSON body; the status and the body as JSON
    /// (`Null` when it is not JSON). A streaming answer is not read.
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let streaming = resp
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        if streaming {
            return (status, Value::Null);
        }
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn document(&self) -> (String, Value) {
        let resp = self
            .http
            .get(format!("{}/openapi.json", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = resp.text().await.unwrap();
        let doc = serde_json::from_str(&text).unwrap();
        (text, doc)
    }
}

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "options", "trace"];

/// A key id that is well-formed but names no key.
const SOME_KID: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Every documented operation: its concrete path (parameters filled in), method and object.
fn operations(doc: &Value) -> Vec<(String, Method, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{kid}", SOME_KID).replace("{id}", SOME_KID);
        assert!(
            !concrete.contains('{'),
            "a path parameter to fill in: {path}"
        );
        for (method, operation) in item.as_object().unwrap() {
            assert!(METHODS.contains(&method.as_str()), "{path}: {method}");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            all.push((concrete.clone(), method, operation.clone()));
        }
    }
    all
}

#[tokio::test]
async fn the_checked_in_document_is_the_served_one() {
    let (s, _) = start().await;
    let (served, doc) = s.document().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("REVOCAST_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &served).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == served,
        "authority/openapi.json is not the document the authority serves; regenerate it with \
         `REVOCAST_UPDATE_OPENAPI=1 cargo test -p revocast-authority --test openapi` and commit it"
    );
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_operations() {
    let (s, _) = start().await;
    let (_, doc) = s.document().await;
    let documented = operations(&doc);
    assert!(documented.len() >= 18, "{}", documented.len());
    for (path, method, _) in &documented {
        let (status, v) = s.call(method.clone(), path, None, None).await;
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but answers {status} {v}"
        );
    }
    for path in doc["paths"].as_object().unwrap().keys() {
        let concrete = path.replace("{kid}", SOME_KID).replace("{id}", SOME_KID);
        for method in METHODS {
            if doc["paths"][path].get(method).is_some() {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, v) = s.call(method.clone(), &concrete, None, None).await;
            assert_eq!(
                (status, v["error"].as_str()),
                (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")),
                "{method} {path} is not documented"
            );
        }
        // HEAD is GET without the body, so it is served exactly where GET is.
        let (status, _) = s.call(Method::HEAD, &concrete, None, None).await;
        let has_get = doc["paths"][path].get("get").is_some();
        assert_eq!(
            status == StatusCode::METHOD_NOT_ALLOWED,
            !has_get,
            "HEAD {path}: {status}"
        );
    }
    // Near misses of documented paths are no routes.
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v1/tokens/",
        "/v1/revoke/token",
        "/v1/keys",
        &format!("/v1/keys/{SOME_KID}"),
        &format!("/v1/keys/{SOME_KID}/rotate"),
        "/oauth2",
        "/.well-known/openid-configuration",
        "/openapi.yaml",
        "/v2/nothing",
    ] {
        for method in [Method::GET, Method::POST] {
            let (status, v) = s.call(method.clone(), path, Some(&s.admin), None).await;
            assert_eq!(
                (status, v["error"].as_str()),
                (StatusCode::NOT_FOUND, Some("not_found")),
                "{method} {path}"
            );
        }
    }
}

/// The scopes an operation's `security` names (empty for an open operation).
fn scopes(operation: &Value) -> Vec<String> {
    operation["security"]
        .as_array()
        .map(|all| {
            all.iter()
                .flat_map(|requirement| requirement.as_object().unwrap().keys().cloned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_operation_takes_exactly_the_documented_keys() {
    let (s, _) = start().await;
    let (_, doc) = s.document().await;
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scope in ["admin", "introspect", "subscribe"] {
        assert_eq!(schemes[scope]["type"], "http", "{scope}");
        assert_eq!(schemes[scope]["scheme"], "bearer", "{scope}");
    }
    let denied =
        |status: StatusCode| status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    for (path, method, operation) in operations(&doc) {
        let scopes = scopes(&operation);
        let (status, v) = s.call(method.clone(), &path, None, None).await;
        if scopes.is_empty() {
            assert!(!denied(status), "{method} {path} is open: {status} {v}");
            continue;
        }
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a key"
        );
        for scope in &scopes {
            assert!(schemes.contains_key(scope), "{method} {path}: {scope}");
        }
        // An admin key may do everything.
        assert!(scopes.iter().any(|s| s == "admin"), "{method} {path}");
        let (status, v) = s.call(method.clone(), &path, Some(&s.admin), None).await;
        assert!(!denied(status), "{method} {path} with admin: {status} {v}");
        let (status, v) = s
            .call(method.clone(), &path, Some(&s.subscriber), None)
            .await;
        let subscribe = scopes.iter().any(|s| s == "subscribe");
        assert_eq!(
            !denied(status),
            subscribe,
            "{method} {path} with subscribe: {status} {v}"
        );
        if !subscribe {
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        }
    }
}

/// Check `value` against a schema of the document, for the JSON Schema keywords the document
/// uses. Returns the first mismatch.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "dangling {reference}");
        return check(doc, target, value, at);
    }
    let fail = |what: &str| Err(format!("{at}: {what}: {value}"));
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            check(doc, part, value, at)?;
        }
    }
    for combinator in ["oneOf", "anyOf"] {
        if let Some(options) = schema[combinator].as_array() {
            let fits = options
                .iter()
                .filter(|o| check(doc, o, value, at).is_ok())
                .count();
            if fits == 0 || (combinator == "oneOf" && fits > 1) {
                return fail(&format!("{fits} of the {combinator} options fit"));
            }
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return fail("not one of the enum values");
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let is = |t: &str| match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("type {other}"),
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        return fail(&format!("not of type {types:?}"));
    }
    if let Some(object) = value.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(required.as_str().unwrap()) {
                return fail(&format!("no {required}"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, member) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => check(doc, property, member, &format!("{at}.{name}"))?,
                None if schema["additionalProperties"] == false => {
                    return fail(&format!("undocumented member {name}"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Check an answer against the schema the document gives for it.
fn fits(doc: &Value, path: &str, method: &str, status: StatusCode, body: &Value) {
    let operation = &doc["paths"][path][method];
    let mut response = &operation["responses"][status.as_str()];
    assert!(
        !response.is_null(),
        "{method} {path}: {status} is not documented"
    );
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/responses/");
        response = &doc["components"]["responses"][name];
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path}: {status} has no JSON schema"
    );
    // A strict reading: an undocumented member fails, not only a missing one.
    if let Err(e) = check(doc, &strict(doc, schema), body, "") {
        panic!("{method} {path} {status}: {e}");
    }
}

/// The schema with `additionalProperties: false` wherever it says nothing, so that answers may
/// not carry members the document does not name. The parts of an `allOf` stay open: each names
/// only its own members.
fn strict(doc: &Value, schema: &Value) -> Value {
    strict_unless(doc, schema, false)
}

fn strict_unless(doc: &Value, schema: &Value, part: bool) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                let name = reference.trim_start_matches("#/components/schemas/");
                return strict_unless(doc, &doc["components"]["schemas"][name], part);
            }
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let v = match (k.as_str(), v) {
                    ("allOf", Value::Array(parts)) => {
                        Value::Array(parts.iter().map(|p| strict_unless(doc, p, true)).collect())
                    }
                    ("properties", Value::Object(properties)) => Value::Object(
                        properties
                            .iter()
                            .map(|(name, p)| (name.clone(), strict(doc, p)))
                            .collect(),
                    ),
                    (_, v) => strict_unless(doc, v, part),
                };
                out.insert(k.clone(), v);
            }
            if !part && out.contains_key("properties") && !out.contains_key("additionalProperties")
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| strict_unless(doc, v, part)).collect())
        }
        other => other.clone(),
    }
}

#[tokio::test]
async fn answers_fit_the_documented_schemas() {
    let (s, handle) = start().await;
    let (_, doc) = s.document().await;
    let admin = Some(s.admin.as_str());
    let post = |path: &'static str, body: Value| {
        let call = s.call(Method::POST, path, admin, Some(body));
        async move { (path, call.await) }
    };

    let (path, (status, issued)) = post(
        "/v1/tokens",
        json!({ "sub": "ann", "sid": "s1", "aud": ["a", "b"], "claims": { "role": "x" } }),
    )
    .await;
    fits(&doc, path, "post", status, &issued);
    // The check is not vacuous: a member too many, one missing or of a wrong type fails it.
    let schema = strict(&doc, &json!({ "$ref": "#/components/schemas/IssueAnswer" }));
    for wrong in [json!({ "extra": 1 }), json!({ "exp": "soon" })] {
        let mut body = issued.clone();
        body.as_object_mut()
            .unwrap()
            .extend(wrong.as_object().unwrap().clone());
        assert!(check(&doc, &schema, &body, "").is_err(), "{wrong}");
    }
    let mut body = issued.clone();
    body.as_object_mut().unwrap().remove("rid");
    assert!(check(&doc, &schema, &body, "").is_err());
    let token = issued["token"].as_str().unwrap().to_string();

    let (path, (status, v)) = post("/v1/verify", json!({ "token": token })).await;
    assert_eq!(v["valid"], true);
    fits(&doc, path, "post", status, &v);
    let (path, (status, v)) = post("/v1/verify", json!({ "token": "a.b.c" })).await;
    assert_eq!(v["valid"], false);
    fits(&doc, path, "post", status, &v);

    let introspect = |form: String| {
        let req = s
            .http
            .post(format!("{}/oauth2/introspect", s.base))
            .bearer_auth(&s.admin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = introspect(format!("token={token}&token_type_hint=access_token")).await;
    assert_eq!(v["active"], true);
    fits(&doc, "/oauth2/introspect", "post", status, &v);
    let (status, v) = introspect("token=garbage".into()).await;
    fits(&doc, "/oauth2/introspect", "post", status, &v);

    // A session with refresh tokens: its start, a refresh token introspected, a rotation and
    // an error of the token endpoint (none of which writes to the log).
    let (path, (status, session)) =
        post("/v1/tokens", json!({ "sub": "ann", "refresh": true })).await;
    fits(&doc, path, "post", status, &session);
    let refresh_token = session["refresh_token"].as_str().unwrap().to_string();
    let (status, v) = introspect(format!("token={refresh_token}")).await;
    assert_eq!(v["token_type"], "refresh_token");
    fits(&doc, "/oauth2/introspect", "post", status, &v);
    let grant = |form: String| {
        let req = s
            .http
            .post(format!("{}/oauth2/token", s.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = grant(format!(
        "grant_type=refresh_token&refresh_token={refresh_token}"
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    fits(&doc, "/oauth2/token", "post", status, &v);
    let (status, v) = grant("grant_type=password".into()).await;
    assert_eq!(v["error"], "unsupported_grant_type");
    fits(&doc, "/oauth2/token", "post", status, &v);

    for _ in 0..2 {
        let (path, (status, v)) = post("/v1/revoke", json!({ "token": token })).await;
        fits(&doc, path, "post", status, &v);
    }
    let (path, (status, v)) = post("/v1/revoke", json!({ "token": "a.b.c" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    fits(&doc, path, "post", status, &v);
    let (path, (status, v)) = post("/v1/revoke/subject", json!({ "sub": "ann" })).await;
    fits(&doc, path, "post", status, &v);
    let (path, (status, v)) = post("/v1/revoke/session", json!({ "sid": "s1" })).await;
    fits(&doc, path, "post", status, &v);
    let (path, (status, v)) = post("/v1/revoke/session", json!({ "sid": "" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    fits(&doc, path, "post", status, &v);

    let (path, (status, rotated)) = post("/v1/keys/rotate", json!({})).await;
    fits(&doc, path, "post", status, &rotated);
    let kid = rotated["kid"].as_str().unwrap();
    let (status, v) = s
        .call(Method::POST, &format!("/v1/keys/{kid}/revoke"), admin, None)
        .await;
    fits(&doc, "/v1/keys/{kid}/revoke", "post", status, &v);
    let (status, v) = s
        .call(
            Method::POST,
            &format!("/v1/keys/{SOME_KID}/revoke"),
            admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    fits(&doc, "/v1/keys/{kid}/revoke", "post", status, &v);

    let (status, listed) = s.call(Method::GET, "/v1/api-keys", admin, None).await;
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(2), "{listed}");
    fits(&doc, "/v1/api-keys", "get", status, &listed);
    let spare = handle
        .create_api_key(revocast_authority::Scope::Introspect, Some("spare"))
        .await
        .unwrap();
    let (_, listed) = s.call(Method::GET, "/v1/api-keys", admin, None).await;
    fits(&doc, "/v1/api-keys", "get", status, &listed);
    let spare_entry = listed["keys"].as_array().unwrap().iter();
    let id = spare_entry
        .filter(|k| k["label"] == "spare")
        .find_map(|k| k["id"].as_str())
        .unwrap();
    for _ in 0..2 {
        let (status, v) = s
            .call(
                Method::POST,
                &format!("/v1/api-keys/{id}/revoke"),
                admin,
                None,
            )
            .await;
        assert_eq!(
            (status, v["label"].as_str()),
            (StatusCode::OK, Some("spare"))
        );
        fits(&doc, "/v1/api-keys/{id}/revoke", "post", status, &v);
    }
    let (status, v) = s
        .call(Method::GET, "/v1/api-keys", Some(&spare), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    fits(&doc, "/v1/api-keys", "get", status, &v);
    let (status, v) = s
        .call(
            Method::POST,
            &format!("/v1/api-keys/{SOME_KID}/revoke"),
            admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    fits(&doc, "/v1/api-keys/{id}/revoke", "post", status, &v);

    for path in [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/healthz",
        "/readyz",
    ] {
        let (status, v) = s.call(Method::GET, path, None, None).await;
        fits(&doc, path, "get", status, &v);
    }
    // Every kind of revocation event is in the snapshot by now.
    let (status, snapshot) = s
        .call(Method::GET, "/v1/snapshot", Some(&s.subscriber), None)
        .await;
    assert_eq!(
        snapshot["events"].as_array().unwrap().len(),
        4,
        "{snapshot}"
    );
    fits(&doc, "/v1/snapshot", "get", status, &snapshot);
    for (path, key) in [
        ("/v1/snapshot", None),
        ("/v1/tokens", Some(s.subscriber.as_str())),
    ] {
        let method = if key.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let (status, v) = s.call(method.clone(), path, key, None).await;
        fits(&doc, path, &method.as_str().to_lowercase(), status, &v);
    }
}
