//! `shmbridge.Producer`: creates a segment (sealed memfd, or a file), runs its reaper, publishes
//! bytes into it, and serves its descriptor socket and control channel with a Python callable
//! answering the requests (`handler(request) -> bytes | Response`). It keeps a version board
//! too: with `serve(..., object_key=f)` an answer is named the current version of object
//! `f(request)` (observed before the handler reads anything), until `invalidate(key)`.
//!
//! The GIL is held only to touch Python objects: copying into a slot or memfd, waiting for one,
//! and stopping the background threads all run detached. `bytes` are immutable and the call
//! holds a reference, so their buffer can be read while detached. The control lock is taken
//! only detached, and no lock is held while the GIL is waited for.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator};
use shmbridge::control::frame::MAX_INLINE_LEN;
use shmbridge::control::{
    ChannelOptions, DEFAULT_INLINE_THRESHOLD, Handler, HandlerError, PublicationLimits,
    ResponseWriter,
};
use shmbridge::layout::DEFAULT_BOARD_ENTRIES;
use shmbridge::{
    ClaimError, ControlServer, Handle, Producer, ProducerOptions, PublishError, ReaperThread,
    ReclaimReason, Segment, SegmentConfig, VersionBoard,
};

use crate::closable::{Closable, closes_on_exit};
use crate::errors;
use crate::handle::PyHandle;
use crate::kept::PyKeptBody;
use crate::response::PyResponse;
use crate::{lock, seconds};

/// Why writing one publication failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// The reaper took the slot back mid-copy.
    #[error("writing the slot failed: {0}")]
    Write(#[from] std::io::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl From<WriteError> for PyErr {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Claim(error) => errors::claim(error),
            WriteError::Write(error) => errors::Stale::new_err(error.to_string()),
            WriteError::Publish(error) => errors::publish(error),
        }
    }
}

/// Claims a slot (waiting at most `wait`), copies `data` in and publishes it; a failure drops
/// the write guard, which gives the slot back.
fn write_publication(
    producer: &Producer,
    data: &[u8],
    wait: Duration,
) -> Result<Handle, WriteError> {
    let mut slot = producer.claim(data.len(), wait)?;
    slot.write_all(data)?;
    Ok(slot.publish()?)
}

/// The segment, its producer and reaper, and the control socket once served.
///
/// Lock order: the GIL is never waited for while `control` is held, and `control` is never
/// waited for with the GIL held (every method takes it detached).
struct Live {
    producer: Arc<Producer>,
    /// The version board the channel hands consumers, made with the segment.
    board: Arc<VersionBoard>,
    // Stopped before the reaper: dropping the server wakes its threads first.
    control: Mutex<Option<ControlServer>>,
    _reaper: ReaperThread,
}

impl Live {
    /// Stops serving, then lets this reference go (the reaper stops with the last one). The
    /// server is taken out under the lock and dropped after it, so the lock is not held while
    /// the server's threads are joined.
    fn stop(self: Arc<Self>) {
        let server = lock(&self.control).take();
        drop(server);
    }
}

#[pyclass(name = "Producer", module = "shmbridge", frozen)]
pub struct PyProducer {
    epoch: u64,
    socket_name: Mutex<Option<String>>,
    live: Closable<Live>,
}

closes_on_exit!(PyProducer);

#[pymethods]
impl PyProducer {
    #[new]
    #[pyo3(signature = (slot_count=64, slot_size=524_288, path=None, lease=1.0, ready_ttl=5.0, reap_interval=0.25))]
    fn new(
        py: Python<'_>,
        slot_count: u32,
        slot_size: u32,
        path: Option<PathBuf>,
        lease: f64,
        ready_ttl: f64,
        reap_interval: f64,
    ) -> PyResult<Self> {
        let options = ProducerOptions {
            lease: deadline("lease", lease)?,
            ready_ttl: deadline("ready_ttl", ready_ttl)?,
            ..ProducerOptions::default()
        };
        let reap_interval = seconds::positive("reap_interval", reap_interval)?;
        let config = SegmentConfig {
            slot_count,
            slot_size,
        };
        let live = py.detach(|| -> PyResult<Live> {
            let segment = match &path {
                Some(path) => Segment::create_file(path, &config),
                None => Segment::create(&config),
            }
            .map_err(errors::create)?;
            let producer = Arc::new(
                Producer::new(Arc::new(segment), options)
                    .map_err(|error| errors::Error::new_err(error.to_string()))?,
            );
            let reaper = producer
                .spawn_reaper(reap_interval)
                .map_err(|error| errors::Error::new_err(format!("start the reaper: {error}")))?;
            let board = VersionBoard::create(DEFAULT_BOARD_ENTRIES)
                .map_err(|error| errors::Error::new_err(format!("version board: {error}")))?;
            Ok(Live {
                producer,
                board: Arc::new(board),
                control: Mutex::new(None),
                _reaper: reaper,
            })
        })?;
        Ok(Self {
            epoch: live.producer.segment().epoch(),
            socket_name: Mutex::new(None),
            live: Closable::new(live, "producer", Live::stop),
        })
    }

    /// The segment's random identity (the first field of every handle).
    #[getter]
    fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The abstract socket name `serve` listens on, or None before it.
    #[getter]
    fn socket_name(&self) -> Option<String> {
        lock(&self.socket_name).clone()
    }

    #[getter]
    fn slot_count(&self) -> PyResult<u32> {
        Ok(self.live.get()?.producer.segment().slot_count())
    }

    #[getter]
    fn slot_size(&self) -> PyResult<u32> {
        Ok(self.live.get()?.producer.segment().slot_size())
    }

    /// Copies `data` into a free slot (waiting at most `timeout` seconds for one) and publishes
    /// it; the handle's crc is computed from `data` as it is copied.
    #[pyo3(signature = (data, timeout=0.2))]
    fn publish(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyBytes>,
        timeout: f64,
    ) -> PyResult<PyHandle> {
        let wait = seconds::non_negative("timeout", timeout)?;
        let live = self.live.get()?;
        let data = data.as_bytes();
        let handle = py.detach(|| write_publication(&live.producer, data, wait))?;
        Ok(PyHandle(handle))
    }

    /// Serves the segment's descriptor on the socket `socket_name` (abstract, or a path when it
    /// holds a `/`; default `shmbridge-py-PID-EPOCH`) and, with a `handler`, the control channel:
    /// a consumer's request (bytes) is answered with what `handler(request)` returns, `bytes` or
    /// a `Response`. With `object_key`, `object_key(request)` is called first: an `int` names the
    /// answer the current version of that object on the version board (a consumer may serve it
    /// again without asking until `invalidate(key)`), `None` names nothing. Returns the socket
    /// name.
    #[pyo3(signature = (handler=None, socket_name=None, *, max_unredeemed_per_peer=None, max_unredeemed=None, allowed_uids=None, inline_threshold=None, object_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        py: Python<'_>,
        handler: Option<Py<PyAny>>,
        socket_name: Option<String>,
        max_unredeemed_per_peer: Option<u32>,
        max_unredeemed: Option<u32>,
        allowed_uids: Option<Vec<u32>>,
        inline_threshold: Option<usize>,
        object_key: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        for (name, callable) in [("handler", &handler), ("object_key", &object_key)] {
            if let Some(callable) = callable
                && !callable.bind(py).is_callable()
            {
                return Err(PyTypeError::new_err(format!("{name} must be callable")));
            }
        }
        if object_key.is_some() && handler.is_none() {
            return Err(PyTypeError::new_err("object_key needs a handler"));
        }
        let inline_threshold = inline_threshold.unwrap_or(DEFAULT_INLINE_THRESHOLD);
        if inline_threshold > MAX_INLINE_LEN {
            return Err(PyValueError::new_err(format!(
                "inline_threshold must be at most {MAX_INLINE_LEN} bytes, got {inline_threshold}"
            )));
        }
        let live = self.live.get()?;
        let name = socket_name
            .unwrap_or_else(|| format!("shmbridge-py-{}-{:016x}", std::process::id(), self.epoch));
        // Detached for the whole of it, the lock included: `stats` and `close` take the same
        // lock, and a thread holding the GIL while it waits for the lock would wait forever
        // for one holding the lock while it waits for the GIL (issue 21).
        py.detach(|| {
            let mut control = lock(&live.control);
            if let Some(served) = control.as_ref() {
                return Err(errors::Error::new_err(format!(
                    "already serving on @{}",
                    served.socket_name()
                )));
            }
            let producer = Arc::clone(&live.producer);
            let server = match handler {
                Some(handler) => {
                    let defaults = PublicationLimits::for_slots(producer.segment().slot_count());
                    let options = ChannelOptions {
                        allowed_uids: allowed_uids.unwrap_or_default(),
                        limits: PublicationLimits {
                            per_peer: max_unredeemed_per_peer.unwrap_or(defaults.per_peer),
                            segment: max_unredeemed.unwrap_or(defaults.segment),
                        },
                        inline_threshold,
                        board: Some(Arc::clone(&live.board)),
                        ..ChannelOptions::for_segment(producer.segment())
                    };
                    let handler = Arc::new(PyHandler {
                        handler,
                        object_key,
                        inline_threshold,
                    });
                    ControlServer::spawn_channel(producer, handler, options, &name)
                }
                None => ControlServer::spawn(Arc::clone(producer.segment()), &name),
            }
            .map_err(|error| {
                errors::Error::new_err(format!("cannot serve on abstract socket @{name}: {error}"))
            })?;
            *control = Some(server);
            *lock(&self.socket_name) = Some(name.clone());
            Ok(name)
        })
    }

    /// Makes every version of object `key` published so far non-current: call after the data
    /// behind it changed. Once this returns, no consumer request that starts afterwards serves
    /// them, and an answer whose handler was running names no version.
    fn invalidate(&self, key: u64) -> PyResult<()> {
        self.live.get()?.board.invalidate(key);
        Ok(())
    }

    /// Runs one reaper pass now (the background reaper runs every `reap_interval`) and returns
    /// how many slots it took back; it also restores a scribbled header.
    fn reap(&self, py: Python<'_>) -> PyResult<u64> {
        let live = self.live.get()?;
        Ok(py.detach(|| live.producer.reap().total()))
    }

    /// Slot states now, and what this producer has counted since it started.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let live = self.live.get()?;
        // Detached: the scan reads every slot's state, and the control lock may be held by
        // `serve` (never while it waits for the GIL, and never waited for with it held).
        let (stats, peers) = py.detach(|| {
            let peers = lock(&live.control).as_ref().map_or(0, ControlServer::peers);
            (live.producer.stats(), peers)
        });
        let slots = PyDict::new(py);
        slots.set_item("free", stats.slots.free)?;
        slots.set_item("writing", stats.slots.writing)?;
        slots.set_item("ready", stats.slots.ready)?;
        slots.set_item("reading", stats.slots.reading)?;
        slots.set_item("unknown", stats.slots.unknown)?;
        let reclaims = PyDict::new(py);
        for reason in ReclaimReason::ALL {
            reclaims.set_item(reason.as_str(), stats.reclaims.get(reason))?;
        }
        let dict = PyDict::new(py);
        dict.set_item("slots", slots)?;
        dict.set_item("reclaims", reclaims)?;
        dict.set_item("writes_reclaimed", stats.writes_reclaimed)?;
        dict.set_item("claims_exhausted", stats.claims_exhausted)?;
        dict.set_item("header_repairs", stats.header_repairs)?;
        dict.set_item("withdrawn", stats.withdrawn)?;
        dict.set_item("sealed_publications", stats.sealed_publications)?;
        dict.set_item("sealed_bytes_in_flight", stats.sealed_bytes_in_flight)?;
        dict.set_item("peers", peers)?;
        Ok(dict)
    }

    /// Stops the control socket and the reaper. The segment goes away once nothing in this
    /// process still uses it (a segment file is removed then). Closing twice does nothing.
    /// Detached: stopping the server and the reaper joins their threads, and a channel thread
    /// may be waiting for the GIL to call the handler.
    fn close(&self, py: Python<'_>) {
        self.live.close(py);
    }

    fn __repr__(&self) -> String {
        format!(
            "<shmbridge.Producer epoch={:016x} {}>",
            self.epoch,
            self.live.state()
        )
    }
}

/// Answers control-channel requests with what a Python callable returns.
struct PyHandler {
    handler: Py<PyAny>,
    /// `object_key(request) -> int | None`, called before the handler.
    object_key: Option<Py<PyAny>>,
    /// The channel's: a body up to this long is buffered, not written into a slot or memfd.
    inline_threshold: usize,
}

/// What a handler returned, as the writer takes it.
enum Made<'py> {
    Bytes(Bound<'py, PyBytes>),
    Response(Bound<'py, PyResponse>),
    /// A head (a `Response` with an empty body) and an iterable of `bytes` chunks, written one
    /// by one into whichever tier the body grows into, so that it is never held whole here.
    Streamed(Bound<'py, PyResponse>, Bound<'py, PyIterator>),
    /// A head (a `Response` with an empty body) and the kept body to hand over as it is.
    Kept(Bound<'py, PyResponse>, Bound<'py, PyKeptBody>),
}

impl Handler for PyHandler {
    fn handle(
        &self,
        request: &[u8],
        response: &mut ResponseWriter<'_>,
    ) -> Result<(), HandlerError> {
        // try_attach: at interpreter exit, when this channel thread may no longer attach
        // (issue 21), the request fails instead of the process.
        Python::try_attach(|py| self.answer(py, request, response))
            .unwrap_or_else(|| Err("the Python interpreter is shutting down".into()))
    }
}

impl PyHandler {
    fn answer(
        &self,
        py: Python<'_>,
        request: &[u8],
        response: &mut ResponseWriter<'_>,
    ) -> Result<(), HandlerError> {
        let handler = self.handler.bind(py);
        // A bug in the handler, or its own refusal: either way this request fails
        // (HandlerFailed), and the exception is reported through sys.unraisablehook, since
        // there is no Python caller to raise it to.
        let failed = |error: PyErr| -> HandlerError {
            let text = error.to_string();
            error.write_unraisable(py, Some(handler));
            text.into()
        };
        let request = PyBytes::new(py, request);
        if let Some(object_key) = &self.object_key {
            // Before the handler reads anything: an invalidation from here on leaves this
            // answer naming no version.
            let key = object_key
                .bind(py)
                .call1((&request,))
                .and_then(|key| key.extract::<Option<u64>>())
                .map_err(failed)?;
            if let Some(key) = key {
                response.observe_object(key);
            }
        }
        let made = handler
            .call1((request,))
            .and_then(|made| Made::extract(&made))
            .map_err(failed)?;
        let body = match &made {
            Made::Bytes(body) => body.clone(),
            Made::Response(head) => {
                write_head(head.get(), response)?;
                head.get().body_object().bind(py).clone()
            }
            Made::Streamed(head, chunks) => {
                write_head(head.get(), response)?;
                for chunk in chunks.clone() {
                    let chunk = chunk.and_then(|chunk| {
                        chunk.cast_into::<PyBytes>().map_err(|chunk| {
                            PyTypeError::new_err(format!(
                                "a streamed body's chunks are bytes, not {}",
                                chunk.into_inner().get_type()
                            ))
                        })
                    });
                    self.write(py, chunk.map_err(failed)?.as_bytes(), response)?;
                }
                return Ok(());
            }
            Made::Kept(head, kept) => {
                write_head(head.get(), response)?;
                response.send_sealed(kept.get().payload())?;
                return Ok(());
            }
        };
        // The length is known, so the writer picks the tier up front and refuses a body too
        // large before any copy.
        response.expect_len(body.as_bytes().len() as u64)?;
        self.write(py, body.as_bytes(), response)
    }

    /// Writes `data` into the body. A piece the writer buffers is copied at once; one headed
    /// for a slot or a memfd may wait for room and copies megabytes, so it is written detached
    /// (`bytes` are immutable, and the caller keeps them alive meanwhile).
    fn write(
        &self,
        py: Python<'_>,
        data: &[u8],
        response: &mut ResponseWriter<'_>,
    ) -> Result<(), HandlerError> {
        if data.len() <= self.inline_threshold {
            response.write_all(data)?;
        } else {
            py.detach(|| response.write_all(data))?;
        }
        Ok(())
    }
}

/// The status, content type and headers of a handler's `Response`.
fn write_head(made: &PyResponse, response: &mut ResponseWriter<'_>) -> Result<(), HandlerError> {
    let head = made.head();
    response.set_status(head.status())?;
    if !head.content_type().is_empty() {
        response.set_content_type(head.content_type())?;
    }
    for (name, value) in head.headers() {
        response.add_header(name, value)?;
    }
    Ok(())
}

impl<'py> Made<'py> {
    fn extract(made: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(body) = made.cast::<PyBytes>() {
            return Ok(Self::Bytes(body.clone()));
        }
        if let Ok(response) = made.cast::<PyResponse>() {
            return Ok(Self::Response(response.clone()));
        }
        if let Ok((head, body)) = made.extract::<(Bound<'py, PyResponse>, Bound<'py, PyAny>)>() {
            if !head
                .get()
                .body_object()
                .bind(made.py())
                .as_bytes()
                .is_empty()
            {
                return Err(PyTypeError::new_err(
                    "a (Response, body) pair's head has an empty body: the body is the second",
                ));
            }
            if let Ok(kept) = body.cast::<PyKeptBody>() {
                return Ok(Self::Kept(head, kept.clone()));
            }
            return Ok(Self::Streamed(head, body.try_iter()?));
        }
        Err(PyTypeError::new_err(format!(
            "a handler returns bytes, a shmbridge.Response, or a (Response, KeptBody) or \
             (Response, iterable of bytes) pair, not {}",
            made.get_type().name()?
        )))
    }
}

/// A lease or TTL: more than zero and at most what the reaper accepts.
fn deadline(name: &str, value: f64) -> PyResult<Duration> {
    let duration = seconds::positive(name, value)?;
    if duration > shmbridge::MAX_DEADLINE_AHEAD {
        return Err(PyValueError::new_err(format!(
            "{name} of {value} s is longer than {} s",
            shmbridge::MAX_DEADLINE_AHEAD.as_secs()
        )));
    }
    Ok(duration)
}
