//! The verdict cache through the gate, against a scripted clamd that reports a signature DB
//! version: repeated content is not rescanned, a DB update forces a rescan, errors are never
//! cached, and a dead first clamd fails over to the second.

mod support;

use std::time::Duration;

use support::*;

const UPLOAD: &str = "/_matrix/media/v3/upload";
const V1: &str = "ClamAV 1.4.6/27000/Mon Nov 23 09:00:00 2026";
const V2: &str = "ClamAV 1.4.6/27001/Mon Nov 23 13:00:00 2026";

#[tokio::test]
async fn cache_is_keyed_by_content_and_db_version_and_skips_errors() {
    let clamd = ScriptedClamd::start(V1).await;
    let dir = gate_dir();
    let upstream = FakeUpstream::start(&dir.path().join("spool")).await;
    let dead = format!("127.0.0.1:{}", free_port());
    let gate = start_gate(dir, upstream.addr, &[dead, clamd.addr.to_string()], "").await;
    let up = |body: Vec<u8>| async {
        client()
            .post(gate.url(UPLOAD))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    // Wait until the health probe has read the DB version.
    let admin = format!("http://{}/metrics", gate.admin);
    poll("db age gauge", Duration::from_secs(10), async || {
        let text = client().get(&admin).send().await.ok()?.text().await.ok()?;
        text.contains("govmx_media_clamd_db_age_seconds{")
            .then_some(())
    })
    .await;

    assert_eq!(up(tiny_png()).await, 200);
    assert_eq!(up(tiny_png()).await, 200);
    assert_eq!(
        clamd.scans(),
        1,
        "second identical upload served from the cache"
    );
    assert_eq!(up(eicar()).await, 403);
    assert_eq!(up(eicar()).await, 403);
    assert_eq!(clamd.scans(), 2, "infected verdicts are cached too");

    // Scanner errors are 503 and never cached.
    assert_eq!(up(b"BREAKME".to_vec()).await, 503);
    assert_eq!(up(b"BREAKME".to_vec()).await, 503);
    assert_eq!(clamd.scans(), 4);

    // New signatures: the next upload of known content is scanned again.
    *clamd.version.lock().unwrap() = V2.to_owned();
    poll(
        "rescan after DB update",
        Duration::from_secs(10),
        async || {
            assert_eq!(up(tiny_png()).await, 200);
            (clamd.scans() == 5).then_some(())
        },
    )
    .await;
    assert_eq!(up(tiny_png()).await, 200);
    assert_eq!(clamd.scans(), 5);

    let audit = gate.audit_lines();
    let cached: Vec<bool> = audit
        .iter()
        .map(|l| l["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(&cached[..4], [false, true, false, true]);
    assert_eq!(audit[0]["db_version"], 27000);
    assert_eq!(audit.last().unwrap()["db_version"], 27001);
    assert_eq!(
        upstream.received().len(),
        audit.iter().filter(|l| l["verdict"] == "clean").count()
    );
}

#[tokio::test]
async fn large_uploads_stream_to_clamd_and_use_the_cache() {
    let clamd = ScriptedClamd::start(V1).await;
    let dir = gate_dir();
    let upstream = FakeUpstream::start(&dir.path().join("spool")).await;
    let gate = start_gate(dir, upstream.addr, &[clamd.addr.to_string()], "").await;
    let admin = format!("http://{}/metrics", gate.admin);
    poll("db age gauge", Duration::from_secs(10), async || {
        let text = client().get(&admin).send().await.ok()?.text().await.ok()?;
        text.contains("govmx_media_clamd_db_age_seconds{")
            .then_some(())
    })
    .await;

    // 3 MiB with EICAR's marker at the very end: streamed (past the 1 MiB memory bound).
    let mut data = noise(3 * 1024 * 1024);
    data.extend_from_slice(b"EICAR");
    for _ in 0..2 {
        let res = client()
            .post(gate.url(UPLOAD))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
    }
    assert_eq!(
        clamd.scans(),
        1,
        "the second stream was abandoned for the cached verdict"
    );
    assert!(upstream.received().is_empty());
    poll("spool empty", Duration::from_secs(5), async || {
        (gate.spool_files() == 0).then_some(())
    })
    .await;
}
