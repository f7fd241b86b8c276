//! A minimal DNS wire-format reader and writer: just what the server needs
//! (the question, EDNS0, walking resource records to find TTLs and to copy
//! answers), written by hand so the local-answer path allocates nothing but
//! its reply buffer. Every read is bounds-checked: malformed input is an
//! error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_MX: u16 = 15;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// Header flag bits (second 16-bit word).
pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
pub const FLAG_CD: u16 = 0x0010;

/// The UDP payload size we advertise and accept at most (the DNS flag day
/// 2020 value: avoids IP fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Largest name in wire format (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message shorter than its header")]
    ShortHeader,
    #[error("message ends inside a field")]
    Truncated,
    #[error("bad label or name too long")]
    BadName,
    #[error("compression pointer loop or forward pointer")]
    BadPointer,
    #[error("not exactly one question")]
    QuestionCount,
}

/// Reads a big-endian u16 at `off`.
pub fn u16_at(b: &[u8], off: usize) -> Result<u16, WireError> {
    b.get(off..off + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(WireError::Truncated)
}

/// Reads a big-endian u32 at `off`.
pub fn u32_at(b: &[u8], off: usize) -> Result<u32, WireError> {
    b.get(off..off + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(WireError::Truncated)
}

/// A name read from a message, lower-cased, uncompressed, in wire format
/// (length-prefixed labels ending with the root's 0), on the stack.
#[derive(Clone, Copy)]
pub struct NameBuf {
    pub bytes: [u8; MAX_NAME],
    pub len: usize,
}

impl NameBuf {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Debug for NameBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&name_to_string(self.as_slice()))
    }
}

/// Reads the (possibly compressed) name at `off`; returns it lower-cased
/// and the offset just past it in the message.
pub fn read_name(msg: &[u8], mut off: usize) -> Result<(NameBuf, usize), WireError> {
    let mut out = NameBuf {
        bytes: [0; MAX_NAME],
        len: 0,
    };
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(off).ok_or(WireError::Truncated)? as usize;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    if out.len + 1 > MAX_NAME {
                        return Err(WireError::BadName);
                    }
                    out.bytes[out.len] = 0;
                    out.len += 1;
                    return Ok((out, end.unwrap_or(off + 1)));
                }
                let label = msg
                    .get(off + 1..off + 1 + len)
                    .ok_or(WireError::Truncated)?;
                if out.len + 1 + len + 1 > MAX_NAME {
                    return Err(WireError::BadName);
                }
                out.bytes[out.len] = len as u8;
                for (d, s) in out.bytes[out.len + 1..out.len + 1 + len]
                    .iter_mut()
                    .zip(label)
                {
                    *d = s.to_ascii_lowercase();
                }
                out.len += 1 + len;
                off += 1 + len;
            }
            0xC0 => {
                let lo = *msg.get(off + 1).ok_or(WireError::Truncated)? as usize;
                let target = ((len & 0x3F) << 8) | lo;
                // Pointers must go backwards: that alone rules out loops,
                // the counter is a second guard.
                if target >= off || jumps > 64 {
                    return Err(WireError::BadPointer);
                }
                if end.is_none() {
                    end = Some(off + 2);
                }
                jumps += 1;
                off = target;
            }
            _ => return Err(WireError::BadName),
        }
    }
}

/// Skips the name at `off` without decoding it.
pub fn skip_name(msg: &[u8], mut off: usize) -> Result<usize, WireError> {
    let mut total = 0usize;
    loop {
        let len = *msg.get(off).ok_or(WireError::Truncated)? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => return Ok(off + 1),
            0x00 => {
                total += len + 1;
                if total > MAX_NAME {
                    return Err(WireError::BadName);
                }
                off += 1 + len;
            }
            0xC0 => {
                msg.get(off + 1).ok_or(WireError::Truncated)?;
                return Ok(off + 2);
            }
            _ => return Err(WireError::BadName),
        }
    }
}

/// EDNS0 options of a query that matter to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The requester's UDP payload size (never below 512).
    pub payload: u16,
    pub version: u8,
    /// DNSSEC OK: part of the cache key, since upstream answers differ.
    pub dnssec_ok: bool,
}

/// A parsed query: header fields, the question, EDNS.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    pub qname: NameBuf,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset of the end of the question section (header + question).
    pub question_end: usize,
    pub edns: Option<Edns>,
}

impl Query {
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }
    pub fn recursion_desired(&self) -> bool {
        self.flags & FLAG_RD != 0
    }
    /// Largest UDP reply the requester accepts.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => e.payload.clamp(512, EDNS_PAYLOAD.max(512)) as usize,
            None => 512,
        }
    }
}

/// Parses a query. Errors mean FORMERR (or silence when even the header is
/// missing, see [`header_id`]).
pub fn parse_query(msg: &[u8]) -> Result<Query, WireError> {
    if msg.len() < 12 {
        return Err(WireError::ShortHeader);
    }
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let ns = u16_at(msg, 8)?;
    let ar = u16_at(msg, 10)?;
    if qd != 1 {
        return Err(WireError::QuestionCount);
    }
    let (qname, off) = read_name(msg, 12)?;
    let qtype = u16_at(msg, off)?;
    let qclass = u16_at(msg, off + 2)?;
    let question_end = off + 4;
    let mut edns = None;
    if ar > 0 {
        let mut off = question_end;
        for _ in 0..(an as usize + ns as usize) {
            off = skip_rr(msg, off)?;
        }
        for _ in 0..ar {
            let name_end = skip_name(msg, off)?;
            let rtype = u16_at(msg, name_end)?;
            if rtype == TYPE_OPT && edns.is_none() {
                let payload = u16_at(msg, name_end + 2)?.max(512);
                let ttl = u32_at(msg, name_end + 4)?;
                edns = Some(Edns {
                    payload,
                    version: ((ttl >> 16) & 0xFF) as u8,
                    dnssec_ok: ttl & 0x8000 != 0,
                });
            }
            off = skip_rr(msg, off)?;
        }
    }
    Ok(Query {
        id,
        flags,
        qname,
        qtype,
        qclass,
        question_end,
        edns,
    })
}

/// The ID of anything with at least a 2-byte header, to answer FORMERR.
pub fn header_id(msg: &[u8]) -> Option<u16> {
    u16_at(msg, 0).ok()
}

/// Skips one resource record starting at `off`.
pub fn skip_rr(msg: &[u8], off: usize) -> Result<usize, WireError> {
    let name_end = skip_name(msg, off)?;
    let rdlen = u16_at(msg, name_end + 8)? as usize;
    let end = name_end + 10 + rdlen;
    if end > msg.len() {
        return Err(WireError::Truncated);
    }
    Ok(end)
}

/// What the cache needs to know about an upstream response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    pub rcode: u8,
    pub truncated: bool,
    pub answers: u16,
    /// Offsets of the TTL field of every record except OPT.
    pub ttl_offsets: Vec<u16>,
    /// Smallest TTL over the answer and authority records.
    pub min_ttl: Option<u32>,
    /// For negative answers: min(SOA TTL, SOA MINIMUM) from the authority section.
    pub negative_ttl: Option<u32>,
}

/// Walks every record of a response (validating its structure).
pub fn inspect_response(msg: &[u8]) -> Result<ResponseInfo, WireError> {
    if msg.len() < 12 {
        return Err(WireError::ShortHeader);
    }
    let flags = u16_at(msg, 2)?;
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let ns = u16_at(msg, 8)?;
    let ar = u16_at(msg, 10)?;
    let mut off = 12;
    for _ in 0..qd {
        off = skip_name(msg, off)? + 4;
        if off > msg.len() {
            return Err(WireError::Truncated);
        }
    }
    let mut info = ResponseInfo {
        rcode: (flags & 0xF) as u8,
        truncated: flags & FLAG_TC != 0,
        answers: an,
        ttl_offsets: Vec::new(),
        min_ttl: None,
        negative_ttl: None,
    };
    for i in 0..(an as usize + ns as usize + ar as usize) {
        let name_end = skip_name(msg, off)?;
        let rtype = u16_at(msg, name_end)?;
        let ttl = u32_at(msg, name_end + 4)?;
        let rdlen = u16_at(msg, name_end + 8)? as usize;
        let rdata = name_end + 10;
        if rdata + rdlen > msg.len() {
            return Err(WireError::Truncated);
        }
        if rtype != TYPE_OPT {
            let ttl_off = u16::try_from(name_end + 4).map_err(|_| WireError::Truncated)?;
            info.ttl_offsets.push(ttl_off);
            if i < an as usize + ns as usize {
                info.min_ttl = Some(info.min_ttl.map_or(ttl, |m| m.min(ttl)));
            }
            let in_authority = i >= an as usize && i < an as usize + ns as usize;
            if in_authority && rtype == TYPE_SOA {
                // MINIMUM is the last u32 of the SOA rdata.
                if rdlen >= 22 {
                    let minimum = u32_at(msg, rdata + rdlen - 4)?;
                    info.negative_ttl = Some(ttl.min(minimum));
                }
            }
        }
        off = rdata + rdlen;
    }
    Ok(info)
}

/// A name as text (`a.b.c.`; `.` for the root), from wire format.
pub fn name_to_string(wire: &[u8]) -> String {
    let mut s = String::new();
    let mut off = 0;
    while let Some(&len) = wire.get(off) {
        if len == 0 {
            break;
        }
        let label = wire.get(off + 1..off + 1 + len as usize).unwrap_or(&[]);
        for &c in label {
            if c == b'.' || c == b'\\' {
                s.push('\\');
                s.push(c as char);
            } else if c.is_ascii_graphic() {
                s.push(c as char);
            } else {
                s.push_str(&format!("\\{c:03}"));
            }
        }
        s.push('.');
        off += 1 + len as usize;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// A text name in wire format, lower-cased. A trailing dot is optional.
pub fn name_from_str(name: &str) -> Result<Vec<u8>, &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty name");
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 bytes");
        }
        if label
            .bytes()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err("whitespace or control character");
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|c| c.to_ascii_lowercase()));
    }
    out.push(0);
    if out.len() > MAX_NAME {
        return Err("name longer than 255 bytes");
    }
    Ok(out)
}

/// Concatenates a relative name (wire, with its root 0) and a zone (wire).
pub fn join_names(name: &[u8], zone: &[u8]) -> Option<Vec<u8>> {
    let mut out = name.get(..name.len().checked_sub(1)?)?.to_vec();
    out.extend_from_slice(zone);
    (out.len() <= MAX_NAME).then_some(out)
}

/// Whether `name` is `zone` or below it (both wire format, lower-case).
pub fn is_subdomain(name: &[u8], zone: &[u8]) -> bool {
    if zone.len() > name.len() {
        return false;
    }
    // Walk label boundaries of `name` until the remainder has zone's length.
    let mut off = 0;
    while name.len() - off > zone.len() {
        off += 1 + name[off] as usize;
    }
    name.len() - off == zone.len() && &name[off..] == zone
}

/// The address of an `in-addr.arpa` / `ip6.arpa` name, if it names a full address.
pub fn reverse_to_ip(name: &[u8]) -> Option<IpAddr> {
    let mut labels: Vec<&[u8]> = Vec::with_capacity(34);
    let mut off = 0;
    while let Some(&len) = name.get(off) {
        if len == 0 {
            break;
        }
        labels.push(name.get(off + 1..off + 1 + len as usize)?);
        off += 1 + len as usize;
    }
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa] if *in_addr == b"in-addr" && *arpa == b"arpa" => {
            let p = |l: &[u8]| -> Option<u8> {
                if l.is_empty() || l.len() > 3 || (l.len() > 1 && l[0] == b'0') {
                    return None;
                }
                std::str::from_utf8(l).ok()?.parse().ok()
            };
            Some(IpAddr::V4(Ipv4Addr::new(p(a)?, p(b)?, p(c)?, p(d)?)))
        }
        [nibbles @ .., ip6, arpa] if nibbles.len() == 32 && *ip6 == b"ip6" && *arpa == b"arpa" => {
            let mut v: u128 = 0;
            for l in nibbles.iter().rev() {
                if l.len() != 1 {
                    return None;
                }
                let d = (l[0] as char).to_digit(16)?;
                v = (v << 4) | d as u128;
            }
            Some(IpAddr::V6(Ipv6Addr::from(v)))
        }
        _ => None,
    }
}

/// The reverse name of an address, in wire format.
pub fn ip_to_reverse(ip: IpAddr) -> Vec<u8> {
    let text = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xF, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    };
    name_from_str(&text).expect("reverse names are valid")
}

/// Builds a reply into a caller-owned buffer.
pub struct Writer<'a> {
    pub buf: &'a mut Vec<u8>,
    pub an: u16,
    pub ns: u16,
    pub ar: u16,
}

impl<'a> Writer<'a> {
    /// Starts a reply to `q`: the header (QR, RA, the requester's RD and CD,
    /// `rcode`, AA when `authoritative`) and the question exactly as sent
    /// (its case preserved for requesters that randomise it).
    pub fn reply(
        buf: &'a mut Vec<u8>,
        q: &Query,
        msg: &[u8],
        rcode: u8,
        authoritative: bool,
    ) -> Self {
        buf.clear();
        let mut flags = FLAG_QR | FLAG_RA | (q.flags & (FLAG_RD | FLAG_CD | 0x7800));
        if authoritative {
            flags |= FLAG_AA;
        }
        flags |= rcode as u16 & 0xF;
        buf.extend_from_slice(&q.id.to_be_bytes());
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(&msg[12..q.question_end]);
        Writer {
            buf,
            an: 0,
            ns: 0,
            ar: 0,
        }
    }

    /// A reply to a message whose question could not be parsed: header only.
    pub fn header_only(buf: &'a mut Vec<u8>, id: u16, req_flags: u16, rcode: u8) -> Self {
        buf.clear();
        let flags = FLAG_QR | FLAG_RA | (req_flags & (FLAG_RD | 0x7800)) | (rcode as u16 & 0xF);
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0; 8]);
        Writer {
            buf,
            an: 0,
            ns: 0,
            ar: 0,
        }
    }

    fn rr_head(&mut self, owner: Owner<'_>, rtype: u16, ttl: u32) {
        match owner {
            Owner::Question => self.buf.extend_from_slice(&[0xC0, 12]),
            Owner::Name(n) => self.buf.extend_from_slice(n),
            Owner::Pointer(p) => self
                .buf
                .extend_from_slice(&(0xC000 | (p & 0x3FFF)).to_be_bytes()),
        }
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
    }

    /// Appends an A or AAAA record.
    pub fn addr(&mut self, owner: Owner<'_>, ip: IpAddr, ttl: u32) {
        match ip {
            IpAddr::V4(v4) => {
                self.rr_head(owner, TYPE_A, ttl);
                self.buf.extend_from_slice(&4u16.to_be_bytes());
                self.buf.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.rr_head(owner, TYPE_AAAA, ttl);
                self.buf.extend_from_slice(&16u16.to_be_bytes());
                self.buf.extend_from_slice(&v6.octets());
            }
        }
    }

    /// Appends a record whose rdata is one name (CNAME, PTR, NS). Returns
    /// the offset of that name, usable as a compression pointer.
    pub fn name_rr(&mut self, owner: Owner<'_>, rtype: u16, ttl: u32, target: &[u8]) -> u16 {
        self.rr_head(owner, rtype, ttl);
        self.buf
            .extend_from_slice(&(target.len() as u16).to_be_bytes());
        let at = self.buf.len() as u16;
        self.buf.extend_from_slice(target);
        at
    }

    /// Appends an SRV record.
    pub fn srv(
        &mut self,
        owner: Owner<'_>,
        ttl: u32,
        prio: u16,
        weight: u16,
        port: u16,
        target: &[u8],
    ) {
        self.rr_head(owner, TYPE_SRV, ttl);
        self.buf
            .extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
        self.buf.extend_from_slice(&prio.to_be_bytes());
        self.buf.extend_from_slice(&weight.to_be_bytes());
        self.buf.extend_from_slice(&port.to_be_bytes());
        self.buf.extend_from_slice(target);
    }

    /// Appends the zone's SOA (authority of negative answers: its MINIMUM
    /// is the negative-caching TTL, kept as short as the records').
    pub fn soa(&mut self, zone: &[u8], ttl: u32) {
        self.rr_head(Owner::Name(zone), TYPE_SOA, ttl);
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        // mname "ns.<zone>", rname "hostmaster.<zone>" as pointers to the owner.
        self.buf.extend_from_slice(&[2, b'n', b's']);
        self.buf.extend_from_slice(zone);
        self.buf.extend_from_slice(b"\x0ahostmaster");
        self.buf.extend_from_slice(zone);
        for v in [1u32, 3600, 600, 86400, ttl] {
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
        let rdlen = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }

    /// Appends our OPT record (when the query had one).
    pub fn opt(&mut self) {
        self.buf.push(0);
        self.buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
        self.buf.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        self.ar += 1;
    }

    /// Writes the section counts into the header.
    pub fn finish(self) {
        self.buf[6..8].copy_from_slice(&self.an.to_be_bytes());
        self.buf[8..10].copy_from_slice(&self.ns.to_be_bytes());
        self.buf[10..12].copy_from_slice(&self.ar.to_be_bytes());
    }
}

/// How a record's owner name is written.
#[derive(Clone, Copy)]
pub enum Owner<'n> {
    /// A pointer to the question's name (offset 12).
    Question,
    /// A full name in wire format.
    Name(&'n [u8]),
    /// A pointer to a name already written at this offset.
    Pointer(u16),
}

/// Cuts a reply that exceeds the requester's limit down to header, question
/// and OPT with TC set, so it retries over TCP.
pub fn truncate_reply(buf: &mut Vec<u8>, question_end: usize, had_edns: bool) {
    buf.truncate(question_end);
    buf[2] |= (FLAG_TC >> 8) as u8;
    buf[6..12].copy_from_slice(&[0; 6]);
    if had_edns {
        buf.push(0);
        buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
        buf.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        buf[10..12].copy_from_slice(&1u16.to_be_bytes());
    }
}

/// Builds a query for `name`/`qtype` (recursion desired, EDNS0 with our payload).
pub fn build_query(id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(name.len() + 28);
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&FLAG_RD.to_be_bytes());
    b.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
    b.extend_from_slice(name);
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&CLASS_IN.to_be_bytes());
    b.push(0);
    b.extend_from_slice(&TYPE_OPT.to_be_bytes());
    b.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    b
}

/// Record type names for traces.
pub fn type_name(t: u16) -> String {
    match t {
        TYPE_A => "A".into(),
        TYPE_NS => "NS".into(),
        TYPE_CNAME => "CNAME".into(),
        TYPE_SOA => "SOA".into(),
        TYPE_PTR => "PTR".into(),
        TYPE_MX => "MX".into(),
        TYPE_TXT => "TXT".into(),
        TYPE_AAAA => "AAAA".into(),
        TYPE_SRV => "SRV".into(),
        TYPE_OPT => "OPT".into(),
        TYPE_ANY => "ANY".into(),
        t => format!("TYPE{t}"),
    }
}

/// Parses a record type name (`A`, `aaaa`, `TYPE99`).
pub fn type_from_str(s: &str) -> Option<u16> {
    let u = s.to_ascii_uppercase();
    Some(match u.as_str() {
        "A" => TYPE_A,
        "NS" => TYPE_NS,
        "CNAME" => TYPE_CNAME,
        "SOA" => TYPE_SOA,
        "PTR" => TYPE_PTR,
        "MX" => TYPE_MX,
        "TXT" => TYPE_TXT,
        "AAAA" => TYPE_AAAA,
        "SRV" => TYPE_SRV,
        "ANY" => TYPE_ANY,
        _ => u.strip_prefix("TYPE")?.parse().ok()?,
    })
}

/// Response codes for traces.
pub fn rcode_name(r: u8) -> &'static str {
    match r {
        RCODE_NOERROR => "NOERROR",
        RCODE_FORMERR => "FORMERR",
        RCODE_SERVFAIL => "SERVFAIL",
        RCODE_NXDOMAIN => "NXDOMAIN",
        RCODE_NOTIMP => "NOTIMP",
        RCODE_REFUSED => "REFUSED",
        _ => "RCODE?",
    }
}

/// One decoded record of a reply (for traces and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordText {
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub data: String,
}

/// Decodes the answer section of a reply as text.
pub fn answers_text(msg: &[u8]) -> Result<Vec<RecordText>, WireError> {
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let mut off = 12;
    for _ in 0..qd {
        off = skip_name(msg, off)? + 4;
    }
    let mut out = Vec::with_capacity(an as usize);
    for _ in 0..an {
        let (name, name_end) = read_name(msg, off)?;
        let rtype = u16_at(msg, name_end)?;
        let ttl = u32_at(msg, name_end + 4)?;
        let rdlen = u16_at(msg, name_end + 8)? as usize;
        let rd = name_end + 10;
        let rdata = msg.get(rd..rd + rdlen).ok_or(WireError::Truncated)?;
        let data = match rtype {
            TYPE_A if rdlen == 4 => {
                Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string()
            }
            TYPE_AAAA if rdlen == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rdata);
                Ipv6Addr::from(o).to_string()
            }
            TYPE_CNAME | TYPE_PTR | TYPE_NS => name_to_string(read_name(msg, rd)?.0.as_slice()),
            TYPE_SRV if rdlen >= 7 => format!(
                "{} {} {} {}",
                u16_at(msg, rd)?,
                u16_at(msg, rd + 2)?,
                u16_at(msg, rd + 4)?,
                name_to_string(read_name(msg, rd + 6)?.0.as_slice())
            ),
            _ => format!("\\# {rdlen}"),
        };
        out.push(RecordText {
            name: name_to_string(name.as_slice()),
            rtype: type_name(rtype),
            ttl,
            data,
        });
        off = rd + rdlen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lowercase() {
        let w = name_from_str("Web.MyNet.local.").unwrap();
        assert_eq!(w, b"\x03web\x05mynet\x05local\x00");
        assert_eq!(name_to_string(&w), "web.mynet.local.");
        assert!(name_from_str("a..b").is_err());
        assert!(name_from_str(&"a".repeat(64)).is_err());
        assert!(name_from_str(&["abc"; 70].join(".")).is_err());
    }

    #[test]
    fn subdomain() {
        let zone = name_from_str("net.local").unwrap();
        assert!(is_subdomain(&name_from_str("a.net.local").unwrap(), &zone));
        assert!(is_subdomain(&zone, &zone));
        assert!(!is_subdomain(&name_from_str("anet.local").unwrap(), &zone));
        assert!(!is_subdomain(&name_from_str("local").unwrap(), &zone));
    }

    #[test]
    fn reverse_names() {
        let ip: IpAddr = "172.18.0.5".parse().unwrap();
        let r = ip_to_reverse(ip);
        assert_eq!(name_to_string(&r), "5.0.18.172.in-addr.arpa.");
        assert_eq!(reverse_to_ip(&r), Some(ip));
        let ip6: IpAddr = "fd00::1:2".parse().unwrap();
        assert_eq!(reverse_to_ip(&ip_to_reverse(ip6)), Some(ip6));
        assert_eq!(
            reverse_to_ip(&name_from_str("18.172.in-addr.arpa").unwrap()),
            None
        );
        assert_eq!(
            reverse_to_ip(&name_from_str("05.0.18.172.in-addr.arpa").unwrap()),
            None
        );
    }

    #[test]
    fn compression_pointer_loops_are_errors() {
        // Header + a name that points at itself.
        let mut m = vec![0u8; 12];
        m[5] = 1;
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_query(&m).unwrap_err(), WireError::BadPointer);
    }

    #[test]
    fn query_with_edns() {
        let q = build_query(7, &name_from_str("x.y").unwrap(), TYPE_AAAA);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.id, 7);
        assert_eq!(p.qtype, TYPE_AAAA);
        assert_eq!(p.edns.unwrap().payload, EDNS_PAYLOAD);
        assert_eq!(p.udp_limit(), EDNS_PAYLOAD as usize);
    }
}
