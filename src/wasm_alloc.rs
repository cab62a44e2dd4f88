//! The wasm heap's growth, for both allocators the engines use (lib.rs): talc in the IndexedDB
//! engine, dlmalloc in the engines that keep the memory backend. Left to themselves, both grow
//! linear memory by just enough for the allocation that did not fit, usually one 64 KiB page: a
//! heap of n pages then grows n times, and every `memory.grow` detaches the JavaScript views of
//! memory (wasm-bindgen makes them again, the old ones are garbage) and adds to the external
//! memory V8 collects garbage for. Building a 100,000-record vault spent more time in growing
//! than in encrypting. [`grow`] grows by an eighth of the memory at least (and at least 1 MiB),
//! so a heap of n pages grows in O(log n) steps; when that much is refused it asks for less, down
//! to what the allocation needs.

use core::alloc::Layout;
#[cfg(not(feature = "gluesql"))]
use talc::{OomHandler, Span, Talc};

/// WASM page size: 64 KiB.
const PAGE_SIZE: usize = 64 * 1024;
/// The least growth, in pages: 1 MiB.
const MIN_PAGES: usize = 16;

/// Grow linear memory for `required` more bytes, by an eighth of it at least: the start of the
/// new memory and its length, or `None` when not even `required` bytes can be had.
fn grow(required: usize) -> Option<(*mut u8, usize)> {
    let needed = required.div_ceil(PAGE_SIZE);
    let current = core::arch::wasm32::memory_size::<0>();
    let mut delta = needed.max(current / 8).max(MIN_PAGES);
    loop {
        let prev = core::arch::wasm32::memory_grow::<0>(delta);
        if prev != usize::MAX {
            return Some(((prev * PAGE_SIZE) as *mut u8, delta * PAGE_SIZE));
        }
        if delta == needed {
            return None;
        }
        delta = needed.max(delta / 2);
    }
}

/// talc's out-of-memory handler: [`grow`], then extend the heap (or claim the new span).
#[cfg(not(feature = "gluesql"))]
pub struct GrowingHandler {
    /// The heap claimed so far (empty until the first growth).
    heap: Span,
}

#[cfg(not(feature = "gluesql"))]
impl GrowingHandler {
    pub const fn new() -> Self {
        GrowingHandler {
            heap: Span::empty(),
        }
    }
}

#[cfg(not(feature = "gluesql"))]
impl OomHandler for GrowingHandler {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let required = (layout.size() + 8).max(layout.align() * 2);
        let (prev_acme, grown) = grow(required).ok_or(())?;
        let new_acme = prev_acme.wrapping_add(grown);
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
#[cfg(not(feature = "gluesql"))]
unsafe impl Send for GrowingHandler {}

/// dlmalloc's source of memory: [`grow`]. Linear memory never shrinks, so nothing is released.
#[cfg(feature = "gluesql")]
pub struct GrowingSystem;

// SAFETY: `alloc` returns memory `memory.grow` just added (valid, unused, zeroed, page-aligned)
// and its true length; nothing is ever remapped or released.
#[cfg(feature = "gluesql")]
unsafe impl dlmalloc::Allocator for GrowingSystem {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        match grow(size) {
            Some((start, len)) => (start, len, 0),
            None => (core::ptr::null_mut(), 0, 0),
        }
    }

    fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
        core::ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        PAGE_SIZE
    }
}

/// The memory engines' global allocator: dlmalloc over [`GrowingSystem`], as the standard
/// library's wasm allocator is dlmalloc over single-page growth.
#[cfg(feature = "gluesql")]
pub struct GrowingDlmalloc(core::cell::UnsafeCell<dlmalloc::Dlmalloc<GrowingSystem>>);

#[cfg(feature = "gluesql")]
impl GrowingDlmalloc {
    pub const fn new() -> Self {
        GrowingDlmalloc(core::cell::UnsafeCell::new(
            dlmalloc::Dlmalloc::new_with_allocator(GrowingSystem),
        ))
    }
}

// SAFETY: the engine runs single-threaded (no wasm threads are enabled), so the allocator is
// never entered twice at once, and each call has the `Dlmalloc` to itself.
#[cfg(feature = "gluesql")]
unsafe impl Sync for GrowingDlmalloc {}

// SAFETY: every method forwards to dlmalloc with the layout `GlobalAlloc` was given, which is
// dlmalloc's own contract for `malloc`, `calloc`, `free` and `realloc`. They are not inlined:
// inlined, each of the engine's thousands of allocation sites carried dlmalloc's alignment
// branch and two calls, 65 kB more code (16.6 kB gzip in the edge bundle) for no measured speed.
#[cfg(feature = "gluesql")]
unsafe impl core::alloc::GlobalAlloc for GrowingDlmalloc {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
