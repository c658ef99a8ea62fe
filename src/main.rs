//! The `tandem` binary: parses the command line and wires the library up.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "MySQL-protocol proxy for zero-downtime database migrations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Runtime worker threads. Default: half the CPUs, rounded up. A
        /// proxy's work is mostly socket system calls; measured on 2 cores
        /// shared with the database, one thread gave more queries per second
        /// at less CPU per query than two (see docs/benchmarks.md).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config file and its rules directory; print every error.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy rows that existed before mirroring from primary to secondary,
    /// in primary-key chunks; resumable.
    Backfill {
        #[arg(long, short)]
        config: PathBuf,
        /// Comma-separated tables (default: every table the rules mirror).
        #[arg(long, value_delimiter = ',')]
        tables: Option<Vec<String>>,
        /// Create missing tables on the secondary from the primary's schema.
        #[arg(long)]
        create_tables: bool,
        /// Rows per second at most.
        #[arg(long)]
        rate: Option<u64>,
        /// Rows per chunk.
        #[arg(long, default_value_t = 2000)]
        chunk_size: usize,
        /// Pause copying while the running Tandem's mirror lag is above
        /// this (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        max_lag: std::time::Duration,
    },
    /// Flip primary and secondary on the running Tandem (through its admin
    /// API): fenced, drained, nothing lost; rollback is the same command
    /// with the other backend. Exit 0 done, 1 refused or aborted, 2 error.
    Cutover {
        #[arg(long, short)]
        config: PathBuf,
        /// The backend to make primary (default: the current secondary).
        #[arg(long)]
        to: Option<String>,
        /// How long this cutover may take, open transactions included
        /// (default: migration.cutover_timeout).
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<std::time::Duration>,
        /// End sessions still holding the fence (a transaction, LOCK TABLES,
        /// a named lock) after this grace period: their backend connection
        /// is killed and their client disconnected. Default: never; the
        /// cutover aborts naming them.
        #[arg(long, value_parser = humantime::parse_duration)]
        end_holders_after: Option<std::time::Duration>,
    },
    /// Restart the running Tandem's mirror applier after it stopped (e.g.
    /// halted under `migration.apply_errors: halt`), from the secondary's
    /// stored position. Exit 0 resumed, 1 nothing to resume, 2 error.
    Resume {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the running Tandem's status (roles, mirror, cutovers, reloads).
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// Print the raw JSON of GET /status.
        #[arg(long)]
        json: bool,
    },
    /// On a cluster: the bucket and the shard that hold TABLE's rows with
    /// shard key KEY.
    ShardOf {
        #[arg(long, short)]
        config: PathBuf,
        table: String,
        key: String,
    },
    /// On a cluster: where a statement runs (shards, per-shard text) and
    /// how the answers merge, or why it is refused.
    Route {
        #[arg(long, short)]
        config: PathBuf,
        sql: String,
    },
    /// Print the DDL that creates the primary's tables on another engine
    /// (Tandem's type mapping, docs/postgres.md), and why a table cannot be
    /// mapped. Exit 0 all mapped, 1 some refused, 2 error.
    Schema {
        #[arg(long, short)]
        config: PathBuf,
        /// The engine: postgres.
        #[arg(long, value_parser = ["postgres"])]
        to: String,
        /// Comma-separated tables (default: every table the rules mirror).
        #[arg(long, value_delimiter = ',')]
        tables: Option<Vec<String>>,
    },
    /// Compare primary and secondary table by table; exit 0 identical,
    /// 1 divergent, 2 on error.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
        /// Comma-separated tables (default: every table the rules mirror).
        #[arg(long, value_delimiter = ',')]
        tables: Option<Vec<String>>,
        /// Make the secondary equal to the primary for divergent rows.
        #[arg(long)]
        repair: bool,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Rows per chunk.
        #[arg(long, default_value_t = 5000)]
        chunk_size: usize,
        /// Compare every chunk under the primary's shared locks with the
        /// mirror settled, not only rows that differ at first sight: also
        /// finds a wrong row that happens to equal another moment of the
        /// primary's. Slower; holds each chunk's locks for a mirror round trip.
        #[arg(long)]
        locked: bool,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Cutover {
            config,
            to,
            wait,
            end_holders_after,
        } => cutover_cmd(&config, to, wait, end_holders_after),
        Command::Status { config, json } => status_cmd(&config, json),
        Command::ShardOf { config, table, key } => cluster_tool(&config, |cfg| async move {
            tandem::shard_tools::shard_of(&cfg, &table, &key).await
        }),
        Command::Route { config, sql } => cluster_tool(&config, |cfg| async move {
            tandem::shard_tools::route(&cfg, &sql).await
        }),
        Command::Resume { config } => resume_cmd(&config),
        Command::CheckConfig { config } => match tandem::config::load_for_start(&config) {
            Ok(cfg) if cfg.serve_refusal().is_some() => {
                eprintln!("{}: `tandem serve` refuses it:", config.display());
                eprintln!("  - {}", cfg.serve_refusal().unwrap_or_default());
                std::process::ExitCode::FAILURE
            }
            Ok(cfg) => {
                println!(
                    "{}: ok (primary {}, {} backends, {} table rules)",
                    config.display(),
                    cfg.primary,
                    cfg.backends.len(),
                    cfg.rules.tables.len()
                );
                let accounts = check_accounts(&cfg);
                if cfg.cluster().is_some() && check_cluster(&cfg) != ExitCode::SUCCESS {
                    return ExitCode::FAILURE;
                }
                accounts
            }
            Err(errors) => {
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                for e in &errors.0 {
                    eprintln!("  - {e}");
                }
                std::process::ExitCode::FAILURE
            }
        },
        Command::Backfill {
            config,
            tables,
            create_tables,
            rate,
            chunk_size,
            max_lag,
        } => backfill(
            config,
            tandem::backfill::BackfillOptions {
                tables,
                create_tables,
                rate,
                chunk_size: chunk_size.max(1),
                max_lag,
            },
        ),
        Command::Verify {
            config,
            tables,
            repair,
            json,
            chunk_size,
            locked,
        } => verify(config, tables, repair, json, chunk_size, locked),
        Command::Schema { config, tables, .. } => schema_cmd(&config, tables),
        Command::Serve { config, workers } => match serve(config, workers) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tandem: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// Config and a single-threaded runtime for the offline commands (backfill,
/// verify); either failure is exit code 2, as those commands document.
fn offline_setup(
    path: &std::path::Path,
) -> Result<(tandem::config::Config, tokio::runtime::Runtime), std::process::ExitCode> {
    let cfg = tandem::config::load_for_start(path).map_err(|e| {
        eprintln!("invalid config {}:\n{e}", path.display());
        std::process::ExitCode::from(2)
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("tandem: {e}");
            std::process::ExitCode::from(2)
        })?;
    Ok((cfg, runtime))
}

fn schema_cmd(path: &std::path::Path, tables: Option<Vec<String>>) -> ExitCode {
    let (cfg, runtime) = match offline_setup(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match runtime.block_on(tandem::pg::copy::schema_ddl(&cfg, tables.as_deref())) {
        Ok((ddl, refused)) => {
            print!("{ddl}");
            if refused {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("tandem schema: {e}");
            ExitCode::from(2)
        }
    }
}

fn backfill(path: PathBuf, opts: tandem::backfill::BackfillOptions) -> std::process::ExitCode {
    use std::process::ExitCode;
    let (cfg, runtime) = match offline_setup(&path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        if cfg.postgres_secondary().is_some() {
            return tandem::pg::copy::run(&cfg, &opts).await;
        }
        let sync = tandem::mirror::sync::MirrorSync::discover(&cfg).await;
        tandem::backfill::run(&cfg, &opts, &sync).await
    });
    match result {
        Ok(run) => {
            print!("{}", tandem::backfill::render(&run));
            if run.failed() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("tandem backfill: {e}");
            ExitCode::from(2)
        }
    }
}

fn verify(
    path: PathBuf,
    tables: Option<Vec<String>>,
    repair: bool,
    json: Option<PathBuf>,
    chunk_size: usize,
    locked: bool,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let (cfg, runtime) = match offline_setup(&path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let opts = tandem::verify::VerifyOptions {
        tables,
        repair,
        chunk_size: chunk_size.max(1),
        locked,
        ..Default::default()
    };
    let result = runtime.block_on(async {
        if cfg.postgres_secondary().is_some() {
            return tandem::pg::compare::run(&cfg, &opts)
                .await
                .map_err(tandem::verify::VerifyError::Other);
        }
        let sync = tandem::mirror::sync::MirrorSync::discover(&cfg).await;
        let report = tandem::verify::run(&cfg, &opts, &sync).await;
        if let Ok(r) = &report {
            sync.publish_verify(&serde_json::to_value(r).unwrap_or_default())
                .await;
        }
        report
    });
    match result {
        Ok(report) => {
            print!("{}", tandem::verify::render(&report));
            if let Some(file) = json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                if let Err(e) = std::fs::write(&file, text) {
                    eprintln!("cannot write {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            }
            if report.errors {
                ExitCode::from(2)
            } else if report.identical {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("tandem verify: {e}");
            ExitCode::from(2)
        }
    }
}

/// The running server's admin address from the config (exit 2 without).
fn admin_of(
    path: &std::path::Path,
) -> Result<
    (
        std::net::SocketAddr,
        tokio::runtime::Runtime,
        tandem::config::Config,
    ),
    ExitCode,
> {
    let cfg = tandem::config::load(path).map_err(|e| {
        eprintln!("invalid config {}:\n{e}", path.display());
        ExitCode::from(2)
    })?;
    let Some(addr) = cfg.admin else {
        eprintln!(
            "{}: no `admin` address; the running Tandem can only be reached through it",
            path.display()
        );
        return Err(ExitCode::from(2));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("tandem: {e}");
            ExitCode::from(2)
        })?;
    Ok((addr, runtime, cfg))
}

/// One call to the running server's admin API for command `cmd`: the HTTP
/// code and the body as JSON (Null if it is not), or exit 2 after saying
/// why it could not be reached. `timeout` is read from the config.
fn admin_call(
    cmd: &str,
    path: &std::path::Path,
    method: &str,
    route: &str,
    body: Option<String>,
    timeout: impl FnOnce(&tandem::config::Config) -> std::time::Duration,
) -> Result<(u16, serde_json::Value, Vec<u8>), ExitCode> {
    let (addr, runtime, cfg) = admin_of(path)?;
    let answer = runtime.block_on(tandem::mirror::sync::admin_request(
        addr,
        cfg.admin_token.as_ref(),
        method,
        route,
        body,
        timeout(&cfg),
    ));
    match answer {
        Ok((code, bytes)) => Ok((
            code,
            serde_json::from_slice(&bytes).unwrap_or_default(),
            bytes.to_vec(),
        )),
        Err(e) => {
            eprintln!("tandem {cmd}: admin API at {addr}: {e} (is Tandem running?)");
            Err(ExitCode::from(2))
        }
    }
}

/// The `error` of an admin API answer, else its body.
fn error_text(v: &serde_json::Value, bytes: &[u8]) -> String {
    v["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned())
}

fn cutover_cmd(
    path: &std::path::Path,
    to: Option<String>,
    wait: Option<std::time::Duration>,
    end_holders_after: Option<std::time::Duration>,
) -> ExitCode {
    let text =
        |d: Option<std::time::Duration>| d.map(|d| humantime::format_duration(d).to_string());
    let body = serde_json::json!({
        "to": to,
        "wait": text(wait),
        "end_holders_after": text(end_holders_after),
    })
    .to_string();
    // Preflight (connect timeouts) + the fenced part + slack.
    let timeout = move |cfg: &tandem::config::Config| {
        wait.unwrap_or(cfg.cutover_timeout)
            + cfg.limits.connect_timeout * 2
            + std::time::Duration::from_secs(30)
    };
    let (code, v, bytes) =
        match admin_call("cutover", path, "POST", "/cutover", Some(body), timeout) {
            Ok(x) => x,
            Err(code) => return code,
        };
    if code == 200 {
        let r = &v["report"];
        println!(
            "cutover done: {} is the primary, {} receives mirrored writes",
            r["to"].as_str().unwrap_or("?"),
            r["from"].as_str().unwrap_or("?")
        );
        print_phases(r);
        for s in r["ended_sessions"].as_array().into_iter().flatten() {
            println!(
                "ended after the grace period: {}",
                s.as_str().unwrap_or("?")
            );
        }
        ExitCode::SUCCESS
    } else {
        eprintln!("tandem cutover: {}", error_text(&v, &bytes));
        ExitCode::from(1)
    }
}

fn resume_cmd(path: &std::path::Path) -> ExitCode {
    let ten = |_: &tandem::config::Config| std::time::Duration::from_secs(10);
    match admin_call("resume", path, "POST", "/mirror/resume", None, ten) {
        Ok((200, _, _)) => {
            println!("applier resumed from the secondary's stored position");
            ExitCode::SUCCESS
        }
        Ok((_, v, bytes)) => {
            eprintln!("tandem resume: {}", error_text(&v, &bytes));
            ExitCode::from(1)
        }
        Err(code) => code,
    }
}

fn print_phases(r: &serde_json::Value) {
    let phases: Vec<String> = r["phases"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| format!("{} {} ms", p[0].as_str().unwrap_or("?"), p[1]))
                .collect()
        })
        .unwrap_or_default();
    println!("  phases: {}", phases.join(", "));
    let waits = if r["fenced_statements"].as_u64().unwrap_or(0) == 0 {
        "no statement waited".to_string()
    } else {
        format!(
            "{} statement(s) waited (p50 {} ms, p99 {} ms, max {} ms)",
            r["fenced_statements"],
            r["fence_wait_p50_ms"],
            r["fence_wait_p99_ms"],
            r["fence_wait_max_ms"]
        )
    };
    println!(
        "  fenced {} ms; {waits}; total {} ms",
        r["fenced_ms"], r["total_ms"]
    );
}

fn status_cmd(path: &std::path::Path, raw: bool) -> ExitCode {
    let ten = |_: &tandem::config::Config| std::time::Duration::from_secs(10);
    let v = match admin_call("status", path, "GET", "/status", None, ten) {
        Ok((200, v, _)) => v,
        Ok((c, _, _)) => {
            eprintln!("tandem status: the admin API answered HTTP {c}");
            return ExitCode::from(2);
        }
        Err(code) => return code,
    };
    if raw {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::String(t) => t.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!("primary:    {}", s(&v["primary"]));
    println!(
        "secondary:  {} (mirroring: {})",
        s(&v["secondary"]),
        s(&v["mirroring"])
    );
    let c = &v["config"];
    println!(
        "config:     version {} from {}, loaded at {} (unix)",
        s(&c["version"]),
        s(&c["source"]),
        s(&c["loaded_at_unix"])
    );
    let r = &c["last_reload"];
    if !r.is_null() {
        println!(
            "reload:     last by {} at {}: {}",
            s(&r["trigger"]),
            s(&r["at_unix"]),
            if r["ok"] == true {
                "ok".to_string()
            } else {
                format!("rejected: {}", s(&r["errors"]))
            }
        );
    }
    let m = &v["mirror"];
    if !m.is_null() {
        println!(
            "mirror:     lag {} txns / {} s, journal {} bytes, applied {}, retried {}, dead-lettered {}, dropped {}",
            s(&m["lag_transactions"]), s(&m["lag_seconds"]), s(&m["journal_bytes"]), s(&m["applied"]),
            s(&m["retried"]), s(&m["dead_lettered"]), s(&m["dropped"])
        );
        let d = &m["divergent_tables"];
        if d.as_object().is_some_and(|o| !o.is_empty()) {
            println!("divergent:  {d}");
        }
        if !m["applier_stopped"].is_null() {
            println!("APPLIER STOPPED: {}", s(&m["applier_stopped"]));
        }
    }
    let cu = &v["cutover"];
    println!(
        "cutover:    {} (fence {}, {} transaction(s) open)",
        s(&cu["state"]),
        if cu["fence_closed"] == true {
            "closed"
        } else {
            "open"
        },
        s(&cu["open_transactions"])
    );
    for h in cu["history"].as_array().into_iter().flatten().rev().take(5) {
        println!(
            "  {} -> {} by {} at {}: {}",
            s(&h["from"]),
            s(&h["to"]),
            s(&h["trigger"]),
            s(&h["started_at_unix"]),
            if h["ok"] == true {
                format!("ok, fenced {} ms", s(&h["fenced_ms"]))
            } else {
                s(&h["error"])
            }
        );
    }
    let vr = &v["verify"];
    if !vr.is_null() {
        println!(
            "verify:     identical {} (finished at {})",
            s(&vr["identical"]),
            s(&vr["finished_at_unix"])
        );
    }
    println!("clients:    {} connected", s(&v["clients"]["connected"]));
    ExitCode::SUCCESS
}

fn serve(path: PathBuf, workers: Option<usize>) -> anyhow::Result<()> {
    let cfg = tandem::config::load_for_start(&path)
        .map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", path.display()))?;
    if let Some(why) = cfg.serve_refusal() {
        anyhow::bail!("{}: {why}", path.display());
    }
    let workers = match workers {
        Some(0) => anyhow::bail!("--workers must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .div_ceil(2),
    };
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            // As the main thread's: the parsers recurse (bounded, see
            // `router::classify::MAX_JOINS`).
            .thread_stack_size(8 << 20)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = tandem::server::start(cfg)
            .await
            .context("starting (listen/admin address, or the mirror's recovery)")?;
        // SIGHUP reloads the config through the same path as file changes
        // and POST /reload.
        let shared = server.shared.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP");
                return;
            };
            while hup.recv().await.is_some() {
                let _ = tandem::reload::reload(&shared, tandem::reload::Trigger::Signal).await;
            }
        });
        shutdown_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// With the primary reachable, whether the accounts proxy users act as
/// (`backend_user`) can log in and, while mirroring, write Tandem's commit
/// markers (the GRANT to run is printed). Unreachable: said, not failed.
/// Runs one of the cluster tools on a fresh runtime; prints its answer.
fn cluster_tool<F, Fut>(config: &std::path::Path, f: F) -> ExitCode
where
    F: FnOnce(tandem::config::Config) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let cfg = match tandem::config::load_for_start(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", config.display());
            return ExitCode::from(2);
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::from(2);
    };
    match runtime.block_on(f(cfg)) {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// check-config's checks of a reachable cluster's schema.
fn check_cluster(cfg: &tandem::config::Config) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::SUCCESS;
    };
    match runtime.block_on(tandem::shard_tools::check_cluster(cfg)) {
        Ok((problems, warnings)) => {
            for w in &warnings {
                println!("  warning: {w}");
            }
            if problems.is_empty() {
                println!(
                    "  cluster {}: every table has a rule the schema agrees with",
                    cfg.primary
                );
                return ExitCode::SUCCESS;
            }
            eprintln!("  cluster {}: {} problem(s)", cfg.primary, problems.len());
            for p in problems {
                eprintln!("  - {p}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("  (cluster schema not checked: {e})");
            ExitCode::SUCCESS
        }
    }
}

fn check_accounts(cfg: &tandem::config::Config) -> ExitCode {
    if cfg.accounts.is_empty() {
        return ExitCode::SUCCESS;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::SUCCESS;
    };
    let primary = cfg.primary_backend();
    let problems = runtime.block_on(async {
        let addr = (primary.host.as_str(), primary.port);
        let reachable = tokio::time::timeout(
            cfg.limits.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !reachable {
            return None;
        }
        Some(tandem::backend::accounts::check_primary(cfg).await)
    });
    match problems {
        None => {
            println!(
                "  (backend accounts not checked: the primary {} is not reachable)",
                primary.name
            );
            ExitCode::SUCCESS
        }
        Some(p) if p.is_empty() => ExitCode::SUCCESS,
        Some(p) => {
            eprintln!("backend accounts: {} problem(s)", p.len());
            for e in &p {
                eprintln!("  - {e}");
            }
            ExitCode::FAILURE
        }
    }
}
