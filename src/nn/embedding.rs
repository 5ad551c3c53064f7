//! Token and position embeddings (`torch.nn.Embedding`): `x[b·T + t] = wte[token] + wpe[t]`,
//! forward and backward. Shapes: `tokens: [B·T]`, tables `[V, C]` and `[T_max, C]`, `x: [B·T, C]`.

use crate::engine::{par, Float};

/// `x = wte[tokens] (+ wpe[t])`, in row blocks over the pool.
pub fn forward<F: Float>(
    tokens: &[usize],
    wte: &[F],
    wpe: Option<&[F]>,
    seq: usize,
    c: usize,
    x: &mut [F],
) {
    let rows = x.len() / c;
    par::for_row_blocks(rows, par::rows(x, c), |_, r, block| {
        for (row, i) in block.chunks_exact_mut(c).zip(r) {
            let tok = tokens[i];
            row.copy_from_slice(&wte[tok * c..(tok + 1) * c]);
            if let Some(wpe) = wpe {
                let t = i % seq;
                for (x, &p) in row.iter_mut().zip(&wpe[t * c..(t + 1) * c]) {
                    *x += p;
                }
            }
        }
    });
}

/// `x[b·T + t] += wpe[t]`: positions added onto an input already in `x` (a read-in layer's
/// output), in row blocks over the pool. `x: [B·T, C]`.
pub fn add_positions<F: Float>(wpe: &[F], seq: usize, c: usize, x: &mut [F]) {
    let rows = x.len() / c;
    par::for_row_blocks(rows, par::rows(x, c), |_, r, block| {
        for (row, i) in block.chunks_exact_mut(c).zip(r) {
            let t = i % seq;
            add(row, &wpe[t * c..(t + 1) * c]);
        }
    });
}

/// Items of the backward pass: each owns a block of table rows (token ids or positions) and
/// scans every token, so a few suffice.
const ITEMS: usize = 8;

/// `dwte[tok] += g[r]` for every row `r` with token `tok`, and `dwpe[t] += g[r]` for every row
/// at position `t`: each item adds its table rows' gradients in row order, the same sums as one
/// serial pass, whatever the thread count. `g: [B·T, C]`.
pub fn backward<F: Float>(
    tokens: &[usize],
    g: &[F],
    dwte: &mut [F],
    dwpe: Option<&mut [F]>,
    seq: usize,
    c: usize,
) {
    let rows = g.len() / c;
    let vocab = dwte.len() / c;
    let per = vocab.div_ceil(ITEMS);
    par::for_items(ITEMS, par::rows(dwte, per * c), |blk, table| {
        for (r, &tok) in tokens[..rows].iter().enumerate() {
            if tok / per == blk {
                let at = (tok - blk * per) * c;
                add(&mut table[at..at + c], &g[r * c..(r + 1) * c]);
            }
        }
    });
    if let Some(dwpe) = dwpe {
        backward_positions(g, dwpe, seq, c);
    }
}

/// `dwpe[t] += g[r]` for every row `r` at position `t`, summed in row order per position
/// whatever the thread count. `g: [B·T, C]`.
pub fn backward_positions<F: Float>(g: &[F], dwpe: &mut [F], seq: usize, c: usize) {
    let rows = g.len() / c;
    let per = seq.div_ceil(ITEMS);
    let batch = rows / seq.max(1);
    par::for_items(ITEMS, par::rows(dwpe, per * c), |blk, table| {
        for t in blk * per..((blk + 1) * per).min(seq) {
            let row = &mut table[(t - blk * per) * c..(t - blk * per + 1) * c];
            for b in 0..batch {
                let r = b * seq + t;
                add(row, &g[r * c..(r + 1) * c]);
            }
        }
    });
}

fn add<F: Float>(acc: &mut [F], x: &[F]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}
