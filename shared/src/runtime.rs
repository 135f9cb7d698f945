//! What the binaries (the authority, the agent's sidecar, the benchmark) share at run time: the
//! one [`shutdown_signal`] and the tracing set-up. Behind the `runtime` feature, off by default,
//! because it listens for signals and writes to stderr; the rest of the crate does no I/O.

/// Resolves when the process is asked to stop (Ctrl-C / SIGINT, or SIGTERM on Unix).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

/// Install the process's `tracing` subscriber: human-readable lines on stderr (stdout stays
/// free for what a command prints), coloured only on a terminal, filtered by `REVOCAST_LOG`
/// (an `EnvFilter` directive such as `debug` or `revocast_agent=debug,warn`) or else by
/// `default_filter`.
///
/// # Panics
///
/// If a global subscriber is already installed: call it once, from `main`.
pub fn init_tracing(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("REVOCAST_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
