//! Command line and environment (`REVOCAST_*`) configuration, validated into a [`Config`]
//! before anything writes to the disk or binds a port (TLS files are read and checked here).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use revocast_shared::duration::parse_duration;

use crate::Error;
use crate::stream::MAX_LINGER;
pub use crate::stream::{Pacing, WRITE_BURST};
use crate::tls::{self, TlsFiles};

/// Tokens may live at most this long whatever `--max-ttl` says: revocation entries are kept
/// for `max_ttl`, so an unbounded value would make the revocation set unbounded too.
const MAX_TTL_CEILING: Duration = Duration::from_secs(366 * 24 * 3600);

#[derive(Debug, Parser)]
#[command(
    name = "revocast-authority",
    version,
    about = "Signs ML-DSA-65 access tokens, records revocations durably and streams them to agents."
)]
pub struct Cli {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an API key of the given scope and print it on stdout (the only time it is shown).
    /// The same as `keys create`.
    CreateKey {
        #[arg(long, value_enum)]
        scope: Scope,
        /// A note stored beside the key's hash, e.g. who it is for.
        #[arg(long)]
        label: Option<String>,
    },
    /// Manage API keys in the store `--data-dir` / `--database-url` name (works while the
    /// authority runs).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key of the given scope and print it on stdout (the only time it is shown).
    Create {
        #[arg(long, value_enum)]
        scope: Scope,
        /// A note stored beside the key's hash, e.g. who it is for.
        #[arg(long)]
        label: Option<String>,
    },
    /// List every API key — id (the hash of the key), scope, times, label — revoked ones
    /// included. Secrets are not stored, so never shown.
    List {
        /// One JSON object per line, as `GET /v1/api-keys` lists them.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key: it stops working within one second on every replica.
    Revoke {
        /// The key's id as `keys list` shows it, or a prefix of it naming one key (at least 6
        /// characters). Ids are base64url, so one may begin with `-`: taken as the id, not as
        /// a flag.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

/// What an API key may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything.
    Admin,
    /// `/v1/verify` and `/oauth2/introspect` only.
    Introspect,
    /// The revocation stream and snapshot only.
    Subscribe,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Introspect => "introspect",
            Self::Subscribe => "subscribe",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "introspect" => Some(Self::Introspect),
            "subscribe" => Some(Self::Subscribe),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve HTTP on.
    #[arg(long, env = "REVOCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the embedded database and the generated API key files.
    #[arg(
        long,
        env = "REVOCAST_DATA_DIR",
        default_value = "./revocast-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// `iss` of issued tokens and base of the metadata URLs [default: http://LISTEN].
    #[arg(long, env = "REVOCAST_ISSUER")]
    pub issuer: Option<String>,
    /// Lifetime of a token when the request names none (seconds, or e.g. `15m`, `1h`).
    #[arg(long, env = "REVOCAST_DEFAULT_TTL", default_value = "1h", value_parser = parse_duration)]
    pub default_ttl: Duration,
    /// Longest lifetime a token may have; also how long subject and session revocations last.
    #[arg(long, env = "REVOCAST_MAX_TTL", default_value = "24h", value_parser = parse_duration)]
    pub max_ttl: Duration,
    /// Lifetime of a refresh token: each rotation issues a new one with this lifetime (within
    /// the session's).
    #[arg(long, env = "REVOCAST_REFRESH_TTL", default_value = "14d", value_parser = parse_duration)]
    pub refresh_ttl: Duration,
    /// Absolute lifetime of a session with refresh tokens, from its start: no rotation goes
    /// past it.
    #[arg(long, env = "REVOCAST_SESSION_MAX_LIFETIME", default_value = "30d", value_parser = parse_duration)]
    pub session_max_lifetime: Duration,
    /// A used refresh token presented again within this long after its rotation, while its
    /// successor is unused, gets that rotation's answer again instead of ending the session
    /// as reuse (for clients that lost an answer). 0 (the default): every reuse ends the
    /// session. At most 60s.
    #[arg(long, env = "REVOCAST_REFRESH_REUSE_INTERVAL", default_value = "0", value_parser = parse_duration)]
    pub refresh_reuse_interval: Duration,
    /// Largest request body accepted, in bytes (larger → 413).
    #[arg(long, env = "REVOCAST_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Longest time between two messages on a stream: a heartbeat carrying the head `seq` is
    /// sent at least this often.
    #[arg(long, env = "REVOCAST_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// How long the revocation log keeps history for exact resumes. A subscriber that
    /// reconnects with an older `since` is told to `reset` from the snapshot.
    #[arg(long, env = "REVOCAST_LOG_RETENTION", default_value = "1h", value_parser = parse_duration)]
    pub log_retention: Duration,
    /// How far a subscriber may fall behind, in commit groups and heartbeats, before it is
    /// disconnected (it then resumes by `seq`).
    #[arg(long, env = "REVOCAST_SUBSCRIBER_QUEUE", default_value_t = 1024)]
    pub subscriber_queue: usize,
    /// Recent events kept encoded in memory, so resuming subscribers are served without reading
    /// the store.
    #[arg(long, env = "REVOCAST_STREAM_RECENT_EVENTS", default_value_t = crate::stream::RECENT_EVENTS)]
    pub stream_recent_events: usize,
    /// The least average interval between a stream connection's writes of events, so that
    /// under sustained load one write carries every commit of the interval. A burst of a few
    /// writes is allowed, so isolated revocations are sent at once; 0 writes every commit as
    /// it comes.
    #[arg(long, env = "REVOCAST_STREAM_LINGER", default_value = "5ms", value_parser = parse_duration)]
    pub stream_linger: Duration,
    /// Stream writes per second the authority aims to stay under across all its subscribers.
    /// Under sustained load each connection then writes about once per
    /// max(--stream-linger, subscribers ÷ this), at most 250ms: at 10,000 subscribers and the
    /// default, four times a second, each write carrying every commit since the last.
    #[arg(
        long,
        env = "REVOCAST_STREAM_WRITES_PER_SECOND",
        default_value_t = 40_000
    )]
    pub stream_writes_per_second: u32,
    /// Writes of events a stream connection may make back to back before the linger paces it,
    /// so that isolated revocations, even a moment apart, are never held back. 1 makes the
    /// linger a fixed quiet time after every write.
    #[arg(long, env = "REVOCAST_STREAM_WRITE_BURST", default_value_t = crate::stream::WRITE_BURST)]
    pub stream_write_burst: u32,
    /// Acknowledgments per second the authority aims to stay under across all its
    /// subscribers: `hello` asks each to acknowledge at most once per max(50ms, subscribers ÷
    /// this), at most 2s, on average. A quiet subscriber still acknowledges at once.
    #[arg(long, env = "REVOCAST_FLEET_ACKS_PER_SECOND", default_value_t = 5_000)]
    pub fleet_acks_per_second: u32,
    /// A connection whose peer accepts no bytes for this long is closed.
    #[arg(long, env = "REVOCAST_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Token issuance requests per second per API key (bursts up to that many); over it,
    /// `429`. 0 turns the limit off.
    #[arg(long, env = "REVOCAST_RATE_LIMIT_TOKENS", default_value_t = 1_000)]
    pub rate_limit_tokens: u32,
    /// Revocation requests per second per API key, all revoke endpoints together; over it,
    /// `429`. 0 turns the limit off.
    #[arg(
        long,
        env = "REVOCAST_RATE_LIMIT_REVOCATIONS",
        default_value_t = 50_000
    )]
    pub rate_limit_revocations: u32,
    /// A snapshot response still running after this long is cut off (the client sees an
    /// incomplete snapshot, discards it and retries). The default is the agent's own limit
    /// (4 × its 30 s request timeout): a million entries (~150 MB) pass in it at 10 Mbit/s.
    #[arg(long, env = "REVOCAST_SNAPSHOT_DEADLINE", default_value = "120s", value_parser = parse_duration)]
    pub snapshot_deadline: Duration,
    /// A new log key (`POST /v1/log/keys/rotate`) is published in the JWKS this long before
    /// it signs checkpoints, so every agent has it by then: comfortably more than the JWKS
    /// cache lifetime (60 s) and the agents' refresh. At most 7d.
    #[arg(long, env = "REVOCAST_LOG_KEY_LEAD", default_value = "10m", value_parser = parse_duration)]
    pub log_key_lead: Duration,
    /// How often a running authority checks the stored log again against its leaves and its
    /// last signed checkpoint (the check every start makes): a revocation row deleted or
    /// changed behind its back — in the SQLite file, or on PostgreSQL by anyone, through any
    /// replica — stops it with an error naming the `seq`. Each check reads the whole log once.
    /// 1s to 24h.
    #[arg(long, env = "REVOCAST_LOG_AUDIT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub log_audit_interval: Duration,
    /// Snapshot downloads one API key may have in progress at once; over it, `429` with
    /// `Retry-After`. A fleet often shares one subscriber key: this bounds what it costs when
    /// all its agents resync at once. 0 turns the limit off.
    #[arg(long, env = "REVOCAST_MAX_SNAPSHOTS_PER_KEY", default_value_t = 64)]
    pub max_snapshots_per_key: u32,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs `--tls-key`.
    #[arg(long, env = "REVOCAST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "REVOCAST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS for subscribers: `/v1/snapshot`, `/v1/events` and `/v1/stream` require a
    /// client certificate signed by a CA in this PEM file (other routes do not). Needs
    /// `--tls-cert`.
    #[arg(long, env = "REVOCAST_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Keep the state in this PostgreSQL database (`postgres://…`) instead of the embedded
    /// SQLite file, so that several replicas can share it. The data directory still receives
    /// the API key files when this replica is the one that initialises the database.
    #[arg(long, env = "REVOCAST_DATABASE_URL", global = true, value_parser = DatabaseUrl::parse)]
    pub database_url: Option<DatabaseUrl>,
    /// With `--database-url`: how often a replica reads the shared log even when no
    /// notification arrived (notifications can be lost), and so how long it takes at most to
    /// learn of a revocation committed by another replica.
    #[arg(long, env = "REVOCAST_DATABASE_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub database_poll_interval: Duration,
    /// A request's headers must arrive in full within this long of its first byte (for the
    /// first request of a connection: of the connection being accepted, after TLS), and its
    /// body may pause no longer than this; else the connection is closed.
    #[arg(long, env = "REVOCAST_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A keep-alive connection that sends no new request for this long after its last
    /// response is closed. Streams are not idle while they are being served.
    #[arg(long, env = "REVOCAST_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Connections open at once, streams and TLS handshakes included; over it, a new
    /// connection is closed at once. Needs this many open files, plus some (see
    /// DEPLOYMENT.md).
    #[arg(long, env = "REVOCAST_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
    /// Connections open at once from one source address; over it, a new connection from that
    /// address is closed at once. Agents behind one NAT address share it.
    #[arg(long, env = "REVOCAST_MAX_CONNECTIONS_PER_IP", default_value_t = 4_096)]
    pub max_connections_per_ip: usize,
}

/// A PostgreSQL connection URL. It may hold a password, so it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self(s.to_string()))
        } else {
            Err("must be a postgres:// or postgresql:// URL".into())
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(…)")
    }
}

/// Validated configuration of a running authority.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub issuer: String,
    pub default_ttl_secs: i64,
    pub max_ttl_secs: i64,
    /// Refresh tokens: each one's lifetime, the session's absolute one, the reuse interval.
    pub refresh_ttl_secs: i64,
    pub session_max_lifetime_secs: i64,
    pub refresh_reuse_interval: Duration,
    pub max_body_bytes: usize,
    pub heartbeat_interval: Duration,
    pub log_retention: Duration,
    pub subscriber_queue: usize,
    pub stream_recent_events: usize,
    /// When a stream connection may write again (from `--stream-linger` and
    /// `--stream-writes-per-second`).
    pub stream_pacing: Pacing,
    pub write_timeout: Duration,
    /// Per-key requests per second (0 = unlimited): token issuance and revocations.
    pub rate_limit_tokens: u32,
    pub rate_limit_revocations: u32,
    /// How long a snapshot response may run before it is cut off.
    pub snapshot_deadline: Duration,
    /// How long before it signs a new log key is published.
    pub log_key_lead: Duration,
    /// How often the running authority audits the stored log (`--log-audit-interval`).
    pub log_audit_interval: Duration,
    /// Concurrent snapshots per API key (0 = unlimited).
    pub max_snapshots_per_key: u32,
    /// HTTPS, when configured (the files are read and checked by `validate`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Subscribe routes require a verified client certificate (`--client-ca`).
    pub subscriber_client_cert: bool,
    /// How long past expiry entries stay in snapshots and the log
    /// ([`EXPIRY_GRACE_SECS`](revocast_shared::event::EXPIRY_GRACE_SECS); tests lower it).
    pub expiry_grace_secs: i64,
    /// The shared PostgreSQL database, or `None` for the embedded SQLite file.
    pub database_url: Option<DatabaseUrl>,
    pub database_poll_interval: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl ServeArgs {
    /// Check everything that can be checked without side effects.
    pub fn validate(self) -> Result<Config, Error> {
        let tls_files = self.tls_files()?;
        let issuer = self.issuer(tls_files.is_some())?;
        self.check_token_lifetimes()?;
        self.check_request_limits()?;
        self.check_streams()?;
        self.check_storage()?;
        self.check_connections()?;
        // Read last: only a configuration that is otherwise valid is worth opening files for.
        let tls = tls_files.as_ref().map(tls::server_config).transpose()?;
        let subscriber_client_cert = tls_files.is_some_and(|f| f.client_ca.is_some());
        Ok(self.into_config(issuer, tls, subscriber_client_cert))
    }

    /// The TLS files, if HTTPS is configured: certificate and key together, a client CA only
    /// with them.
    fn tls_files(&self) -> Result<Option<TlsFiles>, Error> {
        match (&self.tls_cert, &self.tls_key, &self.client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), client_ca) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
            })),
            (None, None, Some(_)) => invalid("--client-ca needs --tls-cert and --tls-key"),
            _ => invalid("--tls-cert and --tls-key go together"),
        }
    }

    /// `--issuer` without its trailing `/`, by default the URL of `--listen`.
    fn issuer(&self, https: bool) -> Result<String, Error> {
        let scheme = if https { "https" } else { "http" };
        let issuer = self
            .issuer
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen))
            .trim_end_matches('/')
            .to_string();
        if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
            || issuer.len() <= "https://".len()
            || issuer.chars().any(char::is_whitespace)
        {
            return invalid(format!("--issuer must be an http(s) URL, got {issuer:?}"));
        }
        Ok(issuer)
    }

    fn check_token_lifetimes(&self) -> Result<(), Error> {
        if self.max_ttl.as_secs() == 0 || self.max_ttl > MAX_TTL_CEILING {
            return invalid("--max-ttl must be between 1s and 366 days");
        }
        if self.default_ttl.as_secs() == 0 || self.default_ttl > self.max_ttl {
            return invalid("--default-ttl must be at least 1s and at most --max-ttl");
        }
        if self.session_max_lifetime.as_secs() == 0 || self.session_max_lifetime > MAX_TTL_CEILING {
            return invalid("--session-max-lifetime must be between 1s and 366 days");
        }
        if self.refresh_ttl.as_secs() == 0 || self.refresh_ttl > self.session_max_lifetime {
            return invalid("--refresh-ttl must be at least 1s and at most --session-max-lifetime");
        }
        if self.refresh_reuse_interval > Duration::from_secs(60) {
            return invalid("--refresh-reuse-interval must be at most 60s");
        }
        Ok(())
    }

    fn check_request_limits(&self) -> Result<(), Error> {
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return invalid("--max-body-bytes must be between 1024 and 16777216");
        }
        Ok(())
    }

    /// Heartbeats, resume history, subscriber queues and the pacing of stream writes.
    fn check_streams(&self) -> Result<(), Error> {
        if self.heartbeat_interval < Duration::from_millis(50)
            || self.heartbeat_interval > Duration::from_secs(60)
        {
            return invalid("--heartbeat-interval must be between 50ms and 60s");
        }
        if self.log_retention < Duration::from_secs(1) {
            return invalid("--log-retention must be at least 1s");
        }
        if !(2..=1 << 20).contains(&self.subscriber_queue) {
            return invalid("--subscriber-queue must be between 2 and 1048576");
        }
        if self.stream_recent_events > 1 << 24 {
            return invalid("--stream-recent-events must be at most 16777216");
        }
        if self.stream_linger > MAX_LINGER {
            // Above this the linger would eat into the agents' staleness budget.
            return invalid("--stream-linger must be at most 250ms");
        }
        if self.stream_writes_per_second == 0 {
            return invalid("--stream-writes-per-second must be at least 1");
        }
        if !(1..=64).contains(&self.stream_write_burst) {
            return invalid("--stream-write-burst must be between 1 and 64");
        }
        if self.fleet_acks_per_second == 0 {
            return invalid("--fleet-acks-per-second must be at least 1");
        }
        if self.write_timeout < Duration::from_millis(100) {
            return invalid("--write-timeout must be at least 100ms");
        }
        if self.snapshot_deadline < Duration::from_secs(1)
            || self.snapshot_deadline > Duration::from_secs(24 * 3600)
        {
            return invalid("--snapshot-deadline must be between 1s and 24h");
        }
        if self.log_key_lead > Duration::from_secs(7 * 24 * 3600) {
            return invalid("--log-key-lead must be at most 7d");
        }
        if self.log_audit_interval < Duration::from_secs(1)
            || self.log_audit_interval > Duration::from_secs(24 * 3600)
        {
            return invalid("--log-audit-interval must be between 1s and 24h");
        }
        Ok(())
    }

    fn check_storage(&self) -> Result<(), Error> {
        if self.database_poll_interval < Duration::from_millis(10)
            || self.database_poll_interval > Duration::from_secs(60)
        {
            return invalid("--database-poll-interval must be between 10ms and 60s");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("--data-dir must not be empty");
        }
        Ok(())
    }

    /// The connection timeouts and caps.
    fn check_connections(&self) -> Result<(), Error> {
        let bounds = Duration::from_millis(100)..=Duration::from_secs(3600);
        if !bounds.contains(&self.header_read_timeout) {
            return invalid("--header-read-timeout must be between 100ms and 1h");
        }
        if !bounds.contains(&self.idle_timeout) {
            return invalid("--idle-timeout must be between 100ms and 1h");
        }
        if !(1..=1 << 24).contains(&self.max_connections) {
            return invalid("--max-connections must be between 1 and 16777216");
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_ip) {
            return invalid("--max-connections-per-ip must be between 1 and --max-connections");
        }
        Ok(())
    }

    /// The checked flags as a [`Config`].
    fn into_config(
        self,
        issuer: String,
        tls: Option<Arc<rustls::ServerConfig>>,
        subscriber_client_cert: bool,
    ) -> Config {
        Config {
            listen: self.listen,
            data_dir: self.data_dir,
            issuer,
            default_ttl_secs: secs(self.default_ttl),
            max_ttl_secs: secs(self.max_ttl),
            refresh_ttl_secs: secs(self.refresh_ttl),
            session_max_lifetime_secs: secs(self.session_max_lifetime),
            refresh_reuse_interval: self.refresh_reuse_interval,
            max_body_bytes: self.max_body_bytes,
            heartbeat_interval: self.heartbeat_interval,
            log_retention: self.log_retention,
            subscriber_queue: self.subscriber_queue,
            stream_recent_events: self.stream_recent_events,
            stream_pacing: Pacing {
                min_linger: self.stream_linger,
                writes_per_second: self.stream_writes_per_second,
                write_burst: self.stream_write_burst,
                acks_per_second: self.fleet_acks_per_second,
                heartbeat_spread: self.heartbeat_interval / 2,
            },
            write_timeout: self.write_timeout,
            rate_limit_tokens: self.rate_limit_tokens,
            rate_limit_revocations: self.rate_limit_revocations,
            snapshot_deadline: self.snapshot_deadline,
            log_key_lead: self.log_key_lead,
            log_audit_interval: self.log_audit_interval,
            max_snapshots_per_key: self.max_snapshots_per_key,
            tls,
            subscriber_client_cert,
            expiry_grace_secs: revocast_shared::event::EXPIRY_GRACE_SECS,
            database_url: self.database_url,
            database_poll_interval: self.database_poll_interval,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
        }
    }
}

/// A configuration error with this message.
fn invalid<T>(message: impl Into<String>) -> Result<T, Error> {
    Err(Error::Config(message.into()))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Config {
    /// Defaults for a data directory, as if started with only `--data-dir`, whatever
    /// `REVOCAST_*` variables the environment holds: a test must not pick up a developer's
    /// `REVOCAST_DATABASE_URL` and write to that database.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Self::defaults(data_dir.into(), false)
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }

    /// Like [`for_data_dir`](Self::for_data_dir), with the `REVOCAST_*` variables of the
    /// environment applied as the binary applies them (the benchmark's authorities use this,
    /// so a run can be tuned like a deployment).
    pub fn for_data_dir_with_env(data_dir: impl Into<PathBuf>) -> Result<Config, Error> {
        Self::defaults(data_dir.into(), true)
    }

    fn defaults(data_dir: PathBuf, env: bool) -> Result<Config, Error> {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Cli::command();
        if !env {
            command = command.mut_args(|arg| arg.env(None::<&'static str>));
        }
        let args = command
            .try_get_matches_from(["revocast-authority"])
            .and_then(|matches| Cli::from_arg_matches(&matches))
            .map_err(|e| Error::Config(e.to_string()))?
            .serve;
        let mut config = ServeArgs {
            data_dir,
            listen: "127.0.0.1:0".parse().unwrap_or(args.listen),
            ..args
        };
        config.issuer = Some("http://revocast.test".into());
        config.validate()
    }
}

/// Whether any of `args` (the process's command line) carries a database password: a
/// `postgres://` URL with a password in its user part or a `password=` parameter. Every local
/// user can read a process's command line (`/proc/PID/cmdline`, `ps`), but not its
/// environment: such a URL belongs in `REVOCAST_DATABASE_URL`.
pub fn password_on_command_line<I, S>(args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    args.into_iter().any(|arg| {
        let arg = arg.as_ref().to_string_lossy();
        let Some(start) = arg.find("://") else {
            return false;
        };
        let scheme = &arg[..start];
        if !(scheme.ends_with("postgres") || scheme.ends_with("postgresql")) {
            return false;
        }
        let rest = &arg[start + 3..];
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let user_has_password = authority
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':'));
        let query_has_password = rest.split_once('?').is_some_and(|(_, query)| {
            query
                .split('&')
                .any(|pair| pair.to_ascii_lowercase().starts_with("password="))
        });
        user_has_password || query_has_password
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, Error> {
        let mut all = vec!["revocast-authority"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().serve.validate()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./revocast-data"));
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!((c.default_ttl_secs, c.max_ttl_secs), (3600, 86400));
        assert_eq!(
            (c.refresh_ttl_secs, c.session_max_lifetime_secs),
            (14 * 86400, 30 * 86400)
        );
        assert_eq!(c.refresh_reuse_interval, Duration::ZERO);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(
            (c.header_read_timeout, c.idle_timeout),
            (Duration::from_secs(10), Duration::from_secs(60))
        );
        assert_eq!(
            (c.max_connections, c.max_connections_per_ip),
            (16_384, 4_096)
        );
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        let c = parse(&["--default-ttl", "900", "--max-ttl", "2h"]).unwrap();
        assert_eq!((c.default_ttl_secs, c.max_ttl_secs), (900, 7200));
        assert!(Cli::try_parse_from(["x", "--max-ttl", "soon"]).is_err());
    }

    /// The name of the test below, as the test binary knows it.
    const HOSTILE_ENVIRONMENT: &str = "config::tests::defaults_under_a_hostile_environment";

    #[test]
    fn test_defaults_ignore_the_environment() {
        // Run the test below in a child process (this test binary) whose environment would
        // change the defaults, or break them, if it were read.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", HOSTILE_ENVIRONMENT, "--ignored"])
            .env("REVOCAST_STREAM_WRITES_PER_SECOND", "7")
            .env("REVOCAST_MAX_TTL", "not a duration")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run by test_defaults_ignore_the_environment, in a child process"]
    fn defaults_under_a_hostile_environment() {
        if std::env::var("REVOCAST_STREAM_WRITES_PER_SECOND").as_deref() != Ok("7") {
            // Run by hand (`--include-ignored`) rather than by the test above: nothing to do.
            return;
        }
        let config = Config::for_data_dir("/nonexistent");
        assert_eq!(config.stream_pacing.writes_per_second, 40_000);
        assert_eq!(config.max_ttl_secs, 24 * 3600);
        // The benchmark's variant reads it, and says what is wrong instead of panicking.
        let err = Config::for_data_dir_with_env("/nonexistent").unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn inconsistent_values_are_refused() {
        assert!(parse(&["--default-ttl", "2d"]).is_err());
        assert!(parse(&["--max-ttl", "0"]).is_err());
        assert!(parse(&["--refresh-ttl", "31d"]).is_err());
        assert!(parse(&["--session-max-lifetime", "0"]).is_err());
        assert!(parse(&["--refresh-reuse-interval", "2m"]).is_err());
        assert!(parse(&["--max-ttl", "400d", "--default-ttl", "1h"]).is_err());
        assert!(parse(&["--issuer", "ftp://x"]).is_err());
        assert!(parse(&["--issuer", "https://"]).is_err());
        assert!(parse(&["--max-body-bytes", "10"]).is_err());
        assert!(parse(&["--heartbeat-interval", "0"]).is_err());
        assert!(parse(&["--log-audit-interval", "0"]).is_err());
        assert!(parse(&["--log-audit-interval", "2d"]).is_err());
        assert!(parse(&["--stream-linger", "1s"]).is_err());
        assert_eq!(
            parse(&["--stream-linger", "0"])
                .ok()
                .map(|c| c.stream_pacing.min_linger),
            Some(Duration::ZERO)
        );
        assert!(parse(&["--stream-writes-per-second", "0"]).is_err());
        assert!(parse(&["--stream-write-burst", "0"]).is_err());
        assert!(parse(&["--stream-write-burst", "65"]).is_err());
        assert_eq!(
            parse(&["--stream-write-burst", "1"])
                .ok()
                .map(|c| c.stream_pacing.write_burst),
            Some(1)
        );
        assert!(parse(&["--subscriber-queue", "1"]).is_err());
        assert!(parse(&["--log-retention", "0"]).is_err());
        assert!(parse(&["--header-read-timeout", "0"]).is_err());
        assert!(parse(&["--idle-timeout", "0"]).is_err());
        assert!(parse(&["--max-connections", "0"]).is_err());
        assert!(parse(&["--max-connections", "10", "--max-connections-per-ip", "11"]).is_err());
        assert!(parse(&["--snapshot-deadline", "0"]).is_err());
        assert_eq!(
            parse(&["--snapshot-deadline", "5m", "--max-snapshots-per-key", "3"])
                .ok()
                .map(|c| (c.snapshot_deadline, c.max_snapshots_per_key)),
            Some((Duration::from_secs(300), 3))
        );
        assert_eq!(
            parse(&["--issuer", "https://auth.example/"])
                .unwrap()
                .issuer,
            "https://auth.example"
        );
    }

    #[test]
    fn create_key_subcommand_parses() {
        let cli = Cli::try_parse_from([
            "x",
            "create-key",
            "--scope",
            "introspect",
            "--data-dir",
            "/d",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::CreateKey {
                scope: Scope::Introspect,
                ..
            })
        ));
        assert_eq!(cli.serve.data_dir, PathBuf::from("/d"));
    }

    #[test]
    fn keys_subcommands_parse() {
        let cli =
            Cli::try_parse_from(["x", "keys", "revoke", "abcdef", "--data-dir", "/d"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Keys { command: KeysCommand::Revoke { ref id } }) if id == "abcdef"
        ));
        assert_eq!(cli.serve.data_dir, PathBuf::from("/d"));
        // An id beginning with `-` (base64url) is an id, not a flag.
        let cli = Cli::try_parse_from(["x", "keys", "revoke", "-Gabcdef"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Keys { command: KeysCommand::Revoke { ref id } }) if id == "-Gabcdef"
        ));
        let cli = Cli::try_parse_from(["x", "keys", "list", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Keys {
                command: KeysCommand::List { json: true }
            })
        ));
        let cli = Cli::try_parse_from(["x", "keys", "create", "--scope", "admin"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Keys {
                command: KeysCommand::Create {
                    scope: Scope::Admin,
                    label: None
                }
            })
        ));
        assert!(Cli::try_parse_from(["x", "keys", "revoke"]).is_err());
    }

    #[test]
    fn tls_flags_go_together_and_bad_files_are_config_errors() {
        for args in [
            &["--tls-cert", "/c.pem"][..],
            &["--tls-key", "/k.pem"],
            &["--client-ca", "/ca.pem"],
            &["--tls-key", "/k.pem", "--client-ca", "/ca.pem"],
            // Both given, but the files do not exist: read (not written) at validation.
            &[
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "/nonexistent/k.pem",
            ],
        ] {
            assert!(
                matches!(parse(args), Err(Error::Config(_))),
                "{args:?} was accepted"
            );
        }
        let plain = parse(&[]).unwrap();
        assert!(plain.tls.is_none() && !plain.subscriber_client_cert);
    }

    #[test]
    fn a_database_password_on_the_command_line_is_noticed() {
        let seen = |args: &[&str]| password_on_command_line(args);
        assert!(seen(&[
            "serve",
            "--database-url",
            "postgres://u:secret@db/x"
        ]));
        assert!(seen(&[
            "--database-url=postgresql://u:s@db:5432/x?sslmode=require"
        ]));
        assert!(seen(&["postgres://u@db/x?sslmode=require&password=s"]));
        assert!(!seen(&["--database-url", "postgres://u@db/x"]));
        assert!(!seen(&["postgres://db/x?sslmode=require"]));
        assert!(!seen(&["--issuer", "https://u:p@example.com"]));
        assert!(!seen(&["--listen", "127.0.0.1:8080"]));
    }
}
