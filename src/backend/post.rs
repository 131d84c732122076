//! Frame and disconnect POSTs: what each carries ([`Post`]), the retry loop, one attempt over
//! the lean HTTP/1.1 client (`http://`) or reqwest (`https://`), and the signature computed
//! from the headers that are sent.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::h1;
use super::request_id::RequestIds;
use super::retry::retry_after;
use super::{BackendClient, BackendError, BackendTarget, ChannelHeaders};
use crate::metrics::RequestKind;
use crate::protocol::signing::SignedRequest;
use crate::protocol::{
    BINARY_CONTENT_TYPE, CloseReport, HEADER_CLOSE_CAUSE, HEADER_CLOSE_CODE,
    HEADER_CLOSE_INITIATOR, HEADER_CLOSE_REASON, HEADER_REPLY, HEADER_REQUEST_ID,
    HEADER_REQUEST_URI, HEADER_SEND, HEADER_SEQ, HEADER_SIGNATURE, Payload, TEXT_CONTENT_TYPE,
    header_safe_reason,
};

impl BackendClient {
    /// Sends a frame or disconnect POST, retrying transient failures within the retry policy.
    /// Returns the first 2xx answer, or the last failure.
    async fn send_with_retries(
        &self,
        target: &BackendTarget,
        post: &Post<'_>,
    ) -> Result<Reply, BackendError> {
        let policy = self.settings.retry;
        let what = post.kind;
        let started = Instant::now();
        let mut retry = 0u32;
        loop {
            let attempt_started = Instant::now();
            let outcome = self.exchange(target, post).await;
            self.settings
                .metrics
                .backend_attempt(what, attempt_started.elapsed().as_secs_f64());
            let (error, wait) = match outcome {
                Ok(reply) if reply.status.is_success() => return Ok(reply),
                Ok(reply) => (
                    BackendError::Status(reply.status),
                    retry_after(reply.retry_after.as_ref()),
                ),
                Err(e) => (e, None),
            };
            retry += 1;
            // A backend's Retry-After may name any delay (even u64::MAX seconds): a wait that
            // would end beyond the retry budget means giving up now, computed without overflow.
            let wait = wait.unwrap_or_else(|| policy.backoff(retry));
            if !error.is_transient()
                || retry > policy.retries
                || started.elapsed().saturating_add(wait) > policy.budget
            {
                self.settings.metrics.backend_failure(what, error.reason());
                if error.is_transient() && policy.retries > 0 {
                    warn!(what = what.as_str(), retries = retry - 1, error = %error.detail(), "backend retries exhausted");
                }
                return Err(error);
            }
            let total = self.retries.fetch_add(1, Ordering::Relaxed) + 1;
            self.settings.metrics.retry(what);
            debug!(what = what.as_str(), retry, wait = ?wait, error = %error.detail(), retries_total = total, "retrying backend request");
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt of a POST: waits for a slot of the host's limit, sends, reads the whole
    /// answer; all within `--backend-timeout`. `http://` targets go through the lean HTTP/1.1
    /// client, `https://` ones through reqwest. The signature is computed at each attempt, so
    /// a retry carries a fresh timestamp.
    async fn exchange(
        &self,
        target: &BackendTarget,
        post: &Post<'_>,
    ) -> Result<Reply, BackendError> {
        let config = &self.settings.config;
        let exchange = async {
            let _permit = target
                .limit
                .acquire()
                .await
                .map_err(|_| BackendError::Timeout)?;
            let mut headers = post.headers();
            if let Some(uri) = &target.request_uri {
                headers.push((HEADER_REQUEST_URI, uri.clone()));
            }
            let signature = self.signature(target, &headers, post.body);
            match &target.h1 {
                Some(pool) => {
                    let mut head = BytesMut::with_capacity(512);
                    let mut all: Vec<(&str, &[u8])> =
                        headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
                    if let Some(signature) = &signature {
                        all.push((HEADER_SIGNATURE, signature.as_bytes()));
                    }
                    h1::request_head(
                        &mut head,
                        target.path_and_query(),
                        pool.authority(),
                        &all,
                        post.body.len(),
                    );
                    let answer = pool
                        .exchange(&head, post.body, config.max_reply_size)
                        .await
                        .map_err(BackendError::from_h1)?;
                    Ok(Reply {
                        status: answer.status,
                        content_type: answer.content_type,
                        retry_after: answer.retry_after,
                        explicit_reply: answer.explicit_reply,
                        channels: answer.channels,
                        body: answer.body,
                    })
                }
                None => {
                    let mut request = self.http.post(target.url.clone()).body(post.body.clone());
                    for (name, value) in headers {
                        request = request.header(name, value);
                    }
                    if let Some(signature) = signature {
                        request = request.header(HEADER_SIGNATURE, signature);
                    }
                    let response = request.send().await.map_err(BackendError::from_reqwest)?;
                    let status = response.status();
                    let headers = response.headers();
                    let content_type = headers.get(CONTENT_TYPE).cloned();
                    let retry_after = headers.get(RETRY_AFTER).cloned();
                    let explicit_reply = headers
                        .get(HEADER_REPLY)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
                    let channels = ChannelHeaders::of(headers);
                    let body = read_limited(response, config.max_reply_size).await?;
                    Ok(Reply {
                        status,
                        content_type,
                        retry_after,
                        explicit_reply,
                        channels,
                        body,
                    })
                }
            }
        };
        tokio::time::timeout(config.timeout, exchange)
            .await
            .unwrap_or(Err(BackendError::Timeout))
    }

    /// POSTs one client message. A 2xx answer with a non-empty body is a reply to deliver to
    /// the client. Transient failures are retried with the same `x-ws-proxy-seq` and
    /// `x-ws-proxy-request-id`.
    pub(crate) async fn post_frame(
        &self,
        target: &BackendTarget,
        callback: &HeaderValue,
        ids: &RequestIds,
        seq: u64,
        payload: &Payload,
    ) -> Result<FrameAnswer, BackendError> {
        let content_type = match payload {
            Payload::Text(_) => TEXT_CONTENT_TYPE,
            Payload::Binary(_) => BINARY_CONTENT_TYPE,
        };
        let post = Post {
            kind: RequestKind::Frame,
            content_type,
            send: callback,
            request_id: ids.frame(seq),
            seq: Some(HeaderValue::from(seq)),
            close: None,
            body: payload.bytes(),
        };
        let answer = self.send_with_retries(target, &post).await?;
        let channels = answer.channels;
        if answer.body.is_empty() && !answer.explicit_reply {
            return Ok(FrameAnswer {
                reply: None,
                channels,
            });
        }
        let reply = Payload::from_http(answer.content_type.as_ref(), answer.body)
            .map_err(|_| BackendError::ReplyNotUtf8)?;
        Ok(FrameAnswer {
            reply: Some(reply),
            channels,
        })
    }

    /// POSTs the disconnect notice for an ended connection, retrying transient failures: it is
    /// the backend's only cleanup signal.
    pub(crate) async fn post_disconnect(
        &self,
        target: &BackendTarget,
        callback: &HeaderValue,
        ids: &RequestIds,
        ending: CloseReport<'_>,
    ) -> Result<(), BackendError> {
        let code = ending.code;
        let reason = code.map(|_| header_safe_reason(ending.reason));
        let close = CloseHeaders {
            initiator: ending.initiator.as_str(),
            cause: ending.cause.as_str(),
            code: code.map(HeaderValue::from),
            reason: reason
                .as_deref()
                .and_then(|r| HeaderValue::from_str(r).ok()),
        };
        let post = Post {
            kind: RequestKind::Disconnect,
            content_type: TEXT_CONTENT_TYPE,
            send: callback,
            request_id: ids.disconnect(),
            seq: None,
            close: Some(close),
            body: &Bytes::new(),
        };
        self.send_with_retries(target, &post).await?;
        Ok(())
    }

    /// `x-ws-proxy-signature` for a request with these headers and body to `target`, when
    /// signing is configured. Computed from the headers that are sent, so what is signed is
    /// what is sent.
    fn signature(
        &self,
        target: &BackendTarget,
        headers: &[(&'static str, HeaderValue)],
        body: &[u8],
    ) -> Option<HeaderValue> {
        self.signature_by(target, body, |name| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(&[][..], |(_, v)| v.as_bytes())
        })
    }

    /// The signature of a request whose headers `header` looks up.
    pub(super) fn signature_by<'h>(
        &self,
        target: &BackendTarget,
        body: &[u8],
        header: impl Fn(&str) -> &'h [u8],
    ) -> Option<HeaderValue> {
        let signer = self.settings.config.signer.as_ref()?;
        Some(signer.header(&SignedRequest {
            method: "POST",
            // The fragment, if any, is never sent.
            url: &target.url[..url::Position::AfterQuery],
            request_id: header(HEADER_REQUEST_ID),
            seq: header(HEADER_SEQ),
            content_type: header(CONTENT_TYPE.as_str()),
            send: header(HEADER_SEND),
            request_uri: header(HEADER_REQUEST_URI),
            close_code: header(HEADER_CLOSE_CODE),
            close_reason: header(HEADER_CLOSE_REASON),
            close_initiator: header(HEADER_CLOSE_INITIATOR),
            close_cause: header(HEADER_CLOSE_CAUSE),
            body,
        }))
    }
}

impl BackendTarget {
    /// The path and query the request line names.
    fn path_and_query(&self) -> &str {
        &self.url[url::Position::BeforePath..url::Position::AfterQuery]
    }
}

/// A frame or disconnect POST, as the retry loop sends it (once per attempt).
struct Post<'a> {
    kind: RequestKind,
    content_type: &'static str,
    send: &'a HeaderValue,
    request_id: HeaderValue,
    seq: Option<HeaderValue>,
    close: Option<CloseHeaders>,
    body: &'a Bytes,
}

/// The close headers of a disconnect POST.
struct CloseHeaders {
    initiator: &'static str,
    cause: &'static str,
    code: Option<HeaderValue>,
    reason: Option<HeaderValue>,
}

impl Post<'_> {
    /// The headers this POST carries besides `host`, `user-agent` and `content-length`.
    fn headers(&self) -> Vec<(&'static str, HeaderValue)> {
        let mut headers = Vec::with_capacity(8);
        headers.push((
            CONTENT_TYPE.as_str(),
            HeaderValue::from_static(self.content_type),
        ));
        headers.push((HEADER_SEND, self.send.clone()));
        if let Some(seq) = &self.seq {
            headers.push((HEADER_SEQ, seq.clone()));
        }
        headers.push((HEADER_REQUEST_ID, self.request_id.clone()));
        if let Some(close) = &self.close {
            headers.push((
                HEADER_CLOSE_INITIATOR,
                HeaderValue::from_static(close.initiator),
            ));
            headers.push((HEADER_CLOSE_CAUSE, HeaderValue::from_static(close.cause)));
            if let Some(code) = &close.code {
                headers.push((HEADER_CLOSE_CODE, code.clone()));
            }
            if let Some(reason) = &close.reason {
                headers.push((HEADER_CLOSE_REASON, reason.clone()));
            }
        }
        headers
    }
}

/// A frame or disconnect POST's answer, body read whole.
struct Reply {
    status: reqwest::StatusCode,
    content_type: Option<HeaderValue>,
    retry_after: Option<HeaderValue>,
    /// `x-ws-proxy-reply: true`: the body is a reply even when empty.
    explicit_reply: bool,
    channels: ChannelHeaders,
    body: Bytes,
}

/// A frame POST's 2xx answer: the reply to the client, if any, and the channels it joins or
/// leaves.
#[derive(Debug, Default)]
pub(crate) struct FrameAnswer {
    pub(crate) reply: Option<Payload>,
    pub(crate) channels: ChannelHeaders,
}

/// Reads a reqwest answer's body, refusing more than `limit` bytes; a body that arrives in one
/// chunk is not copied.
pub(super) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, BackendError> {
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BackendError::ReplyTooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BackendError::from_reqwest)? {
        if body.len() + chunk.len() > limit {
            return Err(BackendError::ReplyTooLarge);
        }
        if body.is_empty() && Some(chunk.len() as u64) == declared {
            return Ok(chunk);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
