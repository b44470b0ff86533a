//! The `shmbridge` Python package: [`shmbridge`]'s producer, consumer, handles and control
//! channel (request bytes in, a response with a status, content type, headers and a body out),
//! for Python processes on either side of a segment. Built by maturin as an abi3 wheel
//! (CPython >= 3.9); the API is described for editors in `shmbridge.pyi` and tested by the
//! pytest suite in `tests/`.
//!
//! Every blocking call detaches from the interpreter (releases the GIL) while it waits or
//! copies, and takes a timeout. No Rust lock is held while the GIL is waited for, and the one
//! lock held across real work (the producer's control lock: starting and stopping a server) is
//! only ever taken detached, so a lock and the GIL cannot deadlock.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;

mod closable;
mod consumer;
mod errors;
mod handle;
mod http;
mod kept;
mod producer;
mod publication;
mod response;
mod seconds;

/// Hand payloads between processes through a shared-memory segment of fixed-size slots; every
/// read is the exact published bytes (crc32-verified) or a typed error.
#[pymodule]
#[pyo3(name = "shmbridge")]
fn shmbridge_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("LAYOUT_VERSION", shmbridge::layout::LAYOUT_VERSION)?;
    module.add(
        "CONTROL_VERSION",
        shmbridge::control::frame::CONTROL_VERSION,
    )?;
    module.add(
        "MAX_REQUEST_LEN",
        shmbridge::control::frame::MAX_REQUEST_LEN,
    )?;
    module.add(
        "DEFAULT_INLINE_THRESHOLD",
        shmbridge::control::DEFAULT_INLINE_THRESHOLD,
    )?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(module)?;
    module.add_class::<handle::PyHandle>()?;
    module.add_class::<producer::PyProducer>()?;
    module.add_class::<consumer::PyConsumer>()?;
    module.add_class::<response::PyResponse>()?;
    module.add_class::<publication::PyPublication>()?;
    module.add_class::<kept::PyKeptBody>()?;
    module.add_function(wrap_pyfunction!(http::http_request_parse, module)?)?;
    module.add_function(wrap_pyfunction!(http::http_request_encode, module)?)?;
    add_wsgi(module)
}

/// `shmbridge.wsgi`, the WSGI adapter: plain Python (`src/wsgi.py`) compiled into the native
/// module, registered in `sys.modules` so that `import shmbridge.wsgi` finds it, and set on
/// the package maturin wraps this module in (in `sys.modules` while its `__init__.py` imports
/// this), since `import shmbridge.wsgi` binds only what the package holds. An attribute, not
/// an export: it stays out of `__all__`; its types are in its docstrings, since the one-file
/// `shmbridge.pyi` cannot describe a submodule.
fn add_wsgi(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let wsgi = PyModule::from_code(
        py,
        pyo3::ffi::c_str!(include_str!("wsgi.py")),
        c"shmbridge/wsgi.py",
        c"shmbridge.wsgi",
    )?;
    module.setattr("wsgi", &wsgi)?;
    let modules = py.import("sys")?.getattr("modules")?;
    modules.set_item("shmbridge.wsgi", &wsgi)?;
    if let Ok(package) = modules.get_item("shmbridge") {
        package.setattr("wsgi", &wsgi)?;
    }
    Ok(())
}

/// A poisoned lock only means a panic elsewhere: the data (an `Option` swapped whole) is intact.
/// The locks taken with the GIL held are held for a few instructions, never across a wait.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
