//! The fake's memory: the stored objects, the event history watches replay from, the
//! resourceVersion counter, the request log, and every knob a test has set. One mutex guards
//! it ([`Shared::lock`]); [`Shared::commit`] releases it and wakes the watchers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::ca::Ca;
use super::faults::Injected;
use super::helpers::{str_at, uid};
use super::inspect::RecordedRequest;
use super::resources::{ObjKey, Res};
use super::signer::Behaviour;
use super::tokens::{TokenInfo, User};

/// The first resourceVersion handed out: any number works, a large one catches clients that
/// treat resourceVersions as small or dense.
pub(super) const FIRST_RESOURCE_VERSION: u64 = 7_000;

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// The latest resourceVersion; every change is sent here to wake watchers (and the task
    /// runner, for [`FakeKube::apply_behaviour`]).
    pub(super) rv_tx: watch::Sender<u64>,
    pub(super) control: watch::Sender<Control>,
    pub(super) listening: AtomicBool,
    pub(super) connections: AtomicUsize,
    pub(super) open_watches: AtomicUsize,
    pub(super) token: String,
    pub(super) signing: Ca,
    pub(super) addr: SocketAddr,
    pub(super) sa_key_pkcs8: Vec<u8>,
    pub(super) client_user: User,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a test assertion in a closure) must not hide the
        // state from the failure message.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases the lock and wakes every watcher.
    pub(super) fn commit(&self, st: MutexGuard<'_, State>) {
        let rv = st.rv;
        drop(st);
        self.rv_tx.send_replace(rv);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Control {
    pub(super) paused: bool,
    pub(super) shutdown: bool,
    /// Bumped by `pause`: connections from an older epoch are reset.
    pub(super) epoch: u64,
    /// Bumped by `close_all_watches`.
    pub(super) watch_epoch: u64,
}

pub(super) struct State {
    pub(super) rv: u64,
    pub(super) compacted_rv: u64,
    pub(super) objects: BTreeMap<ObjKey, Value>,
    pub(super) history: Vec<HistoryEvent>,
    pub(super) deleted: Vec<(Res, Value)>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) forbidden: BTreeSet<(String, String)>,
    pub(super) injected: Vec<Injected>,
    pub(super) signer_behaviours: HashMap<String, Behaviour>,
    pub(super) issuer_behaviours: HashMap<String, Behaviour>,
    pub(super) default_behaviour: Behaviour,
    pub(super) pending_tasks: Vec<(ObjKey, String, Behaviour)>,
    pub(super) max_signing_duration: Option<Duration>,
    pub(super) watch_close_after: Option<usize>,
    pub(super) bookmark_interval: Option<Duration>,
    pub(super) expired_watches: usize,
    pub(super) tokens: HashMap<String, TokenInfo>,
    sa_uids: HashMap<(String, String), String>,
    pub(super) namespaces: BTreeSet<String>,
}

impl State {
    pub(super) fn new() -> State {
        State {
            rv: FIRST_RESOURCE_VERSION,
            compacted_rv: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            deleted: Vec::new(),
            requests: Vec::new(),
            forbidden: BTreeSet::new(),
            injected: Vec::new(),
            signer_behaviours: HashMap::new(),
            issuer_behaviours: HashMap::new(),
            default_behaviour: Behaviour::sign(),
            pending_tasks: Vec::new(),
            max_signing_duration: None,
            watch_close_after: None,
            bookmark_interval: Some(Duration::from_secs(1)),
            expired_watches: 0,
            tokens: HashMap::new(),
            sa_uids: HashMap::new(),
            namespaces: ["default", "kube-system", "kube-public"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    pub(super) fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub(super) fn sa_uid(&mut self, ns: &str, sa: &str) -> String {
        self.sa_uids
            .entry((ns.to_string(), sa.to_string()))
            .or_insert_with(uid)
            .clone()
    }

    /// Stores `obj` under `key` with a new resourceVersion and records the event.
    pub(super) fn put(&mut self, key: &ObjKey, mut obj: Value, event: &'static str) -> Value {
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.history.push(HistoryEvent {
            rv,
            key: key.clone(),
            event,
            object: obj.clone(),
        });
        self.objects.insert(key.clone(), obj.clone());
        obj
    }

    pub(super) fn behaviour_for(&self, res: Res, obj: &Value) -> Behaviour {
        let found = match res {
            Res::Csr => self.signer_behaviours.get(str_at(obj, "/spec/signerName")),
            Res::CertificateRequest => self
                .issuer_behaviours
                .get(str_at(obj, "/spec/issuerRef/name")),
        };
        found
            .cloned()
            .unwrap_or_else(|| self.default_behaviour.clone())
    }
}

pub(super) struct HistoryEvent {
    pub(super) rv: u64,
    pub(super) key: ObjKey,
    pub(super) event: &'static str,
    pub(super) object: Value,
}
