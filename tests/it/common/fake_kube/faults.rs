//! Faults a test injects, and where the request path applies them: 403 Forbidden for a verb and
//! resource ([`FakeKube::forbid`]), 5xx or 429 for the next requests ([`FakeKube::fail_next`]),
//! the API server going down ([`FakeKube::pause`]), watch streams that end early, and etcd
//! compaction (`410 Expired`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::Response;
use serde_json::{json, Value};

use super::responses::{details, status_response, Body};
use super::routing::Ctx;
use super::server::FakeKube;
use super::state::Shared;

/// How long `pause`/`resume` wait for the server to close or reopen its listener.
const CONTROL_DEADLINE: Duration = Duration::from_secs(10);

pub(super) struct Injected {
    verb: String,
    resource: String,
    code: u16,
    remaining: usize,
}

impl FakeKube {
    /// Answers `verb` on `resource` with 403 Forbidden. `verb` is the API verb (`create`, `get`,
    /// `list`, `watch`, `update`, `patch`, `delete`) or `*`; `resource` is the plural, with
    /// `/subresource` when it is one (`certificatesigningrequests/approval`), or `*`.
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.lock()
            .forbidden
            .insert((verb.to_string(), resource.to_string()));
    }

    /// The next `times` requests for `verb` on `resource` (as in [`forbid`](Self::forbid)) get
    /// `code` (500, 503, 504 or 429) as a Status in the API server's words.
    pub fn fail_next(&self, verb: &str, resource: &str, code: u16, times: usize) {
        self.lock().injected.push(Injected {
            verb: verb.to_string(),
            resource: resource.to_string(),
            code,
            remaining: times,
        });
    }

    /// The API server goes down: the listener closes (new connections are refused) and every
    /// open connection, watches included, is reset. Returns once that is done.
    pub fn pause(&self) {
        self.shared.control.send_modify(|c| {
            c.paused = true;
            c.epoch += 1;
        });
        self.wait_control("the fake API server to stop listening", || {
            !self.shared.listening.load(Ordering::SeqCst)
                && self.shared.connections.load(Ordering::SeqCst) == 0
        });
    }

    /// The API server comes back on the same port. Returns once it listens.
    pub fn resume(&self) {
        self.shared.control.send_modify(|c| c.paused = false);
        self.wait_control("the fake API server to listen again", || {
            self.shared.listening.load(Ordering::SeqCst)
        });
    }

    /// Each watch stream opened from now on ends (cleanly) after `n` events, so the client
    /// must resume from the last resourceVersion it saw. Bookmarks count; the synthetic
    /// `ADDED` events for the objects that already exist when a watch starts do not.
    pub fn close_watches_after(&self, n: usize) {
        self.lock().watch_close_after = Some(n);
    }

    /// Ends every open watch stream now (cleanly, as a real server does at its timeout).
    pub fn close_all_watches(&self) {
        self.shared.control.send_modify(|c| c.watch_epoch += 1);
    }

    /// How often a watch that asked for bookmarks gets one (None: never).
    pub fn set_bookmark_interval(&self, interval: Option<Duration>) {
        self.lock().bookmark_interval = interval;
    }

    /// Other writes happen in the cluster and etcd compacts its history: the resourceVersion
    /// moves on, and a watch that starts (or resumes) from any resourceVersion handed out so
    /// far gets an `ERROR` event with a `410 Expired` Status, so the client must list again.
    pub fn compact(&self) {
        let mut st = self.lock();
        // Watchers are not woken: none of their objects changed.
        st.compacted_rv = st.bump();
    }

    fn wait_control(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + CONTROL_DEADLINE;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out after {CONTROL_DEADLINE:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// Authorization and injected failures for one request; `name` is what RBAC sees (for a
/// list/watch, the `metadata.name` of the field selector).
pub(super) fn authorize(
    shared: &Shared,
    ctx: &Ctx,
    verb: &str,
    group: &str,
    resource: &str,
    qualified: &str,
    name: Option<&str>,
    ns: Option<&str>,
) -> Option<Response<Body>> {
    let mut st = shared.lock();
    let forbidden = [(verb, resource), ("*", resource), (verb, "*"), ("*", "*")]
        .iter()
        .any(|(v, r)| st.forbidden.contains(&(v.to_string(), r.to_string())));
    if forbidden {
        let subject = match name {
            Some(n) => format!("{qualified} \"{n}\""),
            None => qualified.to_string(),
        };
        let scope = match ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let plural = resource.split('/').next().unwrap_or(resource);
        return Some(status_response(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}",
                ctx.user.username
            ),
            details(name, group, plural),
        ));
    }
    let hit = st.injected.iter_mut().find(|i| {
        i.remaining > 0
            && (i.verb == verb || i.verb == "*")
            && (i.resource == resource || i.resource == "*")
    })?;
    hit.remaining -= 1;
    let code = hit.code;
    drop(st);
    Some(match code {
        429 => {
            let mut r = status_response(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later"
                    .to_string(),
                json!({"retryAfterSeconds": 1}),
            );
            r.headers_mut()
                .insert("Retry-After", hyper::header::HeaderValue::from_static("1"));
            r
        }
        503 => status_response(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_string(),
            Value::Null,
        ),
        504 => status_response(
            504,
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
            Value::Null,
        ),
        code => status_response(
            code,
            "InternalError",
            "Internal error occurred: injected by the test".to_string(),
            json!({"causes": [{"message": "injected by the test"}]}),
        ),
    })
}
