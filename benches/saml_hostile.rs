//! How fast hostile SAML responses are refused, and what they do to everything else: the real
//! application on loopback (SQLite, one SAML connector with the fixture IdP's metadata), each
//! kind of hostile response posted to the ACS two at a time, five rounds, each post answering a
//! real pending request; meanwhile `/healthz` is asked every 10 ms. Prints the slowest refusal
//! and the slowest and median health check per kind. Run: `cargo bench --bench saml_hostile`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse::clock::ManualClock;

#[path = "../tests/it/hostile_saml.rs"]
mod hostile_saml;

const ROUNDS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("temporary directory");
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
        db = dir.path().display(),
        metadata = metadata.display()
    );
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config_text).expect("configuration");
    let config = gatehouse::config::load(&path, &[]).expect("valid configuration");
    // The fixture metadata's validity is fixed in time; the server runs at the fixtures' date.
    let clock = Arc::new(ManualClock::new(1_767_225_660));
    let app = gatehouse::startup::build(config, clock).await.expect("application");
    tokio::spawn(app.serve(listener, std::future::pending()));

    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let kinds = [
        ("quadratic namespaces", hostile_saml::quadratic_namespaces()),
        ("canonical-form amplification", hostile_saml::canonical_amplification()),
        ("huge PrefixList", hostile_saml::huge_prefix_list()),
        ("costliest within the limits", hostile_saml::costliest_within_limits()),
    ];
    println!("| kind | size | refused with | slowest refusal (of {}) | /healthz slowest | /healthz median |", ROUNDS * 2);
    println!("|---|---:|---|---:|---:|---:|");
    for (kind, xml) in kinds {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&xml);
        let mut slowest_refusal = Duration::ZERO;
        let mut statuses = Vec::new();
        let mut health = Vec::new();
        for _ in 0..ROUNDS {
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
                    let status = request.send().await.expect("ACS answers").status();
                    (status, started.elapsed())
                }));
            }
            while posts.iter().any(|p| !p.is_finished()) {
                let started = Instant::now();
                let answered = http.get(format!("{base}/healthz")).send().await.expect("health answers");
                assert!(answered.status().is_success());
                health.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for post in posts {
                let (status, took) = post.await.expect("post task");
                statuses.push(status.as_u16());
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
