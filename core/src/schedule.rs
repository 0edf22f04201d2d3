//! KL schedules: a factor on a KL term's weight that changes with the training step, set per
//! term in a spec's `training.kl_schedules` (`{"kl": {"type": "linear", "warmup_steps": 500}}`;
//! the key `"*"` covers every term without an entry of its own).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plugin::Progress;

/// The factor of one KL term over training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KlSchedule {
    /// The same factor at every step.
    Constant {
        /// The factor.
        #[schemars(range(min = 0.0))]
        value: f32,
    },
    /// Linear warm-up from `start` to `end` over the first `warmup_steps` steps, then `end`.
    Linear {
        /// Steps of the ramp.
        #[schemars(range(min = 1))]
        warmup_steps: u64,
        /// The factor at step 0.
        #[serde(default)]
        #[schemars(range(min = 0.0))]
        start: f32,
        /// The factor from the end of the ramp on.
        #[serde(default = "one")]
        #[schemars(range(min = 0.0))]
        end: f32,
    },
    /// Cyclical annealing (Fu et al. 2019): the run is cut into `cycles` equal cycles; within
    /// each, the factor rises linearly from 0 to `max` over the first `ramp_fraction` of the
    /// cycle, then stays at `max`.
    Cyclical {
        /// Number of cycles over the whole run (Fu et al. use 4).
        #[schemars(range(min = 1))]
        cycles: u64,
        /// Share of each cycle spent rising (Fu et al.'s R = 0.5).
        #[serde(default = "half")]
        #[schemars(range(min = 0.0, max = 1.0))]
        ramp_fraction: f32,
        /// The factor at the top of each cycle.
        #[serde(default = "one")]
        #[schemars(range(min = 0.0))]
        max: f32,
    },
    /// The official NVAE's per-epoch annealing (`nvib_transformers/train.py::kl_annealing`):
    /// epoch e (from 1) multiplies the term by entry e − 1 of [`kl_annealing`].
    PerEpoch {
        /// `constant`, `monotonic` (one cosine ramp over the first quarter of the epochs) or
        /// `cyclic` (four cycles, each ramping over its first half).
        annealing: Annealing,
    },
}

fn one() -> f32 {
    1.0
}
fn half() -> f32 {
    0.5
}

impl KlSchedule {
    /// The factor at `progress`.
    pub fn factor(&self, progress: Progress) -> f32 {
        match *self {
            KlSchedule::Constant { value } => value,
            KlSchedule::Linear {
                warmup_steps,
                start,
                end,
            } => {
                let t = (progress.step as f64 / warmup_steps as f64).min(1.0) as f32;
                start + (end - start) * t
            }
            KlSchedule::PerEpoch { annealing } => {
                let epochs = progress.epochs.max(1);
                kl_annealing(annealing, epochs as usize)[progress.epoch() as usize] as f32
            }
            KlSchedule::Cyclical {
                cycles,
                ramp_fraction,
                max,
            } => {
                // Fu et al.: τ = mod(t, ⌈T/M⌉) / (T/M); β = τ/R while τ ≤ R, else 1.
                let period = progress.total_steps as f64 / cycles as f64;
                if period <= 0.0 {
                    return max;
                }
                let tau = (progress.step % (period.ceil() as u64).max(1)) as f64 / period;
                let ramp = f64::from(ramp_fraction);
                let rising = if ramp > 0.0 {
                    (tau / ramp).min(1.0)
                } else {
                    1.0
                };
                max * rising as f32
            }
        }
    }
}

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

    fn at(step: u64, total_steps: u64) -> Progress {
        Progress {
            step,
            total_steps,
            epochs: 1,
        }
    }

    #[test]
    fn linear_warm_up_ramps_then_holds() {
        let s: KlSchedule =
            serde_json::from_str(r#"{"type": "linear", "warmup_steps": 4}"#).unwrap();
        let f: Vec<f32> = (0..6).map(|t| s.factor(at(t, 100))).collect();
        assert_eq!(f, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
    }

    #[test]
    fn cyclical_repeats_its_ramp_in_every_cycle() {
        let s: KlSchedule = serde_json::from_str(r#"{"type": "cyclical", "cycles": 2}"#).unwrap();
        // 16 steps, 2 cycles of 8, ramp over the first 4 steps of each.
        let f: Vec<f32> = (0..16).map(|t| s.factor(at(t, 16))).collect();
        let cycle = [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(f[..8], cycle);
        assert_eq!(f[8..], cycle);
    }

    #[test]
    fn constant_is_constant_and_unknown_fields_are_refused() {
        let s: KlSchedule = serde_json::from_str(r#"{"type": "constant", "value": 0.5}"#).unwrap();
        assert_eq!(s.factor(at(0, 10)), 0.5);
        assert_eq!(s.factor(at(9, 10)), 0.5);
        let bad = serde_json::from_str::<KlSchedule>(r#"{"type": "linear", "warmup": 3}"#);
        assert!(bad.is_err());
    }
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

    #[test]
    fn per_epoch_annealing_reads_the_epoch_of_the_step() {
        let s: KlSchedule =
            serde_json::from_str(r#"{"type": "per_epoch", "annealing": "cyclic"}"#).unwrap();
        let official = kl_annealing(Annealing::Cyclic, 8);
        // 8 epochs of 3 steps.
        for step in 0..24 {
            let p = Progress {
                step,
                total_steps: 24,
                epochs: 8,
            };
            assert_eq!(s.factor(p), official[(step / 3) as usize] as f32);
        }
    }
}
