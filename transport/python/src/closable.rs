//! The native half of a Python object that `close()` ends (`Producer`, `Consumer`): shared with
//! the methods that use it while open, then ended once with the GIL released, by `close()`, by
//! leaving a `with` block, or, without either, when Python drops the object.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;

use crate::{errors, lock};

pub(crate) struct Closable<T: Send + Sync + 'static> {
    live: Mutex<Option<Arc<T>>>,
    /// What the Python object is, for the `Closed` error ("producer", "consumer").
    what: &'static str,
    /// How the value is ended: it may join threads, and one of them may be waiting for the GIL.
    end: fn(Arc<T>),
}

impl<T: Send + Sync + 'static> Closable<T> {
    pub(crate) fn new(value: T, what: &'static str, end: fn(Arc<T>)) -> Self {
        Closable {
            live: Mutex::new(Some(Arc::new(value))),
            what,
            end,
        }
    }

    /// The value, or `shmbridge.Closed` once closed.
    pub(crate) fn get(&self) -> PyResult<Arc<T>> {
        self.current()
            .ok_or_else(|| errors::Closed::new_err(format!("the {} is closed", self.what)))
    }

    /// The value, or `None` once closed.
    pub(crate) fn current(&self) -> Option<Arc<T>> {
        lock(&self.live).clone()
    }

    /// "open" or "closed", for `__repr__`.
    pub(crate) fn state(&self) -> &'static str {
        if lock(&self.live).is_some() {
            "open"
        } else {
            "closed"
        }
    }

    /// Ends the value, detached. Closing twice does nothing.
    pub(crate) fn close(&self, py: Python<'_>) {
        let live = lock(&self.live).take();
        let end = self.end;
        py.detach(|| live.map(end));
    }
}

impl<T: Send + Sync + 'static> Drop for Closable<T> {
    /// Dropped without `close()` (by the garbage collector, or at interpreter exit): ended
    /// detached, as `close()` does, where the interpreter still lets this thread detach.
    fn drop(&mut self) {
        let live = self
            .live
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(live) = live {
            let end = self.end;
            let close = move || end(live);
            // Not attachable (the interpreter is gone): `close` is dropped unrun, which drops
            // the value here, no GIL held.
            Python::try_attach(|py| py.detach(close));
        }
    }
}

/// `with shmbridge.X(...) as x:` for a class whose `close(py)` ends it: `__enter__` returns the
/// object, `__exit__` closes it and lets any exception through. A second `#[pymethods]` block
/// of the class (PyO3's `multiple-pymethods`), so the two classes share it.
macro_rules! closes_on_exit {
    ($class:ty) => {
        #[pyo3::pymethods]
        impl $class {
            fn __enter__(slf: pyo3::Py<Self>) -> pyo3::Py<Self> {
                slf
            }

            #[pyo3(signature = (*_exc))]
            fn __exit__(
                &self,
                py: pyo3::Python<'_>,
                _exc: &pyo3::Bound<'_, pyo3::types::PyTuple>,
            ) -> bool {
                self.close(py);
                false
            }
        }
    };
}

pub(crate) use closes_on_exit;
