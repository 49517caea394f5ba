//! A request's future in a block of memory from the worker thread's pool. The future of one
//! exchange (the service's answer, its body, the response being written) is a few KiB: held in
//! the connection's own future, every idle keep-alive connection would keep that much; boxed
//! per request, every request would pay the allocator's slow path for a block that size; handed
//! to hyper's HTTP/2 server as it is, it would be copied each time the stream's task moves it.
//! Here it lives in a block taken from a small per-worker free list when the request starts and
//! given back when it ends, so an idle connection holds none, a busy worker allocates none, and
//! what moves is a pointer.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// The size of a block; a future larger than this (or more aligned) is boxed instead.
const BLOCK: usize = 8 * 1024;
const ALIGN: usize = 64;
/// Blocks each worker keeps free.
const KEEP: usize = 32;

fn layout() -> Layout {
    // (BLOCK and ALIGN are a valid layout)
    Layout::from_size_align(BLOCK, ALIGN).unwrap_or_else(|_| unreachable!())
}

thread_local! {
    static FREE: RefCell<Free> = const { RefCell::new(Free(Vec::new())) };
}

/// The free blocks of one thread, returned to the allocator when the thread ends.
struct Free(Vec<NonNull<u8>>);

impl Drop for Free {
    fn drop(&mut self) {
        for block in self.0.drain(..) {
            // SAFETY: every block in the list was allocated with `layout()` and is unused.
            unsafe { dealloc(block.as_ptr(), layout()) };
        }
    }
}

fn take() -> NonNull<u8> {
    // (`try_with`: a thread that is ending has no list, and allocates)
    if let Ok(Some(block)) = FREE.try_with(|f| f.borrow_mut().0.pop()) {
        return block;
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { alloc(layout()) };
    NonNull::new(ptr).unwrap_or_else(|| handle_alloc_error(layout()))
}

fn give_back(block: NonNull<u8>) {
    // a future dropped while its thread ends (its list already gone) frees its block at once,
    // instead of panicking in a destructor
    let kept = FREE.try_with(|f| {
        let mut f = f.borrow_mut();
        if f.0.len() < KEEP {
            f.0.push(block);
            true
        } else {
            false
        }
    });
    if kept != Ok(true) {
        // SAFETY: allocated with `layout()` by `take`, and no longer used.
        unsafe { dealloc(block.as_ptr(), layout()) };
    }
}

/// A future in a pooled block (or a box, when it does not fit one).
pub(crate) enum Pooled<F> {
    Block(NonNull<F>),
    Boxed(Pin<Box<F>>),
}

// SAFETY: `Block` owns its future exactly as a box would.
unsafe impl<F: Send> Send for Pooled<F> {}

impl<F: Future> Pooled<F> {
    #[cfg(test)]
    fn new(fut: F) -> Self {
        Self::with(|| fut)
    }

    /// The future `make` makes, built in place in its block: a future is mostly room for its
    /// later states, and moving one in would copy all of it.
    #[inline(always)]
    pub(crate) fn with(make: impl FnOnce() -> F) -> Self {
        let fits = Layout::new::<F>().size() <= BLOCK && Layout::new::<F>().align() <= ALIGN;
        if !fits {
            return Pooled::Boxed(Box::pin(make()));
        }
        let block = take().cast::<F>();
        // SAFETY: the block is large and aligned enough for `F`, and unused.
        unsafe { block.as_ptr().write(make()) };
        Pooled::Block(block)
    }
}

impl<F: Future> Future for Pooled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.get_mut() {
            // SAFETY: the future never moves out of its block while it lives (`Pooled` is only
            // a pointer to it), so pinning it is sound.
            Pooled::Block(block) => unsafe { Pin::new_unchecked(block.as_mut()) }.poll(cx),
            Pooled::Boxed(boxed) => boxed.as_mut().poll(cx),
        }
    }
}

impl<F> Drop for Pooled<F> {
    fn drop(&mut self) {
        if let Pooled::Block(block) = *self {
            // SAFETY: the block holds a live `F`, dropped in place once, then the block is free.
            unsafe { block.as_ptr().drop_in_place() };
            give_back(block.cast());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    struct Counted(Arc<AtomicUsize>, [u8; 3000]);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[tokio::test]
    async fn futures_run_in_reused_blocks_and_are_dropped_once() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut blocks = std::collections::HashSet::new();
        for i in 0..10u8 {
            let c = Counted(dropped.clone(), [i; 3000]);
            let fut = Pooled::new(async move {
                tokio::task::yield_now().await;
                c.1[2999]
            });
            if let Pooled::Block(b) = &fut {
                blocks.insert(b.as_ptr() as usize);
            }
            assert_eq!(fut.await, i);
        }
        assert_eq!(dropped.load(Relaxed), 10, "each future's state dropped once");
        assert_eq!(blocks.len(), 1, "one block, reused");
        // dropped before it finished: its state is dropped too
        let c = Counted(dropped.clone(), [0; 3000]);
        drop(Pooled::new(async move {
            std::future::pending::<()>().await;
            drop(c);
        }));
        assert_eq!(dropped.load(Relaxed), 11);
        // too large for a block: boxed
        let big = Pooled::new(async {
            let held = [1u8; BLOCK + 1];
            tokio::task::yield_now().await;
            held.len()
        });
        assert!(matches!(big, Pooled::Boxed(_)));
        assert_eq!(big.await, BLOCK + 1);
    }

    thread_local! {
        static HELD: RefCell<Option<Pooled<std::future::Ready<()>>>> = const { RefCell::new(None) };
    }

    #[test]
    fn a_future_dropped_after_its_threads_list_is_gone_frees_its_block() {
        let ended = std::thread::spawn(|| {
            // HELD's destructor is registered first, the free list's second; thread-local
            // destructors run in reverse order, so the list is gone when HELD drops its future
            HELD.with_borrow_mut(|h| *h = None);
            let fut = Pooled::new(std::future::ready(()));
            assert!(matches!(fut, Pooled::Block(_)));
            HELD.with_borrow_mut(|h| *h = Some(fut));
        })
        .join();
        assert!(ended.is_ok(), "the thread ended without a panic");
    }
}
