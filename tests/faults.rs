//! Faults over real processes and sockets: a backend process killed with SIGKILL mid-stream and
//! restarted on the same port, a stalled backend under a client pushing as fast as it can, a
//! callback flood at a client that never reads, and EMFILE on accept.
//!
//! Tests 2-4 run the real binary so that its resident memory (`/proc/{pid}/status`), CPU time
//! (`/proc/{pid}/stat`) and open files (`/proc/{pid}/fd`) can be read; they need Linux `/proc`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::real::RealBridge;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers: the real binary, /proc readings, the Python recorder.
// ---------------------------------------------------------------------------------------------

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Clock ticks per second (`getconf CLK_TCK`), normally 100.
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// `tests/backends/recorder.py`: a Python backend process that logs `"{seq} {body}"` per
/// frame POST.
struct Recorder {
    /// Killed when dropped (`kill_on_drop`).
    child: Child,
    /// Its stderr (tracebacks), drained so that it can never block on a full pipe.
    stderr: JoinHandle<String>,
}

impl Recorder {
    /// Starts the recorder on `port`; a port taken in the meantime (another process's
    /// ephemeral port) is retried up to `attempts` times, 100 ms apart, on a fresh port from
    /// `next_port` each time.
    async fn start(log: &Path, attempts: u32, mut next_port: impl FnMut() -> u16) -> Recorder {
        let mut failures = Vec::new();
        for _ in 0..attempts {
            let port = next_port();
            match Recorder::try_start(port, log).await {
                Ok(recorder) => return recorder,
                Err(e) => {
                    eprintln!("recorder.py did not start on port {port}; retrying: {e}");
                    failures.push(format!("port {port}: {e}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("recorder.py did not start: {failures:#?}");
    }

    async fn try_start(port: u16, log: &Path) -> Result<Recorder, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/backends/recorder.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 must be installed");
        let mut stderr = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
            text
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line()).await;
        if let Ok(Ok(Some(ready))) = &line
            && ready == "ready"
        {
            return Ok(Recorder { child, stderr });
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        let stderr = tokio::time::timeout(Duration::from_secs(5), stderr)
            .await
            .map(|r| r.unwrap_or_default())
            .unwrap_or_default();
        Err(format!("stdout {line:?}, stderr {stderr:?}"))
    }

    /// SIGKILL, and reap; returns what it wrote to stderr.
    async fn kill_9(mut self) -> String {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.stderr)
            .await
            .map(|r| r.unwrap_or_default())
            .unwrap_or_default()
    }
}

/// The `(seq, body)` lines of a recorder log (complete lines only).
fn read_log(path: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| {
            let (seq, body) = l.trim_end_matches('\n').split_once(' ').unwrap();
            (seq.parse().unwrap(), body.to_owned())
        })
        .collect()
}

/// Asserts that a log's seqs are strictly increasing by 1 (no gaps, no repeats).
fn assert_consecutive(name: &str, log: &[(u64, String)]) {
    for pair in log.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "{name} log is not consecutive: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A backend process killed with SIGKILL mid-stream, restarted on the same port.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_stream_then_restarted() {
    bounded(async {
        const MESSAGES: u64 = 300;
        let dir = scratch_dir("faults-killed");
        let (log1, log2) = (dir.join("first.log"), dir.join("second.log"));
        let mut port = 0;
        let first = Recorder::start(&log1, 5, || {
            port = free_port();
            port
        })
        .await;

        // 10 retries: backoffs of 50-100, 100-200, 200-400, 400-800 ms, … cover the downtime
        // (500 ms plus Python's start-up) with room to spare; the 15 s budget stays.
        let bridge = Bridge::start(&[
            "--allowlist",
            r"http://127\.0\.0\.1:\d+/.*",
            "--max-messages-per-second",
            "0",
            "--backend-retries",
            "10",
        ])
        .await;
        let frame = format!("http://127.0.0.1:{port}/frame");
        let mut client = connect(&bridge.connect_url(&frame, None)).await;
        let sender = tokio::spawn(async move {
            for i in 0..MESSAGES {
                if let Err(e) = client.send(Message::text(i.to_string())).await {
                    return Err(format!("sending message {i} failed: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Ok(client)
        });

        // Kill -9 once ~100 messages were logged, i.e. while the stream is flowing.
        let deadline = Instant::now() + Duration::from_secs(20);
        while read_log(&log1).len() < 100 {
            assert!(Instant::now() < deadline, "the first backend logged < 100");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let first_stderr = first.kill_9().await;
        let logged_before_kill = read_log(&log1).len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The same port (10 attempts, in case it is briefly held by someone else).
        let second = Recorder::start(&log2, 10, || port).await;

        let mut client = sender.await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = read_log(&log2).last().map(|l| l.0);
            if last == Some(MESSAGES - 1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the second backend's last seq is {last:?} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Nothing more arrives (a late retry would show up as a repeat): the bridge shuts down,
        // which returns once its connection task has finished, every POST made.
        let closing = tokio::spawn(async move {
            let first = tokio::time::timeout(Duration::from_secs(20), client.next()).await;
            let _ = client.flush().await;
            first
        });
        bridge.shutdown().await;
        // The connection was not closed before: the first frame the client gets (nothing else
        // was waiting) is the shutdown's Close.
        match closing.await.unwrap() {
            Ok(Some(Ok(Message::Close(Some(close))))) if close.code == CloseCode::Away => {}
            other => panic!("the client got {other:?}; the connection should have been open"),
        }

        let first_log = read_log(&log1);
        let second_log = read_log(&log2);
        eprintln!(
            "killed with {logged_before_kill} line(s) logged; first log {} line(s) (last {:?}), second log {} line(s) (first {:?})",
            first_log.len(),
            first_log.last(),
            second_log.len(),
            second_log.first()
        );
        assert!(
            first_log.len() < MESSAGES as usize && !second_log.is_empty(),
            "the kill happened mid-stream"
        );
        for (seq, body) in first_log.iter().chain(&second_log) {
            assert_eq!(body, &seq.to_string(), "seq {seq} carries its own message");
        }
        // Each log on its own: strictly increasing by 1, so no seq twice within one log. The
        // first starts at 0.
        assert_eq!(first_log[0].0, 0);
        assert_consecutive("first", &first_log);
        assert_consecutive("second", &second_log);
        // Together: every seq 0..299; the only overlap is the POST in flight at the kill.
        let last_first = first_log.last().unwrap().0;
        let first_second = second_log[0].0;
        assert!(
            first_second == last_first || first_second == last_first + 1,
            "the second log starts at {first_second}, the first ended at {last_first}: a gap or more than one repeat"
        );
        if first_second == last_first {
            assert_eq!(
                first_log.last().unwrap().1,
                second_log[0].1,
                "the repeated seq has the same body"
            );
        }
        assert_eq!(second_log.last().unwrap().0, MESSAGES - 1);

        let second_stderr = second.kill_9().await;
        eprintln!("recorder stderr: first {first_stderr:?}, second {second_stderr:?}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. A stalled backend and a client pushing 200 MB: memory stays bounded.
// ---------------------------------------------------------------------------------------------

/// Growth of the bridge's resident memory (peak included) allowed while a client pushes into a
/// stalled backend. By design the bridge holds at most: the read-ahead (16 messages / 1 MiB),
/// one message in flight to the backend (64 KiB here, plus reqwest's copy), tungstenite's
/// 16 KiB read buffer and one partly read frame. Everything else waits in kernel socket
/// buffers, which are not part of the process's RSS: about 2 MiB in all (measured: +1.5 MiB).
/// 16 MiB leaves room for allocator slack but fails long before 200 MB, and also if the
/// read-ahead stopped honouring its byte limit.
const PUSH_RSS_BOUND: u64 = 16 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_backend_and_a_client_pushing_200_mb_keeps_memory_bounded() {
    bounded(async {
        const TOTAL: usize = 200 * 1024 * 1024;
        let backend = Backend::builder().on("/hang", Reply::never()).start().await;
        let allow = backend.allowlist();
        let bridge = RealBridge::spawn(
            &[
                "--allowlist",
                &allow,
                // Longer than the whole test, so the POST to /hang never times out. (Not
                // 60s: --backend-timeout must stay below --http-idle-timeout, 60s by default.)
                "--backend-timeout",
                "50s",
                "--max-messages-per-second",
                "0",
            ],
            None,
        )
        .await;
        let mut client = connect(&bridge.connect_url(&backend.url("/hang"), None)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = bridge.memory();

        let chunk = Bytes::from(vec![0x5a_u8; 64 * 1024]);
        let mut pushed = 0usize;
        let mut stalled = false;
        let started = Instant::now();
        while pushed < TOTAL {
            match tokio::time::timeout(
                Duration::from_secs(2),
                client.send(Message::Binary(chunk.clone())),
            )
            .await
            {
                Ok(Ok(())) => pushed += chunk.len(),
                Ok(Err(e)) => panic!("send failed after {pushed} bytes: {e}"),
                Err(_) => {
                    stalled = true;
                    break;
                }
            }
        }
        let push_time = started.elapsed();
        // Let the bridge read whatever it is going to read.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = bridge.memory();
        let hung = backend.wait_for("/hang", 1).await;

        eprintln!(
            "pushed {pushed} bytes ({:.1} MiB, {} messages) before backpressure in {push_time:?}; bridge RSS {:.1} MiB -> {:.1} MiB (peak {:.1} MiB); bound +{} MiB",
            mib(pushed as u64),
            pushed / chunk.len(),
            mib(before.rss),
            mib(after.rss),
            mib(after.peak),
            PUSH_RSS_BOUND / MIB
        );
        assert!(
            stalled,
            "the bridge absorbed all {TOTAL} bytes without TCP backpressure"
        );
        assert_eq!(hung[0].seq(), Some(0));
        let grown = after.rss.max(after.peak).saturating_sub(before.rss);
        assert!(
            grown < PUSH_RSS_BOUND,
            "bridge memory grew by {:.1} MiB (RSS {:.1} -> {:.1} MiB, peak {:.1} MiB) while a client pushed {:.1} MiB into a stalled backend; bound {} MiB",
            mib(grown),
            mib(before.rss),
            mib(after.rss),
            mib(after.peak),
            mib(pushed as u64),
            PUSH_RSS_BOUND / MIB
        );
        // Nothing more reached the backend: the bridge process is gone and the backend has
        // read everything it sent.
        drop(client);
        bridge.stop().await;
        backend.wait_until_disconnected().await;
        assert_eq!(
            backend.count("/hang"),
            1,
            "one frame POST in flight, the rest waits"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. A callback flood at a client that never reads.
// ---------------------------------------------------------------------------------------------

/// Growth of the bridge's resident memory (peak included) allowed during the flood. By design:
/// A's send queue (64 messages / 4 MiB), the one message being written to A, the bodies of the
/// 16 concurrent callback POSTs being read (16 × 64 KiB), and hyper's buffers: about 6 MiB
/// (measured: +7 to +8 MiB at the peak). 32 MiB leaves room for allocator slack but fails long
/// before the flood's 125 MiB.
const FLOOD_RSS_BOUND: u64 = 32 * MIB;

/// Time within which B must receive a callback message, flood or not. B's delivery does not
/// wait for A at all; the bound is loose for a loaded 2-core machine.
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_flood_at_a_client_that_never_reads() {
    bounded(async {
        const POSTS: usize = 2000;
        const CONCURRENCY: usize = 16;
        let backend = Backend::start().await;
        let allow = backend.allowlist();
        let bridge = RealBridge::spawn(
            &["--allowlist", &allow, "--max-messages-per-second", "0"],
            None,
        )
        .await;
        let url = bridge.connect_url(&backend.url("/frame"), None);
        // A sends one message and then is never read again.
        let mut a = connect(&url).await;
        send_text(&mut a, "from A").await;
        let mut b = connect(&url).await;
        send_text(&mut b, "from B").await;
        let frames = backend.wait_for("/frame", 2).await;
        let callback_of = |body: &str| {
            frames
                .iter()
                .find(|r| r.body == body.as_bytes())
                .and_then(|r| r.header("x-ws-proxy-send"))
                .unwrap()
                .to_owned()
        };
        let (callback_a, callback_b) = (callback_of("from A"), callback_of("from B"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = bridge.memory();

        let http = http_client();
        let body = Bytes::from(vec![0xa5_u8; 64 * 1024]);
        let next = Arc::new(AtomicUsize::new(0));
        let statuses = Arc::new(Mutex::new(Vec::with_capacity(POSTS)));
        let missing_retry_after = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let (http, body, next, statuses, missing_retry_after, callback) = (
                    http.clone(),
                    body.clone(),
                    Arc::clone(&next),
                    Arc::clone(&statuses),
                    Arc::clone(&missing_retry_after),
                    callback_a.clone(),
                );
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < POSTS {
                        let response = http
                            .post(&callback)
                            .header("content-type", "application/octet-stream")
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        let status = response.status().as_u16();
                        if status == 503 && response.headers().get("retry-after").is_none() {
                            missing_retry_after.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = response.bytes().await;
                        statuses.lock().unwrap().push(status);
                    }
                })
            })
            .collect();

        // B, during the flood (once A's queue is full and 503s are being handed out).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !statuses.lock().unwrap().contains(&503) {
            assert!(Instant::now() < deadline, "no 503 within 30 s of flooding");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let during = deliver_to(&http, &callback_b, &mut b, "to B during the flood").await;
        let answered_at_probe = statuses.lock().unwrap().len();
        for worker in workers {
            worker.await.unwrap();
        }
        let flood_time = started.elapsed();
        let mid = bridge.memory();
        // B, after the flood.
        let after_flood = deliver_to(&http, &callback_b, &mut b, "to B after the flood").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = bridge.memory();

        let statuses = std::mem::take(&mut *statuses.lock().unwrap());
        let accepted = statuses.iter().filter(|s| **s == 202).count();
        let refused = statuses.iter().filter(|s| **s == 503).count();
        let others: Vec<_> = statuses
            .iter()
            .filter(|s| **s != 202 && **s != 503)
            .collect();
        let peak = mid.peak.max(after.peak);
        eprintln!(
            "{POSTS} POSTs of 64 KiB ({CONCURRENCY} concurrent) in {flood_time:?}: {accepted} × 202, {refused} × 503, others {others:?}; B got a message in {during:?} during the flood (after {answered_at_probe} answers) and {after_flood:?} after it; bridge RSS {:.1} MiB -> {:.1} MiB (peak {:.1} MiB); bound +{} MiB",
            mib(before.rss),
            mib(after.rss),
            mib(peak),
            FLOOD_RSS_BOUND / MIB
        );
        assert_eq!(statuses.len(), POSTS);
        assert!(
            others.is_empty(),
            "only 202 and 503 expected (A must stay connected): {others:?}"
        );
        assert!(
            accepted >= 64,
            "at least the send queue's 64 messages are accepted"
        );
        assert!(refused > 0, "a full send queue answers 503");
        assert_eq!(
            missing_retry_after.load(Ordering::Relaxed),
            0,
            "every 503 carries Retry-After"
        );
        assert!(
            during < PROMPT && after_flood < PROMPT,
            "B waited {during:?} during and {after_flood:?} after the flood"
        );
        let grown = peak.max(after.rss).saturating_sub(before.rss);
        assert!(
            grown < FLOOD_RSS_BOUND,
            "bridge memory grew by {:.1} MiB (RSS {:.1} -> {:.1} MiB, peak {:.1} MiB) during a flood of {POSTS} × 64 KiB at a client that never reads; bound {} MiB",
            mib(grown),
            mib(before.rss),
            mib(after.rss),
            mib(peak),
            FLOOD_RSS_BOUND / MIB
        );
        drop((a, b));
        bridge.stop().await;
    })
    .await;
}

/// POSTs `text` to a callback URL and waits for it to arrive at `client`; returns the time.
async fn deliver_to(
    http: &reqwest::Client,
    callback: &str,
    client: &mut Client,
    text: &str,
) -> Duration {
    let started = Instant::now();
    let response = http
        .post(callback)
        .header("content-type", "text/plain")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "callback to B");
    assert_eq!(next_message(client).await, Message::text(text));
    started.elapsed()
}

// ---------------------------------------------------------------------------------------------
// 4. EMFILE on accept: logged once per burst, no busy loop, serving resumes.
// ---------------------------------------------------------------------------------------------

/// The bridge's open-files limit in this test.
const OPEN_FILES: u32 = 48;

/// CPU time the bridge may use over the 2 s it spends in EMFILE: a busy accept loop would use
/// a whole core (2 s); backing off uses next to nothing.
const EMFILE_CPU_BOUND: Duration = Duration::from_millis(500);

const ACCEPT_WARNING: &str = "accept failed; backing off";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emfile_on_accept_is_survived_without_a_busy_loop() {
    bounded(async {
        let backend = Backend::builder().on("/echo", Reply::echo()).start().await;
        let allow = backend.allowlist();
        let bridge = RealBridge::spawn(&["--allowlist", &allow], Some(OPEN_FILES)).await;
        let open_at_start = bridge.open_files();

        // Far more connections than the bridge has file descriptors: the kernel completes them
        // all (listen backlog), the bridge's accept hits EMFILE.
        let mut connections = Vec::new();
        for _ in 0..100 {
            connections.push(TcpStream::connect(&bridge.addr).await.unwrap());
        }
        bridge
            .wait_for_line(ACCEPT_WARNING, Duration::from_secs(10))
            .await;
        let open_in_emfile = bridge.open_files();

        let ticks_per_second = clock_ticks_per_second();
        let (cpu_before, wall_start) = (bridge.cpu_ticks(), Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu_after, wall) = (bridge.cpu_ticks(), wall_start.elapsed());
        let cpu = Duration::from_secs_f64((cpu_after - cpu_before) as f64 / ticks_per_second as f64);
        let warnings_in_emfile = bridge.lines_containing(ACCEPT_WARNING);
        let open_after_window = bridge.open_files();

        // Release the descriptors; the bridge must serve again once its backoff ends.
        drop(connections);
        let http = http_client();
        let healthz = format!("http://{}/healthz", bridge.addr);
        let recovery = Instant::now();
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(2), http.get(&healthz).send()).await;
            match answer {
                Ok(Ok(response)) if response.status() == 200 => {
                    assert_eq!(response.text().await.unwrap(), "ok\n");
                    break;
                }
                other => assert!(
                    recovery.elapsed() < Duration::from_secs(15),
                    "GET /healthz did not answer 200 within 15 s after the connections were closed: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let recovered_in = recovery.elapsed();
        let mut client = connect(&bridge.connect_url(&backend.url("/echo"), None)).await;
        send_text(&mut client, "still serving").await;
        assert_eq!(
            next_message(&mut client).await,
            Message::text("still serving")
        );
        client.close(None).await.unwrap();
        // The whole log, once the process is gone: no warning can come later.
        let log = bridge.stop().await;
        let warnings = log.iter().filter(|l| l.contains(ACCEPT_WARNING)).count();

        eprintln!(
            "limit {OPEN_FILES} open files: {open_at_start} open at start, {open_in_emfile} when EMFILE was logged, {open_after_window} after the window; CPU {cpu:?} over {wall:?} in EMFILE ({} ticks at {ticks_per_second}/s); `{ACCEPT_WARNING}` lines: {warnings_in_emfile} in EMFILE, {warnings} in all; /healthz 200 again {recovered_in:?} after the connections closed",
            cpu_after - cpu_before
        );
        assert!(
            cpu < EMFILE_CPU_BOUND,
            "the bridge used {cpu:?} of CPU over {wall:?} while accept failed with EMFILE: a busy loop"
        );
        assert!(
            (1..=10).contains(&warnings),
            "expected one `{ACCEPT_WARNING}` line per burst, got {warnings}"
        );
        assert!(
            log.iter()
                .filter(|l| l.contains(ACCEPT_WARNING))
                .all(|l| l.contains("WARN")),
            "the accept failure is a warning"
        );
    })
    .await;
}
