//! Schedules as a lead uses them: add (checked against the inventory), list with next and
//! last fire times, pause, resume, remove, run now, and fire what is due
//! ([`Delegate::fire_due`], which the dispatcher calls every tick with its clock).

use jiff::Timestamp;
use serde::Serialize;

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::mailbox::schedules::{Firing, NewSchedule, ScheduleRow};
use crate::ops::launch::{LaunchRequest, check_prompt};
use crate::schedule::{CatchUp, Spec, catch_up, local_zone_name, time_zone};

/// What `schedule add` asks for.
#[derive(Debug, Clone)]
pub struct ScheduleRequest {
    pub name: String,
    /// `at 09:00`, `weekdays 09:00`, `every 2h` or `cron EXPR` ([`Spec::parse`]).
    pub spec: String,
    /// A tz database name; default the lead's own zone.
    pub tz: Option<String>,
    pub brother: String,
    pub profile: Option<String>,
    pub catch_up: CatchUp,
    pub prompt: Vec<u8>,
    pub author: Option<String>,
}

/// A schedule with when it fires next and what its last firing became.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub row: ScheduleRow,
    /// The next slot (RFC 3339, UTC); in the past when it is due now. `None` when paused or
    /// never again.
    pub next_fire: Option<String>,
    /// The same instant as wall-clock time in the schedule's zone.
    pub next_fire_local: Option<String>,
    pub last_fire: Option<Firing>,
}

/// One firing a call started (or failed to).
#[derive(Debug, Clone, Serialize)]
pub struct Fired {
    pub schedule: String,
    pub slot: String,
    pub task_id: Option<i64>,
    pub status: Option<String>,
    pub error: Option<String>,
}

fn bad(name: &str, why: impl Into<String>) -> Error {
    Error::BadSchedule { name: name.to_string(), why: why.into() }
}

/// A stored schedule's spec, zone and anchor, read back.
fn parsed(row: &ScheduleRow) -> std::result::Result<(Spec, jiff::tz::TimeZone, Timestamp, Timestamp), String> {
    let spec = Spec::parse(&row.spec)?;
    let tz = time_zone(&row.tz)?;
    let anchor: Timestamp = row.anchor.parse().map_err(|e| format!("stored anchor {:?}: {e}", row.anchor))?;
    let decided: Timestamp =
        row.decided_until.parse().map_err(|e| format!("stored mark {:?}: {e}", row.decided_until))?;
    Ok((spec, tz, anchor, decided))
}

impl Delegate {
    /// Adds a schedule after checking its name, spec, zone, brother, profile and prompt. The
    /// first slot is the first after `now`.
    pub fn add_schedule(&mut self, req: ScheduleRequest, now: Timestamp) -> Result<ScheduleView> {
        // Whole seconds: `every` slots then fall on whole seconds too.
        let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
        crate::names::ScheduleName::new(&req.name).map_err(|e| bad(&req.name, e.to_string()))?;
        let spec = Spec::parse(&req.spec).map_err(|e| bad(&req.name, e))?;
        let tz_name = req.tz.clone().unwrap_or_else(local_zone_name);
        let tz = time_zone(&tz_name).map_err(|e| bad(&req.name, e))?;
        if spec.next_after(&tz, now, now).is_none() {
            return Err(bad(&req.name, format!("{spec} never fires")));
        }
        self.inventory().brother(&req.brother)?;
        if let Some(p) = &req.profile {
            self.inventory().profile(p)?;
        }
        check_prompt(&req.prompt)?;
        let author = self.identity(req.author.as_deref());
        // Its firings launch with the adder's role ([`Delegate::authorize`]), so adding one
        // needs what launching needs.
        self.authorize(&author, crate::roles::Action::Launch, None)?;
        let row = self.store_mut().add_schedule(&NewSchedule {
            name: &req.name,
            spec: &spec.to_string(),
            tz: tz.iana_name().unwrap_or(&tz_name),
            brother: &req.brother,
            profile: req.profile.as_deref(),
            catch_up: req.catch_up,
            prompt: &req.prompt,
            author: &author,
            now,
        })?;
        self.schedule_view(row)
    }

    pub fn schedules(&self) -> Result<Vec<ScheduleView>> {
        self.store().schedules()?.into_iter().map(|r| self.schedule_view(r)).collect()
    }

    pub fn schedule(&self, name: &str) -> Result<ScheduleView> {
        self.schedule_view(self.store().schedule(name)?)
    }

    fn schedule_view(&self, row: ScheduleRow) -> Result<ScheduleView> {
        let next = if row.paused {
            None
        } else {
            let (spec, tz, anchor, decided) = parsed(&row).map_err(|e| bad(&row.name, e))?;
            spec.next_after(&tz, anchor, decided).map(|t| (t, t.to_zoned(tz).strftime("%Y-%m-%d %H:%M %Z").to_string()))
        };
        let last_fire = self.store().last_firing(&row.name)?;
        Ok(ScheduleView {
            next_fire: next.as_ref().map(|(t, _)| t.to_string()),
            next_fire_local: next.map(|(_, l)| l),
            last_fire,
            row,
        })
    }

    pub fn remove_schedule(&mut self, name: &str) -> Result<()> {
        self.store_mut().remove_schedule(name)
    }

    /// Pauses (`true`) or resumes a schedule; slots passed while paused never fire.
    pub fn pause_schedule(&mut self, name: &str, paused: bool, now: Timestamp) -> Result<ScheduleView> {
        let row = self.store_mut().set_schedule_paused(name, paused, now)?;
        self.schedule_view(row)
    }

    /// A schedule's firings and their tasks, newest first.
    pub fn schedule_logs(&self, name: &str, limit: u32) -> Result<Vec<Firing>> {
        self.store().firings(name, limit)
    }

    /// Fires a schedule now, outside its slots (paused or not).
    pub async fn run_schedule(&mut self, name: &str) -> Result<Fired> {
        let slot = self.store_mut().claim_manual(name)?;
        Ok(self.fire(name, slot).await)
    }

    /// Fires every due slot of every schedule, as its catch-up policy says, at clock `now`.
    /// Each slot is claimed in the mailbox before its task is launched, so two callers (two
    /// dispatchers, two leads) never fire one slot twice.
    pub async fn fire_due(&mut self, now: Timestamp) -> Result<Vec<Fired>> {
        let mut fired = Vec::new();
        // Misfires are told to these, in the transaction that records them.
        let targets = crate::ops::notify::misfire_targets(self);
        for row in self.store().schedules()? {
            if row.paused {
                continue;
            }
            let claimed = self.store_mut().claim_due(&row.name, &targets, |s| {
                let (spec, tz, anchor, decided) = parsed(s)?;
                let policy: CatchUp = s.catch_up.parse()?;
                Ok(catch_up::plan(&spec, &tz, anchor, decided, now, policy))
            });
            // One schedule this build cannot read (stored by a newer one) must not stop the
            // others: it is reported with the tick's firings instead.
            let claimed = match claimed {
                Ok(c) => c,
                Err(e @ Error::BadSchedule { .. }) => {
                    let error = Some(e.to_string());
                    fired.push(Fired {
                        schedule: row.name.clone(),
                        slot: String::new(),
                        task_id: None,
                        status: None,
                        error,
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            for slot in claimed {
                fired.push(self.fire(&row.name, slot.to_string()).await);
            }
        }
        Ok(fired)
    }

    /// The earliest slot of any active schedule not yet decided (in the past when one is
    /// due now); `None` when no schedule will fire.
    pub fn next_due(&self) -> Result<Option<Timestamp>> {
        let mut best: Option<Timestamp> = None;
        for row in self.store().schedules()? {
            if row.paused {
                continue;
            }
            let Ok((spec, tz, anchor, decided)) = parsed(&row) else { continue };
            if let Some(t) = spec.next_after(&tz, anchor, decided) {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
        Ok(best)
    }

    /// Launches the task of one claimed firing and records what it became.
    async fn fire(&mut self, name: &str, slot: String) -> Fired {
        let mut out =
            Fired { schedule: name.to_string(), slot: slot.clone(), task_id: None, status: None, error: None };
        let targets = crate::ops::notify::misfire_targets(self);
        let request = self.store().schedule(name).and_then(|row| {
            let prompt = self.store().schedule_prompt(name)?;
            Ok(LaunchRequest {
                brother: row.brother,
                prompt,
                profile: row.profile,
                author: Some(format!("{}{name}", crate::roles::SCHEDULE_AUTHOR)),
                ..Default::default()
            })
        });
        let result = match request {
            Ok(req) => self.launch(req).await,
            Err(e) => Err(e),
        };
        let recorded = match &result {
            Ok(task) => {
                (out.task_id, out.status) = (Some(task.id), Some(task.status.to_string()));
                self.store_mut().finish_firing(name, &slot, Ok(task.id), &targets)
            }
            // The task was recorded (and failed, with its reason): the firing is its task.
            Err(e) if e.task_id().is_some() => {
                let id = e.task_id().expect("checked");
                out.task_id = Some(id);
                out.status = self.task(id).ok().map(|t| t.status.to_string());
                out.error = Some(e.to_string());
                self.store_mut().finish_firing(name, &slot, Ok(id), &targets)
            }
            Err(e) => {
                out.error = Some(e.to_string());
                self.store_mut().finish_firing(name, &slot, Err(&e.to_string()), &targets)
            }
        };
        if let Err(e) = recorded {
            out.error.get_or_insert_with(|| format!("recording the firing: {e}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_schedule_this_build_cannot_read_is_reported_and_the_others_still_fire() {
        let dir = std::env::temp_dir().join(format!("dlg-sched-ops-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        // A brother on a host nobody listens on: the firing's launch fails fast, as a task.
        std::fs::write(
            &config,
            "[hosts.h]\naddress = \"127.0.0.1\"\nport = 1\n[brothers.oppy]\nhost = \"h\"\nworkdir = \"/tmp\"\n",
        )
        .unwrap();
        let mut d = Delegate::open(crate::Paths {
            config_file: config,
            data_dir: dir.join("data"),
            home: dir.clone(),
            local_user: "tester".into(),
            ssh_config: dir.join("ssh_config"),
            agent_socket: None,
        })
        .unwrap();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        for name in ["a-newer", "b-fine"] {
            let req = ScheduleRequest {
                name: name.into(),
                spec: "every 1h".into(),
                tz: Some("UTC".into()),
                brother: "oppy".into(),
                profile: None,
                catch_up: CatchUp::Skip,
                prompt: b"hourly".to_vec(),
                author: None,
            };
            d.add_schedule(req, t0).unwrap();
        }
        d.store()
            .conn_for_tests()
            .execute("UPDATE schedules SET spec = 'fortnightly 3' WHERE name = 'a-newer'", [])
            .unwrap();
        let fired = d.fire_due("2026-01-01T01:01:00Z".parse().unwrap()).await.unwrap();
        assert_eq!(fired.len(), 2, "{fired:?}");
        assert!(fired[0].error.as_deref().unwrap().contains("unknown schedule kind"), "{fired:?}");
        assert_eq!((fired[1].schedule.as_str(), fired[1].slot.as_str()), ("b-fine", "2026-01-01T01:00:00Z"));
        assert!(fired[1].task_id.is_some(), "the other schedule fired a task: {fired:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn missed_slots_and_a_firing_that_cannot_start_notify_in_the_same_transaction() {
        let dir = std::env::temp_dir().join(format!("dlg-sched-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        let body = "[notify]\ncommand = [\"true\", \"{subject}\"]\non = [\"schedule_misfire\"]\n\
                    [hosts.h]\naddress = \"127.0.0.1\"\nport = 1\n[brothers.oppy]\nhost = \"h\"\nworkdir = \"/tmp\"\n";
        std::fs::write(&config, body).unwrap();
        let paths = crate::Paths {
            config_file: config.clone(),
            data_dir: dir.join("data"),
            home: dir.clone(),
            local_user: "tester".into(),
            ssh_config: dir.join("ssh_config"),
            agent_socket: None,
        };
        let mut d = Delegate::open(paths.clone()).unwrap();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let req = ScheduleRequest {
            name: "hourly".into(),
            spec: "every 1h".into(),
            tz: Some("UTC".into()),
            brother: "oppy".into(),
            profile: None,
            catch_up: CatchUp::Skip,
            prompt: b"hourly".to_vec(),
            author: None,
        };
        d.add_schedule(req, t0).unwrap();
        // Five hours asleep: four slots given up (skip), the newest fires.
        d.fire_due("2026-01-01T05:01:00Z".parse().unwrap()).await.unwrap();
        let misfires: Vec<_> = d
            .notifications(50)
            .unwrap()
            .into_iter()
            .filter(|n| n.message.event == "schedule_misfire")
            .collect();
        assert_eq!(misfires.len(), 1, "one notification for the one misfire record: {misfires:?}");
        assert_eq!(misfires[0].message.schedule.as_deref(), Some("hourly"));
        assert!(misfires[0].message.reason.contains("4 slot(s)"), "{misfires:?}");

        // The brother removed from under it: the firing cannot start a task; told too.
        std::fs::write(&config, body.replace("[brothers.oppy]", "[brothers.other]")).unwrap();
        let mut d = Delegate::open(paths).unwrap();
        let fired = d.run_schedule("hourly").await.unwrap();
        assert!(fired.task_id.is_none() && fired.error.is_some(), "{fired:?}");
        let misfires = d.notifications(50).unwrap().into_iter().filter(|n| n.message.event == "schedule_misfire").count();
        assert_eq!(misfires, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
