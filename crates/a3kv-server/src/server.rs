//! The server: loads the model, starts the engine, builds the router (routes, body limit,
//! request ids, JSON 404/405) and runs it until SIGTERM/SIGINT or [`ServerHandle::shutdown`];
//! then it stops accepting, lets in-flight requests finish up to `shutdown.drain_secs`,
//! shuts the engine down and returns.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use a3kv_cuda::{probe_driver, resolve_device, DeviceChoice, DeviceRequest};
use a3kv_model::{find_default_model, load_model, DType, Device, LoadOptions, MISSING_MODEL_HINT};
use a3kv_sched::Engine;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::{get, post, put};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::ServerConfig;
use crate::error::{ApiError, ServeError};
use crate::openai::EdgeLimits;
use crate::request_id::RequestIds;
use crate::routes::{chunks, completions, health, metrics};
use crate::state::AppState;

/// A running server.
pub struct ServerHandle {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The handler state (engine handle included).
    pub state: AppState,
    trigger: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl ServerHandle {
    /// Starts the graceful shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        self.trigger.send_replace(true);
    }

    /// Waits until the server has drained and the engine has stopped.
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Io {
                what: "server task".into(),
                error: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

/// The router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chunks", put(chunks::put))
        .route("/v1/chunks/{id}", get(chunks::get).delete(chunks::delete))
        .route("/v1/models", get(health::models))
        .route("/v1/models/{id}", get(health::model))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        .fallback(|uri: Uri| async move { ApiError::RouteNotFound(uri.path().to_string()) })
        .method_not_allowed_fallback(|uri: Uri| async move {
            ApiError::MethodNotAllowed(uri.path().to_string())
        })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::request_id::middleware,
        ))
        .with_state(state)
}

/// The model file a configuration names (`model.path`, else the default model), checked to
/// exist; a missing default model's error names every place searched.
pub fn model_path(cfg: &ServerConfig) -> Result<PathBuf, ServeError> {
    let p = if cfg.model.path.is_empty() {
        find_default_model().map_err(|e| ServeError::Model(e.to_string()))?
    } else {
        PathBuf::from(&cfg.model.path)
    };
    if !p.exists() {
        return Err(ServeError::Model(format!(
            "model {} does not exist; {MISSING_MODEL_HINT}",
            p.display()
        )));
    }
    Ok(p)
}

/// Device and dtype of a configuration's `[model]` section.
pub fn load_options(cfg: &ServerConfig) -> Result<LoadOptions, ServeError> {
    let dtype = match cfg.model.dtype.as_str() {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => DType::F32,
    };
    let device = match cfg.model.device.as_str() {
        "cpu" => Device::Cpu,
        d => {
            let ordinal = d
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Device::new_cuda(ordinal)
                .map_err(|e| ServeError::Model(format!("model.device = {d:?}: {e}")))?
        }
    };
    let decode_weights =
        cfg.model
            .decode_weights
            .parse()
            .map_err(|e: a3kv_model::ModelError| {
                ServeError::Model(format!("model.decode_weights: {e}"))
            })?;
    Ok(LoadOptions {
        dtype,
        device,
        decode_weights,
    })
}

/// Resolves `engine.device` against this machine (a driver probe that makes no CUDA call
/// without a driver): `cuda:N` that cannot be had is an error naming what is missing; `auto`
/// falls back to the CPU with a log line. The engine's layer math runs on the CPU either way
/// (the a3kv-cuda kernels are not wired into it yet), which is logged when CUDA is chosen.
pub fn resolve_engine_device(value: &str) -> Result<DeviceChoice, ServeError> {
    let request: DeviceRequest = value.parse()?;
    let choice = resolve_device(request, &probe_driver())?;
    match &choice {
        DeviceChoice::Cpu {
            fallback: Some(why),
        } => tracing::info!(
            device = "cpu",
            "engine.device = auto: running on the CPU: {why}"
        ),
        DeviceChoice::Cpu { fallback: None } => {}
        DeviceChoice::Cuda(n) => tracing::warn!(
            device = %format!("cuda:{n}"),
            "engine.device: CUDA device {n} is present, but the engine's layer math is not wired \
             to the a3kv-cuda kernels yet and runs on the CPU"
        ),
    }
    Ok(choice)
}

/// Loads the model, starts the engine and binds; `listen_signals` makes SIGTERM/SIGINT start
/// the graceful shutdown.
pub async fn start(cfg: ServerConfig, listen_signals: bool) -> Result<ServerHandle, ServeError> {
    let prometheus = crate::metrics::install(&cfg.metrics)?;
    resolve_engine_device(&cfg.engine.device)?;
    let path = model_path(&cfg)?;
    let opts = load_options(&cfg)?;
    let t0 = Instant::now();
    let model = tokio::task::spawn_blocking(move || {
        load_model(&path, &opts).map_err(|e| ServeError::Model(e.to_string()))
    })
    .await
    .map_err(|e| ServeError::Model(e.to_string()))??;
    tracing::info!(secs = t0.elapsed().as_secs_f64(), source = %model.source.display(), "model loaded");
    let engine = Engine::start(cfg.engine.clone(), model).await?;
    let model_name = if cfg.model.name.is_empty() {
        engine.model_name()
    } else {
        cfg.model.name.clone()
    };
    let (deadline_tx, deadline_rx) = watch::channel(false);
    let state = AppState {
        engine,
        limits: Arc::new(EdgeLimits::new(&cfg, model_name)),
        concurrency: Arc::new(Semaphore::new(cfg.limits.max_concurrent_requests)),
        draining: Arc::new(AtomicBool::new(false)),
        drain_deadline: deadline_rx,
        prometheus,
        max_body_bytes: cfg.limits.max_body_bytes,
        request_timeout: Duration::from_secs(cfg.limits.request_timeout_secs),
        retry_after_secs: cfg.limits.retry_after_secs,
        created_unix: crate::state::unix_now(),
        ids: Arc::new(RequestIds::default()),
    };
    let addr = cfg.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| ServeError::Io {
            what: format!("binding {addr} (key `listen`)"),
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| ServeError::Io {
        what: "reading the bound address".into(),
        error,
    })?;
    let signals = if listen_signals {
        Some(OsSignals::install()?)
    } else {
        None
    };
    let (trigger, rx) = watch::channel(false);
    let drain = Duration::from_secs(cfg.shutdown.drain_secs);
    let task = tokio::spawn(run(
        listener,
        state.clone(),
        rx,
        signals,
        drain,
        deadline_tx,
    ));
    tracing::info!(%addr, model = %state.limits.model_name, "listening");
    Ok(ServerHandle {
        addr,
        state,
        trigger,
        task,
    })
}

/// SIGTERM and SIGINT streams, registered at start so a signal that arrives before the
/// first poll still starts the graceful shutdown (instead of killing the process).
struct OsSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl OsSignals {
    fn install() -> Result<Self, ServeError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let io = |error| ServeError::Io {
                what: "installing SIGTERM/SIGINT handlers".into(),
                error,
            };
            Ok(Self {
                term: signal(SignalKind::terminate()).map_err(io)?,
                int: signal(SignalKind::interrupt()).map_err(io)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves on SIGTERM/SIGINT (when `signals` is set), or when `rx` turns true.
async fn stop_signal(mut rx: watch::Receiver<bool>, signals: Option<OsSignals>) {
    let os = async {
        match signals {
            Some(mut s) => s.recv().await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = os => {}
        _ = rx.wait_for(|v| *v) => {}
    }
}

async fn run(
    listener: TcpListener,
    state: AppState,
    rx: watch::Receiver<bool>,
    signals: Option<OsSignals>,
    drain: Duration,
    deadline_tx: watch::Sender<bool>,
) -> Result<(), ServeError> {
    let (fired_tx, mut fired_rx) = watch::channel(None::<Instant>);
    let draining = state.draining.clone();
    let signal = async move {
        stop_signal(rx, signals).await;
        draining.store(true, Ordering::SeqCst);
        tracing::info!(
            drain_secs = drain.as_secs(),
            "shutdown: not accepting, draining in-flight requests"
        );
        fired_tx.send_replace(Some(Instant::now()));
    };
    let app = router(state.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let mut server = std::pin::pin!(server.into_future());
    let deadline = async {
        let _ = fired_rx.wait_for(Option::is_some).await;
        tokio::time::sleep(drain).await;
    };
    let serving = |r: std::io::Result<()>| {
        r.map_err(|error| ServeError::Io {
            what: "serving".into(),
            error,
        })
    };
    tokio::select! {
        r = &mut server => serving(r)?,
        _ = deadline => {
            tracing::warn!(
                running = state.engine.running(),
                waiting = state.engine.waiting(),
                "shutdown: drain deadline passed; cutting the requests still running (503 shutting_down)"
            );
            deadline_tx.send_replace(true);
            // Every handler answers at once; give the connections a moment to carry it.
            match tokio::time::timeout(CUT_GRACE, &mut server).await {
                Ok(r) => serving(r)?,
                Err(_) => tracing::warn!("shutdown: connections still open after the cut; closing them"),
            }
        }
    }
    // Requests have answered (or were cut and cancelled): stop the actors without waiting
    // for computations the cut requests left behind.
    state.engine.shutdown(ENGINE_STOP_WAIT).await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// How long connections get to carry their 503 after the drain deadline cut them.
const CUT_GRACE: Duration = Duration::from_millis(250);
/// How long the engine waits for running requests to release their slots once HTTP is done.
const ENGINE_STOP_WAIT: Duration = Duration::from_millis(100);
