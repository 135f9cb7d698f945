//! `revocast-authority`: parse and validate the configuration, then serve (or run a
//! subcommand). Exit code 2 for configuration errors, 1 for runtime failures.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use revocast_authority::apikeys::{self, ApiKeyInfo, Found, MIN_ID_PREFIX};
use revocast_authority::config::{Cli, Command, Config, KeysCommand, Scope};
use revocast_authority::store::Store;
use revocast_authority::{Authority, Error, datadir, shutdown};
use revocast_shared::UnixSeconds;
use revocast_shared::runtime::init_tracing;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.serve.validate() {
        Ok(config) => config,
        Err(e) => return fail(&e.into(), ExitCode::from(2)),
    };
    // Before anything is created: the database and key files hold secrets.
    #[cfg(unix)]
    datadir::restrict_umask();
    init_tracing("info");
    if revocast_authority::config::password_on_command_line(std::env::args_os().skip(1)) {
        tracing::warn!(
            "the database URL on the command line carries a password, which every local user \
             can read (ps, /proc/PID/cmdline); pass it in REVOCAST_DATABASE_URL instead"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = anyhow::Error::new(e).context("cannot start the runtime");
            return fail(&e, ExitCode::FAILURE);
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        // Found only once started, but errors of the set-up all the same.
        Err(e)
            if matches!(
                e.downcast_ref::<Error>(),
                Some(Error::Config(_) | Error::Exposed { .. } | Error::IssuerMismatch { .. })
            ) =>
        {
            fail(&e, ExitCode::from(2))
        }
        Err(e) => fail(&e, ExitCode::FAILURE),
    }
}

async fn run(command: Option<Command>, config: Config) -> anyhow::Result<()> {
    match command {
        Some(
            Command::CreateKey { scope, label }
            | Command::Keys {
                command: KeysCommand::Create { scope, label },
            },
        ) => create_key(&config, scope, label.as_deref()).await,
        Some(Command::Keys {
            command: KeysCommand::List { json },
        }) => list_keys(&config, json).await,
        Some(Command::Keys {
            command: KeysCommand::Revoke { id },
        }) => revoke_key(&config, &id).await,
        None => {
            // Before the store and the listener take any: the connection caps, not the
            // descriptor table, must be what runs out first.
            let mut config = config;
            #[cfg(unix)]
            revocast_authority::fit_to_descriptor_limit(&mut config);
            let listen = config.listen;
            let authority = Authority::open(config).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            authority
                .serve(listener, shutdown::shutdown_signal())
                .await?;
            Ok(())
        }
    }
}

async fn create_key(config: &Config, scope: Scope, label: Option<&str>) -> anyhow::Result<()> {
    datadir::prepare(&config.data_dir)?;
    let store = revocast_authority::open_store(config).await?;
    datadir::make_private(&config.data_dir)?;
    let key = apikeys::create(store.as_ref(), scope, label, UnixSeconds::now()).await;
    store.close().await;
    // The one place a key is printed: to the operator who asked for it, on stdout.
    println!("{}", key?.as_str());
    Ok(())
}

/// The store of an existing installation: `keys list` and `keys revoke` never create one.
async fn existing_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.database_url.is_none() && !datadir::has_database(&config.data_dir) {
        return Err(Error::Config(format!(
            "no database in {}: is --data-dir (or --database-url) right?",
            config.data_dir.display()
        ))
        .into());
    }
    datadir::prepare(&config.data_dir)?;
    let store = revocast_authority::open_store(config).await?;
    datadir::make_private(&config.data_dir)?;
    Ok(store)
}

async fn list_keys(config: &Config, json: bool) -> anyhow::Result<()> {
    let store = existing_store(config).await?;
    let keys = store.list_api_keys().await;
    store.close().await;
    let keys = keys?;
    if json {
        for key in &keys {
            println!("{}", serde_json::to_string(&ApiKeyInfo::from(key))?);
        }
        return Ok(());
    }
    println!(
        "{:<43}  {:<10}  {:<20}  {:<20}  LABEL",
        "ID", "SCOPE", "CREATED", "REVOKED"
    );
    for key in &keys {
        println!(
            "{:<43}  {:<10}  {:<20}  {:<20}  {}",
            apikeys::id_of(&key.hash),
            key.scope.as_str(),
            utc(key.created_at),
            key.revoked_at.map_or_else(|| "-".to_string(), utc),
            printable(key.label.as_deref().unwrap_or(""))
        );
    }
    Ok(())
}

async fn revoke_key(config: &Config, id: &str) -> anyhow::Result<()> {
    let store = existing_store(config).await?;
    let revoked = revoke_in(store.as_ref(), id).await;
    store.close().await;
    revoked
}

async fn revoke_in(store: &dyn Store, id: &str) -> anyhow::Result<()> {
    let keys = store.list_api_keys().await?;
    let key = match apikeys::find(&keys, id) {
        Found::One(key) => key,
        Found::None => anyhow::bail!("no API key has the id {id:?} (see `keys list`)"),
        Found::Ambiguous(n) => {
            anyhow::bail!("{n} API keys have ids starting with {id:?}: give more of the id")
        }
        Found::TooShort => anyhow::bail!(
            "give the whole id, or at least {MIN_ID_PREFIX} characters of it (see `keys list`)"
        ),
    };
    let name = apikeys::id_of(&key.hash);
    if let Some(at) = key.revoked_at {
        println!("API key {name} was already revoked at {}", utc(at));
        return Ok(());
    }
    let Some(revoked) = store.revoke_api_key(&key.hash, UnixSeconds::now()).await? else {
        anyhow::bail!("the API key {name} vanished from the store");
    };
    println!(
        "revoked API key {name} ({}, {:?}) at {}; running authorities refuse it within a second",
        revoked.scope.as_str(),
        printable(revoked.label.as_deref().unwrap_or("")),
        revoked.revoked_at.map_or_else(|| "-".to_string(), utc),
    );
    if revoked.scope == Scope::Admin
        && apikeys::active_admin_keys(&store.list_api_keys().await?) == 0
    {
        eprintln!(
            "revocast-authority: warning: no admin API key is left in force; \
             `revocast-authority keys create --scope admin` makes one"
        );
    }
    Ok(())
}

/// `t` as an RFC 3339 UTC time, e.g. `2026-01-01T00:00:00Z` (civil-from-days, proleptic
/// Gregorian calendar).
fn utc(t: UnixSeconds) -> String {
    let t = t.get();
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era
        .saturating_mul(400)
        .saturating_add(yoe)
        .saturating_add(i64::from(month <= 2));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// A label as a terminal may show it: control characters replaced.
fn printable(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The one report of a failure that ends the process: on stderr, whether or not tracing is set
/// up yet, each cause of the chain once (`what: why: why`).
fn fail(error: &anyhow::Error, code: ExitCode) -> ExitCode {
    eprintln!("revocast-authority: {error:#}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(UnixSeconds::new(0)), "1970-01-01T00:00:00Z");
        assert_eq!(utc(UnixSeconds::new(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(utc(UnixSeconds::new(1_767_225_599)), "2025-12-31T23:59:59Z");
        assert_eq!(utc(UnixSeconds::new(-1)), "1969-12-31T23:59:59Z");
        // Nonsense from a corrupt row prints as nonsense, without panicking.
        let _ = utc(UnixSeconds::new(i64::MAX));
        let _ = utc(UnixSeconds::new(i64::MIN));
    }
}
