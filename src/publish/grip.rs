//! GRIP's publish format, read: `{"items": [{"channel": "room-1", "id": "…", "prev-id": "…",
//! "formats": {"ws-message": {…}}}]}`, where a `ws-message` is `{"content": "text"}`,
//! `{"content-bin": "<base64>"}` or `{"action": "close", "code": 4000, "reason": "…"}`, and a
//! format may also sit at the item's top level (as pubcontrol's `Item.export()` puts it).
//! Items with other formats only (`http-stream`, `http-response`) are accepted and reach no
//! WebSocket client. Every item is checked before any is delivered.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::protocol::Payload;
use crate::protocol::channel::ChannelName;

/// What one item asks the members of its channel for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send this message.
    Send(Payload),
    /// Close with this code and reason.
    Close { code: u16, reason: String },
    /// Nothing over WebSocket (the item carries other transports' formats only).
    Nothing,
}

/// One checked item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publication {
    pub(crate) channel: ChannelName,
    pub(crate) action: Action,
}

/// Why a publish request was refused: the first bad item (by index) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadRequest {
    /// The body is not a JSON object with an `items` array.
    #[error(
        "the body is not GRIP publish JSON ({0}); send {{\"items\": [{{\"channel\": \"…\", \"formats\": {{\"ws-message\": {{\"content\": \"…\"}}}}}}]}}"
    )]
    NotGrip(String),
    /// Item `index` is wrong.
    #[error("item {index}: {why}; nothing was published")]
    Item { index: usize, why: String },
}

/// Longest close reason (a Close frame's 125 bytes minus the code).
const MAX_REASON: usize = 123;

/// Reads a GRIP publish body; each message at most `max_message` bytes.
pub(crate) fn parse(body: &[u8], max_message: usize) -> Result<Vec<Publication>, BadRequest> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BadRequest::NotGrip(e.to_string()))?;
    let items = value
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| BadRequest::NotGrip("no \"items\" array".to_owned()))?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            item_of(item, max_message).map_err(|why| BadRequest::Item { index, why })
        })
        .collect()
}

fn item_of(item: &Value, max_message: usize) -> Result<Publication, String> {
    let item = item.as_object().ok_or("not a JSON object")?;
    let channel = item
        .get("channel")
        .and_then(Value::as_str)
        .ok_or("no \"channel\" string")?;
    let channel = ChannelName::parse(channel).map_err(|e| e.to_string())?;
    let nested = item.get("formats").and_then(Value::as_object);
    let ws = nested
        .and_then(|f| f.get("ws-message"))
        .or_else(|| item.get("ws-message"));
    let action = match ws {
        Some(format) => ws_message(format, max_message)?,
        None if has_other_format(item, nested) => Action::Nothing,
        None => return Err("no format (expected \"formats\": {\"ws-message\": {…}})".to_owned()),
    };
    Ok(Publication { channel, action })
}

fn has_other_format(item: &Map<String, Value>, nested: Option<&Map<String, Value>>) -> bool {
    const OTHERS: [&str; 2] = ["http-stream", "http-response"];
    nested.is_some_and(|f| !f.is_empty()) || OTHERS.iter().any(|f| item.contains_key(*f))
}

fn ws_message(format: &Value, max_message: usize) -> Result<Action, String> {
    let format = format
        .as_object()
        .ok_or("ws-message is not a JSON object")?;
    if let Some(action) = format.get("action") {
        return match action {
            Value::Null => send(format, max_message),
            Value::String(a) if a == "send" => send(format, max_message),
            Value::String(a) if a == "close" => close(format),
            _ => Err(format!(
                "ws-message action {action} is not \"send\" or \"close\""
            )),
        };
    }
    send(format, max_message)
}

fn send(format: &Map<String, Value>, max_message: usize) -> Result<Action, String> {
    let payload = match (format.get("content"), format.get("content-bin")) {
        (Some(Value::String(text)), None) => Payload::Text(Bytes::from(text.clone().into_bytes())),
        (None, Some(Value::String(encoded))) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| format!("ws-message content-bin is not base64 ({e})"))?;
            Payload::Binary(Bytes::from(bytes))
        }
        (Some(_), Some(_)) => return Err("ws-message has both content and content-bin".to_owned()),
        (Some(_), None) => return Err("ws-message content is not a string".to_owned()),
        (None, Some(_)) => return Err("ws-message content-bin is not a string".to_owned()),
        (None, None) => return Err("ws-message has no content, content-bin or action".to_owned()),
    };
    if payload.len() > max_message {
        return Err(format!(
            "the message is {} bytes, more than --max-message-size ({max_message} bytes)",
            payload.len()
        ));
    }
    Ok(Action::Send(payload))
}

fn close(format: &Map<String, Value>) -> Result<Action, String> {
    let code = match format.get("code") {
        None => 1000,
        Some(code) => code
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c == 1000 || (3000..=4999).contains(c))
            .ok_or_else(|| format!("close code {code} is not 1000 or 3000-4999"))?,
    };
    let reason = match format.get("reason") {
        None => String::new(),
        Some(Value::String(reason)) if reason.len() <= MAX_REASON => reason.clone(),
        Some(Value::String(_)) => {
            return Err(format!("close reason is longer than {MAX_REASON} bytes"));
        }
        Some(_) => return Err("close reason is not a string".to_owned()),
    };
    Ok(Action::Close { code, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> Result<Action, BadRequest> {
        parse(json.as_bytes(), 16).map(|mut items| items.remove(0).action)
    }

    #[test]
    fn the_three_ws_message_forms_and_the_top_level_form_are_read() {
        let text = r#"{"items":[{"channel":"c","id":"1","prev-id":"0","formats":{"ws-message":{"content":"hi"}}}]}"#;
        assert_eq!(
            one(text),
            Ok(Action::Send(Payload::Text(Bytes::from_static(b"hi"))))
        );
        let binary = r#"{"items":[{"channel":"c","ws-message":{"content-bin":"AAEC"}}]}"#;
        assert_eq!(
            one(binary),
            Ok(Action::Send(Payload::Binary(Bytes::from_static(&[
                0, 1, 2
            ]))))
        );
        let close = r#"{"items":[{"channel":"c","formats":{"ws-message":{"action":"close","code":4000,"reason":"bye"}}}]}"#;
        assert_eq!(
            one(close),
            Ok(Action::Close {
                code: 4000,
                reason: "bye".into()
            })
        );
        let other = r#"{"items":[{"channel":"c","formats":{"http-stream":{"content":"x"}}}]}"#;
        assert_eq!(one(other), Ok(Action::Nothing));
    }

    #[test]
    fn the_first_bad_item_is_named() {
        let cases = [
            (
                r#"{"items":[{"channel":"c","ws-message":{"content":"ok"}},{"channel":"a b","ws-message":{"content":"x"}}]}"#,
                "item 1: channel name",
            ),
            (
                r#"{"items":[{"channel":"c","ws-message":{"content-bin":"!!"}}]}"#,
                "item 0: ws-message content-bin is not base64",
            ),
            (
                r#"{"items":[{"channel":"c","ws-message":{"content":"far too long for sixteen"}}]}"#,
                "item 0: the message is 24 bytes",
            ),
            (
                r#"{"items":[{"channel":"c","ws-message":{"action":"close","code":1006}}]}"#,
                "item 0: close code 1006",
            ),
            (r#"{"items":[{"channel":"c"}]}"#, "item 0: no format"),
            (r#"{"items":[{"formats":{}}]}"#, "item 0: no \"channel\""),
            (
                r#"{"item":[]}"#,
                "not GRIP publish JSON (no \"items\" array)",
            ),
            ("not json", "not GRIP publish JSON"),
        ];
        for (body, expected) in cases {
            let message = parse(body.as_bytes(), 16)
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string());
            assert!(message.contains(expected), "{body}: {message}");
        }
    }
}
