//! The per-model page (`/models/<name>`): status, memory and CPU history, and recent log lines.

use crate::chart::{self, Chart};
use crate::format;
use crate::live;
use crate::snapshot::{HistoryPoint, LOG_LINES_KEPT, LogStream, ModelDetail};
use crate::widgets::{
    ActionButton, ProcessTree, activity_bars, badges, generation_text, memory_cell, process_info,
};
use leptos::prelude::*;

/// One model with its history and its log lines after `logs_since` (all kept lines for 0);
/// `None` when no model has that name.
#[server(prefix = "/_panel", endpoint = "model")]
pub async fn get_model(
    name: String,
    logs_since: u64,
) -> Result<Option<ModelDetail>, ServerFnError> {
    let directory = use_context::<crate::directory::SharedDirectory>()
        .ok_or_else(|| ServerFnError::new("the backend directory is not available"))?;
    Ok(directory.detail(&name, logs_since))
}

/// The page for one model, drawn first from the detail the server loaded (see
/// [`crate::page_data`]), then kept fresh in the browser.
#[component]
pub fn ModelPage(detail: ModelDetail, can_control: bool) -> impl IntoView {
    view! {
        <p class="breadcrumb"><a href="/">"← All backends"</a></p>
        <ModelView initial=detail can_control />
    }
}

#[component]
fn ModelView(initial: ModelDetail, can_control: bool) -> impl IntoView {
    let name = initial.summary.name.clone();
    // Log lines are fetched incrementally: each refresh asks only for lines after the last one.
    let logs = RwSignal::new(initial.logs.clone());
    let detail = RwSignal::new(initial);
    let on_done = live::keep_fresh(
        {
            let name = name.clone();
            move || {
                let since = logs.with_untracked(|l| l.last().map_or(0, |l| l.seq));
                get_model(name.clone(), since)
            }
        },
        move |result| {
            if let Ok(Some(mut fresh)) = result {
                let new_lines = std::mem::take(&mut fresh.logs);
                if !new_lines.is_empty() {
                    logs.update(|kept| {
                        kept.extend(new_lines);
                        let excess = kept.len().saturating_sub(LOG_LINES_KEPT);
                        kept.drain(..excess);
                    });
                }
                detail.set(fresh);
            }
        },
    );
    let summary = Memo::new(move |_| detail.with(|d| d.summary.clone()));
    let controls =
        Memo::new(move |_| summary.with(|s| (s.lifecycle, s.kind, s.shutdown_refused.clone())));
    // The charts keep their elements (and so keyboard focus and the pointer) across refreshes.
    let memory_samples = Memo::new(move |_| samples(detail, |p| p.memory_bytes.map(|b| b as f64)));
    let cpu_samples = Memo::new(move |_| samples(detail, |p| p.cpu_percent));
    let return_to = crate::location::model_path(&name);
    let action_name = name.clone();
    view! {
        <header class="model-header">
            <h1>{name.clone()}</h1>
            <div class="badges">{move || summary.with(|s| badges(s.lifecycle, s.observation.as_ref()))}</div>
            <div class="model-activity">
                {move || summary.with(|s| s.activity.as_ref().map(activity_bars))}
                {move || summary.with(|s| s.observation.as_ref().and_then(|o| o.generation.as_ref()).map(generation_text))}
            </div>
            <div class="actions">
                {move || {
                    let (lifecycle, kind, refused) = controls.get();
                    view! { <ActionButton name=action_name.clone() lifecycle kind return_to=return_to.clone() on_done can_control refused /> }
                }}
            </div>
        </header>
        <section class="model-cards">
            <article class="card">
                <h2>"Memory"</h2>
                {move || summary.with(memory_cell)}
            </article>
            <article class="card">
                <h2>"Process"</h2>
                {move || summary.with(process_info)}
                {move || summary.with(|s| s.observation.as_ref().and_then(|o| o.measured.clone()))
                    .map(|measured| view! { <ProcessTree measured /> }.into_any())}
            </article>
        </section>
        <section class="card">
            <h2>"Last minutes"</h2>
            <div class="charts">
                <Chart title="Memory" samples=memory_samples ticks=chart::byte_ticks tick_label=chart::byte_tick_label label=|v| format::bytes(v as u64) />
                <Chart title="CPU" samples=cpu_samples ticks=chart::percent_ticks tick_label=chart::percent_tick_label label=format::percent />
            </div>
        </section>
        <section class="card">
            <h2>"Recent log lines"</h2>
            {move || logs.with(|logs| {
                if logs.is_empty() {
                    view! { <p class="muted">"Nothing logged (external backends' output is not captured)."</p> }.into_any()
                } else {
                    let lines = logs.iter().map(|l| {
                        let class = match l.stream { LogStream::Stdout => "stdout", LogStream::Stderr => "stderr" };
                        view! { <span class=class><time>{format::time_of_day(l.at_unix_ms)}</time>" "{l.text.clone()}"\n"</span> }
                    }).collect_view();
                    view! { <pre class="logs" aria-label="Log lines">{lines}</pre> }.into_any()
                }
            })}
        </section>
    }
}

/// One value of the history as `(time, value)` pairs, skipping points without it.
fn samples(
    detail: RwSignal<ModelDetail>,
    value: fn(&HistoryPoint) -> Option<f64>,
) -> Vec<(u64, f64)> {
    detail.with(|d| {
        d.history
            .iter()
            .filter_map(|p| value(p).map(|v| (p.at_unix_ms, v)))
            .collect()
    })
}
