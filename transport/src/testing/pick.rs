//! How the `slot_ops` model turns a fuzz input's byte into one of a list's items: modulo the
//! list's length, so every byte names some item and the model never refuses an input. Shared by
//! the slot operations and the sealed tickets they publish.

/// The position `pick` names in a list of `len` items; `None` when the list is empty.
pub(super) fn index(len: usize, pick: u8) -> Option<usize> {
    (len > 0).then(|| usize::from(pick) % len)
}

/// The item `pick` names in `items`; `None` when there is none.
pub(super) fn pick<T>(items: &mut [T], pick: u8) -> Option<&mut T> {
    let len = items.len();
    index(len, pick).map(|i| &mut items[i])
}
