//! The `eventstash` command: `run`, `validate`, `healthcheck`, `token`, and
//! `read` and `replay` for the event store.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eventstash::app::{self, RunOutcome};
use eventstash::config::{self, LogFormat};
use eventstash::healthcheck;
use eventstash::store_cli;
use eventstash_plugin_api::ReplaySelector;
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
    /// Prints one aggregate's change sets, oldest first, as JSON lines
    /// (read straight from the pipeline's event store; no agent needed).
    Read {
        /// A pipeline file or glob pattern (repeat `-c` for several).
        #[arg(
            short = 'c',
            long = "config",
            num_args = 1,
            default_value = "pipelines/event-store.toml"
        )]
        config: Vec<String>,
        /// The `[[event_stores]]` id; default: the only one.
        #[arg(long)]
        store: Option<String>,
        /// The first version to print.
        #[arg(long, default_value_t = 1)]
        from_version: u64,
        /// The aggregate.
        aggregate_id: String,
    },
    /// Prints stored events in time order as JSON lines, each with the
    /// cursor that resumes after it (read straight from the store).
    Replay {
        /// Pipeline files or glob patterns.
        #[arg(short = 'c', long = "config", num_args = 1.., default_value = "pipelines/event-store.toml")]
        config: Vec<String>,
        /// The event store or output id to read; default: the only one that can replay.
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        selector: ReplaySelectorArgs,
        /// RFC 3339; the first instant included.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339; the first instant excluded.
        #[arg(long)]
        until: Option<String>,
        /// Resume after the event this cursor came with.
        #[arg(long)]
        cursor: Option<String>,
        /// Events fetched per request to the store.
        #[arg(long, default_value_t = 500)]
        page_size: usize,
        /// Stop after this many events (the last cursor resumes).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Exits 0 when the agent at ADDR reports SERVING, 1 otherwise.
    Healthcheck {
        /// The agent's gRPC address.
        #[arg(long, env = "EVENTSTASH_RPC_URI", default_value = "127.0.0.1:42043")]
        addr: String,
        /// How long to wait for an answer, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        /// Connect with TLS, trusting the CA in this PEM file.
        #[arg(long, env = "EVENTSTASH_TLS_CA")]
        tls_ca: Option<std::path::PathBuf>,
        /// Client certificate (PEM) for mutual TLS; needs --tls-key and --tls-ca.
        #[arg(long, env = "EVENTSTASH_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
        tls_cert: Option<std::path::PathBuf>,
        /// Client key (PEM) for mutual TLS.
        #[arg(long, env = "EVENTSTASH_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// The name the agent's certificate must carry (default: the host of --addr).
        #[arg(long, env = "EVENTSTASH_TLS_DOMAIN", requires = "tls_ca")]
        tls_domain: Option<String>,
    },
    /// Producer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Reads a token from stdin and prints its SHA-256, the `token_sha256`
    /// of a `[[producers]]` entry in the gRPC input's tokens file.
    Hash,
}

/// Which events `replay` prints: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct ReplaySelectorArgs {
    /// Events of this kind (Elasticsearch, the DynamoDB event table).
    #[arg(long)]
    kind: Option<String>,
    /// Change sets of this aggregate type (the event store).
    #[arg(long)]
    aggregate_type: Option<String>,
    /// Events of this `Source` (the DynamoDB event table).
    #[arg(long)]
    event_source: Option<String>,
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
    let outcome = match cli.command {
        Command::Run { config } => run(&runtime, &config),
        Command::Validate { config } => validate(&runtime, &config),
        Command::Queue {
            command: QueueCommand::Inspect { config },
        } => inspect_queues(&config),
        Command::Read {
            config,
            store,
            from_version,
            aggregate_id,
        } => read(&runtime, &config, store.as_deref(), from_version, &aggregate_id),
        Command::Replay {
            config,
            source,
            selector,
            from,
            until,
            cursor,
            page_size,
            limit,
        } => {
            let request = store_cli::ReplayArgs {
                selector: selector.into(),
                from,
                until,
                cursor,
                page_size,
                limit,
            };
            replay(&runtime, &config, source.as_deref(), request)
        }
        Command::Healthcheck {
            addr,
            timeout_ms,
            tls_ca,
            tls_cert,
            tls_key,
            tls_domain,
        } => {
            let tls = tls_ca.map(|ca_file| healthcheck::HealthcheckTls {
                ca_file,
                client: tls_cert.zip(tls_key),
                domain: tls_domain,
            });
            healthcheck(&runtime, &addr, Duration::from_millis(timeout_ms), tls.as_ref())
        }
        Command::Token {
            command: TokenCommand::Hash,
        } => token_hash(),
    };
    outcome.unwrap_or_else(|code| code)
}

/// What a command ends with: `Err` carries the exit code of a failure
/// already reported on stderr.
type Outcome = Result<ExitCode, ExitCode>;

/// `run`: loads the pipelines, runs them until a signal, exits with the
/// drain's outcome.
fn run(runtime: &tokio::runtime::Runtime, patterns: &[String]) -> Outcome {
    // Before the plugins are built: they take their counters then.
    eventstash::install_metrics_recorder();
    let pipelines = load_pipelines(patterns)?;
    init_logging(pipelines.iter().find_map(|p| p.log_format));
    let code = match runtime.block_on(app::run(pipelines)) {
        Ok(RunOutcome::Drained) => 0,
        Ok(RunOutcome::InputFailed | RunOutcome::Unfinished) => 1,
        Ok(RunOutcome::ConfigConflict) => i32::from(EXIT_CONFIG),
        Err(error) => {
            eprintln!("error: cannot install signal handlers: {error}");
            1
        }
    };
    // Leave without waiting for tasks a timed-out drain left behind.
    std::process::exit(code);
}

/// `validate`: loads the pipelines, asks the plugins' remote sides, and
/// prints one line per file.
fn validate(runtime: &tokio::runtime::Runtime, patterns: &[String]) -> Outcome {
    init_logging(None);
    let pipelines = load_pipelines(patterns)?;
    runtime.block_on(check_remotes(&pipelines)).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
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
    Ok(ExitCode::SUCCESS)
}

/// `queue inspect`: prints each pipeline's persisted queue.
fn inspect_queues(patterns: &[String]) -> Outcome {
    init_logging(None);
    let pipelines = load_pipelines(patterns)?;
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
    Ok(code)
}

/// `read`: prints one aggregate's change sets.
fn read(
    runtime: &tokio::runtime::Runtime,
    patterns: &[String],
    store: Option<&str>,
    from_version: u64,
    aggregate_id: &str,
) -> Outcome {
    init_logging(None);
    let pipelines = load_pipelines(patterns)?;
    let stores = pipelines.iter().flat_map(|p| p.event_stores.iter().cloned()).collect();
    let store = pick("event store", stores, store)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let change_sets = runtime
        .block_on(store_cli::read(store, aggregate_id, from_version, &mut out))
        .map_err(|error| cli_failure(&error))?;
    eprintln!("{change_sets} change set(s) of {aggregate_id:?}");
    Ok(ExitCode::SUCCESS)
}

/// `replay`: prints stored events in time order.
fn replay(
    runtime: &tokio::runtime::Runtime,
    patterns: &[String],
    source: Option<&str>,
    request: store_cli::ReplayArgs,
) -> Outcome {
    init_logging(None);
    let pipelines = load_pipelines(patterns)?;
    let sources = pipelines
        .iter()
        .flat_map(|p| p.replay_sources.iter().cloned())
        .collect();
    let source = pick("replay source", sources, source)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let summary = runtime
        .block_on(store_cli::replay(source, request, &mut out))
        .map_err(|error| cli_failure(&error))?;
    let state = if summary.complete {
        "complete"
    } else {
        "stopped at --limit"
    };
    eprintln!("{} event(s), {state}", summary.events);
    if let Some(cursor) = summary.last_cursor {
        eprintln!("resume after the last one with --cursor {cursor}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `healthcheck`: 0 when the agent says SERVING.
fn healthcheck(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    timeout: Duration,
    tls: Option<&healthcheck::HealthcheckTls>,
) -> Outcome {
    init_logging(None);
    let status = runtime
        .block_on(healthcheck::check(addr, timeout, tls))
        .map_err(|error| {
            eprintln!("{error}");
            ExitCode::FAILURE
        })?;
    println!("{addr}: {}", status.as_str_name());
    if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// `token hash`: the SHA-256 of the token on stdin.
fn token_hash() -> Outcome {
    let token = read_token(std::io::stdin().lock()).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    println!("{}", eventstash::producer_token_sha256(&token));
    Ok(ExitCode::SUCCESS)
}

impl From<ReplaySelectorArgs> for ReplaySelector {
    fn from(args: ReplaySelectorArgs) -> ReplaySelector {
        match args {
            ReplaySelectorArgs { kind: Some(kind), .. } => ReplaySelector::Kind(kind),
            ReplaySelectorArgs {
                aggregate_type: Some(kind),
                ..
            } => ReplaySelector::AggregateType(kind),
            ReplaySelectorArgs {
                event_source: Some(name),
                ..
            } => ReplaySelector::Source(name),
            _ => unreachable!("clap requires one selector"),
        }
    }
}

/// The token on stdin: one line, its line break not part of it.
fn read_token(mut input: impl std::io::Read) -> Result<String, String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read the token from stdin: {error}"))?;
    let token = text.strip_suffix('\n').unwrap_or(&text);
    let token = token.strip_suffix('\r').unwrap_or(token);
    if token.is_empty() {
        return Err("no token on stdin: pipe it in, e.g. `printf %s \"$TOKEN\" | eventstash token hash`".to_owned());
    }
    if token.contains(['\n', '\r']) {
        return Err("the token spans several lines; give one token on one line".to_owned());
    }
    Ok(token.to_owned())
}

/// Reports a failed `read` or `replay`: usage errors exit 2, the rest 1.
fn cli_failure(error: &store_cli::StoreCliError) -> ExitCode {
    eprintln!("error: {error}");
    match error {
        store_cli::StoreCliError::Usage(_) => ExitCode::from(EXIT_CONFIG),
        _ => ExitCode::FAILURE,
    }
}

/// Loads the pipeline files, or says why not and exits 2.
fn load_pipelines(patterns: &[String]) -> Result<Vec<config::PipelineConfig>, ExitCode> {
    config::expand_paths(patterns)
        .and_then(|files| config::load_all(&files))
        .map_err(|error| {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_CONFIG)
        })
}

/// How long `validate` waits for one plugin's remote check.
const REMOTE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks each plugin what only its remote side can tell (a queue that must
/// exist). A plugin that could not ask is noted on stderr, not an error.
async fn check_remotes(pipelines: &[config::PipelineConfig]) -> Result<(), String> {
    for p in pipelines {
        let inputs = p.inputs.iter().map(|input| (&input.id, input.input.check()));
        let outputs = p.outputs.iter().map(|output| (&output.id, output.output.check()));
        let checks: Vec<_> = inputs.chain(outputs).collect();
        for (id, check) in checks {
            let place = format!("{}: {id}", p.file.display());
            match tokio::time::timeout(REMOTE_CHECK_TIMEOUT, check).await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(note))) => eprintln!("warning: {place}: {note}"),
                Ok(Err(error)) => return Err(format!("{place}: {error}")),
                Err(_) => eprintln!("warning: {place}: no answer within {REMOTE_CHECK_TIMEOUT:?}; not checked"),
            }
        }
    }
    Ok(())
}

/// The store named `id`, or the only one; says what is wrong otherwise
/// (exit 2).
fn pick<T>(what: &str, mut found: Vec<(String, T)>, id: Option<&str>) -> Result<T, ExitCode> {
    let position = match id {
        Some(id) => found.iter().position(|(name, _)| name == id),
        None if found.len() == 1 => Some(0),
        None => None,
    };
    if let Some(position) = position {
        return Ok(found.swap_remove(position).1);
    }
    let ids = found.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>();
    let known = if ids.is_empty() {
        "none in these pipeline files".to_owned()
    } else {
        ids.join(", ")
    };
    match id {
        Some(id) => eprintln!("error: no {what} {id:?} (known: {known})"),
        None => eprintln!("error: name the {what} to use with its id (known: {known})"),
    }
    Err(ExitCode::from(EXIT_CONFIG))
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
