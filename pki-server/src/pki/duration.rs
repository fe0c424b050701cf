//! Vault's duration syntax (`parseutil.ParseDurationSecond`) and Go's
//! `time.Duration.String` form used in Vault's warnings.
//!
//! Accepted: integer seconds (`3600`, as a number or a string), Go durations
//! (`1h30m`, `2160h0m0s`, `1.5h`, `300ms`) and whole days (`30d`). Results are
//! truncated to whole seconds, as Vault's `TypeDurationSecond` fields are.
//! Negative durations are refused: no PKI parameter takes one.

use super::error::{PkiError, Result};
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A duration given as a number of seconds (a JSON number). Negative is refused.
pub fn from_seconds(secs: i64) -> Result<Duration> {
    u64::try_from(secs)
        .map(Duration::from_secs)
        .map_err(|_| PkiError::InvalidDuration(format!("invalid duration {secs}: negative")))
}

/// Parse a duration string in Vault's syntax; empty means zero.
pub fn parse(input: &str) -> Result<Duration> {
    let s = input.trim();
    let bad = || PkiError::InvalidDuration(format!("time: invalid duration {input:?}"));
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    if let Some(days) = s.strip_suffix('d') {
        let days: u64 = days.parse().map_err(|_| bad())?;
        return days
            .checked_mul(86_400)
            .map(Duration::from_secs)
            .ok_or_else(bad);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().map(Duration::from_secs).map_err(|_| bad());
    }
    let nanos = parse_go(s).ok_or_else(bad)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| bad())?;
    Ok(Duration::from_secs(secs))
}

/// Go's `time.ParseDuration` for non-negative values, in nanoseconds.
fn parse_go(s: &str) -> Option<u128> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut value = int.checked_mul(scale)?;
        // Fraction digits beyond nanosecond precision cannot matter.
        let mut place = scale;
        for d in frac.bytes().take(30) {
            place /= 10;
            value = value.checked_add(u128::from(d - b'0') * place)?;
        }
        total = total.checked_add(value)?;
        rest = tail;
    }
    // Go refuses durations above ~292 years (int64 nanoseconds).
    (total <= i64::MAX as u128).then_some(total)
}

/// Go's `time.Duration.String()`: `768h0m0s`, `1m30s`, `0s`, `300ms`.
pub fn format_go(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}µs", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<u64>) {
        let got = parse(input).ok().map(|d| d.as_secs());
        assert_eq!(got, expected, "parse({input:?})");
    }

    #[test]
    fn parses_vault_durations() {
        check("", Some(0));
        check("0", Some(0));
        check("3600", Some(3600));
        check(" 60 ", Some(60));
        check("1h30m", Some(5400));
        check("2160h0m0s", Some(2160 * 3600));
        check("1.5h", Some(5400));
        check("300ms", Some(0));
        check("1500ms", Some(1));
        check("90s", Some(90));
        check("30d", Some(30 * 86_400));
        check("0d", Some(0));
        check("1h1m1s1ms", Some(3661));
        check(".5m", Some(30));
        check("+5s", Some(5));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "abc", "1x", "-5", "-1h", "h", "1.5d", "1..5h", "1h-", "d", "5 s", "1e3s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must not parse");
        }
        assert!(from_seconds(-1).is_err());
        assert_eq!(from_seconds(7).unwrap(), Duration::from_secs(7));
    }

    #[test]
    fn formats_like_go() {
        let f = |s| format_go(Duration::from_secs(s));
        assert_eq!(f(0), "0s");
        assert_eq!(f(768 * 3600), "768h0m0s");
        assert_eq!(f(72 * 3600), "72h0m0s");
        assert_eq!(f(90), "1m30s");
        assert_eq!(f(5), "5s");
        assert_eq!(format_go(Duration::from_millis(300)), "300ms");
        assert_eq!(format_go(Duration::from_millis(1500)), "1.5s");
    }
}
