//! The process-metrics fallback per request, with 1 and with 100 tracked processes, against a
//! full `sysinfo` refresh of every process, measured with criterion. `scripts/bench.sh` runs
//! it first; `hot_paths` then reads the medians and their confidence intervals from criterion's
//! `estimates.json` files (group `fallback`, ids as below) into BENCHMARKS.md.

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use server::gpu::Gpus;
use server::process::{ProcessId, ProcessSampler};
use std::hint::black_box;
use std::process::{Child, Command};
use std::time::Duration;

/// Criterion's group name: results land in `<target>/criterion/fallback/<id>/`.
const GROUP: &str = "fallback";
/// Tracked processes in the larger case.
const TRACKED: usize = 100;
/// Time for the sampler to take its first snapshots (it samples every second in the background).
const SETTLE: Duration = Duration::from_millis(1500);

/// `sleep` children to track; killed and reaped when dropped, even if a measurement panics.
struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn fallback(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let _guard = runtime.enter();
    let sampler = ProcessSampler::start(Gpus::probe());
    let sleepers = Sleepers(
        (0..TRACKED)
            .map(|_| {
                Command::new("sleep")
                    .arg("600")
                    .spawn()
                    .expect("spawn sleep")
            })
            .collect(),
    );
    let ids: Vec<ProcessId> = sleepers
        .0
        .iter()
        .map(|c| ProcessId::of(c.id()).expect("a running sleep"))
        .collect();
    let mut group = c.benchmark_group(GROUP);

    sampler.track(ids[0], ids[0].pid);
    std::thread::sleep(SETTLE);
    group.bench_function("1_tracked_process", |b| {
        b.iter(|| sampler.metrics(black_box(ids[0])))
    });

    for id in &ids[1..] {
        sampler.track(*id, id.pid);
    }
    std::thread::sleep(SETTLE);
    group.bench_function("100_tracked_processes", |b| {
        b.iter(|| sampler.metrics(black_box(ids[TRACKED / 2])))
    });

    // A refresh takes milliseconds: flat sampling and fewer samples keep the run short.
    let mut system = sysinfo::System::new().expect("sysinfo");
    group.sampling_mode(SamplingMode::Flat).sample_size(30);
    group.bench_function("full_refresh", |b| {
        b.iter(|| system.refresh_processes(sysinfo::ProcessesToUpdate::All, true))
    });
    group.finish();
    drop(sleepers);
}

criterion_group!(benches, fallback);
criterion_main!(benches);
