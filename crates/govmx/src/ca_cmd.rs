//! `govmx ca …`: init, token, issue, revoke, crl, audit, verify-chain, and (against a
//! homeserver) publish and verify-user for the agency CA.
//!
//! Glue only: reading files, passphrases and the clock, printing; the CA, tokens, CRLs, the
//! issuance log and the verifier live in `govmx-agency-ca`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use govmx_agency_ca::{
    AgencyDirectory, CaDir, CaSettings, HierarchyOptions, Profile,
    ca::RevocationReason,
    log::audit,
    store::EnrollRequest,
    verify::{VerifyInput, verify_identity},
};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Arguments of `govmx ca`.
#[derive(Debug, clap::Args)]
pub(crate) struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CaCommand {
    /// Create a root (key encrypted with a passphrase) and an online intermediate in a new
    /// state directory; prints the root's SHA-256 fingerprint.
    Init {
        /// The CA state directory (created, mode 0700; must not hold a CA).
        #[arg(long)]
        dir: PathBuf,
        /// The CA's name, e.g. "Land Hessen".
        #[arg(long)]
        name: String,
        /// File whose first line is the root key passphrase (at least 12 bytes).
        #[arg(long, env = "GOVMX_CA_PASSPHRASE_FILE")]
        passphrase_file: PathBuf,
        /// PBKDF2 iterations protecting the root key.
        #[arg(long, default_value_t = govmx_agency_ca::keys::DEFAULT_KDF_ITERATIONS, hide = true)]
        kdf_iterations: u32,
    },
    /// Create a one-time enrollment token bound to an agency and a profile; prints the secret.
    Token {
        /// The CA state directory.
        #[arg(long)]
        dir: PathBuf,
        /// The policy directory (its agencies.yaml) or the Agencies file.
        #[arg(long)]
        policies: PathBuf,
        /// Agency id (from agencies.yaml).
        #[arg(long)]
        agency: String,
        /// homeserver-tls, service-mtls or agency-identity.
        #[arg(long)]
        profile: Profile,
        /// Bind the token to one subject: a Matrix ID (agency-identity) or a host.
        #[arg(long)]
        subject: Option<String>,
        /// Token lifetime: <n>s|m|h|d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Redeem a token for a certificate from a CSR (the same path as the HTTPS API); prints the
    /// chain (leaf + intermediate, PEM).
    Issue {
        /// The CA state directory.
        #[arg(long)]
        dir: PathBuf,
        /// The policy directory (its agencies.yaml) or the Agencies file.
        #[arg(long)]
        policies: PathBuf,
        /// The enrollment token.
        #[arg(long, env = "GOVMX_CA_TOKEN")]
        token: String,
        /// homeserver-tls, service-mtls or agency-identity.
        #[arg(long)]
        profile: Profile,
        /// The CSR (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        /// agency-identity: the account's cross-signing master key (unpadded base64).
        #[arg(long)]
        master_key: Option<String>,
        /// Write the chain here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a certificate by serial (hex) and re-sign the CRL.
    Revoke {
        /// The CA state directory.
        #[arg(long)]
        dir: PathBuf,
        /// Serial number, hex (colons allowed).
        serial: String,
        /// unspecified, key-compromise, affiliation-changed, superseded,
        /// cessation-of-operation or privilege-withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: RevocationReason,
    },
    /// Re-sign the CRL (new number and nextUpdate) and print it (PEM).
    Crl {
        /// The CA state directory.
        #[arg(long)]
        dir: PathBuf,
        /// Write it here as well as to the state directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify the hash chain of the issuance log; reports the first broken line.
    Audit {
        /// The CA state directory (audits its issuance.log).
        #[arg(long, conflicts_with = "log", required_unless_present = "log")]
        dir: Option<PathBuf>,
        /// An issuance log file.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Verify an agency-identity chain against the pinned root, the expected Matrix ID, the
    /// user's current master key and the CRL. Exit 0 and the agency's name, or exit 1 and why.
    VerifyChain {
        /// Leaf + intermediate (PEM).
        #[arg(long)]
        chain: PathBuf,
        /// The pinned government root (PEM).
        #[arg(long)]
        root: PathBuf,
        /// The Matrix ID being verified.
        #[arg(long)]
        user: String,
        /// The user's current cross-signing master key (unpadded base64).
        #[arg(long)]
        master_key: String,
        /// The CA's CRL (PEM or DER).
        #[arg(long)]
        crl: PathBuf,
        /// Verify at this time (RFC 3339) instead of the clock.
        #[arg(long, value_parser = parse_time)]
        now: Option<OffsetDateTime>,
    },
    /// As an agency account: publish your agency-identity chain (leaf + intermediate, PEM) in
    /// your profile (custom field `de.govmx.identity_chain`), where citizens' clients fetch it.
    Publish {
        #[command(flatten)]
        login: MatrixLogin,
        /// The chain `govmx ca issue` wrote (leaf + intermediate, PEM).
        #[arg(long)]
        chain: PathBuf,
    },
    /// As a citizen, against your own homeserver: fetch the chain an account published, its
    /// current cross-signing master key (/keys/query), and verify both against the pinned root
    /// and the CRL. Exit 0 and the agency's name, or exit 1 and why.
    VerifyUser {
        #[command(flatten)]
        login: MatrixLogin,
        /// The account to verify, e.g. @amt-1:wasser.example.
        account: String,
        /// The pinned government root (PEM).
        #[arg(long)]
        root: PathBuf,
        /// The CA's CRL: a file (PEM or DER) or an http(s) URL (e.g. the CA's
        /// `/_govmx/ca/v1/crl`; HTTPS trusts the pinned root as well as the system roots).
        #[arg(long)]
        crl: String,
        /// Verify at this time (RFC 3339) instead of the clock.
        #[arg(long, value_parser = parse_time)]
        now: Option<OffsetDateTime>,
    },
}

/// How `publish` and `verify-user` log in to the (own) homeserver.
#[derive(Debug, clap::Args)]
struct MatrixLogin {
    /// Your homeserver's client API base URL, e.g. https://matrix.example.
    #[arg(long, env = "GOVMX_HOMESERVER")]
    homeserver: String,
    /// Your Matrix ID, e.g. @erika:buerger.example.
    #[arg(long = "as", env = "GOVMX_MATRIX_USER", value_name = "USER_ID")]
    user: String,
    /// File whose first line is your password: logs in as a new device and logs out afterwards.
    #[arg(
        long,
        env = "GOVMX_PASSWORD_FILE",
        required_unless_present = "access_token_file",
        conflicts_with = "access_token_file"
    )]
    password_file: Option<PathBuf>,
    /// File whose first line is an access token of your account (no new device).
    #[arg(long, env = "GOVMX_ACCESS_TOKEN_FILE")]
    access_token_file: Option<PathBuf>,
}

pub(crate) fn run(args: CaArgs) -> anyhow::Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    let mut stdout = io::stdout().lock();
    match args.command {
        CaCommand::Init {
            dir,
            name,
            passphrase_file,
            kdf_iterations,
        } => {
            let passphrase = read_passphrase(&passphrase_file)?;
            let mut options = HierarchyOptions::new(name);
            options.kdf_iterations = kdf_iterations;
            let ca = CaDir::init(
                &dir,
                &options,
                passphrase.as_bytes(),
                CaSettings::default(),
                now,
            )
            .with_context(|| format!("cannot create the CA in {}", dir.display()))?;
            let status = ca.status()?;
            writeln!(stdout, "created CA in {}", dir.display())?;
            writeln!(stdout, "root SHA-256: {}", status.root_sha256)?;
            writeln!(
                stdout,
                "move {} offline; pin {}",
                dir.join("root-key.pem").display(),
                dir.join("root.pem").display()
            )?;
        }
        CaCommand::Token {
            dir,
            policies,
            agency,
            profile,
            subject,
            ttl,
        } => {
            let ca = open(&dir, Some(&policies), now)?;
            let (secret, record) =
                ca.create_token(&agency, profile, subject.as_deref(), ttl, now)?;
            writeln!(stdout, "{secret}")?;
            tracing::info!(id = %record.id, %agency, %profile, expires = %rfc3339(record.expires_at), "token created; it is shown only once");
        }
        CaCommand::Issue {
            dir,
            policies,
            token,
            profile,
            csr,
            master_key,
            out,
        } => {
            let ca = open(&dir, Some(&policies), now)?;
            let csr_bytes =
                fs::read(&csr).with_context(|| format!("cannot read {}", csr.display()))?;
            let enrolled = ca
                .enroll(
                    &EnrollRequest {
                        token: &token,
                        profile,
                        csr: &csr_bytes,
                        master_key: master_key.as_deref(),
                    },
                    now,
                )
                .context("refused")?;
            match out {
                Some(path) => fs::write(&path, &enrolled.chain_pem)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => stdout.write_all(enrolled.chain_pem.as_bytes())?,
            }
            tracing::info!(serial = %enrolled.issued.serial, subject = %enrolled.issued.subject, not_after = %rfc3339(enrolled.issued.not_after), "issued");
        }
        CaCommand::Revoke {
            dir,
            serial,
            reason,
        } => {
            let ca = open(&dir, None, now)?;
            ca.revoke(&serial, reason, now)?;
            writeln!(
                stdout,
                "revoked {serial} ({}); CRL re-signed: {}",
                reason.as_str(),
                ca.crl_path().display()
            )?;
        }
        CaCommand::Crl { dir, out } => {
            let ca = open(&dir, None, now)?;
            let pem = ca.regenerate_crl(now)?;
            if let Some(path) = out {
                fs::write(&path, &pem)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            stdout.write_all(pem.as_bytes())?;
        }
        CaCommand::Audit { dir, log } => {
            let path = match (dir, log) {
                (_, Some(log)) => log,
                (Some(dir), None) => dir.join("issuance.log"),
                (None, None) => bail!("give --dir or --log"),
            };
            let bytes =
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let report = audit(&bytes).with_context(|| format!("{}: broken", path.display()))?;
            writeln!(
                stdout,
                "{}: OK, {} entries, head {}",
                path.display(),
                report.entries,
                report.head
            )?;
        }
        CaCommand::VerifyChain {
            chain,
            root,
            user,
            master_key,
            crl,
            now: at,
        } => {
            let read =
                |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));
            let (chain, root, crl) = (read(&chain)?, read(&root)?, read(&crl)?);
            let result = verify_identity(&VerifyInput {
                chain_pem: &chain,
                root_pem: &root,
                expected_user_id: &user,
                current_master_key: &master_key,
                crl: &crl,
                now: at.unwrap_or(now),
            });
            match result {
                Ok(verified) => {
                    writeln!(
                        stdout,
                        "verified: {} is an official account of {} ({}), certificate valid until {}",
                        verified.user_id,
                        verified.agency_name,
                        verified.agency_id,
                        rfc3339(verified.not_after)
                    )?;
                }
                Err(reason) => {
                    writeln!(stdout, "NOT verified: {reason}")?;
                    return Ok(ExitCode::from(1));
                }
            }
        }
        CaCommand::Publish { login, chain } => {
            let chain = fs::read_to_string(&chain)
                .with_context(|| format!("cannot read {}", chain.display()))?;
            block_on(async {
                let session = login.login().await?;
                let result = govmx_identity::publish(&session.client, &chain).await;
                session.finish().await;
                result.context("publishing failed")
            })?;
            writeln!(
                stdout,
                "published the chain in the profile field {} of {}",
                govmx_identity::PROFILE_FIELD,
                login.user
            )?;
        }
        CaCommand::VerifyUser {
            login,
            account,
            root,
            crl,
            now: at,
        } => {
            let account = matrix_sdk::ruma::UserId::parse(account.as_str())
                .with_context(|| format!("{account:?} is not a Matrix ID"))?;
            let root =
                fs::read(&root).with_context(|| format!("cannot read {}", root.display()))?;
            let result = block_on(async {
                let crl = read_crl(&crl, &root).await?;
                let session = login.login().await?;
                let result = govmx_identity::fetch_and_verify(
                    &session.client,
                    &account,
                    &root,
                    &crl,
                    at.unwrap_or(now),
                )
                .await;
                session.finish().await;
                anyhow::Ok(result)
            })?;
            match result {
                Ok(verified) => writeln!(
                    stdout,
                    "verified: {} is an official account of {} ({}), certificate valid until {}",
                    verified.user_id,
                    verified.agency_name,
                    verified.agency_id,
                    rfc3339(verified.not_after)
                )?,
                Err(govmx_identity::IdentityError::Matrix(error)) => {
                    return Err(anyhow::Error::from(*error).context("request failed"));
                }
                Err(reason) => {
                    writeln!(stdout, "NOT verified: {account}: {reason}")?;
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// A logged-in client; `owned` when we created the device (password login) and log it out.
struct MatrixSession {
    client: matrix_sdk::Client,
    owned: bool,
}

impl MatrixSession {
    async fn finish(self) {
        if self.owned
            && let Err(error) = self.client.logout().await
        {
            tracing::warn!(%error, "could not log out the temporary device");
        }
    }
}

impl MatrixLogin {
    async fn login(&self) -> anyhow::Result<MatrixSession> {
        let user_id = matrix_sdk::ruma::UserId::parse(self.user.as_str())
            .with_context(|| format!("--as {:?} is not a Matrix ID", self.user))?;
        let client = matrix_sdk::Client::builder()
            .homeserver_url(&self.homeserver)
            .build()
            .await
            .with_context(|| format!("cannot use homeserver {}", self.homeserver))?;
        match (&self.password_file, &self.access_token_file) {
            (Some(file), _) => {
                let password = read_passphrase(file)?;
                client
                    .matrix_auth()
                    .login_username(&user_id, &password)
                    .initial_device_display_name("govmx ca")
                    .await
                    .with_context(|| format!("login of {user_id} failed"))?;
                Ok(MatrixSession {
                    client,
                    owned: true,
                })
            }
            (None, Some(file)) => {
                let access_token = read_passphrase(file)?;
                // The device id only matters to the (unused, in-memory) crypto store; the
                // token is checked with /whoami right away.
                let session = matrix_sdk::authentication::matrix::MatrixSession {
                    meta: matrix_sdk::SessionMeta {
                        user_id: user_id.clone(),
                        device_id: "GOVMXCA".into(),
                    },
                    tokens: matrix_sdk::SessionTokens {
                        access_token,
                        refresh_token: None,
                    },
                };
                client.restore_session(session).await?;
                let whoami = client
                    .whoami()
                    .await
                    .context("the access token was refused")?;
                if whoami.user_id != user_id {
                    bail!(
                        "the access token belongs to {}, not {user_id}",
                        whoami.user_id
                    );
                }
                Ok(MatrixSession {
                    client,
                    owned: false,
                })
            }
            (None, None) => bail!("give --password-file or --access-token-file"),
        }
    }
}

/// The CRL from a file, or fetched from an http(s) URL.
async fn read_crl(source: &str, root_pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    if !(source.starts_with("https://") || source.starts_with("http://")) {
        return fs::read(source).with_context(|| format!("cannot read {source}"));
    }
    let root = reqwest::Certificate::from_pem(root_pem).context("the root is not PEM")?;
    let http = reqwest::Client::builder()
        .tls_certs_merge([root])
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let response = http
        .get(source)
        .send()
        .await
        .with_context(|| format!("cannot fetch the CRL from {source}"))?
        .error_for_status()
        .with_context(|| format!("cannot fetch the CRL from {source}"))?;
    Ok(response.bytes().await?.to_vec())
}

fn open(dir: &Path, policies: Option<&Path>, now: OffsetDateTime) -> anyhow::Result<CaDir> {
    let agencies = match policies {
        Some(path) => {
            let file = if path.is_dir() {
                path.join("agencies.yaml")
            } else {
                path.to_owned()
            };
            let bytes =
                fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            Some(
                AgencyDirectory::parse(&file.display().to_string(), &bytes, now)
                    .map_err(anyhow::Error::msg)?,
            )
        }
        None => None,
    };
    CaDir::open(dir, CaSettings::default(), agencies)
        .with_context(|| format!("cannot open the CA in {}", dir.display()))
}

fn read_passphrase(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read passphrase file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| format!("not an RFC 3339 time: {e}"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    govmx_policy::DurationSpec::parse(text).map(|d| d.duration())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}
