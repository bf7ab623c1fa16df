//! The JSON API: LocalAI's `/backend/monitor` and `/backend/shutdown` (with `/v1` aliases), and
//! what we add (`/backend/load`, `/system`, `/version`, `/api/backends`).

use crate::error::{ApiError, ErrorEnvelope};
use crate::registry::{Reading, Registry, RegistryError, StartOutcome};
use crate::startup::AppState;
use app::directory::BackendDirectory;
use app::snapshot::{
    FreedMemory, LogPage, MemoryUsage, ModelDetail, PanelSnapshot, ProcessMetrics,
};
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// The API's routes; merged into the app router in `startup.rs`.
pub fn routes() -> Router<AppState> {
    Router::new()
        // LocalAI documents GET with a JSON body; its own curl example (`-d` without `-X`)
        // sends POST, so both are accepted.
        .route("/backend/monitor", get(monitor).post(monitor))
        .route("/v1/backend/monitor", get(monitor).post(monitor))
        .route("/backend/shutdown", post(shutdown))
        .route("/v1/backend/shutdown", post(shutdown))
        .route("/backend/load", post(load))
        .route("/v1/backend/load", post(load))
        .route("/healthz", get(healthz))
        .route("/system", get(system))
        .route("/version", get(version))
        .route("/api/backends", get(backends))
        .route("/api/backends/{name}", get(backend_detail))
        .route("/api/backends/{name}/logs", get(backend_logs))
        // Unknown API paths answer in JSON, not with the panel's HTML 404 page.
        .route("/api/{*rest}", any(unknown_path))
        .route("/backend/{*rest}", any(unknown_path))
        .route("/v1/{*rest}", any(unknown_path))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// A request naming a model: `?model=` in the query, else a JSON or form-encoded body.
#[derive(Debug, Default, PartialEq)]
pub struct ModelRequest {
    /// The model name (non-empty).
    pub model: String,
    /// Shut down even if the backend is busy.
    pub force: bool,
    /// Panel page to send a browser back to after a form post (no-JavaScript use): `/`,
    /// `/?page=N` or `/models/<name>`.
    pub return_to: Option<String>,
}

/// The fields of a model request as found in the query, a JSON body or a form, before
/// validation; also the documented shape of those three.
#[derive(Default, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawFields {
    /// The model's name, as configured.
    model: Option<String>,
    /// Shutdown only: stop even if the backend stays BUSY (default false).
    force: Option<bool>,
    /// Panel forms only: the panel page (`/` or `/models/<name>`) to go back to with a notice,
    /// instead of a JSON answer.
    return_to: Option<String>,
}

impl<S: Send + Sync> FromRequest<S> for ModelRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let query = req.uri().query().map(str::to_owned);
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("invalid").to_owned());
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!("request body too large: {e}"))
            } else {
                ApiError::BadRequest(format!("cannot read request body: {e}"))
            }
        })?;
        parse_model_request(query.as_deref(), content_type.as_deref(), &body)
    }
}

/// Reads a [`ModelRequest`] from a request's parts: the raw query string, the `Content-Type`
/// header (`None` when absent) and the body. Pure and total: every input gives a request or an
/// [`ApiError::BadRequest`], never a panic (the property tests and the fuzz loop call it directly).
pub fn parse_model_request(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<ModelRequest, ApiError> {
    let from_query = match query {
        Some(q) => parse_pairs(q.as_bytes(), "query string")?,
        None => RawFields::default(),
    };
    let fields = if from_query.model.is_some() {
        from_query
    } else if body.iter().all(u8::is_ascii_whitespace) {
        RawFields::default()
    } else {
        parse_body(content_type, body)?
    };
    let model = match fields.model {
        None => {
            return Err(ApiError::BadRequest(
                "missing `model`: send {\"model\": \"NAME\"} as JSON, model=NAME as a form, or ?model=NAME".into(),
            ));
        }
        Some(m) if m.trim().is_empty() => {
            return Err(ApiError::BadRequest("`model` must not be empty".into()));
        }
        Some(m) => m,
    };
    // Only the panel's own pages: anything else could send a browser to another site.
    if let Some(path) = &fields.return_to
        && !crate::access::is_panel_return(path)
    {
        return Err(ApiError::BadRequest(
            "`return_to` must be a page of this panel: /, /?page=N or /models/<name>".into(),
        ));
    }
    Ok(ModelRequest {
        model,
        force: fields.force.unwrap_or(false),
        return_to: fields.return_to,
    })
}

fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<RawFields, ApiError> {
    let essence = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if essence == "application/json" || essence.ends_with("+json") {
        parse_json(body)
    } else if essence == "application/x-www-form-urlencoded" {
        parse_pairs(body, "form body")
    } else if essence.is_empty() {
        Err(ApiError::BadRequest(
            "missing Content-Type: send application/json or application/x-www-form-urlencoded"
                .into(),
        ))
    } else {
        Err(ApiError::BadRequest(format!(
            "unsupported Content-Type {essence:?}: send application/json or application/x-www-form-urlencoded"
        )))
    }
}

fn parse_json(body: &[u8]) -> Result<RawFields, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    let Value::Object(object) = value else {
        return Err(ApiError::BadRequest(
            "JSON body must be an object like {\"model\": \"NAME\"}".into(),
        ));
    };
    let model = match object.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`model` must be a string, got {}",
                json_type(other)
            )));
        }
    };
    let force = match object.get("force") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`force` must be a boolean, got {}",
                json_type(other)
            )));
        }
    };
    let return_to = match object.get("return_to") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(RawFields {
        model,
        force,
        return_to,
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_pairs(input: &[u8], what: &str) -> Result<RawFields, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(input)
        .map_err(|e| ApiError::BadRequest(format!("malformed {what}: {e}")))?;
    let mut fields = RawFields::default();
    for (key, value) in pairs {
        match key.as_str() {
            "model" => fields.model = Some(value),
            "force" => {
                fields.force = Some(match value.to_ascii_lowercase().as_str() {
                    "1" | "true" | "on" | "yes" => true,
                    "" | "0" | "false" | "off" | "no" => false,
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "`force` must be true or false, got {value:?}"
                        )));
                    }
                });
            }
            "return_to" => fields.return_to = Some(value),
            _ => {}
        }
    }
    Ok(fields)
}

/// LocalAI's monitor answer: the backend's own status, or OS metrics when it gave none.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum MonitorResponse {
    /// The backend's answer to gRPC `Status`.
    Status {
        /// 0 uninitialized, 1 busy, 2 ready, -1 error.
        state: i32,
        /// Memory as the backend reports it, when it does.
        #[serde(skip_serializing_if = "Option::is_none")]
        memory: Option<MemoryUsage>,
    },
    /// The process's OS metrics, when `Status` gave no answer (LocalAI's fallback).
    Process(ProcessMetrics),
}

/// A plain answer: `{"message": "model stopped"}`, with what a shutdown released.
#[derive(Serialize, serde::Deserialize, ToSchema)]
pub struct Message {
    /// What happened.
    pub message: String,
    /// What the shutdown released: the backend's processes' memory just before and after, and
    /// the host's and each GPU's memory before and after (absent when no process was stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freed: Option<FreedMemory>,
}

impl Message {
    fn new(message: &str) -> Self {
        Self {
            message: message.to_string(),
            freed: None,
        }
    }

    /// The message as a notice (panel, CLI): with the memory released, and what is still held.
    pub fn notice(&self) -> String {
        let Some(freed) = &self.freed else {
            return self.message.clone();
        };
        let mut text = format!(
            "{}, freed {}",
            self.message,
            app::format::bytes(freed.rss_released())
        );
        if let Some(gpu) = freed.gpu_released() {
            text.push_str(&format!(" and {} of GPU memory", app::format::bytes(gpu)));
        }
        for held in &freed.still_held {
            text.push_str(&format!("; still held: {held}"));
        }
        text
    }
}

/// LocalAI's `/system` answer.
#[derive(Serialize, ToSchema)]
pub struct SystemInfo {
    /// The backend labels configured.
    pub backends: Vec<String>,
    /// The models running now.
    pub loaded_models: Vec<LoadedModel>,
}

/// A running model in `/system`.
#[derive(Serialize, ToSchema)]
pub struct LoadedModel {
    /// The model name.
    pub id: String,
    /// Its backend label.
    pub backend: String,
}

/// `/version`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Version {
    /// backend-monitor's version.
    pub version: String,
}

/// `/healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the server answers.
    pub status: String,
}

impl From<Reading> for MonitorResponse {
    fn from(reading: Reading) -> Self {
        match reading {
            Reading::Backend(status) => MonitorResponse::Status {
                state: status.state.code(),
                memory: status.memory,
            },
            Reading::Process(process) => MonitorResponse::Process(process),
        }
    }
}

/// A model's state and memory (LocalAI's monitor)
///
/// The backend's `Status` answer when it gives one; otherwise its process's OS metrics
/// (LocalAI's fallback body). Also at `/v1/backend/monitor`. GET and POST alike; the model comes
/// from `?model=`, else from the body.
#[utoipa::path(
    method(get, post),
    path = "/backend/monitor",
    tag = "LocalAI",
    params(RawFields),
    request_body(description = "The model, as JSON or form fields (or use the query)", content(
        (RawFields = "application/json"),
        (RawFields = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The backend's Status, or its process metrics", body = MonitorResponse),
        (status = 400, description = "No model named, or a malformed body", body = ErrorEnvelope),
        (status = 500, description = "Unknown or stopped model (`model_not_found`, `model_not_loaded`), or neither Status nor the process answered (`backend_error`)", body = ErrorEnvelope),
    ),
)]
pub(crate) async fn monitor(
    State(registry): State<Arc<Registry>>,
    request: ModelRequest,
) -> Result<Json<MonitorResponse>, ApiError> {
    let reading = registry.monitor(&request.model).await?;
    Ok(Json(reading.into()))
}

/// Stops a model (LocalAI's shutdown)
///
/// Waits while the backend is BUSY (up to `busy_wait`, unless `force`), calls `Free`, then ends a
/// managed backend's process tree. Also at `/v1/backend/shutdown`.
#[utoipa::path(
    post,
    path = "/backend/shutdown",
    tag = "LocalAI",
    params(RawFields),
    request_body(description = "The model, as JSON or form fields (or use the query)", content(
        (RawFields = "application/json"),
        (RawFields = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Stopped", body = Message),
        (status = 303, description = "Panel forms (`return_to`): back to the page, with a notice"),
        (status = 400, description = "No model named, or a malformed body", body = ErrorEnvelope),
        (status = 409, description = "A start was cancelled by this shutdown", body = ErrorEnvelope),
        (status = 500, description = "Unknown or stopped model, a backend that stayed busy (`backend_busy`), or a failed stop", body = ErrorEnvelope),
    ),
)]
pub(crate) async fn shutdown(
    State(registry): State<Arc<Registry>>,
    request: ModelRequest,
) -> Response {
    let result = registry
        .shutdown(&request.model, request.force)
        .await
        .map(|freed| Message {
            freed,
            ..Message::new("model stopped")
        });
    respond(request, result)
}

/// Starts a model
///
/// Starts a stopped or failed managed backend (re-attaches an external one after a health
/// check) and answers once it is ready; joins a start in progress. Also at `/v1/backend/load`.
#[utoipa::path(
    post,
    path = "/backend/load",
    tag = "backends",
    params(RawFields),
    request_body(description = "The model, as JSON or form fields (or use the query)", content(
        (RawFields = "application/json"),
        (RawFields = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Started, or already running", body = Message),
        (status = 303, description = "Panel forms (`return_to`): back to the page, with a notice"),
        (status = 400, description = "No model named, or a malformed body", body = ErrorEnvelope),
        (status = 409, description = "A shutdown cancelled the start", body = ErrorEnvelope),
        (status = 500, description = "Unknown model, or the start failed (`backend_error`)", body = ErrorEnvelope),
    ),
)]
pub(crate) async fn load(State(registry): State<Arc<Registry>>, request: ModelRequest) -> Response {
    let result = registry.start(&request.model).await.map(|outcome| {
        Message::new(match outcome {
            StartOutcome::Started => "model started",
            StartOutcome::AlreadyRunning => "model already running",
        })
    });
    respond(request, result)
}

/// JSON for API clients; a 303 back to the panel for its no-JavaScript forms.
fn respond(request: ModelRequest, result: Result<Message, RegistryError>) -> Response {
    match (request.return_to, result) {
        (None, Ok(message)) => Json(message).into_response(),
        (None, Err(e)) => ApiError::from(e).into_response(),
        (Some(path), result) => {
            let (key, text) = match result {
                Ok(message) => ("notice", format!("{}: {}", request.model, message.notice())),
                Err(e) => ("error", e.to_string()),
            };
            // `return_to` was checked: a page, or `/?page=N`, whose page number is kept.
            let (path, page) = match path.split_once('?') {
                Some((path, query)) => (path, query.strip_prefix("page=")),
                None => (path.as_str(), None),
            };
            let mut fields = vec![(key, text)];
            if let Some(page) = page {
                fields.insert(0, ("page", page.to_owned()));
            }
            let query = serde_urlencoded::to_string(fields).unwrap_or_default();
            Redirect::to(&format!("{path}?{query}")).into_response()
        }
    }
}

async fn unknown_path(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no API endpoint at {}", uri.path()))
}

/// Backend labels and running models (LocalAI's shape)
#[utoipa::path(get, path = "/system", tag = "LocalAI",
    responses((status = 200, description = "Labels and running models", body = SystemInfo)))]
pub(crate) async fn system(State(registry): State<Arc<Registry>>) -> Json<SystemInfo> {
    Json(SystemInfo {
        backends: registry.backend_labels(),
        loaded_models: registry
            .loaded()
            .into_iter()
            .map(|(id, backend)| LoadedModel { id, backend })
            .collect(),
    })
}

/// backend-monitor's version
#[utoipa::path(get, path = "/version", tag = "service",
    responses((status = 200, description = "The version", body = Version)))]
pub(crate) async fn version() -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// Liveness for load balancers and service managers; open even when API keys are set
#[utoipa::path(get, path = "/healthz", tag = "service", security(()),
    responses((status = 200, description = "The server answers", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
    })
}

/// Every configured model and the host
///
/// Each model's lifecycle, latest observation (Status or process metrics, measured memory,
/// generation), activity, restarts and idle countdown, from the registry's cache: never waits
/// on a backend.
#[utoipa::path(get, path = "/api/backends", tag = "backends",
    responses((status = 200, description = "Every model, in configuration order, and the host", body = PanelSnapshot)))]
pub(crate) async fn backends(State(registry): State<Arc<Registry>>) -> Result<Response, ApiError> {
    let json = registry.snapshot_json()?;
    Ok(([(CONTENT_TYPE, "application/json")], json).into_response())
}

/// One model, with its history and log lines
#[utoipa::path(get, path = "/api/backends/{name}", tag = "backends",
    params(("name" = String, Path, description = "The model name")),
    responses(
        (status = 200, description = "The model's summary, its last 10 minutes of history and its last 500 log lines", body = ModelDetail),
        (status = 404, description = "No such model", body = ErrorEnvelope),
    ))]
pub(crate) async fn backend_detail(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
) -> Result<Json<ModelDetail>, ApiError> {
    registry
        .detail(&name, 0)
        .map(Json)
        .ok_or_else(|| not_configured(&name))
}

fn not_configured(name: &str) -> ApiError {
    ApiError::NotFound(format!("model {name:?} is not configured"))
}

/// `?since=<cursor>` of the logs endpoint.
#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    /// Only lines after this cursor (a line's `seq`; the last answer's `next`); 0 for all.
    #[serde(default)]
    since: u64,
}

/// A model's log lines after a cursor
///
/// All kept lines without `since`; poll with the answer's `next` to get only new lines.
#[utoipa::path(get, path = "/api/backends/{name}/logs", tag = "backends",
    params(("name" = String, Path, description = "The model name"), LogsQuery),
    responses(
        (status = 200, description = "Lines after the cursor", body = LogPage),
        (status = 400, description = "A `since` that is not a number", body = ErrorEnvelope),
        (status = 404, description = "No such model", body = ErrorEnvelope),
    ))]
pub(crate) async fn backend_logs(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<LogPage>, ApiError> {
    let query: LogsQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("bad query: {e} (use ?since=<number>)")))?;
    registry
        .logs(&name, query.since)
        .map(Json)
        .map_err(|_| not_configured(&name))
}
