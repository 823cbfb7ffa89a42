//! `weir`: the command line. It parses arguments, builds the pieces from the
//! library crates, prints, and maps errors to exit codes (0 success, 1 the
//! pipeline ran and failed, 2 usage or configuration error). No business logic
//! lives here; only this crate knows clap.

/// `println!` that ignores a closed stdout (`weir … | head`): the work goes on
/// to the end and only the output stops, where `println!` would panic. Every
/// message goes through `weir_config::scrub`, whatever built it (a task's
/// error may quote a command line with a URL in it). Query results are not
/// messages: they are written as they are.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        let _ = writeln!(std::io::stdout().lock(), "{}", weir_config::scrub(&line));
    }};
}

mod demo;
mod extract;
mod lake;
mod load;
mod orchestrate;
mod progress;
mod source;
mod transform;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "PostgreSQL → lake → warehouse → models, in one binary"
)]
struct Cli {
    /// Log filter (`warn`, `info`, `debug`, or a tracing filter); also WEIR_LOG.
    #[arg(long, global = true, env = "WEIR_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sample Olist data in a private PostgreSQL, extracted to the lake, with timings.
    Demo(demo::DemoArgs),
    /// Extract PostgreSQL tables to the lake (Parquet or NDJSON) from one snapshot.
    Extract(extract::ExtractArgs),
    /// Load an extract run from the lake into the warehouse's raw schema.
    Load(load::LoadArgs),
    /// Run SQL on the project's warehouse and print the result.
    Query(load::QueryArgs),
    /// Run a dbt-compatible SQL project: run, test, build, compile, seed, ls.
    Transform {
        #[command(subcommand)]
        command: transform::TransformCommand,
    },
    /// Run the whole pipeline once as a DAG (resuming an unfinished run), with progress.
    Run(orchestrate::RunArgs),
    /// The scheduler: runs the pipeline on `orchestrate.schedule` until stopped.
    Up(orchestrate::UpArgs),
    /// Run tasks of the project's runs from a shared PostgreSQL metadata store.
    Worker(orchestrate::WorkerArgs),
    /// The pipeline's run history, newest first.
    Runs(orchestrate::RunsArgs),
    /// The logs of a run's attempts.
    Logs(orchestrate::LogsArgs),
    /// Run a finished run's failed and skipped tasks again.
    Retry(orchestrate::RetryArgs),
    /// Run the schedule's intervals between two dates.
    Backfill(orchestrate::BackfillArgs),
    /// Look after the lake: `weir lake gc` removes old runs.
    Lake {
        #[command(subcommand)]
        command: lake::LakeCommand,
    },
    /// Who may sign in to the web UI: add, passwd, remove, list.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Bearer tokens for the web UI's API: create, list, revoke.
    Tokens {
        #[command(subcommand)]
        command: users::TokensCommand,
    },
    /// Put data into a PostgreSQL source: generated Olist data or CSV files.
    Source {
        #[command(subcommand)]
        command: source::SourceCommand,
    },
}

/// Standard error for logs, with every secret the process knows hidden
/// (tracing formats each event whole, then writes it once).
struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(weir_config::scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// An error with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

/// A usage or configuration error (exit code 2).
pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        error: error.into(),
    }
}

/// Resolve `-p DIR` (default: the current folder).
pub fn project_dir(p: &Option<PathBuf>) -> PathBuf {
    p.clone().unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        // Colour only for a person at a terminal, never into files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| ScrubbedStderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Extract(args) => extract::run(args).await,
            Command::Source { command } => source::run(command).await,
            Command::Lake { command } => lake::run(command).await,
            Command::Load(args) => load::run(args).await,
            Command::Query(args) => load::query(args).await,
            Command::Transform { command } => transform::run(command).await,
            Command::Run(args) => orchestrate::run(args).await,
            Command::Up(args) => orchestrate::up(args).await,
            Command::Worker(args) => orchestrate::worker(args).await,
            Command::Runs(args) => orchestrate::runs(args).await,
            Command::Logs(args) => orchestrate::logs(args).await,
            Command::Retry(args) => orchestrate::retry(args).await,
            Command::Backfill(args) => orchestrate::backfill(args).await,
            Command::Users { command } => users::users(command).await,
            Command::Tokens { command } => users::tokens(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // A closed stdout (e.g. `| head`) is not a failure.
            if f.error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", weir_config::scrub(&format!("{:#}", f.error)));
            ExitCode::from(f.code)
        }
    }
}
