//! `cloudchamber._native`: the library's entry points for Python. Everything goes through the
//! same functions as the CLI (spec parsing, `runner`, the sweep executor, the store, `fit`,
//! `theory`), so a run started here is the same run, with the same id, as from the CLI. The
//! Python half (`python/cloudchamber/__init__.py`) turns what these return into DataFrames,
//! numpy arrays and objects.
//!
//! Long work runs with the GIL released, on a worker thread, while the calling (main) thread
//! checks Python's signals every 50 ms: Ctrl-C in a terminal or a notebook's interrupt stops
//! the run as the CLI's Ctrl-C does (checkpoint, `interrupted`), then raises
//! `KeyboardInterrupt`.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use cloudchamber::export::{self, ExportFormat};
use cloudchamber::fit::{self, Form};
use cloudchamber::nn::activation::Activation;
use cloudchamber::runner::{self, Start};
use cloudchamber::store::Store;
use cloudchamber::sweep::exec::{self, End, Executor};
use cloudchamber::theory::{calibrate as cal, meanfield};
use cloudchamber::Error;

create_exception!(_native, CloudchamberError, PyException);
create_exception!(_native, SpecError, CloudchamberError);
create_exception!(_native, DataError, CloudchamberError);
create_exception!(_native, StoreError, CloudchamberError);

/// The library error as a Python exception of its kind, with the CLI's message and `hint:`
/// lines as its text and `message`, `hints` and `exit_code` attributes.
fn py_err(e: Error) -> PyErr {
    fn kind(e: &Error, text: String) -> PyErr {
        match e {
            Error::Spec(_) | Error::Invalid { .. } => SpecError::new_err(text),
            Error::Task(_) => DataError::new_err(text),
            Error::Store(_) | Error::Export(_) => StoreError::new_err(text),
            Error::Located { source, .. } => kind(source, text),
            Error::Interrupted { .. } => PyKeyboardInterrupt::new_err(text),
            _ => CloudchamberError::new_err(text),
        }
    }
    let message = e.to_string();
    let hints = e.hints();
    let mut text = message.clone();
    for h in &hints {
        text.push_str("\nhint: ");
        text.push_str(h);
    }
    let err = kind(&e, text);
    Python::with_gil(|py| {
        let v = err.value(py);
        // Attributes on a fresh exception object cannot fail in practice; a failure would only
        // lose the structured copy of what the text already says.
        let _ = v.setattr("message", message);
        let _ = v.setattr("hints", hints);
        let _ = v.setattr("exit_code", e.exit_code());
    });
    err
}

/// Runs `work` on a thread with the GIL released while this (the main) thread watches for
/// Python signals; a KeyboardInterrupt asks the library to stop (runs checkpoint and end as
/// `interrupted`), and is raised once `work` has returned.
fn interruptible<T: Send>(py: Python<'_>, work: impl FnOnce() -> T + Send) -> PyResult<T> {
    let mut interrupt: Option<PyErr> = None;
    let out = py.allow_threads(|| {
        std::thread::scope(|s| {
            let handle = s.spawn(work);
            while !handle.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
                if interrupt.is_none() {
                    if let Err(e) = Python::with_gil(|py| py.check_signals()) {
                        cloudchamber::interrupt::request();
                        interrupt = Some(e);
                    }
                }
            }
            handle.join()
        })
    });
    if interrupt.is_some() {
        // Honoured: the next call in this kernel starts clean.
        cloudchamber::interrupt::reset();
    }
    match (out, interrupt) {
        (_, Some(e)) => Err(e),
        (Ok(v), None) => Ok(v),
        (Err(_), None) => Err(CloudchamberError::new_err(
            "cloudchamber: the work panicked",
        )),
    }
}

/// A throttled progress call into Python (at most every 100 ms).
struct Progress {
    callback: Option<PyObject>,
    last: Mutex<Option<Instant>>,
}

impl Progress {
    fn new(callback: Option<PyObject>) -> Self {
        Progress {
            callback,
            last: Mutex::new(None),
        }
    }

    fn call(&self, args: (u64, f64), force: bool) {
        let Some(cb) = &self.callback else { return };
        if let Ok(mut last) = self.last.lock() {
            if !force && last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
                return;
            }
            *last = Some(Instant::now());
        }
        Python::with_gil(|py| {
            // A broken progress bar must not stop training.
            let _ = cb.call1(py, args);
        });
    }
}

/// The resolved spec's run id and JSON, for an experiment given as TOML `text` (`label` names it
/// in errors) with `--set`-style overrides.
#[pyfunction]
fn resolve(text: &str, label: &str, overrides: Vec<String>) -> PyResult<(String, String)> {
    let spec = cloudchamber::spec::parse(text, Path::new(label), &overrides)
        .map_err(|e| py_err(e.into()))?;
    Ok((spec.run_id(), spec.to_json()))
}

/// Trains the experiment (or finds it finished in the store): returns its id and whether it
/// was trained now. `progress(step, loss)` is called as it trains.
#[pyfunction]
#[pyo3(signature = (text, label, base_dir, overrides, store, name, force, progress=None))]
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    text: &str,
    label: &str,
    base_dir: &str,
    overrides: Vec<String>,
    store: &str,
    name: &str,
    force: bool,
    progress: Option<PyObject>,
) -> PyResult<(String, bool)> {
    let spec = cloudchamber::spec::parse(text, Path::new(label), &overrides)
        .map_err(|e| py_err(e.into()))?;
    // A label: control characters escaped before it is stored or shown, as the CLI does.
    let name = cloudchamber::names::shown(name);
    let progress = Progress::new(progress);
    let result = interruptible(py, || -> Result<(String, bool), Error> {
        match runner::prepare(Path::new(store), &spec, Path::new(base_dir), &name, force)? {
            Start::Done(rec) => Ok((rec.id, false)),
            Start::Ready(mut p) => {
                runner::record_overrides(&p, &overrides)?;
                let id = p.run.id.clone();
                runner::execute(&mut p, &spec, &mut |step, loss| {
                    progress.call((step, loss), false)
                })?;
                Ok((id, true))
            }
        }
    })?;
    result.map_err(py_err)
}

/// One run's end: index, id, how it ended, the line the CLI prints.
type RunEnd = (usize, String, String, String);

/// Runs a sweep file on `workers` threads (each run one thread), recording it in the store;
/// relative data paths resolve against `base_dir` when given (a sweep defined in Python),
/// else against the file's folder. Returns, per run: index, id, how it ended (`completed`,
/// `diverged`, `skipped`, `failed`, `interrupted`, `not started`) and the line the CLI prints
/// for it; and the runs a sweep of that name listed before (it is redefined when they differ).
#[pyfunction]
#[pyo3(signature = (path, overrides, store, workers, base_dir=None, progress=None))]
fn sweep(
    py: Python<'_>,
    path: &str,
    overrides: Vec<String>,
    store: &str,
    workers: usize,
    base_dir: Option<String>,
    progress: Option<PyObject>,
) -> PyResult<(Vec<RunEnd>, Vec<String>)> {
    if workers == 0 {
        return Err(SpecError::new_err(
            "workers: must be at least 1\nhint: leave it out for one worker per core",
        ));
    }
    let mut sw =
        cloudchamber::sweep::load(Path::new(path), &overrides).map_err(|e| py_err(e.into()))?;
    if let Some(dir) = base_dir {
        sw.base_dir = dir.into();
    }
    let store_path = Path::new(store);
    let mut st = Store::open(store_path).map_err(|e| py_err(e.into()))?;
    let before = cloudchamber::sweep::record(&mut st, &sw).map_err(py_err)?;
    drop(st);
    let done = std::sync::atomic::AtomicU64::new(0);
    let progress = Progress::new(progress);
    let ends = interruptible(py, || {
        let report = |_k: usize, end: &End| {
            if !matches!(end, End::Busy { .. }) {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                progress.call((n, f64::NAN), true);
            }
        };
        exec::Local {
            workers,
            lockstep: true,
        }
        .execute(store_path, &sw, &report)
    })?;
    let ends = ends
        .iter()
        .enumerate()
        .map(|(k, end)| {
            let how = match end {
                End::Skipped(_) => "skipped".to_string(),
                End::Trained { status, .. } => status.as_str().to_string(),
                End::Failed(_) => "failed".into(),
                End::Busy { .. } | End::NotRun => "not started".into(),
            };
            let line = match end {
                End::Failed(m) => format!("failed: {m}"),
                End::Trained { steps, seconds, .. } => {
                    format!("{how} in {steps} steps, {seconds:.2} s")
                }
                _ => how.clone(),
            };
            (k, sw.runs[k].id.clone(), how, line)
        })
        .collect();
    Ok((ends, before))
}

/// The sweep a file declares, expanded without running anything: its name and, per run, the
/// id and the swept values as text.
#[pyfunction]
fn expand_sweep(path: &str, overrides: Vec<String>) -> PyResult<(String, Vec<(String, String)>)> {
    let sw =
        cloudchamber::sweep::load(Path::new(path), &overrides).map_err(|e| py_err(e.into()))?;
    let runs = sw.runs.iter().map(|r| (r.id.clone(), r.label())).collect();
    Ok((sw.name, runs))
}

/// The name of the sweep that TOML `text` declares (validating every run first), without a
/// file: `label` names the text in errors.
#[pyfunction]
fn sweep_name(text: &str, label: &str, overrides: Vec<String>) -> PyResult<String> {
    let sw = cloudchamber::sweep::expand(text, Path::new(label), &overrides)
        .map_err(|e| py_err(e.into()))?;
    Ok(sw.name)
}

/// A name as one safe file-name component (what the CLI makes of names for folders).
#[pyfunction]
fn component(name: &str) -> String {
    cloudchamber::names::component(name)
}

fn open(store: &str) -> PyResult<Store> {
    if !Path::new(store).exists() {
        return Err(StoreError::new_err(format!(
            "{store}: no store here\nhint: run an experiment first, or pass the path of a store"
        )));
    }
    Store::open_read_only(Path::new(store)).map_err(|e| py_err(e.into()))
}

/// Every run of the store as JSON records: its row, its resolved spec (an object) and the
/// sweeps that list it.
#[pyfunction]
fn runs_json(store: &str) -> PyResult<String> {
    let st = open(store)?;
    let mut sweeps: std::collections::HashMap<String, Vec<String>> = Default::default();
    for name in st.sweeps().map_err(|e| py_err(e.into()))? {
        for (id, _) in st.sweep_runs(&name).map_err(|e| py_err(e.into()))? {
            sweeps.entry(id).or_default().push(name.clone());
        }
    }
    let runs = st.runs().map_err(|e| py_err(e.into()))?;
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            let spec: serde_json::Value = serde_json::from_str(&r.spec_json).unwrap_or_default();
            serde_json::json!({
                "id": r.id,
                "name": r.name,
                "status": r.display_status(),
                "steps": r.steps,
                "wall_seconds": r.wall_seconds,
                "diverged_step": r.diverged_step,
                "message": r.message,
                "created_at": r.created_at,
                "started_at": r.started_at,
                "ended_at": r.ended_at,
                "sweeps": sweeps.get(&r.id).cloned().unwrap_or_default(),
                "spec": spec,
            })
        })
        .collect();
    serde_json::to_string(&rows).map_err(|e| CloudchamberError::new_err(e.to_string()))
}

/// The tidy metric rows of some runs, or of a sweep (with its typed swept-key columns and the
/// status column), as Parquet bytes: Arrow reads them without a Python object per row.
#[pyfunction]
#[pyo3(signature = (store, run_ids=None, sweep=None))]
fn metrics_parquet(
    py: Python<'_>,
    store: &str,
    run_ids: Option<Vec<String>>,
    sweep: Option<String>,
) -> PyResult<Py<PyBytes>> {
    // Opened here so that it lives on the thread that reads it (a connection is not Sync).
    let st = open(store)?;
    let out = py
        .allow_threads(
            move || -> Result<Vec<u8>, cloudchamber::export::ExportError> {
                let mut out: Vec<u8> = Vec::new();
                match (&sweep, &run_ids) {
                    (Some(s), _) => export::export_sweep(&st, s, ExportFormat::Parquet, &mut out)?,
                    (None, Some(ids)) => export::export(&st, ids, ExportFormat::Parquet, &mut out)?,
                    (None, None) => {
                        let ids: Vec<String> = st.runs()?.into_iter().map(|r| r.id).collect();
                        export::export(&st, &ids, ExportFormat::Parquet, &mut out)?
                    }
                };
                Ok(out)
            },
        )
        .map_err(|e| py_err(e.into()))?;
    Ok(PyBytes::new(py, &out).unbind())
}

/// The folder of a run's artifacts (weights, data, checkpoint) beside the store.
#[pyfunction]
fn artifacts_dir(store: &str, run_id: &str) -> PyResult<String> {
    let st = open(store)?;
    Ok(st.artifacts_dir(run_id).display().to_string())
}

/// One tensor for numpy: name, dtype (numpy's name), shape and raw little-endian bytes.
type Tensor = (String, String, Vec<usize>, Py<PyBytes>);

/// The tensors of a safetensors file, in file order.
#[pyfunction]
fn read_tensors(py: Python<'_>, path: &str) -> PyResult<Vec<Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| py_err(Error::io(path)(e)))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        py_err(Error::Safetensors {
            path: path.into(),
            message: e.to_string(),
        })
    })?;
    let mut out = Vec::new();
    let mut names: Vec<(usize, String)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (v.data().as_ptr() as usize, n))
        .collect();
    names.sort();
    for (_, name) in names {
        let v = st
            .tensor(&name)
            .map_err(|e| CloudchamberError::new_err(e.to_string()))?;
        let dtype = match v.dtype() {
            safetensors::Dtype::F32 => "float32",
            safetensors::Dtype::F64 => "float64",
            safetensors::Dtype::I64 => "int64",
            safetensors::Dtype::I32 => "int32",
            other => {
                return Err(CloudchamberError::new_err(format!(
                    "{path}: tensor {name} has dtype {other:?}, which this reader does not convert"
                )))
            }
        };
        out.push((
            name.clone(),
            dtype.to_string(),
            v.shape().to_vec(),
            PyBytes::new(py, v.data()).unbind(),
        ));
    }
    Ok(out)
}

/// Writes the HTML report of a run or a sweep into `dir`; returns the index page's path.
#[pyfunction]
fn report(py: Python<'_>, store: &str, target: &str, dir: &str, metric: &str) -> PyResult<String> {
    let st = open(store)?;
    let t = cloudchamber::report::target(&st, target).map_err(py_err)?;
    let (index, _) = py
        .allow_threads(move || cloudchamber::report::write_report(&st, &t, Path::new(dir), metric))
        .map_err(py_err)?;
    Ok(index.display().to_string())
}

fn phi(activation: &str, a: f64, b: f64, c: f64) -> PyResult<meanfield::Phi> {
    let act = Activation::ALL
        .into_iter()
        .find(|x| x.name() == activation)
        .ok_or_else(|| {
            SpecError::new_err(format!(
                "unknown activation `{activation}`\nhint: one of: {}",
                Activation::ALL.map(|a| a.name()).join(", ")
            ))
        })?;
    Ok(meanfield::Phi { act, a, b, c })
}

/// Mean-field analysis at (σ_w², σ_b²) of φ = a·f(x − b) + c, as `cloudchamber theory`
/// prints it: q*, c*, χ₁, χ_c, the length map's slope, depth scales and the phase (JSON).
#[pyfunction]
fn mean_field(
    activation: &str,
    a: f64,
    b: f64,
    c: f64,
    sigma_w2: f64,
    sigma_b2: f64,
) -> PyResult<String> {
    let m =
        meanfield::MeanField::new(phi(activation, a, b, c)?, sigma_w2, sigma_b2).map_err(py_err)?;
    let an = m.analyze();
    // JSON has no infinity: a depth scale at criticality travels as the text "inf", which
    // Python's float() reads back.
    let num = |v: f64| {
        if v.is_finite() {
            serde_json::json!(v)
        } else {
            serde_json::json!(v.to_string())
        }
    };
    Ok(serde_json::json!({
        "q_star": num(an.q_star),
        "c_star": num(an.c_star),
        "chi_1": num(an.chi1),
        "chi_c": num(an.chi_c),
        "length_map_slope": num(an.q_slope),
        "xi_q": num(an.xi_q),
        "xi_c": num(an.xi_c),
        "xi_grad": num(an.xi_grad),
        "phase": an.phase.name(),
    })
    .to_string())
}

/// The critical σ_w² at σ_b² (χ₁ = 1), or None when there is none in [1e-3, 1e3].
#[pyfunction]
fn critical_sigma_w2(
    activation: &str,
    a: f64,
    b: f64,
    c: f64,
    sigma_b2: f64,
) -> PyResult<Option<f64>> {
    meanfield::critical_sigma_w2(phi(activation, a, b, c)?, sigma_b2).map_err(py_err)
}

/// μ, std, λ and γ of φ(z), z ~ N(0, 1).
#[pyfunction]
fn calibrate(activation: &str, a: f64, b: f64, c: f64) -> PyResult<(f64, f64, f64, f64)> {
    let r = cal::self_normalize(phi(activation, a, b, c)?).map_err(py_err)?;
    Ok((r.mean, r.std, r.lambda, r.gamma))
}

/// A scaling-law fit with bootstrap uncertainty (`cloudchamber fit`'s), as JSON.
#[pyfunction]
#[pyo3(signature = (form, x, y, d, bootstrap, seed, fixed, at_compute=None))]
#[allow(clippy::too_many_arguments)]
fn fit_law(
    py: Python<'_>,
    form: &str,
    x: Vec<f64>,
    y: Vec<f64>,
    d: Vec<f64>,
    bootstrap: usize,
    seed: u64,
    fixed: Vec<(String, f64)>,
    at_compute: Option<f64>,
) -> PyResult<String> {
    let form = Form::parse(form).map_err(py_err)?;
    let opts = fit::Options {
        fixed,
        bootstrap,
        seed,
        at_compute,
        ..fit::Options::default()
    };
    let data = fit::Data { x, d, y };
    let r = py
        .allow_threads(|| fit::fit(form, &data, &opts))
        .map_err(py_err)?;
    serde_json::to_string(&r).map_err(|e| CloudchamberError::new_err(e.to_string()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CloudchamberError", py.get_type::<CloudchamberError>())?;
    m.add("SpecError", py.get_type::<SpecError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add_function(wrap_pyfunction!(resolve, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_function(wrap_pyfunction!(expand_sweep, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_name, m)?)?;
    m.add_function(wrap_pyfunction!(component, m)?)?;
    m.add_function(wrap_pyfunction!(runs_json, m)?)?;
    m.add_function(wrap_pyfunction!(metrics_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(artifacts_dir, m)?)?;
    m.add_function(wrap_pyfunction!(read_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(report, m)?)?;
    m.add_function(wrap_pyfunction!(mean_field, m)?)?;
    m.add_function(wrap_pyfunction!(critical_sigma_w2, m)?)?;
    m.add_function(wrap_pyfunction!(calibrate, m)?)?;
    m.add_function(wrap_pyfunction!(fit_law, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
