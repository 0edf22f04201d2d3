//! The command line's arguments: every subcommand and its options (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use vaezoo::device::DeviceChoice;

/// Variational information bottlenecks composed from JSON specs.
#[derive(Parser)]
#[command(name = "vaezoo", version, about)]
pub struct Cli {
    /// Load every plugin library (`lib*.so`) in this folder at start-up (repeatable; the
    /// folders of VAEZOO_PLUGIN_PATH are loaded too).
    #[arg(long, global = true, value_name = "DIR")]
    pub plugin_dir: Vec<PathBuf>,
    /// The most memory a command may use (e.g. `8G`; K, M, G, T are powers of 1024): a model
    /// or a training batch that would need more is refused before anything is written
    /// (default: the smallest of VAEZOO_MAX_MEMORY, `ulimit -v`, the control group's limit
    /// and the machine's memory).
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_memory)]
    pub max_memory: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Reproduce zoo entries (`zoo/<ID>.json`).
    #[command(subcommand)]
    Zoo(ZooCommand),
    /// Check specs against the schema of the registered plugins; one line per problem.
    Validate {
        /// Spec files.
        #[arg(required = true)]
        specs: Vec<PathBuf>,
    },
    /// Write the JSON Schemas of specs and of every plugin config.
    Schema {
        /// Output folder.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
    /// List the registered plugins, with where each came from (built in, or the library file
    /// and its sha256).
    Plugins,
    /// Run the conformance kit on registered plugins (e.g. one loaded with --plugin-dir);
    /// one line per check, failing if any check fails.
    Conformance {
        /// Plugin names.
        #[arg(required = true)]
        plugins: Vec<String>,
    },
    /// Train a spec in a new run folder.
    Train {
        /// The spec file.
        spec: PathBuf,
        /// The run folder (default runs/<name>-seed<N>-<UTC time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the spec's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Stop after this many steps in total (continue later with `vaezoo resume`).
        #[arg(long)]
        stop_after: Option<u64>,
        /// Seconds between plain status lines on stderr (default: 30 when stderr is not a
        /// terminal, as in a log file; none under the progress bar of a terminal).
        #[arg(long, value_name = "SECONDS", value_parser = usize_in(0, 86_400))]
        status_every: Option<usize>,
        /// Also write every logged scalar as TensorBoard events (RUN/tensorboard/; `resume`
        /// continues them).
        #[arg(long)]
        tensorboard: bool,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// Continue a run from its latest checkpoint.
    Resume {
        /// The run folder.
        run: PathBuf,
        /// Stop after this many steps in total.
        #[arg(long)]
        stop_after: Option<u64>,
        /// Seconds between plain status lines on stderr (as for `train`).
        #[arg(long, value_name = "SECONDS", value_parser = usize_in(0, 86_400))]
        status_every: Option<usize>,
        /// Write TensorBoard events (RUN/tensorboard/), as `train --tensorboard` does; on by
        /// itself for a run that has them.
        #[arg(long)]
        tensorboard: bool,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// Evaluate a run's latest checkpoint on the test split (writes RUN/eval.json).
    Eval {
        /// The run folder.
        run: PathBuf,
        /// Seed of the posterior samples.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Examples per forward pass.
        #[arg(long, default_value_t = 500, value_parser = usize_in(1, 100_000))]
        batch_size: usize,
        /// Importance samples per example for the IS-NLL (0 skips it).
        #[arg(long, default_value_t = 500, value_parser = usize_in(0, 100_000))]
        iw_samples: usize,
        /// Posterior samples per example behind the -ELBO (their mean; 1 as the PyTorch
        /// reference). The -ELBO at the posterior mean is reported beside it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        elbo_samples: u64,
        /// Text: prior samples for the forward and reverse perplexity (0 skips them).
        #[arg(long, default_value_t = 200, value_parser = usize_in(0, 100_000))]
        samples: usize,
        /// Text: the language model of the forward and reverse perplexity, a trained run
        /// (e.g. of zoo/lm-wiki.json).
        #[arg(long, value_name = "RUN")]
        lm: Option<PathBuf>,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// Decode samples from the prior into a PNG grid (default RUN/plots/samples.png), or for
    /// a text run into sentences (printed, and written to RUN/text/samples-seed<N>.txt).
    Sample {
        /// The run folder.
        run: PathBuf,
        /// How many samples.
        #[arg(short, default_value_t = 64, value_parser = usize_in(1, 10_000))]
        n: usize,
        /// Seed of the prior draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Give every sample this class label (a conditional model samples p(x | c)).
        #[arg(long)]
        class: Option<usize>,
        /// Scale each prior draw's distance from the prior mean: 1 samples the model as
        /// trained, below 1 gives more typical samples.
        #[arg(long, default_value_t = 1.0)]
        temperature: f32,
        /// Output PNG.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// Decode the interpolation between two test images' latents into a PNG row (default
    /// RUN/plots/interpolate-I-J.png), or for a text run between two sentences (printed).
    Interpolate {
        /// The run folder.
        run: PathBuf,
        /// Text runs: the two sentences.
        #[arg(num_args = 0..=2)]
        sentences: Vec<String>,
        /// Images: the test example to start from.
        #[arg(long)]
        from: Option<usize>,
        /// Images: the test example to end at.
        #[arg(long)]
        to: Option<usize>,
        /// Text: the class of both sentences, for a conditional model.
        #[arg(long)]
        class: Option<usize>,
        /// Decoded points, both ends included.
        #[arg(long, default_value_t = 10, value_parser = usize_in(2, 1_000))]
        steps: usize,
        /// Output PNG.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// Reconstruct sentences with a text run: encode each, decode greedily.
    Reconstruct {
        /// The run folder.
        run: PathBuf,
        /// The sentences.
        #[arg(required = true)]
        sentences: Vec<String>,
        /// The class of every sentence, for a conditional model.
        #[arg(long)]
        class: Option<usize>,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// Sweeps: one base spec and a grid of overrides (a sweep file), planned, run locally or
    /// as a Slurm job array, and gathered into one table.
    #[command(subcommand)]
    Sweep(SweepCommand),
    /// Write a run's weights alone for another framework: `pytorch` writes
    /// model.safetensors named as the checkpoint and laid out as PyTorch's modules hold them
    /// (nn.Linear's (out, in)), with the run's spec.json (default RUN/export/pytorch/).
    Export {
        /// The run folder.
        run: PathBuf,
        /// The target framework.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Output folder.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Plot text runs' vectors kept against BLEU (from each RUN/eval.json) into a PNG.
    Plot {
        /// The evaluated text runs.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Output PNG.
        #[arg(long, default_value = "vectors-vs-bleu.png")]
        out: PathBuf,
        /// One series per configuration (runs whose specs differ only in their seed): each
        /// seed's point as a ring, their mean as a dot with error bars of one standard
        /// deviation. Without it, one series per model family.
        #[arg(long)]
        seeds: bool,
    },
    /// Vary the most active latent dimensions of a test image's encoding one at a time: a PNG
    /// grid with one row per dimension (default RUN/plots/traverse-I.png).
    Traverse {
        /// The run folder.
        run: PathBuf,
        /// The test example to encode.
        #[arg(long, default_value_t = 0)]
        index: usize,
        /// How many dimensions (rows), the most active first.
        #[arg(long, default_value_t = 8, value_parser = usize_in(1, 1_000))]
        dims: usize,
        /// Each dimension goes from -RANGE to +RANGE.
        #[arg(long, default_value_t = 3.0)]
        range: f32,
        /// Values per dimension (columns).
        #[arg(long, default_value_t = 9, value_parser = usize_in(1, 1_000))]
        steps: usize,
        /// Output PNG.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
}

#[derive(Subcommand)]
pub enum ZooCommand {
    /// Train `zoo/<ID>.json` with each seed (resuming interrupted runs), evaluate every run, and
    /// print each metric per seed with the mean (also in OUT/<ID>/summary.json).
    Reproduce {
        /// The entry: a spec file name in `zoo/` without `.json`, e.g. `vae-mnist5k`.
        id: String,
        /// The seeds, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [0, 1, 2])]
        seeds: Vec<u64>,
        /// The folder of the runs (OUT/<ID>-seed<N>).
        #[arg(long, default_value = "runs/zoo")]
        out: PathBuf,
        /// Importance samples per test example for the IS-NLL (0 skips it).
        #[arg(long, default_value_t = 500, value_parser = usize_in(0, 100_000))]
        iw_samples: usize,
        /// Text: prior samples for the forward and reverse perplexity (0 skips them).
        #[arg(long, default_value_t = 200, value_parser = usize_in(0, 100_000))]
        samples: usize,
        /// Text: the language model run of the forward and reverse perplexity.
        #[arg(long, value_name = "RUN")]
        lm: Option<PathBuf>,
    },
}

/// `vaezoo sweep …`.
#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// Print every run (id, seed, overrides) after checking every resolved spec.
    Plan {
        /// The sweep file.
        file: PathBuf,
    },
    /// Run the runs not finished yet, N at a time (threads split between them); a finished run
    /// is skipped, a failed one reported while the others go on.
    Run {
        /// The sweep file.
        file: PathBuf,
        /// Runs at a time.
        #[arg(long, default_value_t = 1, value_parser = usize_in(1, 1024))]
        jobs: usize,
    },
    /// Run one run of the sweep (a Slurm array task runs its SLURM_ARRAY_TASK_ID).
    Task {
        /// The sweep file.
        file: PathBuf,
        /// The run's index in the plan (from 0).
        index: usize,
    },
    /// Write the sweep as a Slurm job array script (OUT/sweep.sbatch) and submit it.
    Submit {
        /// The sweep file.
        file: PathBuf,
        /// Submit to Slurm (the only scheduler there is).
        #[arg(long, required = true)]
        slurm: bool,
        /// The partition.
        #[arg(long)]
        partition: Option<String>,
        /// The time limit of each task (Slurm's format, e.g. 02:00:00).
        #[arg(long)]
        time: Option<String>,
        /// CPUs per task (also the task's threads).
        #[arg(long, value_parser = usize_in(1, 4096))]
        cpus_per_task: Option<usize>,
        /// Write and print the script without submitting it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Evaluate the finished runs not yet evaluated and write one table of every run's
    /// metrics (OUT/summary.csv and OUT/summary.md).
    Collect {
        /// The sweep file.
        file: PathBuf,
        /// Evaluations at a time.
        #[arg(long, default_value_t = 1, value_parser = usize_in(1, 1024))]
        jobs: usize,
    },
}

/// A count between `low` and `high`: sizes from the command line are bounded, so that a typo
/// (or 2^64 - 1) is a one-line error instead of an allocation that aborts or a run of hours.
fn usize_in(low: u64, high: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(low..=high)
}

/// What `vaezoo export` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// PyTorch: safetensors in the layouts of `torch.nn` modules.
    Pytorch,
}

/// A `--max-memory` size: bytes, or a number with K, M, G or T.
fn parse_memory(text: &str) -> Result<u64, String> {
    vaezoo_core::process::parse_bytes(text)
        .ok_or_else(|| format!("`{text}` is not a size such as 512M or 8G"))
}
