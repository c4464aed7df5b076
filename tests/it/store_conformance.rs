//! One conformance suite for every storage backend: the same calls must behave the same.

use std::collections::HashSet;
use std::sync::Arc;

use gatehouse::store::{
    AuditEvent, AuditOutcome, AuditQuery, ClientRecord, ConnectorRecord, GrantQuery, GrantRecord, NewSingleUse,
    RefreshTokenRecord, Rotation, SessionListing, SessionQuery, SigningKeyRecord, SingleUseKind, SsoSession, Store, StoreError,
    UserProfile, UserQuery,
};

use crate::helpers::{START, TestDb, client_record};

const NOW: i64 = START;

fn profile(username: &str) -> UserProfile {
    UserProfile {
        username: username.into(),
        email: Some(format!("{username}@example.com")),
        email_verified: true,
        display_name: Some(username.to_uppercase()),
        groups: vec!["a".into(), "b".into()],
    }
}

async fn users_and_links(store: &Arc<dyn Store>) {
    let (alice, created) = store.get_or_create_linked_user("corp", "sub-1", &profile("alice"), NOW).await.unwrap();
    assert!(created);
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.groups, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(alice.created_at, NOW);
    assert!(!alice.disabled);

    let (again, created) = store.get_or_create_linked_user("corp", "sub-1", &profile("renamed"), NOW + 1).await.unwrap();
    assert!(!created, "the same (connector, subject) must map to the same user");
    assert_eq!(again.id, alice.id);
    assert_eq!(again.username, "alice", "linking does not rewrite the profile");

    let (other_connector, created) = store.get_or_create_linked_user("other", "sub-1", &profile("alice"), NOW).await.unwrap();
    assert!(created);
    assert_ne!(other_connector.id, alice.id, "the same subject at another connector is another user");

    assert_eq!(store.find_linked_user_id("corp", "sub-1").await.unwrap(), Some(alice.id.clone()));
    assert_eq!(store.find_linked_user_id("corp", "sub-2").await.unwrap(), None);
    assert_eq!(store.find_linked_user("corp", "sub-1").await.unwrap(), Some(alice.clone()), "every field");
    assert_eq!(store.find_linked_user("corp", "sub-2").await.unwrap(), None);
    assert_eq!(store.find_linked_user("other", "sub-1").await.unwrap(), Some(other_connector.clone()));
    assert_eq!(store.list_identity_links("corp").await.unwrap(), vec![("sub-1".to_owned(), alice.id.clone())]);
    assert!(store.list_identity_links("nowhere").await.unwrap().is_empty());

    let mut changed = profile("alice");
    changed.email = Some("alice@new.example".into());
    changed.groups = vec![];
    let updated = store.update_user_profile(&alice.id, &changed, NOW + 5).await.unwrap();
    assert_eq!(updated.email.as_deref(), Some("alice@new.example"));
    assert!(updated.groups.is_empty());
    assert_eq!(updated.updated_at, NOW + 5);
    assert_eq!(store.find_linked_user_id("corp", "sub-1").await.unwrap(), Some(alice.id.clone()), "link survives email change");

    store.set_user_disabled(&alice.id, true, NOW + 6).await.unwrap();
    assert!(store.get_user(&alice.id).await.unwrap().disabled);
    let mut session = sso("signed-in", &alice.id, NOW + 100);
    (session.connector_id, session.auth_time) = (String::from("corp"), NOW + 7);
    let signed_in = audit("login", AuditOutcome::Success, "alice", "192.0.2.1", NOW + 7);
    store.start_sso_session(&session, "sub-1", &signed_in, None).await.unwrap();
    assert_eq!(store.get_user(&alice.id).await.unwrap().last_login_at, Some(NOW + 7));
    assert_eq!(store.list_user_links(&alice.id).await.unwrap()[0].last_login_at, Some(NOW + 7), "and the identity used");

    assert!(matches!(store.get_user("missing").await, Err(StoreError::NotFound)));
    assert!(matches!(store.set_user_disabled("missing", true, NOW).await, Err(StoreError::NotFound)));
    let (mut nobody, refused_at) = (sso("nobody's", "missing", NOW + 100), NOW + 8);
    (nobody.connector_id, nobody.auth_time) = (String::from("corp"), refused_at);
    let audited = store.list_audit(100).await.unwrap().len();
    let refused = store.start_sso_session(&nobody, "sub-1", &signed_in, None).await;
    assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
    assert!(matches!(store.get_sso_session("nobody's").await, Err(StoreError::NotFound)), "a refused login writes nothing");
    assert_eq!(store.list_audit(100).await.unwrap().len(), audited, "not even its audit row");
    assert!(matches!(store.update_user_profile("missing", &changed, NOW).await, Err(StoreError::NotFound)));
    assert_eq!(store.list_users().await.unwrap().len(), 2);
}

async fn concurrent_first_sign_in_creates_one_user(store: &Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.get_or_create_linked_user("race", "same-subject", &profile("racer"), NOW).await.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let (user, was_created) = task.await.unwrap();
        ids.insert(user.id);
        created += usize::from(was_created);
    }
    assert_eq!(ids.len(), 1, "every racer must get the same user");
    assert_eq!(created, 1);
    let racers = store.list_users().await.unwrap().into_iter().filter(|u| u.username == "racer").count();
    assert_eq!(racers, 1, "the losers' users must not be left behind");
}

async fn clients_and_connectors(store: &Arc<dyn Store>) {
    store.upsert_client(&client_record("b-app", true)).await.unwrap();
    store.upsert_client(&client_record("a-app", false)).await.unwrap();
    let mut changed = client_record("b-app", true);
    changed.redirect_uris.push("https://app.example/other".into());
    changed.secret_hash = None;
    changed.updated_at = NOW + 1;
    store.upsert_client(&changed).await.unwrap();
    assert_eq!(
        store.get_client("b-app").await.unwrap(),
        ClientRecord { version: 2, ..changed.clone() },
        "an update raises the version"
    );
    let ids: Vec<String> = store.list_clients().await.unwrap().into_iter().map(|c| c.client_id).collect();
    assert_eq!(ids, vec!["a-app".to_owned(), "b-app".to_owned()]);
    store.delete_client("a-app", START, gatehouse::session::public_sid).await.unwrap();
    assert!(matches!(store.get_client("a-app").await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_client("a-app", START, gatehouse::session::public_sid).await, Err(StoreError::NotFound)));

    let connector = ConnectorRecord {
        id: "corp".into(),
        kind: "local".into(),
        name: "Corp".into(),
        email_domains: vec!["corp.example".into()],
        settings: r#"{"type":"local","users":[]}"#.into(),
        managed_by_config: true,
        created_at: NOW,
        updated_at: NOW,
        version: 1,
        disabled: false,
        sealed_secret: Some(vec![0, 1, 2, 255]),
    };
    store.upsert_connector(&connector).await.unwrap();
    assert_eq!(store.get_connector("corp").await.unwrap(), connector);
    let renamed = ConnectorRecord { name: "Corporate".into(), updated_at: NOW + 1, sealed_secret: None, ..connector.clone() };
    store.upsert_connector(&renamed).await.unwrap();
    assert_eq!(
        store.list_connectors().await.unwrap(),
        vec![ConnectorRecord { version: 2, ..renamed.clone() }],
        "an upsert raises the version"
    );
    // Created at run time: inserted once, then replaced only at the version read.
    let console = ConnectorRecord { id: "okta".into(), kind: "oidc".into(), managed_by_config: false, ..connector.clone() };
    store.insert_connector(&console).await.unwrap();
    assert!(matches!(store.insert_connector(&console).await, Err(StoreError::AlreadyExists)));
    let disabled = ConnectorRecord { disabled: true, updated_at: NOW + 2, ..console.clone() };
    store.replace_connector(&disabled, 1).await.unwrap();
    assert_eq!(store.get_connector("okta").await.unwrap(), ConnectorRecord { version: 2, ..disabled.clone() });
    assert!(matches!(store.replace_connector(&disabled, 1).await, Err(StoreError::Conflict)), "a stale version is refused");
    let missing = ConnectorRecord { id: "nobody".into(), ..disabled.clone() };
    assert!(matches!(store.replace_connector(&missing, 1).await, Err(StoreError::NotFound)));
    // The file's connectors are never replaced by the console's writer.
    let file_managed = ConnectorRecord { id: "corp".into(), managed_by_config: true, ..disabled.clone() };
    assert!(matches!(store.replace_connector(&file_managed, 2).await, Err(StoreError::Conflict)));
    store.delete_connector("okta").await.unwrap();
    store.delete_connector("corp").await.unwrap();
    assert!(matches!(store.get_connector("corp").await, Err(StoreError::NotFound)));
}

fn key(kid: &str, alg: &str, created_at: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        alg: alg.into(),
        public_jwk: format!(r#"{{"kid":"{kid}"}}"#),
        sealed_private_key: vec![1, 2, 3, 0, 255],
        created_at,
        retired_at: None,
    }
}

async fn signing_keys(store: &Arc<dyn Store>) {
    store.activate_signing_key(&key("k1", "ES256", NOW)).await.unwrap();
    store.activate_signing_key(&key("r1", "RS256", NOW)).await.unwrap();
    store.activate_signing_key(&key("k2", "ES256", NOW + 10)).await.unwrap();
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 3);
    let by_kid = |kid: &str| keys.iter().find(|k| k.kid == kid).unwrap().clone();
    assert_eq!(by_kid("k1").retired_at, Some(NOW + 10), "activating k2 retires k1");
    assert_eq!(by_kid("k2").retired_at, None);
    assert_eq!(by_kid("r1").retired_at, None, "other algorithms are untouched");
    assert_eq!(by_kid("k2").sealed_private_key, vec![1, 2, 3, 0, 255]);
    assert!(matches!(store.activate_signing_key(&key("k2", "ES256", NOW + 20)).await, Err(StoreError::AlreadyExists)));
    let active_es256 =
        store.list_signing_keys().await.unwrap().into_iter().filter(|k| k.alg == "ES256" && k.retired_at.is_none()).count();
    assert_eq!(active_es256, 1, "a failed activation must not leave the algorithm without, or with two, active keys");
}

fn sso(id: &str, user_id: &str, expires_at: i64) -> SsoSession {
    SsoSession {
        id: id.into(),
        user_id: user_id.into(),
        connector_id: "local".into(),
        auth_time: NOW,
        last_seen_at: NOW,
        expires_at,
        revoked_at: None,
        ip: Some("192.0.2.1".into()),
        user_agent: Some("test".into()),
    }
}

async fn sessions(store: &Arc<dyn Store>) {
    let (user, _) = store.get_or_create_linked_user("local", "s-user", &profile("s"), NOW).await.unwrap();
    let (other, _) = store.get_or_create_linked_user("local", "s-other", &profile("o"), NOW).await.unwrap();
    store.create_sso_session(&sso("s1", &user.id, NOW + 100)).await.unwrap();
    store.create_sso_session(&sso("s2", &user.id, NOW + 10)).await.unwrap();
    store.create_sso_session(&sso("s3", &other.id, NOW + 100)).await.unwrap();
    assert!(matches!(store.create_sso_session(&sso("s1", &user.id, NOW)).await, Err(StoreError::AlreadyExists)));

    let (session, its_user) = store.session_with_user("s1").await.unwrap().unwrap();
    assert_eq!(session, store.get_sso_session("s1").await.unwrap());
    assert_eq!(its_user, user, "the session's own user, every field");
    let (_, other_user) = store.session_with_user("s3").await.unwrap().unwrap();
    assert_eq!(other_user, other);
    assert!(store.session_with_user("nope").await.unwrap().is_none());

    store.touch_sso_session("s1", NOW + 5).await.unwrap();
    store.touch_sso_session("s1", NOW + 3).await.unwrap();
    assert_eq!(store.get_sso_session("s1").await.unwrap().last_seen_at, NOW + 5, "last seen never moves back");
    assert!(matches!(store.touch_sso_session("nope", NOW).await, Err(StoreError::NotFound)));

    let of_user = SessionQuery { user_id: Some(user.id.clone()), limit: 50, ..SessionQuery::default() };
    let all = SessionQuery { limit: 50, ..SessionQuery::default() };
    let active: Vec<String> =
        store.search_sso_sessions(&of_user, NOW + 20, 1000).await.unwrap().into_iter().map(|s| s.session.id).collect();
    assert_eq!(active, vec!["s1".to_owned()], "expired s2 and other user's s3 are not listed");
    assert_eq!(store.search_sso_sessions(&all, NOW + 20, 1000).await.unwrap().len(), 2);
    assert_eq!(store.search_sso_sessions(&all, NOW + 20, 16).await.unwrap().len(), 1, "s3 was last seen 20 s ago: idle");

    store.revoke_sso_session("s1", NOW + 30).await.unwrap();
    store.revoke_sso_session("s1", NOW + 40).await.unwrap();
    assert_eq!(store.get_sso_session("s1").await.unwrap().revoked_at, Some(NOW + 30), "the first revocation time is kept");
    assert!(store.search_sso_sessions(&of_user, NOW + 20, 1000).await.unwrap().is_empty());
    assert!(matches!(store.revoke_sso_session("nope", NOW).await, Err(StoreError::NotFound)));

    // Listing by connector finds only that connector's unrevoked sessions.
    let mut elsewhere = sso("s4", &other.id, NOW + 100);
    elsewhere.connector_id = "corp".into();
    store.create_sso_session(&elsewhere).await.unwrap();
    assert_eq!(store.list_unrevoked_sso_sessions(Some("local"), Some(&other.id)).await.unwrap(), vec!["s3".to_owned()]);
    let unrevoked = store.list_unrevoked_sso_sessions(Some("local"), None).await.unwrap();
    assert_eq!(unrevoked, vec!["s2".to_owned(), "s3".to_owned()], "s1 is revoked; expired s2 still holds grants");
    assert_eq!(store.list_unrevoked_sso_sessions(Some("corp"), None).await.unwrap(), vec!["s4".to_owned()]);

    // Pages of one person's sessions, newest first by (auth_time, id), with and without a
    // connector; the ties at NOW + 2 and NOW are broken by id.
    for (id, auth_time) in [("p1", NOW + 1), ("p2", NOW + 2), ("p3", NOW + 2), ("p4", NOW + 3)] {
        let mut session = sso(id, &other.id, NOW + 100);
        session.connector_id = "corp".into();
        session.auth_time = auth_time;
        store.create_sso_session(&session).await.unwrap();
    }
    let ids = |listed: Vec<SessionListing>| listed.into_iter().map(|s| s.session.id).collect::<Vec<_>>();
    let mut page =
        SessionQuery { user_id: Some(other.id.clone()), connector_id: Some("corp".into()), limit: 2, ..SessionQuery::default() };
    assert_eq!(ids(store.search_sso_sessions(&page, NOW + 20, 1000).await.unwrap()), ["p4", "p3"]);
    page.before = Some((NOW + 2, "p3".into()));
    assert_eq!(ids(store.search_sso_sessions(&page, NOW + 20, 1000).await.unwrap()), ["p2", "p1"]);
    page.before = Some((NOW + 1, "p1".into()));
    assert_eq!(ids(store.search_sso_sessions(&page, NOW + 20, 1000).await.unwrap()), ["s4"]);
    let of_other = SessionQuery { user_id: Some(other.id.clone()), limit: 50, ..SessionQuery::default() };
    assert_eq!(ids(store.search_sso_sessions(&of_other, NOW + 20, 1000).await.unwrap()), ["p4", "p3", "p2", "p1", "s4", "s3"]);
    let through_corp = SessionQuery { connector_id: Some("corp".into()), limit: 50, ..SessionQuery::default() };
    assert_eq!(ids(store.search_sso_sessions(&through_corp, NOW + 20, 1000).await.unwrap()), ["p4", "p3", "p2", "p1", "s4"]);
    assert_eq!(store.list_unrevoked_sso_sessions(None, Some(&other.id)).await.unwrap(), ["p1", "p2", "p3", "p4", "s3", "s4"]);
    assert_eq!(store.list_unrevoked_sso_sessions(None, None).await.unwrap(), ["p1", "p2", "p3", "p4", "s2", "s3", "s4"]);
}

fn audit(kind: &str, outcome: AuditOutcome, actor: &str, ip: &str, time: i64) -> AuditEvent {
    AuditEvent {
        time,
        kind: kind.into(),
        outcome,
        actor: Some(actor.into()),
        user_id: None,
        client_id: Some("demo-app".into()),
        connector_id: Some("local".into()),
        ip: Some(ip.into()),
        detail: Some("invalid_credentials".into()),
    }
}

async fn audit_log(store: &Arc<dyn Store>) {
    store.record_audit(&audit("login", AuditOutcome::Failure, "alice", "192.0.2.1", NOW)).await.unwrap();
    store.record_audit(&audit("login", AuditOutcome::Failure, "alice", "192.0.2.2", NOW + 10)).await.unwrap();
    store.record_audit(&audit("login", AuditOutcome::Success, "alice", "192.0.2.1", NOW + 20)).await.unwrap();
    store.record_audit(&audit("logout", AuditOutcome::Failure, "alice", "192.0.2.1", NOW + 30)).await.unwrap();
    let recent = store.list_audit(2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].kind, "logout", "newest first");
    assert_eq!(recent[1].outcome, AuditOutcome::Success);
    assert_eq!(recent[1].client_id.as_deref(), Some("demo-app"));
}

async fn login_counters(store: &Arc<dyn Store>) {
    let window = NOW - NOW % 900;
    assert_eq!(store.hit_login_counter("user:local:alice", window, window + 900).await.unwrap(), 1);
    assert_eq!(store.hit_login_counter("user:local:alice", window, window + 900).await.unwrap(), 2);
    assert_eq!(store.hit_login_counter("net:192.0.2.1", window, window + 900).await.unwrap(), 1, "keys count apart");
    store.release_login_counter("user:local:alice", window).await.unwrap();
    assert_eq!(store.hit_login_counter("user:local:alice", window, window + 900).await.unwrap(), 2);
    // Releasing in a window that is over changes nothing.
    store.release_login_counter("user:local:alice", window - 900).await.unwrap();
    assert_eq!(store.hit_login_counter("user:local:alice", window, window + 900).await.unwrap(), 3);
    assert_eq!(
        store.hit_login_counter("user:local:alice", window + 900, window + 1800).await.unwrap(),
        1,
        "a new window starts again"
    );

    // Parallel hits each get their own count: no two see the same number.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.hit_login_counter("user:local:race", window, window + 900).await.unwrap() }));
    }
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<u64>>());

    let report = store.delete_expired(window + 900, 0).await.unwrap();
    assert_eq!(report.login_attempts, 2, "counters of finished windows are deleted");
}

async fn single_use_records(store: &Arc<dyn Store>) {
    let kind = SingleUseKind::AuthorizationCode;
    store.put_single_use(kind, "code-1", "payload-1", NOW + 60).await.unwrap();
    assert!(matches!(store.put_single_use(kind, "code-1", "other", NOW + 60).await, Err(StoreError::AlreadyExists)));
    store.put_single_use(SingleUseKind::UpstreamState, "code-1", "state payload", NOW + 60).await.unwrap();

    assert_eq!(store.peek_single_use(kind, "code-1", NOW).await.unwrap().as_deref(), Some("payload-1"));
    assert_eq!(store.take_single_use(kind, "code-1", NOW).await.unwrap().as_deref(), Some("payload-1"));
    assert_eq!(store.take_single_use(kind, "code-1", NOW).await.unwrap(), None, "a second take gets nothing");
    assert_eq!(store.peek_single_use(kind, "code-1", NOW).await.unwrap(), None);
    assert_eq!(
        store.take_single_use(SingleUseKind::UpstreamState, "code-1", NOW).await.unwrap().as_deref(),
        Some("state payload"),
        "kinds are separate namespaces"
    );

    store.put_single_use(kind, "old", "payload", NOW + 60).await.unwrap();
    assert_eq!(store.peek_single_use(kind, "old", NOW + 60).await.unwrap(), None, "expired at its expiry time");
    assert_eq!(store.take_single_use(kind, "old", NOW + 61).await.unwrap(), None, "an expired record is never handed out");
    assert_eq!(store.take_single_use(kind, "absent", NOW).await.unwrap(), None);
}

async fn single_use_is_taken_once_under_concurrency(store: &Arc<dyn Store>) {
    for round in 0..5 {
        let key = format!("contended-{round}");
        store.put_single_use(SingleUseKind::SamlRequestId, &key, "p", NOW + 60).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            let key = key.clone();
            tasks
                .push(tokio::spawn(async move { store.take_single_use(SingleUseKind::SamlRequestId, &key, NOW).await.unwrap() }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap().is_some());
        }
        assert_eq!(winners, 1, "exactly one of 16 concurrent takers may win (round {round})");
    }
}

async fn single_use_combined_writes(store: &Arc<dyn Store>) {
    let (request, spent) = (SingleUseKind::SamlRequestId, SingleUseKind::SamlRequestSpent);
    // A take that leaves a mark: only the taker leaves it, and a mark already there is kept.
    store.put_single_use(request, "r1", "pending", NOW + 60).await.unwrap();
    assert!(store.take_single_use_leaving_mark(request, "r1", NOW, spent, NOW + 300).await.unwrap());
    assert_eq!(store.peek_single_use(request, "r1", NOW).await.unwrap(), None, "taken");
    assert_eq!(store.peek_single_use(spent, "r1", NOW + 299).await.unwrap().as_deref(), Some(""), "marked until its end");
    assert_eq!(store.peek_single_use(spent, "r1", NOW + 300).await.unwrap(), None);
    assert!(!store.take_single_use_leaving_mark(request, "r1", NOW, spent, NOW + 900).await.unwrap(), "taken once");
    assert_eq!(store.peek_single_use(spent, "r1", NOW + 300).await.unwrap(), None, "a second take leaves no later mark");
    assert!(!store.take_single_use_leaving_mark(request, "never", NOW, spent, NOW + 300).await.unwrap());
    assert_eq!(store.peek_single_use(spent, "never", NOW).await.unwrap(), None, "no take, no mark");
    store.put_single_use(request, "old", "pending", NOW + 10).await.unwrap();
    assert!(!store.take_single_use_leaving_mark(request, "old", NOW + 10, spent, NOW + 300).await.unwrap(), "expired");
    assert_eq!(store.peek_single_use(spent, "old", NOW).await.unwrap(), None, "an expired record leaves no mark");
    assert_eq!(store.take_single_use(request, "old", NOW).await.unwrap(), None, "and stays spent if the clock goes back");
    store.put_single_use(spent, "r2", "", NOW + 30).await.unwrap();
    store.put_single_use(request, "r2", "pending", NOW + 60).await.unwrap();
    assert!(store.take_single_use_leaving_mark(request, "r2", NOW, spent, NOW + 300).await.unwrap(), "a mark there already");
    assert_eq!(store.take_single_use(request, "r2", NOW).await.unwrap(), None);
    assert_eq!(store.peek_single_use(spent, "r2", NOW + 30).await.unwrap(), None, "the mark there is kept as it was");

    // Of 16 concurrent takers of one record, one wins.
    store.put_single_use(request, "contended", "pending", NOW + 60).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.take_single_use_leaving_mark(request, "contended", NOW, spent, NOW + 300).await.unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);

    // A pair: both stored, or (a key taken) neither.
    let (seen, verified) = (SingleUseKind::SamlAssertionId, SingleUseKind::SamlVerifiedLogin);
    let record = |kind, key, payload| NewSingleUse { kind, key, payload, expires_at: NOW + 60 };
    store.put_single_use_pair(&record(seen, "a1", ""), &record(verified, "h1", "login 1")).await.unwrap();
    assert_eq!(store.peek_single_use(seen, "a1", NOW).await.unwrap().as_deref(), Some(""));
    assert_eq!(store.peek_single_use(verified, "h1", NOW).await.unwrap().as_deref(), Some("login 1"));
    let again = store.put_single_use_pair(&record(seen, "a1", ""), &record(verified, "h2", "login 2")).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists)), "{again:?}");
    assert_eq!(store.peek_single_use(verified, "h2", NOW).await.unwrap(), None, "the second record rolled back too");
    let taken_second = store.put_single_use_pair(&record(seen, "a3", ""), &record(verified, "h1", "login 3")).await;
    assert!(matches!(taken_second, Err(StoreError::AlreadyExists)), "{taken_second:?}");
    assert_eq!(store.peek_single_use(seen, "a3", NOW).await.unwrap(), None, "the first record rolled back too");
    assert_eq!(store.peek_single_use(verified, "h1", NOW).await.unwrap().as_deref(), Some("login 1"), "the taken one is kept");

    // A put that discards another record, there or not.
    let (waiting, code) = (SingleUseKind::AuthorizationRequest, SingleUseKind::AuthorizationCode);
    store.put_single_use(waiting, "req", "request", NOW + 60).await.unwrap();
    store.put_single_use_discarding(&record(code, "c1", "grant 1"), (waiting, "req")).await.unwrap();
    assert_eq!(store.peek_single_use(waiting, "req", NOW).await.unwrap(), None, "discarded");
    assert_eq!(store.take_single_use(code, "c1", NOW).await.unwrap().as_deref(), Some("grant 1"));
    store.put_single_use_discarding(&record(code, "c2", "grant 2"), (waiting, "req")).await.unwrap();
    assert_eq!(store.peek_single_use(code, "c2", NOW).await.unwrap().as_deref(), Some("grant 2"), "nothing to discard");
    store.put_single_use(waiting, "req2", "request", NOW + 60).await.unwrap();
    let taken = store.put_single_use_discarding(&record(code, "c2", "other"), (waiting, "req2")).await;
    assert!(matches!(taken, Err(StoreError::AlreadyExists)), "{taken:?}");
    assert!(store.peek_single_use(waiting, "req2", NOW).await.unwrap().is_some(), "a refused put discards nothing");
}

async fn session_with_its_audit_event(store: &Arc<dyn Store>) {
    let (user, _) = store.get_or_create_linked_user("local", "a-user", &profile("a"), NOW).await.unwrap();
    let mut signed_in = audit("login", AuditOutcome::Success, "a", "192.0.2.9", NOW);
    signed_in.user_id = Some(user.id.clone());
    let waiting = SingleUseKind::PendingLogin;
    store.put_single_use(waiting, "resume-1", "request 1", NOW + 60).await.unwrap();
    let taking = Some((waiting, "resume-1"));
    let taken = store.start_sso_session(&sso("s1", &user.id, NOW + 100), "a-user", &signed_in, taking).await.unwrap();
    assert_eq!(taken.as_deref(), Some("request 1"), "the request the sign-in continues is taken with it");
    assert_eq!(store.peek_single_use(waiting, "resume-1", NOW).await.unwrap(), None);
    assert_eq!(store.get_sso_session("s1").await.unwrap().user_id, user.id);
    assert_eq!(store.list_audit(10).await.unwrap(), vec![signed_in.clone()]);
    assert_eq!(store.get_user(&user.id).await.unwrap().last_login_at, Some(NOW));

    let taken = store.start_sso_session(&sso("s1", &user.id, NOW + 100), "a-user", &signed_in, None).await;
    assert!(matches!(taken, Err(StoreError::AlreadyExists)), "{taken:?}");
    store.put_single_use(waiting, "resume-2", "request 2", NOW + 60).await.unwrap();
    let orphan = sso("s2", "no-such-user", NOW + 100);
    let refused = store.start_sso_session(&orphan, "a-user", &signed_in, Some((waiting, "resume-2"))).await;
    assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
    assert!(matches!(store.get_sso_session("s2").await, Err(StoreError::NotFound)));
    assert_eq!(store.list_audit(10).await.unwrap().len(), 1, "a refused session records no sign-in");
    assert!(store.peek_single_use(waiting, "resume-2", NOW).await.unwrap().is_some(), "and takes nothing");

    let no_request = store.start_sso_session(&sso("s3", &user.id, NOW + 100), "a-user", &signed_in, None).await.unwrap();
    assert_eq!(no_request, None);
    let (later, used) = (sso("s4", &user.id, NOW + 100), Some((waiting, "resume-1")));
    let taken = store.start_sso_session(&later, "a-user", &signed_in, used).await.unwrap();
    assert_eq!(taken, None, "a request used meanwhile: the session starts, nothing is taken");
    store.put_single_use(waiting, "resume-3", "request 3", NOW).await.unwrap();
    let (latest, expired) = (sso("s5", &user.id, NOW + 100), Some((waiting, "resume-3")));
    let taken = store.start_sso_session(&latest, "a-user", &signed_in, expired).await.unwrap();
    assert_eq!(taken, None, "an expired request is not handed out");
    assert_eq!(store.take_single_use(waiting, "resume-3", NOW - 10).await.unwrap(), None, "but spent");
}

async fn expired_rows_are_deleted(store: &Arc<dyn Store>) {
    let (user, _) = store.get_or_create_linked_user("local", "cleanup", &profile("c"), NOW).await.unwrap();
    store.put_single_use(SingleUseKind::PendingLogin, "gone", "p", NOW + 10).await.unwrap();
    store.put_single_use(SingleUseKind::PendingLogin, "kept", "p", NOW + 1000).await.unwrap();
    store.create_sso_session(&sso("c-gone", &user.id, NOW + 10)).await.unwrap();
    store.create_sso_session(&sso("c-kept", &user.id, NOW + 1000)).await.unwrap();
    store.activate_signing_key(&key("c-old", "ES256", NOW)).await.unwrap();
    store.activate_signing_key(&key("c-new", "ES256", NOW + 50)).await.unwrap();

    let report = store.delete_expired(NOW + 100, NOW + 60).await.unwrap();
    assert_eq!(report.single_use, 1);
    assert_eq!(report.sessions, 1);
    assert!(report.signing_keys >= 1);
    assert!(store.peek_single_use(SingleUseKind::PendingLogin, "kept", NOW + 100).await.unwrap().is_some());
    assert!(matches!(store.get_sso_session("c-gone").await, Err(StoreError::NotFound)));
    assert!(store.get_sso_session("c-kept").await.is_ok());
    let kids: Vec<String> = store.list_signing_keys().await.unwrap().into_iter().map(|k| k.kid).collect();
    assert!(kids.contains(&"c-new".to_owned()), "the active key is never deleted");
    assert!(!kids.contains(&"c-old".to_owned()));
}

fn grant(id: &str, user_id: &str, session_id: &str, client_id: &str) -> GrantRecord {
    GrantRecord {
        id: id.into(),
        client_id: client_id.into(),
        user_id: user_id.into(),
        session_id: Some(session_id.into()),
        code_hash: Some(format!("code-of-{id}")),
        scope: "openid offline_access".into(),
        audience: client_id.into(),
        auth_time: NOW,
        amr: vec!["pwd".into()],
        idp: "local".into(),
        created_at: NOW,
        expires_at: NOW + 1000,
        revoked_at: None,
    }
}

fn refresh(grant_id: &str, issued_at: i64) -> RefreshTokenRecord {
    RefreshTokenRecord { grant_id: grant_id.into(), issued_at, expires_at: issued_at + 100, rotated_at: None }
}

async fn grants_and_refresh_tokens(store: &Arc<dyn Store>) {
    let (user, _) = store.get_or_create_linked_user("local", "alice", &profile("alice"), NOW).await.unwrap();
    store.create_sso_session(&sso("s1", &user.id, NOW + 1000)).await.unwrap();
    let mut with_backchannel = client_record("bcl", true);
    with_backchannel.backchannel_logout_uri = Some("https://bcl.example/logout".into());
    store.upsert_client(&with_backchannel).await.unwrap();
    assert_eq!(store.get_client("bcl").await.unwrap(), with_backchannel, "every client field round-trips");
    store.create_grant(&grant("g1", &user.id, "s1", "bcl")).await.unwrap();
    store.create_grant(&grant("g2", &user.id, "s1", "other")).await.unwrap();
    let state = store.grant_state("g1").await.unwrap().unwrap();
    assert_eq!(state.grant, grant("g1", &user.id, "s1", "bcl"));
    assert!(state.is_live(NOW) && !state.is_live(NOW + 1000));
    assert!(store.grant_state("nope").await.unwrap().is_none());

    store.insert_refresh_token("h1", &refresh("g1", NOW)).await.unwrap();
    assert_eq!(store.rotate_refresh_token("h1", "h2", &refresh("g1", NOW + 1), NOW + 1).await.unwrap(), Rotation::Rotated);
    assert_eq!(store.find_refresh_token("h1").await.unwrap().unwrap().rotated_at, Some(NOW + 1));
    // The joined read answers as its three parts do, and follows the user and the session.
    for hash in ["h1", "h2"] {
        let found = store.refresh_token_state(hash).await.unwrap().unwrap();
        assert_eq!(Some(found.token), store.find_refresh_token(hash).await.unwrap());
        assert_eq!(Some(found.grant), store.grant_state("g1").await.unwrap());
        assert_eq!(found.user, store.get_user(&user.id).await.unwrap());
    }
    assert!(store.refresh_token_state("nope").await.unwrap().is_none());
    let (bob, _) = store.get_or_create_linked_user("local", "bob", &profile("bob"), NOW).await.unwrap();
    store.create_sso_session(&sso("s-bob", &bob.id, NOW + 1000)).await.unwrap();
    // These two outlive the cleanup and the counts below.
    store.create_grant(&GrantRecord { expires_at: NOW + 5000, ..grant("g-bob", &bob.id, "s-bob", "elsewhere") }).await.unwrap();
    store.insert_refresh_token("h-bob", &refresh("g-bob", NOW)).await.unwrap();
    assert_eq!(store.refresh_token_state("h-bob").await.unwrap().unwrap().user, bob);
    store.set_user_disabled(&bob.id, true, NOW + 1).await.unwrap();
    let found = store.refresh_token_state("h-bob").await.unwrap().unwrap();
    assert!(found.user.disabled && found.grant.user_disabled && !found.grant.is_live(NOW + 1));
    store.create_sso_session(&sso("s-gone", &user.id, NOW + 1000)).await.unwrap();
    store
        .create_grant(&GrantRecord { expires_at: NOW + 5000, ..grant("g-gone", &user.id, "s-gone", "elsewhere") })
        .await
        .unwrap();
    store.insert_refresh_token("h-gone", &refresh("g-gone", NOW)).await.unwrap();
    store.revoke_sso_session("s-gone", NOW + 1).await.unwrap();
    let found = store.refresh_token_state("h-gone").await.unwrap().unwrap();
    assert!(found.grant.session_revoked && !found.grant.is_live(NOW + 1));
    assert!(store.refresh_token_state("h2").await.unwrap().unwrap().grant.is_live(NOW + 1));
    assert_eq!(store.rotate_refresh_token("h1", "h3", &refresh("g1", NOW + 2), NOW + 2).await.unwrap(), Rotation::AlreadyRotated);
    assert!(store.find_refresh_token("h3").await.unwrap().is_none(), "a refused rotation stores nothing");
    assert_eq!(
        store.rotate_refresh_token("h2", "h4", &refresh("g1", NOW + 200), NOW + 200).await.unwrap(),
        Rotation::NotFound,
        "expired"
    );
    assert_eq!(
        store.rotate_refresh_token("h2", "h4", &refresh("g2", NOW + 3), NOW + 3).await.unwrap(),
        Rotation::NotFound,
        "other grant"
    );

    // Sixteen concurrent rotations of one token: exactly one succeeds.
    store.insert_refresh_token("race", &refresh("g1", NOW)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.rotate_refresh_token("race", &format!("race-{i}"), &refresh("g1", NOW + 1), NOW + 1).await.unwrap()
        }));
    }
    let mut rotated = 0;
    for task in tasks {
        if task.await.unwrap() == Rotation::Rotated {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1);

    assert_eq!(store.revoke_grant_by_code("code-of-g2", NOW + 5).await.unwrap().as_deref(), Some("g2"));
    assert!(store.revoke_grant_by_code("code-of-nothing", NOW + 5).await.unwrap().is_none());
    assert_eq!(store.grant_state("g2").await.unwrap().unwrap().grant.revoked_at, Some(NOW + 5));

    store.revoke_access_token("jti-1", NOW + 50).await.unwrap();
    store.revoke_access_token("jti-1", NOW + 50).await.unwrap();
    assert!(store.is_access_token_revoked("jti-1").await.unwrap());
    assert!(!store.is_access_token_revoked("jti-2").await.unwrap());
    store.revoke_access_token("jti-3", NOW + 60).await.unwrap();
    let mut listed = store.list_revoked_access_tokens(NOW, 10).await.unwrap();
    listed.sort();
    assert_eq!(listed, ["jti-1", "jti-3"]);
    assert_eq!(store.list_revoked_access_tokens(NOW + 50, 10).await.unwrap(), ["jti-3"], "expired ones are left out");
    assert_eq!(store.list_revoked_access_tokens(NOW, 1).await.unwrap().len(), 1, "at most the limit");

    // Ending the session: its grants are revoked and one notification is queued per client with
    // a back-channel URI, once, and leased to one caller at a time.
    assert_eq!(store.end_sso_session("s1", "public-sid", NOW + 6).await.unwrap(), 1);
    assert_eq!(store.end_sso_session("s1", "public-sid", NOW + 7).await.unwrap(), 0, "only the first end queues");
    let ended = store.grant_state("g1").await.unwrap().unwrap();
    assert!(ended.session_revoked);
    assert_eq!(ended.grant.revoked_at, Some(NOW + 6));
    assert!(!store.revoke_sso_session("s1", NOW + 8).await.unwrap(), "already revoked");
    assert_eq!(store.end_sso_session("missing", "x", NOW).await.unwrap(), 0);
    let leased = store.lease_backchannel_logouts(NOW + 6, NOW + 66, 10).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!((leased[0].client_id.as_str(), leased[0].sid.as_str()), ("bcl", "public-sid"));
    assert!(store.lease_backchannel_logouts(NOW + 7, NOW + 67, 10).await.unwrap().is_empty(), "leased to one caller");
    store.retry_backchannel_logout(&leased[0].id, 1, NOW + 20).await.unwrap();
    assert!(store.lease_backchannel_logouts(NOW + 19, NOW + 79, 10).await.unwrap().is_empty(), "not before it is due");
    let again = store.lease_backchannel_logouts(NOW + 20, NOW + 80, 10).await.unwrap();
    assert_eq!(again[0].attempts, 1);
    store.delete_backchannel_logout(&again[0].id).await.unwrap();
    assert!(store.lease_backchannel_logouts(NOW + 200, NOW + 260, 10).await.unwrap().is_empty());

    // Consent.
    assert!(store.get_consent(&user.id, "bcl").await.unwrap().is_none());
    store.put_consent(&user.id, "bcl", &["openid".into()], NOW).await.unwrap();
    store.put_consent(&user.id, "bcl", &["openid".into(), "email".into()], NOW).await.unwrap();
    assert_eq!(store.get_consent(&user.id, "bcl").await.unwrap().unwrap(), vec!["openid".to_owned(), "email".to_owned()]);
    assert_eq!(store.list_consents(&user.id).await.unwrap().len(), 1);
    let withdrawn = store.withdraw_consent(&user.id, "bcl", NOW + 9).await.unwrap();
    assert!(withdrawn.consent_removed);
    assert_eq!(withdrawn.grants_revoked, 0, "the session's end revoked its grants already");
    assert!(!store.withdraw_consent(&user.id, "bcl", NOW + 9).await.unwrap().consent_removed);
    assert!(store.list_consents(&user.id).await.unwrap().is_empty());

    let report = store.delete_expired(NOW + 1000, 0).await.unwrap();
    assert_eq!(report.grants, 2);
    assert_eq!(report.revoked_access_tokens, 2);
    assert!(store.find_refresh_token("h2").await.unwrap().is_none(), "refresh tokens go with their grant");
}

/// A code is spent by exactly one redemption, which stores the grant, its first refresh token
/// and the audit event together; a replayed, expired or unknown code stores nothing.
async fn code_redemption(store: &Arc<dyn Store>) {
    let (user, _) = store.get_or_create_linked_user("local", "alice", &profile("alice"), NOW).await.unwrap();
    store.create_sso_session(&sso("s1", &user.id, NOW + 1000)).await.unwrap();
    let code = SingleUseKind::AuthorizationCode;
    let granted = |grant_id: &str| AuditEvent {
        time: NOW,
        kind: "token_granted".into(),
        outcome: AuditOutcome::Success,
        actor: Some("alice".into()),
        user_id: Some(user.id.clone()),
        client_id: Some("app".into()),
        connector_id: None,
        ip: None,
        detail: Some(grant_id.into()),
    };
    let granted_events = || async {
        let events = store.list_audit(100).await.unwrap();
        events.into_iter().filter(|e| e.kind == "token_granted").filter_map(|e| e.detail).collect::<Vec<_>>()
    };

    // A code is read with the session and user its payload names, while it is unspent and
    // unexpired; a session or user that is gone reads as none.
    let payload = r#"{"session_id":"s1","user_id":"x"}"#;
    store.put_single_use(code, "code-of-g1", payload, NOW + 60).await.unwrap();
    let peeked = store.peek_code("code-of-g1", NOW).await.unwrap().unwrap();
    assert_eq!(peeked.payload, payload);
    assert_eq!(peeked.signed_in, Some((store.get_sso_session("s1").await.unwrap(), user.clone())));
    assert!(store.peek_code("code-of-g1", NOW + 60).await.unwrap().is_none(), "expired");
    assert!(store.peek_code("code-of-nothing", NOW).await.unwrap().is_none());
    store.put_single_use(code, "code-of-nobody", r#"{"session_id":"no-such-session"}"#, NOW + 60).await.unwrap();
    assert_eq!(store.peek_code("code-of-nobody", NOW).await.unwrap().unwrap().signed_in, None);
    store.put_single_use(SingleUseKind::PendingLogin, "code-of-g1-elsewhere", payload, NOW + 60).await.unwrap();
    assert!(store.peek_code("code-of-g1-elsewhere", NOW).await.unwrap().is_none(), "only authorization codes");
    let g1 = grant("g1", &user.id, "s1", "app");
    assert!(store.redeem_code("code-of-g1", &g1, Some(("r1", &refresh("g1", NOW))), &granted("g1"), NOW).await.unwrap());
    assert_eq!(store.grant_state("g1").await.unwrap().unwrap().grant, g1);
    assert_eq!(store.find_refresh_token("r1").await.unwrap().unwrap(), refresh("g1", NOW));
    assert!(store.peek_single_use(code, "code-of-g1", NOW).await.unwrap().is_none(), "the code is spent");
    assert!(store.peek_code("code-of-g1", NOW).await.unwrap().is_none(), "the code is spent");
    assert_eq!(granted_events().await, ["g1"]);

    let replayed = store.redeem_code("code-of-g1", &g1, Some(("r1b", &refresh("g1", NOW))), &granted("g1"), NOW + 1).await;
    assert!(!replayed.unwrap());
    assert!(store.find_refresh_token("r1b").await.unwrap().is_none(), "a replay stores no refresh token");
    assert_eq!(granted_events().await, ["g1"], "nor an audit event");

    // Expired: refused, and spent all the same.
    store.put_single_use(code, "code-of-g2", "{}", NOW + 60).await.unwrap();
    let g2 = grant("g2", &user.id, "s1", "app");
    assert!(!store.redeem_code("code-of-g2", &g2, Some(("r2", &refresh("g2", NOW))), &granted("g2"), NOW + 60).await.unwrap());
    assert!(store.grant_state("g2").await.unwrap().is_none());
    assert!(store.find_refresh_token("r2").await.unwrap().is_none());
    assert!(store.peek_single_use(code, "code-of-g2", NOW).await.unwrap().is_none(), "an expired code stays spent");
    assert!(!store.redeem_code("never-issued", &g2, None, &granted("g2"), NOW).await.unwrap());

    // Without a refresh token.
    store.put_single_use(code, "code-of-g3", "{}", NOW + 60).await.unwrap();
    let g3 = grant("g3", &user.id, "s1", "app");
    assert!(store.redeem_code("code-of-g3", &g3, None, &granted("g3"), NOW).await.unwrap());
    assert!(store.grant_state("g3").await.unwrap().is_some());
    assert_eq!(granted_events().await.len(), 2);

    // A redemption that fails half-way (its grant id is taken) changes nothing and leaves the
    // database writable.
    store.create_grant(&grant("g5", &user.id, "s1", "app")).await.unwrap();
    store.put_single_use(code, "code-of-g5", "{}", NOW + 60).await.unwrap();
    let clash = grant("g5", &user.id, "s1", "app");
    assert!(store.redeem_code("code-of-g5", &clash, Some(("r5", &refresh("g5", NOW))), &granted("g5"), NOW).await.is_err());
    assert!(store.peek_single_use(code, "code-of-g5", NOW).await.unwrap().is_some(), "the code is left");
    assert!(store.find_refresh_token("r5").await.unwrap().is_none());
    store.put_single_use(code, "after-the-failure", "{}", NOW + 60).await.unwrap();

    // Eight concurrent redemptions of one code: one wins.
    store.put_single_use(code, "code-of-g4", "{}", NOW + 60).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, g4, event) = (store.clone(), grant("g4", &user.id, "s1", "app"), granted("g4"));
            tokio::spawn(async move {
                let hash = format!("r4-{i}");
                store.redeem_code("code-of-g4", &g4, Some((&hash, &refresh("g4", NOW))), &event, NOW).await.unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(granted_events().await.iter().filter(|g| *g == "g4").count(), 1);
}

/// Writes that arrive together may share one transaction (SQLite batches the hottest ones):
/// each still gets its own answer, and one that fails fails alone.
async fn concurrent_writes_answer_alone(store: &Arc<dyn Store>) {
    let (user, _) = store.get_or_create_linked_user("local", "batch", &profile("batch"), NOW).await.unwrap();
    store.create_sso_session(&sso("s1", &user.id, NOW + 1000)).await.unwrap();
    let code = SingleUseKind::AuthorizationCode;
    store.put_single_use(code, "taken", "first", NOW + 60).await.unwrap();
    for i in 0..16 {
        store.put_single_use(code, &format!("code-{i}"), "{}", NOW + 60).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        let key = if i == 7 { String::from("taken") } else { format!("new-{i}") };
        tasks.push(tokio::spawn(async move { (key.clone(), store.put_single_use(code, &key, &key, NOW + 60).await) }));
    }
    let mut redemptions = Vec::new();
    for i in 0..16 {
        let (store, user_id) = (store.clone(), user.id.clone());
        redemptions.push(tokio::spawn(async move {
            let id = format!("g{i}");
            let event = AuditEvent {
                time: NOW,
                kind: "token_granted".into(),
                outcome: AuditOutcome::Success,
                actor: None,
                user_id: Some(user_id.clone()),
                client_id: Some("app".into()),
                connector_id: None,
                ip: None,
                detail: Some(id.clone()),
            };
            let hash = format!("r{i}");
            store
                .redeem_code(
                    &format!("code-{i}"),
                    &grant(&id, &user_id, "s1", "app"),
                    Some((&hash, &refresh(&id, NOW))),
                    &event,
                    NOW,
                )
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        let (key, put) = task.await.unwrap();
        if key == "taken" {
            assert!(matches!(put, Err(StoreError::AlreadyExists)), "the taken key fails: {put:?}");
            assert_eq!(store.peek_single_use(code, "taken", NOW).await.unwrap().as_deref(), Some("first"));
        } else {
            put.unwrap();
            assert_eq!(store.peek_single_use(code, &key, NOW).await.unwrap().as_deref(), Some(key.as_str()));
        }
    }
    for task in redemptions {
        assert!(task.await.unwrap(), "every code of its own is redeemed");
    }
    for i in 0..16 {
        assert_eq!(store.find_refresh_token(&format!("r{i}")).await.unwrap().unwrap().grant_id, format!("g{i}"));
    }
    let granted = store.list_audit(100).await.unwrap().into_iter().filter(|e| e.kind == "token_granted").count();
    assert_eq!(granted, 16);
}

async fn run_suite(db: &TestDb) {
    // Each part gets a fresh schema so parts cannot lean on each other's rows.
    macro_rules! part {
        ($name:ident) => {{
            let fresh = if db.url.starts_with("sqlite:") { TestDb::sqlite() } else { TestDb::postgres().await.unwrap() };
            let store = fresh.open_store().await;
            $name(&store).await;
        }};
    }
    part!(users_and_links);
    part!(concurrent_first_sign_in_creates_one_user);
    part!(clients_and_connectors);
    part!(signing_keys);
    part!(sessions);
    part!(audit_log);
    part!(login_counters);
    part!(single_use_records);
    part!(single_use_is_taken_once_under_concurrency);
    part!(single_use_combined_writes);
    part!(session_with_its_audit_event);
    part!(expired_rows_are_deleted);
    part!(grants_and_refresh_tokens);
    part!(code_redemption);
    part!(concurrent_writes_answer_alone);
    part!(client_compare_and_swap);
    part!(admin_listings);
    part!(links_by_hand_and_by_email);
    assert!(db.open_store().await.ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_sqlite() {
    run_suite(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_postgres() {
    let Some(db) = TestDb::postgres().await else { return };
    run_suite(&db).await;
}

async fn client_compare_and_swap(store: &Arc<dyn Store>) {
    let original = client_record("cas", false);
    store.insert_client(&original).await.unwrap();
    assert!(matches!(store.insert_client(&original).await, Err(StoreError::AlreadyExists)), "insert never overwrites");
    let renamed =
        store.update_client("cas", &|old| Ok(ClientRecord { name: "Renamed".into(), updated_at: NOW + 1, ..old })).await.unwrap();
    assert_eq!((renamed.name.as_str(), renamed.version), ("Renamed", 2));
    assert_eq!(store.get_client("cas").await.unwrap(), renamed);
    // The change function sees the current record and may refuse; nothing is written then.
    let refused = store.update_client("cas", &|old| if old.version == 1 { Ok(old) } else { Err(StoreError::Conflict) }).await;
    assert!(matches!(refused, Err(StoreError::Conflict)));
    assert_eq!(store.get_client("cas").await.unwrap().version, 2);
    assert!(matches!(store.update_client("missing", &|old| Ok(old)).await, Err(StoreError::NotFound)));

    // Concurrent edits: each one lands whole, none is lost, versions count every write.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let result = store
                    .update_client("cas", &move |mut old| {
                        old.redirect_uris.push(format!("https://app.example/{i}"));
                        Ok(old)
                    })
                    .await;
                match result {
                    Ok(_) => break,
                    Err(StoreError::Conflict) => tokio::task::yield_now().await,
                    Err(err) => panic!("{err}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let after = store.get_client("cas").await.unwrap();
    assert_eq!(after.version, 8);
    assert_eq!(after.redirect_uris.len(), original.redirect_uris.len() + 6, "no edit was lost");
}

async fn admin_listings(store: &Arc<dyn Store>) {
    let mut ids = Vec::new();
    for name in ["dave", "erin", "frank", "grace", "heidi"] {
        let (user, _) = store.get_or_create_linked_user("local", name, &profile(name), NOW).await.unwrap();
        ids.push(user.id);
    }
    let (odd, _) = store.get_or_create_linked_user("local", "odd", &profile("100%_x"), NOW).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 6);

    // Keyset paging visits every user once, in username order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.search_users(&UserQuery { text: None, after: after.clone(), limit: 2 }).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|u| (u.username.clone(), u.id.clone()));
        seen.extend(page.into_iter().map(|u| u.username));
    }
    assert_eq!(seen, ["100%_x", "dave", "erin", "frank", "grace", "heidi"]);
    // Case-insensitive, anywhere in username, email or display name; pattern characters are literal.
    let found = |text: &str| {
        let store = store.clone();
        let text = text.to_owned();
        async move {
            let query = UserQuery { text: Some(text), after: None, limit: 50 };
            store.search_users(&query).await.unwrap().into_iter().map(|u| u.username).collect::<Vec<_>>()
        }
    };
    assert_eq!(found("RAC").await, ["grace"]);
    assert_eq!(found("heidi@example").await, ["heidi"]);
    assert_eq!(found("%").await, ["100%_x"]);
    assert_eq!(found("_").await, ["100%_x"]);
    assert!(found("nobody").await.is_empty());
    let links = store.list_user_links(&odd.id).await.unwrap();
    assert_eq!((links[0].connector_id.as_str(), links[0].subject.as_str()), ("local", "odd"));

    // Sessions: active only, newest sign-in first, filtered, paged.
    for (i, user_id) in ids.iter().enumerate() {
        let mut session = sso(&format!("as-{i}"), user_id, NOW + 1000);
        session.auth_time = NOW + i as i64;
        session.last_seen_at = NOW + i as i64;
        store.create_sso_session(&session).await.unwrap();
    }
    store.revoke_sso_session("as-4", NOW + 5).await.unwrap();
    let first = store.search_sso_sessions(&SessionQuery { limit: 2, ..SessionQuery::default() }, NOW + 10, 600).await.unwrap();
    assert_eq!(first.iter().map(|s| s.session.id.as_str()).collect::<Vec<_>>(), ["as-3", "as-2"]);
    assert_eq!(first[0].username, "grace");
    let before = first.last().map(|s| (s.session.auth_time, s.session.id.clone()));
    let rest =
        store.search_sso_sessions(&SessionQuery { before, limit: 10, ..SessionQuery::default() }, NOW + 10, 600).await.unwrap();
    assert_eq!(rest.iter().map(|s| s.session.id.as_str()).collect::<Vec<_>>(), ["as-1", "as-0"]);
    let of_one = SessionQuery { user_id: Some(ids[1].clone()), limit: 10, ..SessionQuery::default() };
    assert_eq!(store.search_sso_sessions(&of_one, NOW + 10, 600).await.unwrap().len(), 1);
    let elsewhere = SessionQuery { connector_id: Some("corp".into()), limit: 10, ..SessionQuery::default() };
    assert!(store.search_sso_sessions(&elsewhere, NOW + 10, 600).await.unwrap().is_empty());
    assert_eq!(store.count_active_sso_sessions(NOW + 10, 600).await.unwrap(), 4);
    assert_eq!(store.count_active_sso_sessions(NOW + 10, 8).await.unwrap(), 1, "idle sessions are not active");

    // Grants: live only, with the newest refresh token's time.
    store.upsert_client(&client_record("g-app", true)).await.unwrap();
    store.create_grant(&grant("ga", &ids[0], "as-0", "g-app")).await.unwrap();
    store.create_grant(&GrantRecord { created_at: NOW + 1, ..grant("gb", &ids[1], "as-1", "g-app") }).await.unwrap();
    store.create_grant(&GrantRecord { created_at: NOW + 2, ..grant("gc", &ids[1], "as-1", "other") }).await.unwrap();
    store.insert_refresh_token("rt-1", &refresh("gb", NOW + 3)).await.unwrap();
    store.insert_refresh_token("rt-2", &refresh("gb", NOW + 7)).await.unwrap();
    store.revoke_grant("gc", NOW + 4).await.unwrap();
    let all = store.search_grants(&GrantQuery { limit: 10, ..GrantQuery::default() }, NOW + 10).await.unwrap();
    assert_eq!(all.iter().map(|g| g.grant.id.as_str()).collect::<Vec<_>>(), ["gb", "ga"]);
    assert_eq!(all[0].last_refreshed_at, Some(NOW + 7));
    assert_eq!(all[0].username, "erin");
    assert_eq!(all[1].last_refreshed_at, None);
    assert_eq!(store.count_client_grants("g-app", NOW + 10).await.unwrap(), 2);
    assert_eq!(store.count_client_grants("other", NOW + 10).await.unwrap(), 0, "revoked grants do not count");
    // The portal's summary: each app's newest live grant, with its newest refresh.
    let latest = store.latest_user_grants(&ids[1], NOW + 10).await.unwrap();
    assert_eq!(latest.len(), 1, "one live grant of g-app; the other app's grant is revoked: {latest:?}");
    assert_eq!((latest[0].client_id.as_str(), latest[0].last_used_at), ("g-app", NOW + 7), "its refresh is its last use");
    assert_eq!(latest[0].scope, "openid offline_access");
    store
        .create_grant(&GrantRecord { created_at: NOW + 5, scope: "openid".into(), ..grant("ge", &ids[1], "as-1", "g-app") })
        .await
        .unwrap();
    let latest = store.latest_user_grants(&ids[1], NOW + 10).await.unwrap();
    assert_eq!((latest.len(), latest[0].scope.as_str(), latest[0].last_used_at), (1, "openid", NOW + 5), "the newest grant");
    assert!(store.latest_user_grants(&ids[1], NOW + 5000).await.unwrap().is_empty(), "expired grants are not listed");
    store.revoke_grant("ge", NOW + 6).await.unwrap();
    assert_eq!(
        store.latest_user_grants(&ids[1], NOW + 10).await.unwrap()[0].scope,
        "openid offline_access",
        "revoked: the one before"
    );
    let of_user = GrantQuery { user_id: Some(ids[0].clone()), limit: 10, ..GrantQuery::default() };
    assert_eq!(store.search_grants(&of_user, NOW + 10).await.unwrap().len(), 1);
    // Disabling a user revokes their grants for good: enabling them again revives none.
    store.create_grant(&GrantRecord { created_at: NOW + 3, ..grant("gd", &ids[2], "as-2", "g-app") }).await.unwrap();
    store.set_user_disabled(&ids[2], true, NOW + 4).await.unwrap();
    store.set_user_disabled(&ids[2], false, NOW + 5).await.unwrap();
    let revived = store.grant_state("gd").await.unwrap().unwrap();
    assert_eq!(revived.grant.revoked_at, Some(NOW + 4));
    assert!(!revived.is_live(NOW + 10));
    let before = Some((all[0].grant.created_at, all[0].grant.id.clone()));
    let paged = store.search_grants(&GrantQuery { before, limit: 10, ..GrantQuery::default() }, NOW + 10).await.unwrap();
    assert_eq!(paged.iter().map(|g| g.grant.id.as_str()).collect::<Vec<_>>(), ["ga"]);

    // Audit: filters combine; paging goes below the last id seen.
    for (i, (kind, outcome, connector)) in [
        ("login", AuditOutcome::Success, "local"),
        ("login", AuditOutcome::Failure, "local"),
        ("login", AuditOutcome::Failure, "corp"),
        ("logout", AuditOutcome::Success, "local"),
    ]
    .into_iter()
    .enumerate()
    {
        let event = AuditEvent {
            time: NOW + i as i64,
            kind: kind.into(),
            outcome,
            actor: Some("dave".into()),
            user_id: Some(ids[0].clone()),
            client_id: None,
            connector_id: Some(connector.into()),
            ip: None,
            detail: None,
        };
        store.record_audit(&event).await.unwrap();
    }
    let logins = AuditQuery { kind: Some("login".into()), limit: 10, ..AuditQuery::default() };
    let found = store.search_audit(&logins).await.unwrap();
    assert_eq!(found.len(), 3);
    assert!(found.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(found[0].username.as_deref(), Some("dave"), "with the name of the user concerned");
    let page = AuditQuery { before_id: Some(found[0].id), limit: 10, ..logins.clone() };
    assert_eq!(store.search_audit(&page).await.unwrap().len(), 2);
    let window = AuditQuery { since: Some(NOW + 1), until: Some(NOW + 3), limit: 10, ..AuditQuery::default() };
    assert_eq!(store.search_audit(&window).await.unwrap().len(), 2);
    let corp = AuditQuery { connector_id: Some("corp".into()), limit: 10, ..AuditQuery::default() };
    assert_eq!(store.search_audit(&corp).await.unwrap().len(), 1);
    let counts = store.count_sign_ins(NOW).await.unwrap();
    let local = counts.iter().find(|c| c.connector_id == "local").unwrap();
    assert_eq!((local.successes, local.failures), (1, 1));
    let corp = counts.iter().find(|c| c.connector_id == "corp").unwrap();
    assert_eq!((corp.successes, corp.failures), (0, 1));
}

/// The two migration folders hold the same migrations, differing only in the column types each
/// database spells its own way; a migration added to one folder alone fails here.
#[test]
fn migration_folders_differ_only_in_column_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let names = |db: &str| -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(root.join(db)).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    };
    let sqlite = names("sqlite");
    assert_eq!(sqlite, names("postgres"), "both folders hold the same migrations");
    assert!(sqlite.len() >= 4);
    let integer = regex_lite_word("INTEGER");
    for name in &sqlite {
        let lite = std::fs::read_to_string(root.join("sqlite").join(name)).unwrap();
        let postgres = std::fs::read_to_string(root.join("postgres").join(name)).unwrap();
        let translated =
            integer(&lite).replace("BLOB", "BYTEA").replace("BIGINT PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY");
        assert_eq!(translated, postgres, "{name}: the folders differ in more than column types");
    }
}

/// Replaces the whole word `word` by `BIGINT`.
fn regex_lite_word(word: &'static str) -> impl Fn(&str) -> String {
    move |text| {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(word) {
            let before = rest[..at].chars().last();
            let after = rest[at + word.len()..].chars().next();
            let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
            out.push_str(&rest[..at]);
            out.push_str(if boundary(before) && boundary(after) { "BIGINT" } else { word });
            rest = &rest[at + word.len()..];
        }
        out.push_str(rest);
        out
    }
}

async fn links_by_hand_and_by_email(store: &Arc<dyn Store>) {
    let (alice, _) = store.get_or_create_linked_user("local", "alice", &profile("alice"), NOW).await.unwrap();
    let (other, _) = store.get_or_create_linked_user("local", "other", &profile("other"), NOW).await.unwrap();
    // By email, without regard to ASCII case; nobody for an address no one has.
    let found = store.find_users_by_email("ALICE@Example.com").await.unwrap();
    assert_eq!(found.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), [alice.id.as_str()]);
    assert!(store.find_users_by_email("nobody@example.com").await.unwrap().is_empty());
    // Linked once; a second link of the same identity is refused, whoever it names.
    store.link_identity("corp", "s-1", &alice.id, NOW).await.unwrap();
    assert!(matches!(store.link_identity("corp", "s-1", &other.id, NOW).await, Err(StoreError::AlreadyExists)));
    assert_eq!(store.find_linked_user_id("corp", "s-1").await.unwrap(), Some(alice.id.clone()));
    // Unlinked only from the user it is linked to.
    assert!(matches!(store.unlink_identity("corp", "s-1", &other.id).await, Err(StoreError::NotFound)));
    store.unlink_identity("corp", "s-1", &alice.id).await.unwrap();
    assert_eq!(store.find_linked_user_id("corp", "s-1").await.unwrap(), None);
    // Merging moves every link of one user onto another.
    store.link_identity("corp", "s-2", &other.id, NOW).await.unwrap();
    assert_eq!(store.move_identity_links(&other.id, &alice.id).await.unwrap(), 2);
    assert_eq!(store.find_linked_user_id("local", "other").await.unwrap(), Some(alice.id.clone()));
    assert_eq!(store.find_linked_user_id("corp", "s-2").await.unwrap(), Some(alice.id.clone()));
    assert!(store.list_user_links(&other.id).await.unwrap().is_empty());
}
