//! Arbitrary bytes as a control-channel frame: the engine behind the `control_frame` fuzz target.

use crate::control::frame::{
    Answer, MAX_HEAD_LEN, MAX_HEADER_NAME_LEN, MAX_HEADER_VALUE_LEN, MAX_HEADERS, MAX_INLINE_LEN,
    MAX_REQUEST_LEN, Placement, Request, ResponseHead,
};

/// Decodes `bytes` as a consumer's request and as a producer's answer. Neither decoder may
/// panic, at most one of them may accept the bytes (requests and answers have distinct kinds),
/// whatever decodes must encode back to exactly `bytes`, and whatever decodes is within every
/// bound of the spec (a request of at most [`MAX_REQUEST_LEN`] bytes, an inline body of at most
/// [`MAX_INLINE_LEN`], a head of at most [`MAX_HEAD_LEN`] with its own per-field bounds): the
/// codec is canonical (one length per kind, reserved bytes zero), so no two byte strings mean
/// the same frame and a later version can give today's reserved bytes a meaning without an old
/// peer misreading them.
///
/// # Panics
/// When a decoded frame does not re-encode to `bytes`, breaks a bound, or the bytes are both a
/// request and an answer.
pub fn check_control_frame(bytes: &[u8]) {
    let request = Request::decode(bytes);
    if let Ok(request) = &request {
        if let Request::Publish { request: body, .. } = request {
            assert!(
                body.len() <= MAX_REQUEST_LEN,
                "a request of {} bytes decoded",
                body.len()
            );
        }
        assert_eq!(
            request.encode(),
            bytes,
            "request {request:?} did not re-encode to its bytes"
        );
    }
    let answer = Answer::decode(bytes);
    if let Ok(answer) = &answer {
        match answer {
            Answer::Published {
                head,
                placement,
                object,
                ..
            } => {
                check_head(head);
                if let Some(object) = object {
                    assert_ne!(object.version, 0, "an object version of 0 decoded");
                }
                if let Placement::Inline { body, .. } = placement {
                    assert!(
                        body.len() <= MAX_INLINE_LEN,
                        "an inline body of {} bytes decoded",
                        body.len()
                    );
                }
                let _ = placement.tier().as_str();
            }
            // The text a log line or an error message shows must not panic either.
            Answer::Refused { refusal, .. } => {
                let _ = refusal.to_string();
            }
            Answer::Board { .. } => {}
        }
        assert_eq!(
            answer.encode(),
            bytes,
            "answer {answer:?} did not re-encode to its bytes"
        );
    }
    assert!(
        request.is_err() || answer.is_err(),
        "{bytes:02x?} decoded both as a request and as an answer"
    );
}

/// Every bound a decoded head must keep.
fn check_head(head: &ResponseHead) {
    assert!(
        (100..=999).contains(&head.status()),
        "status {} decoded",
        head.status()
    );
    assert!(
        head.encoded_len() <= MAX_HEAD_LEN,
        "a head of {} bytes decoded",
        head.encoded_len()
    );
    assert!(head.content_type().len() <= MAX_HEADER_VALUE_LEN);
    assert!(
        head.headers().len() <= MAX_HEADERS,
        "too many headers decoded"
    );
    for (name, value) in head.headers() {
        assert!(
            !name.is_empty() && name.len() <= MAX_HEADER_NAME_LEN,
            "header name of {} bytes decoded",
            name.len()
        );
        assert!(
            value.len() <= MAX_HEADER_VALUE_LEN,
            "header value of {} bytes decoded",
            value.len()
        );
        let http = |text: &str| !text.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        assert!(
            http(name) && http(value),
            "CR, LF or NUL decoded in a header"
        );
    }
}
