//! The audit log's export and chain verification through the CLI.

use serde_json::Value;

use crate::fixtures::Env;

#[test]
fn audit_export_writes_one_parseable_line_per_event_that_audit_list_shows() {
    let env = Env::signed_in();
    env.vexil(&["flag", "create", "a"]).ok();
    env.vexil(&["flag", "disable", "a"]).ok();
    env.vexil(&["config", "set", "limit", "--value", "10"]).ok();
    let listed = env.vexil(&["-o", "json", "audit", "list"]).ok().json();
    let events = listed["items"].as_array().expect("items");
    assert!(events.len() >= 3, "{listed}");

    let exported = env.vexil(&["audit", "export"]).ok();
    let lines: Vec<Value> = exported
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert_eq!(lines.len(), events.len(), "{exported:#?}");
    assert_eq!(&lines, events);

    // Filtered, and into a file.
    let path = env.dir.path().join("config-events.ndjson");
    let to = path.to_str().expect("utf-8 path");
    env.vexil(&["audit", "export", "--kind", "config", "--output-file", to])
        .ok();
    let written = std::fs::read_to_string(&path).expect("the export file");
    let lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{written}");
    assert_eq!(lines[0]["kind"], "config");
    assert_eq!(lines[0]["key"], "limit");
    let first_seq = events[0]["seq"].as_u64().expect("seq");
    let after = env
        .vexil(&["audit", "export", "--after", &first_seq.to_string()])
        .ok();
    assert_eq!(after.stdout.lines().count(), events.len() - 1, "{after:#?}");
}

#[test]
fn audit_verify_exits_0_and_prints_valid_for_an_untouched_log() {
    let env = Env::signed_in();
    env.vexil(&["flag", "create", "a"]).ok();
    let report = env.vexil(&["audit", "verify"]).ok();
    assert!(
        report
            .stdout
            .lines()
            .any(|l| l.starts_with("valid:") && l.ends_with("true")),
        "{report:#?}"
    );
    let json = env.vexil(&["-o", "json", "audit", "verify"]).ok().json();
    assert_eq!(json["valid"], true);
    assert!(json["events"].as_u64() >= Some(1), "{json}");
}
