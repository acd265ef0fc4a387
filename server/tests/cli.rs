//! The `sluice-server` binary's start-up checks: a bad config file is refused with a message
//! naming the service and the field, and the example config is valid.

use std::{path::PathBuf, process::Command};

fn server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice-server"))
}

/// `sluice-server --config <path> --check-config`: success and stderr.
fn check_config(path: &std::path::Path) -> anyhow::Result<(bool, String)> {
    let out = server()
        .arg("--config")
        .arg(path)
        .arg("--check-config")
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn example_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/sluice.toml")
}

#[test]
fn every_example_config_is_valid() -> anyhow::Result<()> {
    let dir = example_config()
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("no examples directory"))?;
    let mut checked = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let (ok, stderr) = check_config(&path)?;
        assert!(ok, "{}: {stderr}", path.display());
        assert!(stderr.contains("config is valid"), "{stderr}");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} example configs");
    Ok(())
}

#[test]
fn bad_configs_are_refused_naming_service_and_field() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("sluice-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cases = [
        (
            "[[services]]\nname = \"openai/gpt-4o\"\nlimits = [{ dimension = \"tokens\", amount = 10, window = \"1y\" }]\n",
            "service \"openai/gpt-4o\": limits[0].window",
        ),
        (
            "[[services]]\nname = \"a\"\nlimits = [{ dimension = \"tokens\", amount = 10, window = \"1m\", algorithm = \"fixed\" }]\n",
            "service \"a\": limits[0].algorithm",
        ),
        ("[[services]]\nname = \"a\"\nlimits = []\n", "service \"a\": limits"),
        ("listen = [\n", "config is not valid"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text)?;
        let (ok, stderr) = check_config(&path)?;
        assert!(!ok, "case {i} accepted");
        assert!(
            stderr.contains(expected),
            "case {i}: {stderr:?} lacks {expected:?}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_missing_file_and_missing_flag_are_clear_errors() -> anyhow::Result<()> {
    let out = server()
        .args(["--config", "/nonexistent/sluice.toml"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    let out = server().env_remove("SLUICE_CONFIG").output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
    // The environment fallback works too.
    let out = server()
        .env("SLUICE_CONFIG", example_config())
        .arg("--check-config")
        .output()?;
    assert!(out.status.success());
    Ok(())
}
