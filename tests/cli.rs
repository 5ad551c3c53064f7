//! End-to-end tests of the `cloudchamber` binary: bad input, crash safety, reproducibility,
//! and the printed summary (with times masked).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cloudchamber::store::{RunStatus, Store};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cloudchamber"))
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const SMALL: &str = r#"
seed = 3

[task.teacher_student]
input_dim = 8
output_dim = 1
n_train = 256
n_test = 128

[model]
width = 16
depth = 2
activation = "tanh"

[train]
steps = 60
batch_size = 32
eval_every = 20

[observe]
log_every = 5
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs a spec with one line replaced and returns (exit code, first stderr line).
fn bad(replace: &str, with: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    assert!(SMALL.contains(replace), "{replace}");
    write(dir.path(), "bad.toml", &SMALL.replace(replace, with));
    let o = run_in(dir.path(), &["run", "bad.toml"]);
    let first = stderr(&o).lines().next().unwrap_or("").to_string();
    // Bad input never creates or touches a store.
    assert!(
        !dir.path().join("cloudchamber.db").exists(),
        "a store was created for bad input"
    );
    (o.status.code().unwrap_or(-1), first)
}

#[test]
fn syntax_error_names_file_and_line() {
    let (code, line) = bad("width = 16", "width = = 16");
    assert_eq!(code, 2);
    assert!(line.starts_with("error: bad.toml:11:9:"), "{line}");
    assert!(line.contains("syntax"), "{line}");
}

#[test]
fn unknown_key_names_key_line_and_nearest() {
    let (code, line) = bad("width = 16", "widht = 16");
    assert_eq!(code, 2);
    assert_eq!(
        line,
        "error: bad.toml:11: unknown key `model.widht` (did you mean `width`?)"
    );
}

#[test]
fn unknown_task_names_the_section() {
    let (code, line) = bad("[task.teacher_student]", "[task.teacher_studnet]");
    assert_eq!(code, 2);
    assert!(
        line.contains("unknown key `task.teacher_studnet`") && line.contains("teacher_student"),
        "{line}"
    );
}

#[test]
fn wrong_type_names_key() {
    let (code, line) = bad("depth = 2", "depth = \"two\"");
    assert_eq!(code, 2);
    assert!(
        line.starts_with("error: bad.toml:12: `model.depth` has the wrong type"),
        "{line}"
    );
}

#[test]
fn unknown_value_suggests_nearest() {
    let (code, line) = bad("activation = \"tanh\"", "activation = \"tahn\"");
    assert_eq!(code, 2);
    assert!(
        line.contains("`model.activation`") && line.contains("did you mean \"tanh\""),
        "{line}"
    );
}

#[test]
fn out_of_range_names_key() {
    let (code, line) = bad("steps = 60", "steps = 0");
    assert_eq!(code, 2);
    assert!(
        line.starts_with("error: bad.toml:16: `train.steps` must be ≥ 1"),
        "{line}"
    );
    let (code, line) = bad("n_train = 256", "n_train = 0");
    assert_eq!(code, 2);
    assert!(line.contains("task.teacher_student.n_train"), "{line}");
}

#[test]
fn missing_experiment_file_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(dir.path(), &["run", "nope.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.starts_with("error: nope.toml: cannot read the experiment file"),
        "{e}"
    );
    assert!(e.contains("\nhint: "), "{e}");
}

#[test]
fn missing_data_file_names_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "csv.toml",
        "[task.csv]\npath = \"missing.csv\"\ntask = \"regression\"\ntarget = \"y\"\n",
    );
    let o = run_in(dir.path(), &["run", "csv.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("task.csv.path") && e.contains("missing.csv"),
        "{e}"
    );
}

#[test]
fn bad_override_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    let o = run_in(dir.path(), &["run", "s.toml", "--set", "model.widht=3"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.starts_with(
            "error: --set model.widht=3: unknown key `model.widht` (did you mean `width`?)"
        ),
        "{e}"
    );
}

fn export_csv(dir: &Path, store: &str) -> String {
    let o = run_in(
        dir,
        &["--store", store, "export", "--all", "--format", "csv"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// Same spec + same seed ⇒ bit-identical metrics (CSV values round-trip f64 exactly), on the
/// same machine and thread count.
#[test]
fn same_spec_and_seed_give_bit_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    for store in ["a.db", "b.db"] {
        let o = run_in(dir.path(), &["--store", store, "run", "s.toml", "-q"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (a, b) = (
        export_csv(dir.path(), "a.db"),
        export_csv(dir.path(), "b.db"),
    );
    assert!(a.lines().count() > 300, "{} rows", a.lines().count());
    assert_eq!(a, b);
    // And a different seed gives different numbers under a different id.
    let o = run_in(
        dir.path(),
        &["--store", "c.db", "run", "s.toml", "-q", "--set", "seed=4"],
    );
    assert!(o.status.success());
    let c = export_csv(dir.path(), "c.db");
    assert_ne!(a.lines().nth(1), c.lines().nth(1));
}

#[test]
fn summary_snapshot_with_times_masked() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    let o = run_in(dir.path(), &["run", "s.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    let masked: Vec<String> = out
        .lines()
        .map(|l| {
            let l = l.replace(&id, "<id>");
            if l.starts_with("run <id>  s  completed") {
                l.split("wall").next().unwrap().to_string() + "wall <time>"
            } else if l.contains("steps/s") {
                "<throughput line>".to_string()
            } else {
                l
            }
        })
        .collect();
    let text = masked.join("\n");
    let want_prefix = "run <id> (s): teacher–student, teacher 8→[4 tanh]×1→1,";
    assert!(text.starts_with(want_prefix), "{text}");
    assert_eq!(
        text.lines().nth(1),
        Some("model: MLP 8→[16 tanh]×2→1, pytorch init")
    );
    let lines: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(lines[0], "run <id>  s  completed  steps 60  wall <time>");
    assert_eq!(lines[1], "  metric                    final     step");
    let names: Vec<&str> = lines[2..lines.len() - 1]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["train_loss", "train_eval_loss", "test_loss"]);
    assert_eq!(lines[lines.len() - 1], "<throughput line>");
    // Running the same spec again finds it in the store instead of training again.
    let again = run_in(dir.path(), &["run", "s.toml"]);
    assert!(
        stdout(&again).contains("is already in cloudchamber.db as completed"),
        "{}",
        stdout(&again)
    );
}

/// `kill -9` mid-run leaves a readable store with the run marked incomplete and the metrics
/// written so far intact; running the spec again restarts it cleanly.
#[test]
fn sigkill_mid_run_leaves_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let long = SMALL
        .replace("steps = 60", "steps = 100000000")
        .replace("log_every = 5", "log_every = 1");
    write(dir.path(), "long.toml", &long);
    let mut child = bin()
        .current_dir(dir.path())
        .args(["run", "long.toml", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = dir.path().join("cloudchamber.db");
    let t0 = Instant::now();
    // Wait until metrics are flowing, then kill without warning.
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if db.exists() {
            if let Ok(store) = Store::open(&db) {
                if let Ok(runs) = store.runs() {
                    if let Some(r) = runs.first() {
                        if store
                            .metrics(&r.id)
                            .map(|m| m.len() > 2000)
                            .unwrap_or(false)
                        {
                            break;
                        }
                    }
                }
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no metrics after 60 s"
        );
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let store = Store::open(&db).unwrap();
    let runs = store.runs().unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r.status, RunStatus::Running);
    assert!(r.is_incomplete());
    assert_eq!(r.display_status(), "incomplete");
    let metrics = store.metrics(&r.id).unwrap();
    // Every logged step is whole: each step that has rows has all of that step's rows.
    let mut per_step = std::collections::BTreeMap::new();
    for m in &metrics {
        *per_step.entry(m.step).or_insert(0usize) += 1;
    }
    let counts: std::collections::BTreeSet<usize> = per_step
        .iter()
        .filter(|(s, _)| **s % 20 != 0)
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(counts.len(), 1, "partial steps in the store: {counts:?}");
    drop(store);
    let o = run_in(dir.path(), &["ls"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("incomplete"), "{}", stdout(&o));
}

/// Divergence is a result: the run ends with status `diverged` and the step, exit code 0.
#[test]
fn divergence_is_recorded_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    let o = run_in(
        dir.path(),
        &[
            "run",
            "s.toml",
            "--set",
            "optim.optimizer=\"sgd\"",
            "--set",
            "optim.lr=1e4",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(" diverged "), "{out}");
    let store = Store::open(&dir.path().join("cloudchamber.db")).unwrap();
    let r = &store.runs().unwrap()[0];
    assert_eq!(r.status, RunStatus::Diverged);
    let step = r.diverged_step.expect("the step is recorded");
    assert!(step < 60);
    // The diverging loss itself is stored at that step.
    let losses = store.series(&r.id, "train_loss", None).unwrap();
    let (last_step, last) = *losses.last().unwrap();
    assert_eq!(last_step, step);
    assert!(!last.is_finite() || last > 1e4 * losses[0].1, "{losses:?}");
}

#[test]
fn target_loss_stops_early() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    let o = run_in(
        dir.path(),
        &["run", "s.toml", "--set", "train.target_loss=1e9"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("completed  steps 1 "), "{out}");
    assert!(out.contains("reached target loss"), "{out}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    assert!(run_in(dir.path(), &["run", "s.toml", "-q"])
        .status
        .success());
    let mut child = bin()
        .current_dir(dir.path())
        .args(["export", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once
    let o = child.wait_with_output().unwrap();
    // As Unix tools do: either it finished first, or SIGPIPE ended it — silently, no panic.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        o.status.success() || o.status.signal() == Some(13),
        "{:?}: {}",
        o.status,
        stderr(&o)
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

/// A run that diverges on an evaluation step still ends as `diverged` (no duplicate rows).
#[test]
fn divergence_on_an_evaluation_step() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    let o = run_in(
        dir.path(),
        &[
            "run",
            "s.toml",
            "--set",
            "optim.optimizer=\"sgd\"",
            "--set",
            "optim.lr=1e4",
            "--set",
            "train.eval_every=1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(" diverged "), "{}", stdout(&o));
}

/// `train.threads` splits the GEMMs; the metrics are bit-identical to one thread.
#[test]
fn threads_give_bit_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.toml",
        &SMALL
            .replace("width = 16", "width = 96")
            .replace("batch_size = 32", "batch_size = 128"),
    );
    for (store, threads) in [("one.db", "1"), ("two.db", "2")] {
        let o = run_in(
            dir.path(),
            &[
                "--store",
                store,
                "run",
                "s.toml",
                "-q",
                "--set",
                &format!("train.threads={threads}"),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let strip = |csv: String| {
        csv.lines()
            .map(|l| {
                l.split_once(',')
                    .map(|x| x.1.to_string())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(export_csv(dir.path(), "one.db")),
        strip(export_csv(dir.path(), "two.db"))
    );
}

/// Every shipped example is a valid experiment file (each also runs in under a minute: see
/// README's Examples section).
#[test]
fn every_example_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().any(|l| l.trim() == "[sweep]") {
                // A sweep: every one of its runs validates.
                let sw = cloudchamber::sweep::load(&path, &[])
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!sw.runs.is_empty());
            } else {
                let loaded = cloudchamber::spec::load(&path, &[])
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                loaded.spec.task.validate().unwrap();
            }
            n += 1;
        }
    }
    assert!(n >= 5, "{n} examples");
}

/// A run killed with SIGKILL (three times, each after a new checkpoint) and run again each time
/// resumes from its checkpoint and ends with metrics bit-identical to an uninterrupted run.
#[test]
fn killed_runs_resume_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SMALL
        .replace("steps = 60", "steps = 30000\ncheckpoint_every = 700")
        .replace("width = 16", "width = 48")
        .replace("eval_every = 20", "eval_every = 300");
    let file = write(dir.path(), "r.toml", &spec);
    let id = cloudchamber::spec::load(&file, &[]).unwrap().spec.run_id();
    let o = run_in(dir.path(), &["--store", "ref.db", "run", "r.toml", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let ckpt = dir
        .path()
        .join("runs")
        .join(&id)
        .join(cloudchamber::checkpoint::FILE);
    let peek = || {
        cloudchamber::checkpoint::peek(&ckpt)
            .ok()
            .flatten()
            .map(|s| s.step)
    };
    std::fs::remove_dir_all(dir.path().join("runs")).unwrap();
    let mut last = 0;
    for _ in 0..3 {
        let mut child = bin()
            .current_dir(dir.path())
            .args(["--store", "cut.db", "run", "r.toml", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while peek().is_none_or(|s| s <= last) {
            std::thread::sleep(Duration::from_millis(5));
            assert!(t0.elapsed() < Duration::from_secs(60), "no new checkpoint");
        }
        std::thread::sleep(Duration::from_millis(30)); // let it write steps past the checkpoint
        child.kill().unwrap();
        child.wait().unwrap();
        last = peek().unwrap();
    }
    assert!(last < 30000);
    let o = run_in(dir.path(), &["--store", "cut.db", "run", "r.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("resuming from the checkpoint at step {last}")),
        "{}",
        stdout(&o)
    );
    assert!(!ckpt.exists(), "a finished run keeps no checkpoint");
    assert_eq!(
        export_csv(dir.path(), "ref.db"),
        export_csv(dir.path(), "cut.db")
    );
}

/// Ctrl-C (SIGINT) stops a run gracefully: it checkpoints, is marked `interrupted`, exits 130,
/// and running it again resumes it to metrics bit-identical to an uninterrupted run.
#[test]
fn ctrl_c_checkpoints_and_resumes() {
    stop_checkpoints_and_resumes(libc::SIGINT);
}

/// SIGTERM (a scheduler's or `kill`'s) is as graceful as Ctrl-C, exiting 143 (128 + 15).
#[test]
fn sigterm_checkpoints_and_resumes() {
    stop_checkpoints_and_resumes(libc::SIGTERM);
}

fn stop_checkpoints_and_resumes(signal: i32) {
    let dir = tempfile::tempdir().unwrap();
    let spec = SMALL
        .replace("steps = 60", "steps = 30000\ncheckpoint_every = 5000")
        .replace("width = 16", "width = 48")
        .replace("eval_every = 20", "eval_every = 300");
    write(dir.path(), "c.toml", &spec);
    let o = run_in(dir.path(), &["--store", "ref.db", "run", "c.toml", "-q"]);
    assert!(o.status.success());
    std::fs::remove_dir_all(dir.path().join("runs")).unwrap();
    let child = bin()
        .current_dir(dir.path())
        .args(["--store", "cut.db", "run", "c.toml", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let db = dir.path().join("cut.db");
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let flowing = Store::open(&db)
            .ok()
            .and_then(|s| {
                s.runs().ok().and_then(|r| {
                    r.first()
                        .map(|r| s.metrics(&r.id).map(|m| m.len() > 300).unwrap_or(false))
                })
            })
            .unwrap_or(false);
        if flowing {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + signal), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    let store = Store::open(&db).unwrap();
    let r = store.runs().unwrap().remove(0);
    assert_eq!(r.status, RunStatus::Interrupted);
    let stopped_at = r.steps.unwrap();
    assert!(stopped_at > 0 && stopped_at < 30000, "{stopped_at}");
    drop(store);
    let o = run_in(dir.path(), &["--store", "cut.db", "run", "c.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "resuming from the checkpoint at step {stopped_at}"
        )),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        export_csv(dir.path(), "ref.db"),
        export_csv(dir.path(), "cut.db")
    );
}

/// A model within the validated limits but past the machine's memory is refused before any
/// work, with the estimate, exit 2, and nothing written: no store, no run folder. `--dry-run`
/// prints the same estimate for a run that fits. (Issue: such a model used to abort the
/// process with SIGABRT, leaving a `running` row and `runs/<id>/`.)
#[test]
fn a_model_past_the_memory_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "small.toml", SMALL);
    let o = run_in(
        dir.path(),
        &[
            "run",
            spec.to_str().unwrap(),
            "--set",
            "model.width=65536",
            "--set",
            "model.depth=10000",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("the run needs about") && err.contains("GiB"),
        "{err}"
    );
    assert!(err.contains("hint:") && err.contains("--dry-run"), "{err}");
    assert!(!dir.path().join("cloudchamber.db").exists());
    assert!(!dir.path().join("runs").exists());

    let o = run_in(dir.path(), &["run", spec.to_str().unwrap(), "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("memory: about") && out.contains("MiB"),
        "{out}"
    );
    assert!(
        !dir.path().join("cloudchamber.db").exists(),
        "a dry run writes nothing"
    );
}

/// `run --force` on a run another live process is training is refused before it touches
/// anything: the live run's checkpoint is still there. (Issue: it used to delete the checkpoint,
/// then refuse.)
#[test]
fn force_on_a_live_run_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Checkpoints seconds apart, so the live run does not simply write its checkpoint again.
    let spec = SMALL.replace("steps = 60", "steps = 10000000\ncheckpoint_every = 40000");
    let file = write(dir.path(), "live.toml", &spec);
    let id = cloudchamber::spec::load(&file, &[]).unwrap().spec.run_id();
    let ckpt = dir
        .path()
        .join("runs")
        .join(&id)
        .join(cloudchamber::checkpoint::FILE);
    let mut child = bin()
        .current_dir(dir.path())
        .args(["run", "live.toml", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ckpt.exists() {
        std::thread::sleep(Duration::from_millis(5));
        assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoint");
    }
    let o = run_in(dir.path(), &["run", "live.toml", "--force", "-q"]);
    let alive = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive, "the first run ended before the test");
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&id[..8]), "{}", stderr(&o));
    assert!(ckpt.exists(), "the live run's checkpoint was deleted");
}

/// `--workers 0` is refused (exit 2), not quietly taken as 1, in `sweep` and `bench`.
#[test]
fn zero_workers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "s.toml",
        &format!("{SMALL}\n[sweep]\nseeds = 2\n"),
    );
    for args in [
        vec![
            "sweep",
            file.to_str().unwrap(),
            "--workers",
            "0",
            "--dry-run",
        ],
        vec!["bench", "--lanes", "--workers", "0"],
    ] {
        let o = run_in(dir.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("must be at least 1"), "{}", stderr(&o));
    }
}

/// `summarize --format csv` quotes a field that holds commas or quotes (an inline-table axis
/// value), so every row keeps its columns (RFC 4180).
#[test]
fn summarize_csv_quotes_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let text = SMALL.replace("steps = 60", "steps = 5")
        + "\n[sweep]\nname = \"acts\"\n[sweep.axes]\n\"model.act.b\" = [0.0, { init = 0.1, mode = \"learned\" }]\n";
    let file = write(dir.path(), "s.toml", &text);
    let o = run_in(dir.path(), &["sweep", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_in(
        dir.path(),
        &[
            "summarize",
            "acts",
            "--metric",
            "test_loss",
            "--format",
            "csv",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[2].starts_with(r#""{ init = 0.1, mode = ""learned"" }","#),
        "{out}"
    );
    // Outside quoted fields, every row has the header's number of separators.
    let seps = |l: &str| {
        let mut quoted = false;
        l.chars()
            .filter(|&c| {
                quoted ^= c == '"';
                c == ',' && !quoted
            })
            .count()
    };
    assert!(lines.iter().all(|l| seps(l) == seps(lines[0])), "{out}");
}

/// Errors quote user input bounded: a 100,000-character value gives a short error line, the
/// value quoted once, clipped, with its length (exit 2).
#[test]
fn errors_quote_long_values_bounded() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    let long = "x".repeat(100_000);
    for set in [
        format!("model.activation=\"{long}\""),
        format!("model.width={long}"),
    ] {
        let o = run_in(dir.path(), &["run", "s.toml", "--set", &set]);
        assert_eq!(o.status.code(), Some(2));
        let err = stderr(&o);
        assert!(
            err.len() < 600,
            "{} bytes: {}",
            err.len(),
            &err[..600.min(err.len())]
        );
        assert!(err.contains("more characters)"), "{err}");
        assert_eq!(
            err.matches("more characters)").count(),
            1,
            "quoted once: {err}"
        );
    }
}

/// Control characters in names never reach the terminal raw: a file named with an escape
/// sequence and a newline runs, and `ls`, `show` and `sweep --dry-run` print the name escaped;
/// a declared sweep name with one is refused (exit 2).
#[test]
fn control_characters_in_names_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let raw = |s: &str| s.chars().any(|c| c.is_control() && c != '\n');
    let evil = "a\u{1b}[31mred\nline";
    let spec = SMALL.replace("steps = 60", "steps = 5");
    write(dir.path(), &format!("{evil}.toml"), &spec);
    let file = format!("{evil}.toml");
    let o = run_in(dir.path(), &["run", &file]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !raw(&stdout(&o)) && !stdout(&o).contains("red\nline"),
        "{}",
        stdout(&o)
    );
    let o = run_in(dir.path(), &["ls"]);
    assert!(!raw(&stdout(&o)), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(r"a\u{1b}[31mred\nline"),
        "{}",
        stdout(&o)
    );

    let sweep = format!("{spec}\n[sweep]\nseeds = 2\n");
    write(dir.path(), &format!("{evil}-sweep.toml"), &sweep);
    let o = run_in(
        dir.path(),
        &["sweep", &format!("{evil}-sweep.toml"), "--dry-run"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !raw(&stdout(&o)) && !stdout(&o).contains("red\nline"),
        "{}",
        stdout(&o)
    );

    let named = format!("{spec}\n[sweep]\nname = \"x\\u001b[2J\"\nseeds = 2\n");
    write(dir.path(), "named.toml", &named);
    let o = run_in(dir.path(), &["sweep", "named.toml", "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!raw(&stderr(&o)), "{}", stderr(&o));
}

/// Data reads are bounded: a device (`/dev/zero` never ends) and a FIFO (would block forever)
/// are refused at once as not regular files (exit 2).
#[test]
fn data_paths_must_be_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for path in [Path::new("/dev/zero"), fifo.as_path()] {
        let text = format!(
            "[task.text]\npath = \"{}\"\n[model.gpt]\nn_layer = 1\nd_model = 8\nn_head = 2\n",
            path.display()
        );
        write(dir.path(), "t.toml", &text);
        let t0 = Instant::now();
        let o = run_in(dir.path(), &["run", "t.toml"]);
        assert!(t0.elapsed() < Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("is not a regular file"),
            "{}",
            stderr(&o)
        );
    }
}

/// A store on a read-only folder or mount (issue 15, fault 8): `ls`, `show`, `export` and
/// `report` work and change nothing. As root (where permissions do
/// not bind) the folder is bind-mounted read-only; otherwise it is `chmod a-w`.
#[test]
fn a_read_only_store_stays_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write(&src, "s.toml", SMALL);
    let o = run_in(&src, &["run", "s.toml", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(src.join("cloudchamber.db")).unwrap();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ro = if root {
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let mount = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let (s, r) = (src.to_str().unwrap(), ro.to_str().unwrap());
        if !(mount(&["--bind", s, r]) && mount(&["-o", "remount,ro,bind", r])) {
            let _ = Command::new("umount").arg(r).status();
            eprintln!("skipped: running as root without permission to mount read-only");
            return;
        }
        ro
    } else {
        for p in [src.join("cloudchamber.db"), src.clone()] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        src.clone()
    };
    // The folder really is read-only.
    assert!(std::fs::write(ro.join("probe"), "x").is_err());
    let report = dir.path().join("report");
    let commands: [&[&str]; 4] = [
        &["ls"],
        &["show", "s"],
        &["export", "--all"],
        &["report", "s", "-o", report.to_str().unwrap()],
    ];
    let mut failures = Vec::new();
    for args in commands {
        let o = run_in(&ro, args);
        if !o.status.success() {
            failures.push(format!("{args:?}: {}", stderr(&o)));
        }
    }
    if root {
        let _ = Command::new("umount").arg(&ro).status();
    } else {
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(std::fs::read(src.join("cloudchamber.db")).unwrap(), before);
    assert!(report.join("index.html").exists());
}

/// A run whose store write fails (issue 15, fault 11; simulated by a trigger refusing the
/// run's row) exits 1 and leaves no orphan `runs/<id>/` folder behind.
#[test]
fn a_failed_store_write_leaves_no_orphan_folder() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    let o = run_in(
        dir.path(),
        &["run", "s.toml", "-q", "--set", "train.steps=1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(dir.path().join("runs")).unwrap();
    let c = rusqlite::Connection::open(dir.path().join("cloudchamber.db")).unwrap();
    c.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;",
    )
    .unwrap();
    drop(c);
    let o = run_in(dir.path(), &["run", "s.toml", "-q"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("disk full (simulated)"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("runs").exists(), "orphan runs/ folder");
}

/// Each message of issue 15, item 15: the key named once, its line where it has one, and a
/// suggestion. Each case is (file text, extra arguments, substrings of stderr in order).
#[test]
fn messages_name_the_key_the_line_and_a_fix() {
    let markov = |vocab: usize, order: usize| {
        format!(
            "seed = 0\n[task.markov]\nvocab = {vocab}\norder = {order}\n[model.gpt]\nn_layer = 1\nd_model = 8\nn_head = 1\n"
        )
    };
    let text = "seed = 0\n[task.text]\npath = \"Data/My.TXT\"\nseq_len = 4\n[model.gpt]\nn_layer = 1\nd_model = 8\nn_head = 1\n";
    let gpt_on_rows = SMALL.replace(
        "[model]\nwidth = 16\ndepth = 2\nactivation = \"tanh\"",
        "[model.gpt]\nn_layer = 1\nd_model = 8\nn_head = 1",
    );
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        // The key once, not `key` key:.
        (
            SMALL.to_string(),
            vec!["--set", "task.teacher_student.input_dim=0"],
            vec!["`task.teacher_student.input_dim` must be ≥ 1 (got 0)"],
        ),
        // A second task, from the file (its line) or from --set.
        (
            format!("{SMALL}\n[task.moons]\nnoise = 0.1\n"),
            vec![],
            vec![
                "s.toml:23: `task.moons` is a second task",
                "hint: keep one [task.*]",
            ],
        ),
        (
            SMALL.to_string(),
            vec!["--set", "task.moons.noise=0.2"],
            vec![
                "task is `task.teacher_student`, not `task.moons`",
                "task.teacher_student.noise",
            ],
        ),
        // Types in words.
        (
            SMALL.to_string(),
            vec!["--set", "model.width=1.5"],
            vec![
                "`model.width` has the wrong type",
                "expected a whole number",
            ],
        ),
        (
            SMALL.to_string(),
            vec!["--set", "optim.lr=\"x\""],
            vec!["`optim.lr` has the wrong type", "expected a number"],
        ),
        // Another name for a value.
        (
            SMALL.replace("\"tanh\"", "\"swish\""),
            vec![],
            vec![
                "s.toml:13: `model.activation` = \"swish\"",
                "did you mean \"silu\"?",
            ],
        ),
        // The key that is too large.
        (
            markov(100_000, 1),
            vec![],
            vec![
                "s.toml:3: `task.markov.vocab`",
                "hint: lower the vocabulary",
            ],
        ),
        (
            markov(2_000, 3),
            vec![],
            vec!["s.toml:4: `task.markov.order`"],
        ),
        // A transformer on feature rows: blamed on the model, not on train.loss.
        (
            gpt_on_rows,
            vec![],
            vec![
                "`model.gpt` needs a token-sequence task",
                "hint: use [task.text]",
            ],
        ),
        // A missing file: its line, its path as written, and the folder named.
        (
            text.to_string(),
            vec![],
            vec![
                "s.toml:3: task.text.path: file not found: Data/My.TXT",
                "the experiment file's folder (the current folder)",
            ],
        ),
    ];
    for (spec, extra, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "s.toml", &spec);
        let mut args = vec!["run", "s.toml"];
        args.extend(extra.iter().copied());
        let o = run_in(dir.path(), &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        let mut at = 0;
        for w in &want {
            let found = err[at..].find(w);
            assert!(found.is_some(), "{args:?}: wanted {w:?} in\n{err}");
            at += found.unwrap_or(0) + w.len();
        }
        // The key is named once in the first line.
        let first = err.lines().next().unwrap_or("");
        if let Some(key) = first.split('`').nth(1) {
            let quoted = format!("`{key}`");
            assert_eq!(first.matches(&quoted).count(), 1, "{first}");
            assert!(!first.contains(&format!("{quoted} {key}:")), "{first}");
        }
    }
    // The text task shows its path as written (not lower-cased).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("Data")).unwrap();
    std::fs::write(dir.path().join("Data/My.TXT"), "Hello World. ".repeat(50)).unwrap();
    write(dir.path(), "s.toml", text);
    let o = run_in(dir.path(), &["run", "s.toml", "--dry-run"]);
    assert!(stdout(&o).contains("text Data/My.TXT ("), "{}", stdout(&o));
    // A metric nobody recorded: did you mean.
    write(dir.path(), "m.toml", SMALL);
    assert!(run_in(dir.path(), &["run", "m.toml", "-q"])
        .status
        .success());
    let o = run_in(
        dir.path(),
        &[
            "plot", "m", "--figure", "layers", "--metric", "act_sdt", "-o", "x.svg",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean `act_std`?"),
        "{}",
        stderr(&o)
    );
}

/// Run identity (issue 15, item 17): runs of one file with different `--set` share a name,
/// and `ls` says what tells them apart; `run --name` names a run; `ls` filters by name, sweep,
/// status and count; an ambiguous name points to `ls --name`; a sweep redefined by other
/// `--set` says so.
#[test]
fn runs_sharing_a_name_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", SMALL);
    for lr in ["0.01", "0.02"] {
        let o = run_in(
            dir.path(),
            &["run", "s.toml", "-q", "--set", &format!("optim.lr={lr}")],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = run_in(
        dir.path(),
        &["run", "s.toml", "-q", "--name", "mine", "--set", "seed=9"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ls = stdout(&run_in(dir.path(), &["ls"]));
    assert!(ls.lines().next().unwrap().ends_with("differs"), "{ls}");
    let lines: Vec<&str> = ls
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("s"))
        .collect();
    assert_eq!(lines.len(), 2, "{ls}");
    assert!(lines.iter().any(|l| l.ends_with("optim.lr=0.01")), "{ls}");
    assert!(lines.iter().any(|l| l.ends_with("optim.lr=0.02")), "{ls}");
    // The named run alone under its name: its override is how it differs from its file.
    let mine = stdout(&run_in(dir.path(), &["ls", "--name", "mine"]));
    assert_eq!(mine.lines().count(), 2, "{mine}");
    assert!(mine.lines().nth(1).unwrap().ends_with("  seed=9"), "{mine}");
    // -n 1: the most recent run.
    let last = stdout(&run_in(dir.path(), &["ls", "-n", "1"]));
    assert!(last.lines().nth(1).unwrap().contains("mine"), "{last}");
    assert_eq!(
        stdout(&run_in(dir.path(), &["ls", "--status", "diverged"])).trim(),
        format!("no runs in cloudchamber.db match")
    );
    assert_eq!(
        run_in(dir.path(), &["ls", "--status", "done"])
            .status
            .code(),
        Some(2)
    );
    let o = run_in(dir.path(), &["show", "s"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`cloudchamber ls --name s`"),
        "{}",
        stderr(&o)
    );
    // A sweep run again with other --set: said on stderr.
    write(
        dir.path(),
        "w.toml",
        &format!("{SMALL}\n[sweep]\nname = \"w\"\nseeds = 2\n"),
    );
    let first = run_in(dir.path(), &["sweep", "w.toml", "--set", "train.steps=20"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        !stderr(&first).contains("note: sweep w"),
        "{}",
        stderr(&first)
    );
    let again = run_in(dir.path(), &["sweep", "w.toml", "--set", "train.steps=30"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again)
            .contains("note: sweep w was recorded before with 2 runs, 0 of them among these 2"),
        "{}",
        stderr(&again)
    );
    let sweep_ls = stdout(&run_in(dir.path(), &["ls", "--sweep", "w"]));
    assert_eq!(sweep_ls.lines().count(), 3, "{sweep_ls}");
    assert!(sweep_ls.contains("train.steps=30"), "{sweep_ls}");
}

/// Numbers as people read them (issue 15, items 18 and 19): `summarize` and `sweep --dry-run`
/// keep their columns in line whatever a value's length; `show`'s per-layer table fits the
/// width it is given, splitting into blocks, with whole names; the run header labels the
/// teacher and the trained model apart.
#[test]
fn tables_stay_in_line_and_fit() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = format!(
        "{}\n[sweep]\nname = \"lr\"\nseeds = 2\n[sweep.axes]\n\"optim.lr\" = {{ logspace = [3e-3, 0.3, 5] }}\n",
        SMALL
    );
    write(dir.path(), "w.toml", &sweep);
    let dry = stdout(&run_in(dir.path(), &["sweep", "w.toml", "--dry-run"]));
    let runs: Vec<&str> = dry.lines().filter(|l| l.contains("seed=")).collect();
    assert_eq!(runs.len(), 10, "{dry}");
    let col = |l: &str| l.find("seed=").unwrap();
    assert!(runs.iter().all(|l| col(l) == col(runs[0])), "{dry}");
    // 0.03 is much shorter than 9.48683298050514e-3 (printed whole: it round-trips), yet the
    // seeds line up.
    assert!(dry.contains("optim.lr=0.03 "), "{dry}");
    assert!(dry.contains("optim.lr=9.48683298050514e-3 "), "{dry}");
    let o = run_in(dir.path(), &["sweep", "w.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&run_in(
        dir.path(),
        &["summarize", "lr", "--metric", "test_loss"],
    ));
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 6, "{table}");
    assert!(
        rows.iter()
            .all(|l| l.chars().count() == rows[0].chars().count()),
        "{table}"
    );
    // show: whole names, within the width given.
    write(dir.path(), "s.toml", SMALL);
    let o = run_in(dir.path(), &["run", "s.toml"]);
    let header = stdout(&o);
    assert!(header.contains("teacher–student, teacher 8→"), "{header}");
    assert!(
        header.contains("\nmodel: MLP 8→[16 tanh]×2→1, "),
        "{header}"
    );
    for width in ["80", "200"] {
        let o = bin()
            .current_dir(dir.path())
            .env("COLUMNS", width)
            .args(["show", "s"])
            .output()
            .unwrap();
        let out = stdout(&o);
        let w: usize = width.parse().unwrap();
        assert!(out.lines().all(|l| l.chars().count() <= w), "{out}");
        assert!(out.contains("saturated_units"), "{out}");
        assert!(!out.contains('…'), "{out}");
    }
}

/// `bench --tiny` runs the peers' tiny sweep through `cloudchamber sweep` and reports each
/// repeat's wall time, with the CPU beside it.
#[test]
fn bench_tiny_times_the_tiny_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(
        dir.path(),
        &["bench", "--tiny", "--repeat", "1", "--workers", "2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("cpu: "), "{out}");
    assert!(out.contains("64 seeds × 2,000 Adam steps"), "{out}");
    let wall: f64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("median"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no median in {out}"));
    assert!(wall > 0.0 && wall < 120.0, "{wall}");
}

/// A denoiser's bad keys: each error names the file, line and key with a hint, exits 2 and
/// creates no store; a denoiser on token sequences is refused the same way.
#[test]
fn denoiser_bad_input_names_the_key() {
    let cases = [
        ("[task.moons]\n[model.denoiser]\naug_dim = -3\n", "bad.toml:3: `model.denoiser.aug_dim` must be > 0 or \"inf\" (got -3)"),
        ("[task.moons]\n[model.denoiser]\naug_dim = \"infinite\"\n", "`model.denoiser.aug_dim` has the wrong type: expected a number > 0 or \"inf\", got \"infinite\""),
        ("[task.moons]\n[model.denoiser]\nsigma_dta = 1\n", "unknown key `model.denoiser.sigma_dta` (did you mean `sigma_data`?)"),
        ("[task.moons]\n[model.denoiser.sampler]\nsigma_max = 0.001\n", "`model.denoiser.sampler.sigma_max` needs 0 < sigma_min < sigma_max (got 0.002 and 0.001)"),
        ("[task.markov]\n[model.denoiser]\n", "`model.denoiser` generates points, not sequences (got task.markov)"),
        ("[task.moons]\n[model.denoiser]\n[model.gpt]\n", "two of [model.gpt], [model.denoiser], [model.unet] and [model.cnn] together"),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bad.toml", text);
        let o = run_in(dir.path(), &["run", "bad.toml"]);
        assert_eq!(o.status.code(), Some(2), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains("hint:"), "{text}: {}", stderr(&o));
        assert!(!dir.path().join("cloudchamber.db").exists(), "{text}");
    }
}

/// A small U-Net end to end: it trains, and the store holds the segmentation rows (Dice and IoU
/// per evaluation, the threshold baseline at step 0), the per-stage channel observables, and
/// the artifacts hold the held-out images, masks and predictions.
#[test]
fn a_unet_run_records_overlap_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "u.toml",
        r#"
seed = 1
[task.shapes]
size = 16
n_train = 32
n_test = 8
min_radius = 2
max_radius = 5
[model.unet]
depth = 1
base_channels = 4
loss = "bce_dice"
[train]
steps = 12
batch_size = 8
eval_every = 6
[observe]
log_every = 6
"#,
    );
    let o = run_in(dir.path(), &["run", "u.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = export_csv(dir.path(), "cloudchamber.db");
    for name in [
        "dice_1",
        "iou_1",
        "dice",
        "threshold_dice",
        "threshold_value",
        "act_abs",
        "chan_mean_spread",
        "dead_channels",
        "test_acc",
    ] {
        assert!(
            csv.contains(&format!(",{name},")),
            "no {name} rows:\n{}",
            &csv[..csv.len().min(2000)]
        );
    }
    // Four stages of depth 1 (enc.0 ×2, enc.1 ×2) plus the decoder's two: layers 0..5.
    assert!(
        csv.contains(",5,act_abs,"),
        "{}",
        &csv[..csv.len().min(2000)]
    );
    let runs = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(runs.join("segmentation.safetensors").exists());

    // The report shows the held-out images beside their masks, predictions and errors as one
    // inline PNG that decodes to four rows of 16×16 images zoomed ×6, four tiles a row.
    let id = runs.file_name().unwrap().to_str().unwrap().to_string();
    let o = run_in(dir.path(), &["report", &id, "-o", "rep"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(dir.path().join("rep/index.html")).unwrap();
    assert!(
        html.contains("Held-out images and predictions"),
        "no image figure"
    );
    for heading in ["image", "true mask", "prediction", "errors"] {
        assert!(
            html.contains(&format!("<span>{heading}</span>")),
            "{heading}"
        );
    }
    let start = html
        .find("src=\"data:image/png;base64,")
        .expect("an inline PNG")
        + "src=\"data:image/png;base64,".len();
    let end = start + html[start..].find('"').unwrap();
    let png = decode_base64(&html[start..end]);
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), (4 * 96 + 3 * 2, 4 * 96 + 3 * 2));
    // A gap between tiles is white; a mask tile holds only black and white (two classes).
    assert_eq!(img.get_pixel(96, 50).0, [255, 255, 255]);
    for y in 0..96 {
        for x in 98..194 {
            let p = img.get_pixel(x, y).0;
            assert!(p == [0, 0, 0] || p == [255, 255, 255], "mask pixel {p:?}");
        }
    }
    // A missing or malformed artifact leaves a note in its place, and the report still works.
    let artifact = runs.join("segmentation.safetensors");
    std::fs::write(&artifact, b"not a safetensors file").unwrap();
    let o = run_in(dir.path(), &["report", &id, "-o", "rep"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(dir.path().join("rep/index.html")).unwrap();
    assert!(
        html.contains("could not be read"),
        "no note for a malformed file"
    );
    assert!(!html.contains("data:image/png"));
    std::fs::remove_file(&artifact).unwrap();
    let o = run_in(dir.path(), &["report", &id, "-o", "rep"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(dir.path().join("rep/index.html")).unwrap();
    assert!(
        html.contains("the run&#39;s folder has no <code>segmentation.safetensors</code>")
            || html.contains("the run's folder has no <code>segmentation.safetensors</code>"),
        "no note for a missing file"
    );
    assert!(html.contains("Held-out overlap"), "the other figures stay");
}

/// Standard base64 with padding (the report's inline images).
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { value(c) })
            .fold(0u32, |n, v| (n << 6) | v);
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

/// A U-Net's bad input: each error names the file, line and key with a hint, exits 2 and
/// creates no store.
#[test]
fn unet_bad_input_names_the_key() {
    let cases = [
        ("[task.moons]\n[model.unet]\n", "`model.unet` segments images (got task.moons)"),
        ("[task.shapes]\nsize = 36\n[model.unet]\ndepth = 3\n", "`model.unet.depth` pools 3 times, which needs the image size to be a multiple of 8 (task.shapes.size = 36)"),
        ("[task.shapes]\nclasses = 4\n[model.unet]\nloss = \"bce\"\n", "`model.unet.loss` is binary, but the task has 4 classes"),
        ("[task.shapes]\n[model.unet]\nbase_chanels = 8\n", "unknown key `model.unet.base_chanels` (did you mean `base_channels`?)"),
        ("[task.shapes]\n[model]\nwidth = 64\n[model.unet]\n", "`model.width` does not apply to a U-Net"),
        ("[task.shapes]\n[model]\nwidth = 64\n", "`task.shapes` yields images, which need a conv net"),
        ("[task.shapes]\nclasses = 3\n[model.unet]\n", "`task.shapes.classes` must be 2"),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bad.toml", text);
        let o = run_in(dir.path(), &["run", "bad.toml"]);
        assert_eq!(o.status.code(), Some(2), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains("bad.toml"), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains("hint:"), "{text}: {}", stderr(&o));
        assert!(!dir.path().join("cloudchamber.db").exists(), "{text}");
    }
}

/// An IDX file of unsigned bytes with the given dimensions (LeCun's MNIST format).
fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(data);
    out
}

/// `n` 8×8 images and their labels: class `i mod 2` is bright on the left (0) or on the right
/// (1) half, over deterministic pixel noise.
fn halves(n: u32) -> (Vec<u8>, Vec<u8>) {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let class = (i % 2) as u8;
        for y in 0..8u32 {
            for x in 0..8u32 {
                let noise = ((i * 31 + y * 7 + x * 13) % 40) as u8;
                let bright = (x >= 4) == (class == 1);
                pixels.push(if bright { 200 + noise / 2 } else { noise });
            }
        }
        labels.push(class);
    }
    (pixels, labels)
}

/// A small CNN end to end on MNIST-format IDX images (`[n, 8, 8]`, generated): the dry run
/// describes it on 1×8×8 images, it trains and records its accuracy; an MLP on the same files
/// reads them as 64 flattened inputs; a CNN whose stages pool the images away is refused once
/// the files are read, naming the key and its line, with exit code 2.
#[test]
fn a_cnn_trains_on_idx_images() {
    let dir = tempfile::tempdir().unwrap();
    let (train_x, train_y) = halves(48);
    let (test_x, test_y) = halves(16);
    for (name, bytes) in [
        ("train-images-idx3-ubyte", idx_bytes(&[48, 8, 8], &train_x)),
        ("train-labels-idx1-ubyte", idx_bytes(&[48], &train_y)),
        ("t10k-images-idx3-ubyte", idx_bytes(&[16, 8, 8], &test_x)),
        ("t10k-labels-idx1-ubyte", idx_bytes(&[16], &test_y)),
    ] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let cnn = r#"
seed = 0
[task.idx]
[model.cnn]
channels = [4, 8]
norm = "layernorm"
[optim]
optimizer = "adam"
lr = 1e-2
[train]
steps = 40
batch_size = 16
eval_every = 20
[observe]
log_every = 20
"#;
    write(dir.path(), "c.toml", cnn);
    let o = run_in(dir.path(), &["run", "c.toml", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("on 1×8×8 images of 2 classes"),
        "{}",
        stdout(&o)
    );
    let o = run_in(dir.path(), &["run", "c.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = export_csv(dir.path(), "cloudchamber.db");
    assert!(
        csv.contains(",test_acc,"),
        "no test_acc rows:\n{}",
        &csv[..csv.len().min(2000)]
    );

    // The same files for an MLP: flattened rows.
    write(
        dir.path(),
        "m.toml",
        "seed = 0\n[task.idx]\n[model]\nwidth = 8\ndepth = 1\n[train]\nsteps = 10\nbatch_size = 16\n",
    );
    let o = run_in(dir.path(), &["run", "m.toml", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("MLP 64→"), "{}", stdout(&o));
    let o = run_in(dir.path(), &["run", "m.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Four stages pool 8×8 away: known only once the files are read.
    write(
        dir.path(),
        "bad.toml",
        &cnn.replace("channels = [4, 8]", "channels = [4, 4, 4, 4]"),
    );
    for args in [
        &["run", "bad.toml", "--dry-run"][..],
        &["run", "bad.toml"][..],
    ] {
        let o = run_in(dir.path(), args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("bad.toml:5")
                && err.contains("model.cnn.channels")
                && err.contains("4 stages pool a 8×8 image away")
                && err.contains("hint:"),
            "{err}"
        );
    }
}

/// A one-channel 8-bit PNG.
fn gray_png(w: u32, h: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
    }
    out
}

/// A small U-Net end to end on a folder of PNG images with 0/255 masks (`[task.images]`): it
/// trains and records its overlap scores; a depth that the 8×8 images do not allow is refused
/// once the files are read, naming the key and its line, with exit code 2.
#[test]
fn a_unet_trains_on_a_folder_of_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    std::fs::create_dir_all(data.join("masks")).unwrap();
    for i in 0..24u32 {
        // A bright 3×3 square that moves with i, over pixel noise.
        let (x0, y0) = (i % 5, (i / 5) % 5);
        let (mut img, mut mask) = (vec![0u8; 64], vec![0u8; 64]);
        for y in 0..8u32 {
            for x in 0..8u32 {
                let inside = (x0..x0 + 3).contains(&x) && (y0..y0 + 3).contains(&y);
                let noise = ((i * 17 + y * 5 + x * 11) % 50) as u8;
                let at = (y * 8 + x) as usize;
                img[at] = if inside { 180 + noise } else { noise };
                mask[at] = if inside { 255 } else { 0 };
            }
        }
        std::fs::write(
            data.join(format!("images/{i:02}.png")),
            gray_png(8, 8, &img),
        )
        .unwrap();
        std::fs::write(
            data.join(format!("masks/{i:02}.png")),
            gray_png(8, 8, &mask),
        )
        .unwrap();
    }
    let unet = r#"
seed = 1
[task.images]
dir = "data"
classes = 2
[model.unet]
depth = 1
base_channels = 4
loss = "bce_dice"
[train]
steps = 8
batch_size = 6
eval_every = 4
[observe]
log_every = 4
"#;
    write(dir.path(), "u.toml", unet);
    let o = run_in(dir.path(), &["run", "u.toml", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("18 train / 6 test"), "{out}");
    assert!(out.contains("on 1×8×8 images of 2 classes"), "{out}");
    let o = run_in(dir.path(), &["run", "u.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = export_csv(dir.path(), "cloudchamber.db");
    for name in ["dice_1", "iou", "test_acc"] {
        assert!(
            csv.contains(&format!(",{name},")),
            "no {name} rows:\n{}",
            &csv[..csv.len().min(2000)]
        );
    }

    write(
        dir.path(),
        "bad.toml",
        &unet.replace("depth = 1", "depth = 4"),
    );
    let o = run_in(dir.path(), &["run", "bad.toml"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.toml:7")
            && err.contains("model.unet.depth")
            && err.contains("multiples of 16")
            && err.contains("8×8"),
        "{err}"
    );
}

/// `cloudchamber quanta` beside a small multitask-sparse-parity width sweep: one row per run
/// with its learned subtasks, and the quanta model's loss for that count recomputed here from
/// the Zipf frequencies; a sweep of another task is refused with exit code 2.
#[test]
fn quanta_reads_a_multitask_sweep() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "q.toml",
        r#"
seed = 0
[task.multitask_sparse_parity]
n_tasks = 6
n_bits = 10
k = 2
zipf_exponent = 1.4
n_train = 20000
n_test = 3000
[model]
width = 4
depth = 1
activation = "relu"
[optim]
optimizer = "adam"
lr = 3e-3
[train]
steps = 1500
batch_size = 128
eval_every = 500
[observe]
log_every = 500
[sweep]
name = "q"
[sweep.axes]
"model.width" = [4, 64]
"#,
    );
    let o = run_in(dir.path(), &["sweep", "q.toml", "--workers", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_in(
        dir.path(),
        &["quanta", "--sweep", "q", "--x", "model.width"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // L(n) = ln 2 · Σ_{k>n} p_k, p_k ∝ k^−1.4 over 6 subtasks.
    let w: Vec<f64> = (1..=6).map(|k| (k as f64).powf(-1.4)).collect();
    let total: f64 = w.iter().sum();
    let tail = |n: usize| std::f64::consts::LN_2 * w[n..].iter().sum::<f64>() / total;
    let mut learned = Vec::new();
    for width in ["4", "64"] {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(width))
            .unwrap_or_else(|| panic!("no row for width {width}:\n{out}"));
        let f: Vec<&str> = row.split_whitespace().collect();
        let n: usize = f[3].parse().unwrap();
        let l: f64 = f[4].parse().unwrap();
        assert!(
            (l - tail(n)).abs() < 1e-4,
            "{row}: L({n}) should be {}",
            tail(n)
        );
        learned.push(n);
    }
    assert!(
        learned[1] > learned[0],
        "width 64 learned no more than 4:\n{out}"
    );
    assert!(out.contains("measured: test loss ∝ x^−"), "{out}");
    assert!(out.contains("predicted (asymptotic"), "{out}");

    write(
        dir.path(),
        "ts.toml",
        &format!("{SMALL}\n[sweep]\nname = \"ts\"\n[sweep.axes]\n\"model.width\" = [4, 8]\n"),
    );
    let o = run_in(dir.path(), &["sweep", "ts.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_in(dir.path(), &["quanta", "--sweep", "ts"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not multitask sparse parity"),
        "{}",
        stderr(&o)
    );
}
