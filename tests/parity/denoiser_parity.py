#!/usr/bin/env python3
"""Parity check of cloudchamber's PFGM++/diffusion denoiser against an independent JAX one.

Usage: denoiser_parity.py CASE.safetensors [CASE.safetensors ...]

Each case file (written by `tests/parity_denoiser.rs`) holds, in f64: the initial parameters under
their PyTorch names (`layers.{i}.weight` [out, in], `layers.{i}.bias`, `layers.{i}.norm.{weight,
bias}`, `embed.freqs`), one batch of perturbed points (`batch.x` [B, N], `batch.sigma` [B],
`batch.y` [B, N] the clean points), and what Rust computed: `rust.loss`, `rust.grad.{name}` and
`rust.final.{name}` (after one Adam step). The case's description is JSON in the metadata under
`case`.

The denoiser is written here from the papers, not from the Rust code:
- EDM preconditioning (Karras et al. 2022, Table 1): c_skip = sd^2/(s^2 + sd^2),
  c_out = s sd / sqrt(s^2 + sd^2), c_in = 1/sqrt(s^2 + sd^2), c_noise = ln(s)/4;
  D(x, s) = c_skip x + c_out F([c_in x, emb(c_noise)]);
- noise features: Fourier [cos 2 pi f c, sin 2 pi f c] or positional [cos f c, sin f c];
- the loss: EDM's lambda(s) ||D(x, s) - y||^2 with lambda = (s^2 + sd^2)/(s sd)^2, averaged over
  rows and coordinates;
- F: Linear -> [LayerNorm] -> activation, per hidden layer, then a Linear read-out (torch.nn);
- one torch.optim.Adam step, from the pseudocode of PyTorch's documentation.
Exit status: 0 all cases agree within --tol (default 1e-9, relative with a floor at the case's
scale), 1 a mismatch, 2 a missing dependency.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_common import ACTIVATIONS, Optim, jax, jnp, load_case, np, rel_error  # noqa: E402

TOL = 1e-9
for a in sys.argv[1:]:
    if a.startswith("--tol="):
        TOL = float(a.split("=", 1)[1])
files = [a for a in sys.argv[1:] if not a.startswith("--")]


def activation(name, x):
    # The torch.nn module of that name (the shared table).
    if name not in ACTIVATIONS:
        raise SystemExit(f"denoiser_parity.py: unknown activation {name}")
    return ACTIVATIONS[name](x)


def layernorm(z, w, b, eps):  # torch.nn.LayerNorm over the last axis, biased variance
    mu = z.mean(-1, keepdims=True)
    var = ((z - mu) ** 2).mean(-1, keepdims=True)
    return (z - mu) / jnp.sqrt(var + eps) * w + b


def loss_fn(params, case, x, sigma, y):
    sd = case["sigma_data"]
    s = sigma[:, None]
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / jnp.sqrt(s**2 + sd**2)
    c_in = 1.0 / jnp.sqrt(s**2 + sd**2)
    c_noise = jnp.log(s) / 4.0
    freqs = params["embed.freqs"]
    scale = 2.0 * math.pi if case["embedding"] == "fourier" else 1.0
    ang = scale * c_noise * freqs[None, :]
    h = jnp.concatenate([c_in * x, jnp.cos(ang), jnp.sin(ang)], axis=1)
    depth = case["depth"]
    for i in range(depth):
        z = h @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
        if case["norm"] == "layernorm":
            z = layernorm(z, params[f"layers.{i}.norm.weight"], params[f"layers.{i}.norm.bias"], case["norm_eps"])
        h = activation(case["activation"], z)
    f = h @ params[f"layers.{depth}.weight"].T + params[f"layers.{depth}.bias"]
    d = c_skip * x + c_out * f
    lam = (s**2 + sd**2) / (s * sd) ** 2
    return jnp.mean(lam * (d - y) ** 2)


def check(path):
    case, t = load_case(path)
    names = [k for k in t if not k.startswith(("rust.", "batch."))]
    trainable = [k for k in names if f"rust.grad.{k}" in t]
    params = {k: jnp.asarray(t[k]) for k in names}
    x, sigma, y = (jnp.asarray(t[f"batch.{k}"]) for k in ("x", "sigma", "y"))
    loss = float(loss_fn(params, case, x, sigma, y))
    grads = jax.grad(lambda p: loss_fn({**params, **p}, case, x, sigma, y))({k: params[k] for k in trainable})
    worst = abs(loss - float(t["rust.loss"][0])) / abs(loss)
    report = [f"loss {loss:.12e} vs rust {float(t['rust.loss'][0]):.12e}"]
    gscale = max(float(np.max(np.abs(np.asarray(g)))) for g in grads.values())
    for k in trainable:
        e = rel_error(t[f"rust.grad.{k}"], np.asarray(grads[k]), 1e-5 * gscale)
        worst = max(worst, e)
        if e > TOL:
            report.append(f"grad {k}: rel. error {e:.3e}")
    # One Adam step (torch.optim.Adam, no weight decay).
    final = {k: np.asarray(params[k]) for k in names}
    adam = {"kind": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    Optim(adam, trainable, []).step(final, grads, case["lr"])
    pscale = max(float(np.max(np.abs(v))) for v in final.values())
    for k in names:
        e = rel_error(t[f"rust.final.{k}"], final[k], 1e-6 * pscale)
        worst = max(worst, e)
        if e > TOL:
            report.append(f"final {k}: rel. error {e:.3e}")
    print(f"{case['label']}: worst relative error {worst:.2e}; " + "; ".join(report))
    return worst <= TOL


ok = all([check(p) for p in files])
if ok:
    print(f"{len(files)} case(s) agree within {TOL:g}")
sys.exit(0 if ok else 1)
