//! HS256 JSON Web Tokens: signing ([`sign_hs256`]), checking ([`verify_hs256`], which the
//! publish API's bearer JWTs also go through) and the `Grip-Sig` header Pushpin puts on every
//! request to a backend ([`grip_sig`]). Pure functions over strings and keys: no clock (the
//! caller passes `now`), no headers map, no I/O.

// used by the websocket-over-http backend (issue 15)

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The request header carrying [`grip_sig`]'s token.
pub(crate) const HEADER_GRIP_SIG: &str = "grip-sig";
/// `iss` of a `Grip-Sig` token: Pushpin's default `sig_iss`.
pub(crate) const GRIP_SIG_ISSUER: &str = "pushpin";
/// Seconds a `Grip-Sig` token stays valid (Pushpin signs each request for one hour).
pub(crate) const GRIP_SIG_LIFETIME_SECS: u64 = 3600;

/// The JOSE header of every token signed here.
const HEADER_HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    /// Not three base64url parts of JSON, or an `exp` that is not a number.
    #[error("the JWT is malformed ({0})")]
    Malformed(&'static str),
    /// The header's `alg` is not `HS256` (`none` included).
    #[error("the JWT's alg is not HS256")]
    NotHs256,
    /// No key gives this signature.
    #[error("the JWT's signature matches no key")]
    BadSignature,
    /// `exp` is now or in the past.
    #[error("the JWT has expired")]
    Expired,
}

/// A compact HS256 token of `claims` signed with `key`.
pub(crate) fn sign_hs256(key: &[u8], claims: &serde_json::Value) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER_HS256),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// The claims of `token` if its header says HS256, its signature verifies with one of `keys`
/// and its `exp`, when present, is after `now` (seconds since the Unix epoch). The signature is
/// checked before the claims are read.
pub(crate) fn verify_hs256(
    keys: &[hmac::Key],
    token: &str,
    now: u64,
) -> Result<serde_json::Value, JwtError> {
    let (signed, signature) = token
        .rsplit_once('.')
        .ok_or(JwtError::Malformed("no signature"))?;
    let (head, claims) = signed
        .split_once('.')
        .ok_or(JwtError::Malformed("no claims"))?;
    let head = json_part(head).ok_or(JwtError::Malformed("header is not base64url JSON"))?;
    if head.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(JwtError::NotHs256);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    if !keys
        .iter()
        .any(|key| hmac::verify(key, signed.as_bytes(), &signature).is_ok())
    {
        return Err(JwtError::BadSignature);
    }
    let claims = json_part(claims).ok_or(JwtError::Malformed("claims are not base64url JSON"))?;
    match claims.get("exp") {
        None => Ok(claims),
        Some(exp) => match exp.as_f64() {
            Some(exp) if exp > now as f64 => Ok(claims),
            Some(_) => Err(JwtError::Expired),
            None => Err(JwtError::Malformed("exp is not a number")),
        },
    }
}

/// One base64url part of a token, as JSON.
fn json_part(part: &str) -> Option<serde_json::Value> {
    let raw = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&raw).ok()
}

/// The `Grip-Sig` value for a request made at `now`: the claims Pushpin signs (`iss` its
/// default issuer, `exp` one hour later), HS256 with `key`, which GRIP libraries check with
/// `validate_sig`/`validateSig`.
pub(crate) fn grip_sig(key: &[u8], now: u64) -> String {
    sign_hs256(
        key,
        &serde_json::json!({
            "iss": GRIP_SIG_ISSUER,
            "exp": now + GRIP_SIG_LIFETIME_SECS,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys(secrets: &[&[u8]]) -> Vec<hmac::Key> {
        secrets
            .iter()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s))
            .collect()
    }

    #[test]
    fn signed_tokens_verify_with_any_key() {
        let token = sign_hs256(KEY, &json!({"iss": "realm", "exp": 2000}));
        let both = keys(&[b"another-key-another-key-another-k", KEY]);
        assert_eq!(
            verify_hs256(&both, &token, 1999),
            Ok(json!({"iss": "realm", "exp": 2000}))
        );
        assert_eq!(verify_hs256(&both, &token, 2000), Err(JwtError::Expired));
        assert_eq!(
            verify_hs256(&keys(&[b"wrong"]), &token, 0),
            Err(JwtError::BadSignature)
        );
        let no_exp = sign_hs256(KEY, &json!({"iss": "realm"}));
        assert!(verify_hs256(&both, &no_exp, u64::MAX).is_ok());
    }

    #[test]
    fn tokens_that_are_not_hs256_or_not_tokens_are_refused() {
        let k = keys(&[KEY]);
        let token = sign_hs256(KEY, &json!({"exp": "soon"}));
        assert_eq!(
            verify_hs256(&k, &token, 0),
            Err(JwtError::Malformed("exp is not a number"))
        );
        let (_, rest) = token.split_once('.').unwrap_or_default();
        let none = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(verify_hs256(&k, &none, 0), Err(JwtError::NotHs256));
        assert_eq!(
            verify_hs256(&k, "abc", 0),
            Err(JwtError::Malformed("no signature"))
        );
        assert_eq!(
            verify_hs256(&k, "abc.def", 0),
            Err(JwtError::Malformed("no claims"))
        );
        assert_eq!(
            verify_hs256(&k, "!.a.b", 0),
            Err(JwtError::Malformed("header is not base64url JSON"))
        );
        let head = URL_SAFE_NO_PAD.encode(HEADER_HS256);
        assert_eq!(
            verify_hs256(&k, &format!("{head}.e30.!"), 0),
            Err(JwtError::Malformed("signature is not base64url"))
        );
    }

    #[test]
    fn grip_sig_carries_pushpins_claims() {
        let token = grip_sig(KEY, 1_700_000_000);
        assert_eq!(
            verify_hs256(&keys(&[KEY]), &token, 1_700_000_000),
            Ok(json!({"iss": "pushpin", "exp": 1_700_003_600u64}))
        );
    }

    /// Python gripcontrol's `validate_sig` accepts a token from [`grip_sig`] (and refuses it
    /// with another key). Skipped when gripcontrol is missing, unless `CI` is set.
    #[test]
    fn gripcontrol_validates_grip_sig() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = grip_sig(KEY, now);
        let script = "import sys\nfrom gripcontrol import validate_sig\n\
                      print(validate_sig(sys.argv[1], sys.argv[2].encode(), 'pushpin'), \
                      validate_sig(sys.argv[1], b'another-key-another-key-another-k'))";
        let key = std::str::from_utf8(KEY).unwrap_or_default();
        let run = std::process::Command::new("python3")
            .args(["-c", script, &token, key])
            .output();
        let output = match run {
            Ok(out) if out.status.success() => out,
            other => {
                let why = format!("python3 with gripcontrol did not run: {other:?}");
                assert!(std::env::var_os("CI").is_none(), "{why}");
                eprintln!("skipped: {why}");
                return;
            }
        };
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "True False");
    }
}
