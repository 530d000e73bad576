//! Reads that never wait: not for the disk, not for a batch being applied, not for a split or
//! merge to be written. Added for ElkFS (see `vendor/README.md`).

use std::cell::Cell;

use crate::Error;

thread_local! {
    static RESIDENT_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// What a read in [`resident_only`] mode returns when it would have to wait.
pub const NOT_RESIDENT: &str = "not in memory without waiting";

/// Runs `f` with this thread's `Tree::get` calls limited to what is in memory and unlocked:
/// a get that would read a page from disk, wait for a batch being applied, or write out a
/// split or merge it came across fails with `Error::Unsupported(NOT_RESIDENT)` instead.
/// Async code calls it in place and, on that error, runs the get again where it may wait.
pub fn resident_only<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            RESIDENT_ONLY.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(RESIDENT_ONLY.with(|c| c.replace(true)));
    f()
}

/// Whether this thread is in [`resident_only`] mode.
pub(crate) fn active() -> bool {
    RESIDENT_ONLY.with(Cell::get)
}

/// Fails a read in [`resident_only`] mode.
pub(crate) fn refuse<T>() -> crate::Result<T> {
    Err(Error::Unsupported(NOT_RESIDENT.into()))
}
