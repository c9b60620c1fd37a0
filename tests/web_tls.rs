//! TLS and basic authentication from `--web.config.file`, checked with real
//! `openssl`-made certificates and the real `curl`: what a Prometheus scrape, a
//! kubelet probe and a misconfigured client see.

mod common;

use common::pki::{Pki, Use, Validity};
use common::web::{curl, have_curl, CurlResult};
use common::{fixture, series_value, skip, wait_for, Agent, BIN};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Certificates for one test: CA `ca` with a server and a client certificate, an
/// unrelated CA `other` with a client certificate of its own, and expired ones.
fn pki() -> Option<Pki> {
    if !have_curl() {
        skip("curl is not installed (apt-get install curl)");
        return None;
    }
    let Some(pki) = Pki::new() else {
        skip("openssl is not installed (apt-get install openssl)");
        return None;
    };
    pki.ca("ca");
    pki.ca("other");
    pki.leaf("ca", "server", Use::Server, Validity::Current);
    pki.leaf("ca", "client", Use::Client, Validity::Current);
    pki.leaf("other", "stranger", Use::Client, Validity::Current);
    Some(pki)
}

fn agent_with(web_config: &Path, extra: &[&str]) -> Agent {
    let root = fixture("healthy");
    let p = |d: &str| root.join(d).to_string_lossy().into_owned();
    let config = web_config.to_string_lossy().into_owned();
    let mut args = vec![
        "--no-netlink".to_string(),
        format!("--path.procfs={}", p("proc")),
        format!("--path.sysfs={}", p("sys")),
        format!("--path.rootfs={}", p("rootfs")),
        "--interval=1s".into(),
        format!("--web.config.file={config}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&args)
}

fn https(agent: &Agent, path: &str) -> String {
    format!("https://{}{}", agent.addr, path)
}

fn bcrypt_of(password: &str) -> String {
    // Cost 4 keeps the tests fast; the cost does not change the protocol.
    bcrypt::hash(password, 4).unwrap()
}

fn write(path: &Path, text: &str) {
    // Written to a temporary name and renamed, as editors and kubelet do, so the
    // agent never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn ca_arg(pki: &Pki, ca: &str) -> String {
    pki.path(&format!("{ca}.crt"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn tls_is_served_to_clients_that_trust_the_ca_only() {
    let Some(pki) = pki() else { return };
    let cfg = pki.path("web.yml");
    write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    );
    let agent = agent_with(&cfg, &[]);
    let ok = curl(
        &https(&agent, "/healthz"),
        &["--cacert", &ca_arg(&pki, "ca")],
    );
    assert_eq!(
        (ok.exit, ok.status, ok.body.as_str()),
        (0, 200, "ok\n"),
        "{ok:?}"
    );
    // By name too: the certificate names localhost.
    let port = agent.addr.rsplit(':').next().unwrap();
    let by_name = curl(
        &format!("https://localhost:{port}/metrics"),
        &[
            "--cacert",
            &ca_arg(&pki, "ca"),
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
        ],
    );
    assert_eq!(by_name.status, 200, "{by_name:?}");
    assert!(by_name.body.contains("nodediag_build_info"));

    let wrong_ca = curl(
        &https(&agent, "/healthz"),
        &["--cacert", &ca_arg(&pki, "other")],
    );
    assert_eq!(
        wrong_ca.exit, 60,
        "curl: peer certificate not trusted: {wrong_ca:?}"
    );
    assert_eq!(wrong_ca.status, 0);

    let old_tls = curl(
        &https(&agent, "/healthz"),
        &["--cacert", &ca_arg(&pki, "ca"), "--tls-max", "1.1"],
    );
    assert_ne!(old_tls.exit, 0, "TLS 1.1 was accepted: {old_tls:?}");
}

#[test]
fn an_expired_server_certificate_is_refused_by_curl() {
    let Some(pki) = pki() else { return };
    pki.leaf("ca", "old-server", Use::Server, Validity::Expired);
    let cfg = pki.path("web.yml");
    write(
        &cfg,
        "tls_server_config:\n  cert_file: old-server.crt\n  key_file: old-server.key\n",
    );
    let agent = agent_with(&cfg, &[]);
    let r = curl(
        &https(&agent, "/healthz"),
        &["--cacert", &ca_arg(&pki, "ca")],
    );
    assert_eq!(r.exit, 60, "{r:?}");
    assert!(r.stderr.contains("expired"), "{r:?}");
}

#[test]
fn plain_http_to_the_tls_port_gets_a_json_400_at_once() {
    let Some(pki) = pki() else { return };
    let cfg = pki.path("web.yml");
    write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    );
    let agent = agent_with(&cfg, &["--web.read-header-timeout=30s"]);
    let started = std::time::Instant::now();
    let r = curl(&format!("http://{}/healthz", agent.addr), &[]);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("HTTPS"), "{r:?}");
    let metrics = curl(
        &https(&agent, "/metrics"),
        &["--cacert", &ca_arg(&pki, "ca")],
    )
    .body;
    assert_eq!(
        series_value(
            &metrics,
            "nodediag_http_connections_refused_total{reason=\"plain_http\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // Answered, not left to the 30 s header timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn mutual_tls_admits_only_verified_client_certificates() {
    let Some(pki) = pki() else { return };
    pki.leaf("ca", "old-client", Use::Client, Validity::Expired);
    let cfg = pki.path("web.yml");
    write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
         min_version: TLS13\n",
    );
    let agent = agent_with(&cfg, &[]);
    let ca = ca_arg(&pki, "ca");
    let with = |name: &str| {
        let (crt, key) = (
            pki.path(&format!("{name}.crt")),
            pki.path(&format!("{name}.key")),
        );
        curl(
            &https(&agent, "/metrics"),
            &[
                "--cacert",
                &ca,
                "--cert",
                crt.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
        )
    };
    let ok = with("client");
    assert_eq!((ok.exit, ok.status), (0, 200), "{ok:?}");
    for refused in [
        curl(&https(&agent, "/metrics"), &["--cacert", &ca]),
        with("stranger"),
        with("old-client"),
    ] {
        // TLS 1.3 reports the refusal after curl's side of the handshake: exit 56
        // (receive failure) or 35 (handshake), never an HTTP answer.
        assert!(
            matches!(refused.exit, 35 | 56),
            "a client without a valid certificate got through: {refused:?}"
        );
        assert_eq!(refused.status, 0, "{refused:?}");
    }
}

#[test]
fn basic_auth_wants_the_right_password_and_says_how() {
    let Some(pki) = pki() else { return };
    let cfg = pki.path("web.yml");
    write(
        &cfg,
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: '{}'\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
            bcrypt_of("s3cret")
        ),
    );
    let agent = agent_with(&cfg, &[]);
    let ca = ca_arg(&pki, "ca");
    let get = |extra: &[&str]| {
        let mut args = vec!["--cacert", ca.as_str()];
        args.extend_from_slice(extra);
        curl(&https(&agent, "/api/v1/findings"), &args)
    };
    for (refused, why) in [
        (get(&[]), "authentication required"),
        (
            get(&["-u", "prometheus:wrong"]),
            "wrong user name or password",
        ),
        (
            get(&["-u", "grafana:s3cret"]),
            "wrong user name or password",
        ),
    ] {
        assert_eq!(refused.status, 401, "{refused:?}");
        assert_eq!(refused.error(), why);
        let challenge = refused.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Basic"), "{refused:?}");
    }
    let ok = get(&["-u", "prometheus:s3cret"]);
    assert_eq!(ok.status, 200, "{ok:?}");
    // Each refusal counted by its reason.
    let metrics = curl(
        &https(&agent, "/metrics"),
        &["--cacert", &ca, "-u", "prometheus:s3cret"],
    )
    .body;
    for (reason, n) in [("credentials_missing", 1.0), ("credentials_wrong", 2.0)] {
        let series = format!("nodediag_http_requests_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(series_value(&metrics, &series), Some(n), "{metrics}");
    }
    assert_eq!(
        ok.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    // The probes are not exempt unless asked for.
    let probe = curl(&https(&agent, "/healthz"), &["--cacert", &ca]);
    assert_eq!(probe.status, 401, "{probe:?}");
}

#[test]
fn probe_paths_left_open_answer_the_kubelet_and_nothing_else_does() {
    let Some(pki) = pki() else { return };
    let cfg = pki.path("web.yml");
    write(
        &cfg,
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
             basic_auth_users:\n  prometheus: '{}'\n",
            bcrypt_of("s3cret")
        ),
    );
    let agent = agent_with(&cfg, &["--web.unauthenticated-path=/healthz,/readyz"]);
    // The kubelet's HTTPS probe: no certificate check, no client certificate, no
    // credentials.
    let live = curl(&https(&agent, "/healthz"), &["--insecure"]);
    assert_eq!((live.status, live.body.as_str()), (200, "ok\n"), "{live:?}");
    wait_for(
        "/readyz over the open path",
        Duration::from_secs(30),
        || (curl(&https(&agent, "/readyz"), &["--insecure"]).status == 200).then_some(()),
    );
    let no_cert = curl(
        &https(&agent, "/metrics"),
        &["--insecure", "-u", "prometheus:s3cret"],
    );
    assert_eq!(no_cert.status, 403, "{no_cert:?}");
    assert!(
        no_cert.error().contains("client certificate"),
        "{no_cert:?}"
    );
    let (crt, key) = (pki.path("client.crt"), pki.path("client.key"));
    let (crt, key) = (crt.to_str().unwrap(), key.to_str().unwrap());
    let no_password = curl(
        &https(&agent, "/metrics"),
        &["--insecure", "--cert", crt, "--key", key],
    );
    assert_eq!(no_password.status, 401, "{no_password:?}");
    let scrape = curl(
        &https(&agent, "/metrics"),
        &[
            "--insecure",
            "-u",
            "prometheus:s3cret",
            "--cert",
            crt,
            "--key",
            key,
        ],
    );
    assert_eq!(scrape.status, 200, "{scrape:?}");
    // A certificate from another CA still fails the handshake, even for /healthz.
    let (crt, key) = (pki.path("stranger.crt"), pki.path("stranger.key"));
    let stranger = curl(
        &https(&agent, "/healthz"),
        &[
            "--insecure",
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(stranger.status, 0, "{stranger:?}");
}

/// A Kubernetes Secret volume: files are symlinks into `..data`, itself a symlink to
/// a timestamped directory that the kubelet replaces atomically on update.
struct SecretVolume<'a> {
    dir: &'a Path,
    version: u32,
}

impl<'a> SecretVolume<'a> {
    fn new(dir: &'a Path, files: &[(&str, &Path)]) -> Self {
        let mut v = SecretVolume { dir, version: 0 };
        v.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        v
    }

    fn update(&mut self, files: &[(&str, &Path)]) {
        self.version += 1;
        let version_dir = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&version_dir)).unwrap();
        for (name, src) in files {
            std::fs::copy(src, self.dir.join(&version_dir).join(name)).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version_dir, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

#[test]
fn a_rewritten_config_and_a_renewed_certificate_are_picked_up() {
    let Some(pki) = pki() else { return };
    pki.ca("next-ca");
    pki.leaf("next-ca", "next-server", Use::Server, Validity::Current);
    let secret = pki.path("secret");
    std::fs::create_dir(&secret).unwrap();
    let mut volume = SecretVolume::new(
        &secret,
        &[
            ("tls.crt", &pki.path("server.crt")),
            ("tls.key", &pki.path("server.key")),
        ],
    );
    let cfg = pki.path("web.yml");
    let config = |password: &str| {
        format!(
            "tls_server_config:\n  cert_file: secret/tls.crt\n  key_file: secret/tls.key\n\
             basic_auth_users:\n  prometheus: '{}'\n",
            bcrypt_of(password)
        )
    };
    write(&cfg, &config("first"));
    let agent = agent_with(&cfg, &[]);
    let with = |ca: &str, user: &str| {
        curl(
            &https(&agent, "/api/v1/snapshot"),
            &["--cacert", &ca_arg(&pki, ca), "-u", user],
        )
    };
    assert_eq!(with("ca", "prometheus:first").status, 200);

    // A new password, picked up on SIGHUP.
    write(&cfg, &config("second"));
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(agent.pid() as libc::pid_t, libc::SIGHUP) };
    wait_for("the new password to work", Duration::from_secs(15), || {
        (with("ca", "prometheus:second").status == 200).then_some(())
    });
    assert_eq!(
        with("ca", "prometheus:first").status,
        401,
        "the old password still works"
    );

    let reload_failures = || {
        let metrics = curl(
            &https(&agent, "/metrics"),
            &["--cacert", &ca_arg(&pki, "ca"), "-u", "prometheus:second"],
        )
        .body;
        series_value(&metrics, "nodediag_web_config_reload_failures_total")
    };
    assert_eq!(reload_failures(), Some(0.0));

    // A broken file keeps the last good configuration: fail closed, not open.
    write(&cfg, "basic_auth_users: [not, a, mapping]\n");
    // SAFETY: as above.
    unsafe { libc::kill(agent.pid() as libc::pid_t, libc::SIGHUP) };
    wait_for(
        "the failed reload to be logged",
        Duration::from_secs(15),
        || {
            agent
                .logged("keeping the previous web config")
                .then_some(())
        },
    );
    assert_eq!(with("ca", "prometheus:second").status, 200);
    assert_eq!(with("ca", "prometheus:wrong").status, 401);
    assert_eq!(
        reload_failures(),
        Some(1.0),
        "the failed reload is not counted"
    );
    let reloads = agent.logged_times("web config reloaded");
    write(&cfg, &config("second"));
    unsafe { libc::kill(agent.pid() as libc::pid_t, libc::SIGHUP) };
    wait_for("the repaired file to load", Duration::from_secs(15), || {
        (agent.logged_times("web config reloaded") > reloads).then_some(())
    });

    // The certificate renewed behind the symlinks, picked up by polling alone.
    volume.update(&[
        ("tls.crt", &pki.path("next-server.crt")),
        ("tls.key", &pki.path("next-server.key")),
    ]);
    let renewed = wait_for("the renewed certificate", Duration::from_secs(20), || {
        let r = with("next-ca", "prometheus:second");
        (r.status == 200).then_some(r)
    });
    assert_eq!(renewed.exit, 0);
    let stale: CurlResult = with("ca", "prometheus:second");
    assert_eq!(
        stale.exit, 60,
        "the old certificate is still served: {stale:?}"
    );
}

/// `nodediag serve` with this web config file: exit status and stderr.
fn start_fails(body: &str) -> String {
    let dir = tempfile::Builder::new()
        .prefix("nodediag-webtest-")
        .tempdir()
        .unwrap();
    let cfg = dir.path().join("web.yml");
    std::fs::write(&cfg, body).unwrap();
    let root = fixture("healthy");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-netlink"])
        .arg(format!("--path.procfs={}", root.join("proc").display()))
        .arg(format!("--path.sysfs={}", root.join("sys").display()))
        .arg(format!("--path.rootfs={}", root.join("rootfs").display()))
        .arg(format!("--web.config.file={}", cfg.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(
        "nodediag to refuse to start",
        Duration::from_secs(20),
        || child.try_wait().unwrap(),
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "started with {body:?}: {stderr}");
    stderr
}

#[test]
fn a_bad_web_config_is_a_failed_start_that_names_the_key() {
    let e = start_fails("basic_auth_users:\n  prometheus: hunter2\n");
    assert!(
        e.contains("basic_auth_users") && e.contains("bcrypt"),
        "{e}"
    );
    let e =
        start_fails("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  clientauth: x\n");
    assert!(e.contains("clientauth"), "{e}");
    let e = start_fails("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n");
    assert!(e.contains("cert_file") && e.contains("missing.crt"), "{e}");
}

#[test]
fn unsafe_or_unsupported_tls_settings_are_refused_at_start() {
    let Some(pki) = pki() else { return };
    let base = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
        pki.path("server.crt").display(),
        pki.path("server.key").display()
    );
    let ca = pki.path("ca.crt");
    for (extra, names) in [
        (
            "  client_auth_type: RequireAnyClientCert\n".to_string(),
            "client_auth_type",
        ),
        (
            format!("  client_ca_file: {}\n", ca.display()),
            "client_auth_type",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n".into(),
            "client_ca_file",
        ),
        ("  min_version: TLS10\n".into(), "min_version"),
        (
            "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n".into(),
            "cipher_suites",
        ),
        (
            "  curve_preferences: [CurveP521]\n".into(),
            "curve_preferences",
        ),
        (
            "  client_allowed_sans: [prometheus]\n".into(),
            "client_allowed_sans",
        ),
    ] {
        let e = start_fails(&format!("{base}{extra}"));
        assert!(e.contains(names), "{extra:?}: {e}");
    }
}

/// A real Prometheus (Debian's package) with the scrape config the README shows:
/// `scheme: https`, `tls_config` with the CA, the server name and a client
/// certificate, `basic_auth`. A second job with a wrong password must be down.
#[test]
fn a_real_prometheus_scrapes_over_mutual_tls_with_basic_auth() {
    const PROMETHEUS: &str = "/usr/bin/prometheus";
    if !Path::new(PROMETHEUS).exists() {
        skip("prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let Some(pki) = pki() else { return };
    let cfg = pki.path("web.yml");
    write(
        &cfg,
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
             basic_auth_users:\n  prometheus: '{}'\n",
            bcrypt_of("scrape-password")
        ),
    );
    let agent = agent_with(&cfg, &[]);
    std::fs::write(pki.path("password"), "scrape-password").unwrap();
    let job = |name: &str, auth: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: ca.crt\n      \
             server_name: localhost\n      cert_file: client.crt\n      key_file: client.key\n    \
             basic_auth:\n      username: prometheus\n      {auth}\n    \
             static_configs:\n      - targets: ['{}']\n",
            agent.addr
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
        job("nodediag", "password_file: password"),
        job("nodediag-wrong-password", "password: guessed")
    );
    std::fs::write(pki.path("prometheus.yml"), config).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = std::fs::File::create(pki.path("prometheus.log")).unwrap();
    let mut prometheus = Command::new(PROMETHEUS)
        .arg(format!(
            "--config.file={}",
            pki.path("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            pki.path("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut prometheus);
    let up = |job: &str| -> Option<String> {
        let url = format!("http://127.0.0.1:{port}/api/v1/query");
        let body = ureq::get(&url)
            .query("query", &format!("up{{job=\"{job}\"}}"))
            .timeout(Duration::from_secs(5))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    };
    let log = || std::fs::read_to_string(pki.path("prometheus.log")).unwrap_or_default();
    wait_for(
        "a successful scrape over TLS",
        Duration::from_secs(60),
        || (up("nodediag").as_deref() == Some("1")).then_some(()),
    );
    wait_for(
        "the wrong password's scrape to fail",
        Duration::from_secs(30),
        || (up("nodediag-wrong-password").as_deref() == Some("0")).then_some(()),
    );
    let series = ureq::get(&format!("http://127.0.0.1:{port}/api/v1/query"))
        .query("query", "nodediag_build_info")
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        series.contains("\"job\":\"nodediag\""),
        "{series}\n{}",
        log()
    );
}

#[test]
fn the_rate_limit_answers_429_but_not_to_open_probes() {
    if !have_curl() {
        skip("curl is not installed (apt-get install curl)");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("nodediag-webtest-")
        .tempdir()
        .unwrap();
    let cfg = dir.path().join("web.yml");
    // Two requests, then one an hour: the third is refused.
    write(&cfg, "rate_limit:\n  interval: 1h\n  burst: 2\n");
    let agent = agent_with(&cfg, &["--web.unauthenticated-path=/healthz"]);
    let url = |path: &str| format!("http://{}{path}", agent.addr);
    assert_eq!(curl(&url("/metrics"), &[]).status, 200);
    assert_eq!(curl(&url("/api/v1/findings"), &[]).status, 200);
    let refused = curl(&url("/metrics"), &[]);
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.error(), "rate limit exceeded");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    for _ in 0..3 {
        assert_eq!(
            curl(&url("/healthz"), &[]).status,
            200,
            "the probe was limited"
        );
    }
}
