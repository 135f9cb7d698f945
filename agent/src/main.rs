//! `revocast-agent`, the sidecar: validate the flags, start the agent, serve `/verify`,
//! `/healthz` and `/metrics` until SIGINT or SIGTERM. Exit code 2 for configuration errors.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use revocast_agent::config::SidecarArgs;
use revocast_agent::{Agent, AgentConfig, shutdown, sidecar};
use revocast_shared::runtime::init_tracing;

fn main() -> ExitCode {
    let (config, listen) = match SidecarArgs::parse().into_config() {
        Ok(parsed) => parsed,
        Err(e) => return fail(&e.into(), ExitCode::from(2)),
    };
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
    match runtime.block_on(serve(config, listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, ExitCode::FAILURE),
    }
}

async fn serve(config: AgentConfig, listen: SocketAddr) -> anyhow::Result<()> {
    let crypto = config.crypto_backend.name();
    let agent = Agent::start(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, crypto, "listening");
    axum::serve(listener, sidecar::router(agent))
        .with_graceful_shutdown(shutdown::shutdown_signal())
        .await?;
    Ok(())
}

/// The one report of a failure that ends the process: on stderr, whether or not tracing is set
/// up yet, each cause of the chain once (`what: why: why`).
fn fail(error: &anyhow::Error, code: ExitCode) -> ExitCode {
    eprintln!("revocast-agent: {error:#}");
    code
}
