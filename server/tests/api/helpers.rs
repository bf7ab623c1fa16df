//! Test helpers: a real backend-monitor on a loopback port, real tonic backends with scripted
//! behaviour, and the real demo-backend binary.

use proto::backend_server::{Backend, BackendServer};
use proto::{HealthMessage, MemoryUsageData, ModelOptions, Reply, State, StatusResponse};
use server::config::{Config, parse};
use server::startup::Application;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The demo backend built by cargo for these tests.
pub const DEMO_BACKEND: &str = env!("CARGO_BIN_EXE_demo-backend");
/// The server binary built by cargo for these tests.
pub const SERVER_BINARY: &str = env!("CARGO_BIN_EXE_backend-monitor");

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .try_init();
    }
}

/// No test request may wait longer than this.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(60);

/// An HTTP client whose requests give up after [`REQUEST_LIMIT`], so no test hangs.
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_LIMIT)
        .build()
        .expect("client builds")
}

/// A running backend-monitor and an HTTP client for it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Settings that keep tests fast; a test's own `[settings]` replaces them.
const FAST_SETTINGS: &str = "[settings]\nlisten = \"127.0.0.1:0\"\nhealth_interval = \"100ms\"\nhealth_attempts = 50\nstop_grace = \"3s\"\nbusy_wait = \"1s\"\npoll_interval = \"200ms\"\n";

/// Parses `toml`, after [`FAST_SETTINGS`] unless it has its own `[settings]`.
fn test_config(toml: &str) -> (server::config::Settings, Vec<server::config::ModelSpec>) {
    init_logs();
    let text = if toml.contains("[settings]") {
        toml.to_string()
    } else {
        format!("{FAST_SETTINGS}{toml}")
    };
    parse(&text, Path::new("test.toml")).expect("test config is valid")
}

/// A backend-monitor serving `toml` (see [`test_config`]) on a loopback port.
pub async fn spawn_app(toml: &str) -> TestApp {
    let (settings, models) = test_config(toml);
    serve(settings, models).await
}

async fn serve(
    settings: server::config::Settings,
    models: Vec<server::config::ModelSpec>,
) -> TestApp {
    let config = Config {
        settings,
        models,
        // The static files a test can count on (the built bundle may not exist yet).
        site_root: concat!(env!("CARGO_MANIFEST_DIR"), "/../public").into(),
        shim: SERVER_BINARY.into(),
    };
    let app = Application::build(config).await.expect("app builds");
    let port = app.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        http: test_client(),
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /backend/monitor` with a JSON body, as LocalAI documents it.
    pub async fn monitor(&self, model: &str) -> reqwest::Response {
        self.http
            .get(self.url("/backend/monitor"))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "model": model }).to_string())
            .send()
            .await
            .expect("request sent")
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// A request with an optional content type and a raw body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, self.url(path))
            .body(body.to_string());
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        request.send().await.expect("request sent")
    }

    /// `POST /backend/shutdown` with a JSON body.
    pub async fn shutdown(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/backend/shutdown"))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /backend/load`.
    pub async fn load(&self, model: &str) -> reqwest::Response {
        self.http
            .post(self.url("/backend/load"))
            .json(&serde_json::json!({ "model": model }))
            .send()
            .await
            .expect("request sent")
    }

    /// The `/api/backends` entry of one model.
    pub async fn backend(&self, model: &str) -> serde_json::Value {
        self.backend_as(model, None).await
    }

    /// The `/api/backends` entry of one model, asked for with an API key when one is given.
    async fn backend_as(&self, model: &str, key: Option<&str>) -> serde_json::Value {
        let mut request = self.http.get(self.url("/api/backends"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let all: serde_json::Value = request
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("json");
        all["backends"]
            .as_array()
            .expect("backends array")
            .iter()
            .find(|b| b["name"] == model)
            .cloned()
            .expect("model listed")
    }

    /// Waits until the model's lifecycle is `want` (panics after `limit`).
    pub async fn wait_for_lifecycle(
        &self,
        model: &str,
        want: &str,
        limit: Duration,
    ) -> serde_json::Value {
        self.wait_for_lifecycle_as(model, want, limit, None).await
    }

    /// [`TestApp::wait_for_lifecycle`] for an app with API keys, using `key` (up to 10 s).
    pub async fn wait_for_lifecycle_with_key(&self, model: &str, want: &str, key: &str) {
        self.wait_for_lifecycle_as(model, want, Duration::from_secs(10), Some(key))
            .await;
    }

    async fn wait_for_lifecycle_as(
        &self,
        model: &str,
        want: &str,
        limit: Duration,
        key: Option<&str>,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let backend = self.backend_as(model, key).await;
            if backend["lifecycle"] == want {
                return backend;
            }
            assert!(
                start.elapsed() < limit,
                "{model} did not become {want} within {limit:?}: {backend}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the first observation of a running model (panics after 5 s).
    pub async fn wait_for_observation(&self, model: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let entry = self.backend(model).await;
            if !entry["observation"].is_null() {
                return entry["observation"].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{model} was never observed: {entry}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server the way a signal would, and waits until it has stopped its backends.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// Asserts that the response has status `code` and LocalAI's error envelope; returns the body.
pub async fn expect_error(response: reqwest::Response, code: u16) -> serde_json::Value {
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    assert_eq!(status.as_u16(), code, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
    body
}

/// True while a process with this pid exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Sends `signal` to `pid`; panics if it cannot be sent.
pub fn send_signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal sent");
}

/// How a scripted test backend answers.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// How long `Status` takes to answer.
    pub status_latency: Duration,
    /// The state `Status` reports.
    pub state: State,
    /// Answer UNIMPLEMENTED to `Status`.
    pub status_unimplemented: bool,
    /// Reported memory.
    pub memory: Option<(u64, Vec<(&'static str, u64)>)>,
    /// Answer `Status` with this error instead.
    pub status_error: Option<tonic::Code>,
    /// How long `Free` takes.
    pub free_latency: Duration,
    /// Answer `Free` with `success: false`.
    pub free_fails: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            status_latency: Duration::ZERO,
            state: State::Ready,
            status_unimplemented: false,
            memory: Some((3000, vec![("weights", 2000), ("kv_cache", 1000)])),
            status_error: None,
            // Slow enough that concurrent shutdowns overlap.
            free_latency: Duration::from_millis(200),
            free_fails: false,
        }
    }
}

/// A real gRPC backend served on loopback by the test process.
pub struct TestBackend {
    pub address: String,
    pub free_calls: Arc<AtomicUsize>,
    pub status_calls: Arc<AtomicUsize>,
    /// `GetMetrics` calls (always answered UNIMPLEMENTED, as most backends do).
    pub generation_calls: Arc<AtomicUsize>,
    pub state: Arc<std::sync::Mutex<State>>,
    /// The `grpc-timeout` header of every call received, in order.
    pub deadlines: Arc<std::sync::Mutex<Vec<String>>>,
    server: tokio::task::AbortHandle,
}

impl TestBackend {
    /// Stops serving (the port closes; established connections are dropped).
    pub fn close(&self) {
        self.server.abort();
    }
}

struct Scripted {
    behaviour: Behaviour,
    free_calls: Arc<AtomicUsize>,
    status_calls: Arc<AtomicUsize>,
    generation_calls: Arc<AtomicUsize>,
    state: Arc<std::sync::Mutex<State>>,
    deadlines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Scripted {
    fn note_deadline<T>(&self, request: &Request<T>) {
        let value = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        self.deadlines.lock().expect("deadlines lock").push(value);
    }
}

#[tonic::async_trait]
impl Backend for Scripted {
    async fn health(&self, request: Request<HealthMessage>) -> Result<Response<Reply>, Status> {
        self.note_deadline(&request);
        Ok(Response::new(Reply {
            message: b"OK".to_vec(),
            ..Default::default()
        }))
    }

    async fn load_model(
        &self,
        _: Request<ModelOptions>,
    ) -> Result<Response<proto::Result>, Status> {
        Ok(Response::new(proto::Result {
            message: "ok".into(),
            success: true,
        }))
    }

    async fn status(
        &self,
        request: Request<HealthMessage>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.note_deadline(&request);
        self.status_calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.behaviour.status_latency).await;
        if self.behaviour.status_unimplemented {
            return Err(Status::unimplemented("no Status here"));
        }
        if let Some(code) = self.behaviour.status_error {
            return Err(Status::new(code, "model state is corrupt"));
        }
        let state = *self.state.lock().expect("state lock");
        Ok(Response::new(StatusResponse {
            state: state.into(),
            memory: self
                .behaviour
                .memory
                .as_ref()
                .map(|(total, parts)| MemoryUsageData {
                    total: *total,
                    breakdown: parts
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect::<HashMap<_, _>>(),
                }),
        }))
    }

    async fn free(
        &self,
        request: Request<HealthMessage>,
    ) -> Result<Response<proto::Result>, Status> {
        self.note_deadline(&request);
        self.free_calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.behaviour.free_latency).await;
        Ok(Response::new(proto::Result {
            message: if self.behaviour.free_fails {
                "cannot free: device busy".into()
            } else {
                "freed".into()
            },
            success: !self.behaviour.free_fails,
        }))
    }

    async fn get_metrics(
        &self,
        _: Request<proto::MetricsRequest>,
    ) -> Result<Response<proto::MetricsResponse>, Status> {
        self.generation_calls.fetch_add(1, Ordering::SeqCst);
        Err(Status::unimplemented("no GetMetrics here"))
    }
}

/// Serves a scripted backend on `127.0.0.1:0`.
pub async fn spawn_backend(behaviour: Behaviour) -> TestBackend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local addr").to_string();
    let free_calls = Arc::new(AtomicUsize::new(0));
    let status_calls = Arc::new(AtomicUsize::new(0));
    let generation_calls = Arc::new(AtomicUsize::new(0));
    let state = Arc::new(std::sync::Mutex::new(behaviour.state));
    let deadlines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let service = Scripted {
        behaviour,
        free_calls: free_calls.clone(),
        status_calls: status_calls.clone(),
        generation_calls: generation_calls.clone(),
        state: state.clone(),
        deadlines: deadlines.clone(),
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(BackendServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    )
    .abort_handle();
    TestBackend {
        address,
        free_calls,
        status_calls,
        generation_calls,
        state,
        deadlines,
        server,
    }
}

/// A `[[models]]` entry for an external backend.
pub fn external_model(name: &str, address: &str) -> String {
    format!("[[models]]\nname = {name:?}\naddress = {address:?}\n")
}

/// A `[[models]]` entry whose backend is a shell wrapper that does not `exec` the demo backend
/// and leaves a `setsid` grandchild behind, whose pid it writes to `pid_file`.
pub fn escaping_demo_model(name: &str, pid_file: &Path) -> String {
    let script = format!(
        "setsid sleep 300 & echo $! > {}; \"$@\"; exit $?",
        pid_file.display()
    );
    format!(
        "[[models]]\nname = {name:?}\ncommand = [\"sh\", \"-c\", {script:?}, \"sh\", {DEMO_BACKEND:?}]\nmodel = \"demo.gguf\"\noptions = [\"weights_mib:1\"]\n"
    )
}

/// Reads the pid a backend wrote to `pid_file`, waiting up to 10 s for it.
pub async fn read_pid_file(pid_file: &Path) -> u32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no pid in {pid_file:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `[[models]]` entry for the demo backend with extra arguments and options.
pub fn demo_model(name: &str, args: &[&str], options: &[&str]) -> String {
    let command: Vec<String> = std::iter::once(DEMO_BACKEND)
        .chain(args.iter().copied())
        .map(|s| format!("{s:?}"))
        .collect();
    let options: Vec<String> = options.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[[models]]\nname = {name:?}\ncommand = [{}]\nmodel = \"demo.gguf\"\noptions = [{}]\n",
        command.join(", "),
        options.join(", ")
    )
}

/// Like [`spawn_app`], with admin and read-only API keys configured.
pub async fn spawn_app_with_keys(toml: &str, admin: &[&str], read: &[&str]) -> TestApp {
    let (mut settings, models) = test_config(toml);
    let keys = |keys: &[&str]| {
        keys.iter()
            .map(|k| k.parse().expect("infallible"))
            .collect()
    };
    settings.api_keys = server::config::ApiKeys {
        admin: keys(admin),
        read: keys(read),
    };
    settings.validate().expect("test keys are valid");
    serve(settings, models).await
}

/// An HTTP client that shows redirects instead of following them.
pub fn client_without_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_LIMIT)
        .build()
        .expect("client builds")
}

/// A temporary config file holding `text`.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    file
}

/// True while `pid` runs (exists and is not a zombie waiting for its parent to reap it).
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The real `backend-monitor` binary, running as a child of the test.
pub struct Server {
    pub child: std::process::Child,
    pub base: String,
}

/// Starts [`SERVER_BINARY`] with `config` on a free loopback port (its output discarded).
pub async fn start_server(config: &tempfile::NamedTempFile) -> Server {
    let port = server::supervisor::free_port().expect("a free port");
    let child = std::process::Command::new(SERVER_BINARY)
        .arg("--config")
        .arg(config.path())
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server starts");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Waits (up to 30 s) until every model of `server` runs and returns their pids.
pub async fn running_pids(server: &Server) -> Vec<u32> {
    let http = test_client();
    let start = Instant::now();
    loop {
        if let Ok(response) = http
            .get(format!("{}/api/backends", server.base))
            .send()
            .await
        {
            let body: serde_json::Value = response.json().await.expect("json");
            let backends = body["backends"].as_array().expect("backends array");
            if backends.iter().all(|b| b["lifecycle"] == "running") {
                return backends
                    .iter()
                    .map(|b| b["pid"].as_u64().expect("a pid") as u32)
                    .collect();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "backends did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
