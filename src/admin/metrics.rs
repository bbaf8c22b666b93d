//! Every metric of `/metrics`, declared once in [`METRICS`] and encoded by the maintained
//! `prometheus-client` crate (OpenMetrics text; the crate escapes names and help text and
//! appends `_total` to counters).
//!
//! Contract: a metric is one row of [`METRICS`] (name, help, kind, how to read it from a
//! [`Sample`]: one value, or one value per calendar with a `calendar` label); adding a metric
//! is adding a row. Reading is lock-free (relaxed atomics and storage's counter snapshot) and
//! allocation-free apart from the output text and the list of calendars in use.

use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Sources;

/// What a metric's value is read from: one consistent read of every source per scrape.
#[derive(Debug)]
pub struct Sample<'a> {
    /// The endpoint's counters (atomics read as they are).
    pub endpoint: &'a ingest::endpoint::EndpointStats,
    /// Storage's counters.
    pub storage: storage::StorageStats,
    /// Devices in the silence table.
    pub silence_devices: u64,
    /// Memory of the silence table.
    pub silence_bytes: u64,
    /// Per calendar in use: days of coverage left (negative once it has ended).
    pub calendar_days_left: &'a [(String, i64)],
}

/// Counter (monotonic) or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows; exposed with a `_total` suffix.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric: `hexflow_<name>`.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Name without the `hexflow_` prefix and without `_total`.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Its value in a sample.
    pub read: Read,
}

/// How a metric is read from a [`Sample`].
#[derive(Debug, Clone, Copy)]
pub enum Read {
    /// One value.
    One(fn(&Sample<'_>) -> u64),
    /// One (signed) value per calendar, labelled `calendar="<name>"`.
    PerCalendar(for<'s> fn(&'s Sample<'s>) -> &'s [(String, i64)]),
}

fn relaxed(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

const fn counter(name: &'static str, help: &'static str, read: fn(&Sample<'_>) -> u64) -> Metric {
    Metric {
        name,
        help,
        kind: Kind::Counter,
        read: Read::One(read),
    }
}

const fn gauge(name: &'static str, help: &'static str, read: fn(&Sample<'_>) -> u64) -> Metric {
    Metric {
        name,
        help,
        kind: Kind::Gauge,
        read: Read::One(read),
    }
}

const fn gauge_per_calendar(
    name: &'static str,
    help: &'static str,
    read: for<'s> fn(&'s Sample<'s>) -> &'s [(String, i64)],
) -> Metric {
    Metric {
        name,
        help,
        kind: Kind::Gauge,
        read: Read::PerCalendar(read),
    }
}

/// Every metric the admin endpoint exposes.
pub const METRICS: &[Metric] = &[
    gauge("connections_open", "QUIC connections open now.", |s| {
        s.endpoint.connections_open.load(Ordering::Relaxed) as u64
    }),
    gauge(
        "handshakes_pending",
        "QUIC/TLS handshakes in progress.",
        |s| s.endpoint.handshakes_pending.load(Ordering::Relaxed) as u64,
    ),
    gauge(
        "admission_sources_tracked",
        "Sources (IPv4 addresses, IPv6 /64s) whose admission state is kept.",
        |s| s.endpoint.sources_tracked.load(Ordering::Relaxed) as u64,
    ),
    gauge(
        "sessions_open",
        "Authenticated device sessions open now.",
        |s| s.endpoint.sessions_open.load(Ordering::Relaxed) as u64,
    ),
    gauge(
        "inflight_batches",
        "Batches handed to storage and not yet answered, over all connections.",
        |s| s.endpoint.inflight_batches.load(Ordering::Relaxed) as u64,
    ),
    gauge(
        "receive_buffered_bytes",
        "Receive-buffer memory held by all sessions.",
        |s| s.endpoint.buffered_bytes.load(Ordering::Relaxed) as u64,
    ),
    counter(
        "handshakes_timed_out",
        "Handshakes not complete within endpoint.handshake_timeout_ms.",
        |s| relaxed(&s.endpoint.handshakes_timed_out),
    ),
    counter(
        "sessions_idle_closed",
        "Sessions closed after session.idle_timeout_ms without a frame.",
        |s| relaxed(&s.endpoint.sessions_idle_closed),
    ),
    counter(
        "sessions_replaced",
        "Sessions closed SESSION_REPLACED by a newer connection of the device.",
        |s| relaxed(&s.endpoint.sessions_replaced),
    ),
    counter("connections_accepted", "Connections accepted.", |s| {
        relaxed(&s.endpoint.connections_accepted)
    }),
    counter(
        "connections_refused",
        "Connections refused at connections_max.",
        |s| relaxed(&s.endpoint.connections_refused),
    ),
    counter(
        "connections_refused_handshakes_max",
        "Connections refused at endpoint.handshakes_max handshakes in progress.",
        |s| relaxed(&s.endpoint.refused_handshakes_max),
    ),
    counter(
        "connections_refused_source_connections",
        "Connections refused at endpoint.connections_per_source_max for their source.",
        |s| relaxed(&s.endpoint.refused_source_connections),
    ),
    counter(
        "connections_refused_source_rate",
        "Connections refused over endpoint.handshakes_per_source_per_s for their source.",
        |s| relaxed(&s.endpoint.refused_source_rate),
    ),
    counter(
        "connections_refused_login_backoff",
        "Connections refused because their source was in login back-off.",
        |s| relaxed(&s.endpoint.refused_login_backoff),
    ),
    counter(
        "connections_refused_sources_full",
        "Connections refused because endpoint.sources_tracked_max sources all had connections open.",
        |s| relaxed(&s.endpoint.refused_sources_full),
    ),
    counter(
        "quic_retries_sent",
        "QUIC Retry packets sent (address validation).",
        |s| relaxed(&s.endpoint.retries_sent),
    ),
    counter(
        "login_backoffs",
        "Login back-offs started after endpoint.login_failures_before_backoff failed logins.",
        |s| relaxed(&s.endpoint.login_backoffs),
    ),
    counter(
        "auth_failure_logs_suppressed",
        "Failed logins not logged (endpoint.login_failure_log_interval_ms).",
        |s| relaxed(&s.endpoint.auth_failure_logs_suppressed),
    ),
    counter(
        "auth_failures",
        "Connections whose token did not verify.",
        |s| relaxed(&s.endpoint.auth_failures),
    ),
    counter("batches_ok", "Batches acked OK.", |s| {
        relaxed(&s.endpoint.batches_ok)
    }),
    counter("batches_duplicate", "Batches acked DUPLICATE.", |s| {
        relaxed(&s.endpoint.batches_duplicate)
    }),
    counter(
        "batches_rejected",
        "Batches refused with any other status.",
        |s| relaxed(&s.endpoint.batches_rejected),
    ),
    counter("fixes_committed", "Fixes made durable in the WAL.", |s| {
        s.storage.fixes_committed
    }),
    counter("wal_fsyncs", "WAL group commits (fsyncs).", |s| {
        s.storage.fsyncs
    }),
    counter("wal_bytes_written", "Bytes appended to the WAL.", |s| {
        s.storage.wal_bytes_written
    }),
    counter(
        "storage_overloaded",
        "Batches refused because the WAL queue was full.",
        |s| s.storage.rejected_overloaded,
    ),
    gauge("storage_queue_depth", "Batches waiting for the WAL.", |s| {
        s.storage.queue_depth as u64
    }),
    gauge(
        "writer_queue_depth",
        "Durable batches waiting for the Parquet writer.",
        |s| s.storage.writer_queue_depth as u64,
    ),
    counter("parquet_files_written", "Parquet files published.", |s| {
        s.storage.files_written
    }),
    counter("parquet_rows_written", "Rows published to Parquet.", |s| {
        s.storage.rows_written
    }),
    counter(
        "flush_failures",
        "Parquet flushes that failed and were retried.",
        |s| s.storage.flush_failures,
    ),
    gauge(
        "wal_failed",
        "1 once the WAL has failed (server refuses all batches).",
        |s| u64::from(s.storage.wal_failed),
    ),
    gauge(
        "silence_devices_tracked",
        "Devices in the silence table.",
        |s| s.silence_devices,
    ),
    gauge("silence_table_bytes", "Memory of the silence table.", |s| {
        s.silence_bytes
    }),
    gauge_per_calendar(
        "silence_calendar_coverage_days",
        "Days from today (in the calendar's zone) to the last day a calendar in use covers; negative once its coverage has ended.",
        |s| s.calendar_days_left,
    ),
];

/// Reads every source once and encodes [`METRICS`] at scrape time.
#[derive(Debug)]
struct Table {
    sources: Sources,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Table {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let calendar_days_left = self
            .sources
            .calendar_days_left
            .as_ref()
            .map_or_else(Vec::new, |f| f());
        let sample = Sample {
            endpoint: &self.sources.endpoint,
            storage: self.sources.storage.stats(),
            silence_devices: self.sources.silence.len() as u64,
            silence_bytes: self.sources.silence.memory_bytes() as u64,
            calendar_days_left: &calendar_days_left,
        };
        for m in METRICS {
            match (m.read, m.kind) {
                (Read::One(read), Kind::Counter) => {
                    let c = ConstCounter::new(read(&sample));
                    c.encode(encoder.encode_descriptor(m.name, m.help, None, c.metric_type())?)?;
                }
                (Read::One(read), Kind::Gauge) => {
                    let g = ConstGauge::new(i64_of(read(&sample)));
                    g.encode(encoder.encode_descriptor(m.name, m.help, None, g.metric_type())?)?;
                }
                (Read::PerCalendar(read), _) => {
                    let values = read(&sample);
                    let mut family = encoder.encode_descriptor(
                        m.name,
                        m.help,
                        None,
                        prometheus_client::metrics::MetricType::Gauge,
                    )?;
                    for (calendar, value) in values {
                        let labels = [("calendar", calendar.as_str())];
                        ConstGauge::new(*value).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The registry the admin endpoint encodes: every metric under the `hexflow` prefix.
pub fn registry(sources: Sources) -> Registry {
    let mut registry = Registry::with_prefix("hexflow");
    registry.register_collector(Box::new(Table { sources }));
    registry
}

/// The OpenMetrics text of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail; an encoder error would be a bug in a row above.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

/// The Content-Type of the `/metrics` response (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_plain() {
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "a metric is declared twice");
        for m in METRICS {
            assert!(
                !m.name.ends_with("_total"),
                "{}: the crate adds _total",
                m.name
            );
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.name
            );
        }
    }
}
