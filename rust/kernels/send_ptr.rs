//! A raw pointer that pool threads may share, for writes to disjoint parts of one buffer.

/// A raw pointer that may cross threads; each use states why its accesses are disjoint.
#[derive(Clone, Copy)]
pub struct SendPtr<T>(pub *mut T);
// SAFETY: only used for writes to disjoint index ranges from pool threads (see each use).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    #[inline]
    pub fn get(self) -> *mut T {
        self.0
    }
}
