//! A global allocator that asks the kernel for transparent huge pages on big blocks.
//!
//! Why: at 10^6 names the table's hash indexes are hundreds of MiB probed at random, and with
//! 4 KiB pages nearly every probe misses the TLB as well as the caches. Backed by 2 MiB pages, a
//! lookup spread over the whole table costs less (criterion, `table_lookup/bare_spread` at 10^6
//! names: 1.90/1.89 → 1.64/1.36 µs, THP disabled by `prctl` against advised, two runs each).
//!
//! Debian's default (`transparent_hugepage=madvise`) gives huge pages only to regions a program
//! marks with `madvise(MADV_HUGEPAGE)`; this marks the 2 MiB-aligned inside of every block of
//! 4 MiB or more as it is allocated or grown, and otherwise is the system allocator. Small
//! blocks are left alone: a huge page only pays where a region is big and touched all over, as
//! a hash table's is. Binaries opt in with
//! `#[global_allocator] static A: resolver::huge_pages::HugePages = resolver::huge_pages::HugePages;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, with big blocks marked for transparent huge pages.
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePages;

/// Blocks from this size on are marked (two huge pages: a smaller block's aligned inside is
/// often empty).
pub const THRESHOLD: usize = 4 << 20;

const HUGE_PAGE: usize = 2 << 20;

/// Mark the 2 MiB-aligned inside of `[p, p + size)`. Advice only: an error (a kernel without
/// THP) changes nothing and is ignored.
fn advise(p: *mut u8, size: usize) {
    if p.is_null() || size < THRESHOLD {
        return;
    }
    let start = (p as usize).next_multiple_of(HUGE_PAGE);
    let end = (p as usize + size) & !(HUGE_PAGE - 1);
    if end > start {
        // SAFETY: the range lies inside a block the allocator just handed out; MADV_HUGEPAGE
        // changes how it is backed, never its contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every call is passed to `System` unchanged; `advise` only adds a hint on the result.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: our caller upholds `alloc`'s contract, which we pass on unchanged.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` (every block we hand out does) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`, and our caller upholds `realloc`'s contract on `new_size`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        advise(p, new_size);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VmFlags of the mapping holding `addr`, from /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn big_blocks_are_marked_small_ones_not() {
        let big = Layout::from_size_align(16 << 20, 8).unwrap();
        // SAFETY: a non-zero-sized layout; the block is freed below with the layout it has.
        let p = unsafe { HugePages.alloc(big) };
        assert!(!p.is_null());
        let inside = (p as usize).next_multiple_of(HUGE_PAGE);
        assert!(
            vm_flags(inside).split(' ').any(|f| f == "hg"),
            "a 16 MiB block is not marked for huge pages: {}",
            vm_flags(inside)
        );
        // Grown, the new block is marked too.
        // SAFETY: `p` is the live block allocated above with `big`.
        let p = unsafe { HugePages.realloc(p, big, 64 << 20) };
        let inside = (p as usize).next_multiple_of(HUGE_PAGE) + (32 << 20);
        assert!(vm_flags(inside).split(' ').any(|f| f == "hg"));
        // SAFETY: `p` is the live block grown to 64 MiB above.
        unsafe { HugePages.dealloc(p, Layout::from_size_align(64 << 20, 8).unwrap()) };

        let small = Layout::from_size_align(64 << 10, 8).unwrap();
        // SAFETY: a non-zero-sized layout, freed below with it.
        let q = unsafe { HugePages.alloc(small) };
        assert!(!vm_flags(q as usize).split(' ').any(|f| f == "hg"));
        // SAFETY: `q` is the live block allocated above with `small`.
        unsafe { HugePages.dealloc(q, small) };
    }
}
