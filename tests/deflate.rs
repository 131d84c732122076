//! permessage-deflate (RFC 7692, issue 16) over real sockets, with a hand-made client (the
//! test clients' library offers no compression): negotiation and its answer, compressed
//! messages both ways, small messages left uncompressed, the decompressed size limit against
//! a deflate bomb (1009 before the memory is spent), and `--deflate false`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use common::*;
use flate2::Compression;
use flate2::write::{DeflateDecoder, DeflateEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raw deflate of `data` as permessage-deflate sends it (sync flush, tail removed).
fn compress(data: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.flush().unwrap();
    let mut out = encoder.finish().unwrap();
    // `finish` adds a final empty block after the sync flush's 00 00 ff ff: cut from there.
    let tail = out
        .windows(4)
        .rposition(|w| w == [0, 0, 0xff, 0xff])
        .unwrap();
    out.truncate(tail);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut decoder = DeflateDecoder::new(Vec::new());
    decoder.write_all(data).unwrap();
    decoder.write_all(&[0, 0, 0xff, 0xff]).unwrap();
    decoder.flush().unwrap();
    decoder.get_ref().clone()
}

/// A masked client frame with RSV1 as given.
fn frame(opcode: u8, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let key = [3u8, 1, 4, 1];
    let mut out = vec![0x80 | if rsv1 { 0x40 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Opens a WebSocket by hand, offering `extensions`; returns the socket and the 101 head.
async fn open(url_path: &str, addr: std::net::SocketAddr, extensions: &str) -> (TcpStream, String) {
    let mut socket = tcp_connect(addr).await;
    let head = format!(
        "GET {url_path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        socket.read_exact(&mut byte).await.unwrap();
        answer.push(byte[0]);
    }
    (socket, String::from_utf8(answer).unwrap())
}

/// Reads one server frame: (first byte, payload).
async fn read_frame(socket: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    socket.read_exact(&mut head).await.unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            socket.read_exact(&mut b).await.unwrap();
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            socket.read_exact(&mut b).await.unwrap();
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    socket.read_exact(&mut payload).await.unwrap();
    (head[0], payload)
}

fn connect_path(backend: &Backend) -> String {
    let url = connect_url("x", &backend.url("/frame"), Some(&backend.url("/gone")));
    path_of(&url)
}

#[tokio::test]
async fn compressed_messages_both_ways_and_small_ones_plain() {
    bounded(async {
        let backend = Backend::builder().on("/frame", Reply::echo()).start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let (mut socket, head) = open(
            &connect_path(&backend),
            bridge.addr,
            "permessage-deflate; client_max_window_bits",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            "{head}"
        );

        let text = "the bridge compresses what it sends, ".repeat(30);
        socket
            .write_all(&frame(0x1, true, &compress(text.as_bytes())))
            .await
            .unwrap();
        let posted = backend.wait_for("/frame", 1).await;
        assert_eq!(posted[0].body, text.as_bytes(), "inflated before the POST");
        let (b0, payload) = read_frame(&mut socket).await;
        assert_eq!(b0, 0x80 | 0x40 | 0x1, "a compressed text frame");
        assert!(payload.len() < text.len() / 4, "{} bytes", payload.len());
        assert_eq!(inflate(&payload), text.as_bytes());

        // A message under 64 bytes goes out plain, and a plain one from the client is fine.
        socket.write_all(&frame(0x1, false, b"tiny")).await.unwrap();
        let (b0, payload) = read_frame(&mut socket).await;
        assert_eq!((b0, payload.as_slice()), (0x81, &b"tiny"[..]));
        socket.write_all(&frame(0x8, false, &[0x03, 0xe8])).await.unwrap();
        let (b0, _) = read_frame(&mut socket).await;
        assert_eq!(b0, 0x88);
        bridge.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_deflate_bomb_is_closed_with_1009_before_it_inflates() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--max-message-size", "1MiB"]).await;
        let (mut socket, head) =
            open(&connect_path(&backend), bridge.addr, "permessage-deflate").await;
        assert!(head.contains("permessage-deflate"), "{head}");
        // 100 MB of zeros deflate to about 100 KB.
        let bomb = compress(&vec![0u8; 100 << 20]);
        assert!(bomb.len() < 200 << 10, "{} bytes", bomb.len());
        socket.write_all(&frame(0x2, true, &bomb)).await.unwrap();
        let (b0, payload) = read_frame(&mut socket).await;
        assert_eq!(b0, 0x88, "a Close frame");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
        let gone = backend.wait_for("/gone", 1).await;
        assert_eq!(gone[0].header("x-ws-proxy-close-code"), Some("1009"));
        bridge.shutdown().await;
        backend.assert_exactly("/frame", 0);
    })
    .await;
}

#[tokio::test]
async fn compression_can_be_turned_off_and_rsv1_is_then_refused() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--deflate", "false"]).await;
        let (mut socket, head) =
            open(&connect_path(&backend), bridge.addr, "permessage-deflate").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("sec-websocket-extensions"),
            "{head}"
        );
        socket
            .write_all(&frame(0x1, true, &compress(b"hello hello hello")))
            .await
            .unwrap();
        let (b0, payload) = read_frame(&mut socket).await;
        assert_eq!(b0, 0x88);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
        bridge.shutdown().await;
    })
    .await;
}
