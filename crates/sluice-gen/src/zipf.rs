//! Zipf-skewed ranks, as the workloads draw users, products, merchants and cards.

use rand::Rng;
use rand_distr::{Distribution, Zipf};

pub(crate) fn zipf(n: u32, skew: f64) -> Zipf<f64> {
    // Only called with the workloads' constants, for which n >= 1 and skew >= 0 hold.
    Zipf::new(f64::from(n), skew).expect("Zipf parameters of the workload are valid")
}

/// A rank in 1..=n drawn from `distribution` (a Zipf over n).
pub(crate) fn rank<R: Rng>(distribution: &Zipf<f64>, n: u32, rng: &mut R) -> u32 {
    // rand_distr 0.5 can, through float rounding, return n + 1 (rust-random/rand_distr#54);
    // clamping keeps the index in range. The float-to-int cast saturates.
    (distribution.sample(rng) as u32).clamp(1, n)
}
