//! The report, plots, exports and watch, end to end on real (small) runs and sweeps:
//! - the HTML reports of a run and of sweeps load in headless Chromium with no network request
//!   and no console error, and their screenshots are not blank (a negative-control page proves
//!   the checker sees requests and errors);
//! - the Parquet and TensorBoard exports, read back by pyarrow and by TensorBoard's own
//!   EventAccumulator, hold exactly the store's values;
//! - the phase diagram shows the seed mean of each cell's final loss and marks diverged cells;
//! - `plot` writes SVG and PNG; `watch` ends when the sweep is done and on Ctrl-C.
//!
//! Needs Debian's `chromium` ($CHROMIUM) and a Python with pyarrow, tensorboard and
//! websocket-client ($CLOUDCHAMBER_PYTHON, else .venv/bin/python): `bash scripts/test` installs
//! both. Without them the tests fail, never skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cloudchamber::plot::figures;
use cloudchamber::store::{RunStatus, Store};

fn bin(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudchamber"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("binary runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = bin(dir, args);
    assert!(
        o.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

const BASE: &str = r#"seed = 1

[task.teacher_student]
input_dim = 8
n_train = 256
n_test = 128

[task.teacher_student.teacher]
width = 4

[model]
width = 16
depth = 2
activation = "tanh"

[model.act]
a = { init = 1.0, mode = "learned", per = "neuron" }
c = { init = 0.0, mode = "learned", per = "neuron" }

[optim]
optimizer = "sgd"

[train]
steps = 200
batch_size = 32
eval_every = 50

[observe]
log_every = 25
"#;

/// A store with one run (quickstart, shortened), a 2 × 2 × 2-seed phase sweep whose lr = 50
/// column diverges, and a width sweep for the scaling plot. Built once per test binary.
struct Fixture {
    dir: PathBuf,
    run_id: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-fixture");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml");
        ok(
            &dir,
            &[
                "run",
                quickstart.to_str().unwrap(),
                "--set",
                "train.steps=300",
                "--set",
                "output.save_data=false",
            ],
        );
        let phase = format!(
            "{BASE}\n[sweep]\nname = \"phase\"\nseeds = 2\n\n[sweep.axes]\n\"optim.lr\" = [0.05, 50.0]\n\"model.init_scale\" = [0.5, 1.0]\n"
        );
        std::fs::write(dir.join("phase.toml"), phase).unwrap();
        ok(&dir, &["sweep", "phase.toml"]);
        let scaling = format!(
            "{BASE}\n[sweep]\nname = \"widths\"\nseeds = 2\n\n[sweep.axes]\n\"model.width\" = [4, 8, 16, 32]\n"
        );
        std::fs::write(dir.join("widths.toml"), scaling).unwrap();
        ok(&dir, &["sweep", "widths.toml"]);
        let store = Store::open(&dir.join("cloudchamber.db")).unwrap();
        let run_id = store.resolve("quickstart").unwrap().id;
        Fixture { dir, run_id }
    })
}

fn python() -> String {
    if let Ok(p) = std::env::var("CLOUDCHAMBER_PYTHON") {
        if !p.is_empty() {
            return p;
        }
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

fn python_with(modules: &str) -> String {
    let py = python();
    let probe = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output();
    match probe {
        Ok(o) if o.status.success() => py,
        _ => panic!(
            "`{py}` cannot import {modules}: run `bash scripts/test` (it sets up .venv), or point \
             $CLOUDCHAMBER_PYTHON at a Python that has them"
        ),
    }
}

fn chromium() -> String {
    let c = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&c).exists(),
        "no Chromium at {c}: `apt-get install -y chromium` (scripts/test does it), or set $CHROMIUM"
    );
    c
}

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/report")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Standard deviation of luminance (0–255) and the fraction of pixels that are not white.
fn pixel_stats(png: &Path) -> (u32, u32, f64, f64) {
    let img = image::open(png).expect("screenshot decodes").to_rgb8();
    let (w, h) = img.dimensions();
    let mut sum = 0.0;
    let mut sum2 = 0.0;
    let mut inked = 0usize;
    for p in img.pixels() {
        let y = 0.2126 * p[0] as f64 + 0.7152 * p[1] as f64 + 0.0722 * p[2] as f64;
        sum += y;
        sum2 += y * y;
        if y < 245.0 {
            inked += 1;
        }
    }
    let n = (w * h) as f64;
    let var = sum2 / n - (sum / n).powi(2);
    (w, h, var.max(0.0).sqrt(), inked as f64 / n)
}

fn url(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap().display())
}

#[test]
fn reports_load_offline_in_chromium_with_no_errors() {
    let f = fixture();
    let out = f.dir.join("reports");
    let _ = std::fs::remove_dir_all(&out);
    ok(&f.dir, &["report", &f.run_id, "-o", "reports/run"]);
    ok(&f.dir, &["report", "phase", "-o", "reports/phase"]);
    ok(&f.dir, &["report", "widths", "-o", "reports/widths"]);

    let run_html = std::fs::read_to_string(out.join("run/index.html")).unwrap();
    // Figures of the run: loss, weight norm, three heatmaps, two line sets, theory.
    assert!(
        run_html.matches("<figure>").count() >= 7,
        "run page has few figures"
    );
    assert!(run_html.contains("[model]"), "the spec is on the page");
    let phase_html = std::fs::read_to_string(out.join("phase/index.html")).unwrap();
    assert!(phase_html.contains("Phase diagram"));
    let widths_html = std::fs::read_to_string(out.join("widths/index.html")).unwrap();
    assert!(widths_html.contains("Scaling") && widths_html.contains("alpha"));
    // The report's scaling fit is `fit`'s (issue 15, item 22): parameters on x, seed means,
    // the same options, so the same exponent to the bit.
    assert!(
        widths_html.contains("cloudchamber fit --sweep widths --form power --x model.params"),
        "the page names the fit it shows"
    );
    {
        let store = Store::open(&f.dir.join("cloudchamber.db")).unwrap();
        let configs = cloudchamber::plot::figures::configs(&store, "widths").unwrap();
        let s = cloudchamber::plot::figures::scaling(&store, "widths", &configs, "test_loss", "t")
            .unwrap()
            .expect("a scaling figure for a width sweep");
        assert_eq!(s.x, "model.params");
        assert_eq!(s.points, 4, "one point per width (seed means)");
        let json = ok(
            &f.dir,
            &[
                "fit",
                "--sweep",
                "widths",
                "--form",
                "power",
                "--x",
                "model.params",
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let alpha = v["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "alpha")
            .unwrap()["value"]
            .as_f64()
            .unwrap();
        assert_eq!(s.fit.get("alpha").unwrap(), alpha);
        // A sweep that keeps the parameter count (here over the data) is fitted against its
        // swept key, as `fit --x task.teacher_student.n_train` would.
        let data = format!(
            "{BASE}\n[sweep]\nname = \"data\"\n\n[sweep.axes]\n\"task.teacher_student.n_train\" = [64, 128, 256, 512]\n"
        );
        std::fs::write(f.dir.join("data-sweep.toml"), data).unwrap();
        ok(&f.dir, &["--store", "data.db", "sweep", "data-sweep.toml"]);
        let store = Store::open(&f.dir.join("data.db")).unwrap();
        let configs = cloudchamber::plot::figures::configs(&store, "data").unwrap();
        let s = cloudchamber::plot::figures::scaling(&store, "data", &configs, "test_loss", "t")
            .unwrap()
            .expect("a scaling figure for a data sweep");
        assert_eq!(s.x, "task.teacher_student.n_train");
    }
    // Every run of the sweep has its page, linked from the index.
    let store = Store::open(&f.dir.join("cloudchamber.db")).unwrap();
    let phase_runs = store.sweep_runs("phase").unwrap();
    assert_eq!(phase_runs.len(), 8);
    for (id, _) in &phase_runs {
        assert!(phase_html.contains(&format!("href=\"runs/{id}.html\"")));
        assert!(out.join(format!("phase/runs/{id}.html")).exists());
    }
    for html in [&run_html, &phase_html, &widths_html] {
        assert!(!html.contains("<script"), "no script");
        // Raster figures are inline (data: URIs); nothing is loaded from elsewhere.
        assert_eq!(
            html.matches(" src=").count(),
            html.matches(" src=\"data:").count(),
            "nothing loaded from elsewhere"
        );
    }

    let py = python_with("websocket");
    chromium();
    let shots = f.dir.join("shots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let pages = [
        Path::new(&script("control.html")).to_path_buf(),
        out.join("run/index.html"),
        out.join("phase/index.html"),
        out.join(format!("phase/runs/{}.html", phase_runs[0].0)),
        out.join("widths/index.html"),
    ];
    let mut args = vec![script("browse.py"), shots.to_string_lossy().into_owned()];
    args.extend(pages.iter().map(|p| url(p)));
    let o = Command::new(&py).args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "browse.py failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), pages.len());

    // The control page: the checker sees its request and its console error.
    let control = &results[0];
    assert!(
        control["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u.as_str().unwrap().contains("127.0.0.1:45678")),
        "{control}"
    );
    assert!(
        control["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("control error")),
        "{control}"
    );

    for r in &results[1..] {
        assert_eq!(r["requests"].as_array().unwrap().len(), 0, "{r}");
        assert_eq!(r["errors"].as_array().unwrap().len(), 0, "{r}");
        let (w, h, sd, inked) = pixel_stats(Path::new(r["screenshot"].as_str().unwrap()));
        assert_eq!((w, h), (1200, 900));
        // A blank (white) page has sd 0 and no ink; a rendered report has text, rules, figures.
        assert!(
            sd > 20.0 && inked > 0.03,
            "{r}: sd {sd:.1}, inked {inked:.3}"
        );
    }
}

#[test]
fn phase_diagram_cells_are_seed_means_and_diverged_cells_are_marked() {
    let f = fixture();
    let store = Store::open(&f.dir.join("cloudchamber.db")).unwrap();
    let configs = figures::configs(&store, "phase").unwrap();
    assert_eq!(configs.len(), 4);
    let Some(cloudchamber::plot::Figure::Heatmap(h)) =
        figures::phase_diagram(&store, &configs, "test_loss", "t").unwrap()
    else {
        panic!("a heatmap")
    };
    assert_eq!(h.columns, ["0.05", "50"]);
    assert_eq!(h.rows, ["0.5", "1"]);
    for (id, vals) in store.sweep_runs("phase").unwrap() {
        let lr = &vals[0].1;
        let scale = &vals[1].1;
        let col = if lr == "50" { 1 } else { 0 };
        let row = if scale == "1" { 1 } else { 0 };
        let cell = h.values[row][col];
        let run = store.run(&id).unwrap().unwrap();
        if lr == "50" {
            assert_eq!(run.status, RunStatus::Diverged, "lr 50 diverges");
            assert!(cell.is_nan(), "diverged cell is marked, not averaged");
        } else {
            assert_eq!(run.status, RunStatus::Completed);
            // The cell is the mean over this configuration's seeds of the last test_loss.
            let finals: Vec<f64> = store
                .sweep_runs("phase")
                .unwrap()
                .iter()
                .filter(|(_, v)| v[0].1 == *lr && v[1].1 == *scale)
                .map(|(rid, _)| {
                    let s = store.series(rid, "test_loss", None).unwrap();
                    s.last().unwrap().1
                })
                .collect();
            assert_eq!(finals.len(), 2);
            let mean = (finals[0] + finals[1]) / 2.0;
            assert!(
                (cell - mean).abs() <= 1e-15 * mean.abs(),
                "{cell} vs {mean}"
            );
        }
    }
}

#[test]
fn exports_read_back_in_pyarrow_and_tensorboard() {
    let f = fixture();
    let py = python_with("pyarrow, tensorboard");
    let store = Store::open(&f.dir.join("cloudchamber.db")).unwrap();
    let runs = store.sweep_runs("phase").unwrap();
    ok(
        &f.dir,
        &[
            "export",
            "--sweep",
            "phase",
            "--format",
            "parquet",
            "-o",
            "phase.parquet",
        ],
    );
    let _ = std::fs::remove_dir_all(f.dir.join("tb"));
    ok(
        &f.dir,
        &[
            "export",
            "--sweep",
            "phase",
            "--format",
            "tensorboard",
            "-o",
            "tb",
        ],
    );
    // What the store holds, for the Python side to compare against.
    let expected = serde_json::json!({
        "keys": runs[0].1.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "runs": runs.iter().map(|(id, vals)| {
            serde_json::json!({
                "id": id,
                "values": vals.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
                "status": store.run(id).unwrap().unwrap().status.as_str(),
                "rows": store.metrics(id).unwrap().into_iter().map(|m| {
                    // Debug formatting of f64 round-trips exactly, NaN and inf included.
                    serde_json::json!([m.step, m.layer, m.name, format!("{:?}", m.value)])
                }).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    });
    let exp_path = f.dir.join("expected.json");
    std::fs::write(&exp_path, expected.to_string()).unwrap();
    let o = Command::new(&py)
        .arg(script("read_exports.py"))
        .arg(&exp_path)
        .arg(f.dir.join("phase.parquet"))
        .arg(f.dir.join("tb"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("in 8 runs"), "{stdout}");
}

#[test]
fn plot_writes_svg_and_png() {
    let f = fixture();
    ok(
        &f.dir,
        &["plot", &f.run_id, "--figure", "loss", "-o", "loss.svg"],
    );
    let svg = std::fs::read_to_string(f.dir.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    // Log axis: decades labelled 10ᵏ with superscript exponents.
    assert!(svg.contains("10⁻"), "log ticks");
    ok(
        &f.dir,
        &[
            "plot",
            "--sweep",
            "phase",
            "--figure",
            "phase",
            "-o",
            "phase.png",
        ],
    );
    let (w, h, sd, _) = pixel_stats(&f.dir.join("phase.png"));
    assert_eq!((w, h), (1520, 920), "PNG at twice the nominal size");
    assert!(sd > 20.0);
    ok(
        &f.dir,
        &[
            "plot",
            "--sweep",
            "widths",
            "--figure",
            "scaling",
            "-o",
            "scaling.svg",
        ],
    );
    // A figure the run cannot have: a clear error, exit code 2.
    let o = bin(
        &f.dir,
        &["plot", &f.run_id, "--figure", "accuracy", "-o", "acc.png"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("hint:"));
}

#[test]
fn watch_ends_when_the_sweep_is_done_and_on_ctrl_c() {
    let f = fixture();
    let out = ok(&f.dir, &["watch", "phase", "--once"]);
    assert!(
        out.contains("8 runs — 4 completed, 4 diverged, 0 failed, 0 running"),
        "{out}"
    );
    // A finished sweep: one frame, then it ends by itself.
    let out = ok(&f.dir, &["watch", "phase", "--interval", "0.1"]);
    assert!(out.contains("has finished"), "{out}");

    // A sweep whose run never starts: only Ctrl-C ends the view, promptly and cleanly.
    let db = f.dir.join("pending.db");
    let _ = std::fs::remove_file(&db);
    let mut store = Store::open(&db).unwrap();
    store
        .record_sweep(
            "pending",
            "p.toml",
            "",
            &[("00000000deadbeef".into(), vec![("seed".into(), "0".into())])],
        )
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudchamber"))
        .current_dir(&f.dir)
        .args([
            "--store",
            "pending.db",
            "watch",
            "pending",
            "--interval",
            "0.2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(child.try_wait().unwrap().is_none(), "still watching");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "watch ignored Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut text).unwrap();
    assert!(
        text.contains("1 pending") && text.contains("stopped watching"),
        "{text}"
    );
}
