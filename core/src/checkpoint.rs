//! Training checkpoints: parameters, Adam's moments, the host RNG, the resolved spec and the
//! trainer's own state in one safetensors file, written atomically and checked on load so a
//! resumed run continues bit for bit or fails with a one-line error.
//!
//! Layout: F32 tensors `param/<name>`, `adam.m/<name>` and `adam.v/<name>`; the
//! `__metadata__` strings `format`, `format_version`, `step`, `adam_step`, `param_order`,
//! `rng`, `spec`, `trainer`, `versions`, `payload_sha256` (the SHA-256 of every tensor's
//! bytes in `param_order`: param, then m, then v for each name) and `metadata_sha256` (the
//! SHA-256 of every other entry, see [`metadata_digest`]), so that no byte of the file can
//! change unnoticed. Files of format version 1 (no `metadata_sha256`) are still read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::optim::AdamState;
use crate::params::HostParam;
use crate::rng::HostRng;

const FORMAT: &str = "vaezoo-checkpoint";
const FORMAT_VERSION: &str = "2";
/// The format version of checkpoints written before the metadata was checksummed: read, with
/// only the tensors checked.
const FORMAT_VERSION_UNCHECKED_METADATA: &str = "1";
/// Tensor-name prefixes of one parameter's three tensors, in checksum order (used on save).
const PREFIXES: [&str; 3] = ["param", "adam.m", "adam.v"];

/// Everything needed to resume training bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Optimiser steps done.
    pub step: u64,
    /// The model's parameters, in declaration order.
    pub params: Vec<HostParam>,
    /// Adam's state; `m[i]` and `v[i]` belong to `params[i]`.
    pub optimizer: AdamState,
    /// The host RNG, exactly where training left it.
    pub rng: HostRng,
    /// The resolved spec.
    pub spec: serde_json::Value,
    /// Trainer-specific state (epoch, position, ...), opaque here.
    pub trainer: serde_json::Value,
    /// Versions of the crates and plugins that wrote the checkpoint.
    pub versions: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Writes the checkpoint atomically: to a hidden `.tmp` file in the same directory, synced,
    /// then renamed over `path` (and the directory synced where the platform allows). On error
    /// the temporary file is removed and `path` is untouched.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self
            .to_bytes()
            .map_err(|e| bad(path, format!("cannot save: {e}")))?;
        let name = path
            .file_name()
            .ok_or_else(|| bad(path, "cannot save: the path does not name a file".into()))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".{}.{}-{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&tmp, e));
        drop(file);
        if let Err(e) =
            written.and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e)))
        {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Makes the rename durable; some platforms cannot open or sync a directory.
        let _ = File::open(dir).and_then(|d| d.sync_all());
        // The temporary files `.NAME.PID-N.tmp` of saves killed before their rename.
        let prefix = format!(".{}.", name.to_string_lossy());
        crate::process::remove_left_by_exited(dir, |entry| {
            let rest = entry.strip_prefix(&prefix)?.strip_suffix(".tmp")?;
            rest.split_once('-')?.0.parse().ok()
        });
        Ok(())
    }

    /// Reads and checks a checkpoint. A missing, truncated, corrupt or foreign file, or one with
    /// missing or inconsistent entries, is an [`Error::Checkpoint`] with a one-line message.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        fs::read(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|bytes| Self::from_bytes(&bytes))
            .map_err(|message| bad(path, message))
    }

    /// Serialises to safetensors bytes after checking that the pieces fit together.
    fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let (params, m, v) = (&self.params, &self.optimizer.m, &self.optimizer.v);
        if m.len() != params.len() || v.len() != params.len() {
            let counts = (params.len(), m.len(), v.len());
            return Err(format!("(params, m, v) counts differ: {counts:?}"));
        }
        let mut seen = HashSet::new();
        let mut tensors = Vec::with_capacity(3 * params.len());
        for (i, p) in params.iter().enumerate() {
            if !seen.insert(p.name.as_str()) {
                return Err(format!("parameter `{}` appears twice", p.name));
            }
            for (prefix, values) in PREFIXES.iter().zip([&p.values, &m[i], &v[i]]) {
                let data: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                tensors.push((format!("{prefix}/{}", p.name), p.shape.clone(), data));
            }
        }
        let mut hasher = Sha256::new();
        tensors.iter().for_each(|(_, _, data)| hasher.update(data));
        let order: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        let mut metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".into(), FORMAT_VERSION.into()),
            ("step".into(), self.step.to_string()),
            ("adam_step".into(), self.optimizer.step.to_string()),
            ("payload_sha256".into(), hex(&hasher.finalize())),
        ]);
        for (key, text) in [
            ("param_order", serde_json::to_string(&order)),
            ("rng", serde_json::to_string(&self.rng)),
            ("spec", serde_json::to_string(&self.spec)),
            ("trainer", serde_json::to_string(&self.trainer)),
            ("versions", serde_json::to_string(&self.versions)),
        ] {
            metadata.insert(
                key.into(),
                text.map_err(|e| format!("encoding {key}: {e}"))?,
            );
        }
        let digest = metadata_digest(&metadata);
        metadata.insert("metadata_sha256".into(), digest);
        let mut views = Vec::with_capacity(tensors.len());
        for (name, shape, data) in &tensors {
            // Checks that the number of values fits the shape.
            let view = TensorView::new(Dtype::F32, shape.clone(), data)
                .map_err(|e| format!("tensor `{name}`: {e}"))?;
            views.push((name.as_str(), view));
        }
        safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
    }

    /// Parses and checks safetensors bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
        let corrupt = |e| format!("not a readable safetensors file: {e}");
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
        let tensors = SafeTensors::deserialize(bytes).map_err(corrupt)?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| format!("metadata entry `{key}` is missing"))
        };
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(format!(
                "not a vaezoo checkpoint (no `format` = `{FORMAT}` marker)"
            ));
        }
        let version = get("format_version")?;
        if version == FORMAT_VERSION {
            if &metadata_digest(meta) != get("metadata_sha256")? {
                return Err("checksum mismatch: the metadata was changed or is damaged".into());
            }
        } else if version != FORMAT_VERSION_UNCHECKED_METADATA {
            return Err(format!(
                "unsupported format_version `{version}` (expected `{FORMAT_VERSION}`)"
            ));
        }
        let parse = |key: &str| -> Result<u64, String> {
            get(key)?
                .parse()
                .map_err(|e| format!("metadata entry `{key}`: {e}"))
        };
        let (step, adam_step) = (parse("step")?, parse("adam_step")?);
        let order: Vec<String> = json_entry(meta, "param_order")?;
        if order.iter().collect::<HashSet<_>>().len() != order.len() {
            return Err("param_order repeats a name".into());
        }
        if tensors.len() != 3 * order.len() {
            let (found, n) = (tensors.len(), order.len());
            return Err(format!("{found} tensors for {n} parameters, not 3 each"));
        }
        let mut hasher = Sha256::new();
        let mut params = Vec::with_capacity(order.len());
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for name in order {
            let param = f32_tensor(&tensors, &format!("param/{name}"), None)?;
            let shape = param.shape().to_vec();
            let m_i = f32_tensor(&tensors, &format!("adam.m/{name}"), Some(&shape))?;
            let v_i = f32_tensor(&tensors, &format!("adam.v/{name}"), Some(&shape))?;
            for view in [&param, &m_i, &v_i] {
                hasher.update(view.data());
            }
            m.push(f32s(m_i.data()));
            v.push(f32s(v_i.data()));
            let values = f32s(param.data());
            params.push(HostParam {
                name,
                shape,
                values,
            });
        }
        if &hex(&hasher.finalize()) != get("payload_sha256")? {
            return Err("checksum mismatch: the tensor data is damaged".into());
        }
        Ok(Checkpoint {
            step,
            params,
            optimizer: AdamState {
                step: adam_step,
                m,
                v,
            },
            rng: json_entry(meta, "rng")?,
            spec: json_entry(meta, "spec")?,
            trainer: json_entry(meta, "trainer")?,
            versions: json_entry(meta, "versions")?,
        })
    }
}

/// The SHA-256 (hex) of every metadata entry but `metadata_sha256`, in key order, each key
/// and value preceded by its length in bytes (8, little-endian), so that no two sets of
/// entries give the same bytes.
fn metadata_digest(meta: &HashMap<String, String>) -> String {
    let mut entries: Vec<(&String, &String)> = meta
        .iter()
        .filter(|(key, _)| *key != "metadata_sha256")
        .collect();
    entries.sort();
    let mut hasher = Sha256::new();
    for (key, value) in entries {
        for part in [key, value] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hex(&hasher.finalize())
}

/// A checkpoint error about `path`, forced onto one line.
fn bad(path: &Path, message: String) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: crate::error::one_line(&message),
    }
}

/// The F32 tensor `key`, which must have shape `want` when one is given.
fn f32_tensor<'a>(
    tensors: &SafeTensors<'a>,
    key: &str,
    want: Option<&[usize]>,
) -> Result<TensorView<'a>, String> {
    let view = tensors
        .tensor(key)
        .map_err(|_| format!("tensor `{key}` is missing"))?;
    let got = view.shape();
    if view.dtype() != Dtype::F32 {
        Err(format!("tensor `{key}` is {}, not F32", view.dtype()))
    } else if want.is_some_and(|want| want != got) {
        Err(format!(
            "tensor `{key}` has shape {got:?}, unlike its parameter"
        ))
    } else {
        Ok(view)
    }
}

/// Decodes the JSON metadata entry `key`.
fn json_entry<T: DeserializeOwned>(meta: &HashMap<String, String>, key: &str) -> Result<T, String> {
    let text = meta
        .get(key)
        .ok_or_else(|| format!("metadata entry `{key}` is missing"))?;
    serde_json::from_str(text).map_err(|e| format!("metadata entry `{key}`: {e}"))
}

/// Little-endian bytes to f32s (safetensors validated the length against the shape).
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;
    use serde_json::json;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("vaezoo-checkpoint-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sample(step: u64) -> Checkpoint {
        let mut rng = crate::rng::seeded(7);
        for _ in 0..3 {
            rng.next_u64();
        }
        let p = |name: &str, shape: Vec<usize>, base: f32| HostParam {
            name: name.into(),
            values: (0..shape.iter().product::<usize>())
                .map(|i| base + i as f32 * 0.1)
                .collect(),
            shape,
        };
        Checkpoint {
            step,
            params: vec![
                p("encoder.weight", vec![2, 3], -1.0),
                p("encoder.bias", vec![4], 0.5),
            ],
            optimizer: AdamState {
                step,
                m: vec![
                    vec![0.01, -0.02, 0.03, 1e-8, f32::MIN_POSITIVE, -0.0],
                    vec![0.1; 4],
                ],
                v: vec![vec![1e-3; 6], vec![2.5e-7, 0.0, 3.0, 1e30]],
            },
            rng,
            spec: json!({"model": {"latent": 8, "lr": 1e-3, "beta": 0.1}, "name": "test"}),
            trainer: json!({"epoch": 2, "position": 17}),
            versions: BTreeMap::from([("vaezoo-core".to_string(), "0.1.0".to_string())]),
        }
    }

    /// Asserts that loading `path` fails with a one-line checkpoint error; returns the message.
    fn load_err(path: &Path) -> String {
        match Checkpoint::load(path) {
            Err(e @ Error::Checkpoint { .. }) => {
                let text = e.to_string();
                assert!(!text.contains('\n'), "multi-line error: {text:?}");
                text
            }
            other => panic!("expected a checkpoint error, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_is_exact_and_the_rng_continues() {
        let dir = TempDir::new("round-trip");
        let path = dir.0.join("ckpt.safetensors");
        let mut original = sample(42);
        original.save(&path).unwrap();
        let mut loaded = Checkpoint::load(&path).unwrap();
        assert_eq!(loaded, original);
        for _ in 0..5 {
            assert_eq!(loaded.rng.next_u64(), original.rng.next_u64());
        }
    }

    #[test]
    fn saving_over_a_checkpoint_replaces_it_and_leaves_no_temp_file() {
        let dir = TempDir::new("atomic");
        let path = dir.0.join("ckpt.safetensors");
        sample(1).save(&path).unwrap();
        sample(2).save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), sample(2));
        let names: Vec<String> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["ckpt.safetensors".to_string()]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_save_removes_the_temporary_files_of_killed_saves_only() {
        let dir = TempDir::new("leftovers");
        let path = dir.0.join("ckpt.safetensors");
        let killed = dir.0.join(format!(".ckpt.safetensors.{}-0.tmp", u32::MAX));
        let running = dir
            .0
            .join(format!(".ckpt.safetensors.{}-7.tmp", std::process::id()));
        let other = dir.0.join(".other.safetensors.4294967295-0.tmp");
        for f in [&killed, &running, &other] {
            fs::write(f, b"partial").unwrap();
        }
        sample(5).save(&path).unwrap();
        assert!(!killed.exists());
        assert!(running.exists() && other.exists());
    }

    #[test]
    fn damaged_or_missing_files_are_one_line_errors() {
        let dir = TempDir::new("damaged");
        let good = dir.0.join("good.safetensors");
        sample(3).save(&good).unwrap();
        let bytes = fs::read(&good).unwrap();
        let write = |name: &str, data: &[u8]| {
            let p = dir.0.join(name);
            fs::write(&p, data).unwrap();
            p
        };
        load_err(&write("half", &bytes[..bytes.len() / 2]));
        load_err(&write("empty", &[]));
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        load_err(&write("garbage", &garbage));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        assert!(load_err(&write("flipped", &flipped)).contains("checksum mismatch"));
        assert!(load_err(&dir.0.join("missing")).contains("cannot read"));
    }

    /// `bytes` (a checkpoint) written again with its metadata changed by `edit`.
    fn with_metadata(bytes: &[u8], edit: impl FnOnce(&mut HashMap<String, String>)) -> Vec<u8> {
        let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        edit(&mut meta);
        let tensors = SafeTensors::deserialize(bytes).unwrap();
        safetensors::serialize(tensors.tensors(), Some(meta)).unwrap()
    }

    #[test]
    fn edited_metadata_is_caught_and_version_1_files_still_load() {
        let dir = TempDir::new("metadata");
        let good = dir.0.join("good.safetensors");
        sample(4).save(&good).unwrap();
        let bytes = fs::read(&good).unwrap();
        let write = |name: &str, data: Vec<u8>| {
            let p = dir.0.join(name);
            fs::write(&p, data).unwrap();
            p
        };
        for (key, value) in [("step", "1000000000000"), ("trainer", "{}"), ("spec", "{}")] {
            let edited = with_metadata(&bytes, |m| {
                m.insert(key.into(), value.into());
            });
            let e = load_err(&write(key, edited));
            assert!(e.contains("metadata was changed"), "{key}: {e}");
        }
        let dropped = with_metadata(&bytes, |m| {
            m.remove("metadata_sha256");
        });
        assert!(load_err(&write("dropped", dropped)).contains("metadata_sha256"));
        // Written before the metadata was checksummed: read as it was then.
        let version_1 = with_metadata(&bytes, |m| {
            m.remove("metadata_sha256");
            m.insert("format_version".into(), "1".into());
        });
        assert_eq!(
            Checkpoint::load(&write("v1", version_1)).unwrap(),
            sample(4)
        );
    }

    #[test]
    fn foreign_and_future_files_are_rejected() {
        let dir = TempDir::new("foreign");
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let write = |name: &str, meta: Option<HashMap<String, String>>| {
            let view = TensorView::new(Dtype::F32, vec![2], &data).unwrap();
            let p = dir.0.join(name);
            fs::write(&p, safetensors::serialize([("w", view)], meta).unwrap()).unwrap();
            p
        };
        assert!(load_err(&write("plain", None)).contains("not a vaezoo checkpoint"));
        let future = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".to_string(), "3".to_string()),
        ]);
        assert!(load_err(&write("future", Some(future))).contains("format_version `3`"));
    }
}
