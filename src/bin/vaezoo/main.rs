//! The `vaezoo` command line: validate specs, write schemas, list plugins, train, resume,
//! evaluate, sample, interpolate, traverse, reproduce zoo entries and run the conformance kit;
//! its arguments are in `args.rs`, the work in the `vaezoo` library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use vaezoo::device::on_compute_pool;
use vaezoo::evaluate::{evaluate, EvalOptions, Evaluation};
use vaezoo::explore::interpolate::{interpolate, InterpolateOptions};
use vaezoo::explore::text::{interpolate_text, is_text_run, reconstruct};
use vaezoo::explore::traverse::{traverse, TraverseOptions};
use vaezoo::export::export_pytorch;
use vaezoo::interrupt::stop_on_interrupt;
use vaezoo::plot_runs::plot_vectors_vs_bleu;
use vaezoo::preflight::preflight;
use vaezoo::sample::{sample, SampleOptions};
use vaezoo::train::{resume, train, TrainOptions, TrainReport};
use vaezoo::zoo::{reproduce, ReproduceOptions};
use vaezoo::{init_registry, registry, Error, Result};
use vaezoo_core::error::one_line;
use vaezoo_core::schema::{parse_spec, write_schemas, SpecValidator};

mod args;
mod sweep;

/// The system allocator, counted: the memory check before training measures a step with it.
#[global_allocator]
static ALLOC: vaezoo::memory::meter::MeteredAlloc = vaezoo::memory::meter::MeteredAlloc;

use args::{Cli, Command, ExportFormat, ZooCommand};

fn main() -> ExitCode {
    // Expected problems are errors; a panic is a bug, but still one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = (info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        // `println!` panics when stdout was closed (`vaezoo plugins | head`): the reader has
        // what it wanted, so that is a quiet, successful end, not a bug.
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()));
        let message = one_line(&message);
        eprintln!("error: internal error{}: {message}", at.unwrap_or_default());
        eprintln!(
            "hint: this is a bug in vaezoo or a plugin; please report it with the command you ran"
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let Some(bytes) = cli.max_memory {
        // Before any thread starts: read by every size check (vaezoo_core::process).
        std::env::set_var(vaezoo_core::process::MAX_MEMORY_VAR, bytes.to_string());
    }
    if matches!(
        cli.command,
        Command::Train { .. } | Command::Resume { .. } | Command::Zoo(_)
    ) {
        // Ctrl-C checkpoints the step under way instead of losing the steps since the last.
        stop_on_interrupt();
    }
    // On rayon's pool: the kernels' parallel passes start from a worker (see on_compute_pool).
    let outcome = on_compute_pool(|| init_registry(&cli.plugin_dir).and_then(|_| run(cli.command)));
    match outcome {
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

/// A command line clap refused, as one `error:` line and a hint (clap's own help and version
/// output, and its exit codes, stay as they are).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let rendered = e.to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .collect();
    eprintln!("{}", one_line(&message.join(" ")));
    eprintln!("hint: `vaezoo --help` lists the commands, `vaezoo COMMAND --help` their options");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// The interval of training's status lines: as asked, else every 30 s where no progress bar
/// is drawn (stderr is not a terminal: a log file gets news while the run goes on).
fn status_interval(seconds: Option<usize>, progress: bool) -> Option<std::time::Duration> {
    let seconds = seconds.or((!progress).then_some(30))?;
    Some(std::time::Duration::from_secs(seconds as u64))
}

fn run(command: Command) -> Result<ExitCode> {
    let progress = std::io::stderr().is_terminal();
    match command {
        Command::Zoo(ZooCommand::Reproduce {
            id,
            seeds,
            out,
            iw_samples,
            samples,
            lm,
        }) => {
            let eval = EvalOptions {
                iw_samples,
                progress,
                samples,
                lm,
                ..EvalOptions::default()
            };
            let opts = ReproduceOptions {
                seeds,
                out,
                progress,
                eval,
            };
            let r = reproduce(&id, &opts)?;
            println!("{id}: test metrics (eval seed 0)");
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
                // A plugin library's description may hold line breaks: one row per plugin.
                let description = one_line(&e.description);
                println!(
                    "{:<11} {:<name_width$} {:<8} {:<8} {description}",
                    e.kind, e.name, e.version, e.origin
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Train {
            spec,
            out,
            seed,
            stop_after,
            status_every,
            tensorboard,
            device,
        } => {
            let opts = TrainOptions {
                out,
                seed,
                stop_after,
                progress,
                status_every: status_interval(status_every, progress),
                tensorboard,
                device,
            };
            report(train(&spec, &opts)?)
        }
        Command::Resume {
            run,
            stop_after,
            status_every,
            tensorboard,
            device,
        } => {
            let opts = TrainOptions {
                stop_after,
                progress,
                status_every: status_interval(status_every, progress),
                tensorboard,
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
            elbo_samples,
            samples,
            lm,
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
                    elbo_samples: elbo_samples as usize,
                    progress,
                    device,
                    samples,
                    lm,
                    ..EvalOptions::default()
                },
            )?;
            let unit = match r {
                Evaluation::Vector(_) => "nats per example",
                Evaluation::Text(_) => "greedy decoding",
            };
            println!(
                "{} at step {} on {} test examples (seed {seed}; {unit})",
                run.display(),
                r.step(),
                r.examples(),
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
            for sentence in sampled.sentences.iter().flatten() {
                println!("{sentence}");
            }
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
            sentences,
            from,
            to,
            class,
            steps,
            out,
            device,
        } => {
            if is_text_run(&run)? {
                let [from, to] = sentences.as_slice() else {
                    return Err(Error::Usage(
                        "a text run interpolates between two sentences: vaezoo interpolate RUN \"one\" \"two\"".into(),
                    ));
                };
                for (tau, sentence) in interpolate_text(&run, (from, to), steps, class, device)? {
                    println!("{tau:.2}  {sentence}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let (Some(from), Some(to)) = (from, to) else {
                return Err(Error::Usage(
                    "an image run interpolates between test examples: --from I --to J".into(),
                ));
            };
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
        Command::Reconstruct {
            run,
            sentences,
            class,
            device,
        } => {
            let outputs = reconstruct(&run, &sentences, class, device)?;
            for (source, output) in sentences.iter().zip(outputs) {
                println!("{source}\n  → {output}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep(command) => sweep::sweep(command),
        Command::Export { run, format, out } => {
            let exported = match format {
                ExportFormat::Pytorch => export_pytorch(&run, out.as_deref())?,
            };
            println!(
                "wrote {} tensors of step {} to {}",
                exported.tensors,
                exported.step,
                exported.dir.join("model.safetensors").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plot { runs, out, seeds } => {
            for (run, p) in runs.iter().zip(plot_vectors_vs_bleu(&runs, &out, seeds)?) {
                let (kept, bleu) = p.point;
                let group = if seeds { p.configuration() } else { &p.family };
                println!(
                    "{group:<10} kept {kept:.3}  BLEU {bleu:.2}  {}",
                    run.display()
                );
            }
            println!("wrote {}", out.display());
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
    if let Some(signal) = r.interrupted {
        println!(
            "stopped at step {}/{}{session} by a signal; checkpoint saved; continue with `vaezoo resume {}`",
            r.step,
            r.total_steps,
            r.run.display()
        );
        // 128 + the signal, as a shell reports a process that the signal ended (130, 143).
        return Ok(ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)));
    }
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
    // Everything `train` checks before its first step: data, build, one forward pass.
    preflight(path, spec)
}
