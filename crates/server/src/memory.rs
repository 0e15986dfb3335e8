//! Giving freed memory back to the operating system.
//!
//! Closing app databases frees their connections' memory, but glibc's allocator (which SQLite
//! allocates with; Rust code uses mimalloc) keeps freed pages inside its arenas: after 1,000 apps
//! had been open and then closed, the process still held ~150 MiB that nothing used
//! (bench/tenants.py). `malloc_trim` returns those pages, so an instance whose apps went idle
//! really shrinks back. It is called after an idle sweep that closed something, never on a
//! request path.

/// Asks the allocator to return free memory to the OS. A no-op where the C library has no
/// `malloc_trim`.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` takes no pointers and only walks the allocator's own free lists under
    // the allocator's locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
