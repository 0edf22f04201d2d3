//! The `vaezoo` command line: validate specs, write schemas, list plugins, train, resume,
//! evaluate, sample, interpolate and traverse.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vaezoo::device::DeviceChoice;
use vaezoo::evaluate::{evaluate, EvalOptions};
use vaezoo::explore::interpolate::{interpolate, InterpolateOptions};
use vaezoo::explore::traverse::{traverse, TraverseOptions};
use vaezoo::sample::{sample, SampleOptions};
use vaezoo::train::{resume, train, TrainOptions, TrainReport};
use vaezoo::zoo::{reproduce, ReproduceOptions};
use vaezoo::{init_registry, registry, Error, Result};
use vaezoo_core::schema::{parse_spec, write_schemas, SpecValidator};

/// Variational information bottlenecks composed from JSON specs.
#[derive(Parser)]
#[command(name = "vaezoo", version, about)]
struct Cli {
    /// Load every plugin library (`lib*.so`) in this folder at start-up (repeatable; the
    /// folders of VAEZOO_PLUGIN_PATH are loaded too).
    #[arg(long, global = true, value_name = "DIR")]
    plugin_dir: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Importance samples per example for the IS-NLL (0 skips it).
        #[arg(long, default_value_t = 500)]
        iw_samples: usize,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// Decode samples from the prior into a PNG grid (default RUN/plots/samples.png).
    Sample {
        /// The run folder.
        run: PathBuf,
        /// How many samples.
        #[arg(short, default_value_t = 64)]
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
    /// RUN/plots/interpolate-I-J.png).
    Interpolate {
        /// The run folder.
        run: PathBuf,
        /// The test example to start from.
        #[arg(long)]
        from: usize,
        /// The test example to end at.
        #[arg(long)]
        to: usize,
        /// Decoded points, both ends included.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Output PNG.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
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
        #[arg(long, default_value_t = 8)]
        dims: usize,
        /// Each dimension goes from -RANGE to +RANGE.
        #[arg(long, default_value_t = 3.0)]
        range: f32,
        /// Values per dimension (columns).
        #[arg(long, default_value_t = 9)]
        steps: usize,
        /// Output PNG.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
}

fn main() -> ExitCode {
    // Expected problems are errors; a panic is a bug, but still one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = (info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!("error: internal error{}: {message}", at.unwrap_or_default());
        eprintln!(
            "hint: this is a bug in vaezoo or a plugin; please report it with the command you ran"
        );
    }));
    let cli = Cli::parse();
    match init_registry(&cli.plugin_dir).and_then(|_| run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
enum ZooCommand {
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
        #[arg(long, default_value_t = 500)]
        iw_samples: usize,
    },
}

fn run(command: Command) -> Result<ExitCode> {
    let progress = std::io::stderr().is_terminal();
    match command {
        Command::Zoo(ZooCommand::Reproduce {
            id,
            seeds,
            out,
            iw_samples,
        }) => {
            let eval = EvalOptions {
                iw_samples,
                progress,
                ..EvalOptions::default()
            };
            let opts = ReproduceOptions {
                seeds,
                out,
                progress,
                eval,
            };
            let r = reproduce(&id, &opts)?;
            println!("{id}: test metrics (nats per example; eval seed 0)");
            print!("{}", r.table());
            println!("wrote {}", r.summary.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { specs } => validate(&specs),
        Command::Schema { out } => {
            for path in write_schemas(registry()?, &out)? {
                println!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Conformance { plugins } => {
            let mut passed = true;
            for name in plugins {
                let report = vaezoo::conformance::check_plugin(registry()?, &name)?;
                println!("{report}");
                passed &= report.passed();
            }
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Plugins => {
            let entries: Vec<_> = registry()?.entries().collect();
            let name_width = entries
                .iter()
                .map(|e| e.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            println!(
                "{:<11} {:<name_width$} {:<8} {:<8} description",
                "kind", "name", "version", "origin"
            );
            for e in entries {
                println!(
                    "{:<11} {:<name_width$} {:<8} {:<8} {}",
                    e.kind, e.name, e.version, e.origin, e.description
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Train {
            spec,
            out,
            seed,
            stop_after,
            device,
        } => {
            let opts = TrainOptions {
                out,
                seed,
                stop_after,
                progress,
                device,
            };
            report(train(&spec, &opts)?)
        }
        Command::Resume {
            run,
            stop_after,
            device,
        } => {
            let opts = TrainOptions {
                stop_after,
                progress,
                device,
                ..Default::default()
            };
            report(resume(&run, &opts)?)
        }
        Command::Eval {
            run,
            seed,
            batch_size,
            iw_samples,
            device,
        } => {
            if batch_size == 0 {
                return Err(Error::Usage("--batch-size must be at least 1".into()));
            }
            let r = evaluate(
                &run,
                &EvalOptions {
                    seed,
                    batch_size,
                    iw_samples,
                    progress,
                    device,
                },
            )?;
            println!(
                "{} at step {} on {} test examples (seed {}; nats per example)",
                run.display(),
                r.step,
                r.examples,
                r.seed
            );
            print!("{}", r.table());
            println!("wrote {}", run.join("eval.json").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sample {
            run,
            n,
            seed,
            class,
            temperature,
            out,
            device,
        } => {
            let opts = SampleOptions {
                n,
                seed,
                class,
                temperature,
                out,
                device,
            };
            let sampled = sample(&run, &opts)?;
            match class {
                Some(c) if sampled.conditional => println!("class {c}"),
                Some(c) => {
                    println!("class {c} (this model is unconditional: the class has no effect)")
                }
                None => {}
            }
            println!("wrote {}", sampled.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Interpolate {
            run,
            from,
            to,
            steps,
            out,
            device,
        } => {
            let opts = InterpolateOptions {
                from,
                to,
                steps,
                out,
                device,
            };
            println!("wrote {}", interpolate(&run, &opts)?.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Traverse {
            run,
            index,
            dims,
            range,
            steps,
            out,
            device,
        } => {
            let opts = TraverseOptions {
                index,
                dims,
                range,
                steps,
                out,
                device,
            };
            let t = traverse(&run, &opts)?;
            println!("rows (top to bottom): latent dimension, variance of its posterior mean");
            for (row, (dim, variance)) in t.rows.iter().enumerate() {
                println!("{row:>4}  dim {dim:<4} {variance:.4}");
            }
            println!("wrote {}", t.path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn report(r: TrainReport) -> Result<ExitCode> {
    let rate = if r.seconds > 0.0 {
        r.steps_this_session as f64 / r.seconds
    } else {
        0.0
    };
    let session = if r.steps_this_session == r.step {
        String::new()
    } else {
        format!(" ({} this session)", r.steps_this_session)
    };
    if r.step < r.total_steps {
        println!(
            "stopped at step {}/{}{session} after {:.1} s; continue with `vaezoo resume {}`",
            r.step,
            r.total_steps,
            r.seconds,
            r.run.display()
        );
    } else {
        println!(
            "trained {} steps{session} in {:.1} s ({rate:.1} it/s)",
            r.step, r.seconds
        );
        println!(
            "run folder: {}  (next: `vaezoo eval {0}`, `vaezoo sample {0}`)",
            r.run.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `ok: FILE` or one line per problem; fails if any file has a problem.
fn validate(specs: &[PathBuf]) -> Result<ExitCode> {
    let validator = SpecValidator::new(registry()?)?;
    let mut failed = false;
    for path in specs {
        match check(path, &validator) {
            Ok(()) => println!("ok: {}", path.display()),
            Err(Error::Core(vaezoo_core::Error::InvalidSpec { problems })) => {
                failed = true;
                for p in problems {
                    println!("{}: {p}", path.display());
                }
            }
            Err(e) => {
                failed = true;
                println!("{e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn check(path: &Path, validator: &SpecValidator) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (spec, _) = parse_spec(&path.display().to_string(), &text, validator)?;
    registry()?.check_pins(&spec.plugins)?;
    Ok(())
}
