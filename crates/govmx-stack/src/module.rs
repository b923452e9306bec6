//! The govmx Synapse module (`crates/govmx-synapse-module`): its wheel, built once per source
//! hash with maturin, installed into the pinned Synapse venv, and the `modules:` entry of a
//! homeserver that runs it.
//!
//! ```text
//! <cache>/maturin-venv/                          maturin (pip-installed once)
//! <cache>/synapse-module/<hash>/*.whl            the wheel of one source state
//! <cache>/synapse-<version>/govmx-synapse-module.hash   what the venv has installed
//! ```
//!
//! The source hash covers the module crate, `govmx-policy` and `Cargo.lock`, so an edit to
//! either rebuilds the wheel on the next start; an unchanged tree costs one hash of ~40 files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use sha1::{Digest, Sha1};

use crate::util::{create_dir, write_file};
use crate::{Result, StackError};

/// The maturin version pip installs for building the wheel.
pub const MATURIN_VERSION: &str = "1.16.0";

/// Serialises builds and installs inside one process (tests start stacks in parallel).
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Where a homeserver's module finds its inputs (rendered into `modules:` in homeserver.yaml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    /// Policy directory: plain policy files, or a signed bundle when `trust_file` is set.
    pub policy_dir: PathBuf,
    /// TrustAnchors file; when set the policy directory must be a signed bundle.
    pub trust_file: Option<PathBuf>,
    /// Last-known-good copy of the policy; `None`: `<hs state>/govmx-module/last-known-good`.
    pub last_known_good_dir: Option<PathBuf>,
    /// Runtime grants file; `None`: `<hs state>/govmx-module/grants.json`.
    pub grants_file: Option<PathBuf>,
    /// Poll interval of the policy directory and grants file.
    pub reload_interval_ms: u64,
    /// The media scanner's base URL and scan API token file, for remote media scans.
    pub scanner: Option<(String, PathBuf)>,
}

impl ModuleSpec {
    /// Plain policy files in `policy_dir`, polled every 250 ms, no scanner.
    pub fn new(policy_dir: impl Into<PathBuf>) -> ModuleSpec {
        ModuleSpec {
            policy_dir: policy_dir.into(),
            trust_file: None,
            last_known_good_dir: None,
            grants_file: None,
            reload_interval_ms: 250,
            scanner: None,
        }
    }

    /// Remote media scanned by the media scanner's scan API at `url` with the token in `token_file`.
    pub fn with_scanner(
        mut self,
        url: impl Into<String>,
        token_file: impl Into<PathBuf>,
    ) -> ModuleSpec {
        self.scanner = Some((url.into(), token_file.into()));
        self
    }
}

/// Renders the `modules:` block for `spec` (paths absolute; `data_dir` is the homeserver's).
pub fn render_modules_yaml(spec: &ModuleSpec, data_dir: &Path) -> String {
    let q = |path: &Path| crate::util::yaml_str(&path.display().to_string());
    let module_dir = data_dir.join("govmx-module");
    let lkg = spec
        .last_known_good_dir
        .clone()
        .unwrap_or_else(|| module_dir.join("last-known-good"));
    let grants = spec
        .grants_file
        .clone()
        .unwrap_or_else(|| module_dir.join("grants.json"));
    let mut yaml = format!(
        "# The govmx Synapse module: contact rules, case grants, remote media scans.\n\
modules:\n\
\x20 - module: govmx_synapse.GovmxModule\n\
\x20   config:\n\
\x20     policy_dir: {policy}\n\
\x20     last_known_good_dir: {lkg}\n\
\x20     grants_file: {grants}\n\
\x20     reload_interval_ms: {interval}\n",
        policy = q(&spec.policy_dir),
        lkg = q(&lkg),
        grants = q(&grants),
        interval = spec.reload_interval_ms,
    );
    if let Some(trust) = &spec.trust_file {
        yaml.push_str(&format!("\x20     trust_file: {}\n", q(trust)));
    }
    if let Some((url, token)) = &spec.scanner {
        yaml.push_str(&format!(
            "\x20     scanner: {{url: {}, token_file: {}}}\n",
            crate::util::yaml_str(url),
            q(token)
        ));
    }
    yaml
}

/// The module crate's source directory: that of the checkout the command runs in (the working
/// directory or one above it), else that of the checkout this crate was built from. The build's
/// path alone is not enough: a shared `CARGO_TARGET_DIR` may hold a build made in another clone,
/// since gone or at another commit, whose path `CARGO_MANIFEST_DIR` still names.
pub fn module_source_dir() -> PathBuf {
    let module = |root: &Path| root.join("crates").join("govmx-synapse-module");
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            cwd.ancestors()
                .map(module)
                .find(|dir| dir.join("pyproject.toml").is_file())
        })
        .unwrap_or_else(|| module(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")))
}

/// Hash of everything the wheel is built from.
pub fn source_hash(module_dir: &Path) -> Result<String> {
    let root = module_dir.join("..").join("..");
    let mut files = Vec::new();
    for dir in [
        module_dir.join("src"),
        module_dir.join("python"),
        root.join("crates").join("govmx-policy").join("src"),
    ] {
        collect_files(&dir, &mut files)?;
    }
    for file in [
        module_dir.join("Cargo.toml"),
        module_dir.join("pyproject.toml"),
        root.join("crates").join("govmx-policy").join("Cargo.toml"),
        root.join("Cargo.lock"),
    ] {
        files.push(file);
    }
    files.sort();
    let mut hash = Sha1::new();
    for file in &files {
        let bytes = std::fs::read(file).map_err(StackError::io("reading", file))?;
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hex::encode(hash.finalize()))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(StackError::io("reading", dir))?;
    for entry in entries {
        let entry = entry.map_err(StackError::io("reading", dir))?;
        let path = entry.path();
        let name = entry.file_name();
        if name == "__pycache__" || name.to_string_lossy().ends_with(".pyc") {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Makes sure the venv of `python` has the module built from this checkout: builds the wheel
/// (once per source hash) and pip-installs it. Blocking; call from a blocking task.
pub fn ensure_module(cache_dir: &Path, python: &Path) -> Result<()> {
    let module_dir = module_source_dir();
    if !module_dir.join("pyproject.toml").is_file() {
        return Err(StackError::MissingTool {
            tool: "govmx-synapse-module",
            fix: format!(
                "its source is not at {}; run govmx from a checkout to build the Synapse module",
                module_dir.display()
            ),
        });
    }
    let hash = source_hash(&module_dir)?;
    let venv = python
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| {
            StackError::InvalidSpec(format!("{} is not a venv python", python.display()))
        })?
        .to_owned();
    let marker = venv.join("govmx-synapse-module.hash");
    let installed = || std::fs::read_to_string(&marker).is_ok_and(|text| text.trim() == hash);
    if installed() {
        return Ok(());
    }
    let _guard = BUILD_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if installed() {
        return Ok(());
    }
    create_dir(cache_dir)?;
    let log = cache_dir.join("synapse-module-build.log");
    let wheel_dir = cache_dir.join("synapse-module").join(&hash);
    let wheel = match find_wheel(&wheel_dir) {
        Some(wheel) => wheel,
        None => {
            let maturin = ensure_maturin(cache_dir, &log)?;
            tracing::info!(hash = %hash, "building the govmx Synapse module wheel (release build, a few minutes when cold)");
            let mut build = Command::new(maturin);
            build
                .arg("build")
                .arg("--release")
                .arg("--quiet")
                .arg("-m")
                .arg(module_dir.join("Cargo.toml"))
                .arg("--out")
                .arg(&wheel_dir)
                .arg("-i")
                .arg(python);
            run_logged(build, &log)?;
            find_wheel(&wheel_dir).ok_or_else(|| StackError::InstallFailed {
                tool: "govmx-synapse-module",
                detail: format!(
                    "maturin finished but left no wheel in {}",
                    wheel_dir.display()
                ),
                log: log.clone(),
            })?
        }
    };
    let mut pip = Command::new(venv.join("bin").join("pip"));
    pip.args(["install", "--quiet", "--no-deps", "--force-reinstall"])
        .arg(&wheel);
    run_logged(pip, &log)?;
    write_file(&marker, format!("{hash}\n").as_bytes(), 0o644)?;
    // Keep only this source state's wheel.
    if let Ok(entries) = std::fs::read_dir(cache_dir.join("synapse-module")) {
        for entry in entries.flatten() {
            if entry.file_name() != hash.as_str() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}

fn find_wheel(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
}

fn ensure_maturin(cache_dir: &Path, log: &Path) -> Result<PathBuf> {
    let venv = cache_dir.join("maturin-venv");
    let maturin = venv.join("bin").join("maturin");
    if maturin.is_file() {
        return Ok(maturin);
    }
    let Some(python3) = crate::prereq::find_in_path("python3") else {
        return Err(StackError::MissingTool {
            tool: "python3",
            fix: "install it (apt-get install -y python3 python3-venv) to build the Synapse module"
                .into(),
        });
    };
    let mut venv_cmd = Command::new(python3);
    venv_cmd.arg("-m").arg("venv").arg(&venv);
    run_logged(venv_cmd, log)?;
    let mut pip = Command::new(venv.join("bin").join("pip"));
    pip.args(["install", "--quiet", &format!("maturin=={MATURIN_VERSION}")]);
    run_logged(pip, log)?;
    Ok(maturin)
}

fn run_logged(mut command: Command, log: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
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
            tool: "govmx-synapse-module",
            detail: format!("{command:?}: {error}"),
            log: log.into(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(StackError::InstallFailed {
            tool: "govmx-synapse-module",
            detail: format!("{command:?} exited with {status}"),
            log: log.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_block_is_valid_yaml_with_defaults_under_the_state_dir() {
        let spec = ModuleSpec::new("/p").with_scanner("http://127.0.0.1:9", "/t");
        let text = render_modules_yaml(&spec, Path::new("/hs"));
        let yaml: serde_json::Value = serde_norway::from_str(&text).unwrap();
        let module = &yaml["modules"][0];
        assert_eq!(module["module"], "govmx_synapse.GovmxModule");
        assert_eq!(module["config"]["policy_dir"], "/p");
        assert_eq!(
            module["config"]["grants_file"],
            "/hs/govmx-module/grants.json"
        );
        assert_eq!(module["config"]["scanner"]["url"], "http://127.0.0.1:9");
        assert!(module["config"].get("trust_file").is_none());
    }

    #[test]
    fn source_hash_is_stable() {
        let dir = module_source_dir();
        assert!(dir.join("pyproject.toml").is_file(), "{}", dir.display());
        assert_eq!(source_hash(&dir).unwrap(), source_hash(&dir).unwrap());
    }
}
