//! The CLI's side of a task handed to an agentbus worker: agentbus cannot reach a running
//! task, so `say` and `cancel` are refused with exit 50 and a message saying what to do.
//! (The handover itself, against a real nats-server and the real `agentbus worker run`, is
//! tested in delegate-core/tests/agentbus.rs; here the mailbox row it writes is made
//! directly, since this suite has no NATS client.)

use crate::support::Env;

#[test]
fn say_and_cancel_of_a_task_handed_to_agentbus_are_exit_50_and_change_nothing() {
    let env = Env::new();
    let t = env.run(&["new", "summarize the logs", "--json"]).ok().json();
    let id = t["id"].as_i64().unwrap();
    let n = id.to_string();
    {
        let db = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
        db.execute(
            "INSERT INTO agentbus_tasks (task_id, message_id, worker, reply_to, published_at)
             VALUES (?1, 'task-1234', 'ab1', 'delegate-x', '2026-01-01T00:00:00Z')",
            [id],
        )
        .unwrap();
        db.execute("UPDATE tasks SET status = 'launched', version = version + 1 WHERE id = ?1", [id]).unwrap();
    }
    let say = env.run(&["say", &n, "hurry up"]).fails_with(50);
    assert!(say.stderr().contains("agentbus worker ab1") && say.stderr().contains("task-1234"), "{say}");
    assert!(say.stderr().contains(&format!("delegate wait {id}")), "says what to do instead: {say}");
    let cancel = env.run(&["cancel", &n]).fails_with(50);
    assert!(cancel.stderr().contains("cancel is not possible"), "{cancel}");
    let t = env.run(&["show", &n, "--json"]).ok().json();
    assert_eq!(t["status"], "launched", "nothing changed: {t}");
    assert!(!t.to_string().contains("hurry up"), "no message was recorded: {t}");
}
