//! `shmbridge.Publication`: a response the producer made for this consumer and that is not yet
//! redeemed (`Consumer.request_publication`). Its head, tier and handle are known; its body is
//! still in its slot or memfd (or, inline, in the answer) until `redeem()`. Releasing it, or
//! dropping it unredeemed, tells the producer to take its slot back at once.

use std::sync::Mutex;

use pyo3::prelude::*;
use shmbridge::control::{Publication, ResponseHead, Tier};

use crate::errors;
use crate::handle::PyHandle;
use crate::lock;
use crate::response::PyResponse;

#[pyclass(name = "Publication", module = "shmbridge", frozen)]
pub struct PyPublication {
    head: ResponseHead,
    tier: Tier,
    len: u64,
    handle: Option<PyHandle>,
    /// `None` once redeemed or released.
    publication: Mutex<Option<Publication>>,
}

impl PyPublication {
    pub fn new(publication: Publication) -> Self {
        Self {
            head: publication.head().clone(),
            tier: publication.tier(),
            len: publication.len(),
            handle: publication.handle().copied().map(PyHandle),
            publication: Mutex::new(Some(publication)),
        }
    }

    /// The publication, unless it was redeemed or released already.
    fn take(&self) -> PyResult<Publication> {
        lock(&self.publication)
            .take()
            .ok_or_else(|| errors::Stale::new_err("the publication was redeemed or released"))
    }
}

#[pymethods]
impl PyPublication {
    #[getter]
    fn status(&self) -> u16 {
        self.head.status()
    }

    #[getter]
    fn content_type(&self) -> &str {
        self.head.content_type()
    }

    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.head.headers().to_vec()
    }

    /// `"inline"`, `"slot"` or `"sealed"`.
    #[getter]
    fn tier(&self) -> &'static str {
        self.tier.as_str()
    }

    /// The body's length in bytes.
    #[getter]
    fn len(&self) -> u64 {
        self.len
    }

    /// The slot's or ticket's handle; None for an inline body, which holds nothing.
    #[getter]
    fn handle(&self) -> Option<PyHandle> {
        self.handle
    }

    /// Reads and verifies the body from its tier: the `Response`. Once; afterwards `Stale`.
    fn redeem(&self, py: Python<'_>) -> PyResult<PyResponse> {
        let publication = self.take()?;
        let response = py.detach(|| publication.redeem()).map_err(errors::redeem)?;
        PyResponse::received(py, response)
    }

    /// Gives the publication back unread: the producer frees its slot or ticket now rather
    /// than at its TTL. Releasing twice, or after `redeem`, does nothing.
    fn release(&self) {
        drop(lock(&self.publication).take());
    }

    fn __repr__(&self) -> String {
        let state = if lock(&self.publication).is_some() {
            "unredeemed"
        } else {
            "spent"
        };
        format!(
            "<shmbridge.Publication status={} tier={} len={} {state}>",
            self.head.status(),
            self.tier.as_str(),
            self.len
        )
    }
}
