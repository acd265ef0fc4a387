//! The Lua scripts the Redis backend runs: each is the common prelude (`common.lua`) followed by
//! its body, loaded once and called by SHA1 (`EVALSHA`, falling back to `EVAL` when Redis has
//! forgotten it). Their keys, state fields, arguments and replies: `LAYOUT.md`.

const COMMON: &str = include_str!("common.lua");

/// One script: the common prelude followed by its body, and the SHA1 `EVALSHA` names it by.
pub(super) struct LuaScript {
    pub(super) source: String,
    pub(super) sha: String,
}

impl LuaScript {
    fn new(body: &str) -> Self {
        let source = format!("{COMMON}\n{body}");
        let sha = redis::Script::new(&source).get_hash().to_string();
        Self { source, sha }
    }
}

/// The scripts.
pub(super) struct Scripts {
    pub(super) acquire: LuaScript,
    pub(super) family: LuaScript,
    pub(super) report: LuaScript,
    pub(super) status: LuaScript,
    pub(super) prune: LuaScript,
    pub(super) admin: LuaScript,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            acquire: LuaScript::new(include_str!("acquire.lua")),
            family: LuaScript::new(include_str!("family.lua")),
            report: LuaScript::new(include_str!("report.lua")),
            status: LuaScript::new(include_str!("status.lua")),
            prune: LuaScript::new(include_str!("prune.lua")),
            admin: LuaScript::new(include_str!("admin.lua")),
        }
    }
}
