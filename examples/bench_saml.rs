//! The brokered SAML sign-in scenario of `bench/run.sh`: the IdP's side, and the browsers.
//!
//! ```text
//! bench_saml sign NOW KEY_PEM IDP_ENTITY SP_ENTITY ACS USERS < STARTS > SIGNED
//! bench_saml run BASE CONNECTOR SECONDS CONNECTIONS SIGNED
//! ```
//!
//! `sign` answers each started sign-in as an IdP would, with its own signed response. `STARTS`
//! has one per line: `request_id TAB relay_state TAB cookie`; `SIGNED` gets one line each:
//! `cookie TAB form body` (`SAMLResponse=…&RelayState=…`). The assertion (RSA-SHA256, exclusive
//! c14n, as most IdPs send it) is written in its canonical form, so its digest is the SHA-256 of
//! its bytes; Gatehouse canonicalizes it on its own, so a mistake here fails the benchmark
//! rather than passing unnoticed. Sign-in `i` is user `bench-user-{i mod USERS}`, so a run
//! signs in returning users as well as new ones. Test keys only: the fixtures' `idp-rsa`.
//!
//! `run` is the load generator: CONNECTIONS browsers, each taking the next signed response and
//! following it as a browser would (POST to the ACS, without cookies as a cross-site POST is
//! sent; the finish step with its cookie; the app's waiting authorization request with the
//! renewed session cookie, which must answer with a code), for SECONDS. wrk cannot do this: its
//! scripts see one `Set-Cookie` per response, and the sign-in sets several, in no fixed order.
//! It prints the `RESULT` line of `bench/gatehouse.lua`, latency per request, on one thread.

use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// How long each response and its assertion stay valid: longer than any benchmark run.
const VALID_SECS: i64 = 600;

struct Idp {
    key: RsaKeyPair,
    rng: SystemRandom,
    idp_entity: String,
    sp_entity: String,
    acs: String,
    users: usize,
    issued: String,
    not_before: String,
    not_after: String,
}

fn timestamp(unix: i64) -> anyhow::Result<String> {
    let at = OffsetDateTime::from_unix_timestamp(unix)?;
    Ok(at.format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))?)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn attribute(name: &str, value: &str) -> String {
    format!(
        "<saml:Attribute Name=\"{name}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\">\
         <saml:AttributeValue>{}</saml:AttributeValue></saml:Attribute>",
        escape(value)
    )
}

impl Idp {
    /// The assertion in exclusive canonical form, with `signature` after its `Issuer`.
    fn assertion(&self, id: &str, in_response_to: &str, user: usize, signature: &str) -> String {
        let Idp { idp_entity, sp_entity, acs, issued, not_before, not_after, .. } = self;
        let attributes = [
            attribute("mail", &format!("bench-user-{user}@bench.example")),
            attribute("displayName", &format!("Bench User {user}")),
            attribute("groups", "staff"),
        ]
        .concat();
        format!(
            "<saml:Assertion xmlns:saml=\"{SAML}\" ID=\"{id}\" IssueInstant=\"{issued}\" Version=\"2.0\">\
             <saml:Issuer>{idp_entity}</saml:Issuer>{signature}\
             <saml:Subject><saml:NameID Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:persistent\">bench-user-{user}</saml:NameID>\
             <saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
             <saml:SubjectConfirmationData InResponseTo=\"{in_response_to}\" NotOnOrAfter=\"{not_after}\" Recipient=\"{acs}\">\
             </saml:SubjectConfirmationData></saml:SubjectConfirmation></saml:Subject>\
             <saml:Conditions NotBefore=\"{not_before}\" NotOnOrAfter=\"{not_after}\"><saml:AudienceRestriction>\
             <saml:Audience>{sp_entity}</saml:Audience></saml:AudienceRestriction></saml:Conditions>\
             <saml:AuthnStatement AuthnInstant=\"{issued}\" SessionIndex=\"{id}\"><saml:AuthnContext>\
             <saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef>\
             </saml:AuthnContext></saml:AuthnStatement>\
             <saml:AttributeStatement>{attributes}</saml:AttributeStatement></saml:Assertion>"
        )
    }

    fn response(&self, index: usize, in_response_to: &str) -> anyhow::Result<String> {
        let assertion_id = format!("_bench-assertion-{index}-{in_response_to}");
        let user = index % self.users;
        let digest = STANDARD.encode(Sha256::digest(self.assertion(&assertion_id, in_response_to, user, "")));
        // `SignedInfo` as canonicalized on its own: the `ds` namespace declared on it.
        let signed_info = |xmlns: &str| {
            format!(
                "<ds:SignedInfo{xmlns}><ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"></ds:CanonicalizationMethod>\
                 <ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"></ds:SignatureMethod>\
                 <ds:Reference URI=\"#{assertion_id}\"><ds:Transforms>\
                 <ds:Transform Algorithm=\"{DS}enveloped-signature\"></ds:Transform>\
                 <ds:Transform Algorithm=\"{EXC_C14N}\"></ds:Transform></ds:Transforms>\
                 <ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"></ds:DigestMethod>\
                 <ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>"
            )
        };
        let mut signature = vec![0; self.key.public().modulus_len()];
        let canonical = signed_info(&format!(" xmlns:ds=\"{DS}\""));
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, canonical.as_bytes(), &mut signature)
            .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
        let signature = format!(
            "<ds:Signature xmlns:ds=\"{DS}\">{}<ds:SignatureValue>{}</ds:SignatureValue></ds:Signature>",
            signed_info(""),
            STANDARD.encode(&signature)
        );
        let Idp { idp_entity, acs, issued, .. } = self;
        Ok(format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" Destination=\"{acs}\" \
             ID=\"_bench-response-{index}\" InResponseTo=\"{in_response_to}\" IssueInstant=\"{issued}\" Version=\"2.0\">\
             <saml:Issuer xmlns:saml=\"{SAML}\">{idp_entity}</saml:Issuer><samlp:Status>\
             <samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"></samlp:StatusCode></samlp:Status>{}\
             </samlp:Response>",
            self.assertion(&assertion_id, in_response_to, user, &signature)
        ))
    }
}

/// `application/x-www-form-urlencoded` for a base64 value or one of our relay states.
fn form_value(value: &str) -> String {
    value.replace('%', "%25").replace('+', "%2B").replace('/', "%2F").replace('=', "%3D").replace('&', "%26")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((command, rest)) if command == "sign" => sign(rest),
        Some((command, rest)) if command == "run" => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(rest))
        }
        _ => anyhow::bail!(
            "usage: bench_saml sign NOW KEY_PEM IDP_ENTITY SP_ENTITY ACS USERS < STARTS > SIGNED\n       \
             bench_saml run BASE CONNECTOR SECONDS CONNECTIONS SIGNED"
        ),
    }
}

fn sign(args: &[String]) -> anyhow::Result<()> {
    let [now, key_pem, idp_entity, sp_entity, acs, users] = args else {
        anyhow::bail!("sign: expected NOW KEY_PEM IDP_ENTITY SP_ENTITY ACS USERS");
    };
    let now: i64 = now.parse()?;
    let pem = std::fs::read_to_string(key_pem)?;
    let der = STANDARD.decode(pem.lines().filter(|line| !line.starts_with("-----")).collect::<String>())?;
    let key = RsaKeyPair::from_pkcs8(&der).map_err(|err| anyhow::anyhow!("{key_pem}: not an RSA PKCS#8 key: {err}"))?;
    let idp = Idp {
        key,
        rng: SystemRandom::new(),
        idp_entity: idp_entity.clone(),
        sp_entity: sp_entity.clone(),
        acs: acs.clone(),
        users: users.parse::<usize>()?.max(1),
        issued: timestamp(now)?,
        // A little skew either way, as from an IdP whose clock is not quite ours.
        not_before: timestamp(now - 5)?,
        not_after: timestamp(now + VALID_SECS)?,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        let mut fields = line.split('\t');
        let (Some(request_id), Some(relay_state), Some(cookie)) = (fields.next(), fields.next(), fields.next()) else {
            anyhow::bail!("line {}: expected request_id TAB relay_state TAB cookie", index + 1);
        };
        let response = STANDARD.encode(idp.response(index, request_id)?);
        writeln!(out, "{cookie}\tSAMLResponse={}&RelayState={}", form_value(&response), form_value(relay_state))?;
    }
    out.flush()?;
    Ok(())
}

/// What the browsers saw, one tally per browser, added up at the end.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    bad_status: u64,
    bad_body: u64,
    socket_errors: u64,
    exhausted: u64,
    completed: u64,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.ok += other.ok;
        self.bad_status += other.bad_status;
        self.bad_body += other.bad_body;
        self.socket_errors += other.socket_errors;
        self.exhausted += other.exhausted;
        self.completed += other.completed;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn failed(&mut self, bad_status: bool, what: String) {
        if bad_status {
            self.bad_status += 1;
        } else {
            self.bad_body += 1;
        }
        self.first_error.get_or_insert(what);
    }
}

/// One step of a browser's sign-in: the response if it had `expected` status, else `None`
/// (tallied). A step that ends after the deadline is not counted, as in wrk.
async fn step(
    tally: &mut Tally,
    deadline: tokio::time::Instant,
    expected: reqwest::StatusCode,
    request: reqwest::RequestBuilder,
) -> Option<reqwest::Response> {
    let started = tokio::time::Instant::now();
    let sent = request.send().await;
    let finished = tokio::time::Instant::now();
    if finished > deadline {
        return None;
    }
    tally.latencies_us.push(u64::try_from((finished - started).as_micros()).unwrap_or(u64::MAX));
    match sent {
        Ok(response) if response.status() == expected => Some(response),
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            tally.failed(true, format!("{} {}", status.as_u16(), body.chars().take(400).collect::<String>()));
            None
        }
        Err(err) => {
            tally.socket_errors += 1;
            tally.first_error.get_or_insert(format!("socket error: {err}"));
            None
        }
    }
}

fn location(response: &reqwest::Response) -> &str {
    response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// One browser: sign-in after sign-in until the deadline or the responses run out.
async fn browser(
    client: reqwest::Client,
    base: std::sync::Arc<str>,
    acs: std::sync::Arc<str>,
    signed: std::sync::Arc<Vec<String>>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    deadline: tokio::time::Instant,
) -> Tally {
    use reqwest::StatusCode;
    let mut tally = Tally::default();
    while tokio::time::Instant::now() < deadline {
        let Some(line) = signed.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) else {
            tally.exhausted += 1;
            break;
        };
        let Some((cookie, form)) = line.split_once('\t') else {
            tally.failed(false, String::from("a signed line without a TAB"));
            continue;
        };
        let post = client.post(&*acs).header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        let Some(answered) = step(&mut tally, deadline, StatusCode::SEE_OTHER, post.body(form.to_owned())).await else {
            continue;
        };
        let finish = location(&answered);
        if !finish.contains("/finish?t=") {
            tally.failed(false, format!("ACS: 303 to {finish}"));
            continue;
        }
        tally.ok += 1;
        let get = client.get(format!("{base}{finish}")).header(reqwest::header::COOKIE, cookie);
        let Some(finished) = step(&mut tally, deadline, StatusCode::SEE_OTHER, get).await else { continue };
        let session = finished
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|pair| pair.starts_with("gatehouse_session="))
            .map(str::to_owned);
        let resume = location(&finished);
        let (Some(session), true) = (session, resume.starts_with("/oauth2/authorize")) else {
            tally.failed(false, format!("finish: 303 to {resume} without a new session cookie"));
            continue;
        };
        tally.ok += 1;
        let get = client.get(format!("{base}{resume}")).header(reqwest::header::COOKIE, session);
        let Some(resumed) = step(&mut tally, deadline, StatusCode::FOUND, get).await else { continue };
        if !location(&resumed).contains("code=") {
            tally.failed(false, format!("resume: 302 to {} without a code", location(&resumed)));
            continue;
        }
        tally.ok += 1;
        tally.completed += 1;
    }
    tally
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let [base, connector, seconds, connections, signed] = args else {
        anyhow::bail!("run: expected BASE CONNECTOR SECONDS CONNECTIONS SIGNED");
    };
    let seconds: f64 = seconds.parse()?;
    let connections: usize = connections.parse()?;
    let signed: Vec<String> = std::fs::read_to_string(signed)?.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let base: std::sync::Arc<str> = base.trim_end_matches('/').into();
    let acs: std::sync::Arc<str> = format!("{base}/saml/{connector}/acs").into();
    let signed = std::sync::Arc::new(signed);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs_f64(seconds);
    let browsers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(browser(client.clone(), base.clone(), acs.clone(), signed.clone(), next.clone(), deadline)))
        .collect();
    let mut tally = Tally::default();
    for browser in browsers {
        tally.add(browser.await?);
    }
    let duration = (tokio::time::Instant::now().min(deadline) - started).as_secs_f64();
    let mut latencies = std::mem::take(&mut tally.latencies_us);
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies.get(index.saturating_sub(1)).copied().unwrap_or(0) as f64 / 1000.0
    };
    let requests = latencies.len();
    println!(
        "RESULT scenario=saml requests={requests} duration_s={duration:.3} rps={:.1} p50_ms={:.3} p90_ms={:.3} \
         p99_ms={:.3} max_ms={:.3} ok={} bad_status={} bad_body={} socket_errors={} exhausted={} completed={}",
        requests as f64 / duration,
        percentile(50.0),
        percentile(90.0),
        percentile(99.0),
        percentile(100.0),
        tally.ok,
        tally.bad_status,
        tally.bad_body,
        tally.socket_errors,
        tally.exhausted,
        tally.completed,
    );
    if let Some(first) = tally.first_error {
        println!("FIRST_ERROR {}", first.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Ok(())
}
