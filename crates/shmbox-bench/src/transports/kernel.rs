//! Kernel IPC: a pipe pair, a Unix stream socket, TCP over loopback with
//! `TCP_NODELAY`. Every message is copied in full into and out of the
//! kernel (`write_all` / `read_exact` of the whole payload), whatever the
//! payload mode; "written" adds filling and checking it, as for the others.

use super::{check_echo, clock_mask, Meter, PEER_IDLE_TIMEOUT, ROUND_TIMEOUT};
use crate::measure::{sample, Ctx, LatencyBudget};
use crate::payload;
use crate::proc::Peer;
use crate::spec::{Role, END};
use hdrhistogram::Histogram;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

/// A kernel stream transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The peer's stdin and stdout.
    Pipe,
    /// Unix stream socket.
    Unix,
    /// TCP on 127.0.0.1.
    Tcp,
}

/// A process-unique abstract Unix socket name (nothing to clean up in the
/// file system).
fn socket_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("shmbox-bench-{}-{n}", std::process::id())
}

fn abstract_addr(name: &str) -> Result<SocketAddr, String> {
    SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| format!("socket address: {e}"))
}

/// Accepts the peer's connection without blocking for ever.
fn accept<T>(
    peer: &mut Peer,
    mut try_accept: impl FnMut() -> std::io::Result<T>,
) -> Result<T, String> {
    peer.wait_ready(|| match try_accept() {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(format!("accept: {e}")),
    })
}

fn unix_listener() -> Result<(UnixListener, String), String> {
    let name = socket_name();
    let listener =
        UnixListener::bind_addr(&abstract_addr(&name)?).map_err(|e| format!("bind: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok((listener, name))
}

fn unix_accept(peer: &mut Peer, listener: &UnixListener) -> Result<UnixStream, String> {
    let stream = accept(peer, || listener.accept().map(|(s, _)| s))?;
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(ROUND_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// One latency measurement over `kind`.
pub(crate) fn latency(
    ctx: &mut Ctx,
    kind: Kind,
    size: usize,
    written: bool,
    budget: &LatencyBudget,
) -> Result<Histogram<u64>, String> {
    let deadline = ctx.plan.peer_deadline();
    match kind {
        Kind::Pipe => {
            let mut peer = ctx
                .launcher
                .spawn(Role::PipePong { size, written }, true, deadline)?;
            let (mut to, mut from) = peer.take_pipes().ok_or("peer has no pipes")?;
            let histogram = ping(&mut peer, &mut from, &mut to, size, written, budget)?;
            peer.finish()?;
            Ok(histogram)
        }
        Kind::Unix => {
            let (listener, socket) = unix_listener()?;
            let role = Role::UnixPong {
                socket,
                size,
                written,
            };
            let mut peer = ctx.launcher.spawn(role, false, deadline)?;
            let stream = unix_accept(&mut peer, &listener)?;
            let histogram = ping(&mut peer, &mut &stream, &mut &stream, size, written, budget)?;
            peer.finish()?;
            Ok(histogram)
        }
        Kind::Tcp => {
            let listener =
                TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind: {e}"))?;
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let role = Role::TcpPong {
                port,
                size,
                written,
            };
            let mut peer = ctx.launcher.spawn(role, false, deadline)?;
            let stream = accept(&mut peer, || listener.accept().map(|(s, _)| s))?;
            stream.set_nonblocking(false).map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(ROUND_TIMEOUT))
                .map_err(|e| e.to_string())?;
            let histogram = ping(&mut peer, &mut &stream, &mut &stream, size, written, budget)?;
            peer.finish()?;
            Ok(histogram)
        }
    }
}

/// The parent's ping-pong over a connected stream; ends with the end
/// marker and the peer's exit.
fn ping(
    peer: &mut Peer,
    from: &mut impl Read,
    to: &mut impl Write,
    size: usize,
    written: bool,
    budget: &LatencyBudget,
) -> Result<Histogram<u64>, String> {
    let (mut out, mut back) = (vec![0u8; size], vec![0u8; size]);
    let result = sample(budget, |seq| {
        payload::write(&mut out, seq, written);
        to.write_all(&out).map_err(|e| format!("write: {e}"))?;
        from.read_exact(&mut back)
            .map_err(|e| format!("read: {e}"))?;
        check_echo(seq, payload::read(&back, written)?)
    });
    let histogram = result.map_err(|e| peer.explain(e))?;
    payload::write(&mut out, END, written);
    to.write_all(&out)
        .map_err(|e| peer.explain(format!("write: {e}")))?;
    Ok(histogram)
}

/// The peer's side of a stream ping-pong: echo until the end marker.
fn pong(
    from: &mut impl Read,
    to: &mut impl Write,
    size: usize,
    written: bool,
) -> Result<(), String> {
    let (mut inbound, mut out) = (vec![0u8; size], vec![0u8; size]);
    loop {
        from.read_exact(&mut inbound)
            .map_err(|e| format!("read: {e}"))?;
        let seq = payload::read(&inbound, written)?;
        if seq == END {
            return Ok(());
        }
        payload::write(&mut out, seq, written);
        to.write_all(&out).map_err(|e| format!("write: {e}"))?;
    }
}

/// The peer's side over its stdin and stdout (unbuffered).
pub(crate) fn pipe_pong(size: usize, written: bool) -> Result<(), String> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| format!("dup: {e}"))
    };
    let mut stdin = dup(std::io::stdin().as_fd())?;
    let mut stdout = dup(std::io::stdout().as_fd())?;
    pong(&mut stdin, &mut stdout, size, written)
}

/// The peer's side over a Unix socket.
pub(crate) fn unix_pong(socket: &str, size: usize, written: bool) -> Result<(), String> {
    let stream =
        UnixStream::connect_addr(&abstract_addr(socket)?).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(PEER_IDLE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    pong(&mut &stream, &mut &stream, size, written)
}

/// The peer's side over TCP.
pub(crate) fn tcp_pong(port: u16, size: usize, written: bool) -> Result<(), String> {
    let stream =
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(PEER_IDLE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    pong(&mut &stream, &mut &stream, size, written)
}

/// One throughput measurement over a Unix socket: the peer writes each
/// message with one `write_all`; this process reads through a 256 KiB
/// `BufReader` (as a stream reader would) and checks every message.
pub(crate) fn unix_throughput(
    ctx: &mut Ctx,
    size: usize,
    reads: bool,
) -> Result<(u64, f64), String> {
    let (listener, socket) = unix_listener()?;
    let role = Role::UnixSender {
        socket,
        size,
        run_ms: (ctx.plan.stream_time + ctx.plan.warmup).as_millis() as u64,
    };
    let mut peer = ctx.launcher.spawn(role, false, ctx.plan.peer_deadline())?;
    let stream = unix_accept(&mut peer, &listener)?;
    let mut reader = BufReader::with_capacity(256 << 10, &stream);
    let mut buf = vec![0u8; size];
    let mut meter = Meter::new(size, ctx.plan.warmup);
    let result = (|| loop {
        reader
            .read_exact(&mut buf)
            .map_err(|e| format!("read: {e}"))?;
        if let Some(done) = meter.count(payload::read(&buf, reads)?)? {
            return Ok(done);
        }
    })();
    let result = result.map_err(|e| peer.explain(e))?;
    peer.finish()?;
    Ok(result)
}

/// The peer's side of the Unix socket throughput.
pub(crate) fn unix_sender(socket: &str, size: usize, run_ms: u64) -> Result<(), String> {
    let mut stream =
        UnixStream::connect_addr(&abstract_addr(socket)?).map_err(|e| format!("connect: {e}"))?;
    let run = std::time::Duration::from_millis(run_ms);
    let mask = clock_mask(size);
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; size];
    let mut seq = 1u64;
    loop {
        let done = seq & mask == 0 && started.elapsed() >= run;
        let value = if done { END } else { seq };
        payload::write(&mut buf, value, true);
        stream.write_all(&buf).map_err(|e| format!("write: {e}"))?;
        if done {
            return Ok(());
        }
        seq += 1;
    }
}
