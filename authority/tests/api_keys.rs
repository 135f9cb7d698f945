//! `GET /v1/api-keys` and `POST /v1/api-keys/{id}/revoke`: keys are listed by id and label,
//! never by secret; a revoked key is refused at once by the authority that revoked it, and
//! stays listed with its revocation time.

use reqwest::StatusCode;
use revocast_authority::Scope;
use serde_json::{Value, json};

mod common;

use common::{Server, start};

impl Server {
    async fn send(&self, req: reqwest::RequestBuilder, key: &str) -> (StatusCode, String) {
        let resp = req.bearer_auth(key).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn list_keys(&self, key: &str) -> (StatusCode, String) {
        self.send(self.http.get(format!("{}/v1/api-keys", self.base)), key)
            .await
    }

    async fn revoke_key(&self, key: &str, id: &str) -> (StatusCode, Value) {
        let req = self
            .http
            .post(format!("{}/v1/api-keys/{id}/revoke", self.base));
        let (status, body) = self.send(req, key).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// `POST /v1/verify` of a token that is not one: 200 for any key allowed to verify.
    async fn verify_status(&self, key: &str) -> StatusCode {
        let req = self
            .http
            .post(format!("{}/v1/verify", self.base))
            .json(&json!({ "token": "a.b.c" }));
        self.send(req, key).await.0
    }
}

/// The listed key whose label is `label`.
fn by_label<'a>(list: &'a Value, label: &str) -> &'a Value {
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == label)
        .unwrap_or_else(|| panic!("no key labelled {label}: {list}"))
}

#[tokio::test]
async fn keys_are_listed_by_id_and_label_never_by_secret() {
    let (s, handle) = start().await;
    let gateway = handle
        .create_api_key(Scope::Introspect, Some("gateway"))
        .await
        .unwrap();
    let (status, text) = s.list_keys(&s.admin).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    for secret in [&s.admin, &s.subscriber, &*gateway] {
        assert!(!text.contains(secret.as_str()), "a secret is listed");
        // Nor any recognisable piece of one.
        assert!(
            !text.contains(&secret[4..16]),
            "a piece of a secret is listed"
        );
    }
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["keys"].as_array().unwrap().len(), 3, "{list}");
    let admin = by_label(&list, "bootstrap admin");
    assert_eq!(admin["scope"], "admin");
    assert_eq!(
        by_label(&list, "bootstrap subscriber")["scope"],
        "subscribe"
    );
    let gateway = by_label(&list, "gateway");
    assert_eq!(gateway["scope"], "introspect");
    assert_eq!(gateway["revoked_at"], Value::Null);
    assert!(gateway["created_at"].as_i64().unwrap() > 1_700_000_000);
    let id = gateway["id"].as_str().unwrap();
    assert_eq!(id.len(), 43);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    // Admin only.
    assert_eq!(s.list_keys(&s.subscriber).await.0, StatusCode::FORBIDDEN);
    assert_eq!(s.list_keys("rvc_nothing").await.0, StatusCode::UNAUTHORIZED);
    let (status, v) = s.revoke_key(&s.subscriber, id).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope"))
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_and_stays_listed() {
    let (s, handle) = start().await;
    let gateway = handle
        .create_api_key(Scope::Introspect, Some("gateway"))
        .await
        .unwrap();
    // In use, so cached as valid.
    for _ in 0..3 {
        assert_eq!(s.verify_status(&gateway).await, StatusCode::OK);
    }
    let (_, text) = s.list_keys(&s.admin).await;
    let list: Value = serde_json::from_str(&text).unwrap();
    let id = by_label(&list, "gateway")["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, revoked) = s.revoke_key(&s.admin, &id).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["id"], id.as_str());
    assert_eq!(revoked["label"], "gateway");
    let at = revoked["revoked_at"].as_i64().expect("revoked_at");
    // The very next request with it is refused.
    assert_eq!(s.verify_status(&gateway).await, StatusCode::UNAUTHORIZED);

    // Again: the same answer, the first revocation's time.
    let (status, again) = s.revoke_key(&s.admin, &id).await;
    assert_eq!(
        (status, again["revoked_at"].as_i64()),
        (StatusCode::OK, Some(at))
    );
    let (_, text) = s.list_keys(&s.admin).await;
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(by_label(&list, "gateway")["revoked_at"], at);
    assert_eq!(
        list["keys"].as_array().unwrap().len(),
        3,
        "kept for the audit trail"
    );

    // Ids of no key, or no id at all.
    for unknown in [
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "nonsense",
        "%ff",
    ] {
        let (status, v) = s.revoke_key(&s.admin, unknown).await;
        assert!(
            (status == StatusCode::NOT_FOUND && v["error"] == "unknown_api_key")
                || (status == StatusCode::BAD_REQUEST && v["error"] == "invalid_request"),
            "{unknown}: {status} {v}"
        );
    }

    // The last admin key may revoke itself: the authority then answers 401 to it, and only
    // `revocast-authority keys create --scope admin` on its host makes a new one.
    let admin_id = by_label(&list, "bootstrap admin")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = s.revoke_key(&s.admin, &admin_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.list_keys(&s.admin).await.0, StatusCode::UNAUTHORIZED);
    let new_admin = handle.create_api_key(Scope::Admin, None).await.unwrap();
    assert_eq!(s.list_keys(&new_admin).await.0, StatusCode::OK);
}
