//! From an HTTP request to an answer: authenticate the bearer token, record the request, route
//! the path (discovery, TokenReview, or one of the two stored resources), and turn a resource
//! request into an API verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`)
//! after authorization and injected faults.

use std::sync::Arc;

use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};

use super::faults::authorize;
use super::inspect::RecordedRequest;
use super::list_watch::{list, start_watch};
use super::resources::{api_group, api_resource_list, version_info, ObjKey, Res, GROUPS};
use super::responses::{
    bad_request, json_response, method_not_allowed, not_found, not_found_path, status_response,
    text_response, Body,
};
use super::selectors::Selector;
use super::state::Shared;
use super::tokens::{authenticate, token_review, User};
use super::writes::{create, delete, update};

pub(super) struct Ctx {
    method: String,
    path: String,
    params: Vec<(String, String)>,
    pub(super) body: Bytes,
    pub(super) content_type: String,
    pub(super) user: User,
}

impl Ctx {
    pub(super) fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }
}

pub(super) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body_json = serde_json::from_slice::<Value>(&body).ok();

    let user = bearer.and_then(|t| authenticate(&shared, &t));
    let resp = match &user {
        None => status_response(401, "Unauthorized", "Unauthorized".to_string(), Value::Null),
        Some(user) => {
            let ctx = Ctx {
                params: url::form_urlencoded::parse(query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                method: method.clone(),
                path: path.clone(),
                body,
                content_type,
                user: user.clone(),
            };
            route(&shared, &ctx)
        }
    };
    shared.lock().requests.push(RecordedRequest {
        method,
        path,
        query,
        body: body_json,
        user: user.map(|u| u.username),
        status: resp.status().as_u16(),
    });
    resp
}

fn route(shared: &Arc<Shared>, ctx: &Ctx) -> Response<Body> {
    let segs: Vec<&str> = ctx.path.split('/').filter(|s| !s.is_empty()).collect();
    let get = ctx.method == "GET";
    match segs.as_slice() {
        ["version"] if get => json_response(200, &version_info()),
        ["healthz" | "livez" | "readyz"] if get => text_response(200, "ok"),
        ["api"] if get => json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}
                ],
            }),
        ),
        ["api", "v1"] if get => json_response(
            200,
            &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": []}),
        ),
        ["apis"] if get => json_response(
            200,
            &json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": GROUPS.iter().map(|g| api_group(g)).collect::<Vec<_>>(),
            }),
        ),
        ["apis", group] if get && GROUPS.contains(group) => json_response(200, &{
            let mut g = api_group(group);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        }),
        ["apis", group, "v1"] if get && GROUPS.contains(group) => {
            json_response(200, &api_resource_list(group))
        }
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => {
            if ctx.method != "POST" {
                return method_not_allowed();
            }
            token_review(shared, ctx)
        }
        ["apis", "certificates.k8s.io", "v1", "certificatesigningrequests", rest @ ..] => {
            resource(shared, ctx, Res::Csr, None, rest)
        }
        ["apis", "cert-manager.io", "v1", "namespaces", ns, "certificaterequests", rest @ ..] => {
            resource(shared, ctx, Res::CertificateRequest, Some(ns), rest)
        }
        ["apis", "cert-manager.io", "v1", "certificaterequests"] => {
            if !get {
                return method_not_allowed();
            }
            resource(shared, ctx, Res::CertificateRequest, None, &[])
        }
        _ => not_found_path(),
    }
}

fn resource(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    res: Res,
    ns: Option<&str>,
    rest: &[&str],
) -> Response<Body> {
    let (name, sub) = match rest {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] if res.subresources().contains(sub) => (Some(*name), Some(*sub)),
        _ => return not_found_path(),
    };
    let verb = match (ctx.method.as_str(), name) {
        ("GET", None) if ctx.flag("watch") => "watch",
        ("GET", None) => "list",
        ("POST", None) => "create",
        ("DELETE", None) => "deletecollection",
        ("GET", Some(_)) => "get",
        ("PUT", Some(_)) => "update",
        ("PATCH", Some(_)) => "patch",
        ("DELETE", Some(_)) if sub.is_none() => "delete",
        _ => return method_not_allowed(),
    };
    let resource = match sub {
        Some(s) => format!("{}/{s}", res.plural()),
        None => res.plural().to_string(),
    };
    let field_name = if matches!(verb, "list" | "watch") {
        ctx.param("fieldSelector").and_then(|fs| {
            fs.split(',').find_map(|r| {
                r.strip_prefix("metadata.name=")
                    .map(|n| n.trim_start_matches('='))
            })
        })
    } else {
        None
    };
    if let Some(denied) = authorize(
        shared,
        ctx,
        verb,
        res.group(),
        &resource,
        &res.qualified(),
        name.or(field_name),
        ns,
    ) {
        return denied;
    }
    match verb {
        "list" | "watch" => {
            let selector = match Selector::parse(res, ns, ctx) {
                Ok(s) => s,
                Err(msg) => return bad_request(msg),
            };
            if verb == "watch" {
                start_watch(shared, ctx, res, selector)
            } else {
                list(shared, res, &selector)
            }
        }
        "create" => create(shared, ctx, res, ns.unwrap_or("")),
        "get" => {
            let key = ObjKey::new(res, ns.unwrap_or(""), name.expect("get has a name"));
            match shared.lock().objects.get(&key) {
                Some(obj) => json_response(200, obj),
                None => not_found(res, &key.name),
            }
        }
        "update" | "patch" => update(
            shared,
            ctx,
            res,
            ObjKey::new(res, ns.unwrap_or(""), name.expect("has a name")),
            sub,
            verb == "patch",
        ),
        "delete" => delete(
            shared,
            ctx,
            res,
            ObjKey::new(res, ns.unwrap_or(""), name.expect("has a name")),
        ),
        _ => method_not_allowed(),
    }
}
