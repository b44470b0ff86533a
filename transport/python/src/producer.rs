//! `shmbridge.Producer`: creates a segment (sealed memfd, or a file), runs its reaper, publishes
//! bytes into it, and serves its descriptor socket and control channel with a Python callable
//! making the payloads.
//!
//! The GIL is held only to touch Python objects: copying into a slot, waiting for one, and
//! stopping the background threads all run detached. `bytes` are immutable and the call holds a
//! reference, so their buffer can be read while detached.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use shmbridge::control::{
    ChannelOptions, PublicationLimits, PublishRequest, Published, Publisher, Refusal, RefusalCode,
    publish_bytes,
};
use shmbridge::{
    ClaimError, ControlServer, Handle, Producer, ProducerOptions, PublishError, ReaperThread,
    ReclaimReason, Segment, SegmentConfig,
};

use crate::errors;
use crate::handle::PyHandle;
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
struct Live {
    producer: Arc<Producer>,
    // Stopped before the reaper: dropping the server wakes its threads first.
    control: Mutex<Option<ControlServer>>,
    _reaper: ReaperThread,
}

#[pyclass(name = "Producer", module = "shmbridge", frozen)]
pub struct PyProducer {
    epoch: u64,
    socket_name: Mutex<Option<String>>,
    live: Mutex<Option<Arc<Live>>>,
}

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
            Ok(Live {
                producer,
                control: Mutex::new(None),
                _reaper: reaper,
            })
        })?;
        Ok(Self {
            epoch: live.producer.segment().epoch(),
            socket_name: Mutex::new(None),
            live: Mutex::new(Some(Arc::new(live))),
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
        Ok(self.live()?.producer.segment().slot_count())
    }

    #[getter]
    fn slot_size(&self) -> PyResult<u32> {
        Ok(self.live()?.producer.segment().slot_size())
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
        let live = self.live()?;
        let data = data.as_bytes();
        let handle = py.detach(|| write_publication(&live.producer, data, wait))?;
        Ok(PyHandle(handle))
    }

    /// Serves the segment's descriptor on the abstract socket `socket_name` (default
    /// `shmbridge-py-PID-EPOCH`) and, with a `callback`, the control channel: a consumer's
    /// request for `(count, seed)` is answered by publishing `callback(count, seed)`, which must
    /// return `bytes`. Returns the socket name.
    #[pyo3(signature = (callback=None, socket_name=None, *, claim_timeout=0.2, max_unredeemed_per_peer=None, max_unredeemed=None, allowed_uids=None))]
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        py: Python<'_>,
        callback: Option<Py<PyAny>>,
        socket_name: Option<String>,
        claim_timeout: f64,
        max_unredeemed_per_peer: Option<u32>,
        max_unredeemed: Option<u32>,
        allowed_uids: Option<Vec<u32>>,
    ) -> PyResult<String> {
        if let Some(callback) = &callback
            && !callback.bind(py).is_callable()
        {
            return Err(PyTypeError::new_err("callback must be callable"));
        }
        let claim_timeout = seconds::non_negative("claim_timeout", claim_timeout)?;
        let live = self.live()?;
        let name = socket_name
            .unwrap_or_else(|| format!("shmbridge-py-{}-{:016x}", std::process::id(), self.epoch));
        let mut control = lock(&live.control);
        if let Some(served) = control.as_ref() {
            return Err(errors::Error::new_err(format!(
                "already serving on @{}",
                served.socket_name()
            )));
        }
        let producer = Arc::clone(&live.producer);
        let server = py.detach(|| match callback {
            Some(callback) => {
                let defaults = PublicationLimits::for_slots(producer.segment().slot_count());
                let options = ChannelOptions {
                    allowed_uids: allowed_uids.unwrap_or_default(),
                    limits: PublicationLimits {
                        per_peer: max_unredeemed_per_peer.unwrap_or(defaults.per_peer),
                        segment: max_unredeemed.unwrap_or(defaults.segment),
                    },
                    ..ChannelOptions::for_segment(producer.segment())
                };
                let publisher = Arc::new(CallbackPublisher {
                    callback,
                    claim_timeout,
                });
                ControlServer::spawn_channel(producer, publisher, options, &name)
            }
            None => ControlServer::spawn(Arc::clone(producer.segment()), &name),
        });
        let server = server.map_err(|error| {
            errors::Error::new_err(format!("cannot serve on abstract socket @{name}: {error}"))
        })?;
        *control = Some(server);
        *lock(&self.socket_name) = Some(name.clone());
        Ok(name)
    }

    /// Runs one reaper pass now (the background reaper runs every `reap_interval`) and returns
    /// how many slots it took back; it also restores a scribbled header.
    fn reap(&self, py: Python<'_>) -> PyResult<u64> {
        let live = self.live()?;
        Ok(py.detach(|| live.producer.reap().total()))
    }

    /// Slot states now, and what this producer has counted since it started.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let live = self.live()?;
        let stats = live.producer.stats();
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
        let peers = lock(&live.control).as_ref().map_or(0, ControlServer::peers);
        dict.set_item("peers", peers)?;
        Ok(dict)
    }

    /// Stops the control socket and the reaper. The segment goes away once nothing in this
    /// process still uses it (a segment file is removed then). Closing twice does nothing.
    fn close(&self, py: Python<'_>) {
        let live = lock(&self.live).take();
        // Detached: stopping the server joins its accept thread, and a channel thread may be
        // waiting for the GIL to call the callback.
        py.detach(|| {
            if let Some(live) = live {
                drop(lock(&live.control).take());
            }
        });
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
        format!("<shmbridge.Producer epoch={:016x} {state}>", self.epoch)
    }
}

impl PyProducer {
    fn live(&self) -> PyResult<Arc<Live>> {
        lock(&self.live)
            .clone()
            .ok_or_else(|| errors::Closed::new_err("the producer is closed"))
    }
}

/// Answers control-channel requests with the bytes a Python callable makes.
struct CallbackPublisher {
    callback: Py<PyAny>,
    claim_timeout: Duration,
}

impl Publisher for CallbackPublisher {
    fn publish(
        &self,
        producer: &Producer,
        request: &PublishRequest,
        wait: Duration,
    ) -> Result<Published, Refusal> {
        let refusal = |code, detail| Refusal { code, detail };
        Python::attach(|py| {
            let callback = self.callback.bind(py);
            let made = callback
                .call1((request.count, request.seed))
                .and_then(|body| body.cast_into::<PyBytes>().map_err(PyErr::from));
            let body = match made {
                Ok(body) => body,
                Err(error) => {
                    // ValueError is the callback refusing the query; anything else is a bug in
                    // it. Either way the request fails, and the exception is reported through
                    // sys.unraisablehook, since there is no Python caller to raise it to.
                    let code = if error.is_instance_of::<PyValueError>(py) {
                        RefusalCode::BadRequest
                    } else {
                        RefusalCode::Internal
                    };
                    error.write_unraisable(py, Some(callback));
                    return Err(refusal(code, 0));
                }
            };
            // By size: a slot when one holds the body, a sealed payload (its descriptor goes
            // with the answer) up to the producer's largest.
            let data = body.as_bytes();
            py.detach(|| publish_bytes(producer, data, wait.min(self.claim_timeout)))
        })
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
