//! The README's walkthrough script, run against the demo configuration as a reader runs it.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The demo server, killed however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_walkthrough_runs_against_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}");
    // The demo file itself; only where it listens and keeps its data differs.
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["--config", "config/gatehouse.toml", "serve"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GATEHOUSE_ISSUER", &issuer)
            .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("GATEHOUSE_DATABASE_URL", format!("sqlite://{}/walkthrough.db", dir.path().display()))
            .env("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", dir.path().join("kek"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The log is read on its own thread to the end, so a full pipe never blocks the server.
    let log = std::io::BufReader::new(server.0.stdout.take().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            if line.contains("Gatehouse is ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(60)).expect("the demo did not start within a minute");
    let output = Command::new("sh").arg("docs/walkthrough.sh").arg(format!("{issuer}/")).output().unwrap();
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for step in ["1. ", "2. ", "3. ", "4. ", "5. ", "6. ", "7. ", "Done:"] {
        assert!(stdout.contains(step), "step {step} missing:\n{stdout}");
    }
    assert!(stdout.contains(&format!("-> {issuer}/login?req=")), "{stdout}");
    assert!(stdout.contains("-> http://localhost:3000/callback?code="), "{stdout}");
    assert!(stdout.contains(r#""idp":"local""#) && stdout.contains(r#""amr":["pwd"]"#), "{stdout}");
    assert!(stdout.contains(r#""preferred_username":"alice""#), "{stdout}");
    assert!(stdout.contains("revocation answered 200"), "{stdout}");
    assert!(stdout.contains(r#"refreshing again: {"error":"invalid_grant""#), "{stdout}");
}
