#!/usr/bin/env python3
"""Parity check of cloudchamber's GPT against an independent JAX implementation.

Usage: gpt_parity.py CASE.safetensors [CASE.safetensors ...]

Each case file is written by `tests/parity_gpt.rs` and holds, in f64:

- the initial parameters under their PyTorch / nanoGPT names (`transformer.wte.weight` [V, C],
  `transformer.wpe.weight` [context, C], `transformer.h.{l}.ln_1.{weight,bias,alpha}`,
  `transformer.h.{l}.attn.c_attn.{weight,bias}` [3C, C] (q, k, v stacked in that order),
  `transformer.h.{l}.attn.c_proj.*`, `transformer.h.{l}.ln_2.*`, `transformer.h.{l}.mlp.c_fc.*`,
  `transformer.h.{l}.mlp.act.{a,b,c}`, `transformer.h.{l}.mlp.c_proj.*`, `transformer.ln_f.*`,
  `lm_head.weight` [V, C]); Linear weights are [out, in] as in `torch.nn.Linear`;
- the K training batches `batch.{k}.tokens` [B, T] and `batch.{k}.targets` [B, T] (token ids;
  -1 marks a position that is not trained on, `ignore_index` in torch terms); for a prompt case
  (`"input": "prompts"` in the description) `batch.{k}.x` [B, K, d] and `batch.{k}.y` [B, K]
  instead, with `read_in.{weight,bias}` and `read_out.{weight,bias}` in place of the token table
  and the head;
- what Rust computed: `rust.loss` [K] (each step's loss, before its update), `rust.grad.{name}`
  (the gradients of the first step) and `rust.final.{name}` (every parameter after K steps);
- a JSON description of the case in the safetensors metadata under `case`.

The model is rebuilt here from that description, from the papers and the PyTorch docs rather than
from the Rust code:

- decoder-only transformer (Radford et al. 2018/2019; nanoGPT's naming): token embedding, plus a
  learned position embedding or rotary positions; `n_layer` blocks; logits = x · W_headᵀ with
  W_head = wte when tied (Press & Wolf 2017);
- pre-norm block (GPT-2): x ← x + attn(ln_1(x)); x ← x + mlp(ln_2(x)); a final ln_f before the
  head. Post-norm block (Vaswani et al. 2017, "Add & Norm"): x ← ln_1(x + attn(x));
  x ← ln_2(x + mlp(x)); no final norm;
- causal multi-head self-attention (Vaswani et al. 2017, eq. 1): softmax(q kᵀ / √d_head) v per
  head, with future positions masked out, then the output projection;
- rotary position embedding (Su et al. 2021, RoFormer, eq. 34): within each head, the pairs
  (x[2i], x[2i+1]) of q and k at position m are rotated by the angle m·θ_i, θ_i = base^(−2i/d_head)
  (0-based i), i.e. the complex number x[2i] + j·x[2i+1] is multiplied by exp(j·m·θ_i);
- MLP: c_proj(a · f(c_fc(x) − b) + c), with f as the torch.nn module of that name and (a, b, c)
  present only when the case has them (scalars [] or per-unit [d_mlp]);
- norms as torch defines them: `torch.nn.LayerNorm` (biased variance), `torch.nn.RMSNorm`
  (x / sqrt(mean(x²) + eps) · w), DyT (Zhu et al. 2025: w · tanh(α x) + b, α a learned scalar),
  or none;
- loss: `torch.nn.functional.cross_entropy(logits, targets, ignore_index=-1)` (mean over the
  positions that are trained on);
- prompts (Garg, Tsipras, Liang & Valiant 2022, their `TransformerModel`): `_combine` interleaves
  x_i and y_i padded with zeros to d, `_read_in` is a Linear(d, C) in place of the token table,
  `_read_out` a Linear(C, 1) in place of the head, the predictions are the read-outs at the x
  positions (`[:, ::2, 0]`), and the loss is their mean squared error.

Gradients come from `jax.grad`; the update is `torch.optim.AdamW` as written in the pseudocode of
the PyTorch documentation, with weight decay applied exactly to the tensors listed in the case's
`decay` set (torch with two param groups) and to no other.

Error measure, per tensor: max over elements of |rust − jax| / max(|jax|, floor). For gradients,
floor = 1e-5 × the largest |jax| gradient of the case, so that elements that are zero up to
rounding are judged against the scale of the model rather than against their own noise. For final
parameters, floor = the larger of 1e-6 × the largest |jax| parameter and the gradient floor times
Σ_t lr_t / (sqrt(v̂_t) + eps) of that element: how far a gradient error of the size the gradient
check accepts can move it through Adam. That matters only where the gradient is zero up to
rounding — the attention key bias with learned positions (q·b_k shifts a whole row of scores,
which softmax ignores) — where Adam divides ~1e-17 of rounding noise by eps and moves the
parameter by lr/eps = 1e6 times as much, different noise in each implementation; such rows are
marked with their plain error. A parameter the description does not use, or a parameter it needs
that Rust does not have, is a mismatch too. The check fails when any error exceeds --tol (default
1e-9). Exit status: 0 all cases agree, 1 a mismatch, 2 the environment lacks
jax/numpy/safetensors or a file is malformed.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_common import (  # noqa: E402
    ACTIVATIONS,
    AdamW,
    DescriptionMismatch,
    biased,
    jax,
    jnp,
    load_case,
    np,
    rel_error,
)

IGNORE_INDEX = -1

# ------------------------------------------------------------------------------------------------
# Norms over the last axis.
# ------------------------------------------------------------------------------------------------


def layernorm(x, w, b, eps):
    # torch.nn.LayerNorm(C, eps): (x − E[x]) / sqrt(Var[x] + eps) · w + b, biased variance.
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * w + b


def rmsnorm(x, w, eps):
    # torch.nn.RMSNorm(C, eps): x / sqrt(mean(x²) + eps) · w.
    return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * w


def dyt(x, w, b, alpha):
    # Dynamic Tanh (Zhu et al. 2025): w · tanh(α x) + b, α one learned scalar.
    return w * jnp.tanh(alpha * x) + b


class Params:
    """The parameters by name, recording which ones the forward pass reads."""

    def __init__(self, values, used):
        self.values = values
        self.used = used

    def __getitem__(self, name):
        if name not in self.values:
            raise DescriptionMismatch(f"the description needs `{name}`, which Rust does not have")
        self.used.add(name)
        return self.values[name]

    def __contains__(self, name):
        return name in self.values


# ------------------------------------------------------------------------------------------------
# The transformer.
# ------------------------------------------------------------------------------------------------


def rotary(x, base):
    """RoFormer rotation of x: [B, H, T, d] at positions 0..T−1 (pairs (2i, 2i+1), θ_i =
    base^(−2i/d)): the pair as a complex number times exp(j·m·θ_i)."""
    d = x.shape[-1]
    T = x.shape[-2]
    theta = base ** (-2.0 * jnp.arange(d // 2) / d)  # [d/2]
    angle = jnp.arange(T)[:, None] * theta[None, :]  # [T, d/2]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    re, im = x[..., 0::2], x[..., 1::2]
    out_re = re * cos - im * sin
    out_im = re * sin + im * cos
    return jnp.stack([out_re, out_im], axis=-1).reshape(x.shape)


def combine(xs, ys):
    """Garg et al.'s `_combine`: [B, K, d] points and [B, K] values → [B, 2K, d] vectors
    x_1, (y_1, 0, …, 0), x_2, …"""
    B, K, d = xs.shape
    ys_wide = jnp.concatenate([ys[..., None], jnp.zeros((B, K, d - 1))], axis=-1)
    return jnp.stack([xs, ys_wide], axis=2).reshape(B, 2 * K, d)


def forward(case, p, tokens=None, zs=None):
    """Logits [B, T, V] for tokens [B, T]; for prompts, read-outs [B, T, 1] for the combined
    vectors zs [B, T, d]."""
    B, T = tokens.shape if tokens is not None else zs.shape[:2]
    C, H = case["d_model"], case["n_head"]
    hd = C // H
    eps = case["norm_eps"]
    norm = case["norm"]
    f = ACTIVATIONS[case["activation"]]

    def linear(name, x):
        # torch.nn.Linear: x Wᵀ + b (the blocks' matrices, read through mean field's multiplier).
        return (x @ p[f"{name}.weight"].T) * block_multiplier(case) + p[f"{name}.bias"]

    def apply_norm(name, x):
        if norm == "none":
            return x
        if norm == "layernorm":
            return layernorm(x, p[f"{name}.weight"], p[f"{name}.bias"], eps)
        if norm == "rmsnorm":
            return rmsnorm(x, p[f"{name}.weight"], eps)
        if norm == "dyt":
            return dyt(x, p[f"{name}.weight"], p[f"{name}.bias"], p[f"{name}.alpha"].reshape(()))
        raise ValueError(f"unknown norm {norm!r}")

    def heads(x):  # [B, T, C] → [B, H, T, hd]
        return x.reshape(B, T, H, hd).transpose(0, 2, 1, 3)

    causal = jnp.tril(jnp.ones((T, T), dtype=bool))

    def attention(pre, x):
        qkv = linear(f"{pre}.attn.c_attn", x)
        q, k, v = (heads(qkv[..., i * C:(i + 1) * C]) for i in range(3))
        if case["positions"] == "rotary":
            q, k = rotary(q, case["rope_base"]), rotary(k, case["rope_base"])
        scores = (q @ k.transpose(0, 1, 3, 2)) * attention_scale(case, hd)
        scores = jnp.where(causal, scores, -jnp.inf)
        att = jax.nn.softmax(scores, axis=-1)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        return linear(f"{pre}.attn.c_proj", y)

    def mlp(pre, x):
        u = linear(f"{pre}.mlp.c_fc", x)
        if f"{pre}.mlp.act.a" in p:
            a, b, c = (p[f"{pre}.mlp.act.{k}"] for k in "abc")
            h = biased(f, u, a, b, c)
        else:
            h = f(u)
        return linear(f"{pre}.mlp.c_proj", h)

    if tokens is not None:
        x = p["transformer.wte.weight"][tokens]
    else:
        x = zs @ p["read_in.weight"].T + p["read_in.bias"]
    if case["positions"] == "learned":
        x = x + p["transformer.wpe.weight"][:T]
    elif case["positions"] != "rotary":
        raise ValueError(f"unknown positions {case['positions']!r}")
    for l in range(case["n_layer"]):
        pre = f"transformer.h.{l}"
        if case["placement"] == "pre":
            x = x + attention(pre, apply_norm(f"{pre}.ln_1", x))
            x = x + mlp(pre, apply_norm(f"{pre}.ln_2", x))
        elif case["placement"] == "post":
            x = apply_norm(f"{pre}.ln_1", x + attention(pre, x))
            x = apply_norm(f"{pre}.ln_2", x + mlp(pre, x))
        else:
            raise ValueError(f"unknown placement {case['placement']!r}")
    if case["placement"] == "pre":
        x = apply_norm("transformer.ln_f", x)
    mult = head_multiplier(case)
    if tokens is None:
        return (x * mult) @ p["read_out.weight"].T + p["read_out.bias"]
    if case["tying"] == "tied":
        w_head = p["transformer.wte.weight"]
    elif case["tying"] == "untied":
        w_head = p["lm_head.weight"]
    else:
        raise ValueError(f"unknown tying {case['tying']!r}")
    return (x * mult) @ w_head.T


# ------------------------------------------------------------------------------------------------
# Width parametrizations (Tensor Programs V, Tables 3 and 8; the mup package's MuReadout and
# MuAdam; NTK read through 1/sqrt(fan_in)), relative to the base width at which they are SP.
# ------------------------------------------------------------------------------------------------


def width_mult(case):
    return case["d_model"] / case.get("base_d_model", case["d_model"])


def attention_scale(case, hd):
    # muP: logits scaled by 1/d_head (times sqrt(base head width), so that it equals SP's
    # 1/sqrt(d_head) at the base width); otherwise 1/sqrt(d_head).
    if case.get("parametrization", "sp") in ("mup", "mean_field"):
        base_hd = case["base_d_model"] / case["n_head"]
        return math.sqrt(base_hd) / hd
    return 1.0 / math.sqrt(hd)


def head_multiplier(case):
    par = case.get("parametrization", "sp")
    return 1.0 / width_mult(case) if par in ("mup", "mean_field") else 1.0


def block_multiplier(case):
    # Mean field reads the blocks' matrices through 1/sqrt(m) (Geiger et al. 2020).
    par = case.get("parametrization", "sp")
    return 1.0 / math.sqrt(width_mult(case)) if par == "mean_field" else 1.0


def adam_lr_factor(case, name):
    """Hidden matrices (both dimensions grow with width) get lr / m under muP (MuAdam); under
    NTK every matrix read through 1/sqrt(fan_in) with fan-in the width (hidden and head) gets
    lr / sqrt(m). Embeddings, the read-in, vectors and scalars keep lr."""
    par = case.get("parametrization", "sp")
    m = width_mult(case)
    hidden = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
    head = name in ("lm_head.weight", "read_out.weight")
    if par == "mup":
        return 1.0 / m if hidden else 1.0
    if par == "ntk":
        return 1.0 / math.sqrt(m) if hidden or head else 1.0
    if par == "mean_field":
        # muP's Adam rates moved by the abc-symmetry (Tensor Programs IV) to weights read through
        # 1/sqrt(m): the hidden matrices' rate is 1/sqrt(m).
        return 1.0 / math.sqrt(m) if hidden else 1.0
    return 1.0


def cross_entropy(logits, targets):
    """torch.nn.functional.cross_entropy(logits, targets, ignore_index=-1), reduction 'mean'."""
    V = logits.shape[-1]
    z = logits.reshape(-1, V)
    t = targets.reshape(-1)
    keep = t != IGNORE_INDEX
    safe_t = jnp.where(keep, t, 0)
    logp = jax.nn.log_softmax(z, axis=-1)
    nll = -jnp.take_along_axis(logp, safe_t[:, None], axis=-1)[:, 0]
    return jnp.sum(jnp.where(keep, nll, 0.0)) / jnp.sum(keep)


# ------------------------------------------------------------------------------------------------
# The check.
# ------------------------------------------------------------------------------------------------


def describe(case):
    reads = (
        f"prompts of {case['points']} points in {case['dim']} dimensions"
        if case.get("input") == "prompts"
        else f"vocab {case['vocab']}"
    )
    return (
        f"{case['n_layer']} layers, d_model {case['d_model']}, {case['n_head']} heads, "
        f"d_mlp {case['d_mlp']}, {reads}, {case['norm']} {case['placement']}-norm, "
        f"{case['positions']} positions, {case['tying']} head, {case['activation']}; "
        f"AdamW wd {case['optimizer']['weight_decay']} on {len(case['decay'])} tensors"
    )


def run_case(path, tol):
    case, tensors = load_case(path)
    name = case["name"]
    K = case["steps"]
    lrs = case["lr"]
    assert len(lrs) == K, "one learning rate per step"

    init = {
        k: np.asarray(v, dtype=np.float64)
        for k, v in tensors.items()
        if not k.startswith(("rust.", "batch."))
    }
    trainable = list(case["trainable"])
    for n in trainable:
        if n not in init:
            raise ValueError(f"{path}: trainable `{n}` missing from the initial parameters")
    unknown_decay = set(case["decay"]) - set(trainable)
    if unknown_decay:
        raise ValueError(f"{path}: decayed tensors that are not trained: {sorted(unknown_decay)}")
    params = {n: init[n] for n in trainable}
    fixed = {n: jnp.asarray(v) for n, v in init.items() if n not in params}
    opt = AdamW(case["optimizer"], trainable, case["decay"], {n: adam_lr_factor(case, n) for n in trainable})
    used = set()

    prompts = case.get("input") == "prompts"

    def objective(tp, tokens, targets):
        p = Params({**fixed, **tp}, used)
        if prompts:
            xs, ys = tokens, targets
            pred = forward(case, p, zs=combine(xs, ys))[:, ::2, 0]
            return jnp.mean((pred - ys) ** 2)
        return cross_entropy(forward(case, p, tokens), targets)

    value_and_grad = jax.value_and_grad(objective)

    print(f"== {name}: {describe(case)}")
    losses, grads0 = [], None
    try:
        for k in range(K):
            if prompts:
                tokens = jnp.asarray(tensors[f"batch.{k}.x"])
                targets = jnp.asarray(tensors[f"batch.{k}.y"])
            else:
                tokens = jnp.asarray(tensors[f"batch.{k}.tokens"]).astype(jnp.int64)
                targets = jnp.asarray(tensors[f"batch.{k}.targets"]).astype(jnp.int64)
            loss, grads = value_and_grad(params, tokens, targets)
            losses.append(float(loss))
            if k == 0:
                grads0 = grads
            opt.step(params, grads, lrs[k])
    except DescriptionMismatch as e:
        print(f"   MISMATCH: {e}")
        return False, name, math.inf

    rows = []  # (label, error)
    unused = sorted(set(init) - used)
    for n in unused:
        rows.append((f"Rust has `{n}`, which the description does not use", math.inf))

    rust_loss = tensors["rust.loss"]
    for k in range(K):
        rows.append((f"loss[step {k}] (jax {losses[k]:.6f})", rel_error(rust_loss[k], losses[k], 0.0)))

    gscale = max(float(np.max(np.abs(g))) for g in grads0.values())
    gfloor = 1e-5 * gscale
    for n in trainable:
        key = f"rust.grad.{n}"
        if key not in tensors:
            raise ValueError(f"{path}: missing {key}")
        rows.append((f"grad step 0 {n}", rel_error(tensors[key], grads0[n], gfloor)))

    # Final parameters: the floor includes Adam's amplification of gradient errors (see the top).
    final = {**fixed, **params}
    pscale = max(float(np.max(np.abs(v))) for v in final.values() if v.size)
    for n in sorted(final):
        key = f"rust.final.{n}"
        if key not in tensors:
            raise ValueError(f"{path}: missing {key}")
        floor = np.maximum(1e-6 * pscale, gfloor * opt.sensitivity.get(n, 0.0))
        err = rel_error(tensors[key], final[n], floor)
        plain = rel_error(tensors[key], final[n], 1e-6 * pscale)
        note = f" (plain {plain:.2e}: Adam-amplified rounding)" if plain > tol >= err else ""
        rows.append((f"final {n}{note}", err))
    extra = sorted(
        k[len("rust.final."):]
        for k in tensors
        if k.startswith("rust.final.") and k[len("rust.final."):] not in final
    )
    if extra:
        raise ValueError(f"{path}: final parameters without an initial value: {extra}")

    worst = max(e for _, e in rows)
    ok = worst <= tol
    print(f"   {'ok' if ok else 'MISMATCH'} (max relative error {worst:.2e}, tolerance {tol:.0e})")
    for label, e in rows:
        flag = "" if e <= tol else "   <-- exceeds tolerance"
        print(f"   {e:9.2e}  {label}{flag}")
    return ok, name, worst


if __name__ == "__main__":
    from parity_cli import main

    main("gpt_parity.py", __doc__, run_case)
