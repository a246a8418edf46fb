//! OpenTelemetry: traces and metrics exported over OTLP/HTTP (protobuf) when `otlp-endpoint` is
//! set. Off by default, and then free: [`Shared::telemetry`](crate::state::Shared) is `None`
//! and every call site is one branch on it. A build without the `telemetry` feature keeps the
//! same API with nothing behind it (the types are empty enums), for measuring that branch.
//!
//! - **Traces.** A client operation through this node is a root span (`dist.get`, `dist.set`,
//!   `dist.remove`; sampled at `otlp-sampling-ratio`). Each message its machine sends is a child
//!   span (`dist.replicate.set`, `dist.replicate.remove`, `dist.fetch`, `dist.forward`, ...,
//!   with `peer.id`), ended when the answer arrives. The child's context travels in the
//!   message's envelope ([`hypercache_cluster::wire::TraceContext`]); the receiving node's
//!   work is a span `dist.serve.<request>` under it, and a forwarded operation's own messages are
//!   children of that. One SET and its fan-out are one trace across the processes. The repair
//!   task traces each hint replay batch (`dist.hint.replay`) and each round, anti-entropy
//!   (`dist.merkle.round`, a child per request: `dist.merkle.tree`, `.buckets`, `.list`,
//!   `.pull`) or slot transfer (`dist.rebalance.transfer`, a child `dist.rebalance.batch` per
//!   page). Keys never go into spans: only `cache.key.length`.
//! - **Metrics.** Every counter and gauge of the catalogue (docs/metrics.md) as an observable
//!   instrument `hypercache.<name>`, read from the registry at each export
//!   (`otlp-metrics-interval`). Latency histograms are exported by `/metrics` only.
//!
//! The exporters run on threads of their own (the SDK's batch span processor and periodic
//! reader); their HTTP client is `ureq` (blocking, plain HTTP), which needs no runtime there.

use hypercache_cluster::wire::TraceContext;

use crate::config::Config;

#[cfg(feature = "telemetry")]
mod imp {
    use std::sync::{Arc, Mutex, Weak};
    use std::time::{Duration, Instant};

    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{
        Span as _, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId,
        TraceState, Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
    };
    use opentelemetry_sdk::Resource;

    use super::*;
    use crate::metrics::{Collected, MetricType, CATALOGUE};
    use crate::state::Shared;

    /// The OTLP exporters' HTTP client: `ureq`, blocking, on the exporter's own thread.
    #[derive(Debug, Clone)]
    /// A failed export (no answer, or not 2xx) is counted in `telemetry.export_failures` and
    /// logged at most once a minute: the SDK drops what it could not send and says nothing.
    struct Client {
        agent: ureq::Agent,
        node_id: Arc<str>,
        last_logged: Arc<Mutex<Option<Instant>>>,
    }

    impl Client {
        fn failed(&self, uri: &str, why: &str) {
            EXPORT_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut last = self.last_logged.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                *last = Some(Instant::now());
                tracing::warn!(component = "telemetry", node_id = %self.node_id, endpoint = %uri, error = %why,
                    "OTLP export failed; spans and metrics of this export are dropped (logged at most once a minute)");
            }
        }
    }

    #[async_trait::async_trait]
    impl HttpClient for Client {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let uri = request.uri().to_string();
            let request = request.map(|b| b.to_vec());
            let resp = match self.agent.run(request) {
                Ok(r) => r,
                Err(e) => {
                    self.failed(&uri, &e.to_string());
                    return Err(e.into());
                }
            };
            if !resp.status().is_success() {
                self.failed(&uri, &format!("HTTP {}", resp.status()));
            }
            let (parts, mut body) = resp.into_parts();
            let bytes = body.read_to_vec()?;
            Ok(Response::from_parts(parts, Bytes::from(bytes)))
        }
    }

    /// The tracer and the providers to flush at shutdown.
    pub struct Telemetry {
        tracer: SdkTracer,
        traces: SdkTracerProvider,
        meters: SdkMeterProvider,
        /// `otlp-sampling-ratio` as a threshold on 64 random bits: a root is sampled when its
        /// draw is below it. Decided here, before the SDK is asked anything, so that an
        /// unsampled operation costs one random number (the SDK's own ratio sampler would build
        /// a span, ids and a context first, then throw them away).
        threshold: u64,
    }

    thread_local! {
        static DRAW: std::cell::Cell<u64> = std::cell::Cell::new({
            // Seeded per thread from its id and the clock; quality matters little (a sample).
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let id = std::thread::current().id();
            let h = xxhash_rust::xxh3::xxh3_64(format!("{id:?}").as_bytes());
            (t ^ h) | 1
        });
    }

    /// 64 random bits (xorshift64*, per thread).
    fn draw() -> u64 {
        DRAW.with(|c| {
            let mut x = c.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            c.set(x);
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        })
    }

    /// A span being recorded (only sampled spans exist as values).
    pub struct Span {
        cx: Context,
    }

    fn resource(node_id: &str) -> Resource {
        Resource::builder_empty()
            .with_service_name("hypercache")
            .with_attributes([
                KeyValue::new("service.instance.id", node_id.to_owned()),
                KeyValue::new("node_id", node_id.to_owned()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build()
    }

    impl Telemetry {
        /// Starts the exporters for `config` (`None`: no `otlp-endpoint`).
        pub fn start(config: &Config) -> Result<Option<Arc<Telemetry>>, String> {
            let base = config.otlp_endpoint.trim_end_matches('/');
            if base.is_empty() {
                return Ok(None);
            }
            if !base.starts_with("http://") {
                return Err(format!(
                    "otlp-endpoint must be an http:// URL (OTLP/HTTP), got {base}"
                ));
            }
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .http_status_as_error(false)
                .build()
                .into();
            let client = Client {
                agent,
                node_id: config.node_id().into(),
                last_logged: Default::default(),
            };
            let node_id = config.node_id();
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client.clone())
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{base}/v1/traces"))
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?;
            let batch = BatchSpanProcessor::builder(spans)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(8192)
                        .with_scheduled_delay(Duration::from_millis(500))
                        .build(),
                )
                .build();
            // Roots are sampled by `threshold` before the SDK sees them; remote parents that are
            // not sampled are not continued: what reaches the SDK is always sampled.
            let traces = SdkTracerProvider::builder()
                .with_span_processor(batch)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                .with_resource(resource(&node_id))
                .build();
            let tracer = traces.tracer("hypercache");
            let metrics = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{base}/v1/metrics"))
                .build()
                .map_err(|e| e.to_string())?;
            let reader = PeriodicReader::builder(metrics)
                .with_interval(Duration::from_millis(config.otlp_metrics_interval_ms))
                .build();
            let meters = SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource(&node_id))
                .build();
            let ratio = config.otlp_sampling_ratio.clamp(0.0, 1.0);
            let threshold = if ratio >= 1.0 {
                u64::MAX
            } else {
                (ratio * u64::MAX as f64) as u64
            };
            Ok(Some(Arc::new(Telemetry {
                tracer,
                traces,
                meters,
                threshold,
            })))
        }

        /// Registers every counter and gauge of the catalogue, read from `shared` at each export
        /// (one [`crate::metrics::collect`] per export, shared by the instruments).
        pub fn export_metrics(&self, shared: Weak<Shared>) {
            let meter = self.meters.meter("hypercache");
            type Cached = Option<(Instant, Arc<Collected>)>;
            let cache: Arc<Mutex<Cached>> = Default::default();
            let read = move || -> Option<Arc<Collected>> {
                let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((at, v)) = c.as_ref() {
                    if at.elapsed() < Duration::from_millis(50) {
                        return Some(v.clone());
                    }
                }
                let shared = shared.upgrade()?;
                let v = Arc::new(crate::metrics::collect(&shared));
                *c = Some((Instant::now(), v.clone()));
                Some(v)
            };
            let read = Arc::new(read);
            for desc in CATALOGUE {
                let name = format!("hypercache.{}", desc.name);
                let read = read.clone();
                let observe = move |emit: &mut dyn FnMut(u64, &[KeyValue])| {
                    let Some(c) = read() else { return };
                    for s in c.samples.iter().filter(|s| s.name == desc.name) {
                        match (&s.label, desc.label) {
                            (Some(v), Some(l)) => emit(s.value, &[KeyValue::new(l, v.clone())]),
                            _ => emit(s.value, &[]),
                        }
                    }
                };
                match desc.kind {
                    MetricType::Counter => {
                        meter
                            .u64_observable_counter(name)
                            .with_description(desc.help)
                            .with_unit(desc.unit)
                            .with_callback(move |o| observe(&mut |v, a| o.observe(v, a)))
                            .build();
                    }
                    MetricType::Gauge => {
                        meter
                            .u64_observable_gauge(name)
                            .with_description(desc.help)
                            .with_unit(desc.unit)
                            .with_callback(move |o| observe(&mut |v, a| o.observe(v, a)))
                            .build();
                    }
                    MetricType::Histogram => {}
                }
            }
        }

        /// Flushes and stops the exporters (blocks: call it off the runtime's workers).
        pub fn shutdown(&self) {
            let _ = self.traces.force_flush();
            let _ = self.traces.shutdown();
            let _ = self.meters.shutdown();
        }

        fn started(&self, name: &'static str, parent: &Context, kind: SpanKind) -> Option<Span> {
            let span = self
                .tracer
                .span_builder(name)
                .with_kind(kind)
                .start_with_context(&self.tracer, parent);
            if !span.span_context().is_sampled() {
                return None;
            }
            Some(Span {
                cx: parent.with_span(span),
            })
        }

        /// A root span, if this trace is sampled (`otlp-sampling-ratio`).
        pub fn root(&self, name: &'static str) -> Option<Span> {
            if self.threshold != u64::MAX && draw() >= self.threshold {
                return None;
            }
            self.started(name, &Context::new(), SpanKind::Server)
        }

        /// A span whose parent came over the wire, if that trace is sampled.
        pub fn remote(&self, parent: &TraceContext, name: &'static str) -> Option<Span> {
            if parent.flags & 1 == 0 {
                return None;
            }
            let sc = SpanContext::new(
                TraceId::from_bytes(parent.trace_id),
                SpanId::from_bytes(parent.span_id),
                TraceFlags::new(parent.flags),
                true,
                TraceState::default(),
            );
            let cx = Context::new().with_remote_span_context(sc);
            self.started(name, &cx, SpanKind::Server)
        }

        /// A child of `parent` (a call to a peer).
        pub fn child(&self, parent: &Span, name: &'static str) -> Option<Span> {
            self.started(name, &parent.cx, SpanKind::Client)
        }
    }

    impl Span {
        /// Its context, for the wire.
        pub fn wire(&self) -> TraceContext {
            let span = self.cx.span();
            let sc = span.span_context();
            TraceContext {
                trace_id: sc.trace_id().to_bytes(),
                span_id: sc.span_id().to_bytes(),
                flags: sc.trace_flags().to_u8(),
            }
        }

        /// Sets an integer attribute.
        pub fn int(&self, key: &'static str, v: i64) {
            self.cx.span().set_attribute(KeyValue::new(key, v));
        }

        /// Sets a text attribute.
        pub fn text(&self, key: &'static str, v: impl Into<String>) {
            self.cx.span().set_attribute(KeyValue::new(key, v.into()));
        }

        /// Sets a boolean attribute.
        pub fn flag(&self, key: &'static str, v: bool) {
            self.cx.span().set_attribute(KeyValue::new(key, v));
        }

        /// Marks it failed.
        pub fn error(&self, why: &str) {
            self.cx
                .span()
                .set_status(opentelemetry::trace::Status::error(why.to_string()));
        }

        /// Ends it (now).
        pub fn end(self) {
            self.cx.span().end();
        }
    }
}

#[cfg(not(feature = "telemetry"))]
mod imp {
    //! Telemetry compiled out: the same API, with types no one can make (so every call site's
    //! `Option` is always `None`) and methods that do nothing.
    use std::sync::{Arc, Weak};

    use super::*;
    use crate::state::Shared;

    /// No telemetry in this build.
    pub struct Telemetry {
        _none: (),
    }

    /// No spans in this build.
    pub struct Span {
        _none: (),
    }

    impl Telemetry {
        /// Refuses an endpoint: this build cannot export.
        pub fn start(config: &Config) -> Result<Option<Arc<Telemetry>>, String> {
            if config.otlp_endpoint.is_empty() {
                Ok(None)
            } else {
                Err(
                    "otlp-endpoint is set but this build has no telemetry (feature `telemetry`)"
                        .into(),
                )
            }
        }
        /// Nothing to export.
        pub fn export_metrics(&self, _shared: Weak<Shared>) {}
        /// Nothing to flush.
        pub fn shutdown(&self) {}
        /// No span.
        pub fn root(&self, _name: &'static str) -> Option<Span> {
            None
        }
        /// No span.
        pub fn remote(&self, _parent: &TraceContext, _name: &'static str) -> Option<Span> {
            None
        }
        /// No span.
        pub fn child(&self, _parent: &Span, _name: &'static str) -> Option<Span> {
            None
        }
    }

    impl Span {
        /// Never called.
        pub fn wire(&self) -> TraceContext {
            TraceContext::default()
        }
        /// Never called.
        pub fn int(&self, _key: &'static str, _v: i64) {}
        /// Never called.
        pub fn text(&self, _key: &'static str, _v: impl Into<String>) {}
        /// Never called.
        pub fn flag(&self, _key: &'static str, _v: bool) {}
        /// Never called.
        pub fn error(&self, _why: &str) {}
        /// Never called.
        pub fn end(self) {}
    }
}

pub use imp::{Span, Telemetry};

/// OTLP exports that failed (`telemetry.export_failures`).
pub static EXPORT_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The span name of a message with request `name` sent for a client operation of `class`
/// (the child spans of `dist.get`/`dist.set`/`dist.remove`).
pub fn call_span_name(name: &str, class: Option<crate::metrics::OpClass>) -> &'static str {
    use crate::metrics::OpClass;
    match (name, class) {
        ("put", Some(OpClass::Del)) => "dist.replicate.remove",
        ("put", Some(OpClass::Get)) => "dist.read_repair",
        ("put", _) => "dist.replicate.set",
        ("merge", _) => "dist.replicate.merge",
        ("fetch", _) => "dist.fetch",
        ("exec", _) => "dist.forward",
        ("prepare", _) => "dist.prepare",
        ("dump", _) => "dist.rebalance.batch",
        ("keys", _) => "dist.keys",
        ("count", _) => "dist.count",
        ("flush", _) => "dist.flush",
        _ => "dist.call",
    }
}

/// The span name of an anti-entropy round's request `name`.
pub fn repair_span_name(name: &str) -> &'static str {
    match name {
        "tree" => "dist.merkle.tree",
        "buckets" => "dist.merkle.buckets",
        "digests" => "dist.merkle.digests",
        "list" => "dist.merkle.list",
        "pull" => "dist.merkle.pull",
        "dump" => "dist.rebalance.batch",
        _ => "dist.repair.call",
    }
}

/// The span name of serving a peer's request `name`.
pub fn serve_span_name(name: &str) -> &'static str {
    match name {
        "put" => "dist.serve.put",
        "merge" => "dist.serve.merge",
        "fetch" => "dist.serve.fetch",
        "exec" => "dist.serve.exec",
        "prepare" => "dist.serve.prepare",
        "dump" => "dist.serve.dump",
        "tree" => "dist.serve.tree",
        "buckets" => "dist.serve.buckets",
        "digests" => "dist.serve.digests",
        "list" => "dist.serve.list",
        "pull" => "dist.serve.pull",
        _ => "dist.serve",
    }
}

#[cfg(all(test, feature = "telemetry"))]
mod tests {
    use super::*;

    fn with_ratio(ratio: f64) -> std::sync::Arc<Telemetry> {
        let config = Config {
            // Nothing listens there: exports fail quietly in the background.
            otlp_endpoint: "http://127.0.0.1:1".into(),
            otlp_sampling_ratio: ratio,
            otlp_metrics_interval_ms: 100,
            ..Config::default()
        };
        Telemetry::start(&config).unwrap().unwrap()
    }

    #[test]
    fn a_failed_export_is_counted() {
        let before = EXPORT_FAILURES.load(std::sync::atomic::Ordering::Relaxed);
        let t = with_ratio(1.0);
        t.root("dist.set").expect("sampled").end();
        // Nothing listens at the endpoint: the flush at shutdown fails.
        t.shutdown();
        assert!(EXPORT_FAILURES.load(std::sync::atomic::Ordering::Relaxed) > before);
    }

    #[test]
    fn roots_are_sampled_at_the_ratio_and_remote_parents_by_their_flag() {
        for (ratio, lo, hi) in [(0.0, 0, 0), (0.25, 2_200, 2_800), (1.0, 10_000, 10_000)] {
            let t = with_ratio(ratio);
            let sampled = (0..10_000).filter(|_| t.root("dist.get").is_some()).count();
            assert!(
                (lo..=hi).contains(&sampled),
                "ratio {ratio}: {sampled} of 10000"
            );
        }
        let t = with_ratio(0.0);
        let parent = TraceContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            flags: 1,
        };
        let s = t
            .remote(&parent, "dist.serve.put")
            .expect("a sampled parent is followed");
        assert_eq!(s.wire().trace_id, [1; 16]);
        let child = t.child(&s, "dist.replicate.set").unwrap();
        assert_eq!(child.wire().trace_id, [1; 16]);
        assert_ne!(child.wire().span_id, s.wire().span_id);
        assert!(t
            .remote(&TraceContext { flags: 0, ..parent }, "dist.serve.put")
            .is_none());
    }
}
