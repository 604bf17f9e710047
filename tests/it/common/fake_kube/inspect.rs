//! What a test reads back from the fake to decide whether pillion behaved: the request log
//! ([`RecordedRequest`]), the stored and deleted objects, open and expired watches, and
//! [`FakeKube::describe`] for failure messages; plus seeding namespaces.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::helpers::str_at;
use super::resources::{ObjKey, Res};
use super::server::FakeKube;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (percent-encoded, without `?`).
    pub query: String,
    /// The body when it was JSON.
    pub body: Option<Value>,
    /// Who the bearer token authenticated as (None: rejected with 401).
    pub user: Option<String>,
    /// The HTTP status of the answer (200 for a watch, whose errors travel as events).
    pub status: u16,
}

impl RecordedRequest {
    /// A decoded query parameter.
    pub fn param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    pub fn is_watch(&self) -> bool {
        self.method == "GET" && matches!(self.param("watch").as_deref(), Some("true" | "1"))
    }

    /// A GET of a collection that is not a watch.
    pub fn is_list(&self, plural: &str) -> bool {
        self.method == "GET" && !self.is_watch() && self.path.ends_with(&format!("/{plural}"))
    }

    pub fn line(&self) -> String {
        let q = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        let body = self
            .body
            .as_ref()
            .map(|b| format!(" {b}"))
            .unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        format!(
            "{} {}{} -> {} ({}){}",
            self.method,
            self.path,
            q,
            self.status,
            self.user.as_deref().unwrap_or("unauthenticated"),
            body
        )
    }
}

impl FakeKube {
    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Watches answered with `410 Expired` so far.
    pub fn expired_watches(&self) -> usize {
        self.lock().expired_watches
    }

    /// Every request received so far, in order of arrival of the answer.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The current objects of `kind` ([`CSR`], [`CERTIFICATE_REQUEST`], or their plurals), as the
    /// API serves them, sorted by namespace and name.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        let res = Res::from_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.res == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// One object (`namespace` None for a CSR).
    pub fn object(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = Res::from_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        self.lock()
            .objects
            .get(&ObjKey::new(res, namespace.unwrap_or(""), name))
            .cloned()
    }

    /// Whether an object of `kind` called `name` (in any namespace) was deleted through the API.
    pub fn was_deleted(&self, kind: &str, name: &str) -> bool {
        self.deleted(kind)
            .iter()
            .any(|o| str_at(o, "/metadata/name") == name)
    }

    /// The last state of every deleted object of `kind`, in order of deletion.
    pub fn deleted(&self, kind: &str) -> Vec<Value> {
        let res = Res::from_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        self.lock()
            .deleted
            .iter()
            .filter(|(r, _)| *r == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Makes namespace `ns` exist (creating a CertificateRequest in a missing namespace is a 404).
    pub fn add_namespace(&self, ns: &str) {
        self.lock().namespaces.insert(ns.to_string());
    }

    /// The request log and the objects, for failure messages.
    pub fn describe(&self) -> String {
        let st = self.lock();
        let mut s = format!(
            "fake API server {} (rv {}, compacted at {}, paused: {})\n--- requests ---\n",
            self.server_url(),
            st.rv,
            st.compacted_rv,
            self.shared.control.borrow().paused
        );
        for r in &st.requests {
            let _ = writeln!(s, "{}", r.line());
        }
        let _ = writeln!(s, "--- objects ---");
        for (k, v) in &st.objects {
            let _ = writeln!(
                s,
                "{} {}/{} rv={} status={}",
                k.res.kind(),
                k.ns,
                k.name,
                str_at(v, "/metadata/resourceVersion"),
                v.get("status").cloned().unwrap_or(Value::Null)
            );
        }
        for (res, v) in &st.deleted {
            let _ = writeln!(s, "deleted {} {}", res.kind(), str_at(v, "/metadata/name"));
        }
        s
    }
}
