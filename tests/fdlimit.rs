//! The open-files limit, on the real binary started under `prlimit`: a stock soft limit (1024)
//! is raised to the hard limit, so thousands of clients fit; a limit too small for
//! `--max-connections` is reported at startup and answered with 503 at the handshake, while
//! health checks and callbacks keep working.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::real::RealBridge;
use common::*;
use futures_util::{StreamExt, stream};
use tokio_tungstenite::tungstenite::Message;

/// WebSocket connections the bridge must hold when started with a soft limit of 1024.
const MANY: usize = 3_000;

/// Handshakes (each followed by a frame) or callbacks in flight at once from this test: enough
/// to be quick, few enough not to overflow the listen backlog.
const IN_FLIGHT: usize = 64;

/// The same under the 256 limit, where the bridge keeps 112 descriptors for HTTP: 16 frame
/// POSTs, 16 callback connections and 16 refused handshakes at a time fit in them with room
/// to spare, as the reserve promises for traffic within `--backend-max-connections` and
/// the callback connections it keeps room for.
const IN_FLIGHT_SMALL: usize = 16;

/// The test process holds as many sockets as the bridge: raise its own soft limit to the hard
/// limit first; returns the hard limit.
fn raise_own_limit(needed: u64) -> u64 {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let soft = rlimit::increase_nofile_limit(hard).unwrap();
    assert!(
        soft >= needed,
        "this test needs {needed} open files in the test process; the hard limit is {hard}"
    );
    hard
}

/// The value of `key=` in the bridge's startup line.
fn startup_field(bridge: &RealBridge, key: &str) -> String {
    let line = &bridge.startup;
    let start = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        + key.len()
        + 1;
    line[start..].split_whitespace().next().unwrap().to_owned()
}

/// Connects `n` clients, client `i` sending the text `i`; returns them in order with their
/// callback URLs, read from the frame POSTs the backend received.
async fn connect_and_learn_callbacks(
    bridge: &RealBridge,
    backend: &Backend,
    n: usize,
    in_flight: usize,
) -> Vec<(Client, String)> {
    let url = bridge.connect_url(&backend.url("/frame"), None);
    let mut clients: Vec<Client> = stream::iter(0..n)
        .map(|i| {
            let url = url.clone();
            async move {
                let mut client = connect(&url).await;
                send_text(&mut client, &i.to_string()).await;
                client
            }
        })
        .buffered(in_flight)
        .collect()
        .await;
    let mut callbacks = vec![String::new(); n];
    for frame in backend.wait_for("/frame", n).await {
        let i: usize = String::from_utf8_lossy(&frame.body).parse().unwrap();
        callbacks[i] = frame.header("x-ws-proxy-send").unwrap().to_owned();
    }
    clients.drain(..).zip(callbacks).collect()
}

/// POSTs `to {i}` to each client's callback URL (each must answer 202), then checks every
/// client received its own message.
async fn answer_each(clients: &mut [(Client, String)], in_flight: usize) {
    let http = http_client();
    let statuses: Vec<u16> = stream::iter(clients.iter().enumerate())
        .map(|(i, (_, callback))| {
            let request = http
                .post(callback)
                .header("content-type", "text/plain")
                .body(format!("to {i}"));
            async move { request.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|&s| s == 202),
        "callback statuses other than 202: {:?}",
        statuses.iter().filter(|&&s| s != 202).collect::<Vec<_>>()
    );
    for (i, (client, _)) in clients.iter_mut().enumerate() {
        assert_eq!(next_message(client).await, Message::text(format!("to {i}")));
    }
}

async fn healthz(bridge: &RealBridge) -> (u16, String) {
    let response = http_client()
        .get(format!("http://{}/healthz", bridge.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_soft_limit_is_raised_and_three_thousand_clients_get_callbacks() {
    bounded(async {
        let hard = raise_own_limit(2 * MANY as u64);
        let backend = Backend::start().await;
        let allow = backend.allowlist();
        // Every client comes from 127.0.0.1: lift the per-address limit (default 1000).
        let args = ["--allowlist", &allow, "--max-connections-per-ip", "0"];
        let bridge = RealBridge::spawn_with_open_files(&args, 1024, hard).await;
        assert_eq!(startup_field(&bridge, "open_files_limit"), hard.to_string());
        assert_eq!(startup_field(&bridge, "max_connections"), "10000");
        assert_eq!(
            bridge.lines_containing("raised the open-files limit (RLIMIT_NOFILE)"),
            1
        );

        let mut clients = connect_and_learn_callbacks(&bridge, &backend, MANY, IN_FLIGHT).await;
        answer_each(&mut clients, IN_FLIGHT).await;
        let open_files = bridge.open_files();
        assert!(
            open_files > MANY,
            "{open_files} descriptors open in the bridge while it holds {MANY} clients"
        );
        assert_eq!(healthz(&bridge).await.0, 200);
        eprintln!(
            "soft limit 1024 raised to {hard}: {MANY} clients held and answered through their callbacks; {open_files} descriptors open in the bridge"
        );
        drop(clients);
        let log = bridge.stop().await;
        assert!(
            !log.iter()
                .any(|l| l.contains("accept failed") || l.contains("refused")),
            "no accept failures or refusals expected: {:#?}",
            log.iter()
                .filter(|l| l.contains("accept failed") || l.contains("refused"))
                .collect::<Vec<_>>()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_too_small_is_reported_and_answered_with_503_while_probes_and_callbacks_work() {
    bounded(async {
        const ATTEMPTS: usize = 200;
        raise_own_limit(2 * ATTEMPTS as u64);
        let backend = Backend::start().await;
        let allow = backend.allowlist();
        let bridge = RealBridge::spawn_with_open_files(&["--allowlist", &allow], 256, 256).await;

        // The startup warning gives the numbers and the fixes.
        let warning = bridge
            .log_lines()
            .into_iter()
            .find(|l| l.contains("open-files limit (RLIMIT_NOFILE) is 256"))
            .expect("a startup warning about the open-files limit");
        assert!(warning.contains("WARN"), "{warning}");
        for fix in ["ulimit -n", "LimitNOFILE=", "lower --max-connections"] {
            assert!(warning.contains(fix), "{fix:?} missing from {warning}");
        }
        assert_eq!(startup_field(&bridge, "open_files_limit"), "256");
        let held: usize = startup_field(&bridge, "max_connections").parse().unwrap();
        assert!(
            (1..ATTEMPTS).contains(&held),
            "the 256-descriptor bridge holds {held} connections"
        );

        // Fill it: the first `held` clients are served, and answered through callbacks.
        let mut clients = connect_and_learn_callbacks(&bridge, &backend, held, IN_FLIGHT_SMALL).await;
        answer_each(&mut clients, IN_FLIGHT_SMALL).await;

        // Every further handshake gets 503 with Retry-After, saying why.
        let url = bridge.connect_url(&backend.url("/frame"), None);
        let refusals: Vec<(u16, Option<String>, String)> =
            stream::iter(held..ATTEMPTS)
                .map(|_| {
                    let url = url.clone();
                    async move {
                        match try_connect(&url).await {
                            Ok(_) => panic!("a handshake beyond the descriptor budget succeeded"),
                            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
                                response.status().as_u16(),
                                response
                                    .headers()
                                    .get("retry-after")
                                    .map(|v| v.to_str().unwrap().to_owned()),
                                String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[]))
                                    .into_owned(),
                            ),
                            Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
                        }
                    }
                })
                .buffer_unordered(IN_FLIGHT_SMALL)
                .collect()
                .await;
        for (status, retry_after, body) in &refusals {
            assert_eq!(*status, 503, "{body}");
            assert_eq!(retry_after.as_deref(), Some("1"));
            assert!(body.contains("open-files limit (256)"), "{body}");
        }

        // Probes and callbacks still work with the bridge full.
        assert_eq!(healthz(&bridge).await, (200, "ok\n".to_owned()));
        answer_each(&mut clients, IN_FLIGHT_SMALL).await;
        eprintln!(
            "limit 256:256: {held} clients held and answered, {} handshakes refused with 503, /healthz 200; {} descriptors open in the bridge",
            refusals.len(),
            bridge.open_files()
        );
        drop(clients);
        // The whole log, once the process is gone: no failure can come later.
        let log = bridge.stop().await;
        let lines = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
        assert!(lines("open-files limit (256)") >= 1);
        assert_eq!(lines("accept failed"), 0);
    })
    .await;
}
