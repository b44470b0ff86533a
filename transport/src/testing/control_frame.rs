//! Arbitrary bytes as a control-channel frame: the engine behind the `control_frame` fuzz target.

use crate::control::{Answer, Request};

/// Decodes `bytes` as a consumer's request and as a producer's answer. Neither decoder may
/// panic, at most one of them may accept the bytes (requests and answers have distinct kinds),
/// and whatever decodes must encode back to exactly `bytes`: the codec is canonical (one length
/// per kind, reserved bytes zero), so no two byte strings mean the same frame and a later
/// version can give today's reserved bytes a meaning without an old peer misreading them.
///
/// # Panics
/// When a decoded frame does not re-encode to `bytes`, or the bytes are both a request and an
/// answer.
pub fn check_control_frame(bytes: &[u8]) {
    let request = Request::decode(bytes);
    if let Ok(request) = &request {
        assert_eq!(
            request.encode(),
            bytes,
            "request {request:?} did not re-encode to its bytes"
        );
    }
    let answer = Answer::decode(bytes);
    if let Ok(answer) = &answer {
        assert_eq!(
            answer.encode(),
            bytes,
            "answer {answer:?} did not re-encode to its bytes"
        );
        if let Answer::Refused { refusal, .. } = answer {
            // The text a log line or an error message shows must not panic either.
            let _ = refusal.to_string();
        }
    }
    assert!(
        request.is_err() || answer.is_err(),
        "{bytes:02x?} decoded both as a request and as an answer"
    );
}
