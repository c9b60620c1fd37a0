//! The HTTP server's limits, against the real binary over real sockets: slow and
//! silent clients, idle keep-alives, the connection cap, many clients at once,
//! malformed requests (answered with the JSON error body, never hyper's empty one),
//! the open-file limit and shutdown.

mod common;

use common::{fixture, series_value, wait_for, Agent};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn agent(extra: &[&str]) -> Agent {
    Agent::start(&args(extra).iter().map(String::as_str).collect::<Vec<_>>())
}

fn args(extra: &[&str]) -> Vec<String> {
    let root = fixture("healthy");
    let p = |d: &str| root.join(d).to_string_lossy().into_owned();
    let mut args = vec![
        "--no-netlink".to_string(),
        format!("--path.procfs={}", p("proc")),
        format!("--path.sysfs={}", p("sys")),
        format!("--path.rootfs={}", p("rootfs")),
        "--interval=1s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Everything the server sends until it closes (or `limit` passes: then `closed`
/// is false), and how long that took.
struct Exchange {
    bytes: Vec<u8>,
    closed: bool,
    took: Duration,
}

impl Exchange {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn status(&self) -> u16 {
        self.text()
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The JSON error of the (last) answer.
    fn error(&self) -> String {
        let text = self.text();
        let body = text.rsplit("\r\n\r\n").next().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
        v["error"].as_str().unwrap_or_default().to_string()
    }
}

fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Exchange {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Exchange {
                bytes,
                closed: false,
                took: started.elapsed(),
            };
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    Exchange {
        bytes,
        closed: true,
        took: started.elapsed(),
    }
}

fn send(agent: &Agent, request: &[u8], limit: Duration) -> Exchange {
    let mut s = TcpStream::connect(&agent.addr).unwrap();
    s.write_all(request).unwrap();
    read_until_closed(&mut s, limit)
}

#[test]
fn every_error_the_server_makes_is_a_4xx_with_a_json_body() {
    let agent = agent(&[]);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000));
    let big_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(20_000));
    let many_headers: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
    let many_headers = format!("GET / HTTP/1.1\r\n{many_headers}\r\n");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("bad request line", b"GARBAGE\r\n\r\n".to_vec(), 400, "malformed request"),
        ("bad version", b"GET / HTTP/7.0\r\n\r\n".to_vec(), 400, "malformed request"),
        ("bad header line", b"GET / HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), 400, "malformed request"),
        ("TLS to the plain port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(), 400, "malformed request"),
        ("URI too long", long_uri.into_bytes(), 414, "URI longer than"),
        ("header block too large", big_header.into_bytes(), 431, "larger than"),
        ("too many headers", many_headers.into_bytes(), 431, "request headers"),
        ("differing lengths", b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), 400, "Content-Length"),
        ("unknown parameter on /healthz", b"GET /healthz?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), 400, "unknown query parameter \"x\""),
        ("unknown parameter on /readyz", b"GET /readyz?verbose HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), 400, "unknown query parameter \"verbose\""),
        ("repeated parameter", b"GET /api/v1/findings?severity=info&severity=critical HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), 400, "\"severity\" given more than once"),
        ("unknown path", b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), 404, "no such endpoint"),
        ("method", b"DELETE /metrics HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), 405, "not allowed"),
    ];
    for (what, request, status, error) in cases {
        // Malformed heads close the connection; the well-formed ones ask to.
        let got = send(&agent, &request, Duration::from_secs(10));
        assert!(got.closed, "{what}: connection left open: {}", got.text());
        assert_eq!(got.status(), status, "{what}: {}", got.text());
        let text = got.text().to_ascii_lowercase();
        assert!(
            text.contains("content-type: application/json"),
            "{what}: {text}"
        );
        assert!(got.error().contains(error), "{what}: {}", got.text());
    }
}

#[test]
fn silent_and_trickling_clients_are_cut_after_the_header_timeout() {
    let agent = agent(&["--web.read-header-timeout=1s", "--web.idle-timeout=60s"]);
    // Half-open: connects, sends nothing. Closed quietly.
    let silent = send(&agent, b"", Duration::from_secs(10));
    assert!(
        silent.closed && silent.bytes.is_empty(),
        "{}",
        silent.text()
    );
    assert!(
        silent.took >= Duration::from_millis(900),
        "cut early: {:?}",
        silent.took
    );

    // One byte every 300 ms: the head never completes. Answered 408 and closed.
    let mut s = TcpStream::connect(&agent.addr).unwrap();
    let started = Instant::now();
    let mut answer = None;
    for b in b"GET /metrics HTTP/1.1\r\nHost: trickle\r\n" {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => {
                let mut rest = read_until_closed(&mut s, Duration::from_secs(5));
                let mut bytes = buf[..n].to_vec();
                bytes.append(&mut rest.bytes);
                rest.bytes = bytes;
                answer = Some(rest);
                break;
            }
            _ => {}
        }
    }
    let answer = answer.expect("a trickling client was never answered");
    assert_eq!(answer.status(), 408, "{}", answer.text());
    assert!(answer.error().contains("not complete within 1s"));
    assert!(answer.closed);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_idle_keep_alive_is_closed_after_the_idle_timeout() {
    let agent = agent(&["--web.read-header-timeout=1s", "--web.idle-timeout=2s"]);
    let mut s = TcpStream::connect(&agent.addr).unwrap();
    // Two requests on one connection: keep-alive works...
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        assert!(buf[..n].ends_with(b"ok\n"));
    }
    // ...and is ended by the idle timeout, not by the (shorter) header timeout.
    let idle = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(idle.closed && idle.bytes.is_empty(), "{}", idle.text());
    assert!(
        idle.took >= Duration::from_millis(1800),
        "closed after {:?}",
        idle.took
    );
}

/// Connections to the agent's port that the agent process holds open: its socket
/// descriptors matched with the TCP table (collectors open sockets of their own).
fn held_connections(agent: &Agent) -> usize {
    let pid = agent.pid();
    let port: u16 = agent.addr.rsplit(':').next().unwrap().parse().unwrap();
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // State 0A is LISTEN: the listener itself.
            local_port == Some(port) && f[3] != "0A" && inodes.contains(f[9])
        })
        .count()
}

#[test]
fn the_connection_cap_holds_and_probes_answer_once_slots_free() {
    let agent = agent(&["--web.max-connections=20", "--web.read-header-timeout=3s"]);
    agent.wait_ready();
    // The readiness check's own connection must be gone, or it holds a slot.
    wait_for("no connections", Duration::from_secs(10), || {
        (held_connections(&agent) == 0).then_some(())
    });
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&agent.addr).unwrap())
        .collect();
    wait_for("20 connections accepted", Duration::from_secs(10), || {
        (held_connections(&agent) == 20).then_some(())
    });
    // Over the cap: a JSON 503 at once, not a hang.
    let over = send(
        &agent,
        b"GET /healthz HTTP/1.1\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(over.status(), 503, "{}", over.text());
    assert!(over.error().contains("too many connections"));
    // A flood over the cap is refused, each connection answered and closed by the
    // agent, none of them keeping a descriptor once answered.
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&agent.addr).ok())
        .collect();
    let mut refused = 0;
    for mut s in flood {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        // Closed by the agent: the read ends (a reset also ends it).
        let _ = s.read_to_end(&mut answer);
        if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503") {
            refused += 1;
        }
    }
    assert!(refused > 0, "no connection of the flood was answered 503");
    wait_for(
        "only the 20 held connections once the flood is answered",
        Duration::from_secs(10),
        || (held_connections(&agent) == 20).then_some(()),
    );
    // The held connections are cut by the header timeout; the probe then answers.
    wait_for(
        "/healthz after the slots free up",
        Duration::from_secs(15),
        || {
            (send(
                &agent,
                b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
                Duration::from_secs(5),
            )
            .status()
                == 200)
                .then_some(())
        },
    );
    drop(held);
    let (_, metrics) = agent.get("/metrics");
    let refused = series_value(
        &metrics,
        "nodediag_http_connections_refused_total{reason=\"max_connections\"}",
    );
    assert!(
        refused.is_some_and(|n| n >= 1.0),
        "the refusal over the cap is not counted: {refused:?}"
    );
}

#[test]
fn two_hundred_concurrent_clients_see_no_errors() {
    let agent = agent(&[]);
    agent.wait_ready();
    let url = agent.url("/metrics");
    let started = Instant::now();
    let results: Vec<(usize, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|_| {
                let url = url.clone();
                scope.spawn(move || {
                    // One keep-alive connection per client, as a scraper has.
                    let client = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(20))
                        .build();
                    let mut ok = 0;
                    let mut errors = Vec::new();
                    for _ in 0..10 {
                        match client.get(&url).call() {
                            Ok(r) if r.status() == 200 => {
                                let body = r.into_string().unwrap_or_default();
                                if body.contains("nodediag_build_info") {
                                    ok += 1;
                                } else {
                                    errors.push("incomplete body".to_string());
                                }
                            }
                            Ok(r) => errors.push(format!("status {}", r.status())),
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                    (ok, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: usize = results.iter().map(|r| r.0).sum();
    let errors: Vec<&String> = results.iter().flat_map(|r| &r.1).collect();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(ok, 2000);
    eprintln!("2000 scrapes by 200 clients in {:?}", started.elapsed());
}

#[test]
fn the_soft_open_file_limit_is_raised_and_sizes_the_cap() {
    let args = args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_with_nofile(256, 1000, &args);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["1000", "1000"], "{line}");
    // The log is copied from the agent's stderr by a thread of the test: wait for it.
    for line in ["raised the open-file limit", "at most 500 connections"] {
        wait_for(line, Duration::from_secs(5), || {
            agent.logged(line).then_some(())
        });
    }
}

#[test]
fn shutdown_does_not_wait_for_idle_or_slow_clients() {
    let mut agent = agent(&["--web.read-header-timeout=60s", "--web.idle-timeout=60s"]);
    agent.wait_ready();
    let _silent = TcpStream::connect(&agent.addr).unwrap();
    let mut partial = TcpStream::connect(&agent.addr).unwrap();
    partial.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
    let mut idle = TcpStream::connect(&agent.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(idle.read(&mut buf).unwrap() > 0);
    let started = Instant::now();
    assert!(agent.terminate(), "did not exit cleanly");
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
    // Well inside the DaemonSet's terminationGracePeriodSeconds (10 s); the 60 s
    // timeouts would otherwise hold it.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let after = read_until_closed(&mut idle, Duration::from_secs(5));
    assert!(after.closed, "the idle connection was left open");
}
