//! Assembles the application (registry, JSON API, panel) and runs it until a shutdown signal,
//! stopping every managed backend before returning.

use crate::access::{self, Access};
use crate::api;
use crate::config::Config;
use crate::error::ApiError;
use crate::headers;
use crate::metrics;
use crate::openapi;
use crate::pages;
use crate::registry::Registry;
use app::directory::SharedDirectory;
use app::shell;
use axum::body::Body;
use axum::extract::FromRef;
use axum::http::{Request, Response};
use axum::routing::get;
use axum::{Router, middleware};
use leptos::config::{Env, LeptosOptions};
use leptos::prelude::provide_context;
use leptos_axum::LeptosRoutes;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{And, DefaultPredicate, Predicate, SizeAbove};
use tower_http::trace::TraceLayer;

/// How long in-flight requests may run after a shutdown signal before the server stops anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by every handler.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// Leptos' settings (site root, output name).
    pub leptos_options: LeptosOptions,
    /// The registry of backends.
    pub registry: Arc<Registry>,
    /// Keys, sessions and limits enforced by [`access::guard`].
    pub access: Arc<Access>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A built, bound, not yet serving application.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    registry: Arc<Registry>,
}

impl Application {
    /// Binds the listen address, builds the registry and starts the managed backends.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let addr = config.settings.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        let access = Arc::new(Access::new(&config.settings, local));
        access.warn_if_exposed(local);
        let registry = Registry::new(config.models, config.settings, config.shim);
        registry.start_all();
        let leptos_options = LeptosOptions::builder()
            .output_name("backend-monitor")
            .site_root(config.site_root.to_string_lossy().as_ref())
            .site_pkg_dir("pkg")
            .site_addr(local)
            .env(Env::PROD)
            .build();
        let state = AppState {
            leptos_options,
            registry: Arc::clone(&registry),
            access,
        };
        Ok(Self {
            listener,
            router: router(state),
            registry,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` completes, then stops every managed backend.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = signalled_tx.send(());
        };
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(signal);
        let result = tokio::select! {
            served = serve.into_future() => served,
            () = async {
                if signalled_rx.await.is_ok() {
                    tokio::time::sleep(DRAIN_TIMEOUT).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; stopping anyway");
                Ok(())
            }
        };
        self.registry.stop_all().await;
        result
    }
}

/// Every route, behind the guard (host, cross-site, keys, body size, deadline) and the
/// security headers; the layers wrap the fallback (static files, 404 page) too.
fn router(state: AppState) -> Router {
    let directory: SharedDirectory = state.registry.clone();
    let options = state.leptos_options.clone();
    let context = move || {
        headers::provide_request_nonce();
        access::provide_permissions();
        provide_context(directory.clone());
    };
    // The panel's pages (app::page_data picks the page from the path), rendered whole before
    // they are sent, so they are complete without JavaScript.
    let page = {
        let context = context.clone();
        move |request: Request<Body>| {
            let options = options.clone();
            leptos_axum::handle_response_inner(
                context.clone(),
                move || shell(options),
                request,
                pages::render_whole,
            )
        }
    };
    Router::new()
        .merge(api::routes())
        .merge(access::routes())
        .merge(metrics::routes())
        .merge(openapi::routes())
        .route("/", get(page.clone()))
        .route("/models/{name}", get(page))
        // No page routes here (they are above): this mounts the panel's server functions.
        .leptos_routes_with_context(&state, Vec::new(), context.clone(), || ())
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(context, shell))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.access),
            access::guard,
        ))
        .layer(middleware::from_fn(headers::security_headers))
        .layer(compression())
        // One span per request (method and path), ended by an event with its status and
        // latency: at debug level, since the panel polls every second; server errors are
        // logged where they arise.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_response(|response: &Response<Body>, latency: Duration, _: &tracing::Span| {
                    tracing::debug!(
                        status = response.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1000.0,
                        "served"
                    );
                }),
        )
        .with_state(state)
}

/// Responses worth compressing: over 1 KiB (for a small one, setting up the compressor costs
/// more than the bytes it saves), compressed at the fastest level (a snapshot of 100 models
/// at the default level took a third of the server's time).
fn compression() -> CompressionLayer<And<DefaultPredicate, SizeAbove>> {
    CompressionLayer::new()
        .quality(CompressionLevel::Fastest)
        .compress_when(DefaultPredicate::new().and(SizeAbove::new(1024)))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; stopping backends");
}
