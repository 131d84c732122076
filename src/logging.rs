//! What may reach the logs, and how often: backend URLs redacted ([`redacted`]: never a
//! query, each part cut short) and floods thinned ([`worth_logging`]). Pure functions.

use url::Url;

/// Whether the `n`th event of a kind deserves a log line: the first ones, then every
/// thousandth, so a flood cannot flood the logs.
pub(crate) fn worth_logging(n: u64) -> bool {
    n <= 10 || n.is_power_of_two() || n % 1000 == 0
}

/// Longest host or path shown in a logged URL, in bytes.
const MAX_LOGGED_PART: usize = 100;

/// A backend URL for logs and refusal messages: scheme, host, port and path, each cut to
/// about 100 bytes; never the query (it may carry secrets) nor the fragment.
pub(crate) fn redacted(url: &Url) -> String {
    let cut = |part: &str| -> String {
        if part.len() <= MAX_LOGGED_PART {
            return part.to_owned();
        }
        let mut end = MAX_LOGGED_PART;
        while !part.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &part[..end])
    };
    let mut out = format!(
        "{}://{}",
        url.scheme(),
        cut(&url[url::Position::BeforeHost..url::Position::AfterPort])
    );
    out.push_str(&cut(url.path()));
    if url.query().is_some() {
        out.push_str("?…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floods_are_thinned() {
        let logged: Vec<u64> = (1..=5000).filter(|n| worth_logging(*n)).collect();
        assert_eq!(&logged[..11], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16]);
        assert!(logged.contains(&1000) && logged.contains(&4096));
        assert!(logged.len() < 30);
    }

    #[test]
    fn logged_urls_hide_the_query() {
        let url =
            Url::parse("https://b.example/f?token=secret#x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(redacted(&url), "https://b.example/f?…");
        let url = Url::parse("http://b.example:8080/f#frag").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(redacted(&url), "http://b.example:8080/f");
    }

    #[test]
    fn logged_urls_are_short() {
        let long = format!("https://b.example/{}?token=secret", "p".repeat(60_000));
        let url = Url::parse(&long).unwrap_or_else(|e| panic!("{e}"));
        let shown = redacted(&url);
        assert!(shown.len() < 150, "{}", shown.len());
        assert!(shown.starts_with("https://b.example/ppp") && shown.ends_with("…?…"));
    }
}
