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

/// CPU time (user and system, in seconds) process `pid` has used so far, from /proc.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let (user, system) = cpu_split(pid)?;
    Ok(user + system)
}

/// CPU time process `pid` has used so far, user and system apart, in seconds, from /proc.
pub fn cpu_split(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces:
    // utime and stime are the 14th and 15th fields of the whole line.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    // Fields 14 and 15 of the line are 12 and 13 after the name (state is field 3 → index 0).
    let hz = clock_ticks_per_second();
    Ok((ticks(11)? as f64 / hz, ticks(12)? as f64 / hz))
}

/// The kernel's clock ticks per second for /proc times (`getconf CLK_TCK`): 100 on every
/// Linux this runs on, read once to be sure.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Microseconds since the Unix epoch: a clock both bench processes on one machine share.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
