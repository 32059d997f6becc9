//! Daily spend caps (`max_usd_per_day` on a brother or host): a launch once today's reported
//! spend reached the cap is refused with the figures (exit 36), or queued per `over_cap`
//! and started by the queue dispatch once the spend allows.

use delegate_testkit::FakeHost;

use crate::support::{Env, install_agent, launch, wait_done};
use crate::usage::CLAUDE_REPORTING;

fn count_tasks(env: &Env) -> usize {
    env.run(&["list", "--json"]).ok().json().as_array().unwrap().len()
}

#[test]
fn a_brother_over_its_daily_cap_refuses_launches_with_the_figures_or_queues_them() {
    let host = FakeHost::start();
    install_agent(&host, "claude", CLAUDE_REPORTING);
    let env = Env::with_brother(&host, "claude", "full");
    env.config_append("max_usd_per_day = 0.5\n");

    // Under the cap: runs, and its stream reports $0.75.
    let first = launch(&env, &["oppy", "spend cost=0.75", "--json"]);
    assert_eq!(wait_done(&env, first)["status"], "completed");

    let refused = env.run(&["oppy", "more cost=0.1"]).fails_with(36);
    let err = refused.stderr();
    assert!(
        err.contains("brother oppy spent $0.7500 today")
            && err.contains("max_usd_per_day = $0.50")
            && err.contains("over_cap = \"queue\""),
        "{refused}"
    );
    assert_eq!(count_tasks(&env), 1, "nothing recorded");

    // over_cap = "queue": recorded queued, the reason naming the cap and the figures.
    env.config_replace("max_usd_per_day = 0.5\n", "max_usd_per_day = 0.5\nover_cap = \"queue\"\n");
    let queued = env.run(&["oppy", "later cost=0.1", "--json"]).ok().json();
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = queued["id"].as_i64().unwrap();
    let shown = env.run(&["show", &id.to_string()]).ok().stdout();
    assert!(shown.contains("daily spend cap of brother oppy") && shown.contains("$0.7500"), "{shown}");
    // The queue dispatch (every sync) holds it while the spend is over the cap...
    env.run(&["sync"]).ok();
    let still = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(still["status"], "queued", "{still}");
    // ...and starts it once the spend allows (the cap raised here; a new day does the same).
    env.config_replace("max_usd_per_day = 0.5\n", "max_usd_per_day = 5.0\n");
    assert_eq!(wait_done(&env, id)["status"], "completed");
}

#[test]
fn a_hosts_daily_cap_counts_every_brother_on_it() {
    let host = FakeHost::start();
    install_agent(&host, "claude", CLAUDE_REPORTING);
    let env = Env::new();
    env.add_host("h", &host);
    env.config_append("max_usd_per_day = 1.0\n");
    env.add_brother("oppy", "h", &host, "claude", "full");
    env.add_brother("jerry", "h", &host, "claude", "full");
    let a = launch(&env, &["oppy", "a cost=0.6", "--json"]);
    let b = launch(&env, &["jerry", "b cost=0.6", "--json"]);
    for id in [a, b] {
        assert_eq!(wait_done(&env, id)["status"], "completed");
    }
    let refused = env.run(&["oppy", "c cost=0.1"]).fails_with(36);
    assert!(refused.stderr().contains("host h spent $1.2000 today"), "{refused}");
}
