//! The official per-epoch KL annealing factors (`nvib_transformers/train.py::kl_annealing`,
//! spec §D): epoch e (1-based) multiplies its KL term by entry e − 1.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a KL term's weight changes over the epochs of training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Annealing {
    /// Weight 1 in every epoch (the official default).
    #[default]
    Constant,
    /// One cosine ramp 0 → 1 over the first quarter of the epochs, then 1.
    Monotonic,
    /// Four cycles, each a cosine ramp 0 → 1 over its first half, then 1.
    Cyclic,
}

/// The factor of each of `epochs` epochs, reproducing the official float stepping: with
/// period = epochs / cycles and step = 1 / (period · ratio), v = 0, step, 2·step, … while
/// v ≤ 1 writes 0.5 − 0.5·cos(πv) to entry ⌊i + c·period⌋ (i = the step count in cycle c);
/// every other entry is 1. This can write a ramp value late, or leave it out, when period is
/// not an integer (e.g. cyclic over 10 epochs gives 0, 0.905, 0, 0.905, 1, 0, …).
pub fn kl_annealing(kind: Annealing, epochs: usize) -> Vec<f64> {
    let mut factors = vec![1.0; epochs];
    let (cycles, ratio) = match kind {
        Annealing::Constant => return factors,
        Annealing::Monotonic => (1, 0.25),
        Annealing::Cyclic => (4, 0.5),
    };
    let period = epochs as f64 / f64::from(cycles);
    let step = 1.0 / (period * ratio);
    for cycle in 0..cycles {
        let (mut v, mut i) = (0.0_f64, 0.0_f64);
        while v <= 1.0 {
            // Python's int() truncates; the official code would raise past the end (it never
            // gets there for these ratios), so such an index is ignored.
            let index = (i + f64::from(cycle) * period) as usize;
            if let Some(f) = factors.get_mut(index) {
                *f = 0.5 - 0.5 * (v * std::f64::consts::PI).cos();
            }
            v += step;
            i += 1.0;
        }
    }
    factors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramps_start_at_zero_and_reach_one() {
        assert_eq!(kl_annealing(Annealing::Constant, 3), vec![1.0; 3]);
        let m = kl_annealing(Annealing::Monotonic, 8);
        assert_eq!(m[0], 0.0);
        assert!((m[1] - 0.5).abs() < 1e-12, "{m:?}");
        assert_eq!(m[2..], [1.0; 6]);
        let cyc = kl_annealing(Annealing::Cyclic, 8);
        assert_eq!(cyc, vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        assert!(kl_annealing(Annealing::Cyclic, 0).is_empty());
        assert_eq!(kl_annealing(Annealing::Cyclic, 1), vec![0.0]);
    }

    #[test]
    fn the_kinds_are_snake_case_in_specs() {
        let k: Annealing = serde_json::from_str("\"monotonic\"").unwrap();
        assert_eq!(k, Annealing::Monotonic);
        assert_eq!(
            serde_json::to_string(&Annealing::Cyclic).unwrap(),
            "\"cyclic\""
        );
    }
}
