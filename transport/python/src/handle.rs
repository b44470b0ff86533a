//! `shmbridge.Handle`: the five numbers that name one publication, and their text form
//! `EPOCH-SLOT-GENERATION-LEN-CRC` (the same as in Rust, so handles travel between the two).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use shmbridge::Handle;

#[pyclass(name = "Handle", module = "shmbridge", frozen, eq, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyHandle(pub Handle);

#[pymethods]
impl PyHandle {
    /// A handle from its fields, e.g. one received as numbers rather than text.
    #[new]
    fn new(epoch: u64, slot: u32, generation: u64, len: u32, crc: u32) -> PyResult<Self> {
        // Through the text form, so a handle made here obeys every rule a parsed one does.
        Self::parse(
            &Handle {
                epoch,
                slot,
                generation,
                len,
                crc,
            }
            .to_string(),
        )
    }

    /// Parses the text form; `ValueError` if it is not exactly what `str(handle)` produces.
    #[staticmethod]
    pub fn parse(text: &str) -> PyResult<Self> {
        text.parse()
            .map(Self)
            .map_err(|error: shmbridge::HandleParseError| PyValueError::new_err(error.to_string()))
    }

    #[getter]
    fn epoch(&self) -> u64 {
        self.0.epoch
    }

    #[getter]
    fn slot(&self) -> u32 {
        self.0.slot
    }

    #[getter]
    fn generation(&self) -> u64 {
        self.0.generation
    }

    #[getter]
    fn len(&self) -> u32 {
        self.0.len
    }

    #[getter]
    fn crc(&self) -> u32 {
        self.0.crc
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self) -> String {
        format!("Handle.parse('{}')", self.0)
    }
}

impl PyHandle {
    /// A `Handle`, or the text form of one.
    pub fn from_python(value: &Bound<'_, PyAny>) -> PyResult<Handle> {
        if let Ok(handle) = value.cast::<PyHandle>() {
            return Ok(handle.get().0);
        }
        if let Ok(text) = value.extract::<String>() {
            return Self::parse(&text).map(|handle| handle.0);
        }
        Err(PyTypeError::new_err(format!(
            "expected a shmbridge.Handle or its text form, got {}",
            value.get_type().name()?
        )))
    }
}
