//! Who may publish: with `--publish-secret` set, a request needs `Authorization: Bearer
//! <secret>` or `Bearer <JWT>` whose HS256 signature verifies with one of the secrets and
//! whose `exp`, when present, has not passed (what GRIP publishers send when given
//! `control_iss` and `key`). Without a secret every request is let in (the listener is then
//! on loopback; config refuses anything else). Comparisons take the same time for every
//! wrong guess.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use ring::hmac;

use crate::protocol::jwt::{self, JwtError};

/// Why a publish request is not authorized (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unauthorized {
    #[error("no Authorization header: send Authorization: Bearer <publish secret or HS256 JWT>")]
    Missing,
    #[error("the Authorization header is not Bearer <token>")]
    NotBearer,
    #[error("the bearer token matches no --publish-secret")]
    WrongSecret,
    #[error("the JWT is not HS256 signed with a --publish-secret")]
    BadSignature,
    #[error("the JWT has expired (exp is in the past); mint a fresh one")]
    Expired,
    #[error("the JWT is malformed ({0})")]
    Malformed(&'static str),
}

/// The publish secrets, as raw bytes and as HMAC keys.
pub(crate) struct Authorizer {
    secrets: Vec<Vec<u8>>,
    keys: Vec<hmac::Key>,
}

impl Authorizer {
    pub(crate) fn new(secrets: &[Vec<u8>]) -> Self {
        Authorizer {
            keys: secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s))
                .collect(),
            secrets: secrets.to_vec(),
        }
    }

    /// Whether the request may publish.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Unauthorized> {
        if self.secrets.is_empty() {
            return Ok(());
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Unauthorized::Missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(Unauthorized::NotBearer)?;
        if token.matches('.').count() == 2 {
            return self.check_jwt(token, now());
        }
        let mut matched = false;
        for secret in &self.secrets {
            matched |= same(secret, token.as_bytes());
        }
        if matched {
            Ok(())
        } else {
            Err(Unauthorized::WrongSecret)
        }
    }

    fn check_jwt(&self, token: &str, now: u64) -> Result<(), Unauthorized> {
        jwt::verify_hs256(&self.keys, token, now)
            .map(|_claims| ())
            .map_err(|e| match e {
                JwtError::Malformed(why) => Unauthorized::Malformed(why),
                JwtError::NotHs256 | JwtError::BadSignature => Unauthorized::BadSignature,
                JwtError::Expired => Unauthorized::Expired,
            })
    }
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Equality whose time depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use base64::Engine as _;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn jwt(secret: &[u8], alg: &str, claims: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signed = format!(
            "{}.{}",
            b64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
            b64.encode(claims)
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        format!(
            "{signed}.{}",
            b64.encode(hmac::sign(&key, signed.as_bytes()))
        )
    }

    fn check(auth: &Authorizer, value: Option<&str>) -> Result<(), Unauthorized> {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        auth.check(&headers)
    }

    #[test]
    fn secrets_and_jwts_are_checked() {
        let auth = Authorizer::new(&[
            b"old-secret-old-secret-old-secret".to_vec(),
            SECRET.to_vec(),
        ]);
        let secret = std::str::from_utf8(SECRET).unwrap_or_default();
        assert_eq!(check(&auth, Some(&format!("Bearer {secret}"))), Ok(()));
        assert_eq!(
            check(&auth, Some("Bearer old-secret-old-secret-old-secret")),
            Ok(()),
            "rotation"
        );
        assert_eq!(check(&auth, None), Err(Unauthorized::Missing));
        assert_eq!(
            check(&auth, Some("Basic abc")),
            Err(Unauthorized::NotBearer)
        );
        assert_eq!(
            check(&auth, Some("Bearer wrong")),
            Err(Unauthorized::WrongSecret)
        );
        let exp = now() + 600;
        let good = jwt(
            SECRET,
            "HS256",
            &format!(r#"{{"iss":"realm","exp":{exp}}}"#),
        );
        assert_eq!(check(&auth, Some(&format!("Bearer {good}"))), Ok(()));
        let expired = jwt(
            SECRET,
            "HS256",
            &format!(r#"{{"iss":"realm","exp":{}}}"#, now() - 1),
        );
        assert_eq!(
            check(&auth, Some(&format!("Bearer {expired}"))),
            Err(Unauthorized::Expired)
        );
        let wrong_key = jwt(
            b"another-secret-another-secret-xx",
            "HS256",
            r#"{"iss":"realm"}"#,
        );
        assert_eq!(
            check(&auth, Some(&format!("Bearer {wrong_key}"))),
            Err(Unauthorized::BadSignature)
        );
        let none_alg = jwt(SECRET, "none", r#"{"iss":"realm"}"#);
        assert_eq!(
            check(&auth, Some(&format!("Bearer {none_alg}"))),
            Err(Unauthorized::BadSignature)
        );
        assert_eq!(Authorizer::new(&[]).check(&HeaderMap::new()), Ok(()));
    }
}
