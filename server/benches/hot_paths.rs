//! The hot paths against their floors, measured in one run on this machine and written to
//! `BENCHMARKS.md` as ratios (the machine is shared and noisy; a ratio against a floor measured
//! in the same run is what holds). Run it with `scripts/bench.sh`, which builds everything in
//! release mode and installs `oha` (the HTTP load generator) first.
//!
//! HTTP numbers come from `oha` against the real release server; the gRPC floor from tonic
//! clients with the same concurrency; in-process numbers from criterion (`benches/fallback.rs`,
//! run first by `scripts/bench.sh`), read from its `estimates.json` files.

use server::grpc::BackendClient;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_backend-monitor");
const DEMO: &str = env!("CARGO_BIN_EXE_demo-backend");
/// Runs of each measurement; the report gives their median and range.
const RUNS: usize = 3;
/// Concurrency of the latency measurements (HTTP and gRPC alike): one at a time, so latency is
/// not queueing on this small machine.
const CONCURRENCY: usize = 1;
/// Requests per latency run.
const REQUESTS: usize = 3000;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let out = std::env::args()
        .skip_while(|a| a != "--out")
        .nth(1)
        .map_or_else(|| PathBuf::from("BENCHMARKS.md"), PathBuf::from);
    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = Report::new();
    report.machine()?;
    // `--fallback-only`: the machine and the fallback sections alone, from criterion's last run
    // (seconds instead of minutes; for checking that section).
    let fallback_only = std::env::args().any(|a| a == "--fallback-only");
    if !fallback_only {
        monitor_against_floors(&runtime, &mut report)?;
    }
    fallback_against_full_refresh(&mut report)?;
    if !fallback_only {
        scale_memory_and_cpu(&mut report)?;
        bundle(&mut report)?;
    }
    std::fs::write(&out, &report.text)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The markdown being written, section by section.
struct Report {
    text: String,
}

impl Report {
    fn new() -> Self {
        Self {
            text: "# Benchmarks\n\nWritten by `scripts/bench.sh` (`cargo bench -p server --bench hot_paths`). \
                   Every figure is the median of the runs, with their range; ratios compare \
                   against floors measured in the same run.\n"
                .to_string(),
        }
    }

    fn section(&mut self, title: &str, intro: &str) {
        let _ = write!(self.text, "\n## {title}\n\n{intro}\n\n");
        println!("== {title}");
    }

    fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        println!("{line}");
    }

    fn machine(&mut self) -> Result<(), Error> {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")?
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let memory = server::process::read_meminfo("MemTotal:").unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
        self.section("Machine", "");
        self.line(&format!(
            "{cores} cores ({cpu}), {:.1} GiB memory, Linux {}, measured {}.",
            memory as f64 / GIB,
            kernel.trim(),
            server::clock::now_rfc3339()
        ));
        Ok(())
    }
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = MIB * 1024.0;

/// Median and range of several runs.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Self {
            median: values[values.len() / 2],
            min: values[0],
            max: values[values.len() - 1],
        }
    }

    fn ms(self) -> String {
        format!(
            "{:.3} ms ({:.3}–{:.3})",
            self.median * 1e3,
            self.min * 1e3,
            self.max * 1e3
        )
    }

    fn count(self, unit: &str) -> String {
        format!(
            "{:.0} {unit} ({:.0}–{:.0})",
            self.median, self.min, self.max
        )
    }
}

/// One latency run: p50 and p99 in seconds, throughput per second.
#[derive(Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    per_second: f64,
}

fn spreads(runs: &[Latency]) -> (Spread, Spread, Spread) {
    (
        Spread::of(runs.iter().map(|r| r.p50).collect()),
        Spread::of(runs.iter().map(|r| r.p99).collect()),
        Spread::of(runs.iter().map(|r| r.per_second).collect()),
    )
}

/// `oha` against `url`: `requests` requests, `concurrency` at a time; every answer must be 200.
fn oha(url: &str, requests: usize, concurrency: usize) -> Result<Latency, Error> {
    let output = Command::new("oha")
        .args(["--no-tui", "--output-format", "json", "-n"])
        .arg(requests.to_string())
        .arg("-c")
        .arg(concurrency.to_string())
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run oha (scripts/bench.sh installs it): {e}"))?;
    if !output.status.success() {
        return Err(format!("oha failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let codes = &json["statusCodeDistribution"];
    let ok = codes["200"].as_u64().unwrap_or(0);
    if ok as usize != requests {
        return Err(format!("{url}: not every answer was 200: {codes}").into());
    }
    let percentile = |p: &str| json["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN);
    Ok(Latency {
        p50: percentile("p50"),
        p99: percentile("p99"),
        per_second: json["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
    })
}

/// A release server on a free port with `config`, killed when dropped.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(config: &str) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let port = server::supervisor::free_port()?;
        let path = dir.path().join("models.toml");
        std::fs::write(
            &path,
            format!(
                "[settings]\nlisten = \"127.0.0.1:{port}\"\nhealth_interval = \"100ms\"\nstatus_timeout = \"500ms\"\n{config}"
            ),
        )?;
        let child = Command::new(SERVER)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        server.wait_until(Duration::from_secs(120), |all| {
            all["backends"].as_array().is_some_and(|b| {
                b.iter()
                    .all(|m| !m["observation"].is_null() || m["name"] == "hung")
            })
        })?;
        Ok(server)
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, Error> {
        let output = Command::new("curl")
            .args(["-sf", "--max-time", "10"])
            .arg(format!("{}{path}", self.base))
            .output()?;
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    fn wait_until(
        &self,
        limit: Duration,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, Error> {
        let start = Instant::now();
        loop {
            if let Ok(all) = self.get("/api/backends")
                && ready(&all)
            {
                return Ok(all);
            }
            if start.elapsed() > limit {
                return Err("the benchmark server never got ready".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// 1. `/backend/monitor` against its floors: a direct tonic `Status` to the same backend, and
///    the HTTP hop alone (`/healthz`), same concurrency.
fn monitor_against_floors(
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> Result<(), Error> {
    let demo = format!(
        "[[models]]\nname = \"demo\"\ncommand = [{DEMO:?}]\nmodel = \"demo.gguf\"\noptions = [\"weights_mib:16\"]\n"
    );
    let server = Server::start(&demo)?;
    let address = server.get("/api/backends")?["backends"][0]["address"]
        .as_str()
        .ok_or("no address")?
        .to_string();
    let monitor = format!("{}/backend/monitor?model=demo", server.base);
    let hop = format!("{}/healthz", server.base);
    // Warm-up.
    oha(&monitor, 500, CONCURRENCY)?;
    oha(&hop, 500, CONCURRENCY)?;
    runtime.block_on(direct_status(&address, 500, CONCURRENCY))?;
    let (mut monitor_runs, mut hop_runs, mut status_runs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        monitor_runs.push(oha(&monitor, REQUESTS, CONCURRENCY)?);
        hop_runs.push(oha(&hop, REQUESTS, CONCURRENCY)?);
        status_runs.push(runtime.block_on(direct_status(&address, REQUESTS, CONCURRENCY))?);
    }
    let rss_idle = rss_mib(server.pid());
    report.section(
        "`/backend/monitor` against its floors",
        &format!("{REQUESTS} requests, {CONCURRENCY} at a time, {RUNS} runs, after a warm-up; oha for HTTP, tonic for the direct `Status`."),
    );
    report.line("| | p50 | p99 | per second |\n|---|---|---|---|");
    let mut p50s = Vec::new();
    for (name, runs) in [
        ("`/backend/monitor`", &monitor_runs),
        ("direct `Status` (floor 1)", &status_runs),
        ("`/healthz`: the HTTP hop (floor 2)", &hop_runs),
    ] {
        let (p50, p99, rate) = spreads(runs);
        p50s.push(p50.median);
        report.line(&format!(
            "| {name} | {} | {} | {} |",
            p50.ms(),
            p99.ms(),
            rate.count("/s")
        ));
    }
    let ratio = p50s[0] / (p50s[1] + p50s[2]);
    report.line(&format!(
        "\nmonitor p50 / (Status p50 + hop p50) = **{ratio:.2}** (target ≤ 1.15). Server RSS with one backend, idle: {rss_idle:.1} MiB."
    ));
    Ok(())
}

/// Direct `Status` calls, `concurrency` at a time, through one lazily connected channel.
async fn direct_status(
    address: &str,
    requests: usize,
    concurrency: usize,
) -> Result<Latency, Error> {
    let client = BackendClient::new(address)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let share = requests / concurrency + usize::from(worker < requests % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(share);
            for _ in 0..share {
                let call = Instant::now();
                client.status(Duration::from_secs(5)).await?;
                times.push(call.elapsed().as_secs_f64());
            }
            Ok::<_, server::grpc::CallError>(times)
        }));
    }
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Ok(Latency {
        p50: at(0.5),
        p99: at(0.99),
        per_second: times.len() as f64 / elapsed,
    })
}

/// 2. The process-metrics fallback per request, with 1 and 100 tracked processes, against a
///    full `sysinfo` refresh of every process: criterion's results from `benches/fallback.rs`
///    (`scripts/bench.sh` runs it first), median with its 95 % confidence interval.
fn fallback_against_full_refresh(report: &mut Report) -> Result<(), Error> {
    let dir = criterion_dir().join("fallback");
    let one = criterion_median(&dir.join("1_tracked_process"))?;
    let hundred = criterion_median(&dir.join("100_tracked_processes"))?;
    let full = criterion_median(&dir.join("full_refresh"))?;
    report.section(
        "The process-metrics fallback",
        "Per request: one tracked process's metrics (`/proc/<pid>/stat` check and `status` read); against one full `sysinfo` refresh of every process on the machine. Measured with criterion (`cargo bench -p server --bench fallback`): median, with its 95 % confidence interval.",
    );
    report.line("| | median | ratio to the full refresh |\n|---|---|---|");
    for (name, spread) in [
        ("1 tracked process", one),
        ("100 tracked processes", hundred),
    ] {
        report.line(&format!(
            "| {name} | {} | {:.0}× cheaper (target ≥ 20×, ≤ 1 ms) |",
            spread.ms(),
            full.median / spread.median
        ));
    }
    report.line(&format!("| full `sysinfo` refresh | {} | 1× |", full.ms()));
    Ok(())
}

/// Where criterion writes its results, found as criterion finds it: `$CRITERION_HOME`, else
/// `criterion/` in `$CARGO_TARGET_DIR`, else in the workspace's `target/`.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        PathBuf::from(home)
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(target).join("criterion")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
    }
}

/// The median of one criterion benchmark (`<dir>/new/estimates.json`, in nanoseconds) and its
/// confidence interval, in seconds.
fn criterion_median(dir: &Path) -> Result<Spread, Error> {
    let path = dir.join("new/estimates.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (run `cargo bench -p server --bench fallback` first)",
            path.display()
        )
    })?;
    let estimates: serde_json::Value = serde_json::from_str(&text)?;
    let median = &estimates["median"];
    let seconds = |value: &serde_json::Value| {
        value
            .as_f64()
            .map(|ns| ns / 1e9)
            .ok_or_else(|| format!("{}: no median in criterion's estimates", path.display()))
    };
    Ok(Spread {
        median: seconds(&median["point_estimate"])?,
        min: seconds(&median["confidence_interval"]["lower_bound"])?,
        max: seconds(&median["confidence_interval"]["upper_bound"])?,
    })
}

/// 3–5. Many backends (one hung): `/api/backends` and `/` latency, the server's RSS (and after a
/// burst of 1,000 connections), and its CPU use while 10 readers poll.
fn scale_memory_and_cpu(report: &mut Report) -> Result<(), Error> {
    report.section(
        "Scale, memory and the cost of watching",
        "N backends served by one demo process on N loopback ports, plus one hung backend (`Status` never answers); the release server observes them all, at most 200 observations a second in all (100 backends each second, 1,000 each 5 s). Latency: oha, 500 requests, 4 at a time, after a warm-up, the medians of 3 runs' p50 and p99; `/` is the panel's first page (100 rows a page). RSS: while observing, 6 s after every backend was first observed, before any load. CPU: the server's user + system time over 15 s while 10 readers poll `/api/backends` every second, in percent of one core.",
    );
    report.line("| backends | `/api/backends` p50 / p99 | `/` p50 / p99 | RSS, observing | RSS before 1,000 connections / 6 s after | CPU, 10 readers |\n|---|---|---|---|---|---|");
    for count in [100usize, 1000] {
        let dir = tempfile::tempdir()?;
        let addrs = dir.path().join("addrs");
        let mut demo = Command::new(DEMO)
            .args(["--addr", "127.0.0.1:0", "--also-listen"])
            .arg((count - 1).to_string())
            .arg("--addrs-file")
            .arg(&addrs)
            .stderr(Stdio::null())
            .spawn()?;
        let listed = wait_for_file(&addrs, Duration::from_secs(30))?;
        let mut config = String::new();
        for (i, address) in listed.lines().enumerate() {
            let _ = write!(
                config,
                "[[models]]\nname = \"m{i}\"\naddress = {address:?}\n"
            );
        }
        let mut hung = Command::new(DEMO)
            .args([
                "--addr",
                "127.0.0.1:0",
                "--status-delay",
                "1h",
                "--also-listen",
                "1",
                "--addrs-file",
            ])
            .arg(dir.path().join("hung"))
            .stderr(Stdio::null())
            .spawn()?;
        let hung_address = wait_for_file(&dir.path().join("hung"), Duration::from_secs(30))?;
        let _ = write!(
            config,
            "[[models]]\nname = \"hung\"\naddress = {:?}\n",
            hung_address.trim()
        );
        let server = Server::start(&config)?;
        // Its own memory while it observes them, once start-up's garbage is handed back (the
        // trimmer runs every 5 s; see server/src/allocator.rs).
        std::thread::sleep(Duration::from_secs(6));
        let rss = rss_mib(server.pid());
        let (list_url, page_url) = (
            format!("{}/api/backends", server.base),
            format!("{}/", server.base),
        );
        // Warm-up, then the runs; the table shows the medians of their p50 and p99.
        oha(&list_url, 100, 4)?;
        oha(&page_url, 100, 4)?;
        let (mut list_runs, mut page_runs) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            list_runs.push(oha(&list_url, 500, 4)?);
            page_runs.push(oha(&page_url, 500, 4)?);
        }
        let (list, page) = (spreads(&list_runs), spreads(&page_runs));
        let rss_before = rss_mib(server.pid());
        oha(&format!("{}/api/backends", server.base), 3000, 1000)?;
        std::thread::sleep(Duration::from_secs(6));
        let rss_after = rss_mib(server.pid());
        let cpu = cpu_while_polled(&server, 10, Duration::from_secs(15))?;
        report.line(&format!(
            "| {count} + 1 hung | {:.2} / {:.2} ms | {:.1} / {:.1} ms | {rss:.1} MiB | {rss_before:.1} / {rss_after:.1} MiB | {cpu:.1} % |",
            list.0.median * 1e3,
            list.1.median * 1e3,
            page.0.median * 1e3,
            page.1.median * 1e3
        ));
        drop(server);
        for child in [&mut demo, &mut hung] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    report.line("\nTargets: with 100, `/api/backends` ≤ 0.3 ms and `/` ≤ 5 ms p50 and RSS ≤ 20 MiB; with 1,000, ≤ 3 ms and ≤ 50 ms and RSS ≤ 60 MiB; after a burst, back within 25 % of before; CPU ≤ 5 % of a core for 1,000 backends.");
    Ok(())
}

fn wait_for_file(path: &Path, limit: Duration) -> Result<String, Error> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return Ok(text);
        }
        if start.elapsed() > limit {
            return Err(format!("{} never appeared", path.display()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's CPU use (percent of one core) over `window` while `readers` threads each GET
/// `/api/backends` once a second.
fn cpu_while_polled(server: &Server, readers: usize, window: Duration) -> Result<f64, Error> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..readers {
        let (stop, url) = (stop.clone(), format!("{}/api/backends", server.base));
        threads.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("curl")
                    .args(["-sf", "-o", "/dev/null"])
                    .arg(&url)
                    .status();
                std::thread::sleep(Duration::from_secs(1));
            }
        }));
    }
    let ticks = |pid: u32| server::process::read_stat(pid).map_or(0, |s| s.cpu_ticks);
    let before = ticks(server.pid());
    std::thread::sleep(window);
    let after = ticks(server.pid());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
    Ok((after - before) as f64 / per_second / window.as_secs_f64() * 100.0)
}

fn rss_mib(pid: u32) -> f64 {
    server::process::read_memory_info(pid).map_or(0.0, |m| m.rss as f64 / MIB)
}

/// 6. The browser bundle: WASM + JS, raw and gzip (`gzip -9`, as a server would send it).
fn bundle(report: &mut Report) -> Result<(), Error> {
    report.section(
        "The browser bundle",
        "From `target/site/pkg` (`scripts/build.sh`); the budget is 250 KB gzip for both together.",
    );
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/site/pkg");
    let mut total = (0u64, 0u64);
    report.line("| file | raw | gzip |\n|---|---|---|");
    for name in ["backend-monitor_bg.wasm", "backend-monitor.js"] {
        let path = pkg.join(name);
        let Ok(raw) = std::fs::metadata(&path).map(|m| m.len()) else {
            report.line(&format!("| {name} | not built | |"));
            continue;
        };
        let mut gzip = Command::new("gzip")
            .args(["-9", "-c"])
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut compressed = Vec::new();
        if let Some(mut out) = gzip.stdout.take() {
            std::io::Read::read_to_end(&mut out, &mut compressed)?;
        }
        gzip.wait()?;
        let zipped = compressed.len() as u64;
        total = (total.0 + raw, total.1 + zipped);
        report.line(&format!(
            "| `{name}` | {:.0} KB | {:.0} KB |",
            raw as f64 / 1000.0,
            zipped as f64 / 1000.0
        ));
    }
    report.line(&format!(
        "| **total** | **{:.0} KB** | **{:.0} KB** |",
        total.0 as f64 / 1000.0,
        total.1 as f64 / 1000.0
    ));
    let _ = std::io::stdout().flush();
    if let Err(e) = bundle_contents(report) {
        report.line(&format!("\n(twiggy could not break the bundle down: {e})"));
    }
    Ok(())
}

/// What the bundle's code is made of: `twiggy top` on the release WebAssembly made again with
/// its names kept (`scripts/strip-unused-hydration.mjs`, `wasm-bindgen --keep-debug`, then
/// `wasm-opt -Oz -g`, as scripts/build.sh does without them), grouped by crate, and its
/// biggest items.
fn bundle_contents(report: &mut Report) -> Result<(), Error> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let input = root.join("target/wasm32-unknown-unknown/wasm-release/app.wasm");
    let dir = tempfile::tempdir()?;
    let run = |program: &str, args: &[&std::ffi::OsStr]| -> Result<Vec<u8>, Error> {
        let out = Command::new(program).args(args).output()?;
        if !out.status.success() {
            return Err(
                format!("{program} failed: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
        Ok(out.stdout)
    };
    let (stripped, bound, named) = (
        dir.path().join("app.wasm"),
        dir.path().join("app_bg.wasm"),
        dir.path().join("named.wasm"),
    );
    run(
        "node",
        &[
            root.join("scripts/strip-unused-hydration.mjs").as_os_str(),
            input.as_os_str(),
            stripped.as_os_str(),
        ],
    )?;
    run(
        "wasm-bindgen",
        &[
            "--target".as_ref(),
            "web".as_ref(),
            "--keep-debug".as_ref(),
            "--out-dir".as_ref(),
            dir.path().as_os_str(),
            stripped.as_os_str(),
        ],
    )?;
    run(
        "wasm-opt",
        &[
            "-Oz".as_ref(),
            "-g".as_ref(),
            bound.as_os_str(),
            "-o".as_ref(),
            named.as_os_str(),
        ],
    )?;
    let top = run(
        "twiggy",
        &[
            "top".as_ref(),
            "-n".as_ref(),
            "1000000".as_ref(),
            "-f".as_ref(),
            "json".as_ref(),
            named.as_os_str(),
        ],
    )?;
    #[derive(serde::Deserialize)]
    struct Item {
        name: String,
        shallow_size: u64,
    }
    let items: Vec<Item> = serde_json::from_slice(&top)?;
    // Code and data only: the name section exists only in this copy.
    let items: Vec<&Item> = items
        .iter()
        .filter(|i| !i.name.contains("\"function names\""))
        .collect();
    let total: u64 = items.iter().map(|i| i.shallow_size).sum();
    const GROUPS: [(&str, &str); 9] = [
        (
            "hydrate",
            "hydration (the synchronous path; scripts/strip-unused-hydration.mjs strips the rest)",
        ),
        (
            "serde",
            "serde and serde_json (decoders of the shared types)",
        ),
        ("tachys", "tachys (Leptos rendering)"),
        (
            "reactive_graph",
            "reactive_graph (Leptos signals and effects)",
        ),
        ("leptos", "leptos (components, `For`)"),
        ("app::", "the panel's own code (`app::`)"),
        ("data segment", "data (strings, tables)"),
        ("fmt", "core::fmt (formatting)"),
        ("", "everything else (core, alloc, wasm-bindgen, dlmalloc…)"),
    ];
    let mut sizes = [0u64; GROUPS.len()];
    for item in &items {
        let group = GROUPS
            .iter()
            .position(|(key, _)| item.name.contains(key))
            .unwrap_or(GROUPS.len() - 1);
        sizes[group] += item.shallow_size;
    }
    report.line(&format!(
        "\nWhat the {:.0} KB of code and data are (twiggy, names kept; an item counts in the first group its name matches):\n\n| group | KB | share |\n|---|---|---|",
        total as f64 / 1000.0
    ));
    for ((_, label), size) in GROUPS.iter().zip(sizes) {
        report.line(&format!(
            "| {label} | {:.0} | {:.0} % |",
            size as f64 / 1000.0,
            size as f64 * 100.0 / total.max(1) as f64
        ));
    }
    report.line("\nThe biggest items:\n\n| bytes | item |\n|---|---|");
    for item in items.iter().take(15) {
        let name = item.name.replace('|', "\\|");
        let name: String = name.chars().take(110).collect();
        report.line(&format!("| {} | `{name}` |", item.shallow_size));
    }
    Ok(())
}
