//! glibc's allocator, tuned for a long-running agent whose work comes in rounds: a
//! round allocates its samples on short-lived threads and frees the last round's,
//! and glibc keeps what was freed unless told to give it back.

/// glibc gives threads that allocate at once arenas of their own, up to eight per
/// core, and the collectors' short-lived blocking threads leave freed memory spread
/// over all of them. Two arenas took the RSS at 500 pods from 37.7 to 26.8 MiB at
/// the default interval (benches/scale.sh, the same quiet machine within the hour);
/// one arena, once the trim after each round was in, took anonymous memory down
/// another 0.3 to 0.6 MiB at 15 s and 0.8 MiB at 1 s (two agents side by side on 500
/// held pods, twice, swapping places), with the same CPU a second and no worse
/// /metrics latency: the per-thread caches serve most allocations without the
/// arena's lock. `MALLOC_ARENA_MAX` set by the user wins. Call before any thread
/// exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; called before any thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// glibc also keeps, per thread, a cache of the chunks that thread freed (tcache: up
/// to 7 of each size up to 1 KiB), in front of the arena. What sits there is neither
/// free to `malloc_trim` nor merged with its neighbours, and the collectors run on a
/// dozen blocking threads that live across rounds, each keeping its cache full of
/// the last round's sizes. Without the caches the RSS at 500 pods fell from 21.0/21.5
/// to 18.2/18.0 MiB at `--interval 1s` and from 14.7/14.9 to 13.5/13.5 MiB at the
/// default interval (agents side by side, rule windows full, twice swapping places),
/// at the same CPU: one arena and few allocations a round leave the cache little to
/// save.
/// glibc reads the setting only from `GLIBC_TUNABLES` when a process starts, so
/// `serve` adds it to the tunables and executes itself again, once, before any
/// thread exists. A `tcache_count` the user set wins, as `MALLOC_ARENA_MAX` does.
/// Returns only if it did not execute: the setting was there already (None), or the
/// exec failed (the error).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn exec_without_thread_caches() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let tunables = match std::env::var(TUNABLES) {
        Ok(t) if t.contains(TCACHE_COUNT) => return None,
        Ok(t) if !t.is_empty() => format!("{t}:{NO_THREAD_CACHES}"),
        Ok(_) | Err(std::env::VarError::NotPresent) => NO_THREAD_CACHES.to_string(),
        // Not ours to rewrite.
        Err(std::env::VarError::NotUnicode(_)) => return None,
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // The running image itself, whatever its path now (replaced, or reached through
    // a symlink); the process keeps its pid.
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(TUNABLES, tunables)
        .exec();
    Some(error)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TUNABLES: &str = "GLIBC_TUNABLES";
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TCACHE_COUNT: &str = "glibc.malloc.tcache_count=";
/// The tunable `serve` runs with, unless the user set the count.
pub const NO_THREAD_CACHES: &str = "glibc.malloc.tcache_count=0";

/// Hands the pages the allocator holds free back to the kernel. After each round
/// (the last round's samples freed, the new ones in place) this took the RSS at 500
/// pods, rule window full, from 24.7 to 19.6 MiB at the default interval and from
/// 35.9 to 32.2 MiB at `--interval 1s` (four agents side by side on the same node),
/// for about a millisecond a round (1.25 ms on average over 41 calls, loaded).
/// With one arena and no thread caches it is still worth 0.9 MiB at 500 pods (11.3
/// against 12.2 MiB at the default interval) and costs no CPU that shows: two agents
/// side by side on 500 held pods, one skipping it, 300 s twice swapping places, took
/// 23.8 ms a round with it and 24.0 without, on average (the first place costing
/// about 0.65 ms more either way).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn return_free_pages() {
    // SAFETY: malloc_trim only releases free pages of the allocator's own arenas.
    unsafe { libc::malloc_trim(0) };
}

/// tokio's scheduler calls `pow` (for its average task poll time), and glibc keeps
/// `pow` in libm: the one function nodediag took from it. Loading libm left about
/// 0.5 MiB of it resident (524 KB at 500 pods: relocating it at start touches pages
/// all over it) for that one function. Defined here, from the `libm` crate (musl's,
/// in Rust), `pow` resolves within the binary and the linker (`--as-needed`) leaves
/// libm out. This matters to dynamic builds; the static one that ships
/// (deploy/build-release.sh) takes only what it calls from glibc either way.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_free_pages() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn exec_without_thread_caches() -> Option<std::io::Error> {
    None
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn pow_is_exact_where_it_can_be() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(2.0, 0.5), std::f64::consts::SQRT_2);
        assert_eq!(super::pow(10.0, -2.0), 0.01);
        assert_eq!(super::pow(0.0, 0.0), 1.0);
        assert!(super::pow(-8.0, 1.0 / 3.0).is_nan());
        // As tokio uses it: a decay factor to the power of a poll count.
        assert_eq!(super::pow(0.9, 2.0), 0.81);
    }
}
