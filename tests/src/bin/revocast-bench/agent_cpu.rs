//! `agent-cpu`: what one applied event costs a full agent in CPU, user and system apart. One
//! authority child, one child running `--agents` agents (verifying the transparency log unless
//! `--verify-log false`). CPU is read from /proc for the agents' child: first while the stream
//! is idle (heartbeats and checkpoints) for `--seconds`, then while `--rate` session
//! revocations a second stream for `--seconds` and until every agent applied the last. The
//! events phase's CPU over (events × agents) is the gross figure; less what the idle phase
//! cost per second over the same time, the net one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::children::{ChildAgents, ChildAuthority, http_client};
use crate::scenarios::post_with_key;
use crate::stats::round3;

struct Reading {
    user: f64,
    system: f64,
    applied: u64,
    reconnects: u64,
    resyncs: u64,
}

async fn read(child: &mut ChildAgents) -> anyhow::Result<Reading> {
    let s = child.status().await?;
    Ok(Reading {
        user: s["cpu_user_seconds"].as_f64().context("cpu_user_seconds")?,
        system: s["cpu_system_seconds"]
            .as_f64()
            .context("cpu_system_seconds")?,
        applied: s["applied_min"].as_u64().context("applied_min")?,
        reconnects: s["reconnects"].as_u64().unwrap_or(0),
        resyncs: s["resyncs"].as_u64().unwrap_or(0),
    })
}

pub async fn agent_cpu(
    agents: usize,
    rate: u32,
    seconds: u64,
    verify_log: bool,
) -> anyhow::Result<Value> {
    let authority = ChildAuthority::start(0).await?;
    let http = http_client()?;
    let mut fleet = ChildAgents::start_status_only(
        &authority.base,
        &authority.subscriber_key,
        agents,
        verify_log,
    )
    .await?;

    // Idle: heartbeats (and checkpoints when verifying) only.
    let r0 = read(&mut fleet).await?;
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let r1 = read(&mut fleet).await?;
    let idle_elapsed = idle_started.elapsed().as_secs_f64();

    // Events: session revocations at `rate`, each sent on its own task so that a slow answer
    // does not hold up the pace.
    let events = u64::from(rate) * seconds;
    let started = Instant::now();
    let mut paced = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    for i in 0..events {
        tick.tick().await;
        let (http, base, key) = (
            Arc::clone(&http),
            authority.base.clone(),
            authority.admin_key.clone(),
        );
        paced.spawn(async move {
            let body = json!({ "sid": format!("agent-cpu-{i}") });
            let answer = post_with_key(&http, &base, &key, "/v1/revoke/session", body).await?;
            answer["seq"].as_u64().context("seq")
        });
    }
    let mut last = 0;
    for done in paced.join_all().await {
        last = last.max(done?);
    }
    let sent_in = started.elapsed().as_secs_f64();
    let r2 = loop {
        let r = read(&mut fleet).await?;
        if r.applied >= last {
            break r;
        }
        if started.elapsed() > Duration::from_secs(seconds + 120) {
            bail!("the agents did not apply seq {last} within 2 minutes of the last revocation");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let events_elapsed = started.elapsed().as_secs_f64();

    let applied = (events as f64 * agents as f64).max(1.0);
    let idle_user_per_s = (r1.user - r0.user) / idle_elapsed;
    let idle_system_per_s = (r1.system - r0.system) / idle_elapsed;
    let user = r2.user - r1.user;
    let system = r2.system - r1.system;
    let net_user = user - idle_user_per_s * events_elapsed;
    let net_system = system - idle_system_per_s * events_elapsed;
    let us = |s: f64| round3(1e6 * s / applied);
    Ok(json!({ "agent_cpu": {
        "agents": agents,
        "rate": rate,
        "seconds": seconds,
        "verify_log": verify_log,
        "events": events,
        "sent_seconds": round3(sent_in),
        "applied_seconds": round3(events_elapsed),
        "idle_cpu_ms_per_s_user": round3(1e3 * idle_user_per_s),
        "idle_cpu_ms_per_s_system": round3(1e3 * idle_system_per_s),
        "cpu_us_per_event_user": us(user),
        "cpu_us_per_event_system": us(system),
        "cpu_us_per_event_total": us(user + system),
        "net_cpu_us_per_event_user": us(net_user),
        "net_cpu_us_per_event_system": us(net_system),
        "net_cpu_us_per_event_total": us(net_user + net_system),
        "reconnects": r2.reconnects.saturating_sub(r0.reconnects),
        "resyncs": r2.resyncs.saturating_sub(r0.resyncs),
    }}))
}
