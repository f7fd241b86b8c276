//! Socket-level translation of host-local connects to published ports
//! ("socket-LB", as Cilium calls it).
//!
//! Why: a `-p 127.0.0.1:P:80` publish is kernel DNAT in the nftables
//! `output` hook, so every packet of a host-local flow is NAT-mangled and
//! re-routed (the socket's cached route is loopback): ~0.93x of the
//! throughput straight to the container. Here a cgroup `connect()` hook
//! rewrites the destination once, at connect time, to the container's
//! address; the socket then talks to the container directly, with no
//! per-packet NAT.
//!
//! How:
//! - Programs of type `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`, assembled here from
//!   a few dozen instructions ([`Asm`]: no clang/aya toolchain), loaded and
//!   attached with raw `bpf(2)`:
//!   - `connect4`/`connect6`: for a loopback destination (127.0.0.0/8,
//!     `::1`) in the daemon's network namespace (the netns cookie is patched
//!     into the program), look up (family, protocol, port, address) in the
//!     service map, then the wildcard (address 0) entry; on a hit, rewrite
//!     the destination and remember (socket cookie -> original and backend
//!     address) in an LRU map.
//!   - `getpeername4/6` and `recvmsg4/6` (UDP): when the socket's cookie is
//!     in that LRU map and the kernel's peer is the backend recorded there,
//!     show the address the application connected to instead.
//!
//!   Every program returns 1 on every path: a bug can never block a
//!   connect.
//! - They attach with `BPF_LINK_CREATE` to the root of the cgroup2
//!   hierarchy so every process is covered, and act only for sockets of the
//!   daemon's netns. The links are owned by this process's fds: when the
//!   daemon exits or is killed, the kernel detaches them and nftables DNAT
//!   (which is never removed) carries on. Nothing to clean up, nothing leaks.
//! - The service map is kept equal to the published ports by
//!   [`SockLb::sync`] (a diff against a shadow copy: one syscall per changed
//!   entry).
//!
//! Not translated (nftables DNAT carries them, unchanged): clients in other
//! network namespaces (remote hosts, containers), destinations that are not
//! loopback (the host's own LAN address), unconnected UDP (`sendto`), SCTP,
//! IPv4-mapped IPv6 destinations (`::ffff:127.0.0.1`), and everything while
//! the daemon is down. `getsockname` of a translated socket shows the
//! bridge's gateway address (the real source), not 127.0.0.1.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::firewall::{PortMapping, Proto};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum SockLbError {
    #[error("no cgroup2 hierarchy is mounted (socket programs attach to one)")]
    NoCgroup2,
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the kernel refused BPF program {prog}: {source}; verifier log: {log}")]
    Load {
        prog: &'static str,
        #[source]
        source: io::Error,
        log: String,
    },
    #[error("cannot attach BPF program {prog} to cgroup {cgroup}: {source}")]
    Attach {
        prog: &'static str,
        cgroup: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("updating the socket-LB service map: {}", .0.join("; "))]
    Sync(Vec<String>),
}

pub type Result<T, E = SockLbError> = std::result::Result<T, E>;

fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> SockLbError {
    let what = what.into();
    move |source| SockLbError::Sys { what, source }
}

// ---------------------------------------------------------------- the assembler

/// A BPF register. R0: return value / helper result; R1-R5: helper
/// arguments (clobbered by calls); R6-R9: callee-saved; R10: frame pointer
/// (read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}
use Reg::*;
/// The frame pointer: the stack is the 512 bytes below it.
const FP: Reg = R10;

/// Width of a memory access (the `BPF_SIZE` bits of the opcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Size {
    /// 32 bits.
    W = 0x00,
    /// 16 bits.
    H = 0x08,
    /// 8 bits.
    B = 0x10,
    /// 64 bits.
    DW = 0x18,
}

// Opcode classes and fields (include/uapi/linux/bpf_common.h, bpf.h).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
/// Source operand: the immediate (K) or the source register (X).
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const ALU_ADD: u8 = 0x00;
const ALU_AND: u8 = 0x50;
const ALU_MOV: u8 = 0xb0;
const JMP_JA: u8 = 0x00;
const JMP_JEQ: u8 = 0x10;
const JMP_JNE: u8 = 0x50;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load whose immediate is a map fd
/// (BPF_PSEUDO_MAP_FD = 1, written in the source register field).
const PSEUDO_MAP_FD: Reg = R1;

/// One instruction: `struct bpf_insn` (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: Reg,
    pub src: Reg,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// The kernel's layout: code, then the two 4-bit register fields
    /// (`dst_reg` in the low nibble on little-endian machines: C bitfields
    /// follow the byte order), then `off` and `imm` in native order.
    pub fn encode(&self) -> [u8; 8] {
        let regs = if cfg!(target_endian = "little") {
            (self.src as u8) << 4 | self.dst as u8
        } else {
            (self.dst as u8) << 4 | self.src as u8
        };
        let o = self.off.to_ne_bytes();
        let i = self.imm.to_ne_bytes();
        [self.code, regs, o[0], o[1], i[0], i[1], i[2], i[3]]
    }
}

/// `dst = src` (64 bits).
pub fn mov64_reg(dst: Reg, src: Reg) -> Insn {
    Insn::new(CLASS_ALU64 | ALU_MOV | SRC_X, dst, src, 0, 0)
}
/// `dst = imm` (sign-extended to 64 bits).
pub fn mov64_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(CLASS_ALU64 | ALU_MOV | SRC_K, dst, R0, 0, imm)
}
/// `dst += imm`.
pub fn add64_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(CLASS_ALU64 | ALU_ADD | SRC_K, dst, R0, 0, imm)
}
/// `dst &= imm` (imm sign-extended).
pub fn and64_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(CLASS_ALU64 | ALU_AND | SRC_K, dst, R0, 0, imm)
}
/// `dst = *(size *)(src + off)`, zero-extended.
pub fn ldx(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
    Insn::new(CLASS_LDX | MODE_MEM | size as u8, dst, src, off, 0)
}
/// `*(size *)(dst + off) = src`.
pub fn stx(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
    Insn::new(CLASS_STX | MODE_MEM | size as u8, dst, src, off, 0)
}
/// `*(size *)(dst + off) = imm`.
pub fn st(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
    Insn::new(CLASS_ST | MODE_MEM | size as u8, dst, R0, off, imm)
}
/// `dst = imm64`: the one 16-byte instruction (the second half carries
/// the upper 32 bits).
pub fn ld_imm64(dst: Reg, imm: u64) -> [Insn; 2] {
    [
        Insn::new(
            CLASS_LD | MODE_IMM | Size::DW as u8,
            dst,
            R0,
            0,
            imm as u32 as i32,
        ),
        Insn::new(0, R0, R0, 0, (imm >> 32) as u32 as i32),
    ]
}
/// `dst = &map` for map file descriptor `fd` (the verifier replaces the fd
/// with the map's address).
pub fn ld_map_fd(dst: Reg, fd: RawFd) -> [Insn; 2] {
    [
        Insn::new(
            CLASS_LD | MODE_IMM | Size::DW as u8,
            dst,
            PSEUDO_MAP_FD,
            0,
            fd,
        ),
        Insn::new(0, R0, R0, 0, 0),
    ]
}
/// `if dst == imm goto +off`.
pub fn jeq_imm(dst: Reg, imm: i32, off: i16) -> Insn {
    Insn::new(CLASS_JMP | JMP_JEQ | SRC_K, dst, R0, off, imm)
}
/// `if dst != imm goto +off`.
pub fn jne_imm(dst: Reg, imm: i32, off: i16) -> Insn {
    Insn::new(CLASS_JMP | JMP_JNE | SRC_K, dst, R0, off, imm)
}
/// `if dst != src goto +off`.
pub fn jne_reg(dst: Reg, src: Reg, off: i16) -> Insn {
    Insn::new(CLASS_JMP | JMP_JNE | SRC_X, dst, src, off, 0)
}
/// `goto +off`.
pub fn ja(off: i16) -> Insn {
    Insn::new(CLASS_JMP | JMP_JA, R0, R0, off, 0)
}
/// Call kernel helper number `helper` (arguments in R1-R5, result in R0).
pub fn call(helper: i32) -> Insn {
    Insn::new(CLASS_JMP | JMP_CALL, R0, R0, 0, helper)
}
/// Return R0.
pub fn exit() -> Insn {
    Insn::new(CLASS_JMP | JMP_EXIT, R0, R0, 0, 0)
}

/// Jump kinds [`Asm`] resolves to a label.
#[derive(Debug, Clone, Copy)]
enum Jump {
    EqImm(Reg, i32),
    NeImm(Reg, i32),
    NeReg(Reg, Reg),
}

/// A tiny assembler: instructions plus jumps to named labels, resolved by
/// [`Asm::finish`] (jump offsets count instructions after the jump).
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: BTreeMap<&'static str, usize>,
    fixups: Vec<(usize, Jump, &'static str)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }
    pub fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }
    pub fn extend(&mut self, i: impl IntoIterator<Item = Insn>) -> &mut Self {
        self.insns.extend(i);
        self
    }
    fn jump(&mut self, j: Jump, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), j, label));
        self.insns.push(ja(0)); // placeholder, replaced in finish()
        self
    }
    pub fn jeq_imm(&mut self, r: Reg, imm: i32, label: &'static str) -> &mut Self {
        self.jump(Jump::EqImm(r, imm), label)
    }
    pub fn jne_imm(&mut self, r: Reg, imm: i32, label: &'static str) -> &mut Self {
        self.jump(Jump::NeImm(r, imm), label)
    }
    pub fn jne_reg(&mut self, a: Reg, b: Reg, label: &'static str) -> &mut Self {
        self.jump(Jump::NeReg(a, b), label)
    }
    /// Place `name` at the next instruction.
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        let dup = self.labels.insert(name, self.insns.len());
        assert!(dup.is_none(), "label {name} placed twice");
        self
    }
    /// The program; panics on an unknown label or an out-of-range jump
    /// (both are bugs in the program text, caught by the unit tests).
    pub fn finish(&self) -> Vec<Insn> {
        let mut out = self.insns.clone();
        for &(at, j, label) in &self.fixups {
            let to = *self
                .labels
                .get(label)
                .unwrap_or_else(|| panic!("unknown label {label}"));
            let off = i16::try_from(to as isize - at as isize - 1).expect("jump out of range");
            out[at] = match j {
                Jump::EqImm(r, imm) => jeq_imm(r, imm, off),
                Jump::NeImm(r, imm) => jne_imm(r, imm, off),
                Jump::NeReg(a, b) => jne_reg(a, b, off),
            };
        }
        out
    }
}

// ---------------------------------------------------------------- the programs

/// Kernel helpers used (enum bpf_func_id).
mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const MAP_UPDATE_ELEM: i32 = 2;
    pub const GET_SOCKET_COOKIE: i32 = 46;
    pub const GET_NETNS_COOKIE: i32 = 122;
}

/// Offsets in `struct bpf_sock_addr`, the programs' context. Addresses and
/// the port are in network byte order; the port occupies the low 16 bits
/// of a u32 that must be written whole.
mod ctx {
    pub const USER_IP4: i16 = 4;
    pub const USER_IP6: i16 = 8;
    pub const USER_PORT: i16 = 24;
    pub const PROTOCOL: i16 = 36;
}

/// Stack layout of the connect program (offsets from the frame pointer).
/// Service key, 20 bytes: family u8, protocol u8, port u16, address 16.
const KEY: i16 = -24;
/// Reverse record, 40 bytes: [`RevRecord`].
const REV: i16 = -64;
/// Socket cookie, 8 bytes.
const COOKIE: i16 = -72;

/// Layout of the service key ([`ServiceKey::bytes`]).
const KEY_FAMILY: i16 = 0;
const KEY_PROTO: i16 = 1;
const KEY_PORT: i16 = 2;
const KEY_ADDR: i16 = 4;
const KEY_SIZE: u32 = 20;
/// Layout of the service map value ([`Backend::bytes`]).
const VAL_ADDR: i16 = 0;
const VAL_PORT: i16 = 16;
const VAL_SIZE: u32 = 20;
/// Layout of the reverse record (socket cookie -> addresses).
const REV_ORIG_ADDR: i16 = 0;
const REV_BACKEND_ADDR: i16 = 16;
const REV_ORIG_PORT: i16 = 32;
const REV_BACKEND_PORT: i16 = 34;
const REV_PAD: i16 = 36;
const REV_SIZE: u32 = 40;

/// Address words (u32) of a family: 1 for IPv4, 4 for IPv6.
fn words(v6: bool) -> i16 {
    if v6 {
        4
    } else {
        1
    }
}
/// Copies the context's (R6) address at offset `ip` into the 16-byte stack
/// slot at `dst`: an IPv4 address is its first word, the others zero.
fn store_ctx_addr(a: &mut Asm, v6: bool, ip: i16, dst: i16) {
    for w in 0..4 {
        if w < words(v6) {
            a.push(ldx(Size::W, R1, R6, ip + 4 * w))
                .push(stx(Size::W, FP, dst + 4 * w, R1));
        } else {
            a.push(st(Size::W, FP, dst + 4 * w, 0));
        }
    }
}

/// The context offset of the destination/peer address.
fn ctx_addr(v6: bool) -> i16 {
    if v6 {
        ctx::USER_IP6
    } else {
        ctx::USER_IP4
    }
}

/// The `connect4`/`connect6` program. `netns` is the daemon's netns
/// cookie; `services` and `reverse` are map fds.
pub fn connect_program(v6: bool, netns: u64, services: RawFd, reverse: RawFd) -> Vec<Insn> {
    let mut a = Asm::new();
    let ip = ctx_addr(v6);
    // R6 = ctx, kept across helper calls.
    a.push(mov64_reg(R6, R1));
    // Loopback destinations only: 127.0.0.0/8 or ::1. The address is in
    // network order in memory; the masks are built from bytes so the
    // test is right on either byte order.
    if v6 {
        for w in 0..3 {
            a.push(ldx(Size::W, R2, R6, ip + 4 * w))
                .jne_imm(R2, 0, "out");
        }
        a.push(ldx(Size::W, R2, R6, ip + 12)).jne_imm(
            R2,
            u32::from_ne_bytes([0, 0, 0, 1]) as i32,
            "out",
        );
    } else {
        a.push(ldx(Size::W, R2, R6, ip))
            .push(and64_imm(R2, u32::from_ne_bytes([0xff, 0, 0, 0]) as i32))
            .jne_imm(R2, u32::from_ne_bytes([127, 0, 0, 0]) as i32, "out");
    }
    // Only sockets of the daemon's network namespace.
    a.push(mov64_reg(R1, R6))
        .push(call(helper::GET_NETNS_COOKIE))
        .extend(ld_imm64(R1, netns))
        .jne_reg(R0, R1, "out");
    // The service key on the stack: family, protocol, port, address.
    a.push(st(Size::B, FP, KEY + KEY_FAMILY, if v6 { 6 } else { 4 }))
        .push(ldx(Size::W, R1, R6, ctx::PROTOCOL))
        .push(stx(Size::B, FP, KEY + KEY_PROTO, R1))
        .push(ldx(Size::W, R1, R6, ctx::USER_PORT))
        .push(stx(Size::H, FP, KEY + KEY_PORT, R1));
    store_ctx_addr(&mut a, v6, ip, KEY + KEY_ADDR);
    // Exact address first ...
    a.extend(ld_map_fd(R1, services))
        .push(mov64_reg(R2, FP))
        .push(add64_imm(R2, KEY as i32))
        .push(call(helper::MAP_LOOKUP_ELEM))
        .jne_imm(R0, 0, "found");
    // ... then the wildcard publish (address all zeros).
    for w in 0..words(v6) {
        a.push(st(Size::W, FP, KEY + KEY_ADDR + 4 * w, 0));
    }
    a.extend(ld_map_fd(R1, services))
        .push(mov64_reg(R2, FP))
        .push(add64_imm(R2, KEY as i32))
        .push(call(helper::MAP_LOOKUP_ELEM))
        .jeq_imm(R0, 0, "out");
    // R7 = the backend (map value), kept across helper calls.
    a.label("found").push(mov64_reg(R7, R0));
    // The reverse record: what the app asked for, and where it now goes.
    store_ctx_addr(&mut a, v6, ip, REV + REV_ORIG_ADDR);
    for w in 0..4 {
        a.push(ldx(Size::W, R1, R7, VAL_ADDR + 4 * w)).push(stx(
            Size::W,
            FP,
            REV + REV_BACKEND_ADDR + 4 * w,
            R1,
        ));
    }
    a.push(ldx(Size::W, R1, R6, ctx::USER_PORT))
        .push(stx(Size::H, FP, REV + REV_ORIG_PORT, R1))
        .push(ldx(Size::H, R1, R7, VAL_PORT))
        .push(stx(Size::H, FP, REV + REV_BACKEND_PORT, R1))
        .push(st(Size::W, FP, REV + REV_PAD, 0));
    // Rewrite the destination.
    for w in 0..words(v6) {
        a.push(ldx(Size::W, R1, R7, VAL_ADDR + 4 * w))
            .push(stx(Size::W, R6, ip + 4 * w, R1));
    }
    a.push(ldx(Size::H, R1, R7, VAL_PORT))
        .push(stx(Size::W, R6, ctx::USER_PORT, R1));
    // reverse[socket cookie] = record (BPF_ANY; a failure only loses the
    // getpeername view).
    a.push(mov64_reg(R1, R6))
        .push(call(helper::GET_SOCKET_COOKIE))
        .push(stx(Size::DW, FP, COOKIE, R0))
        .extend(ld_map_fd(R1, reverse))
        .push(mov64_reg(R2, FP))
        .push(add64_imm(R2, COOKIE as i32))
        .push(mov64_reg(R3, FP))
        .push(add64_imm(R3, REV as i32))
        .push(mov64_imm(R4, 0))
        .push(call(helper::MAP_UPDATE_ELEM));
    // Always allow the connect.
    a.label("out").push(mov64_imm(R0, 1)).push(exit());
    a.finish()
}

/// The `getpeername4/6` and `recvmsg4/6` program: show the address the
/// application connected to when the kernel's peer address is the backend
/// its connect was translated to.
pub fn reverse_program(v6: bool, reverse: RawFd) -> Vec<Insn> {
    let mut a = Asm::new();
    let ip = ctx_addr(v6);
    a.push(mov64_reg(R6, R1))
        .push(call(helper::GET_SOCKET_COOKIE)) // R1 is still ctx
        .push(stx(Size::DW, FP, -8, R0))
        .extend(ld_map_fd(R1, reverse))
        .push(mov64_reg(R2, FP))
        .push(add64_imm(R2, -8))
        .push(call(helper::MAP_LOOKUP_ELEM))
        .jeq_imm(R0, 0, "out");
    for w in 0..words(v6) {
        a.push(ldx(Size::W, R1, R6, ip + 4 * w))
            .push(ldx(Size::W, R2, R0, REV_BACKEND_ADDR + 4 * w))
            .jne_reg(R1, R2, "out");
    }
    a.push(ldx(Size::W, R1, R6, ctx::USER_PORT))
        .push(ldx(Size::H, R2, R0, REV_BACKEND_PORT))
        .jne_reg(R1, R2, "out");
    for w in 0..words(v6) {
        a.push(ldx(Size::W, R1, R0, REV_ORIG_ADDR + 4 * w))
            .push(stx(Size::W, R6, ip + 4 * w, R1));
    }
    a.push(ldx(Size::H, R1, R0, REV_ORIG_PORT))
        .push(stx(Size::W, R6, ctx::USER_PORT, R1));
    a.label("out").push(mov64_imm(R0, 1)).push(exit());
    a.finish()
}

// ---------------------------------------------------------------- map contents

/// A service map key: a published (address, port, protocol) of one family.
/// The unspecified address is the wildcard publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub proto: Proto,
    /// The host address; `0.0.0.0`/`::` for a wildcard publish.
    pub addr: IpAddr,
    pub port: u16,
}

/// Where a service key goes: the container's address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
}

/// IPPROTO_* of the protocols translated here.
fn ipproto(p: Proto) -> Option<u8> {
    match p {
        Proto::Tcp => Some(libc::IPPROTO_TCP as u8),
        Proto::Udp => Some(libc::IPPROTO_UDP as u8),
        // SCTP is multi-homed: left to DNAT.
        Proto::Sctp => None,
    }
}

/// An address as 16 bytes in network order (IPv4 in the first 4).
fn addr_bytes(a: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v) => b[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => b = v.octets(),
    }
    b
}

impl ServiceKey {
    /// The key as the programs build it: family (4/6), IPPROTO, port in
    /// network order, address. `None` for a protocol never translated.
    pub fn bytes(&self) -> Option<[u8; KEY_SIZE as usize]> {
        let mut b = [0u8; KEY_SIZE as usize];
        b[KEY_FAMILY as usize] = if self.addr.is_ipv6() { 6 } else { 4 };
        b[KEY_PROTO as usize] = ipproto(self.proto)?;
        b[KEY_PORT as usize..KEY_PORT as usize + 2].copy_from_slice(&self.port.to_be_bytes());
        b[KEY_ADDR as usize..].copy_from_slice(&addr_bytes(self.addr));
        Some(b)
    }
}

impl Backend {
    /// Address (16 bytes), port in network order, 2 bytes of padding.
    pub fn bytes(&self) -> [u8; VAL_SIZE as usize] {
        let mut b = [0u8; VAL_SIZE as usize];
        b[..16].copy_from_slice(&addr_bytes(self.addr));
        b[VAL_PORT as usize..VAL_PORT as usize + 2].copy_from_slice(&self.port.to_be_bytes());
        b
    }
}

/// The service map for `ports`: loopback publishes (127.0.0.0/8, `::1`)
/// under their address, wildcard publishes under the unspecified address
/// of their family; TCP and UDP only. A publish on another specific
/// address (a LAN address of the host) cannot be reached through loopback
/// and is left to DNAT.
pub fn service_entries(ports: &[PortMapping]) -> BTreeMap<ServiceKey, Backend> {
    let mut out = BTreeMap::new();
    for p in ports {
        if ipproto(p.proto).is_none() {
            continue;
        }
        let addr = match p.host_ip {
            None if p.container_ip.is_ipv4() => IpAddr::from([0u8; 4]),
            None => IpAddr::from([0u8; 16]),
            Some(a) if a.is_loopback() && a.is_ipv4() == p.container_ip.is_ipv4() => a,
            Some(_) => continue,
        };
        out.insert(
            ServiceKey {
                proto: p.proto,
                addr,
                port: p.host_port,
            },
            Backend {
                addr: p.container_ip,
                port: p.container_port,
            },
        );
    }
    out
}

/// Writes to the service map (a trait so [`apply_diff`] is tested without
/// the kernel).
pub trait ServiceMap {
    fn update(&self, key: &ServiceKey, to: &Backend) -> io::Result<()>;
    fn delete(&self, key: &ServiceKey) -> io::Result<()>;
}

/// Make the map (whose contents are `current`) hold `desired`: delete what
/// went away first (a freed slot for what comes), then add or change.
/// Continues past failures and returns them; `current` always reflects
/// what the map really holds (a failed delete stays, a failed update is
/// absent or keeps its old value).
pub fn apply_diff(
    current: &mut BTreeMap<ServiceKey, Backend>,
    desired: &BTreeMap<ServiceKey, Backend>,
    map: &impl ServiceMap,
) -> Vec<String> {
    let mut errors = Vec::new();
    let gone: Vec<ServiceKey> = current
        .keys()
        .filter(|k| !desired.contains_key(k))
        .copied()
        .collect();
    for k in gone {
        match map.delete(&k) {
            Ok(()) => {
                current.remove(&k);
            }
            // Already absent: the goal is reached.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                current.remove(&k);
            }
            Err(e) => errors.push(format!("deleting {}: {e}", describe(&k))),
        }
    }
    for (k, v) in desired {
        if current.get(k) == Some(v) {
            continue;
        }
        match map.update(k, v) {
            Ok(()) => {
                current.insert(*k, *v);
            }
            Err(e) => errors.push(format!("adding {}: {e}", describe(k))),
        }
    }
    errors
}

fn describe(k: &ServiceKey) -> String {
    match k.addr {
        IpAddr::V6(a) => format!("[{a}]:{}/{}", k.port, k.proto.as_str()),
        IpAddr::V4(a) => format!("{a}:{}/{}", k.port, k.proto.as_str()),
    }
}

// ---------------------------------------------------------------- bpf(2)

mod cmd {
    pub const MAP_CREATE: u32 = 0;
    pub const MAP_UPDATE_ELEM: u32 = 2;
    pub const MAP_DELETE_ELEM: u32 = 3;
    pub const PROG_LOAD: u32 = 5;
    pub const OBJ_GET_INFO_BY_FD: u32 = 15;
    pub const PROG_QUERY: u32 = 16;
    pub const LINK_CREATE: u32 = 28;
}
const MAP_TYPE_HASH: u32 = 1;
const MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_F_NO_PREALLOC: u32 = 1;
const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `SO_NETNS_COOKIE` (Linux 5.14+).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Published (address, port, protocol)s the map holds at most. Allocated
/// on use (`BPF_F_NO_PREALLOC`), so a large limit costs nothing.
pub const MAX_SERVICES: u32 = 65536;
/// Translated sockets whose original peer is remembered for getpeername
/// (LRU: the least recently used is forgotten first).
pub const MAX_TRANSLATED_SOCKETS: u32 = 16384;

/// The cgroup hooks used (enum bpf_attach_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Connect4 = 10,
    Connect6 = 11,
    Recvmsg4 = 19,
    Recvmsg6 = 20,
    Getpeername4 = 29,
    Getpeername6 = 30,
}

impl Hook {
    pub const ALL: [Hook; 6] = [
        Hook::Connect4,
        Hook::Connect6,
        Hook::Getpeername4,
        Hook::Getpeername6,
        Hook::Recvmsg4,
        Hook::Recvmsg6,
    ];
    /// The program's name (at most 15 bytes), as `bpftool prog` shows it.
    pub fn prog_name(self) -> &'static str {
        match self {
            Hook::Connect4 => "shibafu_conn4",
            Hook::Connect6 => "shibafu_conn6",
            Hook::Getpeername4 => "shibafu_peer4",
            Hook::Getpeername6 => "shibafu_peer6",
            Hook::Recvmsg4 => "shibafu_recv4",
            Hook::Recvmsg6 => "shibafu_recv6",
        }
    }
    fn v6(self) -> bool {
        matches!(self, Hook::Connect6 | Hook::Getpeername6 | Hook::Recvmsg6)
    }
}

/// `union bpf_attr`: 144 bytes on 6.x kernels; fields unused by a command
/// stay zero, which every kernel accepts.
#[repr(C, align(8))]
struct Attr([u8; 144]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 144])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn ptr<T>(&mut self, off: usize, p: *const T) -> &mut Self {
        self.u64(off, p as usize as u64)
    }
    fn name(&mut self, off: usize, name: &str) -> &mut Self {
        let n = name.len().min(15); // BPF_OBJ_NAME_LEN - 1
        self.0[off..off + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap())
    }
}

fn bpf(cmd: u32, attr: &mut Attr) -> io::Result<libc::c_long> {
    loop {
        // SAFETY: attr is a valid, writable bpf_attr of the size passed;
        // every pointer inside it points to live memory of the caller.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                attr as *mut Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        if r >= 0 {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        // The verifier may ask to be called again (EAGAIN) under memory
        // pressure; EINTR is a signal.
        if !matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
            return Err(e);
        }
    }
}

fn bpf_fd(cmd: u32, attr: &mut Attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: a successful bpf() of these commands returns a new fd (with
    // O_CLOEXEC) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn map_create(
    name: &str,
    kind: u32,
    key: u32,
    value: u32,
    max: u32,
    flags: u32,
) -> Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, kind)
        .u32(4, key)
        .u32(8, value)
        .u32(12, max)
        .u32(16, flags)
        .name(28, name);
    bpf_fd(cmd::MAP_CREATE, &mut a).map_err(sys(format!("creating BPF map {name}")))
}

/// A BPF hash map of fixed-size keys and values.
struct Map {
    fd: OwnedFd,
}

impl Map {
    fn update_raw(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let mut a = Attr::new();
        a.u32(0, self.fd.as_raw_fd() as u32)
            .ptr(8, key.as_ptr())
            .ptr(16, value.as_ptr())
            .u64(24, 0); // BPF_ANY
        bpf(cmd::MAP_UPDATE_ELEM, &mut a).map(|_| ())
    }
    fn delete_raw(&self, key: &[u8]) -> io::Result<()> {
        let mut a = Attr::new();
        a.u32(0, self.fd.as_raw_fd() as u32).ptr(8, key.as_ptr());
        bpf(cmd::MAP_DELETE_ELEM, &mut a).map(|_| ())
    }
}

impl ServiceMap for Map {
    fn update(&self, key: &ServiceKey, to: &Backend) -> io::Result<()> {
        let k = key
            .bytes()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        self.update_raw(&k, &to.bytes())
    }
    fn delete(&self, key: &ServiceKey) -> io::Result<()> {
        let k = key
            .bytes()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        self.delete_raw(&k)
    }
}

/// Load one program; on refusal, load again with the verifier log on, so
/// the error says why.
fn prog_load(hook: Hook, insns: &[Insn]) -> Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    // The programs are ours (Apache-2.0); the kernel needs a
    // GPL-compatible string only for GPL-only helpers, which none is.
    let license = CString::new("Apache-2.0").unwrap();
    let load = |log: Option<&mut Vec<u8>>| {
        let mut a = Attr::new();
        a.u32(0, PROG_TYPE_CGROUP_SOCK_ADDR)
            .u32(4, insns.len() as u32)
            .ptr(8, code.as_ptr())
            .ptr(16, license.as_ptr())
            .name(48, hook.prog_name())
            .u32(68, hook as u32); // expected_attach_type
        if let Some(buf) = log {
            a.u32(24, 1).u32(28, buf.len() as u32).ptr(32, buf.as_ptr());
        }
        bpf_fd(cmd::PROG_LOAD, &mut a)
    };
    load(None).map_err(|source| {
        let mut buf = vec![0u8; 1 << 16];
        let _ = load(Some(&mut buf));
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let log = String::from_utf8_lossy(&buf[..end]);
        // The last lines say what went wrong.
        let tail: Vec<&str> = log.lines().rev().take(6).collect();
        SockLbError::Load {
            prog: hook.prog_name(),
            source,
            log: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        }
    })
}

/// The kernel's id of a loaded program (`bpf_prog_info.id`).
fn prog_id(fd: &OwnedFd) -> io::Result<u32> {
    // struct bpf_prog_info starts with `__u32 type; __u32 id;`; the kernel
    // fills at most the length given.
    let mut info = [0u32; 2];
    let mut a = Attr::new();
    a.u32(0, fd.as_raw_fd() as u32)
        .u32(4, std::mem::size_of_val(&info) as u32)
        .ptr(8, info.as_mut_ptr());
    bpf(cmd::OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info[1])
}

/// The ids of the programs attached to `cgroup` for `hook` (BPF_PROG_QUERY,
/// effective or not: only this cgroup's own attachments).
pub fn query_attached(cgroup: &Path, hook: Hook) -> Result<Vec<u32>> {
    let dir = open_dir(cgroup)?;
    let mut ids = vec![0u32; 256];
    let mut a = Attr::new();
    a.u32(0, dir.as_raw_fd() as u32)
        .u32(4, hook as u32)
        .ptr(16, ids.as_mut_ptr())
        .u32(24, ids.len() as u32);
    bpf(cmd::PROG_QUERY, &mut a).map_err(sys(format!(
        "querying the programs attached to {}",
        cgroup.display()
    )))?;
    ids.truncate(a.get_u32(24) as usize);
    Ok(ids)
}

fn open_dir(p: &Path) -> Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| sys(format!("opening {}", p.display()))(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: c is a valid C string; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(sys(format!("opening {}", p.display()))(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by open() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The mount point of the cgroup2 hierarchy in a `/proc/self/mountinfo`
/// text (the first one; octal escapes such as `\040` decoded).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mnt = pre.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mnt)))
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE
/// on a throwaway socket).
pub fn netns_cookie() -> Result<u64> {
    let what = "reading the network namespace cookie (SO_NETNS_COOKIE, Linux 5.14+)";
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(sys(what)(io::Error::last_os_error()));
    }
    // SAFETY: fd is a new socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: v and len are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            &mut v as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(sys(what)(io::Error::last_os_error()));
    }
    Ok(v)
}

/// One attached program.
struct Attached {
    hook: Hook,
    prog_id: u32,
    /// Closing it (drop, or the process dying) detaches the program.
    _link: OwnedFd,
}

/// The loaded and attached programs plus their maps (see module doc).
/// Dropping it detaches everything.
pub struct SockLb {
    services: Map,
    /// The reverse map's fd: the programs hold their own references, this
    /// one keeps it alive for the struct's life.
    _reverse: OwnedFd,
    attached: Vec<Attached>,
    cgroup: PathBuf,
    netns: u64,
    /// What the service map holds.
    current: Mutex<BTreeMap<ServiceKey, Backend>>,
}

impl std::fmt::Debug for SockLb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockLb")
            .field("cgroup", &self.cgroup)
            .field("netns", &self.netns)
            .field("prog_ids", &self.prog_ids())
            .finish()
    }
}

impl SockLb {
    /// Load the programs for the caller's network namespace and attach them
    /// to the root of the cgroup2 hierarchy. An error says what the kernel
    /// refused (no cgroup2, no BPF permission, an old kernel, the verifier).
    pub fn open() -> Result<SockLb> {
        let mi = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(sys("reading /proc/self/mountinfo"))?;
        let root = cgroup2_mount(&mi).ok_or(SockLbError::NoCgroup2)?;
        SockLb::open_at(&root)
    }

    /// [`Self::open`] with the cgroup to attach to given (tests).
    pub fn open_at(cgroup: &Path) -> Result<SockLb> {
        let netns = netns_cookie()?;
        let dir = open_dir(cgroup)?;
        let services = map_create(
            "shibafu_svc",
            MAP_TYPE_HASH,
            KEY_SIZE,
            VAL_SIZE,
            MAX_SERVICES,
            BPF_F_NO_PREALLOC,
        )?;
        let reverse = map_create(
            "shibafu_rev",
            MAP_TYPE_LRU_HASH,
            8,
            REV_SIZE,
            MAX_TRANSLATED_SOCKETS,
            0,
        )?;
        // Load everything before attaching anything: a refused program
        // leaves nothing attached.
        let mut progs = Vec::new();
        for hook in Hook::ALL {
            let insns = match hook {
                Hook::Connect4 | Hook::Connect6 => {
                    connect_program(hook.v6(), netns, services.as_raw_fd(), reverse.as_raw_fd())
                }
                _ => reverse_program(hook.v6(), reverse.as_raw_fd()),
            };
            let fd = prog_load(hook, &insns)?;
            let id = prog_id(&fd).map_err(sys("reading a BPF program's id"))?;
            progs.push((hook, fd, id));
        }
        let mut attached = Vec::new();
        for (hook, prog, prog_id) in progs {
            let mut a = Attr::new();
            a.u32(0, prog.as_raw_fd() as u32)
                .u32(4, dir.as_raw_fd() as u32)
                .u32(8, hook as u32);
            // On failure, `attached` is dropped: the links made so far close.
            let link = bpf_fd(cmd::LINK_CREATE, &mut a).map_err(|source| SockLbError::Attach {
                prog: hook.prog_name(),
                cgroup: cgroup.to_path_buf(),
                source,
            })?;
            attached.push(Attached {
                hook,
                prog_id,
                _link: link,
            });
        }
        Ok(SockLb {
            services: Map { fd: services },
            _reverse: reverse,
            attached,
            cgroup: cgroup.to_path_buf(),
            netns,
            current: Mutex::new(BTreeMap::new()),
        })
    }

    /// Make the service map equal to what `ports` publish (see
    /// [`service_entries`]): one map update per added or changed entry, one
    /// delete per removed one. Continues past failures and reports them
    /// all; an entry that failed is simply carried by DNAT.
    pub fn sync(&self, ports: &[PortMapping]) -> Result<()> {
        let desired = service_entries(ports);
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let errors = apply_diff(&mut cur, &desired, &self.services);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SockLbError::Sync(errors))
        }
    }

    /// The entries the service map holds.
    pub fn entries(&self) -> BTreeMap<ServiceKey, Backend> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The netns cookie the connect programs act for.
    pub fn netns_cookie(&self) -> u64 {
        self.netns
    }

    /// (hook, kernel program id) of every attached program.
    pub fn prog_ids(&self) -> Vec<(Hook, u32)> {
        self.attached.iter().map(|a| (a.hook, a.prog_id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn instruction_encoding() {
        // Reference bytes from the kernel's own macros (linux/filter.h),
        // little-endian.
        if cfg!(target_endian = "big") {
            return;
        }
        // BPF_MOV64_REG(R6, R1) = bf 16 00 00 00 00 00 00
        assert_eq!(mov64_reg(R6, R1).encode(), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        // BPF_MOV64_IMM(R0, 1) = b7 00 00 00 01 00 00 00
        assert_eq!(mov64_imm(R0, 1).encode(), [0xb7, 0, 0, 0, 1, 0, 0, 0]);
        // BPF_ALU64_IMM(BPF_ADD, R2, -24) = 07 02 00 00 e8 ff ff ff
        assert_eq!(
            add64_imm(R2, -24).encode(),
            [0x07, 0x02, 0, 0, 0xe8, 0xff, 0xff, 0xff]
        );
        // BPF_ALU64_IMM(BPF_AND, R2, 0xff) = 57 02 00 00 ff 00 00 00
        assert_eq!(and64_imm(R2, 0xff).encode(), [0x57, 2, 0, 0, 0xff, 0, 0, 0]);
        // BPF_LDX_MEM(BPF_W, R2, R6, 4) = 61 62 04 00 00 00 00 00
        assert_eq!(
            ldx(Size::W, R2, R6, 4).encode(),
            [0x61, 0x62, 4, 0, 0, 0, 0, 0]
        );
        // BPF_LDX_MEM(BPF_H, R1, R7, 16) = 69 71 10 00 ...
        assert_eq!(
            ldx(Size::H, R1, R7, 16).encode(),
            [0x69, 0x71, 16, 0, 0, 0, 0, 0]
        );
        // BPF_STX_MEM(BPF_DW, R10, R0, -72) = 7b 0a b8 ff 00 00 00 00
        assert_eq!(
            stx(Size::DW, R10, -72, R0).encode(),
            [0x7b, 0x0a, 0xb8, 0xff, 0, 0, 0, 0]
        );
        // BPF_STX_MEM(BPF_B, R10, R1, -23) = 73 1a e9 ff ...
        assert_eq!(
            stx(Size::B, R10, -23, R1).encode(),
            [0x73, 0x1a, 0xe9, 0xff, 0, 0, 0, 0]
        );
        // BPF_ST_MEM(BPF_W, R10, -16, 0) = 62 0a f0 ff 00 00 00 00
        assert_eq!(
            st(Size::W, R10, -16, 0).encode(),
            [0x62, 0x0a, 0xf0, 0xff, 0, 0, 0, 0]
        );
        // BPF_ST_MEM(BPF_B, R10, -24, 6) = 72 0a e8 ff 06 00 00 00
        assert_eq!(
            st(Size::B, R10, -24, 6).encode(),
            [0x72, 0x0a, 0xe8, 0xff, 6, 0, 0, 0]
        );
        // BPF_JMP_IMM(BPF_JNE, R2, 0, 5) = 55 02 05 00 00 00 00 00
        assert_eq!(jne_imm(R2, 0, 5).encode(), [0x55, 2, 5, 0, 0, 0, 0, 0]);
        // BPF_JMP_IMM(BPF_JEQ, R0, 0, -3) = 15 00 fd ff ...
        assert_eq!(
            jeq_imm(R0, 0, -3).encode(),
            [0x15, 0, 0xfd, 0xff, 0, 0, 0, 0]
        );
        // BPF_JMP_REG(BPF_JNE, R1, R2, 7) = 5d 21 07 00 ...
        assert_eq!(jne_reg(R1, R2, 7).encode(), [0x5d, 0x21, 7, 0, 0, 0, 0, 0]);
        // BPF_EMIT_CALL(BPF_FUNC_get_netns_cookie) = 85 00 00 00 7a 00 00 00
        assert_eq!(call(122).encode(), [0x85, 0, 0, 0, 122, 0, 0, 0]);
        assert_eq!(exit().encode(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ja(2).encode(), [0x05, 0, 2, 0, 0, 0, 0, 0]);
        // BPF_LD_IMM64(R1, 0x1122334455667788): 18 01 .. 88776655, 00 .. 44332211
        let [a, b] = ld_imm64(R1, 0x1122_3344_5566_7788);
        assert_eq!(a.encode(), [0x18, 1, 0, 0, 0x88, 0x77, 0x66, 0x55]);
        assert_eq!(b.encode(), [0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]);
        // BPF_LD_MAP_FD(R1, 7): 18 11 00 00 07 00 00 00, 00 ...
        let [a, b] = ld_map_fd(R1, 7);
        assert_eq!(a.encode(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(b.encode(), [0; 8]);
    }

    #[test]
    fn assembler_resolves_labels_forward() {
        let mut a = Asm::new();
        a.jeq_imm(R0, 0, "out")
            .extend(ld_imm64(R1, 5)) // two slots
            .jne_reg(R0, R1, "out")
            .push(mov64_imm(R0, 2))
            .label("out")
            .push(exit());
        let p = a.finish();
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], jeq_imm(R0, 0, 4));
        assert_eq!(p[3], jne_reg(R0, R1, 1));
    }

    #[test]
    #[should_panic(expected = "unknown label")]
    fn assembler_refuses_unknown_labels() {
        let mut a = Asm::new();
        a.jeq_imm(R0, 0, "nowhere").push(exit());
        a.finish();
    }

    /// Every path of every program ends in `r0 = 1; exit`, and every jump
    /// lands inside the program: the properties that make a bug harmless.
    #[test]
    fn programs_always_allow() {
        for v6 in [false, true] {
            for p in [
                connect_program(v6, 0xdead_beef, 3, 4),
                reverse_program(v6, 4),
            ] {
                let n = p.len() as i64;
                assert_eq!(p[p.len() - 2], mov64_imm(R0, 1));
                assert_eq!(p[p.len() - 1], exit());
                let exits = p.iter().filter(|i| i.code == CLASS_JMP | JMP_EXIT).count();
                assert_eq!(exits, 1, "one exit only");
                for (at, i) in p.iter().enumerate() {
                    if i.code & 0x07 == CLASS_JMP
                        && i.code != CLASS_JMP | JMP_CALL
                        && i.code != CLASS_JMP | JMP_EXIT
                    {
                        let to = at as i64 + 1 + i.off as i64;
                        assert!(to > at as i64 && to < n, "jump at {at} to {to}");
                    }
                }
                // R0 is written nowhere except by calls and the final move.
                for i in &p[..p.len() - 2] {
                    let alu_or_ld = matches!(i.code & 0x07, CLASS_ALU64 | CLASS_LDX | CLASS_LD);
                    assert!(!(alu_or_ld && i.dst == R0 && i.code != 0), "{i:?}");
                }
            }
        }
    }

    #[test]
    fn connect_program_patches_cookie_and_maps() {
        let p = connect_program(false, 0x0102_0304_0506_0708, 11, 12);
        let imm64: Vec<(u8, i32)> = p
            .iter()
            .filter(|i| i.code == 0x18)
            .map(|i| (i.src as u8, i.imm))
            .collect();
        assert!(imm64.contains(&(0, 0x0506_0708)));
        assert_eq!(
            imm64.iter().filter(|x| **x == (1, 11)).count(),
            2,
            "two lookups"
        );
        assert_eq!(
            imm64.iter().filter(|x| **x == (1, 12)).count(),
            1,
            "one update"
        );
    }

    fn pm(proto: Proto, host: Option<&str>, hport: u16, cip: &str, cport: u16) -> PortMapping {
        PortMapping {
            proto,
            host_ip: host.map(|h| h.parse().unwrap()),
            host_port: hport,
            container_ip: cip.parse().unwrap(),
            container_port: cport,
        }
    }

    #[test]
    fn entries_cover_loopback_and_wildcards_only() {
        let e = service_entries(&[
            pm(Proto::Tcp, Some("127.0.0.1"), 8080, "172.17.0.2", 80),
            pm(Proto::Udp, Some("127.0.0.2"), 5353, "172.17.0.2", 53),
            pm(Proto::Tcp, None, 9000, "172.17.0.3", 90),
            pm(Proto::Tcp, None, 9000, "fd00::3", 90),
            pm(Proto::Tcp, Some("::1"), 8443, "fd00::3", 443),
            // Not reachable through loopback, or not translated:
            pm(Proto::Tcp, Some("192.168.1.5"), 8081, "172.17.0.2", 80),
            pm(Proto::Sctp, None, 7000, "172.17.0.2", 70),
            pm(Proto::Tcp, Some("127.0.0.1"), 8444, "fd00::3", 443),
        ]);
        let k = |proto, addr: &str, port| ServiceKey {
            proto,
            addr: addr.parse().unwrap(),
            port,
        };
        let b = |addr: &str, port| Backend {
            addr: addr.parse().unwrap(),
            port,
        };
        let want: BTreeMap<_, _> = [
            (k(Proto::Tcp, "127.0.0.1", 8080), b("172.17.0.2", 80)),
            (k(Proto::Udp, "127.0.0.2", 5353), b("172.17.0.2", 53)),
            (k(Proto::Tcp, "0.0.0.0", 9000), b("172.17.0.3", 90)),
            (k(Proto::Tcp, "::", 9000), b("fd00::3", 90)),
            (k(Proto::Tcp, "::1", 8443), b("fd00::3", 443)),
        ]
        .into_iter()
        .collect();
        assert_eq!(e, want);
    }

    #[test]
    fn key_and_value_layout_match_the_programs() {
        let k = ServiceKey {
            proto: Proto::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            port: 0x1f90, // 8080
        };
        assert_eq!(
            k.bytes().unwrap(),
            [4, 6, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let k6 = ServiceKey {
            proto: Proto::Udp,
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 53,
        };
        let b = k6.bytes().unwrap();
        assert_eq!(&b[..4], &[6, 17, 0, 53]);
        assert_eq!(b[19], 1);
        assert!(ServiceKey {
            proto: Proto::Sctp,
            ..k
        }
        .bytes()
        .is_none());
        let v = Backend {
            addr: IpAddr::V4(Ipv4Addr::new(172, 17, 0, 2)),
            port: 80,
        };
        assert_eq!(
            v.bytes(),
            [172, 17, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 80, 0, 0]
        );
    }

    #[derive(Default)]
    struct FakeMap {
        ops: RefCell<Vec<String>>,
        fail_port: Option<u16>,
    }
    impl ServiceMap for FakeMap {
        fn update(&self, key: &ServiceKey, to: &Backend) -> io::Result<()> {
            if Some(key.port) == self.fail_port {
                return Err(io::Error::from_raw_os_error(libc::E2BIG));
            }
            self.ops
                .borrow_mut()
                .push(format!("+{} {}:{}", describe(key), to.addr, to.port));
            Ok(())
        }
        fn delete(&self, key: &ServiceKey) -> io::Result<()> {
            if Some(key.port) == self.fail_port {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            if key.port == 1 {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            self.ops.borrow_mut().push(format!("-{}", describe(key)));
            Ok(())
        }
    }

    #[test]
    fn diff_touches_only_changes_and_reports_failures() {
        let m = FakeMap::default();
        let mut cur = BTreeMap::new();
        let a = [
            pm(Proto::Tcp, Some("127.0.0.1"), 8080, "172.17.0.2", 80),
            pm(Proto::Tcp, None, 9000, "172.17.0.3", 90),
        ];
        assert!(apply_diff(&mut cur, &service_entries(&a), &m).is_empty());
        assert_eq!(m.ops.borrow().len(), 2);
        m.ops.borrow_mut().clear();
        // Same state again: nothing to do.
        assert!(apply_diff(&mut cur, &service_entries(&a), &m).is_empty());
        assert!(m.ops.borrow().is_empty());
        // One removed, one moved to another container.
        let b = [pm(Proto::Tcp, None, 9000, "172.17.0.4", 90)];
        assert!(apply_diff(&mut cur, &service_entries(&b), &m).is_empty());
        assert_eq!(
            *m.ops.borrow(),
            ["-127.0.0.1:8080/tcp", "+0.0.0.0:9000/tcp 172.17.0.4:90"]
        );
        assert_eq!(cur, service_entries(&b));
        // A failing entry is reported, the others still applied, and the
        // shadow copy matches what the map holds.
        let m = FakeMap {
            fail_port: Some(7000),
            ..Default::default()
        };
        let c = [
            pm(Proto::Tcp, None, 7000, "172.17.0.4", 70),
            pm(Proto::Tcp, None, 7001, "172.17.0.4", 71),
        ];
        let errs = apply_diff(&mut cur, &service_entries(&c), &m);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("0.0.0.0:7000/tcp"), "{errs:?}");
        assert_eq!(cur.len(), 1);
        assert!(cur.keys().all(|k| k.port == 7001));
        // A failed delete keeps the entry (so the next sync retries it); an
        // entry already absent counts as deleted.
        let mut cur2 = service_entries(&[
            pm(Proto::Tcp, None, 7000, "172.17.0.4", 70),
            pm(Proto::Tcp, None, 1, "172.17.0.4", 1),
        ]);
        let errs = apply_diff(&mut cur2, &BTreeMap::new(), &m);
        assert_eq!(errs.len(), 1);
        assert_eq!(cur2.keys().map(|k| k.port).collect::<Vec<_>>(), [7000]);
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let mi = "30 23 0:27 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(mi), Some(PathBuf::from("/sys/fs/cgroup")));
        let mi = "30 23 0:27 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(mi), Some(PathBuf::from("/mnt/my cg")));
        assert_eq!(
            cgroup2_mount("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn attr_layout() {
        assert_eq!(std::mem::size_of::<Attr>(), 144);
        let mut a = Attr::new();
        a.u32(4, 0x0102_0304).name(48, "a_very_long_program_name");
        assert_eq!(a.get_u32(4), 0x0102_0304);
        assert_eq!(&a.0[48..63], b"a_very_long_pro");
        assert_eq!(a.0[63], 0, "names keep their NUL");
    }
}
