"""Mean-field theory of deep signal propagation (Poole et al. 2016; Schoenholz et al. 2017) for
φ(x) = a·f(x − b) + c, as `cloudchamber theory` and `cloudchamber calibrate` compute it."""

from __future__ import annotations

import json
from typing import Iterable, Optional

import pandas as pd

from . import _native


def fixed_point(
    activation: str = "tanh",
    sigma_w2: float = 1.0,
    sigma_b2: float = 0.0,
    *,
    a: float = 1.0,
    b: float = 0.0,
    c: float = 0.0,
) -> dict:
    """q*, c*, χ₁, χ_c, the length map's slope, the depth scales ξ_q, ξ_c, ξ_∇ (inf at
    criticality) and the phase, as plain Python numbers."""
    out = json.loads(_native.mean_field(activation, a, b, c, float(sigma_w2), float(sigma_b2)))
    return {k: (float(v) if isinstance(v, str) and k != "phase" else v) for k, v in out.items()}


def critical_sigma_w2(
    activation: str = "tanh", sigma_b2: float = 0.0, *, a: float = 1.0, b: float = 0.0, c: float = 0.0
) -> Optional[float]:
    """The σ_w² where χ₁ = 1 at this σ_b², or None when there is none in [1e-3, 1e3]."""
    return _native.critical_sigma_w2(activation, a, b, c, float(sigma_b2))


def critical_line(
    activation: str = "tanh",
    sigma_b2: Iterable[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
    *,
    a: float = 1.0,
    b: float = 0.0,
    c: float = 0.0,
) -> pd.DataFrame:
    """The order-to-chaos line: critical σ_w² for each σ_b² (NaN where there is none)."""
    rows = []
    for s in sigma_b2:
        w = critical_sigma_w2(activation, s, a=a, b=b, c=c)
        rows.append({"sigma_b2": float(s), "sigma_w2": float("nan") if w is None else w})
    return pd.DataFrame(rows)


def calibrate(activation: str, *, a: float = 1.0, b: float = 0.0, c: float = 0.0) -> dict:
    """μ, std, λ = 1/std and the NF-Net gain γ of φ(z) under z ~ N(0, 1):
    λ·(φ(z) − μ) has mean 0 and variance 1."""
    mu, std, lam, gamma = _native.calibrate(activation, a, b, c)
    return {"mu": mu, "std": std, "lambda": lam, "gamma": gamma}
