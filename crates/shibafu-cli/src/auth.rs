//! Registry credentials in the docker CLI's own config file
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), so that
//! `docker login` and `shibafu login` share them; credential helpers
//! (`credsStore`, `credHelpers`) are used as the docker CLI uses them. Also
//! the image reference rules that decide which registry an image lives on.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// Docker Hub's key in `auths` (and the login default).
pub const INDEX_SERVER: &str = "https://index.docker.io/v1/";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid reference format: {0}")]
    Reference(String),
    #[error("loading config file {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("saving credentials to {path}: {reason}")]
    Save { path: String, reason: String },
    #[error("error getting credentials - err: {0}")]
    Helper(String),
}

/// A parsed image reference: `docker.io` + `library/busybox` + tag/digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Docker's `ParseNormalizedNamed`: `busybox` → docker.io/library/busybox.
    pub fn parse(s: &str) -> Result<Reference, AuthError> {
        let bad = || AuthError::Reference(s.to_string());
        if s.is_empty() || s.len() > 255 + 80 {
            return Err(bad());
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let (algo, hexpart) = d.split_once(':').ok_or_else(bad)?;
                if algo != "sha256"
                    || hexpart.len() != 64
                    || !hexpart.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(bad());
                }
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last..].rfind(':') {
            Some(i) => (&name[..last + i], Some(name[last + i + 1..].to_string())),
            None => (name, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.as_bytes()[0] != b'.'
                && t.as_bytes()[0] != b'-'
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad());
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((d, rest))
                if d.contains(['.', ':']) || d == "localhost" || d != d.to_lowercase() =>
            {
                (d.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io".to_string()
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() {
            return Err(bad());
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(AuthError::Reference(format!(
                "repository name ({path}) must be lowercase"
            )));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        };
        if !path.split('/').all(component_ok) {
            return Err(bad());
        }
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `docker.io/library/busybox` (no tag).
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The familiar name (`busybox`, `user/app`, `localhost:5000/app`).
    pub fn familiar_name(&self) -> String {
        if self.domain == "docker.io" {
            self.path
                .strip_prefix("library/")
                .filter(|p| !p.contains('/'))
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.name()
        }
    }

    /// Neither tag nor digest given.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// With `latest` when nothing else was given (`TagNameOnly`).
    pub fn with_default_tag(mut self) -> Reference {
        if self.is_name_only() {
            self.tag = Some("latest".into());
        }
        self
    }

    /// The full string: `docker.io/library/busybox:latest`, `...@sha256:..`.
    pub fn full(&self) -> String {
        self.render(&self.name())
    }

    /// The familiar string: `busybox:latest`.
    pub fn familiar(&self) -> String {
        self.render(&self.familiar_name())
    }

    fn render(&self, name: &str) -> String {
        let mut s = name.to_string();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The `auths` key of this image's registry.
    pub fn auth_key(&self) -> String {
        if self.domain == "docker.io" {
            INDEX_SERVER.to_string()
        } else {
            self.domain.clone()
        }
    }
}

/// A login server as the user typed it → its `auths` key: Docker Hub's
/// spellings become [`INDEX_SERVER`]; others lose a trailing slash.
pub fn server_key(server: &str) -> String {
    let host = convert_to_hostname(server);
    if matches!(
        host.as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        INDEX_SERVER.to_string()
    } else {
        server.trim_end_matches('/').to_string()
    }
}

/// `https://host:5000/v1/` → `host:5000` (Docker's `ConvertToHostname`).
pub fn convert_to_hostname(s: &str) -> String {
    let s = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or(s).to_string()
}

/// Stored credentials for one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub identity_token: String,
    pub server: String,
}

impl Credentials {
    /// The `X-Registry-Auth` value: URL-safe base64 of the JSON.
    pub fn header(&self) -> String {
        let mut m = Map::new();
        if !self.username.is_empty() {
            m.insert("username".into(), json!(self.username));
        }
        if !self.password.is_empty() {
            m.insert("password".into(), json!(self.password));
        }
        if !self.identity_token.is_empty() {
            m.insert("identitytoken".into(), json!(self.identity_token));
        }
        if !self.server.is_empty() {
            m.insert("serveraddress".into(), json!(self.server));
        }
        base64_encode(Value::Object(m).to_string().as_bytes(), &URL_SAFE)
    }

    /// The `POST /auth` body.
    pub fn login_body(&self) -> Value {
        let mut v = json!({
            "username": self.username,
            "password": self.password,
            "serveraddress": self.server,
        });
        if !self.identity_token.is_empty() {
            v["identitytoken"] = json!(self.identity_token);
        }
        v
    }
}

/// The docker CLI's config file.
pub struct ConfigFile {
    path: PathBuf,
    doc: Value,
}

impl ConfigFile {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("config.json");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".docker").join("config.json")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<ConfigFile, AuthError> {
        let doc = match std::fs::read(path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => json!({}),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| AuthError::Load {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
            Err(e) => {
                return Err(AuthError::Load {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(ConfigFile {
            path: path.to_path_buf(),
            doc,
        })
    }

    /// The credential helper for `key`, if any (`credHelpers` by host, then
    /// `credsStore`).
    fn helper(&self, key: &str) -> Option<String> {
        let host = convert_to_hostname(key);
        self.doc
            .get("credHelpers")
            .and_then(|h| h.get(&host).or_else(|| h.get(key)))
            .or_else(|| self.doc.get("credsStore"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// Credentials for `key` (an `auths` key), empty when none are stored.
    pub fn get(&self, key: &str) -> Result<Credentials, AuthError> {
        if let Some(h) = self.helper(key) {
            return helper_get(&h, key);
        }
        let mut c = Credentials {
            server: key.to_string(),
            ..Default::default()
        };
        let Some(auths) = self.doc.get("auths").and_then(Value::as_object) else {
            return Ok(c);
        };
        let host = convert_to_hostname(key);
        let entry = auths.get(key).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| server_key(k) == key || convert_to_hostname(k) == host)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else { return Ok(c) };
        if let Some(a) = entry.get("auth").and_then(Value::as_str) {
            let decoded = base64_decode(a).unwrap_or_default();
            let text = String::from_utf8_lossy(&decoded);
            if let Some((u, p)) = text.split_once(':') {
                c.username = u.to_string();
                c.password = p.to_string();
            }
        }
        if let Some(t) = entry.get("identitytoken").and_then(Value::as_str) {
            c.identity_token = t.to_string();
        }
        Ok(c)
    }

    /// Stores credentials for `c.server` (a password is dropped when the
    /// registry issued an identity token, as the docker CLI does).
    pub fn store(&mut self, c: &Credentials) -> Result<(), AuthError> {
        if let Some(h) = self.helper(&c.server) {
            return helper_store(&h, c);
        }
        let password = if c.identity_token.is_empty() {
            c.password.as_str()
        } else {
            ""
        };
        let mut entry = json!({
            "auth": base64_encode(format!("{}:{}", c.username, password).as_bytes(), &STANDARD),
        });
        if !c.identity_token.is_empty() {
            entry["identitytoken"] = json!(c.identity_token);
        }
        self.auths_mut().insert(c.server.clone(), entry);
        self.save()
    }

    /// Removes stored credentials; false when there were none.
    pub fn erase(&mut self, key: &str) -> Result<bool, AuthError> {
        if let Some(h) = self.helper(key) {
            let had = !helper_get(&h, key)?.username.is_empty();
            helper_run(&h, "erase", key)?;
            return Ok(had);
        }
        let host = convert_to_hostname(key);
        let auths = self.auths_mut();
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| *k == key || convert_to_hostname(k) == host)
            .cloned()
            .collect();
        for k in &keys {
            auths.remove(k);
        }
        if keys.is_empty() {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        if !self.doc.is_object() {
            self.doc = json!({});
        }
        let obj = self.doc.as_object_mut().expect("an object");
        let auths = obj.entry("auths").or_insert_with(|| json!({}));
        if !auths.is_object() {
            *auths = json!({});
        }
        auths.as_object_mut().expect("an object")
    }

    /// Writes through a temporary file and a rename, mode 0600.
    fn save(&self) -> Result<(), AuthError> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |e: std::io::Error| AuthError::Save {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(&self.doc).map_err(|e| err(e.into()))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin.
fn helper_call(helper: &str, action: &str, input: &str) -> Result<String, AuthError> {
    use std::process::{Command, Stdio};
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| AuthError::Helper(format!("exec: \"{prog}\": {e}")))?;
    if let Some(mut w) = child.stdin.take() {
        let _ = w.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| AuthError::Helper(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(AuthError::Helper(stdout));
    }
    Ok(stdout)
}

fn helper_run(helper: &str, action: &str, key: &str) -> Result<(), AuthError> {
    helper_call(helper, action, key).map(|_| ())
}

fn helper_get(helper: &str, key: &str) -> Result<Credentials, AuthError> {
    let mut c = Credentials {
        server: key.to_string(),
        ..Default::default()
    };
    match helper_call(helper, "get", key) {
        Ok(out) => {
            let v: Value =
                serde_json::from_str(&out).map_err(|e| AuthError::Helper(e.to_string()))?;
            let user = v["Username"].as_str().unwrap_or_default();
            let secret = v["Secret"].as_str().unwrap_or_default();
            if user == "<token>" {
                c.identity_token = secret.to_string();
            } else {
                c.username = user.to_string();
                c.password = secret.to_string();
            }
            Ok(c)
        }
        // Helpers answer "credentials not found" for unknown servers.
        Err(AuthError::Helper(m)) if m.contains("credentials not found") => Ok(c),
        Err(e) => Err(e),
    }
}

fn helper_store(helper: &str, c: &Credentials) -> Result<(), AuthError> {
    let (user, secret) = if c.identity_token.is_empty() {
        (c.username.as_str(), c.password.as_str())
    } else {
        ("<token>", c.identity_token.as_str())
    };
    let body = json!({"ServerURL": c.server, "Username": user, "Secret": secret}).to_string();
    helper_call(helper, "store", &body).map(|_| ())
}

pub use base64::engine::general_purpose::{STANDARD, URL_SAFE};

/// Padded base64 with the given engine (`STANDARD` or `URL_SAFE`).
pub fn base64_encode(data: &[u8], engine: &base64::engine::GeneralPurpose) -> String {
    use base64::Engine as _;
    engine.encode(data)
}

/// Lenient base64 decoding (either alphabet, padding optional, white
/// space ignored), as Docker's clients and daemon accept it.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::{alphabet, Engine as _};
    const CFG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CFG);
    const URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CFG);
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    URL.decode(&clean).or_else(|_| STD.decode(&clean)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_as_docker() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.full(), "docker.io/library/busybox");
        assert_eq!(
            r.clone().with_default_tag().full(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(r.auth_key(), INDEX_SERVER);
        let r = Reference::parse("localhost:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str()),
            ("localhost:5000", "a/b")
        );
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.auth_key(), "localhost:5000");
        assert_eq!(r.familiar(), "localhost:5000/a/b:v1");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("user/app@{d}")).unwrap();
        assert_eq!(r.full(), format!("docker.io/user/app@{d}"));
        assert_eq!(r.familiar(), format!("user/app@{d}"));
        assert_eq!(
            Reference::parse("docker.io/library/alpine:3")
                .unwrap()
                .familiar(),
            "alpine:3"
        );
        assert!(Reference::parse("Alpine")
            .unwrap_err()
            .to_string()
            .contains("must be lowercase"));
        for bad in ["", "a@sha256:12", "a:", "a:-x", "a//b", "-a", "a b"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_file_round_trip_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"psFormat":"x","auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#,
        )
        .unwrap();
        let mut cf = ConfigFile::load(&path).unwrap();
        let hub = cf.get(INDEX_SERVER).unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("u", "p"));
        cf.store(&Credentials {
            username: "alice".into(),
            password: "secret".into(),
            server: "localhost:5000".into(),
            ..Default::default()
        })
        .unwrap();
        cf.store(&Credentials {
            username: "bob".into(),
            password: "pw".into(),
            identity_token: "tok".into(),
            server: "r.example".into(),
        })
        .unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["auths"]["localhost:5000"]["auth"], "YWxpY2U6c2VjcmV0");
        assert_eq!(v["auths"]["r.example"]["auth"], "Ym9iOg==");
        assert_eq!(v["auths"]["r.example"]["identitytoken"], "tok");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let cf = ConfigFile::load(&path).unwrap();
        // Keys written with a scheme still match the bare host.
        assert_eq!(cf.get("localhost:5000").unwrap().username, "alice");
        let mut cf = cf;
        assert!(cf.erase("localhost:5000").unwrap());
        assert!(!cf.erase("localhost:5000").unwrap());
        assert!(cf.get("localhost:5000").unwrap().username.is_empty());
        assert_eq!(server_key("docker.io"), INDEX_SERVER);
        assert_eq!(server_key("https://index.docker.io/v1/"), INDEX_SERVER);
        assert_eq!(server_key("localhost:5000/"), "localhost:5000");
    }

    #[test]
    fn auth_header_is_url_safe_base64_json() {
        let c = Credentials {
            username: "a".into(),
            password: "??>".into(),
            server: "s".into(),
            ..Default::default()
        };
        let h = c.header();
        assert!(!h.contains(['+', '/']), "{h}");
        let v: Value = serde_json::from_slice(&base64_decode(&h).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"username":"a","password":"??>","serveraddress":"s"})
        );
        assert_eq!(
            base64_encode(b"alice:secret", &STANDARD),
            "YWxpY2U6c2VjcmV0"
        );
    }
}
