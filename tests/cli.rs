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
