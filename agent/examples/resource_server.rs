//! A resource server protected by revocast in a dozen lines: every request under `/api` needs a
//! valid, unrevoked token; the handler reads the verified claims.
//!
//! `REVOCAST_AUTHORITY=http://127.0.0.1:8080 REVOCAST_SUBSCRIBER_KEY=$(cat revocast-data/subscriber.key) \
//!  cargo run -p revocast-agent --example resource_server`

use axum::{Router, routing::get};
use revocast_agent::{Agent, AgentConfig, Authenticated, VerifyLayer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let authority = std::env::var("REVOCAST_AUTHORITY")?;
    let key = std::env::var("REVOCAST_SUBSCRIBER_KEY")?;
    let agent = Agent::start(AgentConfig::new(authority, key))?;
    let app =
        Router::new()
            .route(
                "/api/hello",
                get(|Authenticated(t): Authenticated| async move {
                    format!("hello {}\n", t.claims().sub)
                }),
            )
            .layer(VerifyLayer::new(agent));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
