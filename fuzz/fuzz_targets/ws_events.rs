//! A WebSocket-over-HTTP body (after the first line) and a `Content-Bytes-Accepted` count and
//! `Sec-WebSocket-Extensions` value (the first line). Properties: no panic; what decodes
//! encodes to a canonical body that decodes and encodes to itself; errors are one line naming
//! the event; a replay after partial acceptance carries exactly the untaken message bytes; a
//! GRIP message for the client is the TEXT without its prefix.

#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing;

const MAX_CONTENT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let (line, body) = fuzzing::first_line(data);
    match fuzzing::ws_events(body, MAX_CONTENT) {
        Ok(canonical) => {
            assert_eq!(
                fuzzing::ws_events(&canonical, MAX_CONTENT),
                Ok(canonical.clone())
            );
        }
        Err(e) => assert!(e.starts_with("event ") && !e.contains('\n'), "{e}"),
    }
    let accepted = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(line.len());
    if let Some(Ok(replay)) = fuzzing::ws_events_replay(body, accepted) {
        assert!(
            accepted <= replay.offered,
            "{accepted} > {}",
            replay.offered
        );
        assert!(replay.replayed_bytes <= replay.offered - accepted);
        if let Some(Ok(again)) = fuzzing::ws_events_replay(&replay.events, 0) {
            assert!(again.offered >= replay.replayed_bytes);
        }
    }
    if let Ok(extension) = std::str::from_utf8(line) {
        if let Some(Ok(Some(message))) = fuzzing::grip_text(extension, body) {
            assert!(body.ends_with(&message) && !body.starts_with(b"c:"));
        }
    }
});
