//! What every benchmark of `benches/` shares with the others and with the PyTorch references
//! (`bench/pytorch/common.py`): the flags, the timing loop, the peak RSS and the JSON line.
//!
//! - Flags: `--steps N` (timed steps), `--warmup N` (untimed steps first), `--only W[,W…]`
//!   (run only the named workloads), plus a bench's own `--name value` flags ([`Flags::value`]).
//!   Other arguments (such as the `--bench` that `cargo bench` passes) are ignored.
//! - Timing: `median_step_ms` is the median of the per-step wall times after the warm-up; the
//!   rate is the mean units (samples or tokens) per timed step divided by that median.
//! - `threads` is rayon's global pool size (`RAYON_NUM_THREADS`), the threads vaezoo computes
//!   on; `peak_rss_mb` is the process's `VmHWM`, what PyTorch's `ru_maxrss` reports.
//! - The allocator is the `vaezoo` binary's, the system one counted
//!   ([`vaezoo::memory::meter`]), so that the benches time what the command line runs.

use std::time::Instant;

#[global_allocator]
static ALLOC: vaezoo::memory::meter::MeteredAlloc = vaezoo::memory::meter::MeteredAlloc;

use serde_json::{json, Map, Value};

/// The command-line flags of a benchmark.
pub struct Flags {
    args: Vec<String>,
}

impl Flags {
    /// The process's arguments.
    pub fn parse() -> Self {
        Self {
            args: std::env::args().skip(1).collect(),
        }
    }

    /// The value after `--name`, if given.
    pub fn value(&self, name: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == name)?;
        self.args.get(i + 1).map(String::as_str)
    }

    fn number(&self, name: &str, default: usize) -> usize {
        self.value(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a whole number, got {v:?}"))
        })
    }

    /// `--steps`, or the workload's default.
    pub fn steps(&self, default: usize) -> usize {
        self.number("--steps", default).max(1)
    }

    /// `--warmup`, or the workload's default.
    pub fn warmup(&self, default: usize) -> usize {
        self.number("--warmup", default)
    }

    /// Whether `--only` (absent: every workload) names `workload`.
    pub fn selected(&self, workload: &str) -> bool {
        self.value("--only")
            .is_none_or(|only| only.split(',').any(|w| w == workload))
    }
}

/// The timed steps of one workload.
pub struct Timing {
    /// Wall time of each timed step, in milliseconds.
    ms: Vec<f64>,
    /// Work units (samples or tokens) of each timed step.
    units: Vec<f64>,
}

impl Timing {
    /// The median step time in milliseconds (the mean of the two middle ones for an even
    /// count, as Python's `statistics.median`).
    pub fn median_ms(&self) -> f64 {
        let mut ms = self.ms.clone();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        (ms[(n - 1) / 2] + ms[n / 2]) / 2.0
    }

    /// Mean units per timed step.
    pub fn mean_units(&self) -> f64 {
        self.units.iter().sum::<f64>() / self.units.len() as f64
    }
}

/// Runs `step(i)` for `i` in `0..warmup` untimed, then for `warmup..warmup + steps` timed;
/// `step` returns the work units (samples or tokens) it processed.
pub fn time_steps(
    steps: usize,
    warmup: usize,
    mut step: impl FnMut(usize) -> vaezoo::Result<usize>,
) -> vaezoo::Result<Timing> {
    for i in 0..warmup {
        step(i)?;
    }
    // The profile of the matrix products covers the timed steps only.
    #[cfg(feature = "gemm-profile")]
    vaezoo_core::kernels::gemm_profile::clear();
    let (mut ms, mut units) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for i in warmup..warmup + steps {
        let started = Instant::now();
        let u = step(i)?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        units.push(u as f64);
    }
    Ok(Timing { ms, units })
}

/// [`time_steps`] for work that the commands run inside a training step or an evaluation but
/// that a benchmark calls directly (a layer, greedy decoding): each step runs with the pool's
/// workers awake, as there ([`vaezoo::device::with_pool_awake`]). Trainer steps need no such
/// wrapper: [`vaezoo::train::StepState::step`] has it.
#[allow(dead_code)] // `vae_mlp`'s bench times trainer steps only.
pub fn time_awake_steps(
    steps: usize,
    warmup: usize,
    mut step: impl FnMut(usize) -> vaezoo::Result<usize>,
) -> vaezoo::Result<Timing> {
    use vaezoo::device::with_pool_awake;
    use vaezoo_core::dfdx::prelude::Cpu;
    time_steps(steps, warmup, |i| with_pool_awake::<Cpu, _>(|| step(i)))
}

/// The process's peak resident memory so far in MB (`VmHWM` of `/proc/self/status`).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `x` rounded to `digits` decimals, as Python's `round` in the references' JSON lines.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Prints one result as a JSON line: `{"workload", "framework": "vaezoo", "version",
/// "threads", "batch", "steps", "median_step_ms", unit_key, "peak_rss_mb", …config}`, with
/// `malloc_env` when `MALLOC_*` variables are set (they change the timings). `unit_key` is
/// `samples_per_s` or `tokens_per_s`; `config` is a JSON object. Built with the
/// `gemm-profile` feature, it first prints the profile of the timed steps' matrix products
/// to stderr.
pub fn report(workload: &str, batch: usize, timing: &Timing, unit_key: &str, config: Value) {
    #[cfg(feature = "gemm-profile")]
    eprintln!(
        "{workload}, {} timed steps: {}",
        timing.ms.len(),
        vaezoo_core::kernels::gemm_profile::take_report(40)
    );
    let median = timing.median_ms();
    let mut line = Map::new();
    line.insert("workload".into(), json!(workload));
    line.insert("framework".into(), json!("vaezoo"));
    line.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    line.insert("threads".into(), json!(rayon::current_num_threads()));
    line.insert("batch".into(), json!(batch));
    line.insert("steps".into(), json!(timing.ms.len()));
    line.insert("median_step_ms".into(), json!(round(median, 3)));
    let rate = timing.mean_units() / (median / 1e3);
    line.insert(unit_key.into(), json!(round(rate, 1)));
    line.insert("peak_rss_mb".into(), json!(round(peak_rss_mb(), 1)));
    if let Value::Object(config) = config {
        line.extend(config);
    }
    let malloc: Map<String, Value> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MALLOC_"))
        .map(|(k, v)| (k, json!(v)))
        .collect();
    if !malloc.is_empty() {
        line.insert("malloc_env".into(), Value::Object(malloc));
    }
    println!("{}", Value::Object(line));
}
