"""The tiny-sweep JAX peer (`shared/bench/peers/tiny_jax.py`) with the evaluations the sweep's
spec asks of every run: the loss on a 10,000-row test set and on the 1,024-row training set at
steps 0, 100, ..., 1,900 and 2,000 (`log_every = 100`, `n_test` at its default). The training
is the peer's, step for step: 64 seeds of a width-16 depth-2 tanh MLP (8 -> 16 -> 16 -> 1),
teacher-student data, Adam 3e-3, batch 64, 2,000 steps, vmapped over seeds in one jitted scan.

Why: the peer times training alone, while `cloudchamber sweep` also evaluates 21 times on
11,024 rows per run (231k forward rows, against training's 128k rows forward and backward), so
this prints what the same peer takes doing that work too. Prints wall seconds (compile included
and excluded). Usage: python scripts/tiny_jax_with_evals.py
"""
import time

import jax
import jax.numpy as jnp

K, D, W, N, NT, B, STEPS, LR, EVERY = 64, 8, 16, 1024, 10_000, 64, 2000, 3e-3, 100


def init(key):
    ks = jax.random.split(key, 8)  # the peer's draws, so the training is the peer's
    dims = [D, W, W, 1]
    ps = [(jax.random.uniform(ks[i], (dims[i], dims[i + 1]), minval=-1, maxval=1) / jnp.sqrt(dims[i]),
           jax.random.uniform(ks[i + 3], (dims[i + 1],), minval=-1, maxval=1) / jnp.sqrt(dims[i]))
          for i in range(3)]
    tw = jax.random.normal(ks[6], (D, 1)) / jnp.sqrt(D)
    x = jax.random.normal(ks[7], (N, D))
    xt = jax.random.normal(jax.random.fold_in(ks[7], 1), (NT, D))
    return ps, x, jnp.tanh(x @ tw), xt, jnp.tanh(xt @ tw)


def fwd(ps, x):
    for i, (w, b) in enumerate(ps):
        x = x @ w + b
        if i < 2:
            x = jnp.tanh(x)
    return x


def mse(ps, x, y):
    return jnp.mean((fwd(ps, x) - y) ** 2)


def train(key):
    ps, x, y, xt, yt = init(key)
    m = jax.tree.map(jnp.zeros_like, ps)
    v = jax.tree.map(jnp.zeros_like, ps)

    def step(c, t):
        ps, m, v = c
        i = (t.astype(jnp.int32) * B) % N
        xb = jax.lax.dynamic_slice_in_dim(x, i, B)
        yb = jax.lax.dynamic_slice_in_dim(y, i, B)
        l, g = jax.value_and_grad(lambda p: mse(p, xb, yb))(ps)
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        tt = t + 1.0
        ps = jax.tree.map(
            lambda p, m, v: p - LR * (m / (1 - 0.9 ** tt)) / (jnp.sqrt(v / (1 - 0.999 ** tt)) + 1e-8),
            ps, m, v)
        return (ps, m, v), l

    def block(c, t0):
        ps, m, v = c
        ev = jnp.stack([mse(ps, xt, yt), mse(ps, x, y)])
        c, ls = jax.lax.scan(step, (ps, m, v), t0 + jnp.arange(EVERY, dtype=jnp.float32))
        return c, (ev, ls)

    starts = jnp.arange(0, STEPS, EVERY, dtype=jnp.float32)
    (ps, _, _), (evs, ls) = jax.lax.scan(block, (ps, m, v), starts)
    final = jnp.stack([mse(ps, xt, yt), mse(ps, x, y)])
    return ls.reshape(-1), jnp.concatenate([evs, final[None]], axis=0)


f = jax.jit(jax.vmap(train))
keys = jax.random.split(jax.random.PRNGKey(0), K)
t0 = time.perf_counter()
ls, evs = f(keys)
ls.block_until_ready()
t1 = time.perf_counter()
ls, evs = f(keys)
ls.block_until_ready()
t2 = time.perf_counter()
print(f"jax vmap {K} seeds x {STEPS} steps with {evs.shape[1]} evaluations on {NT} + {N} rows: "
      f"{t1 - t0:.2f} s with compile, {t2 - t1:.2f} s compiled; final loss mean {float(ls[:, -1].mean()):.3e} "
      f"(as the peer's), final test loss mean {float(evs[:, -1, 0].mean()):.3e}")
