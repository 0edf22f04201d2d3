//! Tests of the run folder: creation, checkpoints, metrics and outputs.

use super::*;

#[test]
fn metrics_truncation_drops_later_steps_and_torn_lines() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(&dir.path().join("r"), |_| Ok(())).unwrap();
    let mut w = run.metrics_writer().unwrap();
    for step in 1..=5u64 {
        w.write(&serde_json::json!({ "step": step })).unwrap();
    }
    w.commit().unwrap();
    drop(w);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(run.metrics_path())
        .unwrap();
    f.write_all(b"{\"step\": 6, \"lo").unwrap();
    run.truncate_metrics(3).unwrap();
    let steps: Vec<u64> = run
        .read_metrics()
        .unwrap()
        .iter()
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3]);
}

#[test]
fn uncommitted_metric_lines_are_cut_back_when_the_writer_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(&dir.path().join("r"), |_| Ok(())).unwrap();
    let mut w = run.metrics_writer().unwrap();
    w.write(&serde_json::json!({ "step": 1 })).unwrap();
    w.commit().unwrap();
    let committed = fs::read(run.metrics_path()).unwrap();
    // Written to the file (flushed) and still buffered: both go.
    w.write(&serde_json::json!({ "step": 2 })).unwrap();
    w.flush().unwrap();
    w.write(&serde_json::json!({ "step": 3 })).unwrap();
    drop(w);
    assert_eq!(fs::read(run.metrics_path()).unwrap(), committed);
    // A new session starts from what is there.
    let mut w = run.metrics_writer().unwrap();
    w.write(&serde_json::json!({ "step": 2 })).unwrap();
    w.commit().unwrap();
    drop(w);
    assert_eq!(run.read_metrics().unwrap().len(), 2);
}

#[test]
fn only_a_truly_absent_checkpoint_means_none() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(&dir.path().join("r"), |_| Ok(())).unwrap();
    let ckpt = run.checkpoint_path();
    let folder = ckpt.parent().unwrap().to_path_buf();
    let _ = fs::remove_dir_all(&folder);
    assert_eq!(
        run.latest_checkpoint().unwrap(),
        None,
        "no checkpoints folder"
    );
    fs::create_dir_all(&folder).unwrap();
    assert_eq!(
        run.latest_checkpoint().unwrap(),
        None,
        "an empty checkpoints folder"
    );
    fs::write(&ckpt, b"x").unwrap();
    assert_eq!(run.latest_checkpoint().unwrap(), Some(ckpt.clone()));
    // Damaged: each is an error that names the run, never "no checkpoint yet".
    let damaged = |setup: &dyn Fn()| {
        let _ = fs::remove_dir_all(&folder);
        let _ = fs::remove_file(&folder);
        setup();
        let e = run.latest_checkpoint().unwrap_err().to_string();
        assert!(e.contains("move it away"), "{e}");
    };
    damaged(&|| fs::create_dir_all(&ckpt).unwrap());
    damaged(&|| fs::write(&folder, b"not a folder").unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        damaged(&|| {
            fs::create_dir_all(&folder).unwrap();
            symlink(folder.join("missing"), &ckpt).unwrap();
        });
        damaged(&|| {
            fs::create_dir_all(&folder).unwrap();
            symlink(&ckpt, &ckpt).unwrap();
        });
        // A link to a real checkpoint file is fine.
        let _ = fs::remove_dir_all(&folder);
        fs::create_dir_all(&folder).unwrap();
        let real = dir.path().join("real.safetensors");
        fs::write(&real, b"x").unwrap();
        symlink(&real, &ckpt).unwrap();
        assert_eq!(run.latest_checkpoint().unwrap(), Some(ckpt.clone()));
    }
}

#[test]
fn a_non_empty_folder_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("keep.txt"), "x").unwrap();
    assert!(RunDir::create(dir.path(), |_| Ok(())).is_err());
    assert_eq!(
        fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "x"
    );
}

#[test]
fn a_run_folder_appears_complete_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("r");
    let listing = || {
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    // While `init` writes, the run is only a hidden partial folder.
    let failed = RunDir::create(&root, |partial| {
        assert!(!root.exists());
        assert_eq!(listing(), [format!(".r.partial-{}", std::process::id())]);
        fs::write(partial.spec_path(), "{}").unwrap();
        Err(Error::Usage("the disk is full".into()))
    });
    assert!(failed.is_err());
    assert!(listing().is_empty(), "{:?}", listing());
    // A partial folder of a process that no longer runs goes; an empty target is reused.
    let abandoned = partial_path(&root, u32::MAX);
    fs::create_dir_all(&abandoned).unwrap();
    fs::create_dir_all(&root).unwrap();
    let run = RunDir::create(&root, |partial| {
        fs::write(partial.spec_path(), "{}").map_err(|e| Error::io(partial.root(), e))
    })
    .unwrap();
    assert_eq!(listing(), ["r"]);
    assert!(RunDir::open(run.root()).is_ok());
    assert!(run.root().join("checkpoints").is_dir() && run.root().join("plots").is_dir());
}

#[test]
fn utc_stamp_has_the_expected_shape() {
    let s = utc_stamp();
    assert_eq!(s.len(), 15);
    assert_eq!(&s[8..9], "-");
}

#[test]
fn concurrent_atomic_writes_of_one_path_all_succeed_and_leave_a_whole_file() {
    // The array tasks of a sweep write the same resolved specs at the same time; with one
    // shared temporary name, one writer's rename took the other's file away mid-write.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    let text = "x".repeat(1 << 16);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..50)
                        .map(|_| write_atomic(&path, text.as_bytes()))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap().unwrap();
        }
    });
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("spec.json")]);
}

#[test]
fn an_atomic_write_removes_the_temporary_files_of_killed_writers() {
    // A writer killed between its write and its rename leaves `.NAME.PID-N.tmp` behind; the
    // next write of NAME removes those of exited processes, not a live writer's.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    let dead = dir.path().join(".spec.json.999999999-3.tmp");
    let live = dir
        .path()
        .join(format!(".spec.json.{}-999.tmp", std::process::id()));
    let other = dir.path().join(".eval.json.999999999-0.tmp");
    for leftover in [&dead, &live, &other] {
        fs::write(leftover, "torn").unwrap();
    }
    write_atomic(&path, b"{}").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "{}");
    assert!(!dead.exists(), "a dead writer's file stays");
    assert!(live.exists() && other.exists());
}
