//! How fast hostile SAML responses are refused, and what they do to everything else: the real
//! application on loopback (SQLite, one SAML connector with the fixture IdP's metadata), each
//! kind of hostile response posted to the ACS two at a time, five rounds, each post answering a
//! real pending request; meanwhile `/healthz` is asked every 10 ms. Prints the slowest refusal
//! and the slowest and median health check per kind. Run: `cargo bench --bench saml_hostile`.
//! With `BENCH_BASE_URL` set, it measures a server already running there (in its own process;
//! the one in the BENCHMARKS.md table), which needs a `saml` connector `corp-saml` configured with
//! `tests/fixtures/saml/keys/idp-metadata.xml`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse::clock::ManualClock;

#[path = "../tests/it/hostile_saml.rs"]
mod hostile_saml;

/// `BENCH_ROUNDS` and `BENCH_TIMEOUT_SECS` (per request) change these, to measure a build that
/// takes minutes per hostile response.
const ROUNDS: usize = 5;
const TIMEOUT_SECS: u64 = 60;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let base = match std::env::var("BENCH_BASE_URL") {
        Ok(base) => base,
        Err(_) => serve_in_process(dir.path()).await,
    };
    measure(&base).await;
}

/// The application in this process, at the fixtures' date (the fixture metadata's keys).
async fn serve_in_process(dir: &std::path::Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let metadata = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saml/keys/idp-metadata.xml");
    let config_text = format!(
        r#"
issuer = "{base}"
database_url = "sqlite://{db}/bench.db"
key_encryption_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
log_format = "json"

[[connectors]]
id = "corp-saml"
type = "saml"
idp_metadata_file = "{metadata}"
"#,
        db = dir.display(),
        metadata = metadata.display()
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, config_text).expect("configuration");
    let config = gatehouse::config::load(&path, &[]).expect("valid configuration");
    let clock = Arc::new(ManualClock::new(1_767_225_660));
    let app = gatehouse::startup::build(config, clock).await.expect("application");
    tokio::spawn(app.serve(listener, std::future::pending()));
    base
}

async fn measure(base: &str) {
    let rounds = usize::try_from(setting("BENCH_ROUNDS", ROUNDS as u64)).unwrap_or(ROUNDS);
    let timeout = Duration::from_secs(setting("BENCH_TIMEOUT_SECS", TIMEOUT_SECS));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(timeout).build().expect("client");
    let kinds = [
        ("quadratic namespaces", hostile_saml::quadratic_namespaces()),
        ("canonical-form amplification", hostile_saml::canonical_amplification()),
        ("huge PrefixList", hostile_saml::huge_prefix_list()),
        ("costliest within the limits", hostile_saml::costliest_within_limits()),
    ];
    println!("| kind | size | refused with | slowest refusal (of {}) | /healthz slowest | /healthz median |", rounds * 2);
    println!("|---|---:|---|---:|---:|---:|");
    for (kind, xml) in kinds {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&xml);
        let mut slowest_refusal = Duration::ZERO;
        let mut statuses = Vec::new();
        let mut health = Vec::new();
        for _ in 0..rounds {
            let mut posts = Vec::new();
            for _ in 0..2 {
                let started = http.get(format!("{base}/saml/corp-saml/login")).send().await.expect("login start");
                let location = started.headers()["location"].to_str().expect("location").to_owned();
                let relay = reqwest::Url::parse(&location)
                    .expect("IdP URL")
                    .query_pairs()
                    .find(|(k, _)| k == "RelayState")
                    .map(|(_, v)| v.into_owned())
                    .expect("RelayState");
                let request = http
                    .post(format!("{base}/saml/corp-saml/acs"))
                    .form(&[("SAMLResponse", encoded.as_str()), ("RelayState", &relay)]);
                posts.push(tokio::spawn(async move {
                    let started = Instant::now();
                    // A timeout is reported as status 0.
                    let status = request.send().await.map_or(0, |answer| answer.status().as_u16());
                    (status, started.elapsed())
                }));
            }
            while posts.iter().any(|p| !p.is_finished()) {
                let started = Instant::now();
                let answered = http.get(format!("{base}/healthz")).send().await;
                assert!(answered.is_err() || answered.is_ok_and(|a| a.status().is_success()));
                health.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for post in posts {
                let (status, took) = post.await.expect("post task");
                statuses.push(status);
                slowest_refusal = slowest_refusal.max(took);
            }
        }
        statuses.sort_unstable();
        statuses.dedup();
        health.sort();
        let median = health.get(health.len() / 2).copied().unwrap_or_default();
        let slowest = health.last().copied().unwrap_or_default();
        println!(
            "| {kind} | {} KB | {statuses:?} | {:.1} ms | {:.1} ms ({} probes) | {:.2} ms |",
            xml.len() / 1024,
            slowest_refusal.as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0,
            health.len(),
            median.as_secs_f64() * 1000.0
        );
    }
}
