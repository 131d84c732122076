//! permessage-deflate (RFC 7692): negotiating it from the client's offers, inflating a client's
//! compressed message under the message-size limit (checked while inflating, so a small
//! message that would inflate to gigabytes fails with 1009 before the memory is spent), and
//! deflating the bridge's messages of at least [`MIN_COMPRESSED`] bytes.
//!
//! By default both directions run without context takeover: every message is compressed on
//! its own, with a compressor and a decompressor per worker thread, reset per message, so a
//! connection holds no compression state at all. `--deflate-context-takeover` lets the peer
//! keep its window across messages; a connection then owns its own state (measured in
//! docs/PERFORMANCE.md).

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use crate::metrics::DeflateMetrics;

/// Outgoing messages shorter than this are sent uncompressed (RSV1 clear): deflate would not
/// shrink them enough to pay for itself.
pub(crate) const MIN_COMPRESSED: usize = 64;

/// The extension's name.
const NAME: &str = "permessage-deflate";

/// The tail every deflated message ends with, removed on the wire (RFC 7692 section 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What was agreed with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The bridge starts every message with an empty window.
    pub(crate) server_no_context_takeover: bool,
    /// The client does.
    pub(crate) client_no_context_takeover: bool,
    /// The largest window the bridge may compress with; below 15 the bridge does not compress
    /// (its compressor only makes 32 KiB windows), which the extension allows per message.
    pub(crate) server_max_window_bits: u8,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 answer.
    pub(crate) fn response(&self, offered_server_bits: bool) -> String {
        let mut out = NAME.to_owned();
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if offered_server_bits {
            out.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        out
    }
}

/// Picks the first permessage-deflate offer of `header` (a `Sec-WebSocket-Extensions` value)
/// the bridge can accept. With `context_takeover` off, the answer asks for no context
/// takeover both ways (allowed whatever the offer says). Returns the agreement and whether the
/// offer named `server_max_window_bits` (the answer must then name it too).
pub(crate) fn negotiate(header: &str, context_takeover: bool) -> Option<(Agreed, bool)> {
    'offers: for offer in header.split(',') {
        let mut params = offer.split(';').map(str::trim);
        if !params.next()?.eq_ignore_ascii_case(NAME) {
            continue;
        }
        let mut agreed = Agreed {
            server_no_context_takeover: !context_takeover,
            client_no_context_takeover: !context_takeover,
            server_max_window_bits: 15,
        };
        let mut seen = Vec::new();
        let mut offered_bits = false;
        for param in params {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            if seen.contains(&name) {
                continue 'offers;
            }
            seen.push(name);
            match (name, value) {
                ("server_no_context_takeover", None) => agreed.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => agreed.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => match window_bits(v) {
                    Some(bits) => {
                        agreed.server_max_window_bits = bits;
                        offered_bits = true;
                    }
                    None => continue 'offers,
                },
                // The client may use any window: the bridge inflates with 32 KiB, which reads
                // every smaller one. Its value, if any, must still be valid.
                ("client_max_window_bits", None) => {}
                ("client_max_window_bits", Some(v)) if window_bits(v).is_some() => {}
                _ => continue 'offers,
            }
        }
        return Some((agreed, offered_bits));
    }
    None
}

fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates to more than the limit.
    TooLarge,
    /// It is not valid deflate data.
    Corrupt,
}

/// A connection's compression: the agreement, and its own state when a side keeps context.
pub(crate) struct Deflate {
    pub(crate) agreed: Agreed,
    inflater: Option<Box<Decompress>>,
    deflater: Option<Box<Compress>>,
    metrics: Arc<DeflateMetrics>,
}

thread_local! {
    /// Shared by every connection without context takeover on this thread; reset per message.
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    static DEFLATER: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

impl Deflate {
    pub(crate) fn new(agreed: Agreed, metrics: Arc<DeflateMetrics>) -> Self {
        metrics.negotiated.inc();
        Deflate {
            metrics,
            inflater: (!agreed.client_no_context_takeover)
                .then(|| Box::new(Decompress::new(false))),
            deflater: (!agreed.server_no_context_takeover && agreed.server_max_window_bits == 15)
                .then(|| Box::new(Compress::new(Compression::fast(), false))),
            agreed,
        }
    }

    /// Inflates one message, at most `limit` bytes of it.
    pub(crate) fn inflate(&mut self, data: &[u8], limit: usize) -> Result<Bytes, InflateError> {
        let message = match self.inflater.as_deref_mut() {
            Some(own) => inflate_with(own, data, limit),
            None => INFLATER.with(|shared| {
                let mut shared = shared.borrow_mut();
                shared.reset(false);
                inflate_with(&mut shared, data, limit)
            }),
        }?;
        self.metrics.in_wire.inc_by(data.len() as u64);
        self.metrics.in_message.inc_by(message.len() as u64);
        Ok(message)
    }

    /// The message as it goes on the wire, and whether it is compressed (RSV1).
    pub(crate) fn deflate(&mut self, payload: &Bytes) -> Option<Bytes> {
        if payload.len() < MIN_COMPRESSED || self.agreed.server_max_window_bits != 15 {
            return None;
        }
        let wire = match self.deflater.as_deref_mut() {
            Some(own) => deflate_with(own, payload),
            None => DEFLATER.with(|shared| {
                let mut shared = shared.borrow_mut();
                shared.reset();
                deflate_with(&mut shared, payload)
            }),
        }?;
        self.metrics.out_wire.inc_by(wire.len() as u64);
        self.metrics.out_message.inc_by(payload.len() as u64);
        Some(wire)
    }
}

fn inflate_with(d: &mut Decompress, data: &[u8], limit: usize) -> Result<Bytes, InflateError> {
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).clamp(64, limit + 1));
    let mut input = data;
    let mut tail_fed = false;
    loop {
        if out.len() == out.capacity() {
            // Room for at most one byte past the limit: that byte proves it too large.
            let room = out.capacity().max(64).min(limit + 1 - out.len());
            out.reserve_exact(room);
        }
        let (before_in, before_out) = (d.total_in(), d.total_out());
        d.decompress_vec(input, &mut out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        let consumed = (d.total_in() - before_in) as usize;
        let produced = (d.total_out() - before_out) as usize;
        input = &input[consumed..];
        if out.len() > limit {
            return Err(InflateError::TooLarge);
        }
        let room_left = out.len() < out.capacity();
        if input.is_empty() {
            if !tail_fed {
                input = &TAIL;
                tail_fed = true;
                continue;
            }
            if room_left {
                break;
            }
        } else if consumed == 0 && produced == 0 && room_left {
            return Err(InflateError::Corrupt);
        }
    }
    Ok(Bytes::from(out))
}

fn deflate_with(c: &mut Compress, payload: &[u8]) -> Option<Bytes> {
    let mut out: Vec<u8> = Vec::with_capacity(payload.len() + 16);
    let mut input = payload;
    loop {
        let before_in = c.total_in();
        c.compress_vec(input, &mut out, FlushCompress::Sync).ok()?;
        input = &input[(c.total_in() - before_in) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    // Not worth it: send the message as it is.
    (out.len() < payload.len()).then(|| Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_accepted_or_declined() {
        let (a, bits) = negotiate("permessage-deflate; client_max_window_bits", false).unwrap();
        assert!(a.server_no_context_takeover && a.client_no_context_takeover && !bits);
        assert_eq!(
            a.response(bits),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let (a, bits) = negotiate("permessage-deflate; server_max_window_bits=10", true).unwrap();
        assert_eq!((a.server_max_window_bits, bits), (10, true));
        assert!(!a.server_no_context_takeover);
        assert_eq!(
            a.response(bits),
            "permessage-deflate; server_max_window_bits=10"
        );
        assert!(negotiate("permessage-deflate; server_max_window_bits=7", false).is_none());
        assert!(negotiate("permessage-deflate; color=red", false).is_none());
        assert!(negotiate("x-webkit-deflate-frame", false).is_none());
        let (a, _) = negotiate(
            "permessage-deflate; server_max_window_bits=99, permessage-deflate",
            false,
        )
        .unwrap();
        assert_eq!(a.server_max_window_bits, 15, "the second offer");
    }

    #[test]
    fn messages_round_trip_and_bombs_are_stopped() {
        let agreed = negotiate("permessage-deflate", false).unwrap().0;
        let mut d = Deflate::new(agreed, Arc::default());
        let text = Bytes::from("hello hello hello hello ".repeat(20));
        let wire = d.deflate(&text).unwrap();
        assert!(wire.len() < text.len());
        assert_eq!(d.inflate(&wire, 1 << 20).unwrap(), text);
        assert!(d.deflate(&Bytes::from_static(b"short")).is_none());
        // 10 MB of zeros deflate to under 64 KB; the limit stops the inflation.
        let zeros = Bytes::from(vec![0u8; 10 << 20]);
        let bomb = d.deflate(&zeros).unwrap();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert_eq!(d.inflate(&bomb, 1 << 20), Err(InflateError::TooLarge));
        assert_eq!(d.inflate(&bomb, 10 << 20).unwrap().len(), 10 << 20);
        assert_eq!(
            d.inflate(&[0xff, 0xff, 0xff], 1024),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn context_takeover_keeps_the_window() {
        let agreed = negotiate("permessage-deflate", true).unwrap().0;
        let mut sender = Deflate::new(agreed, Arc::default());
        let mut receiver = Deflate::new(agreed, Arc::default());
        let text = Bytes::from("the same words again and again ".repeat(8));
        let first = sender.deflate(&text).unwrap();
        let second = sender.deflate(&text).unwrap();
        assert!(second.len() < first.len(), "the second refers to the first");
        assert_eq!(receiver.inflate(&first, 1 << 20).unwrap(), text);
        assert_eq!(receiver.inflate(&second, 1 << 20).unwrap(), text);
    }
}

/// The memory a connection holds with `--deflate-context-takeover`, measured (run with
/// `cargo test --release --lib deflate_state_memory -- --ignored --nocapture`).
#[cfg(test)]
mod memory {
    use super::*;

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    #[ignore = "a measurement, not a check"]
    fn deflate_state_memory() {
        const N: usize = 1000;
        let agreed = negotiate("permessage-deflate", true).map(|(a, _)| a);
        let Some(agreed) = agreed else {
            panic!("no agreement")
        };
        let text = Bytes::from("a message of some length, as a chat would send it. ".repeat(4));
        let before = rss_kib();
        let mut states: Vec<Deflate> = (0..N)
            .map(|_| Deflate::new(agreed, Arc::default()))
            .collect();
        // Use them once, as a connection would: the state is touched, so it is resident.
        for state in &mut states {
            let wire = state.deflate(&text);
            let _ = wire.map(|w| state.inflate(&w, 1 << 20));
        }
        let after = rss_kib();
        println!(
            "context takeover: {} KiB resident per connection ({} connections)",
            (after - before) / N as u64,
            N
        );
        drop(states);
    }
}
