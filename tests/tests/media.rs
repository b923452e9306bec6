//! The media scanner in front of a real Synapse, scanning with a real clamd (issue 4).
//!
//! Each test starts one homeserver and clamd in its own temp dir, and the scanner in-process
//! in front of the homeserver's client listener. Refused uploads must leave no trace in Synapse:
//! neither a file in the media store nor a row in `local_media_repository`.

use std::time::Duration;

use govmx_e2e::media::{
    EncryptedAttachment, SCAN_ENCRYPTED_PATH, Scanner, UPLOAD_PATH, download, http, json_reply,
    poll, raw_head_only, stored_media, synapse_log_contains, tiny_png, upload,
};
use govmx_e2e::{DEADLINE, NetSpec, PASSWORD, TestNet};
use govmx_stack::clamd::{START_DEADLINE, ping, render_clamd_conf};
use govmx_stack::{Supervised, eicar_test_file, ensure_clamd};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::net::TcpStream;

/// The signature the stack's clamd test database gives EICAR.
const EICAR_SIGNATURE: &str = "Eicar-Test-Signature.UNOFFICIAL";

/// The scanner's `max_upload_size` unless a test needs its own.
const DEFAULT_LIMIT: u64 = 8 * 1024 * 1024;

/// A homeserver with clamd, the scanner in front of it, and a registered user's access token.
/// Field order matters: the scanner stops before the stack.
struct Setup {
    scanner: Scanner,
    token: String,
    net: TestNet,
}

impl Setup {
    async fn start(max_upload_size: u64) -> anyhow::Result<Setup> {
        let net = NetSpec::default().homeserver("amt").clamd().start().await?;
        let clamd = net.stack.clamd().expect("clamd was requested").addr();
        let scanner = Scanner::start(
            net.hs("amt"),
            clamd,
            &net.dir().join("scanner"),
            max_upload_size,
        )
        .await?;
        let token = net
            .hs("amt")
            .register_user("erika", PASSWORD)
            .await?
            .access_token;
        Ok(Setup {
            scanner,
            token,
            net,
        })
    }

    /// Uploads through the scanner.
    async fn upload(&self, content_type: &str, bytes: Vec<u8>) -> anyhow::Result<(u16, String)> {
        let reply = upload(
            &http(),
            &self.scanner.url(),
            &self.token,
            content_type,
            bytes,
        )
        .await?;
        Ok((reply.status, reply.body.to_string()))
    }

    fn assert_nothing_stored(&self) -> anyhow::Result<()> {
        let stored = stored_media(self.net.hs("amt"))?;
        assert!(stored.is_empty(), "Synapse stored media: {stored:?}");
        assert_eq!(
            self.scanner.spool_files()?,
            Vec::<std::path::PathBuf>::new()
        );
        Ok(())
    }

    /// The verdicts in the audit log, in order.
    fn audit_verdicts(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .scanner
            .audit_records()?
            .iter()
            .map(|record| record["verdict"].as_str().unwrap_or_default().to_owned())
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_upload_is_refused_and_never_stored() -> anyhow::Result<()> {
    let setup = Setup::start(DEFAULT_LIMIT).await?;
    let reply = upload(
        &http(),
        &setup.scanner.url(),
        &setup.token,
        "text/plain",
        eicar_test_file(),
    )
    .await?;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.body["errcode"], "M_FORBIDDEN", "{}", reply.body);
    let error = reply.body["error"].as_str().unwrap_or_default();
    assert!(error.contains(EICAR_SIGNATURE), "{}", reply.body);

    setup.assert_nothing_stored()?;
    // Not even the request reached Synapse (its access log sees uploads: see the clean test).
    assert!(!synapse_log_contains(setup.net.hs("amt"), UPLOAD_PATH)?);
    let records = setup.scanner.audit_records()?;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["verdict"], "infected");
    assert_eq!(records[0]["signature"], EICAR_SIGNATURE);
    assert_eq!(records[0]["path"], UPLOAD_PATH);
    assert_eq!(records[0]["size"], 68);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_png_is_stored_and_downloadable() -> anyhow::Result<()> {
    let setup = Setup::start(DEFAULT_LIMIT).await?;
    let png = tiny_png();
    let reply = upload(
        &http(),
        &setup.scanner.url(),
        &setup.token,
        "image/png",
        png.clone(),
    )
    .await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mxc = reply.body["content_uri"]
        .as_str()
        .expect("content_uri in the upload response");
    let hs = setup.net.hs("amt");
    assert!(
        mxc.starts_with(&format!("mxc://{}/", hs.server_name())),
        "{mxc}"
    );

    let (status, bytes) = download(&http(), &hs.client_url(), &setup.token, mxc).await?;
    assert_eq!(status, 200);
    assert_eq!(bytes, png, "Synapse serves exactly the scanned bytes");
    let stored = stored_media(hs)?;
    assert_eq!(stored.rows.len(), 1, "{stored:?}");
    assert!(!stored.files.is_empty(), "the media store walk sees it");
    let upload_line = format!("POST {UPLOAD_PATH}");
    poll(
        "Synapse's access log to show the upload",
        DEADLINE,
        async || synapse_log_contains(hs, &upload_line).ok()?.then_some(()),
    )
    .await?;
    assert!(mxc.ends_with(&stored.rows[0]), "{mxc} vs {stored:?}");
    assert_eq!(setup.audit_verdicts()?, ["clean"]);
    let records = setup.scanner.audit_records()?;
    assert_eq!(records[0]["mime"], "image/png");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_over_limit_is_413_before_body() -> anyhow::Result<()> {
    const LIMIT: u64 = 1024 * 1024;
    let setup = Setup::start(LIMIT).await?;
    let head = format!(
        "POST {UPLOAD_PATH}?filename=big.bin HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        setup.scanner.addr(),
        setup.token,
        LIMIT + 1
    );
    // Not one body byte is sent: the answer must come from the headers alone.
    let answer = raw_head_only(setup.scanner.addr(), &head, "M_TOO_LARGE").await?;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");
    setup.assert_nothing_stored()?;
    assert_eq!(setup.audit_verdicts()?, ["too_large"]);

    // Control: exactly the limit passes (the limit is inclusive), and is stored.
    let (status, body) = setup
        .upload("application/octet-stream", vec![b'x'; LIMIT as usize])
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored_media(setup.net.hs("amt"))?.rows.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_down_is_503_and_not_cached() -> anyhow::Result<()> {
    let setup = Setup::start(DEFAULT_LIMIT).await?;
    let clamd = setup.net.stack.clamd().expect("clamd was requested");
    let addr = clamd.addr();
    let pid = clamd.process().pid().expect("clamd runs");
    // The stack offers no stop for one child: kill clamd's process group (its pid) directly. The
    // stack's `Supervised` reaps it on drop.
    let group = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .expect("a pid");
    kill_process_group(group, Signal::KILL)?;
    poll("clamd's port to close", DEADLINE, async || {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await?;

    let document = b"Bescheid vom 23.11.: Ihr Antrag ist bewilligt.".to_vec();
    let (status, body) = setup.upload("text/plain", document.clone()).await?;
    assert_eq!(status, 503, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(error["errcode"], "GOVMX_SCANNER_UNAVAILABLE", "{body}");
    assert!(
        !body.contains("virus found"),
        "unavailable is never reported as infected: {body}"
    );
    setup.assert_nothing_stored()?;
    poll("/readyz to report clamd down", DEADLINE, async || {
        (!setup.scanner.ready().await.ok()?).then_some(())
    })
    .await?;

    // clamd back on the same address, from the stack's own config renderer and supervisor.
    let dir = setup.net.stack.state_dir().join("clamd");
    let conf = dir.join("clamd-restarted.conf");
    std::fs::write(&conf, render_clamd_conf(&dir, addr))?;
    let mut command = std::process::Command::new(ensure_clamd()?);
    command.arg("-c").arg(&conf).current_dir(&dir);
    let _clamd = Supervised::spawn(
        "clamd (restarted)",
        command,
        &dir.join("clamd-restarted.log"),
    )?;
    poll(
        "restarted clamd to answer PONG",
        START_DEADLINE,
        async || ping(addr).await.ok(),
    )
    .await?;

    let (status, body) = setup.upload("text/plain", document).await?;
    assert_eq!(status, 200, "the failure was not cached: {body}");
    assert_eq!(stored_media(setup.net.hs("amt"))?.rows.len(), 1);
    poll("/readyz to report clamd back", DEADLINE, async || {
        setup.scanner.ready().await.ok()?.then_some(())
    })
    .await?;
    assert_eq!(
        setup.audit_verdicts()?,
        ["scanner_unavailable", "clean"],
        "audit log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_eicar_via_mcs_api_is_not_clean() -> anyhow::Result<()> {
    let setup = Setup::start(DEFAULT_LIMIT).await?;
    let hs = setup.net.hs("amt");
    let client = http();
    let scan = async |plaintext: &[u8]| -> anyhow::Result<(u16, serde_json::Value, String)> {
        // As an E2EE client does: the ciphertext goes to Synapse directly (the scanner cannot see
        // into it at upload time); the MCS API decrypts it with the key from the event.
        let attachment = EncryptedAttachment::encrypt(plaintext);
        let uploaded = upload(
            &client,
            &hs.client_url(),
            &setup.token,
            "application/octet-stream",
            attachment.ciphertext.clone(),
        )
        .await?;
        assert_eq!(uploaded.status, 200, "{}", uploaded.body);
        let mxc = uploaded.body["content_uri"].as_str().expect("content_uri");
        let response = client
            .post(format!("{}{SCAN_ENCRYPTED_PATH}", setup.scanner.url()))
            .bearer_auth(&setup.token)
            .json(&serde_json::json!({"file": attachment.file_json(mxc)}))
            .timeout(Duration::from_secs(60))
            .send()
            .await?;
        let reply = json_reply(response).await?;
        Ok((reply.status, reply.body, mxc.to_owned()))
    };

    let (status, body, eicar_mxc) = scan(&eicar_test_file()).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["clean"], false, "{body}");
    assert_eq!(body["info"], "***VIRUS DETECTED***", "{body}");
    // The infected ciphertext was quarantined through Synapse's admin API: nobody can fetch
    // it from Synapse around the scanner any more.
    let (status, _) = download(&client, &hs.client_url(), &setup.token, &eicar_mxc).await?;
    assert_eq!(status, 404, "quarantined media is not served");

    let (status, body, png_mxc) = scan(&tiny_png()).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"clean": true, "info": "File is clean"})
    );
    let (status, _) = download(&client, &hs.client_url(), &setup.token, &png_mxc).await?;
    assert_eq!(status, 200, "clean media stays available");
    let records = setup.scanner.audit_records()?;
    assert_eq!(
        setup.audit_verdicts()?,
        ["infected", "clean"],
        "{records:?}"
    );
    assert_eq!(records[0]["signature"], EICAR_SIGNATURE);
    assert_eq!(records[0]["quarantined"], true, "{records:?}");
    assert!(records[1].get("quarantined").is_none(), "{records:?}");
    Ok(())
}
