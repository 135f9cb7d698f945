//! Micro-benchmarks of the hot paths (divan): token parse, agent verify with a verdict-cache
//! hit, revocation lookup, event encode and decode.
//! `cargo bench -p revocast-tests --bench hot_paths`; `cargo test --benches` runs each once.

use std::sync::LazyLock;
use std::time::Duration;

use revocast_agent::{Agent, AgentConfig};
use revocast_shared::event::{Message, Revocation, RevocationEvent};
use revocast_shared::revset::RevocationSet;
use revocast_shared::token::issue;
use revocast_shared::{
    Claims, RevocationId, Seq, SigningKey, UnixMillis, UnverifiedToken, Validation, VerifiedToken,
};
use revocast_tests::TestAuthority;

fn main() {
    divan::main();
}

struct Fixture {
    token: String,
    verified: VerifiedToken,
    set: RevocationSet,
    event_json: String,
    event: RevocationEvent,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = SigningKey::generate().unwrap();
    let claims = Claims {
        iss: "http://bench".into(),
        sub: "user_123".into(),
        iat: 0,
        exp: i64::MAX / 2,
        nbf: None,
        aud: None,
        jti: "jti".into(),
        sid: Some("session".into()),
        r#gen: 3,
        custom: Default::default(),
    };
    let token = issue(&claims, &key).unwrap().token;
    let verified = UnverifiedToken::parse(&token)
        .unwrap()
        .verify(key.verifying_key(), &Validation::new(0), 0)
        .unwrap();
    // A set with 100,000 revoked tokens, none of them this one.
    let mut set = RevocationSet::new();
    for i in 0u64..100_000 {
        set.apply(&Revocation::Token {
            rid: RevocationId::of_signature(&i.to_le_bytes()),
            exp: i64::MAX / 2,
        });
    }
    let event = RevocationEvent {
        seq: Seq::new(41),
        revocation: Revocation::Token {
            rid: RevocationId::of_signature(b"x"),
            exp: 1_767_225_600,
        },
        at: UnixMillis::new(1_767_222_000_123),
    };
    Fixture {
        token,
        verified,
        set,
        event_json: serde_json::to_string(&event).unwrap(),
        event,
    }
});

#[divan::bench]
fn token_parse() -> UnverifiedToken<'static> {
    UnverifiedToken::parse(divan::black_box(&FIXTURE.token)).unwrap()
}

#[divan::bench]
fn revocation_lookup() -> bool {
    divan::black_box(&FIXTURE.set)
        .check(divan::black_box(&FIXTURE.verified))
        .is_ok()
}

#[divan::bench]
fn event_encode() -> String {
    serde_json::to_string(divan::black_box(&FIXTURE.event)).unwrap()
}

#[divan::bench]
fn event_decode() -> Message {
    serde_json::from_str(divan::black_box(&FIXTURE.event_json)).unwrap()
}

/// `Agent::verify` of a token it has verified before: cache hit + revocation check.
#[divan::bench(sample_count = 200)]
fn agent_verify_cached(bencher: divan::Bencher) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_authority, agent, token) = runtime.block_on(async {
        let a = TestAuthority::start().await;
        let agent = Agent::start(AgentConfig::new(&a.base, a.subscriber_key.clone())).unwrap();
        assert!(agent.wait_until_synced(Duration::from_secs(30)).await);
        let token = a.issue("bench", 3600).await["token"]
            .as_str()
            .unwrap()
            .to_string();
        agent.verify(&token).unwrap();
        (a, agent, token)
    });
    bencher.bench_local(|| agent.verify(divan::black_box(&token)).is_ok());
    drop(runtime);
}
