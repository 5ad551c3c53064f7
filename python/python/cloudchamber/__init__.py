"""cloudchamber from Python: define an experiment as a dict (or a TOML file or string), run it,
and get typed DataFrames and numpy arrays back.

The store and the CLI stay the single source of truth: a run started here goes through the same
Rust library as ``cloudchamber run`` and is the same run, with the same id and bit-identical
metrics. Errors are the CLI's, as exceptions (``SpecError``, ``DataError``, ``StoreError``) with
``message``, ``hints`` and ``exit_code``.

    import cloudchamber as cc
    r = cc.run("examples/quickstart.toml", overrides={"train.steps": 500})
    df = r.metrics(names=["test_loss"])
    w = r.weights("final")            # {PyTorch name: numpy array}
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import _native
from ._native import CloudchamberError, DataError, SpecError, StoreError
from . import theory
from .theory import calibrate

__all__ = [
    "run",
    "sweep",
    "Store",
    "Run",
    "Sweep",
    "fit",
    "FitResult",
    "theory",
    "calibrate",
    "CloudchamberError",
    "SpecError",
    "DataError",
    "StoreError",
]

__version__ = _native.__version__

#: The store the CLI uses by default, in the current folder.
DEFAULT_STORE = "cloudchamber.db"

Spec = Union[str, os.PathLike, Mapping[str, Any]]

# ----------------------------------------------------------------------------------------------
# Specs as TOML: a dict becomes the text the CLI would read, so the run id is the same.
# ----------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _toml_value(v: Any, where: str) -> str:
    """A Python value as a TOML inline value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON's escapes are TOML basic-string escapes.
        return json.dumps(v)
    if isinstance(v, Mapping):
        inner = ", ".join(f"{_key(str(k))} = {_toml_value(x, f'{where}.{k}')}" for k, x in v.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    raise SpecError(
        f"{where}: a {type(v).__name__} has no TOML form\n"
        "hint: use numbers, strings, booleans, lists and dicts"
    )


def _toml_doc(d: Mapping[str, Any]) -> str:
    """A nested dict as a TOML document: plain keys first, then one [section] per sub-dict."""
    lines: list[str] = []

    def section(prefix: str, table: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for k, v in scalars:
            lines.append(f"{_key(str(k))} = {_toml_value(v, (prefix + '.' if prefix else '') + str(k))}")
        for k, v in tables:
            section(f"{prefix}.{_key(str(k))}" if prefix else _key(str(k)), v)

    section("", d)
    return "\n".join(lines) + "\n"


def _source(spec: Spec) -> tuple[str, str, pathlib.Path, str]:
    """(TOML text, label for errors, folder relative data paths resolve against, default name)."""
    if isinstance(spec, Mapping):
        return _toml_doc(spec), "<dict>", pathlib.Path.cwd(), "python"
    if isinstance(spec, os.PathLike) or (
        isinstance(spec, str)
        and "\n" not in spec
        and (spec.strip().endswith(".toml") or os.path.isfile(spec))
    ):
        path = pathlib.Path(spec)
        try:
            text = path.read_text()
        except OSError as e:
            raise SpecError(
                f"{path}: cannot read the experiment file: {e.strerror}\n"
                "hint: check the path; experiment files live in examples/"
            ) from None
        return text, str(path), path.parent, path.stem
    if isinstance(spec, str):
        return spec, "<string>", pathlib.Path.cwd(), "python"
    raise SpecError(
        f"spec: a {type(spec).__name__} is not an experiment\n"
        "hint: give a path to a .toml file, TOML text, or a dict"
    )


def _overrides(overrides: Optional[Mapping[str, Any]], kwargs: Mapping[str, Any]) -> list[str]:
    """`--set`-style overrides from a dict of dotted keys and from keyword arguments, where
    `optim__lr=0.01` stands for `optim.lr`."""
    items = list((overrides or {}).items()) + [(k.replace("__", "."), v) for k, v in kwargs.items()]
    return [f"{k}={_toml_value(v, k)}" for k, v in items]


def _bar(total: Optional[int], desc: str, show: bool):
    """A tqdm bar when tqdm is installed and progress is wanted, else None."""
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False)


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


def run(
    spec: Spec,
    store: Union[str, os.PathLike] = DEFAULT_STORE,
    *,
    name: Optional[str] = None,
    force: bool = False,
    progress: bool = True,
    overrides: Optional[Mapping[str, Any]] = None,
    **kw: Any,
) -> "Run":
    """Trains one experiment into `store` (or finds it there, finished) and returns the run.

    `spec` is a path to a TOML file, TOML text, or a dict with the file's sections. Overrides
    are `overrides={"optim.lr": 1e-2}` or keyword arguments with `__` for the dot
    (`optim__lr=1e-2`), as `--set` on the CLI. Blocks until the run ends; the GIL is released
    while it trains, and Ctrl-C (or a notebook's interrupt) checkpoints it and raises
    KeyboardInterrupt: running it again resumes.
    """
    text, label, base, default_name = _source(spec)
    sets = _overrides(overrides, kw)
    run_id, spec_json = _native.resolve(text, label, sets)
    steps = json.loads(spec_json).get("train", {}).get("steps")
    bar = _bar(steps, f"run {run_id[:8]}", progress)

    def on_step(step: int, loss: float) -> None:
        if bar is not None:
            bar.update(step - bar.n)
            if loss == loss:
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    try:
        rid, _trained = _native.run(
            text, label, str(base), sets, os.fspath(store), name or default_name, force, on_step
        )
    finally:
        if bar is not None:
            bar.close()
    return Run(store, rid)


def sweep(
    spec: Spec,
    store: Union[str, os.PathLike] = DEFAULT_STORE,
    *,
    workers: Optional[int] = None,
    progress: bool = True,
    overrides: Optional[Mapping[str, Any]] = None,
    **kw: Any,
) -> "Sweep":
    """Runs every run of a sweep (an experiment with a [sweep] section) into `store`, `workers`
    at a time (default: the cores), skipping finished runs and resuming interrupted ones, as
    `cloudchamber sweep` does. A dict or TOML text is first written to `sweeps/<name>.toml`
    beside the store, so the store records the file that defined it."""
    if workers is not None and workers < 1:
        raise SpecError("workers: must be at least 1\nhint: leave it out for one worker per core")
    text, label, base, _ = _source(spec)
    sets = _overrides(overrides, kw)
    base_dir = None
    if label in ("<dict>", "<string>"):
        # Validated (every run expanded) before anything is written.
        declared = _native.sweep_name(text, label, sets)
        if declared in ("<dict>", "<string>"):
            raise SpecError(
                f"{label}: `sweep.name` is missing\n"
                "hint: a sweep defined in Python needs a name, e.g. {'sweep': {'name': 'lr-scan', ...}}"
            )
        folder = pathlib.Path(os.fspath(store)).resolve().parent / "sweeps"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_native.component(declared)}.toml"
        path.write_text(text)
        # Relative data paths resolve as for cc.run(dict): against the current folder.
        base_dir = str(base)
    else:
        path = pathlib.Path(label)
    name, runs = _native.expand_sweep(str(path), sets)
    bar = _bar(len(runs), f"sweep {name}", progress)

    def on_run(done: int, _loss: float) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        ends, before = _native.sweep(
            str(path), sets, os.fspath(store), workers or os.cpu_count() or 1, base_dir, on_run
        )
    finally:
        if bar is not None:
            bar.close()
    now = {e[1] for e in ends}
    if before and set(before) != now:
        import warnings

        warnings.warn(
            f"sweep {name} was recorded before with {len(before)} runs, "
            f"{len(now & set(before))} of them among these {len(now)}; it now lists these. "
            "The earlier runs stay in the store; give the sweep another name to keep both lists",
            stacklevel=2,
        )
    result = Sweep(store, name, ends)
    failed = result.ends[result.ends["ended"] == "failed"]
    if len(failed):
        err = CloudchamberError(
            f"sweep {name}: {len(failed)} of {len(ends)} runs failed\n"
            f"hint: {failed['line'].iloc[0]}"
        )
        err.sweep = result
        raise err
    return result


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _flatten(prefix: str, v: Any, out: dict) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            _flatten(f"{prefix}.{k}" if prefix else k, x, out)
    elif v == "inf":
        # PFGM++'s D = ∞ (`aug_dim = "inf"`) as the number it is, so the column stays numeric.
        out[prefix] = float("inf")
    else:
        out[prefix] = v


def _tensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    return {
        name: np.frombuffer(data, dtype=dtype).reshape(shape).copy()
        for name, dtype, shape, data in _native.read_tensors(str(path))
    }


class Store:
    """A store (the SQLite file the CLI writes), read-only from here."""

    def __init__(self, path: Union[str, os.PathLike] = DEFAULT_STORE):
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    def _records(self) -> list[dict]:
        return json.loads(_native.runs_json(self.path))

    def runs(self) -> pd.DataFrame:
        """One row per run: id, name, status, sweep (the first sweep listing it), steps, wall
        time, divergence step and message, times, and every key of its resolved spec as its own
        typed column (`model.width`, `optim.lr`, …)."""
        rows = []
        for r in self._records():
            row = {k: v for k, v in r.items() if k not in ("spec", "sweeps")}
            row["sweep"] = r["sweeps"][0] if r["sweeps"] else None
            row["sweeps"] = list(r["sweeps"])
            _flatten("", r["spec"], row)
            rows.append(row)
        df = pd.DataFrame(rows)
        return df.convert_dtypes(dtype_backend="numpy_nullable") if len(df) else df

    def run(self, query: str) -> "Run":
        """A run by id, unique id prefix, or a name only one run has."""
        recs = self._records()
        hits = [r for r in recs if r["id"] == query] or [
            r for r in recs if r["id"].startswith(query) or r["name"] == query
        ]
        if len(hits) != 1:
            what = "no run matches" if not hits else f"{len(hits)} runs match"
            raise StoreError(
                f"{what} '{query}' in {self.path}\n"
                "hint: give the run's id, or a prefix of it that only one run has"
            )
        return Run(self.path, hits[0]["id"])

    def metrics(
        self,
        runs: Union[None, str, "Run", Sequence[Union[str, "Run"]]] = None,
        *,
        sweep: Optional[str] = None,
        names: Optional[Iterable[str]] = None,
        layers: Optional[Iterable[int]] = None,
    ) -> pd.DataFrame:
        """Tidy metric rows `run_id, [swept keys…], status, step, layer, name, value` of some
        runs, of a sweep, or of the whole store. Swept keys are typed as their values are and
        `status` says how each run ended; read through Arrow, with no Python object per row."""
        if isinstance(runs, (str, Run)):
            runs = [runs]
        ids = None if runs is None else [r.id if isinstance(r, Run) else r for r in runs]
        table = pq.read_table(pa.BufferReader(_native.metrics_parquet(self.path, ids, sweep)))
        if names is not None:
            table = table.filter(pc.is_in(table["name"], value_set=pa.array(list(names), pa.string())))
        if layers is not None:
            table = table.filter(pc.is_in(table["layer"], value_set=pa.array(list(layers), pa.int32())))
        df = table.to_pandas()
        df["layer"] = df["layer"].astype("Int32")
        if sweep is None:
            status = {r["id"]: r["status"] for r in self._records()}
            df.insert(1, "status", df["run_id"].map(status))
        return df


class Run:
    """One run of a store."""

    def __init__(self, store: Union[str, os.PathLike], run_id: str):
        self.store = os.fspath(store)
        self.id = run_id

    def __repr__(self) -> str:
        r = self.record
        return f"Run({self.id!r}, name={r['name']!r}, status={r['status']!r})"

    @property
    def record(self) -> dict:
        for r in json.loads(_native.runs_json(self.store)):
            if r["id"] == self.id:
                return r
        raise StoreError(f"no run {self.id} in {self.store}")

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def spec(self) -> dict:
        """The resolved spec (every default filled in), as stored."""
        return self.record["spec"]

    def metrics(self, names=None, layers=None) -> pd.DataFrame:
        return Store(self.store).metrics([self.id], names=names, layers=layers)

    @property
    def artifacts(self) -> pathlib.Path:
        return pathlib.Path(_native.artifacts_dir(self.store, self.id))

    def weights(self, which: str = "final") -> dict[str, np.ndarray]:
        """The saved parameters (`output.save_weights`), `init` or `final`, as numpy arrays
        under their PyTorch names."""
        if which not in ("init", "final"):
            raise ValueError(f"which: {which!r} is neither 'init' nor 'final'")
        path = self.artifacts / f"weights_{which}.safetensors"
        if not path.exists():
            raise StoreError(
                f"{path}: not saved\nhint: set output.save_weights = true in the experiment"
            )
        return _tensors(path)

    def data(self) -> dict[str, np.ndarray]:
        """The training and test data (`output.save_data`) as numpy arrays."""
        path = self.artifacts / "data.safetensors"
        if not path.exists():
            raise StoreError(f"{path}: not saved\nhint: set output.save_data = true in the experiment")
        return _tensors(path)

    def samples(self) -> dict[str, np.ndarray]:
        """A denoiser run's points (`samples.safetensors`), float64: `samples` [M, N] (the last
        evaluation's), `samples_trajectory` [levels, T, N], `sigmas` [levels], `reference`
        (held-out points), `prior` (the draws sampling starts from) and, for a Gaussian
        mixture, `ideal` and `ideal_trajectory` (the ideal denoiser's)."""
        path = self.artifacts / "samples.safetensors"
        if not path.exists():
            raise StoreError(f"{path}: not written\nhint: only [model.denoiser] runs generate samples")
        return _tensors(path)

    def report(self, directory: Union[str, os.PathLike, None] = None, metric: str = "test_loss") -> pathlib.Path:
        """Writes the run's HTML report; returns its index page."""
        d = directory or f"report-{_native.component(self.name)}"
        return pathlib.Path(_native.report(self.store, self.id, os.fspath(d), metric))


class Sweep:
    """A sweep run into a store: how each run ended, and its rows."""

    def __init__(self, store: Union[str, os.PathLike], name: str, ends=()):
        self.store = os.fspath(store)
        self.name = name
        self.ends = pd.DataFrame(list(ends), columns=["index", "run_id", "ended", "line"])

    def __repr__(self) -> str:
        counts = self.ends["ended"].value_counts().to_dict() if len(self.ends) else {}
        return f"Sweep({self.name!r}, {counts})"

    def metrics(self, names=None, layers=None) -> pd.DataFrame:
        return Store(self.store).metrics(sweep=self.name, names=names, layers=layers)

    def runs(self) -> pd.DataFrame:
        df = Store(self.store).runs()
        if not len(df):
            return df
        return df[df["sweeps"].map(lambda s: self.name in s)].reset_index(drop=True)

    def report(self, directory=None, metric: str = "test_loss") -> pathlib.Path:
        d = directory or f"report-{_native.component(self.name)}"
        return pathlib.Path(_native.report(self.store, self.name, os.fspath(d), metric))


# ----------------------------------------------------------------------------------------------
# Fits
# ----------------------------------------------------------------------------------------------


class FitResult:
    """A scaling-law fit (`cloudchamber fit`): `params` and `derived` as DataFrames (name,
    value, stderr, ci_low, ci_high, identified, why), the Huber loss, and `raw` (the JSON)."""

    def __init__(self, raw: dict):
        self.raw = raw
        self.form = raw["form"]
        self.loss = raw["loss"]
        self.params = self._table(raw["params"])
        self.derived = self._table(raw.get("derived", []))

    @staticmethod
    def _table(items: list) -> pd.DataFrame:
        rows = []
        for e in items:
            ci = e.get("ci95") or [None, None]
            rows.append(
                {
                    "name": e["name"],
                    "value": e["value"],
                    "stderr": e.get("stderr"),
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                    "fixed": e["fixed"],
                    "identified": e["identified"],
                    "why": e.get("why"),
                }
            )
        return pd.DataFrame(rows, columns=["name", "value", "stderr", "ci_low", "ci_high", "fixed", "identified", "why"])

    def __getitem__(self, name: str) -> float:
        for t in (self.params, self.derived):
            hit = t[t["name"] == name]
            if len(hit):
                return float(hit["value"].iloc[0])
        raise KeyError(name)

    def __repr__(self) -> str:
        return f"FitResult({self.form}, loss={self.loss:.4g})\n{self.params.to_string(index=False)}"


def fit(
    x: Sequence[float],
    y: Sequence[float],
    *,
    d: Optional[Sequence[float]] = None,
    form: str = "power",
    bootstrap: int = 1000,
    seed: int = 0,
    fix: Optional[Mapping[str, float]] = None,
    at_compute: Optional[float] = None,
) -> FitResult:
    """Fits `form` (power, learning_curve, chinchilla with `d`, broken_power) to the points
    with `cloudchamber fit`'s method: Huber loss in log space from a grid of starts, and a
    seeded bootstrap for standard errors and 95% intervals; parameters the data do not identify
    are flagged."""
    raw = _native.fit_law(
        form,
        [float(v) for v in x],
        [float(v) for v in y],
        [float(v) for v in (d if d is not None else [])],
        int(bootstrap),
        int(seed),
        [(k, float(v)) for k, v in (fix or {}).items()],
        at_compute,
    )
    return FitResult(json.loads(raw))
