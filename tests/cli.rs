//! The real binary's command line: bad configurations exit 64 with one line naming the flag,
//! flags are read from `WS_BRIDGE_*` environment variables, and SIGTERM exits 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::real::listening_address;
use common::{bounded, http_client, scratch_dir};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The real binary; killed if the test ends (or times out) before it exits.
fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_websocket-bridge"));
    command.kill_on_drop(true);
    command
}

/// Runs the binary to completion with `args` and `env` (and no `RUST_LOG` of the test's);
/// returns its exit code, stdout and stderr.
async fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = binary();
    command.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().await.unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn check_config(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    run(&[args, &["--check-config"]].concat(), env).await
}

#[tokio::test]
async fn bad_configurations_exit_64_with_one_line_naming_the_flag() {
    bounded(bad_configurations()).await;
}

async fn bad_configurations() {
    let dir = scratch_dir("cli");
    let cert = dir.join("chain.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--cert", cert.to_str().unwrap()], "--key"),
        (vec!["--key", cert.to_str().unwrap()], "--cert"),
        (
            vec![
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                cert.to_str().unwrap(),
            ],
            "--cert",
        ),
        (
            vec![
                "--cert",
                "/nonexistent/chain.pem",
                "--key",
                "/nonexistent/key.pem",
            ],
            "--cert",
        ),
        (vec!["--allowlist", "(unclosed"], "--allowlist"),
        (vec!["--max-message-size", "lots"], "--max-message-size"),
        (vec!["--backend-timeout", "soon"], "--backend-timeout"),
        (vec!["--base-url", "ftp://x"], "--base-url"),
        (vec!["--no-such-flag"], "--no-such-flag"),
        (vec!["--publish-address", "0.0.0.0:0"], "--publish-secret"),
        (vec!["--publish-secret", "too-short"], "--publish-secret"),
        (
            vec!["--max-channels-per-connection", "0"],
            "--max-channels-per-connection",
        ),
    ];
    for (args, flag) in cases {
        let (code, _, stderr) = run(&args, &[]).await;
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line, got {stderr}"
        );
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn flags_can_come_from_the_environment() {
    bounded(async {
        let (code, _, stderr) = run(&[], &[("WS_BRIDGE_MAX_MESSAGE_SIZE", "lots")]).await;
        assert_eq!(code, Some(64));
        assert!(stderr.contains("--max-message-size"), "{stderr}");
    })
    .await;
}

#[tokio::test]
async fn the_binary_serves_and_exits_0_on_sigterm() {
    bounded(async {
        let mut child = binary()
            .env("WS_BRIDGE_ADDRESS", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut saw_warning = false;
        let addr = loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the bridge logs before it listens");
            saw_warning |= line.contains("every connection will be refused");
            if let Some(addr) = listening_address(&line) {
                break addr;
            }
        };
        assert!(saw_warning, "deny-all warning at startup");
        // It serves. This also waits for the accept loop, which is where the SIGTERM handler
        // is installed: the `listening` line comes a moment before it, and a SIGTERM in
        // between would kill the process (status: signal, not 0).
        let healthz = http_client()
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(healthz.status(), 200);
        let pid = child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the bridge exits within 10 s of SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(0));
    })
    .await;
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[tokio::test]
async fn precedence_is_flag_then_environment_then_file_then_default() {
    bounded(precedence()).await;
}

async fn precedence() {
    let dir = scratch_dir("cli");
    let file = dir.join("bridge.toml");
    std::fs::write(
        &file,
        r#"
max-message-size = "2KiB"
backend-timeout = "3s"
send-queue = 5
allowlist = ['http://a\.example/.*', 'http://b\.example/.*']
deny-private-networks = true
signing-secret = "a-file-secret-0123456789"
signing-v1 = true
"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, out, err) = check_config(
        &["--config", path, "--send-queue", "7"],
        &[
            ("WS_BRIDGE_BACKEND_TIMEOUT", "4s"),
            ("WS_BRIDGE_SEND_QUEUE", "6"),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        value(&out, "send-queue"),
        "7",
        "flag beats environment and file"
    );
    assert_eq!(
        value(&out, "backend-timeout"),
        "4s",
        "environment beats file"
    );
    assert_eq!(
        value(&out, "max-message-size"),
        "2048",
        "file beats default"
    );
    assert_eq!(value(&out, "deny-private-networks"), "true");
    assert_eq!(
        value(&out, "allowlist"),
        r#"["http://a\\.example/.*", "http://b\\.example/.*"]"#
    );
    assert_eq!(value(&out, "ping-interval"), "30s", "default");
    assert_eq!(value(&out, "signing-secret"), "1 secret(s), redacted");
    assert_eq!(value(&out, "signing-v1"), "true", "file beats default");
    assert!(!out.contains("a-file-secret"), "secrets never printed");
    assert!(out.trim_end().ends_with("# configuration is valid"));

    // The environment names the file too.
    let (code, out, _) = check_config(&[], &[("WS_BRIDGE_CONFIG", path)]).await;
    assert_eq!(code, Some(0));
    assert_eq!(value(&out, "max-message-size"), "2048");

    // A flag given on the command line replaces the file's list entirely.
    let (_, out, _) = check_config(&["--config", path, "--allowlist", "x"], &[]).await;
    assert_eq!(value(&out, "allowlist"), r#"["x"]"#);
}

#[tokio::test]
async fn check_config_exits_64_on_a_bad_configuration() {
    bounded(bad_config_files()).await;
}

async fn bad_config_files() {
    let dir = scratch_dir("cli");
    for (content, expected) in [
        ("nope = 1\n", "unknown key `nope`"),
        ("max-message-size = \"lots\"\n", "--max-message-size"),
        ("deny-private-networks = \"yes\"\n", "switch"),
        ("this is not toml\n", "--config"),
        (
            "idle-timeout = \"1s\"\nping-interval = \"2s\"\n",
            "--idle-timeout",
        ),
        ("signing-v1 = true\n", "--signing-v1"),
    ] {
        let file = dir.join("bad.toml");
        std::fs::write(&file, content).unwrap();
        let (code, _, err) = check_config(&["--config", file.to_str().unwrap()], &[]).await;
        assert_eq!(code, Some(64), "{content}: {err}");
        assert!(err.contains(expected), "{content}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let (code, _, err) = check_config(&["--config", "/nonexistent.toml"], &[]).await;
    assert_eq!(code, Some(64));
    assert!(err.contains("cannot read"), "{err}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    bounded(json_logs()).await;
}

async fn json_logs() {
    let mut child = binary()
        .args(["--address", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = 0;
    loop {
        let line = lines.next_line().await.unwrap().expect("log line");
        let parsed: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        seen += 1;
        if parsed["fields"]["message"] == "websocket-bridge listening" {
            assert!(
                parsed["fields"]["address"]
                    .as_str()
                    .unwrap()
                    .starts_with("127.0.0.1:")
            );
            assert_eq!(parsed["fields"]["metrics"], "off");
            break;
        }
    }
    assert!(seen >= 2, "the deny-all warning comes first");
    let _ = child.kill().await;
}
