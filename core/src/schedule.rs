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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: u64, total_steps: u64) -> Progress {
        Progress { step, total_steps }
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
}
