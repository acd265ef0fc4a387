//! The clients in other languages the tests run for real: Python (the virtualenv `scripts/test`
//! provisions under `target/venv`, with the Python client installed from `clients/python`, the
//! official SDKs, Celery, grpcurl) and Node (`clients/node` after `npm ci`). Each helper names
//! the command that provisions what is missing instead of failing obscurely.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, Context};

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// The provisioned virtualenv's `bin` directory.
pub fn venv_bin() -> PathBuf {
    root().join("target/venv/bin")
}

/// The Python interpreter: `$SLUICE_PYTHON`, else the provisioned virtualenv's, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = venv_bin().join("python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// A command for `tool` (grpcurl, celery): the virtualenv's if it has it, else from `PATH`.
pub fn tool(tool: &str) -> Command {
    let venv = venv_bin().join(tool);
    Command::new(if venv.exists() {
        venv
    } else {
        PathBuf::from(tool)
    })
}

/// `python <args>` in `dir` with `env`; fails with both outputs unless it exits 0.
pub fn run_python(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let out = Command::new(python())
        .args(args)
        .current_dir(dir)
        .env("PATH", path_with_venv())
        .envs(env.iter().copied())
        .output()
        .with_context(|| {
            format!(
                "running {} (run scripts/test, which provisions it)",
                python().display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "python {args:?} failed ({}); scripts/test provisions target/venv with what it \
             needs\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// `PATH` with the virtualenv's `bin` first (scripts started by a test find `celery` there).
pub fn path_with_venv() -> std::ffi::OsString {
    let mut paths = vec![venv_bin()];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// The Node client's directory, after checking `npm ci` ran there.
pub fn node_client() -> anyhow::Result<PathBuf> {
    let dir = root().join("clients/node");
    if !dir.join("node_modules").exists() {
        bail!("clients/node has no node_modules: run scripts/test (it runs `npm ci` there)");
    }
    Ok(dir)
}
