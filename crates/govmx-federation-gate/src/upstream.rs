//! The way to Synapse's plain federation listener, per inbound connection: a small HTTP/1.1
//! client of our own.
//!
//! Each inbound (TLS) connection gets its own keep-alive connection to the upstream, opened on
//! its first forwarded request. HTTP/1 answers one request at a time, so a connection pair
//! needs no pool, no dispatcher and no task of its own: the request's task writes the request
//! and reads the answer itself. This exchange replaced hyper's client connection, which cost
//! about a quarter of the gate's user-space instructions per forwarded request (a dispatcher
//! task, a channel per request, a `HeaderMap` built and then stripped of hop-by-hop headers;
//! `docs/benchmarks.md`).
//!
//! What it speaks: the request head in origin form with the caller's headers (`Host` added
//! when missing), the body with its `Content-Length`, or chunked when its length is unknown.
//! The answer's body is framed as RFC 9112 §6.3 says (no body for `HEAD`, 1xx, 204 and 304;
//! chunked; `Content-Length`; else until the upstream closes); interim 1xx answers are
//! skipped; hop-by-hop headers (and the ones `Connection` names) never enter the response.
//! An answer whose body is already in the read buffer (the usual small JSON) is returned as
//! one piece and the connection is free at once; a longer one streams, and the connection is
//! free again when its last byte has been read.
//!
//! An idle upstream connection that Synapse closed is replaced: a request that was not sent on
//! it (the close was seen first, or the first write failed before any byte left) goes out on a
//! new connection; a request that was sent is never repeated.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Time allowed for the TCP connect to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer head accepted from the upstream.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines accepted in an answer head.
const MAX_HEADERS: usize = 128;
/// Request bytes gathered before a write: a small request leaves in one `write`.
const WRITE_CHUNK: usize = 64 * 1024;
/// Read buffer space reserved before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked answer.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why a request could not be sent or answered.
pub type UpstreamError = Box<dyn std::error::Error + Send + Sync>;

/// One inbound connection's way to the upstream; see the module docs.
#[derive(Debug)]
pub struct Upstream {
    authority: http::uri::Authority,
    host: HeaderValue,
    idle: Arc<Slot>,
}

/// Where a connection waits between requests (taken by a request, put back by its answer).
#[derive(Debug, Default)]
struct Slot(Mutex<Option<Connection>>);

impl Slot {
    fn take(&self) -> Option<Connection> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn put(&self, connection: Connection) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection);
    }
}

/// A keep-alive connection to the upstream and its buffers (reused across requests).
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
}

impl Upstream {
    /// An upstream at `authority` (`host:port`).
    pub fn new(authority: http::uri::Authority) -> Upstream {
        let host = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Upstream {
            authority,
            host,
            idle: Arc::default(),
        }
    }

    /// Sends `req` (origin-form URI) and returns the answer; a body longer than what arrived
    /// with the head streams from the connection. Adds `Host` when the request has none.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let (parts, mut body) = req.into_parts();
        let mut reused = self.idle.take();
        if let Some(connection) = &mut reused
            && !connection.is_open().await
        {
            reused = None;
        }
        let fresh = reused.is_none();
        let mut connection = match reused {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        let framing = connection.encode_head(&parts, &self.host, &body);
        let streamed = connection.gather_body(&mut body, framing).await?;
        // The first write on a reused connection that failed before any byte left: the
        // upstream closed it meanwhile; the same bytes go out once more on a new connection.
        if let Err((error, sent)) = connection.write_first().await {
            if fresh || sent {
                return Err(error.into());
            }
            let write = std::mem::take(&mut connection.write);
            connection = self.connect().await?;
            connection.write = write;
            connection.write_first().await.map_err(|(error, _)| error)?;
        }
        if streamed {
            connection.stream_body(&mut body, framing).await?;
        }
        let head_only = parts.method == Method::HEAD;
        connection.read_answer(head_only, &self.idle).await
    }

    async fn connect(&self) -> Result<Connection, UpstreamError> {
        let stream =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.authority.as_str()))
                .await
                .map_err(|_| format!("connecting to {} timed out", self.authority))??;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(1024),
        })
    }
}

/// How the request body is framed on the upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length` (the client's, or the buffered body's).
    Length,
    /// `Transfer-Encoding: chunked` (a streamed body of unknown length).
    Chunked,
}

impl Connection {
    /// Whether an idle connection can take a request: no close (or stray bytes) seen on it.
    /// Costs no system call unless the socket became readable since the last answer.
    async fn is_open(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        std::future::poll_fn(|cx| {
            Poll::Ready(match self.stream.poll_read_ready(cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                Poll::Ready(Ok(())) => matches!(
                    self.stream.try_read(&mut [0u8; 1]),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock
                ),
            })
        })
        .await
    }

    /// Writes the request line and headers into the write buffer; returns the body's framing.
    fn encode_head(
        &mut self,
        parts: &http::request::Parts,
        host: &HeaderValue,
        body: &Body,
    ) -> RequestFraming {
        let out = &mut self.write;
        out.clear();
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &parts.headers {
            put_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
        if !parts.headers.contains_key(header::HOST) {
            put_header(out, b"host", host.as_bytes());
        }
        let framing = if parts.headers.contains_key(header::CONTENT_LENGTH) {
            RequestFraming::Length
        } else {
            match body.size_hint().exact() {
                Some(0) if !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) => {
                    RequestFraming::Empty
                }
                Some(length) => {
                    put_header(out, b"content-length", length.to_string().as_bytes());
                    RequestFraming::Length
                }
                None => {
                    put_header(out, b"transfer-encoding", b"chunked");
                    RequestFraming::Chunked
                }
            }
        };
        out.extend_from_slice(b"\r\n");
        framing
    }

    /// Appends the body to the write buffer while it fits one write; returns whether more of
    /// it is still to come (then [`Connection::stream_body`] sends the rest).
    async fn gather_body(
        &mut self,
        body: &mut Body,
        framing: RequestFraming,
    ) -> Result<bool, UpstreamError> {
        if framing == RequestFraming::Empty {
            return Ok(false);
        }
        while self.write.len() < WRITE_CHUNK {
            if body.is_end_stream() {
                self.finish_body(framing);
                return Ok(false);
            }
            match body.frame().await {
                None => {
                    self.finish_body(framing);
                    return Ok(false);
                }
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.put_body(&data, framing);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Writes the rest of a long body, gathering it in pieces of [`WRITE_CHUNK`].
    async fn stream_body(
        &mut self,
        body: &mut Body,
        framing: RequestFraming,
    ) -> Result<(), UpstreamError> {
        self.write.clear();
        loop {
            let more = self.gather_body(body, framing).await?;
            self.stream.write_all(&self.write).await?;
            self.write.clear();
            if !more {
                return Ok(());
            }
        }
    }

    fn put_body(&mut self, data: &[u8], framing: RequestFraming) {
        if data.is_empty() {
            return;
        }
        if framing == RequestFraming::Chunked {
            self.write
                .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            self.write.extend_from_slice(data);
            self.write.extend_from_slice(b"\r\n");
        } else {
            self.write.extend_from_slice(data);
        }
    }

    fn finish_body(&mut self, framing: RequestFraming) {
        if framing == RequestFraming::Chunked {
            self.write.extend_from_slice(b"0\r\n\r\n");
        }
    }

    /// Writes the gathered bytes; an error says whether any of them left before it.
    async fn write_first(&mut self) -> Result<(), (io::Error, bool)> {
        let mut written = 0;
        while written < self.write.len() {
            match self.stream.write(&self.write[written..]).await {
                Ok(0) => return Err((io::ErrorKind::WriteZero.into(), written > 0)),
                Ok(n) => written += n,
                Err(error) => return Err((error, written > 0)),
            }
        }
        Ok(())
    }

    /// Reads more bytes into the read buffer; `Ok(0)` when the upstream closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Reads the answer head (skipping interim 1xx answers) and builds the response.
    async fn read_answer(
        mut self,
        head_only: bool,
        idle: &Arc<Slot>,
    ) -> Result<Response<Body>, UpstreamError> {
        loop {
            let head = loop {
                match parse_head(&self.read)? {
                    Some(head) => break head,
                    None if self.read.len() > MAX_HEAD_BYTES => {
                        return Err("the upstream's answer head is too large".into());
                    }
                    None => {
                        if self.fill().await? == 0 {
                            return Err(
                                "the upstream closed the connection before answering".into()
                            );
                        }
                    }
                }
            };
            self.read.advance(head.length);
            if head.status.is_informational() {
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err("the upstream switched protocols".into());
                }
                continue;
            }
            let framing = if head_only
                || head.status == StatusCode::NO_CONTENT
                || head.status == StatusCode::NOT_MODIFIED
            {
                Framing::Length(0)
            } else {
                head.framing
            };
            let mut response = Response::new(Body::empty());
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            let reusable = head.keep_alive && framing != Framing::UntilClose;
            let mut body = UpstreamBody {
                connection: Some(self),
                framing,
                reusable,
                idle: Arc::clone(idle),
            };
            // The usual case: the whole body came with the head.
            if let Some(whole) = body.take_whole() {
                *response.body_mut() = Body::from(whole);
            } else {
                *response.body_mut() = Body::new(body);
            }
            return Ok(response);
        }
    }
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A parsed answer head.
#[derive(Debug)]
struct Head {
    /// Bytes of the head, blank line included.
    length: usize,
    status: StatusCode,
    /// Without hop-by-hop headers and the ones `Connection` names.
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Parses an answer head from the start of `buf`: `None` while incomplete. One pass over the
/// header lines: each name is classified once, as the `HeaderName` the map stores.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, UpstreamError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    )? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(length) => length,
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0))?;
    let http10 = parsed.version != Some(1);
    let mut keep_alive = !http10;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<bool> = None;
    let mut named_by_connection = false;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for line in parsed.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes())?;
        if name == header::CONNECTION {
            for token in tokens(line.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive |= http10;
                } else {
                    named_by_connection = true;
                }
            }
            continue;
        }
        if name == header::CONTENT_LENGTH {
            let value = std::str::from_utf8(line.value)
                .ok()
                .map(str::trim)
                .filter(|value| !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|value| value.parse::<u64>().ok())
                .ok_or("the upstream sent an invalid Content-Length")?;
            if content_length.is_some_and(|previous| previous != value) {
                return Err("the upstream sent conflicting Content-Length values".into());
            }
            content_length = Some(value);
        } else if name == header::TRANSFER_ENCODING {
            // Chunked only when it is the last coding of the last Transfer-Encoding line.
            let last = tokens(line.value).last();
            transfer_encoding =
                Some(last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")));
        }
        if !govmx_service::proxy::is_hop_by_hop(&name) {
            headers.append(name, HeaderValue::from_bytes(line.value)?);
        }
    }
    if transfer_encoding.is_some() {
        // With Transfer-Encoding the length is the decoded body's, not the one sent.
        headers.remove(header::CONTENT_LENGTH);
        if content_length.is_some() {
            // RFC 9112 §6.1: possibly smuggled; do not reuse the connection.
            keep_alive = false;
        }
    }
    if named_by_connection {
        for line in parsed.headers.iter() {
            if line.name.eq_ignore_ascii_case("connection") {
                for token in tokens(line.value) {
                    if let Ok(named) = HeaderName::from_bytes(token) {
                        headers.remove(named);
                    }
                }
            }
        }
    }
    let framing = match (transfer_encoding, content_length) {
        (Some(true), _) => Framing::Chunked(Chunk::Size),
        (Some(false), _) => Framing::UntilClose,
        (None, Some(length)) => Framing::Length(length),
        (None, None) => Framing::UntilClose,
    };
    Ok(Some(Head {
        length,
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until a blank one.
    Trailers,
    /// The body is complete.
    Done,
}

/// One step of decoding a chunked body from `buf`.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Data(Bytes),
    NeedMore,
    Done,
}

/// Decodes as much of a chunked body as `buf` holds, up to the next data piece.
fn decode_chunked(state: &mut Chunk, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
    loop {
        match *state {
            Chunk::Done => return Ok(Decoded::Done),
            Chunk::Data(remaining) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                let data = buf.split_to(n).freeze();
                let left = remaining - n as u64;
                *state = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                return Ok(Decoded::Data(data));
            }
            Chunk::DataEnd => match buf.first() {
                None => return Ok(Decoded::NeedMore),
                Some(b'\n') => {
                    buf.advance(1);
                    *state = Chunk::Size;
                }
                Some(b'\r') => match buf.get(1) {
                    None => return Ok(Decoded::NeedMore),
                    Some(b'\n') => {
                        buf.advance(2);
                        *state = Chunk::Size;
                    }
                    Some(_) => return Err("a chunk's data is not followed by CRLF"),
                },
                Some(_) => return Err("a chunk's data is not followed by CRLF"),
            },
            Chunk::Size | Chunk::Trailers => {
                let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err("a chunk-size or trailer line is too long");
                    }
                    return Ok(Decoded::NeedMore);
                };
                if end > MAX_CHUNK_LINE {
                    return Err("a chunk-size or trailer line is too long");
                }
                let line = buf.split_to(end + 1);
                let line = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
                if *state == Chunk::Trailers {
                    if line.is_empty() {
                        *state = Chunk::Done;
                    }
                    continue;
                }
                let size = chunk_size(line)?;
                *state = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
            }
        }
    }
}

/// The hexadecimal size at the start of a chunk-size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 15 || !(rest.is_empty() || rest.starts_with(b";")) {
        return Err("invalid chunk size");
    }
    line[..digits].iter().try_fold(0u64, |size, &b| {
        let digit = (b as char).to_digit(16).ok_or("invalid chunk size")?;
        Ok(size * 16 + u64::from(digit))
    })
}

/// One answer decoded from `bytes` as the exchange decodes it (head, then the body by its
/// framing, as far as `bytes` go): `Ok(None)` while the head is incomplete. For the
/// `upstream_answer` fuzz target; never panics.
#[doc(hidden)]
pub fn decode_answer(bytes: &[u8]) -> Result<Option<(StatusCode, HeaderMap, Vec<u8>)>, String> {
    let Some(head) = parse_head(bytes).map_err(|error| error.to_string())? else {
        return Ok(None);
    };
    let mut rest = BytesMut::from(&bytes[head.length..]);
    let body = match head.framing {
        Framing::Length(length) => {
            let n = usize::try_from(length).map_or(rest.len(), |length| length.min(rest.len()));
            rest[..n].to_vec()
        }
        Framing::UntilClose => rest.to_vec(),
        Framing::Chunked(mut state) => {
            let mut body = Vec::new();
            while let Decoded::Data(data) = decode_chunked(&mut state, &mut rest)? {
                body.extend_from_slice(&data);
            }
            body
        }
    };
    Ok(Some((head.status, head.headers, body)))
}

/// An answer body that streams from its upstream connection, which goes back to the idle
/// slot when the body's last byte has been read (and the connection can be reused).
struct UpstreamBody {
    connection: Option<Connection>,
    framing: Framing,
    reusable: bool,
    idle: Arc<Slot>,
}

impl UpstreamBody {
    /// The whole body when it is already in the read buffer (and the connection released).
    fn take_whole(&mut self) -> Option<Bytes> {
        let connection = self.connection.as_mut()?;
        let whole = match self.framing {
            Framing::Length(length) => {
                let length = usize::try_from(length).ok()?;
                if connection.read.len() < length {
                    return None;
                }
                connection.read.split_to(length).freeze()
            }
            _ => return None,
        };
        self.framing = Framing::Length(0);
        self.release();
        Some(whole)
    }

    /// The body is complete: the connection goes back to the idle slot if it can be reused.
    fn release(&mut self) {
        if let Some(connection) = self.connection.take()
            && self.reusable
            && connection.read.is_empty()
        {
            self.idle.put(connection);
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Length(0) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Framing::Length(remaining) => {
                    if !connection.read.is_empty() {
                        let n = usize::try_from(*remaining)
                            .map_or(connection.read.len(), |r| r.min(connection.read.len()));
                        let data = connection.read.split_to(n).freeze();
                        *remaining -= n as u64;
                        if *remaining == 0 {
                            // Released before the last frame: the server may not poll again.
                            this.release();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(state) => match decode_chunked(state, &mut connection.read) {
                    Err(error) => {
                        this.connection = None;
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Done) => {
                        this.release();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                },
                Framing::UntilClose => {
                    if !connection.read.is_empty() {
                        let data = connection.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            // Nothing buffered: read more.
            match ready!(connection.poll_fill(cx)) {
                Err(error) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Ok(0) if this.framing == Framing::UntilClose => {
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(
                        "the upstream closed the connection in the middle of an answer".into(),
                    )));
                }
                Ok(_) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
