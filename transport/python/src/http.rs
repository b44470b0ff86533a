//! The HTTP-over-shm convention of [`shmbridge::http`] for Python: a producer serving HTTP
//! routes over the channel parses its request bytes with `http_request_parse`, a consumer makes
//! them with `http_request_encode`. The Rust implementation is the convention's reference, so
//! a Python service accepts exactly the requests the Rust services accept and a Python gateway
//! sends exactly what they send.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shmbridge::http::{HttpRequest, HttpRequestError};

/// A request's method, target, header pairs and body.
type Parts<'py> = (String, String, Vec<(String, String)>, Bound<'py, PyBytes>);

fn invalid(error: HttpRequestError) -> PyErr {
    PyValueError::new_err(error.to_string())
}

/// `(method, target, headers, body)` of request bytes
/// (`METHOD SP /target CRLF (name: value CRLF)* CRLF body`); `ValueError` unless they follow
/// the convention.
#[pyfunction]
pub fn http_request_parse<'py>(
    py: Python<'py>,
    request: &Bound<'py, PyBytes>,
) -> PyResult<Parts<'py>> {
    let parsed = HttpRequest::parse(request.as_bytes()).map_err(invalid)?;
    let headers = parsed
        .headers
        .iter()
        .map(|&(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    Ok((
        parsed.method.to_owned(),
        parsed.target.to_owned(),
        headers,
        PyBytes::new(py, parsed.body),
    ))
}

/// The request bytes for `method` and `target` (`/path?query`), with header pairs and a body;
/// `ValueError` for a part that breaks the convention's rules.
#[pyfunction]
#[pyo3(
    signature = (method, target, headers=None, body=None),
    text_signature = "(method, target, headers=(), body=b'')"
)]
pub fn http_request_encode<'py>(
    py: Python<'py>,
    method: &str,
    target: &str,
    headers: Option<Vec<(String, String)>>,
    body: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let headers = headers.unwrap_or_default();
    let request = HttpRequest {
        method,
        target,
        headers: headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect(),
        body: body.unwrap_or_default(),
    };
    let encoded = request.encode().map_err(invalid)?;
    Ok(PyBytes::new(py, &encoded))
}
