//! clamd from the stack: the EICAR test file is FOUND, clean bytes are OK.

use govmx_e2e::NetSpec;
use govmx_stack::{ScanVerdict, eicar_test_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_finds_eicar_and_passes_clean_bytes() -> anyhow::Result<()> {
    let net = NetSpec::default().clamd().start().await?;
    let clamd = net.stack.clamd().expect("clamd was requested");
    assert_eq!(
        clamd.scan(&eicar_test_file()).await?,
        ScanVerdict::Infected {
            signature: "Eicar-Test-Signature.UNOFFICIAL".to_owned()
        }
    );
    assert_eq!(
        clamd
            .scan(b"Sehr geehrte Frau Mustermann, anbei Ihr Bescheid.")
            .await?,
        ScanVerdict::Clean
    );
    Ok(())
}
