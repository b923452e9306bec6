//! The clamd client against a real clamd (EICAR, clean, VERSION), a fake clamd that hangs, and a
//! closed port: scanner failures are errors, never infections.

mod support;

use std::time::{Duration, Instant};

use govmx_media_scanner::clamd::{ClamdClient, ClamdError, ClamdSettings, ScanVerdict};
use support::{Clamd, EICAR_SIG, HangingClamd, eicar, free_port};

fn client(addresses: Vec<String>, scan_timeout: Duration) -> ClamdClient {
    ClamdClient::new(ClamdSettings {
        addresses,
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(2),
        scan_timeout,
        chunk_size: 16,
    })
}

#[tokio::test]
async fn eicar_is_infected_clean_is_clean_version_parses() {
    let clamd = Clamd::start().await;
    let c = client(vec![clamd.addr()], Duration::from_secs(10));

    let scanned = c.scan_bytes(&eicar()).await.unwrap();
    assert_eq!(
        scanned.verdict,
        ScanVerdict::Infected {
            signature: EICAR_SIG.into()
        }
    );
    assert_eq!(scanned.addr, clamd.addr());

    // Small chunks (16 bytes) exercise multi-frame streams.
    let scanned = c
        .scan_bytes(b"just a harmless text file, nothing to see here\n")
        .await
        .unwrap();
    assert_eq!(scanned.verdict, ScanVerdict::Clean);
    let scanned = c.scan_reader(&b""[..]).await.unwrap();
    assert_eq!(scanned.verdict, ScanVerdict::Clean, "empty stream");

    c.ping(&clamd.addr()).await.unwrap();
    let version = c.version(&clamd.addr()).await.unwrap();
    assert_eq!(version.engine, "1.4.6", "{version:?}");
    // Only our .hdb is loaded, so clamd reports no DB version: nothing will be cached.
    assert_eq!(version.db_version, None);

    let probes = c.probe_all().await;
    assert!(probes[0].result.is_ok(), "{probes:?}");
    assert!(c.any_up());
}

#[tokio::test]
async fn failover_skips_a_dead_address() {
    let clamd = Clamd::start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let c = client(vec![dead.clone(), clamd.addr()], Duration::from_secs(10));
    let scanned = c.scan_bytes(&eicar()).await.unwrap();
    assert_eq!(scanned.addr, clamd.addr());
    assert!(matches!(scanned.verdict, ScanVerdict::Infected { .. }));
    let probes = c.probe_all().await;
    assert!(
        matches!(probes[0].result, Err(ClamdError::Connect { .. })),
        "{probes:?}"
    );
}

#[tokio::test]
async fn a_hanging_clamd_times_out_as_an_error() {
    let fake = HangingClamd::start().await;
    let c = client(vec![fake.addr.to_string()], Duration::from_millis(500));
    let started = Instant::now();
    let err = c.scan_bytes(&eicar()).await.unwrap_err();
    assert!(matches!(err, ClamdError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = c.ping(&fake.addr.to_string()).await.unwrap_err();
    assert!(matches!(err, ClamdError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let addr = format!("127.0.0.1:{}", free_port());
    let c = client(vec![addr], Duration::from_secs(1));
    let err = c.scan_bytes(b"x").await.unwrap_err();
    assert!(matches!(err, ClamdError::Connect { .. }), "{err:?}");
    assert!(err.is_transport());
    assert!(!c.any_up());
}

#[tokio::test]
async fn size_limit_error_is_an_error_not_an_infection() {
    // clamd with a 1 KiB StreamMaxLength answers "INSTREAM size limit exceeded. ERROR".
    let mut clamd = Clamd::start().await;
    let conf = clamd.dir.path().join("clamd.conf");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("StreamMaxLength 100M", "StreamMaxLength 1K");
    std::fs::write(&conf, text).unwrap();
    clamd.restart().await;
    let c = ClamdClient::new(ClamdSettings {
        addresses: vec![clamd.addr()],
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(2),
        scan_timeout: Duration::from_secs(5),
        chunk_size: 512,
    });
    let err = c.scan_bytes(&vec![b'a'; 64 * 1024]).await.unwrap_err();
    match err {
        ClamdError::Scanner { message, .. } => {
            assert!(message.contains("size limit exceeded"), "{message}")
        }
        ClamdError::Io { .. } => {} // clamd may close before we read its reply
        other => panic!("unexpected {other:?}"),
    }
}
