//! `vaezoo train` and `vaezoo resume`: the training loop, checkpoints and the run folder.
//!
//! A step's position in the data is derived from the step number alone (epoch = step / steps
//! per epoch; the epoch's order from `(seed, epoch)`), and the checkpoint holds weights, Adam's
//! moments and the RNG state, so resuming from a checkpoint repeats an uninterrupted run
//! exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use vaezoo_core::checkpoint::{CheckpointRef, ParamRef};
use vaezoo_core::optim::Adam;
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{KlShaping, Progress};
use vaezoo_core::rng::{seeded, HostRng};
use vaezoo_core::spec::Spec;
use vaezoo_core::Backend;

use crate::data::{Dataset, Split};
use crate::device::{on_device, DeviceChoice};
use crate::interrupt;
use crate::memory::{check_step_fits, gradient_bytes};
use crate::model::Model;
use crate::run::{utc_stamp, write_json, RunDir};
use crate::session::{restore, run_tokenizer, Restored, TrainerState};
use crate::spec_file::{read_spec, resolve_paths};
use crate::tensorboard::EventWriter;
use crate::{plots, progress, registry, Result};

mod environment;
mod step;

use environment::{environment, versions};
pub use step::{empty_cache_between_steps, StepOutcome, StepState};

/// Options of `vaezoo train` / `vaezoo resume`.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// The run folder (default `runs/<name>-seed<N>-<UTC time>`).
    pub out: Option<PathBuf>,
    /// Overrides the spec's seed.
    pub seed: Option<u64>,
    /// Stop once this many steps are done (the run can be resumed later).
    pub stop_after: Option<u64>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Print a plain status line (step, epoch, losses, rate) on stderr at most this often,
    /// for logs where no bar is drawn (`None`: never).
    pub status_every: Option<std::time::Duration>,
    /// Also write the logged scalars as TensorBoard events (always, for a run that has them).
    pub tensorboard: bool,
    /// Where to compute.
    pub device: DeviceChoice,
}

/// What a training session did.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// The run folder.
    pub run: PathBuf,
    /// Steps done, in total.
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// Steps this session did.
    pub steps_this_session: u64,
    /// Seconds this session trained.
    pub seconds: f64,
    /// The signal (SIGINT 2, SIGTERM 15) on which training stopped, after checkpointing.
    pub interrupted: Option<i32>,
}

/// Trains the spec at `spec_path` in a new run folder.
pub fn train(spec_path: &Path, opts: &TrainOptions) -> Result<TrainReport> {
    let mut spec = read_spec(spec_path)?;
    resolve_paths(&mut spec, spec_path)?;
    if let Some(seed) = opts.seed {
        spec.training.seed = seed;
    }
    let (data, tokenizer) = Dataset::load_for_new_run(&spec.data)?;
    let root = opts.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-seed{}-{}",
            spec.name,
            spec.training.seed,
            utc_stamp()
        ))
    });
    let spec_json = serde_json::to_value(&spec).expect("specs serialise");
    let env = environment(&spec, opts.device);
    // The model is built before the run folder exists: a spec whose model cannot be built
    // (or is too large) leaves nothing behind.
    let created = std::cell::Cell::new(false);
    let create_run = || {
        let run = RunDir::create(&root, |run| {
            if let Some(tokenizer) = &tokenizer {
                tokenizer.save(&run.tokenizer_path())?;
                write_json(&run.tokenizer_config_path(), &tokenizer.hf_config())?;
            }
            write_json(&run.spec_path(), &spec_json)?;
            write_json(&run.env_path(), &env)
        });
        created.set(run.is_ok());
        run
    };
    let outcome = on_device!(opts.device, |dev| fresh_job(dev, create_run, spec, data)?
        .run_loop(opts));
    // A new run that failed before its first checkpoint (a loss that turned NaN at once, a
    // full disk) holds nothing to resume: it goes, so that a run folder is either resumable
    // or absent and `train --out` can be run again.
    let checkpoint = root.join("checkpoints").join("latest.safetensors");
    if outcome.is_err() && created.get() && checkpoint.symlink_metadata().is_err() {
        let _ = std::fs::remove_dir_all(&root);
    }
    outcome
}

/// A job at step 0: parameters initialised from the spec's seed, in the run folder that
/// `run` gives once the model is built.
fn fresh_job<D: Backend>(
    dev: &D,
    run: impl FnOnce() -> Result<RunDir>,
    spec: Spec,
    data: Dataset,
) -> Result<Job<D>> {
    let dims = data.dims();
    let mut rng = seeded(spec.training.seed);
    let (model, init) = Model::build(registry()?, &spec, dims, &mut rng)?;
    let params = ParamStore::new(dev, init);
    let adam = Adam::new(spec.training.optimizer.clone(), &params);
    check_step_fits(
        &params,
        &model,
        &data,
        &spec.training,
        gradient_bytes(&params),
    )?;
    let run = run()?;
    let state = TrainerState {
        features: dims.features,
        classes: dims.classes,
        vocab: dims.vocab,
        total_steps: total_steps(&spec, data.len()),
    };
    Ok(Job {
        run,
        spec,
        model,
        params,
        adam,
        rng,
        state,
        data,
        step: 0,
    })
}

/// Continues the run at `root` from its latest checkpoint (or from the start if it has none).
pub fn resume(root: &Path, opts: &TrainOptions) -> Result<TrainReport> {
    on_device!(opts.device, |dev| resume_on(dev, root, opts))
}

fn resume_on<D: Backend>(dev: &D, root: &Path, opts: &TrainOptions) -> Result<TrainReport> {
    let run = RunDir::open(root)?;
    // Before the first write (the metrics are truncated below): the end's plot needs its folder.
    run.ensure_plots_dir()?;
    if run.latest_checkpoint()?.is_none() {
        // Killed before its first checkpoint: start again, as the same seed would.
        let spec = read_spec(&run.spec_path())?;
        let data = load_train(&run, &spec)?;
        run.truncate_metrics(0)?;
        return fresh_job(dev, || Ok(run), spec, data)?.run_loop(opts);
    }
    let mut restored = restore(dev, root)?;
    let data = load_train(&restored.run, &restored.spec)?;
    if data.dims() != restored.state.dims() {
        return Err(crate::Error::Run {
            path: root.to_path_buf(),
            message: format!(
                "the data now has sizes {:?}, the run was trained on {:?}",
                data.dims(),
                restored.state.dims()
            ),
        });
    }
    check_progress(root, &restored, total_steps(&restored.spec, data.len()))?;
    // The checkpoint's tensors move into the session (the weights are in the store by now):
    // copies would hold the model's state twice while it trains.
    restored.checkpoint.params = Vec::new();
    let optimizer = std::mem::take(&mut restored.checkpoint.optimizer);
    let config = restored.spec.training.optimizer.clone();
    let adam = Adam::resumed(config, &restored.params, optimizer)?;
    let (params, model) = (&restored.params, &restored.model);
    check_step_fits(
        params,
        model,
        &data,
        &restored.spec.training,
        gradient_bytes(params),
    )?;
    restored.run.truncate_metrics(restored.checkpoint.step)?;
    let mut job = Job {
        run: restored.run,
        spec: restored.spec,
        model: restored.model,
        params: restored.params,
        adam,
        rng: restored.checkpoint.rng,
        state: restored.state,
        data,
        step: restored.checkpoint.step,
    };
    job.run_loop(opts)
}

/// Checks a checkpoint's counters against the run's spec and data before anything is written:
/// the run length it records must be the one they give (`total`), its step within it, and
/// Adam's update count equal to its step (one update a step). A checkpoint of another run or
/// with damaged counters would otherwise resume off the end of the run or never finish.
fn check_progress<D: Backend>(root: &Path, restored: &Restored<D>, total: u64) -> Result<()> {
    let (step, recorded) = (restored.checkpoint.step, restored.state.total_steps);
    let adam_step = restored.checkpoint.optimizer.step;
    let problem = if recorded != total {
        Some(format!(
            "its checkpoint records a run of {recorded} steps, but the spec and data give {total}"
        ))
    } else if step > total {
        Some(format!(
            "its checkpoint is at step {step} of a {total}-step run"
        ))
    } else if adam_step != step {
        Some(format!(
            "its checkpoint is at step {step} but its optimiser state at update {adam_step}"
        ))
    } else {
        None
    };
    match problem {
        Some(message) => Err(crate::Error::Run {
            path: root.to_path_buf(),
            message,
        }),
        None => Ok(()),
    }
}

/// The train split of a run, text encoded with the run's tokenizer.
fn load_train(run: &RunDir, spec: &Spec) -> Result<Dataset> {
    let tokenizer = run_tokenizer(run, spec)?;
    Dataset::load(&spec.data, Split::Train, tokenizer.as_ref())
}

fn total_steps(spec: &Spec, n: usize) -> u64 {
    spec.training.epochs * n.div_ceil(spec.training.batch_size) as u64
}

/// Everything one training session holds.
struct Job<D: Backend> {
    run: RunDir,
    spec: Spec,
    model: Model,
    params: ParamStore<D>,
    adam: Adam,
    rng: HostRng,
    state: TrainerState,
    data: Dataset,
    step: u64,
}

impl<D: Backend> Job<D> {
    fn run_loop(&mut self, opts: &TrainOptions) -> Result<TrainReport> {
        let t = self.spec.training.clone();
        let n = self.data.len();
        let per_epoch = n.div_ceil(t.batch_size) as u64;
        let total = self.state.total_steps;
        let end = opts.stop_after.map_or(total, |s| s.min(total));
        let bar = progress::bar(
            total,
            opts.progress,
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta} {msg}",
        );
        bar.set_position(self.step);
        // The loss plot is written at the end: its folder is checked before the first write.
        self.run.ensure_plots_dir()?;
        let mut metrics = self.run.metrics_writer()?;
        // A resumed session's events start after its checkpoint's step; TensorBoard drops the
        // earlier sessions' events from there on.
        let events_dir = self.run.tensorboard_dir();
        let mut events = (opts.tensorboard || events_dir.is_dir())
            .then(|| EventWriter::create(&events_dir, (self.step > 0).then_some(self.step + 1)))
            .transpose()?;
        let mut grads = vec![Vec::new(); self.params.len()];
        let mut batches = Vec::new();
        let mut batches_epoch = u64::MAX;
        let started = Instant::now();
        let mut last_status = started;
        let first = self.step;
        while self.step < end {
            let epoch = self.step / per_epoch;
            if epoch != batches_epoch {
                batches = self.data.epoch_batches(t.batch_size, t.seed, epoch);
                batches_epoch = epoch;
            }
            empty_cache_between_steps(self.params.device(), self.data.shapes_vary());
            let rows = &batches[(self.step % per_epoch) as usize];
            let obs = self.data.observation(self.params.device(), rows)?;
            let progress = Progress {
                step: self.step,
                total_steps: total,
                epochs: t.epochs,
            };
            let mut state = StepState {
                model: &self.model,
                params: &mut self.params,
                adam: &mut self.adam,
                rng: &mut self.rng,
                grads: &mut grads,
            };
            let StepOutcome {
                objective,
                grad_norm,
            } = state.step(&t, &obs, progress)?;
            let (loss_value, rec, kl) = (objective.value, objective.rec, objective.kl);
            let (objective_stats, kl_factors, shaping) =
                (objective.stats, objective.kl_factors, objective.shaping);
            self.step += 1;
            let mut line = json!({
                "step": self.step, "epoch": epoch + 1, "loss": loss_value, "rec": rec, "kl": kl,
                "grad_norm": grad_norm,
            });
            for (name, value) in &objective_stats {
                line[*name] = json!(value);
            }
            if !t.kl_schedules.is_empty() || shaping != KlShaping::default() {
                for (name, factor) in &kl_factors {
                    line[format!("kl_factor_{name}")] = json!(factor);
                }
            }
            if let Some(c) = shaping.capacity {
                line["kl_capacity"] = json!(c);
            }
            metrics.write(&line)?;
            if let Some(events) = &mut events {
                events.write_metrics(&line)?;
            }
            bar.set_position(self.step);
            let status = format!(
                "epoch {} loss {loss_value:.2} rec {rec:.2} kl {kl:.2}",
                epoch + 1
            );
            if opts
                .status_every
                .is_some_and(|every| last_status.elapsed() >= every)
            {
                let rate = (self.step - first) as f64 / started.elapsed().as_secs_f64();
                eprintln!("step {}/{total} {status} ({rate:.1} it/s)", self.step);
                last_status = Instant::now();
            }
            bar.set_message(status);
            let interrupted = interrupt::requested_by().is_some();
            if self.step.is_multiple_of(t.checkpoint_every) || self.step == end || interrupted {
                // Lines and events first, the checkpoint, then both committed: a failure on the
                // way cuts them back to the last checkpoint (see MetricsWriter).
                metrics.flush()?;
                if let Some(events) = &mut events {
                    events.flush()?;
                }
                self.checkpoint()?;
                metrics.commit()?;
                if let Some(events) = &mut events {
                    events.commit()?;
                }
            }
            if interrupted {
                break;
            }
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        // The steps are saved by now: a plot that cannot be written (a full disk) is worth a
        // warning, not a failed session.
        if let Err(e) = self.plot_losses() {
            eprintln!("warning: no loss plot: {e}");
        }
        Ok(TrainReport {
            run: self.run.root().to_path_buf(),
            step: self.step,
            total_steps: total,
            steps_this_session: self.step - first,
            seconds,
            interrupted: interrupt::requested_by(),
        })
    }

    fn checkpoint(&self) -> Result<()> {
        // `checkpoints/` may be missing (a run restarted after it was deleted).
        let path = self.run.checkpoint_path();
        let dir = path.parent().expect("checkpoints/ holds the checkpoint");
        std::fs::create_dir_all(dir).map_err(|e| vaezoo_core::Error::io(dir, e))?;
        // Borrowed: a copy of the weights and Adam's moments would triple their memory.
        let params = (0..self.params.len())
            .map(|i| ParamRef {
                name: self.params.name(i),
                shape: self.params.shape(i),
                values: self.params.host(i),
            })
            .collect();
        let ckpt = CheckpointRef {
            step: self.step,
            params,
            optimizer: self.adam.state(),
            rng: &self.rng,
            spec: &serde_json::to_value(&self.spec).expect("specs serialise"),
            trainer: &serde_json::to_value(&self.state).expect("trainer state serialises"),
            versions: &versions(),
            torch_views: self.model.torch_views(),
        };
        Ok(ckpt.save(&path)?)
    }

    /// `plots/loss.png`: per-epoch means of loss, reconstruction and KL.
    fn plot_losses(&self) -> Result<()> {
        let mut sums: BTreeMap<u64, [f64; 4]> = BTreeMap::new();
        for m in self.run.read_metrics()? {
            let Some(epoch) = m["epoch"].as_u64() else {
                continue;
            };
            let e = sums.entry(epoch).or_default();
            for (i, key) in ["loss", "rec", "kl"].iter().enumerate() {
                e[i] += m[*key].as_f64().unwrap_or(f64::NAN);
            }
            e[3] += 1.0;
        }
        let series = |i: usize| sums.iter().map(|(e, s)| (*e as f64, s[i] / s[3])).collect();
        plots::loss_curves(
            &self.run.plot_path("loss.png"),
            &format!("{}: training losses (epoch means)", self.spec.name),
            &[
                ("loss", series(0)),
                ("reconstruction", series(1)),
                ("kl", series(2)),
            ],
            "epoch",
        )?;
        Ok(())
    }
}
