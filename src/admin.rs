//! The admin HTTP API (bound only where `admin` says): `GET /status` (JSON),
//! `GET /metrics` (Prometheus text), `POST /reload`; for `tandem verify` and
//! `tandem backfill`: `GET /mirror/position` (journaled/applied LSNs, lag,
//! last LSN per table), `POST /mirror/divergent/clear` (`{"tables": […]}`)
//! and `POST /verify/report` (kept for `/status`); `POST /cutover`
//! (`{"to": "<backend>", "wait": "30s", "end_holders_after": "10s"}`, each
//! optional; default target the secondary) runs the fenced cutover;
//! `POST /mirror/resume` restarts an applier that stopped (`tandem resume`).
//!
//! With a token (`admin_token_file` or `TANDEM_ADMIN_TOKEN`) every POST
//! needs `Authorization: Bearer <token>`, and GETs as `admin_token_scope`
//! says; the comparison takes the same time however much of it matches.
//! Refusals are logged and counted (`tandem_admin_refused_total`).

use crate::config::AdminTokenScope;
use crate::metrics::ScrapeExtras;
use crate::state::Shared;
use axum::extract::State;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Binds the admin listener; serves until `shared.shutdown` is cancelled.
pub async fn start(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = crate::frontend::bind(addr)?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .route("/cutover", post(cutover))
        .route("/mirror/position", get(mirror_position))
        .route("/mirror/divergent/clear", post(clear_divergent))
        .route("/mirror/resume", post(resume_applier))
        .route("/verify/report", post(verify_report))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authorize,
        ))
        .with_state(shared.clone());
    tokio::spawn(async move {
        let stop = shared.shutdown.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "admin listener stopped");
        }
    });
    tracing::info!(addr = %bound, "admin API listening");
    Ok(bound)
}

/// Lets a request through if it needs no token or carries the right one.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let cfg = shared.config.load();
    let Some(token) = cfg.admin_token.as_ref() else {
        return next.run(req).await;
    };
    let needs = req.method() != axum::http::Method::GET
        || match cfg.admin_token_scope {
            AdminTokenScope::Posts => false,
            AdminTokenScope::Status => req.uri().path() != "/metrics",
            AdminTokenScope::All => true,
        };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    if !needs || bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        return next.run(req).await;
    }
    shared.metrics.admin_refused.inc();
    tracing::warn!(
        method = %req.method(),
        path = req.uri().path(),
        "admin request refused: missing or wrong bearer token"
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({
            "ok": false,
            "error": "this admin request needs the admin token (Authorization: Bearer <token>; admin_token_file in the config)"
        })),
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let cfg = shared.config.load();
    let pools = shared.pools.load();
    let backends: serde_json::Map<String, serde_json::Value> = cfg
        .backends
        .values()
        .map(|b| {
            let open = pools.get(&b.name).map(|p| p.open_connections());
            (
                b.name.clone(),
                serde_json::json!({
                    "kind": format!("{:?}", b.kind).to_lowercase(),
                    "address": format!("{}:{}", b.host, b.port),
                    "database": b.database,
                    "pool": b.pool,
                    "open_connections": open,
                }),
            )
        })
        .collect();
    let stats = &shared.router.stats;
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "primary": cfg.primary,
        "cluster": cfg.cluster().map(|c| serde_json::json!({
            "name": c.name,
            "database": c.database,
            "shards": c.shards,
            "buckets": c.buckets(),
            "tables": c.tables.len(),
            "schema": *shared.schema_drift.lock().unwrap_or_else(|p| p.into_inner()),
            "cross_shard_transactions": match c.cross_shard {
                crate::config::CrossShard::Xa => "xa",
                crate::config::CrossShard::Reject => "reject",
            },
            "xa": shared.xa.status(&shared.metrics),
        })),
        "secondary": cfg.secondary,
        "mirroring": shared.mirror.load().as_ref().is_some_and(|m| cfg.secondary.as_deref().is_some_and(|s| m.mirrors_to(s))),
        "mirror": shared.mirror.load().as_ref().map(|m| m.status_json()),
        "config": {
            "version": shared.config_version.load(Ordering::Relaxed),
            "loaded_at_unix": shared.loaded_at_unix.load(Ordering::Relaxed),
            "source": cfg.source.as_ref().map(|p| p.display().to_string()),
            "last_reload": *shared.last_reload.lock().unwrap_or_else(|p| p.into_inner()),
        },
        "verify": *shared.last_verify.lock().unwrap_or_else(|p| p.into_inner()),
        "cutover": shared.cutover.status_json(),
        "reads": format!("{:?}", cfg.reads).to_lowercase(),
        "shadow": shared.shadow.status_json(),
        "uptime_seconds": shared.started.elapsed().as_secs(),
        "clients": {
            "connected": shared.metrics.client_connections.get(),
            "accepted": shared.metrics.client_connections_total.get(),
            "auth_failures": shared.metrics.auth_failures.get(),
        },
        "backends": backends,
        "router": {
            "cache_hits": stats.cache_hits.load(Ordering::Relaxed),
            "cache_misses": stats.cache_misses.load(Ordering::Relaxed),
            "unparsed": stats.unparsed.load(Ordering::Relaxed),
        },
    }))
}

async fn mirror_position(State(shared): State<Arc<Shared>>) -> axum::response::Response {
    match shared.mirror.load_full() {
        // Asked by verify, backfill and cutovers of other processes, which
        // wait for what is journaled to be applied.
        Some(m) => Json(m.position_to_wait_on()).into_response(),
        None => (StatusCode::NOT_FOUND, "not mirroring").into_response(),
    }
}

#[derive(serde::Deserialize)]
struct TableList {
    tables: Vec<String>,
    /// Keep marks made after this `mark_seq` (see `Mirror::clear_divergent`).
    #[serde(default)]
    before: Option<u64>,
}

async fn clear_divergent(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<TableList>,
) -> axum::response::Response {
    match shared.mirror.load_full() {
        Some(m) => {
            Json(serde_json::json!({ "cleared": m.clear_divergent(&body.tables, body.before) }))
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not mirroring").into_response(),
    }
}

async fn resume_applier(State(shared): State<Arc<Shared>>) -> axum::response::Response {
    match shared.mirror.load_full() {
        Some(m) => match m.resume_applier() {
            Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
            Err(e) => (
                StatusCode::CONFLICT,
                Json(serde_json::json!({ "ok": false, "error": e.to_string() })),
            )
                .into_response(),
        },
        None => (StatusCode::NOT_FOUND, "not mirroring").into_response(),
    }
}

async fn verify_report(
    State(shared): State<Arc<Shared>>,
    Json(report): Json<serde_json::Value>,
) -> impl IntoResponse {
    *shared.last_verify.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    StatusCode::NO_CONTENT
}

/// Reloads and cutovers run in their own task: an HTTP client that hangs up
/// must not drop one half-way (a fenced cutover would leave writes waiting).
async fn detached<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    tokio::spawn(fut).await.ok()
}

async fn reload(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let done =
        detached(async move { crate::reload::reload(&shared, crate::reload::Trigger::Api).await })
            .await;
    let Some(done) = done else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "ok": false, "errors": ["the reload task failed"] })),
        );
    };
    match done {
        Ok(version) => (
            StatusCode::OK,
            Json(serde_json::json!({ "ok": true, "version": version })),
        ),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "ok": false, "errors": e.0 })),
        ),
    }
}

async fn cutover(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> impl IntoResponse {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Body {
        to: Option<String>,
        /// How long the cutover may take (default migration.cutover_timeout).
        wait: Option<String>,
        /// End sessions still holding the fence after this grace period.
        end_holders_after: Option<String>,
    }
    let bad = |e: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "ok": false, "error": format!(
                "body: {e} (expected {{\"to\": \"<backend>\", \"wait\": \"30s\", \"end_holders_after\": \"10s\"}}, each optional)"
            ) })),
        )
    };
    let b = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        match serde_json::from_slice::<Body>(&body) {
            Ok(b) => b,
            Err(e) => return bad(e.to_string()),
        }
    };
    let dur = |key: &str, v: &Option<String>| -> Result<Option<std::time::Duration>, String> {
        v.as_deref()
            .map(|v| humantime::parse_duration(v).map_err(|e| format!("{key}: {v:?}: {e}")))
            .transpose()
    };
    let opts = match (
        dur("wait", &b.wait),
        dur("end_holders_after", &b.end_holders_after),
    ) {
        (Ok(wait), Ok(end_holders_after)) => crate::cutover::CutoverOptions {
            wait,
            end_holders_after,
        },
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let to = b.to;
    let done = detached(async move { crate::reload::cutover(&shared, to, opts).await }).await;
    let done = done.unwrap_or_else(|| Err("the cutover task failed".into()));
    match done {
        Ok(report) => (
            StatusCode::OK,
            Json(serde_json::json!({ "ok": true, "report": report })),
        ),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "ok": false, "error": e })),
        ),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let stats = &shared.router.stats;
    let pools = shared.pools.load();
    let extras = ScrapeExtras {
        router_cache_hits: stats.cache_hits.load(Ordering::Relaxed),
        router_cache_misses: stats.cache_misses.load(Ordering::Relaxed),
        unparsed: stats.unparsed.load(Ordering::Relaxed),
        backend_connections: pools
            .iter()
            .map(|(name, p)| (name.clone(), p.open_connections() as i64))
            .collect(),
        mirror: shared.mirror.load_full(),
        shadow: shared.shadow.clone(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(extras),
    )
}
