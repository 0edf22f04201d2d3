//! A trained model restored from a run folder: spec, plugins, weights and checkpoint.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vaezoo_core::checkpoint::Checkpoint;
use vaezoo_core::params::ParamStore;
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::seeded;
use vaezoo_core::spec::{DataSpec, Spec};
use vaezoo_core::Backend;

use crate::data::{load_spec_split, spec_tokenizer, Dataset, ImageSet, Split};
use crate::model::Model;
use crate::run::RunDir;
use crate::spec_file::read_spec;
use crate::text::TextTokenizer;
use crate::{registry, Error, Result};

/// What the trainer keeps in a checkpoint beside weights, optimiser and RNG.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Features per example of the data the model was built for.
    pub features: usize,
    /// Classes in the training labels.
    pub classes: usize,
    /// The tokenizer's vocabulary size, for text (0 for images; absent in older runs).
    #[serde(default)]
    pub vocab: usize,
    /// Optimiser steps in the whole run.
    pub total_steps: u64,
}

impl TrainerState {
    /// The data sizes the model was built for.
    pub fn dims(&self) -> DataDims {
        DataDims {
            features: self.features,
            classes: self.classes,
            vocab: self.vocab,
        }
    }
}

/// The tokenizer of a text run, `RUN/tokenizer.json`; `None` for image data. A text run
/// killed before it wrote the file gets the spec's tokenizer again (it is deterministic),
/// saved.
pub fn run_tokenizer(run: &RunDir, spec: &Spec) -> Result<Option<TextTokenizer>> {
    if !matches!(spec.data, DataSpec::Text { .. }) {
        return Ok(None);
    }
    let path = run.tokenizer_path();
    if path.is_file() {
        return Ok(Some(TextTokenizer::load(&path)?));
    }
    let tokenizer = spec_tokenizer(&spec.data)?;
    if let Some(t) = &tokenizer {
        t.save(&path)?;
    }
    Ok(tokenizer)
}

/// A run's model with the weights of its latest checkpoint.
pub struct Restored<D: Backend> {
    /// The run folder.
    pub run: RunDir,
    /// Its resolved spec.
    pub spec: Spec,
    /// The built plugins.
    pub model: Model,
    /// The weights.
    pub params: ParamStore<D>,
    /// The checkpoint they came from.
    pub checkpoint: Checkpoint,
    /// The trainer's state in that checkpoint.
    pub state: TrainerState,
}

fn trainer_state(checkpoint: &Checkpoint, path: &Path) -> Result<TrainerState> {
    let state = serde_json::from_value(checkpoint.trainer.clone()).map_err(|e| {
        vaezoo_core::Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("trainer state unreadable: {e}"),
        }
    })?;
    Ok(state)
}

/// How far the run at `root` got: `None` when there is no run there, else `(steps done,
/// steps of the whole run)` from its latest checkpoint (`(0, 1)` before the first one).
pub fn run_progress(root: &Path) -> Result<Option<(u64, u64)>> {
    if !root.exists() {
        return Ok(None);
    }
    let Some(path) = RunDir::open(root)?.latest_checkpoint()? else {
        return Ok(Some((0, 1)));
    };
    let checkpoint = Checkpoint::load(&path)?;
    let state = trainer_state(&checkpoint, &path)?;
    Ok(Some((checkpoint.step, state.total_steps)))
}

/// The spec sections a checkpoint must share with its run's `spec.json`: the model and its
/// training. (The data section may differ: a run folder moves with its data.)
const CHECKPOINT_SPEC_SECTIONS: [&str; 5] =
    ["encoder", "bottleneck", "prior", "decoder", "training"];

/// Refuses a checkpoint written for another model or training than the run's `spec.json`
/// describes (one copied from another run, or a `spec.json` edited since), naming the first
/// field that differs. Both are read as specs, so fields added since with defaults agree.
fn check_checkpoint_spec(root: &Path, spec: &Spec, checkpoint: &Checkpoint) -> Result<()> {
    let differs = |message: String| Error::Run {
        path: root.to_path_buf(),
        message,
    };
    let recorded: Spec = serde_json::from_value(checkpoint.spec.clone())
        .map_err(|e| differs(format!("its checkpoint holds an unreadable spec: {e}")))?;
    let (recorded, current) = (
        serde_json::to_value(recorded).expect("specs serialise"),
        serde_json::to_value(spec).expect("specs serialise"),
    );
    for section in CHECKPOINT_SPEC_SECTIONS {
        if let Some(field) = first_difference(&current[section], &recorded[section], section) {
            return Err(differs(format!(
                "its checkpoint was written for another spec (`{field}` differs from spec.json); \
                 resume the run it came from, or train a new one"
            )));
        }
    }
    Ok(())
}

/// The dotted path (from `at`) of the first place where `a` and `b` differ, if any.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let missing = Value::Null;
                let (xv, yv) = (x.get(k).unwrap_or(&missing), y.get(k).unwrap_or(&missing));
                first_difference(xv, yv, &format!("{at}.{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => (x.iter().zip(y))
            .enumerate()
            .find_map(|(i, (xv, yv))| first_difference(xv, yv, &format!("{at}[{i}]"))),
        _ => (a != b).then(|| at.to_string()),
    }
}

/// Restores the latest checkpoint of the run at `root`. Reads only.
pub fn restore<D: Backend>(dev: &D, root: &Path) -> Result<Restored<D>> {
    let run = RunDir::open(root)?;
    let spec = read_spec(&run.spec_path())?;
    let Some(path) = run.latest_checkpoint()? else {
        return Err(Error::Run {
            path: root.to_path_buf(),
            message: "has no checkpoint yet; train longer or `vaezoo resume` it".into(),
        });
    };
    let checkpoint = Checkpoint::load(&path)?;
    check_checkpoint_spec(root, &spec, &checkpoint)?;
    let state = trainer_state(&checkpoint, &path)?;
    let (model, init) = Model::build(
        registry()?,
        &spec,
        state.dims(),
        &mut seeded(spec.training.seed),
    )?;
    // A checkpoint stores PyTorch's layouts and how vaezoo's map onto them; a model that
    // computes with other layouts than the writer's must not read its values.
    if !checkpoint.torch_views.is_empty() && &checkpoint.torch_views != model.torch_views() {
        return Err(vaezoo_core::Error::Checkpoint {
            path,
            message: "its tensors' layouts (torch_layout) are not those of this model's plugins; \
                      was it written by another version of a plugin?"
                .into(),
        }
        .into());
    }
    let mut params = ParamStore::new(dev, init);
    params.load_host(&checkpoint.params)?;
    Ok(Restored {
        run,
        spec,
        model,
        params,
        checkpoint,
        state,
    })
}

impl<D: Backend> Restored<D> {
    /// The test split of the run's data (its `test_limit` applied).
    pub fn test_split(&self) -> Result<ImageSet> {
        let set = load_spec_split(&self.spec.data, Split::Test)?;
        self.check_features(set.features())?;
        Ok(set)
    }

    /// Data of `features` values per example must be what the model was built for: the data
    /// named in `spec.json` may have changed since training (another folder, another format).
    fn check_features(&self, features: usize) -> Result<()> {
        if features == self.state.features {
            return Ok(());
        }
        Err(Error::Run {
            path: self.run.root().to_path_buf(),
            message: format!(
                "its data now has {features} values per example, the model was trained on {} \
                 (the data of spec.json changed since)",
                self.state.features
            ),
        })
    }

    /// The tokenizer of a text run ([`run_tokenizer`]); an error for a run of images.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        run_tokenizer(&self.run, &self.spec)?
            .ok_or_else(|| Error::Usage(format!("{} is not a text run", self.run.root().display())))
    }

    /// The test split of the run's data, text encoded with `tokenizer` (the run's).
    pub fn test_data(&self, tokenizer: Option<&TextTokenizer>) -> Result<Dataset> {
        let data = Dataset::load(&self.spec.data, Split::Test, tokenizer)?;
        // 0 for text (encoded with the run's own tokenizer), as the trained state has it.
        self.check_features(data.dims().features)?;
        Ok(data)
    }

    /// Whether the model reads class labels (see [`Model::is_conditional`]).
    pub fn is_conditional(&self) -> bool {
        self.model.is_conditional::<D>()
    }
}
