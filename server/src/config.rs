//! Configuration: command-line flags and environment, an optional TOML file, and the embedded
//! default used when no file is given.
//!
//! Precedence: flag or environment variable, then the file's `[settings]`, then the defaults
//! documented on [`Settings`].

use clap::Parser;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Command-line interface of `backend-monitor`.
#[derive(Debug, Parser)]
#[command(
    name = "backend-monitor",
    version,
    about = "Watch and control local AI model backends"
)]
pub struct Cli {
    /// A client command for a running server (`ps`, `stop`, `start`); without one, serve.
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// How log lines are written: `text` for people, `json` (one object per line) for log
    /// collectors. Levels come from `RUST_LOG` (default `info`).
    #[arg(long, env = "BACKEND_MONITOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// TOML file listing the models to watch. Without it, two demo backends are started.
    #[arg(long, short, env = "BACKEND_MONITOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "BACKEND_MONITOR_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Deadline for a backend's `Status` answer, e.g. `2s` [default: 2s].
    #[arg(long, env = "BACKEND_MONITOR_STATUS_TIMEOUT", value_parser = humantime::parse_duration)]
    pub status_timeout: Option<Duration>,
    /// How long a shutdown waits for a busy backend before failing, e.g. `30s` [default: 30s].
    #[arg(long, env = "BACKEND_MONITOR_BUSY_WAIT", value_parser = humantime::parse_duration)]
    pub busy_wait: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when stopping a managed backend [default: 15s].
    #[arg(long, env = "BACKEND_MONITOR_STOP_GRACE", value_parser = humantime::parse_duration)]
    pub stop_grace: Option<Duration>,
    /// Folder holding the panel's compiled assets (`pkg/`) [default: next to the binary, else target/site].
    #[arg(long, env = "LEPTOS_SITE_ROOT")]
    pub site_root: Option<PathBuf>,
    /// Host names (or addresses) besides loopback that browsers may use to reach the server,
    /// comma-separated; replaces `allowed_hosts` from the file. `*` allows any (behind a proxy
    /// that checks `Host` itself).
    #[arg(long, env = "BACKEND_MONITOR_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Admin API keys (view, monitor, shut down, start), comma-separated, as LocalAI's `API_KEY`.
    /// With any key set, every request but /healthz and static assets needs one.
    #[arg(long, env = "API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<ApiKey>,
    /// Read-only API keys (view and monitor; shut down and start are refused), comma-separated.
    #[arg(
        long,
        env = "BACKEND_MONITOR_READ_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_api_keys: Vec<ApiKey>,
    /// File of API keys, one `admin:KEY` or `read:KEY` a line (`#` starts a comment); added to
    /// the keys given by flags.
    #[arg(long, env = "BACKEND_MONITOR_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
}

/// One API key. Its `Debug` output is redacted so the key never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key's text, for the key store only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl std::str::FromStr for ApiKey {
    type Err = std::convert::Infallible;

    /// Never fails, so that clap cannot echo a key in an error; [`ApiKeys::validate`] checks it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.trim().to_string()))
    }
}

impl ApiKey {
    /// Printable ASCII without spaces, as HTTP headers carry it. The message never repeats it.
    fn check(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("an API key is empty".into());
        }
        if !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("an API key contains spaces, control or non-ASCII characters".into());
        }
        Ok(())
    }
}

/// The API keys of both roles. Empty: no authentication (the default, for loopback use).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiKeys {
    /// Keys that may view, monitor, shut down and start.
    pub admin: Vec<ApiKey>,
    /// Keys that may only view and monitor.
    pub read: Vec<ApiKey>,
}

impl ApiKeys {
    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.read.is_empty()
    }

    /// Reads a keys file: `admin:KEY` or `read:KEY` a line, blank lines and `#` comments skipped.
    /// Messages name the line, never the key.
    pub fn add_file(&mut self, text: &str) -> Result<(), String> {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |problem: String| format!("line {}: {problem}", number + 1);
            let (role, key) = line
                .split_once(':')
                .ok_or_else(|| at("expected `admin:KEY` or `read:KEY`".into()))?;
            let key = ApiKey(key.trim().to_string());
            key.check().map_err(at)?;
            match role.trim() {
                "admin" => self.admin.push(key),
                "read" => self.read.push(key),
                _ => return Err(at("the role must be `admin` or `read`".into())),
            }
        }
        Ok(())
    }

    /// Rejects malformed keys and a key given for both roles (which was meant is unknowable).
    pub fn validate(&self) -> Result<(), String> {
        for key in self.admin.iter().chain(&self.read) {
            key.check()?;
        }
        if self.read.iter().any(|k| self.admin.contains(k)) {
            return Err("the same API key is given as an admin key and as a read key".into());
        }
        Ok(())
    }
}

/// The format of backend-monitor's own log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands of `backend-monitor`; without one, it serves.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// The command-line client's subcommands (see [`crate::cli`]).
    #[command(flatten)]
    Client(crate::cli::Command),
    /// Supervises one managed backend (run by backend-monitor itself; see `shim.rs`).
    #[command(name = "__shim", hide = true)]
    Shim {
        /// The pipe on which to report the backend's pid.
        #[arg(long)]
        report_fd: std::os::fd::RawFd,
        /// The backend's program and arguments.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

/// Server-wide settings; every field has a default.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Deadline for `Status`. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub status_timeout: Duration,
    /// Deadline for `Free` during shutdown. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub free_timeout: Duration,
    /// How long a shutdown waits while the backend reports BUSY. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub busy_wait: Duration,
    /// Time between SIGTERM and SIGKILL. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    /// Deadline for `LoadModel`. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub load_timeout: Duration,
    /// Health checks before a starting backend is declared failed. Default 20.
    pub health_attempts: u32,
    /// Time between health checks. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// How often running backends are observed for the panel and history. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Names (or addresses) besides loopback that requests may carry in `Host`; `"*"` allows
    /// any. Default none. See [`crate::access`] for the full rule.
    pub allowed_hosts: Vec<String>,
    /// Deadline for every request except shutdown and load (pages, monitor, JSON views).
    /// Default 30 s; a request past it gets 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes, on every route. Default 65536 (64 KiB).
    pub max_body_bytes: usize,
    /// API keys; only from flags, environment or a keys file, never from this file.
    #[serde(skip)]
    pub api_keys: ApiKeys,
    /// Stop a managed backend that has not been busy for this long (a model's own
    /// `idle_timeout` overrides it). Default: off.
    #[serde(with = "humantime_serde::option")]
    pub idle_timeout: Option<Duration>,
    /// Pause before the first restart of a crashed backend (`restart = "on-failure"`); it
    /// doubles with each restart in a row. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub restart_backoff: Duration,
    /// Longest pause between restarts. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub restart_backoff_max: Duration,
    /// Restarts in a row (none of whose runs lasted a minute) before giving up. Default 5.
    pub restart_limit: u32,
}

impl Settings {
    /// Rejects durations that cannot work: a zero poll interval or zero deadlines.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("poll_interval", self.poll_interval),
            ("status_timeout", self.status_timeout),
            ("free_timeout", self.free_timeout),
            ("load_timeout", self.load_timeout),
            ("request_timeout", self.request_timeout),
            ("restart_backoff", self.restart_backoff),
            ("idle_timeout", self.idle_timeout.unwrap_or(Duration::MAX)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("`{name}` must be greater than 0"));
        }
        if self.max_body_bytes == 0 {
            return Err("`max_body_bytes` must be greater than 0".into());
        }
        if let Some(bad) = self
            .allowed_hosts
            .iter()
            .find(|h| !crate::access::is_valid_host_pattern(h))
        {
            return Err(format!(
                "`allowed_hosts` entry {bad:?} is not a host name or address (no scheme, port or path; `*` for any)"
            ));
        }
        self.api_keys.validate()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            status_timeout: Duration::from_secs(2),
            free_timeout: Duration::from_secs(5),
            busy_wait: Duration::from_secs(30),
            stop_grace: Duration::from_secs(15),
            load_timeout: Duration::from_secs(300),
            health_attempts: 20,
            health_interval: Duration::from_secs(2),
            poll_interval: Duration::from_secs(1),
            allowed_hosts: Vec::new(),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            api_keys: ApiKeys::default(),
            idle_timeout: None,
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(60),
            restart_limit: 5,
        }
    }
}

/// One `[[models]]` entry as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    name: String,
    backend: Option<String>,
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    workdir: Option<PathBuf>,
    model: Option<String>,
    context_size: Option<i32>,
    threads: Option<i32>,
    gpu_layers: Option<i32>,
    options: Option<Vec<String>>,
    address: Option<String>,
    pid: Option<u32>,
    restart: Option<RestartPolicy>,
    #[serde(default, with = "humantime_serde::option")]
    idle_timeout: Option<Duration>,
}

/// When a managed backend that exits by itself is started again.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never: it stays failed.
    #[default]
    Never,
    /// After a crash or a failed automatic restart, with exponential backoff, up to
    /// `restart_limit` times in a row.
    OnFailure,
}

/// The file's top level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    settings: Settings,
    #[serde(default)]
    models: Vec<ModelEntry>,
}

/// What `LoadModel` is called with once a managed backend is healthy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadSpec {
    /// Model file or path (sent as `Model`, `ModelFile` and `ModelPath`).
    pub model: String,
    /// `ContextSize`.
    pub context_size: Option<i32>,
    /// `Threads`.
    pub threads: Option<i32>,
    /// `NGPULayers`.
    pub gpu_layers: Option<i32>,
    /// `Options` (`key:value` strings).
    pub options: Vec<String>,
}

/// A backend that backend-monitor starts and supervises.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedSpec {
    /// Program and arguments; `--addr 127.0.0.1:<port>` is appended.
    pub command: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<PathBuf>,
    /// What to load once healthy, if anything.
    pub load: Option<LoadSpec>,
    /// What happens when it exits by itself.
    pub restart: RestartPolicy,
    /// Its own idle timeout (else the global `idle_timeout`).
    pub idle_timeout: Option<Duration>,
}

/// How a model's backend is reached.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendSource {
    /// Started by backend-monitor.
    Managed(ManagedSpec),
    /// Already running at `address`; `pid` is sampled when `Status` fails.
    External {
        /// `host:port` of its gRPC server.
        address: String,
        /// Local process id, if known.
        pid: Option<u32>,
    },
}

/// One validated model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Unique name.
    pub name: String,
    /// Label shown as its backend (`llama-cpp`...).
    pub backend: String,
    /// How it is reached.
    pub source: BackendSource,
}

/// The complete, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Server-wide settings.
    pub settings: Settings,
    /// Models in file order.
    pub models: Vec<ModelSpec>,
    /// Folder with the panel's compiled assets.
    pub site_root: PathBuf,
    /// The program run as each managed backend's shim (`<shim> __shim …`): this executable.
    pub shim: PathBuf,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A `[[models]]` entry is inconsistent.
    #[error("invalid config file {path}: models[{index}] ({name}): {problem}")]
    Model {
        /// The file.
        path: PathBuf,
        /// Position of the entry, from 0.
        index: usize,
        /// Its name, or `<unnamed>`.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A setting is out of range.
    #[error("invalid settings ({source_name}): {problem}")]
    Settings {
        /// The file, or "command line" for flags and environment.
        source_name: String,
        /// What is wrong.
        problem: String,
    },
    /// The path of this executable (run again as each backend's shim) is unknown.
    #[error("cannot find backend-monitor's own executable: {0}")]
    OwnExecutable(String),
    /// The demo backend of the embedded default could not be found.
    #[error(
        "no --config given and the demo backend was not found ({0}); build it with `cargo build --release -p server --bin demo-backend` or pass --config"
    )]
    DemoBackendMissing(String),
}

impl Config {
    /// Builds the configuration from the command line (reading the file it names, if any).
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let (mut settings, models) = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                parse(&text, path)?
            }
            None => (Settings::default(), embedded_default()?),
        };
        if let Some(addr) = cli.addr {
            settings.listen = addr;
        }
        if let Some(t) = cli.status_timeout {
            settings.status_timeout = t;
        }
        if let Some(t) = cli.busy_wait {
            settings.busy_wait = t;
        }
        if let Some(t) = cli.stop_grace {
            settings.stop_grace = t;
        }
        if let Some(hosts) = &cli.allowed_hosts {
            settings.allowed_hosts = hosts
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect();
        }
        // A trailing comma in `API_KEY=a,b,` is a typo, not an empty key.
        let given = |keys: &[ApiKey]| keys.iter().filter(|k| !k.0.is_empty()).cloned().collect();
        settings.api_keys = ApiKeys {
            admin: given(&cli.api_keys),
            read: given(&cli.read_api_keys),
        };
        if let Some(path) = &cli.api_keys_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            warn_if_readable_by_others(path);
            settings
                .api_keys
                .add_file(&text)
                .map_err(|problem| ConfigError::Settings {
                    source_name: path.display().to_string(),
                    problem,
                })?;
        }
        // The file's own values were checked by `parse`; only flags can be wrong here.
        settings
            .validate()
            .map_err(|problem| ConfigError::Settings {
                source_name: "command line".to_string(),
                problem,
            })?;
        let shim =
            std::env::current_exe().map_err(|e| ConfigError::OwnExecutable(e.to_string()))?;
        Ok(Self {
            settings,
            models,
            site_root: cli.site_root.clone().unwrap_or_else(default_site_root),
            shim,
        })
    }
}

/// Keys files should be private to the server's user; say so when they are not.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            "API keys file {} is readable by every user; `chmod 600` it",
            path.display()
        );
    }
}

/// Parses and validates a TOML configuration; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<(Settings, Vec<ModelSpec>), ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let message = e.to_string().trim_end().to_string();
        match bad_entry(text) {
            Some((index, name)) => ConfigError::Model {
                path: path.to_path_buf(),
                index,
                name,
                problem: message,
            },
            None => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
        }
    })?;
    file.settings
        .validate()
        .map_err(|problem| ConfigError::Settings {
            source_name: path.display().to_string(),
            problem,
        })?;
    let mut seen = HashSet::new();
    let mut models = Vec::with_capacity(file.models.len());
    for (index, entry) in file.models.into_iter().enumerate() {
        let name = if entry.name.is_empty() {
            "<unnamed>".to_string()
        } else {
            entry.name.clone()
        };
        let fail = |problem: &str| ConfigError::Model {
            path: path.to_path_buf(),
            index,
            name: name.clone(),
            problem: problem.to_string(),
        };
        if entry.name.trim().is_empty() {
            return Err(fail("`name` must not be empty"));
        }
        if !seen.insert(entry.name.clone()) {
            return Err(fail("duplicate name: another entry already uses it"));
        }
        models.push(validate(entry).map_err(|p| fail(&p))?);
    }
    Ok((file.settings, models))
}

/// The first `[[models]]` entry that does not deserialize on its own (an unknown or mistyped
/// key), with its name: the parser's message gives the line and the key, this names the entry.
/// `None` when the file is not valid TOML at all or the problem is outside `[[models]]`.
fn bad_entry(text: &str) -> Option<(usize, String)> {
    let file: toml::Table = toml::from_str(text).ok()?;
    let models = file.get("models")?.as_array()?;
    models.iter().enumerate().find_map(|(index, entry)| {
        entry.clone().try_into::<ModelEntry>().err()?;
        let name = entry
            .get("name")
            .and_then(toml::Value::as_str)
            .filter(|name| !name.is_empty())
            .unwrap_or("<unnamed>");
        Some((index, name.to_string()))
    })
}

fn validate(entry: ModelEntry) -> Result<ModelSpec, String> {
    let source = match (entry.command, entry.address) {
        (Some(_), Some(_)) => {
            return Err("set either `command` (managed) or `address` (external), not both".into());
        }
        (None, None) => {
            return Err(
                "set `command` (a backend to start) or `address` (a running backend)".into(),
            );
        }
        (Some(command), None) => {
            if command.first().is_none_or(|p| p.trim().is_empty()) {
                return Err("`command` must start with a program".into());
            }
            if entry.pid.is_some() {
                return Err("`pid` is only for external backends (with `address`)".into());
            }
            let load_keys = entry.context_size.is_some()
                || entry.threads.is_some()
                || entry.gpu_layers.is_some()
                || entry.options.is_some();
            let load = match entry.model {
                Some(model) if model.trim().is_empty() => {
                    return Err("`model` must not be empty".into());
                }
                Some(model) => Some(LoadSpec {
                    model,
                    context_size: entry.context_size,
                    threads: entry.threads,
                    gpu_layers: entry.gpu_layers,
                    options: entry.options.unwrap_or_default(),
                }),
                None if load_keys => {
                    return Err(
                        "`context_size`, `threads`, `gpu_layers` and `options` need `model`".into(),
                    );
                }
                None => None,
            };
            if entry.idle_timeout.is_some_and(|t| t.is_zero()) {
                return Err("`idle_timeout` must be greater than 0 (leave it out for none)".into());
            }
            BackendSource::Managed(ManagedSpec {
                command,
                env: entry.env.unwrap_or_default(),
                workdir: entry.workdir,
                load,
                restart: entry.restart.unwrap_or_default(),
                idle_timeout: entry.idle_timeout,
            })
        }
        (None, Some(address)) => {
            let managed_only = [
                ("env", entry.env.is_some()),
                ("workdir", entry.workdir.is_some()),
                ("model", entry.model.is_some()),
                ("context_size", entry.context_size.is_some()),
                ("threads", entry.threads.is_some()),
                ("gpu_layers", entry.gpu_layers.is_some()),
                ("options", entry.options.is_some()),
                ("restart", entry.restart.is_some()),
                ("idle_timeout", entry.idle_timeout.is_some()),
            ];
            if let Some((key, _)) = managed_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "`{key}` is only for managed backends (with `command`)"
                ));
            }
            validate_address(&address)?;
            BackendSource::External {
                address,
                pid: entry.pid,
            }
        }
    };
    let backend = entry.backend.unwrap_or_else(|| match &source {
        BackendSource::Managed(m) => m
            .command
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        BackendSource::External { .. } => "grpc".to_string(),
    });
    Ok(ModelSpec {
        name: entry.name,
        backend,
        source,
    })
}

/// Accepts `host:port` (IPv6 in brackets), as LocalAI writes backend addresses.
fn validate_address(address: &str) -> Result<(), String> {
    if address.contains("://") {
        return Err(format!(
            "bad address {address:?}: write host:port without a scheme"
        ));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("bad address {address:?}: expected host:port"));
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return Err(format!("bad address {address:?}: invalid host {host:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("bad address {address:?}: invalid port {port:?}")),
    }
}

/// Two demo backends: one answering `Status`, one answering UNIMPLEMENTED to show the fallback.
fn embedded_default() -> Result<Vec<ModelSpec>, ConfigError> {
    let program = demo_backend_path()?;
    let demo = |name: &str, extra: &[&str], load: Option<LoadSpec>| ModelSpec {
        name: name.to_string(),
        backend: "demo-backend".to_string(),
        source: BackendSource::Managed(ManagedSpec {
            command: std::iter::once(program.clone())
                .chain(extra.iter().map(|s| s.to_string()))
                .collect(),
            env: BTreeMap::new(),
            workdir: None,
            load,
            restart: RestartPolicy::Never,
            idle_timeout: None,
        }),
    };
    Ok(vec![
        demo(
            "demo-chat",
            &["--tokens-per-second", "24"],
            Some(LoadSpec {
                model: "demo-chat.gguf".into(),
                context_size: Some(4096),
                options: vec!["weights_mib:96".into(), "kv_cache_mib:32".into()],
                ..LoadSpec::default()
            }),
        ),
        demo(
            "demo-legacy",
            &["--status-unimplemented"],
            Some(LoadSpec {
                model: "demo-legacy.bin".into(),
                options: vec!["weights_mib:48".into()],
                ..LoadSpec::default()
            }),
        ),
    ])
}

/// `demo-backend` next to this executable, else `$BACKEND_MONITOR_DEMO_BACKEND`.
fn demo_backend_path() -> Result<String, ConfigError> {
    if let Ok(path) = std::env::var("BACKEND_MONITOR_DEMO_BACKEND") {
        return Ok(path);
    }
    let exe =
        std::env::current_exe().map_err(|e| ConfigError::DemoBackendMissing(e.to_string()))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    // Integration tests run from target/<profile>/deps; the binary sits one level up.
    for candidate in [dir.join("demo-backend"), dir.join("../demo-backend")] {
        if candidate.is_file() {
            return Ok(candidate.to_string_lossy().into_owned());
        }
    }
    Err(ConfigError::DemoBackendMissing(format!(
        "looked in {}",
        dir.display()
    )))
}

/// `site/` beside the binary's folder when it exists (an installed layout), else `target/site`.
fn default_site_root() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("../site")))
        .filter(|p| p.join("pkg").is_dir())
        .unwrap_or_else(|| PathBuf::from("target/site"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> String {
        parse(text, Path::new("x.toml")).unwrap_err().to_string()
    }

    #[test]
    fn a_managed_and_an_external_model_parse() {
        let (settings, models) = parse(
            r#"
            [settings]
            status_timeout = "500ms"
            [[models]]
            name = "a"
            command = ["/bin/backend", "--flag"]
            model = "m.gguf"
            options = ["k:v"]
            [[models]]
            name = "b"
            address = "127.0.0.1:5000"
            pid = 42
            "#,
            Path::new("x.toml"),
        )
        .expect("valid");
        assert_eq!(settings.status_timeout, Duration::from_millis(500));
        assert_eq!(settings.busy_wait, Duration::from_secs(30));
        assert_eq!(models[0].backend, "backend");
        assert!(matches!(
            models[1].source,
            BackendSource::External { pid: Some(42), .. }
        ));
    }

    #[test]
    fn zero_intervals_and_deadlines_are_rejected() {
        let msg = problem("[settings]\npoll_interval = \"0s\"\n");
        assert!(
            msg.contains("x.toml") && msg.contains("poll_interval"),
            "{msg}"
        );
        assert!(problem("[settings]\nstatus_timeout = \"0ms\"\n").contains("status_timeout"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_name() {
        let msg = problem("[[models]]\nname = \"a\"\naddress = \"h:1\"\ncolour = 1\n");
        assert!(msg.contains("x.toml") && msg.contains("colour"), "{msg}");
    }

    #[test]
    fn a_bad_key_in_an_entry_names_the_entry_and_the_key() {
        let text = "[[models]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[models]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n";
        for (line, key) in [("colour = 1", "colour"), ("pid = \"x\"", "pid")] {
            let msg = problem(&format!("{text}{line}\n"));
            assert!(
                msg.contains("x.toml") && msg.contains("models[1] (b)") && msg.contains(key),
                "{msg}"
            );
        }
        let msg = problem("[[models]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nname = \"b\"\n");
        assert!(
            msg.contains("x.toml") && !msg.contains("models["),
            "not TOML: {msg}"
        );
    }

    #[test]
    fn duplicate_names_are_rejected_naming_the_entry() {
        let msg = problem(
            "[[models]]\nname = \"a\"\naddress = \"h:1\"\n[[models]]\nname = \"a\"\naddress = \"h:2\"\n",
        );
        assert!(
            msg.contains("models[1] (a)") && msg.contains("duplicate"),
            "{msg}"
        );
    }

    #[test]
    fn both_or_neither_of_command_and_address_are_rejected() {
        assert!(
            problem("[[models]]\nname = \"a\"\naddress = \"h:1\"\ncommand = [\"x\"]\n")
                .contains("not both")
        );
        assert!(problem("[[models]]\nname = \"a\"\n").contains("`command`"));
    }

    #[test]
    fn bad_addresses_are_rejected() {
        for bad in ["nohost", "h:0", "h:99999", "http://h:1", ":1", "[zz]:1"] {
            let msg = problem(&format!("[[models]]\nname = \"a\"\naddress = \"{bad}\"\n"));
            assert!(msg.contains("bad address"), "{bad}: {msg}");
        }
        assert!(validate_address("[::1]:50051").is_ok());
        assert!(validate_address("localhost:50051").is_ok());
    }

    #[test]
    fn a_keys_file_gives_both_roles_and_names_bad_lines_without_the_key() {
        let mut keys = ApiKeys::default();
        keys.add_file("# keys\nadmin: first-admin-key\n\nread:first-read-key\n")
            .expect("valid file");
        assert_eq!(keys.admin, vec![ApiKey("first-admin-key".into())]);
        assert_eq!(keys.read, vec![ApiKey("first-read-key".into())]);
        let msg = ApiKeys::default()
            .add_file("admin:ok-key\nwriter:secret-value\n")
            .unwrap_err();
        assert!(
            msg.contains("line 2") && !msg.contains("secret-value"),
            "{msg}"
        );
        let msg = ApiKeys::default().add_file("secret-value\n").unwrap_err();
        assert!(!msg.contains("secret-value"), "{msg}");
    }

    #[test]
    fn keys_are_redacted_and_a_key_in_both_roles_is_rejected() {
        let key: ApiKey = "top-secret-key".parse().expect("infallible");
        assert!(!format!("{key:?}").contains("top-secret"));
        let both = ApiKeys {
            admin: vec![key.clone()],
            read: vec![key],
        };
        assert!(
            both.validate()
                .unwrap_err()
                .contains("admin key and as a read key")
        );
        let spaced = ApiKeys {
            admin: vec!["a key".parse().expect("infallible")],
            read: vec![],
        };
        assert!(spaced.validate().is_err());
    }

    #[test]
    fn allowed_hosts_must_be_bare_hosts_and_limits_positive() {
        for bad in ["http://x", "x:8080", "a/b", ""] {
            let msg = problem(&format!("[settings]\nallowed_hosts = [{bad:?}]\n"));
            assert!(msg.contains("allowed_hosts"), "{bad}: {msg}");
        }
        for good in ["gpu-box.lan", "192.168.1.5", "[fe80::1]", "*"] {
            parse(
                &format!("[settings]\nallowed_hosts = [{good:?}]\n"),
                Path::new("x.toml"),
            )
            .expect(good);
        }
        assert!(problem("[settings]\nmax_body_bytes = 0\n").contains("max_body_bytes"));
        assert!(problem("[settings]\nrequest_timeout = \"0s\"\n").contains("request_timeout"));
    }

    #[test]
    fn managed_only_keys_on_external_models_are_rejected() {
        let msg = problem("[[models]]\nname = \"a\"\naddress = \"h:1\"\nmodel = \"m\"\n");
        assert!(msg.contains("`model` is only for managed"), "{msg}");
    }
}
