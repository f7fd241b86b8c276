//! Batched UDP I/O for the listeners: `recvmmsg` / `sendmmsg` move up to
//! [`BATCH`] datagrams per syscall, so a busy listener pays one receive and
//! one send syscall per batch instead of two per query (the per-query
//! syscalls were the bulk of the cost of a locally answered query).
//!
//! Both calls go through tokio's `try_io`, so the socket's readiness stays
//! correct: an `EAGAIN` clears it and the caller awaits the next event.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, SockAddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per syscall.
pub(crate) const BATCH: usize = 32;
/// Receive buffer per datagram: queries (EDNS included) are far smaller;
/// anything longer is dropped, not answered truncated.
pub(crate) const SLOT: usize = 4096;

/// Receive buffers, allocated once per listener and reused for every batch.
pub(crate) struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<SockAddrStorage>,
    /// Datagrams of the last batch kept: (slot, length, sender).
    got: Vec<(usize, usize, SocketAddr)>,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        RecvBatch {
            bufs: vec![0; BATCH * SLOT],
            addrs: (0..BATCH).map(|_| SockAddrStorage::zeroed()).collect(),
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Receives whatever is queued (at least one datagram, at most
    /// [`BATCH`]) without blocking; `WouldBlock` when nothing is. Returns
    /// how many datagrams the kernel handed over (the truncated ones and
    /// those from non-IP senders included, although [`Self::datagrams`]
    /// skips them).
    ///
    /// A short batch means `recvmmsg` stopped at `EAGAIN`: the queue is
    /// drained, so tokio's readiness is cleared right away (by reporting
    /// `WouldBlock` to `try_io`) instead of paying one more syscall just to
    /// learn that. A datagram arriving meanwhile still wakes the listener:
    /// tokio only clears readiness no newer event has set since.
    pub(crate) fn try_recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        let fd = sock.as_raw_fd();
        let mut received = 0;
        let r = sock.try_io(Interest::READABLE, || {
            // SAFETY: all-zero is a valid value of these plain C structs.
            let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (i, ((iov, hdr), chunk)) in iovs
                .iter_mut()
                .zip(hdrs.iter_mut())
                .zip(self.bufs.chunks_exact_mut(SLOT))
                .enumerate()
            {
                iov.iov_base = chunk.as_mut_ptr().cast();
                iov.iov_len = SLOT;
                hdr.msg_hdr.msg_name = (&mut self.addrs[i] as *mut SockAddrStorage).cast();
                hdr.msg_hdr.msg_namelen = self.addrs[i].size_of();
                hdr.msg_hdr.msg_iov = iov;
                hdr.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every header points at live buffers of the lengths it
            // states (one SLOT-byte iovec, one sockaddr_storage), all owned
            // by `self`/this frame and not otherwise borrowed for the call.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = r as usize;
            for (i, hdr) in hdrs.iter().take(n).enumerate() {
                if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    continue;
                }
                let storage = std::mem::replace(&mut self.addrs[i], SockAddrStorage::zeroed());
                // SAFETY: the kernel initialised `msg_namelen` bytes of the
                // storage with the sender's address.
                let addr = unsafe { SockAddr::new(storage, hdr.msg_hdr.msg_namelen) };
                if let Some(src) = addr.as_socket() {
                    self.got.push((i, hdr.msg_len as usize, src));
                }
            }
            received = n;
            if n < BATCH {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && received > 0 => Ok(received),
            r => r,
        }
    }

    /// The datagrams of the last [`Self::try_recv`] worth handling.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got
            .iter()
            .map(|&(slot, len, src)| (&self.bufs[slot * SLOT..slot * SLOT + len], src))
    }
}

/// Replies collected during one batch, sent with one `sendmmsg`; the
/// buffers are reused batch after batch.
pub(crate) struct SendBatch {
    bufs: Vec<Vec<u8>>,
    to: Vec<SockAddr>,
}

impl SendBatch {
    pub(crate) fn new() -> Self {
        SendBatch {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            to: Vec::with_capacity(BATCH),
        }
    }

    /// The buffer the next reply is written into; it is only queued by
    /// [`Self::push`] (a dropped query leaves nothing behind).
    pub(crate) fn next_buf(&mut self) -> &mut Vec<u8> {
        let i = self.to.len();
        if i == self.bufs.len() {
            self.bufs.push(Vec::with_capacity(512));
        }
        &mut self.bufs[i]
    }

    /// Queues the reply written into [`Self::next_buf`] for `to`.
    pub(crate) fn push(&mut self, to: SocketAddr) {
        self.to.push(to.into());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.to.is_empty()
    }

    /// Sends the queued replies without blocking, starting at `from`.
    /// Returns the index of the first reply not yet sent: `len` when all
    /// went out (a reply the kernel refused outright is logged and skipped),
    /// or earlier when the socket buffer is full.
    pub(crate) fn try_send(&self, sock: &UdpSocket, mut from: usize) -> usize {
        let fd = sock.as_raw_fd();
        while from < self.to.len() {
            let count = self.to.len() - from;
            let r = sock.try_io(Interest::WRITABLE, || {
                // SAFETY: all-zero is a valid value of these plain C structs.
                let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
                let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
                let k = count.min(BATCH);
                for (j, (iov, hdr)) in iovs.iter_mut().zip(hdrs.iter_mut()).take(k).enumerate() {
                    let buf = &self.bufs[from + j];
                    let to = &self.to[from + j];
                    iov.iov_base = buf.as_ptr() as *mut libc::c_void;
                    iov.iov_len = buf.len();
                    hdr.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
                    hdr.msg_hdr.msg_namelen = to.len();
                    hdr.msg_hdr.msg_iov = iov;
                    hdr.msg_hdr.msg_iovlen = 1;
                }
                // SAFETY: the first `k` headers point at live reply buffers
                // and addresses of the lengths they state; sendmmsg only
                // reads them (the `*mut` casts are the C signature's).
                let r = unsafe {
                    libc::sendmmsg(fd, hdrs.as_mut_ptr(), k as libc::c_uint, libc::MSG_DONTWAIT)
                };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            });
            match r {
                Ok(sent) => from += sent.max(1).min(count),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return from,
                Err(e) => {
                    // The reply at `from` itself failed (e.g. an address
                    // the kernel refuses): drop it, keep the rest.
                    tracing::debug!("dns: udp send to {:?}: {e}", self.to[from].as_socket());
                    from += 1;
                }
            }
        }
        from
    }

    /// Reply `i` and its destination (for the awaited fallback).
    pub(crate) fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let to = self.to[i].as_socket().expect("queued from a SocketAddr");
        (&self.bufs[i], to)
    }

    pub(crate) fn len(&self) -> usize {
        self.to.len()
    }

    /// Forgets the queued replies (buffers kept for the next batch).
    pub(crate) fn clear(&mut self) {
        self.to.clear();
    }
}
