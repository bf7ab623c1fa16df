//! Small view pieces shared by the list and the per-model page.

use crate::format;
use crate::live;
use crate::snapshot::{
    Activity, BackendKind, BackendSummary, FreedMemory, Generation, Lifecycle, MeasuredMemory,
    MemoryUsage, Observation, ProcessMetrics, StartPhase, StartProgress, StatusFailure,
    StatusFailureKind,
};
use leptos::prelude::*;

// The cells drawn from a whole `BackendSummary` borrow it and copy only what they show: a
// panel page draws a hundred rows, and cloning each row's summary for every cell was a large
// share of its allocations.

/// Lifecycle and backend state, each with colour and text.
pub fn badges(lifecycle: Lifecycle, observation: Option<&Observation>) -> impl IntoView + use<> {
    let state = observation.and_then(|o| o.status.as_ref()).map(|s| s.state);
    let unanswered = observation
        .and_then(|o| o.status_error.as_ref())
        .map(|e| (e.kind.phrase(), e.message.clone()));
    view! {
        <span class=format!("badge lifecycle {}", lifecycle.as_str())>{lifecycle.as_str()}</span>
        {state.map(|s| {
            view! {
                <span class=format!("badge state {}", s.class()) title="State reported by the backend">
                    {s.label()}
                </span>
            }
        })}
        {unanswered.map(|(phrase, message)| view! { <span class="badge state unknown" title=format!("The backend did not answer Status: {message}")>{phrase}</span> })}
    }
}

/// Orders breakdown parts: weights, then KV cache, then the rest by name; adds `other` for any
/// remainder so the parts add up to the total.
pub fn memory_parts(memory: &MemoryUsage) -> Vec<(&str, u64)> {
    let rank = |name: &str| match name {
        "weights" => 0,
        "kv_cache" => 1,
        _ => 2,
    };
    let mut parts: Vec<(&str, u64)> = memory
        .breakdown
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    parts.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then_with(|| a.0.cmp(b.0)));
    let sum: u64 = parts.iter().map(|(_, v)| v).sum();
    if sum < memory.total {
        parts.push(("other", memory.total - sum));
    }
    parts
}

/// Memory as the backend reports it: a stacked bar and its legend, under its total unless the
/// headline above already shows that total (`with_total` false).
pub fn memory_breakdown(memory: &MemoryUsage, with_total: bool) -> impl IntoView + use<> {
    let total = memory.total;
    let parts = memory_parts(memory);
    let scale: u64 = parts.iter().map(|(_, v)| v).sum::<u64>().max(1);
    let segments = parts
        .iter()
        .enumerate()
        .map(|(i, (name, value))| {
            let width = format::Fixed(*value as f64 * 100.0 / scale as f64, 2);
            view! {
                <span
                    class=format!("segment c{}", i % 6)
                    style=format!("width: {width}%")
                    title=format!("{name}: {}", format::Bytes(*value))
                ></span>
            }
        })
        .collect_view();
    let legend = parts
        .into_iter()
        .enumerate()
        .map(|(i, (name, value))| {
            view! {
                <li class=format!("c{}", i % 6)>
                    <span class="part-name">{name.to_owned()}</span>
                    " "
                    <span class="part-value" data-bytes=value>{format::bytes(value)}</span>
                </li>
            }
        })
        .collect_view();
    view! {
        <div class="reported">
            {with_total.then(|| view! {
                <span class="caption">
                    "reported by the backend: "
                    <span class="reported-total" data-bytes=total>{format::bytes(total)}</span>
                </span>
            })}
            // The legend says in words what the bar draws.
            <div class="bar" aria-hidden="true">{segments}</div>
            <ul class="legend">{legend}</ul>
        </div>
    }
}

/// How busy the backend was over the last minutes: one bar per slice (its height the share of
/// BUSY answers), and the share over the whole window in words (what assistive technology
/// reads; the bars are hidden from it). The bars are one SVG path, so a row costs one element
/// however many slices have answers.
pub fn activity_bars(activity: &Activity) -> impl IntoView + use<> {
    let minutes = Activity::WINDOW_SECS / 60;
    let percent = format::Fixed(f64::from(activity.busy_ratio) * 100.0, 0);
    let summary = format!("busy {percent} % of the last {minutes} min");
    view! {
        <div class="activity" class:busy-now=activity.busy_now>
            // The text beside the bars says what they show.
            <svg
                viewBox=format!("0 0 {} 100", activity.buckets.len() * 10)
                preserveAspectRatio="none"
                aria-hidden="true"
            >
                <path d=bars_path(&activity.buckets) />
            </svg>
            <span class="activity-text">{summary}</span>
        </div>
    }
}

/// The SVG path of the activity bars, in whole units (a slice is 10 wide, the box 100 high):
/// for each slice with answers, a bar 8 wide at its place, from the bottom up to its share
/// of 100, at least 4 so that an idle slice with answers still shows.
fn bars_path(buckets: &[Option<u8>]) -> String {
    use std::fmt::Write as _;
    let mut path = String::with_capacity(buckets.len() * 20);
    for (i, bucket) in buckets.iter().enumerate() {
        if let Some(percent) = bucket {
            let top = 100 - (*percent).clamp(4, 100);
            // Writing to a String cannot fail.
            let _ = write!(path, "M{} {top}h8V100h-8Z", i * 10);
        }
    }
    path
}

/// Generation speed and tokens of the current (or last) request, from `GetMetrics`.
pub fn generation_text(generation: &Generation) -> impl IntoView + use<> {
    view! {
        <span class="generation" data-testid="generation">
            {format!(
                "{} tokens/s · {} tokens generated",
                format::Fixed(f64::from(generation.tokens_per_second), 1),
                generation.tokens_generated
            )}
        </span>
    }
}

/// Why `Status` gave no answer, as the panel words it: the kind, and the backend's message
/// unless it merely does not implement `Status`.
pub fn failure_text(failure: &StatusFailure) -> String {
    match failure.kind {
        StatusFailureKind::Unimplemented => failure.kind.phrase().to_string(),
        _ => format!("{} ({})", failure.kind.phrase(), failure.message),
    }
}

/// A start's progress in words: `starting… 12s · health check 3 of 20`.
pub fn starting_text(progress: Option<&StartProgress>) -> String {
    let Some(progress) = progress else {
        return "starting…".to_string();
    };
    let elapsed = format::duration(progress.elapsed_secs);
    match &progress.step {
        StartPhase::HealthCheck { attempt, of } => {
            format!("starting… {elapsed} · health check {attempt} of {of}")
        }
        StartPhase::Loading { model } => format!("loading {model}… {elapsed}"),
    }
}

/// OS process metrics, labelled as such, with the reason the backend gave none.
pub fn process_figures(
    metrics: &ProcessMetrics,
    reason: Option<&StatusFailure>,
) -> impl IntoView + use<> {
    view! {
        <div class="process-metrics">
            <p class="source">
                <span class="tag">"Process metrics"</span>
                {reason.map(|r| view! { <span class="why">{format!("backend gave none: {}", failure_text(r))}</span> })}
            </p>
            <dl>
                <div><dt>"RSS"</dt><dd data-bytes=metrics.memory_info.rss>{format::bytes(metrics.memory_info.rss)}</dd></div>
                <div><dt>"VMS"</dt><dd>{format::bytes(metrics.memory_info.vms)}</dd></div>
                <div><dt>"Memory"</dt><dd>{format::percent(f64::from(metrics.memory_percent))}</dd></div>
                <div><dt>"CPU"</dt><dd>{format::percent(metrics.cpu_percent)}</dd></div>
            </dl>
        </div>
    }
}

/// The memory column: the memory in use (measured for the process tree when the pid is known),
/// its GPU memory, then what the backend reports (flagged when it looks like virtual size), or
/// the process figures when it reports nothing, or why there is no data.
pub fn memory_cell(backend: &BackendSummary) -> AnyView {
    if backend.lifecycle == Lifecycle::Failed {
        return failure_details(backend).into_any();
    }
    if let (Lifecycle::Stopped, Some(freed)) = (backend.lifecycle, &backend.freed) {
        return view! { <FreedNote freed=freed.clone() /> }.into_any();
    }
    let Some(observation) = &backend.observation else {
        let text = match backend.lifecycle {
            Lifecycle::Starting => starting_text(backend.start_progress.as_ref()),
            Lifecycle::Running => "waiting for the first sample…".to_string(),
            _ => "—".to_string(),
        };
        return view! { <span class="muted" data-testid="start-progress">{text}</span> }.into_any();
    };
    let headline = observation.memory_bytes().map(|total| {
        let source = match &observation.measured {
            Some(m) if m.processes.len() > 1 => {
                format!("measured, {} processes", m.processes.len())
            }
            Some(_) => "measured".to_string(),
            None if observation.reported().is_some() => "reported".to_string(),
            None => "RSS".to_string(),
        };
        let vram = observation
            .measured
            .as_ref()
            .map(MeasuredMemory::gpu_total)
            .filter(|&bytes| bytes > 0)
            .map(|bytes| {
                view! {
                    <span class="vram" data-testid="vram" data-bytes=bytes>
                        {format!("{} VRAM", format::Bytes(bytes))}
                    </span>
                }
            });
        view! {
            <p class="memory-headline">
                <span class="memory-total" data-bytes=total>{format::bytes(total)}</span>
                " "
                <span class="memory-source">{source}</span>
                {vram}
            </p>
        }
    });
    let looks_virtual = observation.reported_looks_virtual();
    let reason = observation.status_error.as_ref();
    let detail = match (&observation.status, &observation.process) {
        (Some(status), _) => match &status.memory {
            Some(memory) => {
                let warning = looks_virtual.then(|| view! {
                    <p class="warning" data-testid="reported-virtual">
                        {format!("Reported total {} looks like virtual size, not memory in use", format::Bytes(memory.total))}
                    </p>
                });
                // Measured memory heads the cell; else the headline is this total.
                let with_total = observation.measured.is_some();
                view! { {warning}{memory_breakdown(memory, with_total)} }.into_any()
            }
            None => {
                view! { <p class="muted caption">"the backend reports no memory"</p> }.into_any()
            }
        },
        (None, Some(metrics)) => process_figures(metrics, reason).into_any(),
        (None, None) => {
            let mut why = vec![reason.map_or_else(|| "no answer".to_string(), failure_text)];
            why.extend(observation.process_error.clone());
            view! { <span class="warning">{format!("No data: {}", why.join("; "))}</span> }
                .into_any()
        }
    };
    view! { <div class="memory">{headline}{detail}</div> }.into_any()
}

/// What the last shutdown released, and what is still held (a warning).
#[component]
pub fn FreedNote(freed: FreedMemory) -> impl IntoView {
    let released = freed.rss_released();
    let mut text = format!("Freed {}", format::Bytes(released));
    if let Some(gpu) = freed.gpu_released() {
        text.push_str(&format!(" and {} of GPU memory", format::Bytes(gpu)));
    }
    text.push_str(&format!(
        " at the last stop (host: {} available before, {} after)",
        format::Bytes(freed.host_available_before),
        format::Bytes(freed.host_available_after)
    ));
    let held = freed
        .still_held
        .into_iter()
        .map(|held| view! { <p class="warning" role="alert">{format!("Still held: {held}")}</p> })
        .collect_view();
    view! {
        <div class="freed" data-testid="freed">
            <p class="muted" data-bytes=released>{text}</p>
            {held}
        </div>
    }
}

/// The processes of a backend's tree with their memory (the model page).
#[component]
pub fn ProcessTree(measured: MeasuredMemory) -> impl IntoView {
    let with_gpu = !measured.gpu_memory.is_empty();
    let rows = measured
        .processes
        .into_iter()
        .map(|p| {
            view! {
                <tr>
                    <td>{p.pid}</td>
                    <td>{p.name}</td>
                    <td data-bytes=p.rss>{format::bytes(p.rss)}</td>
                    {with_gpu.then(|| view! { <td>{p.gpu_memory.map(format::bytes).unwrap_or_else(|| "—".into())}</td> })}
                </tr>
            }
        })
        .collect_view();
    let gpus = measured
        .gpu_memory
        .into_iter()
        .map(|g| view! { <li>{format!("GPU {} ({}): {}", g.index, g.name, format::Bytes(g.used))}</li> })
        .collect_view();
    view! {
        <table class="process-tree" data-testid="process-tree">
            <caption>"Processes (measured)"</caption>
            <thead>
                <tr>
                    <th scope="col">"pid"</th>
                    <th scope="col">"command"</th>
                    <th scope="col">"RSS"</th>
                    {with_gpu.then(|| view! { <th scope="col">"VRAM"</th> })}
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
        <ul class="gpu-use">{gpus}</ul>
    }
}

/// The last error and the backend's last stderr lines.
pub fn failure_details(backend: &BackendSummary) -> impl IntoView + use<> {
    let tail = backend.stderr_tail.join("\n");
    let restarts = backend.restarts;
    view! {
        <div class="failure" role="alert">
            <p class="error-message">{backend.last_error.clone().unwrap_or_else(|| "failed".to_string())}</p>
            {backend.restart_in_secs.map(|secs| view! {
                <p class="restarting" data-testid="restart-countdown">
                    {format!("Restarting in {} ({restarts} restarts so far)", format::duration(secs))}
                </p>
            })}
            {(!tail.is_empty()).then(|| view! { <pre class="stderr" aria-label="Last stderr lines">{tail}</pre> })}
        </div>
    }
}

/// pid, address, uptime, and (when they apply) the idle-stop countdown and restarts: a list of
/// `dt`/`dd` pairs without wrappers, laid out as two columns by the stylesheet.
pub fn process_info(backend: &BackendSummary) -> AnyView {
    let idle = backend.idle_left_secs.map(|secs| {
        view! { <dt>"idle stop in"</dt><dd data-testid="idle-countdown">{format::duration(secs)}</dd> }
            .into_any()
    });
    let restarts = (backend.restarts > 0).then(|| {
        let last = backend.last_exit.clone().unwrap_or_default();
        view! {
            <dt>"restarts"</dt>
            <dd title=backend.previous_run_tail.join("\n")>{format!("{} (last: {last})", backend.restarts)}</dd>
        }
        .into_any()
    });
    view! {
        <dl class="process-info">
            <dt>"pid"</dt><dd>{backend.pid.map(|p| p.to_string()).unwrap_or_else(|| "—".into())}</dd>
            <dt>"address"</dt><dd>{backend.address.clone().unwrap_or_else(|| "—".into())}</dd>
            <dt>"uptime"</dt><dd>{backend.uptime_secs.map(format::duration).unwrap_or_else(|| "—".into())}</dd>
            {idle}
            {restarts}
        </dl>
    }
    .into_any()
}

/// Shut down (running or starting) or Start (stopped or failed managed) for one model.
///
/// A plain HTML form posting to the JSON API's form-encoded variant, so it works before
/// hydration and without JavaScript; once hydrated it asks for confirmation and posts JSON
/// without leaving the page. Disabled for read-only keys (`can_control` false).
#[component]
pub fn ActionButton(
    name: String,
    lifecycle: Lifecycle,
    kind: BackendKind,
    return_to: String,
    on_done: Callback<()>,
    can_control: bool,
    /// Why the last shutdown was refused (the backend stayed busy): offers a forced stop.
    refused: Option<String>,
) -> impl IntoView {
    let pending = RwSignal::new(false);
    let failure = RwSignal::new(None::<String>);
    // A shutdown asks first; a start does not.
    let (path, label, busy_label, confirm) = match lifecycle {
        Lifecycle::Running | Lifecycle::Starting => {
            ("/backend/shutdown", "Shut down", "Shutting down…", true)
        }
        Lifecycle::Stopped | Lifecycle::Failed if kind == BackendKind::Managed => {
            ("/backend/load", "Start", "Starting…", false)
        }
        _ => return ().into_any(),
    };
    let submit = submitter(
        name.clone(),
        path,
        false,
        confirm,
        pending,
        failure,
        on_done,
    );
    let read_only = (!can_control)
        .then_some("Read-only key: sign in with an admin key to shut down or start models");
    let force_stop = refused
        .filter(|_| lifecycle == Lifecycle::Running)
        .map(|reason| view! { <ForceStop name=name.clone() reason return_to=return_to.clone() on_done can_control /> });
    view! {
        <form method="post" action=path class="action" on:submit=submit>
            <input type="hidden" name="model" value=name.clone() />
            <input type="hidden" name="return_to" value=return_to.clone() />
            <button
                type="submit"
                class=if path == "/backend/shutdown" { "danger" } else { "primary" }
                aria-label=format!("{label} {name}")
                title=read_only
                disabled=move || pending.get() || !can_control
            >
                {move || if pending.get() { busy_label } else { label }}
            </button>
            {move || failure.get().map(|m| view! { <p class="action-error" role="alert">{m}</p> })}
        </form>
        {force_stop}
    }
    .into_any()
}

/// Offered once a shutdown was refused because the backend stayed busy: stops it anyway.
/// Its confirmation is a required checkbox, so it works without JavaScript too.
#[component]
fn ForceStop(
    name: String,
    reason: String,
    return_to: String,
    on_done: Callback<()>,
    can_control: bool,
) -> impl IntoView {
    let pending = RwSignal::new(false);
    let failure = RwSignal::new(None::<String>);
    let submit = submitter(
        name.clone(),
        "/backend/shutdown",
        true,
        false,
        pending,
        failure,
        on_done,
    );
    view! {
        <form method="post" action="/backend/shutdown" class="action force-stop" on:submit=submit>
            <p class="refused">{reason}</p>
            <input type="hidden" name="model" value=name.clone() />
            <input type="hidden" name="return_to" value=return_to />
            <label class="confirm">
                <input type="checkbox" name="force" value="true" required disabled=!can_control />
                " Stop it although it is busy (its requests in flight fail)"
            </label>
            <button
                type="submit"
                class="danger"
                aria-label=format!("Force stop {name}")
                disabled=move || pending.get() || !can_control
            >
                {move || if pending.get() { "Stopping…" } else { "Force stop" }}
            </button>
            {move || failure.get().map(|m| view! { <p class="action-error" role="alert">{m}</p> })}
        </form>
    }
}

/// The hydrated submit handler of a control form: confirms the shutdown (when `confirm`), posts
/// JSON without leaving the page, shows a failure, and refreshes the view.
fn submitter(
    model: String,
    path: &'static str,
    force: bool,
    confirm: bool,
    pending: RwSignal<bool>,
    failure: RwSignal<Option<String>>,
    on_done: Callback<()>,
) -> impl Fn(leptos::ev::SubmitEvent) + 'static {
    move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if pending.get_untracked() {
            return;
        }
        if confirm
            && !live::confirm(&format!(
                "Shut down {model}? Its memory will be freed and the process stopped."
            ))
        {
            return;
        }
        pending.set(true);
        failure.set(None);
        let model = model.clone();
        leptos::task::spawn_local(async move {
            let result = live::post_model_action(path, &model, force).await;
            pending.set(false);
            if let Err(message) = result {
                failure.set(Some(message));
            }
            on_done.run(());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn each_slice_with_answers_is_one_bar_of_its_share() {
        assert_eq!(
            bars_path(&[None, Some(0), Some(50), Some(100)]),
            "M10 96h8V100h-8ZM20 50h8V100h-8ZM30 0h8V100h-8Z"
        );
        assert_eq!(bars_path(&[None, None]), "");
    }

    #[test]
    fn parts_add_up_to_the_total_with_weights_first() {
        let memory = MemoryUsage {
            total: 100,
            breakdown: BTreeMap::from([
                ("activations".to_string(), 10),
                ("kv_cache".to_string(), 20),
                ("weights".to_string(), 50),
            ]),
        };
        let parts = memory_parts(&memory);
        let names: Vec<&str> = parts.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["weights", "kv_cache", "activations", "other"]);
        assert_eq!(parts.iter().map(|(_, v)| v).sum::<u64>(), 100);
    }
}
