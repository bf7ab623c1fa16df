//! `/api/backends` as JSON, assembled from each model's summary as serialised the last time
//! it was asked for. A summary is serialised again only when the model changed (a new view,
//! observation or log line) or a new second began (its countdowns, uptime and activity move
//! with the clock), so ten readers polling 1,000 models cost a copy each, not 1,000
//! serialisations each.

use app::snapshot::{BackendSummary, HostStats};
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

/// What a summary was made from: when any part differs, it is made again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SummaryKey {
    /// The version of the model's published view.
    pub(super) view: u64,
    /// How many observations were recorded.
    pub(super) observed: u64,
    /// The last log line's number (the summary shows the stderr tail).
    pub(super) logs: u64,
    /// Whole seconds since the registry started.
    pub(super) second: u64,
}

/// A summary as JSON, with what the host view needs from it.
#[derive(Clone, Debug)]
pub(super) struct SummaryJson {
    /// The serialised [`BackendSummary`].
    pub(super) json: Arc<str>,
    /// The measured RSS of a running backend's process tree, added up in the host view.
    pub(super) running_rss: Option<u64>,
}

impl SummaryJson {
    /// Serialises `summary`.
    pub(super) fn of(summary: &BackendSummary) -> Result<Self, serde_json::Error> {
        Ok(Self {
            json: serde_json::to_string(summary)?.into(),
            running_rss: super::running_rss(summary),
        })
    }
}

/// One model's last serialised summary and what it was made from.
#[derive(Debug, Default)]
pub(super) struct SummaryCache {
    slot: Mutex<Option<(SummaryKey, SummaryJson)>>,
}

impl SummaryCache {
    /// The summary made from `key`: the kept one, or a new one from `make` (kept in its place).
    /// The lock is held while `make` runs, so concurrent readers serialise a model once.
    pub(super) fn get_or_make(
        &self,
        key: SummaryKey,
        make: impl FnOnce() -> Result<SummaryJson, serde_json::Error>,
    ) -> Result<SummaryJson, serde_json::Error> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((kept, summary)) = slot.as_ref()
            && *kept == key
        {
            return Ok(summary.clone());
        }
        let summary = make()?;
        *slot = Some((key, summary.clone()));
        Ok(summary)
    }
}

/// Writes a [`app::snapshot::PanelSnapshot`] with these fields, the backends given as their
/// JSON, byte for byte as `serde_json` writes the struct (the test below holds it to that).
pub(super) fn write_snapshot<'a>(
    generated_at: &str,
    generated_at_unix_ms: u64,
    backends: impl ExactSizeIterator<Item = &'a str>,
    host: Option<&HostStats>,
) -> Result<Vec<u8>, serde_json::Error> {
    // About what a summary takes, so the buffer rarely grows.
    let mut out = Vec::with_capacity(backends.len() * 640 + 256);
    out.extend_from_slice(b"{\"generated_at\":");
    serde_json::to_writer(&mut out, generated_at)?;
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        ",\"generated_at_unix_ms\":{generated_at_unix_ms},\"backends\":["
    );
    for (i, backend) in backends.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(backend.as_bytes());
    }
    out.push(b']');
    if let Some(host) = host {
        out.extend_from_slice(b",\"host\":");
        serde_json::to_writer(&mut out, host)?;
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::snapshot::{BackendKind, Lifecycle, Observation, PanelSnapshot};

    fn summaries() -> Vec<BackendSummary> {
        let mut running = BackendSummary::new(
            "a \"quoted\" é",
            BackendKind::External,
            "grpc",
            Lifecycle::Running,
        );
        running.observation = Some(Observation {
            at_unix_ms: 12,
            measured: Some(app::snapshot::MeasuredMemory {
                rss: 4096,
                ..Default::default()
            }),
            ..Observation::default()
        });
        running.stderr_tail = vec!["line\n".to_string()];
        let stopped =
            BackendSummary::new("b", BackendKind::Managed, "llama-cpp", Lifecycle::Stopped);
        vec![running, stopped]
    }

    #[test]
    fn the_assembled_snapshot_is_what_serde_writes() {
        for host in [None, Some(HostStats::default())] {
            let snapshot = PanelSnapshot {
                generated_at: "2026-01-01T00:00:00.000Z".to_string(),
                generated_at_unix_ms: 1_767_225_600_000,
                backends: summaries(),
                host: host.clone(),
            };
            let parts: Vec<SummaryJson> = snapshot
                .backends
                .iter()
                .map(|b| SummaryJson::of(b).expect("serialises"))
                .collect();
            let assembled = write_snapshot(
                &snapshot.generated_at,
                snapshot.generated_at_unix_ms,
                parts.iter().map(|p| &*p.json),
                host.as_ref(),
            )
            .expect("serialises");
            assert_eq!(
                String::from_utf8(assembled).expect("UTF-8"),
                serde_json::to_string(&snapshot).expect("serialises")
            );
            assert_eq!(parts[0].running_rss, Some(4096));
            assert_eq!(parts[1].running_rss, None);
        }
    }

    #[test]
    fn a_kept_summary_is_made_again_only_for_another_key() {
        let cache = SummaryCache::default();
        let key = SummaryKey {
            view: 1,
            observed: 2,
            logs: 3,
            second: 4,
        };
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            SummaryJson::of(&summaries()[1])
        };
        cache.get_or_make(key, make).expect("made");
        cache.get_or_make(key, make).expect("kept");
        assert_eq!(made.get(), 1);
        for other in [
            SummaryKey { view: 9, ..key },
            SummaryKey { observed: 9, ..key },
            SummaryKey { logs: 9, ..key },
            SummaryKey { second: 9, ..key },
        ] {
            cache.get_or_make(other, make).expect("made again");
        }
        assert_eq!(made.get(), 5);
    }
}
