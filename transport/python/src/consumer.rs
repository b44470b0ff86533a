//! `shmbridge.Consumer`: attaches to a producer's segment through its socket, sends requests over
//! the control channel and gets verified responses back (`request`), or holds them unredeemed
//! (`request_publication`), and redeems handles of publications made by hand (`redeem`). Every
//! wait and every copy of megabytes runs detached from the interpreter, and every wait has a
//! timeout.

use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shmbridge::control::{ClientOptions, Publication, RequestError};
use shmbridge::{ConsumerOptions, ControlClient};

use crate::closable::{Closable, closes_on_exit};
use crate::errors;
use crate::handle::PyHandle;
use crate::publication::PyPublication;
use crate::response::{PyResponse, bytes_of};
use crate::seconds;

#[pyclass(name = "Consumer", module = "shmbridge", frozen)]
pub struct PyConsumer {
    epoch: u64,
    live: Closable<ControlClient>,
}

closes_on_exit!(PyConsumer);

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
        let options = ClientOptions {
            timeout: seconds::positive("timeout", timeout)?,
            producer_uids: producer_uids.unwrap_or_default(),
            consumer: ConsumerOptions::default(),
        };
        let client = py
            .detach(|| ControlClient::connect(socket_name, &options))
            .map_err(errors::attach)?;
        Ok(Self {
            epoch: client.segment().epoch(),
            live: Closable::new(client, "consumer", drop),
        })
    }

    /// The attached segment's random identity.
    #[getter]
    fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Sends `request` (at most 64 KiB) to the producer's handler and waits at most `timeout`
    /// seconds for its response, whose body is read from whichever tier carried it and
    /// verified.
    #[pyo3(signature = (request, timeout=2.0))]
    fn request(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyBytes>,
        timeout: f64,
    ) -> PyResult<PyResponse> {
        let timeout = seconds::positive("timeout", timeout)?;
        let client = self.live.get()?;
        let request = request.as_bytes();
        let response = py
            .detach(|| client.request(request, timeout))
            .map_err(errors::request)?;
        PyResponse::received(py, response)
    }

    /// Like `request`, but returns the response unredeemed: its head, tier and handle, the
    /// body still in its slot or memfd until `Publication.redeem()`. It counts against this
    /// connection's unredeemed limit until redeemed or released; closing the consumer
    /// withdraws it.
    #[pyo3(signature = (request, timeout=2.0))]
    fn request_publication(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyBytes>,
        timeout: f64,
    ) -> PyResult<PyPublication> {
        let timeout = seconds::positive("timeout", timeout)?;
        let client = self.live.get()?;
        let request = request.as_bytes();
        let publication = py
            .detach(|| ask(&client, request, timeout))
            .map_err(errors::request)?;
        Ok(PyPublication::new(publication))
    }

    /// The verified bytes of a slot publication, from its `Handle` or the handle's text form.
    /// A handle is redeemable once.
    fn redeem<'py>(
        &self,
        py: Python<'py>,
        handle: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let handle = PyHandle::from_python(handle)?;
        let client = self.live.get()?;
        let bytes = py.detach(|| {
            let guard = client
                .consumer()
                .acquire(&handle)
                .map_err(errors::acquire)?;
            guard.copy_out().map_err(errors::read)
        })?;
        bytes_of(py, &bytes)
    }

    /// Whether the control channel is still up (the producer has not closed it or exited).
    #[getter]
    fn is_open(&self) -> bool {
        self.live.current().is_some_and(|client| client.is_open())
    }

    /// Closes the connection (the producer withdraws publications made for it and not yet
    /// redeemed) and unmaps the segment once no `Publication` of it is left. Closing twice does
    /// nothing. Dropping the client joins its reader thread, so it is dropped detached.
    fn close(&self, py: Python<'_>) {
        self.live.close(py);
    }

    fn __repr__(&self) -> String {
        format!(
            "<shmbridge.Consumer epoch={:016x} {}>",
            self.epoch,
            self.live.state()
        )
    }
}

/// [`ControlClient::request`] without the redeem: sends `request` and waits at most `timeout`
/// for the publication.
fn ask(
    client: &ControlClient,
    request: &[u8],
    timeout: Duration,
) -> Result<Publication, RequestError> {
    let (answered, answer) = mpsc::sync_channel(1);
    let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let deadline_ns = shmbridge::monotonic_now_ns().saturating_add(timeout_ns);
    let id = client.request_with(request, deadline_ns, move |result| {
        let _ = answered.send(result);
    })?;
    answer.recv_timeout(timeout).unwrap_or_else(|error| {
        // An answer arriving from now on is released by the client (or, if it is already in
        // the channel, when the channel is dropped here).
        client.abandon(id);
        Err(match error {
            mpsc::RecvTimeoutError::Timeout => RequestError::TimedOut(timeout),
            mpsc::RecvTimeoutError::Disconnected => RequestError::Closed,
        })
    })
}
