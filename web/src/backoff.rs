//! Reconnect delays: exponential backoff with jitter, plus the small random source the
//! client uses for jitter and message ids.
//!
//! Jitter keeps a crowd of clients that lost the same server from reconnecting in lock
//! step when it comes back; the cap keeps a player from waiting long once it is back.

/// Exponential backoff: attempt `n` waits between half and all of `min(cap, base·2ⁿ)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    base_ms: f64,
    cap_ms: f64,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(500.0, 15_000.0)
    }
}

impl Backoff {
    pub fn new(base_ms: f64, cap_ms: f64) -> Backoff {
        Backoff {
            base_ms,
            cap_ms,
            attempt: 0,
        }
    }

    /// The next delay; `unit` is a random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> f64 {
        let exp = (self.base_ms * 2f64.powi(self.attempt.min(30) as i32)).min(self.cap_ms);
        self.attempt = self.attempt.saturating_add(1);
        // "Equal jitter": never close to zero, so a dead server is not hammered.
        exp / 2.0 + exp / 2.0 * unit.clamp(0.0, 1.0)
    }

    /// A connection held long enough: start again from the base delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// xorshift64*: fast, tiny, good enough for jitter and for ids that only have to be
/// unique per (sender, room). Seeded from the browser's crypto source.
#[derive(Clone, Debug, PartialEq)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point.
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `len` characters of `[A-Za-z0-9]`.
    pub fn alnum(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[(self.next_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds_and_cap() {
        let mut b = Backoff::new(500.0, 8_000.0);
        let mut rng = Rng::new(7);
        let expected_caps = [500.0, 1000.0, 2000.0, 4000.0, 8000.0, 8000.0, 8000.0];
        for cap in expected_caps {
            let d = b.next_delay(rng.unit());
            assert!(
                d >= cap / 2.0 && d <= cap,
                "{d} not in [{}, {cap}]",
                cap / 2.0
            );
        }
        // Extremes of the jitter.
        let mut b = Backoff::new(500.0, 8_000.0);
        assert_eq!(b.next_delay(0.0), 250.0);
        assert_eq!(b.next_delay(1.0), 1000.0);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.next_delay(1.0), 500.0);
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::default();
        for _ in 0..1000 {
            let d = b.next_delay(0.5);
            assert!(d.is_finite() && d <= 15_000.0);
        }
    }

    #[test]
    fn jitter_spreads_clients() {
        let mut rng = Rng::new(42);
        let delays: Vec<f64> = (0..50)
            .map(|_| Backoff::default().next_delay(rng.unit()))
            .collect();
        let min = delays.iter().cloned().fold(f64::MAX, f64::min);
        let max = delays.iter().cloned().fold(0.0, f64::max);
        assert!(max - min > 100.0, "jitter too narrow: {min}..{max}");
    }

    #[test]
    fn rng_ids_are_alphanumeric_and_distinct() {
        let mut rng = Rng::new(0);
        let a = rng.alnum(32);
        let b = rng.alnum(32);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        for _ in 0..1000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
