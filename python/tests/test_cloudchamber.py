"""The Python module against the CLI it must agree with: same run ids, bit-identical metrics,
the same errors, typed DataFrames, and the example notebook executed end to end.

Run by `bash scripts/test` (after `cargo test`, which builds the CLI these tests compare with)."""

from __future__ import annotations

import json
import os
import math
import pathlib
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import cloudchamber as cc

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = os.environ.get("CLOUDCHAMBER_BIN", str(ROOT / "target" / "release" / "cloudchamber"))

SMALL = {
    "seed": 3,
    "task": {"teacher_student": {"input_dim": 8, "output_dim": 1, "n_train": 256, "n_test": 128}},
    "model": {"width": 16, "depth": 2, "activation": "tanh"},
    "train": {"steps": 60, "batch_size": 32, "eval_every": 20},
    "observe": {"log_every": 5},
    "output": {"save_weights": True, "save_data": True},
}

SMALL_TOML = """seed = 3
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
[output]
save_weights = true
save_data = true
"""


def cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True)


def test_python_and_cli_give_the_same_run_bit_for_bit(tmp_path: pathlib.Path) -> None:
    (tmp_path / "s.toml").write_text(SMALL_TOML)
    # The CLI with an override, and Python with the same override from a dict: one id.
    o = cli("--store", "cli.db", "run", "s.toml", "-q", "--set", "optim.lr=0.01", cwd=tmp_path)
    assert o.returncode == 0, o.stderr
    r = cc.run(SMALL, tmp_path / "py.db", optim__lr=0.01, progress=False)
    ls = cli("--store", "cli.db", "ls", cwd=tmp_path).stdout
    assert r.id in ls, ls
    # Bit-identical rows: exact equality of every value, NaN included.
    a = cc.Store(tmp_path / "cli.db").metrics().drop(columns=["status"])
    b = cc.Store(tmp_path / "py.db").metrics().drop(columns=["status"])
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert np.array_equal(a["value"].to_numpy().view(np.uint64), b["value"].to_numpy().view(np.uint64))
    # The same spec as a file, as TOML text and as a dict: one id (found finished, not rerun).
    for spec in (tmp_path / "s.toml", SMALL_TOML, SMALL):
        again = cc.run(spec, tmp_path / "py.db", overrides={"optim.lr": 0.01}, progress=False)
        assert again.id == r.id
    assert len(cc.Store(tmp_path / "py.db").runs()) == 1


def test_store_runs_and_metrics_are_typed(tmp_path: pathlib.Path) -> None:
    r = cc.run(SMALL, tmp_path / "s.db", progress=False)
    runs = cc.Store(tmp_path / "s.db").runs()
    assert runs.loc[0, "id"] == r.id and runs.loc[0, "status"] == "completed"
    assert str(runs["model.width"].dtype) == "Int64" and runs.loc[0, "model.width"] == 16
    assert runs["optim.lr"].dtype.kind == "f"
    m = r.metrics(names=["test_loss"])
    assert list(m.columns) == ["run_id", "status", "step", "layer", "name", "value"]
    assert list(m["step"]) == [0, 20, 40, 60]
    assert m["value"].dtype == np.float64 and m["step"].dtype == np.int64
    per_layer = r.metrics(names=["act_std"], layers=[1])
    assert set(per_layer["layer"]) == {1}
    # Weights under PyTorch names, shaped as nn.Linear's; data as saved.
    w = r.weights("final")
    assert w["layers.0.weight"].shape == (16, 8) and w["layers.0.weight"].dtype == np.float32
    assert not np.array_equal(w["layers.0.weight"], r.weights("init")["layers.0.weight"])
    d = r.data()
    assert d["train.x"].shape == (256, 8) and d["test.y"].shape == (128, 1)
    index = r.report(tmp_path / "rep")
    assert index.exists() and "<html" in index.read_text()


def test_bad_input_raises_the_cli_error_and_touches_nothing(tmp_path: pathlib.Path) -> None:
    bad = json.loads(json.dumps(SMALL))
    bad["model"]["widht"] = 3
    store = tmp_path / "s.db"
    with pytest.raises(cc.SpecError) as e:
        cc.run(bad, store, progress=False)
    assert "unknown key `model.widht` (did you mean `width`?)" in e.value.message
    assert e.value.exit_code == 2 and e.value.hints[0].startswith("valid keys here: width")
    assert not store.exists()
    # The CLI says the same about the same file.
    (tmp_path / "bad.toml").write_text(SMALL_TOML.replace("width = 16", "widht = 3"))
    o = cli("run", "bad.toml", cwd=tmp_path)
    assert o.returncode == 2 and "unknown key `model.widht` (did you mean `width`?)" in o.stderr
    with pytest.raises(cc.DataError) as e:
        cc.run({**SMALL, "task": {"csv": {"path": "missing.csv", "task": "regression", "target": "y"}}}, store, progress=False)
    assert "file not found" in e.value.message
    with pytest.raises(cc.SpecError):
        cc.run(SMALL, store, optim__lr="fast", progress=False)
    assert not store.exists()
    with pytest.raises(cc.StoreError):
        cc.Store(tmp_path / "none.db").runs()


def test_a_100_run_sweep_reads_typed_and_fast(tmp_path: pathlib.Path, capsys) -> None:
    spec = json.loads(json.dumps(SMALL))
    spec["train"] = {"steps": 40, "batch_size": 32, "eval_every": 20}
    spec["output"] = {}
    spec["sweep"] = {
        "name": "grid",
        "seeds": 5,
        "axes": {"optim.lr": {"logspace": [1e-3, 1.0, 4]}, "model.width": [4, 8, 16, 32, 64]},
    }
    store = tmp_path / "s.db"
    sw = cc.sweep(spec, store, workers=2, progress=False)
    assert len(sw.ends) == 100 and set(sw.ends["ended"]) <= {"completed", "diverged"}
    t0 = time.perf_counter()
    df = sw.metrics()
    t_ours = time.perf_counter() - t0
    assert df["optim.lr"].dtype == np.float64 and df["model.width"].dtype == np.int64
    assert df["seed"].dtype == np.int64 and set(df["status"]) <= {"completed", "diverged"}
    assert df["run_id"].nunique() == 100
    # The same rows through a Parquet export and pandas.
    t0 = time.perf_counter()
    o = cli("--store", str(store), "export", "--sweep", "grid", "--format", "parquet", "-o", "g.parquet", cwd=tmp_path)
    t_export = time.perf_counter() - t0
    assert o.returncode == 0, o.stderr
    t0 = time.perf_counter()
    ref = pd.read_parquet(tmp_path / "g.parquet")
    t_pandas = time.perf_counter() - t0
    assert len(ref) == len(df)
    pd.testing.assert_series_equal(ref["value"], df["value"], check_exact=True)
    with capsys.disabled():
        print(
            f"\nStore.metrics on a 100-run sweep: {len(df)} rows in {t_ours * 1e3:.1f} ms; "
            f"pd.read_parquet of the export: {t_pandas * 1e3:.1f} ms, after `cloudchamber export` "
            f"wrote it in {t_export * 1e3:.1f} ms (a process start included)"
        )


def test_ctrl_c_checkpoints_and_the_next_call_resumes_bit_identically(tmp_path: pathlib.Path) -> None:
    import signal

    spec = json.loads(json.dumps(SMALL))
    # Long enough (about 4 s here) that the interrupt lands mid-run, and logged rarely enough
    # (a transaction every ~0.1 s) that the polling reader below is not starved by the writer:
    # twice in CI the interrupt came only after the run had finished.
    spec["train"] = {"steps": 200000, "batch_size": 32, "eval_every": 5000, "checkpoint_every": 20000}
    spec["model"]["width"] = 48
    spec["observe"] = {"log_every": 5000}
    spec["output"] = {}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    ref = cc.run(spec, tmp_path / "ref.db", progress=False)
    script = (
        "import json, sys, cloudchamber as cc\n"
        "try:\n"
        "    cc.run(json.load(open('spec.json')), 'cut.db', progress=False)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt'); sys.exit(7)\n"
    )
    # The child gets SIGINT's default disposition whatever this process inherited: a shell
    # that starts a command in the background ignores SIGINT for it, and a Python started with
    # SIGINT ignored installs no KeyboardInterrupt handler (the run would then just finish).
    p = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while True:
        time.sleep(0.05)
        try:
            m = cc.Store(tmp_path / "cut.db").metrics(names=["train_loss"])
            if len(m) > 3:
                break
        except Exception:
            pass
        assert time.time() < deadline, "the run never started"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 7 and "KeyboardInterrupt" in out
    runs = cc.Store(tmp_path / "cut.db").runs()
    assert runs.loc[0, "status"] == "interrupted" and 0 < runs.loc[0, "steps"] < 200000
    # In this process, after an interrupt elsewhere, a call starts clean and resumes.
    r = cc.run(spec, tmp_path / "cut.db", progress=False)
    assert r.id == ref.id and r.status == "completed"
    a = cc.Store(tmp_path / "ref.db").metrics()
    b = cc.Store(tmp_path / "cut.db").metrics()
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_theory_and_fit_return_plain_numbers() -> None:
    he = cc.theory.fixed_point("relu", 2.0, 0.0)
    assert he["phase"] == "critical" and he["xi_grad"] == float("inf")
    tanh = cc.theory.fixed_point("tanh", 2.5, 0.05)
    assert tanh["phase"] == "chaotic" and 0 < tanh["q_star"] < 10
    line = cc.theory.critical_line("tanh", [0.0, 0.1])
    assert abs(line["sigma_w2"][0] - 1.0) < 1e-9
    cal = cc.theory.calibrate("relu")
    # relu(z): mean 1/sqrt(2 pi), variance 1/2 - 1/(2 pi).
    assert abs(cal["mu"] - 1 / np.sqrt(2 * np.pi)) < 1e-12
    assert abs(cal["std"] ** 2 - (0.5 - 1 / (2 * np.pi))) < 1e-12
    x = np.logspace(3, 9, 24)
    y = 1.7 + 400.0 * x ** -0.34
    f = cc.fit(x, y, form="power", bootstrap=50)
    assert abs(f["alpha"] - 0.34) < 1e-6 and f.params["identified"].all()


def test_the_example_notebook_runs_end_to_end(tmp_path: pathlib.Path) -> None:
    import nbformat  # installed by scripts/test, with nbclient, ipykernel and matplotlib
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "examples" / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "alpha" in outputs and "weights" in outputs, outputs
    assert (tmp_path / "lr-width.png").exists()


def test_python_keeps_the_clis_protections(tmp_path: pathlib.Path) -> None:
    store = tmp_path / "s.db"
    # Names are labels: control characters escaped before they are stored.
    r = cc.run(SMALL, store, name="x\x1b[2J", progress=False)
    assert r.name == "x\\u{1b}[2J"
    # A sweep from Python needs a name, is validated before anything is written, and
    # workers=0 is refused, as on the CLI.
    spec = json.loads(json.dumps(SMALL))
    spec["train"]["steps"] = 20
    spec["output"] = {}
    spec["sweep"] = {"seeds": 2}
    with pytest.raises(cc.SpecError, match="sweep.name"):
        cc.sweep(spec, store, progress=False)
    spec["sweep"]["name"] = "p"
    with pytest.raises(cc.SpecError, match="at least 1"):
        cc.sweep(spec, store, workers=0, progress=False)
    spec["model"]["widht"] = 3
    with pytest.raises(cc.SpecError, match="widht"):
        cc.sweep(spec, store, progress=False)
    assert not (tmp_path / "sweeps").exists()
    del spec["model"]["widht"]
    sw = cc.sweep(spec, store, progress=False)
    assert (tmp_path / "sweeps" / "p.toml").exists() and len(sw.runs()) == 2
    # Redefined by other overrides: a warning says so.
    with pytest.warns(UserWarning, match="sweep p was recorded before with 2 runs, 0 of them"):
        cc.sweep(spec, store, progress=False, train__steps=30)
    # A run that fails inside a sweep: the sweep raises, with the sweep attached.
    spec["sweep"]["name"] = "q"
    spec["task"] = {"csv": {"path": "missing.csv", "task": "regression", "target": "y"}}
    with pytest.raises(cc.CloudchamberError, match="2 of 2 runs failed") as e:
        cc.sweep(spec, store, progress=False)
    assert list(e.value.sweep.ends["ended"]) == ["failed", "failed"]


def test_a_denoiser_run_reads_from_python(tmp_path: pathlib.Path) -> None:
    """A PFGM++ denoiser at D = ∞ and D = 8 on rings: sample metrics as rows, the samples as
    arrays, and D a numeric column with ∞ for diffusion."""
    spec = {
        "task": {"rings": {"n_train": 500, "n_test": 300}},
        "model": {"width": 32, "depth": 2, "activation": "silu", "denoiser": {"aug_dim": "inf", "eval": {"samples": 200, "sigma_levels": 3}}},
        "optim": {"optimizer": "adam", "lr": 2e-3},
        "train": {"steps": 200, "batch_size": 64, "eval_every": 100},
    }
    store = tmp_path / "g.db"
    r = cc.run(spec, store, progress=False)
    cc.run(spec, store, model__denoiser__aug_dim=8, progress=False)
    m = r.metrics(names=["sample_mmd", "prior_mmd"])
    assert list(m[m.name == "sample_mmd"]["step"]) == [0, 100, 200]
    assert m[m.name == "prior_mmd"]["value"].iloc[0] > m[m.name == "sample_mmd"]["value"].iloc[-1]
    s = r.samples()
    assert s["samples"].shape == (200, 2) and s["reference"].shape == (200, 2)
    assert s["samples_trajectory"].shape == (19, 16, 2) and s["sigmas"][-1] == 0.0
    d = cc.Store(store).runs()["model.denoiser.aug_dim"]
    assert d.dtype.kind == "f" and sorted(d.tolist()) == [8.0, math.inf]
