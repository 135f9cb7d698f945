//! Durations as the binaries' flags and `REVOCAST_*` variables spell them.

use std::time::Duration;

/// Whole seconds (`3600`) or a humantime duration (`500ms`, `15m`, `1h 30m`): the
/// `value_parser` of every duration flag of the authority and the agent.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (use seconds or e.g. 500ms, 15m, 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_units() {
        assert_eq!(parse_duration("900"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration(" 5 "), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        let err = parse_duration("soon").unwrap_err();
        assert!(err.contains("use seconds"), "{err}");
        assert!(parse_duration("-1").is_err());
    }
}
