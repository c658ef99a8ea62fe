//! The `tandem` binary: parses the command line and wires the library up.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
        /// at less CPU per query than two (see README, Performance).
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
        Command::CheckConfig { config } => match tandem::config::load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok (primary {}, {} backends, {} table rules)",
                    config.display(),
                    cfg.primary,
                    cfg.backends.len(),
                    cfg.rules.tables.len()
                );
                std::process::ExitCode::SUCCESS
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
        } => verify(config, tables, repair, json, chunk_size),
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
    let cfg = tandem::config::load(path).map_err(|e| {
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

fn backfill(path: PathBuf, opts: tandem::backfill::BackfillOptions) -> std::process::ExitCode {
    use std::process::ExitCode;
    let (cfg, runtime) = match offline_setup(&path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let sync = tandem::mirror::sync::MirrorSync::discover(&cfg).await;
        tandem::backfill::run(&cfg, &opts, &sync).await
    });
    match result {
        Ok(summaries) => {
            print!("{}", tandem::backfill::render(&summaries));
            if summaries.iter().any(|s| s.error.is_some()) {
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
        ..Default::default()
    };
    let result = runtime.block_on(async {
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

fn serve(path: PathBuf, workers: Option<usize>) -> anyhow::Result<()> {
    let cfg = tandem::config::load(&path)
        .map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", path.display()))?;
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
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = tandem::frontend::start(cfg)
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
