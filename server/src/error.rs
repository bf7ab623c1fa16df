//! The one place where errors become HTTP responses, in LocalAI's envelope:
//! `{"error": {"code": <status>, "message": "...", "type": "..."}}`.

use crate::registry::RegistryError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer (LocalAI's envelope).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorEnvelope`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status code, repeated.
    pub code: u16,
    /// What was wrong, in words.
    pub message: String,
    /// A stable word for scripts: `invalid_request_error`, `authentication_error`,
    /// `permission_error`, `timeout`, `not_found`, `model_not_found`, `model_not_loaded`,
    /// `backend_busy`, `backend_error`, `start_cancelled`, `unavailable`, `internal_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// Every error the HTTP API can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong (missing or invalid `model`, malformed body, wrong type).
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than the server accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No valid API key or session was presented while keys are configured.
    #[error("{0}")]
    Unauthorized(String),
    /// The request is refused whoever sends it: a cross-site browser request, a `Host` that is
    /// not allowed, or a read-only key asking to shut down or start.
    #[error("{0}")]
    Forbidden(String),
    /// A read-only request took longer than `request_timeout`.
    #[error("the request took longer than {0:?}")]
    Timeout(std::time::Duration),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A registry operation failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The metrics could not be written out.
    #[error("cannot encode the metrics: {0}")]
    Metrics(#[from] std::fmt::Error),
    /// An answer could not be serialised to JSON.
    #[error("cannot serialise the answer: {0}")]
    Json(#[from] serde_json::Error),
}

impl ApiError {
    /// The HTTP status and the envelope's `type` for this error.
    fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "authentication_error"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error"),
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error"),
            ApiError::Metrics(_) | ApiError::Json(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
            // LocalAI answers 500 for unknown and unloaded models; scripts rely on it.
            ApiError::Registry(e) => match e {
                RegistryError::UnknownModel(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "model_not_found")
                }
                RegistryError::NotLoaded { .. } => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "model_not_loaded")
                }
                RegistryError::Busy { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "backend_busy"),
                RegistryError::Unobservable { .. } | RegistryError::StartFailed { .. } => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "backend_error")
                }
                RegistryError::StartCancelled(_) => (StatusCode::CONFLICT, "start_cancelled"),
                RegistryError::Closing => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.classify();
        let challenge = matches!(self, ApiError::Unauthorized(_));
        let message = self.to_string();
        if status.is_server_error() {
            tracing::error!(%status, "{message}");
        } else {
            tracing::debug!(%status, "{message}");
        }
        let body = ErrorEnvelope {
            error: ErrorDetail {
                code: status.as_u16(),
                message,
                kind,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if challenge {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
