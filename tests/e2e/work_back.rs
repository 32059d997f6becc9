//! The work comes back: the git state recorded at launch, `diff` and `fetch` of what a task
//! changed in its workdir, against a real git repository on a test brother (real sshd,
//! tmux, git), with agents that edit, add, delete and commit files.

use std::path::{Path, PathBuf};
use std::process::Command;

use delegate_testkit::FakeHost;

use crate::support::{Env, install_agent, launch, wait_done};

/// Runs a shell command on the brother as its user, in its workdir; panics with its output
/// on failure.
fn on_brother(host: &FakeHost, script: &str) -> String {
    let out = host.ssh(&format!("cd '{}' && {{ {script}\n}}", host.workdir().display())).output().unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed on the brother:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A git repository in the brother's workdir: three committed files (one binary) on `main`.
fn brother_repo(host: &FakeHost) {
    on_brother(
        host,
        "set -e; git init -q -b main .; printf 'one\\ntwo\\nthree\\n' >a.txt; printf 'bee\\n' >b.txt; \
         head -c 70000 /dev/urandom >blob.bin; git add -A; \
         git -c user.name=t -c user.email=t@example.com commit -qm base",
    );
}

/// An agent that runs `<workdir>/../edit-<word>.sh` for the first word of its prompt it has
/// a script for, then exits as the script does (a custom command: no helpers, no preamble).
fn editor(host: &FakeHost, env: &Env) {
    install_agent(
        host,
        "dlg-editor",
        &format!(
            "#!/bin/bash\nprompt=$(cat)\nfor w in $prompt; do\n  f={}/edit-$w.sh\n  [ -f \"$f\" ] && exec bash \"$f\"\ndone\nexit 3\n",
            host.dir().display()
        ),
    );
    env.config_append("[agents.editor]\ncommand = [\"dlg-editor\"]\n");
    env.add_brother("oppy", "h", host, "editor", "full");
}

fn edit_script(host: &FakeHost, word: &str, body: &str) {
    let path = host.dir().join(format!("edit-{word}.sh"));
    std::fs::write(&path, body).unwrap();
    std::os::unix::fs::chown(&path, Some(host.uid()), None).unwrap();
}

/// The edits every test's agent makes: a line changed, a file deleted, a new text file, a
/// new binary file of `mib` MiB, a binary file changed; part committed, part not.
fn edits(mib: usize) -> String {
    format!(
        "set -e\nprintf 'one\\nTWO\\nthree\\n' >a.txt\ngit -c user.name=a -c user.email=a@example.com commit -qam 'agent: a'\n\
         rm b.txt\nprintf 'fresh\\n' >new.txt\nhead -c {} /dev/urandom >big.bin\nhead -c 100 /dev/urandom >>blob.bin\n",
        mib << 20
    )
}

fn git(dir: &Path, args: &[&str]) -> String {
    // The brother's repository belongs to its user: the lead's git reads it anyway (a
    // global config, which git's local transport passes on to upload-pack; `-c` it drops).
    let config = std::env::temp_dir().join(format!("dlg-e2e-gitconfig-{}", std::process::id()));
    std::fs::write(&config, "[safe]\n\tdirectory = *\n").unwrap();
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", &config)
        .env("GIT_AUTHOR_NAME", "l")
        .env("GIT_AUTHOR_EMAIL", "l@example.com")
        .env("GIT_COMMITTER_NAME", "l")
        .env("GIT_COMMITTER_EMAIL", "l@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The tree of a checkout's files as `git add -A` stages them (the lead's side of the
/// comparison), through a scratch index so the checkout's own is untouched.
fn tree_of(dir: &Path) -> String {
    let index = dir.join(".git").join("scratch-index");
    let _ = std::fs::remove_file(&index);
    let run = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_INDEX_FILE", &index)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    run(&["add", "-A"]);
    let tree = run(&["write-tree"]);
    std::fs::remove_file(&index).unwrap();
    tree
}

/// A local clone of the brother's repository, checked out at the task's launch base.
fn clone_at_base(env: &Env, host: &FakeHost, base: &str, name: &str) -> PathBuf {
    let local = env.home.join(name);
    let src = host.workdir();
    git(&env.home, &["clone", "-q", src.to_str().unwrap(), local.to_str().unwrap()]);
    git(&local, &["fetch", "-q", "origin", "+refs/delegate/*:refs/delegate/*"]);
    git(&local, &["checkout", "-q", "--detach", base]);
    local
}

fn evidence_git(env: &Env, id: i64) -> serde_json::Value {
    let show = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    show["runs"][0]["evidence"]["remote"]["git"].clone()
}

/// A finished task whose workdir was dirty at launch: the launch records HEAD, branch and
/// "not clean" with a base holding the dirty files; `diff` shows exactly what the task
/// changed (not the dirt it started with), binary files named; `fetch --into` writes a
/// patch whose hash is the brother's; `fetch --apply` on a checkout at the base reproduces
/// the brother's tree exactly (a 3 MiB binary included); applying it again is refused with
/// the files named and nothing written.
#[test]
fn diff_and_fetch_bring_back_exactly_what_a_finished_task_changed() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    // Dirty at launch: an uncommitted edit and an untracked file belong to the base.
    on_brother(&host, "printf 'dirty\\n' >>a.txt && printf 'mine\\n' >untracked.txt");
    let head = on_brother(&host, "git rev-parse HEAD").trim().to_string();
    edit_script(&host, "finish", &edits(3));

    let id = launch(&env, &["oppy", "finish", "--json"]);
    let t = wait_done(&env, id);
    assert_eq!(t["status"], "completed", "{t}");

    let g = evidence_git(&env, id);
    assert_eq!(g["state"], "repo", "{g}");
    assert_eq!(g["head"], head.as_str(), "{g}");
    assert_eq!(g["branch"], "main");
    assert_eq!(g["clean"], false);
    let base = g["base"].as_str().unwrap().to_string();
    let show = env.run(&["show", &id.to_string(), "--no-sync"]).ok().stdout();
    assert!(show.contains(&format!("git       HEAD {} on branch main, uncommitted changes", &head[..12])), "{show}");
    // The user's branch and index were not touched by the launch's snapshot.
    assert_eq!(on_brother(&host, "git rev-parse HEAD^ 2>/dev/null || true").trim(), head);

    let diff = env.run(&["diff", &id.to_string()]).ok().stdout();
    assert!(diff.contains("-two\n+TWO"), "{diff}");
    assert!(diff.contains("+fresh") && diff.contains("deleted file mode"), "{diff}");
    assert!(diff.contains("Binary files /dev/null and b/big.bin differ"), "{diff}");
    assert!(diff.contains("Binary files a/blob.bin and b/blob.bin differ"), "{diff}");
    assert!(!diff.contains("untracked.txt") && !diff.contains("+dirty"), "the dirt at launch is in the base: {diff}");
    let stat = env.run(&["diff", &id.to_string(), "--stat"]).ok().stdout();
    for f in ["a.txt", "b.txt", "new.txt", "big.bin", "blob.bin", "5 files changed"] {
        assert!(stat.contains(f), "{f} missing from:\n{stat}");
    }

    let into = env.home.join("patches");
    let fetched = env.run(&["fetch", &id.to_string(), "--into", into.to_str().unwrap(), "--json"]).ok().json();
    let patch = std::fs::read(into.join(format!("task-{id}.patch"))).unwrap();
    assert_eq!(fetched["sha256"], delegate_testkit::sha256_hex(&patch));
    assert_eq!(fetched["size"], patch.len() as u64);
    assert!(patch.len() > 3 << 20, "the binary travels whole: {} bytes", patch.len());

    let local = clone_at_base(&env, &host, &base, "local");
    let applied =
        env.run(&["fetch", &id.to_string(), "--apply", "--repo", local.to_str().unwrap(), "--json"]).ok().json();
    assert_eq!(tree_of(&local), applied["tree"].as_str().unwrap(), "{applied}");
    assert_eq!(tree_of(&local), on_brother_tree(&host));

    // Again on the same checkout: every hunk conflicts; refused whole, nothing written.
    let before = tree_of(&local);
    let status_before = git(&local, &["status", "--porcelain"]);
    let again = env.run(&["fetch", &id.to_string(), "--apply", "--repo", local.to_str().unwrap()]).fails_with(45);
    assert!(again.stderr().contains("does not apply") && again.stderr().contains("new.txt"), "{again}");
    assert!(again.stderr().contains("Nothing was applied"), "{again}");
    assert_eq!(tree_of(&local), before);
    assert_eq!(git(&local, &["status", "--porcelain"]), status_before);
}

/// The brother's workdir as a tree, computed there the way the diff script does.
fn on_brother_tree(host: &FakeHost) -> String {
    on_brother(
        host,
        "i=$(mktemp) && cp .git/index \"$i\" && GIT_INDEX_FILE=$i git add -A && GIT_INDEX_FILE=$i git write-tree; rm -f \"$i\"",
    )
    .trim()
    .to_string()
}

/// A failed run and a cancelled one: the later task's diff holds only its own change (its
/// base is where the first left the workdir), and `fetch --apply` on a checkout at each
/// base reproduces the brother's tree exactly, applied from a subdirectory too.
#[test]
fn failed_and_cancelled_runs_bring_back_their_partial_work() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    edit_script(&host, "fail", &format!("{}echo 'agent gave up' >&2\nexit 1\n", edits(1)));
    // Inside .git: written by the agent, and no part of its change.
    let marker = host.workdir().join(".git").join("halfway");
    edit_script(
        &host,
        "hang",
        &format!(
            "set -e\nprintf 'second\\n' >>new.txt\nmkdir -p sub\nprintf 'deep\\n' >sub/d.txt\nrm a.txt\ntouch {}\nsleep 300\n",
            marker.display()
        ),
    );

    let failed = launch(&env, &["oppy", "fail", "--json"]);
    assert_eq!(wait_done(&env, failed)["status"], "failed");
    let failed_base = evidence_git(&env, failed)["base"].as_str().unwrap().to_string();

    let hung = launch(&env, &["oppy", "hang", "--json"]);
    crate::support::wait_for_file(&marker);
    env.run(&["cancel", &hung.to_string()]).ok();
    assert_eq!(env.run(&["show", &hung.to_string(), "--json", "--no-sync"]).ok().json()["status"], "cancelled");
    let hung_git = evidence_git(&env, hung);
    assert_eq!(hung_git["clean"], false, "the failed task's change is still uncommitted: {hung_git}");
    let hung_base = hung_git["base"].as_str().unwrap().to_string();

    // The cancelled task's diff is only its own change.
    let diff = env.run(&["diff", &hung.to_string()]).ok().stdout();
    assert!(diff.contains("+second") && diff.contains("+deep") && diff.contains("deleted file mode"), "{diff}");
    assert!(!diff.contains("big.bin") && !diff.contains("b.txt"), "the failed task's change is in its base: {diff}");

    let local = clone_at_base(&env, &host, &hung_base, "hung");
    let out =
        env.run(&["fetch", &hung.to_string(), "--apply", "--repo", local.to_str().unwrap(), "--json"]).ok().json();
    assert_eq!(tree_of(&local), on_brother_tree(&host), "{out}");

    // The failed task's change, from a checkout at its base: the workdir as it is now, which
    // includes what the later task did there (tasks sharing a workdir share its state).
    let local = clone_at_base(&env, &host, &failed_base, "failed");
    // Applied from a subdirectory: delegate applies at the checkout's top, whole.
    let sub = local.join("deeper");
    std::fs::create_dir(&sub).unwrap();
    let mut cmd = env.command();
    cmd.current_dir(&sub).args(["fetch", &failed.to_string(), "--apply"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir(&sub).unwrap();
    assert_eq!(tree_of(&local), on_brother_tree(&host));
}

/// What cannot be diffed says why, with its exit code: a workdir that was not a git work
/// tree at launch (44), a task that changed nothing (`diff` says so, `fetch` exits 44), a
/// workdir removed since (24), a brother without git (44, named in the launch evidence).
#[test]
fn diff_and_fetch_explain_what_they_cannot_bring_back() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    edit_script(&host, "idle", "exit 0\n");

    let plain = launch(&env, &["oppy", "idle", "--json"]);
    wait_done(&env, plain);
    assert_eq!(evidence_git(&env, plain)["state"], "not a git work tree");
    let show = env.run(&["show", &plain.to_string(), "--no-sync"]).ok().stdout();
    assert!(show.contains("git       not a git work tree"), "{show}");
    let refused = env.run(&["diff", &plain.to_string()]).fails_with(44);
    assert!(refused.stderr().contains("not a git work tree at the launch of run 1"), "{refused}");
    env.run(&["fetch", &plain.to_string()]).fails_with(44);

    brother_repo(&host);
    let idle = launch(&env, &["oppy", "idle", "--json"]);
    wait_done(&env, idle);
    assert_eq!(evidence_git(&env, idle)["clean"], true);
    let said = env.run(&["diff", &idle.to_string()]).ok().stdout();
    assert!(said.contains(&format!("task {idle} changed nothing")), "{said}");
    let refused = env.run(&["fetch", &idle.to_string(), "--into", env.home.to_str().unwrap()]).fails_with(44);
    assert!(refused.stderr().contains("no change to fetch"), "{refused}");
    assert!(!env.home.join(format!("task-{idle}.patch")).exists());

    // The workdir removed: the brother says so.
    std::fs::remove_dir_all(host.workdir()).unwrap();
    let gone = env.run(&["diff", &idle.to_string()]).fails_with(24);
    assert!(gone.stderr().contains("no longer exists"), "{gone}");

    // No git on the brother: the launch records it, and nothing can be diffed.
    let bare = FakeHost::builder().path_without(&["git"]).start();
    let env = Env::new();
    env.add_host("h", &bare);
    // The agent's environment is sshd's PATH alone, which has no git.
    env.config_append("environment = \"plain\"");
    editor(&bare, &env);
    edit_script(&bare, "idle", "exit 0\n");
    let id = launch(&env, &["oppy", "idle", "--json"]);
    wait_done(&env, id);
    assert_eq!(evidence_git(&env, id)["state"], "git missing");
    let refused = env.run(&["diff", &id.to_string()]).fails_with(44);
    assert!(refused.stderr().contains("git missing"), "{refused}");
}

/// File contents and names carrying terminal escapes (a clipboard write, a screen clear,
/// colours) reach the terminal as text only; `--json` carries them escaped.
#[test]
fn diff_output_is_sanitized_for_the_terminal() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    edit_script(
        &host,
        "hostile",
        "printf 'ok \\033]52;c;SGVsbG8=\\007 \\033[2J\\033[H line\\r\\n' >a.txt\nprintf 'x\\n' >\"$(printf 'esc\\033[31mred.txt')\"\n",
    );
    let id = launch(&env, &["oppy", "hostile", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    for args in [vec!["diff", "X"], vec!["diff", "X", "--stat"]] {
        let args: Vec<String> = args.iter().map(|a| if *a == "X" { id.to_string() } else { a.to_string() }).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run(&args).ok();
        let text = out.stdout();
        assert!(text.contains("red.txt"), "{out}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reached the terminal: {text:?}"
        );
    }
    let json = env.run(&["diff", &id.to_string(), "--json"]).ok().json();
    assert!(json["diff"].as_str().unwrap().contains("\u{1b}]52;c;SGVsbG8="), "{json}");
}

/// A lead agent reviews and takes the work over MCP: get_diff (whole and --stat),
/// fetch_result as text, into a directory and applied to a checkout (the brother's tree
/// exactly); a task with no change and contradictory arguments are error results.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_get_diff_and_fetch_result_bring_the_work_to_a_lead_agent() {
    use crate::mcp::{connect, err, ok};
    use serde_json::json;
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    edit_script(&host, "finish", &edits(1));
    edit_script(&host, "idle", "exit 0\n");
    edit_script(&host, "small", "printf 'more\\n' >>a.txt\n");
    let id = launch(&env, &["oppy", "finish", "--json"]);
    wait_done(&env, id);
    let base = evidence_git(&env, id)["base"].as_str().unwrap().to_string();
    let client = connect(&env).await;

    let diff = ok(&client, "get_diff", json!({"id": id})).await;
    assert_eq!(diff["changed"], true, "{diff}");
    assert!(diff["diff"].as_str().unwrap().contains("-two\n+TWO"), "{diff}");
    let stat = ok(&client, "get_diff", json!({"id": id, "stat": true})).await;
    assert!(stat["diff"].as_str().unwrap().contains("big.bin"), "{stat}");

    // 1 MiB of binary is over what a result carries: never half a patch, but where to get it.
    let text = ok(&client, "fetch_result", json!({"id": id})).await;
    assert!(text["patch"].is_null() && text["note"].as_str().unwrap().contains("into"), "{text}");
    let dir = env.home.join("mcp-patches");
    let into = ok(&client, "fetch_result", json!({"id": id, "into": dir.to_str().unwrap()})).await;
    let patch = std::fs::read(dir.join(format!("task-{id}.patch"))).unwrap();
    assert_eq!(into["sha256"], delegate_testkit::sha256_hex(&patch));
    let local = clone_at_base(&env, &host, &base, "mcp");
    let applied = ok(&client, "fetch_result", json!({"id": id, "apply_to": local.to_str().unwrap()})).await;
    assert_eq!(tree_of(&local), applied["tree"].as_str().unwrap());
    assert_eq!(tree_of(&local), on_brother_tree(&host));

    let (code, message) =
        err(&client, "fetch_result", json!({"id": id, "into": "/tmp", "apply_to": local.to_str().unwrap()})).await;
    assert_eq!(code, "bad_arguments", "{message}");
    let idle = launch(&env, &["oppy", "idle", "--json"]);
    wait_done(&env, idle);
    let (code, message) = err(&client, "fetch_result", json!({"id": idle})).await;
    assert_eq!(code, "nothing_to_fetch", "{message}");
    // A small change comes back as text.
    let small = launch(&env, &["oppy", "small", "--json"]);
    wait_done(&env, small);
    let text = ok(&client, "fetch_result", json!({"id": small})).await;
    let patch = text["patch"].as_str().unwrap();
    assert!(patch.starts_with("diff --git a/a.txt b/a.txt") && patch.contains("+more"), "{text}");
    assert_eq!(text["sha256"], delegate_testkit::sha256_hex(patch.as_bytes()));
}

/// The real Claude Code (through the model stand-in) writes a file with its own Write tool
/// at `write`: `diff` shows it and `fetch --apply` reproduces the brother's tree.
#[test]
fn a_real_claude_edit_comes_back_by_diff_and_fetch() {
    use delegate_testkit::brothers::{self, Install};
    use delegate_testkit::model::{ModelStandIn, Reply, Script};
    let Some(bin) = brothers::real_agents_bin() else { return };
    let host = FakeHost::builder().own_home().without_fake_agents().start();
    let target = host.workdir().join("hello.txt");
    let model = ModelStandIn::start(Script::steps(vec![
        Reply::Tool {
            name: "Write".into(),
            input: serde_json::json!({"file_path": target.display().to_string(), "content": "hi from claude\n"}),
        },
        Reply::Text("wrote hello.txt".into()),
    ]));
    let installed = brothers::install(&host, Install::NpmUserPrefix, &bin, &model);
    let env = Env::with_brother(&host, "claude", "write");
    if let Some(p) = installed.claude_path {
        env.config_append(&format!("agent_path = \"{p}\"\n"));
    }
    brother_repo(&host);
    let id = launch(&env, &["oppy", "say hello in a file", "--json"]);
    let t = wait_done(&env, id);
    assert_eq!(t["status"], "completed", "{t}");
    let diff = env.run(&["diff", &id.to_string()]).ok().stdout();
    assert!(diff.contains("new file mode") && diff.contains("+hi from claude"), "{diff}");
    let base = evidence_git(&env, id)["base"].as_str().unwrap().to_string();
    let local = clone_at_base(&env, &host, &base, "claude");
    env.run(&["fetch", &id.to_string(), "--apply", "--repo", local.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(local.join("hello.txt")).unwrap(), "hi from claude\n");
    assert_eq!(tree_of(&local), on_brother_tree(&host));
}

/// A diff over what `diff` shows is refused with the size and what to use instead; `--stat`
/// and `fetch` still bring it back.
#[test]
fn a_diff_over_the_display_cap_points_to_stat_and_fetch() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    edit_script(&host, "huge", "base64 -w 76 /dev/urandom | head -c 9000000 >huge.txt\n");
    let id = launch(&env, &["oppy", "huge", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let refused = env.run(&["diff", &id.to_string()]).fails_with(1);
    assert!(refused.stderr().contains("is over 8388608 bytes"), "{refused}");
    assert!(refused.stderr().contains("--stat") && refused.stderr().contains("fetch"), "{refused}");
    assert!(refused.stdout().is_empty(), "{refused}");
    let stat = env.run(&["diff", &id.to_string(), "--stat"]).ok().stdout();
    assert!(stat.contains("huge.txt"), "{stat}");
    let into = env.home.join("p");
    env.run(&["fetch", &id.to_string(), "--into", into.to_str().unwrap()]).ok();
    assert!(std::fs::metadata(into.join(format!("task-{id}.patch"))).unwrap().len() > 9_000_000);
}

/// A task whose tmux server died (`lost`): its work is still there to diff and fetch.
#[test]
fn a_lost_task_s_work_still_comes_back() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    let marker = host.workdir().join(".git").join("halfway");
    edit_script(&host, "work", &format!("printf 'kept\\n' >kept.txt\ntouch {}\nsleep 300\n", marker.display()));
    let id = launch(&env, &["oppy", "work", "--json"]);
    crate::support::wait_for_file(&marker);
    host.tmux(&["kill-server"]);
    assert_eq!(wait_done(&env, id)["status"], "lost");
    let diff = env.run(&["diff", &id.to_string()]).ok().stdout();
    assert!(diff.contains("+kept"), "{diff}");
    let into = env.home.join("lost");
    env.run(&["fetch", &id.to_string(), "--into", into.to_str().unwrap()]).ok();
    let patch = std::fs::read_to_string(into.join(format!("task-{id}.patch"))).unwrap();
    assert!(patch.contains("b/kept.txt") && patch.contains("+kept"), "{patch}");
}

/// A reopened task: `diff N` is the whole task's change (since run 1's launch), `--run 2`
/// only what came after the second launch; a run that does not exist is exit 44.
#[test]
fn diff_run_takes_a_later_launch_as_the_base() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    brother_repo(&host);
    let id = launch(&env, &["oppy", "first part", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    // What the first run left (made here, as its agent would have).
    on_brother(&host, "printf 'first run\\n' >one.txt");
    env.run(&["reopen", &id.to_string(), "second part", "--json"]).ok();
    assert_eq!(wait_done(&env, id)["status"], "completed");
    on_brother(&host, "printf 'second run\\n' >two.txt");

    let whole = env.run(&["diff", &id.to_string(), "--stat"]).ok().stdout();
    assert!(whole.contains("one.txt") && whole.contains("two.txt"), "{whole}");
    let second = env.run(&["diff", &id.to_string(), "--stat", "--run", "2"]).ok().stdout();
    assert!(second.contains("two.txt") && !second.contains("one.txt"), "{second}");
    let none = env.run(&["diff", &id.to_string(), "--run", "3"]).fails_with(44);
    assert!(none.stderr().contains("no run 3"), "{none}");
}

/// A 50 MiB binary file: its patch (over 64 MiB, more than one exec answers) comes back in
/// chunks, checked whole, and applies to the exact tree.
#[test]
fn a_50_mib_binary_change_comes_back_intact() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    edit_script(&host, "big", &edits(50));
    let id = launch(&env, &["oppy", "big", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let base = evidence_git(&env, id)["base"].as_str().unwrap().to_string();
    let local = clone_at_base(&env, &host, &base, "big");
    let out = env.run(&["fetch", &id.to_string(), "--apply", "--repo", local.to_str().unwrap(), "--json"]).ok().json();
    assert!(out["size"].as_u64().unwrap() > 64 << 20, "{out}");
    assert_eq!(std::fs::metadata(local.join("big.bin")).unwrap().len(), 50 << 20);
    assert_eq!(tree_of(&local), on_brother_tree(&host));
}

/// "Done without evidence": with `expect_change` set (a profile's, here), a task that
/// ends `completed` having changed nothing and reported nothing is flagged in `show` and
/// its JSON; one that changed its workdir is not; nor is one with no such expectation.
#[test]
fn show_flags_a_completed_task_that_was_expected_to_change_something_and_did_not() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    env.config_append("[profiles.strict]\nexpect_change = true\n");
    brother_repo(&host);
    edit_script(&host, "idle", "exit 0\n");
    edit_script(&host, "finish", &edits(0));
    let flag = "completed, but no change and no report: check before believing it";

    let idle = launch(&env, &["oppy", "idle", "--profile", "strict", "--json"]);
    assert_eq!(wait_done(&env, idle)["status"], "completed");
    let show = env.run(&["show", &idle.to_string()]).ok().stdout();
    assert!(show.contains(&format!("warning   {flag}")), "{show}");
    let json = env.run(&["show", &idle.to_string(), "--json"]).ok().json();
    assert_eq!(json["done_without_evidence"], flag, "{json}");
    // `--no-sync` asks the brother nothing, so it cannot tell.
    let json = env.run(&["show", &idle.to_string(), "--json", "--no-sync"]).ok().json();
    assert!(json.get("done_without_evidence").is_none(), "{json}");

    // The same idle agent with no expectation: nothing to flag.
    let unexpected = launch(&env, &["oppy", "idle", "--json"]);
    assert_eq!(wait_done(&env, unexpected)["status"], "completed");
    let json = env.run(&["show", &unexpected.to_string(), "--json"]).ok().json();
    assert!(json.get("done_without_evidence").is_none(), "{json}");

    let edited = launch(&env, &["oppy", "finish", "--profile", "strict", "--json"]);
    assert_eq!(wait_done(&env, edited)["status"], "completed");
    let show = env.run(&["show", &edited.to_string()]).ok().stdout();
    assert!(!show.contains("check before believing it"), "{show}");
    let json = env.run(&["show", &edited.to_string(), "--json"]).ok().json();
    assert!(json.get("done_without_evidence").is_none(), "{json}");
}

/// `--worktree`: two tasks launched together on one repository each run in a worktree of
/// their own (branch `delegate/<task key>` from HEAD), each diff is only its own change,
/// and the user's checkout (files, branch) is untouched.
#[test]
fn concurrent_worktree_tasks_on_one_repository_each_see_only_their_own_change() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    let head = on_brother(&host, "git rev-parse HEAD").trim().to_string();
    let user_tree = on_brother_tree(&host);
    // Each agent waits until the other's worktree exists, so the two run side by side.
    edit_script(
        &host,
        "left",
        "set -e\nprintf 'left\\n' >left.txt\nprintf 'one\\nLEFT\\nthree\\n' >a.txt\n\
         for i in $(seq 100); do [ $(ls ../ | wc -l) -ge 2 ] && break; sleep 0.1; done\n",
    );
    edit_script(
        &host,
        "right",
        "set -e\nprintf 'right\\n' >right.txt\nrm b.txt\n\
         for i in $(seq 100); do [ $(ls ../ | wc -l) -ge 2 ] && break; sleep 0.1; done\n",
    );

    let left = launch(&env, &["oppy", "left", "--worktree", "--json"]);
    let right = launch(&env, &["oppy", "right", "--worktree", "--json"]);
    for id in [left, right] {
        assert_eq!(wait_done(&env, id)["status"], "completed");
    }

    for (id, mine, theirs) in [(left, "left.txt", "right.txt"), (right, "right.txt", "left.txt")] {
        let show = env.run(&["show", &id.to_string(), "--json"]).ok().json();
        let workdir = show["workdir"].as_str().unwrap().to_string();
        assert!(workdir.contains("/worktrees/"), "{show}");
        assert_eq!(show["settings"]["worktree_of"]["value"], host.workdir().to_str().unwrap(), "{show}");
        let evidence = &show["runs"][0]["evidence"];
        assert_eq!(evidence["remote"]["git"]["head"], head.as_str(), "{evidence}");
        let branch = evidence["remote"]["git"]["branch"].as_str().unwrap();
        assert!(branch.starts_with("delegate/"), "{evidence}");
        let stat = env.run(&["diff", &id.to_string(), "--stat"]).ok().stdout();
        assert!(stat.contains(mine), "{stat}");
        assert!(!stat.contains(theirs), "task {id} sees the other task's change:\n{stat}");
    }
    let left_diff = env.run(&["diff", &left.to_string()]).ok().stdout();
    assert!(left_diff.contains("-two\n+LEFT") && !left_diff.contains("b.txt"), "{left_diff}");

    // The user's checkout: same files, same branch, same HEAD.
    assert_eq!(on_brother_tree(&host), user_tree);
    assert_eq!(on_brother(&host, "git symbolic-ref --short HEAD").trim(), "main");
    assert_eq!(on_brother(&host, "git rev-parse HEAD").trim(), head);
    let branches = on_brother(&host, "git branch --list 'delegate/*'");
    assert_eq!(branches.lines().count(), 2, "{branches}");
}

/// A reopened `--worktree` task continues in the same worktree, on the same branch: its
/// diff holds both runs' work, and the user's checkout still has none of it.
#[test]
fn a_reopened_worktree_task_continues_in_its_worktree() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    brother_repo(&host);
    let user_tree = on_brother_tree(&host);
    let id = launch(&env, &["oppy", "first part", "--worktree", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let show = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    let worktree = show["workdir"].as_str().unwrap().to_string();
    assert!(worktree.contains("/worktrees/"), "{show}");
    // What the first run left (made here, as its agent would have).
    on_brother(&host, &format!("printf 'first run\\n' >'{worktree}/one.txt'"));
    env.run(&["reopen", &id.to_string(), "second part", "--json"]).ok();
    assert_eq!(wait_done(&env, id)["status"], "completed");
    on_brother(&host, &format!("printf 'second run\\n' >'{worktree}/two.txt'"));

    let show = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(show["workdir"], worktree.as_str());
    let git = |run: usize| show["runs"][run]["evidence"]["remote"]["git"].clone();
    assert!(git(0)["branch"].as_str().unwrap().starts_with("delegate/"), "{show}");
    assert_eq!(git(1)["branch"], git(0)["branch"], "{show}");
    let stat = env.run(&["diff", &id.to_string(), "--stat"]).ok().stdout();
    assert!(stat.contains("one.txt") && stat.contains("two.txt"), "{stat}");
    assert_eq!(on_brother_tree(&host), user_tree);
}

/// `cleanup`: a worktree task's unfetched change is refused (exit 47, nothing removed);
/// once fetched, the worktree, its branch and its refs go; an empty change needs no fetch;
/// `--force` throws an unfetched change away.
#[test]
fn cleanup_removes_a_worktree_only_when_its_change_is_safe() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    edit_script(&host, "work", "set -e\nprintf 'work\\n' >work.txt\n");
    edit_script(&host, "idle", "exit 0\n");
    let refs = |host: &FakeHost| {
        on_brother(host, "git for-each-ref --format='%(refname)' refs/delegate/ refs/heads/delegate/")
    };

    let id = launch(&env, &["oppy", "work", "--worktree", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let worktree = env.run(&["show", &id.to_string(), "--json"]).ok().json()["workdir"].as_str().unwrap().to_string();
    let refused = env.run(&["cleanup", &id.to_string()]).fails_with(47);
    assert!(refused.stderr().contains("never fetched") && refused.stderr().contains("--force"), "{refused}");
    assert!(Path::new(&worktree).join("work.txt").exists(), "nothing removed on a refusal");

    let into = env.home.join("kept");
    env.run(&["fetch", &id.to_string(), "--into", into.to_str().unwrap()]).ok();
    let done = env.run(&["cleanup", &id.to_string(), "--json"]).ok().json();
    assert_eq!(done["worktree"], worktree.as_str(), "{done}");
    assert!(!Path::new(&worktree).exists(), "the worktree is gone");
    assert_eq!(refs(&host).trim(), "", "no delegate refs or branch left");
    assert!(on_brother(&host, "git worktree list").lines().count() == 1);

    // An empty change: nothing to lose, no fetch needed.
    let idle = launch(&env, &["oppy", "idle", "--worktree", "--json"]);
    assert_eq!(wait_done(&env, idle)["status"], "completed");
    env.run(&["cleanup", &idle.to_string()]).ok();
    // An unfetched change thrown away on purpose.
    let forced = launch(&env, &["oppy", "work", "--worktree", "--json"]);
    assert_eq!(wait_done(&env, forced)["status"], "completed");
    env.run(&["cleanup", &forced.to_string()]).fails_with(47);
    env.run(&["cleanup", &forced.to_string(), "--force"]).ok();
    assert_eq!(refs(&host).trim(), "");
    assert!(!on_brother(&host, "ls").contains("work.txt"), "the user's checkout never had the work");
}

/// `worktree = true` on a profile: a task recorded with `new --profile` and then started
/// runs in its own worktree like a launched one; the user's checkout keeps none of its work.
#[test]
fn a_worktree_profile_applies_to_a_task_started_from_the_board() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    env.config_append("[profiles.isolated]\nworktree = true\n");
    brother_repo(&host);
    let user_tree = on_brother_tree(&host);
    edit_script(&host, "work", "set -e\nprintf 'work\\n' >work.txt\n");
    let id = launch(&env, &["new", "work", "--assign", "oppy", "--profile", "isolated", "--json"]);
    env.run(&["start", &id.to_string(), "--json"]).ok();
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let show = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert!(show["workdir"].as_str().unwrap().contains("/worktrees/"), "{show}");
    assert!(show["runs"][0]["evidence"]["remote"]["git"]["branch"].as_str().unwrap().starts_with("delegate/"));
    let stat = env.run(&["diff", &id.to_string(), "--stat"]).ok().stdout();
    assert!(stat.contains("work.txt"), "{stat}");
    assert_eq!(on_brother_tree(&host), user_tree);
}

/// Over MCP: `delegate_task` with `worktree` runs the task in a worktree; `fetch_result`
/// into a directory records the fetch, so `cleanup` then removes the worktree.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_worktree_task_fetched_by_a_lead_agent_can_be_cleaned_up() {
    use crate::mcp::{connect, ok};
    use serde_json::json;
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    edit_script(&host, "work", "set -e\nprintf 'work\\n' >work.txt\n");
    let client = connect(&env).await;
    let launched = ok(&client, "delegate_task", json!({"brother": "oppy", "prompt": "work", "worktree": true})).await;
    let id = launched["tasks"][0]["task"].as_i64().unwrap_or_else(|| panic!("{launched}"));
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let worktree = env.run(&["show", &id.to_string(), "--json"]).ok().json()["workdir"].as_str().unwrap().to_string();
    assert!(worktree.contains("/worktrees/"), "{worktree}");
    env.run(&["cleanup", &id.to_string()]).fails_with(47);
    let dir = env.home.join("mcp-kept");
    ok(&client, "fetch_result", json!({"id": id, "into": dir.to_str().unwrap()})).await;
    env.run(&["cleanup", &id.to_string()]).ok();
    assert!(!Path::new(&worktree).exists());
}

/// `expect_change` on the brother: the MCP `get_task` of a task that completed with no
/// change and no report carries `done_without_evidence`.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_get_task_flags_done_without_evidence_from_a_brother_setting() {
    use crate::mcp::{connect, ok};
    use serde_json::json;
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    env.config_append("expect_change = true\n");
    brother_repo(&host);
    edit_script(&host, "idle", "exit 0\n");
    let id = launch(&env, &["oppy", "idle", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let client = connect(&env).await;
    let task = ok(&client, "get_task", json!({"id": id})).await;
    assert_eq!(
        task["done_without_evidence"], "completed, but no change and no report: check before believing it",
        "{task}"
    );
}

/// `cleanup` of a task without a worktree removes only its `refs/delegate/<key>/*` refs:
/// the workdir's files (the task's work included) stay.
#[test]
fn cleanup_without_a_worktree_removes_only_the_refs() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    editor(&host, &env);
    brother_repo(&host);
    edit_script(&host, "work", "set -e\nprintf 'work\\n' >work.txt\n");
    let id = launch(&env, &["oppy", "work", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    assert!(!on_brother(&host, "git for-each-ref refs/delegate/").trim().is_empty());
    env.run(&["cleanup", &id.to_string()]).fails_with(47);
    env.run(&["fetch", &id.to_string(), "--into", env.home.join("p").to_str().unwrap()]).ok();
    let done = env.run(&["cleanup", &id.to_string(), "--json"]).ok().json();
    assert!(done["worktree"].is_null() && done["refs"] == 1, "{done}");
    assert_eq!(on_brother(&host, "git for-each-ref refs/delegate/").trim(), "");
    assert!(host.workdir().join("work.txt").exists(), "the workdir's files stay");
}
