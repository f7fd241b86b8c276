//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`,
//! kept verbatim in `data/`) turned into an OCI `linux.seccomp` section for
//! one container, the way moby does it: rules are kept or dropped by the
//! container's capabilities, the architecture and the kernel version.

use serde::Deserialize;
use serde_json::{json, Value};

const DEFAULT_PROFILE: &str = include_str!("../data/seccomp-default.json");

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("invalid built-in seccomp profile: {0}")]
    Profile(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    args: Vec<Value>,
    errno_ret: Option<u32>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

/// Go's GOARCH name for the running architecture (what the profile uses).
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn seccomp_arch_of(go_arch: &str) -> &'static str {
    match go_arch {
        "amd64" => "SCMP_ARCH_X86_64",
        "386" => "SCMP_ARCH_X86",
        "arm64" => "SCMP_ARCH_AARCH64",
        "arm" => "SCMP_ARCH_ARM",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "s390x" => "SCMP_ARCH_S390X",
        "riscv64" => "SCMP_ARCH_RISCV64",
        _ => "",
    }
}

/// `(major, minor)` of the running kernel.
pub fn kernel_version() -> (u32, u32) {
    let rel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_kernel_version(&rel)
}

fn parse_kernel_version(s: &str) -> (u32, u32) {
    let mut it = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// The OCI `linux.seccomp` object for a container holding `caps` (names
/// with `CAP_` prefix) on `arch` (Go name) and `kernel`.
pub fn default_profile(
    caps: &[String],
    arch: &str,
    kernel: (u32, u32),
) -> Result<Value, SeccompError> {
    let p: Profile =
        serde_json::from_str(DEFAULT_PROFILE).map_err(|e| SeccompError::Profile(e.to_string()))?;
    let native = seccomp_arch_of(arch);
    let mut arches = Vec::new();
    for m in &p.arch_map {
        if m.architecture == native {
            arches.push(m.architecture.clone());
            arches.extend(m.sub_architectures.clone().unwrap_or_default());
        }
    }
    let has_cap = |c: &String| caps.iter().any(|x| x == c);
    let mut syscalls = Vec::new();
    for r in &p.syscalls {
        let inc = &r.includes;
        if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch) {
            continue;
        }
        if !inc.caps.is_empty() && !inc.caps.iter().all(has_cap) {
            continue;
        }
        if let Some(mk) = &inc.min_kernel {
            if kernel < parse_kernel_version(mk) {
                continue;
            }
        }
        let exc = &r.excludes;
        if exc.arches.iter().any(|a| a == arch) {
            continue;
        }
        if !exc.caps.is_empty() && exc.caps.iter().any(has_cap) {
            continue;
        }
        let mut rule = json!({ "names": r.names, "action": r.action });
        if !r.args.is_empty() {
            rule["args"] = Value::Array(r.args.clone());
        }
        if let Some(e) = r.errno_ret {
            rule["errnoRet"] = json!(e);
        }
        syscalls.push(rule);
    }
    let mut out = json!({
        "defaultAction": p.default_action,
        "architectures": arches,
        "syscalls": syscalls,
    });
    if let Some(e) = p.default_errno_ret {
        out["defaultErrnoRet"] = json!(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_with_action(v: &Value, action: &str) -> Vec<String> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == action)
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn default_caps_on_amd64() {
        let caps = vec!["CAP_CHOWN".to_string(), "CAP_SYS_CHROOT".to_string()];
        let v = default_profile(&caps, "amd64", (6, 1)).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        assert_eq!(
            v["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let allowed = names_with_action(&v, "SCMP_ACT_ALLOW");
        for n in ["read", "execve", "arch_prctl", "chroot", "ptrace", "clone"] {
            assert!(allowed.iter().any(|x| x == n), "{n} should be allowed");
        }
        for n in [
            "mount",
            "unshare",
            "reboot",
            "set_tls",
            "riscv_flush_icache",
            "bpf",
        ] {
            assert!(!allowed.iter().any(|x| x == n), "{n} should be denied");
        }
        // clone3 returns ENOSYS without CAP_SYS_ADMIN so libcs fall back to clone.
        let errno = names_with_action(&v, "SCMP_ACT_ERRNO");
        assert_eq!(errno, vec!["clone3"]);
    }

    #[test]
    fn sys_admin_unlocks_mount_and_drops_clone_filter() {
        let caps = vec!["CAP_SYS_ADMIN".to_string()];
        let v = default_profile(&caps, "amd64", (6, 1)).unwrap();
        let allowed = names_with_action(&v, "SCMP_ACT_ALLOW");
        assert!(allowed.iter().any(|x| x == "mount"));
        assert!(allowed.iter().any(|x| x == "clone3"));
        assert!(names_with_action(&v, "SCMP_ACT_ERRNO").is_empty());
        // The masked clone rule only applies without CAP_SYS_ADMIN.
        let masked = v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r.get("args").is_some() && r["names"] == json!(["clone"]))
            .count();
        assert_eq!(masked, 0);
    }

    #[test]
    fn min_kernel_is_honoured() {
        let v = default_profile(&[], "amd64", (4, 4)).unwrap();
        assert!(!names_with_action(&v, "SCMP_ACT_ALLOW")
            .iter()
            .any(|x| x == "ptrace"));
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v782"), (6, 18));
        assert_eq!(parse_kernel_version("4.8"), (4, 8));
        assert!(kernel_version() >= (3, 0));
    }
}
