use nodediag::config::{self, AgentArgs, Command};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// How long exit waits for blocking threads still running: well inside the pod's
/// terminationGracePeriodSeconds (10).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// How long an idle blocking thread is kept: past the default interval (15 s), so a
/// round's collections run on the threads the last round left rather than on new
/// ones (tokio's default, 10 s, ended them all between two rounds).
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Async workers at most. They serve encodings made ahead and wait for collections,
/// which run on blocking threads; two keep `/healthz` answering beside a scrape that
/// encodes for itself. tokio's default is one per CPU the process may use: one under
/// the DaemonSet's 500m limit, but 96 on a 96-CPU node without a limit. 96 workers
/// (`TOKIO_WORKER_THREADS`) held 1.4 MiB more RSS than two at 500 pods (13.4 against
/// 12.0) and saved no CPU. `TOKIO_WORKER_THREADS`, tokio's own setting, still wins.
const MAX_WORKERS: usize = 2;
const WORKERS_ENV: &str = "TOKIO_WORKER_THREADS";

fn init_tracing(args: &AgentArgs) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(args.log_level.clone())
        .init();
}

fn main() -> ExitCode {
    nodediag::memory::limit_arenas();
    let cli = match config::load(std::env::args_os()) {
        Ok(cli) => cli,
        Err(config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("nodediag: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let not_reexecuted = nodediag::memory::exec_without_thread_caches();
            init_tracing(&args.agent);
            if let Some(e) = not_reexecuted {
                tracing::warn!(error = %e, "glibc's per-thread malloc caches stay on: executing nodediag again with {} failed", nodediag::memory::NO_THREAD_CACHES);
            }
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if std::env::var_os(WORKERS_ENV).is_none() {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                runtime.worker_threads(cpus.min(MAX_WORKERS));
            }
            let runtime = runtime
                .enable_all()
                .thread_keep_alive(BLOCKING_KEEP_ALIVE)
                .build()
                .expect("tokio runtime");
            let result = runtime.block_on(nodediag::agent::serve(args));
            // A collector blocked in a read that never returns (a hung NFS mount, a
            // FIFO in place of a kernel file) holds a blocking thread: exit without it.
            runtime.shutdown_timeout(SHUTDOWN_WAIT);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nodediag: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check(args) => {
            init_tracing(&args.agent);
            ExitCode::from(nodediag::agent::check(args) as u8)
        }
    }
}
