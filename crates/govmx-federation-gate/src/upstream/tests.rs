//! The upstream exchange: answer heads and their framing, chunked decoding, and whole requests
//! against a scripted upstream and a real HTTP/1.1 server (hyper).

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::*;

fn head(text: &str) -> Head {
    parse_head(text.as_bytes())
        .unwrap()
        .expect("a complete head")
}

#[test]
fn answer_heads_are_framed_as_rfc_9112_says() {
    let h =
        head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: application/json\r\n\r\n{}");
    assert_eq!(
        (h.status, h.framing, h.keep_alive),
        (StatusCode::OK, Framing::Length(12), true)
    );
    assert_eq!(
        h.length,
        "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: application/json\r\n\r\n".len()
    );
    assert_eq!(h.headers["content-type"], "application/json");

    let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(
        (h.framing, h.keep_alive),
        (Framing::Chunked(Chunk::Size), true)
    );
    assert!(!h.headers.contains_key("transfer-encoding"), "hop-by-hop");

    let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
    assert_eq!(h.framing, Framing::UntilClose);

    let h = head("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n");
    assert_eq!(h.framing, Framing::UntilClose);

    // Both: chunked wins, and the connection is not reused.
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(
        (h.framing, h.keep_alive),
        (Framing::Chunked(Chunk::Size), false)
    );
    assert!(!h.headers.contains_key("content-length"));

    let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    assert!(!h.keep_alive);
    let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(!h.keep_alive);
    let h = head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
    assert!(h.keep_alive);
    // The same value twice is one length.
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(h.framing, Framing::Length(5));
}

#[test]
fn hop_by_hop_headers_and_the_ones_connection_names_stay_behind() {
    let h = head(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n\
         x-secret: 1\r\nUpgrade: h2c\r\nX-Kept: 2\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\
         Content-Length: 0\r\n\r\n",
    );
    let mut names: Vec<&str> = h.headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["content-length", "set-cookie", "x-kept"]);
    assert_eq!(h.headers.get_all("set-cookie").iter().count(), 2);
    assert!(h.keep_alive);
}

#[test]
fn bad_answer_heads_are_errors_and_partial_ones_wait() {
    assert!(
        parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
            .unwrap()
            .is_none()
    );
    assert!(parse_head(b"").unwrap().is_none());
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "SMTP ready\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ] {
        assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

/// Decodes `wire` fed in pieces of `step` bytes; the data and whether the decoder finished.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), &'static str> {
    let mut state = Chunk::Size;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decode_chunked(&mut state, &mut buf)? {
                Decoded::Data(data) => out.extend_from_slice(&data),
                Decoded::NeedMore => break,
                Decoded::Done => return Ok((out, buf.is_empty())),
            }
        }
    }
    Ok((out, false))
}

#[test]
fn chunked_bodies_decode_in_any_pieces() {
    let wire =
        b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
    for step in [1, 2, 3, 7, wire.len()] {
        let (data, done) = dechunk(wire, step).unwrap();
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
        assert!(done, "step {step}");
    }
    // Bare LF line ends are accepted.
    assert_eq!(dechunk(b"2\nok\n0\n\n", 1).unwrap(), (b"ok".to_vec(), true));
    // Incomplete: no end yet.
    assert_eq!(dechunk(b"5\r\nhel", 1).unwrap(), (b"hel".to_vec(), false));
}

#[test]
fn bad_chunked_bodies_are_errors() {
    for bad in [
        &b"x\r\n"[..],
        b"\r\n",
        b"5 x\r\nhello\r\n0\r\n\r\n",
        b"2\r\nokX\r\n0\r\n\r\n",
        b"2\r\nok\rX0\r\n\r\n",
        b"1000000000000000\r\n",
    ] {
        assert!(
            dechunk(bad, 1).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = vec![b'1'; MAX_CHUNK_LINE + 2];
    assert!(dechunk(&long, 64).is_err(), "an endless chunk-size line");
    assert_eq!(chunk_size(b"ffffffffffffff").unwrap(), 0xff_ffff_ffff_ffff);
}

#[test]
fn whole_answers_decode_for_the_fuzz_target() {
    let (status, headers, body) = decode_answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x-a\r\nX-A: 1\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (status, headers.len(), &body[..]),
        (StatusCode::OK, 0, &b"ok"[..])
    );
    let (_, _, body) = decode_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef")
        .unwrap()
        .unwrap();
    assert_eq!(body, b"abc");
    assert_eq!(decode_answer(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
    assert!(decode_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n").is_err());
}

/// A scripted upstream: per connection, answers each request head with the next of
/// `answers`, then closes when `close` is set. Counts connections; keeps the request heads.
struct Scripted {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(answers: &'static [&'static [u8]], close: bool) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let (count, seen) = (accepted.clone(), heads.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    for answer in answers {
                        let head = loop {
                            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head: Vec<u8> = pending.drain(..end + 4).collect();
                                break String::from_utf8(head).unwrap();
                            }
                            let mut buf = [0u8; 4096];
                            match tcp.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => pending.extend_from_slice(&buf[..n]),
                            }
                        };
                        seen.lock().unwrap().push(head);
                        tcp.write_all(answer).await.unwrap();
                    }
                    if !close {
                        // Keep the connection open until the client goes.
                        let _ = tcp.read(&mut [0u8; 1]).await;
                    }
                });
            }
        });
        Scripted {
            addr,
            accepted,
            heads,
            _task: task,
        }
    }

    fn upstream(&self) -> Upstream {
        Upstream::new(self.addr.to_string().parse().unwrap())
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("x-test", "1")
        .body(Body::empty())
        .unwrap()
}

async fn text(response: Response<Body>) -> Result<String, axum::Error> {
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn answers_arrive_and_the_connection_is_kept() {
    let s = Scripted::start(
        &[
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n{}",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nend",
        ],
        false,
    )
    .await;
    let up = s.upstream();
    let first = up.send(get("/a?b=c")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(!first.headers().contains_key("connection"));
    assert_eq!(text(first).await.unwrap(), "{}");

    let second = up.send(get("/chunked")).await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED, "the 100 is skipped");
    assert_eq!(text(second).await.unwrap(), "abcde");

    let head = Request::head("/h").body(Body::empty()).unwrap();
    let third = up.send(head).await.unwrap();
    assert_eq!(third.headers()["content-length"], "5");
    assert_eq!(text(third).await.unwrap(), "", "no body after HEAD");

    assert_eq!(text(up.send(get("/n")).await.unwrap()).await.unwrap(), "");
    assert_eq!(
        text(up.send(get("/e")).await.unwrap()).await.unwrap(),
        "end"
    );

    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        1,
        "one connection for all five"
    );
    let heads = s.heads.lock().unwrap().clone();
    assert_eq!(
        heads[0],
        format!(
            "GET /a?b=c HTTP/1.1\r\nx-test: 1\r\nhost: {}\r\n\r\n",
            s.addr
        )
    );
    assert!(heads[2].starts_with("HEAD /h HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_closed_idle_connection_is_replaced() {
    let s = Scripted::start(&[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"], true).await;
    let up = s.upstream();
    for i in 1..=3 {
        assert_eq!(text(up.send(get("/")).await.unwrap()).await.unwrap(), "ok");
        // The close has reached this side (it is what makes the idle connection unusable).
        let closed = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut idle = up.idle.take().expect("kept after a complete answer");
            let open = idle.is_open().await;
            up.idle.put(idle);
            if !open {
                break;
            }
            assert!(
                std::time::Instant::now() < closed,
                "the close never arrived"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(s.accepted.load(Ordering::SeqCst), i);
    }
}

#[tokio::test]
async fn bodies_until_close_and_broken_answers() {
    let s = Scripted::start(&[b"HTTP/1.1 200 OK\r\n\r\nuntil the end"], true).await;
    let up = s.upstream();
    assert_eq!(
        text(up.send(get("/")).await.unwrap()).await.unwrap(),
        "until the end"
    );
    assert!(
        up.idle.take().is_none(),
        "not reused after a close-delimited body"
    );

    // Answers whose heads arrive but whose bodies break off or are badly chunked.
    const BROKEN: [(&[&[u8]], &str); 3] = [
        (
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
            "a body cut short",
        ),
        (
            &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"],
            "a chunked body cut short",
        ),
        (
            &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            "bad chunking",
        ),
    ];
    for (answers, what) in BROKEN {
        let s = Scripted::start(answers, true).await;
        let answer = s.upstream().send(get("/")).await.unwrap();
        assert!(text(answer).await.is_err(), "{what} is an error");
    }

    let s = Scripted::start(&[b"NOT HTTP\r\n\r\n"], true).await;
    assert!(s.upstream().send(get("/")).await.is_err());

    let s = Scripted::start(&[b""], true).await;
    assert!(
        s.upstream().send(get("/")).await.is_err(),
        "closed before answering"
    );
}

/// A real HTTP/1.1 server (hyper) that answers each request with how its body came
/// (`length`, `chunked` or `none`), then the body itself.
async fn echo_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let framing = if req.headers().contains_key("transfer-encoding") {
                        "chunked"
                    } else if let Some(length) = req.headers().get("content-length") {
                        if length == "0" { "zero" } else { "length" }
                    } else {
                        "none"
                    };
                    let body = req.into_body().collect().await?.to_bytes();
                    let mut answer = framing.as_bytes().to_vec();
                    answer.push(b'\n');
                    answer.extend_from_slice(&body);
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(answer))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Sends `req` through `up`; the whole answer body.
async fn exchange(up: &Upstream, req: Request<Body>) -> Bytes {
    let answer = up.send(req).await.unwrap();
    answer.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn request_bodies_reach_a_real_server_with_the_right_framing() {
    let (addr, _task) = echo_upstream().await;
    let up = Upstream::new(addr.to_string().parse().unwrap());
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

    // Known length, larger than one write.
    let req = Request::put("/send/1")
        .body(Body::from(big.clone()))
        .unwrap();
    let answer = exchange(&up, req).await;
    assert_eq!(&answer[..7], b"length\n");
    assert!(answer[7..] == big[..], "the long body arrives intact");

    // Unknown length: chunked, in pieces.
    let pieces: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = big
        .chunks(70_000)
        .map(|piece| Ok(Frame::data(Bytes::copy_from_slice(piece))))
        .collect();
    let stream = StreamBody::new(futures_util::stream::iter(pieces));
    let req = Request::post("/upload").body(Body::new(stream)).unwrap();
    let answer = exchange(&up, req).await;
    assert_eq!(&answer[..8], b"chunked\n");
    assert!(answer[8..] == big[..], "the chunked body arrives intact");

    // An empty POST says so; a GET does not.
    let req = Request::post("/p").body(Body::empty()).unwrap();
    let answer = exchange(&up, req).await;
    assert_eq!(&answer[..], b"zero\n");
    let answer = exchange(&up, get("/g")).await;
    assert_eq!(&answer[..], b"none\n");
}

#[tokio::test]
async fn a_body_error_ends_the_request_with_that_error() {
    let (addr, _task) = echo_upstream().await;
    let up = Upstream::new(addr.to_string().parse().unwrap());
    let pieces: Vec<Result<Frame<Bytes>, io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"part"))),
        Err(io::Error::other("client went away")),
    ];
    let stream = StreamBody::new(futures_util::stream::iter(pieces));
    let req = Request::post("/upload").body(Body::new(stream)).unwrap();
    let error = up.send(req).await.unwrap_err();
    assert!(error.to_string().contains("client went away"), "{error}");
    assert!(
        up.idle.take().is_none(),
        "a half-sent request's connection is not kept"
    );
}
