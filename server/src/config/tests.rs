//! Tests of the config: every section, the error messages, the shipped examples.

use super::*;
use crate::core::Class;

const GOOD: &str = r#"
    listen = "127.0.0.1:6000"
    [backend]
    kind = "memory"
    [[services]]
    name = "openai/gpt-4o"
    profile = "openai"
    limits = [
      { dimension = "requests", amount = 500, window = "1m" },
      { dimension = "tokens", amount = 30000, window = "1m", algorithm = "token_bucket", burst = 5000 },
    ]
    default_cooldown = "2s"
"#;

#[test]
fn parses_a_good_file() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.listen.port(), 6000);
    let s = &c.services[0];
    assert_eq!(s.name, "openai/gpt-4o");
    assert_eq!(
        s.limits[1].algorithm,
        Algorithm::TokenBucket { burst: 5000 }
    );
    assert_eq!(s.limits[1].name, "tokens/1m");
    assert_eq!(s.default_cooldown, 2_000_000);
    assert_eq!(s.max_cooldown, 3_600_000_000);
}

#[test]
fn errors_name_the_service_and_field() {
    let cases = [
        (GOOD.replace("\"1m\", algorithm", "\"1x\", algorithm"), "service \"openai/gpt-4o\": limits[1].window"),
        (GOOD.replace("\"requests\"", "\"bananas\""), "limits[0].dimension"),
        (GOOD.replace("amount = 500,", "amount = 0,"), "limits[0].amount"),
        (GOOD.replace("amount = 500,", "amount = -5,"), "amount"),
        (GOOD.replace("token_bucket", "leaky"), "limits[1].algorithm"),
        (GOOD.replace("\"openai\"", "\"acme\""), "profile"),
        (GOOD.replace("openai/gpt-4o", "bad name"), "services[0].name"),
        (GOOD.replace("kind = \"memory\"", "kind = \"redis\""), "backend.url: required"),
        (GOOD.replace("kind = \"memory\"", "kind = \"etcd\""), "backend.kind"),
        (GOOD.replace("kind = \"memory\"", "kind = \"memory\"\non_failure = \"fail_open\""), "backend.on_failure: only applies"),
        (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"http://x\""), "backend.url"),
        (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"redis://x\"\non_failure = \"maybe\""), "backend.on_failure"),
        (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"redis://x\"\nkey_prefix = \"a{b}\""), "backend.key_prefix"),
        (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"redis://x\"\ntimeout = \"0s\""), "backend.timeout"),
        (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"redis://x\"\nengine = \"native\""), "backend.engine: \"native\" (expected \"lua\" or \"module\")"),
        (GOOD.replace("kind = \"memory\"", "kind = \"memory\"\nengine = \"module\""), "backend.engine: only applies"),
        (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"redis://x\"\ntls_ca_file = \"ca.pem\""), "backend.tls_ca_file: needs a rediss://"),
        (GOOD.replace("default_cooldown", "default_cooldwn"), "default_cooldwn"),
        (GOOD.replace("127.0.0.1:6000", "nowhere"), "listen"),
        (format!("metrics_listen = \"port 9\"\n{GOOD}"), "metrics_listen"),
        (format!("status_listen = \"port 9\"\n{GOOD}"), "status_listen"),
        (format!("{GOOD}\n[[services]]\nname = \"openai/gpt-4o\"\nlimits = [{{ dimension = \"requests\", amount = 1, window = \"1s\" }}]"), "defined twice"),
        (GOOD.replace("window = \"1m\" },", "window = \"1m\", burst = 3 },"), "limits[0].burst"),
        ("listen = \"127.0.0.1:1\"".to_string(), "no [[services]]"),
        (GOOD.replace("{ dimension = \"requests\", amount = 500, window = \"1m\" }", "{ dimension = \"concurrent\", amount = 5, window = \"1m\" }"), "limits[0].window: a concurrent limit has no window"),
        (GOOD.replace("{ dimension = \"requests\", amount = 500, window = \"1m\" }", "{ dimension = \"concurrent\", amount = 5, timeout = \"0s\" }"), "limits[0].timeout"),
        (GOOD.replace("window = \"1m\" },", "window = \"1m\", timeout = \"1m\" },"), "limits[0].timeout: only a concurrent limit"),
        (GOOD.replace("{ dimension = \"requests\", amount = 500, window = \"1m\" }", "{ dimension = \"requests\", amount = 500 }"), "limits[0].window: missing"),
        (GOOD.replace("{ dimension = \"requests\", amount = 500, window = \"1m\" }", "{ dimension = \"concurrent\", amount = 5 }, { dimension = \"concurrent\", amount = 9 }"), "limits[1]: a second concurrent limit"),
    ];
    for (text, expected) in cases {
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
}

#[test]
fn parents_form_families_and_bad_parents_are_refused() {
    let service = |name: &str, parent: &str| {
        let parent = if parent.is_empty() {
            String::new()
        } else {
            format!("parent = {parent:?}\n")
        };
        format!("[[services]]\nname = {name:?}\n{parent}limits = [{{ dimension = \"tokens\", amount = 10, window = \"1m\" }}]\n")
    };
    let text = [
        service("org", ""),
        service("org/a", "org"),
        service("org/a/x", "org/a"),
        service("alone", ""),
    ]
    .concat();
    let c = Config::parse(&text).unwrap();
    let families: Vec<Option<&str>> = c.services.iter().map(|s| s.family.as_deref()).collect();
    assert_eq!(families, [Some("org"), Some("org"), Some("org"), None]);
    assert_eq!(c.services[2].parent.as_deref(), Some("org/a"));
    // Envoy never reports: a route may not spend an in-flight limit, an ancestor's included.
    let pool =
        "[[services]]\nname = \"pool\"\nlimits = [{ dimension = \"concurrent\", amount = 4 }]\n";
    let envoy =
        "[envoy]\n[[envoy.descriptors]]\nentries = { model = \"x\" }\nservice = \"pool/x\"\n";
    let text = [pool, &service("pool/x", "pool"), envoy].concat();
    let err = Config::parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("spends a concurrent limit (of \"pool\")"),
        "{err}"
    );
    for (text, expected) in [
        (
            service("a", "nobody"),
            "service \"a\": parent: \"nobody\" is not a configured service",
        ),
        (service("a", "a"), "service \"a\": parent: a cycle"),
        (
            [service("a", "b"), service("b", "a")].concat(),
            "parent: a cycle",
        ),
        (
            [
                service("a", ""),
                service("b", "a"),
                service("c", "b"),
                service("d", "c"),
                service("e", "d"),
                service("f", "e"),
            ]
            .concat(),
            "service \"f\": parent: a cycle or more than 4 levels",
        ),
    ] {
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
}

#[test]
fn priority_classes_are_ranked_and_checked() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.priorities, Priorities::builtin());
    let text = format!("{GOOD}\n[[priorities]]\nname = \"live\"\n[[priorities]]\nname = \"default\"\nmin_share = 0.25\n[[priorities]]\nname = \"bulk\"\n");
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.priorities.class("live"), Some(Class::TOP));
    assert_eq!(c.priorities.class(""), Some(Class::with_min_share(1, 0.25)));
    assert_eq!(
        c.priorities.class("bulk"),
        Some(Class::with_min_share(2, 0.1))
    );
    for (extra, expected) in [
        (
            "[[priorities]]\nname = \"top\"\nmin_share = 0.5\n",
            "priorities[0].min_share: the highest class",
        ),
        (
            "[[priorities]]\nname = \"a\"\n[[priorities]]\nname = \"b\"\nmin_share = 0\n",
            "priorities[1].min_share: not in [1/64, 1]",
        ),
        (
            "[[priorities]]\nname = \"a\"\n[[priorities]]\nname = \"a\"\n",
            "priorities[1].name: \"a\" twice",
        ),
        (
            "[[priorities]]\nname = \"Bad Name\"\n",
            "priorities[0].name",
        ),
        ("priorities = []\n", "priorities: 1 to 16 classes"),
    ] {
        let text = if extra.starts_with("priorities =") {
            format!("{extra}{GOOD}")
        } else {
            format!("{GOOD}\n{extra}")
        };
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
}

#[test]
fn a_concurrent_limit_counts_calls_with_a_lease_timeout() {
    let text = GOOD.replace(
        "{ dimension = \"requests\", amount = 500, window = \"1m\" }",
        "{ dimension = \"concurrent\", amount = 8 }, { dimension = \"requests\", amount = 5, window = \"10m\" }",
    );
    let c = Config::parse(&text).unwrap();
    let limits = &c.services[0].limits;
    assert_eq!(limits[0], LimitSpec::concurrent(8, 600_000_000));
    assert_eq!(limits[0].dimension_name(), "concurrent");
    // A requests limit whose window equals the lease timeout is another limit.
    assert_eq!(limits[1].algorithm, Algorithm::SlidingWindow);
    assert_eq!(c.services[0].concurrent().map(|(i, _)| i), Some(0));
}

#[test]
fn redis_settings_parse_and_passwords_stay_hidden() {
    let text = GOOD.replace(
        "kind = \"memory\"",
        "kind = \"redis\"\nurl = \"rediss://app:s3cret@redis.internal:6380/0\"\ncluster = true\nkey_prefix = \"prod\"\ntimeout = \"100ms\"\non_failure = \"fail_open\"\nengine = \"module\"",
    );
    let c = Config::parse(&text).unwrap();
    let BackendConfig::Redis(r) = &c.backend else {
        panic!("expected redis, got {:?}", c.backend)
    };
    assert!(r.cluster);
    assert_eq!(r.key_prefix, "prod");
    assert_eq!(r.timeout, Duration::from_millis(100));
    assert_eq!(r.on_failure, OnFailure::FailOpen);
    assert_eq!(r.engine, Engine::Module);
    assert_eq!(r.url.expose(), "rediss://app:s3cret@redis.internal:6380/0");
    assert_eq!(r.url.to_string(), "rediss://app:***@redis.internal:6380/0");
    assert!(!format!("{c:?}").contains("s3cret"));
    let default = Config::parse(&GOOD.replace(
        "kind = \"memory\"",
        "kind = \"redis\"\nurl = \"redis://localhost\"",
    ))
    .unwrap();
    let BackendConfig::Redis(r) = default.backend else {
        panic!("expected redis")
    };
    assert_eq!(
        (
            r.cluster,
            r.key_prefix.as_str(),
            r.timeout,
            r.on_failure,
            r.engine
        ),
        (
            false,
            "sluice",
            DEFAULT_REDIS_TIMEOUT,
            OnFailure::FailClosed,
            Engine::Lua
        )
    );
    assert!(!format!("{:?}", RedisUrl::parse("redis://:pw@h").unwrap()).contains("pw"));
}

#[test]
fn adaptive_budgets_are_off_unless_asked_and_must_be_booleans() {
    let text = r#"
        [[services]]
        name = "gemini/flash"
        adaptive = true
        limits = [{ dimension = "requests", amount = 60, window = "1m" }]
    "#;
    let c = Config::parse(text).unwrap();
    assert!(c.services[0].adaptive);
    assert_eq!(c.services[0].adaptive_period(), 60_000_000);
    let off = Config::parse(&text.replace("adaptive = true", "")).unwrap();
    assert!(!off.services[0].adaptive);
    let err = Config::parse(&text.replace("adaptive = true", "adaptive = \"yes\"")).unwrap_err();
    assert!(err.to_string().contains("adaptive"), "{err}");
}

#[test]
fn sentinel_settings_parse_and_bad_ones_name_their_field() {
    let with = |backend: &str| GOOD.replace("kind = \"memory\"", backend);
    let text = with(
        "kind = \"redis\"\nurl = \"redis://:m4ster@ignored\"\nsentinels = [\"redis://:s3ntinel@10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\nsentinel_master = \"prod-1\"",
    );
    let c = Config::parse(&text).unwrap();
    let BackendConfig::Redis(r) = &c.backend else {
        panic!("expected redis, got {:?}", c.backend)
    };
    let sentinel = r.sentinel.as_ref().expect("sentinel settings");
    assert_eq!(sentinel.master, "prod-1");
    assert_eq!(sentinel.nodes.len(), 2);
    assert_eq!(
        sentinel.nodes[0].expose(),
        "redis://:s3ntinel@10.0.0.1:26379"
    );
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("s3ntinel") && !shown.contains("m4ster"),
        "{shown}"
    );
    // Without a url the master is reached without credentials.
    let bare = with(
        "kind = \"redis\"\nsentinels = [\"redis://10.0.0.1:26379\"]\nsentinel_master = \"prod-1\"",
    );
    assert!(Config::parse(&bare).is_ok());
    for (backend, expected) in [
        (
            "kind = \"redis\"\nsentinels = [\"redis://10.0.0.1:26379\"]",
            "backend.sentinel_master: required with backend.sentinels",
        ),
        (
            "kind = \"redis\"\nsentinel_master = \"m\"",
            "backend.sentinels: required with backend.sentinel_master",
        ),
        (
            "kind = \"redis\"\nsentinels = []\nsentinel_master = \"m\"",
            "backend.sentinels: from 1 to 16",
        ),
        (
            "kind = \"redis\"\nsentinels = [\"redis://a:1\", \"tcp://b:2\"]\nsentinel_master = \"m\"",
            "backend.sentinels[1]:",
        ),
        (
            "kind = \"redis\"\nsentinels = [\"redis://a:1\"]\nsentinel_master = \"m a\"",
            "backend.sentinel_master:",
        ),
        (
            "kind = \"redis\"\ncluster = true\nsentinels = [\"redis://a:1\"]\nsentinel_master = \"m\"",
            "backend.sentinels: not with cluster = true",
        ),
        (
            "kind = \"memory\"\nsentinel_master = \"m\"",
            "backend.sentinel_master: only applies to kind = \"redis\"",
        ),
    ] {
        let err = Config::parse(&with(backend)).unwrap_err().to_string();
        assert!(err.contains(expected), "{backend}: {err}");
    }
}

#[test]
fn services_are_enforced_unless_put_in_shadow_mode() {
    let text = r#"
        [[services]]
        name = "trial"
        mode = "shadow"
        limits = [{ dimension = "requests", amount = 60, window = "1m" }]
    "#;
    let c = Config::parse(text).unwrap();
    assert_eq!(c.services[0].mode, crate::core::Mode::Shadow);
    let enforced = Config::parse(&text.replace("mode = \"shadow\"", "")).unwrap();
    assert_eq!(enforced.services[0].mode, crate::core::Mode::Enforce);
    assert!(
        !c.services[0].same_as(&enforced.services[0]),
        "a mode change is a change"
    );
    let err = Config::parse(&text.replace("\"shadow\"", "\"dry-run\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("trial") && err.contains("mode: \"dry-run\" (expected enforce or shadow)"),
        "{err}"
    );
}

#[test]
fn custom_profiles_are_header_tables() {
    let text = r#"
        [[services]]
        name = "acme/llm"
        profile = "custom"
        quota_cooldown = "30m"
        adopt_provider_limits = true
        limits = [{ dimension = "tokens", amount = 1000, window = "1m" }]
        headers = [
          { name = "X-Acme-Tokens-Left", dimension = "tokens", meaning = "remaining", window = "1m" },
          { name = "x-acme-tokens-reset", dimension = "tokens", meaning = "reset", format = "epoch_seconds" },
        ]
    "#;
    let c = Config::parse(text).unwrap();
    assert_eq!(c.profiles[0].name, "custom");
    assert_eq!(c.profiles[0].rules[0].name, "x-acme-tokens-left");
    assert_eq!(c.profiles[0].rules[1].format, TimeFormat::EpochSeconds);
    assert_eq!(c.services[0].quota_cooldown, 1_800_000_000);
    assert!(c.services[0].adopt_provider_limits);
    assert!(
        !Config::parse(&text.replace("adopt_provider_limits = true", ""))
            .unwrap()
            .services[0]
            .adopt_provider_limits
    );
    for (bad, expected) in [
        (
            text.replace(
                "meaning = \"reset\", format = \"epoch_seconds\"",
                "meaning = \"reset\"",
            ),
            "headers[1].format: required",
        ),
        (
            text.replace("epoch_seconds", "fortnights"),
            "headers[1].format",
        ),
        (
            text.replace("\"remaining\"", "\"left\""),
            "headers[0].meaning",
        ),
        (
            text.replace("X-Acme-Tokens-Left", "bad name"),
            "headers[0].name",
        ),
        (
            text.replace("profile = \"custom\"", "profile = \"openai\""),
            "only a custom profile",
        ),
        (
            text.replace("\"30m\"", "\"2h\""),
            "quota_cooldown: longer than max_cooldown",
        ),
    ] {
        let err = Config::parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
    let err = Config::parse(&text.replace("headers = [", "xheaders = ["))
        .unwrap_err()
        .to_string();
    assert!(err.contains("xheaders"), "{err}");
}

#[test]
fn service_names_are_checked() {
    assert!(validate_service_name("anthropic/claude-sonnet:v1.2_x").is_ok());
    assert!(validate_service_name("").is_err());
    assert!(validate_service_name(&"a".repeat(129)).is_err());
    assert!(validate_service_name(&"a".repeat(128)).is_ok());
    assert!(validate_service_name("a b").is_err());
    assert!(validate_service_name("é").is_err());
}

#[test]
fn parse_errors_name_the_place_but_never_quote_a_value() {
    let text = "[auth]\ntokens = \"super-secret-token-value\"\n\n[[services]]\nname = \"a\"\nlimits = [{ dimension = \"requests\", amount = 1, window = \"1s\" }]\n";
    let err = Config::parse(text).unwrap_err().to_string();
    assert!(!err.contains("super-secret"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let err = Config::parse("listen = \"x\"\nbogus = 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bogus"),
        "unknown fields are still named: {err}"
    );
}
