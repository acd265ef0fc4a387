//! Test certificates made with the `openssl` command line (installed by `scripts/provision`): a CA, and
//! server or client certificates it signs. Keys are ECDSA P-256 (fast to make, accepted by
//! rustls and Redis alike). Everything lives in a directory the caller owns.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

/// A certificate authority for tests.
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

/// A certificate and its private key, as PEM files.
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl to make test certificates (scripts/provision installs it)")?;
    if !out.status.success() {
        bail!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 temporary path")
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl TestCa {
    /// A new self-signed CA `name` in `dir` (`<name>.pem`, `<name>.key`).
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let ca = Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        let (pem, key) = (ca.cert(), ca.dir.join(format!("{name}.key")));
        let subject = format!("/CN=sluice test CA {name}");
        let mut args = vec!["req", "-x509"];
        args.extend(EC);
        args.extend(["-nodes", "-days", "1", "-subj", &subject]);
        args.extend(["-keyout", path_str(&key)?, "-out", path_str(&pem)?]);
        openssl(&args)?;
        Ok(ca)
    }

    /// The CA's certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// A certificate for `leaf` signed by this CA: for a server on 127.0.0.1 (`server`), or for
    /// a client.
    pub fn issue(&self, leaf: &str, server: bool) -> anyhow::Result<Issued> {
        let file = |suffix: &str| self.dir.join(format!("{}-{leaf}{suffix}", self.name));
        let (cert, key, csr, ext) = (file(".pem"), file("-key.pem"), file(".csr"), file(".ext"));
        let usage = if server {
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        };
        std::fs::write(
            &ext,
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{usage}"),
        )?;
        let subject = format!("/CN={leaf}");
        let mut args = vec!["req"];
        args.extend(EC);
        args.extend(["-nodes", "-subj", &subject]);
        args.extend(["-keyout", path_str(&key)?, "-out", path_str(&csr)?]);
        openssl(&args)?;
        let ca_key = self.dir.join(format!("{}.key", self.name));
        let (ca_cert, csr_s, ext_s) = (
            self.cert(),
            path_str(&csr)?.to_string(),
            path_str(&ext)?.to_string(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr_s,
            "-CA",
            path_str(&ca_cert)?,
            "-CAkey",
            path_str(&ca_key)?,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext_s,
            "-out",
            path_str(&cert)?,
        ])?;
        Ok(Issued { cert, key })
    }
}
