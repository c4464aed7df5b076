//! The `gatehouse` binary itself: commands, exit codes, logs, and shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{
    ALICE_PASSWORD, DEMO_CLIENT_SECRET, TEST_KEK, browser, config_toml, field_value, location, set_cookie, write_config,
};

fn gatehouse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("GATEHOUSE_") || name == "RUST_LOG") {
        command.env_remove(name);
    }
    command
}

fn run(command: &mut Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["check-config", "--help"],
        &["keys", "--help"],
        &["keys", "rotate", "--help"],
        &["keys", "list", "--help"],
        &["saml", "--help"],
        &["saml", "list-sp-keys", "--help"],
        &["saml", "rotate-sp-key", "--help"],
        &["saml", "remove-sp-key", "--help"],
        &["hash-password", "--help"],
        &["healthcheck", "--help"],
    ] {
        let (code, stdout, _) = run(gatehouse().args(args));
        assert_eq!(code, 0, "{args:?}");
        assert!(stdout.contains("Usage: gatehouse"), "{args:?}: {stdout}");
    }
    let (code, _, stderr) = run(gatehouse().arg("frobnicate"));
    assert_eq!(code, 2, "a usage error exits 2");
    assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
}

#[test]
fn a_bad_configuration_exits_non_zero_naming_the_key_without_touching_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("never.db");
    let text = format!(
        "{}\n[[clients]]\nclient_id = \"demo-app\"\nredirect_uris = [\"http://localhost:3000/cb\"]\n",
        config_toml(&format!("sqlite://{}", db_path.display()), "")
    );
    let path = write_config(dir.path(), &text);
    for command in ["check-config", "serve", "migrate"] {
        let (code, stdout, stderr) = run(gatehouse().args(["--config", path.to_str().unwrap(), command]));
        assert_eq!(code, 78, "{command}: {stdout}{stderr}");
        assert!(
            stderr
                .contains("configuration key `clients[1] (client_id = \"demo-app\").client_id`: duplicate client id `demo-app`"),
            "{stderr}"
        );
    }
    assert!(!db_path.exists(), "validation must fail before the database is created");

    let (code, _, stderr) = run(gatehouse().args(["--config", "/nonexistent/gatehouse.toml", "check-config"]));
    assert_eq!(code, 78);
    assert!(stderr.contains("/nonexistent/gatehouse.toml"), "{stderr}");

    let good = write_config(dir.path(), &config_toml("sqlite://x.db", ""));
    let (code, _, stderr) =
        run(gatehouse().args(["--config", good.to_str().unwrap(), "check-config"]).env("GATEHOUSE_LISTEN", "nowhere"));
    assert_eq!(code, 78);
    assert!(stderr.contains("configuration key `listen`"), "{stderr}");
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config_toml("postgres://gh:db-secret@localhost/gh", ""));
    let (code, stdout, _) =
        run(gatehouse().env("GATEHOUSE_CONFIG", &path).env("GATEHOUSE_SESSION__IDLE_TIMEOUT_SECS", "77").arg("check-config"));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("is valid"));
    assert!(stdout.contains("idle_timeout_secs = 77"), "environment overrides are shown: {stdout}");
    assert!(stdout.contains("client_id = \"demo-app\""));
    for secret in [DEMO_CLIENT_SECRET, "db-secret", TEST_KEK, "$argon2id$"] {
        assert!(!stdout.contains(secret), "check-config printed {secret}");
    }
}

#[test]
fn hash_password_prints_an_argon2id_hash_of_standard_input() {
    let mut child =
        gatehouse().arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret pass\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(gatehouse::password::verify(hash.trim(), "s3cret pass"), "the newline is not part of the password");

    let mut child =
        gatehouse().arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("empty"));
}

#[test]
fn migrate_then_keys_list_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("cli.db");
    let path = write_config(dir.path(), &config_toml(&format!("sqlite://{}", db_path.display()), ""));
    let config = path.to_str().unwrap();
    let (code, stdout, stderr) = run(gatehouse().args(["--config", config, "migrate"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(db_path.exists());

    let (code, stdout, _) = run(gatehouse().args(["--config", config, "keys", "rotate"]));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("rotated:") && stdout.contains("(ES256)"), "{stdout}");
    let (code, stdout, _) = run(gatehouse().args(["--config", config, "keys", "rotate"]));
    assert_eq!(code, 0);
    let (code, listed, _) = run(gatehouse().args(["--config", config, "keys", "list"]));
    assert_eq!(code, 0);
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(rows.iter().filter(|r| r.contains("active")).count(), 1, "{listed}");
    assert_eq!(
        rows.iter().filter(|r| r.contains("retired") && r.contains("yes")).count(),
        1,
        "the old key stays published: {listed}"
    );
    let new_kid = stdout.trim_start_matches("rotated: ").split(' ').next().unwrap();
    assert!(rows.iter().any(|r| r.starts_with(new_kid) && r.contains("active")), "{listed}");
}

#[test]
fn saml_sp_keys_are_published_rotated_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("cli.db");
    let path = write_config(dir.path(), &config_toml(&format!("sqlite://{}", db_path.display()), ""));
    let config = path.to_str().unwrap();
    let saml = |args: &[&str]| {
        let (code, stdout, stderr) = run(gatehouse().args(["--config", config, "saml"]).args(args));
        (code, stdout, stderr)
    };
    let rows = |listing: &str| -> Vec<(String, String, String)> {
        let table = listing.split("KID").nth(1).unwrap();
        table
            .lines()
            .skip(1)
            .map(|row| {
                let cells: Vec<&str> = row.split_whitespace().collect();
                (cells[0].to_owned(), cells[1].to_owned(), cells[2].to_owned())
            })
            .collect()
    };
    let (code, stdout, stderr) = saml(&["rotate-sp-key"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let first = rows(&stdout);
    assert_eq!(first.len(), 2, "one signing and one encryption key: {stdout}");
    assert!(first.iter().all(|(_, _, state)| state == "active"), "{stdout}");

    let (code, stdout, _) = saml(&["rotate-sp-key", "--publish-only"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("still signed with the active key"), "{stdout}");
    let staged = rows(&stdout);
    assert_eq!(staged.iter().filter(|(_, _, state)| state == "next").count(), 2, "{stdout}");
    let (code, _, stderr) = saml(&["rotate-sp-key", "--publish-only"]);
    assert_eq!(code, 1, "new keys are already published");
    assert!(stderr.contains("already published"), "{stderr}");

    let (code, stdout, _) = saml(&["rotate-sp-key"]);
    assert_eq!(code, 0, "{stdout}");
    let rotated = rows(&stdout);
    let retired: Vec<_> = rotated.iter().filter(|(_, _, state)| state == "retired").collect();
    assert_eq!(retired.len(), 2, "{stdout}");
    assert!(retired.iter().all(|(kid, _, _)| first.iter().any(|(old, _, _)| old == kid)), "the first keys retired: {stdout}");

    let active = rotated.iter().find(|(_, _, state)| state == "active").unwrap().0.clone();
    let (code, _, stderr) = saml(&["remove-sp-key", "--", &active]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot be removed"), "{stderr}");
    let (code, stdout, _) = saml(&["remove-sp-key", "--", &retired[0].0]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(rows(&stdout).len(), 3, "{stdout}");
    let (code, _, stderr) = saml(&["remove-sp-key", "no-such-key"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no SP key"), "{stderr}");
    let (code, stdout, _) = saml(&["list-sp-keys"]);
    assert_eq!((code, rows(&stdout).len()), (0, 3), "{stdout}");
}

/// `gatehouse serve` with the configuration at `path`; its log (standard output) to read.
fn serve(path: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = gatehouse()
        .args(["--config", path.to_str().unwrap(), "serve"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    (child, reader)
}

/// Reads the server's JSON log lines until one satisfies `until`.
fn read_until(reader: &mut impl BufRead, log: &mut String, until: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "timed out waiting in the log:\n{log}");
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the server exited early:\n{log}");
        }
        log.push_str(&line);
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
            && until(&value)
        {
            return value;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_sign_in_leaves_no_secret_in_the_logs_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("logs.db");
    let text = config_toml(&format!("sqlite://{}", db_path.display()), "log_format = \"json\"");
    let path = write_config(dir.path(), &text);
    let mut child = gatehouse()
        .args(["--config", path.to_str().unwrap(), "serve"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut log = String::new();
    let ready = read_until(&mut reader, &mut log, |v| {
        v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("Gatehouse is ready"))
    });
    let base = format!("http://{}", ready["fields"]["listen"].as_str().unwrap());

    let http = browser();
    let login_page = http.get(format!("{base}/login")).send().await.unwrap();
    let first_cookie = set_cookie(&login_page, "gatehouse_session_csrf").unwrap();
    let csrf = field_value(&login_page.text().await.unwrap(), "csrf").unwrap();
    let response = http
        .post(format!("{base}/login"))
        .form(&[("csrf", csrf.as_str()), ("connector", "local"), ("username", "alice"), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let session_cookie = set_cookie(&response, "gatehouse_session").unwrap();
    let portal = http.get(format!("{base}/?code=query-secret-code&state=query-secret-state")).send().await.unwrap();
    assert_eq!(portal.status(), 200);
    // The provider's flow, with a replayed code and a reused refresh token (both logged).
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(crate::provider::demo_authorize(&[])).finish();
    let authorized = http.get(format!("{base}/oauth2/authorize?{query}")).send().await.unwrap();
    let code = crate::provider::params_of(&location(&authorized))["code"].clone();
    let redeem = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", crate::provider::DEMO_REDIRECT),
        ("code_verifier", crate::provider::VERIFIER),
    ];
    let token = |form: Vec<(&str, String)>| {
        http.post(format!("{base}/oauth2/token")).basic_auth("demo-app", Some(DEMO_CLIENT_SECRET)).form(&form).send()
    };
    let owned = |pairs: &[(&'static str, &str)]| pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect::<Vec<_>>();
    let tokens: serde_json::Value = token(owned(&redeem)).await.unwrap().json().await.unwrap();
    assert_eq!(token(owned(&redeem)).await.unwrap().status(), 400, "the replay");
    let code2 = {
        let again = http.get(format!("{base}/oauth2/authorize?{query}")).send().await.unwrap();
        crate::provider::params_of(&location(&again))["code"].clone()
    };
    let redeem2: Vec<(&str, String)> =
        owned(&redeem).into_iter().map(|(k, v)| if k == "code" { (k, code2.clone()) } else { (k, v) }).collect();
    let second: serde_json::Value = token(redeem2).await.unwrap().json().await.unwrap();
    let refresh = second["refresh_token"].as_str().unwrap().to_owned();
    let rotate = vec![("grant_type", String::from("refresh_token")), ("refresh_token", refresh.clone())];
    let rotated: serde_json::Value = token(rotate.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(token(rotate).await.unwrap().status(), 400, "the reuse");

    let failed = browser();
    let csrf2 = field_value(&failed.get(format!("{base}/login")).send().await.unwrap().text().await.unwrap(), "csrf").unwrap();
    failed
        .post(format!("{base}/login"))
        .form(&[("csrf", csrf2.as_str()), ("connector", "local"), ("username", "alice"), ("password", "wrong-password-guess")])
        .send()
        .await
        .unwrap();
    // Refusals that are logged with their reason and request id, never the submitted values.
    let wrong_secret = http
        .post(format!("{base}/oauth2/token"))
        .basic_auth("demo-app", Some("wrong-client-secret-guess"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_secret.status(), 401);
    let evil = query.replace("localhost%3A3000", "evil.example");
    assert_eq!(http.get(format!("{base}/oauth2/authorize?{evil}")).send().await.unwrap().status(), 400);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    read_until(&mut reader, &mut log, |v| v["fields"]["message"] == "stopped");
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "gatehouse did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "SIGTERM is a clean stop: {exit:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    log.push_str(&rest);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    log.push_str(&stderr);

    // The request log is there, with route and status…
    assert!(log.contains("\"route\":\"/login\""), "{log}");
    let finished_login = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["fields"]["message"] == "request finished")
        .find_map(|v| {
            let spans = v["spans"].as_array()?;
            spans.iter().find(|s| s["name"] == "request" && s["route"] == "/login" && s["method"] == "POST").cloned()
        })
        .unwrap_or_else(|| panic!("no `request finished` line for POST /login with its request span:\n{log}"));
    assert!(finished_login["status"].as_u64().is_some_and(|status| (200..600).contains(&status)), "{finished_login}");
    assert_eq!(finished_login["request_id"].as_str().map(str::len), Some(32), "{finished_login}");
    assert!(log.contains("shutting down"), "{log}");
    // …and nothing secret is.
    let cookie_value = |c: &str| c.split(';').next().unwrap().split('=').nth(1).unwrap().to_owned();
    let secrets = [
        ALICE_PASSWORD.to_owned(),
        "wrong-password-guess".to_owned(),
        cookie_value(&first_cookie),
        cookie_value(&session_cookie),
        csrf,
        csrf2,
        TEST_KEK.to_owned(),
        DEMO_CLIENT_SECRET.to_owned(),
        "$argon2id$".to_owned(),
        "query-secret-code".to_owned(),
        "query-secret-state".to_owned(),
        code,
        code2,
        refresh,
    ];
    let issued = [&tokens, &second, &rotated];
    let secrets: Vec<String> =
        secrets
            .into_iter()
            .chain(issued.iter().flat_map(|t| {
                ["access_token", "refresh_token", "id_token"].map(|k| t[k].as_str().unwrap_or_default().to_owned())
            }))
            .filter(|s| !s.is_empty())
            .collect();
    assert!(secrets.len() >= 20, "every issued token is checked");
    let refusal = |message: &str, reason: &str| {
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|v| v["fields"]["message"].as_str().is_some_and(|m| m.starts_with(message)) && v["fields"]["reason"] == reason)
            .unwrap_or_else(|| panic!("no `{message}` with reason {reason} in the log:\n{log}"))
    };
    for (message, reason) in [
        ("refused", "invalid_credentials"),
        ("client authentication refused", "invalid_client"),
        ("authorization request refused", "unregistered_redirect_uri"),
        ("token request refused", "invalid_grant"),
    ] {
        let line = refusal(message, reason);
        assert_eq!(line["level"], "INFO", "{line}");
        let request = line["spans"].as_array().and_then(|spans| spans.iter().find(|s| s["name"] == "request"));
        assert_eq!(request.and_then(|s| s["request_id"].as_str()).map(str::len), Some(32), "under the request's id: {line}");
    }
    assert!(!log.contains("wrong-client-secret-guess") && !log.contains("evil.example"), "no submitted value is logged");
    assert!(log.contains("refresh token reused"), "the reuse is logged, without the token");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "the log contains a secret ({secret}):\n{log}");
    }
}

#[test]
fn healthcheck_answers_whether_the_configured_listener_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_toml(&format!("sqlite://{}/health.db", dir.path().display()), "log_format = \"json\"");
    let path = write_config(dir.path(), &text);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // As in a container: listening on every address, probed on loopback.
    let listen = format!("0.0.0.0:{port}");
    let healthcheck =
        || run(gatehouse().args(["--config", path.to_str().unwrap(), "healthcheck"]).env("GATEHOUSE_LISTEN", &listen));

    let (code, _, stderr) = healthcheck();
    assert_eq!(code, 1, "nothing listens yet");
    assert!(stderr.contains(&format!("http://127.0.0.1:{port}/readyz did not answer")), "{stderr}");

    let (mut child, mut reader) = serve(&path, &[("GATEHOUSE_LISTEN", &listen)]);
    let mut log = String::new();
    read_until(&mut reader, &mut log, |v| v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("Gatehouse is ready")));
    let (code, stdout, stderr) = healthcheck();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    // A ready answer to a probe is logged at debug only: probes come every few seconds.
    std::io::Read::read_to_string(&mut reader, &mut log).unwrap();
    assert!(!log.contains("\"route\":\"/readyz\""), "{log}");

    let (code, _, stderr) = run(gatehouse().args(["--config", "/nonexistent/gatehouse.toml", "healthcheck"]));
    assert_eq!(code, 78, "an unreadable configuration is a configuration error: {stderr}");
}

#[test]
fn start_up_logs_what_to_register_at_each_identity_provider() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing answers at either provider yet: both connectors are ready without them, so the
    // values to register there come first.
    let text = format!(
        "{}\n[[connectors]]\nid = \"corp-oidc\"\ntype = \"oidc\"\nissuer = \"http://127.0.0.1:9\"\n\
         client_id = \"gatehouse-at-corp\"\nclient_secret = \"upstream-secret\"\n\n\
         [[connectors]]\nid = \"corp-saml\"\ntype = \"saml\"\nidp_metadata_url = \"http://127.0.0.1:9/metadata\"\n",
        config_toml(&format!("sqlite://{}/connectors.db", dir.path().display()), "log_format = \"json\"")
    );
    let path = write_config(dir.path(), &text);
    let (mut child, mut reader) = serve(&path, &[]);
    let mut log = String::new();
    let started = read_until(&mut reader, &mut log, |v| {
        v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("Gatehouse is ready"))
    });
    // The SP metadata is served before the IdP exists: each side can be set up first.
    let answer = http_get(started["fields"]["listen"].as_str().unwrap(), "/saml/corp-saml/metadata");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("entityID=\"http://127.0.0.1:8080/saml/corp-saml\""), "{answer}");
    let ready = |message: &str| {
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|v| v["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no `{message}` in the log:\n{log}"))["fields"]
            .clone()
    };
    let oidc = ready("OpenID Connect connector configured");
    assert_eq!(oidc["redirect_uri"], "http://127.0.0.1:8080/oidc/corp-oidc/callback");
    assert_eq!(oidc["client_id"], "gatehouse-at-corp");
    let saml = ready("SAML connector configured");
    assert_eq!(saml["entity_id"], "http://127.0.0.1:8080/saml/corp-saml");
    assert_eq!(saml["acs"], "http://127.0.0.1:8080/saml/corp-saml/acs");
    assert_eq!(saml["metadata_url"], "http://127.0.0.1:8080/saml/corp-saml/metadata");
    assert!(!log.contains("upstream-secret"), "the upstream secret is never logged");
}

/// A plain HTTP/1.1 GET, as a probe would send it.
fn http_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: gatehouse\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    answer
}

#[test]
fn start_up_checks_each_connector_and_reports_an_unreachable_provider_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[[connectors]]\nid = \"corp-oidc\"\ntype = \"oidc\"\nissuer = \"http://127.0.0.1:9\"\n\
         client_id = \"gatehouse-at-corp\"\n\n\
         [[connectors]]\nid = \"corp-saml\"\ntype = \"saml\"\nidp_metadata_url = \"http://127.0.0.1:9/metadata\"\n",
        config_toml(&format!("sqlite://{}/checks.db", dir.path().display()), "log_format = \"json\"")
    );
    let path = write_config(dir.path(), &text);
    let (mut child, mut reader) = serve(&path, &[]);
    let mut log = String::new();
    let started = read_until(&mut reader, &mut log, |v| {
        v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("Gatehouse is ready"))
    });
    let address = started["fields"]["listen"].as_str().unwrap().to_owned();
    let failed = |connector: &'static str| {
        move |v: &serde_json::Value| {
            v["level"] == "WARN"
                && v["fields"]["connector"] == connector
                && v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("connector check failed"))
        }
    };
    let oidc = read_until(&mut reader, &mut log, |v| failed("corp-oidc")(v) || failed("corp-saml")(v));
    let other = if oidc["fields"]["connector"] == "corp-oidc" { "corp-saml" } else { "corp-oidc" };
    let second = read_until(&mut reader, &mut log, failed(other));
    let readyz = http_get(&address, "/readyz?verbose");
    let plain = http_get(&address, "/readyz");
    let metrics = http_get(&address, "/metrics");
    child.kill().unwrap();
    child.wait().unwrap();
    for warning in [&oidc, &second] {
        assert_eq!(warning["fields"]["check"], "unreachable", "{warning}");
        let fix = warning["fields"]["fix"].as_str().unwrap();
        assert!(fix.contains("reach"), "the warning says what to do: {fix}");
    }
    let saml = if oidc["fields"]["connector"] == "corp-saml" { &oidc } else { &second };
    assert!(saml["fields"]["fix"].as_str().unwrap().contains("idp_metadata_url"), "{saml}");
    // The node stays ready: one IdP being down must not take it out of the load balancer.
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    assert!(readyz.contains("[+]database ok"), "{readyz}");
    assert!(readyz.contains("[-]connector corp-oidc unreachable"), "{readyz}");
    assert!(readyz.contains("[-]connector corp-saml unreachable"), "{readyz}");
    assert!(readyz.trim_end().ends_with("ready"), "{readyz}");
    assert!(plain.starts_with("HTTP/1.1 200") && !plain.contains("connector"), "{plain}");
    assert!(metrics.contains("gatehouse_connector_up{connector=\"corp-oidc\"} 0"), "{metrics}");
    assert!(metrics.contains("gatehouse_connector_up{connector=\"corp-saml\"} 0"), "{metrics}");
}

/// IdP metadata whose only signing certificate expired at the end of 2020.
fn metadata_with_an_expired_certificate() -> String {
    use openssl::asn1::Asn1Time;
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "idp.example.com").unwrap();
    let name = name.build();
    let mut builder = openssl::x509::X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(&key).unwrap();
    builder.set_not_before(&Asn1Time::from_unix(1_577_836_800).unwrap()).unwrap();
    builder.set_not_after(&Asn1Time::from_unix(1_609_459_200).unwrap()).unwrap();
    builder.sign(&key, openssl::hash::MessageDigest::sha256()).unwrap();
    let der = builder.build().to_der().unwrap();
    let certificate = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example.com">
<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{certificate}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/sso"/>
</md:IDPSSODescriptor>
</md:EntityDescriptor>"#
    )
}

#[test]
fn check_config_connect_reports_each_connector_and_an_expired_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("idp-metadata.xml");
    std::fs::write(&metadata, metadata_with_an_expired_certificate()).unwrap();
    let text = format!(
        "{}\n[[connectors]]\nid = \"old-saml\"\ntype = \"saml\"\nidp_metadata_file = \"{}\"\n\n\
         [[connectors]]\nid = \"corp-oidc\"\ntype = \"oidc\"\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"gh\"\n",
        config_toml(&format!("sqlite://{}/connect.db", dir.path().display()), "log_format = \"json\""),
        metadata.display()
    );
    let path = write_config(dir.path(), &text);
    let (code, stdout, stderr) = run(gatehouse().args(["--config", path.to_str().unwrap(), "check-config", "--connect"]));
    assert_eq!(code, 1, "the unreachable provider fails the check: {stdout}{stderr}");
    assert!(stdout.contains("# connector local (local): nothing to reach"), "{stdout}");
    assert!(stdout.contains("# connector old-saml (saml): certificate_expired: every signing certificate"), "{stdout}");
    assert!(stdout.contains("#   fix: renew the signing certificate at the IdP"), "{stdout}");
    assert!(stdout.contains("# connector corp-oidc (oidc): unreachable"), "{stdout}");
    assert!(stdout.parse::<toml::Table>().is_ok(), "the report is TOML comments, so the output still pastes back");
    let (code, stdout, _) = run(gatehouse().args(["--config", path.to_str().unwrap(), "check-config"]));
    assert_eq!(code, 0, "without --connect nothing is fetched: {stdout}");
    assert!(!stdout.contains("# connector"), "{stdout}");

    // The running server finds the same at start-up.
    let (mut child, mut reader) = serve(&path, &[]);
    let mut log = String::new();
    let warning = read_until(&mut reader, &mut log, |v| v["fields"]["connector"] == "old-saml" && v["level"] == "WARN");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(warning["fields"]["check"], "certificate_expired", "{warning}");
    assert!(warning["fields"]["message"].as_str().unwrap().contains("2021-01-01 00:00:00 UTC"), "{warning}");
}

#[test]
fn pretty_logs_carry_no_colour_codes_when_not_written_to_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_toml(&format!("sqlite://{}/pretty.db", dir.path().display()), "log_format = \"pretty\"");
    let path = write_config(dir.path(), &text);
    let (mut child, mut reader) = serve(&path, &[]);
    let mut log = String::new();
    while !log.contains("Gatehouse is ready") {
        assert!(reader.read_line(&mut log).unwrap() > 0, "the server exited early:\n{log}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.contains(" INFO "), "pretty logs name the level: {log}");
    assert!(!log.contains('\u{1b}'), "a pipe gets no ANSI escapes: {log:?}");
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    use std::io::Read;
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let text = config_toml(&format!("sqlite://{}/drain.db", dir.path().display()), "log_format = \"json\"");
    let path = write_config(dir.path(), &text);
    let mut child =
        gatehouse().args(["--config", path.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut log = String::new();
    let ready = read_until(&mut reader, &mut log, |v| {
        v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("Gatehouse is ready"))
    });
    let address = ready["fields"]["listen"].as_str().unwrap().to_owned();

    // Half a request is on the wire when the signal arrives…
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    read_until(&mut reader, &mut log, |v| v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("shutting down")));
    // …new connections are refused…
    std::thread::sleep(Duration::from_millis(200));
    assert!(TcpStream::connect(&address).is_err(), "the listener must be closed after SIGTERM");
    // …and the request in flight still gets its answer.
    stream.write_all(b"Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "gatehouse did not exit after finishing the request");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
}
