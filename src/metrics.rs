//! Prometheus metrics: one registry per proxy (never the crate's global default),
//! with a method per event, and the `/metrics` exposition in the Prometheus text
//! format or, when the scraper asks for it, OpenMetrics.
//!
//! Every name starts with `authmd_`. Labels are bounded by the config: route ids,
//! tier names, rejection codes, outcomes. They never carry a key, a token, a raw path
//! or a client identifier.
//!
//! The request path touches only pre-resolved children: each config generation has
//! its [`Meters`] (one histogram pair per route, one counter pair per tier), and the
//! request counter's children are cached in a lock-free map keyed by small integers,
//! so counting a request is a map read and two atomic adds, never a lock.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Once};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use prometheus::core::Collector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets, in seconds: from 25 µs (the proxy's own overhead) to 30 s (a
/// slow upstream).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The content type of the Prometheus text format.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of one proxy process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    upstream_seconds: HistogramVec,
    rate_limited: IntCounterVec,
    quota_exceeded: IntCounterVec,
    payments: IntCounterVec,
    keys: IntGauge,
    jwks_refreshes: IntCounterVec,
    config_reloads: IntCounterVec,
    config_info: IntGaugeVec,
    config_loaded: Gauge,
    tls_handshakes: IntCounterVec,
    tls_reloads: IntCounterVec,
    connections_open: IntGaugeVec,
    connections: IntCounterVec,
    connections_refused: IntCounterVec,
    /// The credential store's meters, in the registry once a store is observed.
    store: StoreMeter,
    store_registered: Once,
}

/// How a request ended, for the `decision` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded to the upstream, or answered by a local endpoint.
    Allowed,
    /// Refused by the proxy (4xx, or 402 / 429).
    Rejected,
    /// The proxy could not serve it (upstream down or slow, store down: 5xx).
    Failed,
}

impl Decision {
    /// The label value.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Rejected => "rejected",
            Decision::Failed => "failed",
        }
    }
}

/// Payment events.
#[derive(Debug, Clone, Copy)]
pub enum PaymentEvent {
    /// A request over its quota came without a payment.
    Required,
    /// The facilitator verified a payment.
    Verified,
    /// A payment was malformed, replayed or refused by the facilitator.
    Rejected,
    /// A verified payment settled.
    Settled,
    /// A verified payment did not settle (the upstream's answer was dropped).
    SettleFailed,
    /// The facilitator could not be reached.
    Unavailable,
}

/// Which listener a connection came to.
#[derive(Debug, Clone, Copy)]
pub enum Listener {
    /// The proxy listener.
    Proxy,
    /// The admin listener.
    Admin,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Listener::Proxy => "proxy",
            Listener::Admin => "admin",
        }
    }
}

/// Builds and registers one metric.
struct Builder {
    registry: Registry,
}

impl Builder {
    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.add(HistogramVec::new(opts, labels)?)
    }

    fn add<C: Collector + Clone + 'static>(&self, collector: C) -> prometheus::Result<C> {
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }
}

impl Metrics {
    /// A registry with every metric at zero. Fails only if a metric's literal name
    /// or labels are invalid (a bug the tests catch).
    pub fn new() -> prometheus::Result<Metrics> {
        let b = Builder {
            registry: Registry::new(),
        };
        Ok(Metrics {
            requests: b.counter(
                "authmd_requests_total",
                "Requests answered, by route id, method, status, decision and rejection code.",
                &["route", "method", "status", "decision", "code"],
            )?,
            request_seconds: b.histogram(
                "authmd_request_duration_seconds",
                "Time from a request's headers to its response headers, by route id.",
                &["route"],
            )?,
            upstream_seconds: b.histogram(
                "authmd_upstream_duration_seconds",
                "Time the upstream took to answer with headers, by route id.",
                &["route"],
            )?,
            rate_limited: b.counter(
                "authmd_rate_limited_total",
                "Requests refused with 429 by a rate window, by tier.",
                &["tier"],
            )?,
            quota_exceeded: b.counter(
                "authmd_quota_exceeded_total",
                "Requests over their quota (402, or a payment asked for), by tier.",
                &["tier"],
            )?,
            payments: b.counter(
                "authmd_payments_total",
                "x402 payment events, by outcome.",
                &["outcome"],
            )?,
            keys: b.add(IntGauge::new(
                "authmd_keys",
                "API keys in the in-memory table (config and store).",
            )?)?,
            jwks_refreshes: b.counter(
                "authmd_jwks_refreshes_total",
                "Fetches of trusted issuers' signing keys, by issuer and outcome.",
                &["issuer", "outcome"],
            )?,
            config_reloads: b.counter(
                "authmd_config_reloads_total",
                "Config reloads, by outcome (success, failure).",
                &["outcome"],
            )?,
            config_info: b.gauge(
                "authmd_config_info",
                "1 for the active config, labelled with the BLAKE3 hash of its file.",
                &["hash"],
            )?,
            config_loaded: b.add(Gauge::new(
                "authmd_config_last_reload_success_timestamp_seconds",
                "When the active config was loaded (unix seconds).",
            )?)?,
            tls_handshakes: b.counter(
                "authmd_tls_handshakes_total",
                "TLS handshakes on the proxy listener, by outcome and negotiated protocol.",
                &["outcome", "protocol"],
            )?,
            tls_reloads: b.counter(
                "authmd_tls_certificate_reloads_total",
                "Reloads of the TLS certificate files, by outcome.",
                &["outcome"],
            )?,
            connections_open: b.gauge(
                "authmd_open_connections",
                "Client connections open, by listener.",
                &["listener"],
            )?,
            connections: b.counter(
                "authmd_connections_total",
                "Client connections accepted, by listener.",
                &["listener"],
            )?,
            connections_refused: b.counter(
                "authmd_connections_refused_total",
                "Client connections closed at once because `server.max_connections` were open.",
                &["listener"],
            )?,
            store: StoreMeter::new()?,
            store_registered: Once::new(),
            registry: b.registry,
        })
    }
}

impl Metrics {
    /// Renders every metric: OpenMetrics when `accept` asks for it, the Prometheus
    /// text format otherwise. Returns the content type and the text.
    #[must_use]
    pub fn encode(&self, request: &HeaderMap) -> (&'static str, String) {
        let families = self.registry.gather();
        let mut text = String::with_capacity(16 * 1024);
        if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut text) {
            tracing::warn!(%error, "metrics could not be encoded");
        }
        let openmetrics = request
            .get(http::header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("application/openmetrics-text"));
        if openmetrics {
            (OPENMETRICS, to_openmetrics(&text))
        } else {
            (TEXT, text)
        }
    }

    /// The key table holds `count` keys.
    pub fn set_keys(&self, count: usize) {
        self.keys.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Adds a collector of another module (the fleet-wide limits' meters) to the
    /// registry.
    pub fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// The credential store's meters, added to `/metrics` by the first call: a
    /// proxy without a store shows none of them.
    #[must_use]
    pub fn store_meter(&self) -> StoreMeter {
        self.store_registered.call_once(|| {
            let collectors: [Box<dyn Collector>; 3] = [
                Box::new(self.store.writes.clone()),
                Box::new(self.store.errors.clone()),
                Box::new(self.store.up.clone()),
            ];
            for collector in collectors {
                if let Err(error) = self.registry.register(collector) {
                    tracing::debug!(%error, "a store meter could not be registered");
                }
            }
        });
        self.store.clone()
    }

    /// The counters of one trusted issuer's key fetches. `issuer` is the configured
    /// issuer identifier, a bounded label.
    #[must_use]
    pub fn jwks_counters(&self, issuer: &str) -> Option<FetchCounters> {
        Some(FetchCounters {
            succeeded: self
                .jwks_refreshes
                .get_metric_with_label_values(&[issuer, "success"])
                .ok()?,
            failed: self
                .jwks_refreshes
                .get_metric_with_label_values(&[issuer, "failure"])
                .ok()?,
        })
    }

    /// A new config, whose file hashes to `hash`, is active since `unix`.
    pub fn config_loaded(&self, hash: &str, unix: i64, reload: bool) {
        if reload {
            inc(&self.config_reloads, &["success"]);
        }
        self.config_info.reset();
        if let Ok(g) = self.config_info.get_metric_with_label_values(&[hash]) {
            g.set(1);
        }
        #[expect(clippy::cast_precision_loss, reason = "unix seconds fit in f64")]
        self.config_loaded.set(unix as f64);
    }

    /// A config reload was refused; the old config keeps serving.
    pub fn config_reload_failed(&self) {
        inc(&self.config_reloads, &["failure"]);
    }

    /// A TLS handshake finished: `protocol` is the negotiated ALPN protocol.
    pub fn tls_handshake(&self, ok: bool, protocol: Option<&[u8]>) {
        let protocol = match protocol {
            Some(b"h2") => "h2",
            Some(b"http/1.1") => "http/1.1",
            Some(_) => "other",
            None => "none",
        };
        inc(
            &self.tls_handshakes,
            &[if ok { "success" } else { "failure" }, protocol],
        );
    }

    /// The TLS certificate files were reloaded (or could not be).
    pub fn tls_reload(&self, ok: bool) {
        inc(&self.tls_reloads, &[if ok { "success" } else { "failure" }]);
    }

    /// A payment event.
    pub fn payment(&self, event: PaymentEvent) {
        let outcome = match event {
            PaymentEvent::Required => "required",
            PaymentEvent::Verified => "verified",
            PaymentEvent::Rejected => "rejected",
            PaymentEvent::Settled => "settled",
            PaymentEvent::SettleFailed => "settle_failed",
            PaymentEvent::Unavailable => "unavailable",
        };
        inc(&self.payments, &[outcome]);
    }

    /// Counts a connection closed at the connection ceiling.
    pub fn connection_refused(&self) {
        inc(&self.connections_refused, &[Listener::Proxy.label()]);
    }

    /// A connection was accepted; it counts as open until the guard drops.
    #[must_use]
    pub fn connection(&self, listener: Listener) -> Option<OpenConnection> {
        inc(&self.connections, &[listener.label()]);
        let gauge = self
            .connections_open
            .get_metric_with_label_values(&[listener.label()])
            .ok()?;
        gauge.inc();
        Some(OpenConnection(gauge))
    }
}

fn inc(vec: &IntCounterVec, labels: &[&str]) {
    if let Ok(c) = vec.get_metric_with_label_values(labels) {
        c.inc();
    }
}

/// The credential store's meters: the time of each write and the failures, by
/// operation, and whether the store answered its last query.
#[derive(Debug, Clone)]
pub struct StoreMeter {
    writes: HistogramVec,
    errors: IntCounterVec,
    up: IntGauge,
}

impl StoreMeter {
    fn new() -> prometheus::Result<StoreMeter> {
        let writes = HistogramVec::new(
            HistogramOpts::new(
                "authmd_store_write_duration_seconds",
                "Time of writes to the credential store, by operation.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "authmd_store_errors_total",
                "Credential store queries that failed, by operation.",
            ),
            &["operation"],
        )?;
        let up = IntGauge::new(
            "authmd_store_up",
            "1 when the credential store answered its last query, 0 when it failed.",
        )?;
        up.set(1);
        Ok(StoreMeter { writes, errors, up })
    }

    /// Notes the outcome of one store query, and for a write, the time it took.
    pub fn record(&self, operation: &str, write: Option<Duration>, ok: bool) {
        if let Some(took) = write {
            if let Ok(h) = self.writes.get_metric_with_label_values(&[operation]) {
                h.observe(took.as_secs_f64());
            }
        }
        self.up.set(i64::from(ok));
        if !ok {
            inc(&self.errors, &[operation]);
        }
    }
}

/// Counts the outcomes of one trusted issuer's key fetches.
#[derive(Debug, Clone)]
pub struct FetchCounters {
    succeeded: IntCounter,
    failed: IntCounter,
}

impl FetchCounters {
    /// A fetch succeeded (or failed).
    pub fn record(&self, ok: bool) {
        if ok {
            self.succeeded.inc();
        } else {
            self.failed.inc();
        }
    }
}

/// An open connection: decrements the gauge when dropped.
#[derive(Debug)]
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Prometheus text (0.0.4) to OpenMetrics 1.0: a counter family is named without
/// its `_total` suffix (its samples keep it), `untyped` is `unknown`, and the
/// exposition ends with `# EOF`.
fn to_openmetrics(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut help: Option<&str> = None;
    for line in text.lines() {
        if line.starts_with("# HELP ") {
            if let Some(held) = help.replace(line) {
                out.push_str(held);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (name.strip_suffix("_total").unwrap_or(name), kind),
                "untyped" => (name, "unknown"),
                _ => (name, kind),
            };
            if let Some(held) = help.take() {
                let text = held
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.split_once(' '))
                    .map_or("", |(_, text)| text);
                out.push_str("# HELP ");
                out.push_str(name);
                out.push(' ');
                out.push_str(text);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

/// The method label: the common methods by name, the rest as `other` (a method is
/// any token a client chooses).
fn method_label(method: &Method) -> (u8, &'static str) {
    match *method {
        Method::GET => (0, "GET"),
        Method::HEAD => (1, "HEAD"),
        Method::POST => (2, "POST"),
        Method::PUT => (3, "PUT"),
        Method::PATCH => (4, "PATCH"),
        Method::DELETE => (5, "DELETE"),
        Method::OPTIONS => (6, "OPTIONS"),
        _ => (7, "other"),
    }
}

/// The proxy's own endpoints, as `route` label values (route ids of the config
/// cannot start with `authmd.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalEndpoint {
    /// Discovery documents, `/auth.md`, JWKS.
    Discovery,
    /// The OAuth token endpoint.
    Token,
    /// Token revocation.
    Revoke,
    /// The authorization endpoint and the consent it asks for.
    Authorize,
    /// RFC 7591 client registration.
    ClientRegistration,
    /// Registration, claims, agent revocation, key management, the scope list.
    Lifecycle,
    /// A person's sign-in page and the identity providers' callbacks.
    Login,
    /// A request no route matched (404, 405, or a path refused as ambiguous).
    Unmatched,
}

impl LocalEndpoint {
    const ALL: [LocalEndpoint; 8] = [
        LocalEndpoint::Discovery,
        LocalEndpoint::Token,
        LocalEndpoint::Revoke,
        LocalEndpoint::Authorize,
        LocalEndpoint::ClientRegistration,
        LocalEndpoint::Lifecycle,
        LocalEndpoint::Login,
        LocalEndpoint::Unmatched,
    ];

    fn label(self) -> &'static str {
        match self {
            LocalEndpoint::Discovery => "authmd.discovery",
            LocalEndpoint::Token => "authmd.token",
            LocalEndpoint::Revoke => "authmd.revoke",
            LocalEndpoint::Authorize => "authmd.authorize",
            LocalEndpoint::ClientRegistration => "authmd.register",
            LocalEndpoint::Lifecycle => "authmd.lifecycle",
            LocalEndpoint::Login => "authmd.login",
            LocalEndpoint::Unmatched => "authmd.unmatched",
        }
    }
}

/// Which meter a request is counted under: a route (by [`Route::index`]) or one of
/// the proxy's own endpoints.
///
/// [`Route::index`]: crate::policy::Route::index
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterId {
    /// A route of the policy.
    Route(usize),
    /// A local endpoint.
    Local(LocalEndpoint),
}

impl Default for MeterId {
    fn default() -> Self {
        MeterId::Local(LocalEndpoint::Unmatched)
    }
}

#[derive(Debug)]
struct RouteMeter {
    id: String,
    total: Histogram,
    upstream: Histogram,
}

#[derive(Debug)]
struct TierMeter {
    rate_limited: IntCounter,
    quota_exceeded: IntCounter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestKey {
    meter: u32,
    method: u8,
    status: u16,
    /// The code's address: codes are `&'static str`, so equal codes usually share
    /// one (and when they do not, both entries hold the same counter).
    code: usize,
}

impl Hash for RequestKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let packed =
            (u64::from(self.meter) << 32) | (u64::from(self.method) << 24) | u64::from(self.status);
        state.write_u64(packed);
        state.write_usize(self.code);
    }
}

/// The request-path meters of one config generation: each route's and local
/// endpoint's histograms and each tier's counters resolved once, and the request
/// counter's children cached as they are first used.
#[derive(Debug)]
pub struct Meters {
    metrics: Arc<Metrics>,
    /// Routes by index, then the local endpoints in [`LocalEndpoint::ALL`] order.
    meters: Box<[RouteMeter]>,
    routes: usize,
    tiers: Box<[TierMeter]>,
    requests: papaya::HashMap<RequestKey, IntCounter, foldhash::fast::RandomState>,
}

impl Meters {
    /// Resolves the meters of `route_ids` (in [`Route::index`] order) and of
    /// `tiers` (in tier id order).
    ///
    /// [`Route::index`]: crate::policy::Route::index
    pub fn new<'a>(
        metrics: Arc<Metrics>,
        route_ids: impl IntoIterator<Item = &'a str>,
        tiers: impl IntoIterator<Item = &'a str>,
    ) -> prometheus::Result<Meters> {
        let meter = |id: &str| -> prometheus::Result<RouteMeter> {
            Ok(RouteMeter {
                id: id.to_owned(),
                total: metrics
                    .request_seconds
                    .get_metric_with_label_values(&[id])?,
                upstream: metrics
                    .upstream_seconds
                    .get_metric_with_label_values(&[id])?,
            })
        };
        let mut meters = Vec::new();
        for id in route_ids {
            meters.push(meter(id)?);
        }
        let routes = meters.len();
        for local in LocalEndpoint::ALL {
            meters.push(meter(local.label())?);
        }
        let mut tier_meters = Vec::new();
        for tier in tiers {
            tier_meters.push(TierMeter {
                rate_limited: metrics.rate_limited.get_metric_with_label_values(&[tier])?,
                quota_exceeded: metrics
                    .quota_exceeded
                    .get_metric_with_label_values(&[tier])?,
            });
        }
        Ok(Meters {
            metrics,
            meters: meters.into_boxed_slice(),
            routes,
            tiers: tier_meters.into_boxed_slice(),
            requests: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
        })
    }

    /// The process's metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn index(&self, meter: MeterId) -> usize {
        // `Unmatched` is the last of the local endpoints.
        const UNMATCHED: usize = LocalEndpoint::ALL.len() - 1;
        match meter {
            MeterId::Route(i) if i < self.routes => i,
            MeterId::Route(_) => self.routes + UNMATCHED,
            MeterId::Local(local) => {
                self.routes
                    + LocalEndpoint::ALL
                        .iter()
                        .position(|l| *l == local)
                        .unwrap_or(UNMATCHED)
            }
        }
    }

    /// The `route` label of a meter.
    #[must_use]
    pub fn label(&self, meter: MeterId) -> &str {
        self.meters
            .get(self.index(meter))
            .map_or("authmd.unmatched", |m| m.id.as_str())
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        meter: MeterId,
        method: &Method,
        status: StatusCode,
        code: Option<&'static str>,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        let index = self.index(meter);
        let Some(route) = self.meters.get(index) else {
            return;
        };
        route.total.observe(total.as_secs_f64());
        if let Some(upstream) = upstream {
            route.upstream.observe(upstream.as_secs_f64());
        }
        let (method_id, method_label) = method_label(method);
        let key = RequestKey {
            meter: u32::try_from(index).unwrap_or(u32::MAX),
            method: method_id,
            status: status.as_u16(),
            code: code.map_or(0, |c| c.as_ptr() as usize),
        };
        let requests = self.requests.pin();
        if let Some(counter) = requests.get(&key) {
            counter.inc();
            return;
        }
        let decision = decision(meter, status, code);
        let labels = [
            route.id.as_str(),
            method_label,
            status.as_str(),
            decision.label(),
            code.unwrap_or(""),
        ];
        if let Ok(counter) = self.metrics.requests.get_metric_with_label_values(&labels) {
            counter.inc();
            requests.insert(key, counter);
        }
    }

    /// A request of `tier` was refused by a rate window.
    pub fn rate_limited(&self, tier: usize) {
        if let Some(t) = self.tiers.get(tier) {
            t.rate_limited.inc();
        }
    }

    /// A request of `tier` was over its quota.
    pub fn quota_exceeded(&self, tier: usize) {
        if let Some(t) = self.tiers.get(tier) {
            t.quota_exceeded.inc();
        }
    }
}

/// The decision a response stands for. A refusal carries its code; so does a
/// failure. The proxy's own pages (sign-in, consent) answer without a code, and
/// their 4xx and 5xx are its refusals and failures too; an upstream's are not.
#[must_use]
pub fn decision(meter: MeterId, status: StatusCode, code: Option<&'static str>) -> Decision {
    let local = matches!(meter, MeterId::Local(_));
    match code {
        Some(_) if status.is_server_error() => Decision::Failed,
        Some(_) => Decision::Rejected,
        None if local && status.is_server_error() => Decision::Failed,
        None if local && status.is_client_error() => Decision::Rejected,
        None => Decision::Allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxys_own_error_pages_are_its_refusals_and_an_upstreams_are_not() {
        let login = MeterId::Local(LocalEndpoint::Login);
        let route = MeterId::Route(0);
        let forbidden = StatusCode::FORBIDDEN;
        assert_eq!(decision(login, forbidden, None), Decision::Rejected);
        assert_eq!(
            decision(login, StatusCode::SERVICE_UNAVAILABLE, None),
            Decision::Failed
        );
        assert_eq!(
            decision(login, StatusCode::SEE_OTHER, None),
            Decision::Allowed
        );
        assert_eq!(decision(route, forbidden, None), Decision::Allowed);
        assert_eq!(
            decision(route, forbidden, Some("FORBIDDEN")),
            Decision::Rejected
        );
        assert_eq!(
            decision(route, StatusCode::BAD_GATEWAY, Some("UPSTREAM_UNAVAILABLE")),
            Decision::Failed
        );
    }

    #[test]
    fn every_metric_registers_and_counter_families_lose_total_in_openmetrics() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let meters = Meters::new(metrics.clone(), ["a", "b"], ["anonymous", "free"]).unwrap();
        meters.request(
            MeterId::Route(1),
            &Method::GET,
            StatusCode::OK,
            None,
            Duration::from_micros(80),
            Some(Duration::from_micros(30)),
        );
        meters.request(
            MeterId::Route(1),
            &Method::GET,
            StatusCode::OK,
            None,
            Duration::from_micros(80),
            None,
        );
        meters.request(
            MeterId::Route(9),
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::NOT_FOUND,
            Some("NOT_FOUND"),
            Duration::from_micros(5),
            None,
        );
        meters.rate_limited(1);
        let (kind, text) = metrics.encode(&HeaderMap::new());
        assert_eq!(kind, TEXT);
        assert!(text.contains(
            "authmd_requests_total{code=\"\",decision=\"allowed\",method=\"GET\",route=\"b\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "authmd_requests_total{code=\"NOT_FOUND\",decision=\"rejected\",method=\"other\",route=\"authmd.unmatched\",status=\"404\"} 1"
        ));
        assert!(text.contains("authmd_rate_limited_total{tier=\"free\"} 1"));
        assert!(text.contains("# TYPE authmd_requests_total counter"));

        let mut accept = HeaderMap::new();
        accept.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0"),
        );
        let (kind, om) = metrics.encode(&accept);
        assert_eq!(kind, OPENMETRICS);
        assert!(om.contains("# TYPE authmd_requests counter\n"));
        assert!(om.contains("# HELP authmd_requests Requests answered"));
        assert!(om.contains("# TYPE authmd_request_duration_seconds histogram\n"));
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn store_meters_show_once_observed_and_count_per_registry() {
        let first = Metrics::new().unwrap();
        let second = Metrics::new().unwrap();
        let (_, text) = first.encode(&HeaderMap::new());
        assert!(!text.contains("authmd_store_"), "{text}");

        let meter = first.store_meter();
        meter.record("insert_key", Some(Duration::from_millis(3)), true);
        meter.record("key", None, false);
        let (_, text) = first.encode(&HeaderMap::new());
        assert!(
            text.contains("authmd_store_write_duration_seconds_count{operation=\"insert_key\"} 1")
        );
        assert!(text.contains("authmd_store_errors_total{operation=\"key\"} 1"));
        assert!(text.contains("authmd_store_up 0"));

        second.store_meter().record("key", None, true);
        let (_, text) = second.encode(&HeaderMap::new());
        assert!(!text.contains("authmd_store_errors_total{"), "{text}");
        assert!(text.contains("authmd_store_up 1"));
        // Observing again adds nothing twice.
        let (_, again) = first.encode(&HeaderMap::new());
        let _ = first.store_meter();
        assert_eq!(first.encode(&HeaderMap::new()).1, again);
    }
}
