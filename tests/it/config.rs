//! Configuration: file, environment overlay, secrets from files, and errors that name the key.

use gatehouse::config::{self, ClientSecret, ConfigError, KeyEncryptionKeySource};

use crate::helpers::{TEST_KEK, config_toml, local_users_toml, write_config};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<config::Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    config::load(&write_config(dir.path(), text), &env(vars))
}

/// What `check-config` prints for this file.
fn effective(text: &str, vars: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    config::effective_toml(&write_config(dir.path(), text), &env(vars)).unwrap()
}

/// The key at fault and why, the key without the entry's id (`clients[1] (client_id = "x").y`
/// → `clients[1].y`), which `named_error_of` keeps.
fn error_of(text: &str, vars: &[(&str, &str)]) -> (String, String) {
    let (key, reason) = named_error_of(text, vars);
    let unnamed = match (key.find(" ("), key.find(").")) {
        (Some(start), Some(end)) if start < end => format!("{}{}", &key[..start], &key[end + 1..]),
        _ => key.strip_suffix(')').and_then(|k| k.split_once(" (")).map_or(key.clone(), |(k, _)| k.to_owned()),
    };
    (unnamed, reason)
}

fn named_error_of(text: &str, vars: &[(&str, &str)]) -> (String, String) {
    match load(text, vars) {
        Err(ConfigError::Invalid { key, reason }) => (key, reason),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// MINIMAL with an https issuer, where plain http to other hosts is refused.
fn https_issuer() -> String {
    MINIMAL.replace("http://localhost:8080", "https://sso.example.com")
}

const MINIMAL: &str =
    "issuer = \"http://localhost:8080\"\nkey_encryption_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n";

#[test]
fn the_demo_configuration_is_valid() {
    let config = config::load(std::path::Path::new("config/gatehouse.toml"), &[]).unwrap();
    assert_eq!(config.issuer, "http://localhost:8080");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.database_url.expose(), "sqlite://data/gatehouse.db");
    assert!(matches!(config.key_encryption_key, KeyEncryptionKeySource::File { generate_if_missing: true, .. }));
    assert_eq!(config.clients[0].client_id, "demo-app");
    assert!(config.clients[0].first_party);
    assert_eq!(config.connectors[0].id, "local");
    let payroll = config.clients.iter().find(|c| c.client_id == "demo-payroll").unwrap();
    assert_eq!(payroll.access.allowed_groups, ["managers"]);
    assert!(payroll.portal.show_in_portal, "a launch URL puts the app in the portal");
    assert!(config.clients[0].portal.show_in_portal);
}

/// docker-compose.yml's configuration, with its Docker secrets where compose mounts them.
#[test]
fn the_docker_compose_configuration_is_valid() {
    let secrets = std::fs::canonicalize("deploy/secrets").unwrap();
    let text = std::fs::read_to_string("deploy/gatehouse.toml").unwrap().replace("/run/secrets", secrets.to_str().unwrap());
    let compose = std::fs::read_to_string("docker-compose.yml").unwrap();
    let env = [
        ("GATEHOUSE_DATABASE_URL_FILE", secrets.join("database_url")),
        ("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", secrets.join("key_encryption_key")),
    ];
    for (name, path) in &env {
        let mounted = format!("{name}: /run/secrets/{}", path.file_name().unwrap().to_str().unwrap());
        assert!(compose.contains(&mounted), "docker-compose.yml sets {mounted}");
    }
    let vars: Vec<(&str, &str)> = env.iter().map(|(name, path)| (*name, path.to_str().unwrap())).collect();
    let config = load(&text, &vars).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert!(config.database_url.expose().starts_with("postgres://gatehouse:"));
    assert!(matches!(config.key_encryption_key, KeyEncryptionKeySource::File { .. }));
    let demo_app = config.clients.iter().find(|c| c.client_id == "demo-app").unwrap();
    assert!(
        matches!(&demo_app.secret, ClientSecret::Plain(s) if s.expose() == "demo-app-secret-change-me"),
        "from its Docker secret"
    );
    let saml = config.connectors.iter().find(|c| c.id == "demo-saml").unwrap();
    assert!(
        matches!(&saml.kind, config::ConnectorKind::Saml(s) if s.metadata == config::MetadataSource::Url("http://saml-idp:8082/simplesaml/saml2/idp/metadata.php".into()))
    );
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let config = load(MINIMAL, &[]).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.database_url.expose(), "sqlite://data/gatehouse.db");
    assert_eq!(config.session.idle_timeout_secs, 1800);
    assert_eq!(config.session.absolute_timeout_secs, 36000);
    assert_eq!(config.tokens.access_token_lifetime_secs, 600);
    assert_eq!(config.login.max_failures_per_username, 5);
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let (key, reason) = error_of(&format!("{MINIMAL}colour = \"blue\"\n"), &[]);
    assert!(reason.contains("colour"), "{key}: {reason}");

    let text = config_toml("sqlite://x.db", "").replace("first_party = true", "first_party = true\nredirect_uri = \"typo\"");
    let (key, reason) = error_of(&text, &[]);
    assert!(key.starts_with("clients[0]"), "{key}");
    assert!(reason.contains("redirect_uri"), "{reason}");

    let (key, reason) = error_of(&format!("{MINIMAL}[session]\nidle_timeout = 5\n"), &[]);
    assert!(key.starts_with("session"), "{key}");
    assert!(reason.contains("idle_timeout"), "{reason}");
}

#[test]
fn bad_urls_and_addresses_are_refused() {
    let (key, reason) = error_of("issuer = \"not a url\"\n", &[]);
    assert_eq!(key, "issuer");
    assert!(reason.contains("not a URL"), "{reason}");

    let (key, _) = error_of(&MINIMAL.replace("http://localhost:8080", "ftp://localhost"), &[]);
    assert_eq!(key, "issuer");
    let (key, _) = error_of(&MINIMAL.replace("http://localhost:8080", "https://idp.example/?x=1"), &[]);
    assert_eq!(key, "issuer");
    let (key, _) = error_of(&format!("{MINIMAL}listen = \"everywhere\"\n"), &[]);
    assert_eq!(key, "listen");
    let (key, _) = error_of(&format!("{MINIMAL}database_url = \"mysql://db\"\n"), &[]);
    assert_eq!(key, "database_url");

    let text = config_toml("sqlite://x.db", "").replace("http://localhost:3000/callback", "javascript:alert(1)");
    let (key, _) = error_of(&text, &[]);
    assert_eq!(key, "clients[0].redirect_uris[0]");
    let text = config_toml("sqlite://x.db", "").replace("http://localhost:3000/callback", "https://app.example/cb#frag");
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "clients[0].redirect_uris[0]");
    assert!(reason.contains("fragment"));
}

#[test]
fn an_https_issuer_requires_a_key_encryption_key() {
    let (key, reason) = error_of("issuer = \"https://sso.example.com\"\n", &[]);
    assert_eq!(key, "key_encryption_key");
    assert!(reason.contains("required"), "{reason}");

    let text = "issuer = \"https://sso.example.com\"\nkey_encryption_key_file = \"/nonexistent/kek\"\n";
    let (key, reason) = error_of(text, &[]);
    assert_eq!(key, "key_encryption_key_file");
    assert!(reason.contains("does not exist"), "{reason}");

    let (key, reason) = error_of(&MINIMAL.replace(TEST_KEK, "c2hvcnQ="), &[]);
    assert_eq!(key, "key_encryption_key");
    assert!(reason.contains("32 bytes"), "{reason}");
}

#[test]
fn missing_secret_files_and_double_secrets_are_refused() {
    let text = config_toml("sqlite://x.db", "")
        .replace("client_secret = \"demo-app-secret-change-me\"", "client_secret_file = \"/nonexistent/secret\"");
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "clients[0].client_secret_file");
    assert!(reason.contains("cannot read"), "{reason}");

    let text = config_toml("sqlite://x.db", "").replace(
        "client_secret = \"demo-app-secret-change-me\"",
        "client_secret = \"demo-app-secret-change-me\"\nclient_secret_hash = \"x\"",
    );
    let (key, _) = error_of(&text, &[]);
    assert_eq!(key, "clients[0].client_secret_hash");

    // The environment's file form replaces the file's inline key rather than clashing with it.
    let config = load(MINIMAL, &[("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "/tmp/kek")]).unwrap();
    assert!(matches!(config.key_encryption_key, KeyEncryptionKeySource::File { .. }));

    let text = config_toml("sqlite://x.db", "").replace("demo-app-secret-change-me", "short");
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "clients[0].client_secret");
    assert!(reason.contains("at least 16"), "{reason}");
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("client-secret");
    std::fs::write(&secret_path, "a-secret-from-a-file-0123\n").unwrap();
    let kek_path = dir.path().join("kek");
    std::fs::write(&kek_path, format!("{TEST_KEK}\n")).unwrap();
    let text = config_toml("sqlite://x.db", "")
        .replace("client_secret = \"demo-app-secret-change-me\"", &format!("client_secret_file = \"{}\"", secret_path.display()))
        .replace(&format!("key_encryption_key = \"{TEST_KEK}\""), "");
    let vars = [("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", kek_path.to_str().unwrap())];
    let config = config::load(&write_config(dir.path(), &text), &env(&vars)).unwrap();
    match &config.clients[0].secret {
        ClientSecret::Plain(secret) => assert_eq!(secret.expose(), "a-secret-from-a-file-0123"),
        other => panic!("expected a plain secret, got {other:?}"),
    }
    assert!(matches!(config.key_encryption_key, KeyEncryptionKeySource::File { .. }));
}

#[test]
fn duplicates_are_refused() {
    let text = format!(
        "{}\n[[clients]]\nclient_id = \"demo-app\"\nredirect_uris = [\"http://localhost:3000/cb\"]\n",
        config_toml("sqlite://x.db", "")
    );
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "clients[1].client_id");
    assert!(reason.contains("duplicate client id `demo-app`"), "{reason}");

    let text = format!("{MINIMAL}{0}{0}", local_users_toml());
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "connectors[1].id");
    assert!(reason.contains("duplicate connector id"), "{reason}");

    let text = format!("{MINIMAL}{}", local_users_toml().replace("username = \"bob\"", "username = \"alice\""));
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "connectors[0].users[1].username");
    assert!(reason.contains("duplicate username"), "{reason}");
}

#[test]
fn connectors_are_checked() {
    let (key, _) =
        error_of(&format!("{MINIMAL}{}", local_users_toml().replace("id = \"local\"", "id = \"Local Accounts\"")), &[]);
    assert_eq!(key, "connectors[0].id");
    let (key, reason) = error_of(&format!("{MINIMAL}{}", local_users_toml().replace("type = \"local\"", "type = \"ldap\"")), &[]);
    assert_eq!(key, "connectors[0].type");
    assert!(reason.contains("ldap"), "{reason}");
    let text = format!("{MINIMAL}{}", local_users_toml().replacen("password_hash = \"$argon2id$", "password_hash = \"plain$", 1));
    let (key, _) = error_of(&text, &[]);
    assert_eq!(key, "connectors[0].users[0].password_hash");
}

#[test]
fn client_rules_are_enforced() {
    let text = config_toml("sqlite://x.db", "")
        .replace("grant_types = [\"authorization_code\", \"refresh_token\"]", "grant_types = [\"password\"]");
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "clients[0].grant_types");
    assert!(reason.contains("password"), "{reason}");

    let text = config_toml("sqlite://x.db", "")
        .replace("client_secret = \"demo-app-secret-change-me\"\n", "")
        .replace("grant_types = [\"authorization_code\", \"refresh_token\"]", "grant_types = [\"client_credentials\"]");
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "clients[0].grant_types");
    assert!(reason.contains("confidential"), "{reason}");

    let text = config_toml("sqlite://x.db", "")
        .replace("issuer = \"http://127.0.0.1:8080\"", "issuer = \"https://sso.example.com\"")
        .replace("http://localhost:3000/callback", "http://app.example/callback");
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "clients[0].redirect_uris[0]");
    assert!(reason.contains("loopback"), "{reason}");
}

#[test]
fn environment_variables_override_the_file() {
    let text = config_toml("sqlite://x.db", "");
    let vars = [
        ("GATEHOUSE_ISSUER", "https://sso.example.com/"),
        ("GATEHOUSE_LISTEN", "0.0.0.0:9000"),
        ("GATEHOUSE_DATABASE_URL", "postgres://gatehouse@db/gatehouse"),
        ("GATEHOUSE_SESSION__IDLE_TIMEOUT_SECS", "60"),
        ("GATEHOUSE_CLIENTS__0__NAME", "Renamed App"),
        ("GATEHOUSE_LOG_FORMAT", "json"),
        ("GATEHOUSE_CONFIG", "ignored: it names the file"),
        ("OTHER_VARIABLE", "ignored"),
    ];
    let config = load(&text, &vars).unwrap();
    assert_eq!(config.issuer, "https://sso.example.com", "trailing slash is dropped");
    assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.database_url.expose(), "postgres://gatehouse@db/gatehouse");
    assert_eq!(config.session.idle_timeout_secs, 60);
    assert_eq!(config.clients[0].name, "Renamed App");
    assert_eq!(config.log_format, config::LogFormat::Json);
}

#[test]
fn unknown_environment_variables_are_errors() {
    let (key, reason) = error_of(MINIMAL, &[("GATEHOUSE_ISSUR", "https://typo.example")]);
    assert_eq!(key, "issur");
    assert!(reason.contains("unknown field"), "{reason}");
    let (key, reason) = error_of(&config_toml("sqlite://x.db", ""), &[("GATEHOUSE_CLIENTS__3__NAME", "x")]);
    assert_eq!(key, "clients.3.name");
    assert!(reason.contains("index 3"), "{reason}");
    assert!(reason.contains("set by the environment variable GATEHOUSE_CLIENTS__3__NAME"), "{reason}");
}

#[test]
fn an_error_names_the_list_entry_by_its_id_and_the_variable_that_set_the_value() {
    let text = format!(
        "{}\n[[clients]]\nclient_id = \"newapp\"\nredirect_uris = [\"https://newapp.example/cb#fragment\"]\n",
        config_toml("sqlite://x.db", "")
    );
    let (key, reason) = named_error_of(&text, &[]);
    assert_eq!(key, "clients[1] (client_id = \"newapp\").redirect_uris[0]");
    assert!(!reason.contains("environment variable"), "{reason}");

    let (key, reason) = named_error_of(&config_toml("sqlite://x.db", ""), &[("GATEHOUSE_CLIENTS__0__SIGNING_ALG", "HS256")]);
    assert_eq!(key, "clients[0] (client_id = \"demo-app\").signing_alg");
    assert!(reason.ends_with("(set by the environment variable GATEHOUSE_CLIENTS__0__SIGNING_ALG)"), "{reason}");

    let (key, reason) =
        named_error_of(&format!("{MINIMAL}{SAML_CONNECTOR}"), &[("GATEHOUSE_CONNECTORS__0__TIMEOUT_SECS", "many")]);
    assert_eq!(key, "connectors[0] (id = \"corp-saml\").timeout_secs");
    assert!(reason.contains("GATEHOUSE_CONNECTORS__0__TIMEOUT_SECS"), "{reason}");
    let (key, reason) = named_error_of(MINIMAL, &[("GATEHOUSE_SESSION__IDLE_TIMEOUT_SECS", "-5")]);
    assert_eq!(key, "session.idle_timeout_secs");
    assert!(reason.contains("GATEHOUSE_SESSION__IDLE_TIMEOUT_SECS"), "{reason}");
    // A file value that is wrong does not blame a variable that set something else, even one
    // inside the entry at fault.
    let (_, reason) = named_error_of(&text, &[("GATEHOUSE_CLIENTS__0__NAME", "Renamed")]);
    assert!(!reason.contains("GATEHOUSE_"), "{reason}");
    let untyped = format!("{MINIMAL}[[connectors]]\nid = \"corp\"\n");
    let (key, reason) = named_error_of(&untyped, &[("GATEHOUSE_CONNECTORS__0__NAME", "Corp")]);
    assert_eq!(key, "connectors[0] (id = \"corp\")");
    assert!(reason.contains("missing field `type`") && !reason.contains("GATEHOUSE_"), "{reason}");
}

#[test]
fn check_config_output_loads_back_as_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let kek_file = dir.path().join("kek");
    std::fs::write(&kek_file, TEST_KEK).unwrap();
    let secret_file = dir.path().join("upstream-secret");
    std::fs::write(&secret_file, "upstream-secret-from-file").unwrap();
    let text = format!(
        "issuer = \"http://localhost:8080\"\nkey_encryption_key_file = \"{}\"\n{}{}",
        kek_file.display(),
        OIDC_CONNECTOR
            .replace("client_secret = \"upstream-secret-value\"", &format!("client_secret_file = \"{}\"", secret_file.display())),
        SAML_CONNECTOR
    );
    let printed =
        config::effective_toml(&write_config(dir.path(), &text), &env(&[("GATEHOUSE_LOGIN__MAX_FAILURES_PER_IP", "9")])).unwrap();
    // Defaults are written out under the file's own keys; the SQLite URL is a file name, not a secret.
    for expected in [
        "listen = \"127.0.0.1:8080\"",
        "database_url = \"sqlite://data/gatehouse.db\"",
        "log_format = \"pretty\"",
        "idle_timeout_secs = 1800",
        "max_failures_per_ip = 9",
        "sp_metadata_validity_secs = 604800",
        "username = \"preferred_username\"",
        "subject = \"NameID\"",
        "sign_requests = true",
    ] {
        assert!(printed.contains(expected), "no `{expected}` in:\n{printed}");
    }
    assert!(!printed.contains("longest_client"), "only keys a file may set: {printed}");
    // Pasted back into a file, it is the same configuration, and prints the same.
    let pasted = write_config(dir.path(), &printed);
    let again = config::effective_toml(&pasted, &[]).unwrap();
    assert_eq!(again, printed);
    let reloaded = config::load(&pasted, &[]).unwrap();
    let original =
        config::load(&write_config(dir.path(), &text), &env(&[("GATEHOUSE_LOGIN__MAX_FAILURES_PER_IP", "9")])).unwrap();
    assert_eq!(format!("{reloaded:?}"), format!("{original:?}"));

    // Inline secrets are masked; a PostgreSQL URL carries a password, so it is masked too.
    let printed = effective(&config_toml("postgres://gh:pw@db/gh", ""), &[]);
    assert!(printed.starts_with("# Secrets are shown as ********: put them back"), "{printed}");
    assert!(printed.contains("database_url = \"********\""), "{printed}");
    assert!(printed.contains("key_encryption_key = \"********\""), "{printed}");
    assert!(printed.contains("client_secret = \"********\""), "{printed}");
}

#[test]
fn the_sp_metadata_validity_and_the_check_interval_are_configurable_within_bounds() {
    let config = load(&format!("{MINIMAL}[saml]\nsp_metadata_validity_secs = 2592000\n"), &[]).unwrap();
    assert_eq!(config.saml.sp_metadata_validity_secs, 30 * 86_400);
    assert_eq!(load(MINIMAL, &[]).unwrap().saml.sp_metadata_validity_secs, 7 * 86_400);
    assert_eq!(load(MINIMAL, &[]).unwrap().connector_check_interval_secs, 300);
    assert_eq!(load(&format!("connector_check_interval_secs = 0\n{MINIMAL}"), &[]).unwrap().connector_check_interval_secs, 0);
    let (key, reason) = error_of(&format!("connector_check_interval_secs = 5\n{MINIMAL}"), &[]);
    assert_eq!(key, "connector_check_interval_secs");
    assert!(reason.contains("at least 10"), "{reason}");
    for wrong in ["60", "40000000"] {
        let (key, reason) = error_of(&format!("{MINIMAL}[saml]\nsp_metadata_validity_secs = {wrong}\n"), &[]);
        assert_eq!(key, "saml.sp_metadata_validity_secs");
        assert!(reason.contains("between 3600"), "{reason}");
    }
}

#[test]
fn sqlite_durability_defaults_to_full_and_refuses_off() {
    use gatehouse::store::SqliteDurability;
    assert_eq!(load(MINIMAL, &[]).unwrap().sqlite_synchronous, SqliteDurability::Full);
    let relaxed = load(&format!("sqlite_synchronous = \"normal\"\n{MINIMAL}"), &[]).unwrap();
    assert_eq!(relaxed.sqlite_synchronous, SqliteDurability::Normal);
    let from_env = load(MINIMAL, &[("GATEHOUSE_SQLITE_SYNCHRONOUS", "normal")]).unwrap();
    assert_eq!(from_env.sqlite_synchronous, SqliteDurability::Normal);
    let refused = load(&format!("sqlite_synchronous = \"off\"\n{MINIMAL}"), &[]).unwrap_err().to_string();
    assert!(refused.contains("sqlite_synchronous") && refused.contains("`full`"), "{refused}");
    assert!(effective(MINIMAL, &[]).contains("sqlite_synchronous = \"full\""), "check-config writes the default out");
}

#[test]
fn the_config_path_comes_from_flag_then_environment_then_default() {
    let vars = env(&[("GATEHOUSE_CONFIG", "/etc/gatehouse.toml")]);
    assert_eq!(config::resolve_path(Some(std::path::Path::new("a.toml")), &vars), std::path::PathBuf::from("a.toml"));
    assert_eq!(config::resolve_path(None, &vars), std::path::PathBuf::from("/etc/gatehouse.toml"));
    assert_eq!(config::resolve_path(None, &[]), std::path::PathBuf::from("config/gatehouse.toml"));
}

#[test]
fn secrets_never_show_in_debug_or_the_printed_configuration() {
    let text = config_toml("postgres://user:db-password@db/gh", "");
    let config = load(&text, &[]).unwrap();
    let printed = effective(&text, &[]);
    let debug = format!("{config:?}");
    for leak in ["demo-app-secret-change-me", "db-password", TEST_KEK, "$argon2id$"] {
        assert!(!printed.contains(leak), "check-config output shows {leak}");
        assert!(!debug.contains(leak), "Debug output shows {leak}");
    }
    assert!(printed.contains("demo-app"), "non-secret values are printed");
    assert!(printed.contains("alice"));
}

#[test]
fn a_file_that_is_not_toml_names_the_file() {
    match load("issuer = ", &[]) {
        Err(err @ ConfigError::Syntax { .. }) => assert!(err.to_string().contains("not valid TOML")),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    // The error says where, as an editor counts: line 3, at the stray `]`.
    match load("issuer = \"http://localhost:8080\"\n[[clients]]\nname = ]\n", &[]) {
        Err(err @ ConfigError::Syntax { .. }) => assert!(err.to_string().contains("line 3, column 8"), "{err}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let missing = config::load(std::path::Path::new("/nonexistent/gatehouse.toml"), &[]);
    assert!(matches!(missing, Err(ConfigError::Read { .. })));
}

#[test]
fn environment_secrets_replace_the_files_other_forms_of_them() {
    // The demo file sets key_encryption_key_file; production sets the key itself.
    let vars = env(&[
        ("GATEHOUSE_ISSUER", "https://sso.example.com"),
        ("GATEHOUSE_KEY_ENCRYPTION_KEY", TEST_KEK),
        (
            "GATEHOUSE_CLIENTS__0__CLIENT_SECRET_HASH",
            "$argon2id$v=19$m=19456,t=2,p=1$uVHQekRhPbu6UhtrGd89bg$wFZw5yhno320bIS1oN5yLa67qUxkZyABA70reR9tS8A",
        ),
    ]);
    let config = config::load(std::path::Path::new("config/gatehouse.toml"), &vars).unwrap();
    assert!(matches!(config.key_encryption_key, KeyEncryptionKeySource::Inline(_)));
    assert!(matches!(config.clients[0].secret, ClientSecret::Hash(_)), "the file's plain client_secret gave way");

    // Both forms from the environment are still a conflict.
    let (key, _) =
        error_of(MINIMAL, &[("GATEHOUSE_KEY_ENCRYPTION_KEY", TEST_KEK), ("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "/tmp/kek")]);
    assert_eq!(key, "key_encryption_key");
}

#[test]
fn a_secret_of_the_wrong_type_is_never_echoed() {
    let text = config_toml("sqlite://x.db", "")
        .replace("client_secret = \"demo-app-secret-change-me\"", "client_secret = 4829104857392012");
    let (key, reason) = error_of(&text, &[]);
    assert_eq!(key, "clients[0].client_secret");
    assert!(!reason.contains("4829104857392012"), "{reason}");
    // From the environment a numeric secret is simply a string.
    let config = load(&config_toml("sqlite://x.db", ""), &[("GATEHOUSE_CLIENTS__0__CLIENT_SECRET", "4829104857392012")]).unwrap();
    match &config.clients[0].secret {
        ClientSecret::Plain(secret) => assert_eq!(secret.expose(), "4829104857392012"),
        other => panic!("expected a plain secret, got {other:?}"),
    }
}

#[test]
fn provider_settings_of_clients_and_tokens_are_checked() {
    let client =
        |extra: &str| config_toml("sqlite://x.db", "").replace("first_party = true\n", &format!("first_party = true\n{extra}\n"));
    let config = load(
        &client(
            "access_token_lifetime_secs = 120\nissue_refresh_token = true\ndefault_audience = \"https://api.example\"\n\
             resources = [\"https://api.example\"]\nbackchannel_logout_uri = \"http://localhost:3000/bcl\"",
        ),
        &[],
    )
    .unwrap();
    let demo = &config.clients[0];
    assert_eq!(demo.access_token_lifetime_secs, Some(120));
    assert!(demo.issue_refresh_token);
    assert_eq!(demo.backchannel_logout_uri.as_deref(), Some("http://localhost:3000/bcl"));
    assert_eq!(config.tokens.refresh_token_idle_lifetime_secs, 14 * 86400);

    for (extra, key) in [
        ("access_token_lifetime_secs = 0", "clients[0].access_token_lifetime_secs"),
        ("resources = [\"not a uri\"]", "clients[0].resources[0]"),
        ("resources = [\"https://api.example/#x\"]", "clients[0].resources[0]"),
        ("backchannel_logout_uri = \"javascript:alert(1)\"", "clients[0].backchannel_logout_uri"),
        ("backchannel_logout_uri = \"ftp://app.example/bcl\"", "clients[0].backchannel_logout_uri"),
        ("default_audience = \"\"", "clients[0].default_audience"),
    ] {
        assert_eq!(error_of(&client(extra), &[]).0, key, "{extra}");
    }
    let tokens =
        format!("{MINIMAL}[tokens]\nrefresh_token_idle_lifetime_secs = 100\nrefresh_token_absolute_lifetime_secs = 50\n");
    assert_eq!(error_of(&tokens, &[]).0, "tokens.refresh_token_idle_lifetime_secs");
}

const OIDC_CONNECTOR: &str = r#"
[[connectors]]
id = "corp-oidc"
type = "oidc"
name = "Corp Login"
issuer = "https://login.example.com"
client_id = "gatehouse"
client_secret = "upstream-secret-value"
scopes = ["openid", "email", "profile"]
email_domains = ["corp.example"]
[connectors.claims]
email = "email"
name = "name"
groups = "realm_access.roles"
"#;

#[test]
fn oidc_connectors_are_read_and_checked() {
    let config = load(&format!("{MINIMAL}{OIDC_CONNECTOR}"), &[]).unwrap();
    let config::ConnectorKind::Oidc(settings) = &config.connectors[0].kind else { panic!("an oidc connector") };
    assert_eq!(settings.issuer, "https://login.example.com");
    assert_eq!(settings.claims.groups, "realm_access.roles");
    assert_eq!(settings.claims.username, "preferred_username");
    assert_eq!((settings.timeout_secs, settings.clock_skew_secs, settings.userinfo), (10, 60, false));
    for leak in [format!("{config:?}"), effective(&format!("{MINIMAL}{OIDC_CONNECTOR}"), &[])] {
        assert!(!leak.contains("upstream-secret-value"), "{leak}");
    }
    // Omitting the secret makes a public client (PKCE only); a secret can come from the environment.
    let public =
        load(&format!("{MINIMAL}{}", OIDC_CONNECTOR.replace("client_secret = \"upstream-secret-value\"\n", "")), &[]).unwrap();
    assert!(matches!(&public.connectors[0].kind, config::ConnectorKind::Oidc(s) if s.client_secret.is_none()));
    let from_env =
        load(&format!("{MINIMAL}{OIDC_CONNECTOR}"), &[("GATEHOUSE_CONNECTORS__0__CLIENT_SECRET", "from-env")]).unwrap();
    assert!(
        matches!(&from_env.connectors[0].kind, config::ConnectorKind::Oidc(s) if s.client_secret.as_ref().unwrap().expose() == "from-env")
    );

    let cases = [
        ("issuer = \"https://login.example.com\"\n", "", "connectors[0].issuer"),
        ("client_id = \"gatehouse\"\n", "", "connectors[0].client_id"),
        ("[\"openid\", \"email\", \"profile\"]", "[\"email\"]", "connectors[0].scopes"),
        ("client_secret = \"upstream-secret-value\"", "client_secret = \"\"", "connectors[0].client_secret"),
        ("name = \"name\"", "name = \"\"", "connectors[0].claims.name"),
        ("email_domains", "timeout_secs = 0\nemail_domains", "connectors[0].timeout_secs"),
        ("email_domains", "users = []\nfavourite_colour = \"red\"\nemail_domains", "connectors[0].favourite_colour"),
    ];
    for (from, to, expected) in cases {
        let (key, reason) = error_of(&format!("{MINIMAL}{}", OIDC_CONNECTOR.replacen(from, to, 1)), &[]);
        assert_eq!(key, expected, "{from} -> {to}: {reason}");
    }
    // Loopback upstreams may use plain http (tests, local Keycloak); other keys belong to other types.
    assert!(
        load(&format!("{MINIMAL}{}", OIDC_CONNECTOR.replace("https://login.example.com", "http://127.0.0.1:8081")), &[]).is_ok()
    );
    // Any other host needs https, unless the broker itself is plain http (docker-compose's containers).
    let plain_upstream = OIDC_CONNECTOR.replace("https://login.example.com", "http://login.example.com");
    let (key, reason) = error_of(&format!("{}{plain_upstream}", https_issuer()), &[]);
    assert_eq!(key, "connectors[0].issuer", "{reason}");
    assert!(reason.contains("https"), "{reason}");
    assert!(load(&format!("{MINIMAL}{plain_upstream}"), &[]).is_ok());
    let (key, _) = error_of(
        &format!("{MINIMAL}{}", local_users_toml().replace("type = \"local\"", "type = \"local\"\nissuer = \"https://x\"")),
        &[],
    );
    assert_eq!(key, "connectors[0].issuer");
}

const SAML_CONNECTOR: &str = r#"
[[connectors]]
id = "corp-saml"
type = "saml"
name = "Corp SSO"
idp_metadata_url = "https://idp.example.com/metadata"
email_domains = ["corp.example"]
[connectors.claims]
email = "mail"
groups = "memberOf"
"#;

#[test]
fn saml_connectors_are_read_and_checked() {
    let config = load(&format!("{MINIMAL}{SAML_CONNECTOR}"), &[]).unwrap();
    let config::ConnectorKind::Saml(settings) = &config.connectors[0].kind else { panic!("a saml connector") };
    assert_eq!(settings.metadata, config::MetadataSource::Url("https://idp.example.com/metadata".into()));
    assert_eq!((settings.claims.subject.as_str(), settings.claims.name.as_str()), ("NameID", "displayName"));
    assert_eq!(settings.claims.groups, "memberOf");
    assert_eq!(settings.claims.username, None);
    assert_eq!((settings.allow_idp_initiated, settings.allow_sha1, settings.clock_skew_secs), (false, false, 60));

    let file = tempfile::NamedTempFile::new().unwrap();
    let from_file = SAML_CONNECTOR.replace(
        "idp_metadata_url = \"https://idp.example.com/metadata\"",
        &format!("idp_metadata_file = \"{}\"", file.path().display()),
    );
    let config = load(&format!("{MINIMAL}{from_file}"), &[]).unwrap();
    assert!(
        matches!(&config.connectors[0].kind, config::ConnectorKind::Saml(s) if s.metadata == config::MetadataSource::File(file.path().into()))
    );

    let url = "idp_metadata_url = \"https://idp.example.com/metadata\"";
    let cases = [
        (url, "", "connectors[0].idp_metadata_url"),
        (url, "idp_metadata_url = \"not a url\"", "connectors[0].idp_metadata_url"),
        (url, "idp_metadata_url = \"https://user:pw@idp.example.com/m\"", "connectors[0].idp_metadata_url"),
        (url, "idp_metadata_file = \"/nonexistent/idp.xml\"", "connectors[0].idp_metadata_file"),
        (url, "idp_metadata_url = \"https://a\"\nidp_metadata_file = \"/etc/hostname\"", "connectors[0].idp_metadata_url"),
        ("email_domains", "clock_skew_secs = 601\nemail_domains", "connectors[0].clock_skew_secs"),
        ("email_domains", "client_id = \"x\"\nemail_domains", "connectors[0].client_id"),
        ("email_domains", "allow_xxe = true\nemail_domains", "connectors[0].allow_xxe"),
        ("groups = \"memberOf\"", "groups = \"\"", "connectors[0].claims.groups"),
    ];
    let plain_metadata = SAML_CONNECTOR.replace(url, "idp_metadata_url = \"http://idp.example.com/metadata\"");
    let (key, reason) = error_of(&format!("{}{plain_metadata}", https_issuer()), &[]);
    assert_eq!(key, "connectors[0].idp_metadata_url", "{reason}");
    assert!(load(&format!("{MINIMAL}{plain_metadata}"), &[]).is_ok());
    for (from, to, expected) in cases {
        let (key, reason) = error_of(&format!("{MINIMAL}{}", SAML_CONNECTOR.replacen(from, to, 1)), &[]);
        assert_eq!(key, expected, "{from} -> {to}: {reason}");
    }
    // SAML-only keys are refused on other connector types.
    let (key, _) = error_of(
        &format!("{MINIMAL}{}", local_users_toml().replace("type = \"local\"", "type = \"local\"\nallow_idp_initiated = true")),
        &[],
    );
    assert_eq!(key, "connectors[0].allow_idp_initiated");
    let (key, _) = error_of(
        &format!("{MINIMAL}{}", OIDC_CONNECTOR.replace("email_domains", "idp_metadata_file = \"/etc/hostname\"\nemail_domains")),
        &[],
    );
    assert_eq!(key, "connectors[0].idp_metadata_file");
}
