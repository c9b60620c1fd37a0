//! CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`: user plus system), and
//! the CPU of helper threads a collection starts and joins, charged to the thread that
//! joined them. The scheduler reads both around a collection, so a collector's cost
//! counts every thread it used, not only the one it ran on.

use nix::time::{clock_gettime, ClockId};
use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static CHARGED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// CPU the calling thread has used since it started.
pub fn thread_cpu() -> Duration {
    match clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(t) => Duration::new(
            t.tv_sec().max(0) as u64,
            t.tv_nsec().clamp(0, 999_999_999) as u32,
        ),
        Err(_) => Duration::ZERO,
    }
}

/// Adds a joined helper thread's CPU to the calling thread's account.
pub fn charge(cpu: Duration) {
    CHARGED.with(|c| c.set(c.get() + cpu));
}

/// The helper CPU charged to the calling thread since the last call; resets it.
pub fn take_charged() -> Duration {
    CHARGED.with(|c| c.replace(Duration::ZERO))
}

/// Runs `f` on a new thread named `name`, waits for it, and charges its CPU to the
/// calling thread. For work that must not run on the caller's thread (entering a
/// namespace changes the thread that does it).
pub fn run_charged<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (value, cpu) = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let value = f();
            (value, thread_cpu())
        })?
        .join()
        .map_err(|_| std::io::Error::other(format!("the {name} thread panicked")))?;
    charge(cpu);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let start = thread_cpu();
        while thread_cpu() - start < d {
            std::hint::black_box(0u64.wrapping_add(1));
        }
    }

    #[test]
    fn a_helper_threads_cpu_is_charged_to_its_caller() {
        take_charged();
        let before = thread_cpu();
        let got = run_charged("cpu-test", || {
            spin(Duration::from_millis(30));
            7
        })
        .unwrap();
        assert_eq!(got, 7);
        let own = thread_cpu() - before;
        let charged = take_charged();
        assert!(charged >= Duration::from_millis(30), "{charged:?}");
        assert!(own < charged, "the caller waited, it did not spin: {own:?}");
        assert_eq!(take_charged(), Duration::ZERO, "taken once");
    }

    #[test]
    fn a_panicking_helper_is_an_error_naming_it() {
        let e: std::io::Result<()> = run_charged("cpu-panics", || panic!("boom"));
        assert!(e.unwrap_err().to_string().contains("cpu-panics"));
    }
}
