//! Our own clamd client (TCP): `zINSTREAM` streaming, `zPING`, `zVERSION`, reply parsing, several
//! addresses with failover, connect/io/scan timeouts and per-address health state.
//!
//! The three-way reply ([`Reply`]) is turned into `Ok(ScanVerdict)` for `Clean`/`Infected` and
//! into a [`ClamdError`] for everything else: an unreachable, hanging or erroring scanner is an
//! *error*, never an infection (unlike `clamav-client`'s `clean()`).
//!
//! Wire format: `zINSTREAM\0`, then frames of a 4-byte big-endian length plus data, then a
//! zero-length frame; the reply is NUL-terminated (`stream: OK`, `stream: <Sig> FOUND`,
//! `INSTREAM size limit exceeded. ERROR`).

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// Largest reply we read from clamd; longer replies are a protocol error.
pub const MAX_REPLY_LEN: usize = 4096;

/// A parsed clamd scan reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `stream: OK`.
    Clean,
    /// `stream: <signature> FOUND`.
    Infected {
        /// The signature name, e.g. `Eicar-Test-Signature.UNOFFICIAL`.
        signature: String,
    },
    /// `... ERROR` or anything unexpected.
    Error {
        /// The reply without the ` ERROR` suffix (truncated to 256 characters).
        message: String,
    },
}

/// Parses a clamd scan reply (with or without the trailing NUL, with or without an
/// `IDSESSION` `<id>: ` prefix). Total: never panics, unknown input becomes [`Reply::Error`].
pub fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\0', '\n', '\r', ' ']).trim_start();
    // IDSESSION replies: "<digits>: stream: OK".
    let text = match text.split_once(": ") {
        Some((id, rest)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => text,
    };
    if text.is_empty() {
        return Reply::Error {
            message: "empty reply".into(),
        };
    }
    if let Some(message) = text.strip_suffix(" ERROR") {
        return Reply::Error {
            message: truncate(message),
        };
    }
    if let Some(rest) = text.strip_suffix(" FOUND") {
        return match rest.split_once(": ") {
            Some((_, signature)) if !signature.trim().is_empty() && !signature.contains('\0') => {
                Reply::Infected {
                    signature: truncate(signature.trim()),
                }
            }
            _ => Reply::Error {
                message: format!("unexpected reply: {}", truncate(text)),
            },
        };
    }
    match text.split_once(": ") {
        Some((_, "OK")) => Reply::Clean,
        _ => Reply::Error {
            message: format!("unexpected reply: {}", truncate(text)),
        },
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(256).collect()
}

/// Writes `data` as INSTREAM frames of at most `chunk_size` bytes (no terminator).
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    chunk_size: usize,
) -> std::io::Result<()> {
    for chunk in data.chunks(chunk_size.max(1)) {
        let len =
            u32::try_from(chunk.len()).map_err(|_| std::io::Error::other("frame too large"))?;
        w.write_all(&len.to_be_bytes()).await?;
        w.write_all(chunk).await?;
    }
    Ok(())
}

/// The zero-length frame that ends an INSTREAM.
pub const END_FRAME: [u8; 4] = [0; 4];

/// Engine and signature database version from `zVERSION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClamdVersion {
    /// Engine version, e.g. `1.4.6`.
    pub engine: String,
    /// Signature DB version (daily.cvd), absent when clamd runs without official databases.
    pub db_version: Option<u32>,
    /// DB build time (clamd prints local time; read as UTC — run clamd with TZ=UTC).
    pub db_time: Option<OffsetDateTime>,
}

impl ClamdVersion {
    /// Age of the signature database at `now`, if its time is known.
    pub fn db_age(&self, now: OffsetDateTime) -> Option<Duration> {
        self.db_time
            .map(|t| (now - t).try_into().unwrap_or(Duration::ZERO))
    }
}

/// Parses a `VERSION` reply: `ClamAV 1.4.6/27500/Mon Nov 23 09:12:00 2026` or `ClamAV 1.4.6`.
pub fn parse_version(raw: &[u8]) -> Option<ClamdVersion> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\0', '\n', '\r', ' ']);
    let rest = text.strip_prefix("ClamAV ")?;
    let mut parts = rest.splitn(3, '/');
    let engine = parts.next()?.trim().to_owned();
    if engine.is_empty() {
        return None;
    }
    let db_version = parts.next().and_then(|v| v.trim().parse().ok());
    let db_time = parts.next().and_then(parse_ctime);
    Some(ClamdVersion {
        engine,
        db_version,
        db_time,
    })
}

/// `Mon Nov 23 09:12:00 2026` (ctime without the newline, day possibly space-padded).
fn parse_ctime(s: &str) -> Option<OffsetDateTime> {
    let f: Vec<&str> = s.split_whitespace().collect();
    let [_wday, month, day, hms, year] = f.as_slice() else {
        return None;
    };
    let month = match *month {
        "Jan" => Month::January,
        "Feb" => Month::February,
        "Mar" => Month::March,
        "Apr" => Month::April,
        "May" => Month::May,
        "Jun" => Month::June,
        "Jul" => Month::July,
        "Aug" => Month::August,
        "Sep" => Month::September,
        "Oct" => Month::October,
        "Nov" => Month::November,
        "Dec" => Month::December,
        _ => return None,
    };
    let mut t = hms.split(':').map(|p| p.parse::<u8>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    let date = Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    Some(PrimitiveDateTime::new(date, Time::from_hms(h, m, sec).ok()?).assume_utc())
}

/// Why a scan produced no verdict. None of these means "infected".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClamdError {
    /// No address configured.
    #[error("no clamd address configured")]
    NoAddress,
    /// Connecting failed (refused, unresolvable, connect timeout).
    #[error("clamd {addr} unreachable: {source}")]
    Connect {
        /// The address tried last.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A read or write did not finish in time.
    #[error("clamd {addr} timed out while {op}")]
    Timeout {
        /// The address.
        addr: String,
        /// What we were doing.
        op: &'static str,
    },
    /// The connection broke.
    #[error("clamd {addr} i/o error while {op}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// What we were doing.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// clamd answered with an error (e.g. `INSTREAM size limit exceeded`) or garbage.
    #[error("clamd {addr} error: {message}")]
    Scanner {
        /// The address.
        addr: String,
        /// clamd's message.
        message: String,
    },
}

impl ClamdError {
    /// Whether the connection itself failed (so a replay on another address may succeed).
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Io { .. })
    }
}

/// The verdict of a completed scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanVerdict {
    /// No signature matched.
    Clean,
    /// A signature matched.
    Infected {
        /// The signature name.
        signature: String,
    },
}

/// A verdict plus where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// The verdict.
    pub verdict: ScanVerdict,
    /// The clamd address that scanned.
    pub addr: String,
    /// That clamd's signature DB version (from its last `VERSION`), if known.
    pub db_version: Option<u32>,
}

/// Timeouts and framing for [`ClamdClient`].
#[derive(Clone, Debug)]
pub struct ClamdSettings {
    /// `host:port` addresses, tried in order (healthy ones first).
    pub addresses: Vec<String>,
    /// TCP connect timeout per address.
    pub connect_timeout: Duration,
    /// Timeout for each write, and for the reply of `PING`/`VERSION`.
    pub io_timeout: Duration,
    /// Timeout for the scan reply after the end frame (clamd scans only then).
    pub scan_timeout: Duration,
    /// INSTREAM frame size (must not exceed clamd's StreamMaxLength).
    pub chunk_size: usize,
}

#[derive(Debug)]
struct AddrState {
    addr: String,
    up: AtomicBool,
    version: RwLock<Option<ClamdVersion>>,
}

/// A pool of clamd addresses with failover. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClamdClient {
    settings: Arc<ClamdSettings>,
    addrs: Arc<Vec<AddrState>>,
}

/// Result of one health probe of one address.
#[derive(Debug)]
pub struct Probe {
    /// The address.
    pub addr: String,
    /// `VERSION` on success (after a `PONG`).
    pub result: Result<ClamdVersion, ClamdError>,
}

// === impl ClamdClient ===

impl ClamdClient {
    /// A client; all addresses start as "up" until a probe or a scan says otherwise.
    pub fn new(settings: ClamdSettings) -> Self {
        let addrs = settings
            .addresses
            .iter()
            .map(|a| AddrState {
                addr: a.clone(),
                up: AtomicBool::new(true),
                version: RwLock::new(None),
            })
            .collect();
        Self {
            settings: Arc::new(settings),
            addrs: Arc::new(addrs),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ClamdSettings {
        &self.settings
    }

    /// Addresses in try order: those currently up first, then the rest (so a pool that is all
    /// "down" is still tried — the health state is a hint, not a gate).
    fn try_order(&self) -> Vec<&AddrState> {
        let (mut up, down): (Vec<&AddrState>, Vec<&AddrState>) = self
            .addrs
            .iter()
            .partition(|a| a.up.load(Ordering::Relaxed));
        up.extend(down);
        up
    }

    fn state(&self, addr: &str) -> Option<&AddrState> {
        self.addrs.iter().find(|a| a.addr == addr)
    }

    fn mark(&self, addr: &str, up: bool) {
        if let Some(state) = self.state(addr) {
            state.up.store(up, Ordering::Relaxed);
        }
    }

    /// The DB version a scan started now would most likely use (first healthy address).
    pub fn preferred_db_version(&self) -> Option<u32> {
        let first = *self.try_order().first()?;
        first
            .version
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?
            .db_version
    }

    fn db_version_of(&self, addr: &str) -> Option<u32> {
        self.state(addr)?
            .version
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?
            .db_version
    }

    /// Whether at least one address is currently considered up.
    pub fn any_up(&self) -> bool {
        self.addrs.iter().any(|a| a.up.load(Ordering::Relaxed))
    }

    async fn connect(&self, addr: &str) -> Result<TcpStream, ClamdError> {
        match timeout(self.settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(source)) => Err(ClamdError::Connect {
                addr: addr.to_owned(),
                source,
            }),
            Err(_) => Err(ClamdError::Connect {
                addr: addr.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            }),
        }
    }

    /// Sends a simple command (`zPING\0`, `zVERSION\0`) to one address and returns the reply.
    pub async fn command(&self, addr: &str, cmd: &[u8]) -> Result<Vec<u8>, ClamdError> {
        let mut stream = self.connect(addr).await?;
        let io = self.settings.io_timeout;
        io_step(addr, "sending a command", io, stream.write_all(cmd)).await?;
        read_reply(&mut stream, addr, io).await
    }

    /// `zPING` → `PONG` on one address.
    pub async fn ping(&self, addr: &str) -> Result<(), ClamdError> {
        let reply = self.command(addr, b"zPING\0").await?;
        if reply.trim_ascii_end() == b"PONG" {
            Ok(())
        } else {
            Err(ClamdError::Scanner {
                addr: addr.to_owned(),
                message: format!(
                    "unexpected PING reply: {}",
                    truncate(&String::from_utf8_lossy(&reply))
                ),
            })
        }
    }

    /// `zVERSION` on one address.
    pub async fn version(&self, addr: &str) -> Result<ClamdVersion, ClamdError> {
        let reply = self.command(addr, b"zVERSION\0").await?;
        parse_version(&reply).ok_or_else(|| ClamdError::Scanner {
            addr: addr.to_owned(),
            message: format!(
                "unexpected VERSION reply: {}",
                truncate(&String::from_utf8_lossy(&reply))
            ),
        })
    }

    /// Probes every address (`PING`, then `VERSION`), updates the health state and returns the
    /// results in configuration order.
    pub async fn probe_all(&self) -> Vec<Probe> {
        let mut probes = Vec::with_capacity(self.addrs.len());
        for state in self.addrs.iter() {
            let result = match self.ping(&state.addr).await {
                Ok(()) => self.version(&state.addr).await,
                Err(err) => Err(err),
            };
            state.up.store(result.is_ok(), Ordering::Relaxed);
            if let Ok(version) = &result {
                *state.version.write().unwrap_or_else(|p| p.into_inner()) = Some(version.clone());
            }
            probes.push(Probe {
                addr: state.addr.clone(),
                result,
            });
        }
        probes
    }

    /// Opens an INSTREAM session on the first address that accepts one (failover on connect
    /// errors; failed addresses are marked down).
    pub async fn start_instream(&self) -> Result<InstreamSession, ClamdError> {
        let mut last = ClamdError::NoAddress;
        for state in self.try_order() {
            let addr = state.addr.as_str();
            let attempt = async {
                let mut stream = self.connect(addr).await?;
                io_step(
                    addr,
                    "starting INSTREAM",
                    self.settings.io_timeout,
                    stream.write_all(b"zINSTREAM\0"),
                )
                .await?;
                Ok::<_, ClamdError>(stream)
            };
            match attempt.await {
                Ok(stream) => {
                    return Ok(InstreamSession {
                        client: self.clone(),
                        stream,
                        addr: addr.to_owned(),
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "clamd address failed, trying the next one");
                    self.mark(addr, false);
                    last = err;
                }
            }
        }
        Err(last)
    }

    /// Scans an in-memory buffer.
    pub async fn scan_bytes(&self, data: &[u8]) -> Result<Scanned, ClamdError> {
        let mut session = self.start_instream().await?;
        session.send(data).await?;
        session.finish().await
    }

    /// Scans everything `reader` yields.
    pub async fn scan_reader<R: AsyncRead + Unpin>(
        &self,
        mut reader: R,
    ) -> Result<Scanned, ClamdError> {
        let mut session = self.start_instream().await?;
        let mut buf = vec![0u8; self.settings.chunk_size.max(1)];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|source| ClamdError::Io {
                    addr: session.addr.clone(),
                    op: "reading the spool",
                    source,
                })?;
            if n == 0 {
                break;
            }
            session.send(&buf[..n]).await?;
        }
        session.finish().await
    }
}

/// An open `INSTREAM`: [`send`](Self::send) data as it arrives, then [`finish`](Self::finish).
/// Dropping it without finishing abandons the scan (clamd discards the stream).
#[derive(Debug)]
pub struct InstreamSession {
    client: ClamdClient,
    stream: TcpStream,
    addr: String,
}

// === impl InstreamSession ===

impl InstreamSession {
    /// The address this session scans on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `data` as one or more frames. On failure the address is marked down; if clamd
    /// already replied with an error (e.g. size limit) that error is returned.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ClamdError> {
        let settings = &self.client.settings;
        let res = io_step(
            &self.addr,
            "streaming data",
            settings.io_timeout,
            write_frames(&mut self.stream, data, settings.chunk_size),
        )
        .await;
        if let Err(err) = res {
            return Err(self.fail(err).await);
        }
        Ok(())
    }

    /// Sends the end frame and waits (at most `scan_timeout`) for the verdict.
    pub async fn finish(mut self) -> Result<Scanned, ClamdError> {
        let settings = self.client.settings.clone();
        if let Err(err) = io_step(
            &self.addr,
            "ending INSTREAM",
            settings.io_timeout,
            self.stream.write_all(&END_FRAME),
        )
        .await
        {
            return Err(self.fail(err).await);
        }
        let reply = match read_reply(&mut self.stream, &self.addr, settings.scan_timeout).await {
            Ok(reply) => reply,
            Err(err) => {
                self.client.mark(&self.addr, false);
                return Err(err);
            }
        };
        let verdict = match parse_reply(&reply) {
            Reply::Clean => ScanVerdict::Clean,
            Reply::Infected { signature } => ScanVerdict::Infected { signature },
            Reply::Error { message } => {
                return Err(ClamdError::Scanner {
                    addr: self.addr,
                    message,
                });
            }
        };
        self.client.mark(&self.addr, true);
        let db_version = self.client.db_version_of(&self.addr);
        Ok(Scanned {
            verdict,
            addr: self.addr,
            db_version,
        })
    }

    /// After a failed write: prefer clamd's own error reply (it closes the connection after
    /// `INSTREAM size limit exceeded. ERROR`), else the write error; mark the address down.
    async fn fail(&mut self, err: ClamdError) -> ClamdError {
        if let Ok(reply) =
            read_reply(&mut self.stream, &self.addr, Duration::from_millis(500)).await
            && let Reply::Error { message } = parse_reply(&reply)
        {
            return ClamdError::Scanner {
                addr: self.addr.clone(),
                message,
            };
        }
        if err.is_transport() || matches!(err, ClamdError::Timeout { .. }) {
            self.client.mark(&self.addr, false);
        }
        err
    }
}

async fn io_step<T>(
    addr: &str,
    op: &'static str,
    limit: Duration,
    fut: impl Future<Output = std::io::Result<T>>,
) -> Result<T, ClamdError> {
    match timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(ClamdError::Io {
            addr: addr.to_owned(),
            op,
            source,
        }),
        Err(_) => Err(ClamdError::Timeout {
            addr: addr.to_owned(),
            op,
        }),
    }
}

/// Reads until NUL or EOF (at most [`MAX_REPLY_LEN`] bytes) within `limit`.
async fn read_reply(
    stream: &mut TcpStream,
    addr: &str,
    limit: Duration,
) -> Result<Vec<u8>, ClamdError> {
    let read = async {
        let mut reply = Vec::with_capacity(64);
        let mut buf = [0u8; 512];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.contains(&0) {
                break;
            }
            if reply.len() > MAX_REPLY_LEN {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "reply too long",
                ));
            }
        }
        if let Some(pos) = reply.iter().position(|&b| b == 0) {
            reply.truncate(pos);
        }
        if reply.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed without a reply",
            ));
        }
        Ok(reply)
    };
    io_step(addr, "waiting for the reply", limit, read).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(raw: &str, expect: Reply) {
        assert_eq!(parse_reply(raw.as_bytes()), expect, "input {raw:?}");
    }

    fn infected(sig: &str) -> Reply {
        Reply::Infected {
            signature: sig.into(),
        }
    }

    fn error(msg: &str) -> Reply {
        Reply::Error {
            message: msg.into(),
        }
    }

    #[test]
    fn replies() {
        check("stream: OK\0", Reply::Clean);
        check("stream: OK", Reply::Clean);
        check("stream: OK\n", Reply::Clean);
        check("1: stream: OK\0", Reply::Clean);
        check(
            "stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0",
            infected("Eicar-Test-Signature.UNOFFICIAL"),
        );
        check(
            "3: stream: Win.Test.EICAR_HDB-1 FOUND\0",
            infected("Win.Test.EICAR_HDB-1"),
        );
        check(
            "stream: Heuristics.Limits.Exceeded.MaxScanTime FOUND",
            infected("Heuristics.Limits.Exceeded.MaxScanTime"),
        );
        check(
            "INSTREAM size limit exceeded. ERROR\0",
            error("INSTREAM size limit exceeded."),
        );
        check(
            "stream: Can't allocate memory ERROR\0",
            error("stream: Can't allocate memory"),
        );
        check(
            "UNKNOWN COMMAND\0",
            error("unexpected reply: UNKNOWN COMMAND"),
        );
        check("", error("empty reply"));
        check("\0\0", error("empty reply"));
        check("stream:  FOUND", error("unexpected reply: stream:  FOUND"));
        check("FOUND", error("unexpected reply: FOUND"));
        check("OK", error("unexpected reply: OK"));
        check("stream: OK ERROR", error("stream: OK"));
        check("PONG", error("unexpected reply: PONG"));
    }

    #[test]
    fn invalid_utf8_and_long_replies_are_errors() {
        assert!(matches!(
            parse_reply(b"stream: \xff\xfe FOUND"),
            Reply::Infected { .. }
        ));
        let long = format!("stream: {} ERROR", "x".repeat(5000));
        let Reply::Error { message } = parse_reply(long.as_bytes()) else {
            panic!()
        };
        assert_eq!(message.chars().count(), 256);
    }

    /// The fuzz target's invariant on pseudo-random inputs built from reply fragments, on stable.
    #[test]
    fn only_literal_ok_is_clean() {
        let parts: [&[u8]; 10] = [
            b"stream", b": ", b"OK", b" FOUND", b" ERROR", b"\0", b"1", b"\xff", b"Sig", b" ",
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..(x % 7) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.extend_from_slice(parts[(x % 10) as usize]);
            }
            x = x.wrapping_add(1);
            if parse_reply(&input) == Reply::Clean {
                let text = String::from_utf8_lossy(&input);
                assert!(
                    text.trim_end_matches(['\0', '\n', '\r', ' '])
                        .ends_with(": OK"),
                    "{input:?}"
                );
            }
            let _ = parse_version(&input);
        }
    }

    #[tokio::test]
    async fn frames() {
        let cases: &[(&[u8], usize, &[u8])] = &[
            (b"", 4, b""),
            (b"abc", 4, b"\0\0\0\x03abc"),
            (b"abcd", 4, b"\0\0\0\x04abcd"),
            (b"abcdef", 4, b"\0\0\0\x04abcd\0\0\0\x02ef"),
            (b"ab", 1, b"\0\0\0\x01a\0\0\0\x01b"),
            (b"ab", 0, b"\0\0\0\x01a\0\0\0\x01b"),
        ];
        for (data, chunk, expect) in cases {
            let mut out = Vec::new();
            write_frames(&mut out, data, *chunk).await.unwrap();
            assert_eq!(&out, expect, "data {data:?} chunk {chunk}");
        }
        let big = vec![7u8; 70_000];
        let mut out = Vec::new();
        write_frames(&mut out, &big, 65_536).await.unwrap();
        assert_eq!(&out[..4], &65_536u32.to_be_bytes());
        assert_eq!(
            &out[4 + 65_536..8 + 65_536],
            &(70_000u32 - 65_536).to_be_bytes()
        );
        assert_eq!(out.len(), 70_000 + 8);
    }

    #[test]
    fn versions() {
        let v = parse_version(b"ClamAV 1.4.6/27500/Mon Nov 23 09:12:00 2026\0").unwrap();
        assert_eq!(v.engine, "1.4.6");
        assert_eq!(v.db_version, Some(27500));
        assert_eq!(
            v.db_time,
            Some(time::macros::datetime!(2026-11-23 09:12:00 UTC))
        );
        let now = time::macros::datetime!(2026-11-23 11:12:00 UTC);
        assert_eq!(v.db_age(now), Some(Duration::from_secs(7200)));

        let v = parse_version(b"ClamAV 1.0.0/26000/Tue Jan  3 08:00:01 2023").unwrap();
        assert_eq!(
            v.db_time,
            Some(time::macros::datetime!(2023-01-03 08:00:01 UTC))
        );

        let v = parse_version(b"ClamAV 1.4.6\0").unwrap();
        assert_eq!(
            (v.engine.as_str(), v.db_version, v.db_time),
            ("1.4.6", None, None)
        );

        assert_eq!(parse_version(b"PONG"), None);
        assert_eq!(parse_version(b"ClamAV "), None);
    }
}
