//! `fanout` and `fanout-by-callbacks`: one message to many connections.
//!
//! `fanout`: `--fanout-members` (10,000) members join one channel through the connect hook
//! (`c=`; the backend's `/subscribe` answers 200 with `x-ws-proxy-subscribe`, so each member
//! is in the channel before its handshake is answered). The bench then publishes `--size`
//! (64) byte messages at `--fanout-rate` (20/s) through the bridge's publish API
//! (`POST /channels/{name}` on `--publish-address`), for `--warmup` and then `--duration`.
//! Each message holds its sequence number and its send time on the bench's monotonic clock;
//! the members are in this process ([`crate::member`], one light task each), so the time of
//! the last member's read of each publication is on the same clock. Figures: the bridge's CPU
//! per delivered message over the publishing window; per publication, the time from sending
//! the publish request to the last member's read (p50, p99, max); and whether every member
//! got every publication exactly once, in order.
//!
//! `fanout-by-callbacks`: the same members and messages, fanned out the way a user of a
//! bridge without channels must: one callback POST per member per publication, from
//! `--connections` (64) keep-alive posters. Each member says `join` once; the backend's
//! `/register` notes its callback URL from the frame POST. A publication starts when the
//! previous one is done (every POST answered), at `--fanout-rate` at most.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use hyper::{StatusCode, Uri};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

use super::{Ctx, Window, join_bounded, mark, stop_bridge};
use crate::BoxError;
use crate::bridge::Bridge;
use crate::client::{Poster, open_many_with};
use crate::contract::Needs;
use crate::member::{Member, ReadError, opcode};
use crate::report::{Metric, ScenarioResult, quantile};

/// The channel every member joins.
const CHANNEL: &str = "bench-fanout";
/// Open files the bench needs besides its members (posters, the backend's connections from
/// the bridge, pipes, the runtime).
pub(super) const FILES_HEADROOM: usize = 1024;
/// Longest wait for the last publication to reach every member.
pub(super) const DRAIN_BOUND: Duration = Duration::from_secs(5);
/// Longest wait for every member's callback URL to reach the backend.
const REGISTER_BOUND: Duration = Duration::from_secs(30);
/// Upper bound on opening the members.
pub(super) const OPEN_BOUND: Duration = Duration::from_secs(120);
/// Bytes at the start of each message: the sequence number and the send time.
pub(super) const STAMP: usize = 16;
/// Tries of one callback POST answered 503 (queue full), 1 ms apart.
const TRIES_503: usize = 1000;

/// Targets from issue 13.
mod targets {
    /// Bridge CPU per message delivered to a member, microseconds.
    pub(super) const CPU_PER_DELIVERY_US: f64 = 2.0;
    /// Publish to last delivery, p99, milliseconds.
    pub(super) const LAST_DELIVERY_P99_MS: f64 = 50.0;
}

/// How the publications reach the members.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// One publish request to the channel.
    Channel,
    /// One callback POST per member.
    Callbacks,
}

impl Way {
    fn scenario(self) -> &'static str {
        match self {
            Self::Channel => "fanout",
            Self::Callbacks => "fanout-by-callbacks",
        }
    }
}

/// `fanout`: a channel of `--fanout-members` members, publications at `--fanout-rate`.
pub(crate) async fn fanout(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    run(ctx, Way::Channel).await
}

/// `fanout-by-callbacks`: the same fanout with one callback POST per member.
pub(crate) async fn fanout_by_callbacks(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    run(ctx, Way::Callbacks).await
}

async fn run(ctx: &Ctx<'_>, way: Way) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let members = s.fanout_members;
    if members == 0 {
        return Err("--fanout-members must be at least 1".into());
    }
    if !(s.fanout_rate.is_finite() && s.fanout_rate > 0.0) {
        return Err("--fanout-rate must be positive".into());
    }
    if let Some(limit) = open_files_limit()
        && members + FILES_HEADROOM > limit
    {
        return Err(format!(
            "--fanout-members {members} needs about {} open files in the bench; its limit is {limit}",
            members + FILES_HEADROOM
        )
        .into());
    }
    let needs = Needs {
        publish: way == Way::Channel,
        ..Needs::default()
    };
    let mut bridge = ctx.start_bridge(way.scenario(), needs).await?;
    let outcome = measure_fanout(ctx, &mut bridge, way).await;
    let stopped = stop_bridge(bridge).await;
    let mut result = outcome?;
    result.details["bridge"] = stopped;
    Ok(result)
}

/// What the publisher and the members share: per publication, when it was sent and how it
/// arrived. Times are nanoseconds since `clock`.
pub(super) struct Book {
    clock: Instant,
    pub(super) sent_ns: Vec<AtomicU64>,
    delivered: Vec<AtomicU32>,
    pub(super) first_ns: Vec<AtomicU64>,
    pub(super) last_ns: Vec<AtomicU64>,
}

impl Book {
    pub(super) fn new(capacity: usize) -> Self {
        let zeros = || (0..capacity).map(|_| AtomicU64::new(0)).collect();
        Self {
            clock: Instant::now(),
            sent_ns: zeros(),
            delivered: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            first_ns: (0..capacity).map(|_| AtomicU64::new(u64::MAX)).collect(),
            last_ns: zeros(),
        }
    }

    fn capacity(&self) -> usize {
        self.sent_ns.len()
    }

    pub(super) fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A member read publication `seq` at `at`.
    fn arrived(&self, seq: usize, at: u64) {
        self.delivered[seq].fetch_add(1, Ordering::Relaxed);
        self.first_ns[seq].fetch_min(at, Ordering::Relaxed);
        self.last_ns[seq].fetch_max(at, Ordering::Relaxed);
    }

    pub(super) fn delivered(&self, seq: usize) -> u64 {
        u64::from(self.delivered[seq].load(Ordering::Relaxed))
    }

    /// Publications `range` that reached `members` members (or more).
    pub(super) fn complete(&self, range: std::ops::Range<usize>, members: usize) -> bool {
        range
            .into_iter()
            .all(|seq| self.delivered(seq) >= members as u64)
    }
}

/// Message `seq`: its sequence number and send time (little-endian u64s), then padding.
pub(super) fn message(size: usize, seq: usize, sent_ns: u64) -> Bytes {
    let mut body = BytesMut::with_capacity(size.max(STAMP));
    body.put_u64_le(seq as u64);
    body.put_u64_le(sent_ns);
    body.resize(size.max(STAMP), 0xA5);
    body.freeze()
}

/// What one member saw.
#[derive(Default)]
pub(super) struct Tally {
    /// Publications received at least once.
    distinct: u64,
    /// Receipts of a publication already received.
    duplicates: u64,
    /// Publications received after a later one.
    out_of_order: u64,
    /// Frames that were not a publication (text, fragments, unknown sequence numbers).
    unexpected: u64,
    /// How the member stopped listening: `None` when told to, else why it stopped early.
    lost: Option<String>,
}

/// One member's loop: reads publications until `stop`, noting each in `book` and in its
/// tally. With `hello`, first sends it as a text message (to register its callback URL).
pub(super) async fn listen(
    mut member: Member,
    book: Arc<Book>,
    stop: Arc<Notify>,
    hello: Option<&'static str>,
) -> Tally {
    let stopped = stop.notified();
    tokio::pin!(stopped);
    stopped.as_mut().enable();
    let mut tally = Tally::default();
    if let Some(text) = hello
        && let Err(e) = member.send(opcode::TEXT, text.as_bytes()).await
    {
        tally.lost = Some(format!("could not say {text}: {e}"));
        return tally;
    }
    let mut seen = vec![0u64; book.capacity().div_ceil(64)];
    let mut highest = None;
    loop {
        let frame = tokio::select! {
            biased;
            () = &mut stopped => return tally,
            frame = member.next() => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(ReadError::Eof) => {
                tally.lost = Some("the bridge closed the connection".to_owned());
                return tally;
            }
            Err(e) => {
                tally.lost = Some(e.to_string());
                return tally;
            }
        };
        match frame.opcode {
            opcode::BINARY if frame.fin => {
                let seq = frame
                    .payload
                    .get(..8)
                    .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
                    .map(u64::from_le_bytes)
                    .and_then(|seq| usize::try_from(seq).ok())
                    .filter(|seq| *seq < book.capacity());
                let Some(seq) = seq else {
                    tally.unexpected += 1;
                    continue;
                };
                book.arrived(seq, book.now_ns());
                let (word, bit) = (seq / 64, 1u64 << (seq % 64));
                if seen[word] & bit != 0 {
                    tally.duplicates += 1;
                    continue;
                }
                seen[word] |= bit;
                tally.distinct += 1;
                match highest {
                    Some(high) if seq < high => tally.out_of_order += 1,
                    _ => highest = Some(seq),
                }
            }
            opcode::PING => {
                let payload = frame.payload.to_vec();
                if let Err(e) = member.send(opcode::PONG, &payload).await {
                    tally.lost = Some(format!("could not answer a ping: {e}"));
                    return tally;
                }
            }
            opcode::PONG => {}
            opcode::CLOSE => {
                let code = frame
                    .payload
                    .get(..2)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                let echo = frame.payload.get(..2).unwrap_or_default().to_vec();
                let _ = member.send(opcode::CLOSE, &echo).await;
                tally.lost = Some(format!("the bridge closed with {code}"));
                return tally;
            }
            // Text, fragments (continuation or not final), reserved opcodes.
            _ => tally.unexpected += 1,
        }
    }
}

/// Where the publications go.
enum Publisher {
    /// `POST /channels/{CHANNEL}` on the publish API.
    Channel { poster: Poster, path: Uri },
    /// One POST per callback URL, the URLs split among the posters.
    Callbacks {
        posters: Vec<Poster>,
        targets: Arc<[Uri]>,
    },
}

/// What one publication did, as its publisher saw it.
#[derive(Default, Clone, Copy)]
struct Published {
    /// Members the bridge queued it for (publish answer), or callback POSTs answered 2xx.
    recipients: u64,
    /// Members the bridge evicted as slow consumers (publish answer).
    evicted: u64,
    /// Callback POSTs answered 503 and tried again.
    retried: u64,
    /// Callback POSTs that failed for good.
    failed: u64,
}

impl Publisher {
    async fn publish(&mut self, body: Bytes) -> Result<Published, BoxError> {
        match self {
            Self::Channel { poster, path } => {
                let (status, answer) = poster
                    .exchange(
                        path,
                        "application/octet-stream",
                        Some("application/json"),
                        body,
                    )
                    .await?;
                if status != StatusCode::OK {
                    return Err(format!(
                        "the publish API answered {status}: {}",
                        String::from_utf8_lossy(&answer).trim()
                    )
                    .into());
                }
                let counts: serde_json::Value = serde_json::from_slice(&answer)?;
                let count = |key: &str| counts.get(key).and_then(serde_json::Value::as_u64);
                Ok(Published {
                    recipients: count("recipients").ok_or("no recipients in the answer")?,
                    evicted: count("evicted").unwrap_or(0),
                    ..Published::default()
                })
            }
            Self::Callbacks { posters, targets } => {
                let shares = posters.len();
                let mut tasks = JoinSet::new();
                for (i, poster) in std::mem::take(posters).into_iter().enumerate() {
                    tasks.spawn(post_share(
                        poster,
                        Arc::clone(targets),
                        (i, shares),
                        body.clone(),
                    ));
                }
                let mut total = Published::default();
                while let Some(joined) = tasks.join_next().await {
                    let (poster, done) = joined?;
                    posters.push(poster);
                    total.recipients += done.recipients;
                    total.retried += done.retried;
                    total.failed += done.failed;
                }
                Ok(total)
            }
        }
    }
}

/// POSTs `body` to every `shares.1`-th target starting at `shares.0`, one after another.
async fn post_share(
    mut poster: Poster,
    targets: Arc<[Uri]>,
    (first, step): (usize, usize),
    body: Bytes,
) -> (Poster, Published) {
    let mut done = Published::default();
    for target in targets.iter().skip(first).step_by(step) {
        let mut tries = 0;
        loop {
            tries += 1;
            match poster
                .post(target, "application/octet-stream", body.clone())
                .await
            {
                Ok(status) if status.is_success() => {
                    done.recipients += 1;
                    break;
                }
                Ok(StatusCode::SERVICE_UNAVAILABLE) if tries < TRIES_503 => {
                    done.retried += 1;
                    sleep(Duration::from_millis(1)).await;
                }
                _ => {
                    done.failed += 1;
                    break;
                }
            }
        }
    }
    (poster, done)
}

/// Opens the members, publishes, measures and tallies.
async fn measure_fanout(
    ctx: &Ctx<'_>,
    bridge: &mut Bridge,
    way: Way,
) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let scenario = way.scenario();
    let members = s.fanout_members;
    let backend = ctx.backend;
    let (url, hello) = match way {
        Way::Channel => {
            let hook = backend.url(&format!("/subscribe?channel={CHANNEL}"));
            let url = ctx
                .side
                .kind
                .connect_url_with_hook(
                    bridge.addr(),
                    &backend.url("/sink"),
                    &backend.url("/disconnect"),
                    &hook,
                )
                .ok_or("this bridge has no connect hook")?;
            (url, None)
        }
        Way::Callbacks => (ctx.connect_url(bridge, "/register"), Some("join")),
    };
    backend.take_registered();
    let subscribed_before = backend.stats().subscribed.load(Ordering::Relaxed);

    // Members join: handshakes (and, for channels, the hook's answer joining them).
    let cpu_before_open = bridge.cpu_seconds()?;
    let opening = Instant::now();
    let url: Arc<str> = Arc::from(url);
    let (open, failed, last_error) = open_many_with(
        members,
        s.handshake_concurrency,
        opening + OPEN_BOUND,
        move || {
            let url = Arc::clone(&url);
            async move { Member::connect(&url).await }
        },
    )
    .await;
    let open_seconds = opening.elapsed().as_secs_f64();
    let cpu_per_join_us = (bridge.cpu_seconds()? - cpu_before_open) * 1e6 / members as f64;
    if failed > 0 {
        return Err(format!(
            "{failed} of {members} members could not connect: {}",
            last_error.unwrap_or_default()
        )
        .into());
    }
    let window_seconds = s.warmup + s.duration;
    let capacity = (s.fanout_rate * window_seconds.as_secs_f64()).ceil() as usize + 1;
    let book = Arc::new(Book::new(capacity));
    let stop = Arc::new(Notify::new());
    let mut listeners = JoinSet::new();
    for member in open {
        listeners.spawn(listen(member, Arc::clone(&book), Arc::clone(&stop), hello));
    }

    let mut publisher = match way {
        Way::Channel => Publisher::Channel {
            poster: Poster::new(
                bridge
                    .publish_addr()
                    .ok_or("the bridge has no publish API")?,
            ),
            path: format!("/channels/{CHANNEL}").parse()?,
        },
        Way::Callbacks => {
            let deadline = Instant::now() + REGISTER_BOUND;
            while backend.registered() < members && Instant::now() < deadline {
                sleep(Duration::from_millis(10)).await;
            }
            let targets = backend.take_registered();
            if targets.len() != members {
                stop.notify_waiters();
                return Err(format!(
                    "{} of {members} members' callback URLs reached the backend",
                    targets.len()
                )
                .into());
            }
            Publisher::Callbacks {
                posters: (0..s.connections)
                    .map(|_| Poster::new(bridge.addr()))
                    .collect(),
                targets: targets.into(),
            }
        }
    };
    let rss_kib = bridge.rss_kib().ok();

    // Publish: publication `seq` is due at start + seq / rate, sent late (never skipped)
    // when the previous one took longer; the window starts with the first sent at or after t0.
    let interval = Duration::from_secs_f64(1.0 / s.fanout_rate);
    let start = Instant::now() + Duration::from_millis(100);
    let t0 = start + s.warmup;
    let t1 = t0 + s.duration;
    let nothing = AtomicU64::new(0);
    let mut window_start = None;
    let mut published = 0;
    let mut answers = Vec::with_capacity(capacity);
    for seq in 0..capacity {
        let due = start + interval.mul_f64(seq as f64);
        if due >= t1 || Instant::now() >= t1 {
            break;
        }
        sleep_until(due).await;
        if window_start.is_none() && Instant::now() >= t0 {
            let (snapshot, _, _) = mark(ctx, bridge, scenario, "start", &nothing).await?;
            window_start = Some((seq, snapshot));
        }
        let sent = book.now_ns();
        book.sent_ns[seq].store(sent, Ordering::Relaxed);
        let outcome = publisher.publish(message(s.size, seq, sent)).await;
        let answered = book.now_ns();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                stop.notify_waiters();
                return Err(format!("publication {seq}: {e}").into());
            }
        };
        answers.push((answered - sent, outcome));
        published = seq + 1;
    }
    let Some((first_measured, start_snapshot)) = window_start else {
        stop.notify_waiters();
        return Err("no publication was sent inside the measurement window".into());
    };
    // The window ends when the last publication has reached every member (or after a bound).
    let drain_until = Instant::now() + DRAIN_BOUND;
    while !book.complete(0..published, members) && Instant::now() < drain_until {
        sleep(Duration::from_millis(1)).await;
    }
    let (end_snapshot, dump, _) = mark(ctx, bridge, scenario, "end", &nothing).await?;
    let mut window = Window::between(&start_snapshot, &end_snapshot);
    if let Some((ir, path)) = dump {
        window.instructions = Some(ir);
        window.dump = Some(path);
    }
    window.events = (first_measured..published)
        .map(|seq| book.delivered(seq) as f64)
        .sum();
    window.warn_if_noisy(scenario);

    stop.notify_waiters();
    let tallies = join_bounded(&mut listeners, Instant::now() + Duration::from_secs(5)).await;
    let verdict = Verdict::of(&tallies, members, published);

    // Latencies of the window's publications that reached every member.
    let mut last = Vec::new();
    let mut first = Vec::new();
    let mut incomplete = 0;
    for seq in first_measured..published {
        if book.delivered(seq) < members as u64 {
            incomplete += 1;
            continue;
        }
        let sent = book.sent_ns[seq].load(Ordering::Relaxed);
        last.push(Duration::from_nanos(
            book.last_ns[seq]
                .load(Ordering::Relaxed)
                .saturating_sub(sent),
        ));
        first.push(Duration::from_nanos(
            book.first_ns[seq]
                .load(Ordering::Relaxed)
                .saturating_sub(sent),
        ));
    }
    last.sort_unstable();
    first.sort_unstable();
    let mut answer_times: Vec<Duration> = answers[first_measured..]
        .iter()
        .map(|(ns, _)| Duration::from_nanos(*ns))
        .collect();
    answer_times.sort_unstable();
    let quantile_ms = |sorted: &[Duration], q: f64| {
        if sorted.is_empty() {
            f64::NAN
        } else {
            quantile(sorted, q).as_secs_f64() * 1e3
        }
    };
    let sum = |pick: fn(&Published) -> u64| answers.iter().map(|(_, p)| pick(p)).sum::<u64>();
    let short_answers = answers
        .iter()
        .filter(|(_, p)| p.recipients < members as u64)
        .count();
    let measured = published - first_measured;

    let callgrind = ctx.callgrind();
    let mut metrics = Vec::new();
    if way == Way::Channel {
        metrics.push(window.cost(
            "bridge CPU per delivery",
            "bridge instructions per delivery",
            Some(targets::CPU_PER_DELIVERY_US),
        ));
        metrics.extend(window.kernel_cost());
    } else if callgrind {
        metrics.push(Metric::info(
            "bridge instructions per delivery",
            window.instructions_per_event(),
            "Ir",
        ));
    } else {
        metrics.push(Metric::info(
            "bridge CPU per delivery",
            window.bridge_us_per_event(),
            "us",
        ));
    }
    let p99 = quantile_ms(&last, 0.99);
    metrics.extend([
        Metric::info(
            "publish to last delivery p50",
            quantile_ms(&last, 0.5),
            "ms",
        ),
        if way == Way::Channel && !callgrind {
            Metric::at_most(
                "publish to last delivery p99",
                p99,
                "ms",
                targets::LAST_DELIVERY_P99_MS,
            )
        } else {
            Metric::info("publish to last delivery p99", p99, "ms")
        },
        Metric::info(
            "publish to last delivery max",
            quantile_ms(&last, 1.0),
            "ms",
        ),
        Metric::at_most("deliveries missing", verdict.missing as f64, "msgs", 0.0),
        Metric::at_most(
            "deliveries duplicated",
            verdict.duplicates as f64,
            "msgs",
            0.0,
        ),
        Metric::at_most(
            "deliveries out of order",
            verdict.out_of_order as f64,
            "msgs",
            0.0,
        ),
        Metric::info("deliveries/s", window.rate(), "msg/s"),
        Metric::info("publications/s", measured as f64 / window.seconds, "pub/s"),
        // Joining is the handshake plus, for the channel, the connect hook's answer.
        Metric::info(
            match way {
                Way::Channel => "members joined/s",
                Way::Callbacks => "members connected/s",
            },
            members as f64 / open_seconds,
            "/s",
        ),
        Metric::info("bridge CPU per join", cpu_per_join_us, "us"),
        Metric::info(
            "bridge cores busy",
            window.bridge_cpu / window.seconds,
            "cores",
        ),
    ]);
    Ok(ScenarioResult {
        name: scenario.to_owned(),
        metrics,
        details: json!({
            "members": members,
            "channel": (way == Way::Channel).then_some(CHANNEL),
            "message_bytes": s.size.max(STAMP),
            "rate_asked_per_second": s.fanout_rate,
            "publications": published,
            "publications_in_window": measured,
            "publications_incomplete_in_window": incomplete,
            "publish_answer_ms": {
                "p50": quantile_ms(&answer_times, 0.5),
                "p99": quantile_ms(&answer_times, 0.99),
                "max": quantile_ms(&answer_times, 1.0),
            },
            "publish_to_first_delivery_ms": {
                "p50": quantile_ms(&first, 0.5),
                "p99": quantile_ms(&first, 0.99),
                "max": quantile_ms(&first, 1.0),
            },
            "publish_to_last_delivery_ms_each": last.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "answers_short_of_all_members": short_answers,
            "recipients_total": sum(|p| p.recipients),
            "evicted_total": sum(|p| p.evicted),
            "callbacks_retried_503": sum(|p| p.retried),
            "callbacks_failed": sum(|p| p.failed),
            "members_reporting": tallies.len(),
            "members_lost": verdict.lost,
            "member_lost_example": verdict.lost_example,
            "unexpected_frames": verdict.unexpected,
            "connect_hook_calls": backend.stats().subscribed.load(Ordering::Relaxed) - subscribed_before,
            "open_seconds": open_seconds,
            "bridge_rss_kib_with_members": rss_kib,
            "window": window.details(),
        }),
    })
}

/// The members' tallies summed: deliveries missing, duplicated, out of order.
pub(super) struct Verdict {
    pub(super) missing: u64,
    pub(super) duplicates: u64,
    pub(super) out_of_order: u64,
    pub(super) unexpected: u64,
    /// Members that stopped listening before they were told to (closed, reset, errors).
    pub(super) lost: usize,
    pub(super) lost_example: Option<String>,
}

impl Verdict {
    /// Members that did not report at all count every publication as missing.
    pub(super) fn of(tallies: &[Tally], members: usize, published: usize) -> Self {
        let silent = members.saturating_sub(tallies.len()) as u64;
        let mut verdict = Self {
            missing: silent * published as u64,
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
            lost: 0,
            lost_example: None,
        };
        for tally in tallies {
            verdict.missing += (published as u64).saturating_sub(tally.distinct);
            verdict.duplicates += tally.duplicates;
            verdict.out_of_order += tally.out_of_order;
            verdict.unexpected += tally.unexpected;
            if let Some(why) = &tally.lost {
                verdict.lost += 1;
                verdict.lost_example.get_or_insert_with(|| why.clone());
            }
        }
        verdict
    }
}

/// The soft limit on open files of this process (`/proc/self/limits`), if known.
pub(super) fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_number_and_send_time() {
        let body = message(64, 7, 123_456);
        assert_eq!(body.len(), 64);
        assert_eq!(body[..8], 7u64.to_le_bytes());
        assert_eq!(body[8..16], 123_456u64.to_le_bytes());
        assert_eq!(message(4, 1, 2).len(), STAMP);
    }

    #[test]
    fn tallies_add_up_to_a_verdict() {
        let whole = Tally {
            distinct: 10,
            ..Tally::default()
        };
        let flawed = Tally {
            distinct: 8,
            duplicates: 1,
            out_of_order: 2,
            lost: Some("reset".to_owned()),
            ..Tally::default()
        };
        let verdict = Verdict::of(&[whole, flawed], 3, 10);
        // The third member never reported: all 10 missing; the flawed one misses 2.
        assert_eq!(verdict.missing, 12);
        assert_eq!((verdict.duplicates, verdict.out_of_order), (1, 2));
        assert_eq!(verdict.lost, 1);
    }

    #[test]
    fn the_book_knows_when_a_publication_is_complete() {
        let book = Book::new(4);
        book.arrived(0, 10);
        book.arrived(0, 5);
        assert!(book.complete(0..1, 2));
        assert!(!book.complete(0..2, 2));
        assert_eq!(book.first_ns[0].load(Ordering::Relaxed), 5);
        assert_eq!(book.last_ns[0].load(Ordering::Relaxed), 10);
    }
}
