//! Prometheus metrics: request counts and latency histograms per route.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Connections refused at `server.max_connections`.
    connections_refused: std::sync::atomic::AtomicU64,
    /// Requests whose statement was cancelled on the server (time limit, client gone).
    queries_cancelled: std::sync::atomic::AtomicU64,
    /// Open realtime WebSockets.
    realtime_sockets: std::sync::atomic::AtomicI64,
    realtime_broadcasts_sent: std::sync::atomic::AtomicU64,
    realtime_broadcasts_received: std::sync::atomic::AtomicU64,
    realtime_slow_consumers: std::sync::atomic::AtomicU64,
    /// Postgres changes not queued to a socket that lagged behind.
    realtime_changes_dropped: std::sync::atomic::AtomicU64,
    /// Realtime messages refused, by reason.
    realtime_refused: Mutex<BTreeMap<&'static str, u64>>,
}

/// Pool figures sampled at scrape time.
pub struct PoolState {
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
    pub max_size: usize,
}

impl Metrics {
    pub fn observe(&self, route: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route, status)).or_default() += 1;
        }
        let secs = elapsed.as_secs_f64();
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn query_cancelled(&self) {
        self.queries_cancelled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn realtime_socket(&self, delta: i64) {
        self.realtime_sockets.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    /// A broadcast from a client of this proxy.
    pub fn realtime_broadcast_sent(&self) {
        self.realtime_broadcasts_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A broadcast from another proxy.
    pub fn realtime_broadcast_received(&self) {
        self.realtime_broadcasts_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn realtime_slow_consumer(&self) {
        self.realtime_slow_consumers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn realtime_changes_dropped(&self, n: u64) {
        self.realtime_changes_dropped.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn realtime_refused(&self, reason: &'static str) {
        if let Ok(mut r) = self.realtime_refused.lock() {
            *r.entry(reason).or_default() += 1;
        }
    }

    pub fn render(&self, pool: &PoolState) -> String {
        let mut out = String::new();
        out.push_str("# HELP fluxbase_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE fluxbase_http_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((route, status), n) in r.iter() {
                let _ = writeln!(out, "fluxbase_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        out.push_str("# HELP fluxbase_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE fluxbase_http_request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "fluxbase_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "fluxbase_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "fluxbase_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum);
                let _ = writeln!(out, "fluxbase_http_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
            }
        }
        for (name, help, value) in [
            ("fluxbase_db_pool_size", "Open database connections.", pool.size),
            ("fluxbase_db_pool_available", "Idle database connections.", pool.available),
            ("fluxbase_db_pool_waiting", "Requests waiting for a connection.", pool.waiting),
            ("fluxbase_db_pool_max_size", "Configured maximum connections.", pool.max_size),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, value) in [
            (
                "fluxbase_connections_refused_total",
                "Client connections refused at server.max_connections.",
                load(&self.connections_refused),
            ),
            (
                "fluxbase_db_queries_cancelled_total",
                "Statements cancelled because their request ended first.",
                load(&self.queries_cancelled),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let sockets = self.realtime_sockets.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP fluxbase_realtime_sockets Open realtime WebSockets.\n# TYPE fluxbase_realtime_sockets gauge\nfluxbase_realtime_sockets {sockets}"
        );
        for (name, help, value) in [
            (
                "fluxbase_realtime_broadcasts_sent_total",
                "Broadcasts sent by clients of this proxy.",
                load(&self.realtime_broadcasts_sent),
            ),
            (
                "fluxbase_realtime_broadcasts_received_total",
                "Broadcasts received from other proxies.",
                load(&self.realtime_broadcasts_received),
            ),
            (
                "fluxbase_realtime_slow_consumers_total",
                "Sockets disconnected because their send queue was full.",
                load(&self.realtime_slow_consumers),
            ),
            (
                "fluxbase_realtime_changes_dropped_total",
                "Postgres changes not delivered to sockets that fell behind (they are told).",
                load(&self.realtime_changes_dropped),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        out.push_str("# HELP fluxbase_realtime_refused_total Realtime messages refused, by reason.\n");
        out.push_str("# TYPE fluxbase_realtime_refused_total counter\n");
        if let Ok(r) = self.realtime_refused.lock() {
            for (reason, n) in r.iter() {
                let _ = writeln!(out, "fluxbase_realtime_refused_total{{reason=\"{reason}\"}} {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::default();
        m.observe("rest", 200, Duration::from_millis(3));
        m.observe("rest", 200, Duration::from_millis(30));
        let text = m.render(&PoolState { size: 1, available: 1, waiting: 0, max_size: 4 });
        assert!(text.contains("fluxbase_http_requests_total{route=\"rest\",status=\"200\"} 2"));
        assert!(text.contains("fluxbase_http_request_duration_seconds_bucket{route=\"rest\",le=\"0.005\"} 1"));
        assert!(text.contains("fluxbase_http_request_duration_seconds_count{route=\"rest\"} 2"));
        assert!(text.contains("fluxbase_db_pool_max_size 4"));
    }
}
