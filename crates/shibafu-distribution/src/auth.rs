//! `WWW-Authenticate` challenges and bearer tokens: what a registry asks
//! for on 401 and what its token server answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One challenge: `Bearer realm="…",service="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lowercased scheme: `basic`, `bearer`.
    pub scheme: String,
    /// Lowercased parameter names → values (unquoted).
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// Parses every challenge of every `WWW-Authenticate` header value
/// (RFC 7235: challenges and their `k=v` / `k="v"` parameters are all
/// comma-separated; a token followed by a space starts a new challenge).
pub(crate) fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for v in values {
        parse_one_header(v, &mut out);
    }
    out
}

fn parse_one_header(s: &str, out: &mut Vec<Challenge>) {
    let b = s.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            return;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == start {
            // Garbage: give up on this header.
            return;
        }
        let token = &s[start..i];
        // A token directly followed by `=` with no scheme before it is a
        // parameter of the current challenge.
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() && !is_token68_end(b, j) {
            let (value, next) = parse_value(s, j + 1);
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
            i = next;
            continue;
        }
        // A new challenge.
        out.push(Challenge {
            scheme: token.to_ascii_lowercase(),
            params: BTreeMap::new(),
        });
        i = j;
        // Its first parameter (if any) follows after whitespace.
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let pstart = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i > pstart && i < b.len() && b[i] == b'=' && !is_token68_end(b, i) {
            let key = s[pstart..i].to_ascii_lowercase();
            let (value, next) = parse_value(s, i + 1);
            if let Some(c) = out.last_mut() {
                c.params.insert(key, value);
            }
            i = next;
        } else {
            // token68 or nothing: skip to the next comma.
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
        }
    }
}

/// `abc==` (a token68 credential) rather than `k=v`: the run of `=` ends
/// the item.
fn is_token68_end(b: &[u8], eq: usize) -> bool {
    let mut k = eq;
    while k < b.len() && b[k] == b'=' {
        k += 1;
    }
    k == b.len() || matches!(b[k], b',' | b' ' | b'\t')
}

/// A quoted string (with `\` escapes) or a bare token; returns the value
/// and the index after it.
fn parse_value(s: &str, mut i: usize) -> (String, usize) {
    let b = s.as_bytes();
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    let mut v = String::new();
    if i < b.len() && b[i] == b'"' {
        i += 1;
        let mut chars = s[i..].char_indices();
        while let Some((k, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        v.push(n);
                    }
                }
                '"' => return (v, i + k + 1),
                c => v.push(c),
            }
        }
        (v, b.len())
    } else {
        let start = i;
        while i < b.len() && b[i] != b',' && b[i] != b' ' && b[i] != b'\t' {
            i += 1;
        }
        (s[start..i].to_string(), i)
    }
}

/// A token server's answer (docker/distribution `getTokenResponse` and
/// the OAuth2 `postTokenResponse`).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub access_token: String,
    #[serde(default)]
    pub expires_in: u64,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// distribution's `minimumTokenLifetimeSeconds`: shorter or missing
/// lifetimes count as this.
const MIN_TOKEN_LIFETIME: u64 = 60;

/// A cached bearer token.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
    pub refresh: Option<String>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<Token> {
        let value = if !self.token.is_empty() {
            self.token
        } else {
            self.access_token
        };
        if value.is_empty() {
            return None;
        }
        let life = self.expires_in.max(MIN_TOKEN_LIFETIME);
        Some(Token {
            value,
            // Renew a little early so a token does not expire in flight.
            expires: Instant::now() + Duration::from_secs(life) - Duration::from_secs(5),
            refresh: self.refresh_token.filter(|r| !r.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic() {
        let c = parse_challenges([
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        ]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull"));
        let c = parse_challenges([r#"Basic realm="Registry Realm""#]);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
    }

    #[test]
    fn parses_several_challenges_in_one_header() {
        let c = parse_challenges([
            r#"Basic realm="a, b", Bearer realm="http://x/t", service=svc ,scope="s:a:pull,push""#,
            "Negotiate abc==, Digest realm=r",
        ]);
        let schemes: Vec<_> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "bearer", "negotiate", "digest"]);
        assert_eq!(c[0].param("realm"), Some("a, b"));
        assert_eq!(c[1].param("realm"), Some("http://x/t"));
        assert_eq!(c[1].param("service"), Some("svc"));
        assert_eq!(c[1].param("scope"), Some("s:a:pull,push"));
        assert_eq!(c[3].param("realm"), Some("r"));
    }

    #[test]
    fn escaped_quotes_and_empty() {
        let c = parse_challenges([r#"Bearer realm="a\"b""#, "", "Basic"]);
        assert_eq!(c[0].param("realm"), Some("a\"b"));
        assert_eq!(c[1].scheme, "basic");
    }

    #[test]
    fn token_lifetime_defaults() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#).unwrap();
        let t = t.into_token().unwrap();
        assert_eq!(t.value, "x");
        assert!(t.expires > Instant::now() + Duration::from_secs(50));
        let t: TokenResponse =
            serde_json::from_str(r#"{"token":"y","expires_in":3600,"refresh_token":"r"}"#).unwrap();
        let t = t.into_token().unwrap();
        assert_eq!((t.value.as_str(), t.refresh.as_deref()), ("y", Some("r")));
        let t: TokenResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert!(t.into_token().is_none());
    }
}
