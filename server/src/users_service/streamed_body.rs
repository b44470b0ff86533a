//! A users body sent to the HTTP client while it is being generated: a blocking thread writes
//! it into a [`ChunkSender`], a bounded channel of chunks that the response's [`StreamedBody`]
//! drains, so a body of any size holds at most [`CHANNEL_CHUNKS`] + 2 chunks of about
//! [`WRITE_CHUNK_BYTES`] in memory (the queued ones, the one being filled, the one being sent).

// Design notes for maintainers:
// - The body declares its exact length up front (`size_hint`, and the content-length header the
//   handler sets from the same summary), so a writer that stops early is an error the client
//   sees as a short body, never a shorter body that looks complete.
// - Back-pressure is the channel: when the client reads slowly the writer blocks on a full
//   channel, up to `STALL_TIMEOUT`, then gives up; when the client goes, the body (the
//   receiver) is dropped and the writer's next send fails at once. Either way the blocking
//   thread is freed.
// - A chunk is a copy of the serializer's buffer (`Bytes::copy_from_slice`): one bounded copy
//   per chunk, which lets the serializer reuse its buffer at once.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::dataset::WRITE_CHUNK_BYTES;

/// Chunks queued between the writer and the client.
pub const CHANNEL_CHUNKS: usize = 4;

/// How long users-service's writer waits for room in the channel before it decides the client
/// is stuck: far above a healthy client's pause (a 64 KiB chunk takes microseconds to send) and
/// above the gateway's default deadline (2 s), short enough that a stalled client frees the
/// blocking thread.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The receiving end: an HTTP body of exactly the length it was created with.
#[derive(Debug)]
pub struct StreamedBody {
    chunks: mpsc::Receiver<Bytes>,
    remaining: u64,
}

/// The sending end, for a blocking thread: each write becomes one chunk of the body.
#[derive(Debug)]
pub struct ChunkSender {
    chunks: mpsc::Sender<Bytes>,
    stall: Duration,
    runtime: Handle,
}

/// A body for `len` bytes and the writer that must fill it, which waits at most `stall` (e.g.
/// [`STALL_TIMEOUT`]) for room for each chunk. `runtime` runs those bounded waits; the writer
/// itself runs on a thread that may block, never on an async worker.
pub fn channel(len: u64, stall: Duration, runtime: Handle) -> (StreamedBody, ChunkSender) {
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    (
        StreamedBody {
            chunks: receiver,
            remaining: len,
        },
        ChunkSender {
            chunks: sender,
            stall,
            runtime,
        },
    )
}

/// Why a streamed body ended in error (the client's connection is then cut short).
#[derive(Debug, thiserror::Error)]
pub enum StreamedBodyError {
    #[error("the body's writer stopped {missing} bytes short of the declared length")]
    Short { missing: u64 },
    #[error("the body's writer sent a chunk of {chunk} bytes with {remaining} bytes left")]
    Long { chunk: usize, remaining: u64 },
}

/// Why a [`ChunkSender`] write failed (wrapped in the `io::Error` the serializer returns).
#[derive(Debug, thiserror::Error)]
pub enum ChunkSendError {
    #[error("the response body is gone (client disconnected)")]
    BodyGone,
    #[error("the client took no chunk for {0:?}")]
    Stalled(Duration),
}

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = StreamedBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamedBodyError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let remaining = self.remaining;
        Poll::Ready(Some(match ready!(self.chunks.poll_recv(cx)) {
            Some(chunk) if chunk.len() as u64 <= remaining => {
                self.remaining -= chunk.len() as u64;
                Ok(Frame::data(chunk))
            }
            Some(chunk) => Err(StreamedBodyError::Long {
                chunk: chunk.len(),
                remaining,
            }),
            None => Err(StreamedBodyError::Short { missing: remaining }),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Write for ChunkSender {
    /// Sends up to [`WRITE_CHUNK_BYTES`] of `buf` as one chunk (the serializer's writes are
    /// never larger; a larger one is split, so chunks stay bounded whoever writes).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let taken = buf.len().min(WRITE_CHUNK_BYTES);
        let chunk = Bytes::copy_from_slice(&buf[..taken]);
        let sent = self
            .runtime
            .block_on(tokio::time::timeout(self.stall, self.chunks.send(chunk)));
        match sent {
            Ok(Ok(())) => Ok(taken),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                ChunkSendError::BodyGone,
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                ChunkSendError::Stalled(self.stall),
            )),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    /// The next frame's data, or the body's error; `None` at its end.
    async fn next(body: &mut StreamedBody) -> Option<Result<Bytes, StreamedBodyError>> {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        Some(frame.map(|frame| frame.into_data().expect("only data frames")))
    }

    /// Runs `write` on a blocking thread, as users-service does, and returns what it returned.
    async fn on_a_blocking_thread<T: Send + 'static>(
        write: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        tokio::task::spawn_blocking(write).await.unwrap()
    }

    #[tokio::test]
    async fn chunks_arrive_in_order_and_the_body_ends_at_its_length() {
        let data: Vec<u8> = (0..3 * WRITE_CHUNK_BYTES + 5).map(|i| i as u8).collect();
        let (mut body, mut sender) = channel(data.len() as u64, STALL_TIMEOUT, Handle::current());
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let expected = data.clone();
        let writer = tokio::task::spawn_blocking(move || sender.write_all(&data));
        let mut received = Vec::new();
        while let Some(chunk) = next(&mut body).await {
            let chunk = chunk.unwrap();
            assert!(
                chunk.len() <= WRITE_CHUNK_BYTES,
                "one write, one bounded chunk"
            );
            received.extend_from_slice(&chunk);
        }
        assert!(body.is_end_stream());
        assert_eq!(received, expected);
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_writer_that_stops_short_is_an_error_not_an_end() {
        let (mut body, mut sender) = channel(100, STALL_TIMEOUT, Handle::current());
        on_a_blocking_thread(move || sender.write_all(&[7; 60]))
            .await
            .unwrap();
        assert_eq!(next(&mut body).await.unwrap().unwrap().len(), 60);
        let error = next(&mut body).await.unwrap().unwrap_err();
        assert!(
            matches!(error, StreamedBodyError::Short { missing: 40 }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_writer_that_sends_too_much_is_an_error() {
        let (mut body, mut sender) = channel(10, STALL_TIMEOUT, Handle::current());
        on_a_blocking_thread(move || sender.write_all(&[7; 20]))
            .await
            .unwrap();
        let error = next(&mut body).await.unwrap().unwrap_err();
        assert!(
            matches!(
                error,
                StreamedBodyError::Long {
                    chunk: 20,
                    remaining: 10
                }
            ),
            "{error}"
        );
    }

    /// A client that goes away drops the body: the writer's next chunk fails at once, so the
    /// generating thread stops instead of producing the rest.
    #[tokio::test]
    async fn a_dropped_body_fails_the_writer_at_once() {
        let (body, mut sender) = channel(1 << 20, STALL_TIMEOUT, Handle::current());
        drop(body);
        let error = on_a_blocking_thread(move || sender.write_all(&[1; 10]))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        assert!(matches!(
            error.into_inner().unwrap().downcast_ref(),
            Some(ChunkSendError::BodyGone)
        ));
    }

    /// A client that stops reading fills the channel: the writer waits `stall` for room and
    /// gives up, holding no more than the channel's chunks.
    #[tokio::test]
    async fn a_stalled_client_times_the_writer_out() {
        let stall = Duration::from_millis(50);
        let (body, mut sender) = channel(1 << 30, stall, Handle::current());
        let (sent, error) = on_a_blocking_thread(move || {
            let mut sent = 0;
            loop {
                match sender.write_all(&[1; 10]) {
                    Ok(()) => sent += 1,
                    Err(error) => return (sent, error),
                }
            }
        })
        .await;
        assert_eq!(sent, CHANNEL_CHUNKS);
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(body);
    }
}
