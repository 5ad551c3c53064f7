//! Safe parallel iteration over the pool: mutable buffers cut into disjoint pieces, one piece per
//! item (a block of rows, a sequence, a parameter), handed to the item's task.
//!
//! A kernel names what each item writes — [`rows`] of a buffer (an item's rows times a width)
//! or a [`slot`] per item (a per-block partial sum) — and gets plain `&mut` slices in its task.
//! The pieces of different items never overlap by construction, so no caller needs `unsafe`:
//! it lives here, once.
//!
//! ```text
//! par::for_row_blocks(bt, (par::rows(y, c), par::rows(mean, 1)), |_, r, (y, mean)| { … });
//! ```

use std::marker::PhantomData;
use std::ops::Range;

use super::ops;
use super::pool;

/// A buffer split among items: what one item may write.
///
/// # Safety
/// Implementations must hand distinct items disjoint pieces: [`for_row_blocks`] and
/// [`for_items`] give every item's piece to a different task at once.
pub unsafe trait Piece: Sync {
    type Out;
    /// The piece of `item`, which covers `rows` (row-block iteration) or the item itself.
    ///
    /// # Safety
    /// Each `item` may be named in one call only (every item's piece is disjoint from every
    /// other item's, which [`Piece`] implementations guarantee; two pieces of one item would
    /// alias).
    unsafe fn piece(&self, item: usize, rows: Range<usize>) -> Self::Out;
}

/// `buf` as rows of `width` elements: an item gets the rows it covers (empty for width 0).
pub fn rows<T: Send>(buf: &mut [T], width: usize) -> Rows<'_, T> {
    Rows {
        ptr: buf.as_mut_ptr(),
        len: buf.len(),
        width,
        by_item: false,
        _borrow: PhantomData,
    }
}

/// `buf` as one slot of `width` elements per item (per row block, per sequence): item `i` gets
/// `i·width..(i + 1)·width`.
pub fn slot<T: Send>(buf: &mut [T], width: usize) -> Rows<'_, T> {
    Rows {
        by_item: true,
        ..rows(buf, width)
    }
}

/// See [`rows`] and [`slot`].
pub struct Rows<'a, T> {
    ptr: *mut T,
    len: usize,
    width: usize,
    by_item: bool,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a `Rows` only hands out disjoint `&mut [T]` pieces (see `piece`), so sharing it between
// threads is sharing `&mut` access to disjoint parts of a `T: Send` buffer.
unsafe impl<T: Send> Sync for Rows<'_, T> {}
// SAFETY: as above; it holds a unique borrow of the buffer for `'a`.
unsafe impl<T: Send> Send for Rows<'_, T> {}

// SAFETY: item `i` gets rows `rows` (distinct items cover distinct rows) or slot `i`, each
// clamped into the buffer: pieces of distinct items never overlap.
unsafe impl<'a, T: Send> Piece for Rows<'a, T> {
    type Out = &'a mut [T];
    unsafe fn piece(&self, item: usize, rows: Range<usize>) -> &'a mut [T] {
        let r = if self.by_item { item..item + 1 } else { rows };
        // The last piece may be cut short by the buffer's end (a ragged final block).
        // Saturating, so that no width wraps an index around (a piece is then empty).
        let start = r.start.saturating_mul(self.width).min(self.len);
        let end = r.end.saturating_mul(self.width).min(self.len).max(start);
        // SAFETY: `start..end` lies inside the borrowed buffer; pieces of distinct items cover
        // distinct rows (or slots), so no two live pieces overlap (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

macro_rules! tuple_piece {
    ($($p:ident),+) => {
        // SAFETY: each member hands distinct items disjoint pieces, so the tuple does.
        unsafe impl<$($p: Piece),+> Piece for ($($p,)+) {
            type Out = ($($p::Out,)+);
            #[allow(non_snake_case)]
            unsafe fn piece(&self, item: usize, rows: Range<usize>) -> Self::Out {
                let ($($p,)+) = self;
                // SAFETY: forwarded: each member upholds the contract for the same item.
                unsafe { ($($p.piece(item, rows.clone()),)+) }
            }
        }
    };
}
tuple_piece!(A);
tuple_piece!(A, B);
tuple_piece!(A, B, C);
tuple_piece!(A, B, C, D);
tuple_piece!(A, B, C, D, E);

/// Calls `f(block, rows, pieces)` for every block of [`ROW_BLOCK`] rows of `0..rows`
/// ([`ops::for_row_blocks`]), with the pieces of `parts` that block covers.
pub fn for_row_blocks<P: Piece>(
    rows: usize,
    parts: P,
    f: impl Fn(usize, Range<usize>, P::Out) + Sync,
) {
    ops::for_row_blocks(rows, &|blk, r| {
        // SAFETY: `for_row_blocks` runs each block exactly once, and blocks cover disjoint rows.
        let pieces = unsafe { parts.piece(blk, r.clone()) };
        f(blk, r, pieces)
    });
}

/// Calls `f(item, pieces)` for `item` in `0..items` over the pool, threads taking items as they
/// come free ([`pool::run_items`]), with the pieces of `parts` that item owns (its row `item`).
pub fn for_items<P: Piece>(items: usize, parts: P, f: impl Fn(usize, P::Out) + Sync) {
    pool::run_items(items, ops::threads(), &|i| {
        // SAFETY: `run_items` runs each item exactly once.
        let pieces = unsafe { parts.piece(i, i..i + 1) };
        f(i, pieces)
    });
}

/// [`for_items`] over the pool only when `parallel` (a pass big enough to pay for a pool call);
/// otherwise in order on this thread. Same results either way.
pub fn for_items_if<P: Piece>(
    parallel: bool,
    items: usize,
    parts: P,
    f: impl Fn(usize, P::Out) + Sync,
) {
    if parallel {
        return for_items(items, parts, f);
    }
    for i in 0..items {
        // SAFETY: each item is named once, in turn.
        let pieces = unsafe { parts.piece(i, i..i + 1) };
        f(i, pieces)
    }
}

/// `f` on each element of `items` in parallel, one item per task.
pub fn for_each_mut<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync) {
    let n = items.len();
    for_items(n, rows(items, 1), |_, one| f(&mut one[0]));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of every buffer is written exactly once, by the block that covers it, and each
    /// block's slot by that block; ragged final blocks and width 0 are fine.
    #[test]
    fn row_blocks_write_disjoint_pieces() {
        use super::super::ops::ROW_BLOCK;
        for (n, threads) in [
            (0, 2),
            (1, 2),
            (127, 2),
            (128, 2),
            (129, 3),
            (1000, 2),
            (300, 1),
        ] {
            let mut a = vec![0u32; n * 3];
            let mut b = vec![0u32; n];
            let mut none: Vec<u32> = Vec::new();
            let blocks = n.div_ceil(ROW_BLOCK);
            let mut s = vec![0usize; blocks * 2];
            ops::with_threads(threads, || {
                for_row_blocks(
                    n,
                    (
                        rows(&mut a, 3),
                        rows(&mut b, 1),
                        rows(&mut none, 0),
                        slot(&mut s, 2),
                    ),
                    |blk, r, (a, b, none, s)| {
                        assert_eq!((a.len(), b.len(), none.len()), (3 * r.len(), r.len(), 0));
                        for v in a.iter_mut().chain(b.iter_mut()) {
                            *v += 1;
                        }
                        s[0] = blk + 1;
                        s[1] = r.len();
                    },
                )
            });
            assert!(a.iter().chain(&b).all(|&v| v == 1), "n = {n}");
            for blk in 0..blocks {
                assert_eq!(s[2 * blk], blk + 1);
            }
            assert_eq!(s.iter().skip(1).step_by(2).sum::<usize>(), n);
        }
    }

    #[test]
    fn items_get_their_own_rows() {
        let mut v = vec![0usize; 7 * 4];
        ops::with_threads(2, || {
            for_items(7, rows(&mut v, 4), |i, row| row.fill(i));
        });
        for (i, row) in v.chunks(4).enumerate() {
            assert!(row.iter().all(|&x| x == i));
        }
        let mut w: Vec<Vec<u8>> = vec![vec![1]; 5];
        for_each_mut(&mut w, |x| x.push(2));
        assert!(w.iter().all(|x| x == &[1, 2]));
    }
}
