//! Building answers: JSON and text responses, and `Status` objects (400, 404, 405 and the rest)
//! worded as the API server words them.

use std::convert::Infallible;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::Response;
use serde_json::{json, Map, Value};

use super::resources::Res;

pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

pub(super) fn details(name: Option<&str>, group: &str, plural: &str) -> Value {
    let mut d = Map::new();
    if let Some(n) = name {
        d.insert("name".into(), json!(n));
    }
    d.insert("group".into(), json!(group));
    d.insert("kind".into(), json!(plural));
    Value::Object(d)
}

pub(super) fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    *resp.status_mut() = hyper::StatusCode::from_u16(code).expect("valid status code");
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

pub(super) fn text_response(code: u16, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync());
    *resp.status_mut() = hyper::StatusCode::from_u16(code).expect("valid status code");
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(super) fn status_json(code: u16, reason: &str, message: String, details: Value) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        s["details"] = details;
    }
    s
}

pub(super) fn status_response(
    code: u16,
    reason: &str,
    message: String,
    details: Value,
) -> Response<Body> {
    json_response(code, &status_json(code, reason, message, details))
}

pub(super) fn bad_request(message: String) -> Response<Body> {
    status_response(400, "BadRequest", message, Value::Null)
}

pub(super) fn not_found(res: Res, name: &str) -> Response<Body> {
    status_response(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", res.qualified()),
        details(Some(name), res.group(), res.plural()),
    )
}

pub(super) fn not_found_path() -> Response<Body> {
    status_response(
        404,
        "NotFound",
        "the server could not find the requested resource".to_string(),
        json!({}),
    )
}

pub(super) fn method_not_allowed() -> Response<Body> {
    status_response(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource".to_string(),
        json!({}),
    )
}
