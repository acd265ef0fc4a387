//! The value this module keeps in a Redis key: one service's [`Ledger`] with the configuration it
//! is shaped for ([`Stored`]), and the Redis data type that holds it: saved to and loaded from
//! RDB files (so replicas' full syncs and restarts keep it), rewritten into the AOF as
//! `SLUICE.RESTORE`, freed with the key.
//!
//! The configuration travels with every call as the encoded `ServiceSpec`; a call whose encoding
//! differs from the stored one (a reload) reshapes the ledger to it, as the memory backend does.

#![allow(unsafe_code)]

use std::{
    ffi::{c_int, c_void},
    sync::atomic::{AtomicPtr, Ordering},
};

use sluice_server::core::{
    from_bytes, to_bytes, BucketStates, CodecError, Ledger, Micros, ServiceSpec,
};

use crate::ffi;

/// The version of the RDB encoding (Redis stores it beside every value).
pub const ENCODING_VERSION: c_int = 1;

/// Most configurations whose bucket states a key keeps apart (see [`Stored::conform`]).
const MAX_PARKED: usize = 4;

/// The registered data type (set once at load).
pub static LEDGER_TYPE: AtomicPtr<ffi::ModuleType> = AtomicPtr::new(std::ptr::null_mut());

/// The data type's pointer, for opening keys.
pub fn ledger_type() -> *mut ffi::ModuleType {
    LEDGER_TYPE.load(Ordering::Acquire)
}

/// One service's state in a key.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The encoded configuration `spec` was decoded from (compared with each call's).
    spec_bytes: Vec<u8>,
    /// The configuration the ledger is shaped for.
    pub spec: ServiceSpec,
    /// The state.
    pub ledger: Ledger,
    /// The bucket states of configurations recently left (encoded configuration → states),
    /// most recent last.
    parked: Vec<(Vec<u8>, BucketStates)>,
}

impl Stored {
    /// A fresh state for the encoded configuration `spec_bytes`.
    pub fn new(spec_bytes: &[u8], nonce: u64, max_leases: usize) -> Result<Self, CodecError> {
        let spec: ServiceSpec = from_bytes(spec_bytes)?;
        let ledger = Ledger::new(&spec, nonce).with_max_leases(max_leases);
        Ok(Self {
            spec_bytes: spec_bytes.to_vec(),
            spec,
            ledger,
            parked: Vec::new(),
        })
    }

    /// Reshapes the ledger to the encoded configuration `spec_bytes` if it is not the one it is
    /// shaped for. True if it changed.
    ///
    /// During a rolling reload, replicas with the old and the new configuration take turns: the
    /// bucket states of the configuration left are parked, and put back (where the reshape
    /// started a bucket afresh) when it comes back, so turns never restart a bucket full. Each
    /// bucket shape keeps its own state, as the Lua scripts keep it (named by what it is).
    pub fn conform(&mut self, spec_bytes: &[u8]) -> Result<bool, CodecError> {
        if self.spec_bytes == spec_bytes {
            return Ok(false);
        }
        let spec: ServiceSpec = from_bytes(spec_bytes)?;
        let leaving = (
            std::mem::take(&mut self.spec_bytes),
            self.ledger.bucket_states(),
        );
        self.parked.retain(|(bytes, _)| *bytes != leaving.0);
        self.parked.push(leaving);
        if self.parked.len() > MAX_PARKED {
            self.parked.remove(0);
        }
        self.ledger.reshape(&self.spec, &spec);
        if let Some(i) = self.parked.iter().position(|(b, _)| b == spec_bytes) {
            let (_, states) = self.parked.remove(i);
            self.ledger.restore_bucket_states(&spec, &states);
        }
        self.spec = spec;
        self.spec_bytes = spec_bytes.to_vec();
        Ok(true)
    }

    /// Whether the ledger is shaped for the encoded configuration `spec_bytes`.
    pub fn is_shaped_for(&self, spec_bytes: &[u8]) -> bool {
        self.spec_bytes == spec_bytes
    }

    /// When the key should expire (Unix ms, rounded up), `None` once nothing is left to keep.
    pub fn expires_at_ms(&self, now: Micros) -> Option<i64> {
        let at = self.ledger.forget_at(&self.spec)?;
        (at > now).then(|| i64::try_from(at.div_ceil(1000)).unwrap_or(i64::MAX))
    }

    /// The bytes an RDB file or `SLUICE.RESTORE` holds: the configuration, the encoded ledger
    /// and the encoded parked bucket states, each after its length (u32, little endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let ledger = to_bytes(&self.ledger);
        let parked = to_bytes(&self.parked);
        let mut out = Vec::with_capacity(12 + self.spec_bytes.len() + ledger.len() + parked.len());
        for part in [self.spec_bytes.as_slice(), &ledger, &parked] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Reads what [`Stored::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        fn part<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
            let (len, rest) = bytes
                .split_first_chunk::<4>()
                .ok_or(CodecError::Truncated)?;
            let len = u32::from_le_bytes(*len) as usize;
            if rest.len() < len {
                return Err(CodecError::Truncated);
            }
            let (part, rest) = rest.split_at(len);
            *bytes = rest;
            Ok(part)
        }
        let mut rest = bytes;
        let spec_bytes = part(&mut rest)?;
        let ledger = part(&mut rest)?;
        let parked = part(&mut rest)?;
        if !rest.is_empty() {
            return Err(CodecError::Trailing);
        }
        let spec: ServiceSpec = from_bytes(spec_bytes)?;
        let ledger: Ledger = from_bytes(ledger)?;
        if !ledger.is_shaped_for(&spec) {
            return Err(CodecError::Invalid(
                "the ledger is not shaped for its configuration",
            ));
        }
        let parked: Vec<(Vec<u8>, BucketStates)> = from_bytes(parked)?;
        if parked.len() > MAX_PARKED {
            return Err(CodecError::Invalid("too many parked configurations"));
        }
        Ok(Self {
            spec_bytes: spec_bytes.to_vec(),
            spec,
            ledger,
            parked,
        })
    }
}

/// A shared look at a key's value.
pub fn borrow<'a>(value: *mut Stored) -> Option<&'a Stored> {
    // SAFETY: `value` is the value of a key open for the running call, stored by this module as
    // a `Stored`; it is only read while the key stays open.
    unsafe { value.as_ref() }
}

/// Frees a value Redis did not take.
pub fn reclaim(value: *mut Stored) {
    if !value.is_null() {
        // SAFETY: made by `Box::into_raw` and not stored anywhere.
        drop(unsafe { Box::from_raw(value) });
    }
}

unsafe extern "C" fn rdb_load(io: *mut ffi::Io, version: c_int) -> *mut c_void {
    let Some(api) = ffi::api() else {
        return std::ptr::null_mut();
    };
    if version != ENCODING_VERSION {
        return std::ptr::null_mut();
    }
    let mut len = 0usize;
    let buffer = (api.LoadStringBuffer)(io, &mut len);
    if buffer.is_null() {
        return std::ptr::null_mut();
    }
    if (api.IsIOError)(io) != 0 {
        (api.Free)(buffer.cast());
        return std::ptr::null_mut();
    }
    let decoded = Stored::from_bytes(std::slice::from_raw_parts(buffer.cast::<u8>(), len));
    (api.Free)(buffer.cast());
    match decoded {
        Ok(stored) => Box::into_raw(Box::new(stored)).cast(),
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn rdb_save(io: *mut ffi::Io, value: *mut c_void) {
    let (Some(api), Some(stored)) = (ffi::api(), value.cast::<Stored>().as_ref()) else {
        return;
    };
    let bytes = stored.to_bytes();
    (api.SaveStringBuffer)(io, bytes.as_ptr().cast(), bytes.len());
}

unsafe extern "C" fn aof_rewrite(io: *mut ffi::Io, key: *mut ffi::RString, value: *mut c_void) {
    let (Some(api), Some(stored)) = (ffi::api(), value.cast::<Stored>().as_ref()) else {
        return;
    };
    let bytes = stored.to_bytes();
    (api.EmitAOF)(
        io,
        c"SLUICE.RESTORE".as_ptr(),
        c"sb".as_ptr(),
        key,
        bytes.as_ptr(),
        bytes.len(),
    );
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    value.cast::<Stored>().as_ref().map_or(0, |s| {
        std::mem::size_of::<Stored>() + s.ledger.memory_estimate()
    })
}

unsafe extern "C" fn free(value: *mut c_void) {
    if !value.is_null() {
        drop(Box::from_raw(value.cast::<Stored>()));
    }
}

/// Registers the data type (its name is 9 characters, as Redis requires).
///
/// # Safety
/// `ctx` must be the context of `RedisModule_OnLoad`.
pub unsafe fn register(ctx: *mut ffi::Ctx, api: &ffi::Api) -> bool {
    let mut methods = ffi::TypeMethods {
        version: ffi::TYPE_METHOD_VERSION,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: None,
        free: Some(free),
    };
    let ty = (api.CreateDataType)(ctx, c"sluice-lg".as_ptr(), ENCODING_VERSION, &mut methods);
    if ty.is_null() {
        return false;
    }
    LEDGER_TYPE.store(ty, Ordering::Release);
    true
}
