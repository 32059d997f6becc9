//! The inventory through the CLI: `hosts` and `brothers` add, list and rm, edits that keep a
//! hand-written file's comments, refusals that leave the file alone, typos named, and
//! `--config` winning over `DELEGATE_CONFIG`.

use delegate_testkit::FakeHost;
use serde_json::json;

use crate::support::Env;

fn add_host_args(host: &FakeHost, env: &Env, name: &str) -> Vec<String> {
    vec![
        "hosts".into(),
        "add".into(),
        name.into(),
        "--address".into(),
        host.address().into(),
        "--port".into(),
        host.port().to_string(),
        "--user".into(),
        host.user().into(),
        "--identity".into(),
        host.client_key().display().to_string(),
        "--known-hosts".into(),
        env.known_hosts.display().to_string(),
        "--remote-root".into(),
        host.remote_root().display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn config_text(env: &Env) -> String {
    std::fs::read_to_string(&env.config).unwrap()
}

#[test]
fn a_cli_made_inventory_launches_and_refuses_to_orphan_a_brother() {
    let host = FakeHost::start();
    let env = Env::new();
    env.trust(&host);
    assert!(!env.config.exists());

    let added = env.run(&strs(&add_host_args(&host, &env, "box"))).ok();
    assert!(added.stdout().contains("host box saved"), "{added}");
    let hosts = env.run(&["hosts", "list", "--json"]).ok().json();
    assert_eq!(
        hosts,
        json!({"box": {
            "address": "127.0.0.1",
            "user": host.user(),
            "port": host.port(),
            "identity": host.client_key().display().to_string(),
            "known_hosts": env.known_hosts.display().to_string(),
            "remote_root": host.remote_root().display().to_string(),
            "connect_timeout": null,
        }})
    );
    let workdir = host.workdir().display().to_string();
    env.run(&[
        "brothers",
        "add",
        "oppy",
        "--host",
        "box",
        "--workdir",
        &workdir,
        "--agent",
        "self-test",
        "--sandbox",
        "read",
    ])
    .ok();
    let brothers = env.run(&["brothers", "list", "--json"]).ok().json();
    assert_eq!(
        brothers,
        json!({"oppy": {"host": "box", "workdir": workdir, "agent": "self-test", "model": null, "max_turns": 50, "sandbox": "read"}})
    );
    // The human listings show the same entries.
    let text = env.run(&["hosts", "list"]).ok().stdout();
    assert!(text.contains("box") && text.contains(&host.port().to_string()), "{text}");
    let text = env.run(&["brothers", "list"]).ok().stdout();
    assert!(text.contains("oppy") && text.contains("self-test") && text.contains(&workdir), "{text}");

    let task = env.run(&["oppy", "made by the cli", "--json"]).ok().json();
    assert_eq!((task["status"].as_str(), task["host"].as_str()), (Some("launched"), Some("box")), "{task}");
    assert_eq!(task["max_turns"], 50);
    assert_eq!(task["sandbox"], "read");

    // A brother on a host that does not exist is refused, and so is removing oppy's host.
    let before = config_text(&env);
    let ghost = env.run(&["brothers", "add", "ghost", "--host", "nowhere", "--workdir", "/w"]).fails_with(3);
    assert!(ghost.stderr().contains("nowhere"), "{ghost}");
    assert_eq!(config_text(&env), before);
    // A default profile must be one of the file's profiles.
    let nameless = ["brothers", "add", "oppy", "--host", "box", "--workdir", "/w", "--default-profile", "deep"];
    let refused = env.run(&nameless).fails_with(3);
    assert!(refused.stderr().contains("default_profile = \"deep\""), "{refused}");
    assert_eq!(config_text(&env), before, "a refused edit changed the file");
    let rm = env.run(&["hosts", "rm", "box"]).fails_with(3);
    assert!(rm.stderr().contains("brothers.oppy.host") && rm.stderr().contains("\"box\""), "{rm}");
    assert_eq!(config_text(&env), before, "a refused removal changed the file");

    env.run(&["brothers", "rm", "oppy"]).ok();
    env.run(&["hosts", "rm", "box"]).ok();
    assert_eq!(env.run(&["hosts", "list", "--json"]).ok().json(), json!({}));
    assert_eq!(env.run(&["brothers", "list", "--json"]).ok().json(), json!({}));
    // Removing what is not there says so.
    let again = env.run(&["hosts", "rm", "box"]);
    assert_ne!(again.code(), 0, "{again}");
    assert!(again.stderr().contains("unknown host \"box\""), "{again}");
    // The task launched earlier is still in the mailbox.
    assert_eq!(env.run(&["list", "--json"]).ok().json().as_array().unwrap().len(), 1);
}

const HAND_WRITTEN: &str = r#"# My machines. Keep this comment.

[hosts.masuda]
address = "masuda.example.org"    # the big GPU box
user = "ian"
port = 2222

# Brothers below.
[brothers.oppy]
host = "masuda"
workdir = "~/projects/test"   # checked out by hand
agent = "codex"
sandbox = "read"
"#;

#[test]
fn adding_to_a_hand_written_config_keeps_its_comments_and_entries() {
    let env = Env::new();
    std::fs::write(&env.config, HAND_WRITTEN).unwrap();
    env.run(&["hosts", "add", "jerry-box", "--address", "10.0.0.2", "--port", "22"]).ok();
    env.run(&["brothers", "add", "jerry", "--host", "jerry-box", "--workdir", "/srv/work"]).ok();
    let after = config_text(&env);
    for kept in [
        "# My machines. Keep this comment.",
        "address = \"masuda.example.org\"    # the big GPU box",
        "# Brothers below.",
        "workdir = \"~/projects/test\"   # checked out by hand",
    ] {
        assert!(after.contains(kept), "lost {kept:?}:\n{after}");
    }
    // The old blocks are intact, each comment still above the table it belongs to.
    assert!(after.starts_with(&HAND_WRITTEN[..HAND_WRITTEN.find("\n# Brothers").unwrap()]), "{after}");
    assert!(after.contains(&HAND_WRITTEN[HAND_WRITTEN.find("# Brothers").unwrap()..]), "{after}");
    let hosts = env.run(&["hosts", "list", "--json"]).ok().json();
    assert_eq!(hosts["masuda"]["port"], 2222);
    assert_eq!(hosts["jerry-box"]["address"], "10.0.0.2");
    let brothers = env.run(&["brothers", "list", "--json"]).ok().json();
    assert_eq!(brothers["oppy"]["agent"], "codex");
    assert_eq!(brothers["jerry"]["host"], "jerry-box");
    assert_eq!(brothers["jerry"]["agent"], "claude", "default agent");
    assert_eq!(brothers["jerry"]["sandbox"], "write", "default sandbox");

    // Removing one entry leaves the others and their comments.
    env.run(&["brothers", "rm", "jerry"]).ok();
    let after_rm = config_text(&env);
    assert!(!after_rm.contains("[brothers.jerry]") && after_rm.contains("# the big GPU box"), "{after_rm}");
}

#[test]
fn a_typo_in_the_config_is_exit_3_naming_the_key() {
    let env = Env::new();
    let text = "[hosts.h]\naddress = \"127.0.0.1\"\n[brothers.oppy]\nhost = \"h\"\nworkdir = \"/w\"\nmax_turn = 3\n";
    std::fs::write(&env.config, text).unwrap();
    for args in [
        &["oppy", "hello", "--json"][..],
        &["brothers", "list"][..],
        &["hosts", "add", "other", "--address", "10.0.0.3"][..],
    ] {
        let run = env.run(args).fails_with(3);
        assert!(run.stderr().contains("max_turn"), "{run}");
        assert!(run.stderr().contains(&env.config.display().to_string()), "{run}");
    }
    assert_eq!(config_text(&env), text, "an edit was written over a broken file");
    let typo_host = "[hosts.h]\naddress = \"127.0.0.1\"\nprot = 22\n";
    std::fs::write(&env.config, typo_host).unwrap();
    let run = env.run(&["hosts", "list", "--json"]).fails_with(3);
    assert!(run.stderr().contains("prot"), "{run}");
}

#[test]
fn the_config_flag_wins_over_delegate_config() {
    let host = FakeHost::start();
    let env = Env::new();
    // DELEGATE_CONFIG (env.config) knows brother "spirit" on host "a" only.
    env.add_host("a", &host);
    env.add_brother("spirit", "a", &host, "self-test", "read");
    let other = env.home.join("other.toml");
    let flag = other.to_str().unwrap();

    let mut args = add_host_args(&host, &env, "b");
    args.extend(["--config".into(), flag.into()]);
    env.run(&strs(&args)).ok();
    let workdir = host.workdir().display().to_string();
    env.run(&[
        "--config",
        flag,
        "brothers",
        "add",
        "oppy",
        "--host",
        "b",
        "--workdir",
        &workdir,
        "--agent",
        "self-test",
    ])
    .ok();

    let hosts = env.run(&["hosts", "list", "--json", "--config", flag]).ok().json();
    assert_eq!(hosts.as_object().unwrap().keys().collect::<Vec<_>>(), ["b"], "{hosts}");
    let default_hosts = env.run(&["hosts", "list", "--json"]).ok().json();
    assert_eq!(default_hosts.as_object().unwrap().keys().collect::<Vec<_>>(), ["a"], "{default_hosts}");

    let task = env.run(&["--config", flag, "oppy", "via the flag", "--json"]).ok().json();
    assert_eq!(task["host"], "b");
    let miss = env.run(&["--config", flag, "spirit", "not here"]).fails_with(3);
    assert!(miss.stderr().contains("unknown brother \"spirit\"") && miss.stderr().contains("oppy"), "{miss}");
    env.run(&["spirit", "from DELEGATE_CONFIG", "--json"]).ok();
}

/// README's exit table: 3 is "bad inventory or ssh config, unknown brother/host/agent", and
/// `hosts trust nosuch` or `brothers add b --host nosuch` do exit 3; `rm` of a name that is
/// not in the file should too.
#[test]
fn removing_an_unknown_host_or_brother_is_exit_3() {
    let env = Env::new();
    env.config_append("[hosts.h]\naddress = \"127.0.0.1\"\n");
    let before = config_text(&env);
    let run = env.run(&["hosts", "rm", "nosuch"]).fails_with(3);
    assert!(run.stderr().contains("\"nosuch\""), "{run}");
    let run = env.run(&["brothers", "rm", "nosuch"]).fails_with(3);
    assert!(run.stderr().contains("\"nosuch\""), "{run}");
    assert_eq!(config_text(&env), before);
}

/// Twenty `hosts add` processes at once, each adding its own host to one inventory: every
/// read-modify-write waits for the one before it, so all twenty hosts are there (an unlocked
/// editor loses most of them, or trips over another's temp file).
#[test]
fn concurrent_edits_of_one_inventory_lose_nothing() {
    let env = Env::new();
    env.config_append("# shared by everyone\n[hosts.first]\naddress = \"10.0.0.1\"\n");
    let children: Vec<_> = (0..20)
        .map(|n| {
            std::process::Command::new(env!("CARGO_BIN_EXE_delegate"))
                .env_clear()
                .envs(env.envs())
                .current_dir(&env.home)
                .args(["hosts", "add", &format!("h{n}"), "--address", &format!("10.0.1.{n}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "an edit failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let hosts = env.run(&["hosts", "list", "--json"]).ok().json();
    let names: std::collections::BTreeSet<_> = hosts.as_object().unwrap().keys().cloned().collect();
    let mut want: std::collections::BTreeSet<_> = (0..20).map(|n| format!("h{n}")).collect();
    want.insert("first".into());
    assert_eq!(names, want, "lost updates:\n{}", config_text(&env));
    assert_eq!(hosts["h7"]["address"], "10.0.1.7");
    assert!(config_text(&env).starts_with("# shared by everyone\n"), "{}", config_text(&env));
    // No temp file is left behind beside the config.
    let leftovers: Vec<_> = std::fs::read_dir(&env.home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A dotfile manager keeps the real file in its repository and links the config path to it:
/// edits go to the linked file, the link stays a link, and the file keeps its mode.
#[test]
fn editing_a_symlinked_config_writes_through_the_link() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let dots = env.home.join("dotfiles/delegate");
    std::fs::create_dir_all(&dots).unwrap();
    let real = dots.join("config.toml");
    std::fs::write(&real, HAND_WRITTEN).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    // Relative, as `stow` makes them.
    std::os::unix::fs::symlink("dotfiles/delegate/config.toml", &env.config).unwrap();

    env.run(&["hosts", "add", "jerry-box", "--address", "10.0.0.2"]).ok();
    env.run(&["brothers", "add", "jerry", "--host", "jerry-box", "--workdir", "/srv"]).ok();
    env.run(&["brothers", "rm", "oppy"]).ok();

    let link = std::fs::symlink_metadata(&env.config).unwrap();
    assert!(link.file_type().is_symlink(), "the config link was replaced by a file");
    assert_eq!(std::fs::read_link(&env.config).unwrap(), std::path::Path::new("dotfiles/delegate/config.toml"));
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(text.contains("[hosts.jerry-box]") && text.contains("[brothers.jerry]"), "{text}");
    assert!(!text.contains("[brothers.oppy]") && text.contains("# the big GPU box"), "{text}");
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "mode of the linked file");
    // Nothing but the file and its lock in the dotfiles directory.
    let mut names: Vec<_> = std::fs::read_dir(&dots).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["config.toml", "config.toml.lock"]);

    // A link to a file that does not exist yet: the first edit creates the file.
    let fresh = env.home.join("fresh-link.toml");
    std::os::unix::fs::symlink(env.home.join("dotfiles/new/delegate.toml"), &fresh).unwrap();
    let flag = fresh.to_str().unwrap();
    env.run(&["--config", flag, "hosts", "add", "b", "--address", "10.0.0.9"]).ok();
    assert!(std::fs::symlink_metadata(&fresh).unwrap().file_type().is_symlink());
    let created = std::fs::read_to_string(env.home.join("dotfiles/new/delegate.toml")).unwrap();
    assert!(created.contains("[hosts.b]"), "{created}");
}
