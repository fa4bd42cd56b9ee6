//! Tokens, users, roles, bindings, and the audit trail of what the CLI did.

use crate::fixtures::Env;

#[test]
fn an_evaluator_token_cannot_create_flags_and_gets_403() {
    let env = Env::signed_in();
    let issued = env
        .vexil(&[
            "-o",
            "json",
            "token",
            "create",
            "sdk",
            "--role",
            "evaluator",
        ])
        .ok()
        .json();
    let secret = issued["token"].as_str().expect("the secret").to_owned();
    assert!(secret.starts_with("vx_"), "{issued}");

    let denied = env
        .vexil(&["--token", &secret, "flag", "create", "sneaky"])
        .code(1);
    assert!(denied.stderr.starts_with("error: 403 "), "{denied:#?}");
    env.vexil(&["flag", "get", "sneaky"]).code(1);

    // The token still evaluates (the environment variable works like --token).
    env.vexil(&["flag", "create", "public"]).ok();
    let mut cmd = env.command(&["-o", "json", "eval", "public"]);
    cmd.env("VEXIL_TOKEN", &secret);
    let served = crate::fixtures::run(cmd, None).ok().json();
    assert_eq!(served["value"], false);

    // Revoked, it no longer works.
    let id = issued["id"].as_str().expect("token id");
    let listed = env.vexil(&["token", "list"]).ok();
    assert!(listed.stdout.contains(id), "{listed:#?}");
    env.vexil(&["token", "revoke", id]).ok();
    env.vexil(&["--token", &secret, "eval", "public"]).code(1);
}

#[test]
fn audit_list_shows_the_flag_create_event() {
    let env = Env::signed_in();
    env.vexil(&["flag", "create", "audited"]).ok();
    let page = env
        .vexil(&[
            "-o", "json", "audit", "list", "--kind", "flag", "--key", "audited",
        ])
        .ok()
        .json();
    let events = page["items"].as_array().expect("items");
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["action"], "flag.create");
    assert_eq!(events[0]["namespace"], "default");
    assert_eq!(events[0]["actor"]["id"], "admin");
    let table = env.vexil(&["audit", "list", "--ns", "default"]).ok();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("flag.create") && l.contains("audited")),
        "{table:#?}"
    );
}

#[test]
fn a_user_created_and_bound_with_the_cli_can_sign_in_with_its_role() {
    let env = Env::signed_in();
    env.vexil_stdin(
        &[
            "user",
            "create",
            "ana",
            "--display-name",
            "Ana",
            "--password-stdin",
        ],
        "a long passphrase\n",
    )
    .ok();
    env.vexil(&[
        "role",
        "create",
        "flipper",
        "-p",
        "flag:read",
        "-p",
        "flag:write",
    ])
    .ok();
    let binding = env
        .vexil(&[
            "-o",
            "json",
            "binding",
            "create",
            "--subject",
            "user:ana",
            "--role",
            "flipper",
        ])
        .ok()
        .json();
    assert_eq!(binding["namespace"], "default");

    let ana = ["--profile", "ana"];
    env.vexil_stdin(
        &[&ana[..], &["login", "-u", "ana", "--password-stdin"]].concat(),
        "a long passphrase\n",
    )
    .ok();
    env.vexil(&[&ana[..], &["flag", "create", "by-ana"]].concat())
        .ok();
    // flipper has no rbac:admin.
    env.vexil(&[&ana[..], &["user", "list"]].concat()).code(1);

    env.vexil_stdin(
        &["user", "passwd", "ana", "--password-stdin"],
        "another long one\n",
    )
    .ok();
    let id = binding["id"].as_str().expect("binding id");
    env.vexil(&["binding", "delete", id]).ok();
    env.vexil(&["role", "delete", "flipper"]).ok();
    env.vexil(&["user", "delete", "ana"]).ok();
    let users = env.vexil(&["user", "list"]).ok();
    assert!(!users.stdout.contains("ana"), "{users:#?}");
}
