//! How long a scrape takes as Prometheus makes it: one connection kept open, a
//! request after each pause, the whole body read. `/metrics` and `/healthz` (no work
//! behind it) in turn, each after the same pause, so the second is the floor under
//! the first: what waking this machine's idle client and server costs.
//!
//! A new connection per request (`curl` in a loop) times something Prometheus does
//! not do: on the machine the README's figures come from, it put about 3 ms on the
//! p99 of `/healthz` alone (4.4 and 5.1 ms against 0.4 to 1.9 ms over one
//! connection), a tail of the client and of accepting, not of what `/metrics`
//! serves.
//!
//! Each request asks for gzip, as Prometheus's do (`--identity`: not); the latency is
//! until the last byte of the body, as it came: decompressing is the scraper's work.
//!
//! `cargo bench --bench scrape_latency -- --bench --port P --seconds S [--every MS]
//! [--identity] --metrics FILE --healthz FILE` appends each latency in seconds, one a
//! line, to the two files. Under `cargo test` it checks itself against a server of its own:
//! every request answered, over one connection.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Args {
    bench: bool,
    port: u16,
    seconds: u64,
    every: Duration,
    gzip: bool,
    metrics: Option<PathBuf>,
    healthz: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        bench: false,
        port: 0,
        seconds: 0,
        every: Duration::from_millis(250),
        gzip: true,
        metrics: None,
        healthz: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        let number = |name: &str, v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a whole number, not {v:?}"))
        };
        match arg.as_str() {
            "--bench" => a.bench = true,
            "--port" => a.port = number("--port", value("--port")) as u16,
            "--seconds" => a.seconds = number("--seconds", value("--seconds")),
            "--every" => a.every = Duration::from_millis(number("--every", value("--every"))),
            "--identity" => a.gzip = false,
            "--metrics" => a.metrics = Some(value("--metrics").into()),
            "--healthz" => a.healthz = Some(value("--healthz").into()),
            // What cargo passes a test binary (filters, --nocapture ...): not ours.
            _ => {}
        }
    }
    a
}

/// Latencies of each path, requested in turn over one kept connection.
struct Timed {
    metrics: Vec<Duration>,
    healthz: Vec<Duration>,
}

/// Requests `/metrics` and `/healthz` in turn until `until`, `every` apart. A failed
/// request ends the run: a latency that was not a scrape must not be counted.
fn run(port: u16, every: Duration, gzip: bool, until: Instant) -> Result<Timed, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_idle_connections_per_host(1)
        .build();
    let mut timed = Timed {
        metrics: Vec::new(),
        healthz: Vec::new(),
    };
    let mut turn = 0u64;
    while Instant::now() < until {
        let (path, into) = match turn % 2 {
            0 => ("/metrics", &mut timed.metrics),
            _ => ("/healthz", &mut timed.healthz),
        };
        turn += 1;
        let url = format!("http://127.0.0.1:{port}{path}");
        let started = Instant::now();
        let encoding = if gzip { "gzip" } else { "identity" };
        let response = agent
            .get(&url)
            .set("Accept-Encoding", encoding)
            .call()
            .map_err(|e| format!("{url}: {e}"))?;
        // Read to the end, as a scraper does: the connection goes back to the pool
        // only then, and the body is what the scrape costs.
        let mut body = Vec::new();
        response
            .into_reader()
            .read_to_end(&mut body)
            .map_err(|e| format!("{url}: reading the body: {e}"))?;
        into.push(started.elapsed());
        std::thread::sleep(every);
    }
    Ok(timed)
}

fn append(path: &Path, latencies: &[Duration]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text: String = latencies
        .iter()
        .map(|d| format!("{:.6}\n", d.as_secs_f64()))
        .collect();
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A server that answers every request of its first connection with a small body,
/// until the client closes it; then the connections it accepted in all. A client
/// that does not keep its connection waits on a second one nobody serves, and fails.
fn serve_counting(listener: TcpListener) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept the client");
        let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        let mut writer = stream;
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            // The end of a request's head: answer it.
            if line == "\r\n" {
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                if writer.write_all(answer.as_bytes()).is_err() {
                    break;
                }
            }
            line.clear();
        }
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        1 + listener.incoming().take_while(Result::is_ok).count()
    })
}

fn main() {
    let args = args();
    if !args.bench {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let port = listener.local_addr().expect("its address").port();
        let server = serve_counting(listener);
        let until = Instant::now() + Duration::from_millis(200);
        let timed =
            run(port, Duration::from_millis(10), true, until).expect("every request answered");
        assert!(
            timed.metrics.len() >= 2 && timed.healthz.len() >= 2,
            "too few requests in 200 ms: {} and {}",
            timed.metrics.len(),
            timed.healthz.len()
        );
        let accepted = server.join().expect("the server thread");
        assert_eq!(accepted, 1, "every request over one kept connection");
        return;
    }
    assert!(args.port != 0, "--port is needed");
    let (Some(metrics), Some(healthz)) = (&args.metrics, &args.healthz) else {
        panic!("--metrics FILE and --healthz FILE are needed");
    };
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let timed = run(args.port, args.every, args.gzip, until).unwrap_or_else(|e| {
        eprintln!("scrape_latency: {e}");
        std::process::exit(1);
    });
    append(metrics, &timed.metrics);
    append(healthz, &timed.healthz);
}
