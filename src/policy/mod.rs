//! Admission policy: which backend URLs a client may name ([`allowlist`]), which origins may
//! connect ([`origin`]), how many connections and messages a client may have ([`limits`]), and
//! who the client is behind trusted proxies ([`forwarded`]). Pure checks over values: no I/O,
//! no sockets, no knowledge of the rest of the bridge.

pub(crate) mod allowlist;
pub(crate) mod forwarded;
pub(crate) mod limits;
pub(crate) mod origin;
