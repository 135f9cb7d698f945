//! `revocast-bench SCENARIO [--json]`: revocast measured against what a user would do instead
//! (a Redis blocklist, token introspection), and at fleet scale. Each scenario prints a human
//! table, or with `--json` one JSON object on stdout. Figures, never assertions: goals are
//! compared in BENCHMARKS.md.
//!
//! Processes: scenarios that measure the authority run it in a child process (this binary,
//! hidden subcommand `authority`), and `propagation` and `refresh-reuse` run their agents in another child
//! (`agents`), so no figure mixes two roles' memory or CPU scheduling in one runtime.

mod agent_cpu;
mod children;
mod floor;
mod lean;
mod log_verify;
mod refresh;
mod scenarios;
mod side_by_side;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "revocast-bench", version, about = "revocast benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// `ingest`, `propagation` and `refresh-reuse`: run two authority replicas on a fresh database made on this
    /// PostgreSQL server (and dropped afterwards) instead of one on SQLite.
    #[arg(long, global = true, env = "REVOCAST_BENCH_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Time from sending a revoke until each of N agents (in another process) applied it.
    Propagation {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Revocations sent one after another, then as many again at `--rate`.
        #[arg(long, default_value_t = 200)]
        events: usize,
        /// Revocations per second in the steady-rate phase.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Also read each revocation's fleet latency from the authority's own
        /// acknowledgments (`"wait": "fleet"`, its `propagation.slowest_ms`) and compare it
        /// with this bench's, revocation by revocation. Each revocation then waits for the
        /// fleet, so the back-to-back phase sends the next one when the fleet has the last.
        #[arg(long)]
        fleet_wait: bool,
        /// Agents that do not verify the transparency log: the authority's side of the
        /// figure alone (each agent's verification is measured by `log-verify`).
        #[arg(long)]
        no_verify_log: bool,
    },
    /// A stolen refresh token reused: time until each of N agents (in another process)
    /// rejects the session's access token, beside a plain session revocation in the same run.
    RefreshReuse {
        #[arg(long, default_value_t = 10)]
        agents: usize,
        /// Sessions ended each way (reuse, session revocation), alternating.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// Agent verify (cached, first seen), raw ML-DSA-65, Redis EXISTS, HTTP introspection;
    /// first-seen and raw ML-DSA-65 for every crypto backend compiled in, side by side.
    Verify {
        /// Calls per measured figure.
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
        /// Redis for the blocklist comparison.
        #[arg(long, env = "REVOCAST_BENCH_REDIS", default_value = "127.0.0.1:6379")]
        redis: String,
    },
    /// Authority bytes per idle subscriber; agent bytes per revoked-token entry.
    Memory {
        #[arg(long, default_value_t = 10_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 1_000_000)]
        entries: usize,
    },
    /// Durable revocations per second with concurrent clients, and revoke latency.
    Ingest {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Time for a new agent to be synced with N live revocations.
    Bootstrap {
        #[arg(long, default_value_t = 1_000_000)]
        entries: usize,
    },
    /// Tokens signed per second on one core, by every crypto backend compiled in, side by side.
    Sign {
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Mixed load with N subscribers connected: revocations, issuance and introspection;
    /// errors, lost events and the authority's memory over time.
    Soak {
        #[arg(long, default_value_t = 10_000)]
        subscribers: usize,
        /// Requests per second offered (8 in 10 revocations, 1 issuance, 1 introspection).
        #[arg(long, default_value_t = 1_250)]
        rate: u32,
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Lean subscribers (raw WebSocket clients that check every `seq`) instead of full
        /// agents: measures the authority without the agents' CPU on the same box.
        #[arg(long)]
        lean: bool,
        /// Lean subscribers acknowledge what they read, coalesced as PROTOCOL.md asks (full
        /// agents always do): the cost of a fleet's acknowledgments to the authority.
        #[arg(long, requires = "lean")]
        ack: bool,
        /// The authority's `--max-ttl` in seconds (default 24 h). Short, revocations expire
        /// during the run, so the set reaches a steady size and memory can be seen to flatten.
        #[arg(long)]
        max_ttl: Option<u64>,
    },
    /// Propagation to N lean subscribers (frame readers) from revocast and from a minimal
    /// broadcaster of the bench's own (the machine's floor), read by the same subscriber
    /// process in one run: isolated revocations and sustained load, and the ratio to the floor.
    Floor {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Full agents (in the same child process, one target after the other) instead of
        /// lean subscribers.
        #[arg(long)]
        agents: bool,
        /// revocast's full agents do not verify the transparency log, like the floor's
        /// (which has none): the fan-out alone. Without it they verify, as by default.
        #[arg(long)]
        no_verify_log: bool,
        /// Revocations sent one at a time, 50–600 ms apart.
        #[arg(long, default_value_t = 50)]
        isolated: usize,
        /// Revocations per second in the sustained phase.
        #[arg(long, default_value_t = 300)]
        rate: u32,
        /// Length of the sustained phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// (internal) Run the floor broadcaster for `floor`.
    #[command(hide = true)]
    FloorServer(floor::FloorServerArgs),
    /// (internal) Run the subscribers for `floor`.
    #[command(hide = true)]
    FloorFleet(floor::FleetArgs),
    /// Agent CPU for verifying the transparency log: per applied event and per verified
    /// checkpoint, verifying and not, side by side in one run (two agent children).
    LogVerify {
        /// Agents in each child.
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Revocations streamed.
        #[arg(long, default_value_t = 5_000)]
        events: usize,
        /// Revocations per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Seconds of an idle log first (checkpoints only).
        #[arg(long, default_value_t = 20)]
        idle_seconds: u64,
    },
    /// Agent CPU per applied event, user and system apart: N full agents (in another
    /// process) following a stream of revocations at a steady rate, beside an idle phase.
    AgentCpu {
        /// Agents in the child.
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Revocations per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Length of the idle phase and of the events phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Verify the transparency log (the agents' default).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        verify_log: bool,
    },
    /// (internal) Run an authority for another bench process.
    #[command(hide = true)]
    Authority(children::AuthorityArgs),
    /// (internal) Run agents for the propagation and refresh-reuse scenarios.
    #[command(hide = true)]
    Agents(children::AgentsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The children's warnings (an agent losing its stream, say) explain odd figures; they go to
    // stderr, away from the JSON on stdout. `REVOCAST_LOG` as for the real binaries.
    revocast_shared::runtime::init_tracing("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("revocast-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let database = cli.database_url.as_deref();
    let result: anyhow::Result<Option<Value>> = runtime.block_on(async move {
        let report = match cli.scenario {
            Scenario::Propagation {
                agents,
                events,
                rate,
                fleet_wait,
                no_verify_log,
            } => {
                scenarios::propagation(agents, events, rate, fleet_wait, !no_verify_log, database)
                    .await?
            }
            Scenario::RefreshReuse { agents, rounds } => {
                refresh::refresh_reuse(agents, rounds, database).await?
            }
            Scenario::Verify { iterations, redis } => scenarios::verify(iterations, &redis).await?,
            Scenario::Memory {
                subscribers,
                entries,
            } => scenarios::memory(subscribers, entries).await?,
            Scenario::Ingest { clients, seconds } => {
                scenarios::ingest(clients, seconds, database).await?
            }
            Scenario::Bootstrap { entries } => scenarios::bootstrap(entries).await?,
            Scenario::Sign { seconds } => side_by_side::sign(seconds)?,
            Scenario::LogVerify {
                agents,
                events,
                rate,
                idle_seconds,
            } => log_verify::log_verify(agents, events, rate, idle_seconds).await?,
            Scenario::AgentCpu {
                agents,
                rate,
                seconds,
                verify_log,
            } => agent_cpu::agent_cpu(agents, rate, seconds, verify_log).await?,
            Scenario::Soak {
                subscribers,
                rate,
                seconds,
                lean,
                ack,
                max_ttl,
            } => scenarios::soak(subscribers, rate, seconds, lean, ack, max_ttl).await?,
            Scenario::Floor {
                subscribers,
                agents,
                no_verify_log,
                isolated,
                rate,
                seconds,
            } => floor::floor(subscribers, agents, !no_verify_log, isolated, rate, seconds).await?,
            Scenario::FloorServer(args) => {
                floor::serve_floor(args).await?;
                return Ok(None);
            }
            Scenario::FloorFleet(args) => {
                floor::run_fleet(args).await?;
                return Ok(None);
            }
            Scenario::Authority(args) => {
                children::run_authority(args).await?;
                return Ok(None);
            }
            Scenario::Agents(args) => {
                children::run_agents(args).await?;
                return Ok(None);
            }
        };
        Ok(Some(report))
    });
    match result {
        Ok(Some(report)) => {
            if cli.json {
                println!("{report}");
            } else {
                stats::print_table(&report);
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("revocast-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
