//! The process's open-files limit (`RLIMIT_NOFILE`): raising the soft limit to the hard one at
//! startup, and the descriptor budget, i.e. how many WebSocket connections fit beside the
//! descriptors the rest of the bridge needs. Owns no socket and refuses nothing itself: the
//! server caps [`crate::policy::limits::ConnectionLimits`] with [`DescriptorBudget::connections`] (the
//! handshake answers 503 beyond it) and the backend pool with
//! [`DescriptorBudget::backend_connections`].
//!
//! Why: a stock Linux shell starts processes with a soft limit of 1024 (the hard limit is
//! usually far higher). Left there, the bridge would run out of descriptors at about 1,000
//! clients, far below `--max-connections`, and then fail at `accept`, where nothing can be
//! answered: handshakes hang, and callbacks and health checks fail with them. Go servers,
//! HAProxy and nginx (`worker_rlimit_nofile`) raise the limit themselves; so does the bridge.

use std::fmt;

use crate::config::{BackendConfig, LimitsConfig};

/// Descriptors the bridge needs whatever its traffic: stdin/stdout/stderr, the runtime's
/// epoll instances and wakers, the signal pipe, the listeners (main and metrics), plus headroom
/// for name lookups in flight and files read at startup. 14 are open in an idle bridge with a
/// metrics listener (counted in `/proc/PID/fd`); 32 leaves room for the rest.
pub(crate) const RUNTIME_RESERVE: u64 = 32;

/// Descriptors for HTTP connections that no flag bounds: health probes, metrics scrapes,
/// keep-alive callback connections waiting between requests, and refused handshakes on their
/// way out.
pub(crate) const HTTP_SLACK: u64 = 64;

/// Callback connections delivering a body at once that the budget keeps room for. No flag
/// bounds them (`--callback-body-memory` bounds their bytes, not their number); 256 is what a
/// busy backend pool opens towards one bridge.
pub(crate) const CALLBACK_CONNECTIONS: usize = 256;

/// Connections one publish or metrics listener serves at once (more wait in its accept queue).
/// Publishers and scrapers keep a few keep-alive connections each; 256 leaves room for many
/// while bounding what idle sockets can hold (a descriptor and about 10 KiB of buffers each).
pub(crate) const INTERNAL_CONNECTIONS: usize = 256;

/// The open-files limits of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit: the one in force.
    pub soft: u64,
    /// The hard limit: how far an unprivileged process may raise the soft one.
    pub hard: u64,
}

/// Why the open-files limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    /// `getrlimit` failed (or the platform has no `RLIMIT_NOFILE`): the caller goes on without
    /// a descriptor budget.
    #[error("cannot read the open-files limit (RLIMIT_NOFILE): {0}")]
    Read(#[source] std::io::Error),
    /// `setrlimit` failed: the caller goes on with the limit it has (`from`).
    #[error("cannot raise the open-files limit (RLIMIT_NOFILE) from {from} to {to}: {source}")]
    Raise {
        /// The soft limit in force.
        from: u64,
        /// The hard limit it was to be raised to.
        to: u64,
        /// What `setrlimit` said.
        #[source]
        source: std::io::Error,
    },
}

impl OpenFiles {
    /// The limits in force now.
    pub fn current() -> Result<OpenFiles, FdLimitError> {
        let (soft, hard) = rlimit::Resource::NOFILE.get().map_err(FdLimitError::Read)?;
        Ok(OpenFiles { soft, hard })
    }
}

/// What [`raise_soft_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit before.
    pub from: u64,
    /// The limits after.
    pub now: OpenFiles,
}

/// Raises the soft open-files limit of this process to its hard limit (capped by the
/// platform's per-process maximum, e.g. `kern.maxfilesperproc` on macOS). Needs no privilege;
/// a no-op when the soft limit is already the hard one. Call it before opening sockets.
pub fn raise_soft_limit() -> Result<Raised, FdLimitError> {
    let before = OpenFiles::current()?;
    if before.soft < before.hard {
        rlimit::increase_nofile_limit(before.hard).map_err(|source| FdLimitError::Raise {
            from: before.soft,
            to: before.hard,
            source,
        })?;
    }
    Ok(Raised {
        from: before.soft,
        now: OpenFiles::current()?,
    })
}

/// What the bridge is configured to hold, in descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Demand {
    /// `--max-connections`: one client socket each.
    pub(crate) max_connections: usize,
    /// `--backend-max-connections`: sockets to one backend host (the common deployment has
    /// one; each further host may take as many again).
    pub(crate) backend_connections: usize,
    /// Callback connections delivering a body at once: [`CALLBACK_CONNECTIONS`].
    pub(crate) callback_bodies: usize,
    /// Connections the publish and metrics listeners may hold: 256 for each one configured.
    pub(crate) internal: usize,
}

impl Demand {
    /// What a configuration with these limits, this backend pool and `internal_listeners`
    /// publish and metrics listeners (0, 1 or 2) asks for.
    pub(crate) fn new(
        limits: &LimitsConfig,
        backend: &BackendConfig,
        internal_listeners: usize,
    ) -> Self {
        Demand {
            max_connections: limits.max_connections,
            backend_connections: backend.max_connections_per_host,
            callback_bodies: CALLBACK_CONNECTIONS,
            internal: internal_listeners.saturating_mul(INTERNAL_CONNECTIONS),
        }
    }
}

/// How the open-files limit is shared out.
///
/// ```text
/// runtime     = RUNTIME_RESERVE
/// http_wanted = --backend-max-connections + CALLBACK_CONNECTIONS + HTTP_SLACK
///               + INTERNAL_CONNECTIONS per publish or metrics listener
/// http        = min(http_wanted, (limit - runtime) / 2)
/// connections = limit - runtime - http          (WebSocket connections that fit)
/// backend     = --backend-max-connections * http / http_wanted  (at least 1)
/// ```
///
/// A WebSocket connection is one descriptor, but it is of no use without the HTTP side: its
/// messages go out on backend sockets and its replies come in on callback connections, and
/// the health checks that keep it in a load balancer are HTTP too. So the HTTP side gets what
/// its flags allow first; when the limit is too small for that (a few hundred descriptors),
/// what is left after the runtime is split evenly, so that some clients are served and their
/// callbacks still get through, rather than none. The bridge's own outbound sockets are then
/// kept inside that share too: the per-host backend pool is lowered in proportion (callback
/// and probe connections are opened by others, so nothing lower than the connection cap
/// bounds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DescriptorBudget {
    /// The soft open-files limit the budget was made for.
    pub(crate) limit: OpenFiles,
    /// What the configuration asks for.
    pub(crate) demand: Demand,
    /// Descriptors kept for the HTTP side (backends, callbacks, probes).
    pub(crate) http: u64,
    /// WebSocket connections the limit holds beside everything else.
    pub(crate) connections: usize,
    /// Concurrent connections to one backend host in force: `--backend-max-connections`, or
    /// fewer when the limit is short.
    pub(crate) backend_connections: usize,
}

impl DescriptorBudget {
    /// The budget for `demand` within `limit`.
    pub(crate) fn new(limit: OpenFiles, demand: Demand) -> Self {
        let after_runtime = limit.soft.saturating_sub(RUNTIME_RESERVE);
        let wanted = http_wanted(&demand);
        let http = wanted.min(after_runtime / 2);
        let connections = usize::try_from(after_runtime - http).unwrap_or(usize::MAX);
        let backend_connections = if http < wanted {
            // Scaled in u128: the product of two u64 cannot overflow it.
            let scaled = u128::from(as_u64(demand.backend_connections)) * u128::from(http)
                / u128::from(wanted);
            usize::try_from(scaled).unwrap_or(usize::MAX).max(1)
        } else {
            demand.backend_connections
        };
        DescriptorBudget {
            limit,
            demand,
            http,
            connections,
            backend_connections,
        }
    }

    /// Descriptors the whole configuration needs: `--max-connections` plus the reserves.
    pub(crate) fn needed(&self) -> u64 {
        as_u64(self.demand.max_connections)
            .saturating_add(RUNTIME_RESERVE)
            .saturating_add(http_wanted(&self.demand))
    }

    /// The connection limit in force: `--max-connections`, or fewer if the descriptors hold
    /// fewer.
    pub(crate) fn max_connections(&self) -> usize {
        self.demand.max_connections.min(self.connections)
    }

    /// Whether the open-files limit holds fewer connections than `--max-connections`.
    pub(crate) fn is_short(&self) -> bool {
        self.connections < self.demand.max_connections
    }
}

fn http_wanted(demand: &Demand) -> u64 {
    as_u64(demand.backend_connections)
        .saturating_add(as_u64(demand.callback_bodies))
        .saturating_add(as_u64(demand.internal))
        .saturating_add(HTTP_SLACK)
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The startup warning of a budget that is short: the numbers, then the fixes.
impl fmt::Display for DescriptorBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needed = self.needed();
        write!(
            f,
            "the open-files limit (RLIMIT_NOFILE) is {soft} (hard limit {hard}), but --max-connections {max} needs about {needed} descriptors: \
             {max} client sockets + {backends} backend connections (--backend-max-connections) + {bodies} callback connections \
             {internal}+ {HTTP_SLACK} probes and idle HTTP connections + {RUNTIME_RESERVE} for the runtime and listeners. \
             Accepting at most {fit} WebSocket connections (handshakes beyond get 503) and {pool} connections per backend host. \
             Fix: raise the limit to {needed} or more (`ulimit -n {needed}` before starting, `LimitNOFILE={needed}` in the systemd unit, \
             `docker run --ulimit nofile={needed}:{needed}`), or lower --max-connections to {fit}",
            soft = self.limit.soft,
            hard = self.limit.hard,
            max = self.demand.max_connections,
            backends = self.demand.backend_connections,
            bodies = self.demand.callback_bodies,
            internal = match self.demand.internal {
                0 => String::new(),
                n => format!("+ {n} publish and metrics connections "),
            },
            fit = self.connections,
            pool = self.backend_connections,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Demand = Demand {
        max_connections: 10_000,
        backend_connections: 256,
        callback_bodies: 256,
        internal: 0,
    };

    fn budget(soft: u64) -> DescriptorBudget {
        DescriptorBudget::new(OpenFiles { soft, hard: soft }, DEFAULTS)
    }

    #[test]
    fn a_large_limit_holds_the_defaults() {
        let b = budget(20_000);
        assert_eq!(b.needed(), 10_608);
        assert_eq!(b.http, 576);
        assert_eq!(b.connections, 20_000 - 608);
        assert_eq!(b.max_connections(), 10_000);
        assert_eq!(b.backend_connections, 256);
        assert!(!b.is_short());
        assert!(!budget(10_608).is_short());
        assert!(budget(10_607).is_short());
    }

    #[test]
    fn a_small_limit_is_split_between_clients_and_http() {
        let b = budget(1024);
        assert_eq!(
            (b.http, b.connections, b.backend_connections),
            (496, 496, 220)
        );
        assert!(b.is_short());
        let b = budget(256);
        assert_eq!(
            (b.http, b.connections, b.max_connections()),
            (112, 112, 112)
        );
        assert_eq!(b.backend_connections, 49);
        let b = budget(48);
        assert_eq!((b.http, b.connections, b.backend_connections), (8, 8, 3));
    }

    #[test]
    fn a_tiny_limit_holds_nothing_and_nothing_overflows() {
        assert_eq!(budget(0).connections, 0);
        assert_eq!(budget(0).backend_connections, 1);
        assert_eq!(budget(RUNTIME_RESERVE).connections, 0);
        let huge = DescriptorBudget::new(
            OpenFiles {
                soft: u64::MAX,
                hard: u64::MAX,
            },
            Demand {
                max_connections: usize::MAX,
                backend_connections: usize::MAX,
                callback_bodies: usize::MAX,
                internal: usize::MAX,
            },
        );
        assert_eq!(huge.needed(), u64::MAX);
        assert!(huge.connections > 0);
    }

    #[test]
    fn the_warning_names_the_numbers_and_the_fixes() {
        let text = budget(256).to_string();
        for needle in [
            "is 256 (hard limit 256)",
            "--max-connections 10000 needs about 10608",
            "at most 112 WebSocket connections",
            "and 49 connections per backend host",
            "ulimit -n 10608",
            "LimitNOFILE=10608",
            "--ulimit nofile=10608:10608",
            "lower --max-connections to 112",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
    }

    #[test]
    fn publish_and_metrics_listeners_are_counted() {
        let both = Demand {
            internal: 2 * INTERNAL_CONNECTIONS,
            ..DEFAULTS
        };
        let b = DescriptorBudget::new(
            OpenFiles {
                soft: 20_000,
                hard: 20_000,
            },
            both,
        );
        assert_eq!(b.needed(), 10_608 + 512);
        assert!(
            b.to_string()
                .contains("+ 512 publish and metrics connections +")
        );
        assert!(!budget(256).to_string().contains("publish"));
    }

    #[test]
    fn the_soft_limit_can_be_read_and_raised() {
        let raised = raise_soft_limit().expect("getrlimit/setrlimit");
        assert!(raised.now.soft >= raised.from);
        assert_eq!(raised.now, OpenFiles::current().expect("getrlimit"));
    }
}
