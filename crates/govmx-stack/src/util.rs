//! Small file helpers shared by the modules: writing secrets with 0600, reading log tails.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{Result, StackError};

/// Writes `contents` to `path` (created or truncated) with the given Unix mode.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(StackError::io("writing", path))?;
    file.write_all(contents)
        .map_err(StackError::io("writing", path))
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(StackError::io("creating directory", dir))
}

/// The last `lines` lines of a text file, or a note why there are none.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(no log: {error})"),
    }
}

/// `n` random bytes from the OS generator, hex-encoded.
pub(crate) fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A YAML double-quoted scalar (a JSON string is valid YAML).
pub(crate) fn yaml_str(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}
