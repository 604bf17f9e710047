//! CREATE, UPDATE/PATCH and DELETE of CSRs and CertificateRequests: defaulting and
//! validation on create (`Res::Csr` and `Res::CertificateRequest` arms), optimistic
//! concurrency on `resourceVersion`, the `status` and `approval` subresources, merge patches,
//! delete preconditions, and handing a new object to the approver/signer.

use std::sync::Arc;

use hyper::Response;
use serde_json::{json, Value};

use super::helpers::{
    b64_decode, parse_go_duration, random_suffix, rfc3339, str_at, uid, unix_now,
};
use super::resources::{ObjKey, Res};
use super::responses::{bad_request, details, json_response, not_found, status_response, Body};
use super::routing::Ctx;
use super::signer::{has_condition, run_behaviour, sign_task, Behaviour};
use super::state::{HistoryEvent, Shared};
use super::validation::{
    go_bytes, invalid, parse_csr_pem, valid_signer_name, validate_name, validate_usages,
    webhook_denied, FieldError, MIN_EXPIRATION_SECONDS,
};

pub(super) fn create(shared: &Arc<Shared>, ctx: &Ctx, res: Res, ns: &str) -> Response<Body> {
    let mut obj: Value = match serde_json::from_slice(&ctx.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return bad_request(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
                    .to_string(),
            )
        }
    };
    if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
        if kind != res.kind() {
            return bad_request(format!(
                "{kind} in version \"v1\" cannot be handled as a {}: the kind in the body does not match the URL",
                res.kind()
            ));
        }
    }
    if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str) {
        if api_version != res.api_version() {
            return bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                res.api_version()
            ));
        }
    }
    obj["kind"] = json!(res.kind());
    obj["apiVersion"] = json!(res.api_version());
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if res == Res::CertificateRequest {
        let body_ns = str_at(&obj, "/metadata/namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .to_string(),
            );
        }
        if !shared.lock().namespaces.contains(ns) {
            return status_response(
                404,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
                json!({"name": ns, "kind": "namespaces"}),
            );
        }
        obj["metadata"]["namespace"] = json!(ns);
    }

    let mut name = str_at(&obj, "/metadata/name").to_string();
    let generate = str_at(&obj, "/metadata/generateName").to_string();
    if name.is_empty() && !generate.is_empty() {
        name = format!("{generate}{}", random_suffix());
        obj["metadata"]["name"] = json!(name);
    }
    if name.is_empty() {
        return invalid(
            res,
            "",
            &[FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        );
    }
    if let Some(e) = validate_name(&name) {
        return invalid(res, &name, &[e]);
    }

    let user = &ctx.user;
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match res {
        Res::Csr => {
            let mut errors = Vec::new();
            let request = spec.get("request").and_then(Value::as_str).unwrap_or("");
            let Some(request_pem) = b64_decode(request) else {
                return bad_request(
                    "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: illegal base64 data at input byte 0"
                        .to_string(),
                );
            };
            if let Err(e) = parse_csr_pem(&request_pem) {
                errors.push(FieldError::invalid(
                    "spec.request",
                    &go_bytes(&request_pem),
                    &e,
                ));
            }
            let signer = spec.get("signerName").and_then(Value::as_str).unwrap_or("");
            if signer.is_empty() {
                errors.push(FieldError::required("spec.signerName", ""));
            } else if !valid_signer_name(signer) {
                errors.push(FieldError::invalid(
                    "spec.signerName",
                    &format!("{signer:?}"),
                    "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                ));
            }
            validate_usages(spec.get("usages"), true, &mut errors);
            if let Some(exp) = spec.get("expirationSeconds").and_then(Value::as_i64) {
                if exp < MIN_EXPIRATION_SECONDS {
                    errors.push(FieldError::invalid(
                        "spec.expirationSeconds",
                        &exp.to_string(),
                        "may not specify a duration less than 600 seconds (10 minutes)",
                    ));
                }
            }
            if !errors.is_empty() {
                return invalid(res, &name, &errors);
            }
            // The API server records who asked; the client cannot choose.
            obj["spec"]["username"] = json!(user.username);
            obj["spec"]["uid"] = json!(user.uid);
            obj["spec"]["groups"] = json!(user.groups);
            // Status is reset on create.
            obj["status"] = json!({});
        }
        Res::CertificateRequest => {
            // The CRD's OpenAPI schema: required fields, checked by the API server.
            let mut errors = Vec::new();
            if !spec.get("request").is_some_and(Value::is_string) {
                errors.push(FieldError::required("spec.request", ""));
            }
            if !spec.get("issuerRef").is_some_and(Value::is_object) {
                errors.push(FieldError::required("spec.issuerRef", ""));
            } else if !spec
                .pointer("/issuerRef/name")
                .is_some_and(Value::is_string)
            {
                errors.push(FieldError::required("spec.issuerRef.name", ""));
            }
            if !errors.is_empty() {
                return invalid(res, &name, &errors);
            }
            // cert-manager's webhook: semantic checks.
            let request = str_at(&spec, "/request");
            match b64_decode(request) {
                None => errors.push(FieldError::invalid(
                    "spec.request",
                    "\"<invalid base64>\"",
                    "illegal base64 data",
                )),
                Some(pem_bytes) => {
                    if let Err(e) = parse_csr_pem(&pem_bytes) {
                        errors.push(FieldError::invalid(
                            "spec.request",
                            &go_bytes(&pem_bytes),
                            &format!("failed to decode csr: {e}"),
                        ));
                    }
                }
            }
            validate_usages(spec.get("usages"), false, &mut errors);
            if let Some(d) = spec.get("duration").and_then(Value::as_str) {
                if parse_go_duration(d).is_none() {
                    errors.push(FieldError::invalid(
                        "spec.duration",
                        &format!("{d:?}"),
                        "time: invalid duration",
                    ));
                }
            }
            if !errors.is_empty() {
                return webhook_denied(&errors);
            }
            // cert-manager's mutating webhook records who asked.
            obj["spec"]["username"] = json!(user.username);
            obj["spec"]["uid"] = json!(user.uid);
            obj["spec"]["groups"] = json!(user.groups);
            // Status is a subresource: ignored on create.
            obj["status"] = json!({});
            obj["metadata"]["generation"] = json!(1);
        }
    }

    let key = ObjKey::new(res, if res == Res::Csr { "" } else { ns }, &name);
    let mut st = shared.lock();
    if st.objects.contains_key(&key) {
        return status_response(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
            details(Some(&name), res.group(), res.plural()),
        );
    }
    let object_uid = uid();
    obj["metadata"]["uid"] = json!(object_uid);
    obj["metadata"]["creationTimestamp"] = json!(rfc3339(unix_now()));
    if ctx.param("dryRun") == Some("All") {
        obj["metadata"]["resourceVersion"] = json!("");
        return json_response(201, &obj);
    }
    let behaviour = st.behaviour_for(res, &obj);
    let stored = st.put(&key, obj, "ADDED");
    shared.commit(st);
    tokio::spawn(run_behaviour(shared.clone(), key, object_uid, behaviour));
    json_response(201, &stored)
}

pub(super) fn update(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    res: Res,
    key: ObjKey,
    sub: Option<&str>,
    patch: bool,
) -> Response<Body> {
    let Ok(body) = serde_json::from_slice::<Value>(&ctx.body) else {
        return bad_request("the body of the request was in an unknown format".to_string());
    };
    let mut st = shared.lock();
    let Some(old) = st.objects.get(&key).cloned() else {
        return not_found(res, &key.name);
    };
    let mut new = if patch {
        let ct = ctx.content_type.split(';').next().unwrap_or("").trim();
        if !matches!(
            ct,
            "application/merge-patch+json" | "application/strategic-merge-patch+json"
        ) {
            return status_response(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (this fake does not take {ct})"),
                Value::Null,
            );
        }
        let mut merged = old.clone();
        merge_patch(&mut merged, &body);
        merged
    } else {
        body
    };
    if str_at(&new, "/metadata/name") != key.name {
        return bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            str_at(&new, "/metadata/name"),
            key.name
        ));
    }
    let rv = str_at(&new, "/metadata/resourceVersion").to_string();
    if rv.is_empty() && !patch {
        return invalid(
            res,
            &key.name,
            &[FieldError::invalid(
                "metadata.resourceVersion",
                "0x0",
                "must be specified for an update",
            )],
        );
    }
    if !rv.is_empty() && rv != str_at(&old, "/metadata/resourceVersion") {
        return status_response(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified(),
                key.name
            ),
            details(Some(&key.name), res.group(), res.plural()),
        );
    }
    let stored = match sub {
        None => {
            // The main resource cannot change status (a subresource) nor, for a CSR, spec.
            let mut merged = old.clone();
            merged["metadata"]["labels"] = new["metadata"]["labels"].take();
            merged["metadata"]["annotations"] = new["metadata"]["annotations"].take();
            if res == Res::CertificateRequest {
                merged["spec"] = new["spec"].take();
            }
            merged
        }
        Some("status") => {
            let mut merged = old.clone();
            merged["status"] = new["status"].take();
            merged
        }
        Some(_) => {
            // approval: only the conditions.
            let mut merged = old.clone();
            merged["status"]["conditions"] = new["status"]["conditions"].take();
            merged
        }
    };
    let stored = strip_nulls(stored);
    if stored == old {
        return json_response(200, &old);
    }
    let behaviour = st.behaviour_for(res, &stored);
    let approved_now = res == Res::Csr
        && has_condition(&stored, "Approved")
        && !has_condition(&old, "Approved")
        && !has_condition(&stored, "Denied");
    let object_uid = str_at(&stored, "/metadata/uid").to_string();
    let stored = st.put(&key, stored, "MODIFIED");
    shared.commit(st);
    // A signer signs what someone else approved.
    if approved_now && behaviour == Behaviour::NeverApprove {
        tokio::spawn(sign_task(shared.clone(), key, object_uid));
    }
    json_response(200, &stored)
}

pub(super) fn delete(shared: &Arc<Shared>, ctx: &Ctx, res: Res, key: ObjKey) -> Response<Body> {
    let options = serde_json::from_slice::<Value>(&ctx.body).unwrap_or(Value::Null);
    let mut st = shared.lock();
    let Some(old) = st.objects.get(&key).cloned() else {
        return not_found(res, &key.name);
    };
    let old_uid = str_at(&old, "/metadata/uid").to_string();
    if let Some(want) = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
    {
        if want != old_uid {
            return status_response(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {want}, UID in object meta: {old_uid}",
                    res.qualified(),
                    key.name
                ),
                details(Some(&key.name), res.group(), res.plural()),
            );
        }
    }
    if let Some(want) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let have = str_at(&old, "/metadata/resourceVersion");
        if want != have {
            return status_response(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}",
                    res.qualified(),
                    key.name
                ),
                details(Some(&key.name), res.group(), res.plural()),
            );
        }
    }
    if ctx.param("dryRun") == Some("All") {
        return json_response(200, &old);
    }
    st.objects.remove(&key);
    let rv = st.bump();
    let mut last = old;
    last["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.history.push(HistoryEvent {
        rv,
        key: key.clone(),
        event: "DELETED",
        object: last.clone(),
    });
    st.deleted.push((res, last.clone()));
    shared.commit(st);
    match res {
        // The generic registry answers a delete with a Status unless the store returns the
        // deleted object, which custom resources' stores do.
        Res::Csr => json_response(
            200,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": key.name,
                    "group": res.group(),
                    "kind": res.plural(),
                    "uid": old_uid,
                },
            }),
        ),
        Res::CertificateRequest => json_response(200, &last),
    }
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}
