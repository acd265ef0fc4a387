//! Sluice's Redis module: each service's state kept in Redis as a native value (the memory
//! backend's own [`Ledger`](sluice_server::core::Ledger)) and decided by native commands, instead
//! of Lua scripts over hashes and lists. The decisions are the memory backend's code, so they are
//! exact by construction; what Redis spends per decision is a command's dispatch and the
//! decision itself (BENCHMARKS.md, section 6.6).
//!
//! Load it with `redis-server --loadmodule …/libsluice_redis_module.so` (every node: primaries,
//! replicas, and any server that may load their RDB files) and set `engine = "module"` in the
//! Redis backend's configuration. Commands: `SLUICE.ACQUIRE` (`acquire.rs`), `SLUICE.REPORT`,
//! `SLUICE.STATUS`, `SLUICE.ADMIN`, `SLUICE.PRUNE` and `SLUICE.RESTORE` (`commands.rs`). Writes replicate as the
//! same command with the time they were decided at, so replicas and the AOF decide alike.

#![allow(unsafe_code)]

mod acquire;
mod alloc;
mod args;
mod commands;
mod ffi;
mod redis;
mod slots;
mod value;

use std::{
    ffi::{c_int, CStr},
    panic::{catch_unwind, AssertUnwindSafe},
};

use crate::{
    args::CallError,
    redis::{Args, Context},
};

/// Every allocation of the module is Redis's (see `alloc.rs`).
#[global_allocator]
static ALLOCATOR: alloc::RedisAllocator = alloc::RedisAllocator;

/// The module's name, as `MODULE LIST` shows it.
pub const MODULE_NAME: &str = "sluice";
/// The module's version, as `MODULE LIST` shows it (major * 10000 + minor * 100 + patch).
pub const MODULE_VERSION: i32 = 100;

type Run = fn(&Context<'_>, &Args<'_>) -> Result<(), CallError>;

/// Runs a command body: answers its error, and a panic as an error instead of unwinding into
/// Redis.
///
/// # Safety
/// The arguments must be those Redis passed to a command.
unsafe fn dispatch(
    ctx: *mut ffi::Ctx,
    argv: *mut *mut ffi::RString,
    argc: c_int,
    run: Run,
    keys: Option<fn(&Context<'_>, &Args<'_>) -> Vec<usize>>,
) -> c_int {
    let Some((cx, args)) = Context::new(ctx, argv, argc) else {
        return ffi::ERR;
    };
    if let Some(keys) = keys {
        if cx.is_keys_request() {
            for i in keys(&cx, &args) {
                cx.key_at(i);
            }
            return ffi::OK;
        }
    }
    match catch_unwind(AssertUnwindSafe(|| run(&cx, &args))) {
        Ok(Ok(())) => ffi::OK,
        Ok(Err(CallError::Arity)) => cx.wrong_arity(),
        Ok(Err(error)) => cx.error(&error.to_string()),
        Err(_) => cx.error("ERR SLUICE: the command failed unexpectedly"),
    }
}

macro_rules! command {
    ($name:ident, $run:path) => {
        command!($name, $run, None);
    };
    ($name:ident, $run:path, $keys:expr) => {
        unsafe extern "C" fn $name(
            ctx: *mut ffi::Ctx,
            argv: *mut *mut ffi::RString,
            argc: c_int,
        ) -> c_int {
            dispatch(ctx, argv, argc, $run, $keys)
        }
    };
}

command!(acquire_command, acquire::run, Some(acquire::keys));
command!(report_command, commands::report);
command!(status_command, commands::status);
command!(admin_command, commands::admin);
command!(prune_command, commands::prune);
command!(restore_command, commands::restore);

/// Registers one command; `keys` is `(first, last, step)` of its key arguments, or `None` for
/// `getkeys-api`.
unsafe fn create(
    ctx: *mut ffi::Ctx,
    api: &ffi::Api,
    name: &CStr,
    run: ffi::CmdFunc,
    flags: &CStr,
    keys: (c_int, c_int, c_int),
) -> bool {
    (api.CreateCommand)(
        ctx,
        name.as_ptr(),
        run,
        flags.as_ptr(),
        keys.0,
        keys.1,
        keys.2,
    ) == ffi::OK
}

/// Called by Redis when it loads the module: registers the data type and the commands.
///
/// # Safety
/// Called by Redis only, with its load context.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut ffi::Ctx,
    _argv: *mut *mut ffi::RString,
    _argc: c_int,
) -> c_int {
    if !ffi::init(ctx, "sluice\0", MODULE_VERSION) {
        return ffi::ERR;
    }
    let Some(api) = ffi::api() else {
        return ffi::ERR;
    };
    (api.SetModuleOptions)(ctx, ffi::OPTIONS_HANDLE_IO_ERRORS);
    let single = (1, 1, 1);
    let registered = value::register(ctx, api)
        && create(
            ctx,
            api,
            c"sluice.acquire",
            acquire_command,
            c"write deny-oom getkeys-api",
            (0, 0, 0),
        )
        && create(
            ctx,
            api,
            c"sluice.report",
            report_command,
            c"write deny-oom",
            single,
        )
        && create(
            ctx,
            api,
            c"sluice.status",
            status_command,
            c"readonly",
            single,
        )
        && create(ctx, api, c"sluice.admin", admin_command, c"write", single)
        && create(ctx, api, c"sluice.prune", prune_command, c"write", single)
        && create(
            ctx,
            api,
            c"sluice.restore",
            restore_command,
            c"write deny-oom",
            single,
        );
    if registered {
        ffi::OK
    } else {
        ffi::ERR
    }
}
