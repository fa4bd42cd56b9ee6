//! flagd files in and out.

use serde_json::json;

use crate::fixtures::Env;

#[test]
fn an_import_dry_run_changes_nothing_and_an_import_round_trips_through_export() {
    let env = Env::signed_in();
    let doc = json!({
        "$evaluators": {"gold": {"==": [{"var": "tier"}, "gold"]}},
        "flags": {
            "banner": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"$ref": "gold"}, "on", null]}
            },
            "limit": {
                "state": "DISABLED",
                "variants": {"low": 10, "high": 100},
                "defaultVariant": "low"
            }
        }
    });
    let json_file = env.file("flags.json", &doc.to_string());

    let dry = env
        .vexil(&["-o", "json", "import", &json_file, "--dry-run"])
        .ok()
        .json();
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["diff"]["added"], json!(["banner", "limit"]));
    let empty = env.vexil(&["-o", "json", "flag", "list"]).ok().json();
    assert_eq!(empty["items"], json!([]), "a dry run stored flags");

    // The same document as YAML, sent as application/yaml because of its extension.
    let yaml = r#"
"$evaluators":
  gold:
    "==": [{var: tier}, gold]
flags:
  banner:
    state: ENABLED
    variants: {on: true, off: false}
    defaultVariant: "off"
    targeting:
      if: [{"$ref": gold}, "on", null]
  limit:
    state: DISABLED
    variants: {low: 10, high: 100}
    defaultVariant: low
"#;
    let yaml_file = env.file("flags.yaml", yaml);
    let imported = env.vexil(&["import", &yaml_file]).ok();
    assert!(
        imported.stdout.contains("added: banner, limit"),
        "{imported:#?}"
    );

    let exported = env.vexil(&["export"]).ok().json();
    assert_eq!(exported["flags"], doc["flags"]);
    assert_eq!(exported["$evaluators"], doc["$evaluators"]);

    // Importing the export again changes nothing.
    let again = env.file("exported.json", &exported.to_string());
    let outcome = env
        .vexil(&["-o", "json", "import", &again, "--mode", "replace"])
        .ok()
        .json();
    assert_eq!(outcome["diff"]["unchanged"], json!(["banner", "limit"]));
    assert_eq!(outcome["diff"]["changed"], json!([]));

    let yaml_out = env.vexil(&["export", "--format", "yaml"]).ok();
    assert!(yaml_out.stdout.contains("banner:"), "{yaml_out:#?}");
}
