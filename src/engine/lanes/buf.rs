//! [`LaneBuf`]: a lane tensor whose elements start on cache-line boundaries.
//!
//! A [`Lanes`] is 64 bytes, one cache line, but `Vec<[f32; 16]>` is only 4-byte aligned and
//! the system allocator's 16 bytes leave three in four buffers straddling lines: every element
//! then spans two, and at 16 or 48 bytes off a line half of the AVX2 kernels' 32-byte loads
//! split (every one of the AVX-512 kernels' 64-byte loads, at any offset). The `cloudchamber`
//! binary's allocator ([`crate::engine::hugepages`]) already starts blocks from 4 KiB on a line;
//! this type makes it hold for every lane tensor under any allocator (the Python module, the
//! library in other programs, tests) and for the small ones (a width-16 bias is 1 KiB).
//! Measured under the system allocator on an AMD EPYC (Zen 3), interleaved in one process:
//! aligned operands ran the width-16 MLP's lanes GEMMs 1.11–1.36× faster than operands 16
//! bytes off a line, and `bench --lanes`' width-16 step 1.14–1.18× faster.

use std::ops::{Deref, DerefMut};

use super::{Lanes, LANES};

/// One cache line: a [`Lanes`] aligned to 64 bytes (the same size, so a slice of lines is a
/// slice of lanes).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
struct Line(Lanes);

const _: () = assert!(std::mem::size_of::<Line>() == std::mem::size_of::<Lanes>());

/// A lane tensor on cache-line boundaries, used as a `[Lanes]` slice (it derefs to one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaneBuf(Vec<Line>);

impl LaneBuf {
    /// `n` elements, zero.
    pub fn zeros(n: usize) -> Self {
        LaneBuf(vec![Line([0.0; LANES]); n])
    }
}

impl Deref for LaneBuf {
    type Target = [Lanes];
    fn deref(&self) -> &[Lanes] {
        // SAFETY: `Line` is `repr(C)` around one `Lanes` and no larger (asserted above), so
        // `len` lines are `len` lanes at the same address, and `Lanes`' alignment (4) divides
        // `Line`'s (64); the borrow of `self` covers the slice's life.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<Lanes>(), self.0.len()) }
    }
}

impl DerefMut for LaneBuf {
    fn deref_mut(&mut self) -> &mut [Lanes] {
        // SAFETY: as in `deref`; the unique borrow of `self` makes the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<Lanes>(), self.0.len()) }
    }
}

impl FromIterator<Lanes> for LaneBuf {
    fn from_iter<I: IntoIterator<Item = Lanes>>(iter: I) -> Self {
        LaneBuf(iter.into_iter().map(Line).collect())
    }
}

impl<'a> IntoIterator for &'a LaneBuf {
    type Item = &'a Lanes;
    type IntoIter = std::slice::Iter<'a, Lanes>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut LaneBuf {
    type Item = &'a mut Lanes;
    type IntoIter = std::slice::IterMut<'a, Lanes>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buffer_starts_on_a_cache_line_and_reads_back_what_was_written() {
        for n in [1, 3, 17, 1000] {
            let mut b = LaneBuf::zeros(n);
            assert_eq!(b.as_ptr() as usize % 64, 0, "{n} elements");
            assert_eq!(b.len(), n);
            for (e, v) in b.iter_mut().enumerate() {
                *v = std::array::from_fn(|l| (e * LANES + l) as f32);
            }
            let c = b.clone();
            assert_eq!(c.as_ptr() as usize % 64, 0);
            assert!(c
                .iter()
                .enumerate()
                .all(|(e, v)| v[3] == (e * LANES + 3) as f32));
        }
        let collected: LaneBuf = (0..5).map(|e| [e as f32; LANES]).collect();
        assert_eq!(collected.as_ptr() as usize % 64, 0);
        assert_eq!(collected[4], [4.0; LANES]);
    }
}
