//! Logs and metrics.
//!
//! Logs are human-readable by default and one JSON object per line with
//! `--log-format json`; either way they carry structured fields (credential
//! name, serial, not-after) and never a key, token or secret value. Metrics are
//! Prometheus text from the official `prometheus-client` crate, served on
//! `GET /metrics` by the admin endpoint.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Sets up logging to stderr. `level` is a level or an `EnvFilter`
/// directive; without it `RUST_LOG` is used, else `info`.
pub fn init_logging(level: Option<&str>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| {
            eprintln!("warning: --log-level {l:?} is not a level or filter; using info");
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Name {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameResult {
    name: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetResult {
    target: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
    commit: &'static str,
    target: &'static str,
}

/// Every metric pillion exports.
pub struct Metrics {
    registry: Registry,
    not_after: Family<Name, Gauge>,
    next_renewal: Family<Name, Gauge>,
    renewals: Family<NameResult, Counter>,
    obtain_seconds: Family<Name, Histogram>,
    reloads: Family<TargetResult, Counter>,
    secret_refreshes: Family<NameResult, Counter>,
    lease_expiry: Family<Name, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Metrics {
    /// Every metric registered under the `pillion_` prefix, with no series
    /// yet except `build_info`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pillion");
        let not_after = Family::<Name, Gauge>::default();
        registry.register(
            "certificate_not_after_timestamp_seconds",
            "Expiry of the published certificate, as a Unix timestamp",
            not_after.clone(),
        );
        let next_renewal = Family::<Name, Gauge>::default();
        registry.register(
            "certificate_next_renewal_timestamp_seconds",
            "When the next renewal attempt is scheduled, as a Unix timestamp",
            next_renewal.clone(),
        );
        let renewals = Family::<NameResult, Counter>::default();
        registry.register(
            "renewals",
            "Certificate renewal attempts by result",
            renewals.clone(),
        );
        let obtain_seconds = Family::<Name, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
        });
        registry.register(
            "obtain_duration_seconds",
            "Time to obtain and verify a certificate from its issuer",
            obtain_seconds.clone(),
        );
        let reloads = Family::<TargetResult, Counter>::default();
        registry.register(
            "reloads",
            "Reloads of the app by target kind and result",
            reloads.clone(),
        );
        let secret_refreshes = Family::<NameResult, Counter>::default();
        registry.register(
            "secret_refreshes",
            "Secret reads by result (changed, unchanged, failure)",
            secret_refreshes.clone(),
        );
        let lease_expiry = Family::<Name, Gauge>::default();
        registry.register(
            "secret_lease_expiry_timestamp_seconds",
            "When the lease of a dynamic secret ends, as last granted, as a Unix timestamp",
            lease_expiry.clone(),
        );
        let build_info = Family::<Build, Gauge>::default();
        build_info
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("PILLION_COMMIT"),
                target: env!("PILLION_TARGET"),
            })
            .set(1);
        registry.register(
            "build_info",
            "pillion's version, git commit and target; always 1",
            build_info,
        );
        Metrics {
            registry,
            not_after,
            next_renewal,
            renewals,
            obtain_seconds,
            reloads,
            secret_refreshes,
            lease_expiry,
        }
    }

    fn name(n: &str) -> Name {
        Name { name: n.to_owned() }
    }

    /// A certificate was published (or found valid on disk).
    pub fn certificate(&self, name: &str, not_after: SystemTime, next_renewal: SystemTime) {
        self.not_after
            .get_or_create(&Self::name(name))
            .set(unix_seconds(not_after));
        self.next_renewal
            .get_or_create(&Self::name(name))
            .set(unix_seconds(next_renewal));
    }

    /// A renewal attempt ended; `next` is when the next one is scheduled.
    pub fn renewal(&self, name: &str, ok: bool, took: Duration, next: SystemTime) {
        let result = if ok { "success" } else { "failure" };
        self.renewals
            .get_or_create(&NameResult {
                name: name.to_owned(),
                result,
            })
            .inc();
        if ok {
            self.obtain_seconds
                .get_or_create(&Self::name(name))
                .observe(took.as_secs_f64());
        }
        self.next_renewal
            .get_or_create(&Self::name(name))
            .set(unix_seconds(next));
    }

    /// A secret read ended: `Some(true)` changed, `Some(false)` unchanged, `None` failed.
    pub fn secret_refresh(&self, name: &str, changed: Option<bool>) {
        let result = match changed {
            Some(true) => "changed",
            Some(false) => "unchanged",
            None => "failure",
        };
        self.secret_refreshes
            .get_or_create(&NameResult {
                name: name.to_owned(),
                result,
            })
            .inc();
    }

    /// A leased secret was read or renewed: its lease now ends at `expires`.
    pub fn secret_lease(&self, name: &str, expires: SystemTime) {
        self.lease_expiry
            .get_or_create(&Self::name(name))
            .set(unix_seconds(expires));
    }

    /// A reload of the app ended; `target` is
    /// [`ReloadTarget::kind`](crate::reload::ReloadTarget::kind).
    pub fn reload(&self, target: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&TargetResult { target, result })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding the metrics failed");
        }
        out
    }
}

/// The error and its causes on one line, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_as_prometheus_text() {
        let m = Metrics::new();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        m.certificate("web", t, t);
        m.renewal("web", true, Duration::from_millis(20), t);
        m.reload("process", false);
        m.secret_refresh("db", Some(false));
        let text = m.encode();
        assert!(
            text.contains(
                "pillion_certificate_not_after_timestamp_seconds{name=\"web\"} 1900000000"
            ),
            "{text}"
        );
        assert!(
            text.contains("pillion_renewals_total{name=\"web\",result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pillion_reloads_total{target=\"process\",result=\"failure\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pillion_secret_refreshes_total{name=\"db\",result=\"unchanged\"} 1"),
            "{text}"
        );
        assert!(text.contains("pillion_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
