//! Artifacts: files an agent declares with `report artifact PATH "what it is"`, listed by
//! `delegate artifacts N` and copied back by `delegate fetch N --artifacts DIR`, against a
//! real brother (sshd, tmux): a 50 MiB binary arrives intact, paths that resolve out of
//! the workdir and task dir (`..`, a symlink) are refused by name, a hostile description is
//! cleaned, and a local file is never overwritten.

use delegate_testkit::FakeHost;

use crate::support::{Env, install_agent, launch, wait_done};

fn sha256_on_brother(host: &FakeHost, path: &str) -> String {
    let out = host.ssh(&format!("sha256sum '{path}'")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split(' ').next().unwrap().to_string()
}

#[test]
fn artifacts_are_listed_and_fetched_intact_and_escapes_are_refused() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    // A custom agent in the workdir: a 50 MiB binary, a file in the task dir, and two
    // declarations reaching out (`..` and a symlink to /etc/passwd).
    install_agent(
        &host,
        "dlg-artist",
        "#!/bin/bash\ncat >/dev/null\nset -e\nmkdir -p out\nhead -c 52428800 /dev/urandom >out/big.bin\n\
         ln -sf /etc/passwd leak\nprintf 'notes\\n' >\"$DELEGATE_TASK_DIR/notes.md\"\n\
         r=\"$DELEGATE_TASK_DIR/report\"\n\
         \"$r\" artifact out/big.bin \"$(printf 'the build\\e]52;c;SGk=\\a\\e[2J\\nforged line')\"\n\
         \"$r\" artifact ../../../../../../../../etc/hostname 'climbing out'\n\"$r\" artifact leak 'a symlink out'\n\
         \"$r\" artifact \"$DELEGATE_TASK_DIR/notes.md\" 'my notes'\nexit 0\n",
    );
    env.config_append("[agents.artist]\ncommand = [\"dlg-artist\"]\n");
    env.add_brother("oppy", "h", &host, "artist", "full");

    let id = launch(&env, &["oppy", "make", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let big_on_brother = sha256_on_brother(&host, &format!("{}/out/big.bin", host.workdir().display()));

    let listed = env.run(&["artifacts", &id.to_string(), "--json"]).ok().json();
    let list = listed["artifacts"].as_array().unwrap();
    let verdicts: Vec<&str> = list.iter().map(|a| a["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["ok", "outside", "outside", "ok"], "{listed}");
    assert_eq!(list[0]["sha256"], big_on_brother.as_str());
    assert_eq!(list[0]["size"], 52428800);
    assert_eq!(list[0]["rel"], "out/big.bin");
    assert_eq!(list[3]["rel"], "task/notes.md");
    let description = list[0]["description"].as_str().unwrap();
    assert!(description.starts_with("the build") && description.contains("forged line"), "{description}");
    assert!(!description.chars().any(char::is_control), "{description:?}");
    let text = env.run(&["artifacts", &id.to_string()]).ok().stdout();
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{text:?}");
    assert!(text.contains("REFUSED: outside"), "{text}");

    // The fetch copies what it may, names what it refuses, and exits 46.
    let into = env.home.join("got");
    let run = env.run(&["fetch", &id.to_string(), "--artifacts", into.to_str().unwrap()]).fails_with(46);
    let err = run.stderr();
    assert!(err.contains("etc/hostname") && err.contains("leak") && err.contains("2 artifact(s) refused"), "{err}");
    let big = std::fs::read(into.join("out/big.bin")).unwrap();
    assert_eq!(delegate_testkit::sha256_hex(&big), big_on_brother);
    assert_eq!(std::fs::read_to_string(into.join("task/notes.md")).unwrap(), "notes\n");
    assert!(!into.join("etc").exists() && !into.join("hostname").exists() && !into.join("leak").exists());
    let leftovers: Vec<_> = std::fs::read_dir(into.join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    // Recorded in the mailbox with the lead's own hash.
    let fetched = env.run(&["artifacts", &id.to_string(), "--json"]).ok().json()["fetched"].clone();
    assert_eq!(fetched.as_array().unwrap().len(), 2, "{fetched}");
    assert_eq!(fetched[0]["sha256"], big_on_brother.as_str());

    // Never overwritten: a local file in the way stops the fetch and stays as it was.
    let other = env.home.join("other");
    std::fs::create_dir_all(other.join("out")).unwrap();
    std::fs::write(other.join("out/big.bin"), b"mine").unwrap();
    let run = env.run(&["fetch", &id.to_string(), "--artifacts", other.to_str().unwrap()]);
    assert_ne!(run.code(), 0);
    assert!(run.stderr().contains("already exists"), "{run}");
    assert_eq!(std::fs::read(other.join("out/big.bin")).unwrap(), b"mine");
}

/// A brother whose bytes do not match the hash it reports (here: a `sha256sum` earlier on
/// its PATH that lies) gets nothing written: the lead hashes what it received itself.
#[test]
fn bytes_that_do_not_match_the_brothers_hash_are_refused_and_nothing_is_kept() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    install_agent(
        &host,
        "dlg-maker",
        "#!/bin/bash\ncat >/dev/null\nset -e\nhead -c 100000 /dev/urandom >made.bin\n\
         \"$DELEGATE_TASK_DIR/report\" artifact made.bin 'a binary'\nexit 0\n",
    );
    env.config_append("[agents.maker]\ncommand = [\"dlg-maker\"]\n");
    env.add_brother("oppy", "h", &host, "maker", "full");
    let id = launch(&env, &["oppy", "make", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");

    // From now on the brother's sha256sum reports the hash of other bytes.
    install_agent(&host, "sha256sum", "#!/bin/bash\n{ cat; printf x; } | /usr/bin/sha256sum\n");
    let into = env.home.join("got");
    let run = env.run(&["fetch", &id.to_string(), "--artifacts", into.to_str().unwrap()]);
    assert_ne!(run.code(), 0, "{run}");
    assert!(run.stderr().contains("do not match the brother's sha256"), "{run}");
    let kept: Vec<_> = walk(&into);
    assert!(kept.is_empty(), "nothing of a mismatched artifact is kept: {kept:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
