//! What the fuzz cases of one test share, each made once on first use: the tiny specs, a
//! pristine partly trained run (image, and text), the reference run of the kill family, the
//! zoo's specs, and whether user namespaces work here.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::runner::{classify, run, Cmd, Verdict};

/// A run that must exist for the cases, trained by `vaezoo train … --out RUN ARGS…`.
fn train_fixture(spec: &Path, run_dir: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        spec.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ];
    args.extend(extra);
    let cmd = Cmd::vaezoo(&args);
    let o = run(&cmd);
    assert_eq!(
        classify(&o, false),
        Verdict::Success,
        "fixture failed: {}\n{}\n{}",
        cmd.shell_line(),
        o.stdout,
        o.stderr
    );
}

/// The reference of the kill family: an uninterrupted run of `spec`.
pub struct KillReference {
    pub spec: PathBuf,
    pub checkpoint: Vec<u8>,
    pub metrics: String,
    /// Every entry of its run folder.
    pub entries: Vec<PathBuf>,
    /// How long the uninterrupted training took.
    pub seconds: f64,
}

pub struct Fixtures {
    pub root: tempfile::TempDir,
    /// `zoo/vae-optdigits-tiny.json` with an absolute data path.
    pub tiny_spec: PathBuf,
    /// `zoo/nvae-wiki-tiny.json` with an absolute data path.
    pub text_spec: PathBuf,
    pristine: OnceLock<PathBuf>,
    text_pristine: OnceLock<PathBuf>,
    complete: OnceLock<PathBuf>,
    kill_reference: OnceLock<KillReference>,
    zoo: OnceLock<Vec<(String, Value)>>,
    namespaces: OnceLock<bool>,
}

/// `zoo/NAME` parsed, its data folder made absolute and its `$schema` dropped.
pub fn zoo_spec(name: &str) -> Value {
    let text = std::fs::read_to_string(crate::common::repo().join("zoo").join(name)).unwrap();
    let mut spec: Value = serde_json::from_str(&text).unwrap();
    absolute_data(&mut spec);
    spec
}

fn absolute_data(spec: &mut Value) {
    if let Some(dir) = spec.pointer("/data/dir").and_then(Value::as_str) {
        let abs = crate::common::repo().join("zoo").join(dir);
        spec["data"]["dir"] = abs.display().to_string().into();
    }
    if let Some(m) = spec.as_object_mut() {
        m.remove("$schema");
    }
}

impl Fixtures {
    pub fn create() -> Self {
        let root = tempfile::Builder::new()
            .prefix("vaezoo-fuzz")
            .tempdir()
            .unwrap();
        let write = |name: &str, spec: Value| {
            let path = root.path().join(name);
            std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
            path
        };
        let tiny_spec = write("tiny.json", zoo_spec("vae-optdigits-tiny.json"));
        let text_spec = write("text.json", zoo_spec("nvae-wiki-tiny.json"));
        Fixtures {
            root,
            tiny_spec,
            text_spec,
            pristine: OnceLock::new(),
            text_pristine: OnceLock::new(),
            complete: OnceLock::new(),
            kill_reference: OnceLock::new(),
            zoo: OnceLock::new(),
            namespaces: OnceLock::new(),
        }
    }

    /// A folder of its own for case `id`.
    pub fn case_dir(&self, id: &str) -> PathBuf {
        let dir = self.root.path().join("cases").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The tiny optdigits run stopped after 3 of its 24 steps (never to be changed).
    pub fn pristine(&self) -> &Path {
        self.pristine.get_or_init(|| {
            let dir = self.root.path().join("pristine");
            train_fixture(&self.tiny_spec, &dir, &["--stop-after", "3"]);
            dir
        })
    }

    /// The tiny optdigits run trained to its end, evaluated and sampled from (never to be
    /// changed).
    pub fn complete(&self) -> &Path {
        self.complete.get_or_init(|| {
            let dir = self.root.path().join("complete");
            train_fixture(&self.tiny_spec, &dir, &[]);
            let d = dir.to_str().unwrap();
            for args in [
                &["eval", d, "--iw-samples", "10"][..],
                &["sample", d, "-n", "4"],
            ] {
                let cmd = Cmd::vaezoo(args);
                let o = run(&cmd);
                assert!(
                    o.success(),
                    "fixture failed: {}\n{}",
                    cmd.shell_line(),
                    o.stderr
                );
            }
            dir
        })
    }

    /// A pristine image run: stopped after 3 steps, or (`complete`) trained to the end and
    /// evaluated.
    pub fn image_run(&self, complete: bool) -> &Path {
        if complete {
            self.complete()
        } else {
            self.pristine()
        }
    }

    /// The tiny text run stopped after 2 steps (never to be changed).
    pub fn text_pristine(&self) -> &Path {
        self.text_pristine.get_or_init(|| {
            let dir = self.root.path().join("text-pristine");
            train_fixture(&self.text_spec, &dir, &["--stop-after", "2"]);
            dir
        })
    }

    /// The spec of the kill family (6400 steps of the tiny model, about 1.5 s, a checkpoint every 37) and
    /// its uninterrupted run.
    pub fn kill_reference(&self) -> &KillReference {
        self.kill_reference.get_or_init(|| {
            let spec = crate::common::tiny_spec(
                self.root.path(),
                "killed",
                json!({ "epochs": 200, "batch_size": 16, "optimizer": { "lr": 0.003 }, "seed": 5, "checkpoint_every": 37 }),
            );
            let dir = self.root.path().join("kill-reference");
            let start = std::time::Instant::now();
            train_fixture(&spec, &dir, &[]);
            KillReference {
                spec,
                checkpoint: std::fs::read(dir.join("checkpoints/latest.safetensors")).unwrap(),
                metrics: std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap(),
                entries: super::files::entries(&dir),
                seconds: start.elapsed().as_secs_f64(),
            }
        })
    }

    /// Every spec of `zoo/` by file name (files that are no spec skipped), data made absolute.
    pub fn zoo(&self) -> &[(String, Value)] {
        self.zoo.get_or_init(|| {
            let mut specs = Vec::new();
            let dir = crate::common::repo().join("zoo");
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(text) = name
                    .ends_with(".json")
                    .then(|| std::fs::read_to_string(e.path()).ok())
                    .flatten()
                else {
                    continue;
                };
                let Ok(mut spec) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if spec.get("encoder").is_none() || spec.get("training").is_none() {
                    continue;
                }
                absolute_data(&mut spec);
                specs.push((name, spec));
            }
            specs.sort_by(|a, b| a.0.cmp(&b.0));
            assert!(!specs.is_empty(), "no spec in zoo/");
            specs
        })
    }

    /// Whether `unshare -rm` can mount a tmpfs here (user and mount namespaces).
    pub fn namespaces(&self) -> bool {
        *self.namespaces.get_or_init(|| {
            let present = std::process::Command::new("unshare")
                .arg("--help")
                .output()
                .is_ok_and(|o| o.status.success());
            if !present {
                eprintln!("fuzz: skipping the write-failure family: no `unshare` here");
                return false;
            }
            let dir = self.root.path().join("ns-probe");
            std::fs::create_dir_all(&dir).unwrap();
            let script = format!(
                "mount -t tmpfs -o size=64k tmpfs {0} && mount -o remount,ro {0} && ! touch {0}/x 2>/dev/null",
                dir.display()
            );
            let o = run(&Cmd::other("unshare", &["-rm", "sh", "-c", script.as_str()]));
            let works = o.success();
            if !works {
                eprintln!(
                    "fuzz: skipping the write-failure family: `unshare -rm` with a tmpfs does not work here ({}): {}",
                    o.status_text(),
                    o.stderr.trim()
                );
            }
            works
        })
    }
}
