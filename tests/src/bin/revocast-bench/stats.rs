//! Percentiles and the human table.

use serde_json::Value;

/// The `p`-th percentile (0–100) of `sorted` by nearest rank; 0 for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Round to 3 significant decimals for display and JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Print `{"scenario": {"figure": value, …}}` as a two-column table.
pub fn print_table(report: &Value) {
    let Some(scenarios) = report.as_object() else {
        println!("{report}");
        return;
    };
    for (scenario, figures) in scenarios {
        println!("{scenario}");
        if let Some(figures) = figures.as_object() {
            let width = figures.keys().map(String::len).max().unwrap_or(0);
            for (name, value) in figures {
                println!("  {name:<width$}  {value}");
            }
        }
    }
}

/// Resident memory of one process, from `/proc/PID/status`, split so that growth can be
/// attributed: heap and other private memory (`anon`) against mapped files and shared memory
/// (`file`, e.g. SQLite's WAL index).
#[derive(Clone, Copy, Debug, Default)]
pub struct Resident {
    pub total: u64,
    pub anon: u64,
    pub file: u64,
}

/// The [`Resident`] memory of process `pid`, in bytes.
pub fn resident(pid: u32) -> anyhow::Result<Resident> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .ok_or_else(|| anyhow::anyhow!("no {name} for pid {pid}"))?
            .parse()?;
        Ok(kib * 1024)
    };
    Ok(Resident {
        total: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")? + field("RssShmem:")?,
    })
}

/// Resident memory of process `pid` in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    Ok(resident(pid)?.total)
}

/// Microseconds since the Unix epoch: a clock both bench processes on one machine share.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
