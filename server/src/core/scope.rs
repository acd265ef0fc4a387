//! [`Scope`]: which state an answer comes from. Normally the state every replica shares; while
//! Redis cannot answer, a replica may answer from its own share (`on_failure = "local"`) or from
//! no state at all (`fail_open`). Such answers are marked, so callers and operators see them.

/// Which state an answer was decided in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The shared state: the memory backend's, or Redis.
    #[default]
    Shared,
    /// This replica's local share of the limits, while Redis is down.
    Local,
    /// No state: a grant given because Redis failed under `fail_open`.
    FailOpen,
}

impl Scope {
    /// The metrics and log spelling: `shared`, `local`, `fail_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Shared => "shared",
            Scope::Local => "local",
            Scope::FailOpen => "fail_open",
        }
    }
}
