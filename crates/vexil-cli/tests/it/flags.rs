//! Namespaces, flags and evaluation through the CLI.

use serde_json::json;

use crate::fixtures::Env;

#[test]
fn a_stale_if_version_update_fails_with_the_conflict_and_leaves_the_flag_unchanged() {
    let env = Env::signed_in();
    env.vexil(&["ns", "create", "team-a", "--name", "Team A"])
        .ok();
    env.vexil(&[
        "-n",
        "team-a",
        "flag",
        "create",
        "checkout",
        "--variant",
        "on=true",
        "--variant",
        "off=false",
        "--default",
        "off",
        "--state",
        "ENABLED",
        "--tag",
        "web",
    ])
    .ok();
    let flag = env
        .vexil(&["-n", "team-a", "-o", "json", "flag", "get", "checkout"])
        .ok()
        .json();
    assert_eq!(flag["namespace"], "team-a");
    assert_eq!(flag["variants"], json!({"on": true, "off": false}));
    assert_eq!(flag["defaultVariant"], "off");
    assert_eq!(flag["state"], "ENABLED");
    assert_eq!(flag["tags"], json!(["web"]));
    assert_eq!(flag["version"], 1);

    // A change moves it to version 2 ...
    let updated = env
        .vexil(&[
            "-n",
            "team-a",
            "-o",
            "json",
            "flag",
            "update",
            "checkout",
            "--description",
            "v2",
            "--if-version",
            "1",
        ])
        .ok()
        .json();
    assert_eq!(updated["version"], 2);
    // ... so a writer still at version 1 is refused.
    let stale = env
        .vexil(&[
            "-n",
            "team-a",
            "flag",
            "update",
            "checkout",
            "--default",
            "on",
            "--if-version",
            "1",
        ])
        .code(1);
    assert!(
        stale.stderr.starts_with("error: 412 ") || stale.stderr.starts_with("error: 409 "),
        "{stale:#?}"
    );
    assert!(stale.stderr.contains("version"), "{stale:#?}");
    let after = env
        .vexil(&["-n", "team-a", "-o", "json", "flag", "get", "checkout"])
        .ok()
        .json();
    assert_eq!(after["version"], 2);
    assert_eq!(after["defaultVariant"], "off");
    assert_eq!(after["description"], "v2");

    // The same holds for a replacement from a file.
    let file = env.file(
        "checkout.json",
        r#"{"state": "DISABLED", "variants": {"on": true, "off": false}}"#,
    );
    env.vexil(&[
        "-n",
        "team-a",
        "flag",
        "update",
        "checkout",
        "--file",
        &file,
        "--if-version",
        "1",
    ])
    .code(1);
    let listed = env
        .vexil(&["-n", "team-a", "-o", "json", "flag", "list"])
        .ok()
        .json();
    assert_eq!(listed["items"][0]["state"], "ENABLED");
}

#[test]
fn enable_and_disable_flip_what_eval_returns() {
    let env = Env::signed_in();
    env.vexil(&["flag", "create", "kill-switch", "--default", "on"])
        .ok();
    let served = env
        .vexil(&["-o", "json", "eval", "kill-switch"])
        .ok()
        .json();
    assert_eq!(served["value"], true);
    assert_eq!(served["reason"], "STATIC");

    env.vexil(&["flag", "disable", "kill-switch"]).ok();
    let off = env
        .vexil(&["-o", "json", "eval", "kill-switch"])
        .ok()
        .json();
    assert_eq!(off["reason"], "DISABLED");
    assert!(off["value"].is_null(), "{off}");

    env.vexil(&["flag", "enable", "kill-switch"]).ok();
    let on = env.vexil(&["eval", "kill-switch"]).ok();
    assert!(
        on.stdout.contains("kill-switch") && on.stdout.contains("STATIC"),
        "{on:#?}"
    );
}

#[test]
fn eval_explain_shows_the_rule_and_why_it_matched() {
    let env = Env::signed_in();
    env.vexil(&[
        "flag",
        "create",
        "theme",
        "--variant",
        "light=\"light\"",
        "--variant",
        "dark=dark",
        "--default",
        "light",
        "--targeting",
        r#"{"if": [{"==": [{"var": "tier"}, "gold"]}, "dark", null]}"#,
    ])
    .ok();
    let explained = env
        .vexil(&[
            "-o",
            "json",
            "eval",
            "theme",
            "--ctx",
            "tier=gold",
            "-k",
            "user-1",
            "--explain",
        ])
        .ok()
        .json();
    let resolution = &explained["resolution"];
    assert_eq!(resolution["value"], "dark");
    assert_eq!(resolution["reason"], "TARGETING_MATCH");
    let explanation = &explained["explanation"];
    assert_eq!(explanation["ruleResult"], "dark");
    assert_eq!(explanation["context"]["tier"], "gold");
    assert_eq!(explanation["context"]["targetingKey"], "user-1");
    assert!(explanation["rule"].is_object(), "{explained}");

    let table = env
        .vexil(&[
            "eval",
            "theme",
            "--context",
            r#"{"tier": "silver"}"#,
            "--explain",
        ])
        .ok();
    assert!(table.stdout.contains("DEFAULT"), "{table:#?}");
    assert!(table.stdout.contains("decision:"), "{table:#?}");

    // Every flag at once.
    let all = env.vexil(&["-o", "json", "eval"]).ok().json();
    assert_eq!(all["flags"][0]["flagKey"], "theme");
}

#[test]
fn bad_json_in_targeting_is_a_usage_error_and_nothing_is_stored() {
    let env = Env::signed_in();
    let bad = env
        .vexil(&["flag", "create", "broken", "--targeting", "{\"if\": ["])
        .code(2);
    assert!(bad.stderr.contains("--targeting"), "{bad:#?}");
    assert!(bad.stderr.contains("not valid JSON"), "{bad:#?}");
    let missing = env.vexil(&["flag", "get", "broken"]).code(1);
    assert!(missing.stderr.starts_with("error: 404"), "{missing:#?}");

    // Targeting that is JSON but not a valid rule is the server's 400, with nothing stored.
    let invalid = env
        .vexil(&[
            "flag",
            "create",
            "broken",
            "--targeting",
            r#"{"no-such-op": [1]}"#,
        ])
        .code(1);
    assert!(invalid.stderr.starts_with("error: 400"), "{invalid:#?}");
    env.vexil(&["flag", "get", "broken"]).code(1);
}

#[test]
fn segments_and_namespaces_round_trip() {
    let env = Env::signed_in();
    env.vexil(&[
        "segment",
        "create",
        "gold",
        "--rule",
        r#"{"==": [{"var": "tier"}, "gold"]}"#,
    ])
    .ok();
    env.vexil(&["segment", "update", "gold", "--description", "gold tier"])
        .ok();
    let seg = env
        .vexil(&["-o", "json", "segment", "get", "gold"])
        .ok()
        .json();
    assert_eq!(seg["version"], 2);
    assert_eq!(seg["description"], "gold tier");
    env.vexil(&["segment", "delete", "gold"]).ok();

    env.vexil(&["ns", "create", "prod", "--context", r#"{"region": "eu"}"#])
        .ok();
    env.vexil(&["ns", "update", "prod", "--description", "production"])
        .ok();
    let ns = env.vexil(&["-o", "json", "ns", "get", "prod"]).ok().json();
    assert_eq!(ns["evaluationContext"], json!({"region": "eu"}));
    assert_eq!(ns["description"], "production");
    let listed = env.vexil(&["ns", "list"]).ok();
    assert!(listed.stdout.contains("prod"), "{listed:#?}");
}

#[test]
fn flag_history_after_create_and_disable_shows_both_actions_in_order() {
    let env = Env::signed_in();
    env.vexil(&["flag", "create", "history-me"]).ok();
    env.vexil(&["flag", "disable", "history-me"]).ok();
    let events = env
        .vexil(&["-o", "json", "flag", "history", "history-me"])
        .ok()
        .json();
    let actions: Vec<_> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, [json!("flag.create"), json!("flag.disable")]);

    let table = env.vexil(&["flag", "history", "history-me"]).ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{table:#?}");
    assert!(lines[0].starts_with("SEQ"), "{table:#?}");
    assert!(
        lines[1].contains("user:admin") && lines[1].ends_with("flag.create"),
        "{table:#?}"
    );
    assert!(lines[2].ends_with("flag.disable"), "{table:#?}");
    let first = events["items"][0]["seq"].to_string();
    let later = env
        .vexil(&[
            "-o",
            "json",
            "flag",
            "history",
            "history-me",
            "--after",
            &first,
        ])
        .ok()
        .json();
    assert_eq!(later["items"].as_array().map(Vec::len), Some(1), "{later}");

    let missing = env.vexil(&["flag", "history", "never-was"]).code(1);
    assert!(missing.stderr.starts_with("error: 404 "), "{missing:#?}");
}
