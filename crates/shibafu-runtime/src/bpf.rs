//! Seccomp filters compiled once and reused: libseccomp takes 10-15 ms of
//! CPU to turn Docker's default profile (three architectures, ~350 rules)
//! into BPF, which used to happen inside every container's init process.
//! Here the profile is compiled the same way libcontainer does it, but
//! exported instead of loaded, and cached under the (volatile) runtime root;
//! the container's init then installs the ready program with one
//! `seccomp(2)` call. The resulting filter is the one libcontainer would
//! have loaded: same translation, same library, no flags.
//!
//! Without no-new-privileges the kernel only lets a process with
//! CAP_SYS_ADMIN install a filter, which is why libcontainer loads it
//! before dropping capabilities. The supervisor therefore lets libcontainer
//! drop to the container's capabilities *plus* CAP_SYS_ADMIN and
//! CAP_SETPCAP ([`with_install_caps`]); the executor's `validate` (inside
//! the init, before it reports ready, before any container code runs)
//! installs the filter and then drops to the exact capability sets of the
//! spec ([`install`]). What the container's program starts with is
//! unchanged.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Seek, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    Arch, Capability, LinuxCapabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator,
};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("compiling the seccomp profile: {0}")]
    Compile(String),
    #[error("seccomp cache {path}: {err}")]
    Cache { path: PathBuf, err: io::Error },
}

/// Capabilities the init keeps until it has installed the filter.
pub const INSTALL_CAPS: [Capability; 2] = [Capability::SysAdmin, Capability::Setpcap];

/// File name prefix of cache entries (never a container ID: those are hex).
const CACHE_DIR: &str = ".seccomp-cache";
const MAGIC: &[u8] = b"shibafu-seccomp-bpf 1\n";

/// Whether a profile can be pre-compiled: no filter flags and no
/// user-notify (both need libseccomp's own load path).
pub fn cacheable(sc: &LinuxSeccomp) -> bool {
    let notify = |a: LinuxSeccompAction| a == LinuxSeccompAction::ScmpActNotify;
    sc.flags().as_ref().is_none_or(|f| f.is_empty())
        && sc.listener_path().is_none()
        && !notify(sc.default_action())
        && !sc.syscalls().iter().flatten().any(|s| notify(s.action()))
}

/// The cache directory under libcontainer's state root.
pub fn cache_dir(runtime_root: &Path) -> PathBuf {
    runtime_root.join(CACHE_DIR)
}

/// The compiled program for `sc`: from the cache when an entry for exactly
/// this profile, library version and API level exists, else compiled and
/// stored. A cache that cannot be written only costs the next container a
/// compile.
pub fn load_or_compile(sc: &LinuxSeccomp, cache: &Path) -> Result<Vec<u8>, BpfError> {
    let key = cache_key(sc)?;
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    let path = cache.join(format!("{:016x}.bpf", h.finish()));
    if let Some(prog) = read_entry(&path, &key) {
        return Ok(prog);
    }
    let prog = compile(sc)?;
    let _ = write_entry(cache, &path, &key, &prog);
    Ok(prog)
}

/// Everything the compiled program depends on: the profile itself, the
/// libseccomp version and the kernel API level libseccomp detected.
fn cache_key(sc: &LinuxSeccomp) -> Result<Vec<u8>, BpfError> {
    let v = ScmpVersion::current().map_err(|e| BpfError::Compile(e.to_string()))?;
    let mut key = format!(
        "libseccomp {}.{}.{} api {}\n",
        v.major,
        v.minor,
        v.micro,
        libseccomp::get_api()
    )
    .into_bytes();
    key.extend(serde_json::to_vec(sc).map_err(|e| BpfError::Compile(e.to_string()))?);
    Ok(key)
}

/// Entry layout: MAGIC, key length (u64 LE), key, program. The key is
/// compared in full, so a hash collision can never hand out another
/// profile's program.
fn read_entry(path: &Path, key: &[u8]) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    let rest = data.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_at_checked(8)?;
    let len = u64::from_le_bytes(len.try_into().ok()?) as usize;
    let (k, prog) = rest.split_at_checked(len)?;
    (k == key && !prog.is_empty() && prog.len() % 8 == 0).then(|| prog.to_vec())
}

fn write_entry(dir: &Path, path: &Path, key: &[u8], prog: &[u8]) -> Result<(), BpfError> {
    let cerr = |p: &Path| {
        let p = p.to_path_buf();
        move |err| BpfError::Cache { path: p, err }
    };
    std::fs::create_dir_all(dir).map_err(cerr(dir))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let mut data = MAGIC.to_vec();
    data.extend((key.len() as u64).to_le_bytes());
    data.extend(key);
    data.extend(prog);
    std::fs::write(&tmp, &data).map_err(cerr(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        cerr(path)(e)
    })
}

/// libcontainer's `initialize_seccomp` translation, exported instead of
/// loaded.
fn compile(sc: &LinuxSeccomp) -> Result<Vec<u8>, BpfError> {
    let err = |e: libseccomp::error::SeccompError| BpfError::Compile(e.to_string());
    let default = translate_action(sc.default_action(), sc.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(err)?;
    for &arch in sc.architectures().iter().flatten() {
        ctx.add_arch(translate_arch(arch)).map_err(err)?;
    }
    ctx.set_ctl_nnp(false).map_err(err)?;
    for rule in sc.syscalls().iter().flatten() {
        let action = translate_action(rule.action(), rule.errno_ret())?;
        if action == default {
            continue;
        }
        for name in rule.names() {
            // Unknown to this libseccomp: libcontainer skips it too.
            let Ok(sys) = ScmpSyscall::from_name(name) else {
                continue;
            };
            match rule.args() {
                Some(args) => {
                    let cmps: Vec<ScmpArgCompare> = args
                        .iter()
                        .map(|a| {
                            ScmpArgCompare::new(
                                a.index() as u32,
                                translate_op(a.op(), a.value_two()),
                                a.value(),
                            )
                        })
                        .collect();
                    let mut seen = HashSet::new();
                    if args.iter().all(|a| seen.insert(a.index())) {
                        ctx.add_rule_conditional(action, sys, &cmps).map_err(err)?;
                    } else {
                        // Several conditions on one argument: one rule each
                        // (an OR), as libcontainer and runc do.
                        for c in &cmps {
                            ctx.add_rule_conditional(action, sys, std::slice::from_ref(c))
                                .map_err(err)?;
                        }
                    }
                }
                None => {
                    ctx.add_rule(action, sys).map_err(err)?;
                }
            }
        }
    }
    let fd = unsafe { libc::memfd_create(c"seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(BpfError::Compile(format!(
            "memfd: {}",
            io::Error::last_os_error()
        )));
    }
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    ctx.export_bpf(&f).map_err(err)?;
    let mut prog = Vec::new();
    f.flush()
        .and_then(|_| f.rewind())
        .and_then(|_| f.read_to_end(&mut prog))
        .map_err(|e| BpfError::Compile(format!("reading the exported filter: {e}")))?;
    if prog.is_empty() || prog.len() % 8 != 0 {
        return Err(BpfError::Compile(format!(
            "exported filter has {} bytes",
            prog.len()
        )));
    }
    Ok(prog)
}

fn translate_action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, BpfError> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            errno
                .try_into()
                .map_err(|_| BpfError::Compile(format!("trace errno {errno} out of range")))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
    })
}

fn translate_op(op: LinuxSeccompOperator, datum_b: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(datum_b.unwrap_or(0)),
    }
}

fn translate_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// `caps` widened by [`INSTALL_CAPS`] in the bounding, effective and
/// permitted sets (what libcontainer drops to before the filter is in).
pub fn with_install_caps(caps: &LinuxCapabilities) -> LinuxCapabilities {
    let widen = |s: &Option<HashSet<Capability>>| {
        let mut s = s.clone().unwrap_or_default();
        s.extend(INSTALL_CAPS);
        Some(s)
    };
    let mut out = caps.clone();
    out.set_bounding(widen(caps.bounding()))
        .set_effective(widen(caps.effective()))
        .set_permitted(widen(caps.permitted()));
    out
}

/// Installs `prog` on the calling thread, then (when given) drops to the
/// exact capability sets `caps`. Runs in the container's init just before
/// it reports ready; every later syscall is checked by the filter, as with
/// libcontainer's own ordering.
pub fn install(prog: &[u8], caps: Option<&LinuxCapabilities>) -> io::Result<()> {
    let filter = libc::sock_fprog {
        len: u16::try_from(prog.len() / 8)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &filter as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(caps) = caps {
        libcontainer::capabilities::drop_privileges(
            caps,
            &libcontainer::syscall::linux::LinuxSyscall,
        )
        .map_err(|e| io::Error::other(format!("dropping capabilities: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker_profile() -> LinuxSeccomp {
        let caps: Vec<String> = crate::spec::DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .collect();
        let v = crate::seccomp::default_profile(
            &caps,
            crate::seccomp::native_arch(),
            crate::seccomp::kernel_version(),
        )
        .unwrap();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn docker_profile_is_compiled_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let sc = docker_profile();
        assert!(cacheable(&sc));
        let first = load_or_compile(&sc, dir.path()).unwrap();
        assert!(
            first.len() > 8 * 100,
            "a real program: {} bytes",
            first.len()
        );
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "one entry, no temp file left");
        // The second container reads the entry back instead of compiling.
        let path = entries[0].as_ref().unwrap().path();
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(load_or_compile(&sc, dir.path()).unwrap(), first);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
    }

    #[test]
    fn an_entry_is_only_served_for_the_exact_profile() {
        let dir = tempfile::tempdir().unwrap();
        let sc = docker_profile();
        let prog = load_or_compile(&sc, dir.path()).unwrap();
        let key = cache_key(&sc).unwrap();
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert_eq!(read_entry(&path, &key).as_deref(), Some(&prog[..]));
        let mut other = key.clone();
        other.push(b' ');
        assert_eq!(read_entry(&path, &other), None);
        // A truncated entry is ignored, not trusted.
        let data = std::fs::read(&path).unwrap();
        std::fs::write(&path, &data[..MAGIC.len() + 4]).unwrap();
        assert_eq!(read_entry(&path, &key), None);
        // A different profile compiles to a different program.
        let mut v = serde_json::to_value(&sc).unwrap();
        v["defaultAction"] = "SCMP_ACT_KILL_PROCESS".into();
        let sc2: LinuxSeccomp = serde_json::from_value(v).unwrap();
        assert_ne!(load_or_compile(&sc2, dir.path()).unwrap(), prog);
    }

    #[test]
    fn notify_and_flags_are_left_to_libcontainer() {
        let mut v = serde_json::to_value(docker_profile()).unwrap();
        v["flags"] = serde_json::json!(["SECCOMP_FILTER_FLAG_LOG"]);
        let sc: LinuxSeccomp = serde_json::from_value(v).unwrap();
        assert!(!cacheable(&sc));
        let mut v = serde_json::to_value(docker_profile()).unwrap();
        v["syscalls"][0]["action"] = "SCMP_ACT_NOTIFY".into();
        let sc: LinuxSeccomp = serde_json::from_value(v).unwrap();
        assert!(!cacheable(&sc));
    }

    #[test]
    fn install_caps_widen_only_bounding_effective_permitted() {
        let caps: LinuxCapabilities = serde_json::from_value(serde_json::json!({
            "bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
            "permitted": ["CAP_CHOWN"], "inheritable": [], "ambient": []
        }))
        .unwrap();
        let w = with_install_caps(&caps);
        for s in [w.bounding(), w.effective(), w.permitted()] {
            let s = s.as_ref().unwrap();
            assert!(s.contains(&Capability::SysAdmin) && s.contains(&Capability::Setpcap));
            assert!(s.contains(&Capability::Chown));
        }
        assert!(w.inheritable().as_ref().unwrap().is_empty());
        assert!(w.ambient().as_ref().unwrap().is_empty());
    }
}
