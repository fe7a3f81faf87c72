//! The memory allocator of everything linked with this crate: mimalloc, told to keep freed memory.
//!
//! Burn's CPU backend allocates and frees activation-sized buffers on every op. The system
//! allocator (glibc) serves buffers of more than a few MiB with a fresh `mmap` and unmaps them on
//! free, so every op pays page faults on memory it just gave back; mimalloc by default does the
//! same after a 10 ms delay. On this project's machine (2 cores) the full-size UNet forward +
//! backward of `bench_unet --arch sd15 --phase fwdbwd` took 82.6 s with glibc, 64.9 s with mimalloc's
//! defaults and 34.2 s with [`retain_freed_memory`] (peak RSS 12.3, 13.0 and 13.6 GiB).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

/// mimalloc, counting the bytes currently allocated and their high-water mark (two relaxed
/// atomic updates per allocation, next to tensor-sized work), so benchmarks can tell what a
/// stage keeps alive apart from what the allocator holds mapped.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to mimalloc unchanged; the counters do not touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !ptr.is_null() {
            added(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !ptr.is_null() {
            added(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            added(new_size);
        }
        new
    }
}

fn added(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated now (through this process's global allocator).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes allocated at once since the last [`reset_peak`] (or the start).
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new high-water mark at the bytes allocated now.
pub fn reset_peak() {
    PEAK.store(live_bytes(), Ordering::Relaxed);
}

/// `mi_option_purge_delay` in the `mi_option_e` enum of mimalloc's `mimalloc.h` (the same index
/// in its v2 and v3 sources).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped for reuse instead of returning it to the OS (a delay of -1 means
/// never purge). Call once at the start of `main`, before any heavy allocation.
pub fn retain_freed_memory() {
    // SAFETY: sets a process-wide mimalloc option; called before other threads start.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    debug_assert_eq!(
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
        -1
    );
}
