//! Runs nodediag's fsync probe back to back in a directory and prints its latency
//! percentiles as JSON, for comparison with fio (benches/fsync_vs_fio.sh).
//!
//! usage: fsync_probe DIR [COUNT] [FILE_SIZE] [raw]
//!
//! With `raw`, prints every latency in nanoseconds instead of the percentiles.

use nodediag::collect::disk::probe::{self, ProbeFile};
use nodediag::diagnose::disk::FsyncFigures;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: fsync_probe DIR [COUNT] [FILE_SIZE] [raw]");
        return ExitCode::from(2);
    };
    let count: usize = args.get(2).map_or(Ok(1000), |s| s.parse()).unwrap_or(1000);
    let size = match args
        .get(3)
        .map_or(Ok(16 << 20), |s| nodediag::flags::parse_bytes(s))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fsync_probe: {e}");
            return ExitCode::from(2);
        }
    };
    let mut file = match ProbeFile::create(&probe::file_name(&dir), size) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fsync_probe: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        match file.probe_once() {
            Ok(d) => latencies.push(d.as_secs_f64()),
            Err(e) => {
                eprintln!("fsync_probe: {e}");
                let _ = file.remove();
                return ExitCode::FAILURE;
            }
        }
    }
    let _ = file.remove();
    if args.get(4).is_some_and(|a| a == "raw") {
        let ns: Vec<String> = latencies
            .iter()
            .map(|s| format!("{:.0}", s * 1e9))
            .collect();
        println!("[{}]", ns.join(","));
        return ExitCode::SUCCESS;
    }
    let f = FsyncFigures::from_latencies(latencies).expect("at least one probe");
    println!(
        "{{\"probes\": {}, \"p50_seconds\": {}, \"p99_seconds\": {}, \"max_seconds\": {}}}",
        f.probes, f.p50_seconds, f.p99_seconds, f.max_seconds
    );
    ExitCode::SUCCESS
}
