//! The media scanner in-process in front of a stack homeserver, and probes of what Synapse stored.
//!
//! [`Scanner::start`] runs the stack's [`MediaScanner`] on free loopback ports with its own
//! spool dir and audit log, pointed at a homeserver's client listener and the stack's clamd; it
//! stops when dropped. [`stored_media`] reads the homeserver's media store and its
//! `local_media_repository` table, so a test can prove that refused uploads never arrived.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aes::Aes256;
use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ctr::cipher::{KeyIvInit as _, StreamCipher as _};
use govmx_stack::Homeserver;
use govmx_stack::scanner::MediaScanner;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::DEADLINE;

/// The path clients upload media to (the scanner gates it).
pub const UPLOAD_PATH: &str = "/_matrix/media/v3/upload";

/// The MCS API path for encrypted attachments.
pub const SCAN_ENCRYPTED_PATH: &str = "/_matrix/media_proxy/unstable/scan_encrypted";

/// A media scanner serving in this process (the stack's [`MediaScanner`] on 127.0.0.1, free
/// ports); shut down on drop.
#[derive(Debug)]
pub struct Scanner {
    inner: MediaScanner,
}

impl Scanner {
    /// Starts a scanner in `dir` (created) in front of `hs`'s client listener, scanning with the
    /// clamd at `clamd`; `max_upload_size` in bytes. `mcs:` is enabled against the same
    /// homeserver, with a Synapse admin token for quarantines.
    pub async fn start(
        hs: &Homeserver,
        clamd: SocketAddr,
        dir: &Path,
        max_upload_size: u64,
    ) -> anyhow::Result<Scanner> {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let inner = MediaScanner::start(hs, clamd, listen, dir, max_upload_size)
            .await
            .context("starting the media scanner")?;
        Ok(Scanner { inner })
    }

    /// The main listener.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr()
    }

    /// The main listener's base URL.
    pub fn url(&self) -> String {
        self.inner.url()
    }

    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.inner.admin_addr()
    }

    /// `GET /readyz` on the admin listener: whether the scanner says it is ready.
    pub async fn ready(&self) -> anyhow::Result<bool> {
        let response = http()
            .get(format!("http://{}/readyz", self.inner.admin_addr()))
            .send()
            .await?;
        Ok(response.status().is_success())
    }

    /// The audit log's records, one JSON value per line.
    pub fn audit_records(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let path = self.inner.audit_log_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("audit line {line:?}")))
            .collect()
    }

    /// Files left in the spool dir (every request deletes its spool).
    pub fn spool_files(&self) -> anyhow::Result<Vec<PathBuf>> {
        files_below(&self.inner.dir().join("spool"))
    }
}

/// An HTTP client ignoring proxy settings, with a request timeout of [`DEADLINE`].
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .expect("a plain HTTP client builds")
}

/// What a homeserver keeps of uploaded media: files in its media store and rows of
/// `local_media_repository`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMedia {
    /// Every file below `media_store_path` (`<data_dir>/media`).
    pub files: Vec<PathBuf>,
    /// `media_id`s in `local_media_repository`.
    pub rows: Vec<String>,
}

impl StoredMedia {
    /// Nothing at all.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.rows.is_empty()
    }
}

/// `hs`'s SQLite database, read-only (Synapse keeps writing it).
pub fn synapse_db(hs: &Homeserver) -> anyhow::Result<rusqlite::Connection> {
    let db = hs.data_dir().join("homeserver.db");
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// Reads `hs`'s media store (`media_store_path` is `<data_dir>/media`, see
/// `govmx_stack::render_homeserver_yaml`) and its SQLite `local_media_repository` table.
pub fn stored_media(hs: &Homeserver) -> anyhow::Result<StoredMedia> {
    let files = files_below(&hs.data_dir().join("media"))?;
    let conn = synapse_db(hs)?;
    let mut statement = conn.prepare("SELECT media_id FROM local_media_repository")?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StoredMedia { files, rows })
}

/// Whether `hs`'s log (INFO, with Synapse's access log) mentions `needle`, e.g. a request path.
pub fn synapse_log_contains(hs: &Homeserver, needle: &str) -> anyhow::Result<bool> {
    let path = hs.process().log_path();
    let log = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&log).contains(needle))
}

/// Every regular file below `dir` (recursively); none when `dir` does not exist.
pub fn files_below(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A status and JSON body.
#[derive(Debug)]
pub struct JsonReply {
    /// HTTP status.
    pub status: u16,
    /// The parsed body (`Null` when it was not JSON).
    pub body: serde_json::Value,
}

/// `POST {base}/_matrix/media/v3/upload?filename=…` with `token`.
pub async fn upload(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<JsonReply> {
    let response = client
        .post(format!("{base}{UPLOAD_PATH}?filename=upload.bin"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("upload to {base}"))?;
    json_reply(response).await
}

/// Status and JSON body of `response`.
pub async fn json_reply(response: reqwest::Response) -> anyhow::Result<JsonReply> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Ok(JsonReply { status, body })
}

/// Splits `mxc://server/id`.
pub fn parse_mxc(uri: &str) -> anyhow::Result<(String, String)> {
    let Some((server, id)) = uri
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
    else {
        bail!("not an mxc URI: {uri:?}");
    };
    Ok((server.to_owned(), id.to_owned()))
}

/// Downloads `mxc` through `/_matrix/client/v1/media/download/{server}/{id}` on `base`.
pub async fn download(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    mxc: &str,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let (server, id) = parse_mxc(mxc)?;
    let response = client
        .get(format!(
            "{base}/_matrix/client/v1/media/download/{server}/{id}"
        ))
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.bytes().await?.to_vec()))
}

/// Sends only the request `head` (no body) and reads the response until the connection closes,
/// `until` appears in it, or [`DEADLINE`]. Returns what arrived.
pub async fn raw_head_only(addr: SocketAddr, head: &str, until: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() {
            bail!(
                "no complete answer within {DEADLINE:?}; got {:?}",
                String::from_utf8_lossy(&received)
            );
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
        if String::from_utf8_lossy(&received).contains(until) {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&received).into_owned())
}

/// Polls `probe` every 50 ms until it returns `Some`, or fails after `limit`.
pub async fn poll<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    crate::poll_until(what, limit, Duration::from_millis(50), async || {
        Ok(probe().await)
    })
    .await
}

/// A valid 2×2 RGB PNG (stored deflate blocks, real CRCs), built in code.
pub fn tiny_png() -> Vec<u8> {
    let (width, height) = (2u32, 2u32);
    // Each scanline: filter byte 0, then RGB pixels.
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            raw.extend_from_slice(&[(x * 200) as u8, (y * 200) as u8, 0x80]);
        }
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bit, truecolour, deflate, no filter, no interlace
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    png_chunk(&mut png, b"IEND", &[]);
    png
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(
        &u32::try_from(data.len())
            .expect("small chunk")
            .to_be_bytes(),
    );
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// zlib stream with one stored (uncompressed) deflate block; `data` must be < 64 KiB.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("small data");
    let mut out = vec![0x78, 0x01, 0x01];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An attachment encrypted as an E2EE client does (AES-256-CTR, v2 JSON Web Key).
#[derive(Debug, Clone)]
pub struct EncryptedAttachment {
    /// The ciphertext to upload.
    pub ciphertext: Vec<u8>,
    key: [u8; 32],
    iv: [u8; 16],
}

impl EncryptedAttachment {
    /// Encrypts `plaintext` with a random key and a random 64-bit IV prefix (counter half zero).
    pub fn encrypt(plaintext: &[u8]) -> EncryptedAttachment {
        let mut key = [0u8; 32];
        let mut iv = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut key);
        rand::thread_rng().fill_bytes(&mut iv[..8]);
        let mut ciphertext = plaintext.to_vec();
        ctr::Ctr128BE::<Aes256>::new(&key.into(), &iv.into()).apply_keystream(&mut ciphertext);
        EncryptedAttachment {
            ciphertext,
            key,
            iv,
        }
    }

    /// The `EncryptedFile` object of an `m.file` event for the uploaded ciphertext at `mxc`.
    pub fn file_json(&self, mxc: &str) -> serde_json::Value {
        serde_json::json!({
            "v": "v2",
            "url": mxc,
            "key": {
                "alg": "A256CTR", "kty": "oct", "ext": true,
                "key_ops": ["encrypt", "decrypt"],
                "k": URL_SAFE_NO_PAD.encode(self.key),
            },
            "iv": STANDARD_NO_PAD.encode(self.iv),
            "hashes": {"sha256": STANDARD_NO_PAD.encode(Sha256::digest(&self.ciphertext))},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_checksums_are_right() {
        // Known values: CRC-32 of "IEND" and Adler-32 of "Wikipedia".
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        let z = zlib_stored(b"Wikipedia");
        assert_eq!(&z[z.len() - 4..], &0x11E6_0398u32.to_be_bytes());
        let png = tiny_png();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(png.ends_with(&[0xAE, 0x42, 0x60, 0x82]));
    }
}
