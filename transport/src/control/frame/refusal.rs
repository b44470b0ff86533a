//! Why a producer published nothing: the refusal codes a **refused** frame carries, with the
//! meaning of each code's `detail`.

use thiserror::Error;

use crate::error::ClaimError;

/// Why a producer published nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("{code}{}", detail_text(*.code, *.detail))]
pub struct Refusal {
    pub code: RefusalCode,
    pub detail: u64,
}

impl Refusal {
    pub fn new(code: RefusalCode, detail: u64) -> Self {
        Self { code, detail }
    }
}

fn detail_text(code: RefusalCode, detail: u64) -> String {
    match code {
        RefusalCode::TooLarge | RefusalCode::RequestTooLarge => {
            format!(" (the limit is {detail} bytes)")
        }
        RefusalCode::PeerBusy | RefusalCode::SegmentBusy => {
            format!(" (limit {detail} unredeemed publications)")
        }
        RefusalCode::Version => format!(" (the producer speaks version {detail})"),
        _ => String::new(),
    }
}

/// The refusal codes; the numbers are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
#[repr(u16)]
pub enum RefusalCode {
    /// The body is larger than the producer publishes: above its largest sealed payload, or
    /// above the slot size where it makes no sealed payloads. `detail`: that limit, in bytes (a
    /// producer stops making a body once it passes the limit, so the body's own length is not
    /// always known).
    #[error("payload too large")]
    TooLarge = 1,
    /// No slot came free before the deadline, or (for a sealed payload) no room under the
    /// producer's limit on sealed bytes in flight or the peer's share of it. `detail`: 0.
    #[error("every slot is busy")]
    Exhausted = 2,
    /// This connection already holds as many unredeemed publications as it may: publications
    /// whose slot is not given back yet, waiting for their consumer or being read. `detail`: the
    /// limit.
    #[error("this peer holds too many unredeemed publications")]
    PeerBusy = 3,
    /// The segment already holds as many unredeemed publications (waiting or being read) as the
    /// producer allows. `detail`: the limit.
    #[error("too many unredeemed publications in the segment")]
    SegmentBusy = 4,
    /// The request was read after its deadline, or the deadline passed while it waited. `detail`: 0.
    #[error("deadline passed before the publication")]
    DeadlineExceeded = 5,
    /// The producer failed to publish what its handler made (its slot was reclaimed mid-write,
    /// a memfd could not be made or sealed). `detail`: 0.
    #[error("the producer failed to publish")]
    Internal = 6,
    /// The request is longer than [`MAX_REQUEST_LEN`](super::MAX_REQUEST_LEN). `detail`: that
    /// limit. The connection stays open.
    #[error("request too large")]
    RequestTooLarge = 7,
    /// The producer's handler returned an error or panicked. `detail`: 0.
    #[error("the producer's handler failed")]
    HandlerFailed = 8,
    /// The frame was of another control version. `detail`: the producer's
    /// [`CONTROL_VERSION`](super::CONTROL_VERSION). The producer closes the connection after
    /// this answer.
    #[error("control channel version mismatch")]
    Version = 9,
    /// A board request to a producer that publishes no version board. `detail`: 0.
    #[error("the producer publishes no version board")]
    NoBoard = 10,
}

impl RefusalCode {
    pub const ALL: [Self; 10] = [
        Self::TooLarge,
        Self::Exhausted,
        Self::PeerBusy,
        Self::SegmentBusy,
        Self::DeadlineExceeded,
        Self::Internal,
        Self::RequestTooLarge,
        Self::HandlerFailed,
        Self::Version,
        Self::NoBoard,
    ];

    pub(super) fn from_wire(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|code| *code as u16 == value)
    }
}

impl From<ClaimError> for Refusal {
    /// The refusal a publisher answers when its producer found no room.
    fn from(error: ClaimError) -> Self {
        match error {
            ClaimError::TooLarge { max, .. } => Self::new(RefusalCode::TooLarge, max as u64),
            ClaimError::Exhausted { .. } | ClaimError::BytesExhausted { .. } => {
                Self::new(RefusalCode::Exhausted, 0)
            }
        }
    }
}
