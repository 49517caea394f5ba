//! The command line: parses arguments and calls the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orta_gateway::config::{self, LogSettings};

#[derive(Parser)]
#[command(
    name = "orta-gateway",
    version,
    about = "An edge gateway that replaces nginx and certbot in one binary"
)]
struct Cli {
    /// Config file
    #[arg(long, short, global = true, env = "ORTA_GATEWAY_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default)
    Run,
    /// Validate the config: prints `ok`, or every problem as FILE:LINE:COL: message
    Check,
    /// List the managed certificates
    Certs,
    /// Ask a running gateway whether it serves: GET the admin listener's `/healthz` (or `--url`);
    /// exit 0 on a 200 answer (its body printed), 1 otherwise. For container health checks.
    Health {
        /// Ask this plain-HTTP URL instead, e.g. http://127.0.0.1:8001/api/health
        #[arg(long)]
        url: Option<String>,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Translate an nginx configuration into a gateway.toml; what is not translated is
    /// reported as FILE:LINE on stderr (exit 1 if the result would not pass `check`)
    ImportNginx {
        /// The nginx configuration (its includes are followed)
        file: PathBuf,
        /// Write the gateway.toml here instead of standard output
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Run one replica of the bundled API alone
    Api {
        /// Address to listen on, e.g. 127.0.0.1:8001
        #[arg(long)]
        listen: SocketAddr,
        /// SQLite database file (default data/orta.db)
        #[arg(long)]
        database: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&cli.config),
        Command::Run => run(&cli.config),
        Command::Certs => certs(&cli.config),
        Command::Health { url, timeout } => health(&cli.config, url, timeout),
        Command::ImportNginx { file, output } => import_nginx(&file, output.as_deref()),
        Command::Api { listen, database } => {
            orta_gateway::telemetry::init(&LogSettings::default());
            let database = database.unwrap_or_else(|| PathBuf::from(orta_gateway::api::DEFAULT_DATABASE));
            finish(runtime(0).and_then(|rt| rt.block_on(orta_gateway::api::run_standalone(listen, &database))))
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            for w in loaded.warnings.warning_lines() {
                eprintln!("{w}");
            }
            // `[cluster]`: Redis must accept the credentials (an unreachable one is a warning)
            if loaded.config.cluster.is_some() {
                let probed = runtime(1).and_then(|rt| rt.block_on(orta_gateway::server::probe_cluster(&loaded.config)));
                match probed {
                    Err(e) => {
                        println!("{e}");
                        return ExitCode::FAILURE;
                    }
                    Ok(Some(warning)) => eprintln!("{warning}"),
                    Ok(None) => {}
                }
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for w in diags.warning_lines() {
                eprintln!("{w}");
            }
            for e in diags.error_lines() {
                println!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(diags) => {
            for e in diags.error_lines() {
                eprintln!("{e}");
            }
            eprintln!("orta-gateway: not started: fix the config (`orta-gateway check` lists the same problems)");
            return ExitCode::FAILURE;
        }
    };
    orta_gateway::telemetry::init(&loaded.config.log);
    for w in loaded.warnings.warning_lines() {
        tracing_warn(&w);
    }
    let workers = loaded.config.server.workers;
    finish(runtime(workers).and_then(|rt| {
        rt.block_on(orta_gateway::server::run(
            path.to_path_buf(),
            loaded,
            Some(orta_gateway::api::bundled()),
        ))
    }))
}

fn certs(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            // with `[cluster]`, the certificate the cluster keeps in Redis
            let shared = match (&loaded.config.cluster, &loaded.config.tls.source) {
                (Some(c), config::CertSource::Acme(a)) => {
                    Some(runtime(1).and_then(|rt| rt.block_on(orta_gateway::tls::acme::shared::fetch(c, a))))
                }
                _ => None,
            };
            for cert in orta_gateway::tls::certs_report(&loaded.config, shared) {
                println!("{cert}");
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for e in diags.error_lines() {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn health(path: &Path, url: Option<String>, timeout: u64) -> ExitCode {
    let url = match url {
        Some(url) => url,
        None => match config::load(path) {
            Ok(loaded) => match loaded.config.admin.listen {
                Some(addr) => orta_gateway::health::admin_url(addr),
                None => {
                    eprintln!(
                        "orta-gateway health: {}: no [admin] listener to ask (or give --url)",
                        path.display()
                    );
                    return ExitCode::FAILURE;
                }
            },
            Err(diags) => {
                for e in diags.error_lines() {
                    eprintln!("{e}");
                }
                return ExitCode::FAILURE;
            }
        },
    };
    let timeout = std::time::Duration::from_secs(timeout.max(1));
    match runtime(1).and_then(|rt| rt.block_on(orta_gateway::health::probe(&url, timeout))) {
        Ok(body) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&body);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orta-gateway health: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import_nginx(file: &Path, output: Option<&Path>) -> ExitCode {
    let imported = match orta_gateway::import::import(file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for r in &imported.reports {
        eprintln!("{r}");
    }
    eprintln!(
        "{} directives translated, {} reported",
        imported.translated,
        imported.reports.len()
    );
    // checked as `check` would, against the files it names, relative to the working directory
    let shown = output.unwrap_or(Path::new("gateway.toml"));
    let checked = config::parse(shown, &imported.toml);
    let written = match output {
        Some(path) => std::fs::write(path, &imported.toml).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            print!("{}", imported.toml);
            Ok(())
        }
    };
    if let Err(e) = written {
        eprintln!("orta-gateway import-nginx: {e}");
        return ExitCode::FAILURE;
    }
    match checked {
        Ok(_) => ExitCode::SUCCESS,
        Err(diags) => {
            for e in diags.error_lines() {
                eprintln!("{e}");
            }
            eprintln!("orta-gateway import-nginx: the result does not pass `check` yet: fix the lines above");
            ExitCode::FAILURE
        }
    }
}

fn tracing_warn(line: &str) {
    orta_gateway::telemetry::warn(line);
}

/// The async runtime: `workers` threads (0 = one per core, or TOKIO_WORKER_THREADS). With one
/// worker, a single-threaded scheduler: no work-stealing bookkeeping on the hot path. Blocking
/// work (file cache misses, SQLite, name resolution) gets at most `4 × workers` threads, 16 at
/// least: tokio's default of 512 let a burst of cache misses start hundreds of threads, each
/// with its own stack and allocator heap (peak RSS 160 MB instead of 15).
fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, String> {
    let from_env = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let n = match workers {
        0 => from_env.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        n => n,
    };
    let mut b = if n == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(n);
        b
    };
    b.max_blocking_threads((4 * n).max(16))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn finish(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orta-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
