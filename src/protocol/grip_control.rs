//! GRIP over a WebSocket-over-HTTP connection: the `grip` WebSocket extension a backend's OPEN
//! answer negotiates ([`parse_extension`]), and what its TEXT and BINARY messages mean once it
//! has ([`classify_text`], [`classify_binary`]): `c:` + JSON is a control message for the
//! bridge, a message with the prefix (default `m:`) goes to the client without it, anything
//! else is dropped, as Pushpin does. Pure parsing: acting on a control message (channels,
//! meta, keep-alives) is the connection task's.

// used by the websocket-over-http backend (issue 15)

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub(crate) const EXTENSION_NAME: &str = "grip";
/// What starts a control message (TEXT only).
pub(crate) const CONTROL_PREFIX: &[u8] = b"c:";
/// The message prefix when the extension names none.
pub(crate) const DEFAULT_MESSAGE_PREFIX: &str = "m:";
/// A keep-alive's period when its `timeout` is absent or 0 (Pushpin's default).
pub(crate) const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(55);

/// A negotiated `grip` extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GripExtension {
    /// What backend messages for the client start with; stripped before they are sent.
    pub(crate) message_prefix: String,
}

impl Default for GripExtension {
    fn default() -> Self {
        GripExtension {
            message_prefix: DEFAULT_MESSAGE_PREFIX.to_owned(),
        }
    }
}

/// The `grip` extension in a `Sec-WebSocket-Extensions` value (a comma-separated list of
/// `name; param=value` entries, values bare or quoted with backslash escapes), if present and
/// well formed. Its `message-prefix` parameter, quoted or not, may be empty; without it the
/// prefix is `m:`. Like Pushpin, a `grip` entry whose parameters do not parse counts as absent.
pub(crate) fn parse_extension(header_value: &str) -> Option<GripExtension> {
    for entry in split_unquoted(header_value, b',')? {
        let mut parts = split_unquoted(entry, b';')?.into_iter();
        let name = parts.next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case(EXTENSION_NAME) {
            continue;
        }
        let mut ext = GripExtension::default();
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            if key.trim().eq_ignore_ascii_case("message-prefix") {
                ext.message_prefix = param_value(value.trim())?;
            }
        }
        return Some(ext);
    }
    None
}

/// `s` cut at each `sep` outside double quotes; `None` if a quote is left open.
fn split_unquoted(s: &str, sep: u8) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

/// A parameter value: a bare token, or a quoted string with its escapes undone.
fn param_value(raw: &str) -> Option<String> {
    let Some(inner) = raw.strip_prefix('"') else {
        return Some(raw.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// A control message from the backend (`c:` + JSON with a `type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// Join a channel (`{"type":"subscribe","channel":…}`).
    Subscribe(String),
    /// Leave a channel.
    Unsubscribe(String),
    /// Stop sending the client's messages to the backend; the connection stays open.
    Detach,
    /// Set (`value: Some`) or remove (`value` absent or null) a meta value that later
    /// requests carry as a `Meta-<name>` header.
    SetMeta { name: String, value: Option<String> },
    /// Send `message` to the client every `timeout` (of silence, or always with
    /// [`KeepAliveMode::Interval`]); `message: None` turns keep-alives off. A `timeout` of 0 or
    /// none is [`DEFAULT_KEEP_ALIVE_TIMEOUT`].
    KeepAlive {
        message: Option<KeepAliveMessage>,
        timeout: Duration,
        mode: KeepAliveMode,
    },
    /// Close the client connection. Not one of Pushpin's control messages (a backend closes
    /// with a CLOSE event there); read here because the GRIP libraries can write it.
    Close { code: Option<u16>, reason: String },
}

/// What a keep-alive sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeepAliveMessage {
    pub(crate) kind: MessageKind,
    pub(crate) content: Bytes,
}

/// The frame a keep-alive message goes out as (`message-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageKind {
    Text,
    Binary,
    Ping,
    Pong,
}

/// When a keep-alive fires (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepAliveMode {
    /// After `timeout` without anything sent to the client (Pushpin's default).
    Idle,
    /// Every `timeout`, whatever else was sent.
    Interval,
}

/// What a backend TEXT or BINARY message means under the extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FromBackend {
    /// A control message for the bridge.
    Control(Control),
    /// A message for the client, the prefix stripped.
    Message(Bytes),
    /// A message without the prefix: Pushpin drops it.
    Dropped,
}

/// Why a control message is not understood; the caller logs it and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("control message is not JSON ({0})")]
    NotJson(String),
    #[error("control message is not a JSON object with a \"type\" string")]
    NoType,
    #[error("unknown control message type {0:?}")]
    UnknownType(String),
    #[error("control message type {0:?} is Pushpin's but the bridge does not support it")]
    Unsupported(&'static str),
    #[error("{kind} control message: {field} {problem}")]
    BadField {
        kind: &'static str,
        field: &'static str,
        problem: &'static str,
    },
}

/// A backend TEXT message: a control message when it starts with `c:` (checked first, even
/// if the message prefix is empty), else a message if it starts with the prefix, else dropped.
pub(crate) fn classify_text(
    ext: &GripExtension,
    text: &Bytes,
) -> Result<FromBackend, ControlError> {
    if let Some(json) = text.strip_prefix(CONTROL_PREFIX) {
        return parse_control(json).map(FromBackend::Control);
    }
    Ok(classify_binary(ext, text))
}

/// A backend BINARY message: Pushpin (and the GRIP libraries' `send_binary`) put the message
/// prefix on binary messages too, so it is stripped, and a binary message without it dropped.
pub(crate) fn classify_binary(ext: &GripExtension, bytes: &Bytes) -> FromBackend {
    let prefix = ext.message_prefix.as_bytes();
    if bytes.starts_with(prefix) {
        FromBackend::Message(bytes.slice(prefix.len()..))
    } else {
        FromBackend::Dropped
    }
}

/// The JSON of a control message (what follows `c:`).
pub(crate) fn parse_control(json: &[u8]) -> Result<Control, ControlError> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| ControlError::NotJson(e.to_string()))?;
    let object = value.as_object().ok_or(ControlError::NoType)?;
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or(ControlError::NoType)?;
    match kind {
        "subscribe" => Ok(Control::Subscribe(channel(object, "subscribe")?)),
        "unsubscribe" => Ok(Control::Unsubscribe(channel(object, "unsubscribe")?)),
        "detach" => Ok(Control::Detach),
        "set-meta" => set_meta(object),
        "keep-alive" => keep_alive(object),
        "close" => close(object),
        "session" => Err(ControlError::Unsupported("session")),
        "send-delayed" => Err(ControlError::Unsupported("send-delayed")),
        "flush-delayed" => Err(ControlError::Unsupported("flush-delayed")),
        other => Err(ControlError::UnknownType(
            other.chars().take(64).collect::<String>(),
        )),
    }
}

fn bad(kind: &'static str, field: &'static str, problem: &'static str) -> ControlError {
    ControlError::BadField {
        kind,
        field,
        problem,
    }
}

/// An optional string field; null counts as absent.
fn optional_str<'a>(
    object: &'a Map<String, Value>,
    kind: &'static str,
    field: &'static str,
) -> Result<Option<&'a str>, ControlError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(kind, field, "is not a string")),
    }
}

fn channel(object: &Map<String, Value>, kind: &'static str) -> Result<String, ControlError> {
    match optional_str(object, kind, "channel")? {
        Some(c) if !c.is_empty() => Ok(c.to_owned()),
        Some(_) => Err(bad(kind, "channel", "is empty")),
        None => Err(bad(kind, "channel", "is missing")),
    }
}

fn set_meta(object: &Map<String, Value>) -> Result<Control, ControlError> {
    let name = match optional_str(object, "set-meta", "name")? {
        Some(n) if !n.is_empty() => n.to_owned(),
        Some(_) => return Err(bad("set-meta", "name", "is empty")),
        None => return Err(bad("set-meta", "name", "is missing")),
    };
    let value = optional_str(object, "set-meta", "value")?.map(str::to_owned);
    Ok(Control::SetMeta { name, value })
}

/// `keep-alive`: `content` (text) or `content-bin` (base64, which wins), `message-type`
/// (text, binary, ping, pong; by default binary for `content-bin`, text for `content`),
/// `timeout` in whole seconds, `mode` (`interval`, anything else idle, as Pushpin reads it).
fn keep_alive(object: &Map<String, Value>) -> Result<Control, ControlError> {
    const KIND: &str = "keep-alive";
    let explicit = match optional_str(object, KIND, "message-type")? {
        None => None,
        Some("text") => Some(MessageKind::Text),
        Some("binary") => Some(MessageKind::Binary),
        Some("ping") => Some(MessageKind::Ping),
        Some("pong") => Some(MessageKind::Pong),
        Some(_) => {
            return Err(bad(
                KIND,
                "message-type",
                "is not text, binary, ping or pong",
            ));
        }
    };
    let content = if let Some(b64) = optional_str(object, KIND, "content-bin")? {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad(KIND, "content-bin", "is not base64"))?;
        Some((MessageKind::Binary, Bytes::from(raw)))
    } else {
        optional_str(object, KIND, "content")?
            .map(|text| (MessageKind::Text, Bytes::copy_from_slice(text.as_bytes())))
    };
    let timeout = match object.get("timeout") {
        None | Some(Value::Null) => 0,
        Some(t) => t
            .as_u64()
            .ok_or(bad(KIND, "timeout", "is not a whole number of seconds"))?,
    };
    let mode = match optional_str(object, KIND, "mode")? {
        Some("interval") => KeepAliveMode::Interval,
        _ => KeepAliveMode::Idle,
    };
    Ok(Control::KeepAlive {
        message: content.map(|(default, content)| KeepAliveMessage {
            kind: explicit.unwrap_or(default),
            content,
        }),
        timeout: if timeout == 0 {
            DEFAULT_KEEP_ALIVE_TIMEOUT
        } else {
            Duration::from_secs(timeout)
        },
        mode,
    })
}

fn close(object: &Map<String, Value>) -> Result<Control, ControlError> {
    let code = match object.get("code") {
        None | Some(Value::Null) => None,
        Some(c) => Some(c.as_u64().and_then(|c| u16::try_from(c).ok()).ok_or(bad(
            "close",
            "code",
            "is not a number from 0 to 65535",
        ))?),
    };
    let reason = optional_str(object, "close", "reason")?.unwrap_or_default();
    Ok(Control::Close {
        code,
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(raw: &str) -> Result<Control, ControlError> {
        match classify_text(
            &GripExtension::default(),
            &Bytes::copy_from_slice(raw.as_bytes()),
        ) {
            Ok(FromBackend::Control(c)) => Ok(c),
            Ok(other) => panic!("{raw}: {other:?}"),
            Err(e) => Err(e),
        }
    }

    fn prefix(p: &str) -> Option<GripExtension> {
        Some(GripExtension {
            message_prefix: p.to_owned(),
        })
    }

    #[test]
    fn extensions_as_backends_write_them() {
        // @fanoutio/grip's WebSocketContext.toHeaders() after accept(); Pushpin's test tools.
        assert_eq!(parse_extension("grip"), prefix("m:"));
        assert_eq!(parse_extension(r#"grip; message-prefix="""#), prefix(""));
        assert_eq!(parse_extension("grip; message-prefix=x:"), prefix("x:"));
        assert_eq!(
            parse_extension(r#"grip;message-prefix="a\"b;c""#),
            prefix("a\"b;c")
        );
        assert_eq!(parse_extension("grip; message-prefix"), prefix(""));
        assert_eq!(
            parse_extension(r#"permessage-deflate; x="a,grip", GRIP ; foo=1"#),
            prefix("m:")
        );
        assert_eq!(parse_extension("permessage-deflate"), None);
        assert_eq!(parse_extension("gripper"), None);
        assert_eq!(parse_extension(""), None);
        assert_eq!(parse_extension(r#"grip; message-prefix="open"#), None);
        assert_eq!(parse_extension(r#"grip; message-prefix="a\"#), None);
    }

    #[test]
    fn python_gripcontrol_strings() {
        // gripcontrol 4.4.0: websocket_control_message(type, args) and WebSocketContext.
        assert_eq!(
            control(r#"c:{"channel": "x", "type": "subscribe"}"#),
            Ok(Control::Subscribe("x".into()))
        );
        assert_eq!(
            control(r#"c:{"channel": "x", "type": "unsubscribe"}"#),
            Ok(Control::Unsubscribe("x".into()))
        );
        assert_eq!(control(r#"c:{"type": "detach"}"#), Ok(Control::Detach));
        assert_eq!(
            control(r#"c:{"name": "user", "value": "alice", "type": "set-meta"}"#),
            Ok(Control::SetMeta {
                name: "user".into(),
                value: Some("alice".into())
            })
        );
        assert_eq!(
            control(r#"c:{"content": "ping", "timeout": 30, "type": "keep-alive"}"#),
            Ok(Control::KeepAlive {
                message: Some(KeepAliveMessage {
                    kind: MessageKind::Text,
                    content: Bytes::from_static(b"ping")
                }),
                timeout: Duration::from_secs(30),
                mode: KeepAliveMode::Idle,
            })
        );
        assert_eq!(
            control(
                r#"c:{"content-bin": "AAE=", "timeout": 30, "mode": "interval", "type": "keep-alive"}"#
            ),
            Ok(Control::KeepAlive {
                message: Some(KeepAliveMessage {
                    kind: MessageKind::Binary,
                    content: Bytes::from_static(b"\x00\x01")
                }),
                timeout: Duration::from_secs(30),
                mode: KeepAliveMode::Interval,
            })
        );
        assert_eq!(
            control(r#"c:{"code": 1000, "reason": "bye", "type": "close"}"#),
            Ok(Control::Close {
                code: Some(1000),
                reason: "bye".into()
            })
        );
    }

    #[test]
    fn node_grip_strings() {
        // @fanoutio/grip 4.3.0: createWebSocketControlMessage(type, args) and WebSocketContext.
        assert_eq!(
            control(r#"c:{"channel":"x","type":"subscribe"}"#),
            Ok(Control::Subscribe("x".into()))
        );
        assert_eq!(
            control(r#"c:{"channel":"x","type":"unsubscribe"}"#),
            Ok(Control::Unsubscribe("x".into()))
        );
        assert_eq!(control(r#"c:{"type":"detach"}"#), Ok(Control::Detach));
        assert_eq!(
            control(r#"c:{"name":"user","value":"alice","type":"set-meta"}"#),
            Ok(Control::SetMeta {
                name: "user".into(),
                value: Some("alice".into())
            })
        );
        assert_eq!(
            control(
                r#"c:{"content-bin":"AAE=","timeout":30,"mode":"interval","type":"keep-alive"}"#
            )
            .map(|c| matches!(
                c,
                Control::KeepAlive {
                    mode: KeepAliveMode::Interval,
                    ..
                }
            )),
            Ok(true)
        );
        assert_eq!(
            control(r#"c:{"code":1000,"reason":"bye","type":"close"}"#),
            Ok(Control::Close {
                code: Some(1000),
                reason: "bye".into()
            })
        );
    }

    #[test]
    fn pushpin_field_rules() {
        assert_eq!(
            control(r#"c:{"type":"set-meta","name":"user"}"#),
            Ok(Control::SetMeta {
                name: "user".into(),
                value: None
            })
        );
        assert_eq!(
            control(r#"c:{"type":"keep-alive"}"#),
            Ok(Control::KeepAlive {
                message: None,
                timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
                mode: KeepAliveMode::Idle
            })
        );
        assert_eq!(
            control(r#"c:{"type":"keep-alive","content":"","message-type":"ping","timeout":0}"#),
            Ok(Control::KeepAlive {
                message: Some(KeepAliveMessage {
                    kind: MessageKind::Ping,
                    content: Bytes::new()
                }),
                timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
                mode: KeepAliveMode::Idle
            })
        );
        assert_eq!(
            control(r#"c:{"type":"close"}"#),
            Ok(Control::Close {
                code: None,
                reason: String::new()
            })
        );
    }

    #[test]
    fn errors_are_values() {
        let cases: [(&str, ControlError); 10] = [
            ("c:{", ControlError::NotJson(String::new())),
            ("c:[]", ControlError::NoType),
            (r#"c:{"type":1}"#, ControlError::NoType),
            (
                r#"c:{"type":"teleport"}"#,
                ControlError::UnknownType("teleport".into()),
            ),
            (
                r#"c:{"type":"session","id":"s"}"#,
                ControlError::Unsupported("session"),
            ),
            (
                r#"c:{"type":"subscribe"}"#,
                bad("subscribe", "channel", "is missing"),
            ),
            (
                r#"c:{"type":"unsubscribe","channel":""}"#,
                bad("unsubscribe", "channel", "is empty"),
            ),
            (
                r#"c:{"type":"set-meta","name":"a","value":3}"#,
                bad("set-meta", "value", "is not a string"),
            ),
            (
                r#"c:{"type":"keep-alive","content-bin":"!!"}"#,
                bad("keep-alive", "content-bin", "is not base64"),
            ),
            (
                r#"c:{"type":"close","code":70000}"#,
                bad("close", "code", "is not a number from 0 to 65535"),
            ),
        ];
        for (raw, expected) in cases {
            let got = control(raw);
            match (&got, &expected) {
                (Err(ControlError::NotJson(_)), ControlError::NotJson(_)) => {}
                _ => assert_eq!(got, Err(expected), "{raw}"),
            }
            let shown = got.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!shown.is_empty() && !shown.contains('\n'), "{shown}");
        }
    }

    #[test]
    fn messages_need_the_prefix() {
        let ext = GripExtension::default();
        let text = |s: &'static str| classify_text(&ext, &Bytes::from_static(s.as_bytes()));
        assert_eq!(
            text("m:hi"),
            Ok(FromBackend::Message(Bytes::from_static(b"hi")))
        );
        assert_eq!(text("m:"), Ok(FromBackend::Message(Bytes::new())));
        assert_eq!(text("hi"), Ok(FromBackend::Dropped));
        assert_eq!(
            classify_binary(&ext, &Bytes::from_static(b"m:\x00\x01")),
            FromBackend::Message(Bytes::from_static(b"\x00\x01"))
        );
        assert_eq!(
            classify_binary(&ext, &Bytes::from_static(b"\x00\x01")),
            FromBackend::Dropped
        );
        assert_eq!(
            classify_binary(&ext, &Bytes::from_static(b"c:{}")),
            FromBackend::Dropped
        );
        let bare = GripExtension {
            message_prefix: String::new(),
        };
        assert_eq!(
            classify_text(&bare, &Bytes::from_static(b"hi")),
            Ok(FromBackend::Message(Bytes::from_static(b"hi")))
        );
        assert_eq!(
            classify_text(&bare, &Bytes::from_static(br#"c:{"type":"detach"}"#)),
            Ok(FromBackend::Control(Control::Detach)),
            "c: wins over an empty prefix"
        );
    }
}
