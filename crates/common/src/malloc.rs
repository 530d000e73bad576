//! How the C allocator keeps freed memory in the processes that move data. Chunkservers and
//! mounts allocate and free a buffer of about 1 MiB per data frame, often on different threads.
//! With glibc's defaults the freed space was handed back to the kernel again and again (an
//! arena trimmed past its threshold, a large block unmapped), and every new buffer then
//! page-faulted its memory back in: 40 000 to 120 000 faults per GiB moved in each chunkserver,
//! a tenth of its CPU. Keeping freed memory for reuse costs a few tens of MiB of resident memory.

/// Largest allocation served from the allocator's arenas rather than mapped on its own: above
/// every buffer the data path uses, so freeing one never unmaps it.
const MMAP_THRESHOLD: i32 = 4 << 20;

/// Free space an arena keeps at its top before giving memory back to the kernel: room for the
/// data frames in flight at once.
const TRIM_THRESHOLD: i32 = 64 << 20;

/// Makes the C allocator keep freed data buffers for reuse (see the module comment). Call at the
/// start of `main`, before any thread starts. Does nothing with an allocator other than glibc's.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; no thread allocates concurrently yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
