#!/usr/bin/env python3
"""The PyTorch peer of `cloudchamber bench --sampler`: the same denoiser and the same EDM Heun
sampler, eager PyTorch on the CPU, timed the same way (median of --repeat runs after one
untimed run).

Usage: torch_heun.py WEIGHTS.safetensors --width W --depth L [--threads T] [--repeat R]

WEIGHTS holds the network under its PyTorch names (`layers.{i}.weight` [out, in],
`layers.{i}.bias`, `embed.freqs`), the prior draws `bench.prior` [M, N] and cloudchamber's
samples `bench.samples` [M, N]. The network: D(x, s) = c_skip x + c_out F([c_in x, cos(2 pi f
c_noise), sin(2 pi f c_noise)]), F a SiLU MLP, EDM preconditioning with sigma_data = 0.5
(Karras et al. 2022, Table 1), the state in float64 and the network in float32, as in
cloudchamber. Prints `samples_per_s=<v> max_abs_diff=<v>` (the largest difference between its
samples and cloudchamber's).
"""

import argparse
import math
import time

import numpy as np
import torch
from safetensors.numpy import load_file

ap = argparse.ArgumentParser()
ap.add_argument("weights")
ap.add_argument("--width", type=int, required=True)
ap.add_argument("--depth", type=int, required=True)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--steps", type=int, default=18)
a = ap.parse_args()
torch.set_num_threads(a.threads)

t = load_file(a.weights)
prior = torch.from_numpy(t["bench.prior"].astype(np.float64))
theirs = t["bench.samples"].astype(np.float64)
n = prior.shape[1]
layers = []
for i in range(a.depth + 1):
    w = torch.from_numpy(t[f"layers.{i}.weight"])
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(torch.from_numpy(t[f"layers.{i}.bias"]))
    layers.append(lin)
    if i < a.depth:
        layers.append(torch.nn.SiLU())
net = torch.nn.Sequential(*layers).eval()
freqs = torch.from_numpy(t["embed.freqs"].astype(np.float64))
SD = 0.5


def denoise(x, s):
    c_skip = SD**2 / (s**2 + SD**2)
    c_out = s * SD / math.sqrt(s**2 + SD**2)
    c_in = 1 / math.sqrt(s**2 + SD**2)
    ang = 2 * math.pi * freqs * (math.log(s) / 4)
    emb = torch.cat([torch.cos(ang), torch.sin(ang)]).to(torch.float32)
    inp = torch.cat([(c_in * x).to(torch.float32), emb.expand(x.shape[0], -1)], dim=1)
    return c_skip * x + c_out * net(inp).to(torch.float64)


def schedule(steps, smin=0.002, smax=80.0, rho=7.0):
    a_, b_ = smax ** (1 / rho), smin ** (1 / rho)
    return [(a_ + i / (steps - 1) * (b_ - a_)) ** rho for i in range(steps)] + [0.0]


@torch.no_grad()
def heun(x):
    sig = schedule(a.steps)
    for i in range(a.steps):
        sc, sn = sig[i], sig[i + 1]
        d = (x - denoise(x, sc)) / sc
        nx = x + (sn - sc) * d
        if sn > 0:
            d2 = (nx - denoise(nx, sn)) / sn
            nx = x + (sn - sc) * 0.5 * (d + d2)
        x = nx
    return x


times = []
for r in range(a.repeat + 1):
    start = time.perf_counter()
    out = heun(prior.clone())
    if r > 0:
        times.append(time.perf_counter() - start)
times.sort()
med = times[len(times) // 2]
diff = float(np.max(np.abs(out.numpy() - theirs)))
print(f"samples_per_s={prior.shape[0] / med:.3f} max_abs_diff={diff:.3e} seconds={med:.4f}")
