//! The main page (`/`): one row per configured model, live totals, and the controls.

use crate::format;
use crate::live;
use crate::snapshot::{BackendSummary, BackendsPage, HostStats};
use crate::widgets::{
    ActionButton, activity_bars, badges, generation_text, memory_cell, process_info,
};
use leptos::prelude::*;

/// One page of the table (from 1), from the registry's cached observations.
#[server(prefix = "/_panel", endpoint = "snapshot")]
pub async fn get_panel(page: usize) -> Result<BackendsPage, ServerFnError> {
    let directory = use_context::<crate::directory::SharedDirectory>()
        .ok_or_else(|| ServerFnError::new("the backend directory is not available"))?;
    Ok(directory.page(page))
}

/// The page, drawn first from the snapshot the server loaded (see [`crate::page_data`]), then
/// kept fresh in the browser.
#[component]
pub fn PanelPage(page: BackendsPage, can_control: bool) -> impl IntoView {
    view! {
        <h1 class="page-title">"Backends"</h1>
        <Notice />
        <Dashboard initial=page can_control />
    }
}

/// The outcome of a no-JavaScript form post, carried back in the query string.
#[component]
fn Notice() -> impl IntoView {
    let location = crate::location::Location::current();
    if let Some(error) = location.query_value("error") {
        Some(view! { <p class="banner error" role="alert">{error}</p> }.into_any())
    } else {
        location
            .query_value("notice")
            .map(|notice| view! { <p class="banner notice" role="status">{notice}</p> }.into_any())
    }
}

/// Totals and the table, refreshed every second without re-creating rows.
#[component]
fn Dashboard(initial: BackendsPage, can_control: bool) -> impl IntoView {
    let page_number = initial.page;
    // Where the no-JavaScript forms send the browser back to: this page of the table.
    let return_to = if page_number > 1 {
        format!("/?page={page_number}")
    } else {
        "/".to_owned()
    };
    let snapshot = RwSignal::new(initial);
    // Browser clock times: of the last answer (set once hydrated) and now, ticking each second,
    // for "updated 3s ago". Both start equal, so the server's render says "just now" too.
    let answered_at = RwSignal::new(0u64);
    let now = RwSignal::new(0u64);
    let connection_lost = RwSignal::new(false);
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| {
        answered_at.set(live::now_unix_ms());
        hydrated.set(true);
    });
    live::every(live::REFRESH_PERIOD, move || now.set(live::now_unix_ms()));
    let age = move || now.get().saturating_sub(answered_at.get()) / 1000;
    let on_done = live::keep_fresh(
        move || get_panel(page_number),
        move |result| match result {
            Ok(fresh) => {
                snapshot.set(fresh);
                let at = live::now_unix_ms();
                answered_at.set(at);
                now.set(at);
                connection_lost.set(false);
            }
            Err(_) => connection_lost.set(true),
        },
    );
    let names = Memo::new(move |_| {
        snapshot.with(|s| {
            s.snapshot
                .backends
                .iter()
                .map(|b| b.name.clone())
                .enumerate()
                .collect::<Vec<_>>()
        })
    });
    view! {
        <section class="totals" aria-label="Totals">
            <div class="total">
                <span class="figure" data-testid="running-count">
                    {move || snapshot.with(|s| format!("{} of {}", s.running, s.total))}
                </span>
                <span class="caption">"backends running"</span>
            </div>
            <div class="total">
                <span class="figure" data-testid="memory-in-use">
                    {move || snapshot.with(|s| format::bytes(s.memory_in_use))}
                </span>
                <span class="caption">"memory in use"</span>
            </div>
            {move || snapshot.with(|s| s.snapshot.host.clone()).map(|host| view! { <HostCard host /> })}
            <div class="total refreshed">
                <span
                    class="live-dot"
                    class:lost=move || connection_lost.get()
                    data-hydrated=move || hydrated.get().to_string()
                ></span>
                <span class="caption" data-testid="updated">
                    {move || if connection_lost.get() {
                        format!("connection lost, retrying… last refresh {} ago, at ", format::duration(age()))
                    } else {
                        format!("updated {}, at ", format::ago(age()))
                    }}
                    <time
                        data-testid="refreshed-at"
                        datetime=move || snapshot.with(|s| s.snapshot.generated_at.clone())
                    >
                        {move || snapshot.with(|s| format::time_of_day(s.snapshot.generated_at_unix_ms))}
                    </time>
                </span>
            </div>
        </section>
        <Pager page=snapshot />
        <div class="table-wrap">
            <table class="backends">
                <thead>
                    <tr>
                        <th scope="col">"Model"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Memory"</th>
                        <th scope="col">"Process"</th>
                        <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                    </tr>
                </thead>
                <tbody>
                    <For each=move || names.get() key=|(_, name)| name.clone() let:entry>
                        <BackendRow name=entry.1 position=entry.0 snapshot on_done can_control return_to=return_to.clone() />
                    </For>
                </tbody>
            </table>
        </div>
    }
}

/// Which rows this page shows, with links to the pages before and after; nothing when every
/// backend fits on one page. Plain links, so they work without JavaScript.
#[component]
fn Pager(page: RwSignal<BackendsPage>) -> impl IntoView {
    let position = Memo::new(move |_| {
        page.with(|p| {
            (
                p.page,
                p.pages(),
                p.first_index(),
                p.snapshot.backends.len(),
                p.total,
            )
        })
    });
    move || {
        let (number, pages, first, shown, total) = position.get();
        (pages > 1).then(|| {
            let link = |to: usize| format!("/?page={to}");
            view! {
                <nav class="pager" aria-label="Pages of backends">
                    <span data-testid="page-range">
                        {format!("Backends {}–{} of {total} · page {number} of {pages}", first + 1, first + shown)}
                    </span>
                    {(number > 1).then(|| view! { <a href=link(number - 1) rel="prev">"← Previous"</a> })}
                    {(number < pages).then(|| view! { <a href=link(number + 1) rel="next">"Next →"</a> })}
                </nav>
            }
        })
    }
}

/// The host: memory used of total (and what the backends hold), free memory, swap, CPU, load.
#[component]
fn HostCard(host: HostStats) -> impl IntoView {
    let [one, five, fifteen] = host.load;
    view! {
        <div class="total host" data-testid="host">
            <span class="figure">{format!("{} / {}", format::Bytes(host.memory_used), format::Bytes(host.memory_total))}</span>
            <span class="caption">
                {format!(
                    "host memory used ({} free; backends hold {})",
                    format::Bytes(host.memory_available),
                    format::Bytes(host.backends_memory)
                )}
            </span>
            {host.gpus.into_iter().map(|gpu| view! {
                <span class="caption" data-testid="host-gpu">
                    {format!(
                        "GPU {} {}: {} / {} used",
                        gpu.index,
                        gpu.name,
                        format::Bytes(gpu.memory_used),
                        format::Bytes(gpu.memory_total)
                    )}
                </span>
            }).collect_view()}
            <span class="caption">
                {format!(
                    "CPU {} % of {} · load {} {} {} · swap {} / {}",
                    format::Fixed(f64::from(host.cpu_percent), 0),
                    host.cpus,
                    format::Fixed(one, 2),
                    format::Fixed(five, 2),
                    format::Fixed(fifteen, 2),
                    format::Bytes(host.swap_used),
                    format::Bytes(host.swap_total)
                )}
            </span>
        </div>
    }
}

/// One model's row. The name cell is static and the action cell only changes with the
/// lifecycle, so focus and scroll survive the refreshes. `position` is where the row's model was
/// in the list when the row was made: looked at first, so a page of N rows costs N lookups, not
/// N²/2 comparisons; the name decides, should the list have changed since.
#[component]
fn BackendRow(
    name: String,
    position: usize,
    snapshot: RwSignal<BackendsPage>,
    on_done: Callback<()>,
    can_control: bool,
    /// The page the row's form returns to without JavaScript.
    return_to: String,
) -> impl IntoView {
    let key = name.clone();
    let row = Memo::new(move |_| {
        snapshot.with(|s| {
            let backends = &s.snapshot.backends;
            backends
                .get(position)
                .filter(|b| b.name == key)
                .or_else(|| backends.iter().find(|b| b.name == key))
                .cloned()
        })
    });
    let controls = Memo::new(move |_| {
        row.with(|r| {
            r.as_ref()
                .map(|b| (b.lifecycle, b.kind, b.shutdown_refused.clone()))
        })
    });
    let href = crate::location::model_path(&name);
    let action_name = name.clone();
    let model_attr = name.clone();
    view! {
        <tr data-model=model_attr data-lifecycle=move || row.with(|r| r.as_ref().map(|b| b.lifecycle.as_str()))>
            <th scope="row" data-label="Model">
                <a href=href>{name}</a>
                <span class="backend-label">
                    {move || row.with(|r| r.as_ref().map(|b| format!("{} · {}", b.backend, kind_word(b))))}
                </span>
            </th>
            // Status, memory and process change together: one closure draws the three cells.
            {move || row.with(|r| r.as_ref().map(|b| {
                view! {
                    <td data-label="Status" class="status-cell">
                        {badges(b.lifecycle, b.observation.as_ref())}
                        {b.activity.as_ref().map(activity_bars)}
                        {b.observation.as_ref().and_then(|o| o.generation.as_ref()).map(generation_text)}
                    </td>
                    <td data-label="Memory" class="memory-cell">{memory_cell(b)}</td>
                    <td data-label="Process">{process_info(b)}</td>
                }
            }))}
            <td class="actions">
                {move || controls.get().map(|(lifecycle, kind, refused)| view! {
                    <ActionButton name=action_name.clone() lifecycle kind return_to=return_to.clone() on_done can_control refused />
                })}
            </td>
        </tr>
    }
    .into_any()
}

fn kind_word(backend: &BackendSummary) -> &'static str {
    match backend.kind {
        crate::snapshot::BackendKind::Managed => "managed",
        crate::snapshot::BackendKind::External => "external",
    }
}
