//! Large zero-initialised arrays on transparent huge pages.
//!
//! The shard's big tables are read at random (one account, one key per
//! request). With 4 KiB pages a table of a few hundred MiB misses the TLB on
//! nearly every access, and under virtualisation each miss is a
//! two-dimensional page walk. An anonymous mapping advised `MADV_HUGEPAGE`
//! (memmap2) gets 2 MiB pages where the kernel allows them (this machine's
//! THP setting is `madvise`: nothing else gets them), and comes zero-filled
//! and lazily backed, so a large empty table costs nothing until touched.
#![allow(unsafe_code)]

use memmap2::{Advice, MmapMut};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// A plain-old-data type whose all-zero bit pattern is a valid value.
///
/// # Safety
/// Implementors must be `Copy`, contain no pointers, references or
/// niches (every bit pattern of zeros is a valid value), and have no
/// alignment above 4096.
pub(crate) unsafe trait Zeroable: Copy {}

// SAFETY: a byte; zero is a valid value; align 1.
unsafe impl Zeroable for u8 {}
// SAFETY: an integer; zero is a valid value; align 8.
unsafe impl Zeroable for u64 {}

/// Asks the CPU to start loading the cache line that holds `*p`, so that a
/// later read of it hits the cache. A hint only: it changes nothing the
/// program can observe.
#[inline(always)]
pub(crate) fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` cannot fault (and `p` is a live reference in any
    // case) and has no architectural effect; it needs SSE, which every
    // x86_64 CPU has (it is in the target's baseline features).
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A fixed-length array of `T` in its own huge-page-advised mapping.
pub(crate) struct ZeroedArray<T: Zeroable> {
    map: MmapMut,
    len: usize,
    _marker: PhantomData<T>,
}

impl<T: Zeroable> ZeroedArray<T> {
    /// `len` zeroed elements. Panics if the mapping cannot be made (out of
    /// address space or memory: nothing sensible to do then).
    pub fn new(len: usize) -> ZeroedArray<T> {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        let map = MmapMut::map_anon(bytes).expect("mapping memory for a shard table");
        // Advice only; a kernel without THP just keeps small pages.
        let _ = map.advise(Advice::HugePage);
        ZeroedArray {
            map,
            len,
            _marker: PhantomData,
        }
    }
}

impl<T: Zeroable> ZeroedArray<T> {
    /// Faults every page in now (`MADV_POPULATE_WRITE`), so that first
    /// writes later find them ready: the kernel's zeroing happens here, on
    /// the calling thread. Advice only: on a kernel without it, nothing
    /// happens and pages are faulted in on first touch as usual.
    pub fn populate(&self) {
        let _ = self.map.advise(Advice::PopulateWrite);
    }
}

impl<T: Zeroable> Deref for ZeroedArray<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping is page-aligned (so aligned for T, by the
        // Zeroable contract), spans at least len * size_of::<T>() bytes, is
        // zero-filled by the kernel and only ever written through this
        // type as whole T values, so every element is a valid T. It lives
        // as long as `self`, and `&self` rules out concurrent writes.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Zeroable> DerefMut for ZeroedArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().cast::<T>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    #[repr(C)]
    struct Pair(u64, u32);
    // SAFETY: two integers; zero is a valid value of each; align 8.
    unsafe impl Zeroable for Pair {}

    #[test]
    fn starts_zeroed_and_keeps_writes() {
        let mut array = ZeroedArray::<Pair>::new(1 << 20);
        assert!(array.iter().all(|p| p.0 == 0 && p.1 == 0));
        array[12345] = Pair(7, 8);
        assert_eq!(array[12345].0, 7);
        assert_eq!(array.len(), 1 << 20);
    }
}
