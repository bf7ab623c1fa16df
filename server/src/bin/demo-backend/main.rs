//! `demo-backend`: a small but honest implementation of LocalAI's `Backend` gRPC contract, used by
//! the embedded default configuration and by the tests.
//!
//! `LoadModel` really allocates and touches the memory it is asked for (options
//! `weights_mib:N` and `kv_cache_mib:N`), `Status` reports its own resident memory with that
//! breakdown, and `Free` releases it. `--status-unimplemented` makes `Status` and `Free` answer
//! UNIMPLEMENTED, like many real backends, to exercise the OS fallback; `--status-delay` makes
//! `Status` hang, like a stuck backend; `--load-delay` makes `LoadModel` slow;
//! `--report-busy` makes it report BUSY once loaded; `--tokens-per-second` makes `GetMetrics`
//! report generation at that speed since the load (without it, or with
//! `--status-unimplemented`, `GetMetrics` answers UNIMPLEMENTED, as most backends do).
//! Like other real backends: `--report-no-memory` answers `Status` without memory (LocalAI's
//! Python backends), `--report-virtual-total` reports its virtual size as the total and RSS as
//! `gopsutil-RSS` (LocalAI's Go backends), and `--worker-mib N` starts a worker process holding
//! N MiB (a backend with workers).

use clap::Parser;
use proto::backend_server::{Backend, BackendServer};
use proto::{
    HealthMessage, MemoryUsageData, MetricsRequest, MetricsResponse, ModelOptions, Reply, State,
    StatusResponse,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Memory page size used to touch allocations so they become resident.
const PAGE: usize = 4096;
const MIB: usize = 1024 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "demo-backend",
    about = "A demo backend speaking LocalAI's Backend gRPC protocol"
)]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, required_unless_present = "be_worker")]
    addr: Option<SocketAddr>,
    /// Answer UNIMPLEMENTED to Status and Free.
    #[arg(long)]
    status_unimplemented: bool,
    /// Keep running on SIGTERM (to test the SIGKILL after the grace period).
    #[arg(long)]
    ignore_sigterm: bool,
    /// Answer Status only after this long, e.g. `1h` (to show a hung backend).
    #[arg(long, value_parser = humantime::parse_duration)]
    status_delay: Option<Duration>,
    /// Report BUSY once a model is loaded (as if always serving a request).
    #[arg(long)]
    report_busy: bool,
    /// Take this long to answer LoadModel, e.g. `2s` (a slow model load).
    #[arg(long, value_parser = humantime::parse_duration)]
    load_delay: Option<Duration>,
    /// Implement GetMetrics, reporting tokens generated at this speed since the load.
    #[arg(long, default_value_t = 0.0)]
    tokens_per_second: f32,
    /// Answer Status READY without any memory.
    #[arg(long)]
    report_no_memory: bool,
    /// Report the virtual size as the total, and RSS only as the `gopsutil-RSS` component.
    #[arg(long)]
    report_virtual_total: bool,
    /// Start a worker process that holds this many MiB.
    #[arg(long)]
    worker_mib: Option<usize>,
    /// Be that worker: hold this many MiB until the parent dies.
    #[arg(long, hide = true)]
    be_worker: Option<usize>,
    /// Also serve on this many more loopback ports (one process standing in for many
    /// backends, for benchmarks); their addresses go to `--addrs-file`, one per line.
    #[arg(long, default_value_t = 0, requires = "addrs_file")]
    also_listen: usize,
    /// Where `--also-listen` writes its addresses.
    #[arg(long)]
    addrs_file: Option<std::path::PathBuf>,
}

/// A loaded "model": buffers that really occupy memory.
struct Loaded {
    name: String,
    at: std::time::Instant,
    weights: Vec<u8>,
    kv_cache: Vec<u8>,
}

struct Demo {
    status_unimplemented: bool,
    status_delay: Option<Duration>,
    load_delay: Option<Duration>,
    report_busy: bool,
    tokens_per_second: f32,
    report_no_memory: bool,
    report_virtual_total: bool,
    loaded: Arc<Mutex<Option<Loaded>>>,
}

/// Allocates `mib` MiB and writes to every page so the memory is resident.
fn resident_buffer(mib: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; mib * MIB];
    for i in (0..buffer.len()).step_by(PAGE) {
        buffer[i] = 1;
    }
    std::hint::black_box(buffer)
}

fn parse_options(options: &[String]) -> Result<HashMap<String, usize>, String> {
    let mut sizes = HashMap::new();
    for option in options {
        let Some((key, value)) = option.split_once(':') else {
            continue;
        };
        if matches!(key, "weights_mib" | "kv_cache_mib") {
            let mib = value
                .parse::<usize>()
                .map_err(|_| format!("option {key} needs a number of MiB, got {value:?}"))?;
            if mib > 64 * 1024 {
                return Err(format!(
                    "option {key}: {mib} MiB is more than this demo allows"
                ));
            }
            sizes.insert(key.to_string(), mib);
        }
    }
    Ok(sizes)
}

fn result(success: bool, message: impl Into<String>) -> Response<proto::Result> {
    Response::new(proto::Result {
        message: message.into(),
        success,
    })
}

#[tonic::async_trait]
impl Backend for Demo {
    async fn health(&self, _: Request<HealthMessage>) -> Result<Response<Reply>, Status> {
        Ok(Response::new(Reply {
            message: b"OK".to_vec(),
            ..Default::default()
        }))
    }

    async fn load_model(
        &self,
        request: Request<ModelOptions>,
    ) -> Result<Response<proto::Result>, Status> {
        let options = request.into_inner();
        if let Some(delay) = self.load_delay {
            tokio::time::sleep(delay).await;
        }
        let sizes = match parse_options(&options.options) {
            Ok(sizes) => sizes,
            Err(message) => {
                eprintln!("LoadModel({}) rejected: {message}", options.model);
                return Ok(result(false, message));
            }
        };
        let weights_mib = sizes.get("weights_mib").copied().unwrap_or(64);
        let kv_cache_mib = sizes.get("kv_cache_mib").copied().unwrap_or(0);
        let loaded = tokio::task::spawn_blocking(move || Loaded {
            name: options.model,
            at: std::time::Instant::now(),
            weights: resident_buffer(weights_mib),
            kv_cache: resident_buffer(kv_cache_mib),
        })
        .await
        .map_err(|e| Status::internal(format!("allocation failed: {e}")))?;
        println!(
            "loaded {} ({weights_mib} MiB weights, {kv_cache_mib} MiB KV cache)",
            loaded.name
        );
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = Some(loaded);
        Ok(result(true, "loaded"))
    }

    async fn status(&self, _: Request<HealthMessage>) -> Result<Response<StatusResponse>, Status> {
        if self.status_unimplemented {
            return Err(Status::unimplemented(
                "Status is not implemented by this backend",
            ));
        }
        if let Some(delay) = self.status_delay {
            tokio::time::sleep(delay).await;
        }
        let own = server::process::read_memory_info(std::process::id()).unwrap_or_default();
        let rss = own.rss;
        let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, weights, kv_cache) = match loaded.as_ref() {
            Some(l) => (
                if self.report_busy {
                    State::Busy
                } else {
                    State::Ready
                },
                l.weights.len() as u64,
                l.kv_cache.len() as u64,
            ),
            None => (State::Uninitialized, 0, 0),
        };
        if self.report_no_memory {
            return Ok(Response::new(StatusResponse {
                state: state.into(),
                memory: None,
            }));
        }
        if self.report_virtual_total {
            return Ok(Response::new(StatusResponse {
                state: state.into(),
                memory: Some(MemoryUsageData {
                    total: own.vms,
                    breakdown: HashMap::from([("gopsutil-RSS".to_string(), rss)]),
                }),
            }));
        }
        let total = rss.max(weights + kv_cache);
        let mut breakdown = HashMap::from([
            ("weights".to_string(), weights),
            ("kv_cache".to_string(), kv_cache),
        ]);
        breakdown.insert("runtime".to_string(), total - weights - kv_cache);
        Ok(Response::new(StatusResponse {
            state: state.into(),
            memory: Some(MemoryUsageData { total, breakdown }),
        }))
    }

    async fn free(&self, _: Request<HealthMessage>) -> Result<Response<proto::Result>, Status> {
        if self.status_unimplemented {
            return Err(Status::unimplemented(
                "Free is not implemented by this backend",
            ));
        }
        let freed = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match freed {
            Some(l) => {
                println!("freed {}", l.name);
                Ok(result(true, "freed"))
            }
            None => Ok(result(true, "nothing loaded")),
        }
    }

    async fn get_metrics(
        &self,
        _: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        if self.status_unimplemented || self.tokens_per_second == 0.0 {
            return Err(Status::unimplemented(
                "GetMetrics is not implemented by this backend",
            ));
        }
        let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let seconds = loaded
            .as_ref()
            .map_or(0.0, |l| l.at.elapsed().as_secs_f32());
        let tokens_per_second = if loaded.is_some() {
            self.tokens_per_second
        } else {
            0.0
        };
        Ok(Response::new(MetricsResponse {
            tokens_per_second,
            tokens_generated: (tokens_per_second * seconds) as i32,
            prompt_tokens_processed: i32::from(loaded.is_some() && tokens_per_second > 0.0) * 16,
            ..Default::default()
        }))
    }
}

async fn terminated(ignore_sigterm: bool) {
    let Ok(mut sigterm) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if !ignore_sigterm {
            eprintln!("demo-backend: terminating");
            return;
        }
        eprintln!("demo-backend: ignoring termination signal");
    }
}

/// The worker of `--worker-mib`: holds `mib` MiB and sleeps until its parent dies.
fn be_worker(mib: usize) -> std::process::ExitCode {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("demo-backend worker: no parent-death signal: {e}");
    }
    let held = resident_buffer(mib);
    eprintln!("demo-backend worker holding {mib} MiB");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        std::hint::black_box(&held);
    }
}

/// Starts the worker process of `--worker-mib`.
fn start_worker(mib: usize) -> std::io::Result<std::process::Child> {
    std::process::Command::new(std::env::current_exe()?)
        .args(["--be-worker", &mib.to_string()])
        .spawn()
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(mib) = args.be_worker {
        return be_worker(mib);
    }
    let _worker = match args.worker_mib.map(start_worker).transpose() {
        Ok(worker) => worker,
        Err(e) => {
            eprintln!("demo-backend: cannot start the worker: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(e) => {
            eprintln!("demo-backend: no runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Serves `demo` on `count` more loopback ports and writes their addresses to `file`.
async fn also_listen(
    demo: &Arc<Demo>,
    count: usize,
    file: Option<&std::path::Path>,
) -> std::io::Result<()> {
    let Some(file) = file else {
        return Ok(());
    };
    let mut addresses = String::new();
    for _ in 0..count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addresses.push_str(&format!("{}\n", listener.local_addr()?));
        let service = BackendServer::from_arc(Arc::clone(demo));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
    }
    std::fs::write(file, addresses)
}

async fn serve(args: Args) -> std::process::ExitCode {
    let Some(addr) = args.addr else {
        eprintln!("demo-backend: --addr is required");
        return std::process::ExitCode::FAILURE;
    };
    let demo = Arc::new(Demo {
        status_unimplemented: args.status_unimplemented,
        status_delay: args.status_delay,
        load_delay: args.load_delay,
        report_busy: args.report_busy,
        tokens_per_second: args.tokens_per_second,
        report_no_memory: args.report_no_memory,
        report_virtual_total: args.report_virtual_total,
        loaded: Arc::new(Mutex::new(None)),
    });
    if let Err(e) = also_listen(&demo, args.also_listen, args.addrs_file.as_deref()).await {
        eprintln!("demo-backend: cannot listen on more ports: {e}");
        return std::process::ExitCode::FAILURE;
    }
    eprintln!("demo-backend listening on {addr}");
    let served = tonic::transport::Server::builder()
        .add_service(BackendServer::from_arc(Arc::clone(&demo)))
        .serve_with_shutdown(addr, terminated(args.ignore_sigterm))
        .await;
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-backend: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
