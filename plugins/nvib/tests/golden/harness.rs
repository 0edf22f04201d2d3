//! Loading golden files, comparing outputs, and converting the official sequence-first layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The golden directory: `VAEZOO_GOLDEN_DIR`, or the repository's copy.
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("VAEZOO_GOLDEN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden"),
    }
}

/// One stored tensor: shape and row-major data (`None` = NaN in the official code).
#[derive(Clone, Debug)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<Option<f64>>,
}

impl Array {
    fn from_json(v: &Value) -> Result<Self, String> {
        let shape = v["shape"]
            .as_array()
            .ok_or("no shape")?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize).ok_or("bad shape"))
            .collect::<Result<Vec<_>, _>>()?;
        let data: Vec<Option<f64>> = v["data"]
            .as_array()
            .ok_or("no data")?
            .iter()
            .map(|x| match x {
                Value::Null => Ok(None),
                Value::Bool(b) => Ok(Some(f64::from(u8::from(*b)))),
                Value::String(s) if s == "inf" => Ok(Some(f64::INFINITY)),
                Value::String(s) if s == "-inf" => Ok(Some(f64::NEG_INFINITY)),
                x => x.as_f64().map(Some).ok_or(format!("bad value {x}")),
            })
            .collect::<Result<_, String>>()?;
        if data.len() != shape.iter().product::<usize>() {
            return Err(format!("{} values for shape {shape:?}", data.len()));
        }
        Ok(Self { shape, data })
    }

    /// The values, NaN where the official output was NaN.
    pub fn f64s(&self) -> Vec<f64> {
        self.data.iter().map(|x| x.unwrap_or(f64::NAN)).collect()
    }

    /// The single value of a scalar.
    pub fn scalar(&self) -> f64 {
        assert_eq!(self.data.len(), 1, "not a scalar");
        self.f64s()[0]
    }

    /// Booleans (nonzero = true).
    pub fn bools(&self) -> Vec<bool> {
        self.f64s().into_iter().map(|x| x != 0.0).collect()
    }
}

/// A tolerance: pass iff `|got − want| ≤ abs + rel·|want|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

impl Tol {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(Self {
            abs: v["abs"].as_f64().ok_or("tolerance without abs")?,
            rel: v["rel"].as_f64().ok_or("tolerance without rel")?,
        })
    }
}

/// One golden file.
#[derive(Clone, Debug)]
pub struct Golden {
    pub case: String,
    /// The file's prose description (empty when it has none).
    pub description: String,
    pub inputs: BTreeMap<String, Array>,
    pub outputs: BTreeMap<String, Array>,
    pub tolerance: Tol,
    pub overrides: BTreeMap<String, Tol>,
}

impl Golden {
    /// Reads and parses a golden file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Self::from_json(serde_json::from_str(&text).map_err(|e| e.to_string())?)
    }

    /// Parses a golden file's JSON.
    pub fn from_json(v: Value) -> Result<Self, String> {
        let arrays = |key: &str| -> Result<BTreeMap<String, Array>, String> {
            v[key]
                .as_object()
                .ok_or(format!("no {key}"))?
                .iter()
                .map(|(k, a)| {
                    Ok((
                        k.clone(),
                        Array::from_json(a).map_err(|e| format!("{k}: {e}"))?,
                    ))
                })
                .collect()
        };
        let overrides = match v.get("tolerance_overrides").and_then(Value::as_object) {
            Some(o) => o
                .iter()
                .map(|(k, t)| Ok((k.clone(), Tol::from_json(t)?)))
                .collect::<Result<_, String>>()?,
            None => BTreeMap::new(),
        };
        Ok(Self {
            case: v["case"].as_str().ok_or("no case")?.to_string(),
            description: v["description"].as_str().unwrap_or_default().to_string(),
            inputs: arrays("inputs")?,
            outputs: arrays("outputs")?,
            tolerance: Tol::from_json(&v["tolerance"])?,
            overrides,
        })
    }

    /// Input `name`.
    pub fn input(&self, name: &str) -> Result<&Array, String> {
        self.inputs.get(name).ok_or(format!("no input `{name}`"))
    }

    /// Output `name` (for its shape).
    pub fn output(&self, name: &str) -> Result<&Array, String> {
        self.outputs.get(name).ok_or(format!("no output `{name}`"))
    }
}

/// What the port computed for a file: values in the golden's own layout, and the outputs it
/// deliberately does not compare (with the reason).
#[derive(Clone, Debug, Default)]
pub struct Produced {
    pub values: Vec<(String, Vec<f64>)>,
    pub skipped: Vec<(String, &'static str)>,
    /// Per output, the values at padding positions, which the port does not compute (the
    /// official code does, but nothing reads them): not compared.
    pub padding: Vec<(String, Vec<bool>)>,
}

impl Produced {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds output `name`.
    pub fn with(mut self, name: &str, values: Vec<f64>) -> Self {
        self.values.push((name.to_string(), values));
        self
    }

    /// Adds output `name` in the official sequence-first layout `[N, B, X]`, whose rows at
    /// padding positions (`keep` false, row-major `B × N`) are not compared.
    pub fn with_padded(mut self, name: &str, values: Vec<f64>, keep: &[bool], b: usize) -> Self {
        let n = keep.len() / b;
        let x = values.len() / keep.len();
        let padded = (0..n)
            .flat_map(|i| (0..b).map(move |j| (i, j)))
            .flat_map(|(i, j)| std::iter::repeat_n(!keep[j * n + i], x))
            .collect();
        self.padding.push((name.to_string(), padded));
        self.with(name, values)
    }

    /// Declares output `name` not compared, and why.
    pub fn skip(mut self, name: &str, why: &'static str) -> Self {
        self.skipped.push((name.to_string(), why));
        self
    }
}

/// Compares every golden output with the produced one; returns how many values matched.
///
/// A `null` (NaN) in the official output must be 0 in ours: the port defines π = 0 for dropped
/// components where the official v1.0 code divides 0 by 0.
pub fn compare(g: &Golden, p: &Produced) -> Result<usize, String> {
    let mut errors = Vec::new();
    let mut matched = 0;
    for (name, _) in &p.values {
        if !g.outputs.contains_key(name) {
            errors.push(format!("produced `{name}`, which the file does not have"));
        }
    }
    for (name, want) in &g.outputs {
        if p.skipped.iter().any(|(s, _)| s == name) {
            continue;
        }
        let Some((_, got)) = p.values.iter().find(|(n, _)| n == name) else {
            errors.push(format!("output `{name}` not produced"));
            continue;
        };
        if got.len() != want.data.len() {
            errors.push(format!(
                "`{name}`: {} values, want {}",
                got.len(),
                want.data.len()
            ));
            continue;
        }
        let tol = g.overrides.get(name).copied().unwrap_or(g.tolerance);
        let padded = p.padding.iter().find(|(n, _)| n == name).map(|(_, f)| f);
        let mut bad = Vec::new();
        for (i, (&x, w)) in got.iter().zip(&want.data).enumerate() {
            if padded.is_some_and(|f| f[i]) {
                continue;
            }
            let ok = match w {
                None => x == 0.0,
                Some(w) if w.is_infinite() => x == *w,
                Some(w) => (x - w).abs() <= tol.abs + tol.rel * w.abs(),
            };
            if ok {
                matched += 1;
            } else {
                bad.push(format!(
                    "[{i}] got {x:e} want {}",
                    w.map_or("NaN→0".into(), |w| format!("{w:e}"))
                ));
            }
        }
        if !bad.is_empty() {
            let n = bad.len();
            bad.truncate(4);
            errors.push(format!(
                "`{name}`: {n} value(s) off (abs {} rel {}): {}",
                tol.abs,
                tol.rel,
                bad.join(", ")
            ));
        }
    }
    if errors.is_empty() {
        Ok(matched)
    } else {
        Err(errors.join("; "))
    }
}

/// `[N, B, X]` (sequence-first, the official layout) → `[B, N, X]` (ours).
pub fn seq_to_batch(data: &[f64], n: usize, b: usize, x: usize) -> Vec<f64> {
    assert_eq!(data.len(), n * b * x);
    let mut out = vec![0.0; data.len()];
    for i in 0..n {
        for j in 0..b {
            let (src, dst) = ((i * b + j) * x, (j * n + i) * x);
            out[dst..dst + x].copy_from_slice(&data[src..src + x]);
        }
    }
    out
}

/// `[B, N, X]` (ours) → `[N, B, X]` (the official layout).
pub fn batch_to_seq(data: &[f64], b: usize, n: usize, x: usize) -> Vec<f64> {
    seq_to_batch(data, b, n, x)
}

/// `[B·nh, N, E]` (the official per-head layout) → `[B, N, nh·E]` (ours: the heads packed in
/// the last axis, as the in-projection gives them).
pub fn pack_heads(data: &[f64], b: usize, nh: usize, n: usize, e: usize) -> Vec<f64> {
    assert_eq!(data.len(), b * nh * n * e);
    let mut out = vec![0.0; data.len()];
    for (r, row) in data.chunks(e).enumerate() {
        let (bi, h, i) = (r / (nh * n), r / n % nh, r % n);
        let dst = ((bi * n + i) * nh + h) * e;
        out[dst..dst + e].copy_from_slice(row);
    }
    out
}

/// `[B, N, nh·E]` (ours) → `[B·nh, N, E]` (the official per-head layout).
pub fn unpack_heads(data: &[f64], b: usize, nh: usize, n: usize, e: usize) -> Vec<f64> {
    assert_eq!(data.len(), b * nh * n * e);
    let mut out = vec![0.0; data.len()];
    for (r, row) in data.chunks(e).enumerate() {
        let (bi, i, h) = (r / (n * nh), r / nh % n, r % nh);
        let dst = ((bi * nh + h) * n + i) * e;
        out[dst..dst + e].copy_from_slice(row);
    }
    out
}
