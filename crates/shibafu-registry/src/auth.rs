//! Authentication: htpasswd (bcrypt) users, and the bearer tokens this
//! registry issues itself (JWT-shaped, HMAC-SHA256 with a random key kept in
//! the storage root, so tokens survive a restart and nothing else can mint
//! them). Every authenticated user may pull, push and delete everywhere;
//! anonymous users get nothing while an htpasswd file is configured.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The service name in challenges and tokens.
pub const SERVICE: &str = "shibafu-registry";
/// Lifetime of an access token. Long enough for a big push; clients ask for
/// a new one when it runs out.
pub const ACCESS_TTL_SECS: i64 = 3600;
/// Lifetime of an oauth2 refresh token (`docker login` keeps it).
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;
const KEY_FILE: &str = "token.key";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("htpasswd line {line}: {reason}")]
    Htpasswd { line: usize, reason: String },
    #[error("malformed token")]
    Malformed,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("not a {0} token")]
    WrongKind(&'static str),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Users and their bcrypt hashes, as `htpasswd -B` writes them.
#[derive(Debug, Clone)]
pub struct Htpasswd {
    users: HashMap<String, String>,
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Self::parse(&text)
    }

    /// Only bcrypt entries are accepted: the MD5/SHA1/crypt forms are weak,
    /// and distribution refuses them as well.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| AuthError::Htpasswd {
                line: i + 1,
                reason: reason.to_string(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| err("expected user:hash"))?;
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            if !["$2a$", "$2b$", "$2x$", "$2y$"]
                .iter()
                .any(|p| hash.starts_with(p))
            {
                return Err(err("not a bcrypt hash (create it with `htpasswd -B`)"));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd { users })
    }

    /// Slow by design (bcrypt); call off the async threads.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => false,
        }
    }
}

/// One granted (or requested) access: `repository:busybox:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// Parses one scope; the name may itself contain `:` (a `host:port/`
    /// prefix), so type and actions are split off the two ends.
    pub fn parse(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// Parses a `scope` parameter: several scopes separated by spaces.
    pub fn parse_all(scopes: &str) -> Vec<Access> {
        scopes.split(' ').filter_map(Access::parse).collect()
    }
}

/// What an authenticated user may be granted out of a requested scope.
pub fn grant(requested: &[Access]) -> Vec<Access> {
    requested
        .iter()
        .filter_map(|a| {
            let allowed: &[&str] = match a.kind.as_str() {
                "repository" => &["pull", "push", "delete", "*"],
                "registry" => &["*"],
                _ => &[],
            };
            let actions: Vec<String> = a
                .actions
                .iter()
                .filter(|x| allowed.contains(&x.as_str()))
                .cloned()
                .collect();
            (!actions.is_empty()).then(|| Access {
                kind: a.kind.clone(),
                name: a.name.clone(),
                actions,
            })
        })
        .collect()
}

/// Token payload (JWT registered claims plus distribution's `access`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
    /// "access" or "refresh".
    pub kind: String,
}

impl Claims {
    pub fn new(sub: &str, access: Vec<Access>, kind: &str, now: i64, ttl: i64) -> Claims {
        Claims {
            iss: SERVICE.to_string(),
            sub: sub.to_string(),
            aud: SERVICE.to_string(),
            iat: now,
            exp: now + ttl,
            jti: hex::encode(rand::random::<[u8; 12]>()),
            access,
            kind: kind.to_string(),
        }
    }

    /// Whether this token grants `action` on `kind:name` (`*` grants all).
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| {
            a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*")
        })
    }
}

/// The HMAC key tokens are signed with.
pub struct TokenKey {
    key: ring::hmac::Key,
}

impl TokenKey {
    pub fn from_bytes(bytes: &[u8]) -> TokenKey {
        TokenKey {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes),
        }
    }

    /// Reads `<root>/token.key`, creating it (32 random bytes, mode 0600)
    /// the first time. Creation is a hard link of a fully written temp file,
    /// so two servers starting at once agree on one key and a crash never
    /// leaves a short key behind.
    pub fn load_or_create(root: &Path) -> Result<TokenKey, AuthError> {
        let path = root.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(b) if b.len() >= 32 => return Ok(Self::from_bytes(&b)),
            Ok(_) => {
                return Err(AuthError::Io {
                    path: path.display().to_string(),
                    source: std::io::Error::other("key file shorter than 32 bytes"),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        let tmp = root.join(format!(
            ".token.key.{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&rand::random::<[u8; 32]>())?;
            f.sync_all()?;
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        };
        let res = write();
        let _ = std::fs::remove_file(&tmp);
        res.map_err(io_err(&path))?;
        let b = std::fs::read(&path).map_err(io_err(&path))?;
        Ok(Self::from_bytes(&b))
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let tag = ring::hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks signature, expiry and kind; returns the claims.
    pub fn verify(&self, token: &str, kind: &'static str, now: i64) -> Result<Claims, AuthError> {
        let (signing_input, sig) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(AuthError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Malformed)?;
        ring::hmac::verify(&self.key, signing_input.as_bytes(), &sig)
            .map_err(|_| AuthError::Signature)?;
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(header)
                .map_err(|_| AuthError::Malformed)?,
        )
        .map_err(|_| AuthError::Malformed)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(AuthError::Malformed);
        }
        let claims: Claims = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(payload)
                .map_err(|_| AuthError::Malformed)?,
        )
        .map_err(|_| AuthError::Malformed)?;
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        if claims.kind != kind {
            return Err(AuthError::WrongKind(kind));
        }
        Ok(claims)
    }
}

/// Splits `Authorization: Basic base64(user:password)`.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, b64) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(b64.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The token of `Authorization: Bearer <token>`.
pub fn parse_bearer(header: &str) -> Option<&str> {
    let (scheme, tok) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim())
}

/// htpasswd users plus a cache of recently verified passwords, so a client
/// that sends Basic credentials on every request pays for bcrypt once.
pub struct Users {
    htpasswd: Htpasswd,
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

impl Users {
    pub fn new(htpasswd: Htpasswd) -> Users {
        Users {
            htpasswd,
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn fingerprint(user: &str, password: &str) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(user.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.as_bytes());
        ctx.finish().as_ref().try_into().expect("32 bytes")
    }

    pub async fn check(self: &std::sync::Arc<Self>, user: &str, password: &str) -> bool {
        let fp = Self::fingerprint(user, password);
        if self.verified.lock().get(user) == Some(&fp) {
            return true;
        }
        let this = self.clone();
        let (u, p) = (user.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || this.htpasswd.verify(&u, &p))
            .await
            .unwrap_or(false);
        if ok {
            let mut cache = self.verified.lock();
            if cache.len() > 1024 {
                cache.clear();
            }
            cache.insert(user.to_string(), fp);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_bcrypt() {
        let hash = bcrypt::hash("s3cret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let h = Htpasswd::parse(&format!("# users\n\nalice:{hash}\n")).unwrap();
        assert!(h.verify("alice", "s3cret"));
        assert!(!h.verify("alice", "wrong"));
        assert!(!h.verify("bob", "s3cret"));
        let err = Htpasswd::parse("bob:$apr1$abc$def\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(Htpasswd::parse("nocolon\n").is_err());
    }

    #[test]
    fn scopes() {
        let a = Access::parse("repository:localhost:5000/a/b:pull,push").unwrap();
        assert_eq!(a.kind, "repository");
        assert_eq!(a.name, "localhost:5000/a/b");
        assert_eq!(a.actions, vec!["pull", "push"]);
        let all = Access::parse_all("repository:a:pull registry:catalog:* bogus");
        assert_eq!(all.len(), 2);
        let g = grant(&[
            Access::parse("repository:a:pull,push,launch").unwrap(),
            Access::parse("other:x:pull").unwrap(),
        ]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].actions, vec!["pull", "push"]);
    }

    #[test]
    fn tokens() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let access = vec![Access::parse("repository:a/b:pull").unwrap()];
        let c = Claims::new("alice", access, "access", 1000, 60);
        let t = key.sign(&c);
        let got = key.verify(&t, "access", 1030).unwrap();
        assert_eq!(got, c);
        assert!(got.allows("repository", "a/b", "pull"));
        assert!(!got.allows("repository", "a/b", "push"));
        assert!(!got.allows("repository", "a", "pull"));
        assert!(matches!(
            key.verify(&t, "access", 1060),
            Err(AuthError::Expired)
        ));
        assert!(matches!(
            key.verify(&t, "refresh", 1030),
            Err(AuthError::WrongKind(_))
        ));
        let other = TokenKey::from_bytes(&[8; 32]);
        assert!(matches!(
            other.verify(&t, "access", 1030),
            Err(AuthError::Signature)
        ));
        // A payload swapped in under the old signature is refused.
        let parts: Vec<&str> = t.split('.').collect();
        let forged_claims = Claims::new("mallory", vec![], "access", 1000, 60);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap()),
            parts[2]
        );
        assert!(matches!(
            key.verify(&forged, "access", 1030),
            Err(AuthError::Signature)
        ));
        assert!(matches!(
            key.verify("abc", "access", 0),
            Err(AuthError::Malformed)
        ));
        let star = Claims::new(
            "a",
            vec![Access::parse("repository:x:*").unwrap()],
            "access",
            0,
            9,
        );
        assert!(star.allows("repository", "x", "delete"));
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = TokenKey::load_or_create(dir.path()).unwrap();
        let k2 = TokenKey::load_or_create(dir.path()).unwrap();
        let c = Claims::new("a", vec![], "access", 0, 100);
        assert!(k2.verify(&k1.sign(&c), "access", 1).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn headers() {
        let h = format!("Basic {}", STANDARD.encode("u:p:q"));
        assert_eq!(parse_basic(&h), Some(("u".into(), "p:q".into())));
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_bearer("Bearer abc"), Some("abc"));
        assert_eq!(parse_bearer("Basic abc"), None);
    }
}
