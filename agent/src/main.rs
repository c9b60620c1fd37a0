use nodediag::config::{self, AgentArgs, Command};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// How long exit waits for blocking threads still running: well inside the pod's
/// terminationGracePeriodSeconds (10).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

fn init_tracing(args: &AgentArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// glibc gives threads that allocate at once arenas of their own, up to eight per core,
/// and the collectors' short-lived blocking threads leave freed memory spread over all
/// of them. Two arenas: at 500 pods the agent's RSS went from 37.7 to 26.8 MiB at the
/// default interval (benches/scale.sh, the same quiet machine within the hour; at
/// `--interval 1s` the rule window itself dominates, 144 MiB either way).
/// `MALLOC_ARENA_MAX` set by the user wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; called before any thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
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
            init_tracing(&args.agent);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
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
