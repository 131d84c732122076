//! The lean path for small callback `POST`s over HTTP/1.1 keep-alive, from raw sockets: the
//! answers match hyper's for the same requests, requests on one connection keep their order
//! when the connection moves to hyper part way, a request split over several writes is
//! waited for, and one that stops arriving is timed out (408 for a missing body, a close for
//! a missing head).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// One HTTP answer read from a raw socket.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    /// Lower-case names, in order, without `date`.
    headers: Vec<(String, String)>,
    body: String,
}

/// A keep-alive HTTP/1.1 connection written and read by hand.
struct Raw {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Raw {
    async fn open(bridge: &Bridge) -> Raw {
        Raw {
            stream: tcp_connect(bridge.addr).await,
            read: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next answer, or `None` if the bridge closed the connection first.
    async fn answer(&mut self) -> Option<Answer> {
        loop {
            if let Some(answer) = self.parse() {
                return Some(answer);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.read.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn parse(&mut self) -> Option<Answer> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = response.parse(&self.read).unwrap() else {
            return None;
        };
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8(h.value.to_vec()).unwrap();
                (h.name.to_ascii_lowercase(), value)
            })
            .filter(|(name, _)| name != "date")
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        if self.read.len() < head + length {
            return None;
        }
        let status = response.code.unwrap();
        let body = String::from_utf8(self.read[head..head + length].to_vec()).unwrap();
        self.read.drain(..head + length);
        Some(Answer {
            status,
            headers,
            body,
        })
    }
}

/// A callback `POST` with these extra header lines.
fn post(path: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: bridge\r\n{extra}content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[tokio::test]
async fn answers_match_hyper_and_requests_keep_their_order_across_the_hand_off() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        let path = path_of(&callback_of(&backend, &mut client).await);
        let unknown = "/00000000-0000-4000-8000-000000000000";
        let requests: Vec<(&str, &str, &[u8])> = vec![
            (path.as_str(), "content-type: text/plain\r\n", b"one"),
            (path.as_str(), "content-type: text/plain\r\n", b"\xff\xfe"),
            (unknown, "", b"x"),
            (path.as_str(), "", b"\x00two"),
        ];
        // Each request twice: alone on a lean connection, then with `Connection: close`
        // (which only hyper serves).
        for (path, extra, body) in &requests {
            let mut lean = Raw::open(&bridge).await;
            lean.write(&post(path, extra, body)).await;
            let lean = lean.answer().await.unwrap();
            let mut full = Raw::open(&bridge).await;
            let extra = format!("{extra}connection: close\r\n");
            full.write(&post(path, &extra, body)).await;
            let mut full = full.answer().await.unwrap();
            full.headers.retain(|(name, _)| name != "connection");
            assert_eq!(lean, full, "{path} {extra:?}");
        }
        for expected in [
            Message::text("one"),
            Message::text("one"),
            Message::binary(b"\x00two".to_vec()),
            Message::binary(b"\x00two".to_vec()),
        ] {
            assert_eq!(next_message(&mut client).await, expected);
        }

        // Pipelined in one write: lean, lean, a GET (hyper from here on), lean again.
        let mut raw = Raw::open(&bridge).await;
        let mut pipelined = post(&path, "content-type: text/plain\r\n", b"a");
        pipelined.extend(post(&path, "", b"b"));
        pipelined.extend_from_slice(b"GET /healthz HTTP/1.1\r\nhost: bridge\r\n\r\n");
        pipelined.extend(post(&path, "content-type: text/plain\r\n", b"c"));
        raw.write(&pipelined).await;
        let statuses = [(); 4].map(|()| 0);
        let mut statuses = statuses.to_vec();
        for status in &mut statuses {
            *status = raw.answer().await.unwrap().status;
        }
        assert_eq!(statuses, [202, 202, 200, 202]);
        assert_eq!(next_message(&mut client).await, Message::text("a"));
        assert_eq!(
            next_message(&mut client).await,
            Message::binary(b"b".to_vec())
        );
        assert_eq!(next_message(&mut client).await, Message::text("c"));
    })
    .await;
}

#[tokio::test]
async fn a_request_split_over_writes_is_waited_for_and_one_that_stops_is_timed_out() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--handshake-timeout", "1s"]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        let path = path_of(&callback_of(&backend, &mut client).await);

        // Head in two writes, body in a third, on a connection already used.
        let mut raw = Raw::open(&bridge).await;
        raw.write(&post(&path, "content-type: text/plain\r\n", b"first"))
            .await;
        assert_eq!(raw.answer().await.unwrap().status, 202);
        let request = post(&path, "content-type: text/plain\r\n", b"second");
        let (head, body) = request.split_at(request.len() - 6);
        for part in [&head[..10], &head[10..], body] {
            raw.write(part).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(raw.answer().await.unwrap().status, 202);
        assert_eq!(next_message(&mut client).await, Message::text("first"));
        assert_eq!(next_message(&mut client).await, Message::text("second"));

        // A body that stops arriving: 408, then the connection closes.
        let request = post(&path, "", b"0123456789");
        raw.write(&request[..request.len() - 4]).await;
        let answer = raw.answer().await.unwrap();
        assert_eq!(answer.status, 408);
        assert!(
            answer.body.contains("--handshake-timeout"),
            "{}",
            answer.body
        );
        assert!(raw.answer().await.is_none(), "closed after the 408");

        // A head that stops arriving: the connection closes without an answer.
        let mut raw = Raw::open(&bridge).await;
        raw.write(format!("POST {path} HTTP/1.1\r\nhost: b").as_bytes())
            .await;
        assert!(raw.answer().await.is_none());
        client.close(None).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_full_send_queue_answers_503_with_retry_after_on_the_lean_path_too() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--send-queue", "2"]).await;
        // A client that reads nothing: its socket buffers fill, then the queue.
        let mut client = bridge.client(&backend, "/frame", None).await;
        let path = path_of(&callback_of(&backend, &mut client).await);
        let mut raw = Raw::open(&bridge).await;
        let body = vec![1u8; 12 * 1024];
        for _ in 0..20_000 {
            raw.write(&post(&path, "", &body)).await;
            let answer = raw.answer().await.unwrap();
            if answer.status == 503 {
                assert!(answer.body.contains("queue is full"), "{}", answer.body);
                assert!(answer.headers.contains(&("retry-after".into(), "1".into())));
                return;
            }
            assert_eq!(answer.status, 202);
        }
        panic!("no 503 after 240 MB to a client that reads nothing");
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_an_idle_keep_alive_connection_at_once() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--shutdown-grace", "30s"]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        let path = path_of(&callback_of(&backend, &mut client).await);
        let mut raw = Raw::open(&bridge).await;
        raw.write(&post(&path, "", b"x")).await;
        assert_eq!(raw.answer().await.unwrap().status, 202);
        drop(client);
        let stopped = tokio::time::timeout(Duration::from_secs(10), bridge.shutdown()).await;
        assert!(
            stopped.is_ok(),
            "the drain waited for an idle keep-alive connection"
        );
        assert!(raw.answer().await.is_none(), "closed by the drain");
    })
    .await;
}
