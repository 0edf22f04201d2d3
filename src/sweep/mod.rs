//! Sweeps: one base spec and a grid of overrides, planned and checked before anything runs,
//! run locally by parallel workers ([`run`]) or as a Slurm job array ([`slurm`]), and gathered
//! into one table ([`collect`]).
//!
//! A sweep file (JSON, `deny_unknown_fields`, checked against [`SweepFile`]'s schema):
//!
//! ```json
//! {
//!   "name": "beta-optdigits",
//!   "base": "vae-optdigits-tiny.json",
//!   "grid": [{"pointer": "/training/optimizer/lr", "values": [0.001, 0.003]}],
//!   "zip": [[{"pointer": "/bottleneck/config/latent_dim", "values": [2, 8], "name": "z"},
//!            {"pointer": "/encoder/config/hidden", "values": [[16], [64]]}]],
//!   "seeds": [0, 1]
//! }
//! ```
//!
//! `base` is a spec path relative to the sweep file; each `grid` axis multiplies the runs, the
//! axes of one `zip` group move together (their i-th values make one point), and every point
//! runs once per seed (`training.seed`; default the base's seed). Run ids come from the `id`
//! template: `{name}`, `{seed}` and `{<axis name>}` (an axis is named by `name`, else by the
//! last segment of its pointer); the default is `{name}-<axis><value>…-seed{seed}`. Runs live
//! in `OUT/runs/<id>`, their resolved specs in `OUT/specs/<id>.json`, where OUT is `out`
//! (relative to the sweep file) or `runs/sweeps/<name>`.

pub mod collect;
pub mod run;
pub mod slurm;

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use vaezoo_core::schema::{parse_spec, SpecValidator};

use crate::spec_file::resolve_paths;
use crate::{registry, Error, Result};

/// A sweep file (see the module documentation).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// The JSON Schema this file claims to follow (for editors; ignored).
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// Short identifier: names the sweep's folder and goes into run ids.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+$"), length(min = 1))]
    pub name: String,
    /// The base spec, relative to the sweep file.
    pub base: PathBuf,
    /// Axes whose values combine in every way.
    #[serde(default)]
    pub grid: Vec<Axis>,
    /// Groups of axes that move together: point i takes value i of each axis of the group.
    #[serde(default)]
    pub zip: Vec<Vec<Axis>>,
    /// Seeds, each a run of every point (default: the base spec's seed).
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// The run id template (see the module documentation).
    #[serde(default)]
    pub id: Option<String>,
    /// The sweep's folder, relative to the sweep file (default `runs/sweeps/<name>`, relative
    /// to the working directory).
    #[serde(default)]
    pub out: Option<PathBuf>,
}

/// One swept value: a JSON pointer into the base spec and the values it takes.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    /// A JSON pointer (RFC 6901) to a value that exists in the base spec.
    #[schemars(regex(pattern = r"^/"))]
    pub pointer: String,
    /// The values it takes.
    #[schemars(length(min = 1))]
    pub values: Vec<Value>,
    /// Its name in run ids and tables (default: the pointer's last segment).
    #[serde(default)]
    pub name: Option<String>,
}

impl Axis {
    fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let last = self.pointer.rsplit('/').next().unwrap_or_default();
            last.replace("~1", "/").replace("~0", "~")
        })
    }
}

/// A sweep read and planned: every run resolved and checked.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// The sweep file.
    pub file: PathBuf,
    /// Its name.
    pub name: String,
    /// The folder of its runs, specs and tables.
    pub out: PathBuf,
    /// The axes' names, in table order.
    pub axes: Vec<String>,
    /// The runs, in plan order.
    pub runs: Vec<PlannedRun>,
}

/// One run of a sweep.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Its id (the run folder's name).
    pub id: String,
    /// Its seed.
    pub seed: u64,
    /// The value of each axis (in [`Sweep::axes`] order), with its pointer.
    pub overrides: Vec<(String, Value)>,
    /// Its resolved spec (absolute data paths), as written to `OUT/specs/<id>.json`.
    pub spec: Value,
}

impl Sweep {
    /// Reads `file` and plans every run; any problem (an unreadable file, a pointer missing from
    /// the base spec, a value that makes a spec invalid, two runs with one id) is an error
    /// naming the run and the pointer, before anything runs or is written.
    pub fn plan(file: &Path) -> Result<Self> {
        let sweep = read_sweep_file(file)?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let base_path = dir.join(&sweep.base);
        let base_text =
            std::fs::read_to_string(&base_path).map_err(|e| Error::io(&base_path, e))?;
        let base: Value = serde_json::from_str(&base_text).map_err(|e| Error::Run {
            path: base_path.clone(),
            message: format!("is not JSON: {e}"),
        })?;
        let validator = SpecValidator::new(registry()?)?;
        let axes: Vec<&Axis> = sweep
            .grid
            .iter()
            .chain(sweep.zip.iter().flatten())
            .collect();
        for group in &sweep.zip {
            let lengths: Vec<usize> = group.iter().map(|a| a.values.len()).collect();
            if lengths.windows(2).any(|w| w[0] != w[1]) {
                return Err(bad(
                    file,
                    format!("a zip group's axes have {lengths:?} values"),
                ));
            }
        }
        let seeds = match sweep.seeds.is_empty() {
            true => vec![base["training"]["seed"].as_u64().unwrap_or(0)],
            false => sweep.seeds.clone(),
        };
        let mut runs: Vec<PlannedRun> = Vec::new();
        for point in points(&sweep) {
            for &seed in &seeds {
                let run = plan_run(&sweep, &axes, &point, seed, (&base, &base_path), &validator)?;
                if runs.iter().any(|r| r.id == run.id) {
                    return Err(bad(file, format!("two runs have the id `{}`", run.id)));
                }
                runs.push(run);
            }
        }
        let out = match &sweep.out {
            Some(out) => dir.join(out),
            None => Path::new("runs/sweeps").join(&sweep.name),
        };
        Ok(Self {
            file: file.to_path_buf(),
            name: sweep.name.clone(),
            out,
            axes: axes.iter().map(|a| a.label()).collect(),
            runs,
        })
    }

    /// The folder of run `id`.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.out.join("runs").join(id)
    }

    /// The resolved spec file of run `id`.
    pub fn spec_path(&self, id: &str) -> PathBuf {
        self.out.join("specs").join(format!("{id}.json"))
    }
}

/// Reads and checks a sweep file against [`SweepFile`]'s schema.
fn read_sweep_file(file: &Path) -> Result<SweepFile> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| bad(file, format!("is not JSON: {e}")))?;
    let schema = serde_json::to_value(schemars::schema_for!(SweepFile)).expect("a schema");
    let validator = jsonschema::validator_for(&schema).expect("the sweep schema compiles");
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    if !problems.is_empty() {
        return Err(bad(file, problems.join("; ")));
    }
    serde_json::from_value(value).map_err(|e| bad(file, e.to_string()))
}

/// Every point of the sweep: for each axis (grid axes, then each zip group's), the index of
/// its value; the first grid axis varies slowest.
fn points(sweep: &SweepFile) -> Vec<Vec<usize>> {
    // Each factor: (how many values, how many axes it sets).
    let factors: Vec<(usize, usize)> = (sweep.grid.iter().map(|a| (a.values.len(), 1)))
        .chain(
            sweep
                .zip
                .iter()
                .map(|g| (g.first().map_or(1, |a| a.values.len()), g.len())),
        )
        .collect();
    let mut points = vec![Vec::new()];
    for (count, width) in factors {
        points = points
            .into_iter()
            .flat_map(|p| {
                (0..count).map(move |i| {
                    let mut p = p.clone();
                    p.extend(std::iter::repeat_n(i, width));
                    p
                })
            })
            .collect();
    }
    points
}

/// One run: the base with `point`'s values and `seed`, named and checked.
fn plan_run(
    sweep: &SweepFile,
    axes: &[&Axis],
    point: &[usize],
    seed: u64,
    (base, base_path): (&Value, &Path),
    validator: &SpecValidator,
) -> Result<PlannedRun> {
    let mut spec = base.clone();
    let mut overrides = Vec::new();
    let mut labels = Vec::new();
    for (axis, &i) in axes.iter().zip(point) {
        let value = axis.values[i].clone();
        labels.push((axis.label(), id_text(&value)));
        overrides.push((axis.pointer.clone(), value));
    }
    let id = run_id(sweep, &labels, seed);
    for (pointer, value) in &overrides {
        let Some(slot) = spec.pointer_mut(pointer) else {
            return Err(Error::Usage(format!(
                "sweep run `{id}`: the pointer {pointer} names nothing in the base spec {}",
                base_path.display()
            )));
        };
        *slot = value.clone();
    }
    spec["name"] = Value::from(id.clone());
    if !spec["training"].is_object() {
        spec["training"] = serde_json::json!({});
    }
    spec["training"]["seed"] = Value::from(seed);
    let text = spec.to_string();
    let label = format!("sweep run `{id}`");
    let (mut typed, _) = parse_spec(&label, &text, validator).map_err(|e| {
        let pointers: Vec<&str> = overrides.iter().map(|(p, _)| p.as_str()).collect();
        let problems = match e {
            vaezoo_core::Error::InvalidSpec { problems } => problems.join("; "),
            other => other.to_string(),
        };
        let overrides = pointers.join(", ");
        Error::Usage(format!("{label}: {problems} (the sweep sets {overrides})"))
    })?;
    resolve_paths(&mut typed, base_path)?;
    Ok(PlannedRun {
        id,
        seed,
        overrides,
        spec: serde_json::to_value(&typed).expect("a spec serialises"),
    })
}

/// The run id of a point (its axes' (name, value text)) and seed.
fn run_id(sweep: &SweepFile, labels: &[(String, String)], seed: u64) -> String {
    let template = sweep.id.clone().unwrap_or_else(|| {
        let axes: String = labels.iter().map(|(n, _)| format!("-{n}{{{n}}}")).collect();
        format!("{{name}}{axes}-seed{{seed}}")
    });
    let mut id = template
        .replace("{name}", &sweep.name)
        .replace("{seed}", &seed.to_string());
    for (name, value) in labels {
        id = id.replace(&format!("{{{name}}}"), value);
    }
    id
}

/// A value as it appears in a run id: numbers and strings as written, anything else compacted;
/// characters other than letters, digits, `.`, `_` and `-` dropped.
fn id_text(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect()
}

/// An error about the sweep file `file`.
fn bad(file: &Path, message: String) -> Error {
    Error::Run {
        path: file.to_path_buf(),
        message,
    }
}
