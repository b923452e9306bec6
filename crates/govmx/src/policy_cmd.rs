//! `govmx policy …`: lint, keygen, sign, verify, explain, diff and schema.
//!
//! Glue only: reading files and the clock, printing; the model, checks, signatures and
//! decisions live in `govmx-policy`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use govmx_policy::bundle::{self, SIGNATURES_FILE, SignerKey};
use govmx_policy::{Document, Kind, ParsedDocument, PolicyError, PolicySet, parse_document};
use ruma_common::{OwnedServerName, OwnedUserId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Arguments of `govmx policy`.
#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    /// Check policy files or directories; prints `file:line:col: error[rule]: message`.
    Lint {
        /// Our own server name; when given it must be on the federation list.
        #[arg(long)]
        own_server: Option<OwnedServerName>,
        /// Check expiry against this time (RFC 3339) instead of the clock.
        #[arg(long, value_parser = parse_time)]
        now: Option<OffsetDateTime>,
        /// Files, or directories (their top-level *.yaml files).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Generate a bundle signer key (secret key file, mode 0600).
    Keygen {
        /// Key id, `ed25519:<name>`.
        #[arg(long)]
        id: String,
        /// Where to write the secret key; must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Lint a bundle directory and add this signer's signature to its SIGNATURES.json.
    Sign {
        /// The signer's secret key file (from `govmx policy keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Bundle version; defaults to the federation list's metadata.version.
        #[arg(long)]
        bundle_version: Option<u64>,
        /// Lint against this time (RFC 3339) instead of the clock.
        #[arg(long, value_parser = parse_time)]
        now: Option<OffsetDateTime>,
        /// The bundle directory.
        dir: PathBuf,
    },
    /// Verify a bundle's signatures against pinned trust anchors.
    Verify {
        /// The pinned TrustAnchors file.
        #[arg(long)]
        trust: PathBuf,
        /// The bundle directory.
        dir: PathBuf,
    },
    /// Explain the decision for a federation request, an invite or an upload.
    Explain {
        /// The policy directory.
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        /// Decide at this time (RFC 3339) instead of the clock.
        #[arg(long, global = true, value_parser = parse_time)]
        now: Option<OffsetDateTime>,
        /// Our own server (default: the destination, or the invitee's server).
        #[arg(long, global = true)]
        own_server: Option<OwnedServerName>,
        #[command(subcommand)]
        what: ExplainWhat,
    },
    /// Report the changes between two policy files of one kind, or two directories.
    Diff {
        /// The old file or directory.
        old: PathBuf,
        /// The new file or directory.
        new: PathBuf,
    },
    /// Print Synapse's `federation_domain_whitelist` for the federation list in a directory
    /// (a second line of defence behind the gate; Synapse reads it only at start).
    SynapseWhitelist {
        /// The policy (or bundle) directory.
        dir: PathBuf,
    },
    /// Write (or check) the JSON Schema files of the document kinds.
    Schema {
        /// Only check that the files are up to date.
        #[arg(long)]
        check: bool,
        /// The schema directory.
        #[arg(long, default_value = "policies/schema")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ExplainWhat {
    /// May `origin` federate with `destination`?
    Federation {
        /// The sending server.
        #[arg(long)]
        origin: OwnedServerName,
        /// The receiving server.
        #[arg(long)]
        destination: OwnedServerName,
    },
    /// May `inviter` invite `invitee`?
    Invite {
        /// The inviting user.
        #[arg(long)]
        inviter: OwnedUserId,
        /// The invited user.
        #[arg(long)]
        invitee: OwnedUserId,
    },
    /// May an upload of this size and sniffed type be stored?
    Upload {
        /// Size in bytes.
        #[arg(long)]
        size: u64,
        /// The sniffed MIME type.
        #[arg(long)]
        mime: String,
    },
}

pub(crate) fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    match args.command {
        PolicyCommand::Lint {
            own_server,
            now,
            paths,
        } => lint(
            &mut stdout,
            own_server,
            now.unwrap_or_else(OffsetDateTime::now_utc),
            &paths,
        ),
        PolicyCommand::Keygen { id, out } => keygen(&mut stdout, &id, &out),
        PolicyCommand::Sign {
            key,
            bundle_version,
            now,
            dir,
        } => sign(
            &mut stdout,
            &key,
            bundle_version,
            now.unwrap_or_else(OffsetDateTime::now_utc),
            &dir,
        ),
        PolicyCommand::Verify { trust, dir } => verify(&mut stdout, &trust, &dir),
        PolicyCommand::Explain {
            dir,
            json,
            now,
            own_server,
            what,
        } => explain(
            &mut stdout,
            &dir,
            json,
            now.unwrap_or_else(OffsetDateTime::now_utc),
            own_server,
            what,
        ),
        PolicyCommand::Diff { old, new } => diff(&mut stdout, &old, &new),
        PolicyCommand::Schema { check, out } => schema(&mut stdout, check, &out),
        PolicyCommand::SynapseWhitelist { dir } => synapse_whitelist(&mut stdout, &dir),
    }
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|error| format!("not an RFC 3339 timestamp: {error}"))
}

fn synapse_whitelist(out: &mut impl Write, dir: &Path) -> anyhow::Result<ExitCode> {
    let mut lists = Vec::new();
    for path in dir_files(dir)? {
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let parsed =
            parse_document(&path.display().to_string(), &bytes, None).map_err(|errors| {
                anyhow::anyhow!(
                    "{}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
        if let Document::FederationList(list) = parsed.document {
            lists.push(list);
        }
    }
    let [list] = &lists[..] else {
        anyhow::bail!(
            "{}: expected exactly one FederationList document, found {}",
            dir.display(),
            lists.len()
        );
    };
    out.write_all(govmx_policy::generate::synapse_federation_whitelist(list).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The policy files of a directory: top-level `*.yaml`/`*.yml`, sorted by name.
fn dir_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in
        fs::read_dir(dir).with_context(|| format!("cannot read directory {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("cannot read directory {}", dir.display()))?
            .path();
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `(name inside the bundle, bytes)` of every bundle file.
fn bundle_contents(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    dir_files(dir)?
        .into_iter()
        .map(|path| {
            let bytes =
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((name, bytes))
        })
        .collect()
}

fn as_slices(contents: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    contents
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect()
}

/// Parses the files of one group (a directory or the files given) and checks the set.
fn lint_group(
    files: &[PathBuf],
    own_server: Option<&OwnedServerName>,
    now: Option<OffsetDateTime>,
) -> anyhow::Result<(Vec<ParsedDocument>, Vec<PolicyError>)> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        match parse_document(&path.display().to_string(), &bytes, now) {
            Ok(doc) => {
                let is_trust_file = path.file_name().is_some_and(|name| name == "trust.yaml");
                if is_trust_file && doc.document.kind() != Kind::TrustAnchors {
                    errors.push(PolicyError {
                        file: doc.file.clone(),
                        line: 1,
                        column: 1,
                        rule: govmx_policy::rules::UNKNOWN_KIND,
                        message: format!(
                            "trust.yaml must be a TrustAnchors document, not {}",
                            doc.document.kind()
                        ),
                    });
                }
                docs.push(doc);
            }
            Err(mut found) => errors.append(&mut found),
        }
    }
    let policy_docs: Vec<ParsedDocument> = docs
        .iter()
        .filter(|doc| doc.document.kind() != Kind::TrustAnchors)
        .cloned()
        .collect();
    errors.extend(govmx_policy::check_set(
        &policy_docs,
        own_server.map(|name| &**name),
    ));
    Ok((docs, errors))
}

fn lint(
    out: &mut impl Write,
    own_server: Option<OwnedServerName>,
    now: OffsetDateTime,
    paths: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let mut groups = Vec::new();
    let mut loose = Vec::new();
    for path in paths {
        if path.is_dir() {
            groups.push(dir_files(path)?);
        } else {
            loose.push(path.clone());
        }
    }
    if !loose.is_empty() {
        groups.push(loose);
    }
    let (mut n_files, mut n_errors) = (0, 0);
    for files in &groups {
        let (_, errors) = lint_group(files, own_server.as_ref(), Some(now))?;
        n_files += files.len();
        n_errors += errors.len();
        for error in errors {
            writeln!(out, "{error}")?;
        }
    }
    let files = if n_files == 1 { "file" } else { "files" };
    if n_errors == 0 {
        writeln!(out, "{n_files} {files} checked, no errors")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "{n_files} {files} checked, {n_errors} error{}",
            if n_errors == 1 { "" } else { "s" }
        )?;
        Ok(ExitCode::FAILURE)
    }
}

fn keygen(out: &mut impl Write, id: &str, path: &Path) -> anyhow::Result<ExitCode> {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = SignerKey::from_seed(id, seed).context("invalid key id")?;
    write_secret(path, key.to_file_string().as_bytes())?;
    writeln!(
        out,
        "wrote secret key {} to {} (mode 0600); keep it offline",
        key.id(),
        path.display()
    )?;
    writeln!(out, "add this entry to the keys of trust.yaml:")?;
    writeln!(
        out,
        "  - id: \"{}\"\n    publicKey: \"{}\"\n    owner: \"<who holds this key>\"",
        key.id(),
        key.public_key()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn sign(
    out: &mut impl Write,
    key_path: &Path,
    bundle_version: Option<u64>,
    now: OffsetDateTime,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let key_text = fs::read_to_string(key_path)
        .with_context(|| format!("cannot read key file {}", key_path.display()))?;
    let key = SignerKey::parse(&key_text)
        .with_context(|| format!("invalid key file {}", key_path.display()))?;
    let (docs, errors) = lint_group(&dir_files(dir)?, None, Some(now))?;
    if !errors.is_empty() {
        for error in &errors {
            writeln!(out, "{error}")?;
        }
        writeln!(
            out,
            "not signing: {} lint error{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        )?;
        return Ok(ExitCode::FAILURE);
    }
    let version = match bundle_version {
        Some(version) => version,
        None => docs
            .iter()
            .find(|doc| doc.document.kind() == Kind::FederationList)
            .map(|doc| doc.document.version())
            .context("the bundle has no federation list; pass --bundle-version")?,
    };
    let contents = bundle_contents(dir)?;
    let signatures_path = dir.join(SIGNATURES_FILE);
    let existing = match fs::read(&signatures_path) {
        Ok(bytes) => Some(bytes),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read {}", signatures_path.display()));
        }
    };
    let outcome = bundle::sign(existing.as_deref(), version, &as_slices(&contents), &key)
        .with_context(|| format!("cannot sign {}", dir.display()))?;
    fs::write(&signatures_path, outcome.signatures.to_json())
        .with_context(|| format!("cannot write {}", signatures_path.display()))?;
    if !outcome.dropped.is_empty() {
        writeln!(
            out,
            "dropped stale signatures over a different manifest: {}",
            outcome.dropped.join(", ")
        )?;
    }
    let signers: Vec<&str> = outcome
        .signatures
        .signatures
        .keys()
        .map(String::as_str)
        .collect();
    writeln!(
        out,
        "signed bundle version {version} ({} files) as {}; signatures now: {}",
        contents.len(),
        key.id(),
        signers.join(", ")
    )?;
    Ok(ExitCode::SUCCESS)
}

fn verify(out: &mut impl Write, trust_path: &Path, dir: &Path) -> anyhow::Result<ExitCode> {
    let trust_bytes = fs::read(trust_path)
        .with_context(|| format!("cannot read trust file {}", trust_path.display()))?;
    let trust = match parse_document(&trust_path.display().to_string(), &trust_bytes, None) {
        Ok(ParsedDocument {
            document: Document::TrustAnchors(trust),
            ..
        }) => trust,
        Ok(other) => bail!(
            "{} is a {} document, expected TrustAnchors",
            trust_path.display(),
            other.document.kind()
        ),
        Err(errors) => {
            for error in errors {
                writeln!(out, "{error}")?;
            }
            bail!("invalid trust file {}", trust_path.display());
        }
    };
    let signatures_path = dir.join(SIGNATURES_FILE);
    let signatures = match fs::read(&signatures_path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            writeln!(
                out,
                "verification failed: {} is missing; the bundle is unsigned",
                signatures_path.display()
            )?;
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read {}", signatures_path.display()));
        }
    };
    let contents = bundle_contents(dir)?;
    match bundle::verify(&signatures, &as_slices(&contents), &trust) {
        Ok(verified) => {
            writeln!(
                out,
                "OK: bundle version {} verified, signed by {} ({} of threshold {})",
                verified.bundle_version,
                verified.signers.join(", "),
                verified.signers.len(),
                verified.threshold
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            writeln!(out, "verification failed: {error}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn explain(
    out: &mut impl Write,
    dir: &Path,
    json: bool,
    now: OffsetDateTime,
    own_server: Option<OwnedServerName>,
    what: ExplainWhat,
) -> anyhow::Result<ExitCode> {
    let own = own_server.unwrap_or_else(|| match &what {
        ExplainWhat::Federation { destination, .. } => destination.clone(),
        ExplainWhat::Invite { invitee, .. } => invitee.server_name().to_owned(),
        ExplainWhat::Upload { .. } => OwnedServerName::try_from("localhost")
            .unwrap_or_else(|_| unreachable!("valid server name")),
    });
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for path in dir_files(dir)? {
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        // Expiry is part of the decision, so documents are parsed without the time checks.
        match parse_document(&path.display().to_string(), &bytes, None) {
            Ok(doc) if doc.document.kind() == Kind::TrustAnchors => {}
            Ok(doc) => docs.push(doc),
            Err(mut found) => errors.append(&mut found),
        }
    }
    let set = if errors.is_empty() {
        let own = match &what {
            ExplainWhat::Upload { .. } => docs
                .iter()
                .find_map(|doc| match &doc.document {
                    Document::FederationList(list) => list
                        .servers
                        .first()
                        .map(|server| server.server_name.0.clone()),
                    _ => None,
                })
                .unwrap_or(own),
            _ => own,
        };
        PolicySet::new(docs, &own)
            .map_err(|found| errors = found)
            .ok()
    } else {
        None
    };
    let Some(set) = set else {
        for error in errors {
            writeln!(out, "{error}")?;
        }
        bail!("the policy in {} is not valid", dir.display());
    };
    let decision = match &what {
        ExplainWhat::Federation {
            origin,
            destination,
        } => set.may_federate(origin, destination, now),
        ExplainWhat::Invite { inviter, invitee } => set.may_invite(inviter, invitee, now, &[]),
        ExplainWhat::Upload { size, mime } => set.check_upload(*size, mime),
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&decision)?)?;
    } else {
        writeln!(
            out,
            "verdict: {}\nrule:    {}\nreason:  {}",
            decision.verdict, decision.rule, decision.reason
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads documents for diffing: no time checks, any error is fatal.
fn load_for_diff(files: &[PathBuf]) -> anyhow::Result<BTreeMap<Kind, (String, Document)>> {
    let mut docs = BTreeMap::new();
    for path in files {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path.display().to_string();
        let doc = parse_document(&name, &bytes, None).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("{} is not valid:\n{}", path.display(), lines.join("\n"))
        })?;
        let kind = doc.document.kind();
        if let Some((first, _)) = docs.insert(kind, (name.clone(), doc.document)) {
            bail!("{name} and {first} are both {kind} documents");
        }
    }
    Ok(docs)
}

fn diff(out: &mut impl Write, old: &Path, new: &Path) -> anyhow::Result<ExitCode> {
    let (old_files, new_files) = match (old.is_dir(), new.is_dir()) {
        (true, true) => (dir_files(old)?, dir_files(new)?),
        (false, false) => (vec![old.to_owned()], vec![new.to_owned()]),
        _ => bail!("compare two files or two directories, not a file with a directory"),
    };
    let old_docs = load_for_diff(&old_files)?;
    let new_docs = load_for_diff(&new_files)?;
    if !old.is_dir() {
        let (old_kind, new_kind) = (old_docs.keys().next(), new_docs.keys().next());
        if old_kind != new_kind {
            bail!(
                "{} and {} are documents of different kinds",
                old.display(),
                new.display()
            );
        }
    }
    let mut changed = false;
    let kinds: std::collections::BTreeSet<Kind> =
        old_docs.keys().chain(new_docs.keys()).copied().collect();
    for kind in kinds {
        match (old_docs.get(&kind), new_docs.get(&kind)) {
            (Some((old_name, old_doc)), Some((new_name, new_doc))) => {
                let lines = govmx_policy::diff::diff(old_doc, new_doc)?;
                if !lines.is_empty() {
                    changed = true;
                    writeln!(out, "{kind}: {old_name} → {new_name}")?;
                    for line in lines {
                        writeln!(out, "  {line}")?;
                    }
                }
            }
            (None, Some((name, _))) => {
                changed = true;
                writeln!(out, "+ {kind} document {name} added")?;
            }
            (Some((name, _)), None) => {
                changed = true;
                writeln!(out, "- {kind} document {name} removed")?;
            }
            (None, None) => {}
        }
    }
    if changed {
        Ok(ExitCode::FAILURE)
    } else {
        writeln!(out, "no differences")?;
        Ok(ExitCode::SUCCESS)
    }
}

fn schema(out: &mut impl Write, check: bool, dir: &Path) -> anyhow::Result<ExitCode> {
    let mut stale = Vec::new();
    for (name, text) in govmx_policy::schema::files() {
        let path = dir.join(&name);
        if check {
            if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "wrote {}", path.display())?;
        }
    }
    if stale.is_empty() {
        if check {
            writeln!(out, "schemas are up to date")?;
        }
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "stale schema files: {}; run `govmx policy schema --out {}`",
            stale.join(", "),
            dir.display()
        )?;
        Ok(ExitCode::FAILURE)
    }
}
