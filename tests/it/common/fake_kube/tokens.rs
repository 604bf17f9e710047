//! Service-account tokens: who a bearer token authenticates as, tokens a test registers or mints
//! (ES256 JWTs with the claims a kubelet-projected token has), and the
//! `authentication.k8s.io/v1` TokenReview API that OpenBao's kubernetes auth method calls.

use std::sync::Arc;

use hyper::Response;
use serde_json::{json, Value};

use super::faults::authorize;
use super::helpers::{str_at, uid, unix_now};
use super::responses::{bad_request, json_response, status_response, Body};
use super::routing::Ctx;
use super::server::FakeKube;
use super::state::Shared;
use super::API_AUDIENCE;

pub(super) struct TokenInfo {
    namespace: String,
    service_account: String,
    uid: String,
    audiences: Vec<String>,
    revoked: bool,
}

#[derive(Debug, Clone)]
pub(super) struct User {
    pub(super) username: String,
    pub(super) uid: String,
    pub(super) groups: Vec<String>,
}

pub(super) fn service_account_groups(ns: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".to_string(),
    ]
}

pub(super) fn authenticate(shared: &Shared, token: &str) -> Option<User> {
    if token == shared.token {
        return Some(shared.client_user.clone());
    }
    let st = shared.lock();
    let t = st.tokens.get(token).filter(|t| !t.revoked)?;
    Some(User {
        username: format!(
            "system:serviceaccount:{}:{}",
            t.namespace, t.service_account
        ),
        uid: t.uid.clone(),
        groups: service_account_groups(&t.namespace),
    })
}

impl FakeKube {
    /// Registers a service-account token: TokenReviews of it say `authenticated: true` with
    /// user `system:serviceaccount:<namespace>:<service_account>` for audience
    /// [`API_AUDIENCE`], and it is accepted as a bearer token by this API server.
    pub fn register_service_account_token(&self, token: &str, namespace: &str, sa: &str) {
        let mut st = self.lock();
        let sa_uid = st.sa_uid(namespace, sa);
        st.tokens.insert(
            token.to_string(),
            TokenInfo {
                namespace: namespace.to_string(),
                service_account: sa.to_string(),
                uid: sa_uid,
                audiences: vec![API_AUDIENCE.to_string()],
                revoked: false,
            },
        );
    }

    /// Mints and registers a projected service-account token: a JWT (ES256, signed with the
    /// fake's service-account issuer key) with the claims a kubelet-projected token has (`iss`, `sub`, `aud`, `exp` in an hour,
    /// `kubernetes.io.namespace`, `kubernetes.io.serviceaccount.{name,uid}`), so OpenBao's
    /// kubernetes auth can parse it. `audiences` empty means [`API_AUDIENCE`].
    pub fn mint_service_account_token(
        &self,
        namespace: &str,
        sa: &str,
        audiences: &[&str],
    ) -> String {
        let audiences: Vec<String> = if audiences.is_empty() {
            vec![API_AUDIENCE.to_string()]
        } else {
            audiences.iter().map(|a| a.to_string()).collect()
        };
        let mut st = self.lock();
        let sa_uid = st.sa_uid(namespace, sa);
        let now = unix_now();
        let header = json!({"alg": "ES256", "kid": "fake-kube"});
        let claims = json!({
            "aud": audiences,
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "iss": API_AUDIENCE,
            "jti": uid(),
            "sub": format!("system:serviceaccount:{namespace}:{sa}"),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": sa, "uid": sa_uid},
            },
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.shared.sa_key_pkcs8,
            &rng,
        )
        .expect("the issuer key was generated for this algorithm");
        let sig = key
            .sign(&rng, signing_input.as_bytes())
            .expect("ECDSA signing does not fail");
        let token = format!("{signing_input}.{}", b64url(sig.as_ref()));
        st.tokens.insert(
            token.clone(),
            TokenInfo {
                namespace: namespace.to_string(),
                service_account: sa.to_string(),
                uid: sa_uid,
                audiences,
                revoked: false,
            },
        );
        token
    }

    /// TokenReviews of `token` say `authenticated: false` from now on (the service account or
    /// its pod was deleted).
    pub fn revoke_token(&self, token: &str) {
        if let Some(t) = self.lock().tokens.get_mut(token) {
            t.revoked = true;
        }
    }
}

pub(super) fn token_review(shared: &Arc<Shared>, ctx: &Ctx) -> Response<Body> {
    if let Some(denied) = authorize(
        shared,
        ctx,
        "create",
        "authentication.k8s.io",
        "tokenreviews",
        "tokenreviews.authentication.k8s.io",
        None,
        None,
    ) {
        return denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&ctx.body) else {
        return bad_request("the body of the request was in an unknown format".to_string());
    };
    let token = str_at(&body, "/spec/token");
    if token.is_empty() {
        return status_response(
            422,
            "Invalid",
            "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value"
                .to_string(),
            json!({"group": "authentication.k8s.io", "kind": "TokenReview",
                   "causes": [{"reason": "FieldValueRequired", "message": "Required value",
                               "field": "spec.token"}]}),
        );
    }
    let wanted: Vec<String> = body
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let st = shared.lock();
    let status = match st.tokens.get(token).filter(|t| !t.revoked) {
        None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
        Some(t) => {
            let target = if wanted.is_empty() {
                vec![API_AUDIENCE.to_string()]
            } else {
                wanted.clone()
            };
            let common: Vec<&String> = target.iter().filter(|a| t.audiences.contains(a)).collect();
            if common.is_empty() {
                json!({
                    "user": {},
                    "error": format!(
                        "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                        t.audiences, target
                    ),
                })
            } else {
                json!({
                    "authenticated": true,
                    "user": {
                        "username": format!("system:serviceaccount:{}:{}", t.namespace, t.service_account),
                        "uid": t.uid,
                        "groups": service_account_groups(&t.namespace),
                    },
                    "audiences": common,
                })
            }
        }
    };
    drop(st);
    let mut spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    if wanted.is_empty() {
        if let Some(m) = spec.as_object_mut() {
            m.remove("audiences");
        }
    }
    json_response(
        201,
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }),
    )
}

/// base64url without padding (JWT).
fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}
