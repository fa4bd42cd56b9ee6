//! Exit codes and messages when things go wrong, and completions.

use std::process::Command;

use crate::fixtures::{Env, run, vexil_binary};

#[test]
fn an_unreachable_url_exits_3_with_a_message_naming_the_url() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(vexil_binary());
    cmd.env("VEXIL_CONFIG", "/nonexistent/vexil-config.json")
        .env_remove("VEXIL_TOKEN")
        .env_remove("VEXIL_URL")
        .args(["--url", &url, "flag", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = run(cmd, None).code(3);
    assert!(
        out.stderr
            .starts_with(&format!("error: cannot reach the Vexil server at {url}")),
        "{out:#?}"
    );
}

#[test]
fn a_stale_session_and_a_usage_error_have_distinct_exit_codes() {
    let env = Env::signed_in();
    // clap's usage errors exit 2.
    env.vexil(&["flag", "create", "x", "--state", "MAYBE"])
        .code(2);
    env.vexil(&["eval", "--explain"]).code(2);
    env.vexil(&[
        "flag",
        "create",
        "x",
        "--variant",
        "on=true",
        "--file",
        "f.json",
    ])
    .code(2);
    // An update with nothing to change is the CLI's own usage error.
    env.vexil(&["flag", "create", "x"]).ok();
    let nothing = env.vexil(&["flag", "update", "x"]).code(2);
    assert!(nothing.stderr.contains("nothing to change"), "{nothing:#?}");
    // A missing resource is the server's 404.
    let missing = env.vexil(&["segment", "get", "nope"]).code(1);
    assert!(missing.stderr.starts_with("error: 404 "), "{missing:#?}");
}

#[test]
fn completions_bash_prints_a_script() {
    let mut cmd = Command::new(vexil_binary());
    cmd.args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = run(cmd, None).ok();
    assert!(out.stdout.contains("complete -F"), "{out:#?}");
    assert!(out.stdout.contains("vexil"), "{out:#?}");
}
