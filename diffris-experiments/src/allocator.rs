//! The memory allocator of everything linked with this crate: mimalloc, told to keep freed memory.
//!
//! Burn's CPU backend allocates and frees activation-sized buffers on every op. The system
//! allocator (glibc) serves buffers of more than a few MiB with a fresh `mmap` and unmaps them on
//! free, so every op pays page faults on memory it just gave back; mimalloc by default does the
//! same after a 10 ms delay. On this project's machine (2 cores) the full-size UNet forward +
//! backward of `bench_unet --arch sd15 --phase fwdbwd` took 82.6 s with glibc, 64.9 s with mimalloc's
//! defaults and 34.2 s with [`retain_freed_memory`] (peak RSS 12.3, 13.0 and 13.6 GiB).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
