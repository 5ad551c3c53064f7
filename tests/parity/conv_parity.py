#!/usr/bin/env python3
"""Parity check of cloudchamber's conv nets (U-Net, CNN classifier) against independent JAX ones.

Usage: conv_parity.py CASE.safetensors [CASE.safetensors ...] [--tol 1e-9]

Each case file is written by the Rust conv parity test (`tests/parity_unet.rs`) and holds, every
tensor in f64 (row-major, PyTorch's layouts), images NCHW:

- the initial parameters under their PyTorch names (listed below with the models). Every tensor
  whose name starts with none of `batch.`, `eval.` and `rust.` is one. The trainable parameters are
  those the description lists under `trainable`, or, without that field, all of them except
  BatchNorm's state `{prefix}.running_mean` and `{prefix}.running_var`; the others (fixed
  biased-activation parameters, say) are read by the forward pass and never change;
- the K training batches, k = 0..K−1: `batch.{k}.x` [B, C_in, H, W] and `batch.{k}.y`, for a
  U-Net [B, H, W] per-pixel targets (class indices 0..out_channels−1 for "cross_entropy" and for
  multi-class "dice"; 0 or 1 for the binary losses), for the classifier [B] class indices
  0..classes−1; targets are stored as f64 holding whole numbers;
- what Rust computed: `rust.loss` [K] (each step's loss, on that step's batch, before its update),
  `rust.grad.{name}` (the gradient of the first step's loss, for every trainable parameter, same
  shape as the parameter, and for nothing else) and `rust.final.{name}` (every initial tensor,
  BatchNorm's running statistics included, after K steps);
- optionally, a held-out batch `eval.x`, `eval.y` (shaped as a training batch) and what Rust
  computed on it with the trained model in evaluation mode (BatchNorm normalizing by its running
  statistics): `rust.eval.logits` (CNN [B, classes], U-Net [B, out_channels, H, W]) and
  `rust.eval.loss` [1] (the model's loss against `eval.y`). All four or none;
- a JSON description of the case, a string in the safetensors metadata under the key `case`:

      label          string, names the case in the report
      model          "unet" or "cnn"
      (unet)         depth (int ≥ 0), base_channels (int), channel_mult (int), upsampling
                     ("transposed" | "nearest" | "bilinear"), in_channels, out_channels
      (cnn)          channels (list of ints, one per stage), pool ("max" | "avg"), in_channels,
                     classes
      loss           unet: "cross_entropy" | "bce" | "dice" | "bce_dice"; cnn: "cross_entropy"
      dice_weight    float, the weight of the dice term of "bce_dice"
      norm           "batchnorm" | "groupnorm" | "layernorm" | "none"
      norm_eps       float, the eps of the norm
      groups         int, GroupNorm's number of groups (divides every normed channel count)
      activation     identity, relu, leaky_relu, elu, selu, gelu, gelu_tanh, silu, tanh,
                     sigmoid, softplus (the torch.nn modules of those names)
      act            bool, true when the biased-activation parameters `.a`, `.b`, `.c` exist
      optimizer      {"lr", "beta1", "beta2", "eps", "weight_decay"} of torch.optim.AdamW; lr is
                     one number (constant) or a list of K numbers (step k uses lr[k]); an
                     optional "kind" must be "adamw"
      decay          list of the parameter names that get weight decay (all trainable)
      trainable      optional list of the trained parameter names (see above)
      momentum       BatchNorm's running-statistics momentum (torch's default 0.1)
      steps          K

  Fields a case does not use (dice_weight outside "bce_dice", groups outside "groupnorm",
  momentum without BatchNorm, the other model's fields) may be left out.

Layers, as the torch.nn modules define them (the models use stride 1, dilation 1, groups 1
convolutions; the helpers below take the general arguments):

- Conv2d: weight [C_out, C_in/groups, kh, kw], bias [C_out]; cross-correlation, zero padding;
- ConvTranspose2d: weight [C_in, C_out/groups, kh, kw], bias [C_out]; input pixel (i, j) adds
  x·w[ci, co, ki, kj] to output pixel (i·s − p + ki·d, j·s − p + kj·d); output_padding 0;
- MaxPool2d(2, 2) (the gradient goes to the first maximum of a window in row-major order, as
  torch's kernel keeps the first), AvgPool2d(2, 2), both flooring odd sizes;
- nn.Upsample(scale_factor=2), "nearest" (pixel (i, j) copies (i//2, j//2)) or "bilinear" with
  align_corners=False: source coordinate (dst + 0.5)/2 − 0.5, clamped at 0 below, the neighbour
  beyond the last pixel being the last pixel;
- norms over channels, `norm`: "batchnorm" = BatchNorm2d in train mode (batch mean and biased
  variance over N, H, W; `{prefix}.weight`, `{prefix}.bias` [C], state `{prefix}.running_mean`,
  `{prefix}.running_var` [C], updated after each step's forward as
  running ← (1 − momentum)·running + momentum·batch statistic, the variance unbiased by
  n/(n − 1), n = B·H·W; in evaluation mode it normalizes by the running statistics instead,
  (x − running_mean)/sqrt(running_var + eps)·weight + bias); "groupnorm" = GroupNorm(groups, C)
  (per sample, mean and biased variance over each group of C/groups consecutive channels and
  H, W; weight, bias [C]); "layernorm" =
  ConvNeXt's channels-first LayerNorm (per (n, h, w), mean and biased variance over C; weight,
  bias [C]); "none" = no norm and no parameters. Always (x − mean)/sqrt(var + eps)·weight + bias;
- activation: f(x) or, with `act`, the biased form a·f(x − b) + c, where `{prefix}.a`, `.b`, `.c`
  are each [] (one scalar) or [C] (per channel, broadcast over N, H, W).

U-Net (Ronneberger et al. 2015; `model` "unet"), channels c_l = base_channels·channel_mult^l:

- block(name, c_in, c_out)(x) = act2(norm2(conv2(act1(norm1(conv1(x)))))), with conv1 =
  Conv2d(c_in, c_out, 3, padding=1) `{name}.conv1.{weight,bias}`, norm1 `{name}.norm1.*`,
  act1 `{name}.act1.{a,b,c}`, conv2 = Conv2d(c_out, c_out, 3, padding=1) `{name}.conv2.*`,
  `{name}.norm2.*`, `{name}.act2.{a,b,c}`;
- encoder: e_0 = block("enc.0", in_channels, c_0)(x);
  e_l = block("enc.{l}", c_{l−1}, c_l)(maxpool2(e_{l−1})) for l = 1..depth;
- decoder: h = e_depth; for l = depth−1 down to 0: u = up_l(h),
  h = block("dec.{l}", 2·c_l, c_l)(concat([e_l, u], channel axis)) (the skip first);
- up_l, `up.{l}.{weight,bias}`: "transposed" = ConvTranspose2d(c_{l+1}, c_l, 2, stride=2)
  (weight [c_{l+1}, c_l, 2, 2]); "nearest"/"bilinear" = Upsample ×2 then Conv2d(c_{l+1}, c_l, 1)
  (weight [c_l, c_{l+1}, 1, 1]);
- head: Conv2d(c_0, out_channels, 1), `head.{weight,bias}`; logits z [B, out_channels, H, W].
  H and W must be divisible by 2^depth.

Segmentation losses (`loss`), means and sums over all B·H·W pixels of the batch:

- "cross_entropy" (out_channels = K ≥ 2 classes): torch.nn.functional.cross_entropy(z, y);
- "bce" (out_channels 1): binary_cross_entropy_with_logits(z[:, 0], y);
- "dice": out_channels 1: p = sigmoid(z[:, 0]), dice = (2·Σ p·y + 1)/(Σ p + Σ y + 1),
  loss = 1 − dice; out_channels K ≥ 2: p = softmax(z) over channels, dice_k the same against the
  one-hot target of class k for k = 1..K−1 (class 0, background, left out),
  loss = 1 − mean_k dice_k;
- "bce_dice" (out_channels 1): bce + dice_weight·(1 − dice).

CNN classifier (`model` "cnn"): for stage i, c_i = channels[i] (c_{−1} = in_channels):
Conv2d(c_{i−1}, c_i, 3, padding=1) `features.{i}.conv.{weight,bias}`, norm `features.{i}.norm.*`,
activation `features.{i}.act.{a,b,c}`, then MaxPool2d(2, 2) or AvgPool2d(2, 2) (`pool`); then the
mean over H, W → [B, c_last] and Linear `head.weight` [classes, c_last], `head.bias` [classes];
loss torch.nn.functional.cross_entropy (mean over B).

Gradients come from `jax.grad`; the update is `torch.optim.AdamW` as written in the pseudocode of
the PyTorch documentation (θ ← θ − lr·λ·θ, then the bias-corrected Adam step), with weight decay
λ on exactly the tensors in `decay` and 0 on the others (torch with two param groups).

Error measure, per tensor: max over elements of |rust − jax| / max(|jax|, floor); losses with
floor 0. For gradients, floor = 1e-5 × the largest |jax| gradient of the case, so that elements
that are zero up to rounding (a conv bias feeding a BatchNorm) are judged against the scale of the
model. For final parameters (as gpt_parity.py), floor = the larger of 1e-6 × the largest |jax|
final tensor and the gradient floor times Σ_t lr_t / (sqrt(v̂_t) + eps) of that element: how far
a gradient error of the size the gradient check accepts can move it through Adam. That matters
where a gradient is zero up to rounding — a conv bias before BatchNorm (or before a GroupNorm of
one channel per group), whose ~1e-17 of noise Adam divides by eps, different noise in each
implementation. A BatchNorm's running mean, which follows the bias of the conv feeding it one
for one, gets that bias's Σ_t. Rows that pass only thanks to this are marked with their plain
error (floor 1e-6 × the largest final tensor). A parameter the description does not use, one it
needs that Rust does not have, or one of another shape than the description implies is a
mismatch too.

BatchNorm's running statistics are checked twice: as final tensors, updated along the JAX
training with the description's momentum; and by PyTorch's rule with PyTorch's constants alone —
initial values 0 and 1 (checked: absolute error), running ← 0.9·running + 0.1·statistic of each
training step's BatchNorm input, the variance unbiased (numpy's ddof=1) — with the final
tensors' floors. The held-out pass is recomputed in evaluation mode from Rust's final tensors
(so training drift plays no part): the logits with floor 1e-5 × the largest |jax| logit, the loss
with floor 0. For a BatchNorm case the report also says how far the same logits computed with
batch statistics are, to show that the check tells the two modes apart.

The check fails when any error exceeds --tol (default 1e-9). Exit status: 0 all cases agree,
1 a mismatch, 2 the environment lacks jax/numpy/safetensors or a file is malformed.

Choosing cases: the channel LayerNorm of 2 channels is degenerate — at each pixel it maps the
pair to ±d/sqrt(d² + eps)·w + b, whose slope is 1/sqrt(eps) where the two channels nearly agree
— and amplifies rounding differences past 1e-9 within a few steps (U-Net, base_channels 2, depth
2: 1.7e-8 between two JAX runs of the same model, jitted and not; 3 channels: 5e-11). Use at
least 3 channels with "layernorm".
"""

import functools
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
    sigmoid,
)

HIGHEST = jax.lax.Precision.HIGHEST
TORCH_BN_MOMENTUM = 0.1  # torch.nn.BatchNorm2d's default

# ------------------------------------------------------------------------------------------------
# Layers on NCHW images, as the torch.nn modules define them.
# ------------------------------------------------------------------------------------------------


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: x [N, C_in, H, W], w [C_out, C_in/groups, kh, kw], b [C_out];
    cross-correlation with zero padding."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    y = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(sh, sw),
        padding=[(ph, ph), (pw, pw)],
        rhs_dilation=(dh, dw),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        feature_group_count=groups,
        precision=HIGHEST,
    )
    return y if b is None else y + b[None, :, None, None]


def conv_transpose2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv_transpose2d (output_padding 0): x [N, C_in, H, W],
    w [C_in, C_out/groups, kh, kw], b [C_out]. Input pixel (i, j) adds x·w[ci, co, ki, kj] to
    output pixel (i·s − p + ki·d, j·s − p + kj·d); the output is (H − 1)·s − 2p + d·(kh − 1) + 1
    high. Written as the gradient of conv2d with respect to its input: the input dilated by the
    stride (lhs dilation), padded by d·(k − 1) − p, convolved with the spatially flipped kernel
    whose in/out axes are swapped within each group."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    c_in, c_out_g, kh, kw = w.shape
    g = groups
    wc = w.reshape(g, c_in // g, c_out_g, kh, kw).transpose(0, 2, 1, 3, 4)
    wc = wc.reshape(g * c_out_g, c_in // g, kh, kw)[:, :, ::-1, ::-1]
    qh, qw = dh * (kh - 1) - ph, dw * (kw - 1) - pw
    y = jax.lax.conv_general_dilated(
        x,
        wc,
        window_strides=(1, 1),
        padding=[(qh, qh), (qw, qw)],
        lhs_dilation=(sh, sw),
        rhs_dilation=(dh, dw),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        feature_group_count=g,
        precision=HIGHEST,
    )
    return y if b is None else y + b[None, :, None, None]


def _windows2(x):
    """[N, C, H, W] → [N, C, H//2, W//2, 4], the 2×2 windows (row-major within each); odd edges
    dropped as torch's floor mode does."""
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return x.reshape(n, c, h // 2, w // 2, 4)


def maxpool2(x):
    """MaxPool2d(2, 2). The gradient goes to the first maximum of the window (row-major), as
    torch's kernel keeps the first index it sees (jnp.max would split it among ties)."""
    win = _windows2(x)
    idx = jax.lax.stop_gradient(jnp.argmax(win, axis=-1))
    return jnp.take_along_axis(win, idx[..., None], axis=-1)[..., 0]


def avgpool2(x):
    """AvgPool2d(2, 2)."""
    return jnp.mean(_windows2(x), axis=-1)


def upsample_nearest2(x):
    """nn.Upsample(scale_factor=2, mode='nearest'): output (i, j) = input (i//2, j//2)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)


def _bilinear_taps(n_in):
    """align_corners=False for ×2 (torch's area_pixel_compute_source_index and
    upsample_bilinear2d): src = (dst + 0.5)·(1/2) − 0.5, clamped at 0; i0 = floor(src),
    i1 = i0 + 1 unless i0 is the last pixel; weight of i1 = src − i0."""
    dst = np.arange(2 * n_in, dtype=np.float64)
    src = np.maximum((dst + 0.5) * 0.5 - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    lam1 = src - i0
    return i0, i1, 1.0 - lam1, lam1


def upsample_bilinear2(x):
    """nn.Upsample(scale_factor=2, mode='bilinear') (align_corners=False)."""
    _, _, h, w = x.shape
    h0, h1, hl0, hl1 = _bilinear_taps(h)
    w0, w1, wl0, wl1 = _bilinear_taps(w)
    rows = x[:, :, h0, :] * hl0[None, None, :, None] + x[:, :, h1, :] * hl1[None, None, :, None]
    return rows[:, :, :, w0] * wl0 + rows[:, :, :, w1] * wl1


def batchnorm2d_eval(x, w, b, running_mean, running_var, eps):
    """BatchNorm2d in evaluation mode: (x − running_mean)/sqrt(running_var + eps)·w + b per
    channel; the batch plays no part."""
    mean, var = running_mean[None, :, None, None], running_var[None, :, None, None]
    return (x - mean) / jnp.sqrt(var + eps) * w[None, :, None, None] + b[None, :, None, None]


def batchnorm2d_train(x, w, b, eps):
    """BatchNorm2d in training mode: per channel over N, H, W, biased variance. Also returns the
    batch mean and biased variance (for the running statistics)."""
    mean = jnp.mean(x, axis=(0, 2, 3))
    var = jnp.mean((x - mean[None, :, None, None]) ** 2, axis=(0, 2, 3))
    y = (x - mean[None, :, None, None]) / jnp.sqrt(var[None, :, None, None] + eps)
    return y * w[None, :, None, None] + b[None, :, None, None], (mean, var)


def groupnorm(x, groups, w, b, eps):
    """torch.nn.GroupNorm(groups, C): per sample and group of C/groups consecutive channels, mean
    and biased variance over those channels and H, W; per-channel affine."""
    n, c, h, wd = x.shape
    xg = x.reshape(n, groups, c // groups, h, wd)
    mean = jnp.mean(xg, axis=(2, 3, 4), keepdims=True)
    var = jnp.mean((xg - mean) ** 2, axis=(2, 3, 4), keepdims=True)
    y = ((xg - mean) / jnp.sqrt(var + eps)).reshape(n, c, h, wd)
    return y * w[None, :, None, None] + b[None, :, None, None]


def layernorm_channels(x, w, b, eps):
    """ConvNeXt's channels-first LayerNorm: at each (n, h, w), mean and biased variance over C."""
    mean = jnp.mean(x, axis=1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * w[None, :, None, None] + b[None, :, None, None]


# ------------------------------------------------------------------------------------------------
# The networks.
# ------------------------------------------------------------------------------------------------


class Params:
    """The parameters by name, recording which ones the forward pass reads and checking their
    shapes."""

    def __init__(self, values, used):
        self.values = values
        self.used = used

    def take(self, name, shape):
        if name not in self.values:
            raise DescriptionMismatch(f"the description needs `{name}`, which Rust does not have")
        v = self.values[name]
        if tuple(v.shape) != tuple(shape):
            raise DescriptionMismatch(
                f"`{name}` has shape {list(v.shape)}, the description implies {list(shape)}"
            )
        self.used.add(name)
        return v

    def take_act(self, name, c):
        """A biased-activation parameter: [] or [c], returned ready to broadcast over NCHW."""
        if name not in self.values:
            raise DescriptionMismatch(f"the description needs `{name}`, which Rust does not have")
        v = self.values[name]
        if tuple(v.shape) == ():
            self.used.add(name)
            return v
        if tuple(v.shape) == (c,):
            self.used.add(name)
            return v[None, :, None, None]
        raise DescriptionMismatch(f"`{name}` has shape {list(v.shape)}, expected [] or [{c}]")


class Layers:
    """The named layers of one forward pass, in training mode (BatchNorm with batch statistics)
    or, with `eval_mode`, in evaluation mode (BatchNorm with `{prefix}.running_mean` and
    `{prefix}.running_var` read from the parameters). In training mode it collects BatchNorm's
    batch statistics (mean, biased variance) and its input by prefix, and in `bn_info` (filled
    while tracing: static, not traced values) each BatchNorm's element count n = B·H·W and the
    bias of the conv that feeds it."""

    def __init__(self, case, p, bn_info, eval_mode=False):
        self.case = case
        self.p = p
        self.norm = case["norm"]
        self.f = ACTIVATIONS[case["activation"]]
        self.eval_mode = eval_mode
        self.bn_stats = {}
        self.bn_inputs = {}
        self.bn_info = bn_info
        self.last_conv_bias = None

    def conv(self, name, x, c_out, k, padding):
        c_in = x.shape[1]
        w = self.p.take(f"{name}.weight", (c_out, c_in, k, k))
        b = self.p.take(f"{name}.bias", (c_out,))
        self.last_conv_bias = f"{name}.bias"
        return conv2d(x, w, b, padding=padding)

    def conv_transpose(self, name, x, c_out, k, stride):
        c_in = x.shape[1]
        w = self.p.take(f"{name}.weight", (c_in, c_out, k, k))
        b = self.p.take(f"{name}.bias", (c_out,))
        return conv_transpose2d(x, w, b, stride=stride)

    def normalize(self, name, x):
        norm, case = self.norm, self.case
        if norm == "none":
            return x
        c = x.shape[1]
        w = self.p.take(f"{name}.weight", (c,))
        b = self.p.take(f"{name}.bias", (c,))
        eps = case["norm_eps"]
        if norm == "batchnorm" and self.eval_mode:
            rm = self.p.take(f"{name}.running_mean", (c,))
            rv = self.p.take(f"{name}.running_var", (c,))
            return batchnorm2d_eval(x, w, b, rm, rv, eps)
        if norm == "batchnorm":
            y, stats = batchnorm2d_train(x, w, b, eps)
            self.bn_stats[name] = stats
            self.bn_inputs[name] = x
            self.bn_info[name] = (x.shape[0] * x.shape[2] * x.shape[3], self.last_conv_bias)
            return y
        if norm == "groupnorm":
            return groupnorm(x, case["groups"], w, b, eps)
        if norm == "layernorm":
            return layernorm_channels(x, w, b, eps)
        raise ValueError(f"unknown norm {norm!r}")

    def activate(self, name, x):
        if self.case["act"]:
            c = x.shape[1]
            a, b, cc = (self.p.take_act(f"{name}.{k}", c) for k in "abc")
            return biased(self.f, x, a, b, cc)
        return self.f(x)


def unet_channels(case):
    chans = [case["base_channels"] * case["channel_mult"] ** l for l in range(case["depth"] + 1)]
    if any(c != int(c) or c < 1 for c in chans):
        raise ValueError(f"channel counts {chans} are not positive whole numbers")
    return [int(c) for c in chans]


def unet_forward(case, L, x):
    """U-Net (Ronneberger et al. 2015) with padded convolutions: logits [B, out_channels, H, W]."""
    ch = unet_channels(case)
    depth = case["depth"]

    def block(name, h, c_out):
        for i in (1, 2):
            h = L.conv(f"{name}.conv{i}", h, c_out, 3, 1)
            h = L.activate(f"{name}.act{i}", L.normalize(f"{name}.norm{i}", h))
        return h

    skips = [block("enc.0", x, ch[0])]
    for l in range(1, depth + 1):
        skips.append(block(f"enc.{l}", maxpool2(skips[-1]), ch[l]))
    h = skips[depth]
    for l in range(depth - 1, -1, -1):
        if case["upsampling"] == "transposed":
            u = L.conv_transpose(f"up.{l}", h, ch[l], 2, 2)
        elif case["upsampling"] == "nearest":
            u = L.conv(f"up.{l}", upsample_nearest2(h), ch[l], 1, 0)
        elif case["upsampling"] == "bilinear":
            u = L.conv(f"up.{l}", upsample_bilinear2(h), ch[l], 1, 0)
        else:
            raise ValueError(f"unknown upsampling {case['upsampling']!r}")
        h = block(f"dec.{l}", jnp.concatenate([skips[l], u], axis=1), ch[l])
    return L.conv("head", h, case["out_channels"], 1, 0)


def cnn_forward(case, L, x):
    """Conv → norm → activation → 2×2 pool per stage, global average pool, Linear: logits
    [B, classes]."""
    h = x
    for i, c in enumerate(case["channels"]):
        pre = f"features.{i}"
        h = L.activate(f"{pre}.act", L.normalize(f"{pre}.norm", L.conv(f"{pre}.conv", h, c, 3, 1)))
        if case["pool"] == "max":
            h = maxpool2(h)
        elif case["pool"] == "avg":
            h = avgpool2(h)
        else:
            raise ValueError(f"unknown pool {case['pool']!r}")
    g = jnp.mean(h, axis=(2, 3))
    w = L.p.take("head.weight", (case["classes"], g.shape[1]))
    b = L.p.take("head.bias", (case["classes"],))
    return g @ w.T + b  # torch.nn.Linear


# ------------------------------------------------------------------------------------------------
# Losses, as torch.nn.functional defines them (reduction 'mean').
# ------------------------------------------------------------------------------------------------


def cross_entropy(logits, targets):
    """cross_entropy(logits [B, K, ...], targets [B, ...]): mean over B and the other axes of
    −log softmax(logits)[target] over axis 1."""
    logp = jax.nn.log_softmax(logits, axis=1)
    nll = -jnp.take_along_axis(logp, targets[:, None], axis=1)[:, 0]
    return jnp.mean(nll)


def bce_with_logits(z, y):
    """binary_cross_entropy_with_logits: mean of −[y log σ(z) + (1 − y) log(1 − σ(z))], written
    stably as max(z, 0) − z·y + log(1 + exp(−|z|))."""
    return jnp.mean(jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z))))


def dice_score(p, t):
    """Soft Dice with smoothing 1, sums over the whole batch: (2 Σ p t + 1) / (Σ p + Σ t + 1)."""
    return (2.0 * jnp.sum(p * t) + 1.0) / (jnp.sum(p) + jnp.sum(t) + 1.0)


def segmentation_loss(case, z, y):
    loss = case["loss"]
    k = z.shape[1]
    if loss == "cross_entropy":
        return cross_entropy(z, y.astype(jnp.int64))
    if loss == "dice" and k >= 2:
        p = jax.nn.softmax(z, axis=1)
        onehot = (y.astype(jnp.int64)[:, None] == jnp.arange(k)[None, :, None, None]).astype(z.dtype)
        dices = jnp.stack([dice_score(p[:, c], onehot[:, c]) for c in range(1, k)])
        return 1.0 - jnp.mean(dices)
    z0 = z[:, 0]
    if loss == "bce":
        return bce_with_logits(z0, y)
    if loss == "dice":
        return 1.0 - dice_score(sigmoid(z0), y)
    if loss == "bce_dice":
        return bce_with_logits(z0, y) + case["dice_weight"] * (1.0 - dice_score(sigmoid(z0), y))
    raise ValueError(f"unknown loss {loss!r}")


# ------------------------------------------------------------------------------------------------
# The check.
# ------------------------------------------------------------------------------------------------


def describe(case, x_shape):
    images = "×".join(str(s) for s in x_shape)
    if case["model"] == "unet":
        arch = (
            f"U-Net depth {case['depth']}, channels {unet_channels(case)}, "
            f"{case['upsampling']} upsampling, {case['in_channels']} → {case['out_channels']} "
            f"channels, loss {case['loss']}"
        )
        if case["loss"] == "bce_dice":
            arch += f" (dice weight {case['dice_weight']})"
    else:
        arch = f"CNN channels {case['channels']}, {case['pool']} pool, {case['classes']} classes"
    norm = case["norm"] + (f" ({case['groups']} groups)" if case["norm"] == "groupnorm" else "")
    act = case["activation"] + (" biased" if case["act"] else "")
    return (
        f"{arch}, {norm}, {act}; images {images}, {case['steps']} steps of AdamW "
        f"wd {case['optimizer']['weight_decay']} on {len(case['decay'])} tensors"
    )


def check_batch(case, x, y, name, classes):
    """Raises ValueError where the images `{name}.x` or the targets `{name}.y` are malformed."""
    model = case["model"]
    if x.ndim != 4 or x.shape[1] != case["in_channels"]:
        raise ValueError(f"{name}.x has shape {list(x.shape)}, not [B, {case['in_channels']}, H, W]")
    B, _, H, W = x.shape
    if model == "unet":
        want = (B, H, W)
        s = 2 ** case["depth"]
        if H % s or W % s:
            raise ValueError(f"images {H}×{W} are not divisible by 2^depth = {s}")
    else:
        want = (B,)
    if tuple(y.shape) != want:
        raise ValueError(f"{name}.y has shape {list(y.shape)}, expected {list(want)}")
    if not (np.all(y == np.round(y)) and np.all(y >= 0) and np.all(y < classes)):
        raise ValueError(f"{name}.y holds values that are not class indices 0..{classes - 1}")


def check_description(case, tensors, K):
    """Raises ValueError where the description or the batches are malformed."""
    model = case["model"]
    if model not in ("unet", "cnn"):
        raise ValueError(f"unknown model {model!r}")
    if case["activation"] not in ACTIVATIONS:
        raise ValueError(f"unknown activation {case['activation']!r}")
    if case["norm"] not in ("batchnorm", "groupnorm", "layernorm", "none"):
        raise ValueError(f"unknown norm {case['norm']!r}")
    if model == "unet":
        chans = unet_channels(case)
        n_out = case["out_channels"]
        loss = case["loss"]
        if loss not in ("cross_entropy", "bce", "dice", "bce_dice"):
            raise ValueError(f"unknown loss {loss!r}")
        if loss == "cross_entropy" and n_out < 2:
            raise ValueError("cross_entropy needs out_channels ≥ 2")
        if loss in ("bce", "bce_dice") and n_out != 1:
            raise ValueError(f"{loss} is binary: out_channels must be 1")
        classes = 2 if n_out == 1 else n_out
    else:
        chans = list(case["channels"])
        if case.get("loss", "cross_entropy") != "cross_entropy":
            raise ValueError("the cnn classifier is trained with cross_entropy")
        classes = case["classes"]
    if case["norm"] == "groupnorm":
        bad = [c for c in chans if c % case["groups"] != 0]
        if bad:
            raise ValueError(f"groups {case['groups']} does not divide channel counts {bad}")
    for k in range(K):
        check_batch(case, tensors[f"batch.{k}.x"], tensors[f"batch.{k}.y"], f"batch.{k}", classes)
    held_out = [k for k in ("eval.x", "eval.y", "rust.eval.logits", "rust.eval.loss") if k in tensors]
    if held_out and len(held_out) != 4:
        raise ValueError(
            "the held-out pass needs eval.x, eval.y, rust.eval.logits and rust.eval.loss "
            f"(got {held_out})"
        )
    if held_out:
        check_batch(case, tensors["eval.x"], tensors["eval.y"], "eval", classes)
        if tensors["rust.eval.loss"].shape != (1,):
            raise ValueError("`rust.eval.loss` must be [1]")


def model_loss(case, out, y):
    """The training loss of the model's output `out` against the targets `y` (f64 class indices)."""
    if case["model"] == "unet":
        return segmentation_loss(case, out, y)
    return cross_entropy(out, y.astype(jnp.int64))


def run_case(path, tol):
    case, tensors = load_case(path)
    label = case["label"]
    K = case["steps"]
    hyper = case["optimizer"]
    lrs = hyper["lr"] if isinstance(hyper["lr"], list) else [hyper["lr"]] * K
    if len(lrs) != K:
        raise ValueError(f"{path}: {len(lrs)} learning rates for {K} steps")
    for k in range(K):
        for part in ("x", "y"):
            if f"batch.{k}.{part}" not in tensors:
                raise ValueError(f"{path}: missing batch.{k}.{part}")
    check_description(case, tensors, K)
    if "rust.loss" not in tensors or tensors["rust.loss"].shape != (K,):
        raise ValueError(f"{path}: `rust.loss` must be [{K}]")

    init = {
        k: np.asarray(v, dtype=np.float64)
        for k, v in tensors.items()
        if not k.startswith(("rust.", "batch.", "eval."))
    }
    is_state = lambda n: n.endswith((".running_mean", ".running_var"))  # noqa: E731
    trainable = list(case.get("trainable", [n for n in init if not is_state(n)]))
    for n in trainable:
        if n not in init or is_state(n):
            raise ValueError(f"{path}: trainable `{n}` is not an initial parameter")
    unknown_decay = set(case["decay"]) - set(trainable)
    if unknown_decay:
        raise ValueError(f"{path}: decayed tensors that are not trained: {sorted(unknown_decay)}")
    stray = sorted(
        k[len("rust.grad."):]
        for k in tensors
        if k.startswith("rust.grad.") and k[len("rust.grad."):] not in trainable
    )
    if stray:
        raise ValueError(f"{path}: gradients of tensors that are not trained: {stray}")
    params = {n: init[n] for n in trainable}
    running = {n: init[n] for n in init if is_state(n)}
    fixed = {n: jnp.asarray(v) for n, v in init.items() if n not in params and n not in running}
    opt = AdamW(hyper, trainable, case["decay"])
    momentum = case.get("momentum", 0.1)
    used = set()
    forward = unet_forward if case["model"] == "unet" else cnn_forward

    bn_info = {}  # BatchNorm prefix → (n, feeding conv's bias), filled while tracing

    def objective(tp, x, y):
        L = Layers(case, Params({**fixed, **tp}, used), bn_info)
        out = forward(case, L, x)
        return model_loss(case, out, y), (L.bn_stats, L.bn_inputs)

    value_and_grad = jax.jit(jax.value_and_grad(objective, has_aux=True))

    x0_shape = tensors["batch.0.x"].shape if K else ()
    losses, grads0 = [], None
    # BatchNorm prefix → (running mean, running variance) by torch's rule and constants alone,
    # from the reset values 0 and 1 and each step's BatchNorm input (see the top).
    torch_running = {}
    try:
        for k in range(K):
            x = jnp.asarray(tensors[f"batch.{k}.x"])
            y = jnp.asarray(tensors[f"batch.{k}.y"])
            (loss, (stats, bn_inputs)), grads = value_and_grad(params, x, y)
            losses.append(float(loss))
            if k == 0:
                grads0 = {n: np.asarray(g) for n, g in grads.items()}
            # BatchNorm running statistics (torch: unbiased variance for the estimate).
            for pre, (mean, var) in stats.items():
                n = bn_info[pre][0]
                rm, rv = f"{pre}.running_mean", f"{pre}.running_var"
                if rm not in running or rv not in running:
                    raise DescriptionMismatch(f"Rust has no running statistics for the BatchNorm `{pre}`")
                used.update((rm, rv))
                running[rm] = (1 - momentum) * running[rm] + momentum * np.asarray(mean)
                running[rv] = (1 - momentum) * running[rv] + momentum * np.asarray(var) * n / (n - 1)
            for pre, u in bn_inputs.items():
                u = np.asarray(u)
                c = u.shape[1]
                rm, rv = torch_running.get(pre, (np.zeros(c), np.ones(c)))
                torch_running[pre] = (
                    (1 - TORCH_BN_MOMENTUM) * rm + TORCH_BN_MOMENTUM * u.mean(axis=(0, 2, 3)),
                    (1 - TORCH_BN_MOMENTUM) * rv + TORCH_BN_MOMENTUM * u.var(axis=(0, 2, 3), ddof=1),
                )
            opt.step(params, grads, lrs[k])
    except DescriptionMismatch as e:
        print(f"== {label}: MISMATCH (max relative error inf, tolerance {tol:.0e})")
        print(f"   {describe(case, x0_shape)}")
        print(f"   {e}")
        return False, label, math.inf

    rows = []  # (label, error)
    for n in sorted(set(init) - used):
        rows.append((f"Rust has `{n}`, which the description does not use", math.inf))

    rust_loss = tensors["rust.loss"]
    for k in range(K):
        rows.append((f"loss[step {k}] (jax {losses[k]:.6f})", rel_error(rust_loss[k], losses[k], 0.0)))

    gscale = max((float(np.max(np.abs(g))) for g in (grads0 or {}).values() if g.size), default=0.0)
    gfloor = 1e-5 * gscale
    if K:
        for n in trainable:
            key = f"rust.grad.{n}"
            if key not in tensors:
                raise ValueError(f"{path}: missing {key}")
            rows.append((f"grad step 0 {n}", rel_error(tensors[key], grads0[n], gfloor)))

    # Final parameters: the floor includes Adam's amplification of gradient errors (see the top).
    final = {**fixed, **running, **params}
    # A BatchNorm's running mean follows the bias of the conv feeding it one for one, and that
    # bias has a gradient of pure rounding noise: it gets that bias's sensitivity.
    sensitivity = dict(opt.sensitivity)
    for pre, (_, bias) in bn_info.items():
        if bias is not None and bias in sensitivity:
            sensitivity[f"{pre}.running_mean"] = sensitivity[bias]
    pscale = max((float(np.max(np.abs(v))) for v in final.values() if v.size), default=0.0)
    for n in sorted(final):
        key = f"rust.final.{n}"
        if key not in tensors:
            raise ValueError(f"{path}: missing {key}")
        floor = np.maximum(1e-6 * pscale, gfloor * sensitivity.get(n, 0.0))
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

    # The running statistics once more, by PyTorch's rule with PyTorch's constants rather than
    # the description's: reset to 0 and 1, momentum 0.1, the unbiased variance of each training
    # step's BatchNorm input (numpy's ddof=1). Same floors as the final parameters.
    for pre in sorted(torch_running):
        for kind, ref, reset in zip(("running_mean", "running_var"), torch_running[pre], (0.0, 1.0)):
            n = f"{pre}.{kind}"
            rows.append((
                f"initial {n} = {reset:g} (torch's reset value)",
                rel_error(init[n], np.full_like(ref, reset), 1.0),
            ))
            floor = np.maximum(1e-6 * pscale, gfloor * sensitivity.get(n, 0.0))
            rows.append((
                f"torch rule: {n} after {K} steps (momentum {TORCH_BN_MOMENTUM}, unbiased variance)",
                rel_error(tensors[f"rust.final.{n}"], ref, floor),
            ))

    # The held-out pass: the trained model in evaluation mode, rebuilt from Rust's final tensors
    # (BatchNorm's running statistics included), so only the evaluation forward is compared.
    notes = []
    if "eval.x" in tensors:
        ex, ey = jnp.asarray(tensors["eval.x"]), jnp.asarray(tensors["eval.y"])
        trained = {n: jnp.asarray(tensors[f"rust.final.{n}"]) for n in final}

        @functools.partial(jax.jit, static_argnames="eval_mode")
        def run_held_out(values, x, eval_mode):
            return forward(case, Layers(case, Params(values, set()), {}, eval_mode=eval_mode), x)

        def held_out(eval_mode):
            return run_held_out(trained, ex, eval_mode=eval_mode)

        what = "running statistics" if case["norm"] == "batchnorm" else "no batch statistics"
        try:
            z = held_out(True)
            eval_loss = float(model_loss(case, z, ey))
            z = np.asarray(z)
            zfloor = 1e-5 * (float(np.max(np.abs(z))) if z.size else 0.0)
            shape = "×".join(str(d) for d in z.shape)
            rows.append((
                f"eval logits [{shape}] ({what}, Rust's final tensors)",
                rel_error(tensors["rust.eval.logits"], z, zfloor),
            ))
            rows.append((
                f"eval loss (jax {eval_loss:.6f})",
                rel_error(tensors["rust.eval.loss"][0], eval_loss, 0.0),
            ))
            if case["norm"] == "batchnorm":
                zb = np.asarray(held_out(False))
                gap = float(np.max(np.abs(zb - z))) / max(float(np.max(np.abs(z))), 1e-300)
                notes.append(
                    f"the same logits with batch statistics differ by {gap:.2e} (of the largest): "
                    "the eval check tells the two apart"
                )
        except DescriptionMismatch as e:
            rows.append((f"eval logits: {e}", math.inf))

    worst = max((e for _, e in rows), default=0.0)
    ok = worst <= tol
    print(f"== {label}: {'ok' if ok else 'MISMATCH'} (max relative error {worst:.2e}, tolerance {tol:.0e})")
    print(f"   {describe(case, x0_shape)}")
    for note in notes:
        print(f"   {note}")
    if not ok:
        bad = sorted((r for r in rows if r[1] > tol), key=lambda r: -r[1])
        print(f"   worst: {'; '.join(f'{lab} {e:.2e}' for lab, e in bad[:5])}")
    for lab, e in rows:
        flag = "" if e <= tol else "   <-- exceeds tolerance"
        print(f"   {e:9.2e}  {lab}{flag}")
    return ok, label, worst


if __name__ == "__main__":
    from parity_cli import main

    main("conv_parity.py", __doc__, run_case)
