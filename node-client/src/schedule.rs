//! Pure timing: when to renew a certificate and how long to back off.
//!
//! Renewal happens at a fraction of the lifetime (default 2/3) with jitter, so
//! a fleet issued at once does not renew at once; retries back off
//! exponentially up to a cap, with full jitter (AWS's recommendation). Times
//! are Unix seconds; randomness is a parameter in `[0, 1)`.

/// When to renew a certificate valid from `not_before` to `not_after`:
/// at `fraction` of its lifetime, moved by up to ±`jitter` of the lifetime
/// (`rand` in `[0, 1)`), never after `not_after - 1`.
pub fn renew_at(not_before: i64, not_after: i64, fraction: f64, jitter: f64, rand: f64) -> i64 {
    let life = (not_after - not_before).max(1) as f64;
    let f = fraction.clamp(0.05, 0.95);
    let j = jitter.clamp(0.0, 0.2) * (2.0 * rand.clamp(0.0, 1.0) - 1.0);
    let at = not_before as f64 + life * (f + j).clamp(0.05, 0.95);
    (at as i64).min(not_after - 1)
}

/// The wait before retry `attempt` (0-based): `base * 2^attempt`, capped at
/// `cap`, scaled by `rand` in `[0, 1)` (full jitter), at least one millisecond.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, rand: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.min(32));
    let top = exp.min(cap_ms);
    ((top as f64) * rand.clamp(0.0, 1.0)).max(1.0) as u64
}

/// What to do with a login token after `renew-self` answered `renewed_ttl`
/// seconds for a token that had `issued_ttl` at login: log in again when it
/// can no longer be extended to half its first lifetime (it nears its max
/// TTL) or has less than a minute left; otherwise renew again at half the
/// new TTL (`Some(seconds from now)`).
pub fn token_renewal(issued_ttl: u64, renewed_ttl: u64) -> Option<u64> {
    if renewed_ttl < 60 || renewed_ttl < issued_ttl / 2 {
        None
    } else {
        Some((renewed_ttl / 2).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_again_when_renewal_stops_extending_the_token() {
        for (issued, renewed, want) in [
            (3600, 3600, Some(1800)),
            (3600, 1800, Some(900)),
            (3600, 1799, None),
            (3600, 30, None),
            (100, 59, None),
            (100, 60, Some(30)),
        ] {
            assert_eq!(token_renewal(issued, renewed), want, "{issued} {renewed}");
        }
    }

    #[test]
    fn renews_at_two_thirds_with_bounded_jitter() {
        for (nb, na, rand, want) in [
            (0, 300, 0.5, 200),
            (0, 30, 0.5, 20),
            (1000, 1090, 0.5, 1060),
        ] {
            assert_eq!(renew_at(nb, na, 2.0 / 3.0, 0.1, rand), want, "{nb}..{na}");
        }
        // Jitter moves it by at most 10% of the lifetime either way.
        assert_eq!(renew_at(0, 300, 2.0 / 3.0, 0.1, 0.0), 170);
        assert_eq!(renew_at(0, 300, 2.0 / 3.0, 0.1, 0.999_999), 229);
        // Never at or after expiry, even for silly inputs.
        assert!(renew_at(0, 2, 0.99, 0.2, 0.99) < 2);
    }

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff_ms(0, 500, 30_000, 1.0), 500);
        assert_eq!(backoff_ms(3, 500, 30_000, 1.0), 4000);
        assert_eq!(backoff_ms(10, 500, 30_000, 1.0), 30_000);
        assert_eq!(backoff_ms(63, 500, 30_000, 0.5), 15_000);
        assert_eq!(backoff_ms(2, 500, 30_000, 0.0), 1);
    }
}
