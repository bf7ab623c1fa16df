//! A small line chart drawn as SVG from Leptos: a value axis with round ticks and units, a time
//! axis relative to the newest sample, and, once hydrated, the nearest sample under the pointer
//! (or chosen with the arrow keys). The pure helpers below do the arithmetic and are unit-tested.

use crate::format;
use leptos::prelude::*;

/// Width and height of the plot's coordinate system, in SVG units. The SVG is stretched to its
/// box (`preserveAspectRatio="none"`), so it holds no text; the axis labels are HTML.
const PLOT_W: f64 = 600.0;
const PLOT_H: f64 = 120.0;

/// The most intervals on the value axis.
const VALUE_TICKS: usize = 4;
/// The most intervals on the time axis.
const TIME_TICKS: usize = 6;

/// A round step (1, 2, 2.5 or 5 × 10ⁿ) that covers `0..=max` in at most `max_ticks` intervals.
pub fn nice_step(max: f64, max_ticks: usize) -> f64 {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / max_ticks.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// The ticks of a value axis from 0: `0, step, 2·step, …` up to the first at or above `max`,
/// which is the top of the axis.
pub fn value_ticks(max: f64, max_ticks: usize) -> Vec<f64> {
    let step = nice_step(max, max_ticks);
    let intervals = if max.is_finite() && max > 0.0 {
        (max / step - 1e-9).ceil().max(1.0) as usize
    } else {
        1
    };
    (0..=intervals).map(|i| i as f64 * step).collect()
}

/// Ticks for a byte count: round numbers of the binary unit (KiB, MiB, GiB…) that `max` is
/// shown in, so that labels read `256 MiB`, `512 MiB` rather than `268.4 MB`.
pub fn byte_ticks(max: f64) -> Vec<f64> {
    let max = max.max(1024.0);
    let mut unit = 1.0;
    while max >= unit * 1024.0 && unit < 1024f64.powi(5) {
        unit *= 1024.0;
    }
    value_ticks(max / unit, VALUE_TICKS)
        .into_iter()
        .map(|t| t * unit)
        .collect()
}

/// Ticks for a percentage.
pub fn percent_ticks(max: f64) -> Vec<f64> {
    value_ticks(max, VALUE_TICKS)
}

/// A number with at most two decimals and no trailing zeros: `2`, `2.5`, `0.25`.
fn short_number(value: f64) -> String {
    let text = format::Fixed(value, 2).to_string();
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// An axis label for a byte count: `0 B`, `512 MiB`, `1.5 GiB`.
pub fn byte_tick_label(value: f64) -> String {
    format::bytes(value.round() as u64).replace(".0 ", " ")
}

/// An axis label for a percentage: `0 %`, `12.5 %`.
pub fn percent_tick_label(value: f64) -> String {
    format!("{} %", short_number(value))
}

/// Ticks of the time axis, as milliseconds before the newest sample, oldest first and ending
/// with 0 (`now`): multiples of a round step (1 s … 1 d) with at most `max_ticks` intervals.
pub fn time_ticks(span_ms: u64, max_ticks: usize) -> Vec<u64> {
    const STEPS_S: [u64; 17] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 86_400,
    ];
    let max_ticks = max_ticks.max(1) as u64;
    let step = STEPS_S
        .into_iter()
        .map(|s| s * 1000)
        .find(|step| span_ms / step <= max_ticks)
        .unwrap_or_else(|| (span_ms / max_ticks).max(1));
    (0..=span_ms / step).rev().map(|i| i * step).collect()
}

/// A label for a time tick: `now`, `-30s`, `-5m`, `-2h`, `-1m 30s`.
pub fn time_tick_label(ms_before: u64) -> String {
    let secs = ms_before / 1000;
    if secs == 0 {
        "now".to_owned()
    } else if secs.is_multiple_of(3600) {
        format!("-{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("-{}m", secs / 60)
    } else {
        format!("-{}", format::duration(secs))
    }
}

/// The index of the sample nearest in time to `at`, in samples ordered by time.
pub fn nearest(samples: &[(u64, f64)], at: u64) -> Option<usize> {
    let after = samples.partition_point(|(t, _)| *t < at);
    match (after.checked_sub(1), samples.get(after)) {
        (None, None) => None,
        (Some(before), None) => Some(before),
        (None, Some(_)) => Some(after),
        (Some(before), Some((t_after, _))) => {
            if at - samples[before].0 <= t_after - at {
                Some(before)
            } else {
                Some(after)
            }
        }
    }
}

/// Where samples and ticks go, from the samples alone.
#[derive(Clone, Debug, PartialEq)]
struct Scale {
    first: u64,
    span: u64,
    top: f64,
    value_ticks: Vec<f64>,
    time_ticks: Vec<u64>,
}

impl Scale {
    fn new(samples: &[(u64, f64)], ticks: fn(f64) -> Vec<f64>) -> Self {
        let first = samples.first().map_or(0, |s| s.0);
        let last = samples.last().map_or(0, |s| s.0);
        let span = last.saturating_sub(first);
        let max = samples.iter().map(|s| s.1).fold(0.0_f64, f64::max);
        let value_ticks = ticks(max);
        let top = value_ticks
            .last()
            .copied()
            .filter(|t| *t > 0.0)
            .unwrap_or(1.0);
        Scale {
            first,
            span,
            top,
            value_ticks,
            time_ticks: time_ticks(span, TIME_TICKS),
        }
    }

    /// The horizontal position of a time, from 0 (oldest sample) to 1 (newest).
    fn x(&self, at: u64) -> f64 {
        if self.span == 0 {
            1.0
        } else {
            at.saturating_sub(self.first) as f64 / self.span as f64
        }
    }

    /// The vertical position of a value, from 0 (bottom) to 1 (top of the axis).
    fn y(&self, value: f64) -> f64 {
        (value / self.top).clamp(0.0, 1.0)
    }
}

/// A line chart of one value over the kept history, with axes and the value under the pointer.
/// `ticks` chooses the value axis's ticks from the maximum, `tick_label` writes them, and
/// `label` writes a value in the caption and the tooltip.
#[component]
pub fn Chart(
    title: &'static str,
    #[prop(into)] samples: Signal<Vec<(u64, f64)>>,
    ticks: fn(f64) -> Vec<f64>,
    tick_label: fn(f64) -> String,
    label: fn(f64) -> String,
) -> impl IntoView {
    let scale = Memo::new(move |_| samples.with(|s| Scale::new(s, ticks)));
    // The time the pointer (or the keyboard) points at; the nearest sample is shown.
    let pointer = RwSignal::new(None::<u64>);
    let selected = Memo::new(move |_| {
        let at = pointer.get()?;
        samples.with(|s| nearest(s, at).map(|i| s[i]))
    });
    let summary = move || {
        samples.with(|s| {
            let last = s.last().map_or(0.0, |s| s.1);
            let max = s.iter().map(|s| s.1).fold(0.0_f64, f64::max);
            let span = format::duration(scale.with(|sc| sc.span) / 1000);
            (label(last), label(max), span)
        })
    };

    let on_pointer_move = move |ev: leptos::ev::PointerEvent| {
        use leptos::wasm_bindgen::JsCast;
        let Some(svg) = ev
            .current_target()
            .and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok())
        else {
            return;
        };
        let width = f64::from(svg.client_width());
        if width <= 0.0 {
            return;
        }
        let fraction = (f64::from(ev.offset_x()) / width).clamp(0.0, 1.0);
        let (first, span) = scale.with_untracked(|s| (s.first, s.span));
        pointer.set(Some(first + (fraction * span as f64).round() as u64));
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        let chosen = samples.with_untracked(|s| {
            let last = s.len().checked_sub(1)?;
            let current = pointer
                .get_untracked()
                .and_then(|at| nearest(s, at))
                .unwrap_or(last);
            let next = match ev.key().as_str() {
                "ArrowLeft" => current.saturating_sub(1),
                "ArrowRight" => (current + 1).min(last),
                "Home" => 0,
                "End" => last,
                _ => return None,
            };
            Some(s[next].0)
        });
        if let Some(at) = chosen {
            ev.prevent_default();
            pointer.set(Some(at));
        }
    };
    let on_focus = move |_| {
        if pointer.get_untracked().is_none() {
            pointer.set(samples.with_untracked(|s| s.last().map(|s| s.0)));
        }
    };

    let body = move || {
        view! {
            <div class="chart-body">
                <div class="y-axis" aria-hidden="true">
                    {move || scale.with(|sc| sc.value_ticks.iter().map(|v| {
                        let bottom = format!("bottom: {}%", format::Fixed(sc.y(*v) * 100.0, 2));
                        view! { <span style=bottom>{tick_label(*v)}</span> }
                    }).collect_view())}
                </div>
                <div class="plot">
                    <svg
                        viewBox=format!("0 0 {PLOT_W} {PLOT_H}")
                        preserveAspectRatio="none"
                        role="img"
                        tabindex="0"
                        aria-label=move || {
                            let (now, peak, span) = summary();
                            format!("{title}: now {now}, peak {peak} over the last {span}. Arrow keys show each sample.")
                        }
                        on:pointermove=on_pointer_move
                        on:pointerleave=move |_| pointer.set(None)
                        on:keydown=on_key
                        on:focus=on_focus
                        on:blur=move |_| pointer.set(None)
                    >
                        {move || scale.with(|sc| {
                            let rows = sc.value_ticks.iter().map(|v| {
                                let y = PLOT_H - sc.y(*v) * PLOT_H;
                                view! { <line class="grid" x1="0" x2=PLOT_W y1=y y2=y vector-effect="non-scaling-stroke" /> }
                            }).collect_view();
                            let columns = sc.time_ticks.iter().map(|before| {
                                let x = sc.x((sc.first + sc.span).saturating_sub(*before)) * PLOT_W;
                                view! { <line class="grid" x1=x x2=x y1="0" y2=PLOT_H vector-effect="non-scaling-stroke" /> }
                            }).collect_view();
                            view! { {rows}{columns} }
                        })}
                        <polyline
                            points=move || samples.with(|s| scale.with(|sc| {
                                s.iter()
                                    .map(|(t, v)| format!("{},{}", format::Fixed(sc.x(*t) * PLOT_W, 1), format::Fixed(PLOT_H - sc.y(*v) * PLOT_H, 1)))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            }))
                            fill="none"
                            vector-effect="non-scaling-stroke"
                        />
                        {move || selected.get().map(|(t, _)| {
                            let x = scale.with(|sc| sc.x(t)) * PLOT_W;
                            view! { <line class="cursor" x1=x x2=x y1="0" y2=PLOT_H vector-effect="non-scaling-stroke" /> }
                        })}
                    </svg>
                    {move || selected.get().map(|(t, v)| {
                        let (x, y) = scale.with(|sc| (sc.x(t), sc.y(v)));
                        let dot = format!("left: {}%; bottom: {}%", format::Fixed(x * 100.0, 2), format::Fixed(y * 100.0, 2));
                        view! { <span class="marker" style=dot></span> }
                    })}
                    <div
                        class="chart-tooltip"
                        class:shown=move || selected.with(Option::is_some)
                        role="status"
                        style=move || {
                            // Beside the marker, on the side with more room, above or below the line.
                            let (x, y) = selected
                                .get()
                                .map_or((0.0, 0.0), |(t, v)| scale.with(|sc| (sc.x(t), sc.y(v))));
                            let across = if x > 0.5 {
                                format!("right: calc({}% + 10px)", format::Fixed((1.0 - x) * 100.0, 2))
                            } else {
                                format!("left: calc({}% + 10px)", format::Fixed(x * 100.0, 2))
                            };
                            let along = if y > 0.5 { "bottom: 0.3rem" } else { "top: 0.3rem" };
                            format!("{across}; {along}")
                        }
                    >
                        {move || selected.get().map(|(t, v)| view! {
                            <time>{format::time_of_day(t)}</time>" "<strong>{label(v)}</strong>
                        })}
                    </div>
                </div>
                <div class="x-axis" aria-hidden="true">
                    {move || scale.with(|sc| sc.time_ticks.iter().map(|before| {
                        let left = format!("left: {}%", format::Fixed(sc.x((sc.first + sc.span).saturating_sub(*before)) * 100.0, 2));
                        view! { <span style=left>{time_tick_label(*before)}</span> }
                    }).collect_view())}
                </div>
            </div>
        }
        .into_any()
    };

    view! {
        <figure class="chart">
            <figcaption>
                <span>{title}</span>
                {move || samples.with(|s| !s.is_empty()).then(|| {
                    let (now, peak, span) = summary();
                    view! { <span class="muted">{format!("now {now} · peak {peak} · last {span}")}</span> }
                })}
            </figcaption>
            <Show
                when=move || samples.with(|s| !s.is_empty())
                fallback=|| view! { <p class="muted">"No samples yet."</p> }
            >
                {body}
            </Show>
        </figure>
    }
    // Erased, so that pages holding charts keep types shallow enough for the compiler.
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(100.0, 4), 25.0);
        assert_eq!(nice_step(7.0, 4), 2.0);
        assert_eq!(nice_step(0.9, 4), 0.25);
        assert_eq!(nice_step(380.0, 4), 100.0);
        assert_eq!(nice_step(0.0, 4), 0.25);
        assert_eq!(nice_step(f64::NAN, 4), 0.25);
    }

    #[test]
    fn value_ticks_start_at_zero_and_cover_the_maximum() {
        assert_eq!(value_ticks(100.0, 4), [0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(value_ticks(7.0, 4), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(value_ticks(380.0, 4), [0.0, 100.0, 200.0, 300.0, 400.0]);
        assert_eq!(value_ticks(0.0, 4), [0.0, 0.25]);
        for max in [0.3, 1.0, 3.7, 12.0, 99.9, 150.0, 1234.5] {
            let ticks = value_ticks(max, 4);
            assert!(ticks.len() <= 5, "{max}: {ticks:?}");
            assert!(*ticks.last().unwrap() >= max, "{max}: {ticks:?}");
        }
    }

    #[test]
    fn byte_ticks_are_round_in_binary_units() {
        const MIB: f64 = 1024.0 * 1024.0;
        const GIB: f64 = 1024.0 * MIB;
        let labels = |max| {
            byte_ticks(max)
                .into_iter()
                .map(byte_tick_label)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labels(380.0 * MIB),
            ["0 B", "100 MiB", "200 MiB", "300 MiB", "400 MiB"]
        );
        assert_eq!(
            labels(1.7 * GIB),
            ["0 B", "512 MiB", "1 GiB", "1.5 GiB", "2 GiB"]
        );
        assert_eq!(
            labels(3.1 * GIB),
            ["0 B", "1 GiB", "2 GiB", "3 GiB", "4 GiB"]
        );
        assert_eq!(labels(0.0), ["0 B", "256 B", "512 B", "768 B", "1 KiB"]);
    }

    #[test]
    fn percent_ticks_have_units() {
        let labels = |max| {
            percent_ticks(max)
                .into_iter()
                .map(percent_tick_label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(87.0), ["0 %", "25 %", "50 %", "75 %", "100 %"]);
        assert_eq!(labels(0.9), ["0 %", "0.25 %", "0.5 %", "0.75 %", "1 %"]);
        assert_eq!(labels(0.3), ["0 %", "0.1 %", "0.2 %", "0.3 %"]);
    }

    #[test]
    fn time_ticks_end_now() {
        assert_eq!(
            time_ticks(5 * 60_000, 6),
            [300_000, 240_000, 180_000, 120_000, 60_000, 0]
        );
        assert_eq!(
            time_ticks(10 * 60_000 + 5_000, 6),
            [600_000, 480_000, 360_000, 240_000, 120_000, 0]
        );
        assert_eq!(time_ticks(45_000, 6), [40_000, 30_000, 20_000, 10_000, 0]);
        assert_eq!(time_ticks(0, 6), [0]);
        let labels = time_ticks(5 * 60_000, 6)
            .into_iter()
            .map(time_tick_label)
            .collect::<Vec<_>>();
        assert_eq!(labels, ["-5m", "-4m", "-3m", "-2m", "-1m", "now"]);
        assert_eq!(time_tick_label(30_000), "-30s");
        assert_eq!(time_tick_label(2 * 3_600_000), "-2h");
        assert_eq!(time_tick_label(90_000), "-1m 30s");
    }

    #[test]
    fn nearest_finds_the_closest_sample() {
        let samples = [(1000, 1.0), (2000, 2.0), (4000, 4.0)];
        assert_eq!(nearest(&samples, 0), Some(0));
        assert_eq!(nearest(&samples, 1000), Some(0));
        assert_eq!(nearest(&samples, 1499), Some(0));
        assert_eq!(nearest(&samples, 1501), Some(1));
        assert_eq!(nearest(&samples, 3100), Some(2));
        assert_eq!(nearest(&samples, 9999), Some(2));
        assert_eq!(nearest(&[], 5), None);
    }
}
