//! The `gatehouse` command.

use std::io::{BufRead, IsTerminal};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse::clock::{Clock, SharedClock, SystemClock};
use gatehouse::config::{self, Config, LogFormat};
use gatehouse::startup;
use gatehouse::tokens::KeyManager;
use gatehouse::upstream::check;
use gatehouse::upstream::saml::SpKeys;

/// sysexits(3) EX_CONFIG: the configuration is wrong, nothing was started.
const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about = "Single sign-on identity broker")]
struct Cli {
    /// Configuration file [default: $GATEHOUSE_CONFIG, else config/gatehouse.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (the default)
    Serve,
    /// Create or upgrade the database schema, then exit
    Migrate,
    /// Validate the configuration and print it, defaults written out and secrets masked, in a
    /// form that can be pasted back into a file
    CheckConfig {
        /// Also check each connector in the file against its identity provider (discovery and
        /// keys, or metadata and certificates); exits 1 when one cannot be used
        #[arg(long)]
        connect: bool,
    },
    /// Manage signing keys
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage the SAML service provider's keys
    Saml {
        #[command(subcommand)]
        command: SamlCommand,
    },
    /// Read a password from standard input and print its argon2id hash for the configuration
    HashPassword,
    /// Exit 0 if this node's /readyz answers 200 on the configured `listen` address (a
    /// container health check that needs no curl in the image)
    Healthcheck,
}

#[derive(Debug, Subcommand)]
enum SamlCommand {
    /// List the SP keys: purpose (signing, encryption), state (next, active, retired)
    ListSpKeys,
    /// Replace the SP signing and encryption keys. The new keys are published in the SP metadata
    /// first; retired keys stay (an encryption key keeps decrypting) until removed
    RotateSpKey {
        /// Only publish new keys (the encryption key decrypts at once); run again without this
        /// flag, once the IdPs have read the new metadata, to start signing with the new key
        #[arg(long)]
        publish_only: bool,
    },
    /// Remove a retired (or not yet active) SP key
    RemoveSpKey {
        /// The key's id, as `list-sp-keys` shows it
        kid: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List signing keys: active, retired, and whether each is still published
    List,
    /// Make a new key active; tokens signed by the old one stay verifiable until they expire
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        return hash_password();
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let path = config::resolve_path(cli.config.as_deref(), &env);
    let config = match config::load(&path, &env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gatehouse: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(Command::CheckConfig { connect }) = cli.command {
        match config::effective_toml(&path, &env) {
            Ok(text) => println!("# {} is valid\n{text}", path.display()),
            Err(err) => {
                eprintln!("gatehouse: {err}");
                return ExitCode::FAILURE;
            }
        }
        return if connect { check_connectors(&config) } else { ExitCode::SUCCESS };
    }
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gatehouse: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatehouse: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_sessions=warn"));
    // Colour codes only for a person at a terminal, not for a file or a log collector.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout).with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Pretty => builder.init(),
        // The whole span list: a library's own span (tower-sessions' `call`) may be the
        // innermost, and the request's id is on the outer one.
        LogFormat::Json => builder.json().with_current_span(false).with_span_list(true).init(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    match command {
        Command::Serve => serve(config, clock).await,
        Command::Migrate => {
            startup::open_database(config.database_url.expose(), config.sqlite_synchronous).await?;
            println!("database schema is up to date");
            Ok(())
        }
        Command::Keys { command } => {
            let kek = startup::load_key_encryption_key(&config.key_encryption_key)?;
            let (store, _) = startup::open_database(config.database_url.expose(), config.sqlite_synchronous).await?;
            let keys = KeyManager::new(store, kek, clock, config.tokens.clone());
            let listed = match command {
                KeysCommand::List => keys.list().await?,
                KeysCommand::Rotate => {
                    let rotated = keys.rotate().await?;
                    println!(
                        "rotated: {}",
                        rotated.iter().map(|k| format!("{} ({})", k.kid, k.alg)).collect::<Vec<_>>().join(", ")
                    );
                    keys.list().await?
                }
            };
            println!("{:<44} {:<6} {:<8} {:<10}", "KID", "ALG", "STATE", "PUBLISHED");
            for key in listed {
                let state = if key.retired_at.is_some() { "retired" } else { "active" };
                println!("{:<44} {:<6} {:<8} {:<10}", key.kid, key.alg, state, if key.published { "yes" } else { "no" });
            }
            Ok(())
        }
        Command::Saml { command } => {
            let kek = startup::load_key_encryption_key(&config.key_encryption_key)?;
            let (store, _) = startup::open_database(config.database_url.expose(), config.sqlite_synchronous).await?;
            let keys = SpKeys::new(store, kek, clock, config.tokens.key_cache_secs);
            match command {
                SamlCommand::ListSpKeys => {}
                SamlCommand::RotateSpKey { publish_only: true } => {
                    let published = keys.publish_next().await?;
                    println!("published: {}", describe(&published));
                    println!("requests are still signed with the active key; run `gatehouse saml rotate-sp-key` to switch");
                }
                SamlCommand::RotateSpKey { publish_only: false } => {
                    let active = keys.rotate().await?;
                    println!("active: {}", describe(&active));
                }
                SamlCommand::RemoveSpKey { kid } => {
                    keys.remove(&kid).await?;
                    println!("removed: {kid}");
                }
            }
            println!("{:<44} {:<11} {:<8} CREATED", "KID", "PURPOSE", "STATE");
            for key in keys.list().await? {
                let created = time::OffsetDateTime::from_unix_timestamp(key.created_at)
                    .ok()
                    .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                println!("{:<44} {:<11} {:<8} {created}", key.kid, key.purpose, key.state.as_str());
            }
            Ok(())
        }
        Command::Healthcheck => healthcheck(config.listen).await,
        Command::CheckConfig { .. } | Command::HashPassword => Ok(()),
    }
}

async fn healthcheck(listen: SocketAddr) -> anyhow::Result<()> {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("http://{}/readyz", SocketAddr::new(ip, listen.port()));
    let client = reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(3)).build()?;
    let response = client.get(&url).send().await.with_context(|| format!("{url} did not answer"))?;
    anyhow::ensure!(response.status() == reqwest::StatusCode::OK, "{url} answered {}", response.status());
    Ok(())
}

async fn serve(config: Config, clock: SharedClock) -> anyhow::Result<()> {
    let listen = config.listen;
    let issuer = config.issuer.clone();
    let app = startup::build(config, clock).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(listen = %bound, "Gatehouse is ready: open {issuer}/ to sign in");
    app.serve(listener, startup::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Checks each connector the file declares against its IdP, printed as TOML comments so the
/// whole output still pastes back into a file. Connectors added in the console are checked by
/// the running server (`/readyz?verbose`).
fn check_connectors(config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gatehouse: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemClock.now();
    let mut all_usable = true;
    for connector in &config.connectors {
        let found = runtime.block_on(check::check_declared(connector, &config.issuer, now));
        let kind = connector.kind.type_name();
        match found {
            None => println!("# connector {} ({kind}): nothing to reach", connector.id),
            Some((connector_type, finding)) => {
                all_usable &= finding.is_usable();
                println!("# connector {} ({kind}): {}: {}", connector.id, finding.code(), finding.detail());
                if finding.needs_attention() {
                    println!("#   fix: {}", finding.fix(connector_type));
                }
            }
        }
    }
    if all_usable { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn describe(keys: &[gatehouse::upstream::saml::sp_key::SpKeySummary]) -> String {
    keys.iter().map(|k| format!("{} ({})", k.kid, k.purpose)).collect::<Vec<_>>().join(", ")
}

fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Password (input is visible; pipe it in to avoid that):");
    }
    let mut line = String::new();
    if let Err(err) = stdin.lock().read_line(&mut line) {
        eprintln!("gatehouse: cannot read standard input: {err}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("gatehouse: the password is empty");
        return ExitCode::FAILURE;
    }
    match gatehouse::password::hash(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("gatehouse: {err}");
            ExitCode::FAILURE
        }
    }
}
