//! Prometheus metrics: `GET /metrics` in the Prometheus text exposition format (0.0.4).
//!
//! Two kinds of series, all named `backend_monitor_*` and labelled with the `model`:
//! - **Gauges** that describe each model now (lifecycle, backend state, memory, its process) are
//!   built at scrape time from the registry's cached observations, so a scrape never waits on a
//!   backend and a model that stops reporting something stops showing it.
//! - **Counters and a histogram** of work done (the observer's `Status` calls, the answers of
//!   `/backend/monitor`) are recorded where the work happens, into the families held by
//!   [`Metrics`]. Every label combination is created at zero up front, so `rate()` sees the
//!   first event.
//!
//! Enum-like values (lifecycle, backend state) are one series per possible value, 1 for the
//! current one and 0 for the others, as Prometheus' naming conventions suggest.

use crate::error::ApiError;
use crate::grpc::CallError;
use crate::registry::{Reading, Registry, RegistryError};
use crate::startup::AppState;
use app::snapshot::{
    BackendKind, BackendState, BackendSummary, HostStats, Lifecycle, StatusFailureKind,
};
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as Exposition;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// Prefix of every metric name.
const PREFIX: &str = "backend_monitor";

/// Upper bounds of the `Status` latency buckets, in seconds: 1 ms up to 10 s, past any sensible
/// `status_timeout`.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every lifecycle, in the order the series are written.
const LIFECYCLES: [Lifecycle; 5] = [
    Lifecycle::Starting,
    Lifecycle::Running,
    Lifecycle::Stopping,
    Lifecycle::Stopped,
    Lifecycle::Failed,
];

/// Every backend state, in the order the series are written.
const STATES: [BackendState; 4] = [
    BackendState::Uninitialized,
    BackendState::Busy,
    BackendState::Ready,
    BackendState::Error,
];

/// Values of the `outcome` label of `backend_monitor_status_checks_total`.
const OUTCOMES: [&str; 5] = ["ok", "unimplemented", "timed_out", "unreachable", "error"];

/// Values of the `result` label of `backend_monitor_monitor_requests_total`.
const RESULTS: [&str; 3] = ["status", "fallback", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    model: String,
    backend: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LifecycleLabels {
    model: String,
    lifecycle: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    model: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    model: String,
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelGpuLabels {
    model: String,
    gpu: String,
    gpu_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    gpu: String,
    gpu_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    model: String,
    result: &'static str,
}

type LatencyFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

/// The recorded families (counters, histogram); owned by the [`Registry`].
#[derive(Debug)]
pub struct Metrics {
    recorded: Exposition,
    status_duration: LatencyFamily,
    status_checks: Family<OutcomeLabels, Counter>,
    monitor_requests: Family<ResultLabels, Counter>,
}

impl Metrics {
    /// Registers the recorded families, with every series of each model at zero.
    pub fn new<'a>(models: impl IntoIterator<Item = &'a str>) -> Self {
        let status_duration =
            LatencyFamily::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let status_checks = Family::<OutcomeLabels, Counter>::default();
        let monitor_requests = Family::<ResultLabels, Counter>::default();
        // Creating a series (and dropping the guard at once) is all that is wanted here.
        for model in models {
            let model = model.to_string();
            let _ = status_duration.get_or_create(&ModelLabels {
                model: model.clone(),
            });
            for outcome in OUTCOMES {
                let _ = status_checks.get_or_create(&OutcomeLabels {
                    model: model.clone(),
                    outcome,
                });
            }
            for result in RESULTS {
                let _ = monitor_requests.get_or_create(&ResultLabels {
                    model: model.clone(),
                    result,
                });
            }
        }
        let mut recorded = Exposition::with_prefix(PREFIX);
        recorded.register(
            "status_duration_seconds",
            "How long the observer's gRPC Status calls took, whatever their outcome",
            status_duration.clone(),
        );
        recorded.register(
            "status_checks",
            "The observer's gRPC Status calls, by outcome (ok, unimplemented, timed_out, unreachable, error)",
            status_checks.clone(),
        );
        recorded.register(
            "monitor_requests",
            "Answers of /backend/monitor for a configured model: from Status (status), from the process fallback (fallback), or an error (error)",
            monitor_requests.clone(),
        );
        Self {
            recorded,
            status_duration,
            status_checks,
            monitor_requests,
        }
    }

    /// Awaits the observer's `Status` call for `model`, recording how long it took and how it
    /// ended.
    pub async fn timed_status<T>(
        &self,
        model: &str,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let answer = call.await;
        self.status_checked(
            model,
            started.elapsed(),
            answer.as_ref().err().map(CallError::kind),
        );
        answer
    }

    fn status_checked(&self, model: &str, took: Duration, failure: Option<StatusFailureKind>) {
        let model = model.to_string();
        self.status_duration
            .get_or_create(&ModelLabels {
                model: model.clone(),
            })
            .observe(took.as_secs_f64());
        let outcome = match failure {
            None => "ok",
            Some(StatusFailureKind::Unimplemented) => "unimplemented",
            Some(StatusFailureKind::TimedOut) => "timed_out",
            Some(StatusFailureKind::Unreachable) => "unreachable",
            Some(StatusFailureKind::Error) => "error",
        };
        self.status_checks
            .get_or_create(&OutcomeLabels { model, outcome })
            .inc();
    }

    /// Records how `/backend/monitor` answered for the configured model `model`.
    pub fn monitored(&self, model: &str, answer: &Result<Reading, RegistryError>) {
        let result = match answer {
            Ok(Reading::Backend(_)) => "status",
            Ok(Reading::Process(_)) => "fallback",
            Err(_) => "error",
        };
        self.monitor_requests
            .get_or_create(&ResultLabels {
                model: model.to_string(),
                result,
            })
            .inc();
    }

    /// The exposition: gauges from `models` (the cached summaries) and the `host` (once
    /// sampled), then the recorded families.
    pub fn encode(
        &self,
        models: &[BackendSummary],
        host: Option<&HostStats>,
    ) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &snapshot(models))?;
        if let Some(host) = host {
            prometheus_text::encode(&mut text, &host_gauges(host))?;
        }
        prometheus_text::encode(&mut text, &self.recorded)?;
        Ok(text)
    }
}

/// Gauges describing each model as the registry last saw it.
fn snapshot(models: &[BackendSummary]) -> Exposition {
    let info = Family::<InfoLabels, Gauge>::default();
    let up = Family::<ModelLabels, Gauge>::default();
    let lifecycle = Family::<LifecycleLabels, Gauge>::default();
    let state = Family::<StateLabels, Gauge>::default();
    let memory = Family::<ModelLabels, Gauge>::default();
    let component = Family::<ComponentLabels, Gauge>::default();
    let rss = Family::<ModelLabels, Gauge>::default();
    let vms = Family::<ModelLabels, Gauge>::default();
    let cpu = Family::<ModelLabels, Gauge<f64, AtomicU64>>::default();
    let restarts = Family::<ModelLabels, Counter>::default();
    let busy_ratio = Family::<ModelLabels, Gauge<f64, AtomicU64>>::default();
    let idle_left = Family::<ModelLabels, Gauge>::default();
    let tokens_per_second = Family::<ModelLabels, Gauge<f64, AtomicU64>>::default();
    let tokens_generated = Family::<ModelLabels, Gauge>::default();
    let measured = Family::<ModelLabels, Gauge>::default();
    let processes = Family::<ModelLabels, Gauge>::default();
    let gpu_memory = Family::<ModelGpuLabels, Gauge>::default();
    for summary in models {
        let model = || summary.name.clone();
        let of_model = ModelLabels { model: model() };
        info.get_or_create(&InfoLabels {
            model: model(),
            backend: summary.backend.clone(),
            kind: match summary.kind {
                BackendKind::Managed => "managed",
                BackendKind::External => "external",
            },
        })
        .set(1);
        for value in LIFECYCLES {
            lifecycle
                .get_or_create(&LifecycleLabels {
                    model: model(),
                    lifecycle: value.as_str(),
                })
                .set(i64::from(summary.lifecycle == value));
        }
        restarts
            .get_or_create(&of_model)
            .inc_by(u64::from(summary.restarts));
        if let Some(activity) = &summary.activity {
            busy_ratio
                .get_or_create(&of_model)
                .set(f64::from(activity.busy_ratio));
        }
        if let Some(secs) = summary.idle_left_secs {
            idle_left
                .get_or_create(&of_model)
                .set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
        let observation = summary.observation.as_ref();
        if let Some(generation) = observation.and_then(|o| o.generation.as_ref()) {
            tokens_per_second
                .get_or_create(&of_model)
                .set(f64::from(generation.tokens_per_second));
            tokens_generated
                .get_or_create(&of_model)
                .set(i64::from(generation.tokens_generated));
        }
        if let Some(tree) = observation.and_then(|o| o.measured.as_ref()) {
            measured.get_or_create(&of_model).set(bytes(tree.rss));
            processes
                .get_or_create(&of_model)
                .set(i64::try_from(tree.processes.len()).unwrap_or(i64::MAX));
            for gpu in &tree.gpu_memory {
                gpu_memory
                    .get_or_create(&ModelGpuLabels {
                        model: model(),
                        gpu: gpu.index.to_string(),
                        gpu_name: gpu.name.clone(),
                    })
                    .set(bytes(gpu.used));
            }
        }
        let status = observation.and_then(|o| o.status.as_ref());
        let answered = status.is_some()
            || observation
                .and_then(|o| o.status_error.as_ref())
                .is_some_and(|e| e.kind == StatusFailureKind::Unimplemented);
        up.get_or_create(&of_model).set(i64::from(
            summary.lifecycle == Lifecycle::Running && answered,
        ));
        for value in STATES {
            state
                .get_or_create(&StateLabels {
                    model: model(),
                    state: state_name(value),
                })
                .set(i64::from(status.is_some_and(|s| s.state == value)));
        }
        if let Some(reported) = status.and_then(|s| s.memory.as_ref()) {
            memory.get_or_create(&of_model).set(bytes(reported.total));
            for (name, value) in &reported.breakdown {
                component
                    .get_or_create(&ComponentLabels {
                        model: model(),
                        component: name.clone(),
                    })
                    .set(bytes(*value));
            }
        }
        if let Some(process) = observation.and_then(|o| o.process.as_ref()) {
            rss.get_or_create(&of_model)
                .set(bytes(process.memory_info.rss));
            vms.get_or_create(&of_model)
                .set(bytes(process.memory_info.vms));
            cpu.get_or_create(&of_model)
                .set(process.cpu_percent / 100.0);
        }
    }
    let mut registry = Exposition::with_prefix(PREFIX);
    registry.register(
        "model_info",
        "A configured model (always 1), with its backend label and kind (managed or external)",
        info,
    );
    registry.register(
        "up",
        "1 when the model is running and its backend answered the last Status call (UNIMPLEMENTED counts as an answer), else 0",
        up,
    );
    registry.register(
        "lifecycle",
        "1 for the model's current lifecycle (starting, running, stopping, stopped, failed), 0 for the others",
        lifecycle,
    );
    registry.register(
        "backend_state",
        "1 for the state the backend last reported through Status (uninitialized, busy, ready, error), 0 for the others; all 0 without an answer",
        state,
    );
    registry.register(
        "memory_bytes",
        "Memory in use as the backend last reported it through Status",
        memory,
    );
    registry.register(
        "memory_component_bytes",
        "Memory in use per component (weights, kv_cache, ...) as the backend last reported it through Status",
        component,
    );
    registry.register(
        "process_resident_memory_bytes",
        "Resident set size of the model's backend process",
        rss,
    );
    registry.register(
        "process_virtual_memory_bytes",
        "Virtual memory size of the model's backend process",
        vms,
    );
    registry.register(
        "process_cpu_usage_ratio",
        "CPU used by the model's backend process over the last sampling window, in cores (1 = one full core)",
        cpu,
    );
    registry.register(
        "restarts",
        "Automatic restarts of the model's backend after crashes (restart = \"on-failure\")",
        restarts,
    );
    registry.register(
        "busy_ratio",
        "Share of the model's Status answers of the last 5 minutes that were BUSY (0 to 1)",
        busy_ratio,
    );
    registry.register(
        "idle_stop_seconds",
        "Time until an idle backend is stopped (only with an idle_timeout)",
        idle_left,
    );
    registry.register(
        "measured_resident_memory_bytes",
        "Resident memory of the model's whole process tree (the backend and its workers), measured whatever Status reports",
        measured,
    );
    registry.register(
        "measured_processes",
        "Processes in the model's process tree",
        processes,
    );
    registry.register(
        "gpu_memory_bytes",
        "GPU memory held by the model's process tree on each GPU (NVML; only with an NVIDIA driver)",
        gpu_memory,
    );
    registry.register(
        "generation_tokens_per_second",
        "Generation speed of the backend's current (or last) request, from GetMetrics (backends that implement it, e.g. llama.cpp)",
        tokens_per_second,
    );
    registry.register(
        "generated_tokens",
        "Tokens generated by the backend's current (or last) request, from GetMetrics",
        tokens_generated,
    );
    registry
}

/// Gauges describing the host: memory, swap, CPU, load, and each GPU's memory.
fn host_gauges(host: &HostStats) -> Exposition {
    let mut registry = Exposition::with_prefix(PREFIX);
    let gauge = |value: u64| {
        let gauge = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        gauge.set(bytes(value));
        gauge
    };
    registry.register(
        "host_memory_total_bytes",
        "Physical memory of the host",
        gauge(host.memory_total),
    );
    registry.register(
        "host_memory_available_bytes",
        "Memory the host can still give to programs without swapping",
        gauge(host.memory_available),
    );
    registry.register(
        "host_swap_used_bytes",
        "Swap in use on the host",
        gauge(host.swap_used),
    );
    registry.register(
        "host_backends_memory_bytes",
        "Measured resident memory of the running backends' process trees",
        gauge(host.backends_memory),
    );
    let cpu = Gauge::<f64, AtomicU64>::default();
    cpu.set(f64::from(host.cpu_percent) / 100.0);
    registry.register(
        "host_cpu_usage_ratio",
        "CPU use of the whole host, as a share of all its logical CPUs (0 to 1)",
        cpu,
    );
    let load = Gauge::<f64, AtomicU64>::default();
    load.set(host.load[0]);
    registry.register("host_load1", "The host's 1-minute load average", load);
    let used = Family::<GpuLabels, Gauge>::default();
    let total = Family::<GpuLabels, Gauge>::default();
    for gpu in &host.gpus {
        let labels = GpuLabels {
            gpu: gpu.index.to_string(),
            gpu_name: gpu.name.clone(),
        };
        used.get_or_create(&labels).set(bytes(gpu.memory_used));
        total.get_or_create(&labels).set(bytes(gpu.memory_total));
    }
    registry.register(
        "host_gpu_memory_used_bytes",
        "Memory in use on each GPU, by every process (NVML; only with an NVIDIA driver)",
        used,
    );
    registry.register(
        "host_gpu_memory_total_bytes",
        "Memory installed on each GPU (NVML; only with an NVIDIA driver)",
        total,
    );
    registry
}

/// The lower-case state word used as a label value.
fn state_name(state: BackendState) -> &'static str {
    match state {
        BackendState::Uninitialized => "uninitialized",
        BackendState::Busy => "busy",
        BackendState::Ready => "ready",
        BackendState::Error => "error",
    }
}

/// Bytes as a gauge value (saturating; no machine has 8 EiB).
fn bytes(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `GET /metrics`; merged into the app router in `startup.rs`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Prometheus metrics
///
/// Text exposition format 0.0.4, from the registry's cached observations (a scrape never waits
/// on a backend). Read keys may scrape.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "The exposition", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub(crate) async fn scrape(State(registry): State<Arc<Registry>>) -> Result<Response, ApiError> {
    let text = registry.metrics()?;
    Ok(([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(name: &str) -> BackendSummary {
        BackendSummary::new(name, BackendKind::Managed, "llama-cpp", Lifecycle::Stopped)
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        let mut found: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        found.sort();
        found
    }

    #[test]
    fn a_stopped_model_has_its_lifecycle_but_no_memory_or_process_series() {
        let metrics = Metrics::new(["chat"]);
        let text = metrics.encode(&[stopped("chat")], None).expect("encodes");
        assert_eq!(
            lines(&text, "backend_monitor_lifecycle{"),
            [
                r#"backend_monitor_lifecycle{model="chat",lifecycle="failed"} 0"#,
                r#"backend_monitor_lifecycle{model="chat",lifecycle="running"} 0"#,
                r#"backend_monitor_lifecycle{model="chat",lifecycle="starting"} 0"#,
                r#"backend_monitor_lifecycle{model="chat",lifecycle="stopped"} 1"#,
                r#"backend_monitor_lifecycle{model="chat",lifecycle="stopping"} 0"#,
            ]
        );
        assert_eq!(
            lines(&text, "backend_monitor_up{"),
            [r#"backend_monitor_up{model="chat"} 0"#]
        );
        for absent in [
            "backend_monitor_memory_bytes{",
            "backend_monitor_memory_component_bytes{",
            "backend_monitor_process_resident_memory_bytes{",
        ] {
            assert!(lines(&text, absent).is_empty(), "{absent}");
        }
    }

    #[tokio::test]
    async fn each_status_outcome_has_its_own_series() {
        let metrics = Metrics::new(["chat"]);
        let failures = [
            CallError::Unimplemented,
            CallError::TimedOut(Duration::from_secs(1)),
            CallError::Unreachable("refused".into()),
            CallError::Rejected("no".into()),
        ];
        for failure in failures {
            let answer = metrics.timed_status("chat", async { Err::<(), _>(failure) });
            assert!(answer.await.is_err());
        }
        let answer = metrics.timed_status("chat", async { Ok::<_, CallError>(7) });
        assert_eq!(answer.await, Ok(7));
        let text = metrics.encode(&[], None).expect("encodes");
        assert_eq!(
            lines(&text, "backend_monitor_status_checks_total{"),
            [
                r#"backend_monitor_status_checks_total{model="chat",outcome="error"} 1"#,
                r#"backend_monitor_status_checks_total{model="chat",outcome="ok"} 1"#,
                r#"backend_monitor_status_checks_total{model="chat",outcome="timed_out"} 1"#,
                r#"backend_monitor_status_checks_total{model="chat",outcome="unimplemented"} 1"#,
                r#"backend_monitor_status_checks_total{model="chat",outcome="unreachable"} 1"#,
            ]
        );
        assert_eq!(
            lines(&text, "backend_monitor_status_duration_seconds_count{"),
            [r#"backend_monitor_status_duration_seconds_count{model="chat"} 5"#]
        );
    }
}
