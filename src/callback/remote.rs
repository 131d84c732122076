//! Callbacks across nodes (cluster mode): a callback for another node's connection is read
//! here within the usual bounds, forwarded to its node as a [`wire::Op`], and answered with
//! that node's answer ([`Callbacks::serve_remote`]); a callback forwarded to this node is run
//! on the local connection ([`CallbackInbox`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::close::close_params;
use super::error::RETRY_AFTER_SECS;
use super::{ApiError, Callbacks};
use crate::cluster::wire::{Answer, Op};
use crate::cluster::{Cluster, ForwardError, Inbox};
use crate::config::NodeId;
use crate::protocol::channel::ChannelName;
use crate::session::registry::ConnectionId;

/// How long a forwarded `DELETE` waits for room in a full queue: less than the asking node's
/// `--forward-timeout` default, so the answer gets back in time.
const FORWARDED_CLOSE_WAIT: Duration = Duration::from_secs(1);

impl Callbacks {
    /// Serves a request for a connection of node `node`, through it.
    pub(super) async fn serve_remote(
        &self,
        cluster: &Cluster,
        node: &NodeId,
        id: ConnectionId,
        channel: Option<&str>,
        parts: &Parts,
        body: Body,
    ) -> Result<Response, ApiError> {
        let op = match (channel, &parts.method) {
            (Some(channel), method) => {
                let name = ChannelName::parse(channel)?;
                match *method {
                    Method::PUT => Op::Join(name),
                    Method::DELETE => Op::Leave(name),
                    _ => return Err(ApiError::ChannelMethod),
                }
            }
            (None, &Method::POST) => Op::Send(self.read_payload(&parts.headers, body).await?),
            (None, &Method::DELETE) => {
                let (code, reason) = close_params(parts.uri.query())?;
                Op::Close { code, reason }
            }
            (None, &Method::GET | &Method::HEAD) => Op::Get,
            (None, _) => return Err(ApiError::Method),
        };
        match cluster.forward(node, id, op).await {
            Ok(answer) => Ok(response(answer)),
            Err(ForwardError::NodeGone) => Err(ApiError::UnknownConnection),
            Err(e) => Err(ApiError::Forward(e)),
        }
    }

    /// Runs an op forwarded by another node on local connection `id`.
    async fn run(&self, id: ConnectionId, op: Op) -> Answer {
        let result = match op {
            Op::Send(payload) => match self.registry.lookup(&id) {
                Some(handle) => self.enqueue(&handle, id, payload).map(|s| (s, None)),
                None => Err(ApiError::UnknownConnection),
            },
            Op::Close { code, reason } => self
                .close(id, code, reason, FORWARDED_CLOSE_WAIT)
                .await
                .map(|s| (s, None)),
            Op::Get => self.get(id).map(|info| {
                let json = serde_json::to_vec(&info).unwrap_or_default();
                (StatusCode::OK, Some(Bytes::from(json)))
            }),
            Op::Join(name) => self.membership(id, name, true).await.map(|s| (s, None)),
            Op::Leave(name) => self.membership(id, name, false).await.map(|s| (s, None)),
        };
        match result {
            Ok((status, json)) => Answer {
                number: 0,
                status: status.as_u16(),
                retry_after: false,
                json: json.is_some(),
                body: json.unwrap_or_default(),
            },
            Err(e) => Answer {
                number: 0,
                status: e.status().as_u16(),
                retry_after: e.status() == StatusCode::SERVICE_UNAVAILABLE,
                json: false,
                body: Bytes::from(format!("{e}\n")),
            },
        }
    }
}

/// The owning node's answer as this node's response.
fn response(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = if answer.json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if answer.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
}

/// The callback API as the cluster's [`Inbox`]: runs what other nodes forward.
pub(crate) struct CallbackInbox(pub(crate) Arc<Callbacks>);

impl Inbox for CallbackInbox {
    fn handle(&self, connection: ConnectionId, op: Op) -> BoxFuture<'static, Answer> {
        let callbacks = Arc::clone(&self.0);
        Box::pin(async move { callbacks.run(connection, op).await })
    }
}
