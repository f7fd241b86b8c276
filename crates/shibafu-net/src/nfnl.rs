//! Set element updates sent to the kernel ourselves, over
//! `NETLINK_NETFILTER`, as one nfnetlink batch.
//!
//! Why:
//! - libnftables builds a cache before it runs any command, and for an
//!   `add element`/`delete element` that cache holds every element of the
//!   touched sets: with 1000 published ports one `run -p` paid ~50 ms in
//!   the firewall alone. The element messages themselves need nothing from
//!   the kernel first, so sending them directly makes the cost of a change
//!   depend on the change only.
//! - One batch (`NFNL_MSG_BATCH_BEGIN`, element messages,
//!   `NFNL_MSG_BATCH_END`) is one nf_tables transaction: the kernel applies
//!   the whole delta or nothing. Every element message asks for an ack
//!   (`NLM_F_ACK`), so a failure is reported with the set it concerns.
//! - The kernel handles a batch synchronously inside `sendmsg`: once it
//!   returns, every reply is already queued on the socket.
//! - Interval sets (they change on network create/rm) are encoded as nft
//!   1.0 encodes them: a prefix alone is a start element and an end
//!   element one past its last address flagged `INTERVAL_END` (rbtree);
//!   a concatenation with a prefix is one element with the first and the
//!   last address as `KEY` and `KEY_END` (pipapo). libnftables' own
//!   interval code is not needed: shibafu's prefixes never overlap
//!   (IPAM refuses that), so there is nothing to merge or split. This
//!   took `network create` and `rm` off libnftables, whose cache fetch
//!   cost ~1.5 ms each even with an almost empty table.
//! - The encoding is nft's: a concatenated key is its components, each
//!   padded to 4 bytes (ifname 16 bytes NUL-padded, ipv4_addr 4, ipv6_addr
//!   16, inet_proto 1 → 4, inet_service 2 big-endian → 4); a lone value
//!   keeps its natural length (map data `inet_service` is 2 bytes).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::firewall::Proto;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NfnlError {
    #[error("opening a NETLINK_NETFILTER socket: {0}")]
    Socket(io::Error),
    #[error("sending the nfnetlink batch: {0}")]
    Send(io::Error),
    #[error("reading the kernel's replies: {0}")]
    Recv(io::Error),
    #[error("{verb} elements of set {set}: {err}")]
    Kernel {
        verb: &'static str,
        set: String,
        err: io::Error,
    },
    #[error("the kernel refused the batch: {0}")]
    Batch(io::Error),
    #[error("no reply from the kernel for {0} message(s)")]
    NoReply(usize),
    #[error("malformed reply from the kernel: {0}")]
    Malformed(&'static str),
    #[error("cannot encode an element of set {set}: {why}")]
    Encode { set: String, why: String },
}

pub type Result<T, E = NfnlError> = std::result::Result<T, E>;

/// One component of an element's key, or a map element's data, typed as
/// the set's declared type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Datum {
    /// `ifname`.
    Ifname(String),
    /// `ipv4_addr` or `ipv6_addr`, by the address's family.
    Addr(IpAddr),
    /// `inet_proto`.
    Proto(Proto),
    /// `inet_service`.
    Service(u16),
    /// A prefix of an interval set (see module doc).
    Prefix(IpNet),
}

impl Datum {
    /// As nft's JSON writes it.
    pub fn to_json(&self) -> Value {
        match self {
            Datum::Ifname(s) => json!(s),
            Datum::Addr(a) => json!(a.to_string()),
            Datum::Proto(p) => json!(p.as_str()),
            Datum::Service(p) => json!(p),
            Datum::Prefix(n) => {
                json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}})
            }
        }
    }

    /// Append the kernel's bytes; `concat`: as one component of a
    /// concatenation (padded to 4 bytes).
    fn encode(&self, out: &mut Vec<u8>, concat: bool) -> Result<(), String> {
        let start = out.len();
        match self {
            Datum::Ifname(s) => {
                // IFNAMSIZ with the terminating NUL.
                if s.len() >= IFNAMSIZ || s.as_bytes().contains(&0) {
                    return Err(format!("interface name {s:?} is not a valid ifname"));
                }
                out.extend_from_slice(s.as_bytes());
                out.resize(start + IFNAMSIZ, 0);
            }
            Datum::Addr(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
            Datum::Addr(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
            Datum::Proto(p) => out.push(proto_number(*p)),
            Datum::Service(p) => out.extend_from_slice(&p.to_be_bytes()),
            Datum::Prefix(n) => {
                return Err(format!("{n} is an interval, not a value"));
            }
        }
        if concat {
            out.resize(align4(out.len()), 0);
        }
        Ok(())
    }
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
        Proto::Sctp => libc::IPPROTO_SCTP as u8,
    }
}

/// One set element: its key (one datum, or a concatenation) and, for a
/// map, its data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Elem {
    pub key: Vec<Datum>,
    pub data: Option<Datum>,
}

impl Elem {
    pub fn new(key: Vec<Datum>) -> Self {
        Elem { key, data: None }
    }

    pub fn map(key: Vec<Datum>, data: Datum) -> Self {
        Elem {
            key,
            data: Some(data),
        }
    }

    /// The key as nft's JSON writes it: the datum, or `{"concat": [...]}`.
    pub fn key_json(&self) -> Value {
        match self.key.as_slice() {
            [one] => one.to_json(),
            many => json!({"concat": many.iter().map(Datum::to_json).collect::<Vec<_>>()}),
        }
    }

    /// The element as nft's JSON writes it (a map element is `[key, data]`).
    pub fn to_json(&self) -> Value {
        match &self.data {
            None => self.key_json(),
            Some(d) => json!([self.key_json(), d.to_json()]),
        }
    }

    /// Whether this element belongs to an interval set.
    pub fn is_interval(&self) -> bool {
        self.key
            .iter()
            .chain(self.data.as_ref())
            .any(|d| matches!(d, Datum::Prefix(_)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Add,
    Delete,
}

impl Verb {
    fn describe(self) -> &'static str {
        match self {
            Verb::Add => "adding",
            Verb::Delete => "deleting",
        }
    }
}

/// Add or delete elements of one set (a deleted map element needs only
/// its key; its data is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElemOp {
    pub verb: Verb,
    pub set: String,
    pub elems: Vec<Elem>,
}

// Netlink and nf_tables constants (linux/netlink.h, linux/netfilter/
// nfnetlink.h, linux/netfilter/nf_tables.h).
const IFNAMSIZ: usize = 16;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
/// `NFPROTO_INET`: the family of shibafu's table.
pub const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFTA_DATA_VALUE: u16 = 1;
/// Elements per message are capped so the nested element list stays
/// below the 16-bit attribute length (nftnl splits the same way).
const MAX_ELEMS_BYTES: usize = 60_000;
/// How long to wait for the replies (they are normally queued before
/// `sendmsg` returns).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink message being built.
struct Msg<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Msg<'a> {
    fn begin(buf: &'a mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in `end`
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
                                                    // struct nfgenmsg
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg { buf, start }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut p = Vec::with_capacity(s.len() + 1);
        p.extend_from_slice(s.as_bytes());
        p.push(0);
        self.attr(ty, &p);
    }

    fn nest_start(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn nest_end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn end(self) {
        let len = (self.buf.len() - self.start) as u32;
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// Which address of a prefix stands for it in a key.
#[derive(Clone, Copy)]
enum Bound {
    First,
    Last,
    /// One past the last: `None` when the prefix ends the address space.
    After,
}

/// `d` with a prefix replaced by its `bound` address.
fn bounded(d: &Datum, bound: Bound) -> Option<Datum> {
    let Datum::Prefix(n) = d else {
        return Some(d.clone());
    };
    let last = n.broadcast();
    Some(Datum::Addr(match bound {
        Bound::First => n.network(),
        Bound::Last => last,
        Bound::After => match last {
            IpAddr::V4(a) => IpAddr::V4(u32::from(a).checked_add(1)?.into()),
            IpAddr::V6(a) => IpAddr::V6(u128::from(a).checked_add(1)?.into()),
        },
    }))
}

/// One element as the `NFTA_LIST_ELEM` payloads the kernel wants (key,
/// key end, flags and data nests): one, or two for a prefix alone (see
/// module doc).
fn encode_elem(e: &Elem, set: &str, with_data: bool) -> Result<Vec<Vec<u8>>> {
    let err = |why: String| NfnlError::Encode {
        set: set.to_string(),
        why,
    };
    let value = |d: &[Datum]| -> Result<Vec<u8>> {
        let mut v = Vec::new();
        let concat = d.len() > 1;
        for x in d {
            x.encode(&mut v, concat).map_err(err)?;
        }
        Ok(v)
    };
    if e.key.is_empty() {
        return Err(err("empty key".into()));
    }
    let at = |b: Bound| -> Option<Vec<Datum>> { e.key.iter().map(|d| bounded(d, b)).collect() };
    let first = at(Bound::First).expect("a first address");
    // (key, key end, interval end flag)
    let mut parts: Vec<(Vec<Datum>, Option<Vec<Datum>>, bool)> = Vec::new();
    if !e.is_interval() {
        parts.push((first, None, false));
    } else if e.key.len() == 1 {
        parts.push((first, None, false));
        if let Some(after) = at(Bound::After) {
            parts.push((after, None, true));
        }
    } else {
        parts.push((first, at(Bound::Last), false));
    }
    let mut out = Vec::new();
    for (key, key_end, end_flag) in parts {
        let mut buf = Vec::new();
        let mut m = Msg {
            buf: &mut buf,
            start: 0,
        };
        let k = m.nest_start(NFTA_SET_ELEM_KEY);
        m.attr(NFTA_DATA_VALUE, &value(&key)?);
        m.nest_end(k);
        if let Some(ke) = key_end {
            let k = m.nest_start(NFTA_SET_ELEM_KEY_END);
            m.attr(NFTA_DATA_VALUE, &value(&ke)?);
            m.nest_end(k);
        }
        if end_flag {
            m.attr(
                NFTA_SET_ELEM_FLAGS,
                &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
            );
        }
        if let (true, Some(d)) = (with_data, &e.data) {
            let data = value(std::slice::from_ref(d))?;
            let n = m.nest_start(NFTA_SET_ELEM_DATA);
            m.attr(NFTA_DATA_VALUE, &data);
            m.nest_end(n);
        }
        out.push(buf);
    }
    Ok(out)
}

/// An encoded batch and what each message's ack stands for.
#[derive(Debug)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub begin_seq: u32,
    /// (sequence number, index into the ops) of each element message.
    pub msgs: Vec<(u32, usize)>,
}

/// Encode `ops` on `table` of `family` as one batch, numbering the
/// messages from `seq`. Deletions should come before additions (a changed
/// map element is a delete and an add of the same key); the order of
/// `ops` is kept.
pub fn encode_batch(family: u8, table: &str, ops: &[ElemOp], seq: u32) -> Result<Batch> {
    let mut buf = Vec::new();
    let mut next = seq;
    let mut take = || {
        let s = next;
        next = next.wrapping_add(1);
        s
    };
    let begin_seq = take();
    Msg::begin(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        BATCH_FLAGS,
        begin_seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .end();
    let mut msgs = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (ty, flags) = match op.verb {
            Verb::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE),
            Verb::Delete => (NFT_MSG_DELSETELEM, 0),
        };
        let encoded: Vec<Vec<u8>> = op
            .elems
            .iter()
            .map(|e| encode_elem(e, &op.set, op.verb == Verb::Add))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut rest = encoded.as_slice();
        while !rest.is_empty() {
            // As many elements as fit (at least one).
            let mut n = 0;
            let mut size = 0;
            while n < rest.len() && (n == 0 || size + 4 + rest[n].len() <= MAX_ELEMS_BYTES) {
                size += 4 + rest[n].len();
                n += 1;
            }
            let s = take();
            let mut m = Msg::begin(
                &mut buf,
                (NFNL_SUBSYS_NFTABLES << 8) | ty,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                s,
                family,
                0,
            );
            m.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            m.attr_str(NFTA_SET_ELEM_LIST_SET, &op.set);
            let list = m.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
            for e in &rest[..n] {
                let at = m.nest_start(NFTA_LIST_ELEM);
                m.buf.extend_from_slice(e);
                m.nest_end(at);
            }
            m.nest_end(list);
            m.end();
            msgs.push((s, i));
            rest = &rest[n..];
        }
    }
    Msg::begin(
        &mut buf,
        NFNL_MSG_BATCH_END,
        BATCH_FLAGS,
        take(),
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .end();
    Ok(Batch {
        bytes: buf,
        begin_seq,
        msgs,
    })
}

/// Batch delimiters carry no ack request: older kernels never ack them,
/// newer ones only when asked.
const BATCH_FLAGS: u16 = NLM_F_REQUEST;

/// A `NETLINK_NETFILTER` socket, in the netns of the thread that opened
/// it (open it on a daemon thread, as [`crate::nftlib::NftLib`]).
pub struct Nfnl {
    fd: OwnedFd,
    seq: u32,
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: a live fd and a pointer to an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn getsockopt_int(fd: &OwnedFd, level: i32, name: i32) -> io::Result<i32> {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: a live fd, an int-sized out buffer and its length.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all-zero is valid (pid 0 = kernel).
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a
}

impl Nfnl {
    /// A socket bound to a port id the kernel chooses.
    pub fn open() -> Result<Self> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(NfnlError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = kernel_addr();
        // SAFETY: a valid sockaddr_nl and its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NfnlError::Socket(io::Error::last_os_error()));
        }
        // Errors come back without a copy of the (possibly large) request.
        // Best effort: without it the replies are only bigger.
        let _ = setsockopt_int(&fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Nfnl { fd, seq })
    }

    /// Apply `ops` to `table` as one transaction; `Ok` only when the kernel
    /// committed it. On error nothing of the batch is applied (except for
    /// [`NfnlError::Recv`]/[`NfnlError::NoReply`], where the outcome is
    /// unknown).
    pub fn apply(&mut self, family: u8, table: &str, ops: &[ElemOp]) -> Result<()> {
        if ops.iter().all(|o| o.elems.is_empty()) {
            return Ok(());
        }
        let batch = encode_batch(family, table, ops, self.seq)?;
        self.seq = self.seq.wrapping_add(batch.msgs.len() as u32 + 2);
        self.drain();
        self.fit_sndbuf(batch.bytes.len());
        let addr = kernel_addr();
        // SAFETY: a live fd, a buffer of the length passed, a valid address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                batch.bytes.as_ptr().cast(),
                batch.bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(NfnlError::Send(io::Error::last_os_error()));
        }
        if n as usize != batch.bytes.len() {
            return Err(NfnlError::Send(io::Error::other("short write")));
        }
        let replies = self.read_acks(&batch)?;
        replies.into_result(&batch, ops)
    }

    /// Discard replies left from an earlier batch whose reading was cut
    /// short, so they cannot be mistaken for this one's.
    fn drain(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: a live fd and a buffer of the length passed.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                // ENOBUFS: an old overrun, reported once; keep draining.
                if e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == io::ErrorKind::Interrupted
                {
                    continue;
                }
                return;
            }
        }
    }

    /// The kernel refuses a message larger than the send buffer: grow it
    /// for a big batch (`SO_SNDBUFFORCE` needs CAP_NET_ADMIN, which the
    /// batch needs anyway).
    fn fit_sndbuf(&self, len: usize) {
        let have = getsockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(0);
        if (have as usize) < len + 4096 {
            let want = i32::try_from(len + 4096).unwrap_or(i32::MAX);
            if setsockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want).is_err() {
                let _ = setsockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUF, want);
            }
        }
    }

    fn read_acks(&self, batch: &Batch) -> Result<Replies> {
        let mut r = Replies {
            pending: batch.msgs.iter().map(|(s, _)| *s).collect(),
            errors: Vec::new(),
            batch_err: None,
        };
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut buf = vec![0u8; 65536];
        while !r.pending.is_empty() {
            let n = match self.recv(&mut buf, deadline, r.batch_err.is_some())? {
                Some(n) => n,
                // After a batch-level error nothing more is coming.
                None if r.batch_err.is_some() => break,
                None => return Err(NfnlError::NoReply(r.pending.len())),
            };
            r.parse(&buf[..n], batch.begin_seq)?;
        }
        Ok(r)
    }

    /// One datagram; `None` when none came before `deadline` (or at once,
    /// with `nowait`).
    fn recv(&self, buf: &mut [u8], deadline: Instant, nowait: bool) -> Result<Option<usize>> {
        loop {
            let timeout = if nowait {
                0
            } else {
                deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32
            };
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NfnlError::Recv(e));
            }
            if rc == 0 {
                return Ok(None);
            }
            // SAFETY: a live fd and a buffer of the length passed.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                    _ => return Err(NfnlError::Recv(e)),
                }
            }
            if n as usize > buf.len() {
                return Err(NfnlError::Malformed("reply larger than 64 KiB"));
            }
            return Ok(Some(n as usize));
        }
    }
}

/// What the kernel answered to one batch.
#[derive(Debug, Default)]
struct Replies {
    /// Element messages not acked yet.
    pending: std::collections::BTreeSet<u32>,
    /// (sequence number, errno) of the element messages that failed.
    errors: Vec<(u32, i32)>,
    /// An error about the batch as a whole (reported against its begin
    /// message: no permission, commit failure).
    batch_err: Option<i32>,
}

impl Replies {
    fn parse(&mut self, mut d: &[u8], begin_seq: u32) -> Result<()> {
        let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
        while d.len() >= NLMSG_HDRLEN {
            let len = u32_at(d, 0) as usize;
            if len < NLMSG_HDRLEN || len > d.len() {
                return Err(NfnlError::Malformed("bad message length"));
            }
            let ty = u16::from_ne_bytes([d[4], d[5]]);
            let seq = u32_at(d, 8);
            if ty == NLMSG_ERROR {
                if len < NLMSG_HDRLEN + 4 {
                    return Err(NfnlError::Malformed("short error message"));
                }
                let errno = -(u32_at(d, NLMSG_HDRLEN) as i32);
                if seq == begin_seq {
                    if errno != 0 {
                        self.batch_err = Some(errno);
                    }
                } else if self.pending.remove(&seq) && errno != 0 {
                    self.errors.push((seq, errno));
                }
            }
            d = &d[align4(len).min(d.len())..];
        }
        Ok(())
    }

    fn into_result(mut self, batch: &Batch, ops: &[ElemOp]) -> Result<()> {
        self.errors
            .sort_by_key(|(s, _)| s.wrapping_sub(batch.begin_seq));
        if let Some((seq, errno)) = self.errors.first() {
            let op = batch
                .msgs
                .iter()
                .find(|(s, _)| s == seq)
                .map(|(_, i)| &ops[*i])
                .expect("acked sequence numbers are the batch's");
            return Err(NfnlError::Kernel {
                verb: op.verb.describe(),
                set: op.set.clone(),
                err: io::Error::from_raw_os_error(*errno),
            });
        }
        if let Some(errno) = self.batch_err {
            return Err(NfnlError::Batch(io::Error::from_raw_os_error(errno)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn ifname(s: &str) -> Datum {
        Datum::Ifname(s.into())
    }

    /// Bytes from `nft --debug=mnl` dumps: 4-byte rows, in order.
    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The element message of a one-op batch (after the begin message).
    fn only_msg(b: &Batch) -> &[u8] {
        let begin = u32::from_ne_bytes(b.bytes[0..4].try_into().unwrap()) as usize;
        let len = u32::from_ne_bytes(b.bytes[begin..begin + 4].try_into().unwrap()) as usize;
        &b.bytes[begin..begin + len]
    }

    /// The attributes after nlmsghdr + nfgenmsg, minus nft's
    /// NFTA_SET_ELEM_LIST_SET_ID (type 4) that we do not send.
    fn attrs(msg: &[u8]) -> &[u8] {
        &msg[20..]
    }

    fn one(verb: Verb, set: &str, elems: Vec<Elem>) -> Batch {
        encode_batch(
            NFPROTO_INET,
            "shibafu",
            &[ElemOp {
                verb,
                set: set.into(),
                elems,
            }],
            7,
        )
        .unwrap()
    }

    // Each expected layout below is nft 1.0.6's `--debug=mnl` output for
    // the command in the comment, without its SET_ID attribute.

    #[test]
    fn map_with_concatenated_key_and_ipv4_data() {
        // add element inet shibafu dnat_any4 { tcp . 8080 : 10.1.0.2 }
        let b = one(
            Verb::Add,
            "dnat_any4",
            vec![Elem::map(
                vec![Datum::Proto(Proto::Tcp), Datum::Service(8080)],
                Datum::Addr(ip("10.1.0.2")),
            )],
        );
        let mut want = Vec::new();
        want.extend(hex("0c 00 01 00 73 68 69 62 61 66 75 00"));
        want.extend(hex("0e 00 02 00 64 6e 61 74 5f 61 6e 79 34 00 00 00"));
        want.extend(hex(
            "24 00 03 80  20 00 01 80  10 00 01 80  0c 00 01 00  06 00 00 00  1f 90 00 00
             0c 00 02 80  08 00 01 00  0a 01 00 02",
        ));
        assert_eq!(attrs(only_msg(&b)), want.as_slice());
        let m = only_msg(&b);
        // nlmsghdr: type NFT_MSG_NEWSETELEM, REQUEST|ACK|CREATE, seq 8.
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0a0c);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x405);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 8);
        // nfgenmsg: inet, v0, res_id 0.
        assert_eq!(&m[16..20], &[1, 0, 0, 0]);
        assert_eq!(b.begin_seq, 7);
        assert_eq!(b.msgs, vec![(8, 0)]);
    }

    #[test]
    fn ipv6_key_with_sctp_and_ipv6_data() {
        // add element inet shibafu dnat_ip6 { ::1 . sctp . 9000 : fd01::2 }
        let b = one(
            Verb::Add,
            "dnat_ip6",
            vec![Elem::map(
                vec![
                    Datum::Addr(ip("::1")),
                    Datum::Proto(Proto::Sctp),
                    Datum::Service(9000),
                ],
                Datum::Addr(ip("fd01::2")),
            )],
        );
        let mut want = hex("0c 00 01 00 73 68 69 62 61 66 75 00");
        want.extend(hex("0d 00 02 00 64 6e 61 74 5f 69 70 36 00 00 00 00"));
        want.extend(hex("40 00 03 80  3c 00 01 80  20 00 01 80  1c 00 01 00
             00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 01  84 00 00 00  23 28 00 00
             18 00 02 80  14 00 01 00
             fd 01 00 00  00 00 00 00  00 00 00 00  00 00 00 02"));
        assert_eq!(attrs(only_msg(&b)), want.as_slice());
    }

    #[test]
    fn delete_of_an_ifname_key() {
        // delete element inet shibafu bridges { sf-a }
        let b = one(
            Verb::Delete,
            "bridges",
            vec![Elem::new(vec![ifname("sf-a")])],
        );
        let m = only_msg(&b);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0a0e);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x5, "REQUEST|ACK only");
        let mut want = hex("0c 00 01 00 73 68 69 62 61 66 75 00");
        want.extend(hex("0c 00 02 00 62 72 69 64 67 65 73 00"));
        want.extend(hex("20 00 03 80  1c 00 01 80  18 00 01 80  14 00 01 00
             73 66 2d 61  00 00 00 00  00 00 00 00  00 00 00 00"));
        assert_eq!(attrs(m), want.as_slice());
    }

    #[test]
    fn deleting_a_map_element_sends_only_its_key() {
        let e = Elem::map(
            vec![Datum::Proto(Proto::Tcp), Datum::Service(8080)],
            Datum::Service(80),
        );
        let del = one(Verb::Delete, "dnat_any4_port", vec![e.clone()]);
        let del_key = one(
            Verb::Delete,
            "dnat_any4_port",
            vec![Elem::new(e.key.clone())],
        );
        assert_eq!(del.bytes, del_key.bytes);
    }

    #[test]
    fn policy_key_of_four_components() {
        // add element inet shibafu pol_deny_port { sf-a . sf-b . udp . 53 }
        let b = one(
            Verb::Add,
            "pol_deny_port",
            vec![Elem::new(vec![
                ifname("sf-a"),
                ifname("sf-b"),
                Datum::Proto(Proto::Udp),
                Datum::Service(53),
            ])],
        );
        let mut want = hex("0c 00 01 00 73 68 69 62 61 66 75 00");
        want.extend(hex(
            "12 00 02 00 70 6f 6c 5f 64 65 6e 79 5f 70 6f 72 74 00 00 00",
        ));
        want.extend(hex("38 00 03 80  34 00 01 80  30 00 01 80  2c 00 01 00
             73 66 2d 61  00 00 00 00  00 00 00 00  00 00 00 00
             73 66 2d 62  00 00 00 00  00 00 00 00  00 00 00 00
             11 00 00 00  00 35 00 00"));
        assert_eq!(attrs(only_msg(&b)), want.as_slice());
    }

    #[test]
    fn prefixes_are_encoded_as_nft_encodes_them() {
        let prefix = |p: &str| Datum::Prefix(p.parse().unwrap());
        let key = |v: &[u8]| {
            let mut k = vec![
                (8 + v.len()) as u8,
                0,
                1,
                0x80,
                (4 + v.len()) as u8,
                0,
                1,
                0,
            ];
            k.extend_from_slice(v);
            k
        };
        // rbtree: the start, and one past the end flagged INTERVAL_END.
        let got = encode_elem(&Elem::new(vec![prefix("10.0.0.0/24")]), "masq4", true).unwrap();
        let mut end = key(&[10, 0, 1, 0]);
        end.extend_from_slice(&[8, 0, 3, 0, 0, 0, 0, 1]);
        assert_eq!(got, vec![key(&[10, 0, 0, 0]), end]);
        // A prefix that ends the address space has no end element.
        let got = encode_elem(&Elem::new(vec![prefix("255.255.255.0/24")]), "masq4", true).unwrap();
        assert_eq!(got, vec![key(&[255, 255, 255, 0])]);
        let got = encode_elem(&Elem::new(vec![prefix("fd00::/8")]), "masq6", true).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[1].ends_with(&[8, 0, 3, 0, 0, 0, 0, 1]));
        // pipapo: one element, first and last address as key and key end.
        let got = encode_elem(
            &Elem::new(vec![prefix("10.0.0.0/24"), ifname("br-x")]),
            "local4",
            true,
        )
        .unwrap();
        let name = |a: [u8; 4]| {
            let mut v = a.to_vec();
            v.extend_from_slice(b"br-x");
            v.resize(20, 0);
            v
        };
        let mut want = key(&name([10, 0, 0, 0]));
        let mut key_end = key(&name([10, 0, 0, 255]));
        key_end[2] = 10; // NFTA_SET_ELEM_KEY_END
        want.extend_from_slice(&key_end);
        assert_eq!(got, vec![want]);
        // A batch carries both rbtree elements in one message.
        let b = encode_batch(
            NFPROTO_INET,
            "shibafu",
            &[ElemOp {
                verb: Verb::Delete,
                set: "masq4".into(),
                elems: vec![Elem::new(vec![prefix("10.0.0.0/24")])],
            }],
            1,
        )
        .unwrap();
        assert_eq!(b.msgs.len(), 1);
    }

    #[test]
    fn ifname_and_ipv6_concatenation() {
        // add element inet shibafu dns6 { sf-a . fd01::1 }
        let b = one(
            Verb::Add,
            "dns6",
            vec![Elem::new(vec![ifname("sf-a"), Datum::Addr(ip("fd01::1"))])],
        );
        let mut want = hex("0c 00 01 00 73 68 69 62 61 66 75 00");
        want.extend(hex("09 00 02 00 64 6e 73 36 00 00 00 00"));
        want.extend(hex("30 00 03 80  2c 00 01 80  28 00 01 80  24 00 01 00
             73 66 2d 61  00 00 00 00  00 00 00 00  00 00 00 00
             fd 01 00 00  00 00 00 00  00 00 00 00  00 00 00 01"));
        assert_eq!(attrs(only_msg(&b)), want.as_slice());
    }

    #[test]
    fn two_elements_with_unpadded_service_data() {
        // add element inet shibafu dnat_any4_port { tcp . 8080 : 80, udp . 5353 : 53 }
        let b = one(
            Verb::Add,
            "dnat_any4_port",
            vec![
                Elem::map(
                    vec![Datum::Proto(Proto::Tcp), Datum::Service(8080)],
                    Datum::Service(80),
                ),
                Elem::map(
                    vec![Datum::Proto(Proto::Udp), Datum::Service(5353)],
                    Datum::Service(53),
                ),
            ],
        );
        let mut want = hex("0c 00 01 00 73 68 69 62 61 66 75 00");
        want.extend(hex(
            "13 00 02 00 64 6e 61 74 5f 61 6e 79 34 5f 70 6f 72 74 00 00",
        ));
        want.extend(hex("44 00 03 80
             20 00 01 80  10 00 01 80  0c 00 01 00  06 00 00 00  1f 90 00 00
                          0c 00 02 80  06 00 01 00  00 50 00 00
             20 00 01 80  10 00 01 80  0c 00 01 00  11 00 00 00  14 e9 00 00
                          0c 00 02 80  06 00 01 00  00 35 00 00"));
        assert_eq!(attrs(only_msg(&b)), want.as_slice());
    }

    #[test]
    fn batch_is_framed_by_begin_and_end() {
        let ops = [
            ElemOp {
                verb: Verb::Delete,
                set: "bridges".into(),
                elems: vec![Elem::new(vec![ifname("sf-a")])],
            },
            ElemOp {
                verb: Verb::Add,
                set: "bridges".into(),
                elems: vec![Elem::new(vec![ifname("sf-b")])],
            },
        ];
        let b = encode_batch(NFPROTO_INET, "shibafu", &ops, u32::MAX).unwrap();
        // NFNL_MSG_BATCH_BEGIN, res_id NFNL_SUBSYS_NFTABLES (big-endian),
        // exactly as nft sends it (but for the sequence number).
        let mut begin = 20u32.to_ne_bytes().to_vec();
        begin.extend(0x10u16.to_ne_bytes());
        begin.extend(1u16.to_ne_bytes());
        begin.extend(u32::MAX.to_ne_bytes());
        begin.extend(hex("00 00 00 00  00 00 00 0a"));
        assert_eq!(&b.bytes[..20], begin.as_slice());
        let end = &b.bytes[b.bytes.len() - 20..];
        assert_eq!(u16::from_ne_bytes([end[4], end[5]]), 0x11);
        assert_eq!(&end[16..20], &hex("00 00 00 0a")[..]);
        // Sequence numbers wrap; each element message has its own.
        assert_eq!(b.begin_seq, u32::MAX);
        assert_eq!(b.msgs, vec![(0, 0), (1, 1)]);
        assert_eq!(u32::from_ne_bytes(end[8..12].try_into().unwrap()), 2);
        // The messages tile the buffer exactly.
        let mut at = 0;
        let mut n = 0;
        while at < b.bytes.len() {
            at += u32::from_ne_bytes(b.bytes[at..at + 4].try_into().unwrap()) as usize;
            n += 1;
        }
        assert_eq!((at, n), (b.bytes.len(), 4));
    }

    #[test]
    fn large_updates_are_split_below_the_attribute_length_limit() {
        let elems: Vec<Elem> = (0..5000u16)
            .map(|p| {
                Elem::map(
                    vec![
                        Datum::Addr(ip("fd00::1")),
                        Datum::Proto(Proto::Tcp),
                        Datum::Service(p + 1),
                    ],
                    Datum::Addr(ip("fd01::2")),
                )
            })
            .collect();
        let b = one(Verb::Add, "dnat_ip6", elems);
        assert!(b.msgs.len() > 1, "{}", b.msgs.len());
        // Walk the messages: every element list fits its u16 length, and
        // all 5000 elements are there.
        let mut at = u32::from_ne_bytes(b.bytes[0..4].try_into().unwrap()) as usize;
        let mut total = 0;
        for _ in &b.msgs {
            let len = u32::from_ne_bytes(b.bytes[at..at + 4].try_into().unwrap()) as usize;
            let m = &b.bytes[at..at + len];
            // table (12) and set (16) attributes, then the list.
            let list = &m[20 + 12 + 16..];
            let list_len = u16::from_ne_bytes([list[0], list[1]]) as usize;
            assert_eq!(list_len, list.len());
            total += (list_len - 4) / 60; // 0x3c bytes per element, as above
            at += len;
        }
        assert_eq!(total, 5000);
    }

    #[test]
    fn bad_elements_are_refused_naming_the_set() {
        let e = encode_batch(
            NFPROTO_INET,
            "shibafu",
            &[ElemOp {
                verb: Verb::Add,
                set: "dnat_any4".into(),
                elems: vec![Elem::map(
                    vec![Datum::Proto(Proto::Tcp), Datum::Service(80)],
                    Datum::Prefix("10.0.0.0/24".parse().unwrap()),
                )],
            }],
            1,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot encode an element of set dnat_any4: 10.0.0.0/24 is an interval, not a value"
        );
        let e = encode_batch(
            NFPROTO_INET,
            "shibafu",
            &[ElemOp {
                verb: Verb::Add,
                set: "bridges".into(),
                elems: vec![Elem::new(vec![ifname("sixteen-chars-xx")])],
            }],
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bridges"), "{e}");
    }

    #[test]
    fn json_matches_nft() {
        let e = Elem::map(
            vec![
                Datum::Addr(ip("127.0.0.1")),
                Datum::Proto(Proto::Udp),
                Datum::Service(5353),
            ],
            Datum::Service(53),
        );
        assert_eq!(
            e.to_json(),
            json!([{"concat": ["127.0.0.1", "udp", 5353]}, 53])
        );
        assert_eq!(Elem::new(vec![ifname("sf-a")]).to_json(), json!("sf-a"));
        let p = Elem::new(vec![Datum::Prefix("fd01::/64".parse().unwrap())]);
        assert_eq!(
            p.to_json(),
            json!({"prefix": {"addr": "fd01::", "len": 64}})
        );
        assert!(p.is_interval());
        assert!(!e.is_interval());
    }

    #[test]
    fn replies_report_the_first_failing_set() {
        let ops = [
            ElemOp {
                verb: Verb::Delete,
                set: "dnat_any4".into(),
                elems: vec![Elem::new(vec![Datum::Proto(Proto::Tcp), Datum::Service(1)])],
            },
            ElemOp {
                verb: Verb::Add,
                set: "bridges".into(),
                elems: vec![Elem::new(vec![ifname("sf-b")])],
            },
        ];
        let b = encode_batch(NFPROTO_INET, "shibafu", &ops, 100).unwrap();
        let ack = |seq: u32, errno: i32| {
            let mut m = 36u32.to_ne_bytes().to_vec();
            m.extend(NLMSG_ERROR.to_ne_bytes());
            m.extend(0u16.to_ne_bytes());
            m.extend(seq.to_ne_bytes());
            m.extend(0u32.to_ne_bytes());
            m.extend((-errno).to_ne_bytes());
            m.extend([0u8; 16]);
            m
        };
        let mut r = Replies {
            pending: b.msgs.iter().map(|(s, _)| *s).collect(),
            ..Default::default()
        };
        // Acks arrive in any order; one datagram may hold several.
        let mut d = ack(102, libc::EBUSY);
        d.extend(ack(101, libc::ENOENT));
        r.parse(&d, 100).unwrap();
        assert!(r.pending.is_empty());
        let e = r.into_result(&b, &ops).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("deleting elements of set dnat_any4: No such file or directory"),
            "{e}"
        );
        // A commit failure is reported against the begin message.
        let mut r = Replies::default();
        r.pending.insert(101);
        r.parse(&ack(100, libc::ENOMEM), 100).unwrap();
        r.parse(&ack(101, 0), 100).unwrap();
        assert!(matches!(
            r.into_result(&b, &ops),
            Err(NfnlError::Batch(e)) if e.raw_os_error() == Some(libc::ENOMEM)
        ));
        let mut r = Replies::default();
        r.parse(&ack(101, 0), 100).unwrap();
        r.parse(&ack(102, 0), 100).unwrap();
        r.into_result(&b, &ops).unwrap();
        let mut bad = ack(1, 0);
        bad[0] = 200;
        assert!(Replies::default().parse(&bad, 1).is_err());
    }
}
