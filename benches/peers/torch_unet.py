#!/usr/bin/env python3
"""The PyTorch peer of `cloudchamber bench --unet`: the same U-Net (Ronneberger et al. 2015)
and the same training step, eager PyTorch on the CPU in float32, timed step by step.

Usage: torch_unet.py [--depth D] [--base-channels C] [--channel-mult M]
                     [--norm batchnorm|groupnorm|layernorm|none] [--groups G]
                     [--activation relu|gelu|silu|tanh] [--upsampling transposed|nearest|bilinear]
                     [--in-channels N] [--out-channels K] [--loss bce|cross_entropy|bce_dice]
                     [--batch B] [--size S] [--threads T] [--steps N] [--warmup W] [--lr LR]
                     [--seed SEED] [--weights FILE.safetensors] [--compile]

The network, with c_l = C * M^l for l = 0..D and block(c_in, c_out) = conv3x3 -> norm -> act ->
conv3x3 -> norm -> act (convolutions with bias, padding 1):
  enc.0 = block(in -> c_0); enc.l = block(c_{l-1} -> c_l) after a 2x2 max pool, l = 1..D;
  for l = D-1 down to 0: up.l maps c_{l+1} -> c_l at twice the resolution (a 2x2 stride-2
  transposed convolution, or nearest / bilinear upsampling followed by a 1x1 convolution named
  up.l itself), then dec.l = block(2 c_l -> c_l) on cat([skip e_l, up], dim=1);
  head = conv1x1(c_0 -> out).
Norms: BatchNorm2d (eps 1e-5, momentum 0.1, training mode), GroupNorm (the largest divisor of C
that is <= G groups, eps 1e-5), a channels-first LayerNorm (mean and biased variance over the
channels at each pixel, weight and bias [C], eps 1e-5), or none.
Losses: bce = BCE with logits on logits[:, 0] against a 0/1 mask; cross_entropy over the K
output channels against class ids; bce_dice = bce + 1 - (2 sum(sigmoid(z) y) + 1) /
(sum(sigmoid(z)) + sum(y) + 1), summed over the whole batch.

WEIGHTS (optional) holds the initial parameters under the PyTorch names (the state_dict keys:
`enc.0.conv1.weight`, `enc.0.norm1.running_mean`, `up.0.weight`, `head.bias`, ...; loaded
strictly, BatchNorm's `num_batches_tracked` aside) and the batch `bench.x` [B, C_in, S, S] and
`bench.y` [B, S, S]. Without it: PyTorch's default initialisation, x ~ N(0, 1) and a random 0/1
mask (class ids for cross_entropy), all from --seed.

A timed step: zero_grad(set_to_none=True), forward, loss, backward, Adam step (default betas and
eps), on the same batch every time. --warmup untimed steps come first. Prints
`step_ms_median=<v> step_ms_min=<v> step_ms_max=<v> threads=<t> params=<n> loss_first=<v>
loss_last=<v>` (loss_first from the very first step, before any update; loss_last from the
last timed step). With --compile the model goes through torch.compile; if that is unavailable or
fails, a message goes to stderr and the exit status is 3.
"""

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ap = argparse.ArgumentParser(description="Time a U-Net training step in eager PyTorch (CPU).")
ap.add_argument("--depth", type=int, default=2)
ap.add_argument("--base-channels", type=int, default=16)
ap.add_argument("--channel-mult", type=int, default=2)
ap.add_argument("--norm", choices=["batchnorm", "groupnorm", "layernorm", "none"], default="batchnorm")
ap.add_argument("--groups", type=int, default=8)
ap.add_argument("--activation", choices=["relu", "gelu", "silu", "tanh"], default="relu")
ap.add_argument("--upsampling", choices=["transposed", "nearest", "bilinear"], default="transposed")
ap.add_argument("--in-channels", type=int, default=1)
ap.add_argument("--out-channels", type=int, default=1)
ap.add_argument("--loss", choices=["bce", "cross_entropy", "bce_dice"], default="bce")
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--size", type=int, default=64)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--weights", default=None)
ap.add_argument("--compile", action="store_true")
a = ap.parse_args()

if a.depth < 0 or a.base_channels < 1 or a.channel_mult < 1 or a.groups < 1:
    ap.error("--depth must be >= 0, --base-channels, --channel-mult and --groups >= 1")
if a.steps < 1 or a.warmup < 0:
    ap.error("--steps must be >= 1 and --warmup >= 0")
if a.size % (2**a.depth) != 0:
    ap.error(f"--size {a.size} must be divisible by 2^depth = {2 ** a.depth}")
if a.loss == "cross_entropy" and a.out_channels < 2:
    ap.error("--loss cross_entropy needs --out-channels >= 2 (the number of classes)")
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of [B, C, H, W] at each pixel (ConvNeXt's channels_first)."""

    def __init__(self, c, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def make_norm(c):
    if a.norm == "batchnorm":
        return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
    if a.norm == "groupnorm":
        g = max(d for d in range(1, min(a.groups, c) + 1) if c % d == 0)
        return nn.GroupNorm(g, c, eps=1e-5)
    if a.norm == "layernorm":
        return ChannelLayerNorm(c, eps=1e-5)
    return nn.Identity()


def make_act():
    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}[a.activation]()


class Block(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=True)
        self.norm1 = make_norm(c_out)
        self.act1 = make_act()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=True)
        self.norm2 = make_norm(c_out)
        self.act2 = make_act()

    def forward(self, x):
        x = self.act1(self.norm1(self.conv1(x)))
        return self.act2(self.norm2(self.conv2(x)))


class ResizeConv(nn.Conv2d):
    """Upsample by 2 (nearest or bilinear, a parameter-free op) then a 1x1 convolution; the
    convolution's parameters sit directly under this module's name (`up.{l}.weight`)."""

    def __init__(self, c_in, c_out, mode):
        super().__init__(c_in, c_out, 1)
        self.mode = mode

    def forward(self, x):
        if self.mode == "bilinear":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return super().forward(x)


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        c = [a.base_channels * a.channel_mult**l for l in range(a.depth + 1)]
        self.depth = a.depth
        self.enc = nn.ModuleDict()
        self.enc["0"] = Block(a.in_channels, c[0])
        for l in range(1, a.depth + 1):
            self.enc[str(l)] = Block(c[l - 1], c[l])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleDict()
        self.dec = nn.ModuleDict()
        for l in range(a.depth - 1, -1, -1):
            if a.upsampling == "transposed":
                self.up[str(l)] = nn.ConvTranspose2d(c[l + 1], c[l], 2, stride=2)
            else:
                self.up[str(l)] = ResizeConv(c[l + 1], c[l], a.upsampling)
            self.dec[str(l)] = Block(2 * c[l], c[l])
        self.head = nn.Conv2d(c[0], a.out_channels, 1)

    def forward(self, x):
        skips = [self.enc["0"](x)]
        for l in range(1, self.depth + 1):
            skips.append(self.enc[str(l)](self.pool(skips[-1])))
        h = skips[-1]
        for l in range(self.depth - 1, -1, -1):
            h = self.up[str(l)](h)
            h = self.dec[str(l)](torch.cat([skips[l], h], dim=1))
        return self.head(h)


model = UNet().train()
B, S = a.batch, a.size

if a.weights is not None:
    from safetensors.numpy import load_file

    t = load_file(a.weights)
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v))
        for k, v in t.items()
        if not k.startswith("bench.") and not k.endswith("num_batches_tracked")
    }
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        sys.exit(f"{a.weights}: missing {missing}, unexpected {unexpected}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            sys.exit(f"{a.weights}: {k} has shape {tuple(v.shape)}, the model {tuple(own[k].shape)}")
        state[k] = v.to(own[k].dtype)
    model.load_state_dict(state, strict=False)
    if "bench.x" not in t or "bench.y" not in t:
        sys.exit(f"{a.weights}: needs bench.x and bench.y")
    x = torch.from_numpy(np.ascontiguousarray(t["bench.x"])).to(torch.float32)
    y = torch.from_numpy(np.ascontiguousarray(t["bench.y"]))
    if tuple(x.shape) != (B, a.in_channels, S, S) or tuple(y.shape) != (B, S, S):
        sys.exit(
            f"{a.weights}: bench.x {tuple(x.shape)} / bench.y {tuple(y.shape)} do not match "
            f"[{B}, {a.in_channels}, {S}, {S}] / [{B}, {S}, {S}]"
        )
else:
    g = torch.Generator().manual_seed(a.seed)
    x = torch.randn(B, a.in_channels, S, S, generator=g)
    k = a.out_channels if a.loss == "cross_entropy" else 2
    y = torch.randint(0, k, (B, S, S), generator=g)
y = y.to(torch.long) if a.loss == "cross_entropy" else y.to(torch.float32)

params = sum(p.numel() for p in model.parameters())
opt = torch.optim.Adam(model.parameters(), lr=a.lr)
net = model
if a.compile:
    try:
        net = torch.compile(model)
    except Exception as e:  # noqa: BLE001
        print(f"torch.compile unavailable: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(3)


def loss_fn(z):
    if a.loss == "cross_entropy":
        return F.cross_entropy(z, y)
    z0 = z[:, 0]
    bce = F.binary_cross_entropy_with_logits(z0, y)
    if a.loss == "bce":
        return bce
    p = torch.sigmoid(z0)
    dice = (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    return bce + (1 - dice)


def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x))
    loss.backward()
    opt.step()
    return loss.detach()


# The first step (warmup or timed) is where torch.compile does its work, and fails if it will.
first = True
loss_first = loss_last = None
times = []
for i in range(a.warmup + a.steps):
    start = time.perf_counter()
    if first and a.compile:
        try:
            loss = step()
        except Exception as e:  # noqa: BLE001
            print(f"torch.compile failed: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(3)
    else:
        loss = step()
    elapsed = time.perf_counter() - start
    if first:
        loss_first = loss.item()
        first = False
    if i >= a.warmup:
        times.append(elapsed * 1e3)
        loss_last = loss
loss_last = loss_last.item()

times.sort()
med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
print(
    f"step_ms_median={med:.3f} step_ms_min={times[0]:.3f} step_ms_max={times[-1]:.3f} "
    f"threads={torch.get_num_threads()} params={params} loss_first={loss_first:.6g} "
    f"loss_last={loss_last:.6g}"
)
