//! A real `curl` against the agent, for TLS and authentication tests.

use std::process::Command;

/// What curl got: its exit code (0, or e.g. 35/56/60 for TLS failures), the HTTP
/// status (0 without an answer), the answer's headers and body, and its stderr.
#[derive(Debug)]
pub struct CurlResult {
    pub exit: i32,
    pub status: u16,
    pub headers: String,
    pub body: String,
    pub stderr: String,
}

/// Whether curl is installed; a test without it calls `skip`.
pub fn have_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

/// `curl -sS -i --max-time 10 ARGS... URL`.
pub fn curl(url: &str, args: &[&str]) -> CurlResult {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (headers, body) = text
        .split_once("\r\n\r\n")
        .map_or((text.clone(), String::new()), |(h, b)| {
            (h.to_string(), b.to_string())
        });
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    CurlResult {
        exit: out.status.code().unwrap_or(-1),
        status,
        headers,
        body,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl CurlResult {
    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        v["error"].as_str().unwrap_or_default().to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}
