//! Tests of checkpoints: round trips, damage of every kind, older format versions.

use super::*;
use rand::RngCore;
use serde_json::json;
use std::path::PathBuf;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("vaezoo-checkpoint-{test}-{}", std::process::id()));
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
        torch_views: BTreeMap::from([("encoder.weight".to_string(), TorchView::Transposed)]),
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
fn the_same_checkpoint_is_the_same_bytes() {
    // safetensors' metadata map comes out in hash order, which each HashMap draws anew.
    let bytes: Vec<Vec<u8>> = (0..8)
        .map(|_| sample(9).borrowed().to_bytes().unwrap())
        .collect();
    assert!(bytes.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(Checkpoint::from_bytes(&bytes[0]).unwrap(), sample(9));
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
fn tensors_are_stored_in_pytorch_layout_with_the_layout_recorded() {
    let dir = TempDir::new("layout");
    let path = dir.0.join("ckpt.safetensors");
    sample(6).save(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    for prefix in PREFIXES {
        let stored = tensors.tensor(&format!("{prefix}/encoder.weight")).unwrap();
        assert_eq!(stored.shape(), [3, 2], "{prefix}: nn.Linear's (out, in)");
    }
    // Column 0 of vaezoo's 2 × 3 matrix [-1.0, -0.9, -0.8; -0.7, -0.6, -0.5] is row 0.
    let param = f32s(tensors.tensor("param/encoder.weight").unwrap().data());
    assert_eq!(param[..2], [-1.0, -0.7]);
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let layout = &header.metadata().as_ref().unwrap()["torch_layout"];
    assert_eq!(
        layout,
        r#"{"encoder.weight":{"view":"transposed","shape":[2,3]}}"#
    );
}

#[test]
fn edited_metadata_is_caught_and_version_1_and_2_files_still_load() {
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
    // Written before tensors were stored in PyTorch's layouts (version 2), or before the
    // metadata was checksummed too (version 1): read as they were then.
    let mut own_layouts = sample(4);
    own_layouts.torch_views.clear();
    own_layouts.save(&good).unwrap();
    let bytes = fs::read(&good).unwrap();
    let version_2 = with_metadata(&bytes, |m| {
        m.remove("torch_layout");
        m.insert("format_version".into(), "2".into());
        let digest = metadata_digest(m);
        m.insert("metadata_sha256".into(), digest);
    });
    assert_eq!(
        Checkpoint::load(&write("v2", version_2)).unwrap(),
        own_layouts
    );
    let version_1 = with_metadata(&bytes, |m| {
        m.remove("metadata_sha256");
        m.remove("torch_layout");
        m.insert("format_version".into(), "1".into());
    });
    assert_eq!(
        Checkpoint::load(&write("v1", version_1)).unwrap(),
        own_layouts
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
        ("format_version".to_string(), "4".to_string()),
    ]);
    assert!(load_err(&write("future", Some(future))).contains("format_version `4`"));
}
