//! Validation of created and updated objects, with the API server's words: field errors
//! rendered as `field.Error`, 422 `Invalid` from the API server (CSR API and the CRD schema),
//! 403 from cert-manager's webhook, and the checks themselves (names, signer names, usages,
//! the PEM CSR and its signature).

use std::collections::BTreeSet;

use hyper::Response;
use serde_json::{json, Value};

use super::resources::Res;
use super::responses::{status_response, Body};

/// The smallest `expirationSeconds` the CSR API accepts (10 minutes).
pub(super) const MIN_EXPIRATION_SECONDS: i64 = 600;

/// Key usages the CSR API and cert-manager accept, sorted as the API server lists them.
const KNOWN_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// One field error, rendered as the API server renders `field.Error`.
pub(super) struct FieldError {
    field: String,
    reason: &'static str,
    detail: String,
}

impl FieldError {
    pub(super) fn required(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueRequired",
            detail: if detail.is_empty() {
                "Required value".to_string()
            } else {
                format!("Required value: {detail}")
            },
        }
    }

    pub(super) fn invalid(field: &str, value: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueInvalid",
            detail: format!("Invalid value: {value}: {detail}"),
        }
    }

    fn not_supported(field: &str, value: &str, supported: &[&str]) -> FieldError {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            field: field.to_string(),
            reason: "FieldValueNotSupported",
            detail: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    fn duplicate(field: &str, value: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueDuplicate",
            detail: format!("Duplicate value: {value:?}"),
        }
    }

    fn text(&self) -> String {
        format!("{}: {}", self.field, self.detail)
    }
}

fn join_errors(errors: &[FieldError]) -> String {
    if errors.len() == 1 {
        errors[0].text()
    } else {
        let all: Vec<String> = errors.iter().map(FieldError::text).collect();
        format!("[{}]", all.join(", "))
    }
}

/// 422 Invalid, as the API server's validation answers.
pub(super) fn invalid(res: Res, name: &str, errors: &[FieldError]) -> Response<Body> {
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.reason, "message": e.detail, "field": e.field}))
        .collect();
    status_response(
        422,
        "Invalid",
        format!(
            "{} \"{name}\" is invalid: {}",
            res.qualified_kind(),
            join_errors(errors)
        ),
        json!({"name": name, "group": res.group(), "kind": res.kind(), "causes": causes}),
    )
}

/// 403, as cert-manager's validating webhook answers through the API server.
pub(super) fn webhook_denied(errors: &[FieldError]) -> Response<Body> {
    status_response(
        403,
        "Forbidden",
        format!(
            "admission webhook \"webhook.cert-manager.io\" denied the request: {}",
            join_errors(errors)
        ),
        Value::Null,
    )
}

/// `[]byte{0x2d, 0x2d, ...}`, as Go's `%#v` prints the value of an invalid `[]byte` field.
pub(super) fn go_bytes(b: &[u8]) -> String {
    if b.is_empty() {
        return "[]byte(nil)".into();
    }
    let parts: Vec<String> = b.iter().map(|x| format!("0x{x:x}")).collect();
    format!("[]byte{{{}}}", parts.join(", "))
}

/// Parses a PEM CSR the way Go's `x509.ParseCertificateRequest` + `CheckSignature` would
/// reject it; returns the DER.
pub(super) fn parse_csr_pem(pem_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let block = pem::parse(pem_bytes)
        .ok()
        .filter(|p| p.tag() == "CERTIFICATE REQUEST" || p.tag() == "NEW CERTIFICATE REQUEST")
        .ok_or_else(|| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    use x509_parser::prelude::FromDer as _;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(block.contents())
            .map_err(|e| format!("asn1: structure error: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "x509: signature verification failure".to_string())?;
    Ok(block.contents().to_vec())
}

pub(super) fn validate_name(name: &str) -> Option<FieldError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        None
    } else {
        Some(FieldError::invalid(
            "metadata.name",
            &format!("{name:?}"),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ))
    }
}

pub(super) fn validate_usages(
    usages: Option<&Value>,
    required: bool,
    errors: &mut Vec<FieldError>,
) {
    let Some(list) = usages.and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        if required {
            errors.push(FieldError::required("spec.usages", ""));
        }
        return;
    };
    let mut seen = BTreeSet::new();
    for (i, u) in list.iter().enumerate() {
        let u = u.as_str().unwrap_or("");
        if !KNOWN_USAGES.contains(&u) {
            errors.push(FieldError::not_supported(
                &format!("spec.usages[{i}]"),
                u,
                KNOWN_USAGES,
            ));
        } else if !seen.insert(u) {
            errors.push(FieldError::duplicate(&format!("spec.usages[{i}]"), u));
        }
    }
}

pub(super) fn valid_signer_name(s: &str) -> bool {
    let Some((domain, path)) = s.split_once('/') else {
        return false;
    };
    domain.contains('.')
        && validate_name(domain).is_none()
        && !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}
