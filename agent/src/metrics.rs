//! The agent's metrics, served as `GET /metrics` by the web listener (agent/src/web) in the
//! OpenMetrics text format, which Prometheus reads.
//!
//! One process-wide registry: the places where things happen call the small functions here
//! ([`migration`], [`dump`], [`restore`], [`relay_bytes`]); what is a state rather than an
//! event (managed processes by status, uptime) is read when the metrics are asked for
//! ([`render`]). Every name starts with `ferry_`. No label carries a command line, an argument,
//! a path or a user: only fixed words (an outcome, a status, a direction).

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

struct Metrics {
    registry: Registry,
    started: Instant,
    migrations: Family<Outcome, Counter>,
    downtime: Histogram,
    wire_bytes: Histogram,
    image_bytes: Histogram,
    dumps: Family<Outcome, Counter>,
    restores: Family<Outcome, Counter>,
    relay: Family<Direction, Counter>,
    managed: Family<Status, Gauge>,
    uptime: Gauge<f64, AtomicU64>,
    cluster_bad: Counter,
    /// One scrape at a time sets the gauges it reads.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let migrations = Family::<Outcome, Counter>::default();
        registry.register(
            "ferry_migrations",
            "Migrations this agent started as origin, by outcome (committed: the copy runs on \
             the destination; failed: refused or aborted, the original runs on; lost: failed \
             after the commit point)",
            migrations.clone(),
        );
        // 1 ms .. ~33 s.
        let downtime = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "ferry_migration_downtime_seconds",
            "How long a committed migration kept its process stopped",
            downtime.clone(),
        );
        // 4 KiB .. 64 GiB.
        let wire_bytes = Histogram::new(exponential_buckets(4096.0, 4.0, 13));
        registry.register(
            "ferry_migration_wire_bytes",
            "Bytes a committed migration sent to the destination (compressed image and files)",
            wire_bytes.clone(),
        );
        let image_bytes = Histogram::new(exponential_buckets(4096.0, 4.0, 13));
        registry.register(
            "ferry_migration_image_bytes",
            "Uncompressed image bytes of a committed migration",
            image_bytes.clone(),
        );
        let dumps = Family::<Outcome, Counter>::default();
        registry.register(
            "ferry_dumps",
            "Processes frozen and dumped by this process (ok, or refused/failed)",
            dumps.clone(),
        );
        let restores = Family::<Outcome, Counter>::default();
        registry.register(
            "ferry_restores",
            "Images restored by this process (ok, or failed)",
            restores.clone(),
        );
        let relay = Family::<Direction, Counter>::default();
        registry.register(
            "ferry_relay_bytes",
            "Bytes relayed between a stub and its process on another host (out: read here and \
             sent; in: received and written here)",
            relay.clone(),
        );
        let managed = Family::<Status, Gauge>::default();
        registry.register(
            "ferry_managed_processes",
            "Managed processes whose home is this agent, by status (running, frozen: here; \
             remote: moved to another host; finished, killed, lost: ended), and hosted: \
             moved here from another home",
            managed.clone(),
        );
        let uptime = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "ferry_agent_uptime_seconds",
            "Seconds since this agent started",
            uptime.clone(),
        );
        let cluster_bad = Counter::default();
        registry.register(
            "ferry_cluster_bad_datagrams",
            "Gossip datagrams dropped because they did not open under the cluster key or were \
             not from the sender they named (docs/cluster.md)",
            cluster_bad.clone(),
        );
        Metrics {
            registry,
            started: Instant::now(),
            migrations,
            downtime,
            wire_bytes,
            image_bytes,
            dumps,
            restores,
            relay,
            managed,
            uptime,
            cluster_bad,
            scrape: Mutex::new(()),
        }
    })
}

/// Starts the clock of `ferry_agent_uptime_seconds` (the first call of anything here does).
pub fn init() {
    metrics();
}

/// A migration this agent started ended: committed (with its downtime and bytes), or not.
pub fn migration(result: Result<&ferry_proto::v1::MigrateSummary, &tonic::Status>) {
    let m = metrics();
    let outcome = match result {
        Ok(s) => {
            m.downtime.observe(s.frozen_us as f64 / 1e6);
            m.wire_bytes.observe(s.wire_bytes as f64);
            m.image_bytes.observe(s.raw_bytes as f64);
            "committed"
        }
        Err(s) if s.code() == tonic::Code::DataLoss => "lost",
        Err(_) => "failed",
    };
    m.migrations.get_or_create(&Outcome { outcome }).inc();
}

/// A freeze-and-collect of a process ended (a dump, or the origin side of a migration).
pub fn dump(ok: bool) {
    metrics()
        .dumps
        .get_or_create(&Outcome {
            outcome: if ok { "ok" } else { "failed" },
        })
        .inc();
}

/// A restore ended.
pub fn restore(ok: bool) {
    metrics()
        .restores
        .get_or_create(&Outcome {
            outcome: if ok { "ok" } else { "failed" },
        })
        .inc();
}

/// `n` bytes went through a relay: `out` (read here, sent) or `in` (received, written here).
pub fn relay_bytes(out: bool, n: usize) {
    metrics()
        .relay
        .get_or_create(&Direction {
            direction: if out { "out" } else { "in" },
        })
        .inc_by(n as u64);
}

/// A gossip datagram was dropped (agent/src/cluster).
pub fn cluster_bad_datagram() {
    metrics().cluster_bad.inc();
}

/// Counts of managed processes by status, for [`render`].
#[derive(Debug, Default, Clone)]
pub struct ManagedCounts {
    /// (status word, count): one of running, frozen, remote, finished, killed, lost, hosted.
    pub counts: Vec<(&'static str, i64)>,
}

/// The metrics as OpenMetrics text, with the gauges read now (`managed` from the registry of
/// managed processes).
pub fn render(managed: &ManagedCounts) -> String {
    let m = metrics();
    let _one = m.scrape.lock().unwrap_or_else(|e| e.into_inner());
    m.uptime.set(m.started.elapsed().as_secs_f64());
    m.managed.clear();
    for status in [
        "running", "frozen", "remote", "finished", "killed", "lost", "hosted",
    ] {
        // Every status is present, 0 when none: a series that vanishes is harder to graph.
        m.managed.get_or_create(&Status { status }).set(0);
    }
    for &(status, n) in &managed.counts {
        m.managed.get_or_create(&Status { status }).inc_by(n);
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        tracing::warn!(%e, "cannot encode the metrics");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `name` (with its labels exactly as written).
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counters_move_and_names_start_with_ferry() {
        let before = render(&ManagedCounts::default());
        let n0 = sample(&before, "ferry_dumps_total{outcome=\"ok\"}").unwrap_or(0.0);
        dump(true);
        relay_bytes(true, 1000);
        let after = render(&ManagedCounts {
            counts: vec![("running", 2), ("killed", 1)],
        });
        assert_eq!(
            sample(&after, "ferry_dumps_total{outcome=\"ok\"}"),
            Some(n0 + 1.0),
            "{after}"
        );
        assert!(
            sample(&after, "ferry_relay_bytes_total{direction=\"out\"}").unwrap_or(0.0) >= 1000.0
        );
        assert_eq!(
            sample(&after, "ferry_managed_processes{status=\"running\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&after, "ferry_managed_processes{status=\"frozen\"}"),
            Some(0.0)
        );
        assert!(after.trim_end().ends_with("# EOF"), "{after}");
        for line in after.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("ferry_"), "{line}");
        }
        for line in after.lines().filter(|l| l.starts_with("# TYPE")) {
            assert!(line["# TYPE ".len()..].starts_with("ferry_"), "{line}");
        }
    }
}
