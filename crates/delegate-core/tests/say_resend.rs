//! A lead that dies between recording a message and sending it loses nothing: the next sync
//! of that host sends it, under the same id, exactly once.

use std::time::{Duration, Instant};

use delegate_core::{Delegate, LaunchRequest, Paths};
use delegate_testkit::FakeHost;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn an_unsent_message_goes_out_with_the_next_sync_once() {
    let host = FakeHost::start();
    let dir = std::env::temp_dir().join(format!("dlg-resend-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let known = dir.join("known_hosts");
    std::fs::write(&known, format!("{}\n", host.known_hosts_line())).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[hosts.h]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nremote_root = \"{}\"\n\
             [brothers.oppy]\nhost = \"h\"\nworkdir = \"{}\"\nagent = \"self-test\"\nsandbox = \"read\"\n",
            host.port(),
            host.user(),
            host.client_key().display(),
            known.display(),
            host.remote_root().display(),
            host.workdir().display()
        ),
    )
    .unwrap();
    let paths = Paths {
        config_file: config,
        data_dir: dir.join("data"),
        home: dir.clone(),
        local_user: "tester".into(),
        ssh_config: dir.join("no-ssh-config"),
        agent_socket: None,
    };
    let mut d = Delegate::open(paths).unwrap();
    let task = block_on(d.launch(LaunchRequest {
        brother: "oppy".into(),
        prompt: b"dawdle\n@self-test sleep 30".to_vec(),
        max_turns: Some(100),
        ..Default::default()
    }))
    .unwrap();

    // Recorded, never sent: what `say` leaves behind when it dies before the SSH exec.
    let m = d.store_mut().add_outgoing(task.id, 1, "lead", "resend me").unwrap();
    let first = block_on(d.sync(None)).unwrap();
    assert_eq!(first.hosts[0].resent, vec![m.id], "{first:?}");
    let second = block_on(d.sync(None)).unwrap();
    assert!(second.hosts[0].resent.is_empty(), "sent twice: {second:?}");

    // The self-test agent reads its inbox every turn and acknowledges what it read.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        block_on(d.sync(None)).unwrap();
        let got = d.store().messages(task.id).unwrap().into_iter().find(|x| x.id == m.id).unwrap();
        if got.read_at.is_some() {
            assert!(got.delivered_at.is_some());
            break;
        }
        assert!(Instant::now() < deadline, "never read: {got:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let remote_dir = task.runs[0].remote_dir.clone().unwrap();
    let inbox = std::fs::read_to_string(format!("{remote_dir}/inbox.jsonl")).unwrap();
    assert_eq!(inbox.lines().filter(|l| l.contains(&format!("\"id\":{}", m.id))).count(), 1, "{inbox}");
    let heard = d.store().messages(task.id).unwrap().into_iter().filter(|x| x.text == "heard: resend me").count();
    assert_eq!(heard, 1, "delivered more than once");
    block_on(d.cancel(task.id)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
