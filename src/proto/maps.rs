//! Header maps reused across requests. Every request and every response needs one, and a
//! map's two allocations (its index and its entries) are larger than the allocator's
//! per-thread cache serves quickly: a map whose message has been written goes back to a small
//! per-thread free list, cleared, for the next message.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread.
const KEEP: usize = 64;
/// Larger maps (a client sending hundreds of headers) are freed, not kept.
const MAX_CAPACITY: usize = 96;

thread_local! {
    static FREE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least `capacity` headers.
pub fn take(capacity: usize) -> HeaderMap {
    match FREE.with_borrow_mut(Vec::pop) {
        Some(map) if map.capacity() >= capacity => map,
        _ => HeaderMap::with_capacity(capacity),
    }
}

/// Gives a map that is no longer needed back for reuse.
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_CAPACITY {
        return;
    }
    map.clear();
    FREE.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HOST, HeaderValue};

    #[test]
    fn recycled_maps_come_back_empty_with_their_room() {
        let mut m = take(20);
        let room = m.capacity();
        assert!(room >= 20);
        m.insert(HOST, HeaderValue::from_static("a"));
        recycle(m);
        let again = take(10);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
        // a map too small for what is asked is not handed out
        recycle(HeaderMap::with_capacity(2));
        assert!(take(40).capacity() >= 40);
    }
}
