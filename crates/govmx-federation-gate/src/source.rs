//! Where the signed bundle comes from: a directory, or an HTTPS URL.
//!
//! **URL source**: `<url>/SIGNATURES.json` is fetched first; its signed manifest names every
//! file of the bundle, and each is fetched from `<url>/<name>`. Nothing fetched is trusted
//! until the whole bundle verifies against the pinned trust anchors (the list store does
//! that), so the web server is only a courier. When `SIGNATURES.json` is byte-identical to the
//! last fetch, the files fetched then are reused: the signed manifest pins every file's hash,
//! so a poll of an unchanged bundle costs one request. TLS must chain to the configured CA; no
//! redirects, no proxies, a size cap per file and a timeout per request.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::policy::{BundleFiles, is_bundle_file, manifest_file_names};

/// Largest single bundle file accepted over HTTPS (a 100,000-server list is about 10 MiB).
const MAX_FILE: usize = 64 * 1024 * 1024;

/// A bundle source.
#[derive(Debug)]
pub enum BundleSource {
    /// A directory holding the bundle files.
    Dir(PathBuf),
    /// A base URL serving them.
    Url(UrlSource),
}

impl BundleSource {
    /// Reads the bundle's files.
    pub async fn read(&self) -> Result<BundleFiles, String> {
        match self {
            BundleSource::Dir(dir) => read_dir_bundle(dir),
            BundleSource::Url(url) => url.fetch().await,
        }
    }

    /// For messages: the directory or URL.
    pub fn describe(&self) -> String {
        match self {
            BundleSource::Dir(dir) => dir.display().to_string(),
            BundleSource::Url(url) => url.base.clone(),
        }
    }
}

/// A bundle published under an HTTPS base URL.
#[derive(Debug)]
pub struct UrlSource {
    client: reqwest::Client,
    base: String,
    last: Mutex<Option<(bytes::Bytes, BundleFiles)>>,
}

impl UrlSource {
    /// A source for `base` (`https://…/`), trusting the CA certificates in `ca_file` when given
    /// (else the platform's web PKI roots are not used either: a CA file is required).
    pub fn new(base: &str, ca_file: &Path, timeout: Duration) -> Result<UrlSource, String> {
        let pem = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate", ca_file.display()));
        }
        let client = reqwest::Client::builder()
            .tls_certs_only(certs)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("govmx-federation-gate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTPS client: {e}"))?;
        let base = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        Ok(UrlSource {
            client,
            base,
            last: Mutex::new(None),
        })
    }

    async fn fetch(&self) -> Result<BundleFiles, String> {
        let signatures = self.get(crate::policy::SIGNATURES_FILE).await?;
        if let Some((previous, files)) = &*self.last.lock().unwrap_or_else(|p| p.into_inner())
            && *previous == signatures
        {
            return Ok(files.clone());
        }
        let mut files = BundleFiles::new();
        for name in manifest_file_names(&signatures)? {
            let bytes = self.get(&name).await?;
            files.insert(name, bytes);
        }
        files.insert(
            crate::policy::SIGNATURES_FILE.to_owned(),
            signatures.clone(),
        );
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((signatures, files.clone()));
        Ok(files)
    }

    async fn get(&self, name: &str) -> Result<bytes::Bytes, String> {
        let url = format!("{}{name}", self.base);
        get_capped(&self.client, &url, MAX_FILE)
            .await
            .map(bytes::Bytes::from)
            .map_err(|reason| format!("{url}: {reason}"))
    }
}

/// `GET url`: the body of a 2xx answer of at most `max` bytes (read in chunks, cut off beyond).
pub(crate) async fn get_capped(
    client: &reqwest::Client,
    url: &str,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut response = client.get(url).send().await.map_err(|e| error_chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("answer larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its sources, joined with `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Reads the regular, non-hidden bundle files of a directory.
pub fn read_dir_bundle(dir: &Path) -> Result<BundleFiles, String> {
    read_dir_bundle_into(dir, &mut Vec::new())
}

/// Files at least this large are read into the caller's spare buffer when it has room, and by
/// [`READ_PARTS`] threads at once.
const SPARE_MIN_BYTES: u64 = 1 << 20;

/// Threads that read a large file, each its own range. One thread copying ~14 MB out of the page
/// cache took 31-60 ms at idle and 50-130 ms under load on this kind of VM (its share of two
/// busy cores); eight take both cores and a larger share of them.
const READ_PARTS: usize = 8;

/// [`read_dir_bundle`], reading the largest file (the federation list) into `spare` when it is
/// long enough: a buffer whose pages were touched before the reload, so reading ~14 MB does
/// not fault in ~3,400 fresh zeroed pages on the reload's critical path (~10 ms on this kind
/// of VM; [`prefault`] prepares the next one after the swap). `spare` is taken (left empty)
/// when used.
pub fn read_dir_bundle_into(dir: &Path, spare: &mut Vec<u8>) -> Result<BundleFiles, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = BundleFiles::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            return Err(format!(
                "{}: file name is not UTF-8",
                entry.path().display()
            ));
        };
        if name.starts_with('.') || !is_bundle_file(&name) {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let bytes = read_file(&path, spare).map_err(|e| format!("{}: {e}", path.display()))?;
        files.insert(name, bytes.into());
    }
    if files.is_empty() {
        return Err(format!("{}: no bundle files", dir.display()));
    }
    Ok(files)
}

/// Reads `path`: a large file in parallel ranges, into `spare` when it is long enough.
fn read_file(path: &Path, spare: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let Ok(size) = usize::try_from(len) else {
        return Err(std::io::Error::other("file too large"));
    };
    if len < SPARE_MIN_BYTES {
        let mut buffer = Vec::with_capacity(size);
        file.read_to_end(&mut buffer)?;
        return Ok(buffer);
    }
    let mut buffer = if size <= spare.len() {
        let mut buffer = std::mem::take(spare);
        buffer.truncate(size);
        buffer
    } else {
        zeroed_in_parallel(size)
    };
    read_parallel(&file, &mut buffer)?;
    // Changed while read (a publisher writing in place rather than swapping): refused now, read
    // again at the next reload. The signature check would refuse a torn file anyway.
    if std::os::unix::fs::FileExt::read_at(&file, &mut [0u8; 1], len)? != 0 {
        return Err(std::io::Error::other("the file grew while it was read"));
    }
    Ok(buffer)
}

/// `len` zero bytes in new memory whose pages [`READ_PARTS`] threads touched first, each its own
/// range. `vec![0; len]` has the allocator (mimalloc) zero the memory with one `memset` on this
/// thread, faulting in ~3,400 fresh pages one after the other before any read starts: most of
/// a first large list's read time, and longer under load (`docs/benchmarks.md`).
fn zeroed_in_parallel(len: usize) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(len);
    let part = len.div_ceil(READ_PARTS).max(1);
    std::thread::scope(|scope| {
        for range in buffer.spare_capacity_mut()[..len].chunks_mut(part) {
            // A thread the OS refuses is no error: the resize below faults those pages in.
            let _ = std::thread::Builder::new()
                .name("govmx-read".to_owned())
                .spawn_scoped(scope, move || {
                    for page in range.chunks_mut(4096) {
                        page[0] = std::mem::MaybeUninit::new(0);
                    }
                });
        }
    });
    // The pages are mapped now: this is a plain memset.
    buffer.resize(len, 0);
    buffer
}

/// Fills `buffer` from the start of `file` in [`READ_PARTS`] ranges on scoped threads (on this
/// thread alone when the OS refuses one).
fn read_parallel(file: &std::fs::File, buffer: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let part = buffer.len().div_ceil(READ_PARTS).max(1);
    let parallel = std::thread::scope(|scope| {
        let mut readers = Vec::with_capacity(READ_PARTS);
        let mut offset = 0u64;
        for range in buffer.chunks_mut(part) {
            let at = offset;
            offset += range.len() as u64;
            let reader = std::thread::Builder::new()
                .name("govmx-read".to_owned())
                .spawn_scoped(scope, move || file.read_exact_at(range, at));
            match reader {
                Ok(reader) => readers.push(reader),
                Err(_) => return None,
            }
        }
        Some(readers.into_iter().try_for_each(|reader| {
            reader
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a reader thread panicked")))
        }))
    });
    match parallel {
        Some(result) => result,
        None => file.read_exact_at(buffer, 0),
    }
}

/// A buffer of `len` bytes plus 1/8 (a list grows between versions), every page of it already
/// written once: what [`read_dir_bundle_into`] reads into without page faults. Empty when `len`
/// is below the size worth a spare.
pub fn prefault(len: usize) -> Vec<u8> {
    if (len as u64) < SPARE_MIN_BYTES {
        return Vec::new();
    }
    let mut buffer = vec![0u8; len + len / 8];
    // `vec![0; n]` may come from calloc-style fresh pages that are never touched; writing one
    // byte per page makes the kernel map them now.
    for page in buffer.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&mut buffer);
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle directory with a small file and a list file of `len` bytes.
    fn bundle(len: usize) -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(dir.path().join("federation.yaml"), &list).unwrap();
        std::fs::write(dir.path().join("media.yaml"), b"small").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not part of the bundle").unwrap();
        (dir, list)
    }

    #[test]
    fn the_list_file_is_read_into_the_spare_buffer_when_it_fits() {
        // Not a multiple of the parts: the last range is shorter.
        let (dir, list) = bundle((3 << 20) + 13);
        let mut spare = prefault(list.len());
        assert!(spare.len() > list.len());
        let spare_at = spare.as_ptr();
        let files = read_dir_bundle_into(dir.path(), &mut spare).unwrap();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["federation.yaml", "media.yaml"]
        );
        assert_eq!(files["federation.yaml"], list);
        assert_eq!(
            files["federation.yaml"].as_ptr(),
            spare_at,
            "read into the spare"
        );
        assert_eq!(&files["media.yaml"][..], b"small");
        assert_eq!(spare.capacity(), 0, "the spare was taken");
    }

    #[test]
    fn memory_zeroed_in_parallel_is_all_zero_and_as_long_as_asked() {
        for len in [0, 1, 4095, 4097, (3 << 20) + 13] {
            let buffer = zeroed_in_parallel(len);
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&byte| byte == 0), "{len}");
        }
    }

    #[test]
    fn a_spare_too_small_is_left_alone_and_the_file_read_whole() {
        let (dir, list) = bundle(3 << 20);
        let mut spare = prefault(2 << 20);
        let (len, at) = (spare.len(), spare.as_ptr());
        let files = read_dir_bundle_into(dir.path(), &mut spare).unwrap();
        assert_eq!(files["federation.yaml"], list);
        assert_eq!((spare.len(), spare.as_ptr()), (len, at));
        // Below the size worth a spare there is none.
        assert_eq!(prefault(4096).capacity(), 0);
    }
}
