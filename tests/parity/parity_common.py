"""What the JAX parity scripts share (`mlp_parity.py`, `gpt_parity.py`, `conv_parity.py`,
`denoiser_parity.py`): the environment (numpy, jax in f64 on the CPU, safetensors), the
activations as the torch.nn modules of the same name define them and the biased form
a·f(x − b) + c, the update rules of `torch.optim.SGD` / `Adam` / `AdamW` written from the
pseudocode of the PyTorch documentation, reading a case file, and the relative error measure.

Nothing here is derived from the Rust code. A script imports it after putting its own folder on
`sys.path` (the Rust tests run `python tests/parity/SCRIPT.py FILES…`, which does that already).
A missing dependency prints how to install the environment and exits with status 2, the scripts'
"environment problem" status.
"""

import json
import math
import os
import sys

try:
    import numpy as np
    import jax
    from safetensors import safe_open
    from safetensors.numpy import load_file
except ImportError as e:  # pragma: no cover - environment problem, not a parity failure
    _script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "parity"
    print(
        f"{_script}: missing Python dependency ({e}).\n"
        "Install the parity environment with `bash scripts/test` (it creates .venv with numpy, "
        "jax and safetensors), or `python3 -m venv .venv && .venv/bin/pip install numpy jax "
        "safetensors`.",
        file=sys.stderr,
    )
    sys.exit(2)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")
import jax.numpy as jnp  # noqa: E402
from jax.scipy.special import erf  # noqa: E402

__all__ = [
    "np",
    "jax",
    "jnp",
    "ACTIVATIONS",
    "SELU_ALPHA",
    "SELU_SCALE",
    "SQRT_2_OVER_PI",
    "sigmoid",
    "biased",
    "Optim",
    "AdamW",
    "DescriptionMismatch",
    "load_case",
    "rel_error",
]

# ------------------------------------------------------------------------------------------------
# Activations: the definitions of the torch.nn modules of the same name.
# ------------------------------------------------------------------------------------------------

SELU_ALPHA = 1.6732632423543772848170429916717  # torch.nn.SELU
SELU_SCALE = 1.0507009873554804934193349852946
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _elu(x, alpha=1.0):
    # torch.nn.ELU: x if x > 0 else alpha * (exp(x) - 1). The min keeps the unused branch finite.
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0)))


def _softplus(x, beta=1.0, threshold=20.0):
    # torch.nn.Softplus: 1/beta * log(1 + exp(beta x)), linear where beta x > threshold.
    bx = beta * x
    safe = jnp.minimum(bx, threshold)
    return jnp.where(bx > threshold, x, jnp.log1p(jnp.exp(safe)) / beta)


ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": lambda x: jnp.where(x > 0, x, 0.0),
    "leaky_relu": lambda x: jnp.where(x > 0, x, 0.01 * x),  # torch.nn.LeakyReLU() slope 0.01
    "elu": _elu,
    "selu": lambda x: SELU_SCALE * _elu(x, SELU_ALPHA),
    # torch.nn.GELU(): x Φ(x) with the exact normal CDF.
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    # torch.nn.GELU(approximate="tanh").
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + jnp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x**3))),
    "silu": lambda x: x * sigmoid(x),
    "tanh": jnp.tanh,
    "sigmoid": sigmoid,
    "softplus": _softplus,
}


def biased(f, x, a, b, c):
    """The biased activation a·f(x − b) + c (a, b, c scalars or arrays that broadcast with x)."""
    return a * f(x - b) + c


# ------------------------------------------------------------------------------------------------
# Optimizers: the pseudocode of the torch.optim documentation, one tensor at a time. A parameter
# held as a numpy array is updated with numpy (the same f64 arithmetic as jax.numpy, without
# compiling every elementwise op), one held as a jax array with jax.numpy, so that each script
# computes exactly what it computed with its own copy of these rules.
# ------------------------------------------------------------------------------------------------


class Optim:
    """torch.optim.SGD (kinds "sgd", "momentum", "nesterov": momentum 0 / mu, dampening 0),
    Adam and AdamW (maximize=False, amsgrad=False). Weight decay applies to exactly the tensors
    in `decay` (torch with two param groups: {decay: weight_decay}, {others: 0}).

    `factors`: per-tensor learning-rate factors (width parametrizations); the weight decay is
    divided by the factor, as the mup optimizers scale it, so lr·wd per step is unchanged.

    For Adam and AdamW it also accumulates, per element, `sensitivity` = Σ_t lr_t /
    (sqrt(v̂_t) + eps): how strongly a gradient error moves the parameter."""

    KINDS = ("sgd", "momentum", "nesterov", "adam", "adamw")

    def __init__(self, hyper, names, decay, factors=None):
        self.h = hyper
        self.kind = hyper.get("kind", "adamw")
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown optimizer {self.kind!r}")
        self.factors = factors or {}
        self.decay = set(decay)
        self.t = 0
        self.state = {n: {} for n in names}
        self.sensitivity = {n: 0.0 for n in names}

    def step(self, params, grads, lr):
        self.t += 1
        t = self.t
        h = self.h
        for name, g in grads.items():
            theta = params[name]
            xp = jnp if isinstance(theta, jax.Array) else np
            if xp is np:
                g = np.asarray(g)
            f = self.factors.get(name, 1.0)
            lr_p = lr * f
            lam = h["weight_decay"] / f if name in self.decay else 0.0
            st = self.state[name]
            if self.kind in ("sgd", "momentum", "nesterov"):
                mu = 0.0 if self.kind == "sgd" else h["momentum"]
                if lam != 0:
                    g = g + lam * theta
                if mu != 0:
                    if t > 1:
                        st["b"] = mu * st["b"] + g  # (1 − dampening) = 1
                    else:
                        st["b"] = g
                    g = g + mu * st["b"] if self.kind == "nesterov" else st["b"]
                params[name] = theta - lr_p * g
            else:
                b1, b2, eps = h["beta1"], h["beta2"], h["eps"]
                if self.kind == "adamw":
                    theta = theta - lr_p * lam * theta  # θ_t ← θ_{t−1} − γ λ θ_{t−1}
                elif lam != 0:
                    g = g + lam * theta  # Adam: the L2 penalty added to the gradient
                m = b1 * st.get("m", 0.0) + (1 - b1) * g
                v = b2 * st.get("v", 0.0) + (1 - b2) * g * g
                st["m"], st["v"] = m, v
                m_hat = m / (1 - b1**t)
                v_hat = v / (1 - b2**t)
                denom = xp.sqrt(v_hat) + eps
                params[name] = theta - lr_p * m_hat / denom
                self.sensitivity[name] = self.sensitivity[name] + lr_p / denom


class AdamW(Optim):
    """torch.optim.AdamW only: a description naming another optimizer is refused (an absent
    "kind" means AdamW)."""

    def __init__(self, hyper, names, decay, factors=None):
        if hyper.get("kind", "adamw") != "adamw":
            raise ValueError(f"only adamw is described here (got {hyper['kind']!r})")
        super().__init__({**hyper, "kind": "adamw"}, names, decay, factors)


# ------------------------------------------------------------------------------------------------
# Case files and the error measure.
# ------------------------------------------------------------------------------------------------


class DescriptionMismatch(Exception):
    """The description and Rust's parameter set disagree."""


def load_case(path):
    """A case file: its JSON description (the safetensors metadata under `case`) and every tensor
    as a numpy array. Raises ValueError without a description."""
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
    if "case" not in meta:
        raise ValueError(f"{path}: no `case` metadata")
    return json.loads(meta["case"]), load_file(path)


def rel_error(rust, ref, floor):
    """max over elements of |rust − ref| / max(|ref|, floor) (a zero denominator counts as 1);
    inf for tensors of different shapes, 0 for empty ones."""
    rust = np.asarray(rust, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if rust.shape != ref.shape:
        return math.inf
    if rust.size == 0:
        return 0.0
    denom = np.maximum(np.abs(ref), floor)
    denom = np.where(denom > 0, denom, 1.0)
    return float(np.max(np.abs(rust - ref) / denom))
