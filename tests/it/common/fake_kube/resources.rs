//! The resources this fake serves and how they differ: [`Res`] names each one (its group,
//! plural, kind, scope, subresources and field selectors), [`ObjKey`] keys a stored object,
//! and the discovery documents (`/version`, `/apis`, `/apis/<group>/v1`) announce them.

use serde_json::{json, Value};

use super::{CERTIFICATE_REQUEST, CSR};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ObjKey {
    pub(super) res: Res,
    /// Empty for cluster-scoped objects.
    pub(super) ns: String,
    pub(super) name: String,
}

impl ObjKey {
    pub(super) fn new(res: Res, ns: &str, name: &str) -> ObjKey {
        ObjKey {
            res,
            ns: ns.to_string(),
            name: name.to_string(),
        }
    }
}

/// The resources this fake stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Res {
    Csr,
    CertificateRequest,
}

impl Res {
    pub(super) fn from_name(name: &str) -> Option<Res> {
        match name.to_ascii_lowercase().as_str() {
            "certificatesigningrequest" | "certificatesigningrequests" | "csr" => Some(Res::Csr),
            "certificaterequest" | "certificaterequests" | "cr" => Some(Res::CertificateRequest),
            _ => None,
        }
    }

    pub(super) fn group(self) -> &'static str {
        match self {
            Res::Csr => "certificates.k8s.io",
            Res::CertificateRequest => "cert-manager.io",
        }
    }

    pub(super) fn api_version(self) -> &'static str {
        match self {
            Res::Csr => "certificates.k8s.io/v1",
            Res::CertificateRequest => "cert-manager.io/v1",
        }
    }

    pub(super) fn plural(self) -> &'static str {
        match self {
            Res::Csr => "certificatesigningrequests",
            Res::CertificateRequest => "certificaterequests",
        }
    }

    pub(super) fn kind(self) -> &'static str {
        match self {
            Res::Csr => CSR,
            Res::CertificateRequest => CERTIFICATE_REQUEST,
        }
    }

    /// `certificatesigningrequests.certificates.k8s.io`, as messages name it.
    pub(super) fn qualified(self) -> String {
        format!("{}.{}", self.plural(), self.group())
    }

    /// `CertificateSigningRequest.certificates.k8s.io`, as "is invalid" messages name it.
    pub(super) fn qualified_kind(self) -> String {
        format!("{}.{}", self.kind(), self.group())
    }

    pub(super) fn subresources(self) -> &'static [&'static str] {
        match self {
            Res::Csr => &["approval", "status"],
            Res::CertificateRequest => &["status"],
        }
    }

    /// Built-in types' list items carry no kind/apiVersion; custom resources' do.
    pub(super) fn list_items_typed(self) -> bool {
        self == Res::CertificateRequest
    }

    pub(super) fn field_labels(self) -> &'static [&'static str] {
        match self {
            Res::Csr => &["metadata.name", "spec.signerName"],
            Res::CertificateRequest => &["metadata.name", "metadata.namespace"],
        }
    }
}

pub(super) const GROUPS: &[&str] = &[
    "authentication.k8s.io",
    "certificates.k8s.io",
    "cert-manager.io",
];

pub(super) fn api_group(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv], "preferredVersion": gv})
}

pub(super) fn api_resource_list(group: &str) -> Value {
    let all = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    let sub = ["get", "patch", "update"];
    let resources = match group {
        "authentication.k8s.io" => json!([
            {"name": "selfsubjectreviews", "singularName": "selfsubjectreview",
             "namespaced": false, "kind": "SelfSubjectReview", "verbs": ["create"]},
            {"name": "tokenreviews", "singularName": "tokenreview", "namespaced": false,
             "kind": "TokenReview", "verbs": ["create"]},
        ]),
        "certificates.k8s.io" => json!([
            {"name": "certificatesigningrequests", "singularName": "certificatesigningrequest",
             "namespaced": false, "kind": CSR, "verbs": all, "shortNames": ["csr"]},
            {"name": "certificatesigningrequests/approval", "singularName": "",
             "namespaced": false, "kind": CSR, "verbs": sub},
            {"name": "certificatesigningrequests/status", "singularName": "",
             "namespaced": false, "kind": CSR, "verbs": sub},
        ]),
        _ => json!([
            {"name": "certificaterequests", "singularName": "certificaterequest",
             "namespaced": true, "kind": CERTIFICATE_REQUEST, "verbs": all,
             "shortNames": ["cr", "crs"], "categories": ["cert-manager"]},
            {"name": "certificaterequests/status", "singularName": "", "namespaced": true,
             "kind": CERTIFICATE_REQUEST, "verbs": sub},
        ]),
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/v1"),
        "resources": resources,
    })
}

pub(super) fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
