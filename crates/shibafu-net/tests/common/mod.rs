//! Shared helpers for the root tests: each test re-executes itself inside
//! `unshare --net --mount` so it can never touch the host's network.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command};

const INSIDE: &str = "SHIBAFU_NET_TEST_PRIVATE_NETNS";

/// True when the caller should run the test body now (we are root and in a
/// private netns). Otherwise either the test was skipped (reason printed)
/// or it was run in a child under `unshare` and its success asserted here.
pub fn enter_private_netns(test_name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test_name}: needs root (creates bridges, veths and netns in a private netns)");
        return false;
    }
    for tool in ["unshare", "nsenter", "ip", "nft"] {
        if !on_path(tool) {
            eprintln!("skipping {test_name}: `{tool}` not available");
            return false;
        }
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {test_name} in private netns ---\n{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "{test_name} failed in its private netns"
    );
    assert!(
        stdout.contains("1 passed"),
        "{test_name} did not run in the child"
    );
    false
}

/// A "container": a `sleep` in a netns of its own (a child of our private
/// one). Killed (by pid) on drop.
pub struct FakeContainer {
    pub child: Child,
}

impl FakeContainer {
    pub fn start() -> Self {
        let child = Command::new("unshare")
            .args(["--net", "--", "sleep", "600"])
            .spawn()
            .expect("spawn unshare sleep");
        let me = FakeContainer { child };
        // Wait until the netns differs from ours (unshare has exec'd sleep).
        let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
        for _ in 0..200 {
            if std::fs::read_link(me.netns())
                .ok()
                .is_some_and(|l| l != mine)
            {
                return me;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("fake container netns never appeared");
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }
    /// Run a command inside the container's netns.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns().display()))
            .arg("--")
            .args(args)
            .output()
            .expect("nsenter")
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

pub fn busybox() -> &'static str {
    if std::path::Path::new("/bin/busybox").exists() {
        "/bin/busybox"
    } else {
        "busybox"
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}
