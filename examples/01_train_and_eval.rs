//! Train the tiny optdigits VAE through the library API, then evaluate and sample it: what
//! `vaezoo train`, `vaezoo eval` and `vaezoo sample` do.
//!
//! Run from the repository root: `cargo run --release --example 01_train_and_eval`

use std::path::Path;

use vaezoo::evaluate::{evaluate, EvalOptions};
use vaezoo::sample::{sample, SampleOptions};
use vaezoo::train::{train, TrainOptions};

fn main() -> vaezoo::Result<()> {
    let out = std::env::temp_dir().join(format!("vaezoo-example-{}", std::process::id()));
    let opts = TrainOptions {
        out: Some(out.clone()),
        ..Default::default()
    };
    let trained = train(Path::new("zoo/vae-optdigits-tiny.json"), &opts)?;
    println!("trained {} steps in {:.2} s", trained.step, trained.seconds);

    let eval = evaluate(&trained.run, &EvalOptions::default())?;
    print!("{}", eval.table());

    let grid = sample(
        &trained.run,
        &SampleOptions {
            n: 16,
            seed: 0,
            class: None,
            temperature: 1.0,
            out: None,
            device: Default::default(),
        },
    )?;
    println!("samples: {}", grid.path.display());
    Ok(())
}
