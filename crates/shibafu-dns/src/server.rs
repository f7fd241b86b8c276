//! The server: listeners per network, the packet handler shared by UDP,
//! TCP and traces, and forwarding.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::forward::{Attempt, ForwardError, Upstreams};
use crate::table::{self, Local, Match, State, Table};
use crate::trace::{self, Requester, TraceReport};
use crate::udp;
use crate::wire::{self, Query, Writer};
use crate::{DnsConfig, DnsError, NetworkDns};

/// Idle TCP connections are closed after this long (and a started message
/// must arrive whole within it: no slowloris).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The embedded DNS server. Cheap to clone; all clones are the same server.
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct ServedNet {
    spec: NetworkDns,
    zone: Vec<u8>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ServedNet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the state is compiled from; one lock so rebuilds are serialised.
#[derive(Default)]
struct Source {
    table: Table,
    served: BTreeMap<String, ServedNet>,
}

pub(crate) struct Inner {
    config: DnsConfig,
    state: ArcSwap<State>,
    source: Mutex<Source>,
    cache: Cache,
    upstreams: Upstreams,
    /// (domain in wire format, servers), longest domain first.
    conditional: Vec<(Vec<u8>, Vec<SocketAddr>)>,
    host_upstreams: RwLock<Vec<SocketAddr>>,
    inflight: Arc<Semaphore>,
    runtime: Handle,
}

/// What the handler decided.
pub(crate) enum Step {
    /// The reply is in the output buffer.
    Reply,
    /// Say nothing (not a query at all).
    Drop,
    /// Needs upstreams; the job is run asynchronously.
    Forward(Box<ForwardJob>),
}

pub(crate) struct ForwardJob {
    q: Query,
    servers: Vec<SocketAddr>,
    /// A local CNAME answer whose target must be resolved upstream.
    chase: Option<(Vec<u8>, Vec<u8>)>,
    _permit: OwnedSemaphorePermit,
}

/// What a trace records about the handling of one query.
#[derive(Default)]
pub(crate) struct TraceCollect {
    pub view: Vec<Arc<str>>,
    pub listener: Option<Arc<str>>,
    pub matches: Vec<Match>,
    pub source: Option<trace::TraceSource>,
    pub attempts: Vec<Attempt>,
}

impl DnsServer {
    /// A server with no network yet. Must be called inside a tokio runtime
    /// (its handle is kept to spawn the listeners later).
    pub fn new(config: DnsConfig) -> Result<DnsServer, DnsError> {
        let mut conditional = Vec::new();
        for c in &config.conditional {
            let d = wire::name_from_str(&c.domain).map_err(|why| DnsError::InvalidZone {
                zone: c.domain.clone(),
                why,
            })?;
            conditional.push((d, c.servers.clone()));
        }
        conditional.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));
        wire::name_from_str(&format!("x.{}", config.zone_suffix.trim_matches('.'))).map_err(
            |why| DnsError::InvalidZone {
                zone: config.zone_suffix.clone(),
                why,
            },
        )?;
        let runtime = Handle::try_current().map_err(|_| DnsError::NoRuntime)?;
        Ok(DnsServer {
            inner: Arc::new(Inner {
                cache: Cache::new(
                    config.cache_entries,
                    config.cache_max_ttl,
                    config.negative_max_ttl,
                ),
                upstreams: Upstreams::new(
                    config.upstream_timeout,
                    config.query_budget,
                    config.upstream_down_for,
                ),
                host_upstreams: RwLock::new(config.host_upstreams.clone()),
                inflight: Arc::new(Semaphore::new(config.max_inflight.max(1))),
                conditional,
                state: ArcSwap::from_pointee(State::default()),
                source: Mutex::new(Source::default()),
                config,
                runtime,
            }),
        })
    }

    /// Starts answering on `net`'s listen addresses (UDP and TCP on the
    /// configured port). Sockets are bound before anything changes, so a
    /// failure leaves nothing behind. Binding uses IP_FREEBIND: a gateway
    /// address still tentative (IPv6 DAD) does not fail the bind.
    pub fn serve_network(&self, net: NetworkDns) -> Result<(), DnsError> {
        let zone = table::zone_of(&net, &self.inner.config.zone_suffix)?;
        let mut src = self.inner.source.lock();
        if src.served.contains_key(&net.id) {
            return Err(DnsError::AlreadyServed(net.id));
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for ip in &net.listen {
            let addr = SocketAddr::new(*ip, self.inner.config.port);
            for _ in 0..self.inner.config.udp_sockets_per_address.max(1) {
                udp.push((
                    *ip,
                    bind_udp(addr, self.inner.config.udp_sockets_per_address > 1)?,
                ));
            }
            tcp.push(bind_tcp(addr)?);
        }
        let _guard = self.inner.runtime.enter();
        let mut tasks = Vec::new();
        for (ip, s) in udp {
            let sock = Arc::new(UdpSocket::from_std(s.into()).map_err(|e| DnsError::Bind {
                proto: "udp",
                addr: SocketAddr::new(ip, self.inner.config.port),
                source: e,
            })?);
            tasks.push((ip, Listener::Udp(sock)));
        }
        for s in tcp {
            let l = TcpListener::from_std(s.into()).map_err(|e| DnsError::Bind {
                proto: "tcp",
                addr: SocketAddr::new(net.listen[0], self.inner.config.port),
                source: e,
            })?;
            let ip = l.local_addr().map(|a| a.ip()).unwrap_or(net.listen[0]);
            tasks.push((ip, Listener::Tcp(l)));
        }
        let id = net.id.clone();
        src.served.insert(
            id.clone(),
            ServedNet {
                spec: net,
                zone,
                tasks: Vec::new(),
            },
        );
        self.rebuild(&src);
        // Spawned only once the state knows the network: a query racing
        // the start sees its names.
        let handles = tasks
            .into_iter()
            .map(|(ip, l)| {
                let inner = self.inner.clone();
                match l {
                    Listener::Udp(s) => self.inner.runtime.spawn(udp_loop(inner, s, ip)),
                    Listener::Tcp(l) => self.inner.runtime.spawn(tcp_loop(inner, l, ip)),
                }
            })
            .collect();
        src.served.get_mut(&id).expect("just inserted").tasks = handles;
        Ok(())
    }

    /// Stops answering on a network (its listeners close at once).
    pub fn stop_network(&self, id: &str) -> Result<(), DnsError> {
        let mut src = self.inner.source.lock();
        let gone = src
            .served
            .remove(id)
            .ok_or_else(|| DnsError::NotServed(id.to_string()))?;
        self.rebuild(&src);
        drop(gone);
        Ok(())
    }

    /// Changes a served network's zone, forwarders or internal flag without
    /// closing its sockets (no query dropped). A changed listen set restarts
    /// the listeners.
    pub fn update_network(&self, net: NetworkDns) -> Result<(), DnsError> {
        let zone = table::zone_of(&net, &self.inner.config.zone_suffix)?;
        {
            let mut src = self.inner.source.lock();
            let cur = src
                .served
                .get_mut(&net.id)
                .ok_or_else(|| DnsError::NotServed(net.id.clone()))?;
            if cur.spec.listen == net.listen {
                cur.spec = net;
                cur.zone = zone;
                self.rebuild(&src);
                self.inner.cache.clear();
                return Ok(());
            }
        }
        self.stop_network(&net.id)?;
        self.serve_network(net)
    }

    /// The served networks.
    pub fn networks(&self) -> Vec<NetworkDns> {
        let src = self.inner.source.lock();
        src.served.values().map(|s| s.spec.clone()).collect()
    }

    /// Replaces every record at once. Queries in flight finish on the old
    /// table, later ones see the new one; none is dropped. Returns the
    /// names that were skipped as invalid (the rest is served).
    pub fn set_table(&self, table: Table) -> Vec<DnsError> {
        let mut src = self.inner.source.lock();
        src.table = table;
        self.rebuild(&src)
    }

    /// Replaces the host's resolvers (e.g. after resolv.conf changed).
    pub fn set_host_upstreams(&self, servers: Vec<SocketAddr>) {
        *self.inner.host_upstreams.write() = servers;
        self.inner.cache.clear();
    }

    /// Empties the cache of forwarded answers.
    pub fn flush_cache(&self) {
        self.inner.cache.clear();
    }

    /// Whether an upstream is currently skipped as dead.
    pub fn upstream_is_down(&self, server: SocketAddr) -> bool {
        self.inner.upstreams.is_down(server)
    }

    fn rebuild(&self, src: &Source) -> Vec<DnsError> {
        let served: Vec<(NetworkDns, Vec<u8>)> = src
            .served
            .values()
            .map(|s| (s.spec.clone(), s.zone.clone()))
            .collect();
        let (state, errors) = table::compile(&src.table, &served);
        self.inner.state.store(Arc::new(state));
        for e in &errors {
            tracing::warn!("dns: {e}");
        }
        errors
    }

    /// Resolves `name`/`qtype` as `from` would, through the same code path
    /// as real queries, and reports what matched where, the cache or
    /// upstreams used, and the time taken.
    pub async fn dns_trace(
        &self,
        name: &str,
        qtype: &str,
        from: Requester,
    ) -> Result<TraceReport, DnsError> {
        let t =
            wire::type_from_str(qtype).ok_or_else(|| DnsError::UnsupportedType(qtype.into()))?;
        let wname = wire::name_from_str(name).map_err(|why| DnsError::InvalidName {
            name: name.to_string(),
            why,
        })?;
        let (src_ip, local_ip) = {
            let state = self.inner.state.load();
            match &from {
                Requester::Address(ip) => {
                    let listen = state
                        .requesters
                        .get(ip)
                        .and_then(|r| r.nets.first())
                        .and_then(|&n| {
                            state
                                .by_listen
                                .iter()
                                .find(|(_, &i)| i == n)
                                .map(|(a, _)| *a)
                        });
                    (*ip, listen.unwrap_or(*ip))
                }
                Requester::Network(id) => {
                    let ni = state
                        .by_id
                        .get(id.as_str())
                        .copied()
                        .ok_or_else(|| DnsError::NotServed(id.clone()))?;
                    let listen = state
                        .by_listen
                        .iter()
                        .find(|(_, &i)| i == ni)
                        .map(|(a, _)| *a)
                        .ok_or_else(|| DnsError::NotServed(id.clone()))?;
                    (listen, listen)
                }
            }
        };
        let msg = wire::build_query(rand::random(), &wname, t);
        let start = Instant::now();
        let mut out = Vec::new();
        let mut tc = TraceCollect::default();
        match self
            .inner
            .handle(&msg, src_ip, local_ip, &mut out, false, Some(&mut tc))
        {
            Step::Reply | Step::Drop => {}
            Step::Forward(job) => {
                out = self
                    .inner
                    .run_forward(&msg, job, false, Some(&mut tc))
                    .await;
            }
        }
        Ok(trace::report(name, t, from, tc, &out, start.elapsed()))
    }
}

enum Listener {
    Udp(Arc<UdpSocket>),
    Tcp(TcpListener),
}

fn bind_err(proto: &'static str, addr: SocketAddr) -> impl Fn(std::io::Error) -> DnsError {
    move |source| DnsError::Bind {
        proto,
        addr,
        source,
    }
}

fn bind_udp(addr: SocketAddr, reuse_port: bool) -> Result<Socket, DnsError> {
    let e = bind_err("udp", addr);
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(&e)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(&e)?;
        s.set_freebind_v6(true).map_err(&e)?;
    } else {
        s.set_freebind_v4(true).map_err(&e)?;
    }
    if reuse_port {
        s.set_reuse_port(true).map_err(&e)?;
    }
    // Bursts are absorbed by the kernel queue (capped by rmem_max).
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true).map_err(&e)?;
    s.bind(&addr.into()).map_err(&e)?;
    Ok(s)
}

fn bind_tcp(addr: SocketAddr) -> Result<Socket, DnsError> {
    let e = bind_err("tcp", addr);
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(&e)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(&e)?;
        s.set_freebind_v6(true).map_err(&e)?;
    } else {
        s.set_freebind_v4(true).map_err(&e)?;
    }
    s.set_reuse_address(true).map_err(&e)?;
    s.set_nonblocking(true).map_err(&e)?;
    s.bind(&addr.into()).map_err(&e)?;
    s.listen(1024).map_err(&e)?;
    Ok(s)
}

/// Receives up to [`udp::BATCH`] queries per syscall, answers the local
/// ones synchronously and sends all those replies with one syscall;
/// forwarded queries get their own task and reply on their own.
async fn udp_loop(inner: Arc<Inner>, sock: Arc<UdpSocket>, local: IpAddr) {
    let mut rx = udp::RecvBatch::new();
    let mut tx = udp::SendBatch::new();
    loop {
        if let Err(e) = sock.readable().await {
            tracing::debug!("dns: udp readiness on {local}: {e}");
            tokio::task::yield_now().await;
            continue;
        }
        match rx.try_recv(&sock) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // E.g. ICMP errors surfacing on the socket: never fatal.
                tracing::debug!("dns: udp receive on {local}: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        }
        for (msg, src) in rx.datagrams() {
            match inner.handle(msg, src.ip(), local, tx.next_buf(), true, None) {
                Step::Reply => tx.push(src),
                Step::Drop => {}
                Step::Forward(job) => {
                    let inner = inner.clone();
                    let sock = sock.clone();
                    let msg = msg.to_vec();
                    tokio::spawn(async move {
                        let reply = inner.run_forward(&msg, job, true, None).await;
                        send(&sock, &reply, src).await;
                    });
                }
            }
        }
        if !tx.is_empty() {
            // Socket buffer full: the rest wait for room one by one.
            for i in tx.try_send(&sock, 0)..tx.len() {
                let (out, to) = tx.get(i);
                send(&sock, out, to).await;
            }
            tx.clear();
        }
    }
}

async fn send(sock: &UdpSocket, out: &[u8], to: SocketAddr) {
    match sock.try_send_to(out, to) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            if let Err(e) = sock.send_to(out, to).await {
                tracing::debug!("dns: udp send to {to}: {e}");
            }
        }
        Err(e) => tracing::debug!("dns: udp send to {to}: {e}"),
    }
}

async fn tcp_loop(inner: Arc<Inner>, listener: TcpListener, local: IpAddr) {
    let limit = Arc::new(Semaphore::new(inner.config.max_tcp_connections.max(1)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::debug!("dns: tcp accept on {local}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Full: refuse the newest rather than starve the ones being served.
            drop(stream);
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp_conn(inner, stream, peer, local).await;
        });
    }
}

async fn tcp_conn(
    inner: Arc<Inner>,
    mut s: TcpStream,
    peer: SocketAddr,
    local: IpAddr,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        let Ok(r) = tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await else {
            return Ok(());
        };
        r?;
        let len = u16::from_be_bytes(len) as usize;
        let mut msg = vec![0u8; len];
        let Ok(r) = tokio::time::timeout(TCP_IDLE, s.read_exact(&mut msg)).await else {
            return Ok(());
        };
        r?;
        let reply = match inner.handle(&msg, peer.ip(), local, &mut out, false, None) {
            Step::Reply => std::mem::take(&mut out),
            Step::Drop => return Ok(()),
            Step::Forward(job) => inner.run_forward(&msg, job, false, None).await,
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&(reply.len().min(65535) as u16).to_be_bytes());
        framed.extend_from_slice(&reply[..reply.len().min(65535)]);
        s.write_all(&framed).await?;
        out = reply;
    }
}

impl Inner {
    /// Handles one message. Local answers, cache hits and errors are
    /// written into `out` synchronously; only upstream work is deferred.
    pub(crate) fn handle(
        &self,
        msg: &[u8],
        src: IpAddr,
        local: IpAddr,
        out: &mut Vec<u8>,
        udp: bool,
        mut trace: Option<&mut TraceCollect>,
    ) -> Step {
        let q = match wire::parse_query(msg) {
            Ok(q) => q,
            Err(_) => {
                // Not even a header, or a response: silence (no reflection,
                // no loops between servers).
                let Some(id) = wire::header_id(msg) else {
                    return Step::Drop;
                };
                let flags = wire::u16_at(msg, 2).unwrap_or(0);
                if msg.len() < 12 || flags & wire::FLAG_QR != 0 {
                    return Step::Drop;
                }
                Writer::header_only(out, id, flags, wire::RCODE_FORMERR).finish();
                return Step::Reply;
            }
        };
        if q.is_response() {
            return Step::Drop;
        }
        if q.opcode() != 0 {
            Writer::reply(out, &q, msg, wire::RCODE_NOTIMP, false).finish();
            return Step::Reply;
        }
        if q.edns.is_some_and(|e| e.version > 0) {
            // BADVERS (16): extended rcode 1 in the OPT record.
            let mut w = Writer::reply(out, &q, msg, 0, false);
            w.opt();
            w.finish();
            let n = out.len();
            out[n - 6] = 1;
            return Step::Reply;
        }
        if q.qtype == 251 || q.qtype == 252 {
            // IXFR/AXFR: zones are not transferable.
            Writer::reply(out, &q, msg, wire::RCODE_REFUSED, false).finish();
            return Step::Reply;
        }
        let state = self.state.load();
        let (view, listener) = state.view(src, local);
        if let Some(t) = trace.as_deref_mut() {
            t.view = view
                .iter()
                .map(|&i| state.nets[i as usize].name.clone())
                .collect();
            t.listener = listener.map(|i| state.nets[i as usize].name.clone());
        }
        let ttl = self.config.local_ttl;
        let local_outcome = state.answer(
            view,
            &q,
            msg,
            ttl,
            out,
            trace.as_deref_mut().map(|t| &mut t.matches),
        );
        let chase = match local_outcome {
            Local::Answered { .. } => {
                if let Some(t) = trace.as_deref_mut() {
                    t.source = Some(trace::TraceSource::Local);
                }
                if udp {
                    fit_udp(out, &q);
                }
                return Step::Reply;
            }
            Local::CnameOut { target } => Some((target, std::mem::take(out))),
            Local::Elsewhere => None,
        };
        // Forwarding: never from internal networks or for strangers.
        let Some(li) = listener else {
            return refuse(out, &q, msg, chase, udp);
        };
        let lnet = &state.nets[li as usize];
        if lnet.internal {
            return refuse(out, &q, msg, chase, udp);
        }
        // A CNAME chased out of the zone goes where its target's domain
        // is forwarded (conditional forwarding), not the alias's.
        let route = chase
            .as_ref()
            .map_or(q.qname.as_slice(), |(target, _)| target.as_slice());
        let servers = self.upstreams_for(&state, route, src, li);
        if servers.is_empty() {
            if let Some(t) = trace.as_deref_mut() {
                t.source = Some(trace::TraceSource::NoUpstream);
            }
            // A local CNAME to an outside name is still worth returning.
            if let Some((_, partial)) = chase {
                *out = partial;
                if udp {
                    fit_udp(out, &q);
                }
                return Step::Reply;
            }
            return servfail(out, &q, msg);
        }
        let set = crate::cache::upstream_set_id(&servers);
        if chase.is_none() && self.cache.get(&q, set, msg, out, Instant::now()) {
            if let Some(t) = trace {
                t.source = Some(trace::TraceSource::Cache);
            }
            if udp {
                fit_udp(out, &q);
            }
            return Step::Reply;
        }
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            // Overloaded: answer at once rather than queue without bound.
            return servfail(out, &q, msg);
        };
        Step::Forward(Box::new(ForwardJob {
            q,
            servers,
            chase,
            _permit: permit,
        }))
    }

    /// Conditional forwarders by longest domain, else the requester's own
    /// `--dns`, else the network's forwarders, else the host's resolvers.
    fn upstreams_for(
        &self,
        state: &State,
        name: &[u8],
        src: IpAddr,
        listener: u16,
    ) -> Vec<SocketAddr> {
        for (domain, servers) in &self.conditional {
            if wire::is_subdomain(name, domain) {
                return servers.clone();
            }
        }
        if let Some(r) = state.requesters.get(&src) {
            if !r.dns_servers.is_empty() {
                return r.dns_servers.clone();
            }
        }
        let net = &state.nets[listener as usize];
        if !net.forwarders.is_empty() {
            return net.forwarders.clone();
        }
        self.host_upstreams.read().clone()
    }

    /// Runs a deferred upstream job; returns the reply for the requester.
    pub(crate) async fn run_forward(
        &self,
        msg: &[u8],
        job: Box<ForwardJob>,
        udp: bool,
        mut trace: Option<&mut TraceCollect>,
    ) -> Vec<u8> {
        let q = job.q;
        let set = crate::cache::upstream_set_id(&job.servers);
        let mut attempts = Vec::new();
        let mut out = Vec::new();
        match job.chase {
            None => {
                let res = self
                    .upstreams
                    .forward(msg, &q, &job.servers, &mut attempts)
                    .await;
                match res {
                    Ok((mut reply, server)) => {
                        if let Ok(info) = wire::inspect_response(&reply) {
                            self.cache.put(&q, set, &reply, &info, Instant::now());
                        }
                        // Upstreams echo our question; give back the requester's bytes.
                        if reply.len() >= q.question_end {
                            reply[12..q.question_end].copy_from_slice(&msg[12..q.question_end]);
                        }
                        if let Some(t) = trace.as_deref_mut() {
                            t.source = Some(trace::TraceSource::Upstream(server));
                        }
                        out = reply;
                        if udp {
                            fit_udp(&mut out, &q);
                        }
                    }
                    Err(e) => {
                        if let Some(t) = trace.as_deref_mut() {
                            t.source = Some(trace::TraceSource::Failed(e.to_string()));
                        }
                        servfail(&mut out, &q, msg);
                    }
                }
            }
            Some((target, mut partial)) => {
                let tq_msg = wire::build_query(rand::random(), &target, q.qtype);
                let tq = wire::parse_query(&tq_msg).expect("built query parses");
                let mut cached = Vec::new();
                let reply = if self
                    .cache
                    .get(&tq, set, &tq_msg, &mut cached, Instant::now())
                {
                    Ok(cached)
                } else {
                    match self
                        .upstreams
                        .forward(&tq_msg, &tq, &job.servers, &mut attempts)
                        .await
                    {
                        Ok((reply, server)) => {
                            if let Ok(info) = wire::inspect_response(&reply) {
                                self.cache.put(&tq, set, &reply, &info, Instant::now());
                            }
                            if let Some(t) = trace.as_deref_mut() {
                                t.source = Some(trace::TraceSource::Upstream(server));
                            }
                            Ok(reply)
                        }
                        Err(e) => Err(e),
                    }
                };
                match reply {
                    Ok(r) => {
                        append_answers(&mut partial, &r);
                        out = partial;
                        if udp {
                            fit_udp(&mut out, &q);
                        }
                    }
                    Err(ForwardError::NoUpstream) | Err(_) => {
                        servfail(&mut out, &q, msg);
                    }
                }
            }
        }
        if let Some(t) = trace {
            t.attempts = attempts;
        }
        out
    }
}

/// A reply too big for the requester's UDP limit is cut to TC.
fn fit_udp(out: &mut Vec<u8>, q: &Query) {
    if out.len() > q.udp_limit() {
        wire::truncate_reply(out, q.question_end, q.edns.is_some());
    }
}

/// Internal networks and unknown listeners: a CNAME answered so far is
/// returned as is, anything else is REFUSED (no recursion offered).
fn refuse(
    out: &mut Vec<u8>,
    q: &Query,
    msg: &[u8],
    chase: Option<(Vec<u8>, Vec<u8>)>,
    udp: bool,
) -> Step {
    match chase {
        Some((_, partial)) => *out = partial,
        None => {
            let mut w = Writer::reply(out, q, msg, wire::RCODE_REFUSED, false);
            if q.edns.is_some() {
                w.opt();
            }
            w.finish();
        }
    }
    if udp {
        fit_udp(out, q);
    }
    Step::Reply
}

fn servfail(out: &mut Vec<u8>, q: &Query, msg: &[u8]) -> Step {
    let mut w = Writer::reply(out, q, msg, wire::RCODE_SERVFAIL, false);
    if q.edns.is_some() {
        w.opt();
    }
    w.finish();
    Step::Reply
}

/// Appends the A/AAAA/CNAME answers of an upstream reply to a local CNAME
/// answer (names decompressed, since offsets differ between the messages).
fn append_answers(partial: &mut Vec<u8>, reply: &[u8]) {
    let Ok(an) = wire::u16_at(reply, 6) else {
        return;
    };
    let Ok(qd) = wire::u16_at(reply, 4) else {
        return;
    };
    // Our OPT is last in the partial answer: take it off, append, put back.
    let had_opt = wire::u16_at(partial, 10).unwrap_or(0) > 0;
    if had_opt {
        partial.truncate(partial.len() - 11);
    }
    let mut count = wire::u16_at(partial, 6).unwrap_or(0);
    let mut off = 12;
    for _ in 0..qd {
        match wire::skip_name(reply, off) {
            Ok(o) => off = o + 4,
            Err(_) => return,
        }
    }
    for _ in 0..an {
        let Ok((owner, name_end)) = wire::read_name(reply, off) else {
            break;
        };
        let (Ok(rtype), Ok(ttl), Ok(rdlen)) = (
            wire::u16_at(reply, name_end),
            wire::u32_at(reply, name_end + 4),
            wire::u16_at(reply, name_end + 8),
        ) else {
            break;
        };
        let rd = name_end + 10;
        let Some(rdata) = reply.get(rd..rd + rdlen as usize) else {
            break;
        };
        let rdata: Vec<u8> = match rtype {
            wire::TYPE_A | wire::TYPE_AAAA => rdata.to_vec(),
            wire::TYPE_CNAME => match wire::read_name(reply, rd) {
                Ok((n, _)) => n.as_slice().to_vec(),
                Err(_) => break,
            },
            _ => {
                off = rd + rdlen as usize;
                continue;
            }
        };
        partial.extend_from_slice(owner.as_slice());
        partial.extend_from_slice(&rtype.to_be_bytes());
        partial.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
        partial.extend_from_slice(&ttl.to_be_bytes());
        partial.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        partial.extend_from_slice(&rdata);
        count += 1;
        off = rd + rdlen as usize;
    }
    partial[6..8].copy_from_slice(&count.to_be_bytes());
    if had_opt {
        partial.push(0);
        partial.extend_from_slice(&wire::TYPE_OPT.to_be_bytes());
        partial.extend_from_slice(&wire::EDNS_PAYLOAD.to_be_bytes());
        partial.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, Proto};
    use proptest::prelude::*;

    /// A server with one network and a few names, without listeners: the
    /// handler is driven directly.
    fn server() -> (tokio::runtime::Runtime, DnsServer) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = rt.block_on(async { DnsServer::new(DnsConfig::default()).unwrap() });
        let net = NetworkDns {
            id: "n1".into(),
            name: "net1".into(),
            zone: None,
            listen: vec!["10.0.0.1".parse().unwrap()],
            subnets: vec!["10.0.0.0/24".parse().unwrap()],
            internal: false,
            forwarders: vec![],
        };
        let zone = table::zone_of(&net, "local").unwrap();
        let mut src = s.inner.source.lock();
        src.served.insert(
            "n1".into(),
            ServedNet {
                spec: net,
                zone,
                tasks: vec![],
            },
        );
        src.table = Table {
            endpoints: (0..5u8)
                .map(|i| Endpoint {
                    container_id: format!("c{i}"),
                    name: format!("web{i}"),
                    hostname: None,
                    aliases: vec!["web".into()],
                    services: vec![("svc".into(), i as u16 + 1)],
                    network_id: "n1".into(),
                    ipv4: Some(format!("10.0.0.{}", 10 + i).parse().unwrap()),
                    ipv6: Some(format!("fd00::{}", 10 + i).parse().unwrap()),
                    ports: vec![(80, Proto::Tcp)],
                    healthy: true,
                    dns_servers: vec![],
                })
                .collect(),
            cnames: vec![],
        };
        s.rebuild(&src);
        drop(src);
        (rt, s)
    }

    fn check(s: &DnsServer, msg: &[u8]) {
        let mut out = Vec::new();
        let src: IpAddr = "10.0.0.10".parse().unwrap();
        let local: IpAddr = "10.0.0.1".parse().unwrap();
        for udp in [true, false] {
            match s.inner.handle(msg, src, local, &mut out, udp, None) {
                Step::Reply => {
                    assert!(out.len() >= 12, "a reply has a header");
                    assert!(out[2] & 0x80 != 0, "replies have QR");
                    assert_eq!(out[0..2], msg[0..2], "replies carry the query's ID");
                    if udp {
                        assert!(out.len() <= 1232, "UDP replies fit the limit");
                    }
                    wire::inspect_response(&out).expect("replies are well-formed");
                }
                Step::Drop => {}
                Step::Forward(_) => {}
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let (_rt, s) = server();
            check(&s, &bytes);
        }

        #[test]
        fn mutated_queries_never_panic(
            name in prop::sample::select(vec!["web", "web0.net1.local", "svc", "_80._tcp.svc",
                "10.0.0.10.in-addr.arpa", "nope.net1.local", "net1.local", "ext.example"]),
            qtype in prop::sample::select(vec![1u16, 28, 12, 33, 5, 6, 255, 15, 252, 0]),
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
            cut in any::<u16>(),
        ) {
            let (_rt, s) = server();
            let mut q = wire::build_query(0x4242, &wire::name_from_str(name).unwrap(), qtype);
            check(&s, &q);
            for (pos, val) in edits {
                let n = q.len();
                q[pos as usize % n] = val;
            }
            check(&s, &q);
            let keep = cut as usize % (q.len() + 1);
            check(&s, &q[..keep]);
        }
    }

    #[test]
    fn local_answers_decode_with_hickory() {
        use hickory_proto::op::Message;
        let (_rt, s) = server();
        let mut out = Vec::new();
        let src: IpAddr = "10.0.0.99".parse().unwrap();
        let local: IpAddr = "10.0.0.1".parse().unwrap();
        for (name, t, n) in [
            ("svc", 1u16, 5),
            ("svc.net1.local", 28, 5),
            ("_80._tcp.web", 33, 5),
            ("12.0.0.10.in-addr.arpa", 12, 1),
            ("web3", 255, 2),
        ] {
            let q = wire::build_query(1, &wire::name_from_str(name).unwrap(), t);
            assert!(matches!(
                s.inner.handle(&q, src, local, &mut out, false, None),
                Step::Reply
            ));
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(m.answers.len(), n, "{name}");
        }
    }
    /// A server with real listeners on `listen` (a random free port):
    /// member `i` of `members` is container `web{i}`.
    async fn listening(listen: IpAddr, members: &[IpAddr]) -> (DnsServer, SocketAddr) {
        for _ in 0..20 {
            let port = 20000 + rand::random::<u16>() % 40000;
            let s = DnsServer::new(DnsConfig {
                port,
                ..DnsConfig::default()
            })
            .unwrap();
            let net = NetworkDns {
                id: "n1".into(),
                name: "net1".into(),
                zone: None,
                listen: vec![listen],
                subnets: vec![],
                internal: true,
                forwarders: vec![],
            };
            if s.serve_network(net).is_err() {
                continue; // port taken: another one
            }
            let endpoints = members
                .iter()
                .enumerate()
                .map(|(i, ip)| Endpoint {
                    container_id: format!("c{i}"),
                    name: format!("web{i}"),
                    hostname: None,
                    aliases: vec![],
                    services: vec![],
                    network_id: "n1".into(),
                    ipv4: match ip {
                        IpAddr::V4(v4) => Some(*v4),
                        IpAddr::V6(_) => None,
                    },
                    ipv6: match ip {
                        IpAddr::V6(v6) => Some(*v6),
                        IpAddr::V4(_) => None,
                    },
                    ports: vec![],
                    healthy: true,
                    dns_servers: vec![],
                })
                .collect();
            assert!(s
                .set_table(Table {
                    endpoints,
                    cnames: vec![],
                })
                .is_empty());
            return (s, SocketAddr::new(listen, port));
        }
        panic!("no free port on {listen}");
    }

    /// A client socket with room for a whole burst of replies.
    fn client(ip: IpAddr) -> UdpSocket {
        let s = std::net::UdpSocket::bind((ip, 0)).unwrap();
        socket2::SockRef::from(&s)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        s.set_nonblocking(true).unwrap();
        UdpSocket::from_std(s).unwrap()
    }

    /// Reads replies until `want` arrived or nothing came for a while
    /// (then a little longer, to catch stray extra replies): ID -> reply.
    async fn collect(sock: &UdpSocket, want: usize) -> BTreeMap<u16, Vec<Vec<u8>>> {
        let mut got: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
        let mut buf = vec![0u8; 65535];
        let mut n = 0;
        loop {
            let wait = if n < want { 3000 } else { 300 };
            let Ok(r) =
                tokio::time::timeout(Duration::from_millis(wait), sock.recv_from(&mut buf)).await
            else {
                return got;
            };
            let (len, _) = r.unwrap();
            let id = wire::header_id(&buf[..len]).unwrap();
            got.entry(id).or_default().push(buf[..len].to_vec());
            n += 1;
        }
    }

    fn answer_ips(reply: &[u8]) -> (u8, Vec<IpAddr>) {
        let m = hickory_proto::op::Message::from_vec(reply).unwrap();
        let ips = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::A(a) => Some(IpAddr::V4(a.0)),
                hickory_proto::rr::RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        (reply[3] & 0xF, ips)
    }

    /// Distinct loopback addresses per test process (the integration tests
    /// use 127.100-199.*).
    fn lo(n: u8, k: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(
            127,
            77 + k,
            (std::process::id() % 250) as u8,
            n,
        ))
    }

    #[tokio::test]
    async fn a_burst_of_queries_is_answered_whole() {
        let me = lo(10, 0);
        let (s, srv) = listening(lo(1, 0), &[me]).await;
        let sock = client(me);
        let name = wire::name_from_str("web0").unwrap();
        // Sent back to back, nothing read in between: the server sees
        // full batches.
        for id in 1000..1200u16 {
            sock.send_to(&wire::build_query(id, &name, 1), srv)
                .await
                .unwrap();
        }
        let got = collect(&sock, 200).await;
        assert_eq!(got.len(), 200, "one reply per query");
        for id in 1000..1200u16 {
            let r = &got[&id];
            assert_eq!(r.len(), 1, "exactly one reply to {id}");
            assert_eq!(answer_ips(&r[0]), (0, vec![me]), "reply {id}");
        }
        drop(s);
    }

    #[tokio::test]
    async fn ipv6_requesters_are_answered() {
        let me: IpAddr = "::1".parse().unwrap();
        let (s, srv) = listening(me, &[me]).await;
        let sock = client(me);
        let name = wire::name_from_str("web0").unwrap();
        for id in 1..=40u16 {
            sock.send_to(&wire::build_query(id, &name, 28), srv)
                .await
                .unwrap();
        }
        let got = collect(&sock, 40).await;
        assert_eq!(got.len(), 40);
        for r in got.values() {
            assert_eq!(r.len(), 1);
            assert_eq!(answer_ips(&r[0]), (0, vec![me]));
        }
        drop(s);
    }

    #[tokio::test]
    async fn garbage_in_a_batch_spoils_none_of_it() {
        let me = lo(10, 1);
        let (s, srv) = listening(lo(1, 1), &[me]).await;
        let sock = client(me);
        let name = wire::name_from_str("web0").unwrap();
        let mut oversized = wire::build_query(0xBBBB, &name, 1);
        oversized.resize(udp::SLOT + 100, 0);
        for id in 1..=100u16 {
            let q = wire::build_query(id, &name, 1);
            let mut response = q.clone();
            response[0..2].copy_from_slice(&0xAAAAu16.to_be_bytes());
            response[2] |= 0x80;
            let mut random: Vec<u8> = (0..(rand::random::<u16>() % 600))
                .map(|_| rand::random())
                .collect();
            if random.len() > 2 {
                random[2] |= 0x80; // a "response": never answered
            }
            let formerr_id = (0xC000 + id).to_be_bytes();
            let formerr = [
                formerr_id[0],
                formerr_id[1],
                1,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                5,
                b'a',
            ];
            for d in [
                &[][..],
                &[1, 2, 3, 4, 5][..],
                &response,
                &random,
                &formerr,
                &oversized,
                &q,
            ] {
                sock.send_to(d, srv).await.unwrap();
            }
        }
        let got = collect(&sock, 200).await;
        assert_eq!(got.len(), 200, "IDs answered: {:?}", got.keys());
        for id in 1..=100u16 {
            assert_eq!(got[&id].len(), 1);
            assert_eq!(answer_ips(&got[&id][0]), (0, vec![me]), "reply {id}");
            let f = &got[&(0xC000 + id)];
            assert_eq!(f.len(), 1);
            assert_eq!(f[0][3] & 0xF, wire::RCODE_FORMERR, "FORMERR {id}");
        }
        assert!(!got.contains_key(&0xAAAA), "responses are never answered");
        assert!(
            !got.contains_key(&0xBBBB),
            "oversized datagrams are dropped"
        );
        drop(s);
    }
}
