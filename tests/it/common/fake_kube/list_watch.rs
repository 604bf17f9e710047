//! LIST and WATCH: a list answers with the current objects and resourceVersion; a watch is a
//! chunked stream of newline-delimited JSON events (initial `ADDED`s, then the history from a
//! resourceVersion, bookmarks, `410 Expired` for a compacted one) that ends at its timeout or
//! when a test closes it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Frame};
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::resources::Res;
use super::responses::{bad_request, json_response, status_json, Body};
use super::routing::Ctx;
use super::selectors::Selector;
use super::state::Shared;

fn list_item(res: Res, obj: &Value) -> Value {
    let mut item = obj.clone();
    if !res.list_items_typed() {
        if let Some(m) = item.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
    }
    item
}

pub(super) fn list(shared: &Shared, res: Res, selector: &Selector) -> Response<Body> {
    let st = shared.lock();
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|(k, v)| selector.matches(k, v))
        .map(|(_, v)| list_item(res, v))
        .collect();
    json_response(
        200,
        &json!({
            "kind": format!("{}List", res.kind()),
            "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        }),
    )
}

struct WatchBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub(super) fn start_watch(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    res: Res,
    selector: Selector,
) -> Response<Body> {
    let rv_param = ctx.param("resourceVersion").unwrap_or("");
    let send_initial = match ctx.param("sendInitialEvents") {
        Some(v) => v == "true",
        None => rv_param.is_empty() || rv_param == "0",
    };
    let bookmarks = ctx.flag("allowWatchBookmarks");
    let timeout = ctx
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);

    let st = shared.lock();
    let mut start = WatchStart {
        initial: Vec::new(),
        initial_end_bookmark: ctx.param("sendInitialEvents") == Some("true"),
        from_rv: st.rv,
        expired: None,
    };
    if send_initial {
        start.initial = st
            .objects
            .iter()
            .filter(|(k, v)| selector.matches(k, v))
            .map(|(_, v)| v.clone())
            .collect();
    } else if !(rv_param.is_empty() || rv_param == "0") {
        let Ok(rv) = rv_param.parse::<u64>() else {
            return bad_request(format!(
                "resourceVersion: Invalid value: \"{rv_param}\": strconv.ParseUint: parsing \"{rv_param}\": invalid syntax"
            ));
        };
        if rv < st.compacted_rv {
            start.expired = Some(format!(
                "too old resource version: {rv} ({})",
                st.compacted_rv
            ));
        }
        start.from_rv = rv;
    }
    let limits = WatchLimits {
        close_after: st.watch_close_after,
        deadline: timeout.map(|d| tokio::time::Instant::now() + d),
        bookmark_interval: if bookmarks {
            st.bookmark_interval
        } else {
            None
        },
    };
    drop(st);

    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run_watch(shared.clone(), res, selector, start, limits, tx));
    let mut resp = Response::new(WatchBody(rx).boxed_unsync());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

struct WatchStart {
    initial: Vec<Value>,
    initial_end_bookmark: bool,
    from_rv: u64,
    expired: Option<String>,
}

struct WatchLimits {
    close_after: Option<usize>,
    deadline: Option<tokio::time::Instant>,
    bookmark_interval: Option<Duration>,
}

/// Counts an open watch for [`FakeKube::open_watches`] while alive.
struct WatchGuard<'a>(&'a AtomicUsize);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

async fn run_watch(
    shared: Arc<Shared>,
    res: Res,
    selector: Selector,
    start: WatchStart,
    limits: WatchLimits,
    tx: mpsc::Sender<Bytes>,
) {
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let _guard = WatchGuard(&shared.open_watches);
    let mut ctl = shared.control.subscribe();
    let watch_epoch = ctl.borrow_and_update().watch_epoch;
    let mut rv_rx = shared.rv_tx.subscribe();

    if let Some(message) = start.expired {
        shared.lock().expired_watches += 1;
        let status = status_json(410, "Expired", message, Value::Null);
        let _ = tx.send(event_line("ERROR", &status)).await;
        return;
    }
    for obj in &start.initial {
        if tx.send(event_line("ADDED", obj)).await.is_err() {
            return;
        }
    }
    let bookmark = |rv: u64, end_of_initial: bool| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if end_of_initial {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": res.kind(), "apiVersion": res.api_version(), "metadata": meta})
    };
    if start.initial_end_bookmark
        && tx
            .send(event_line("BOOKMARK", &bookmark(start.from_rv, true)))
            .await
            .is_err()
    {
        return;
    }

    let mut cursor = start.from_rv;
    let mut sent = 0usize;
    let mut next_bookmark = limits
        .bookmark_interval
        .map(|i| tokio::time::Instant::now() + i);
    let far = || tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        rv_rx.borrow_and_update();
        let events: Vec<Bytes> = {
            let st = shared.lock();
            let from = st.history.partition_point(|e| e.rv <= cursor);
            let events = st.history[from..]
                .iter()
                .filter(|e| selector.matches(&e.key, &e.object))
                .map(|e| event_line(e.event, &e.object))
                .collect();
            cursor = cursor.max(st.rv);
            events
        };
        for line in events {
            if tx.send(line).await.is_err() {
                return;
            }
            sent += 1;
            if limits.close_after.is_some_and(|n| sent >= n) {
                return;
            }
        }
        tokio::select! {
            changed = rv_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(limits.deadline.unwrap_or_else(far)) => return,
            _ = tokio::time::sleep_until(next_bookmark.unwrap_or_else(far)) => {
                if tx.send(event_line("BOOKMARK", &bookmark(cursor, false))).await.is_err() {
                    return;
                }
                next_bookmark = limits.bookmark_interval.map(|i| tokio::time::Instant::now() + i);
                sent += 1;
                if limits.close_after.is_some_and(|n| sent >= n) {
                    return;
                }
            }
            _ = async {
                // The Ref it returns is not Send: drop it inside.
                let _ = ctl.wait_for(|c| c.shutdown || c.paused || c.watch_epoch != watch_epoch).await;
            } => return,
            _ = tx.closed() => return,
        }
    }
}
