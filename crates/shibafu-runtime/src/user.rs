//! `-u` resolution against the container's own `/etc/passwd` and
//! `/etc/group`, with the semantics of moby/sys/user `GetExecUser` (what runc
//! and therefore Docker use): names must exist, bare numeric ids need not,
//! supplementary groups come from `/etc/group` membership unless a group was
//! given explicitly.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("invalid user specification {0:?}")]
    Invalid(String),
    #[error("reading {path}: {err}")]
    Read { path: String, err: String },
}

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Home directory from passwd ("/" when unknown), for `HOME`.
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `spec` (`""`, `name`, `uid`, `uid:gid`, `name:group`, ...) given
/// the contents of passwd and group (`None` = file absent).
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, UserError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    if spec.contains(':') && (user_arg.is_empty() || group_arg.is_empty()) {
        return Err(UserError::Invalid(spec.to_string()));
    }
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let numeric_uid = user_arg.parse::<u32>().ok();

    let matched = users.iter().find(|u| match numeric_uid {
        Some(uid) => u.uid == uid,
        None => u.name == user_arg,
    });
    let mut out = ExecUser {
        home: "/".to_string(),
        ..Default::default()
    };
    let mut user_name = None;
    match (matched, numeric_uid) {
        (Some(u), _) => {
            out.uid = u.uid;
            out.gid = u.gid;
            if !u.home.is_empty() {
                out.home = u.home.clone();
            }
            user_name = Some(u.name.clone());
        }
        (None, Some(uid)) => out.uid = uid,
        (None, None) => return Err(UserError::UnknownUser(user_arg.to_string())),
    }

    let groups = group.map(parse_group).unwrap_or_default();
    if !group_arg.is_empty() {
        let numeric_gid = group_arg.parse::<u32>().ok();
        let found = groups.iter().find(|g| match numeric_gid {
            Some(gid) => g.gid == gid,
            None => g.name == group_arg,
        });
        out.gid = match (found, numeric_gid) {
            (Some(g), _) => g.gid,
            (None, Some(gid)) => gid,
            (None, None) => return Err(UserError::UnknownGroup(group_arg.to_string())),
        };
    } else if let Some(name) = user_name {
        out.additional_gids = groups
            .iter()
            .filter(|g| g.members.contains(&name))
            .map(|g| g.gid)
            .collect();
    }
    Ok(out)
}

/// Joins `path` onto `root` resolving symlinks *inside* `root`, so a
/// malicious image cannot make us read host files (`/etc/passwd ->
/// /host/...`).
pub fn resolve_in_root(root: &Path, path: &str) -> PathBuf {
    let mut parts: Vec<String> = Vec::new();
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut links = 0;
    while let Some(p) = pending.pop() {
        match p.as_str() {
            "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let candidate: PathBuf = root.join(parts.join("/")).join(&p);
        match std::fs::read_link(&candidate) {
            Ok(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    parts.clear();
                }
                for c in target.components().rev() {
                    if let Component::Normal(s) = c {
                        pending.push(s.to_string_lossy().into_owned());
                    } else if c == Component::ParentDir {
                        pending.push("..".to_string());
                    }
                }
            }
            _ => parts.push(p),
        }
    }
    root.join(parts.join("/"))
}

/// Reads `/etc/passwd` and `/etc/group` of `rootfs` and resolves `spec`.
pub fn resolve_user_in_rootfs(rootfs: &Path, spec: &str) -> Result<ExecUser, UserError> {
    let read = |p: &str| -> Result<Option<String>, UserError> {
        let path = resolve_in_root(rootfs, p);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(UserError::Read {
                path: p.to_string(),
                err: e.to_string(),
            }),
        }
    };
    let passwd = read("/etc/passwd")?;
    let group = read("/etc/group")?;
    resolve_user(spec, passwd.as_deref(), group.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        # comment\n\
        www:x:33:33:www:/var/www:/bin/false\n\
        alice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,alice\nwww:x:33:\n\
        staff:x:50:alice\nalice:x:1000:\n";

    fn r(s: &str) -> Result<ExecUser, UserError> {
        resolve_user(s, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_is_root_with_supplementary_groups() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.additional_gids, vec![10]);
        assert_eq!(u.home, "/root");
    }

    #[test]
    fn by_name() {
        let u = r("alice").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![10, 50]);
        assert_eq!(u.home, "/home/alice");
    }

    #[test]
    fn by_uid_known_and_unknown() {
        assert_eq!(r("33").unwrap().gid, 33);
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
    }

    #[test]
    fn explicit_group_replaces_supplementary() {
        let u = r("alice:www").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 33));
        assert!(u.additional_gids.is_empty());
        assert_eq!(r("1000:777").unwrap().gid, 777);
        assert_eq!(r("www:10").unwrap().gid, 10);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            r("bob").unwrap_err().to_string(),
            "unable to find user bob: no matching entries in passwd file"
        );
        assert_eq!(
            r("alice:nogroup").unwrap_err(),
            UserError::UnknownGroup("nogroup".into())
        );
        assert!(matches!(r("alice:"), Err(UserError::Invalid(_))));
    }

    #[test]
    fn missing_files_allow_numeric_only() {
        let u = resolve_user("5:6", None, None).unwrap();
        assert_eq!((u.uid, u.gid), (5, 6));
        assert!(resolve_user("alice", None, None).is_err());
    }

    #[test]
    fn symlinks_stay_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/passwd"), "bob:x:7:8::/b:/bin/sh\n").unwrap();
        // Absolute link target must be interpreted inside the rootfs.
        std::os::unix::fs::symlink("/real/passwd", root.join("etc/passwd")).unwrap();
        let u = resolve_user_in_rootfs(root, "bob").unwrap();
        assert_eq!((u.uid, u.gid), (7, 8));
        std::os::unix::fs::symlink("../../../../etc/shadow", root.join("etc/group")).unwrap();
        assert_eq!(resolve_in_root(root, "/etc/group"), root.join("etc/shadow"));
    }
}
