//! The `eventstash` command: `run`, `validate` and `healthcheck`.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eventstash::app::{self, RunOutcome};
use eventstash::config::{self, LogFormat};
use eventstash::healthcheck;
use tracing::level_filters::LevelFilter;

/// A fast, reliable event forwarding agent: gRPC in (the HFXEventStash
/// protocol), files, Elasticsearch and DynamoDB out.
#[derive(Debug, Parser)]
#[command(name = "eventstash", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the pipelines until SIGTERM/SIGINT, then drains them.
    Run {
        /// Pipeline files or glob patterns; each file is one pipeline.
        #[arg(short = 'c', long = "config", num_args = 1.., default_value = "pipelines/default.toml")]
        config: Vec<String>,
    },
    /// Checks pipeline files without starting anything.
    Validate {
        /// Pipeline files or glob patterns.
        #[arg(short = 'c', long = "config", num_args = 1.., default_value = "pipelines/default.toml")]
        config: Vec<String>,
    },
    /// Looks at persisted queues on disk.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Exits 0 when the agent at ADDR reports SERVING, 1 otherwise.
    Healthcheck {
        /// The agent's gRPC address.
        #[arg(long, env = "EVENTSTASH_RPC_URI", default_value = "127.0.0.1:42043")]
        addr: String,
        /// How long to wait for an answer, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Prints depth, bytes and per-output positions of the pipelines'
    /// persisted queues, without changing them (safe while the agent runs).
    Inspect {
        /// Pipeline files or glob patterns.
        #[arg(short = 'c', long = "config", num_args = 1.., default_value = "pipelines/default.toml")]
        config: Vec<String>,
    },
}

/// Config errors exit with 2, runtime failures with 1.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run { config } => {
            let pipelines = match config::expand_paths(&config).and_then(|files| config::load_all(&files)) {
                Ok(pipelines) => pipelines,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            init_logging(pipelines.iter().find_map(|p| p.log_format));
            let code = match runtime.block_on(app::run(pipelines)) {
                Ok(RunOutcome::Drained) => 0,
                Ok(RunOutcome::InputFailed | RunOutcome::Unfinished) => 1,
                Ok(RunOutcome::QueueInUse) => i32::from(EXIT_CONFIG),
                Err(error) => {
                    eprintln!("error: cannot install signal handlers: {error}");
                    1
                }
            };
            // Leave without waiting for tasks a timed-out drain left behind.
            std::process::exit(code);
        }
        Command::Validate { config } => {
            init_logging(None);
            match config::expand_paths(&config).and_then(|files| config::load_all(&files)) {
                Ok(pipelines) => {
                    for p in pipelines {
                        println!(
                            "ok: {} (pipeline {:?}: {} input(s), {} filter(s), {} output(s))",
                            p.file.display(),
                            p.id,
                            p.inputs.len(),
                            p.filters.len(),
                            p.outputs.len()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Queue {
            command: QueueCommand::Inspect { config },
        } => {
            init_logging(None);
            let pipelines = match config::expand_paths(&config).and_then(|files| config::load_all(&files)) {
                Ok(pipelines) => pipelines,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mut code = ExitCode::SUCCESS;
            for pipeline in &pipelines {
                match eventstash::inspect_queue(pipeline) {
                    Ok(Some(report)) => print!("{report}"),
                    Ok(None) => println!("pipeline {:?}: memory queue, nothing on disk", pipeline.id),
                    Err(error) => {
                        eprintln!("error: {error}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
            code
        }
        Command::Healthcheck { addr, timeout_ms } => {
            init_logging(None);
            match runtime.block_on(healthcheck::check(&addr, Duration::from_millis(timeout_ms))) {
                Ok(status) => {
                    println!("{addr}: {}", status.as_str_name());
                    if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs go to stderr (stdout belongs to the stdout output), at `LOG_LEVEL`
/// (error, warn, info, debug, trace; default info), as text or JSON: the
/// pipeline's `log_format`, else `LOG_FORMAT`, else text.
fn init_logging(format: Option<LogFormat>) {
    let level = std::env::var("LOG_LEVEL")
        .ok()
        .and_then(|level| level.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let format = format.unwrap_or_else(|| match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Text,
    });
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
