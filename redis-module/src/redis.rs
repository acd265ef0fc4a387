//! Thin safe wrappers over the raw API in `ffi.rs`: a command's context, its arguments as byte
//! slices, keys that close themselves, replies, and replication. Every `unsafe` block of the
//! module outside `ffi.rs` and `value.rs` is here, each resting on what Redis guarantees during a
//! command call: the context, the argument vector and open keys live until the call returns.

#![allow(unsafe_code)]

use std::{
    ffi::{c_int, c_void, CString},
    marker::PhantomData,
};

use crate::ffi::{self, Api};

/// The context of one command call.
pub struct Context<'a> {
    ctx: *mut ffi::Ctx,
    api: &'static Api,
    _call: PhantomData<&'a ()>,
}

/// The arguments of one command call, without the command's name.
pub struct Args<'a> {
    argv: &'a [*mut ffi::RString],
}

impl<'a> Args<'a> {
    /// How many arguments there are.
    pub fn len(&self) -> usize {
        self.argv.len()
    }

    /// The bytes of argument `i` (0: the first after the command's name).
    pub fn bytes(&self, api: &Api, i: usize) -> Option<&'a [u8]> {
        let s = *self.argv.get(i)?;
        let mut len = 0usize;
        // SAFETY: `s` is an argument of the running call; its buffer lives as long as the call.
        unsafe {
            let ptr = (api.StringPtrLen)(s, &mut len);
            if ptr.is_null() {
                return Some(&[]);
            }
            Some(std::slice::from_raw_parts(ptr.cast::<u8>(), len))
        }
    }

    /// The raw argument `i`, for opening it as a key.
    pub fn raw(&self, i: usize) -> Option<*mut ffi::RString> {
        self.argv.get(i).copied()
    }
}

/// One key, open for reading and writing until dropped.
pub struct OpenKey<'a> {
    key: *mut ffi::Key,
    api: &'static Api,
    _call: PhantomData<&'a ()>,
}

impl<'a> Context<'a> {
    /// Wraps the context and arguments Redis passed to a command.
    ///
    /// # Safety
    /// `ctx`, `argv` and `argc` must be those of a running command call.
    pub unsafe fn new(
        ctx: *mut ffi::Ctx,
        argv: *mut *mut ffi::RString,
        argc: c_int,
    ) -> Option<(Self, Args<'a>)> {
        let api = ffi::api()?;
        let argc = usize::try_from(argc).ok()?;
        let all = std::slice::from_raw_parts(argv, argc);
        let context = Context {
            ctx,
            api,
            _call: PhantomData,
        };
        Some((
            context,
            Args {
                argv: all.get(1..)?,
            },
        ))
    }

    /// The API table.
    pub fn api(&self) -> &'static Api {
        self.api
    }

    /// Whether Redis only asks which arguments are keys (the `getkeys-api` flag).
    pub fn is_keys_request(&self) -> bool {
        // SAFETY: a live context.
        unsafe { (self.api.IsKeysPositionRequest)(self.ctx) != 0 }
    }

    /// Names argument `i` (0: the first after the command's name) as a key.
    pub fn key_at(&self, i: usize) {
        if let Ok(pos) = c_int::try_from(i + 1) {
            // SAFETY: a live context during a keys request.
            unsafe { (self.api.KeyAtPos)(self.ctx, pos) }
        }
    }

    /// Whether the call came from the primary or the AOF (its time is in its arguments).
    pub fn is_replicated(&self) -> bool {
        // SAFETY: a live context.
        let flags = unsafe { (self.api.GetContextFlags)(self.ctx) };
        flags & (ffi::CTX_FLAGS_REPLICATED | ffi::CTX_FLAGS_LOADING) != 0
    }

    /// Opens `name` (an argument) for reading and writing.
    pub fn open(&self, name: *mut ffi::RString) -> OpenKey<'a> {
        // SAFETY: `name` is an argument of the running call.
        let key = unsafe { (self.api.OpenKey)(self.ctx, name, ffi::READ | ffi::WRITE) };
        OpenKey {
            key,
            api: self.api,
            _call: PhantomData,
        }
    }

    /// Opens `name` (an argument) for reading only (closing it signals no change).
    pub fn open_read(&self, name: *mut ffi::RString) -> OpenKey<'a> {
        // SAFETY: `name` is an argument of the running call.
        let key = unsafe { (self.api.OpenKey)(self.ctx, name, ffi::READ) };
        OpenKey {
            key,
            api: self.api,
            _call: PhantomData,
        }
    }

    /// Replies with an error (`text` without NUL bytes; the first word is the error code).
    pub fn error(&self, text: &str) -> c_int {
        let text = CString::new(text.replace('\0', " ")).unwrap_or_default();
        // SAFETY: a live context; Redis copies the text.
        unsafe { (self.api.ReplyWithError)(self.ctx, text.as_ptr()) }
    }

    /// Replies that the number of arguments is wrong.
    pub fn wrong_arity(&self) -> c_int {
        // SAFETY: a live context.
        unsafe { (self.api.WrongArity)(self.ctx) }
    }

    /// Replies with an integer.
    pub fn integer(&self, value: i64) -> c_int {
        // SAFETY: a live context.
        unsafe { (self.api.ReplyWithLongLong)(self.ctx, value) }
    }

    /// Replies with `+OK`.
    pub fn ok(&self) -> c_int {
        // SAFETY: a live context; a static NUL-terminated text.
        unsafe { (self.api.ReplyWithSimpleString)(self.ctx, c"OK".as_ptr()) }
    }

    /// Replies with a bulk string.
    pub fn bulk(&self, bytes: &[u8]) -> c_int {
        // SAFETY: a live context; Redis copies the bytes.
        unsafe { (self.api.ReplyWithStringBuffer)(self.ctx, bytes.as_ptr().cast(), bytes.len()) }
    }

    /// Replies with an array of bulk strings.
    pub fn bulks<'b>(&self, items: impl ExactSizeIterator<Item = &'b [u8]>) -> c_int {
        // SAFETY: a live context; the array is filled with exactly its length of items.
        unsafe { (self.api.ReplyWithArray)(self.ctx, items.len() as _) };
        for item in items {
            self.bulk(item);
        }
        ffi::OK
    }

    /// Replicates this command to replicas and the AOF as `name` with `args` (the arguments
    /// after the name).
    pub fn replicate(&self, name: &str, args: &[&[u8]]) {
        let Ok(name) = CString::new(name) else {
            return;
        };
        // SAFETY: strings created in this context are freed by Redis when the call returns (or
        // here); the `v` format takes an array of Redis strings and its length.
        unsafe {
            let mut strings: Vec<*mut ffi::RString> = args
                .iter()
                .map(|a| (self.api.CreateString)(self.ctx, a.as_ptr().cast(), a.len()))
                .collect();
            (self.api.Replicate)(
                self.ctx,
                name.as_ptr(),
                c"v".as_ptr(),
                strings.as_mut_ptr(),
                strings.len(),
            );
            for s in strings {
                (self.api.FreeString)(self.ctx, s);
            }
        }
    }
}

impl OpenKey<'_> {
    /// Whether the key holds nothing.
    pub fn is_empty(&self) -> bool {
        // SAFETY: an open key.
        unsafe { (self.api.KeyType)(self.key) == ffi::KEYTYPE_EMPTY }
    }

    /// The value of this module's `ty`, if the key holds one; `Err` if it holds another type.
    pub fn value<T>(&self, ty: *mut ffi::ModuleType) -> Result<Option<*mut T>, WrongType> {
        // SAFETY: an open key; a value of `ty` was stored by this module as a `T`.
        unsafe {
            match (self.api.KeyType)(self.key) {
                ffi::KEYTYPE_EMPTY => Ok(None),
                ffi::KEYTYPE_MODULE if (self.api.ModuleTypeGetType)(self.key) == ty => {
                    Ok(Some((self.api.ModuleTypeGetValue)(self.key).cast::<T>()))
                }
                _ => Err(WrongType),
            }
        }
    }

    /// Stores `value` (a pointer Redis frees with `ty`'s free method).
    pub fn set_value(&self, ty: *mut ffi::ModuleType, value: *mut c_void) -> bool {
        // SAFETY: an open key; `value` is owned by Redis from now on.
        unsafe { (self.api.ModuleTypeSetValue)(self.key, ty, value) == ffi::OK }
    }

    /// Deletes the key.
    pub fn delete(&self) {
        // SAFETY: an open key.
        unsafe {
            (self.api.DeleteKey)(self.key);
        }
    }

    /// Sets the key to expire at `at_ms` (Unix ms), unless it already does.
    pub fn expire_at(&self, at_ms: i64) {
        // SAFETY: an open key with a value.
        unsafe {
            if (self.api.GetAbsExpire)(self.key) != at_ms {
                (self.api.SetAbsExpire)(self.key, at_ms);
            }
        }
    }
}

impl Drop for OpenKey<'_> {
    fn drop(&mut self) {
        // SAFETY: opened by `Context::open`, closed once.
        unsafe { (self.api.CloseKey)(self.key) }
    }
}

/// A key holds a value of another type.
#[derive(Debug)]
pub struct WrongType;
