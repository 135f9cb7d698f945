//! Command line and environment (`REVOCAST_*`) configuration, validated into a [`Config`]
//! before anything touches the disk or binds a port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::Error;

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
    CreateKey {
        #[arg(long, value_enum)]
        scope: Scope,
        /// A note stored beside the key's hash, e.g. who it is for.
        #[arg(long)]
        label: Option<String>,
    },
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
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
    /// Largest request body accepted, in bytes (larger → 413).
    #[arg(long, env = "REVOCAST_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
}

/// Seconds (`3600`) or a humantime duration (`1h`, `15m`, `1h 30m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (use seconds or e.g. 15m, 1h)"))
}

/// Validated configuration of a running authority.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub issuer: String,
    pub default_ttl_secs: i64,
    pub max_ttl_secs: i64,
    pub max_body_bytes: usize,
}

impl ServeArgs {
    /// Check everything that can be checked without side effects.
    pub fn validate(self) -> Result<Config, Error> {
        let invalid = |msg: String| Err(Error::Config(msg));
        let issuer = self
            .issuer
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string();
        if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
            || issuer.len() <= "https://".len()
            || issuer.chars().any(char::is_whitespace)
        {
            return invalid(format!("--issuer must be an http(s) URL, got {issuer:?}"));
        }
        if self.max_ttl.as_secs() == 0 || self.max_ttl > MAX_TTL_CEILING {
            return invalid("--max-ttl must be between 1s and 366 days".into());
        }
        if self.default_ttl.as_secs() == 0 || self.default_ttl > self.max_ttl {
            return invalid("--default-ttl must be at least 1s and at most --max-ttl".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return invalid("--max-body-bytes must be between 1024 and 16777216".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("--data-dir must not be empty".into());
        }
        Ok(Config {
            listen: self.listen,
            data_dir: self.data_dir,
            issuer,
            default_ttl_secs: secs(self.default_ttl),
            max_ttl_secs: secs(self.max_ttl),
            max_body_bytes: self.max_body_bytes,
        })
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Config {
    /// Defaults for a data directory, as if started with only `--data-dir` (tests use this).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let args = Cli::parse_from(["revocast-authority"]).serve;
        let mut config = ServeArgs {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:0".parse().unwrap_or(args.listen),
            ..args
        };
        config.issuer = Some("http://revocast.test".into());
        config
            .validate()
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }
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
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        let c = parse(&["--default-ttl", "900", "--max-ttl", "2h"]).unwrap();
        assert_eq!((c.default_ttl_secs, c.max_ttl_secs), (900, 7200));
        assert!(Cli::try_parse_from(["x", "--max-ttl", "soon"]).is_err());
    }

    #[test]
    fn inconsistent_values_are_refused() {
        assert!(parse(&["--default-ttl", "2d"]).is_err());
        assert!(parse(&["--max-ttl", "0"]).is_err());
        assert!(parse(&["--max-ttl", "400d", "--default-ttl", "1h"]).is_err());
        assert!(parse(&["--issuer", "ftp://x"]).is_err());
        assert!(parse(&["--issuer", "https://"]).is_err());
        assert!(parse(&["--max-body-bytes", "10"]).is_err());
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
}
