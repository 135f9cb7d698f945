//! `log-verify`: what verifying the transparency log costs an agent. Two agent children follow
//! one authority child at the same time, one verifying (the default) and one not
//! (`--verify-log false`), so that both see the same stream on the same machine. CPU is read
//! from /proc for each child: while the log is idle (heartbeats, and for the verifying one a
//! checkpoint to verify about every two seconds), then while revocations stream. The
//! difference over the idle phase, per checkpoint verified, is the cost of a checkpoint; the
//! events phase gives CPU per applied event both ways (checkpoints verified meanwhile
//! included) and their ratio.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::children::{ChildAgents, ChildAuthority, http_client};
use crate::scenarios::admin_post;
use crate::stats::round3;

/// Per child: CPU seconds, checkpoints verified, and the lowest seq applied.
struct Reading {
    cpu: f64,
    checkpoints: u64,
    applied: u64,
}

async fn read(child: &mut ChildAgents) -> anyhow::Result<Reading> {
    let s = child.status().await?;
    Ok(Reading {
        cpu: s["cpu_seconds"].as_f64().context("cpu_seconds")?,
        checkpoints: s["checkpoints_verified"].as_u64().context("checkpoints")?,
        applied: s["applied_min"].as_u64().context("applied_min")?,
    })
}

pub async fn log_verify(
    agents: usize,
    events: usize,
    rate: u32,
    idle_seconds: u64,
) -> anyhow::Result<Value> {
    let authority = ChildAuthority::start(0).await?;
    let http = http_client()?;
    let mut on =
        ChildAgents::start_verifying(&authority.base, &authority.subscriber_key, agents, true)
            .await?;
    let mut off =
        ChildAgents::start_verifying(&authority.base, &authority.subscriber_key, agents, false)
            .await?;

    // Idle: heartbeats for both, checkpoints for the verifying one.
    let (on0, off0) = (read(&mut on).await?, read(&mut off).await?);
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let (on1, off1) = (read(&mut on).await?, read(&mut off).await?);

    // Events: `events` session revocations at `rate`, then until both fleets applied them.
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let mut last = 0;
    for i in 0..events {
        tick.tick().await;
        let answer = admin_post(
            &http,
            &authority,
            "/v1/revoke/session",
            json!({ "sid": format!("log-verify-{i}") }),
        )
        .await?;
        last = answer["seq"].as_u64().context("seq")?;
    }
    let started = Instant::now();
    let (on2, off2) = loop {
        let (a, b) = (read(&mut on).await?, read(&mut off).await?);
        if a.applied >= last && b.applied >= last {
            break (a, b);
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the agents did not apply seq {last} within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let on_status = on.status().await?;

    let idle_checkpoints = on1.checkpoints.saturating_sub(on0.checkpoints);
    let idle_extra = (on1.cpu - on0.cpu) - (off1.cpu - off0.cpu);
    let applied = (events * agents).max(1) as f64;
    let per_event_on = 1e6 * (on2.cpu - on1.cpu) / applied;
    let per_event_off = 1e6 * (off2.cpu - off1.cpu) / applied;
    Ok(json!({ "log_verify": {
        "agents": agents,
        "events": events,
        "rate": rate,
        "idle_seconds": idle_seconds,
        "checkpoints_verified_idle": idle_checkpoints,
        "checkpoints_verified_events": on2.checkpoints.saturating_sub(on1.checkpoints),
        "idle_cpu_ms_verifying": round3(1e3 * (on1.cpu - on0.cpu)),
        "idle_cpu_ms_not_verifying": round3(1e3 * (off1.cpu - off0.cpu)),
        "cpu_us_per_checkpoint": round3(1e6 * idle_extra / (idle_checkpoints.max(1) as f64)),
        "cpu_us_per_event_verifying": round3(per_event_on),
        "cpu_us_per_event_not_verifying": round3(per_event_off),
        "per_event_ratio": round3(per_event_on / per_event_off.max(f64::EPSILON)),
        "log_resyncs": on_status["log_resyncs"],
        "resyncs": on_status["resyncs"],
    }}))
}
