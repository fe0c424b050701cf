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

/// A uniform number in `[0, 1)` from the system's CSPRNG: the one source of
/// jitter for every retry and wait of this program.
pub fn rand_unit() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// When to look at a token of `ttl` seconds again (seconds from now): at half
/// its TTL; None if it never expires (TTL 0).
pub fn token_check(ttl: u64) -> Option<u64> {
    (ttl > 0).then(|| (ttl / 2).max(1))
}

/// After a failed token renewal or login: retry in 30 to 60 seconds (`rand`
/// in `[0, 1)`), so nodes that failed together do not retry together.
pub fn token_retry_s(rand: f64) -> u64 {
    30 + (30.0 * rand.clamp(0.0, 1.0)) as u64
}

/// After `failures` failed renewal rounds in a row (`renew --watch`): the
/// seconds to wait, 5 s doubling to 5 min, full jitter, at least one.
pub fn round_retry_s(failures: u32, rand: f64) -> u64 {
    (backoff_ms(failures, 5_000, 300_000, rand) / 1000).max(1)
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
        token_check(renewed_ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_spread_over_the_whole_jitter_range() {
        // renew --watch used a fixed 0.5 here: every node that failed
        // together retried together.
        let spread: std::collections::BTreeSet<u64> = [0.0, 0.25, 0.5, 0.75, 0.999]
            .iter()
            .map(|r| round_retry_s(6, *r))
            .collect();
        assert_eq!(spread.len(), 5, "{spread:?}");
        assert_eq!(round_retry_s(6, 0.0), 1);
        assert!(round_retry_s(6, 0.999) >= 299, "capped at 5 min");
        assert_eq!(round_retry_s(0, 0.999), 4);
        let retries: std::collections::BTreeSet<u64> =
            [0.0, 0.5, 0.99].iter().map(|r| token_retry_s(*r)).collect();
        assert_eq!(retries.into_iter().collect::<Vec<_>>(), [30, 45, 59]);
        let draws: std::collections::BTreeSet<u64> =
            (0..64).map(|_| (rand_unit() * 1e6) as u64).collect();
        assert!(draws.len() > 60, "rand_unit repeats: {draws:?}");
        assert!(
            (0..1000)
                .map(|_| rand_unit())
                .all(|r| (0.0..1.0).contains(&r))
        );
    }

    #[test]
    fn tokens_are_looked_at_again_at_half_their_ttl() {
        assert_eq!(token_check(0), None);
        assert_eq!(token_check(1), Some(1));
        assert_eq!(token_check(3600), Some(1800));
    }

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
