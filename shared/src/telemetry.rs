//! Logs and traces, set up the same way by both binaries. Logs go to stderr;
//! traces are exported over OTLP when the standard `OTEL_*` variables name an
//! endpoint, and cost nothing otherwise: without an exporter the spans meant
//! only for traces (target [`TRACE`], level debug) are never created.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The target of spans that make up traces: the request (info, also in
/// logs) and its steps (debug, exported only).
pub const TRACE: &str = "switchboard::trace";

static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: whether a request's trace context is worth
/// computing.
pub fn traces_enabled() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// Makes `span` a child of the caller's span when its `traceparent` names
/// one (traces exported only); answers the trace id `span` is in.
pub fn join_trace(span: &tracing::Span, headers: &HeaderMap) -> Option<String> {
    if !traces_enabled() {
        return None;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let id = span.context().span().span_context().trace_id();
    Some(id.to_string()).filter(|id| id.bytes().any(|b| b != b'0'))
}

/// Whether `span` is exported: traces on and its trace sampled. Spans of
/// steps are created only then (an unsampled span still costs its making).
pub fn is_sampled(span: &tracing::Span) -> bool {
    traces_enabled() && !span.is_disabled() && span.context().span().span_context().is_sampled()
}

/// Names `span` in its trace (a started span ignores `otel.name` recorded later).
pub fn rename(span: &tracing::Span, name: String) {
    if traces_enabled() && !span.is_disabled() {
        span.context().span().update_name(name);
    }
}

/// Writes the current span's context as `traceparent` (and `tracestate`)
/// into an outgoing call's headers (traces exported only).
pub fn inject_current(headers: &mut HeaderMap) {
    if !traces_enabled() {
        return;
    }
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers))
    });
}

/// The server span of an admin call (REST or gRPC), in the caller's trace.
pub fn admin_span(name: &str, headers: &HeaderMap) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        target: TRACE,
        "admin",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        status = Empty,
        trace_id = Empty,
    );
    if let Some(id) = join_trace(&span, headers) {
        span.record("trace_id", id.as_str());
    }
    span
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The logging flags of both binaries, flattened into each one's config.
/// Traces take the OpenTelemetry SDK's standard variables instead of flags
/// (docs/observability.md).
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long = "log", env = "SWITCHBOARD_LOG", default_value = "info")]
    pub filter: String,

    #[arg(
        long = "log-format",
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub format: LogFormat,
}

/// What `init` set up; `shutdown` sends the spans still buffered.
#[must_use]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.traces {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(%error, "could not send the last spans");
            }
        }
    }
}

impl LogArgs {
    /// Installs logging, and tracing when OTLP is configured. `service` is
    /// the default `service.name` (`OTEL_SERVICE_NAME` wins). Must run
    /// inside the Tokio runtime (the gRPC exporter's connection lives there).
    pub fn init(&self, service: &'static str) -> Result<Telemetry, String> {
        let filter =
            EnvFilter::try_new(&self.filter).map_err(|e| format!("log: invalid filter: {e}"))?;
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = match self.format {
            LogFormat::Text => logs.boxed(),
            LogFormat::Json => logs.json().boxed(),
        }
        .with_filter(filter);
        let traces = tracer_provider(service, &Env::process())?;
        let exported = traces.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("switchboard"))
                .with_filter(Targets::new().with_target(TRACE, Level::DEBUG))
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(exported)
            .try_init()
            .map_err(|e| e.to_string())?;
        if traces.is_some() {
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            TRACES_ON.store(true, Ordering::Relaxed);
        }
        Ok(Telemetry { traces })
    }
}

/// The `OTEL_*` variables, read through one function so tests can give their own.
struct Env(Box<Lookup>);

type Lookup = dyn Fn(&str) -> Option<String>;

impl Env {
    fn process() -> Self {
        Env(Box::new(|name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        }))
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    /// A traces-specific variable, else its general form.
    fn traces(&self, general: &str) -> Option<String> {
        let specific = general.replacen("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_", 1);
        self.get(&specific).or_else(|| self.get(general))
    }
}

/// The tracer provider the variables ask for: none without an endpoint (or
/// with `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`).
fn tracer_provider(service: &'static str, env: &Env) -> Result<Option<SdkTracerProvider>, String> {
    let endpoint = env.traces("OTEL_EXPORTER_OTLP_ENDPOINT");
    let disabled = env.get("OTEL_SDK_DISABLED").is_some_and(|v| v == "true")
        || env.get("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none");
    let Some(endpoint) = endpoint.filter(|_| !disabled) else {
        return Ok(None);
    };
    let protocol = env.traces("OTEL_EXPORTER_OTLP_PROTOCOL");
    let exporter = match protocol.as_deref().unwrap_or("http/protobuf") {
        "grpc" => {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(path) = env.traces("OTEL_EXPORTER_OTLP_CERTIFICATE") {
                let pem = std::fs::read(&path).map_err(|e| {
                    format!("OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read {path}: {e}")
                })?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            let builder = if endpoint.starts_with("https://") {
                crate::tls::install_crypto_provider();
                builder.with_tls_config(tls)
            } else {
                builder
            };
            builder.build()
        }
        http @ ("http/protobuf" | "http/json") => {
            if endpoint.starts_with("https://") {
                return Err("OTEL_EXPORTER_OTLP_ENDPOINT: https:// is served with OTEL_EXPORTER_OTLP_PROTOCOL=grpc; over HTTP the exporter speaks plain http:// (a collector beside the process)".into());
            }
            let protocol = if http == "http/json" {
                Protocol::HttpJson
            } else {
                Protocol::HttpBinary
            };
            // The exporter's HTTP client is built with rustls and no provider of its own.
            crate::tls::install_crypto_provider();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .build()
        }
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc, http/protobuf or http/json, not {other:?}"
            ))
        }
    }
    .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot export traces to {endpoint}: {e}"))?;
    let mut resource = Resource::builder();
    if env.get("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(env)?)
        .with_resource(resource.build())
        .build();
    Ok(Some(provider))
}

/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, refused with the
/// variable named when they make no sense (the SDK would fall back quietly).
fn sampler(env: &Env) -> Result<Sampler, String> {
    let ratio = || -> Result<f64, String> {
        match env.get("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(arg) => arg
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1, not {arg:?}")
                }),
        }
    };
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    Ok(
        match env
            .get("OTEL_TRACES_SAMPLER")
            .as_deref()
            .unwrap_or("parentbased_always_on")
        {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
            "parentbased_always_on" => parent_based(Sampler::AlwaysOn),
            "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
            "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
            other => return Err(format!(
                "OTEL_TRACES_SAMPLER: expected always_on, always_off, traceidratio or their parentbased_ forms, not {other:?}"
            )),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env(Box::new(move |name| vars.get(name).cloned()))
    }

    #[test]
    fn no_endpoint_no_traces() {
        assert!(tracer_provider("t", &env(&[])).expect("valid").is_none());
        let off = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(tracer_provider("t", &off).expect("valid").is_none());
    }

    #[test]
    fn bad_settings_name_their_variable() {
        let bad = |pairs: &[(&str, &str)]| sampler(&env(pairs)).expect_err("refused");
        assert!(bad(&[("OTEL_TRACES_SAMPLER", "sometimes")]).starts_with("OTEL_TRACES_SAMPLER:"));
        assert!(bad(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2")
        ])
        .starts_with("OTEL_TRACES_SAMPLER_ARG:"));
        let protocol = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
        ]);
        let error = tracer_provider("t", &protocol).expect_err("refused");
        assert!(error.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL:"), "{error}");
    }
}
