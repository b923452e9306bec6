//! Exporter benchmark against a real Synapse (and clamd) from `govmx-stack`:
//!
//! ```sh
//! cargo run --release -p govmx-exporter --example bench -- --users 1000 --rooms 1000
//! ```
//!
//! 1. starts one homeserver (behind its gate) and clamd in a temp dir;
//! 2. creates `--users` users (admin API `PUT /_synapse/admin/v2/users/…`, no password hashing)
//!    and `--rooms` rooms (`createRoom` as a server admin without rate limit);
//! 3. collection cost: `--cycles` full collections (Synapse, clamd, CA, policy in parallel):
//!    wall time per cycle, and CPU time of this process and of Synapse per cycle;
//! 4. scrape latency: `--scrapes` sequential `GET /metrics` over HTTP (keep-alive) while the
//!    collection loops run every second; p50/p99/max.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use govmx_exporter::Exporter;
use govmx_service::Shutdown;
use govmx_stack::{ClamdSpec, HomeserverSpec, Stack, StackSpec, free_loopback_ip};

const PASSWORD: &str = "bench-password";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of a process from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn admin_token(
    hs: &govmx_stack::Homeserver,
    http: &reqwest::Client,
) -> anyhow::Result<String> {
    let secrets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hs.data_dir().join("secrets.json"))?)?;
    let secret = secrets["registration_shared_secret"]
        .as_str()
        .context("secret")?;
    let url = format!("{}/_synapse/admin/v1/register", hs.client_url());
    let nonce: serde_json::Value = http.get(&url).send().await?.json().await?;
    let nonce = nonce["nonce"].as_str().context("nonce")?;
    let mac = govmx_stack::synapse::registration_mac(secret, nonce, "bench", PASSWORD, true);
    let body = serde_json::json!({"nonce": nonce, "username": "bench", "password": PASSWORD, "mac": mac, "admin": true});
    let reply: serde_json::Value = http.post(&url).json(&body).send().await?.json().await?;
    Ok(reply["access_token"]
        .as_str()
        .context("access_token")?
        .to_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let (users, rooms) = (arg("--users", 1000), arg("--rooms", 1000));
    let (cycles, scrapes) = (arg("--cycles", 20), arg("--scrapes", 2000));
    let dir = tempfile::tempdir()?;
    let ip = free_loopback_ip(&[8448, 8008])?;
    let clamd_ip = free_loopback_ip(&[3310])?;
    let spec = StackSpec::new(dir.path().join("state"))
        .homeserver(HomeserverSpec::new(
            "bench",
            (ip, 8448).into(),
            (ip, 8008).into(),
        ))
        .clamd(ClamdSpec {
            addr: (clamd_ip, 3310).into(),
        });
    let stack = Stack::start(spec).await?;
    let hs = stack.homeserver("bench").context("homeserver")?;
    let http = reqwest::Client::new();
    let token = admin_token(hs, &http).await?;
    let base = hs.client_url();
    let me = hs.user_id("bench");
    http.post(format!(
        "{base}/_synapse/admin/v1/users/{me}/override_ratelimit"
    ))
    .bearer_auth(&token)
    .json(&serde_json::json!({"messages_per_second": 0, "burst_count": 0}))
    .send()
    .await?
    .error_for_status()?;

    let started = Instant::now();
    let created = futures_util::stream::iter(0..users)
        .map(|i| {
            let url = format!(
                "{base}/_synapse/admin/v2/users/{}",
                hs.user_id(&format!("citizen{i}"))
            );
            let request = http
                .put(url)
                .bearer_auth(&token)
                .json(&serde_json::json!({"displayname": format!("Bürger {i}")}));
            async move {
                request
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .is_ok()
            }
        })
        .buffer_unordered(8)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    println!(
        "users created: {created}/{users} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let created = futures_util::stream::iter(0..rooms)
        .map(|i| {
            let request = http
                .post(format!("{base}/_matrix/client/v3/createRoom"))
                .bearer_auth(&token)
                .json(
                    &serde_json::json!({"preset": "private_chat", "name": format!("Antrag {i}")}),
                );
            async move {
                request
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .is_ok()
            }
        })
        .buffer_unordered(8)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    println!(
        "rooms created: {created}/{rooms} in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token)?;
    let clamd = stack.clamd().context("clamd")?.addr();
    let yaml = format!(
        "admin_listen: 127.0.0.1:0\ninterval: 1s\n\
         synapse:\n  url: {base}\n  access_token_file: {}\n  timeout: 1s\n\
         clamd:\n  address: {clamd}\n  timeout: 1s\n\
         ca:\n  certs_dir: {}\n  timeout: 1s\n\
         policy:\n  bundle_dir: {}\n  trust: {}\n  timeout: 1s\n",
        token_file.display(),
        hs.data_dir().join("tls").display(),
        stack.policy().bundle_dir().display(),
        stack.policy().trust_path().display(),
    );
    let config = govmx_service::config::from_yaml_str_validated(&yaml, "bench.yaml")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let exporter = Exporter::bind(config).await?;

    // Collection cost.
    let synapse_pid = hs.process().pid().context("synapse pid")?.to_string();
    let (own0, syn0) = (cpu_seconds("self"), cpu_seconds(&synapse_pid));
    let mut walls = Vec::new();
    for _ in 0..cycles {
        let t = Instant::now();
        let results = exporter.collect_once().await;
        walls.push(t.elapsed());
        anyhow::ensure!(
            results.iter().all(|(_, ok)| *ok),
            "a collection failed: {results:?}"
        );
    }
    let (own, syn) = (cpu_seconds("self") - own0, cpu_seconds(&synapse_pid) - syn0);
    walls.sort();
    let text = exporter.render().map_err(|e| anyhow::anyhow!("{e}"))?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    println!("{}", value("govmx_synapse_users"));
    println!("{}", value("govmx_synapse_rooms"));
    println!(
        "collection cycle (4 targets in parallel), {cycles} cycles: wall p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; CPU per cycle: exporter {:.1} ms, Synapse {:.1} ms",
        percentile(&walls, 0.5).as_secs_f64() * 1e3,
        percentile(&walls, 0.99).as_secs_f64() * 1e3,
        walls.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        own * 1e3 / cycles as f64,
        syn * 1e3 / cycles as f64,
    );

    // Scrape latency while the loops collect every second.
    let addr = exporter.admin_addr()?;
    let (trigger, shutdown) = Shutdown::manual();
    let serving = tokio::spawn(exporter.serve(shutdown));
    let url = format!("http://{addr}/metrics");
    let mut latencies = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    for _ in 0..scrapes {
        let t = Instant::now();
        let body = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        latencies.push(t.elapsed());
        bytes = body.len();
    }
    latencies.sort();
    println!(
        "scrape GET /metrics ({bytes} bytes), {scrapes} sequential scrapes during collections: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    trigger.trigger();
    serving.await??;
    stack.shutdown();
    Ok(())
}
