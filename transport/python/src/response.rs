//! `shmbridge.Response`: a status, a content type, header pairs and a body. A handler returns
//! one (or plain `bytes`: a 200 with no metadata), and `Consumer.request` gives one back with the
//! tier that carried its body. The head is checked when a response is made, by the rules the
//! channel itself checks ([`ResponseHead`]), so a response that exists can always be sent and a
//! bad header is a `ValueError` where the handler made it.

use std::os::raw::c_char;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shmbridge::control::frame::ObjectVersion;
use shmbridge::control::{self, ResponseHead, Tier};

/// Bodies at least this long are copied into their `bytes` object with the interpreter released
/// (a 64 MiB copy takes milliseconds); shorter ones cost less to copy than to detach and
/// re-attach.
const DETACHED_COPY_LEN: usize = 1 << 20;

#[pyclass(name = "Response", module = "shmbridge", frozen)]
pub struct PyResponse {
    head: ResponseHead,
    body: Py<PyBytes>,
    /// The tier that carried a received response; `None` for one made in Python.
    tier: Option<Tier>,
    /// The object version the producer named a received response, if any.
    object: Option<ObjectVersion>,
}

#[pymethods]
impl PyResponse {
    /// A response to return from a handler. `ValueError` for a status outside 100..=999, a
    /// header name that is not an HTTP token, a value (or content type) with bytes HTTP does
    /// not allow, more than 64 headers or a head above 16 KiB.
    #[new]
    #[pyo3(
        signature = (status=200, body=None, content_type="", headers=None),
        text_signature = "(status=200, body=b'', content_type='', headers=())"
    )]
    fn new(
        py: Python<'_>,
        status: u16,
        body: Option<Py<PyBytes>>,
        content_type: &str,
        headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Self> {
        let invalid = |error: control::frame::HeadError| PyValueError::new_err(error.to_string());
        let mut head = ResponseHead::default();
        head.set_status(status).map_err(invalid)?;
        head.set_content_type(content_type).map_err(invalid)?;
        for (name, value) in headers.unwrap_or_default() {
            head.add_header(&name, &value).map_err(invalid)?;
        }
        Ok(Self {
            head,
            body: body.unwrap_or_else(|| PyBytes::new(py, b"").unbind()),
            tier: None,
            object: None,
        })
    }

    #[getter]
    fn status(&self) -> u16 {
        self.head.status()
    }

    /// Empty when the producer set none.
    #[getter]
    fn content_type(&self) -> &str {
        self.head.content_type()
    }

    /// The header pairs, in the order they were added (names as given).
    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.head.headers().to_vec()
    }

    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    /// `"inline"`, `"slot"` or `"sealed"`: how a received body travelled; None for a response
    /// made here.
    #[getter]
    fn tier(&self) -> Option<&'static str> {
        self.tier.map(Tier::as_str)
    }

    /// `(key, version)`: the object version the producer named this response, if it named one.
    #[getter]
    fn object(&self) -> Option<(u64, u64)> {
        self.object.map(|object| (object.key, object.version))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let tier = self
            .tier
            .map_or(String::new(), |tier| format!(" tier={}", tier.as_str()));
        format!(
            "<shmbridge.Response status={} content_type={:?} headers={} len={}{tier}>",
            self.head.status(),
            self.head.content_type(),
            self.head.headers().len(),
            self.body.bind(py).as_bytes().len(),
        )
    }
}

impl PyResponse {
    /// A verified response as Python sees it: its body copied once into a `bytes` object.
    pub fn received(py: Python<'_>, response: control::Response) -> PyResult<Self> {
        let control::Response { head, object, body } = response;
        let tier = body.tier();
        let bytes = bytes_of(py, &body[..])?.unbind();
        if body.len() >= DETACHED_COPY_LEN {
            // A sealed body is a mapping: unmapping megabytes is no work for the interpreter's
            // lock either.
            py.detach(|| drop(body));
        }
        Ok(Self {
            head,
            body: bytes,
            tier: Some(tier),
            object,
        })
    }

    pub fn head(&self) -> &ResponseHead {
        &self.head
    }

    pub fn body_object(&self) -> &Py<PyBytes> {
        &self.body
    }
}

/// A new `bytes` object holding `body`, copied once. A large body is copied with the interpreter
/// released: the object is made uninitialized, filled while detached, and only then handed to
/// Python.
pub fn bytes_of<'py>(py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    if body.len() < DETACHED_COPY_LEN {
        return Ok(PyBytes::new(py, body));
    }
    let len = ffi::Py_ssize_t::try_from(body.len())
        .map_err(|_| PyValueError::new_err("body too long for a bytes object"))?;
    // SAFETY: a null pointer asks CPython for a new bytes object of `len` uninitialized bytes;
    // the call returns a new (owned) reference, or null with an exception set, which
    // `from_owned_ptr_or_err` turns into the error.
    let object = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromStringAndSize(std::ptr::null(), len))?
    };
    // SAFETY: `object` is a bytes object (just made by PyBytes_FromStringAndSize).
    let bytes = unsafe { object.cast_into_unchecked::<PyBytes>() };
    // SAFETY: `bytes` is a bytes object, for which PyBytes_AsString returns its storage (never
    // null), `len` bytes long and valid while the object lives; `bytes` is held below.
    let storage = Storage(unsafe { ffi::PyBytes_AsString(bytes.as_ptr()) });
    py.detach(move || {
        let storage = storage.into_ptr();
        // SAFETY: `storage` is `body.len()` writable bytes owned by the new object, which no
        // other code can reach yet: its only reference is `bytes`, not yet returned to Python,
        // so nothing reads or writes it while this thread runs detached. `body` is a separate
        // allocation, so the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(body.as_ptr(), storage.cast::<u8>(), body.len());
        }
    });
    Ok(bytes)
}

/// The storage of a `bytes` object under construction, carried into the detached copy.
struct Storage(*mut c_char);

impl Storage {
    /// By value, so that a closure calling it captures the whole `Storage` (which is `Send`),
    /// not the raw pointer field alone (which is not).
    fn into_ptr(self) -> *mut c_char {
        self.0
    }
}

// SAFETY: the pointer is used by one thread at a time, the detached copy in `bytes_of`, while
// the object it points into is reachable from no other code.
unsafe impl Send for Storage {}
