//! The real binary's command line: bad configurations exit 64 with one line naming the flag,
//! flags are read from `WS_BRIDGE_*` environment variables, and SIGTERM exits 0.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_websocket-bridge"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_configurations_exit_64_with_one_line_naming_the_flag() {
    let dir = tempdir();
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
    ];
    for (args, flag) in cases {
        let (code, stderr) = run_binary(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line, got {stderr}"
        );
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

fn tempdir() -> std::path::PathBuf {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("ws-bridge-cli-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn flags_can_come_from_the_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_websocket-bridge"))
        .env("WS_BRIDGE_MAX_MESSAGE_SIZE", "lots")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--max-message-size"), "{stderr}");
}

#[test]
fn the_binary_serves_and_exits_0_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_websocket-bridge"))
        .env("WS_BRIDGE_ADDRESS", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut saw_warning = false;
    loop {
        let line = lines
            .next()
            .expect("the bridge logs before it listens")
            .unwrap();
        saw_warning |= line.contains("every connection will be refused");
        if line.contains("websocket-bridge listening") {
            break;
        }
    }
    assert!(saw_warning, "deny-all warning at startup");
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the bridge did not exit within 10 s of SIGTERM");
}

fn check_config(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_websocket-bridge"));
    command.args(args).arg("--check-config");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
fn precedence_is_flag_then_environment_then_file_then_default() {
    let dir = tempdir();
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
    );
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
    let (code, out, _) = check_config(&[], &[("WS_BRIDGE_CONFIG", path)]);
    assert_eq!(code, Some(0));
    assert_eq!(value(&out, "max-message-size"), "2048");

    // A flag given on the command line replaces the file's list entirely.
    let (_, out, _) = check_config(&["--config", path, "--allowlist", "x"], &[]);
    assert_eq!(value(&out, "allowlist"), r#"["x"]"#);
}

#[test]
fn check_config_exits_64_on_a_bad_configuration() {
    let dir = tempdir();
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
        let (code, _, err) = check_config(&["--config", file.to_str().unwrap()], &[]);
        assert_eq!(code, Some(64), "{content}: {err}");
        assert!(err.contains(expected), "{content}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let (code, _, err) = check_config(&["--config", "/nonexistent.toml"], &[]);
    assert_eq!(code, Some(64));
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_websocket-bridge"))
        .args(["--address", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = 0;
    loop {
        let line = lines.next().expect("log line").unwrap();
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
    let _ = child.kill();
    let _ = child.wait();
}
