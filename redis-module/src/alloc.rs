//! The module's heap is Redis's: every allocation goes through `RedisModule_Alloc`, so the
//! ledgers count in `INFO memory`'s `used_memory`, `maxmemory` sees them, and `deny-oom` commands
//! are refused once Redis is full instead of growing past it. Redis's allocator guarantees 8-byte
//! alignment; a larger one (a lease's 128-bit running totals want 16) is served from a block
//! `align` bytes larger, the distance to its start kept in the word before the pointer.
//!
//! Before Redis has handed the module its API (nothing of the module allocates before
//! `RedisModule_OnLoad` fetches it), and in a process that is not Redis (the crate's tests), the
//! system allocator serves instead; the choice depends only on whether the API is loaded, which
//! never changes back.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

use crate::ffi;

/// The alignment every block of Redis's allocator has.
const REDIS_ALIGN: usize = 8;

/// Allocates through Redis once the module is loaded.
pub struct RedisAllocator;

// SAFETY: every block comes from Redis's allocator (or the system's, before the API is loaded
// and then for ever in that process) and goes back to the one it came from: the choice is made
// the same way on both sides, and a block aligned by hand is freed from its recorded start.
unsafe impl GlobalAlloc for RedisAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(api) = ffi::api() else {
            return System.alloc(layout);
        };
        if layout.align() <= REDIS_ALIGN {
            return (api.Alloc)(layout.size()).cast();
        }
        // Room to move the start up to `align` and to record how far it moved.
        let Some(size) = layout.size().checked_add(layout.align()) else {
            return std::ptr::null_mut();
        };
        let raw: *mut u8 = (api.Alloc)(size).cast();
        if raw.is_null() {
            return raw;
        }
        let offset = layout.align() - (raw as usize % layout.align());
        // `raw` is 8-aligned, so the offset is at least 8: room for the word before the start.
        let aligned = raw.add(offset);
        aligned.cast::<usize>().sub(1).write_unaligned(offset);
        aligned
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(api) = ffi::api() else {
            return System.dealloc(ptr, layout);
        };
        if layout.align() <= REDIS_ALIGN {
            (api.Free)(ptr.cast());
        } else {
            let offset = ptr.cast::<usize>().sub(1).read_unaligned();
            (api.Free)(ptr.sub(offset).cast());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match ffi::api() {
            Some(api) if layout.align() <= REDIS_ALIGN => {
                (api.Realloc)(ptr.cast(), new_size).cast()
            }
            Some(_) => {
                let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                    return std::ptr::null_mut();
                };
                let fresh = self.alloc(new_layout);
                if !fresh.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                fresh
            }
            None => System.realloc(ptr, layout, new_size),
        }
    }
}
