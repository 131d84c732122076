//! `--route PATH=URL[,protocol=…][,disconnect=URL][,connect=URL]` (and `[[route]]` tables in
//! the TOML file): paths the operator binds to backends, as Pushpin's routes file does, so that
//! clients never see backend URLs. A path ending in `/` matches its subtree (`/` matches
//! everything not served otherwise); any other path matches itself only; the longest match
//! wins. Targets are the operator's: they bypass the client allowlist.

use std::fmt;

use url::Url;

use super::ConfigError;

/// How a route's connections talk to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteProtocol {
    /// This bridge's contract: one POST per message, callback URLs.
    Seed,
    /// Pushpin's WebSocket-over-HTTP: events in request and answer bodies.
    WebSocketOverHttp,
}

impl RouteProtocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RouteProtocol::Seed => "seed",
            RouteProtocol::WebSocketOverHttp => "websocket-over-http",
        }
    }
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The path clients open: `/chat`, or a subtree such as `/chat/` or `/`.
    pub(crate) path: String,
    /// The backend: the frame URL (seed) or the events URL (websocket-over-http).
    pub(crate) target: Url,
    pub(crate) protocol: RouteProtocol,
    /// Seed routes: where the disconnect POST goes.
    pub(crate) disconnect: Option<Url>,
    /// Seed routes: the connect hook.
    pub(crate) connect: Option<Url>,
}

impl Route {
    /// Whether `path` is this route's (its subtree's, for a path ending in `/`).
    fn matches(&self, path: &str) -> bool {
        if self.path.ends_with('/') {
            path.starts_with(&self.path)
        } else {
            path == self.path
        }
    }

    /// The backend URL for a client that opened `path_and_query`: the target's path followed
    /// by what the client's path adds to the route's, and the client's query (merged after the
    /// target's own).
    pub(crate) fn backend_url(&self, path: &str, query: Option<&str>) -> Url {
        let mut url = self.target.clone();
        let rest = path.strip_prefix(self.path.as_str()).unwrap_or("");
        if !rest.is_empty() {
            let base = url.path().trim_end_matches('/').to_owned();
            url.set_path(&format!("{base}/{rest}"));
        }
        match (url.query().map(str::to_owned), query) {
            (Some(own), Some(q)) if !q.is_empty() => url.set_query(Some(&format!("{own}&{q}"))),
            (None, Some(q)) if !q.is_empty() => url.set_query(Some(q)),
            _ => {}
        }
        url
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}://{}{},protocol={}",
            self.path,
            self.target.scheme(),
            self.target.host_str().unwrap_or(""),
            self.target
                .port()
                .map(|p| format!(":{p}"))
                .unwrap_or_default(),
            self.protocol.as_str()
        )
    }
}

/// The routes, longest path first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes(Vec<Route>);

impl Routes {
    pub(crate) fn new(specs: &[String]) -> Result<Self, ConfigError> {
        let mut routes = specs
            .iter()
            .map(|spec| parse_route(spec))
            .collect::<Result<Vec<_>, _>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        for pair in routes.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(route_error(&pair[1].path, "the path is routed twice"));
            }
        }
        Ok(Routes(routes))
    }

    /// Whether no route is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The route serving `path`, if any.
    pub(crate) fn find(&self, path: &str) -> Option<&Route> {
        self.0.iter().find(|r| r.matches(path))
    }

    /// Whether `url` is an events URL one of the websocket-over-http routes could have built
    /// (its target's origin, a path under the target's): what a cluster node checks before
    /// sending a dead node's `DISCONNECT` there, as the allowlist is checked for seed URLs.
    pub(crate) fn serves_events_url(&self, url: &Url) -> bool {
        self.0.iter().any(|r| {
            let base = r.target.path().trim_end_matches('/');
            r.protocol == RouteProtocol::WebSocketOverHttp
                && r.target.origin() == url.origin()
                && url
                    .path()
                    .strip_prefix(base)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

fn route_error(spec: &str, reason: &str) -> ConfigError {
    ConfigError::Route {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Parses `PATH=URL[,key=value]…`.
fn parse_route(spec: &str) -> Result<Route, ConfigError> {
    let err = |reason: &str| route_error(spec, reason);
    let (path, rest) = spec
        .split_once('=')
        .ok_or_else(|| err("expected PATH=URL[,protocol=seed|websocket-over-http]"))?;
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(err("the path must start with / and hold no query"));
    }
    if matches!(path, "/connect" | "/healthz" | "/readyz") {
        return Err(err("the bridge serves this path itself"));
    }
    let mut parts = rest.split(',');
    let target = parse_url(parts.next().unwrap_or(""), spec, "target")?;
    let mut route = Route {
        path: path.to_owned(),
        target,
        protocol: RouteProtocol::Seed,
        disconnect: None,
        connect: None,
    };
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| err("options are key=value, separated by commas"))?;
        match key.trim() {
            "protocol" => {
                route.protocol = match value.trim() {
                    "seed" => RouteProtocol::Seed,
                    "websocket-over-http" => RouteProtocol::WebSocketOverHttp,
                    _ => return Err(err("protocol is seed or websocket-over-http")),
                }
            }
            "disconnect" => route.disconnect = Some(parse_url(value, spec, "disconnect")?),
            "connect" => route.connect = Some(parse_url(value, spec, "connect")?),
            _ => return Err(err("unknown option: use protocol, disconnect or connect")),
        }
    }
    if route.protocol == RouteProtocol::WebSocketOverHttp
        && (route.disconnect.is_some() || route.connect.is_some())
    {
        return Err(err(
            "disconnect and connect are for seed routes: a websocket-over-http backend gets OPEN and CLOSE events",
        ));
    }
    Ok(route)
}

fn parse_url(raw: &str, spec: &str, what: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| route_error(spec, &format!("the {what} URL does not parse ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(route_error(
            spec,
            &format!("the {what} URL must be http:// or https://"),
        ));
    }
    Ok(url)
}

/// A `[[route]]` table of the TOML file as a `--route` value.
pub(crate) fn from_table(table: &toml::Table) -> Result<String, String> {
    let field = |name: &str| table.get(name).and_then(toml::Value::as_str);
    let path = field("path").ok_or("a [[route]] needs path = \"/…\"")?;
    let target = field("target").ok_or("a [[route]] needs target = \"http://…\"")?;
    let mut spec = format!("{path}={target}");
    for key in ["protocol", "disconnect", "connect"] {
        if let Some(value) = field(key) {
            spec.push_str(&format!(",{key}={value}"));
        }
    }
    if let Some(unknown) = table.keys().find(|k| {
        !matches!(
            k.as_str(),
            "path" | "target" | "protocol" | "disconnect" | "connect"
        )
    }) {
        return Err(format!(
            "unknown key `{unknown}` in a [[route]]: use path, target, protocol, disconnect, connect"
        ));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(specs: &[&str]) -> Routes {
        Routes::new(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn longest_path_wins_and_subtrees_need_a_slash() {
        let r = routes(&[
            "/=http://a/",
            "/chat=http://b/ws,protocol=websocket-over-http",
            "/chat/=http://c/rooms",
        ]);
        assert_eq!(r.find("/chat").unwrap().target.host_str(), Some("b"));
        assert_eq!(r.find("/chat/1").unwrap().target.host_str(), Some("c"));
        assert_eq!(r.find("/other").unwrap().target.host_str(), Some("a"));
        assert_eq!(
            r.find("/chat").unwrap().protocol,
            RouteProtocol::WebSocketOverHttp
        );
        let exact = routes(&["/chat=http://b/ws"]);
        assert!(exact.find("/chat/1").is_none());
        assert!(exact.find("/").is_none());
    }

    #[test]
    fn events_urls_are_recognised_by_origin_and_path() {
        let r = routes(&[
            "/ws/=http://b:8080/events,protocol=websocket-over-http",
            "/seed=http://c/frames",
        ]);
        let yes = |u: &str| r.serves_events_url(&Url::parse(u).unwrap());
        assert!(yes("http://b:8080/events"));
        assert!(yes("http://b:8080/events/room?x=1"));
        assert!(!yes("http://b:8080/eventsx"));
        assert!(!yes("http://b:8081/events/room"));
        assert!(!yes("https://b:8080/events"));
        assert!(
            !yes("http://c/frames"),
            "a seed route is not an events route"
        );
    }

    #[test]
    fn the_client_path_and_query_reach_the_backend() {
        let r = routes(&["/chat/=http://c/rooms?v=1", "/=http://h"]);
        let url = r
            .find("/chat/9")
            .unwrap()
            .backend_url("/chat/9", Some("x=1"));
        assert_eq!(url.as_str(), "http://c/rooms/9?v=1&x=1");
        let url = r.find("/a/b").unwrap().backend_url("/a/b", None);
        assert_eq!(url.as_str(), "http://h/a/b");
    }

    #[test]
    fn bad_routes_say_why() {
        for bad in [
            "chat=http://b/",
            "/chat",
            "/chat=ftp://b/",
            "/chat=http://b/,protocol=grpc",
            "/chat=http://b/,color=red",
            "/connect=http://b/",
            "/c=http://b/,protocol=websocket-over-http,disconnect=http://b/d",
        ] {
            let e = Routes::new(&[bad.to_owned()]).unwrap_err().to_string();
            assert!(e.starts_with("--route"), "{bad}: {e}");
        }
        assert!(Routes::new(&["/a=http://b/".into(), "/a=http://c/".into()]).is_err());
    }

    #[test]
    fn route_tables_become_flags() {
        let table: toml::Table =
            "path = \"/chat\"\ntarget = \"http://b/ws\"\nprotocol = \"websocket-over-http\""
                .parse()
                .unwrap();
        assert_eq!(
            from_table(&table).unwrap(),
            "/chat=http://b/ws,protocol=websocket-over-http"
        );
        let table: toml::Table = "path = \"/c\"\ntarget = \"http://b/\"\nx = 1"
            .parse()
            .unwrap();
        assert!(from_table(&table).is_err());
    }
}
