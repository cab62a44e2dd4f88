//! The wasm heap's growth. talc's own `WasmHandler` grows linear memory by just enough for the
//! allocation that did not fit, usually one 64 KiB page: a heap of n pages then grows n times,
//! and every `memory.grow` detaches the JavaScript views of memory (wasm-bindgen makes them
//! again, the old ones are garbage). Building a 100,000-record vault spent more time in growing
//! than in encrypting. This handler grows by an eighth of the memory at least (and at least
//! 1 MiB), so a heap of n pages grows in O(log n) steps; when that much is refused it asks for
//! less, down to what the allocation needs.

use core::alloc::Layout;
use talc::{OomHandler, Span, Talc};

/// WASM page size: 64 KiB.
const PAGE_SIZE: usize = 64 * 1024;
/// The least growth, in pages: 1 MiB.
const MIN_PAGES: usize = 16;

pub struct GrowingHandler {
    /// The heap claimed so far (empty until the first growth).
    heap: Span,
}

impl GrowingHandler {
    pub const fn new() -> Self {
        GrowingHandler {
            heap: Span::empty(),
        }
    }
}

impl OomHandler for GrowingHandler {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let required = (layout.size() + 8).max(layout.align() * 2);
        let needed = required.div_ceil(PAGE_SIZE);
        let current = core::arch::wasm32::memory_size::<0>();
        let mut delta = needed.max(current / 8).max(MIN_PAGES);
        let prev = loop {
            let prev = core::arch::wasm32::memory_grow::<0>(delta);
            if prev != usize::MAX {
                break prev;
            }
            if delta == needed {
                return Err(());
            }
            delta = needed.max(delta / 2);
        };
        let prev_acme = (prev * PAGE_SIZE) as *mut u8;
        let new_acme = prev_acme.wrapping_add(delta * PAGE_SIZE);
        // The new pages follow the heap when nothing else grew memory meanwhile: extend it.
        if let Some((base, acme)) = talc.oom_handler.heap.get_base_acme()
            && acme == prev_acme
        {
            // SAFETY: `heap` is the span talc manages, and the memory up to `new_acme` was just
            // added by `memory.grow`, so it is valid and unused.
            talc.oom_handler.heap =
                unsafe { talc.extend(talc.oom_handler.heap, Span::new(base, new_acme)) };
            return Ok(());
        }
        // SAFETY: the span is memory `memory.grow` just added: valid, unused and owned by no one.
        match unsafe { talc.claim(Span::new(prev_acme, new_acme)) } {
            Ok(heap) => {
                talc.oom_handler.heap = heap;
                Ok(())
            }
            Err(()) => Err(()),
        }
    }
}

// SAFETY: the engine runs single-threaded (no wasm threads are enabled): the handler is never
// shared between threads.
unsafe impl Send for GrowingHandler {}
