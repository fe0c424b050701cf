//! Time as a parameter: every expiry and validity computation in [`crate::pki`]
//! asks a [`Clock`], so tests pin "now" with [`FixedClock`] instead of sleeping.

use std::sync::Mutex;
use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current UTC time.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that says what it is told: for tests.
#[derive(Debug)]
pub struct FixedClock(Mutex<OffsetDateTime>);

impl FixedClock {
    /// A clock stopped at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(Mutex::new(at))
    }

    /// A clock stopped at the whole second `unix` seconds after the epoch.
    ///
    /// Out-of-range values clamp to the epoch.
    pub fn at_unix(unix: i64) -> Self {
        Self::new(OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    /// Move the clock to `at`.
    pub fn set(&self, at: OffsetDateTime) {
        // A poisoned lock still holds a valid time: take it over.
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *g = at;
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *g = g.saturating_add(time::Duration::try_from(by).unwrap_or(time::Duration::MAX));
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let c = FixedClock::at_unix(1_700_000_000);
        assert_eq!(c.now().unix_timestamp(), 1_700_000_000);
        c.advance(std::time::Duration::from_secs(60));
        assert_eq!(c.now().unix_timestamp(), 1_700_000_060);
        c.set(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(c.now(), OffsetDateTime::UNIX_EPOCH);
        assert!(SystemClock.now().year() >= 2024);
    }
}
