//! `shmbridge.Consumer`: attaches to a producer's segment through its socket, redeems handles
//! (verified copies), and asks for publications over the control channel. Every wait runs
//! detached from the interpreter and has a timeout.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shmbridge::{Consumer, ConsumerOptions, ControlClient, Handle};

use crate::errors;
use crate::handle::PyHandle;
use crate::{lock, seconds};

struct Live {
    consumer: Consumer,
    client: ControlClient,
}

impl Live {
    /// Acquires the handle's slot, copies the bytes out and verifies them.
    fn redeem(&self, handle: &Handle) -> PyResult<Vec<u8>> {
        let guard = self.consumer.acquire(handle).map_err(errors::acquire)?;
        guard.copy_out().map_err(errors::read)
    }
}

#[pyclass(name = "Consumer", module = "shmbridge", frozen)]
pub struct PyConsumer {
    epoch: u64,
    live: Mutex<Option<Arc<Live>>>,
}

#[pymethods]
impl PyConsumer {
    /// Connects to the producer's abstract socket and attaches to the segment it hands over,
    /// within `timeout` seconds. `producer_uids`: uids besides this process's own whose
    /// producers are trusted.
    #[staticmethod]
    #[pyo3(signature = (socket_name, timeout=5.0, producer_uids=None))]
    fn connect(
        py: Python<'_>,
        socket_name: &str,
        timeout: f64,
        producer_uids: Option<Vec<u32>>,
    ) -> PyResult<Self> {
        let timeout = seconds::positive("timeout", timeout)?;
        let live = py.detach(|| -> PyResult<Live> {
            let client = ControlClient::connect(
                socket_name,
                timeout,
                producer_uids.as_deref().unwrap_or_default(),
            )
            .map_err(errors::attach)?;
            let consumer = Consumer::new(Arc::clone(client.segment()), ConsumerOptions::default())
                .map_err(|error| errors::AttachError::new_err(error.to_string()))?;
            Ok(Live { consumer, client })
        })?;
        Ok(Self {
            epoch: live.consumer.segment().epoch(),
            live: Mutex::new(Some(Arc::new(live))),
        })
    }

    /// The attached segment's random identity.
    #[getter]
    fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Asks the producer over the control channel to publish the payload for `(count, seed)`,
    /// then redeems it: the verified bytes. `timeout` bounds the wait for the publication.
    #[pyo3(signature = (count, seed, timeout=2.0))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        count: u32,
        seed: u64,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let timeout = seconds::positive("timeout", timeout)?;
        let live = self.live()?;
        let bytes = py.detach(|| -> PyResult<Vec<u8>> {
            let publication = live
                .client
                .publish_blocking(count, seed, timeout)
                .map_err(errors::request)?;
            if publication.is_sealed() {
                // Larger than a slot: verified in place, then copied once into the bytes object.
                let sealed = publication
                    .redeem_sealed(&live.consumer)
                    .map_err(errors::redeem)?;
                return Ok(sealed.to_vec());
            }
            let handle = *publication.handle();
            let guard = live.consumer.acquire(&handle).map_err(errors::acquire)?;
            // Acquired: the producer has nothing left to withdraw.
            publication.redeemed();
            guard.copy_out().map_err(errors::read)
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Asks for the publication like `request` but returns its handle unredeemed, to be
    /// redeemed later (by this consumer, or by another process attached to the segment) before
    /// the producer's `ready_ttl`. It counts against this connection's unredeemed limit until
    /// then; closing the consumer withdraws it.
    #[pyo3(signature = (count, seed, timeout=2.0))]
    fn request_handle(
        &self,
        py: Python<'_>,
        count: u32,
        seed: u64,
        timeout: f64,
    ) -> PyResult<PyHandle> {
        let timeout = seconds::positive("timeout", timeout)?;
        let live = self.live()?;
        let handle = py.detach(|| {
            let publication = live
                .client
                .publish_blocking(count, seed, timeout)
                .map_err(errors::request)?;
            if publication.is_sealed() {
                // Its bytes came as a descriptor, which a handle's text cannot carry: dropping
                // the publication gives it back to the producer.
                return Err(errors::TooLarge::new_err(format!(
                    "the publication of {} bytes is larger than a slot and comes as a \
                     descriptor; use request() for it",
                    publication.handle().len
                )));
            }
            Ok(publication.redeemed())
        })?;
        Ok(PyHandle(handle))
    }

    /// The verified bytes of a publication, from its `Handle` or the handle's text form. A
    /// handle is redeemable once.
    fn redeem<'py>(
        &self,
        py: Python<'py>,
        handle: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let handle = PyHandle::from_python(handle)?;
        let live = self.live()?;
        let bytes = py.detach(|| live.redeem(&handle))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Whether the control channel is still up (the producer has not closed it or exited).
    #[getter]
    fn is_open(&self) -> bool {
        lock(&self.live)
            .as_ref()
            .is_some_and(|live| live.client.is_open())
    }

    /// Closes the connection (the producer withdraws publications made for it and not yet
    /// redeemed) and unmaps the segment. Closing twice does nothing.
    fn close(&self, py: Python<'_>) {
        let live = lock(&self.live).take();
        // Detached: dropping the client joins its reader thread.
        py.detach(|| drop(live));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = if lock(&self.live).is_some() {
            "open"
        } else {
            "closed"
        };
        format!("<shmbridge.Consumer epoch={:016x} {state}>", self.epoch)
    }
}

impl PyConsumer {
    fn live(&self) -> PyResult<Arc<Live>> {
        lock(&self.live)
            .clone()
            .ok_or_else(|| errors::Closed::new_err("the consumer is closed"))
    }
}
