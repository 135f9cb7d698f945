//! `revocast-authority`: parse and validate the configuration, then serve (or run a
//! subcommand). Exit code 2 for configuration errors, 1 for runtime failures.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use revocast_authority::config::{Cli, Command, Config};
use revocast_authority::{Authority, Error, apikeys, datadir, shutdown};
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
        Some(Command::CreateKey { scope, label }) => {
            datadir::prepare(&config.data_dir)?;
            let store = revocast_authority::open_store(&config).await?;
            datadir::make_private(&config.data_dir)?;
            let key = apikeys::create(store.as_ref(), scope, label.as_deref(), UnixSeconds::now())
                .await?;
            store.close().await;
            // The one place a key is printed: to the operator who asked for it, on stdout.
            println!("{}", key.as_str());
        }
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
        }
    }
    Ok(())
}

/// The one report of a failure that ends the process: on stderr, whether or not tracing is set
/// up yet, each cause of the chain once (`what: why: why`).
fn fail(error: &anyhow::Error, code: ExitCode) -> ExitCode {
    eprintln!("revocast-authority: {error:#}");
    code
}
