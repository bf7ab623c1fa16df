//! Observation for the panel: one task per model calls `Status` (and samples the process) every
//! poll interval while the model runs, off the command path, so a hung backend delays neither a
//! command nor a page.

use super::model::{ModelHandle, ModelView};
use crate::clock::unix_ms;
use crate::config::Settings;
use crate::grpc::CallError;
use crate::metrics::Metrics;
use crate::process::ProcessSampler;
use app::snapshot::{
    Activity, BackendState, Generation, HistoryPoint, Lifecycle, Observation, StatusFailure,
    StatusFailureKind,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How far back the history goes (at the full pace of observation).
const HISTORY_WINDOW: Duration = Duration::from_secs(600);

/// History points kept per backend at most (10 minutes at the default 1 s poll interval).
pub(super) const HISTORY_POINTS: usize = 600;

/// History points kept per backend observed every `pace`: enough for [`HISTORY_WINDOW`], at
/// most [`HISTORY_POINTS`] (1,000 models observed every 5 s keep 120 points each, not 600).
pub(super) fn history_points(pace: Duration) -> usize {
    let points = (HISTORY_WINDOW.as_secs_f64() / pace.as_secs_f64().max(0.001)).ceil();
    // In range after the clamp, so the cast loses nothing.
    points.clamp(1.0, HISTORY_POINTS as f64) as usize
}

/// The latest observation of a model and its recent history.
#[derive(Debug)]
pub(crate) struct Observed {
    inner: Mutex<Inner>,
    /// History points kept.
    points: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// The latest observation and the run it belongs to.
    latest: Option<(u64, Observation)>,
    history: VecDeque<Point>,
    /// When the backend last reported BUSY (for idle auto-stop and the panel).
    last_busy: Option<LastBusy>,
    /// Counts the observations recorded.
    generation: u64,
}

/// A history point as kept: 24 bytes where [`HistoryPoint`] takes 48 (1,000 models keep 600
/// points each).
#[derive(Clone, Copy, Debug)]
struct Point {
    at_unix_ms: u64,
    /// `u64::MAX` for none.
    memory_bytes: u64,
    /// NaN for none.
    cpu_percent: f32,
    busy: Option<bool>,
}

impl Point {
    fn of(observation: &Observation) -> Self {
        Self {
            at_unix_ms: observation.at_unix_ms,
            memory_bytes: observation.memory_bytes().unwrap_or(u64::MAX),
            cpu_percent: observation
                .process
                .as_ref()
                .map_or(f32::NAN, |p| p.cpu_percent as f32),
            busy: observation
                .status
                .as_ref()
                .map(|s| s.state == BackendState::Busy),
        }
    }

    fn expand(self) -> HistoryPoint {
        HistoryPoint {
            at_unix_ms: self.at_unix_ms,
            memory_bytes: (self.memory_bytes != u64::MAX).then_some(self.memory_bytes),
            cpu_percent: (!self.cpu_percent.is_nan()).then_some(f64::from(self.cpu_percent)),
            busy: self.busy,
        }
    }
}

/// When a backend was last seen BUSY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LastBusy {
    /// For measuring idle time.
    pub(crate) at: Instant,
    /// For showing it.
    pub(crate) at_unix_ms: u64,
}

impl Observed {
    /// Nothing observed yet; `points` history points will be kept.
    pub(super) fn new(points: usize) -> Self {
        Self {
            inner: Mutex::default(),
            points,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an observation of run `run` and adds it to the history.
    pub(super) fn record(&self, run: u64, observation: Observation) {
        let point = Point::of(&observation);
        let busy = point.busy == Some(true);
        let mut inner = self.lock();
        if busy {
            inner.last_busy = Some(LastBusy {
                at: Instant::now(),
                at_unix_ms: observation.at_unix_ms,
            });
        }
        inner.latest = Some((run, observation));
        inner.generation += 1;
        if inner.history.capacity() == 0 {
            // All at once: growing by doubling would leave room for 1,024.
            inner.history.reserve_exact(self.points);
        }
        if inner.history.len() == self.points {
            inner.history.pop_front();
        }
        inner.history.push_back(point);
    }

    /// How many observations were recorded: it changes with every one.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The latest observation, if it belongs to run `run`.
    pub(super) fn latest(&self, run: u64) -> Option<Observation> {
        self.latest_with(run, Observation::clone)
    }

    /// `read` applied to the latest observation, if it belongs to run `run` (no copy is made).
    pub(super) fn latest_with<R>(
        &self,
        run: u64,
        read: impl FnOnce(&Observation) -> R,
    ) -> Option<R> {
        match &self.lock().latest {
            Some((of, observation)) if *of == run => Some(read(observation)),
            _ => None,
        }
    }

    /// When the backend last reported BUSY.
    pub(crate) fn last_busy(&self) -> Option<LastBusy> {
        self.lock().last_busy
    }

    /// How busy the backend was in the window before `now_unix_ms`; `None` without answers.
    pub(super) fn activity(&self, now_unix_ms: u64) -> Option<Activity> {
        let inner = self.lock();
        let window_ms = Activity::WINDOW_SECS * 1000;
        let start = now_unix_ms.saturating_sub(window_ms);
        let slice_ms = window_ms / Activity::BUCKETS as u64;
        let mut busy = [0u32; Activity::BUCKETS];
        let mut answered = [0u32; Activity::BUCKETS];
        for point in inner.history.iter().rev() {
            if point.at_unix_ms < start {
                break;
            }
            let Some(was_busy) = point.busy else {
                continue;
            };
            let slot = usize::try_from((point.at_unix_ms - start) / slice_ms)
                .unwrap_or(usize::MAX)
                .min(Activity::BUCKETS - 1);
            answered[slot] += 1;
            busy[slot] += u32::from(was_busy);
        }
        let total: u32 = answered.iter().sum();
        if total == 0 {
            return None;
        }
        let busy_now = inner.history.back().and_then(|p| p.busy).unwrap_or(false);
        Some(Activity {
            busy_now,
            busy_ratio: busy.iter().sum::<u32>() as f32 / total as f32,
            buckets: busy
                .iter()
                .zip(answered)
                .map(|(b, a)| (a > 0).then(|| u8::try_from(b * 100 / a).unwrap_or(100)))
                .collect(),
        })
    }

    /// The history, oldest first.
    pub(super) fn history(&self) -> Vec<app::snapshot::HistoryPoint> {
        self.lock().history.iter().map(|p| p.expand()).collect()
    }
}

/// How long after the last look (panel, API, CLI, scrape) observation slows down.
const UNWATCHED_AFTER: Duration = Duration::from_secs(60);

/// How much slower observation is while nobody looks.
const UNWATCHED_SLOWDOWN: u32 = 5;

/// Observations per second, all models together, before each model is observed less often
/// than every `poll_interval` (1,000 models are then observed every 5 s rather than every
/// second, which would cost a fifth of a core in `Status` calls alone).
const OBSERVATIONS_PER_SECOND: u32 = 200;

/// How often each of `models` models is observed: `poll_interval`, stretched so that all of
/// them together stay within [`OBSERVATIONS_PER_SECOND`].
pub(super) fn observation_pace(poll_interval: Duration, models: usize) -> Duration {
    let models = u32::try_from(models).unwrap_or(u32::MAX);
    let per_second = f64::from(models) / poll_interval.as_secs_f64().max(0.001);
    let stretch = (per_second / f64::from(OBSERVATIONS_PER_SECOND)).max(1.0);
    poll_interval.mul_f64(stretch)
}

/// When somebody last looked at the observations (a panel, an API or CLI reader, a scrape):
/// while nobody has for [`UNWATCHED_AFTER`], observers poll [`UNWATCHED_SLOWDOWN`] times less
/// often, and the next look wakes them at once.
#[derive(Debug)]
pub(crate) struct Watchers {
    started: Instant,
    /// Milliseconds after `started` of the last look.
    last_look_ms: AtomicU64,
    woken: Notify,
}

impl Watchers {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            last_look_ms: AtomicU64::new(0),
            woken: Notify::new(),
        }
    }

    /// Somebody looked: observers go back to their full pace (at once, if they had slowed).
    pub(crate) fn looked(&self) {
        let now = self.elapsed_ms();
        let before = self.last_look_ms.swap(now, Ordering::Relaxed);
        if now.saturating_sub(before) >= UNWATCHED_AFTER.as_millis() as u64 {
            self.woken.notify_waiters();
        }
    }

    fn watched(&self) -> bool {
        let since = self
            .elapsed_ms()
            .saturating_sub(self.last_look_ms.load(Ordering::Relaxed));
        since < UNWATCHED_AFTER.as_millis() as u64
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Observes one model every poll interval while it runs (slower while nobody looks), until its
/// owner is gone. Each pause varies by up to a tenth, and the first starts at a random point of
/// the interval, so the models' calls spread out instead of firing in one burst.
pub(super) async fn observe_forever(
    model: ModelHandle,
    settings: Arc<Settings>,
    pace: Duration,
    sampler: ProcessSampler,
    metrics: Arc<Metrics>,
    watchers: Arc<Watchers>,
) {
    let mut views = model.subscribe();
    // The run whose backend answered UNIMPLEMENTED to `GetMetrics`: not asked again.
    let mut without_generation = None;
    tokio::time::sleep(pace.mul_f64(rand::random::<f64>())).await;
    loop {
        let view = views.borrow_and_update().clone();
        if view.lifecycle != Lifecycle::Running {
            // Observe a backend that has just come up at once.
            if views.changed().await.is_err() {
                return;
            }
            continue;
        }
        let ask_generation = without_generation != Some(view.run);
        // Boxed: the calls' futures take kilobytes, needed only while they run, and 1,000
        // observers spend nearly all their time asleep.
        let (observation, generation) = Box::pin(observe(
            &model.spec.name,
            &view,
            &settings,
            &sampler,
            &metrics,
            ask_generation,
        ))
        .await;
        if generation == Some(Err(CallError::Unimplemented)) {
            without_generation = Some(view.run);
        }
        model.observed.record(view.run, observation);
        let watched = watchers.watched();
        let pause = if watched {
            pace
        } else {
            pace * UNWATCHED_SLOWDOWN
        };
        let pause = pause.mul_f64(rand::random_range(0.9..1.1));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = watchers.woken.notified(), if !watched => {}
        }
    }
}

/// Calls `Status` (recording it in `metrics`) and, when `ask_generation`, `GetMetrics` beside
/// it, and samples the process (when one is known). Also returns how `GetMetrics` went.
async fn observe(
    name: &str,
    view: &ModelView,
    settings: &Settings,
    sampler: &ProcessSampler,
    metrics: &Metrics,
    ask_generation: bool,
) -> (Observation, Option<Result<Generation, CallError>>) {
    let (status, generation) = match &view.client {
        Some(client) => {
            let status = metrics.timed_status(name, client.status(settings.status_timeout));
            let generation = async {
                match ask_generation {
                    true => Some(client.generation(settings.status_timeout).await),
                    false => None,
                }
            };
            let (status, generation) = tokio::join!(status, generation);
            (status.map_err(|e| e.to_status_failure()), generation)
        }
        None => (
            Err(StatusFailure {
                kind: StatusFailureKind::Unreachable,
                message: "no gRPC client".to_string(),
            }),
            None,
        ),
    };
    let (process, process_error, measured) = match &view.watched {
        Some(Ok(id)) => match sampler.metrics(*id) {
            Ok(metrics) => (Some(metrics), None, sampler.tree(*id)),
            Err(e) => (None, Some(e.to_string()), None),
        },
        Some(Err(e)) => (None, Some(e.to_string()), None),
        None => (None, None, None),
    };
    let (status, status_error) = match status {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e)),
    };
    let observation = Observation {
        at_unix_ms: unix_ms(),
        status,
        status_error,
        process,
        process_error,
        generation: generation.clone().and_then(Result::ok),
        measured,
    };
    (observation, generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(at_unix_ms: u64) -> Observation {
        Observation {
            at_unix_ms,
            ..Observation::default()
        }
    }

    #[test]
    fn many_models_are_observed_less_often_within_the_budget() {
        let second = Duration::from_secs(1);
        assert_eq!(observation_pace(second, 2), second);
        assert_eq!(observation_pace(second, 200), second);
        assert_eq!(observation_pace(second, 1000), Duration::from_secs(5));
        assert_eq!(
            observation_pace(Duration::from_millis(200), 100),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn the_history_covers_ten_minutes_at_the_pace_of_observation() {
        assert_eq!(history_points(Duration::from_secs(1)), HISTORY_POINTS);
        assert_eq!(history_points(Duration::from_millis(200)), HISTORY_POINTS);
        assert_eq!(history_points(Duration::from_secs(5)), 120);
        assert_eq!(history_points(Duration::from_secs(3600)), 1);
    }

    #[test]
    fn history_points_are_kept_in_24_bytes_and_come_back_whole() {
        assert!(std::mem::size_of::<Point>() <= 24);
        let observation = Observation {
            at_unix_ms: 7,
            measured: Some(app::snapshot::MeasuredMemory {
                rss: 4096,
                ..Default::default()
            }),
            ..Observation::default()
        };
        let point = Point::of(&observation).expand();
        assert_eq!(point.at_unix_ms, 7);
        assert_eq!(point.memory_bytes, Some(4096));
        assert_eq!(point.cpu_percent, None);
        assert_eq!(point.busy, None);
    }

    #[test]
    fn the_history_keeps_the_last_points_only() {
        let observed = Observed::new(HISTORY_POINTS);
        for at in 0..HISTORY_POINTS as u64 + 25 {
            observed.record(1, observation(at));
        }
        let history = observed.history();
        assert_eq!(history.len(), HISTORY_POINTS);
        assert_eq!(history[0].at_unix_ms, 25);
        assert_eq!(
            history[HISTORY_POINTS - 1].at_unix_ms,
            HISTORY_POINTS as u64 + 24
        );
    }

    #[tokio::test]
    async fn observers_slow_down_after_a_minute_unwatched_and_a_look_wakes_them() {
        let watchers = Arc::new(Watchers {
            started: Instant::now() - UNWATCHED_AFTER * 2,
            last_look_ms: AtomicU64::new(0),
            woken: Notify::new(),
        });
        assert!(!watchers.watched(), "nobody looked for two minutes");
        let waiting = {
            let watchers = Arc::clone(&watchers);
            tokio::spawn(async move { watchers.woken.notified().await })
        };
        tokio::task::yield_now().await;
        watchers.looked();
        assert!(watchers.watched());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the look wakes a slowed observer")
            .expect("the waiter ran");
        // A fresh server counts as watched: its first minute is at full pace.
        assert!(Watchers::new().watched());
    }

    #[test]
    fn an_observation_of_an_earlier_run_is_not_shown() {
        let observed = Observed::new(HISTORY_POINTS);
        observed.record(1, observation(7));
        assert_eq!(observed.latest(1).map(|o| o.at_unix_ms), Some(7));
        assert_eq!(observed.latest(2), None);
    }
}
