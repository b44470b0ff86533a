//! `shmbridge.KeptBody`: a body a handler keeps and hands out again (a cache's), made once into
//! a sealed memfd the kernel keeps immutable. A handler that returns `(Response, KeptBody)`
//! answers with that same memfd every time, whatever its size: nothing is copied on either side,
//! and a consumer that keeps what it verified (the Rust gateway) checks its crc32 once.

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shmbridge::SealedPayload;

#[pyclass(name = "KeptBody", module = "shmbridge", frozen)]
pub struct PyKeptBody {
    payload: SealedPayload,
}

impl PyKeptBody {
    /// The payload, shared: every answer with it hands over the same memfd.
    pub fn payload(&self) -> SealedPayload {
        self.payload.clone()
    }
}

#[pymethods]
impl PyKeptBody {
    /// Writes `data` into a new memfd and seals it, with the GIL released (`bytes` are
    /// immutable). `OSError` when the memfd cannot be made, written or sealed.
    #[new]
    fn new(py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<Self> {
        let data = data.as_bytes();
        let payload = py
            .detach(|| SealedPayload::from_bytes(data))
            .map_err(|error| PyOSError::new_err(error.to_string()))?;
        Ok(Self { payload })
    }

    fn __len__(&self) -> usize {
        usize::try_from(self.payload.len()).unwrap_or(usize::MAX)
    }

    /// The crc32 of the body (zlib's).
    #[getter]
    fn crc(&self) -> u32 {
        self.payload.crc()
    }

    fn __repr__(&self) -> String {
        format!(
            "<shmbridge.KeptBody len={} crc={:08x}>",
            self.payload.len(),
            self.payload.crc()
        )
    }
}
