//! [`Spool`]: holds an upload body while it is scanned — in memory up to a bound, then in a
//! private temp file (mode 0600, `govmx-spool-*` in the configured dir) that is deleted when the
//! spool (or the body stream made from it) is dropped: on success, on errors and when the client
//! disconnects mid-upload. [`sweep_stale`] removes leftovers of a crashed process at startup.
//! With a [`SpoolBudget`], bytes on disk count against the global `limits.max_spool_bytes`.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::limits::{Reservation, SpoolBudget};

/// File name prefix of spool files.
pub const PREFIX: &str = "govmx-spool-";

/// An upload body being spooled.
#[derive(Debug)]
pub struct Spool {
    memory_limit: usize,
    dir: PathBuf,
    mem: Vec<u8>,
    file: Option<(NamedTempFile, tokio::fs::File)>,
    len: u64,
    budget: Option<(SpoolBudget, Reservation)>,
}

// === impl Spool ===

impl Spool {
    /// An empty spool.
    pub fn new(memory_limit: usize, dir: &Path) -> Self {
        Self {
            memory_limit,
            dir: dir.to_owned(),
            mem: Vec::new(),
            file: None,
            len: 0,
            budget: None,
        }
    }

    /// Counts bytes written to disk against `budget`.
    pub fn with_budget(mut self, budget: &SpoolBudget) -> Self {
        self.budget = Some((budget.clone(), budget.reservation()));
        self
    }

    fn reserve(&mut self, more: usize) -> io::Result<()> {
        match &mut self.budget {
            Some((budget, reservation)) => budget.grow(reservation, more as u64),
            None => Ok(()),
        }
    }

    /// Bytes spooled so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was spooled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the body went to disk.
    pub fn on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// Whether writing `more` bytes would move the body to disk.
    pub fn would_spill(&self, more: usize) -> bool {
        self.file.is_none() && self.mem.len() + more > self.memory_limit
    }

    /// The in-memory contents (empty once on disk).
    pub fn memory(&self) -> &[u8] {
        &self.mem
    }

    /// Appends data, moving to a temp file when the memory bound is exceeded.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.would_spill(data.len()) {
            self.reserve(self.mem.len())?;
            let named = tempfile::Builder::new()
                .prefix(PREFIX)
                .permissions(std::fs::Permissions::from_mode(0o600))
                .tempfile_in(&self.dir)?;
            let mut file = tokio::fs::File::from_std(named.as_file().try_clone()?);
            file.write_all(&self.mem).await?;
            self.mem = Vec::new();
            self.file = Some((named, file));
        }
        if self.file.is_some() {
            self.reserve(data.len())?;
        }
        match &mut self.file {
            Some((_, file)) => file.write_all(data).await?,
            None => self.mem.extend_from_slice(data),
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// A reader over the whole spooled content (for a replay scan).
    pub async fn reader(
        &mut self,
    ) -> io::Result<Box<dyn tokio::io::AsyncRead + Send + Unpin + '_>> {
        match &mut self.file {
            Some((named, file)) => {
                file.flush().await?;
                Ok(Box::new(tokio::fs::File::from_std(named.reopen()?)))
            }
            None => Ok(Box::new(&self.mem[..])),
        }
    }

    /// Turns the spool into a streaming HTTP body; a temp file lives until the body is dropped.
    pub async fn into_body(self) -> io::Result<Body> {
        match self.file {
            None => Ok(Body::from(self.mem)),
            Some((named, mut file)) => {
                file.flush().await?;
                drop(file);
                let reader = tokio::fs::File::from_std(named.reopen()?);
                let budget = self.budget;
                let stream = ReaderStream::with_capacity(reader, 64 * 1024).map(
                    move |chunk: io::Result<Bytes>| {
                        // Keeps the temp file (and its automatic removal) tied to the body's lifetime.
                        let _guard = (&named, &budget);
                        chunk
                    },
                );
                Ok(Body::from_stream(stream))
            }
        }
    }
}

/// A finished spool that several readers can stream from (e.g. joined identical downloads):
/// the temp file and its budget reservation live as long as this value.
#[derive(Debug)]
pub enum Stored {
    /// Small content, kept in memory.
    Memory(Bytes),
    /// A spool file (removed on drop) and its budget reservation.
    File(NamedTempFile, Option<(SpoolBudget, Reservation)>),
}

impl Spool {
    /// Finishes writing and turns the spool into a shareable [`Stored`].
    pub async fn into_stored(self) -> io::Result<Stored> {
        match self.file {
            None => Ok(Stored::Memory(Bytes::from(self.mem))),
            Some((named, mut file)) => {
                file.flush().await?;
                Ok(Stored::File(named, self.budget))
            }
        }
    }
}

/// Removes `govmx-spool-*` files left in `dir` by a crashed process; returns how many.
pub fn sweep_stale(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(PREFIX) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;

    use super::*;

    fn files(dir: &Path) -> Vec<std::fs::Metadata> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn memory_then_disk_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(10, dir.path());
        spool.write(b"0123456789").await.unwrap();
        assert!(!spool.on_disk());
        assert!(files(dir.path()).is_empty());
        spool.write(b"abc").await.unwrap();
        assert!(spool.on_disk());
        let meta = files(dir.path());
        assert_eq!(meta.len(), 1);
        assert_eq!(meta[0].permissions().mode() & 0o777, 0o600);

        let mut replay = Vec::new();
        spool
            .reader()
            .await
            .unwrap()
            .read_to_end(&mut replay)
            .await
            .unwrap();
        assert_eq!(replay, b"0123456789abc");

        let body = spool.into_body().await.unwrap();
        assert_eq!(
            files(dir.path()).len(),
            1,
            "file lives while the body lives"
        );
        assert_eq!(
            body.collect().await.unwrap().to_bytes(),
            &b"0123456789abc"[..]
        );
        assert!(files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn disk_bytes_count_against_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(10);
        let mut spool = Spool::new(4, dir.path()).with_budget(&budget);
        spool.write(b"abc").await.unwrap();
        assert_eq!(budget.used(), 0, "memory does not count");
        spool.write(b"defgh").await.unwrap();
        assert_eq!(budget.used(), 8);
        let err = spool.write(b"ijk").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        let stored = spool.into_stored().await.unwrap();
        assert_eq!(budget.used(), 8);
        drop(stored);
        assert_eq!(budget.used(), 0);
        assert!(files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn dropped_spool_and_stale_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(0, dir.path());
        spool.write(b"x").await.unwrap();
        drop(spool);
        assert!(files(dir.path()).is_empty());
        std::fs::write(dir.path().join("govmx-spool-old"), b"x").unwrap();
        std::fs::write(dir.path().join("keep"), b"x").unwrap();
        assert_eq!(sweep_stale(dir.path()).unwrap(), 1);
        assert_eq!(files(dir.path()).len(), 1);
    }
}
