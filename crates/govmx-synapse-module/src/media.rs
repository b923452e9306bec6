//! Remote media: whether `check_media_file_for_spam` must scan a file, and the verdict on the
//! media scanner's answer (`POST /_govmx/scanner/v1/scan`: 200 `{"clean": bool, "signature"}`,
//! 503 when clamd is unavailable). The HTTP call itself is made by the Python class through
//! Synapse's non-blocking HTTP client.

use govmx_policy::Verdict;
use serde::Deserialize;

use crate::config::ScannerConfig;
use crate::engine::{Engine, Refusal};

#[derive(Debug, Deserialize)]
struct ScanAnswer {
    clean: bool,
    #[serde(default)]
    signature: Option<String>,
}

impl Engine {
    /// The scanner configuration, if media scans are enabled.
    pub fn scanner(&self) -> Option<&ScannerConfig> {
        self.config.scanner.as_ref()
    }

    /// Whether a file must be scanned: remote files when the media rules say so (and when no
    /// policy is loaded: fail closed), local files only with `scan_local_media`.
    pub fn media_scan_needed(&self, is_remote: bool) -> bool {
        let Some(scanner) = self.scanner() else {
            return false;
        };
        if !is_remote {
            return scanner.scan_local_media;
        }
        self.with_policy(|set| set.media().remote_media.scan)
            .unwrap_or(true)
    }

    /// The verdict on the scanner's answer: `None` lets the file through.
    pub fn media_verdict(&self, status: u16, body: &[u8]) -> Option<Refusal> {
        match status {
            200 => match serde_json::from_slice::<ScanAnswer>(body) {
                Ok(ScanAnswer { clean: true, .. }) => None,
                Ok(ScanAnswer {
                    clean: false,
                    signature,
                }) => Some(Refusal::forbidden(
                    "media-infected",
                    format!(
                        "the file carries malware ({}) and was refused",
                        signature.as_deref().unwrap_or("unnamed signature")
                    ),
                )),
                Err(error) => self.scanner_unavailable(&format!("unreadable scan answer: {error}")),
            },
            413 => Some(Refusal::forbidden(
                "media-too-large",
                "the file is larger than the media scanner accepts and was refused",
            )),
            status => self.scanner_unavailable(&format!("scan API answered HTTP {status}")),
        }
    }

    /// The verdict while the scanner cannot give one (`detail` goes into the reason).
    pub fn scanner_unavailable(&self, detail: &str) -> Option<Refusal> {
        let refuse = match self.scanner().and_then(|scanner| scanner.fail_closed) {
            Some(fail_closed) => fail_closed,
            None => self
                .with_policy(|set| set.scanner_unavailable().verdict == Verdict::Deny)
                .unwrap_or(true),
        };
        refuse.then(|| {
            Refusal::forbidden(
                "scanner-unavailable",
                format!("the malware scanner is unavailable ({detail}); the file was refused"),
            )
        })
    }
}
