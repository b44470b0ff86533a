//! The `shmbridge` Python package: [`shmbridge`]'s producer, consumer, handles and control
//! channel, for Python processes on either side of a segment. Built by maturin as an abi3 wheel
//! (CPython >= 3.9); the API is described for editors in `shmbridge.pyi` and tested by the
//! pytest suite in `tests/`.
//!
//! Every blocking call detaches from the interpreter (releases the GIL) while it waits or
//! copies, and takes a timeout.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;

mod consumer;
mod errors;
mod handle;
mod producer;
mod seconds;

/// Hand payloads between processes through a shared-memory segment of fixed-size slots; every
/// read is the exact published bytes (crc32-verified) or a typed error.
#[pymodule]
#[pyo3(name = "shmbridge")]
fn shmbridge_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("LAYOUT_VERSION", shmbridge::layout::LAYOUT_VERSION)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(module)?;
    module.add_class::<handle::PyHandle>()?;
    module.add_class::<producer::PyProducer>()?;
    module.add_class::<consumer::PyConsumer>()?;
    Ok(())
}

/// A poisoned lock only means a panic elsewhere: the data (an `Option` swapped whole) is intact.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
