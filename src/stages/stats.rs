//! The small statistics the evaluation stages report: proportions with a Wilson 95% interval,
//! rank correlations (Spearman's ρ on mid-ranks, Kendall's τ-b) and a seeded percentile
//! bootstrap of a mean. Each is a few lines of textbook arithmetic on at most a few thousand
//! numbers; written here so their tie handling is stated and tested next to the metrics that
//! use them, and so the same inputs give the same bytes on every machine (sequential sums, a
//! ChaCha stream drawn as `u32`s).
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The standard normal quantile for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// The Wilson score interval of `k` successes in `n` trials (None when `n` is 0). Unlike the
/// normal approximation it stays inside [0, 1] and is sensible at k = 0 or k = n, which small
/// evaluation sets hit.
pub fn wilson(k: usize, n: usize) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let (k, n) = (k.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // at k = 0 and k = n the bound is exactly 0 or 1; rounding would leave it a hair inside
    Some(Interval {
        lo: if k == 0.0 {
            0.0
        } else {
            (centre - half).max(0.0)
        },
        hi: if k == n {
            1.0
        } else {
            (centre + half).min(1.0)
        },
    })
}

/// 1-based ranks, tied values sharing the mean of the ranks they span (mid-ranks).
pub fn mid_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        // positions i..=j (0-based) hold ranks i+1..=j+1
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Pearson's correlation; None when either side is constant (or fewer than two values).
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's ρ: Pearson's correlation of the mid-ranks (the tie-corrected form). None when
/// either side is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&mid_ranks(x), &mid_ranks(y))
}

/// Kendall's τ-b: (concordant − discordant) / √((n₀ − tiesₓ)(n₀ − ties_y)) over all n₀ pairs,
/// a pair tied on one side counting in neither concordant nor discordant. None when either side
/// is constant (the denominator is 0).
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    let (mut conc, mut disc, mut tx, mut ty, mut pairs) = (0i64, 0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            pairs += 1;
            let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
            if dx == 0.0 {
                tx += 1;
            }
            if dy == 0.0 {
                ty += 1;
            }
            if dx != 0.0 && dy != 0.0 {
                if (dx > 0.0) == (dy > 0.0) {
                    conc += 1;
                } else {
                    disc += 1;
                }
            }
        }
    }
    let denom = ((pairs - tx) as f64 * (pairs - ty) as f64).sqrt();
    if denom == 0.0 {
        return None;
    }
    Some(((conc - disc) as f64 / denom).clamp(-1.0, 1.0))
}

/// The mean of `values` (None when empty).
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Resamples the bootstrap draws by default (percentiles at 2.5% and 97.5% are then stable to
/// about ±0.005 on a correlation).
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// The bootstrap's seed: fixed, so an evaluation's interval is part of its reproducible bytes.
pub const BOOTSTRAP_SEED: u64 = 0x5eed;

/// A percentile bootstrap 95% interval of the mean of `values` (each value one independent
/// unit, e.g. a prompt's correlation): `resamples` means of `values.len()` draws with
/// replacement from a ChaCha8 stream seeded with `seed`, then their 2.5% and 97.5% quantiles
/// (linear interpolation between order statistics). None when `values` is empty.
pub fn bootstrap_mean(values: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    if values.is_empty() || resamples == 0 {
        return None;
    }
    let n = values.len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let mut s = 0.0;
            for _ in 0..n {
                s += values[rng.gen_range(0..n as u32) as usize];
            }
            s / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (resamples - 1) as f64;
        let (i, frac) = (pos.floor() as usize, pos.fract());
        let next = means[(i + 1).min(resamples - 1)];
        means[i] + frac * (next - means[i])
    };
    Some(Interval {
        lo: q(0.025),
        hi: q(0.975),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn wilson_matches_hand_computed_values() {
        // 8 of 10: p = 0.8, z² = 3.8415; centre = (0.8 + 0.19207)/1.38415 = 0.71673,
        // half = 1.95996/1.38415 · √(0.016 + 0.0096037) = 0.22663
        let i = wilson(8, 10).unwrap();
        assert!(
            (i.lo - 0.4902).abs() < 1e-4 && (i.hi - 0.9433).abs() < 1e-4,
            "{i:?}"
        );
        // 0 of 5 starts at 0 and is not degenerate
        let z = wilson(0, 5).unwrap();
        assert!(z.lo == 0.0 && (z.hi - 0.4345).abs() < 1e-4, "{z:?}");
        let all = wilson(5, 5).unwrap();
        assert!(all.hi == 1.0 && (all.lo - 0.5655).abs() < 1e-4, "{all:?}");
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn ranks_and_correlations_with_ties() {
        assert_eq!(mid_ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        // x = 1,2,3,4; y = 1,3,2,4: one discordant pair (2,3) of 6 → τ = (5 − 1)/6
        let (x, y) = ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]);
        assert!(close(kendall_tau_b(&x, &y).unwrap(), 4.0 / 6.0));
        // ρ = 1 − 6Σd²/(n(n²−1)) = 1 − 6·2/60 = 0.8 (no ties)
        assert!(close(spearman(&x, &y).unwrap(), 0.8));
        // ties in y: y = 1,1,2,2. Pairs: (1,2) tied in y; (3,4) tied in y; the other 4
        // concordant → τ-b = 4/√(6·4) = 0.8165
        let yt = [1.0, 1.0, 2.0, 2.0];
        assert!(close(kendall_tau_b(&x, &yt).unwrap(), 4.0 / 24f64.sqrt()));
        // mid-ranks of yt: 1.5,1.5,3.5,3.5 → Pearson with 1..4 = 0.8944 (= 2/√5)
        assert!(close(spearman(&x, &yt).unwrap(), 2.0 / 5f64.sqrt()));
        // a constant side has no correlation
        assert_eq!(kendall_tau_b(&x, &[2.0; 4]), None);
        assert_eq!(spearman(&x, &[2.0; 4]), None);
        assert_eq!(spearman(&[1.0], &[1.0]), None);
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let v: Vec<f64> = (0..50).map(|i| (i % 7) as f64 / 7.0).collect();
        let a = bootstrap_mean(&v, 500, 1).unwrap();
        assert_eq!(Some(a), bootstrap_mean(&v, 500, 1));
        assert_ne!(Some(a), bootstrap_mean(&v, 500, 2));
        assert!(a.contains(mean(&v).unwrap()) && a.lo < a.hi, "{a:?}");
        // one value: every resample is that value
        let one = bootstrap_mean(&[0.25], 100, 0).unwrap();
        assert!(close(one.lo, 0.25) && close(one.hi, 0.25));
        assert_eq!(bootstrap_mean(&[], 100, 0), None);
    }

    proptest! {
        #[test]
        fn identical_rankings_correlate_perfectly(xs in prop::collection::vec(-5i32..5, 2..12)) {
            let x: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
            let flipped: Vec<f64> = x.iter().map(|v| -v).collect();
            match (spearman(&x, &x), kendall_tau_b(&x, &x)) {
                (Some(r), Some(t)) => {
                    prop_assert!(close(r, 1.0) && close(t, 1.0));
                    prop_assert!(close(spearman(&x, &flipped).unwrap(), -1.0));
                    prop_assert!(close(kendall_tau_b(&x, &flipped).unwrap(), -1.0));
                }
                (None, None) => prop_assert!(x.iter().all(|v| *v == x[0])),
                other => prop_assert!(false, "{other:?}"),
            }
        }

        #[test]
        fn wilson_brackets_the_proportion(n in 1usize..500, k in 0usize..500) {
            let k = k.min(n);
            let i = wilson(k, n).unwrap();
            let p = k as f64 / n as f64;
            prop_assert!(0.0 <= i.lo && i.lo <= p + 1e-12 && p <= i.hi + 1e-12 && i.hi <= 1.0);
        }
    }
}
