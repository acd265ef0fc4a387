//! The Lua scripts the Redis backend runs, in two forms. Where Redis has functions (7.0 and later)
//! they are one function library, loaded once (`FUNCTION LOAD`) and called by name (`FCALL`): the
//! common prelude (`common.lua`) then runs once per load instead of once per call, which is most
//! of a small call's cost. Elsewhere (an older Redis, an ACL user without `FUNCTION`), each is the
//! prelude followed by its body, called by SHA1 (`EVALSHA`, falling back to `EVAL` when Redis has
//! forgotten it). Both run the same text. Keys, state fields, arguments and replies: `LAYOUT.md`.

/// The prelude every script shares, in order: keys, formats, limits and the state; the lease log;
/// decisions; reports; the conversion of states an earlier release wrote.
const COMMON: &str = concat!(
    include_str!("common.lua"),
    "\n",
    include_str!("log.lua"),
    "\n",
    include_str!("decide.lua"),
    "\n",
    include_str!("reconcile.lua"),
    "\n",
    include_str!("upgrade.lua")
);

/// One script: its function's name in the library, and, for `EVAL`, the common prelude followed
/// by its body and the SHA1 `EVALSHA` names it by.
pub(super) struct LuaScript {
    pub(super) function: String,
    pub(super) source: String,
    pub(super) sha: String,
}

impl LuaScript {
    fn new(body: &str, function: String) -> Self {
        // As a script of its own, the prelude runs with every call: it binds its libraries there.
        let source = format!("{COMMON}\nbind_libs()\n{body}");
        let sha = redis::Script::new(&source).get_hash().to_string();
        Self {
            function,
            source,
            sha,
        }
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
    /// Every script as one function library, for `FUNCTION LOAD`.
    pub(super) library: String,
}

const BODIES: [(&str, &str); 6] = [
    ("acquire", include_str!("acquire.lua")),
    ("family", include_str!("family.lua")),
    ("report", include_str!("report.lua")),
    ("status", include_str!("status.lua")),
    ("prune", include_str!("prune.lua")),
    ("admin", include_str!("admin.lua")),
];

/// The library: named by a hash of its text, so replicas of different releases sharing a Redis
/// each load and call their own; each body becomes a function of the prelude's scope, entered
/// through `begin_call` (which sets the `KEYS` and `ARGV` the bodies read).
fn library() -> (String, String) {
    let mut code = String::from("local KEYS, ARGV\n");
    code.push_str(COMMON);
    for (name, body) in BODIES {
        code.push_str(&format!("\nlocal function run_{name}()\n{body}\nend\n"));
    }
    let hash = redis::Script::new(&code).get_hash().to_string();
    let name = format!("sluice_{}", &hash[..16]);
    let mut library = format!("#!lua name={name}\n{code}");
    for (body, _) in BODIES {
        // status.lua only reads: Redis runs it under maxmemory too, as it did the EVAL.
        let flags = if body == "status" {
            "{'no-writes'}"
        } else {
            "{}"
        };
        library.push_str(&format!(
            "redis.register_function{{function_name = '{name}_{body}', \
             callback = function(keys, args) begin_call(keys, args); return run_{body}() end, \
             flags = {flags}}}\n"
        ));
    }
    (name, library)
}

impl Scripts {
    pub(super) fn new() -> Self {
        let (name, library) = library();
        let script = |i: usize| {
            let (body, text) = BODIES[i];
            LuaScript::new(text, format!("{name}_{body}"))
        };
        Self {
            acquire: script(0),
            family: script(1),
            report: script(2),
            status: script(3),
            prune: script(4),
            admin: script(5),
            library,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_is_a_function_of_one_library_named_by_its_text() {
        let scripts = Scripts::new();
        let name = scripts
            .library
            .strip_prefix("#!lua name=")
            .and_then(|rest| rest.split_once('\n'))
            .map(|(name, _)| name.to_string())
            .expect("a shebang with the library's name");
        assert!(name.starts_with("sluice_") && name.len() == 23, "{name}");
        for script in [
            &scripts.acquire,
            &scripts.family,
            &scripts.report,
            &scripts.status,
            &scripts.prune,
            &scripts.admin,
        ] {
            assert!(script.function.starts_with(&format!("{name}_")));
            assert!(scripts
                .library
                .contains(&format!("function_name = '{}'", script.function)));
        }
        assert_eq!(Scripts::new().library, scripts.library, "deterministic");
    }
}
