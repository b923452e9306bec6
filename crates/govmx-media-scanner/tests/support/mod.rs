//! Test harness: a real clamd per test (own temp dir, own port, killed on drop), a fake clamd that
//! hangs, a fake Synapse recording what it received, the gate itself, and raw HTTP helpers.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::Method, http::Uri};
use govmx_media_scanner::{Server, config::Config};
use govmx_service::{Shutdown, ShutdownTrigger};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The 68-byte EICAR test file, built at run time (never committed).
pub fn eicar() -> Vec<u8> {
    let parts = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    ];
    let v = parts.concat().into_bytes();
    assert_eq!(v.len(), 68);
    v
}

/// The signature our test DB gives EICAR.
pub const EICAR_SIG: &str = "Eicar-Test-Signature.UNOFFICIAL";

/// Polls `f` every 20 ms until it returns `Some`, panicking after `limit`.
pub async fn poll<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free loopback port (bind :0, read, release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real clamd in its own temp dir on its own port; killed on drop.
pub struct Clamd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Clamd {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(
            dir.path().join("db/test.hdb"),
            "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n",
        )
        .unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "DatabaseDirectory {d}/db\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\nLogFile {d}/clamd.log\n\
             PidFile {d}/clamd.pid\nStreamMaxLength 100M\nMaxScanSize 400M\nMaxFileSize 100M\nSelfCheck 600\n"
        );
        std::fs::write(dir.path().join("clamd.conf"), conf).unwrap();
        let mut clamd = Self {
            dir,
            port,
            child: None,
        };
        clamd.spawn().await;
        clamd
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("/usr/sbin/clamd")
            .arg("-c")
            .arg(self.dir.path().join("clamd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn clamd");
        self.child = Some(child);
        let addr = self.addr();
        poll("clamd PONG", Duration::from_secs(60), async || {
            let mut s = TcpStream::connect(&addr).await.ok()?;
            s.write_all(b"zPING\0").await.ok()?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).await.ok()?;
            buf[..n].starts_with(b"PONG").then_some(())
        })
        .await;
    }

    /// Kills clamd and waits until the port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let addr = self.addr();
        poll("clamd port closed", Duration::from_secs(10), async || {
            TcpStream::connect(&addr).await.is_err().then_some(())
        })
        .await;
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fake clamd that accepts connections and never answers; aborted on drop.
pub struct HangingClamd {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HangingClamd {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        Self { addr, task }
    }
}

impl Drop for HangingClamd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the fake Synapse received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Files in the spool dir while the request was being handled, with their modes.
    pub spool_files: Vec<u32>,
}

/// A fake Synapse on 127.0.0.1:0 recording every request; aborted on drop.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct UpstreamState {
    received: Arc<Mutex<Vec<Received>>>,
    spool_dir: PathBuf,
}

async fn record(
    State(s): State<UpstreamState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use std::os::unix::fs::PermissionsExt;
    // Looked at before the body is read: the gate cannot have finished sending a large body yet.
    let spool_files = std::fs::read_dir(&s.spool_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().permissions().mode() & 0o777)
        .collect();
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = uri.path().to_owned();
    s.received.lock().unwrap().push(Received {
        method,
        uri,
        headers,
        body,
        spool_files,
    });
    let body = if path.contains("/upload") {
        r#"{"content_uri":"mxc://example.org/AbCdEf"}"#
    } else {
        r#"{"passed":"through"}"#
    };
    (
        [
            ("content-type", "application/json"),
            ("x-upstream", "synapse"),
        ],
        body,
    )
        .into_response()
}

use axum::response::IntoResponse;

impl FakeUpstream {
    pub async fn start(spool_dir: &Path) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = UpstreamState {
            received: received.clone(),
            spool_dir: spool_dir.to_owned(),
        };
        let app = Router::new()
            .fallback(record)
            .with_state(state)
            .layer(axum::extract::DefaultBodyLimit::disable());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            received,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gate under test with its temp dir; shut down on drop.
pub struct Gate {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gate {
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn spool_files(&self) -> usize {
        std::fs::read_dir(self.spool_dir()).unwrap().count()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.trigger.trigger();
        self.task.abort();
    }
}

/// A gate dir with its spool subdir; create it before the fake upstream (which watches it).
pub fn gate_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("spool")).unwrap();
    dir
}

/// Starts the gate in `dir` with `extra` YAML appended to a base config.
pub async fn start_gate(
    dir: tempfile::TempDir,
    upstream: SocketAddr,
    clamd: &[String],
    extra: &str,
) -> Gate {
    let d = dir.path().display();
    let addrs: Vec<String> = clamd.iter().map(|a| format!("\"{a}\"")).collect();
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nupstream: http://{upstream}\n\
         clamd:\n  addresses: [{}]\n  connect_timeout: 1s\n  io_timeout: 5s\n  scan_timeout: 10s\n  health_interval: 1s\n\
         spool:\n  dir: {d}/spool\n  memory_limit: 1MiB\naudit_log: {d}/audit.jsonl\n\
         mime:\n  block: [application/x-executable, application/vnd.microsoft.portable-executable]\n\
         drain_timeout: 1s\n{extra}",
        addrs.join(", ")
    );
    let yaml = if yaml.contains("max_upload_size") {
        yaml
    } else {
        format!("{yaml}max_upload_size: 8MiB\n")
    };
    let config: Config =
        govmx_service::config::from_yaml_str_validated(&yaml, "test.yaml").unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let admin = server.admin_addr().unwrap();
    let (trigger, shutdown): (ShutdownTrigger, Shutdown) = Shutdown::manual();
    let task = tokio::spawn(server.serve(shutdown));
    Gate {
        dir,
        addr,
        admin,
        trigger,
        task,
    }
}

/// An HTTP client that ignores proxy settings from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A raw HTTP/1.1 exchange: writes `head`, then each of `body_parts` (ignoring write errors after
/// the server stopped reading), then reads the response head within 10 s.
pub async fn raw_exchange(addr: SocketAddr, head: &str, body_parts: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for part in body_parts {
        if s.write_all(part).await.is_err() {
            break;
        }
    }
    read_head(&mut s).await
}

/// Reads until the end of a response head (or EOF), within 10 s.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if out.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("response within 10s");
    String::from_utf8_lossy(&out).into_owned()
}

/// A 1×1 RGBA PNG built here: signature, IHDR, IDAT (zlib stored block), IEND with real CRCs.
pub fn tiny_png() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    }
    let raw = [0u8, 0xff, 0x00, 0x00, 0xff]; // filter byte + one red pixel
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    let mut zlib = vec![
        0x78,
        0x01,
        0x01,
        raw.len() as u8,
        0,
        !(raw.len() as u8),
        0xff,
    ];
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0]);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// Deterministic non-text bytes.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A scripted clamd speaking the real protocol: `PING`, `VERSION` (with a DB version we can
/// change) and `INSTREAM`, answering `FOUND` when the stream contains `EICAR`, `ERROR` when it
/// contains `BREAKME`, else `OK`. Counts the streams it scanned; aborted on drop.
pub struct ScriptedClamd {
    pub addr: SocketAddr,
    pub version: Arc<Mutex<String>>,
    pub scans: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedClamd {
    pub async fn start(version: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let version = Arc::new(Mutex::new(version.to_owned()));
        let scans = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (v, n) = (version.clone(), scans.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (v, n) = (v.clone(), n.clone());
                tokio::spawn(async move {
                    let _ = serve_scripted(sock, v, n).await;
                });
            }
        });
        Self {
            addr,
            version,
            scans,
            task,
        }
    }

    pub fn scans(&self) -> usize {
        self.scans.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn serve_scripted(
    mut sock: TcpStream,
    version: Arc<Mutex<String>>,
    scans: Arc<std::sync::atomic::AtomicUsize>,
) -> std::io::Result<()> {
    let mut cmd = Vec::new();
    loop {
        let b = sock.read_u8().await?;
        if b == 0 {
            break;
        }
        cmd.push(b);
    }
    match &cmd[..] {
        b"zPING" => sock.write_all(b"PONG\0").await?,
        b"zVERSION" => {
            let v = format!("{}\0", version.lock().unwrap());
            sock.write_all(v.as_bytes()).await?
        }
        b"zINSTREAM" => {
            let mut data = Vec::new();
            loop {
                let len = sock.read_u32().await? as usize;
                if len == 0 {
                    break;
                }
                let start = data.len();
                data.resize(start + len, 0);
                sock.read_exact(&mut data[start..]).await?;
            }
            scans.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
            let reply: &[u8] = if has(b"EICAR") {
                b"stream: Eicar-Test-Signature FOUND\0"
            } else if has(b"BREAKME") {
                b"stream: Can't allocate memory ERROR\0"
            } else {
                b"stream: OK\0"
            };
            sock.write_all(reply).await?
        }
        _ => sock.write_all(b"UNKNOWN COMMAND\0").await?,
    }
    Ok(())
}

impl Drop for ScriptedClamd {
    fn drop(&mut self) {
        self.task.abort();
    }
}
