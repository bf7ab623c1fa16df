//! The command-line client: `backend-monitor ps`, `stop` and `start` talk to a running
//! backend-monitor over its JSON API (`GET /api/backends`, `POST /backend/shutdown`,
//! `POST /backend/load`), like `ollama ps` and `ollama stop` do.
//!
//! The server is found at `--url` (env `BACKEND_MONITOR_URL`, default `http://127.0.0.1:8080`);
//! an API key is taken from `BACKEND_MONITOR_API_KEY` only (a flag would show it in the process
//! list) and sent as `Authorization: Bearer`. Plain HTTP only: the use case is a local server, so
//! the binary carries no TLS stack.
//!
//! Every failure kind has its own exit code ([`CliError::exit_code`]), documented in the README.

use app::format;
use app::snapshot::{BackendSummary, Lifecycle, MeasuredMemory, PanelSnapshot};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Where the server is looked for when neither `--url` nor `BACKEND_MONITOR_URL` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The environment variable holding the API key sent to the server.
pub const API_KEY_ENV: &str = "BACKEND_MONITOR_API_KEY";
/// How long `ps` waits for the server by default.
const PS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` and `start` wait by default: the server may wait for a busy backend, a
/// grace period, or a model load (5 minutes by default) before it answers.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Names longer than this are cut in the table, so that one long name cannot widen it.
const MAX_NAME_WIDTH: usize = 32;

/// The exit codes, shown under each client subcommand's `--help` (and in the README).
const EXIT_CODES: &str = "Exit codes: 0 success, 1 other failure, 2 usage error, 3 cannot connect, \
4 API key missing or wrong (401), 5 key not allowed (403), 6 unknown model, 7 backend busy \
(try --force), 8 model not running";

/// The client subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the configured models of a running backend-monitor, like `ollama ps`.
    #[command(after_help = EXIT_CODES)]
    Ps(PsArgs),
    /// Stop a model's backend (or every running one with --all) to free its memory.
    #[command(after_help = EXIT_CODES)]
    Stop(StopArgs),
    /// Start a stopped or failed model's backend; answers once it is ready.
    #[command(after_help = EXIT_CODES)]
    Start(StartArgs),
}

/// How to reach the server and how to print its answer; shared by every client subcommand.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// Base URL of the running backend-monitor (plain http).
    #[arg(long, env = "BACKEND_MONITOR_URL", default_value = DEFAULT_URL, value_parser = parse_url)]
    pub url: Url,
    /// Print the server's JSON answer instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the server's answer, e.g. `30s` [default: 10s for ps, 10m for stop
    /// and start].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

/// Arguments of `ps`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Where the server is.
    #[command(flatten)]
    pub connection: Connection,
}

/// Arguments of `stop`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["model", "all"])))]
pub struct StopArgs {
    /// The model to stop.
    pub model: Option<String>,
    /// Stop every backend that is starting, running or stopping, in parallel.
    #[arg(long)]
    pub all: bool,
    /// Stop even if the backend reports that it is busy (sends `"force": true`).
    #[arg(long)]
    pub force: bool,
    /// Where the server is.
    #[command(flatten)]
    pub connection: Connection,
}

/// Arguments of `start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The model to start.
    pub model: String,
    /// Where the server is.
    #[command(flatten)]
    pub connection: Connection,
}

/// Accepts an `http://` URL and makes its path end in `/`, so that API paths join below it.
fn parse_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(
                "https is not supported (this client speaks plain http to a local server)".into(),
            );
        }
        other => {
            return Err(format!(
                "unsupported scheme {other:?}: use http://HOST:PORT"
            ));
        }
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Why a client command failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No connection could be made to the server.
    #[error(
        "cannot connect to backend-monitor at {url}: {cause}\n(is it running? set --url or BACKEND_MONITOR_URL)"
    )]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What the connection attempt said.
        cause: String,
    },
    /// The server wants an API key, or rejected the one given (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The key may not do this, e.g. a read key asked to stop a model (403).
    #[error("{0}")]
    Forbidden(String),
    /// The server has no model of that name.
    #[error("{0}")]
    UnknownModel(String),
    /// The backend stayed busy for the server's whole wait.
    #[error("{message}\nhint: `backend-monitor stop --force {model}` stops it anyway")]
    Busy {
        /// The model.
        model: String,
        /// The server's message.
        message: String,
    },
    /// `stop` of a model that is not running (already stopped, or failed).
    #[error("{0}")]
    NotRunning(String),
    /// Anything else: a server error, a failed start, a timeout, an answer that is not the API's.
    #[error("{0}")]
    Failed(String),
    /// `stop --all`: some stops failed (each was reported); carries the first failure's code.
    #[error("{failed} of {total} backends could not be stopped")]
    SomeStopsFailed {
        /// How many failed.
        failed: usize,
        /// How many were asked to stop.
        total: usize,
        /// The exit code of the first failure, in listing order.
        code: u8,
    },
}

impl CliError {
    /// The process exit code for this failure (the README lists them).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Unreachable { .. } => 3,
            CliError::Unauthorized(_) => 4,
            CliError::Forbidden(_) => 5,
            CliError::UnknownModel(_) => 6,
            CliError::Busy { .. } => 7,
            CliError::NotRunning(_) => 8,
            CliError::SomeStopsFailed { code, .. } => *code,
        }
    }
}

/// Runs a client subcommand on a small current-thread runtime and returns its exit code.
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let key = std::env::var(API_KEY_ENV)
        .ok()
        .filter(|k| !k.trim().is_empty());
    match runtime.block_on(execute(command, key.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn execute(command: Command, key: Option<&str>) -> Result<(), CliError> {
    match command {
        Command::Ps(args) => {
            let client = Client::new(&args.connection, PS_TIMEOUT, key)?;
            ps(&client, args.connection.json).await
        }
        Command::Stop(args) => {
            let client = Client::new(&args.connection, CONTROL_TIMEOUT, key)?;
            match args.model {
                Some(model) if !args.all => {
                    stop(&client, &model, args.force, args.connection.json).await
                }
                // clap's `target` group makes `--all` the only other case.
                _ => stop_all(&client, args.force, args.connection.json).await,
            }
        }
        Command::Start(args) => {
            let client = Client::new(&args.connection, CONTROL_TIMEOUT, key)?;
            start(&client, &args.model, args.connection.json).await
        }
    }
}

/// Prints to stdout; a closed pipe (`| head`) is not an error worth reporting.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

async fn ps(client: &Client, json: bool) -> Result<(), CliError> {
    let reply = client.get("api/backends").await?;
    let body = reply.success(None, client)?;
    let snapshot: PanelSnapshot = serde_json::from_value(body.clone()).map_err(|e| {
        CliError::Failed(format!(
            "{}/api/backends did not answer with backend-monitor's snapshot: {e}",
            client.shown_url()
        ))
    })?;
    if json {
        print(&format!("{body}\n"));
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print(&render_table(&snapshot, colour));
    }
    Ok(())
}

async fn stop(client: &Client, model: &str, force: bool, json: bool) -> Result<(), CliError> {
    let reply = client.shutdown(model, force).await?;
    report(client, reply, model, json, "model stopped")
}

async fn start(client: &Client, model: &str, json: bool) -> Result<(), CliError> {
    let reply = client
        .post_model("backend/load", json!({ "model": model }))
        .await?;
    report(client, reply, model, json, "model started")
}

/// Prints the answer to `stop` or `start` (as JSON, or `<model>: <message>`) and turns a
/// failure into its error.
fn report(
    client: &Client,
    reply: Reply,
    model: &str,
    json: bool,
    done: &str,
) -> Result<(), CliError> {
    if json {
        print(&format!("{}\n", reply.json_or_text()));
    }
    let body = reply.success(Some(model), client)?;
    if !json {
        print(&format!("{model}: {}\n", message_of(&body, done)));
    }
    Ok(())
}

/// Stops every backend with a live process, in parallel; reports each as it finishes (text) or
/// all at once in listing order (`--json`: an array of `{model, ok, response, error}`).
async fn stop_all(client: &Client, force: bool, json: bool) -> Result<(), CliError> {
    let body = client.get("api/backends").await?.success(None, client)?;
    let snapshot: PanelSnapshot = serde_json::from_value(body).map_err(|e| {
        CliError::Failed(format!(
            "{}/api/backends did not answer with backend-monitor's snapshot: {e}",
            client.shown_url()
        ))
    })?;
    let targets: Vec<String> = snapshot
        .backends
        .iter()
        .filter(|b| {
            matches!(
                b.lifecycle,
                Lifecycle::Starting | Lifecycle::Running | Lifecycle::Stopping
            )
        })
        .map(|b| b.name.clone())
        .collect();
    if targets.is_empty() {
        if json {
            print("[]\n");
        } else {
            print("no backend is running\n");
        }
        return Ok(());
    }
    let mut stopping = tokio::task::JoinSet::new();
    for (index, model) in targets.iter().enumerate() {
        let client = client.clone();
        let model = model.clone();
        stopping.spawn(async move {
            let reply = client.shutdown(&model, force).await;
            let outcome = match reply {
                Ok(reply) => {
                    let shown = reply.json_or_text();
                    (Some(shown), reply.success(Some(&model), &client))
                }
                Err(e) => (None, Err(e)),
            };
            (index, model, outcome)
        });
    }
    let mut results = Vec::with_capacity(targets.len());
    while let Some(joined) = stopping.join_next().await {
        let (index, model, (response, outcome)) =
            joined.map_err(|e| CliError::Failed(format!("a stop task failed: {e}")))?;
        if !json {
            match &outcome {
                Ok(body) => print(&format!("{model}: {}\n", message_of(body, "model stopped"))),
                Err(e) => eprintln!("error: {model}: {e}"),
            }
        }
        results.push((index, model, response, outcome));
    }
    results.sort_by_key(|(index, ..)| *index);
    if json {
        let report: Vec<Value> = results
            .iter()
            .map(|(_, model, response, outcome)| match outcome {
                Ok(_) => json!({ "model": model, "ok": true, "response": response }),
                Err(e) => json!({
                    "model": model, "ok": false, "response": response, "error": e.to_string()
                }),
            })
            .collect();
        print(&format!("{}\n", Value::Array(report)));
    }
    let failures: Vec<&CliError> = results
        .iter()
        .filter_map(|(_, _, _, outcome)| outcome.as_ref().err())
        .collect();
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(CliError::SomeStopsFailed {
            failed: failures.len(),
            total: results.len(),
            code: first.exit_code(),
        }),
    }
}

/// The `message` of a success answer, else `fallback`.
/// The answer's message, with what a shutdown released (`model stopped, freed 138.0 MiB`).
fn message_of(body: &Value, fallback: &str) -> String {
    serde_json::from_value::<crate::api::Message>(body.clone())
        .map_or_else(|_| fallback.to_string(), |message| message.notice())
}

/// An HTTP client for one server: base URL, deadline and (optionally) the API key.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
    key_given: bool,
}

/// A server's answer: its status, and its body as JSON when it is JSON.
struct Reply {
    status: StatusCode,
    json: Option<Value>,
    text: String,
}

impl Client {
    fn new(
        connection: &Connection,
        default_timeout: Duration,
        key: Option<&str>,
    ) -> Result<Self, CliError> {
        let timeout = connection.timeout.unwrap_or(default_timeout);
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
                    CliError::Unauthorized(format!(
                        "{API_KEY_ENV} holds characters that cannot be sent in an HTTP header"
                    ))
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .build()
            .map_err(|e| CliError::Failed(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: connection.url.clone(),
            timeout,
            key_given: key.is_some(),
        })
    }

    /// The server's URL as the user would write it.
    fn shown_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    async fn get(&self, path: &str) -> Result<Reply, CliError> {
        let url = self.endpoint(path)?;
        self.send(self.http.get(url)).await
    }

    async fn shutdown(&self, model: &str, force: bool) -> Result<Reply, CliError> {
        self.post_model(
            "backend/shutdown",
            json!({ "model": model, "force": force }),
        )
        .await
    }

    async fn post_model(&self, path: &str, body: Value) -> Result<Reply, CliError> {
        let url = self.endpoint(path)?;
        self.send(self.http.post(url).json(&body)).await
    }

    fn endpoint(&self, path: &str) -> Result<Url, CliError> {
        self.base
            .join(path)
            .map_err(|e| CliError::Failed(format!("cannot form the URL of {path}: {e}")))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, CliError> {
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let json = serde_json::from_str(&text).ok();
        Ok(Reply { status, json, text })
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        if e.is_connect() {
            CliError::Unreachable {
                url: self.shown_url().to_string(),
                cause: innermost_cause(e),
            }
        } else if e.is_timeout() {
            CliError::Failed(format!(
                "backend-monitor at {} did not answer within {} (see --timeout)",
                self.shown_url(),
                humantime::format_duration(self.timeout)
            ))
        } else {
            CliError::Failed(format!(
                "request to backend-monitor at {} failed: {}",
                self.shown_url(),
                innermost_cause(e)
            ))
        }
    }
}

/// The last error of a cause chain: "Connection refused (os error 111)" rather than
/// reqwest's "error sending request".
fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

impl Reply {
    /// The body as JSON, or as a JSON string when the server sent something else.
    fn json_or_text(&self) -> Value {
        self.json
            .clone()
            .unwrap_or_else(|| Value::String(self.text.clone()))
    }

    /// The JSON body of a 2xx answer; any other answer becomes the matching [`CliError`].
    /// `model` is the model the request was about, for the hint of a busy backend.
    fn success(self, model: Option<&str>, client: &Client) -> Result<Value, CliError> {
        if self.status.is_success() {
            return self.json.ok_or_else(|| {
                CliError::Failed(format!(
                    "backend-monitor at {} answered {} with a body that is not JSON",
                    client.shown_url(),
                    self.status
                ))
            });
        }
        let envelope = self.json.as_ref().and_then(|j| j.get("error"));
        let kind = envelope
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let message = envelope
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}: {}", self.status, shorten(&self.text, 200)));
        let url = client.shown_url();
        Err(match (self.status, kind) {
            (StatusCode::UNAUTHORIZED, _) if client.key_given => CliError::Unauthorized(format!(
                "backend-monitor at {url} rejected the key in {API_KEY_ENV}: {message}"
            )),
            (StatusCode::UNAUTHORIZED, _) => CliError::Unauthorized(format!(
                "backend-monitor at {url} needs an API key: set {API_KEY_ENV} ({message})"
            )),
            (StatusCode::FORBIDDEN, _) => {
                CliError::Forbidden(format!("backend-monitor at {url} refused: {message}"))
            }
            (_, "model_not_found") => CliError::UnknownModel(message),
            (_, "backend_busy") => CliError::Busy {
                model: model.unwrap_or_default().to_string(),
                message,
            },
            (_, "model_not_loaded") => CliError::NotRunning(message),
            _ => CliError::Failed(message),
        })
    }
}

/// At most `limit` characters of `text`, on one line.
fn shorten(text: &str, limit: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= limit {
        return flat.to_string();
    }
    let cut: String = flat.chars().take(limit.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// The `ps` table: NAME, LIFECYCLE, STATE, MEMORY (measured for the process tree when the pid is
/// known), VRAM (with an NVIDIA driver), CPU, PID, UPTIME, IDLE-LEFT (time until idle
/// auto-stop), one row per model, `-` for
/// what is unknown. With `colour`, the lifecycle is coloured (ANSI); without, the text is plain.
pub fn render_table(snapshot: &PanelSnapshot, colour: bool) -> String {
    const HEADERS: [&str; COLUMNS] = [
        "NAME",
        "LIFECYCLE",
        "STATE",
        "MEMORY",
        "VRAM",
        "CPU",
        "PID",
        "UPTIME",
        "IDLE-LEFT",
    ];
    let rows: Vec<[String; COLUMNS]> = snapshot.backends.iter().map(row).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String; COLUMNS], lifecycle: Option<Lifecycle>| {
        let mut text = String::new();
        for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let padded = format!("{cell:<width$}");
            match lifecycle {
                Some(l) if colour && column == 1 => {
                    text.push_str(&format!("\x1b[{}m{padded}\x1b[0m", ansi_colour(l)));
                }
                _ => text.push_str(&padded),
            }
            text.push_str("  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &HEADERS.map(str::to_string), None);
    for (row, backend) in rows.iter().zip(&snapshot.backends) {
        line(&mut out, row, Some(backend.lifecycle));
    }
    out
}

/// The ANSI colour code of a lifecycle: green running, yellow in transition, red failed.
fn ansi_colour(lifecycle: Lifecycle) -> &'static str {
    match lifecycle {
        Lifecycle::Running => "32",
        Lifecycle::Starting | Lifecycle::Stopping => "33",
        Lifecycle::Failed => "31",
        Lifecycle::Stopped => "2",
    }
}

/// Columns of the `ps` table.
const COLUMNS: usize = 9;

fn row(backend: &BackendSummary) -> [String; COLUMNS] {
    let observation = backend.observation.as_ref();
    let state = observation.and_then(|o| {
        o.status
            .as_ref()
            .map(|s| s.state.label().to_string())
            .or_else(|| o.status_error.as_ref().map(|e| e.kind.phrase().to_string()))
    });
    let cpu = observation
        .and_then(|o| o.process.as_ref())
        .map(|p| format!("{:.1}%", p.cpu_percent));
    let vram = observation
        .and_then(|o| o.measured.as_ref())
        .map(MeasuredMemory::gpu_total)
        .filter(|&bytes| bytes > 0);
    let unknown = || "-".to_string();
    [
        shorten(&backend.name, MAX_NAME_WIDTH),
        backend.lifecycle.to_string(),
        state.unwrap_or_else(unknown),
        backend
            .memory_bytes()
            .map(format::bytes)
            .unwrap_or_else(unknown),
        vram.map(format::bytes).unwrap_or_else(unknown),
        cpu.unwrap_or_else(unknown),
        backend.pid.map(|p| p.to_string()).unwrap_or_else(unknown),
        backend
            .uptime_secs
            .map(format::duration)
            .unwrap_or_else(unknown),
        backend
            .idle_left_secs
            .map(format::duration)
            .unwrap_or_else(unknown),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::snapshot::{
        BackendKind, BackendState, BackendStatus, GpuMemory, MemoryInfo, MemoryUsage, Observation,
        ProcessMetrics, StatusFailure, StatusFailureKind,
    };

    fn summary(name: &str, lifecycle: Lifecycle) -> BackendSummary {
        BackendSummary::new(name, BackendKind::Managed, "demo-backend", lifecycle)
    }

    fn observation(status: Option<BackendStatus>, process: Option<ProcessMetrics>) -> Observation {
        Observation {
            at_unix_ms: 0,
            status_error: status.is_none().then(|| StatusFailure {
                kind: StatusFailureKind::Unimplemented,
                message: "no Status here".into(),
            }),
            status,
            process,
            ..Observation::default()
        }
    }

    fn sample() -> PanelSnapshot {
        let mut chat = summary("demo-chat", Lifecycle::Running);
        chat.pid = Some(4242);
        chat.uptime_secs = Some(312);
        chat.idle_left_secs = Some(95);
        chat.observation = Some(observation(
            Some(BackendStatus {
                state: BackendState::Ready,
                memory: Some(MemoryUsage {
                    total: 140_000_000,
                    breakdown: Default::default(),
                }),
            }),
            None,
        ));
        // Measured memory wins over the reported total.
        if let Some(o) = chat.observation.as_mut() {
            o.measured = Some(MeasuredMemory {
                rss: 138_412_032,
                gpu_memory: vec![GpuMemory {
                    index: 0,
                    name: "NVIDIA H100".into(),
                    used: 2 * 1024 * 1024 * 1024,
                }],
                ..MeasuredMemory::default()
            });
        }
        let mut legacy = summary("demo-legacy", Lifecycle::Running);
        legacy.pid = Some(4343);
        legacy.uptime_secs = Some(2 * 86_400 + 5 * 3600 + 7);
        legacy.observation = Some(observation(
            None,
            Some(ProcessMetrics {
                memory_info: MemoryInfo {
                    rss: 3 * 1024 * 1024 * 1024 / 2,
                    ..MemoryInfo::default()
                },
                memory_percent: 4.0,
                cpu_percent: 12.34,
                gpu_memory: Vec::new(),
            }),
        ));
        PanelSnapshot {
            generated_at: "2026-11-26T09:00:00Z".into(),
            generated_at_unix_ms: 1_795_683_600_000,
            host: None,
            backends: vec![
                chat,
                legacy,
                summary(
                    "a-model-with-a-name-far-longer-than-any-column-should-be",
                    Lifecycle::Stopped,
                ),
            ],
        }
    }

    #[test]
    fn the_table_shows_each_model_with_human_units_and_dashes_for_the_unknown() {
        let table = render_table(&sample(), false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let words = |line: &str| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            words(lines[0]),
            [
                "NAME",
                "LIFECYCLE",
                "STATE",
                "MEMORY",
                "VRAM",
                "CPU",
                "PID",
                "UPTIME",
                "IDLE-LEFT"
            ]
        );
        assert_eq!(
            words(lines[1]),
            [
                "demo-chat",
                "running",
                "Ready",
                "132.0",
                "MiB",
                "2.0",
                "GiB",
                "-",
                "4242",
                "5m",
                "12s",
                "1m",
                "35s"
            ]
        );
        assert_eq!(
            words(lines[2]),
            [
                "demo-legacy",
                "running",
                "Status",
                "unimplemented",
                "1.5",
                "GiB",
                "-",
                "12.3%",
                "4343",
                "2d",
                "05h",
                "-"
            ]
        );
        assert!(lines[3].contains(" stopped "), "{table}");
        assert_eq!(words(lines[3])[2..], ["-", "-", "-", "-", "-", "-", "-"]);
        assert!(!table.contains('\x1b'), "no colour when asked for none");
    }

    #[test]
    fn the_columns_line_up_and_long_names_are_cut() {
        let table = render_table(&sample(), false);
        let lines: Vec<&str> = table.lines().collect();
        // In characters, not bytes: the cut name ends in a multi-byte `…`.
        let column = |line: &str, word: &str| line[..line.find(word).expect(word)].chars().count();
        let lifecycle = column(lines[0], "LIFECYCLE");
        assert_eq!(column(lines[1], "running"), lifecycle);
        assert_eq!(column(lines[3], "stopped"), lifecycle);
        assert_eq!(column(lines[1], "4242"), column(lines[0], "PID"));
        assert!(lines.iter().all(|l| l.chars().count() < 120), "{table}");
        assert!(lines[3].contains('…'), "{table}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{table}");
    }

    #[test]
    fn colour_marks_the_lifecycle_without_moving_the_columns() {
        let coloured = render_table(&sample(), true);
        assert!(coloured.contains("\x1b[32mrunning"), "{coloured:?}");
        let plain: String = coloured
            .replace("\x1b[32m", "")
            .replace("\x1b[2m", "")
            .replace("\x1b[0m", "");
        let trimmed: Vec<&str> = plain.lines().map(str::trim_end).collect();
        assert_eq!(trimmed.join("\n") + "\n", render_table(&sample(), false));
    }

    #[test]
    fn urls_must_be_http_and_get_a_trailing_slash() {
        let url = parse_url("http://127.0.0.1:9/monitor").expect("valid");
        assert_eq!(
            url.join("api/backends").expect("joins").as_str(),
            "http://127.0.0.1:9/monitor/api/backends"
        );
        assert!(parse_url("https://x:1").is_err());
        assert!(parse_url("127.0.0.1:8080").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn every_failure_kind_has_its_own_exit_code() {
        let codes = [
            CliError::Failed(String::new()).exit_code(),
            CliError::Unreachable {
                url: String::new(),
                cause: String::new(),
            }
            .exit_code(),
            CliError::Unauthorized(String::new()).exit_code(),
            CliError::Forbidden(String::new()).exit_code(),
            CliError::UnknownModel(String::new()).exit_code(),
            CliError::Busy {
                model: String::new(),
                message: String::new(),
            }
            .exit_code(),
            CliError::NotRunning(String::new()).exit_code(),
        ];
        let distinct: std::collections::HashSet<u8> = codes.iter().copied().collect();
        assert_eq!(distinct.len(), codes.len(), "{codes:?}");
        assert!(
            !codes.contains(&0) && !codes.contains(&2),
            "0 is success, 2 is clap's usage error"
        );
    }
}
