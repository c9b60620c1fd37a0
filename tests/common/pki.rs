//! Test certificates made with the real `openssl` command line: CAs, server and
//! client certificates, expired ones (with `openssl ca -startdate/-enddate`, which
//! every OpenSSL 1.1 and 3.x has), all P-256 keys, in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = "\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
[ client_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:prometheus
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
[ ca ]
default_ca = test_ca
[ test_ca ]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
";

#[derive(Debug, Clone, Copy)]
pub enum Use {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From now for 30 days.
    Current,
    /// January 2020 only.
    Expired,
}

pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// None when `openssl` is not installed (the caller skips).
    pub fn new() -> Option<Pki> {
        Command::new("openssl").arg("version").output().ok()?;
        let dir = tempfile::Builder::new()
            .prefix("nodediag-webtest-pki-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("pki.cnf"), CONFIG).unwrap();
        std::fs::write(dir.path().join("index.txt"), "").unwrap();
        std::fs::write(dir.path().join("serial"), "1000\n").unwrap();
        Some(Pki { dir })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A self-signed CA: `NAME.crt`, `NAME.key`.
    pub fn ca(&self, name: &str) {
        let (crt, key, subj) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("/CN=nodediag test {name}"),
        );
        self.openssl(&[
            "req",
            "-x509",
            "-config",
            "pki.cnf",
            "-extensions",
            "ca_ext",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "30",
            "-subj",
            &subj,
        ]);
    }

    /// `NAME.crt` and `NAME.key` signed by the CA `ca`. Server certificates name
    /// localhost and 127.0.0.1; client certificates name prometheus.
    pub fn leaf(&self, ca: &str, name: &str, usage: Use, validity: Validity) {
        let (crt, key, csr) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        let (ext, cn) = match usage {
            Use::Server => ("server_ext", "/CN=localhost"),
            Use::Client => ("client_ext", "/CN=prometheus"),
        };
        self.openssl(&[
            "req",
            "-new",
            "-config",
            "pki.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            cn,
        ]);
        let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
        let mut args = vec![
            "ca",
            "-batch",
            "-config",
            "pki.cnf",
            "-extensions",
            ext,
            "-cert",
            &ca_crt,
            "-keyfile",
            &ca_key,
            "-in",
            &csr,
            "-out",
            &crt,
            "-notext",
        ];
        match validity {
            Validity::Current => args.extend(["-days", "30"]),
            Validity::Expired => args.extend([
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200201000000Z",
            ]),
        }
        self.openssl(&args);
    }
}
