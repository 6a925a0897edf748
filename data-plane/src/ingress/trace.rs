//! A request's place in a W3C trace: the client's `traceparent` continued
//! (the request's span becomes a child of the client's), the trace id on the
//! request's log lines and usage record, and the context sent on to the
//! provider. Without an OTLP exporter nothing is computed: the client's
//! headers are passed to the provider as they came.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use shared::telemetry::traces_enabled;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What a request carries of its trace.
#[derive(Clone, Debug, Default)]
pub struct ClientTrace {
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
    /// 32 lowercase hex digits, when the request is in a trace.
    pub trace_id: Option<String>,
    /// Whether the request's trace is exported (sampled).
    pub sampled: bool,
}

/// Joins `span` (the request's) to the client's trace, if it sent one, and
/// records the trace id on it.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) -> ClientTrace {
    let mut trace = ClientTrace {
        traceparent: headers.get(TRACEPARENT).cloned(),
        tracestate: headers.get(TRACESTATE).cloned(),
        trace_id: None,
        sampled: false,
    };
    trace.trace_id = if traces_enabled() {
        shared::telemetry::join_trace(span, headers)
    } else {
        trace
            .traceparent
            .as_ref()
            .and_then(|v| trace_id_of(v.as_bytes()))
    };
    if let Some(id) = &trace.trace_id {
        span.record("trace_id", id.as_str());
    }
    trace.sampled = shared::telemetry::is_sampled(span);
    trace
}

impl ClientTrace {
    /// The span of one of the request's steps, made only when the request's
    /// trace is exported.
    pub fn step(&self, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
        if self.sampled {
            make()
        } else {
            tracing::Span::none()
        }
    }

    /// Headers for a call to a provider: the current span (the attempt's)
    /// as parent when traces are exported, else the client's own.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if traces_enabled() {
            return shared::telemetry::inject_current(headers);
        }
        if let Some(parent) = &self.traceparent {
            headers.insert(TRACEPARENT, parent.clone());
            if let Some(state) = &self.tracestate {
                headers.insert(TRACESTATE, state.clone());
            }
        }
    }
}

/// The trace id of a well-formed `traceparent` (version 00: `00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id_of(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |s: &str, len| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    valid.then(|| trace_id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::trace_id_of;

    #[test]
    fn only_well_formed_traceparents_give_a_trace_id() {
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_of(good).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f35-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert_eq!(trace_id_of(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
