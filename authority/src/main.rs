//! `revocast-authority`: parse and validate the configuration, then serve (or run a
//! subcommand). Exit code 2 for configuration errors, 1 for runtime failures.

use std::process::ExitCode;

use clap::Parser;
use revocast_authority::config::{Cli, Command};
use revocast_authority::{Authority, apikeys, shutdown};
use revocast_shared::UnixSeconds;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command;
    let config = match cli.serve.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("revocast-authority: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("revocast-authority: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Some(Command::CreateKey { scope, label }) => {
                std::fs::create_dir_all(&config.data_dir)?;
                let store = revocast_authority::app::open_store(&config).await?;
                let key =
                    apikeys::create(store.as_ref(), scope, label.as_deref(), UnixSeconds::now())
                        .await?;
                store.close().await;
                // The one place a key is printed: to the operator who asked for it, on stdout.
                println!("{}", key.as_str());
                Ok(())
            }
            None => {
                let listen = config.listen;
                let authority = Authority::open(config).await?;
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
                authority
                    .serve(listener, shutdown::shutdown_signal())
                    .await?;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e: anyhow::Error = e;
            tracing::error!("{e:#}");
            eprintln!("revocast-authority: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("REVOCAST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
