//! What a connection owes when it ends, kept by drop guards so it is paid whatever ends the
//! task, a panic included: exactly one disconnect POST ([`DisconnectOwed`]), and its place in
//! the open-connections gauge and the connection limits ([`OpenConnection`]).

use std::sync::Arc;

use reqwest::header::HeaderValue;
use tracing::{debug, error, warn};

use super::close::Ending;
use super::events::{self, EventsLink};
use crate::backend::{BackendClient, BackendTarget, RequestIds};
use crate::metrics::Metrics;
use crate::policy::limits::ConnectionSlot;

/// The notice a connection owes its backend when it ends.
pub(crate) enum DisconnectNotice {
    /// The seed contract's disconnect POST.
    Post {
        backend: BackendClient,
        target: BackendTarget,
        callback: HeaderValue,
        request_ids: RequestIds,
    },
    /// A websocket-over-http connection's last request (CLOSE or DISCONNECT). The task sends
    /// it itself with its own state ([`DisconnectOwed::paid`]); this is the fallback.
    Events {
        backend: BackendClient,
        target: Arc<BackendTarget>,
        link: Box<EventsLink>,
    },
}

impl DisconnectNotice {
    async fn send(self, ending: &Ending) {
        let sent = match self {
            DisconnectNotice::Post {
                backend,
                target,
                callback,
                request_ids,
            } => {
                backend
                    .post_disconnect(&target, &callback, &request_ids, ending.report())
                    .await
            }
            DisconnectNotice::Events {
                backend,
                target,
                mut link,
            } => {
                let last = events::last_event(ending.code, &ending.reason, ending.is_clean());
                events::send_last(&backend, &target, &mut link, vec![last]).await
            }
        };
        if let Err(e) = sent {
            warn!(error = %e.detail(), "disconnect notice failed");
        }
    }
}

/// Sends the owed disconnect POST exactly once: through [`DisconnectOwed::send`], or, if the
/// task is dropped before that (a panic while closing), from its `Drop`, as an internal error.
pub(crate) struct DisconnectOwed(pub(crate) Option<DisconnectNotice>);

impl DisconnectOwed {
    /// The connection task sent the notice itself.
    pub(crate) fn paid(&mut self) {
        self.0 = None;
    }

    pub(crate) async fn send(&mut self, ending: &Ending) {
        // Taken before sending: a panic inside the POST must not lead to a second one.
        if let Some(notice) = self.0.take() {
            notice.send(ending).await;
        }
    }
}

impl Drop for DisconnectOwed {
    fn drop(&mut self) {
        let Some(notice) = self.0.take() else {
            return;
        };
        error!("connection task ended without its disconnect POST; sending it now");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { notice.send(&Ending::internal_error()).await });
        }
    }
}

/// One open connection in the gauge and the connection limits, for as long as its task lives.
pub(crate) struct OpenConnection {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) _slot: ConnectionSlot,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.open.dec();
        debug!("connection task finished");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::config::BackendConfig;

    /// A backend on 127.0.0.1:0 that forwards the close cause of every POST it gets.
    async fn cause_recorder() -> (url::Url, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let tx = tx.clone();
            async move {
                let cause = headers
                    .get("x-ws-proxy-close-cause")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(cause);
                axum::http::StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = url::Url::parse(&format!("http://{addr}/disconnect"))
            .unwrap_or_else(|e| panic!("url: {e}"));
        (url, rx)
    }

    fn client() -> BackendClient {
        let config = BackendConfig {
            timeout: Duration::from_secs(5),
            max_reply_size: 1024,
            max_connections_per_host: 4,
            retries: 0,
            retry_budget: Duration::ZERO,
            extra_roots: Vec::new(),
            signer: None,
            deny_private_networks: false,
        };
        BackendClient::new(&config, Arc::new(Metrics::new()))
            .unwrap_or_else(|e| panic!("client: {e}"))
    }

    #[tokio::test]
    async fn a_task_that_panics_still_sends_exactly_one_disconnect_post() {
        let (url, mut causes) = cause_recorder().await;
        let backend = client();
        let owed = DisconnectOwed(Some(DisconnectNotice::Post {
            target: backend.target(url),
            backend,
            callback: HeaderValue::from_static("http://bridge.test/x"),
            request_ids: RequestIds::random().unwrap_or_else(|e| panic!("{e}")),
        }));
        let task = tokio::spawn(async move {
            let _owed = owed;
            panic!("a bug in the connection task");
        });
        assert!(task.await.is_err_and(|e| e.is_panic()));
        let cause = tokio::time::timeout(Duration::from_secs(10), causes.recv()).await;
        assert_eq!(cause.ok().flatten().as_deref(), Some("internal-error"));
        // Exactly one: nothing else arrives.
        let more = tokio::time::timeout(Duration::from_millis(200), causes.recv()).await;
        assert!(more.is_err(), "a second disconnect POST arrived");
    }

    #[tokio::test]
    async fn a_sent_notice_is_not_sent_again_on_drop() {
        let (url, mut causes) = cause_recorder().await;
        let backend = client();
        let mut owed = DisconnectOwed(Some(DisconnectNotice::Post {
            target: backend.target(url),
            backend,
            callback: HeaderValue::from_static("http://bridge.test/x"),
            request_ids: RequestIds::random().unwrap_or_else(|e| panic!("{e}")),
        }));
        owed.send(&Ending::client_gone("test")).await;
        drop(owed);
        let cause = tokio::time::timeout(Duration::from_secs(10), causes.recv()).await;
        assert_eq!(cause.ok().flatten().as_deref(), Some("client-gone"));
        let more = tokio::time::timeout(Duration::from_millis(200), causes.recv()).await;
        assert!(more.is_err(), "a second disconnect POST arrived");
    }
}
