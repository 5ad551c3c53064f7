//! Eigenvalues of a small dense real matrix (not symmetric): Householder reduction to upper
//! Hessenberg form, then the Francis double-shift QR iteration with deflation, the classic
//! EISPACK `orthes` + `hqr` pair (Wilkinson & Reinsch 1971; Golub & Van Loan, "Matrix
//! Computations", §7.5). For circuit analysis — the eigenvalues of a head's OV circuit — where
//! the matrices are a few dozen rows.

/// The eigenvalues `(re, im)` of the row-major `n × n` matrix `a` (complex ones in conjugate
/// pairs), in no particular order; `None` if the QR iteration does not converge (60 sweeps for
/// one eigenvalue, which does not happen for finite input in practice).
pub fn eigenvalues(a: &[f64], n: usize) -> Option<Vec<(f64, f64)>> {
    assert_eq!(a.len(), n * n, "eigenvalues: a is not n × n");
    if a.iter().any(|v| !v.is_finite()) {
        return None;
    }
    if n == 0 {
        return Some(Vec::new());
    }
    let mut h: Vec<Vec<f64>> = a.chunks_exact(n).map(<[f64]>::to_vec).collect();
    hessenberg(&mut h);
    hqr(&mut h)
}

/// `h ← QᵀhQ`, upper Hessenberg, by Householder reflections column by column.
#[allow(clippy::needless_range_loop)] // index loops read as the textbook's
fn hessenberg(h: &mut [Vec<f64>]) {
    let n = h.len();
    for m in 1..n.saturating_sub(1) {
        // The reflector that zeroes h[m+1.., m−1] against h[m, m−1].
        let scale: f64 = (m..n).map(|i| h[i][m - 1].abs()).sum();
        if scale == 0.0 {
            continue;
        }
        let mut v: Vec<f64> = (m..n).map(|i| h[i][m - 1] / scale).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let g = if v[0] > 0.0 { -norm } else { norm };
        let beta = norm * norm - v[0] * g; // vᵀv / 2 after v[0] -= g
        v[0] -= g;
        // h ← (I − v vᵀ/β) h on rows m..n.
        for j in 0..n {
            let f = (m..n).map(|i| v[i - m] * h[i][j]).sum::<f64>() / beta;
            for i in m..n {
                h[i][j] -= f * v[i - m];
            }
        }
        // h ← h (I − v vᵀ/β) on columns m..n.
        for row in h.iter_mut() {
            let f = (m..n).map(|j| v[j - m] * row[j]).sum::<f64>() / beta;
            for j in m..n {
                row[j] -= f * v[j - m];
            }
        }
        for row in h.iter_mut().skip(m + 1) {
            row[m - 1] = 0.0;
        }
    }
}

fn sign(a: f64, b: f64) -> f64 {
    if b >= 0.0 {
        a.abs()
    } else {
        -a.abs()
    }
}

/// The Francis double-shift QR iteration on an upper Hessenberg matrix (overwritten).
#[allow(clippy::many_single_char_names, clippy::needless_range_loop)]
fn hqr(a: &mut [Vec<f64>]) -> Option<Vec<(f64, f64)>> {
    let n = a.len();
    let mut out = vec![(0.0, 0.0); n];
    if n == 0 {
        return Some(out);
    }
    let anorm: f64 = (0..n)
        .map(|i| (i.saturating_sub(1)..n).map(|j| a[i][j].abs()).sum::<f64>())
        .sum();
    let mut nn = n as isize - 1;
    let mut t = 0.0;
    let (mut p, mut q, mut r): (f64, f64, f64);
    while nn >= 0 {
        let mut its = 0;
        loop {
            let u = nn as usize;
            // The lowest negligible subdiagonal element splits the matrix at l.
            let mut l = u;
            while l >= 1 {
                let mut s = a[l - 1][l - 1].abs() + a[l][l].abs();
                if s == 0.0 {
                    s = anorm;
                }
                if a[l][l - 1].abs() + s == s {
                    a[l][l - 1] = 0.0;
                    break;
                }
                l -= 1;
            }
            let mut x = a[u][u];
            if l == u {
                // One eigenvalue found.
                out[u] = (x + t, 0.0);
                nn -= 1;
                break;
            }
            let mut y = a[u - 1][u - 1];
            let mut w = a[u][u - 1] * a[u - 1][u];
            if l == u - 1 {
                // Two: the trailing 2 × 2 block's roots.
                p = 0.5 * (y - x);
                q = p * p + w;
                let z = q.abs().sqrt();
                x += t;
                if q >= 0.0 {
                    let z = p + sign(z, p);
                    out[u - 1] = (x + z, 0.0);
                    out[u] = (if z != 0.0 { x - w / z } else { x + z }, 0.0);
                } else {
                    out[u - 1] = (x + p, -z);
                    out[u] = (x + p, z);
                }
                nn -= 2;
                break;
            }
            if its == 60 {
                return None;
            }
            if its == 10 || its == 20 {
                // An exceptional shift breaks a cycle.
                t += x;
                for (i, row) in a.iter_mut().enumerate().take(u + 1) {
                    row[i] -= x;
                }
                let s = a[u][u - 1].abs() + a[u - 1][u - 2].abs();
                x = 0.75 * s;
                y = x;
                w = -0.4375 * s * s;
            }
            its += 1;
            // The double shift from the trailing 2 × 2 block; look for two consecutive small
            // subdiagonal elements to start the bulge at m.
            let mut m = u - 2;
            loop {
                let z = a[m][m];
                let rr = x - z;
                let ss = y - z;
                p = (rr * ss - w) / a[m + 1][m] + a[m][m + 1];
                q = a[m + 1][m + 1] - z - rr - ss;
                r = a[m + 2][m + 1];
                let s = p.abs() + q.abs() + r.abs();
                p /= s;
                q /= s;
                r /= s;
                if m == l {
                    break;
                }
                let uu = a[m][m - 1].abs() * (q.abs() + r.abs());
                let vv = p.abs() * (a[m - 1][m - 1].abs() + z.abs() + a[m + 1][m + 1].abs());
                if uu + vv == vv {
                    break;
                }
                m -= 1;
            }
            for i in m + 2..=u {
                a[i][i - 2] = 0.0;
                if i != m + 2 {
                    a[i][i - 3] = 0.0;
                }
            }
            // The double QR step on rows l..=u and columns m..=u (chasing the bulge).
            let mut k = m;
            while k < u {
                if k != m {
                    p = a[k][k - 1];
                    q = a[k + 1][k - 1];
                    r = if k != u - 1 { a[k + 2][k - 1] } else { 0.0 };
                    x = p.abs() + q.abs() + r.abs();
                    if x != 0.0 {
                        p /= x;
                        q /= x;
                        r /= x;
                    }
                }
                let s = sign((p * p + q * q + r * r).sqrt(), p);
                if s != 0.0 {
                    if k == m {
                        if l != m {
                            a[k][k - 1] = -a[k][k - 1];
                        }
                    } else {
                        a[k][k - 1] = -s * x;
                    }
                    p += s;
                    x = p / s;
                    y = q / s;
                    let z = r / s;
                    q /= p;
                    r /= p;
                    for j in k..=u {
                        let mut pp = a[k][j] + q * a[k + 1][j];
                        if k != u - 1 {
                            pp += r * a[k + 2][j];
                            a[k + 2][j] -= pp * z;
                        }
                        a[k + 1][j] -= pp * y;
                        a[k][j] -= pp * x;
                    }
                    let mmin = if u < k + 3 { u } else { k + 3 };
                    for row in a.iter_mut().take(mmin + 1).skip(l) {
                        let mut pp = x * row[k] + y * row[k + 1];
                        if k != u - 1 {
                            pp += z * row[k + 2];
                            row[k + 2] -= pp * r;
                        }
                        row[k + 1] -= pp * q;
                        row[k] -= pp;
                    }
                }
                k += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    /// `S B S⁻¹` for a block-diagonal `B` with known eigenvalues (real ones and 2 × 2 rotation-
    /// scaling blocks `[[a, −b], [b, a]]`, eigenvalues `a ± ib`) and a random well-conditioned
    /// `S`: the computed eigenvalues match the known ones.
    #[test]
    fn similar_matrices_keep_their_eigenvalues() {
        let mut rng = Rng::new(9);
        for n in [1usize, 2, 3, 5, 8, 13, 32] {
            let mut b = vec![0.0; n * n];
            let mut want = Vec::new();
            let mut i = 0;
            while i < n {
                if i + 1 < n && rng.uniform() < 0.5 {
                    let (re, im) = (rng.normal(), 0.2 + rng.uniform());
                    b[i * n + i] = re;
                    b[i * n + i + 1] = -im;
                    b[(i + 1) * n + i] = im;
                    b[(i + 1) * n + i + 1] = re;
                    want.push((re, im));
                    want.push((re, -im));
                    i += 2;
                } else {
                    let re = rng.normal();
                    b[i * n + i] = re;
                    want.push((re, 0.0));
                    i += 1;
                }
            }
            let s: Vec<f64> = (0..n * n)
                .map(|k| {
                    (if k % (n + 1) == 0 { 1.0 } else { 0.0 })
                        + 0.3 * rng.normal() / (n as f64).sqrt()
                })
                .collect();
            let sinv = invert(&s, n);
            let a = matmul(&matmul(&s, &b, n), &sinv, n);
            let mut got = eigenvalues(&a, n).expect("converges");
            let key = |v: &(f64, f64)| {
                (v.0 * 1e6).round() as i64 * 1_000_000 + (v.1 * 1e3).round() as i64
            };
            got.sort_by_key(key);
            want.sort_by_key(key);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g.0 - w.0).abs() < 1e-8 && (g.1 - w.1).abs() < 1e-8,
                    "n = {n}: {got:?} vs {want:?}"
                );
            }
        }
    }

    /// On random matrices: the sum of the eigenvalues is the trace, and conjugates pair up.
    #[test]
    fn eigenvalues_sum_to_the_trace() {
        let mut rng = Rng::new(3);
        for n in [4usize, 17, 64] {
            let a: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
            let ev = eigenvalues(&a, n).expect("converges");
            let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
            let sum: f64 = ev.iter().map(|v| v.0).sum();
            let imag: f64 = ev.iter().map(|v| v.1).sum();
            assert!((sum - trace).abs() < 1e-9 * n as f64, "{sum} vs {trace}");
            assert!(imag.abs() < 1e-9, "{imag}");
        }
    }

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    c[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        c
    }

    /// Gauss–Jordan with partial pivoting.
    fn invert(a: &[f64], n: usize) -> Vec<f64> {
        let mut m: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let mut r = a[i * n..(i + 1) * n].to_vec();
                r.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
                r
            })
            .collect();
        for c in 0..n {
            let p = (c..n)
                .max_by(|&x, &y| m[x][c].abs().total_cmp(&m[y][c].abs()))
                .unwrap();
            m.swap(c, p);
            let d = m[c][c];
            m[c].iter_mut().for_each(|v| *v /= d);
            for r in 0..n {
                if r != c {
                    let f = m[r][c];
                    let row = m[c].clone();
                    m[r].iter_mut().zip(&row).for_each(|(v, w)| *v -= f * w);
                }
            }
        }
        m.into_iter().flat_map(|r| r[n..].to_vec()).collect()
    }
}
