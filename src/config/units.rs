//! Units in the config file: durations (`"10s"`) and sizes (`"20MiB"`).

use std::time::Duration;

/// Parses a duration string with a unit: `ms`, `s`, `m`, `h`, `d` (e.g. `"75s"`, `"12h"`, `"500ms"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. \"{text}s\" (units: ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: expected a whole number and a unit, e.g. \"10s\""))?;
    let millis = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}`: use ms, s, m, h or d"
            ));
        }
    }
    .ok_or_else(|| format!("duration `{text}` is too large"))?;
    Ok(Duration::from_millis(millis))
}

/// Parses a size string with a unit: `B`, `KiB`, `MiB`, `GiB` (e.g. `"16KiB"`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. \"{text}B\" (units: B, KiB, MiB, GiB)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: expected a whole number and a unit, e.g. \"20MiB\""))?;
    let factor: u64 = match unit.trim() {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`: use B, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// Parses a rate like `"10/s"` or `"600/m"` into requests per second and the period text.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let (count, per) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a rate: write e.g. \"10/s\" or \"600/m\""))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a rate: the count must be a whole number"))?;
    if count == 0 {
        return Err(format!("rate `{text}` must allow at least one request"));
    }
    let period = match per.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(format!("unknown rate period `{other}` in `{text}`: use s, m or h")),
    };
    Ok((count, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("75s").unwrap(), Duration::from_secs(75));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10y").unwrap_err().contains("unknown duration unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024B").unwrap(), 1024);
        assert_eq!(parse_size("16KiB").unwrap(), 16 * 1024);
        assert_eq!(parse_size("20MiB").unwrap(), 20 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("20MB").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("-1B").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10/s").unwrap(), (10, Duration::from_secs(1)));
        assert_eq!(parse_rate("600/m").unwrap(), (600, Duration::from_secs(60)));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("10/d").is_err());
    }
}
