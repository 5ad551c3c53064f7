"""Reads a sweep's Parquet export with pyarrow and its TensorBoard export with TensorBoard's own
EventAccumulator, and compares every value with the rows the store holds (EXPECTED, written by
the Rust test from `Store::metrics`). Prints a short summary; exits non-zero on any mismatch.

Usage: python read_exports.py EXPECTED.json EXPORT.parquet TB_DIR
"""
import json
import math
import os
import struct
import sys

import pyarrow.parquet as pq
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def tag(name, layer):
    if layer is not None:
        return f"layer{layer}/{name}"
    for prefix in ("train_eval", "train", "test"):
        if name.startswith(prefix + "_"):
            return prefix + "/" + name[len(prefix) + 1:]
    return name


def main():
    expected = json.load(open(sys.argv[1]))
    keys = expected["keys"]
    runs = expected["runs"]

    # Parquet: the same rows in the same order, swept keys as typed columns (numbers as
    # numbers), each run's status, values bit for bit.
    table = pq.read_table(sys.argv[2])
    cols = table.column_names
    assert cols == ["run_id"] + keys + ["status", "step", "layer", "name", "value"], cols
    for k in keys:
        assert str(table.schema.field(k).type) in ("double", "int64"), (k, table.schema)
    got = table.to_pylist()
    want = [(r["id"], r["values"], r["status"], row) for r in runs for row in r["rows"]]
    assert len(got) == len(want), (len(got), len(want))
    for g, (rid, vals, status, (step, layer, name, value)) in zip(got, want):
        assert g["run_id"] == rid, (g, rid)
        assert [g[k] for k in keys] == [float(v) for v in vals], (g, vals)
        assert g["status"] == status, (g, status)
        assert (g["step"], g["layer"], g["name"]) == (step, layer, name), (g, step, layer, name)
        assert same(g["value"], float(value)), (g, value)

    # TensorBoard: one directory per run; every scalar at float32 precision.
    dirs = os.listdir(sys.argv[3])
    assert len(dirs) == len(runs), dirs
    scalars = 0
    for r in runs:
        (d,) = [d for d in dirs if d.endswith("-" + r["id"][:8])]
        acc = EventAccumulator(os.path.join(sys.argv[3], d), size_guidance={"scalars": 0})
        acc.Reload()
        assert acc.file_version == 2.0, acc.file_version
        by_tag = {}
        for step, layer, name, value in r["rows"]:
            by_tag.setdefault(tag(name, layer), []).append((step, f32(float(value))))
        assert sorted(acc.Tags()["scalars"]) == sorted(by_tag), (acc.Tags()["scalars"], by_tag.keys())
        for t, series in by_tag.items():
            events = acc.Scalars(t)
            assert [e.step for e in events] == [s for s, _ in series], t
            for e, (_, v) in zip(events, series):
                assert same(e.value, v), (t, e, v)
                scalars += 1
    print(f"parquet rows {len(got)} ok; tensorboard scalars {scalars} ok in {len(runs)} runs")


if __name__ == "__main__":
    main()
