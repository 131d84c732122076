//! GRIP publisher libraries as real backends: Python's `gripcontrol` (`tests/grip/publish.py`)
//! and Node's `@fanoutio/grip` (`tests/grip/publish.mjs`) run as child processes and publish to
//! a channel whose members joined through the callback API. Without a publish secret they get
//! through with no key; with one, the library's JWT (`control_iss` + `key`) and its plain bearer
//! key (`key` alone) get through, while a wrong key, no key and an expired JWT get 401 and
//! deliver nothing. The README's two snippets run as they are, the address aside.
//!
//! A library that is missing makes its tests print `SKIPPED: …` and pass, except under CI (`CI`
//! set), where they fail: `.ci/run` installs both (pip, `npm ci` in `tests/grip`).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Output, Stdio};

use common::*;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

/// 32 bytes: PyJWT warns about shorter HMAC keys.
const SECRET: &str = "publish-secret-publish-secret-32";
const WRONG: &str = "another-secret-another-secret-32";
/// The secret the README's snippets are written with.
const README_SECRET: &str = "change-me-to-your-publish-secret";
/// The publish address the README's snippets are written with.
const README_URL: &str = "http://127.0.0.1:5561";

/// One publisher library and how to run it.
struct Library {
    name: &'static str,
    program: &'static str,
    /// The publisher script, in `tests/grip` (where the programs run, so that Node finds
    /// `tests/grip/node_modules`).
    script: &'static str,
    /// Arguments that succeed exactly when the library can be imported.
    probe: &'static [&'static str],
    /// Arguments that run a program given as the next argument.
    eval: &'static [&'static str],
    /// How to install it, for the message when it is missing.
    install: &'static str,
    /// How the README's snippet for it starts (its fence and first line).
    readme_snippet: &'static str,
    /// A close as the script takes it, and the reason members then see.
    close: (&'static str, &'static str),
}

const GRIPCONTROL: Library = Library {
    name: "gripcontrol (Python)",
    program: "python3",
    script: "publish.py",
    probe: &["-c", "import gripcontrol"],
    eval: &["-c"],
    install: "pip install -r tests/grip/requirements.txt",
    readme_snippet: "```python\nfrom gripcontrol import",
    close: ("close:4000:bye", "bye"),
};

const FANOUTIO_GRIP: Library = Library {
    name: "@fanoutio/grip (Node)",
    program: "node",
    script: "publish.mjs",
    probe: &["--input-type=module", "-e", "import '@fanoutio/grip'"],
    eval: &["--input-type=module", "-e"],
    install: "cd tests/grip && npm ci",
    readme_snippet: "```js\nimport { Publisher",
    // @fanoutio/grip's WebSocketMessageFormat has a close code and no reason.
    close: ("close:4000", ""),
};

const GRIP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grip");

/// What the library is given to authorize its publishes (`--auth` of the scripts).
#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    None,
    Jwt(&'a str),
    Bearer(&'a str),
    ExpiredJwt(&'a str),
}

impl Library {
    /// Whether the library is there; under CI, panics when it is not.
    fn installed(&self) -> bool {
        let works = std::process::Command::new(self.program)
            .args(self.probe)
            .current_dir(GRIP_DIR)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !works {
            let why = format!("{} is not installed ({})", self.name, self.install);
            assert!(
                std::env::var_os("CI").is_none(),
                "{why}; .ci/run installs it"
            );
            eprintln!("SKIPPED: {why}");
        }
        works
    }

    fn command(&self) -> Command {
        let mut command = Command::new(self.program);
        command
            .current_dir(GRIP_DIR)
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs the publisher script: `messages` to `channel` at `url`, authorized by `auth`.
    async fn publish(&self, url: &str, channel: &str, auth: Auth<'_>, messages: &[&str]) -> Output {
        let mut command = self.command();
        command.arg(self.script).arg(url).arg(channel);
        let (mode, key) = match auth {
            Auth::None => ("none", None),
            Auth::Jwt(key) => ("jwt", Some(key)),
            Auth::Bearer(key) => ("bearer", Some(key)),
            Auth::ExpiredJwt(key) => ("expired-jwt", Some(key)),
        };
        command.args(["--auth", mode]);
        if let Some(key) = key {
            command.args(["--key", key]);
        }
        command.args(messages).output().await.unwrap()
    }

    /// The README's snippet for this library, pointed at `url`.
    fn readme_snippet(&self, url: &str) -> String {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let start = readme
            .find(self.readme_snippet)
            .unwrap_or_else(|| panic!("README has no {:?} snippet", self.readme_snippet));
        let code = &readme[start..];
        let code = &code[code.find('\n').unwrap() + 1..];
        let code = &code[..code.find("\n```").unwrap()];
        assert!(
            code.contains(README_URL) && code.contains(README_SECRET),
            "{code}"
        );
        code.replace(README_URL, url)
    }
}

/// The script's output, for assertion messages.
fn shown(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_published(output: &Output, n: usize) {
    assert!(output.status.success(), "{}", shown(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim(), format!("published {n}"), "{}", shown(output));
}

/// The first publish got 401 with the bridge's reason in its body.
fn assert_refused(output: &Output, why: &str) {
    assert!(!output.status.success(), "{}", shown(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("publish failed: status 401:") && stderr.contains(why),
        "expected 401 ({why}): {}",
        shown(output)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "published 0"
    );
}

/// A client that joined `channel` through the callback API; returns it and its callback URL.
async fn member(
    bridge: &Bridge,
    backend: &Backend,
    frame: &str,
    channel: &str,
) -> (Client, String) {
    let mut client = bridge.client(backend, frame, Some("/disconnect")).await;
    send_text(&mut client, "hello").await;
    let callback = backend.callback_url(frame).await;
    let r = http_client()
        .put(format!("{callback}/channels/{channel}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    (client, callback)
}

async fn expect_closed_with(client: &mut Client, reason: &str) {
    let frame = expect_close(client).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4000, reason)
    );
}

/// No secret on the bridge, no key in the library: two members get text, binary, text and the
/// close, exactly; a client in another channel gets none of it.
async fn publishes_without_a_secret(library: &Library) {
    if !library.installed() {
        return;
    }
    let backend = Backend::start().await;
    let (bridge, publish) =
        Bridge::start_with_publish(&["--allowlist", &backend.allowlist()]).await;
    let (mut first, _) = member(&bridge, &backend, "/a", "room").await;
    let (mut second, _) = member(&bridge, &backend, "/b", "room").await;
    let (mut outsider, outsider_callback) = member(&bridge, &backend, "/c", "other").await;

    let messages = ["text:hello ✓", "bin:00ff10", "text:a:b", library.close.0];
    let output = library
        .publish(&publish, "room", Auth::None, &messages)
        .await;
    assert_published(&output, 4);
    for client in [&mut first, &mut second] {
        assert_eq!(next_message(client).await, Message::text("hello ✓"));
        assert_eq!(
            next_message(client).await,
            Message::binary(vec![0u8, 0xff, 0x10])
        );
        assert_eq!(next_message(client).await, Message::text("a:b"));
        expect_closed_with(client, library.close.1).await;
    }
    // The first message the outsider sees is one sent to it directly.
    let r = http_client()
        .post(&outsider_callback)
        .header("content-type", "text/plain")
        .body("just you")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(next_message(&mut outsider).await, Message::text("just you"));
    outsider.close(None).await.unwrap();
    bridge.shutdown().await;
    let closes: Vec<_> = backend
        .assert_exactly("/disconnect", 3)
        .iter()
        .map(|d| d.header("x-ws-proxy-close-code").map(str::to_owned))
        .collect();
    assert_eq!(
        closes
            .iter()
            .filter(|c| c.as_deref() == Some("4000"))
            .count(),
        2,
        "{closes:?}"
    );
}

/// With `--publish-secret`: a wrong key (as a JWT and as a bearer key), no key and an expired
/// JWT get 401 and deliver nothing; the right key as a JWT and as a bearer key get through.
async fn needs_the_secret(library: &Library) {
    if !library.installed() {
        return;
    }
    let backend = Backend::start().await;
    let (bridge, publish) = Bridge::start_with_publish(&[
        "--allowlist",
        &backend.allowlist(),
        "--publish-secret",
        SECRET,
    ])
    .await;
    let (mut client, _) = member(&bridge, &backend, "/a", "room").await;

    let refusals = [
        (Auth::Jwt(WRONG), "not HS256 signed with a --publish-secret"),
        (Auth::Bearer(WRONG), "matches no --publish-secret"),
        (Auth::None, "no Authorization header"),
        (Auth::ExpiredJwt(SECRET), "the JWT has expired"),
    ];
    for (auth, why) in refusals {
        let output = library
            .publish(&publish, "room", auth, &["text:refused"])
            .await;
        assert_refused(&output, why);
    }
    let output = library
        .publish(
            &publish,
            "room",
            Auth::Jwt(SECRET),
            &["text:by jwt", "bin:01"],
        )
        .await;
    assert_published(&output, 2);
    let output = library
        .publish(
            &publish,
            "room",
            Auth::Bearer(SECRET),
            &["text:by bearer", library.close.0],
        )
        .await;
    assert_published(&output, 2);

    // Every refusal came before these: had one delivered, it would be first.
    assert_eq!(next_message(&mut client).await, Message::text("by jwt"));
    assert_eq!(next_message(&mut client).await, Message::binary(vec![1u8]));
    assert_eq!(next_message(&mut client).await, Message::text("by bearer"));
    expect_closed_with(&mut client, library.close.1).await;
    bridge.shutdown().await;
}

/// The README's snippet, run as it is against a bridge with the README's secret: a member of
/// `room-1` gets "hello", the bytes 0 1 and the close.
async fn the_readme_snippet_publishes(library: &Library) {
    if !library.installed() {
        return;
    }
    let backend = Backend::start().await;
    let (bridge, publish) = Bridge::start_with_publish(&[
        "--allowlist",
        &backend.allowlist(),
        "--publish-secret",
        README_SECRET,
    ])
    .await;
    let (mut client, _) = member(&bridge, &backend, "/a", "room-1").await;
    let output = library
        .command()
        .args(library.eval)
        .arg(library.readme_snippet(&publish))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", shown(&output));
    assert_eq!(next_message(&mut client).await, Message::text("hello"));
    assert_eq!(
        next_message(&mut client).await,
        Message::binary(vec![0u8, 1])
    );
    expect_closed_with(&mut client, library.close.1).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn gripcontrol_publishes_text_binary_and_close_without_a_secret() {
    bounded(publishes_without_a_secret(&GRIPCONTROL)).await;
}

#[tokio::test]
async fn fanoutio_grip_publishes_text_binary_and_close_without_a_secret() {
    bounded(publishes_without_a_secret(&FANOUTIO_GRIP)).await;
}

#[tokio::test]
async fn gripcontrol_needs_the_secret_as_a_jwt_or_bearer_key() {
    bounded(needs_the_secret(&GRIPCONTROL)).await;
}

#[tokio::test]
async fn fanoutio_grip_needs_the_secret_as_a_jwt_or_bearer_key() {
    bounded(needs_the_secret(&FANOUTIO_GRIP)).await;
}

#[tokio::test]
async fn the_readme_gripcontrol_snippet_publishes() {
    bounded(the_readme_snippet_publishes(&GRIPCONTROL)).await;
}

#[tokio::test]
async fn the_readme_fanoutio_grip_snippet_publishes() {
    bounded(the_readme_snippet_publishes(&FANOUTIO_GRIP)).await;
}
