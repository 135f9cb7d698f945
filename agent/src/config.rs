//! The agent's configuration, for the library ([`AgentConfig`]) and the sidecar binary
//! ([`SidecarArgs`], flags with `REVOCAST_*` environment variables).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use revocast_shared::crypto::{MlDsa65Backend, default_backend};
pub use revocast_shared::duration::parse_duration;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::tls::TlsOptions;

/// Most clock leeway plus clock skew allowed: the authority keeps revocation entries in
/// snapshots for [`EXPIRY_GRACE_SECS`](revocast_shared::event::EXPIRY_GRACE_SECS) past their
/// expiry, so a token accepted within the leeway after its `exp`, by a clock up to the skew
/// behind the authority's, is still matched by its revocation.
pub const MAX_LEEWAY_SECS: u32 = revocast_shared::event::EXPIRY_GRACE_SECS as u32;

/// Most clock skew allowed between agent and authority (see `AgentConfig::max_clock_skew`).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What verify answers while the agent is stale (has not heard from the authority within
/// `max_staleness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnStale {
    /// `unavailable`: fail closed (the default).
    Reject,
    /// Verify against the last known set anyway: fail open, logged and counted. Opt-in.
    Allow,
}

/// Which stream transport the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// WebSocket, falling back to SSE where the WebSocket upgrade is refused (e.g. by a proxy).
    Auto,
    Websocket,
    Sse,
}

/// How an [`Agent`](crate::Agent) syncs and verifies. Build with [`AgentConfig::new`], then
/// adjust the public fields.
#[derive(Clone)]
pub struct AgentConfig {
    /// Base URLs of the authority (or of its replicas), tried in order and rotated on failure.
    pub authorities: Vec<String>,
    /// An API key of scope `subscribe`.
    pub subscriber_key: Zeroizing<String>,
    /// Fresh while the authority was heard from within this — by arrival, and by the
    /// authority's own time stamped on what the copy holds (see `max_clock_skew`).
    pub max_staleness: Duration,
    /// How far the authority's clock and ours may disagree. Freshness allows the authority's
    /// newest stamp to be up to `max_staleness + max_clock_skew` old on our clock; a stamp
    /// more than this *ahead* of our clock means a clock is off: the agent reports it and is
    /// not fresh while it lasts.
    pub max_clock_skew: Duration,
    pub on_stale: OnStale,
    pub transport: Transport,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required member of `aud`, if any.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u32,
    /// Most tokens whose signature verdict is remembered (0 disables the cache).
    pub verdict_cache_capacity: usize,
    /// Least time between two JWKS fetches triggered by unknown `kid`s.
    pub jwks_min_interval: Duration,
    /// How often expired entries are dropped.
    pub purge_interval: Duration,
    /// Reconnect backoff: first delay and cap (each with full jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A stream silent for this long is considered dead and reconnected (default: a third of
    /// `max_staleness`, at least one second — heartbeats come every second by default). After
    /// each silent session it doubles, up to 8×, until a session stays healthy for 30 s, so
    /// an overloaded authority is not also stormed with reconnects.
    pub idle_timeout: Option<Duration>,
    /// Timeout for snapshot and JWKS requests and for connecting.
    pub request_timeout: Duration,
    /// Trust and client certificate for `https` authorities.
    pub tls: TlsOptions,
    /// What this agent calls itself to the authority (listed in its `GET /v1/fleet`): 1 to
    /// 128 bytes, no control characters. Default: the host name and process id.
    pub name: String,
    /// The ML-DSA-65 implementation that verifies signatures. Default:
    /// [`default_backend`] (AWS-LC when the `aws-lc` feature is on, RustCrypto's otherwise);
    /// `revocast_shared::crypto::backend_named` picks another compiled-in one.
    pub crypto_backend: &'static dyn MlDsa65Backend,
    /// Check the authority's transparency log (PROTOCOL.md, "Transparency log"): the
    /// snapshot's checkpoint and seal, every event against the signed checkpoints, and
    /// freshness from their signed times only. On by default; off, the agent trusts the path
    /// to the authority as before (and an authority that does not sign its log keeps a
    /// verifying agent stale).
    pub verify_log: bool,
}

/// Longest agent name the authority accepts, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The default agent name: `HOST-PID`.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.chars().any(char::is_control))
        .unwrap_or_else(|| "agent".to_string());
    let pid = std::process::id();
    // Keep within the limit on a character boundary, the pid intact.
    let room = MAX_NAME_LEN - 11;
    let mut end = host.len().min(room);
    while !host.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{pid}", &host[..end])
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("authorities", &self.authorities)
            .field("subscriber_key", &"<redacted>")
            .field("max_staleness", &self.max_staleness)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("on_stale", &self.on_stale)
            .field("transport", &self.transport)
            .field("name", &self.name)
            .field("tls", &self.tls)
            .field("crypto_backend", &self.crypto_backend.name())
            .field("verify_log", &self.verify_log)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    pub fn new(authority: impl Into<String>, subscriber_key: impl Into<String>) -> Self {
        Self {
            authorities: vec![authority.into()],
            subscriber_key: Zeroizing::new(subscriber_key.into()),
            max_staleness: Duration::from_secs(5),
            max_clock_skew: Duration::from_secs(2),
            on_stale: OnStale::Reject,
            transport: Transport::Auto,
            issuer: None,
            audience: None,
            leeway_secs: 5,
            verdict_cache_capacity: 4096,
            jwks_min_interval: Duration::from_secs(1),
            purge_interval: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            idle_timeout: None,
            request_timeout: Duration::from_secs(30),
            tls: TlsOptions::default(),
            name: default_name(),
            crypto_backend: default_backend(),
            verify_log: true,
        }
    }

    /// Add another authority URL to fail over to.
    pub fn with_authority(mut self, authority: impl Into<String>) -> Self {
        self.authorities.push(authority.into());
        self
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
            .unwrap_or_else(|| (self.max_staleness / 3).max(Duration::from_secs(1)))
    }

    /// Check everything that can be checked without side effects; normalise the URLs.
    pub(crate) fn validate(mut self) -> Result<Self, Error> {
        if self.authorities.is_empty() {
            return Err(Error::Config("at least one authority URL is needed".into()));
        }
        for url in &mut self.authorities {
            let trimmed = url.trim().trim_end_matches('/').to_string();
            let parsed = reqwest::Url::parse(&trimmed)
                .map_err(|e| Error::Config(format!("authority URL {trimmed:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(Error::Config(format!(
                    "authority URL {trimmed:?} must be http(s)://HOST[:PORT]"
                )));
            }
            *url = trimmed;
        }
        if self.subscriber_key.trim().is_empty() {
            return Err(Error::Config("the subscriber key is empty".into()));
        }
        let trimmed = Zeroizing::new(self.subscriber_key.trim().to_string());
        self.subscriber_key = trimmed;
        if self.max_staleness < Duration::from_millis(100) {
            return Err(Error::Config("max staleness must be at least 100ms".into()));
        }
        // Each second of allowed skew is a second more a held-back stream still counts as
        // fresh: a larger disagreement is a clock to fix, not to tolerate.
        if self.max_clock_skew > MAX_CLOCK_SKEW {
            return Err(Error::Config(format!(
                "max clock skew must be at most {}s",
                MAX_CLOCK_SKEW.as_secs()
            )));
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return Err(Error::Config(
                "backoff must be positive with max >= min".into(),
            ));
        }
        // An agent whose clock runs behind the authority's by up to the skew accepts a token
        // until `exp + leeway + skew` on the authority's clock (beyond the skew it fails
        // closed); the authority keeps the token's revocation that long only if both fit in
        // its grace.
        let skew_secs = self
            .max_clock_skew
            .as_secs()
            .saturating_add(u64::from(self.max_clock_skew.subsec_nanos() > 0));
        if u64::from(self.leeway_secs) + skew_secs > u64::from(MAX_LEEWAY_SECS) {
            return Err(Error::Config(format!(
                "leeway ({}s) plus max clock skew ({}s) must be at most {MAX_LEEWAY_SECS}s \
                 (the authority keeps expired entries that long)",
                self.leeway_secs, skew_secs
            )));
        }
        if self.purge_interval.is_zero() {
            return Err(Error::Config("purge interval must be positive".into()));
        }
        if self.name.is_empty()
            || self.name.len() > MAX_NAME_LEN
            || self.name.chars().any(char::is_control)
        {
            return Err(Error::Config(format!(
                "the agent name must be 1 to {MAX_NAME_LEN} bytes without control characters"
            )));
        }
        Ok(self)
    }
}

/// The sidecar: `revocast-agent --authority URL --subscriber-key-file PATH --listen ADDR`.
#[derive(Debug, Parser)]
#[command(
    name = "revocast-agent",
    version,
    about = "Verifies revocast tokens locally for nginx auth_request, Envoy ext_authz and Traefik ForwardAuth."
)]
pub struct SidecarArgs {
    /// Authority base URL; repeat for replicas to fail over between.
    #[arg(
        long = "authority",
        env = "REVOCAST_AUTHORITY",
        value_delimiter = ',',
        required = true
    )]
    pub authorities: Vec<String>,
    /// File holding an API key of scope `subscribe`.
    #[arg(long, env = "REVOCAST_SUBSCRIBER_KEY_FILE")]
    pub subscriber_key_file: PathBuf,
    /// Address to serve /verify, /healthz and /metrics on.
    #[arg(long, env = "REVOCAST_AGENT_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Fresh while the authority was heard from within this.
    #[arg(long, env = "REVOCAST_MAX_STALENESS", default_value = "5s", value_parser = parse_duration)]
    pub max_staleness: Duration,
    /// How far the authority's clock may be from ours: its newest time stamp may be up to
    /// max-staleness + this old; one ahead by more makes the agent not fresh (and reported).
    #[arg(long, env = "REVOCAST_MAX_CLOCK_SKEW", default_value = "2s", value_parser = parse_duration)]
    pub max_clock_skew: Duration,
    /// What to answer when stale: reject (503, fail closed) or allow (fail open, counted).
    #[arg(long, env = "REVOCAST_ON_STALE", value_enum, default_value = "reject")]
    pub on_stale: OnStale,
    /// Stream transport.
    #[arg(long, env = "REVOCAST_TRANSPORT", value_enum, default_value = "auto")]
    pub transport: Transport,
    /// Required `iss` of tokens.
    #[arg(long, env = "REVOCAST_ISSUER")]
    pub issuer: Option<String>,
    /// Required member of `aud`.
    #[arg(long, env = "REVOCAST_AUDIENCE")]
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    #[arg(long, env = "REVOCAST_LEEWAY", default_value_t = 5)]
    pub leeway: u32,
    /// Tokens whose signature verdict is cached.
    #[arg(long, env = "REVOCAST_VERDICT_CACHE", default_value_t = 4096)]
    pub verdict_cache: usize,
    /// PEM CA certificate(s) to trust for `https` authorities instead of the system's roots.
    #[arg(long, env = "REVOCAST_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for an authority that requires mutual TLS (`--client-ca`).
    #[arg(long, env = "REVOCAST_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `--client-cert`.
    #[arg(long, env = "REVOCAST_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// What this agent calls itself in the authority's fleet (`GET /v1/fleet`); default: the
    /// host name and process id.
    #[arg(long, env = "REVOCAST_AGENT_NAME")]
    pub name: Option<String>,
    /// Verify the authority's signed transparency log (checkpoints, snapshot seal): a path
    /// that drops, reorders, changes or invents events makes the agent resync, a path that
    /// holds them back makes it stale. `--verify-log false` trusts the path instead.
    #[arg(long, env = "REVOCAST_VERIFY_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub verify_log: bool,
}

impl SidecarArgs {
    /// Read the key file and build the library configuration.
    pub fn into_config(self) -> Result<(AgentConfig, SocketAddr), Error> {
        let key =
            std::fs::read_to_string(&self.subscriber_key_file).map_err(|source| Error::Io {
                what: format!(
                    "cannot read the subscriber key file {}",
                    self.subscriber_key_file.display()
                ),
                source,
            })?;
        let mut authorities = self.authorities.into_iter();
        let first = authorities.next().unwrap_or_default();
        let mut config = AgentConfig::new(first, key);
        config.authorities.extend(authorities);
        config.max_staleness = self.max_staleness;
        config.max_clock_skew = self.max_clock_skew;
        config.on_stale = self.on_stale;
        config.transport = self.transport;
        config.issuer = self.issuer;
        config.audience = self.audience;
        config.leeway_secs = self.leeway;
        config.verdict_cache_capacity = self.verdict_cache;
        config.verify_log = self.verify_log;
        if let Some(name) = self.name {
            config.name = name;
        }
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|source| Error::Io {
                what: format!("cannot read the {what} {}", path.display()),
                source,
            })
        };
        config.tls = TlsOptions {
            ca_pem: self
                .ca_cert
                .as_ref()
                .map(|p| read(p, "CA certificate"))
                .transpose()?,
            client_cert_pem: self
                .client_cert
                .as_ref()
                .map(|p| read(p, "client certificate"))
                .transpose()?,
            client_key_pem: self
                .client_key
                .as_ref()
                .map(|p| read(p, "client key").map(Zeroizing::new))
                .transpose()?,
        };
        Ok((config.validate()?, self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_normalised() {
        let c = AgentConfig::new("http://127.0.0.1:8080/", "rvc_x")
            .with_authority(" http://auth.example ")
            .validate()
            .unwrap();
        assert_eq!(
            c.authorities,
            vec!["http://127.0.0.1:8080", "http://auth.example"]
        );
        let https = AgentConfig::new("https://auth.example/", "k")
            .validate()
            .unwrap();
        assert_eq!(https.authorities, vec!["https://auth.example"]);
        assert!(AgentConfig::new("ftp://x", "k").validate().is_err());
        assert!(AgentConfig::new("not a url", "k").validate().is_err());
        assert!(AgentConfig::new("http://x", " ").validate().is_err());
        assert!(!format!("{c:?}").contains("rvc_x"), "the key is redacted");
    }

    #[test]
    fn sidecar_flags_parse() {
        let args = SidecarArgs::try_parse_from([
            "revocast-agent",
            "--authority",
            "http://a:1",
            "--authority",
            "http://b:2",
            "--subscriber-key-file",
            "/k",
            "--max-staleness",
            "2s",
            "--on-stale",
            "allow",
            "--max-clock-skew",
            "500ms",
        ])
        .unwrap();
        assert_eq!(args.authorities.len(), 2);
        assert_eq!(args.max_staleness, Duration::from_secs(2));
        assert_eq!(args.max_clock_skew, Duration::from_millis(500));
        assert_eq!(args.on_stale, OnStale::Allow);
        assert!(args.verify_log, "log verification is on by default");
        let off = SidecarArgs::try_parse_from([
            "revocast-agent",
            "--authority",
            "http://a:1",
            "--subscriber-key-file",
            "/k",
            "--verify-log",
            "false",
        ])
        .unwrap();
        assert!(!off.verify_log);
        assert!(
            SidecarArgs::try_parse_from(["revocast-agent", "--subscriber-key-file", "/k"]).is_err()
        );
    }
}
