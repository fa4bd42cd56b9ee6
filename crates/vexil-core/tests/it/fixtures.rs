//! flagd's own schema fixtures: every positive document loads, every negative one is rejected
//! with a located reason.

use std::path::{Path, PathBuf};

use vexil_core::{DocumentError, FlagDocument, Schema, TargetingPolicy};

fn fixture_dir() -> PathBuf {
    vexil_testkit::testbed::shared_dir().join("reference/flagd-schemas/json/test")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

/// The schema a fixture names in its `$schema` (`flagd.json` allows the array form).
fn load(path: &Path) -> Result<FlagDocument, DocumentError> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let schema = if text.contains("flagd.json\"") {
        Schema::Flagd
    } else {
        Schema::Provider
    };
    FlagDocument::from_json_str(&text, schema, TargetingPolicy::Reject).map(|l| l.document)
}

#[test]
fn every_positive_flag_fixture_is_accepted() {
    for sub in ["flags", "flagd"] {
        for f in files(&fixture_dir().join(sub).join("positive")) {
            if let Err(e) = load(&f) {
                panic!("{} was rejected: {e}", f.display());
            }
        }
    }
}

#[test]
fn every_negative_flag_fixture_is_rejected_with_a_path() {
    for f in files(&fixture_dir().join("flags/negative")) {
        match load(&f) {
            Err(DocumentError::Invalid { violations }) => {
                assert!(!violations.is_empty());
                for v in &violations {
                    assert!(
                        !v.path.is_empty(),
                        "{}: violation without a path: {v}",
                        f.display()
                    );
                }
            }
            Err(DocumentError::Syntax { .. }) => {}
            Ok(_) => panic!("{} was accepted", f.display()),
        }
    }
}

#[test]
fn targeting_fixtures_are_judged_like_flag_targeting() {
    for (kind, should_pass) in [("positive", true), ("negative", false)] {
        for f in files(&fixture_dir().join("targeting").join(kind)) {
            let rule: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&f).unwrap_or_default())
                    .unwrap_or_default();
            let mut violations = Vec::new();
            vexil_core::validate::validate_targeting(&rule, "targeting", &mut violations);
            assert_eq!(
                violations.is_empty(),
                should_pass,
                "{}: {violations:?}",
                f.display()
            );
        }
    }
}
