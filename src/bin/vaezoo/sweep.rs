//! `vaezoo sweep plan|run|task|submit|collect`: the command line's side of
//! [`vaezoo::sweep`] (what it prints, its exit status).

use std::process::ExitCode;

use vaezoo::{Error, Result};

use crate::args::SweepCommand;

/// `vaezoo sweep …`.
pub fn sweep(command: SweepCommand) -> Result<ExitCode> {
    use vaezoo::sweep::{collect::collect, run, slurm, Sweep};
    let ok = |all: bool| {
        Ok(if all {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    };
    match command {
        SweepCommand::Plan { file } => {
            let plan = Sweep::plan(&file)?;
            for (i, r) in plan.runs.iter().enumerate() {
                let set: Vec<String> = r
                    .overrides
                    .iter()
                    .map(|(p, v)| format!("{p}={v}"))
                    .collect();
                println!("{i:>4}  {}  seed {}  {}", r.id, r.seed, set.join("  "));
            }
            println!(
                "{} runs, each spec valid; runs in {}",
                plan.runs.len(),
                plan.out.display()
            );
            ok(true)
        }
        SweepCommand::Run { file, jobs } => {
            let plan = Sweep::plan(&file)?;
            let outcomes = run::run_sweep(&plan, jobs)?;
            let failed = outcomes
                .iter()
                .filter(|(_, o)| matches!(o, run::Outcome::Failed(_)));
            let failed: Vec<&str> = failed.map(|(id, _)| id.as_str()).collect();
            println!(
                "{} runs, {} failed{}",
                outcomes.len(),
                failed.len(),
                match failed.is_empty() {
                    true => String::new(),
                    false => format!(": {}", failed.join(", ")),
                }
            );
            ok(failed.is_empty())
        }
        SweepCommand::Task { file, index } => {
            let plan = Sweep::plan(&file)?;
            match run::run_task(&plan, index)? {
                run::Outcome::Failed(why) => {
                    Err(Error::Usage(format!("run {index} failed: {why}")))
                }
                _ => ok(true),
            }
        }
        SweepCommand::Submit {
            file,
            slurm: _,
            partition,
            time,
            cpus_per_task,
            dry_run,
        } => {
            let plan = Sweep::plan(&file)?;
            let options = slurm::SlurmOptions {
                partition,
                time,
                cpus_per_task,
            };
            let script = slurm::write_script(&plan, &options)?;
            if dry_run {
                print!(
                    "{}",
                    std::fs::read_to_string(&script).map_err(|e| Error::io(&script, e))?
                );
                println!("wrote {} (not submitted)", script.display());
            } else {
                println!("{}", slurm::submit(&script)?);
            }
            ok(true)
        }
        SweepCommand::Collect { file, jobs } => {
            let plan = Sweep::plan(&file)?;
            let table = collect(&plan, jobs)?;
            for file in table.files.iter().chain(&table.plot) {
                println!("wrote {}", file.display());
            }
            ok(true)
        }
    }
}
