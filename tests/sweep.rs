//! End-to-end tests of `cloudchamber sweep FILE --dry-run`: the listing, ids shared with single
//! runs, and the errors of a bad declaration.

use std::path::Path;
use std::process::{Command, Output};

fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudchamber"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("binary runs")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const BASE: &str = r#"seed = 3

[task.teacher_student]
input_dim = 8
n_train = 64
n_test = 32

[model]
width = 16
depth = 1

[train]
steps = 5
batch_size = 32
eval_every = 5

[observe]
log_every = 5
"#;

const SWEEP: &str = r#"
[sweep]
name = "lr-by-width"
seeds = [0, 7]

[sweep.axes]
"optim.lr" = { logspace = [1e-4, 1e-2, 3] }
"model.activation" = ["tanh", "relu"]

[[sweep.zip]]
"model.width" = [8, 16]
"model.init_scale" = [0.5, 2.0]
"#;

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// (id, label) of each run line of a dry run.
fn runs(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(|l| {
            let mut parts = l.trim_start().splitn(3, "  ");
            let index = parts.next()?;
            index.parse::<usize>().ok()?;
            let id = parts.next()?.to_string();
            // The label's columns are padded to line up: one space between cells here.
            let label = parts
                .next()?
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            Some((id, label))
        })
        .collect()
}

#[test]
fn dry_run_lists_every_run_and_the_count() {
    let dir = dir_with(&[("s.toml", &format!("{BASE}{SWEEP}"))]);
    let o = run_in(dir.path(), &["sweep", "s.toml", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let s = out(&o);
    assert!(s.starts_with("sweep lr-by-width (s.toml)\n"), "{s}");
    assert!(s.contains("1e-4 1e-3 0.01  (logspace, 3)"), "{s}");
    assert!(
        s.contains("model.width + model.init_scale  (8, 0.5) (16, 2)  (zip, 2)"),
        "{s}"
    );
    assert!(
        s.trim_end().ends_with("24 runs (dry run: nothing was run)"),
        "{s}"
    );
    let rs = runs(&s);
    assert_eq!(rs.len(), 3 * 2 * 2 * 2);
    assert_eq!(
        rs[0].1,
        "optim.lr=1e-4 model.activation=tanh model.width=8 model.init_scale=0.5 seed=0"
    );
    assert_eq!(
        rs[23].1,
        "optim.lr=0.01 model.activation=relu model.width=16 model.init_scale=2 seed=7"
    );
    let mut ids: Vec<&String> = rs.iter().map(|r| &r.0).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 24, "ids are distinct");
    // A dry run touches no store.
    assert!(!dir.path().join("cloudchamber.db").exists());
}

#[test]
fn a_sweep_run_has_the_id_of_the_same_single_run() {
    let dir = dir_with(&[("s.toml", &format!("{BASE}{SWEEP}")), ("base.toml", BASE)]);
    let s = out(&run_in(dir.path(), &["sweep", "s.toml", "--dry-run"]));
    let rs = runs(&s);
    // One run from the middle: every swept key differs from the base.
    let (id, label) = &rs[13];
    let mut args = vec!["run", "base.toml", "--quiet"];
    let sets: Vec<String> = label.split(' ').map(str::to_string).collect();
    for kv in &sets {
        args.push("--set");
        args.push(kv);
    }
    let o = run_in(dir.path(), &args);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = run_in(dir.path(), &["show", id]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "no run {id} in the store: {}",
        err(&o)
    );
    assert!(out(&o).contains(id.as_str()), "{}", out(&o));
}

#[test]
fn a_separate_sweep_file_names_its_base() {
    let dir = dir_with(&[
        ("base.toml", BASE),
        ("s.toml", "[sweep]\nbase = \"base.toml\"\nseeds = 2\n"),
    ]);
    let o = run_in(dir.path(), &["sweep", "s.toml", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let s = out(&o);
    assert!(s.starts_with("sweep s (s.toml)"), "{s}");
    assert_eq!(runs(&s).len(), 2);
    // --set changes the base of every run.
    let o2 = run_in(
        dir.path(),
        &["sweep", "s.toml", "--dry-run", "--set", "train.steps=6"],
    );
    assert_eq!(o2.status.code(), Some(0), "{}", err(&o2));
    assert_ne!(runs(&s)[0].0, runs(&out(&o2))[0].0);
}

#[test]
fn run_on_a_sweep_file_points_to_sweep() {
    let dir = dir_with(&[("s.toml", &format!("{BASE}{SWEEP}"))]);
    let o = run_in(dir.path(), &["run", "s.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let e = err(&o);
    assert!(
        e.starts_with(
            "error: s.toml:20: `sweep` declares a sweep (many runs); `run` runs one experiment"
        ),
        "{e}"
    );
    assert!(e.contains("cloudchamber sweep s.toml --dry-run"), "{e}");
    assert!(!dir.path().join("cloudchamber.db").exists());
}

#[test]
fn a_misspelt_sweep_section_is_an_unknown_key() {
    let dir = dir_with(&[("s.toml", &format!("{BASE}\n[sweeep]\nseeds = 2\n"))]);
    let o = run_in(dir.path(), &["run", "s.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let e = err(&o);
    assert!(
        e.starts_with("error: s.toml:20: unknown key `sweeep` (did you mean `sweep`?)"),
        "{e}"
    );
}

/// Exit code and stderr of a dry run of BASE plus `decl`.
fn bad(decl: &str) -> (i32, String) {
    let dir = dir_with(&[("s.toml", &format!("{BASE}{decl}"))]);
    let o = run_in(dir.path(), &["sweep", "s.toml", "--dry-run"]);
    assert!(
        out(&o).is_empty(),
        "nothing listed for a bad sweep: {}",
        out(&o)
    );
    (o.status.code().unwrap_or(-1), err(&o))
}

#[test]
fn bad_declarations_name_the_line_and_key() {
    let (code, e) = bad("\n[[sweep.zip]]\n\"model.width\" = [8, 16]\n\"optim.lr\" = [1e-3]\n");
    assert_eq!(code, 2);
    assert!(
        e.starts_with("error: s.toml:20: `sweep.zip[0]` zips lists of different lengths (model.width has 2, optim.lr has 1)"),
        "{e}"
    );
    let (code, e) = bad("\n[sweep.axes]\n\"optim.lrr\" = [1e-3, 1e-2]\n");
    assert_eq!(code, 2);
    assert!(
        e.starts_with("error: s.toml:21 (sweep run 0: optim.lrr=1e-3): unknown key `optim.lrr` (did you mean `lr`?)"),
        "{e}"
    );
    let (code, e) = bad("\n[sweep.axes]\n\"optim.lr\" = { range = [1e-3, 1e-2, 3] }\n");
    assert_eq!(code, 2);
    assert!(
        e.starts_with("error: s.toml:21: unknown key `sweep.axes.optim.lr.range`"),
        "{e}"
    );
    let (code, e) = bad("\n[sweep.axes]\n\"optim.lr\" = { logspace = [-4, -1, 4] }\n");
    assert_eq!(code, 2);
    assert!(e.contains("not exponents"), "{e}");
    let (code, e) = bad("\n[sweep.axes]\n\"model.activation\" = [\"tanh\", \"rleu\"]\n");
    assert_eq!(code, 2);
    assert!(
        e.starts_with("error: s.toml:21 (sweep run 1: model.activation=rleu): `model.activation` = \"rleu\": unknown value (did you mean \"relu\"?)"),
        "{e}"
    );
    let (code, e) = bad("\n[sweep]\nseeds = 0\n");
    assert_eq!(code, 2);
    assert!(
        e.starts_with("error: s.toml:21: `sweep.seeds` must be between 1"),
        "{e}"
    );
}

mod executor {
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn bin() -> Command {
        Command::new(env!("CARGO_BIN_EXE_cloudchamber"))
    }

    const SWEEP: &str = r#"
seed = 0
[task.teacher_student]
input_dim = 8
n_train = 512
n_test = 256
[model]
width = 32
depth = 2
[train]
steps = 2500
batch_size = 64
eval_every = 250
checkpoint_every = 200
[observe]
log_every = 10
[sweep]
name = "exec"
seeds = 3
[sweep.axes]
"optim.lr" = [1e-3, 3e-2, 1e3]
"#;

    fn export(dir: &Path, store: &str) -> String {
        let o = bin()
            .current_dir(dir)
            .args(["--store", store, "export", "--all"])
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    }

    fn sorted_lines(s: &str) -> Vec<String> {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// Every declared run runs once; diverging ones (lr = 1e3) are recorded, not fatal; a second
    /// invocation skips them all; a sweep run equals the single run with the same values.
    #[test]
    fn sweep_runs_every_point_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.toml"), SWEEP).unwrap();
        let o = bin()
            .current_dir(dir.path())
            .args(["sweep", "s.toml", "--workers", "2"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains("9 runs: 6 completed, 3 diverged, 0 failed (0 were already in"),
            "{out}"
        );
        // One point alone, as a job array element would run it: already there.
        let one = bin()
            .current_dir(dir.path())
            .args(["sweep", "s.toml", "--index", "4"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&one.stdout)
            .contains("1 run: 1 completed, 0 diverged, 0 failed (1 were already in"));
        let again = bin()
            .current_dir(dir.path())
            .args(["sweep", "s.toml"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&again.stdout).contains("(9 were already in"));
        // The same point as a single run, in another store: identical rows.
        let base = SWEEP.split("[sweep]").next().unwrap();
        std::fs::write(dir.path().join("b.toml"), base).unwrap();
        let o = bin()
            .current_dir(dir.path())
            .args([
                "--store",
                "single.db",
                "run",
                "b.toml",
                "-q",
                "--set",
                "optim.lr=3e-2",
                "--set",
                "seed=1",
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
        let single = export(dir.path(), "single.db");
        let id = single
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let sweep_rows: Vec<&str> = export(dir.path(), "cloudchamber.db")
            .leak()
            .lines()
            .filter(|l| l.starts_with(&id))
            .collect();
        assert_eq!(single.lines().skip(1).collect::<Vec<_>>(), sweep_rows);
    }

    /// SIGKILL of the whole sweep at five moments, each followed by running it again, ends with
    /// exactly the declared runs, each once, with metrics bit-identical to an uninterrupted sweep,
    /// and a store that passes SQLite's integrity check.
    #[test]
    fn killed_sweep_finishes_exactly_once_and_bit_identically() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.toml"), SWEEP).unwrap();
        let o = bin()
            .current_dir(dir.path())
            .args(["--store", "ref.db", "sweep", "s.toml", "--workers", "2"])
            .output()
            .unwrap();
        assert!(o.status.success());
        let reference = export(dir.path(), "ref.db");
        std::fs::remove_dir_all(dir.path().join("runs")).unwrap();

        let delays = [60u64, 150, 90, 220, 130];
        for d in delays {
            let mut child = bin()
                .current_dir(dir.path())
                .args(["--store", "cut.db", "sweep", "s.toml", "--workers", "2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(d));
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let t0 = Instant::now();
        let o = bin()
            .current_dir(dir.path())
            .args(["--store", "cut.db", "sweep", "s.toml", "--workers", "2"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(t0.elapsed() < Duration::from_secs(120));
        let store = cloudchamber::store::Store::open(&dir.path().join("cut.db")).unwrap();
        let runs = store.runs().unwrap();
        assert_eq!(runs.len(), 9, "each declared run exactly once");
        assert!(runs.iter().all(|r| matches!(
            r.status,
            cloudchamber::store::RunStatus::Completed | cloudchamber::store::RunStatus::Diverged
        )));
        drop(store);
        assert_eq!(
            sorted_lines(&reference),
            sorted_lines(&export(dir.path(), "cut.db"))
        );
        let conn = rusqlite_integrity(dir.path().join("cut.db").as_path());
        assert_eq!(conn, "ok");
    }

    /// `summarize` groups the seeds of each configuration; its mean and sample std equal a
    /// recomputation from the exported rows; diverged runs are counted apart; `status` counts.
    #[test]
    fn summarize_and_status() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s.toml"),
            SWEEP.replace("steps = 2500", "steps = 300"),
        )
        .unwrap();
        assert!(bin()
            .current_dir(dir.path())
            .args(["sweep", "s.toml"])
            .output()
            .unwrap()
            .status
            .success());
        let o = bin()
            .current_dir(dir.path())
            .args([
                "summarize",
                "exec",
                "--metric",
                "test_loss",
                "--format",
                "csv",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let csv = String::from_utf8(o.stdout).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "optim.lr,n,mean,std,stderr,min,max,diverged,missing"
        );
        assert_eq!(lines.len(), 4);
        let diverged: Vec<&str> = lines[3].split(',').collect();
        assert_eq!((diverged[0], diverged[1], diverged[7]), ("1000", "0", "3"));
        // Recompute the lr = 0.03 group from the tidy export: the final test_loss of each run.
        let export = export(dir.path(), "cloudchamber.db");
        let store = cloudchamber::store::Store::open(&dir.path().join("cloudchamber.db")).unwrap();
        let mut finals = Vec::new();
        for (id, vals) in store.sweep_runs("exec").unwrap() {
            if vals.iter().any(|(k, v)| k == "optim.lr" && v == "0.03") {
                let last = export
                    .lines()
                    .filter(|l| l.starts_with(&id) && l.contains(",,test_loss,"))
                    .last()
                    .unwrap();
                finals.push(last.rsplit(',').next().unwrap().parse::<f64>().unwrap());
            }
        }
        assert_eq!(finals.len(), 3);
        let mean = finals.iter().sum::<f64>() / 3.0;
        let std = (finals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        let row: Vec<f64> = lines[2]
            .split(',')
            .skip(1)
            .take(3)
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(row[0], 3.0);
        assert!(
            (row[1] - mean).abs() <= 1e-15 * mean.abs() && (row[2] - std).abs() <= 1e-12 * std,
            "{row:?} vs {mean} {std}"
        );
        let o = bin()
            .current_dir(dir.path())
            .args(["status", "exec"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(
                "9 runs — 6 completed, 3 diverged, 0 failed, 0 running, 0 incomplete, 0 pending"
            ),
            "{out}"
        );
        assert!(out.contains("throughput"), "{out}");
        // The same summary as Parquet: 3 configurations, 9 columns, the same mean.
        let o = bin()
            .current_dir(dir.path())
            .args([
                "summarize",
                "exec",
                "--format",
                "parquet",
                "-o",
                "s.parquet",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        {
            use parquet::file::reader::{FileReader, SerializedFileReader};
            use parquet::record::RowAccessor;
            let r = SerializedFileReader::new(
                std::fs::File::open(dir.path().join("s.parquet")).unwrap(),
            )
            .unwrap();
            let meta = r.metadata();
            assert_eq!(meta.file_metadata().num_rows(), 3);
            assert_eq!(meta.file_metadata().schema_descr().num_columns(), 9);
            let second = r.get_row_iter(None).unwrap().nth(1).unwrap().unwrap();
            // The swept key is a number column (issue 15, item 16), not text.
            assert_eq!(second.get_double(0).unwrap(), 0.03);
            assert_eq!(second.get_double(2).unwrap(), row[1]);
        }
        // The same runs, tidy, with one column per swept key.
        let o = bin()
            .current_dir(dir.path())
            .args(["export", "--sweep", "exec"])
            .output()
            .unwrap();
        let csv = String::from_utf8(o.stdout).unwrap();
        assert_eq!(
            csv.lines().next(),
            Some("run_id,optim.lr,seed,status,step,layer,name,value")
        );
        let lr_003: Vec<&str> = csv
            .lines()
            .filter(|l| l.contains(",0.03,") && l.contains(",,test_loss,"))
            .collect();
        assert!(!lr_003.is_empty());
        let o = bin()
            .current_dir(dir.path())
            .args(["summarize", "nope"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
    }

    /// Waits until run 0 of the sweep in `db` has recorded metrics (it is training).
    fn wait_until_training(db: &Path) {
        let t0 = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let flowing = cloudchamber::store::Store::open(db)
                .ok()
                .and_then(|s| {
                    let runs = s.runs().ok()?;
                    let r = runs.first()?;
                    Some(s.metrics(&r.id).map(|m| m.len() > 20).unwrap_or(false))
                })
                .unwrap_or(false);
            if flowing {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "no run started");
        }
    }

    /// Ctrl-C during a sweep (issue 15, fault 5): the run in progress is `interrupted`, the runs
    /// never reached are `not started` (not `failed`), and the exit is 130; the same command
    /// again finishes them.
    #[test]
    fn interrupted_sweep_counts_unstarted_runs_apart() {
        let dir = tempfile::tempdir().unwrap();
        let long = SWEEP
            .replace("steps = 2500", "steps = 200000")
            .replace("checkpoint_every = 200", "checkpoint_every = 100000");
        std::fs::write(dir.path().join("s.toml"), &long).unwrap();
        let child = bin()
            .current_dir(dir.path())
            .args(["sweep", "s.toml", "--workers", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until_training(&dir.path().join("cloudchamber.db"));
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let o = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(130), "{out}");
        assert!(
            out.contains("9 runs: 0 completed, 0 diverged, 0 failed, 1 interrupted, 8 not started"),
            "{out}"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("1 runs interrupted and 8 not started"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // `status` counts the interrupted run as interrupted, the rest as pending (fault 12).
        let st = bin()
            .current_dir(dir.path())
            .args(["status", "exec"])
            .output()
            .unwrap();
        let st = String::from_utf8_lossy(&st.stdout);
        assert!(
            st.contains("0 incomplete, 8 pending, 1 interrupted"),
            "{st}"
        );
    }

    /// The same sweep started twice at once on one store (issue 15, fault 13): neither reports
    /// the other's live runs as failures; each waits for the runs the other trains, both exit
    /// 0, and every run is trained exactly once.
    #[test]
    fn two_identical_sweeps_at_once_share_the_work() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.toml"), SWEEP).unwrap();
        let spawn = || {
            bin()
                .current_dir(dir.path())
                .args(["sweep", "s.toml", "--workers", "2"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let a = spawn();
        // Start the second once the first trains, so the two overlap for sure.
        wait_until_training(&dir.path().join("cloudchamber.db"));
        let b = spawn();
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let (mut waited, mut trained) = (false, 0);
        for o in [&a, &b] {
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "{out}{}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                out.contains("9 runs: 6 completed, 3 diverged, 0 failed"),
                "{out}"
            );
            waited |= out.contains("running in another process");
            trained += out.lines().filter(|l| l.contains(" steps, ")).count();
        }
        assert_eq!(trained, 9, "each run trained by one of the two");
        assert!(waited, "the second sweep met a run the first was training");
        let store = cloudchamber::store::Store::open(&dir.path().join("cloudchamber.db")).unwrap();
        assert_eq!(store.runs().unwrap().len(), 9);
    }

    fn rusqlite_integrity(path: &Path) -> String {
        let c = rusqlite::Connection::open(path).unwrap();
        c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .unwrap()
    }
}

/// A sweep's Parquet export read by pandas (issue 15, item 16): numeric swept keys are float
/// and int columns, a `status` column marks diverged runs, and the README's recipe — run here
/// verbatim — leaves them out. Needs pandas and pyarrow (`bash scripts/test` installs them in
/// .venv; `$CLOUDCHAMBER_PYTHON` overrides).
#[test]
fn sweep_parquet_reads_typed_in_pandas_with_the_readme_recipe() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("CLOUDCHAMBER_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| root.join(".venv/bin/python").to_string_lossy().into_owned());
    let dir = tempfile::tempdir().unwrap();
    let phase = root.join("examples/phase-diagram.toml");
    let o = run_in(
        dir.path(),
        &["sweep", phase.to_str().unwrap(), "--set", "train.steps=40"],
    );
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let o = run_in(
        dir.path(),
        &[
            "export",
            "--sweep",
            "phase-diagram",
            "--format",
            "parquet",
            "-o",
            "phase.parquet",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let recipe = readme
        .split("A sweep, averaged over seeds")
        .nth(1)
        .and_then(|s| s.split("```python\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README's sweep recipe");
    let check = format!(
        "{recipe}\n\
assert str(df['optim.lr'].dtype) == 'float64', df.dtypes\n\
assert str(df['model.init_scale'].dtype) == 'float64', df.dtypes\n\
assert str(df['seed'].dtype) == 'int64', df.dtypes\n\
assert set(df.status) == {{'completed', 'diverged'}}, set(df.status)\n\
assert (ok.status == 'completed').all()\n\
lrs = sorted(df['optim.lr'].unique())\n\
assert lrs[0] == 0.003 and lrs[-1] == 0.3 and len(lrs) == 5, lrs\n\
print('ok', df.run_id.nunique(), (df.groupby('status').run_id.nunique()).to_dict())\n"
    );
    let o = Command::new(&python)
        .current_dir(dir.path())
        .args(["-c", &check])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (run `bash scripts/test` to set up .venv)"));
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("ok 60"), "{}", out(&o));
}

/// Every metric row of a store, sorted, with values as bits.
fn metric_rows(db: &Path) -> Vec<(String, i64, Option<i64>, String, u64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT run_id, step, layer, name, value FROM metrics")
        .unwrap();
    let mut rows: Vec<_> = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, f64>(4)?.to_bits(),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

/// The seeds of a small MLP train together in lockstep lanes (the header says so) and store
/// exactly the rows they store trained alone (`--no-lockstep`); a sweep that finds some of its
/// runs finished trains the rest together, with the same rows again.
#[test]
fn lockstep_groups_store_what_runs_alone_store() {
    let base = BASE
        .replace("n_train = 64", "n_train = 100")
        .replace("steps = 5", "steps = 30")
        .replace("eval_every = 5", "eval_every = 10")
        .replace("width = 16", "width = 4");
    let decl = |seeds: usize| format!("{base}\n[sweep]\nname = \"seeds\"\nseeds = {seeds}\n");
    let dir = dir_with(&[("s.toml", &decl(12)), ("few.toml", &decl(5))]);
    let d = dir.path();
    let o = run_in(
        d,
        &["--store", "alone.db", "sweep", "s.toml", "--no-lockstep"],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(!out(&o).contains("lockstep"), "{}", out(&o));
    let o = run_in(
        d,
        &["--store", "lanes.db", "sweep", "s.toml", "--workers", "1"],
    );
    assert!(o.status.success(), "{}", err(&o));
    if !cloudchamber::engine::sgemm::available() {
        // Lockstep reproduces the AVX-512 kernels only: elsewhere every run trains alone.
        assert!(!out(&o).contains("lockstep"), "{}", out(&o));
        return;
    }
    assert!(
        out(&o).contains("12 runs on 1 worker, 12 of them in 1 lockstep group"),
        "{}",
        out(&o)
    );
    let alone = metric_rows(&d.join("alone.db"));
    assert!(alone.len() > 12 * 20, "{}", alone.len());
    assert_eq!(alone, metric_rows(&d.join("lanes.db")));
    // Five of the twelve first (seeds 0–4 are the same runs), then all twelve: seven remain.
    let o = run_in(
        d,
        &["--store", "mixed.db", "sweep", "few.toml", "--no-lockstep"],
    );
    assert!(o.status.success(), "{}", err(&o));
    let o = run_in(
        d,
        &["--store", "mixed.db", "sweep", "s.toml", "--workers", "1"],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("(5 were already in mixed.db)"),
        "{}",
        out(&o)
    );
    assert_eq!(alone, metric_rows(&d.join("mixed.db")));
}

/// Ctrl-C stops a lockstep group like runs alone: every member checkpoints and is marked
/// interrupted (exit 130), and the same command resumes the group, in lanes, to exactly the
/// rows the runs store trained alone without a stop.
#[test]
fn an_interrupted_lockstep_group_resumes_bit_identically() {
    if !cloudchamber::engine::sgemm::available() {
        return;
    }
    let base = BASE
        .replace("n_train = 64", "n_train = 100")
        .replace("steps = 5", "steps = 200000\ncheckpoint_every = 20000")
        .replace("eval_every = 5", "eval_every = 2000")
        .replace("log_every = 5", "log_every = 1000")
        .replace("width = 16", "width = 4");
    let decl = format!("{base}\n[sweep]\nname = \"cut\"\nseeds = 4\n");
    let dir = dir_with(&[("s.toml", &decl)]);
    let d = dir.path();
    let o = run_in(
        d,
        &["--store", "ref.db", "sweep", "s.toml", "--no-lockstep"],
    );
    assert!(o.status.success(), "{}", err(&o));
    let child = Command::new(env!("CARGO_BIN_EXE_cloudchamber"))
        .current_dir(d)
        .args(["--store", "cut.db", "sweep", "s.toml", "--workers", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the group is well into training (rows past step 20,000 are in the store).
    let db = d.join("cut.db");
    let t0 = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let far = rusqlite::Connection::open(&db)
            .ok()
            .and_then(|c| {
                c.query_row("SELECT MAX(step) FROM metrics", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .ok()
                .flatten()
            })
            .is_some_and(|s| s > 20_000);
        if far {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(60));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", err(&o));
    assert!(out(&o).contains("in 1 lockstep group"), "{}", out(&o));
    let c = rusqlite::Connection::open(&db).unwrap();
    let interrupted: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE status = 'interrupted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(interrupted, 4, "{}", out(&o));
    drop(c);
    let o = run_in(
        d,
        &["--store", "cut.db", "sweep", "s.toml", "--workers", "1"],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("resumed"), "{}", out(&o));
    assert_eq!(metric_rows(&d.join("ref.db")), metric_rows(&db));
}
