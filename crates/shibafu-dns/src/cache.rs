//! TTL-aware cache of upstream answers, negative ones included (RFC 2308).
//! Entries keep the raw reply and where its TTLs are, so a hit is a copy
//! plus a few patched bytes: no parsing, no re-encoding.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::wire::{self, Query, ResponseInfo};

/// The key: name (lower-case wire), type, class, the flags that change
/// upstream answers (DO, CD), and the upstream set that answered: a
/// container's `--dns`, a network's forwarders and the host's resolvers may
/// disagree, and one must never be served the other's answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    upstreams: u64,
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    dnssec_ok: bool,
    checking_disabled: bool,
}

/// An identity for an ordered upstream list (see [`Key`]).
pub(crate) fn upstream_set_id(servers: &[std::net::SocketAddr]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    servers.hash(&mut h);
    h.finish()
}

impl Key {
    pub fn of(q: &Query, upstreams: u64) -> Key {
        Key {
            upstreams,
            name: q.qname.as_slice().into(),
            qtype: q.qtype,
            qclass: q.qclass,
            dnssec_ok: q.edns.is_some_and(|e| e.dnssec_ok),
            checking_disabled: q.flags & wire::FLAG_CD != 0,
        }
    }
}

struct Entry {
    reply: Box<[u8]>,
    ttl_offsets: Box<[u16]>,
    ttls: Box<[u32]>,
    stored: Instant,
    lifetime: Duration,
}

pub(crate) struct Cache {
    map: Mutex<HashMap<Key, Entry>>,
    capacity: usize,
    max_ttl: u32,
    negative_max_ttl: u32,
}

impl Cache {
    pub fn new(capacity: usize, max_ttl: u32, negative_max_ttl: u32) -> Cache {
        Cache {
            map: Mutex::new(HashMap::new()),
            capacity,
            max_ttl,
            negative_max_ttl,
        }
    }

    /// Writes the cached reply to `q` into `out` (the requester's ID and
    /// question bytes, TTLs aged). False when absent or expired.
    pub fn get(
        &self,
        q: &Query,
        upstreams: u64,
        msg: &[u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let key = Key::of(q, upstreams);
        let mut map = self.map.lock();
        let Some(e) = map.get(&key) else {
            return false;
        };
        let age = now.saturating_duration_since(e.stored);
        if age >= e.lifetime {
            map.remove(&key);
            return false;
        }
        let age = age.as_secs() as u32;
        out.clear();
        out.extend_from_slice(&e.reply);
        for (&off, &ttl) in e.ttl_offsets.iter().zip(e.ttls.iter()) {
            let off = off as usize;
            out[off..off + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        drop(map);
        out[0..2].copy_from_slice(&q.id.to_be_bytes());
        // Same name modulo case, so the same length: keep the requester's case.
        out[12..q.question_end].copy_from_slice(&msg[12..q.question_end]);
        // The requester's RD/CD bits, ours for the rest.
        let rd = ((q.flags & wire::FLAG_RD) >> 8) as u8;
        out[2] = (out[2] & !0x01) | rd;
        true
    }

    /// Stores an upstream reply if it is cacheable: NOERROR or NXDOMAIN,
    /// not truncated, with a TTL (negative answers: the SOA's).
    pub fn put(&self, q: &Query, upstreams: u64, reply: &[u8], info: &ResponseInfo, now: Instant) {
        if self.capacity == 0 || info.truncated {
            return;
        }
        let negative = info.rcode == wire::RCODE_NXDOMAIN
            || (info.rcode == wire::RCODE_NOERROR && info.answers == 0);
        let ttl = if negative {
            match info.negative_ttl {
                Some(t) => t.min(self.negative_max_ttl),
                None => return,
            }
        } else if info.rcode == wire::RCODE_NOERROR {
            match info.min_ttl {
                Some(t) => t.min(self.max_ttl),
                None => return,
            }
        } else {
            return;
        };
        if ttl == 0 {
            return;
        }
        let ttls: Vec<u32> = info
            .ttl_offsets
            .iter()
            .map(|&o| wire::u32_at(reply, o as usize).unwrap_or(0))
            .collect();
        let entry = Entry {
            reply: reply.into(),
            ttl_offsets: info.ttl_offsets.clone().into_boxed_slice(),
            ttls: ttls.into_boxed_slice(),
            stored: now,
            lifetime: Duration::from_secs(ttl as u64),
        };
        let mut map = self.map.lock();
        if map.len() >= self.capacity {
            map.retain(|_, e| now.saturating_duration_since(e.stored) < e.lifetime);
            if map.len() >= self.capacity {
                // Still full of live entries: drop an arbitrary eighth
                // rather than keep an LRU list on the hit path.
                let drop_n = (self.capacity / 8).max(1);
                let victims: Vec<Key> = map.keys().take(drop_n).cloned().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        map.insert(Key::of(q, upstreams), entry);
    }

    pub fn clear(&self) {
        self.map.lock().clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    /// A reply to `query` with one A record (ttl) or, when `ttl` is None,
    /// NXDOMAIN with an SOA (ttl 100, minimum 30).
    fn reply(query: &[u8], ttl: Option<u32>) -> Vec<u8> {
        let q = parse_query(query).unwrap();
        let mut buf = Vec::new();
        let rcode = if ttl.is_some() {
            RCODE_NOERROR
        } else {
            RCODE_NXDOMAIN
        };
        let mut w = Writer::reply(&mut buf, &q, query, rcode, false);
        match ttl {
            Some(t) => {
                w.addr(Owner::Question, "10.0.0.1".parse().unwrap(), t);
                w.an += 1;
            }
            None => {
                w.soa(&name_from_str("example").unwrap(), 30);
                w.ns += 1;
            }
        }
        w.finish();
        buf
    }

    #[test]
    fn upstream_sets_do_not_share_answers() {
        let c = Cache::new(10, 3600, 300);
        let query = build_query(1, &name_from_str("a.example").unwrap(), TYPE_A);
        let q = parse_query(&query).unwrap();
        let r = reply(&query, Some(60));
        let host = upstream_set_id(&["127.0.0.53:53".parse().unwrap()]);
        let own = upstream_set_id(&["127.0.0.54:53".parse().unwrap()]);
        assert_ne!(host, own);
        let t0 = Instant::now();
        c.put(&q, host, &r, &inspect_response(&r).unwrap(), t0);
        let mut out = Vec::new();
        assert!(c.get(&q, host, &query, &mut out, t0));
        assert!(
            !c.get(&q, own, &query, &mut out, t0),
            "another upstream set's answer"
        );
    }

    #[test]
    fn ttls_age_and_expire() {
        let c = Cache::new(10, 3600, 300);
        let query = build_query(1, &name_from_str("a.example").unwrap(), TYPE_A);
        let q = parse_query(&query).unwrap();
        let r = reply(&query, Some(60));
        let t0 = Instant::now();
        c.put(&q, 7, &r, &inspect_response(&r).unwrap(), t0);
        let mut again = build_query(99, &name_from_str("A.Example").unwrap(), TYPE_A);
        again[2] = 0; // RD off
        let q2 = parse_query(&again).unwrap();
        let mut out = Vec::new();
        assert!(c.get(&q2, 7, &again, &mut out, t0 + Duration::from_secs(10)));
        assert_eq!(u16_at(&out, 0).unwrap(), 99);
        let a = answers_text(&out).unwrap();
        assert_eq!(a[0].ttl, 50);
        assert_eq!(a[0].name, "a.example.");
        // The requester's case is echoed in the question.
        assert_eq!(&out[12..q2.question_end], &again[12..q2.question_end]);
        assert!(!c.get(&q2, 7, &again, &mut out, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn negative_answers_use_the_soa_minimum() {
        let c = Cache::new(10, 3600, 300);
        let query = build_query(1, &name_from_str("nope.example").unwrap(), TYPE_A);
        let q = parse_query(&query).unwrap();
        let r = reply(&query, None);
        let t0 = Instant::now();
        c.put(&q, 7, &r, &inspect_response(&r).unwrap(), t0);
        let mut out = Vec::new();
        assert!(c.get(&q, 7, &query, &mut out, t0 + Duration::from_secs(29)));
        assert_eq!(out[3] & 0xF, RCODE_NXDOMAIN);
        assert!(!c.get(&q, 7, &query, &mut out, t0 + Duration::from_secs(30)));
    }

    #[test]
    fn capacity_is_bounded() {
        let c = Cache::new(16, 3600, 300);
        let t0 = Instant::now();
        for i in 0..100 {
            let query = build_query(1, &name_from_str(&format!("n{i}.example")).unwrap(), TYPE_A);
            let q = parse_query(&query).unwrap();
            let r = reply(&query, Some(60));
            c.put(&q, 7, &r, &inspect_response(&r).unwrap(), t0);
        }
        assert!(c.len() <= 16);
    }
}
