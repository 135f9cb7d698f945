//! `revocast-agent`, the sidecar: validate the flags, start the agent, serve `/verify`,
//! `/healthz` and `/metrics` until SIGINT or SIGTERM. Exit code 2 for configuration errors.

use std::process::ExitCode;

use clap::Parser;
use revocast_agent::config::SidecarArgs;
use revocast_agent::{Agent, shutdown, sidecar};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let (config, listen) = match SidecarArgs::parse().into_config() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("revocast-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_env("REVOCAST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("revocast-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let agent = Agent::start(config)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        axum::serve(listener, sidecar::router(agent))
            .with_graceful_shutdown(shutdown::shutdown_signal())
            .await?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("revocast-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
