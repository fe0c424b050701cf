//! Shamir's secret sharing over GF(2^8), byte for byte as Vault's `shamir` package.
//!
//! Field: the AES polynomial x^8+x^4+x^3+x+1 (0x11B). One random polynomial per
//! secret byte with the byte as intercept; every share is `y_1..y_n || x`, the x
//! coordinate last, x values a random permutation of 1..=255. Arithmetic is
//! constant-time (shift-and-xor with masks, inverse as a^254); all intermediate
//! buffers are zeroized.

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Why a split or combine was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// Bad parts/threshold.
    #[error("invalid seal configuration: {0}")]
    Config(&'static str),
    /// The shares cannot be combined.
    #[error("{0}")]
    Combine(&'static str),
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}

/// GF(2^8) multiplication mod 0x11B, constant time.
pub(crate) fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut r: u8 = 0;
    for _ in 0..8 {
        r ^= a & 0u8.wrapping_sub(b & 1);
        let hi = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1B & hi);
        b >>= 1;
    }
    r
}

/// Multiplicative inverse as a^254 (0 maps to 0).
fn inv(a: u8) -> u8 {
    let mut r = a;
    for _ in 0..6 {
        r = mul(r, r);
        r = mul(r, a);
    }
    mul(r, r)
}

fn random_bytes(rng: &SystemRandom, buf: &mut [u8]) -> Result<(), ShamirError> {
    rng.fill(buf).map_err(|_| ShamirError::Random)
}

/// A uniformly random permutation of 1..=255 (Fisher–Yates, rejection sampling).
fn random_x(rng: &SystemRandom) -> Result<Vec<u8>, ShamirError> {
    let mut xs: Vec<u8> = (1..=255).collect();
    for i in (1..xs.len()).rev() {
        let bound = (i + 1) as u16;
        let limit = 65536 - (65536 % u32::from(bound));
        let j = loop {
            let mut b = [0u8; 2];
            random_bytes(rng, &mut b)?;
            let v = u32::from(u16::from_be_bytes(b));
            if v < limit {
                break (v % u32::from(bound)) as usize;
            }
        };
        xs.swap(i, j);
    }
    Ok(xs)
}

/// Split `secret` into `parts` shares, any `threshold` of which recover it.
pub fn split(
    secret: &[u8],
    parts: usize,
    threshold: usize,
) -> Result<Vec<Zeroizing<Vec<u8>>>, ShamirError> {
    let rng = SystemRandom::new();
    let xs = random_x(&rng)?;
    let mut coeffs = Zeroizing::new(vec![0u8; secret.len() * threshold.saturating_sub(1)]);
    random_bytes(&rng, &mut coeffs)?;
    split_with(secret, parts, threshold, &xs, &coeffs)
}

/// `split` with given x values and coefficients (`coeffs[i*(t-1) + k]` is the
/// degree-(k+1) coefficient for secret byte i). Known-answer tests use it.
fn split_with(
    secret: &[u8],
    parts: usize,
    threshold: usize,
    xs: &[u8],
    coeffs: &[u8],
) -> Result<Vec<Zeroizing<Vec<u8>>>, ShamirError> {
    if parts < threshold {
        return Err(ShamirError::Config(
            "threshold cannot be larger than shares",
        ));
    }
    if parts > 255 {
        return Err(ShamirError::Config("shares cannot exceed 255"));
    }
    if threshold < 2 {
        return Err(ShamirError::Config("threshold must be at least 2"));
    }
    if secret.is_empty() {
        return Err(ShamirError::Config("cannot split an empty secret"));
    }
    let t1 = threshold - 1;
    let mut out = Vec::with_capacity(parts);
    for &x in xs.iter().take(parts) {
        let mut share = Zeroizing::new(Vec::with_capacity(secret.len() + 1));
        for (i, &s) in secret.iter().enumerate() {
            // Horner evaluation of s + c1 x + ... + c_{t-1} x^{t-1}.
            let c = &coeffs[i * t1..(i + 1) * t1];
            let mut y = 0u8;
            for &k in c.iter().rev() {
                y = mul(y, x) ^ k;
            }
            y = mul(y, x) ^ s;
            share.push(y);
        }
        share.push(x);
        out.push(share);
    }
    Ok(out)
}

/// Recover the secret from shares (Lagrange interpolation at 0).
pub fn combine(parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    if parts.len() < 2 {
        return Err(ShamirError::Combine(
            "less than two parts cannot be used to reconstruct the secret",
        ));
    }
    let len = parts[0].len();
    if len < 2 {
        return Err(ShamirError::Combine("parts must be at least two bytes"));
    }
    if parts.iter().any(|p| p.len() != len) {
        return Err(ShamirError::Combine("all parts must be the same length"));
    }
    let xs: Vec<u8> = parts.iter().map(|p| p[len - 1]).collect();
    for (i, &x) in xs.iter().enumerate() {
        if x == 0 || xs[..i].contains(&x) {
            return Err(ShamirError::Combine("duplicate or zero part detected"));
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    for (i, &xi) in xs.iter().enumerate() {
        // basis_i(0) = prod_{j != i} x_j / (x_j - x_i); subtraction is xor.
        let mut basis = 1u8;
        for (j, &xj) in xs.iter().enumerate() {
            if i != j {
                basis = mul(basis, mul(xj, inv(xj ^ xi)));
            }
        }
        for (b, &y) in secret.iter_mut().zip(&parts[i][..len - 1]) {
            *b ^= mul(y, basis);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_is_aes_polynomial() {
        assert_eq!(mul(0x80, 0x02), 0x1B);
        assert_eq!(mul(0x53, 0xCA), 0x01);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
        }
    }

    #[test]
    fn known_answer_matches_vault_layout() {
        let secret = b"unseal";
        let mut coeffs = Vec::new();
        for i in 0..secret.len() {
            coeffs.push(0x80u8.wrapping_add(i as u8));
            coeffs.push((0x1Fu32 * (i as u32 + 1) % 256) as u8);
        }
        let xs = [0x01, 0x80, 0xff, 0x02, 0x53];
        let shares = split_with(secret, 5, 3, &xs, &coeffs).unwrap();
        let hexes: Vec<String> = shares.iter().map(|s| hex::encode(&s[..])).collect();
        assert_eq!(
            hexes,
            [
                "ead1ac9a7e5301",
                "db1c7eb4924380",
                "da7bb31f10a7ff",
                "128f039328a302",
                "278b54f5d96353"
            ]
        );
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let got = combine(&[&shares[a], &shares[b], &shares[c]]).unwrap();
                    assert_eq!(&got[..], secret);
                }
            }
        }
    }

    #[test]
    fn any_threshold_subset_recovers_and_fewer_do_not() {
        let secret: Vec<u8> = (0..32).collect();
        let shares = split(&secret, 5, 3).unwrap();
        assert!(shares.iter().all(|s| s.len() == 33));
        let got = combine(&[&shares[4], &shares[0], &shares[2]]).unwrap();
        assert_eq!(&got[..], &secret[..]);
        let all: Vec<&[u8]> = shares.iter().map(|s| &s[..]).collect();
        assert_eq!(&combine(&all).unwrap()[..], &secret[..]);
        let two = combine(&[&shares[0], &shares[1]]).unwrap();
        assert_ne!(&two[..], &secret[..]);
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(split(b"x", 2, 3).is_err());
        assert!(split(b"x", 3, 1).is_err());
        assert!(split(b"", 3, 2).is_err());
        assert!(split(b"x", 256, 2).is_err());
        let s = split(b"abc", 3, 2).unwrap();
        assert!(combine(&[&s[0]]).is_err());
        assert!(combine(&[&s[0], &s[0]]).is_err());
        assert!(combine(&[&s[0], &s[1][..3]]).is_err());
        assert!(combine(&[&[1, 0], &[2, 5]]).is_err(), "zero x");
    }

    #[test]
    fn x_values_are_a_permutation() {
        let mut xs = random_x(&SystemRandom::new()).unwrap();
        xs.sort();
        assert_eq!(xs, (1..=255).collect::<Vec<u8>>());
    }
}
