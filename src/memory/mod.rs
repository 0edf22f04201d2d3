//! The activation memory of a training step, measured before the run starts, so that a batch
//! that does not fit is a one-line error naming `training.batch_size` and the estimate instead
//! of an allocation that aborts the process after the run folder was written.
//!
//! The model's parameters are counted by [`vaezoo_core::params::ParamBuilder`] as it builds;
//! what a step allocates besides (activations, the tape, gradients) depends on every plugin, so
//! it is measured rather than modelled: one training step's forward and backward pass (no
//! optimiser update, its own random numbers) on one example and on that example twice, with the
//! counting allocator of [`meter`]. A step's memory grows linearly with its rows, so the two give
//! a fixed part and a part per row. Text rows cost more the longer the batch's longest sentence;
//! a row's memory grows at most with the square of its length (attention), which bounds the
//! longest sentence's cost from a shorter one, and it is measured where that bound does not fit.

pub mod meter;

use std::any::TypeId;

use vaezoo_core::custom_op::take_backward_failure;
use vaezoo_core::dfdx::prelude::{Backward, Cpu};
use vaezoo_core::params::{gigabytes, ParamStore};
use vaezoo_core::plugin::{Ctx, Mode, Observation, Progress};
use vaezoo_core::process::{memory_limit, MAX_MEMORY_VAR};
use vaezoo_core::rng::seeded;
use vaezoo_core::spec::TrainingSpec;
use vaezoo_core::Backend;

use crate::data::Dataset;
use crate::model::Model;
use crate::{Error, Result};

/// What one training step allocates: at most the larger of two linear costs in its rows,
/// each a fixed part plus a part per row of a batch as long as the data's longest example.
/// The step's peak comes where gradients outweigh activations for a small batch and where the
/// activations do for a large one, so one line is measured on one and two rows and the other
/// where the rows' part is about the fixed part ([`measure_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepMemory {
    /// `(fixed, per_row)` bytes of each line.
    lines: [(u64, u64); 2],
}

impl StepMemory {
    /// One line: `fixed` bytes plus `per_row` bytes a row.
    pub fn linear(fixed: u64, per_row: u64) -> Self {
        Self {
            lines: [(fixed, per_row); 2],
        }
    }

    /// The line through the peaks `a` on `k` rows and `b` on `2k`, and `self`'s lines.
    fn with_line(self, k: u64, a: u64, b: u64) -> Self {
        let per_row = b.saturating_sub(a) / k.max(1);
        let fixed = a.saturating_sub(per_row.saturating_mul(k));
        Self {
            lines: [self.lines[0], (fixed, per_row)],
        }
    }

    /// Every part per row multiplied by `factor` (rows of other lengths).
    fn scaled(self, factor: f64) -> Self {
        let scale = |v: u64| (v as f64 * factor).min(u64::MAX as f64) as u64;
        Self {
            lines: self.lines.map(|(fixed, per_row)| (fixed, scale(per_row))),
        }
    }

    /// The bytes of a step on `rows` rows.
    pub fn bytes(&self, rows: usize) -> u64 {
        let line = |&(fixed, per_row): &(u64, u64)| {
            fixed.saturating_add(per_row.saturating_mul(rows as u64))
        };
        self.lines.iter().map(line).max().unwrap_or(0)
    }

    /// The most rows whose step fits in `budget` bytes (at least 1).
    pub fn rows_within(&self, budget: u64) -> usize {
        let line = |&(fixed, per_row): &(u64, u64)| budget.saturating_sub(fixed) / per_row.max(1);
        let rows = self.lines.iter().map(line).min().unwrap_or(0);
        usize::try_from(rows).unwrap_or(usize::MAX).max(1)
    }
}

/// The bytes this process has left for a training step's activations: the memory it may use
/// ([`memory_limit`]) less what is live now, less `pending` bytes still to be allocated (the
/// gradient buffers of the first step), less a tenth (at least 256 MiB, at most half) for what
/// the heap does not count (stacks, the program, the allocator's own). `None` where the memory
/// is not known or the counting allocator is not installed.
pub fn step_budget(pending: u64) -> Option<u64> {
    let limit = memory_limit()?;
    let live = meter::live()? as u64;
    let headroom = (limit / 10).max(256 << 20).min(limit / 2);
    Some(limit.saturating_sub(headroom + live + pending))
}

/// [`step_budget`] where the device's memory is the host heap the meter counts: `None` on the
/// GPU.
fn host_budget<D: Backend>(pending: u64) -> Option<u64> {
    (TypeId::of::<D>() == TypeId::of::<Cpu>())
        .then(|| step_budget(pending))
        .flatten()
}

/// Checks that a training step of `training.batch_size` rows of `data` fits in the memory this
/// process may use, `pending` bytes besides still to be allocated: measures the step
/// ([`measure_step`]) and refuses with the estimate where it does not fit. Nothing is checked
/// on the GPU, or where the memory or the counting allocator is not there
/// ([`step_budget`]).
pub fn check_step_fits<D: Backend>(
    params: &ParamStore<D>,
    model: &Model,
    data: &Dataset,
    training: &TrainingSpec,
    pending: u64,
) -> Result<()> {
    let Some(budget) = host_budget::<D>(pending) else {
        return Ok(());
    };
    let rows = training.batch_size.min(data.len()).max(1);
    let lengths = row_lengths(data);
    let observe = |rows: &[usize]| data.observation(params.device(), rows);
    let Some(step) = measure_step(params, model, training, &lengths, &observe, rows, budget)?
    else {
        return Ok(());
    };
    let need = step.bytes(rows);
    if need <= budget {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "/training/batch_size: a training step of {rows} rows would take about {} besides the \
         parameters (measured on small batches), more than the {} left of the memory this \
         process may use; at most {} rows fit (or raise the limit: --max-memory, \
         {MAX_MEMORY_VAR}, ulimit -v)",
        gigabytes(need),
        gigabytes(budget),
        step.rows_within(budget),
    )))
}

/// The batch size up to which [`rows_that_fit`] measures a step: about an evaluation's.
const EVAL_ROWS_MEASURED: usize = 1024;

/// The most rows of an evaluation's forward pass that fit in the memory left now: as many as
/// of a training step, whose cost per row bounds a forward pass's without the tape. `None`
/// where nothing is known ([`check_step_fits`]); an error where not even one row fits.
pub fn rows_that_fit<D: Backend>(
    params: &ParamStore<D>,
    model: &Model,
    training: &TrainingSpec,
    lengths: &[usize],
    observe: &dyn Fn(&[usize]) -> Result<Observation<D>>,
) -> Result<Option<usize>> {
    let Some(budget) = host_budget::<D>(0) else {
        return Ok(None);
    };
    // Measured up to batches of this size, as an evaluation's (not just the first rows).
    let rows = lengths.len().min(EVAL_ROWS_MEASURED);
    let Some(step) = measure_step(params, model, training, lengths, observe, rows, budget)? else {
        return Ok(None);
    };
    fits_one_row(&step, budget)?;
    Ok(Some(step.rows_within(budget)))
}

/// Each example's length, in the units a row's memory grows with: a sentence's ids, or 1 for
/// an image.
pub fn row_lengths(data: &Dataset) -> Vec<usize> {
    match data {
        Dataset::Images(_) => vec![1; data.len()],
        Dataset::Text(set) => set.encoded.lengths(),
    }
}

/// Measures what a training step allocates (see the module docs) on examples of `lengths`
/// (made into a batch by `observe`): `None` without the counting allocator, or without
/// examples. The longest example is measured only where the quadratic bound of its cost would
/// not leave `rows` rows within `budget`.
pub fn measure_step<D: Backend>(
    params: &ParamStore<D>,
    model: &Model,
    training: &TrainingSpec,
    lengths: &[usize],
    observe: &dyn Fn(&[usize]) -> Result<Observation<D>>,
    rows: usize,
    budget: u64,
) -> Result<Option<StepMemory>> {
    if meter::live().is_none() || lengths.is_empty() {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let shortest = order[0];
    let peak = |rows: &[usize]| step_bytes(params, model, observe, training, rows);
    let copies = |k: usize| peak(&vec![shortest; k]);
    // A first pass allocates what stays (e.g. the GEMM's per-thread workspace): not a row's.
    copies(2)?;
    let (one, two) = (copies(1)?, copies(2)?);
    let per_row = two.saturating_sub(one);
    let mut step = StepMemory::linear(one.saturating_sub(per_row), per_row);
    // Where the fixed part outweighs a few rows, measured again where the rows' part is about
    // as large, or on the batch itself if that is smaller (and affordable with twice the first
    // line's cost).
    let k = (one / per_row.max(1))
        .next_power_of_two()
        .min(rows as u64 / 2) as usize;
    if k >= 2 && step.bytes(2 * k).saturating_mul(2) <= budget {
        step = step.with_line(k as u64, copies(k)?, copies(2 * k)?);
    }
    // Longer rows: bounded by (length ratio)² from a measured length, or measured nearer the
    // longest while that bound is too large.
    let longest = lengths[order[order.len() - 1]];
    let (mut at, mut single) = (lengths[shortest], per_row.max(1));
    let bound = |single: u64, from: usize, to: usize| {
        let ratio = to as f64 / from.max(1) as f64;
        ratio * ratio * single as f64 / per_row.max(1) as f64
    };
    while at < longest {
        let bounded = step.scaled(bound(single, at, longest));
        if bounded.bytes(rows) <= budget {
            return Ok(Some(bounded));
        }
        // The longest length up to twice this one (or the next, if none is that close).
        let next = order
            .iter()
            .rev()
            .find(|&&i| lengths[i] > at && lengths[i] <= 2 * at)
            .or_else(|| order.iter().find(|&&i| lengths[i] > at))
            .copied()
            .expect("a length above `at` exists below `longest`");
        if step.scaled(bound(single, at, lengths[next])).bytes(1) > budget {
            // One row may not fit: report the bound rather than risk the allocation.
            return Ok(Some(bounded));
        }
        single = peak(&[next])?
            .saturating_sub(one.saturating_sub(per_row))
            .max(1);
        at = lengths[next];
    }
    Ok(Some(step.scaled(single as f64 / per_row.max(1) as f64)))
}

/// The most heap bytes live at once (beyond those live before) during the forward and backward
/// pass of a training step on `rows` (the model's losses and objective in training mode, its
/// gradients). The run's random numbers are not used; the weights are not changed.
fn step_bytes<D: Backend>(
    params: &ParamStore<D>,
    model: &Model,
    observe: &dyn Fn(&[usize]) -> Result<Observation<D>>,
    training: &TrainingSpec,
    rows: &[usize],
) -> Result<u64> {
    peak_bytes(params.device(), || {
        let obs = observe(rows)?;
        let mut rng = seeded(0);
        let mut ctx = Ctx {
            params,
            mode: Mode::Train,
            rng: &mut rng,
        };
        let losses = model.losses(&mut ctx, &obs)?;
        let progress = Progress {
            step: 0,
            total_steps: 1,
            epochs: training.epochs,
        };
        let objective = model.objective(losses, training, progress)?;
        let gradients = objective.loss.backward();
        if let Some(e) = take_backward_failure() {
            return Err(e.into());
        }
        drop(gradients);
        Ok(())
    })
}

/// The most heap bytes live at once beyond those live before while `work` runs, with `dev`'s
/// buffer cache emptied before and after (so that it neither hides nor keeps allocations).
fn peak_bytes<D: Backend>(dev: &D, work: impl FnOnce() -> Result<()>) -> Result<u64> {
    dev.empty_cache();
    meter::reset_peak();
    let before = meter::live().unwrap_or(0);
    work()?;
    let peak = meter::peak();
    dev.empty_cache();
    Ok(peak.saturating_sub(before) as u64)
}

/// The most rows per call of `work` (a forward pass on that many rows, whose memory grows
/// linearly with them) that fit in the memory left now, measured on one and two rows: `None`
/// where nothing is known (on the GPU, or without the counting allocator or a known limit);
/// an error where not even one row fits.
pub fn rows_per_call<D: Backend>(
    dev: &D,
    work: impl Fn(usize) -> Result<()>,
) -> Result<Option<usize>> {
    let Some(budget) = host_budget::<D>(0) else {
        return Ok(None);
    };
    peak_bytes(dev, || work(2))?;
    let one = peak_bytes(dev, || work(1))?;
    let per_row = peak_bytes(dev, || work(2))?.saturating_sub(one);
    let step = StepMemory::linear(one.saturating_sub(per_row), per_row);
    fits_one_row(&step, budget)?;
    Ok(Some(step.rows_within(budget)))
}

/// An error where one row of `step` does not fit in `budget` bytes.
fn fits_one_row(step: &StepMemory, budget: u64) -> Result<()> {
    if step.bytes(1) <= budget {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "a forward pass of one example would take about {}, more than the {} left of the \
         memory this process may use (raise the limit: --max-memory, {MAX_MEMORY_VAR}, \
         ulimit -v)",
        gigabytes(step.bytes(1)),
        gigabytes(budget),
    )))
}

/// The bytes of one f32 buffer per parameter: the gradient buffers that the first step
/// allocates (each of Adam's moments takes as many).
pub fn gradient_bytes<D: Backend>(params: &ParamStore<D>) -> u64 {
    (0..params.len())
        .map(|i| params.host(i).len() as u64 * 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::StepMemory;

    #[test]
    fn rows_within_a_budget_leave_the_fixed_part_and_at_least_one() {
        let step = StepMemory::linear(100, 10);
        assert_eq!(step.bytes(5), 150);
        assert_eq!(step.rows_within(150), 5);
        assert_eq!(step.rows_within(159), 5);
        assert_eq!(step.rows_within(50), 1);
        assert_eq!(StepMemory::linear(0, 0).rows_within(10), 10);
    }

    #[test]
    fn the_steeper_line_bounds_large_batches_and_the_higher_one_small_ones() {
        // Peaks 110 on 1 row, 120 on 2; 400 on 16 rows and 720 on 32 (20 a row from 80).
        let step = StepMemory::linear(100, 10).with_line(16, 400, 720);
        assert_eq!(step.bytes(1), 110);
        assert_eq!(step.bytes(64), 80 + 64 * 20);
        assert_eq!(step.rows_within(80 + 10 * 20), 10);
        assert_eq!(step.scaled(2.0).bytes(64), 80 + 64 * 40);
    }
}
