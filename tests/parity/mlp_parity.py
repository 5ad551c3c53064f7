#!/usr/bin/env python3
"""Parity check of cloudchamber's MLP against an independent JAX implementation.

Usage: mlp_parity.py CASE.safetensors [CASE.safetensors ...]

Each case file is written by `tests/parity.rs` and holds, in f64:

- the initial parameters under their PyTorch names (`layers.{i}.weight` [out, in],
  `layers.{i}.bias`, `layers.{i}.act.{a,b,c}`, `layers.{i}.norm.{weight,bias,alpha,
  running_mean,running_var}`);
- the K training batches `batch.{k}.x` [rows, in] and `batch.{k}.y` ([rows, out] for MSE, [rows]
  class indices for cross-entropy);
- what Rust computed: `rust.loss` [K] (the loss of each step, before its update),
  `rust.grad.{name}` (the gradients of the first step) and `rust.final.{name}` (every parameter,
  and BatchNorm's running statistics, after K steps);
- a JSON description of the case in the safetensors metadata under `case`.

This script rebuilds the network from that description with its own forward pass in jax.numpy,
takes gradients with `jax.grad`, and applies the update rules of `torch.optim.SGD` / `Adam` /
`AdamW` as written in the pseudocode of the PyTorch documentation. Nothing here is derived from
the Rust code: activations, norms and losses follow the definitions of the matching `torch.nn`
modules.

Error measure, per tensor: max over elements of |rust - jax| / max(|jax|, floor), with floor =
1e-6 x the largest |jax| value of all final parameters of the case (for parameters), or 1e-5 x the
largest |jax| gradient of the case (for gradients), so that elements that are zero up to rounding
(e.g. the gradient of a Linear bias feeding a BatchNorm, a sum of rounding noise) are judged
against the scale of the model rather than against their own noise. The check fails
when any error exceeds --tol (default 1e-9). Exit status: 0 all cases agree, 1 a mismatch, 2 the
environment lacks jax/numpy/safetensors or a file is malformed.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_common import ACTIVATIONS, Optim, biased, jax, jnp, load_case, np, rel_error  # noqa: E402

# ------------------------------------------------------------------------------------------------
# Normalizations (train mode).
# ------------------------------------------------------------------------------------------------


def layernorm(x, w, b, eps):
    # torch.nn.LayerNorm(width): per row, biased variance.
    mean = jnp.mean(x, axis=1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * w + b


def rmsnorm(x, w, eps):
    # torch.nn.RMSNorm(width, eps): x / sqrt(mean(x^2) + eps) * w.
    return x / jnp.sqrt(jnp.mean(x * x, axis=1, keepdims=True) + eps) * w


def batchnorm_train(x, w, b, eps):
    # torch.nn.BatchNorm1d(width) in training mode: per column over the batch, biased variance.
    mean = jnp.mean(x, axis=0)
    var = jnp.mean((x - mean) ** 2, axis=0)
    return (x - mean) / jnp.sqrt(var + eps) * w + b, (mean, var)


def dyt(x, w, b, alpha):
    # Dynamic Tanh (Zhu et al. 2025): w * tanh(alpha x) + b, alpha a learned scalar.
    return w * jnp.tanh(alpha * x) + b


# ------------------------------------------------------------------------------------------------
# The network.
# ------------------------------------------------------------------------------------------------


def forward(case, p, x):
    """Returns the output [rows, out] and the batch statistics of every BatchNorm layer."""
    depth = case["depth"]
    f = ACTIVATIONS[case["activation"]]
    norm = case["norm"]
    pos = case["norm_position"]
    eps = case["norm_eps"]
    bn_stats = {}

    def linear(l, h):
        # Mean field reads its width x width weights through 1/sqrt(m) (Geiger et al. 2020).
        z = (h @ p[f"layers.{l}.weight"].T) * (hidden_multiplier(case) if 0 < l < depth else 1.0)
        if f"layers.{l}.bias" in p:
            z = z + p[f"layers.{l}.bias"]
        return z

    def apply_norm(l, h):
        pre = f"layers.{l}.norm."
        if norm == "layernorm":
            return layernorm(h, p[pre + "weight"], p[pre + "bias"], eps)
        if norm == "rmsnorm":
            return rmsnorm(h, p[pre + "weight"], eps)
        if norm == "batchnorm":
            y, stats = batchnorm_train(h, p[pre + "weight"], p[pre + "bias"], eps)
            bn_stats[l] = stats
            return y
        if norm == "dyt":
            return dyt(h, p[pre + "weight"], p[pre + "bias"], p[pre + "alpha"])
        raise ValueError(f"unknown norm {norm!r}")

    h = x
    for l in range(depth):
        z = linear(l, h)
        if norm != "none" and pos == "before_activation":
            z = apply_norm(l, z)
        if f"layers.{l}.act.a" in p:
            # The biased form a * f(u - b) + c (scalars [] or per-neuron [width] broadcast).
            a, b, c = (p[f"layers.{l}.act.{k}"] for k in "abc")
            h = biased(f, z, a, b, c)
        else:
            h = f(z)
        if norm != "none" and pos == "after_activation":
            h = apply_norm(l, h)
    # muP reads its readout through 1/m (Tensor Programs V, Table 8; mup's MuReadout).
    return linear(depth, h * output_multiplier(case)), bn_stats


def width_mult(case):
    # m = width / base_width; a network without hidden layers has no width.
    if case["depth"] == 0:
        return 1.0
    return case.get("width", 1) / case.get("base_width", 1)


def output_multiplier(case):
    par = case.get("parametrization", "sp")
    return 1.0 / width_mult(case) if par in ("mup", "mean_field") else 1.0


def hidden_multiplier(case):
    par = case.get("parametrization", "sp")
    return 1.0 / math.sqrt(width_mult(case)) if par == "mean_field" else 1.0


def lr_factor(case, name, size):
    """A tensor's learning-rate factor, from the rules of Tensor Programs V (Table 3) as the mup
    package applies them (MuAdam: tensors with two width dimensions / m; MuSGD: tensors with one
    width dimension * m, square hidden weights 1) and, for NTK, from reading each weight through
    1/sqrt(fan_in) (SGD: / m, Adam: / sqrt(m) for layers whose fan-in is the width)."""
    par = case.get("parametrization", "sp")
    if par == "sp":
        return 1.0
    m = width_mult(case)
    depth = case["depth"]
    parts = name.split(".")
    layer, kind = int(parts[1]), ".".join(parts[2:])
    adam = case["optimizer"]["kind"] in ("adam", "adamw")
    if kind == "weight":
        place = "input" if layer == 0 and depth > 0 else ("hidden" if layer < depth else "output")
    elif kind == "bias":
        place = "width_vector" if layer < depth else "fixed"
    else:  # norm and activation parameters: per neuron (width-sized) or per layer
        place = "width_vector" if size > 1 else "fixed"
    if par == "ntk":
        if place in ("hidden", "output"):
            return 1.0 / math.sqrt(m) if adam else 1.0 / m
        return 1.0
    if par == "mup":
        if adam:
            return 1.0 / m if place == "hidden" else 1.0
        return m if place in ("input", "output", "width_vector") else 1.0
    if par == "mean_field":
        # Every weight O(1) and SGD's rate x m (Mei et al. 2018; Geiger et al. 2020); Adam's by
        # the abc-symmetry from muP (Tensor Programs IV): hidden 1/sqrt(m), the rest as muP.
        if place == "hidden":
            return 1.0 / math.sqrt(m) if adam else m
        if adam:
            return 1.0
        return m if place in ("input", "output", "width_vector") else 1.0
    raise ValueError(f"unknown parametrization {par!r}")


def loss_fn(case, out, y):
    if case["loss"] == "mse":
        # torch.nn.MSELoss(): mean over all elements.
        return jnp.mean((out - y) ** 2)
    if case["loss"] == "cross_entropy":
        # torch.nn.CrossEntropyLoss(): mean over rows of logsumexp(out) - out[target].
        t = y.astype(np.int64)
        m = jax.lax.stop_gradient(jnp.max(out, axis=1, keepdims=True))
        lse = m[:, 0] + jnp.log(jnp.sum(jnp.exp(out - m), axis=1))
        return jnp.mean(lse - out[jnp.arange(out.shape[0]), t])
    raise ValueError(f"unknown loss {case['loss']!r}")


# ------------------------------------------------------------------------------------------------
# The check.
# ------------------------------------------------------------------------------------------------

BN_MOMENTUM = 0.1  # torch.nn.BatchNorm1d default


def run_case(path, tol):
    case, tensors = load_case(path)
    name = case["name"]
    K = case["steps"]
    lrs = case["lr"]
    assert len(lrs) == K, "one learning rate per step"

    init = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in tensors.items() if k.startswith("layers.")}
    trainable = list(case["trainable"])
    for n in trainable:
        if n not in init:
            raise ValueError(f"{path}: trainable `{n}` missing from the initial parameters")
    state_names = [k for k in init if k not in trainable]
    params = {n: init[n] for n in trainable}
    fixed = {n: init[n] for n in state_names if not n.endswith(("running_mean", "running_var"))}
    running = {n: init[n] for n in state_names if n.endswith(("running_mean", "running_var"))}
    factors = {n: lr_factor(case, n, int(np.prod(init[n].shape))) for n in trainable}
    opt = Optim(case["optimizer"], trainable, case["decay"], factors)

    def objective(tp, x, y):
        out, stats = forward(case, {**fixed, **tp}, x)
        return loss_fn(case, out, y), stats

    value_and_grad = jax.value_and_grad(objective, has_aux=True)

    losses = []
    grads0 = None
    for k in range(K):
        x = jnp.asarray(tensors[f"batch.{k}.x"])
        y = jnp.asarray(tensors[f"batch.{k}.y"])
        (loss, stats), grads = value_and_grad(params, x, y)
        losses.append(float(loss))
        if k == 0:
            grads0 = grads
        # BatchNorm running statistics (torch: momentum 0.1, unbiased variance for the estimate).
        n = x.shape[0]
        for l, (mean, var) in stats.items():
            rm, rv = f"layers.{l}.norm.running_mean", f"layers.{l}.norm.running_var"
            running[rm] = (1 - BN_MOMENTUM) * running[rm] + BN_MOMENTUM * mean
            running[rv] = (1 - BN_MOMENTUM) * running[rv] + BN_MOMENTUM * var * n / (n - 1)
        opt.step(params, grads, lrs[k])

    final = {**fixed, **running, **params}
    rows = []  # (label, error, tolerance)

    rust_loss = tensors["rust.loss"]
    for k in range(K):
        rows.append((f"loss[step {k}]", rel_error(rust_loss[k], losses[k], 0.0)))

    gscale = max(float(jnp.max(jnp.abs(g))) for g in grads0.values()) if grads0 else 0.0
    for n in trainable:
        key = f"rust.grad.{n}"
        if key not in tensors:
            raise ValueError(f"{path}: missing {key}")
        rows.append((f"grad step 0 {n}", rel_error(tensors[key], grads0[n], 1e-5 * gscale)))

    pscale = max(float(jnp.max(jnp.abs(v))) for v in final.values() if v.size)
    for n in sorted(final):
        key = f"rust.final.{n}"
        if key not in tensors:
            raise ValueError(f"{path}: missing {key}")
        rows.append((f"final {n}", rel_error(tensors[key], final[n], 1e-6 * pscale)))
    extra = sorted(k[len("rust.final."):] for k in tensors if k.startswith("rust.final.") and k[len("rust.final."):] not in final)
    if extra:
        raise ValueError(f"{path}: Rust has parameters the description does not explain: {extra}")

    worst = max(e for _, e in rows)
    ok = worst <= tol
    print(f"== {name}: {'ok' if ok else 'MISMATCH'} (max relative error {worst:.2e}, tolerance {tol:.0e})")
    for label, e in rows:
        flag = "" if e <= tol else "   <-- exceeds tolerance"
        print(f"   {e:9.2e}  {label}{flag}")
    return ok, name, worst


if __name__ == "__main__":
    from parity_cli import main

    main("mlp_parity.py", __doc__, run_case)
