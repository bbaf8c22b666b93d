//! Memory hints for large in-memory tables.
//!
//! Contract: nothing here changes what any load or store returns, and nothing can fault or
//! fail; each function is a hint the CPU or the kernel may ignore (a prefetch, huge-page
//! advice). They exist so a caller
//! that knows its access pattern (the silence scan visits scattered slots in address order)
//! can overlap cache misses instead of taking them one after another.

/// Asks the CPU to bring the cache line holding `value` into every cache level, without
/// waiting for it: the instruction retires at once, so a sweep can issue the misses of
/// slots it will reach a little later and keep working meanwhile. A plain load used as a
/// prefetch does not do that: the load itself waits (in the reorder buffer) for its line.
///
/// A no-op on targets other than x86_64.
#[inline(always)]
pub fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    prefetch_x86_64(std::ptr::from_ref(value).cast());
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch_x86_64(ptr: *const i8) {
    // SAFETY: PREFETCHT0 is a hint: it never dereferences `ptr` in the language's sense,
    // cannot fault (not even on an invalid address) and changes no memory or register the
    // program can observe. `ptr` is derived from a live reference anyway. SSE, which the
    // intrinsic requires, is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr);
    }
}

/// Size of a transparent huge page on x86_64 and (with 4 KiB base pages) aarch64 Linux.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Asks the kernel to back the 2 MiB-aligned part of `items` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`); returns whether it accepted the advice. Call it on a large,
/// zeroed, not yet touched allocation: pages are then faulted in as huge pages, one TLB
/// entry per 2 MiB instead of per 4 KiB, which is what a table probed at random addresses
/// needs (a 320 MB table spans 80,000 small pages, far beyond any TLB). Where the system's
/// `transparent_hugepage` setting is `madvise` (a common default) nothing else turns them
/// on; with `always` this changes nothing, with `never` the kernel ignores it.
///
/// Contents, validity and ownership of the memory are unchanged; memory is committed in
/// 2 MiB steps as it is first touched (a table that is hashed across its whole range
/// touches every page early anyway). Anything smaller than one aligned huge page, and
/// targets other than Linux, return `false` and change nothing.
pub fn advise_huge_pages<T>(items: &[T]) -> bool {
    let start = items.as_ptr() as usize;
    let end = start + std::mem::size_of_val(items);
    let aligned_start = start.next_multiple_of(HUGE_PAGE_BYTES);
    let aligned_end = end - end % HUGE_PAGE_BYTES;
    if aligned_end <= aligned_start {
        return false;
    }
    madvise_huge(aligned_start, aligned_end - aligned_start)
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn madvise_huge(start: usize, len: usize) -> bool {
    // SAFETY: `start..start + len` lies inside one live allocation (the caller's slice,
    // rounded inwards to page boundaries), so it is mapped and page-aligned. MADV_HUGEPAGE
    // only sets a flag on the mapping: it reads and writes no byte of it and cannot make
    // any of it invalid. The flag outlives the slice harmlessly (it is advice to the kernel).
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn madvise_huge(_start: usize, _len: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefetch_changes_nothing_it_touches() {
        let values: Vec<u64> = (0..1024).collect();
        for v in &values {
            prefetch_read(v);
        }
        assert!(values.iter().copied().eq(0..1024));
    }

    #[test]
    fn huge_page_advice_keeps_the_contents_and_skips_what_is_too_small() {
        let small = vec![7u8; 4096];
        assert!(!advise_huge_pages(&small), "smaller than one huge page");
        let mut large: Vec<u64> = vec![0; 3 * HUGE_PAGE_BYTES / 8];
        let accepted = advise_huge_pages(&large);
        assert!(!accepted || cfg!(target_os = "linux"));
        for (i, v) in large.iter_mut().enumerate() {
            *v = i as u64;
        }
        assert!(
            large
                .iter()
                .copied()
                .eq(0..(3 * HUGE_PAGE_BYTES / 8) as u64)
        );
    }
}
