//! Environments: `[environments.NAME]` groups brothers (or hosts); `--environment` places a
//! launch on the least loaded brother with room under its caps and records why; `--all`
//! fans out to each; no room anywhere is refused (exit 37) with every brother's state.

use serde_json::Value;

use delegate_testkit::FakeHost;

use crate::support::{Env, launch, wait_done};

fn show(env: &Env, id: i64) -> Value {
    env.run(&["show", &id.to_string(), "--json"]).ok().json()
}

fn setting(task: &Value, name: &str) -> (String, String) {
    let s = &task["settings"][name];
    assert!(!s.is_null(), "no setting {name} in {}", task["settings"]);
    (s["value"].as_str().unwrap().to_string(), s["from"].as_str().unwrap().to_string())
}

#[test]
fn an_environment_places_on_the_least_loaded_brother_with_room_and_says_why() {
    let (one, two) = (FakeHost::start(), FakeHost::start());
    let env = Env::new();
    env.add_host("h1", &one);
    env.add_host("h2", &two);
    env.add_brother("oppy", "h1", &one, "self-test", "read");
    env.add_brother("jerry", "h2", &two, "self-test", "read");
    // h1 stands for its brothers (oppy); the environment's profile applies to what it places.
    env.config_append(
        "[profiles.envp]\nmax_turns = 4\n[environments.dev]\nbrothers = [\"h1\", \"jerry\"]\nprofile = \"envp\"\n",
    );

    // jerry is busy: the launch goes to oppy (though jerry comes first by name), and says why.
    let busy = launch(&env, &["jerry", "dawdle\n@self-test sleep 30", "--max-turns", "100", "--json"]);
    let placed = env.run(&["--environment", "dev", "look around", "--json"]).ok().json();
    assert_eq!(placed["brother"], "oppy", "{placed}");
    let id = placed["id"].as_i64().unwrap();
    let task = show(&env, id);
    let (name, why) = setting(&task, "environment");
    assert_eq!(name, "dev");
    assert_eq!(why, "placed on oppy: 0 in flight, room; jerry: 1 in flight, room", "{task}");
    assert_eq!(setting(&task, "profile"), ("envp".into(), "environment dev".into()));
    assert_eq!(task["max_turns"], 4);
    assert_eq!(task["runs"][0]["evidence"]["settings"], task["settings"], "the launch evidence records it too");
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let text = env.run(&["show", &id.to_string()]).ok().stdout();
    assert!(text.contains("environment dev (placed on oppy"), "{text}");

    // --all: one task on each brother of the environment.
    let all = env.run(&["run", "--environment", "dev", "--all", "everyone look", "--json"]).ok().json();
    let mut on: Vec<&str> = all["tasks"].as_array().unwrap().iter().map(|t| t["brother"].as_str().unwrap()).collect();
    on.sort();
    assert_eq!(on, ["jerry", "oppy"], "{all}");
    for t in all["tasks"].as_array().unwrap() {
        assert_eq!(setting(t, "environment"), ("dev".into(), "--all: every brother in it".into()), "{t}");
        assert_eq!(wait_done(&env, t["id"].as_i64().unwrap())["status"], "completed");
    }

    // A cap excludes a brother however idle: oppy may spend nothing today, so busy jerry gets it.
    env.config_replace("[brothers.oppy]\n", "[brothers.oppy]\nmax_usd_per_day = 0.0\n");
    let placed = env.run(&["--environment", "dev", "look again", "--json"]).ok().json();
    assert_eq!(placed["brother"], "jerry", "{placed}");
    let again = placed["id"].as_i64().unwrap();
    let (_, why) = setting(&show(&env, again), "environment");
    assert!(
        why.starts_with("placed on jerry: 1 in flight, room; oppy: 0 in flight, full (brother oppy spent $0.0000 of its $0.00 daily cap)"),
        "{why}"
    );

    assert_eq!(wait_done(&env, again)["status"], "completed");

    // No brother has room: refused with each one's state, nothing recorded.
    env.config_replace("[brothers.jerry]\n", "[brothers.jerry]\nmax_concurrent = 1\n");
    let before = env.run(&["list", "--json"]).ok().json().as_array().unwrap().len();
    let refused = env.run(&["--environment", "dev", "no room"]).fails_with(37);
    let err = refused.stderr();
    assert!(
        err.contains("no brother in environment \"dev\" has room")
            && err.contains("jerry: 1 in flight, full (brother jerry at max_concurrent 1)")
            && err.contains("oppy: 0 in flight, full"),
        "{refused}"
    );
    assert_eq!(env.run(&["list", "--json"]).ok().json().as_array().unwrap().len(), before);

    let unknown = env.run(&["--environment", "prod", "x"]).fails_with(3);
    assert!(unknown.stderr().contains("unknown environment \"prod\" (dev)"), "{unknown}");
    let both = env.run(&["run", "oppy", "x", "--environment", "dev"]).fails_with(2);
    assert!(both.stderr().contains("with --environment, give only the prompt"), "{both}");
    env.run(&["cancel", &busy.to_string()]).ok();
}
