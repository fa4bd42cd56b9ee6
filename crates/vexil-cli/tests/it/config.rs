//! Dynamic configuration through the CLI: schemas, versions, rollback, conditional writes.

use serde_json::json;

use crate::fixtures::Env;

#[test]
fn a_value_that_breaks_the_schema_exits_1_naming_the_value_path_and_changes_nothing() {
    let env = Env::signed_in();
    let schema = env.file(
        "limits.schema.json",
        r#"{"type": "object", "properties": {"maxItems": {"type": "integer", "minimum": 1}},
            "required": ["maxItems"]}"#,
    );
    env.vexil(&[
        "config",
        "set",
        "checkout.limits",
        "--value",
        r#"{"maxItems": 50}"#,
        "--schema-file",
        &schema,
        "--description",
        "cart limits",
    ])
    .ok();

    let refused = env
        .vexil(&[
            "config",
            "set",
            "checkout.limits",
            "--value",
            r#"{"maxItems": 0}"#,
        ])
        .code(1);
    assert!(refused.stderr.starts_with("error: 400 "), "{refused:#?}");
    assert!(refused.stderr.contains("value/maxItems"), "{refused:#?}");

    let value = env
        .vexil(&["config", "get", "checkout.limits", "--value-only"])
        .ok();
    assert_eq!(value.stdout, "{\"maxItems\":50}\n");
    let entry = env
        .vexil(&["-o", "json", "config", "get", "checkout.limits"])
        .ok()
        .json();
    assert_eq!(entry["version"], 1);
    assert_eq!(entry["description"], "cart limits");
    assert_eq!(entry["schema"]["required"], json!(["maxItems"]));

    // Without the schema, the same value is accepted.
    let written = env
        .vexil(&[
            "-o",
            "json",
            "config",
            "set",
            "checkout.limits",
            "--value",
            r#"{"maxItems": 0}"#,
            "--no-schema",
        ])
        .ok()
        .json();
    assert_eq!(written["version"], 2);
    assert!(written.get("schema").is_none(), "{written}");
    assert_eq!(written["description"], "cart limits");
}

#[test]
fn set_versions_and_rollback_round_trip() {
    let env = Env::signed_in();
    let set = env
        .vexil(&["config", "set", "banner", "--value", r#""hello""#])
        .ok();
    assert!(set.stdout.starts_with("KEY"), "{set:#?}");
    assert!(set.stdout.contains("\"hello\""), "{set:#?}");
    assert!(set.stdout.contains("admin"), "{set:#?}");
    // The value from standard input, the file holding the value itself.
    env.vexil_stdin(
        &[
            "config",
            "set",
            "banner",
            "--file",
            "-",
            "--if-version",
            "1",
        ],
        r#"{"text": "sale", "until": 3}"#,
    )
    .ok();
    let value = env.vexil(&["config", "get", "banner", "--value-only"]).ok();
    assert_eq!(value.stdout, "{\"text\":\"sale\",\"until\":3}\n");

    let versions = env
        .vexil(&["-o", "json", "config", "versions", "banner"])
        .ok()
        .json();
    let items = versions["items"].as_array().expect("items");
    let listed: Vec<_> = items.iter().map(|v| (&v["version"], &v["value"])).collect();
    assert_eq!(
        listed,
        [
            (&json!(1), &json!("hello")),
            (&json!(2), &json!({"text": "sale", "until": 3}))
        ]
    );
    let after = env
        .vexil(&["-o", "json", "config", "versions", "banner", "--after", "1"])
        .ok()
        .json();
    assert_eq!(after["items"].as_array().map(Vec::len), Some(1), "{after}");

    // A rollback based on a stale version is refused; one on the current version writes
    // version 3 with the old value.
    let rollback = |if_version: &str| {
        env.vexil(&[
            "-o",
            "json",
            "config",
            "rollback",
            "banner",
            "--to",
            "1",
            "--if-version",
            if_version,
        ])
    };
    rollback("1").code(1);
    let rolled = rollback("2").ok().json();
    assert_eq!(rolled["version"], 3);
    assert_eq!(rolled["value"], "hello");
    let value = env.vexil(&["config", "get", "banner", "--value-only"]).ok();
    assert_eq!(value.stdout, "\"hello\"\n");
    let table = env.vexil(&["config", "versions", "banner"]).ok();
    assert_eq!(table.stdout.lines().count(), 4, "{table:#?}");

    let listed = env.vexil(&["config", "list"]).ok();
    assert!(listed.stdout.contains("banner"), "{listed:#?}");
    env.vexil(&["config", "delete", "banner", "--if-version", "2"])
        .code(1);
    env.vexil(&["config", "delete", "banner", "--if-version", "3"])
        .ok();
    let gone = env.vexil(&["config", "get", "banner"]).code(1);
    assert!(gone.stderr.starts_with("error: 404 "), "{gone:#?}");
}

#[test]
fn create_only_on_an_existing_key_exits_1_with_409_and_keeps_the_value() {
    let env = Env::signed_in();
    env.vexil(&["config", "set", "retries", "--value", "3", "--create-only"])
        .ok();
    let refused = env
        .vexil(&["config", "set", "retries", "--value", "5", "--create-only"])
        .code(1);
    assert!(refused.stderr.starts_with("error: 409 "), "{refused:#?}");
    let value = env
        .vexil(&["config", "get", "retries", "--value-only"])
        .ok();
    assert_eq!(value.stdout, "3\n");
    // Neither a value nor a file is a usage error; so is --create-only with --if-version.
    env.vexil(&["config", "set", "retries"]).code(2);
    env.vexil(&[
        "config",
        "set",
        "retries",
        "--value",
        "5",
        "--create-only",
        "--if-version",
        "1",
    ])
    .code(2);
}
