//! Login profiles: saved privately, used by later commands, forgotten by logout.

use crate::fixtures::{ADMIN_PASSWORD, Env};

#[test]
fn login_saves_a_private_profile_that_later_commands_use() {
    let env = Env::start();
    // Before login there is no credential: the server refuses.
    let refused = env.vexil(&["flag", "list"]).code(1);
    assert!(refused.stderr.contains("error: 401"), "{refused:#?}");

    env.vexil_stdin(
        &["login", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .ok();
    let meta = std::fs::metadata(env.config()).expect("the profiles file exists");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.config()).expect("read profiles"))
            .expect("profiles are JSON");
    let profile = &saved["profiles"]["default"];
    assert_eq!(profile["url"], env.server.base.as_str());
    assert!(profile["token"].as_str().is_some_and(|t| !t.is_empty()));

    // A later command, with no token in the environment, uses the saved session.
    env.vexil(&["flag", "create", "from-profile"]).ok();
    let show = env.vexil(&["profile", "show", "-o", "json"]).ok().json();
    assert_eq!(show["signedIn"], true);
    assert_eq!(show["username"], "admin");

    // The profile's URL is used too when VEXIL_URL is absent.
    let mut cmd = env.command(&["flag", "get", "from-profile", "-o", "json"]);
    cmd.env_remove("VEXIL_URL");
    let flag = crate::fixtures::run(cmd, None).ok().json();
    assert_eq!(flag["key"], "from-profile");

    // A token on the command line wins over the profile's session.
    let bogus = env
        .vexil(&["--token", "vx_not-a-token", "flag", "list"])
        .code(1);
    assert!(bogus.stderr.contains("401"), "{bogus:#?}");

    env.vexil(&["logout"]).ok();
    env.vexil(&["flag", "list"]).code(1);
}

#[test]
fn a_wrong_password_is_refused_and_nothing_is_saved() {
    let env = Env::start();
    let run = env
        .vexil_stdin(&["login", "--password-stdin"], "not-the-password\n")
        .code(1);
    assert!(run.stderr.starts_with("error: 401"), "{run:#?}");
    assert!(!env.config().exists());
}
