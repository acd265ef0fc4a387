//! The part of Redis's module API this module uses, declared by hand (no bindgen, so building
//! needs no libclang). Redis hands a module its API as a table of named function pointers:
//! `RedisModule_OnLoad` receives a context whose first word is `RedisModule_GetApi`, and the
//! module asks it for each function by name, as `RedisModule_Init` in `redismodule.h` does. The
//! signatures below follow `redismodule.h` of Redis 7.0 (API version 1, type methods version 1).
//!
//! Everything here is a raw pointer or an `extern "C"` function; the safe wrappers are in
//! `redis.rs`.

#![allow(unsafe_code, non_snake_case, missing_docs)]

use std::{
    ffi::{c_char, c_int, c_long, c_longlong, c_void},
    sync::OnceLock,
};

/// `REDISMODULE_OK`.
pub const OK: c_int = 0;
/// `REDISMODULE_ERR`.
pub const ERR: c_int = 1;
/// `REDISMODULE_APIVER_1`.
pub const APIVER_1: c_int = 1;
/// `REDISMODULE_READ` and `REDISMODULE_WRITE` (modes of `OpenKey`).
pub const READ: c_int = 1;
pub const WRITE: c_int = 2;
/// `REDISMODULE_KEYTYPE_EMPTY` and `REDISMODULE_KEYTYPE_MODULE`.
pub const KEYTYPE_EMPTY: c_int = 0;
pub const KEYTYPE_MODULE: c_int = 6;
/// `REDISMODULE_TYPE_METHOD_VERSION` this module fills in (the first seven fields).
pub const TYPE_METHOD_VERSION: u64 = 1;
/// `REDISMODULE_CTX_FLAGS_REPLICATED`: the command came from the primary (or the AOF).
pub const CTX_FLAGS_REPLICATED: c_int = 1 << 12;
/// `REDISMODULE_CTX_FLAGS_LOADING`: Redis is loading the AOF or RDB.
pub const CTX_FLAGS_LOADING: c_int = 1 << 13;
/// `REDISMODULE_OPTIONS_HANDLE_IO_ERRORS`: RDB loads report errors instead of exiting.
pub const OPTIONS_HANDLE_IO_ERRORS: c_int = 1;

macro_rules! opaque {
    ($($name:ident),*) => {$(
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
        }
    )*};
}

opaque!(Ctx, RString, Key, Io, ModuleType, Digest);

pub type CmdFunc = unsafe extern "C" fn(*mut Ctx, *mut *mut RString, c_int) -> c_int;
pub type LoadFunc = unsafe extern "C" fn(*mut Io, c_int) -> *mut c_void;
pub type SaveFunc = unsafe extern "C" fn(*mut Io, *mut c_void);
pub type RewriteFunc = unsafe extern "C" fn(*mut Io, *mut RString, *mut c_void);
pub type MemUsageFunc = unsafe extern "C" fn(*const c_void) -> usize;
pub type DigestFunc = unsafe extern "C" fn(*mut Digest, *mut c_void);
pub type FreeFunc = unsafe extern "C" fn(*mut c_void);

/// `RedisModuleTypeMethods` up to `free` (version 1 of the struct).
#[repr(C)]
pub struct TypeMethods {
    pub version: u64,
    pub rdb_load: Option<LoadFunc>,
    pub rdb_save: Option<SaveFunc>,
    pub aof_rewrite: Option<RewriteFunc>,
    pub mem_usage: Option<MemUsageFunc>,
    pub digest: Option<DigestFunc>,
    pub free: Option<FreeFunc>,
}

type GetApi = unsafe extern "C" fn(*const c_char, *mut c_void) -> c_int;

macro_rules! api {
    ($($name:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// The API functions, fetched once at load.
        pub struct Api {
            $(pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
            pub Replicate: unsafe extern "C" fn(*mut Ctx, *const c_char, *const c_char, ...) -> c_int,
            pub EmitAOF: unsafe extern "C" fn(*mut Io, *const c_char, *const c_char, ...),
        }

        impl Api {
            /// Fetches every function through `get`; `None` if Redis lacks one.
            unsafe fn load(get: GetApi) -> Option<Self> {
                unsafe fn fetch(get: GetApi, name: &str) -> Option<*mut c_void> {
                    let mut pointer: *mut c_void = std::ptr::null_mut();
                    let found = get(name.as_ptr().cast(), (&mut pointer as *mut *mut c_void).cast());
                    (found == OK && !pointer.is_null()).then_some(pointer)
                }
                Some(Self {
                    $($name: std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                        fetch(get, concat!("RedisModule_", stringify!($name), "\0"))?,
                    ),)*
                    Replicate: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut Ctx, *const c_char, *const c_char, ...) -> c_int>(
                        fetch(get, "RedisModule_Replicate\0")?,
                    ),
                    EmitAOF: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut Io, *const c_char, *const c_char, ...)>(
                        fetch(get, "RedisModule_EmitAOF\0")?,
                    ),
                })
            }
        }
    };
}

api! {
    IsModuleNameBusy: fn(*const c_char) -> c_int;
    SetModuleAttribs: fn(*mut Ctx, *const c_char, c_int, c_int);
    SetModuleOptions: fn(*mut Ctx, c_int);
    CreateCommand: fn(*mut Ctx, *const c_char, CmdFunc, *const c_char, c_int, c_int, c_int) -> c_int;
    CreateDataType: fn(*mut Ctx, *const c_char, c_int, *mut TypeMethods) -> *mut ModuleType;
    GetContextFlags: fn(*mut Ctx) -> c_int;
    WrongArity: fn(*mut Ctx) -> c_int;
    ReplyWithError: fn(*mut Ctx, *const c_char) -> c_int;
    ReplyWithLongLong: fn(*mut Ctx, c_longlong) -> c_int;
    ReplyWithArray: fn(*mut Ctx, c_long) -> c_int;
    ReplyWithStringBuffer: fn(*mut Ctx, *const c_char, usize) -> c_int;
    ReplyWithSimpleString: fn(*mut Ctx, *const c_char) -> c_int;
    StringPtrLen: fn(*const RString, *mut usize) -> *const c_char;
    CreateString: fn(*mut Ctx, *const c_char, usize) -> *mut RString;
    FreeString: fn(*mut Ctx, *mut RString);
    OpenKey: fn(*mut Ctx, *mut RString, c_int) -> *mut Key;
    CloseKey: fn(*mut Key);
    KeyType: fn(*mut Key) -> c_int;
    DeleteKey: fn(*mut Key) -> c_int;
    ModuleTypeGetType: fn(*mut Key) -> *mut ModuleType;
    ModuleTypeGetValue: fn(*mut Key) -> *mut c_void;
    ModuleTypeSetValue: fn(*mut Key, *mut ModuleType, *mut c_void) -> c_int;
    GetAbsExpire: fn(*mut Key) -> c_longlong;
    SetAbsExpire: fn(*mut Key, c_longlong) -> c_int;
    IsKeysPositionRequest: fn(*mut Ctx) -> c_int;
    KeyAtPos: fn(*mut Ctx, c_int);
    SaveStringBuffer: fn(*mut Io, *const c_char, usize);
    LoadStringBuffer: fn(*mut Io, *mut usize) -> *mut c_char;
    IsIOError: fn(*mut Io) -> c_int;
    Alloc: fn(usize) -> *mut c_void;
    Realloc: fn(*mut c_void, usize) -> *mut c_void;
    Free: fn(*mut c_void);
}

static API: OnceLock<Api> = OnceLock::new();

/// The API table, once `init` has run (Redis calls nothing of a module before its `OnLoad`).
pub fn api() -> Option<&'static Api> {
    API.get()
}

/// Does what `RedisModule_Init` does: fetches the API through the context's first word and
/// registers the module under `name` (NUL-terminated). False if the name is taken or Redis lacks
/// a function this module needs.
///
/// # Safety
/// `ctx` must be the context Redis passed to `RedisModule_OnLoad`.
pub unsafe fn init(ctx: *mut Ctx, name: &str, version: c_int) -> bool {
    let get_api = *(ctx as *const *mut c_void);
    if get_api.is_null() {
        return false;
    }
    let get = std::mem::transmute::<*mut c_void, GetApi>(get_api);
    let Some(api) = (match API.get() {
        Some(api) => Some(api),
        None => Api::load(get).map(|api| API.get_or_init(|| api)),
    }) else {
        return false;
    };
    if (api.IsModuleNameBusy)(name.as_ptr().cast()) != 0 {
        return false;
    }
    (api.SetModuleAttribs)(ctx, name.as_ptr().cast(), version, APIVER_1);
    true
}
