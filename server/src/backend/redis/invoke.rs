//! How one script call reaches Redis: `FCALL` of the script's function in Sluice's library
//! (loaded with `FUNCTION LOAD` when Redis answers that it has not got it) while Redis allows
//! functions; once it refuses them for good (before 7.0, an ACL user without `fcall` or
//! `function|load`, a library it cannot compile), `EVALSHA` and, on `NOSCRIPT`, `EVAL`, for the
//! life of the backend. A passing refusal (loading, failing over) is an error of that call.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use redis::{Cmd, ErrorKind, FromRedisValue, ServerErrorKind};

use super::{scripts::LuaScript, unavailable, RedisBackend};
use crate::backend::BackendError;

impl RedisBackend {
    /// The verb and name a call of `script` goes by now, without falling back: `FCALL` and its
    /// function, or `EVALSHA` and its SHA once functions were refused.
    pub(super) fn call_by<'a>(&self, script: &'a LuaScript) -> (&'static str, &'a str) {
        if self.functions.in_use() {
            ("FCALL", &script.function)
        } else {
            ("EVALSHA", &script.sha)
        }
    }

    /// Sends `command(verb, body)` for `script`, bounded by `timeout`: `FCALL` of its function
    /// while Redis has functions (loading the library when Redis answers that it has not got it);
    /// otherwise `EVALSHA` first and, on `NOSCRIPT`, `EVAL` (which also caches the script).
    pub(super) async fn eval_command<T: FromRedisValue>(
        &self,
        command: impl Fn(&str, &str) -> Cmd,
        script: &LuaScript,
        timeout: Duration,
    ) -> Result<T, BackendError> {
        let connection = self
            .link
            .get()
            .map_err(|e| BackendError::Unavailable(format!("redis: {e}")))?;
        let call = async {
            if self.functions.in_use() {
                match connection.query(&command("FCALL", &script.function)).await {
                    Err(e) if function_missing(&e) => {
                        tracing::debug!("function library not loaded on the server; loading it");
                        let load = redis::cmd("FUNCTION")
                            .arg("LOAD")
                            .arg("REPLACE")
                            .arg(&self.scripts.library)
                            .clone();
                        match connection.query::<redis::Value>(&load).await {
                            Ok(_) => {
                                return connection.query(&command("FCALL", &script.function)).await
                            }
                            // Redis refused the library for good (no FUNCTION command, an ACL
                            // without it, a server that cannot compile it): scripts by SHA from
                            // now on. A passing refusal (loading, failing over) is an error.
                            Err(e) if library_refused(&e) => self.functions.give_up(&e),
                            Err(e) => return Err(e),
                        }
                    }
                    Err(e) if functions_refused(&e) => self.functions.give_up(&e),
                    other => return other,
                }
            }
            match connection.query(&command("EVALSHA", &script.sha)).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    tracing::debug!("script not cached on the server; sending it");
                    connection.query(&command("EVAL", &script.source)).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(BackendError::Unavailable(format!(
                "redis: no answer within {timeout:?}"
            ))),
        }
    }
}

/// Whether scripts are called as functions of the library (`FCALL`): until Redis refuses them
/// once, for the life of the backend.
#[derive(Debug, Default)]
pub(super) struct Functions {
    refused: AtomicBool,
}

impl Functions {
    pub(super) fn in_use(&self) -> bool {
        !self.refused.load(Ordering::Relaxed)
    }

    fn give_up(&self, error: &redis::RedisError) {
        if !self.refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %error,
                "redis refused functions; calling the scripts by EVALSHA from now on (a \
                 least-privilege user needs fcall and function|load for the faster path)"
            );
        }
    }
}

/// Redis has not got the library (a new or restarted server, `FUNCTION FLUSH`).
fn function_missing(e: &redis::RedisError) -> bool {
    e.code() == Some("ERR")
        && e.detail()
            .is_some_and(|d| d.starts_with("Function not found"))
}

/// Redis refuses `FCALL` itself: a server without functions (before 7.0) or an ACL user who may
/// not run it (a refused key is not this: the same key would be refused to `EVALSHA`).
fn functions_refused(e: &redis::RedisError) -> bool {
    let detail = e.detail().unwrap_or_default();
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::NoPerm) => detail.contains("'fcall' command"),
        _ => e.code() == Some("ERR") && detail.starts_with("unknown command"),
    }
}

/// Redis refuses `FUNCTION LOAD` for good: no such command or subcommand, an ACL user who may
/// not run it, or a library it cannot compile (which it would not compile on a retry either).
fn library_refused(e: &redis::RedisError) -> bool {
    let detail = e.detail().unwrap_or_default();
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::NoPerm) => detail.contains("'function"),
        _ => {
            e.code() == Some("ERR")
                && (detail.starts_with("unknown command")
                    || detail.starts_with("unknown subcommand")
                    || detail.contains("ompil"))
        }
    }
}
