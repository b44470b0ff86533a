//! Memory of a large body's generation, measured by a counting global allocator (so this test
//! is a binary of its own): writing a body holds one user and one write buffer, not the body,
//! whatever the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use shmbridge_server::dataset::{WRITE_CHUNK_BYTES, users_json, write_users_json};
use shmbridge_server::query::UsersQuery;
use shmbridge_server::users_service::{Bodies, MAX_KEPT_USERS};

/// The system allocator, keeping the bytes allocated now and the most allocated at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's own arguments, which upholds
// GlobalAlloc's contract; the counters are bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `pointer` came from `alloc` with this `layout`.
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes allocated at once while `work` ran, above what was allocated before it.
fn peak_during(work: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    work();
    PEAK.load(Ordering::Relaxed) - before
}

/// One test function: the counters are process-wide, so nothing may run beside it.
#[test]
fn a_body_is_written_in_memory_independent_of_its_count() {
    // Room for the write buffer and one user's strings, far below any of the bodies below.
    let bound = 2 * WRITE_CHUNK_BYTES;
    let large = MAX_KEPT_USERS * 2;
    for count in [1_000, large] {
        let peak = peak_during(|| {
            write_users_json(count, 1, &mut io::sink()).unwrap();
        });
        assert!(peak < bound, "{count} users: {peak} bytes at once");
    }
    let bodies = Bodies::new(false);
    let query = UsersQuery {
        count: large,
        seed: 2,
    };
    let peak = peak_during(|| {
        bodies.write_body(query, &mut io::sink()).unwrap();
        bodies.summary(query);
    });
    assert!(peak < bound, "Bodies, {large} users: {peak} bytes at once");
    // The measurement itself: holding the body does show up.
    let peak = peak_during(|| drop(users_json(large, 1)));
    assert!(peak > 20 * bound, "{peak}");
}
