//! Command-line shape. `delegate <brother> "<prompt>"` is short for `delegate run ...`:
//! anything that is not a subcommand is read as a brother name.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use delegate_core::{Column, Priority, Sandbox, TaskStatus};

/// Hand tasks to coding agents on named remote machines over SSH
#[derive(Parser, Debug)]
#[command(name = "delegate", version, allow_external_subcommands = true, after_help = SHORT_FORM_HELP)]
pub struct Cli {
    /// Inventory file (default: $DELEGATE_CONFIG, else $XDG_CONFIG_HOME/delegate/config.toml)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Connect directly instead of through the warm daemon that keeps SSH connections
    /// between commands (also `[warm] enabled = false` in the inventory)
    #[arg(long, global = true)]
    pub no_warm: bool,

    #[command(subcommand)]
    pub command: Command,
}

const SHORT_FORM_HELP: &str =
    "Short form: `delegate BROTHER PROMPT [OPTIONS]` is `delegate run BROTHER PROMPT [OPTIONS]`.";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Launch a task on a brother (an agent on a remote host)
    Run(RunArgs),
    /// Record a task without launching it (state `backlog`); `delegate start N` launches it
    New(NewArgs),
    /// Launch a backlog task on its assigned brother (or --assign one)
    Start(StartArgs),
    /// Every task in its column: backlog, todo, in progress, needs you, review, done
    Board(BoardArgs),
    /// Accept a finished task (review -> done) or take it back, at the version you read
    Move(MoveArgs),
    /// Accept a finished task (to done) or reject it (reopened with the note as follow-up)
    Review(ReviewArgs),
    /// Add a comment to a task's thread, with its author (nothing is sent to the brother)
    Comment(CommentArgs),
    /// Delete a backlog or finished task and its record from the mailbox (managers only)
    Delete(DeleteArgs),
    /// Needs you: the questions agents asked that nobody answered yet, oldest first
    Inbox(InboxArgs),
    /// Answer a task's open question: said to a running agent, or resumes a stopped one
    Answer(AnswerArgs),
    /// List tasks, newest first
    List(ListArgs),
    /// Show one task: its runs with launch evidence, messages, events and history
    Show(ShowArgs),
    /// Turns, tokens and dollars the agents reported, summed by brother, profile or day
    Usage(UsageArgs),
    /// Bring the mailbox up to date from every host with tasks in flight
    Sync {
        #[arg(long)]
        json: bool,
    },
    /// Tasks in flight: state, brother, age, turns used, last event
    Status(StatusArgs),
    /// Stream JSON lines, one per state change, event or message
    Monitor(MonitorArgs),
    /// Block until tasks finish; exit 0 only if all completed
    Wait(WaitArgs),
    /// The agent's output so far, read from the brother
    Logs(LogsArgs),
    /// Open the task's live tmux session (through the system ssh)
    Attach(AttachArgs),
    /// Stop a task's agent and record it as cancelled
    Cancel(CancelArgs),
    /// What a task changed in its workdir since its launch (committed or not, new files too)
    Diff(DiffArgs),
    /// Bring a task's change back: a patch file (--into) or applied to a local checkout (--apply)
    Fetch(FetchArgs),
    /// Remove a finished task's worktree (--worktree) and its refs/delegate/<key> refs on the
    /// brother, when its change was fetched or is empty
    Cleanup(CleanupArgs),
    /// The files a task declared (`report artifact PATH "what it is"`): path, size, sha256
    Artifacts(ArtifactsArgs),
    /// Messages brothers sent: receipts, progress, questions, completion
    Mailbox(MailboxArgs),
    /// Set a task's status by hand
    Update(UpdateArgs),
    /// Follow up on a finished task: a new run that resumes the agent's own session
    Reopen(ReopenArgs),
    /// Tell a running brother something: delivered mid-task, recorded as sent, delivered, read
    Say(SayArgs),
    /// Check everything a launch needs on each brother (connection, tools, agent,
    /// sandbox, credentials, directories) and say how to fix what is missing
    Doctor(DoctorArgs),
    /// Serve delegate's tools to a lead agent over MCP (Model Context Protocol) on stdio
    Mcp,
    /// The warm daemon: a background process keeping SSH connections between commands
    #[command(subcommand)]
    Warm(WarmCommand),
    /// Manage hosts in the inventory
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Manage brothers in the inventory
    #[command(subcommand)]
    Brothers(BrothersCommand),
    /// Recurring tasks: each firing is an ordinary task on a brother
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Keep the mailbox moving with nobody at the keyboard: sync tasks in flight (which
    /// starts queued ones as slots free up) and fire due schedules
    Dispatch(DispatchArgs),
    /// Run the dispatcher as a per-user service (systemd user unit, else a crontab line)
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Notifications: recent deliveries and their states, or a test to each target
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// On a brother without inbound SSH: take tasks for this worker id from a NATS server
    /// and run them here (see the README's "Workers behind NATS")
    Worker(WorkerArgs),
    #[command(external_subcommand)]
    External(Vec<OsString>),
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Add a schedule: when (--at, --every, --weekdays or --cron), where (--brother) and what
    Add(Box<ScheduleAddArgs>),
    /// Schedules with their next and last fire times
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule (the tasks it started stay)
    Rm {
        name: String,
        #[command(flatten)]
        who: Author,
    },
    /// A schedule's firings and their tasks, and its misfires, newest first
    Logs {
        name: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Fire a schedule now, outside its times (paused or not)
    Run {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        who: Author,
    },
    /// Stop firing until resumed (slots passed meanwhile never fire)
    Pause {
        name: String,
        #[command(flatten)]
        who: Author,
    },
    /// Fire again from the next slot on
    Resume {
        name: String,
        #[command(flatten)]
        who: Author,
    },
}

/// When a schedule fires: exactly one of these.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct When {
    /// Every day at HH:MM (24-hour, in --tz)
    #[arg(long, value_name = "HH:MM")]
    pub at: Option<String>,
    /// Monday to Friday at HH:MM
    #[arg(long, value_name = "HH:MM")]
    pub weekdays: Option<String>,
    /// At fixed intervals from now: 30m, 2h, 1d (whole minutes, 1m to 366d)
    #[arg(long, value_name = "INTERVAL")]
    pub every: Option<String>,
    /// A 5-field cron expression: "minute hour day-of-month month day-of-week"
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
}

impl When {
    /// The spec as the library reads it (`at 09:00`, `every 2h`, ...).
    pub fn spec(&self) -> String {
        match (&self.at, &self.weekdays, &self.every, &self.cron) {
            (Some(t), ..) => format!("at {t}"),
            (_, Some(t), ..) => format!("weekdays {t}"),
            (_, _, Some(d), _) => format!("every {d}"),
            (.., Some(c)) => format!("cron {c}"),
            _ => unreachable!("clap requires one"),
        }
    }
}

#[derive(Args, Debug)]
pub struct ScheduleAddArgs {
    /// The schedule's name: letters, digits, '-' and '_'
    pub name: String,
    #[command(flatten)]
    pub when: When,
    /// The brother each firing runs on
    #[arg(long)]
    pub brother: String,
    /// A worker profile from the inventory for its tasks
    #[arg(long)]
    pub profile: Option<String>,
    /// Slots missed while no dispatcher ran: skip (default), once (the newest), all (each,
    /// a few per tick, at most 24)
    #[arg(long, default_value = "skip")]
    pub catch_up: delegate_core::schedule::CatchUp,
    /// Time zone of --at/--weekdays/--cron (tz database name, e.g. Europe/Berlin; default
    /// this machine's)
    #[arg(long, value_name = "AREA/CITY")]
    pub tz: Option<String>,
    #[command(flatten)]
    pub text: PromptArgs,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DispatchArgs {
    /// How often tasks in flight are synced (and the mailbox re-read for new work)
    #[arg(long, default_value = "30s", value_parser = parse_interval)]
    pub interval: Duration,
    /// One tick, then exit (for cron)
    #[arg(long)]
    pub once: bool,
    /// One JSON line per tick that did something
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The NATS server: nats://host:port or tls://host:port, without credentials
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// A file with the credentials: a .creds file (JWT and nkey seed), an nkey seed,
    /// user:password, or a token (read from the file, never given on the command line)
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// The worker id leads name in `worker_id` (letters, digits, '_' and '-'); replicas
    /// share one id
    #[arg(long)]
    pub id: String,
    /// This replica's name for requests about the tasks it ran (default: hostname and a
    /// hash of the remote root)
    #[arg(long)]
    pub instance: Option<String>,
    /// Where the worker keeps its state (`workers/<id>/`); tasks go where each lead's
    /// launch says (its host's remote_root)
    #[arg(long, value_name = "DIR", default_value = "~/.delegate")]
    pub remote_root: String,
    /// How long the server waits for this worker's word on a task before it hands the task
    /// to another delivery (progress acks keep a running launch alive); only the first
    /// worker to create the id's consumer sets it
    #[arg(long, default_value = "30s", value_parser = parse_interval)]
    pub ack_wait: Duration,
    /// Instead of running now, install this worker (these flags) as a per-user service:
    /// a systemd user unit where `systemctl --user` works, else a crontab block
    #[arg(long)]
    pub install_service: bool,
    /// Also serve agentbus tasks for this id (`agentbus.<id>.tasks`, durable consumer <id>),
    /// answering with agentbus results, as `agentbus worker run` would
    #[arg(long)]
    pub agentbus: bool,
    /// The agent that runs agentbus tasks (claude, codex)
    #[arg(long, value_name = "AGENT", default_value = "claude", requires = "agentbus")]
    pub agentbus_agent: String,
    /// The agent's program, when it is not found on the login shell's PATH
    #[arg(long, value_name = "PATH", requires = "agentbus")]
    pub agentbus_agent_path: Option<String>,
    /// Where agentbus tasks' agents work
    #[arg(long, value_name = "DIR", default_value = "~", requires = "agentbus")]
    pub agentbus_workdir: String,
    /// The sandbox level of agentbus tasks (read, write, full)
    #[arg(long, value_name = "LEVEL", default_value = "write", requires = "agentbus")]
    pub agentbus_sandbox: delegate_core::task::Sandbox,
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Install and start the dispatcher for this mailbox (replacing an earlier install)
    Install {
        /// The dispatcher's --interval (systemd; cron ticks once a minute)
        #[arg(long, default_value = "30s", value_parser = parse_interval)]
        interval: Duration,
    },
    /// Stop and remove it (other crontab lines are left as they are)
    Uninstall,
    /// Which kind is installed, and whether a dispatcher runs
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|_| format!("{s:?} is not an interval: write e.g. 30s or 2m"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
        return Err(format!("interval {s:?} must be from 1s to 24h"));
    }
    Ok(d)
}

/// The arguments of `run`, also parsed on their own for the short form.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Brother to hand the task to; several separated by commas (`oppy,jerry`) fan the task
    /// out, one task per brother, launched concurrently
    pub brother: String,
    #[command(flatten)]
    pub text: PromptArgs,
    /// One-line subject (default: the prompt's first line)
    #[arg(long)]
    pub subject: Option<String>,
    /// Working directory on the brother (default: the brother's)
    #[arg(long)]
    pub workdir: Option<String>,
    /// Turn limit for the agent (default: the brother's, 50 if unset)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_turns: Option<u32>,
    /// read | write | full (default: the brother's)
    #[arg(long)]
    pub sandbox: Option<Sandbox>,
    /// claude | codex | self-test | a name from [agents] (default: the brother's)
    #[arg(long)]
    pub agent: Option<String>,
    /// Model name passed to the agent (default: the brother's)
    #[arg(long)]
    pub model: Option<String>,
    /// Wall-clock limit, e.g. 90s, 45m, 4h (default: the brother's, else 4h; at most a
    /// century, which a larger value means)
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// A worker profile from the inventory ([profiles.NAME]); its settings apply under these
    /// flags and over the brother's (default: the brother's default_profile)
    #[arg(long)]
    pub profile: Option<String>,
    /// Run in a git worktree of the workdir's repository of its own on the brother, on branch
    /// delegate/<task key> from HEAD (default: the profile's, else the brother's `worktree`)
    #[arg(long)]
    pub worktree: bool,
    /// low | medium | high | xhigh | max (Codex: up to xhigh; default: the profile's, else
    /// the agent's own)
    #[arg(long, value_name = "LEVEL")]
    pub reasoning_effort: Option<delegate_core::agents::ReasoningEffort>,
    /// Spend limit for the run in US dollars, enforced by the agent (Claude only)
    #[arg(long, value_name = "USD")]
    pub max_budget_usd: Option<f64>,
    /// Extra arguments for the agent as a JSON array of strings, e.g. '["--fallback-model",
    /// "sonnet"]'; replaces the profile's; flags delegate sets itself are refused
    #[arg(long, value_name = "JSON", value_parser = parse_args_json)]
    pub args_json: Option<ArgsJson>,
    #[command(flatten)]
    pub who: Author,
    /// Another brother to hand the task to (repeatable); with --to, the first argument is
    /// the prompt: `delegate run --to oppy --to jerry "run the tests"`
    #[arg(long = "to", value_name = "BROTHER")]
    pub to: Vec<String>,
    /// An environment from the inventory ([environments.NAME]): the task goes to its least
    /// loaded brother with room under its caps, and the first argument is the prompt:
    /// `delegate --environment dev "run the tests"`
    #[arg(long, value_name = "NAME", conflicts_with = "to")]
    pub environment: Option<String>,
    /// With --environment: send the task to every brother in it (a fan-out)
    #[arg(long, requires = "environment")]
    pub all: bool,
    #[command(flatten)]
    pub board: BoardPlace,
    /// Notifications for this task: on, off, or events (completed,failed,needs_input);
    /// default: the inventory's [notify]
    #[arg(long, value_name = "on|off|EVENTS")]
    pub notify: Option<delegate_core::notify::Choice>,
    /// Print the task as JSON (with several brothers: {"tasks": [...], "errors": [...]})
    #[arg(long)]
    pub json: bool,
}

/// Where a task sits on the board: its priority and the task it is part of.
#[derive(Args, Debug)]
pub struct BoardPlace {
    /// low | medium | high (default medium): orders the board
    #[arg(long)]
    pub priority: Option<Priority>,
    /// The task this one is part of (its number); `show` on it lists this one
    #[arg(long, value_name = "N")]
    pub parent: Option<i64>,
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// One line: the task's subject and the first line of the agent's prompt
    pub title: String,
    /// The rest of the prompt, after the title and a blank line
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub board: BoardPlace,
    /// The brother to run it on (may be left for `delegate start N --assign BROTHER`)
    #[arg(long, value_name = "BROTHER")]
    pub assign: Option<String>,
    /// A worker profile from the inventory ([profiles.NAME]) that `start` launches it with
    /// (default: the brother's default_profile)
    #[arg(long)]
    pub profile: Option<String>,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BoardArgs {
    /// Only this brother's tasks
    #[arg(long)]
    pub brother: Option<String>,
    /// At most this many cards per column (the count says how many there are)
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// As JSON: {"columns": [{"column", "count", "cards": [...]}]}, each card with its version
    #[arg(long)]
    pub json: bool,
    /// Show what the mailbox knows without asking brothers first
    #[arg(long)]
    pub no_sync: bool,
    /// Only my tasks: those I created, or that run on the brother of my name (`--as`)
    #[arg(long)]
    pub mine: bool,
    /// Only the review column: finished tasks nobody has accepted yet
    #[arg(long)]
    pub review: bool,
    /// Serve the board as a live page on 127.0.0.1 (the URL, with its token, is printed)
    #[arg(long)]
    pub serve: bool,
    /// The page's port (default 0: any free one); with --serve
    #[arg(long, requires = "serve", default_value_t = 0)]
    pub port: u16,
    /// Who the page moves cards and answers as
    #[command(flatten)]
    pub who: Author,
}

#[derive(Args, Debug)]
pub struct MoveArgs {
    /// Task number
    pub id: i64,
    /// review or done (the other columns follow the task's state)
    pub column: Column,
    /// The task's version as you read it (`board --json`, `show --json`); a stale one is
    /// refused with exit 34
    #[arg(long)]
    pub version: i64,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReviewArgs {
    /// Task number (a finished task in the review column)
    #[arg(required_unless_present = "count")]
    pub id: Option<i64>,
    /// accept (to done) or reject (reopen with the note as the follow-up)
    #[arg(value_parser = ["accept", "reject"], required_unless_present = "count")]
    pub verdict: Option<String>,
    /// Why; required to reject (the agent reads it as its follow-up)
    pub note: Option<String>,
    /// Print how many tasks wait for review (a number alone; `--json`: {"review": N})
    #[arg(long, conflicts_with_all = ["id", "verdict", "note"])]
    pub count: bool,
    /// With --count: show what the mailbox knows without asking brothers first
    #[arg(long, requires = "count")]
    pub no_sync: bool,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Task number (a backlog or finished task)
    pub id: i64,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InboxArgs {
    /// Only this brother's questions
    #[arg(long)]
    pub brother: Option<String>,
    /// As JSON: {"questions": [{"task", "brother", "kind", "question", "asked_at", "age_secs", ...}]}
    #[arg(long)]
    pub json: bool,
    /// Show what the mailbox knows without asking brothers first
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// Task number (one with an open question: `delegate inbox`)
    pub id: i64,
    #[command(flatten)]
    pub text: PromptArgs,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CommentArgs {
    /// Task number
    pub id: i64,
    /// The comment
    pub text: String,
    #[command(flatten)]
    pub who: Author,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Task number (a task in the backlog)
    pub id: i64,
    /// The brother to run it on, instead of (or when there is no) assigned one
    #[arg(long, value_name = "BROTHER")]
    pub assign: Option<String>,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

/// The text of a task or a follow-up: an argument, a file, or stdin.
#[derive(Args, Debug)]
pub struct PromptArgs {
    /// The text; `-` reads it from stdin
    pub prompt: Option<OsString>,
    /// Read the text from a file (`-` for stdin) instead of the command line
    #[arg(long, value_name = "PATH", conflicts_with = "prompt")]
    pub prompt_file: Option<PathBuf>,
}

/// Who is asking or speaking, recorded with launches, follow-ups, messages and updates.
#[derive(Args, Debug)]
pub struct Author {
    /// Who is asking (default: $DELEGATE_AGENT_ID, else the local user)
    #[arg(long = "as", env = "DELEGATE_AGENT_ID")]
    pub author: Option<String>,
}

impl Author {
    /// The name given (not blank), else the local user: the identity the board's roles
    /// are checked for.
    pub fn or_local(&self, d: &delegate_core::Delegate) -> String {
        d.identity(self.author.as_deref())
    }
}

/// Parses the short form's arguments as `run` arguments.
#[derive(Parser, Debug)]
#[command(name = "delegate")]
pub struct ShortForm {
    #[command(flatten)]
    pub run: RunArgs,
    /// Connect directly, not through the warm daemon
    #[arg(long)]
    pub no_warm: bool,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Group by brother (default), profile or day (UTC, when the run started)
    #[arg(long, value_enum, default_value = "brother")]
    pub by: UsageGroup,
    #[arg(long)]
    pub json: bool,
    /// Sum what the mailbox knows without asking brothers first
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum UsageGroup {
    Brother,
    Profile,
    Day,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    pub brother: Option<String>,
    #[arg(long)]
    pub status: Option<TaskStatus>,
    /// At most this many tasks (default 50)
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
    /// Show what the mailbox knows without asking brothers first
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Task number
    pub id: i64,
    /// As JSON: the same window of the thread, with `omitted` counts of what it left out
    #[arg(long)]
    pub json: bool,
    /// The whole thread, not only the prompts and the newest 200 items
    #[arg(long)]
    pub all: bool,
    /// Show what the mailbox knows without asking the brother first
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(Args, Debug)]
pub struct ArtifactsArgs {
    /// Task number
    pub id: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CleanupArgs {
    /// Task number
    pub id: i64,
    /// Remove it even though its change was never fetched (the change is lost)
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Task number
    pub id: i64,
    /// Files changed with their line counts, not the changes themselves
    #[arg(long)]
    pub stat: bool,
    /// Since the launch of this run (default: the task's first, so its whole change)
    #[arg(long, value_name = "R")]
    pub run: Option<i64>,
    /// As JSON: the trees compared, the size and SHA-256, and the diff's text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("where").args(["into", "apply"])))]
pub struct FetchArgs {
    /// Task number
    pub id: i64,
    /// Write the patch to DIR/task-N.patch (default: the current directory)
    #[arg(long, value_name = "DIR")]
    pub into: Option<std::path::PathBuf>,
    /// Apply the change to a local checkout (all of it or nothing)
    #[arg(long)]
    pub apply: bool,
    /// Copy the task's declared artifacts into DIR (default: the current directory) instead
    /// of its change; an existing file is never overwritten
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".", conflicts_with_all = ["into", "apply"])]
    pub artifacts: Option<std::path::PathBuf>,
    /// The checkout --apply applies to (default: the current directory)
    #[arg(long, value_name = "PATH", requires = "apply")]
    pub repo: Option<std::path::PathBuf>,
    /// Since the launch of this run (default: the task's first, so its whole change)
    #[arg(long, value_name = "R")]
    pub run: Option<i64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Refresh until interrupted
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
    /// Include finished tasks (default: in flight, and finished in the last 10 minutes)
    #[arg(long)]
    pub all: bool,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Output format (only json: one object per line)
    #[arg(long, default_value = "json", value_parser = ["json"])]
    pub format: String,
    /// Milliseconds between syncs
    #[arg(long, default_value_t = 2000)]
    pub interval_ms: u64,
    /// Start with everything already in the mailbox, not just what happens from now on
    #[arg(long)]
    pub from_start: bool,
    /// Stop after this many polls (default: run until interrupted)
    #[arg(long)]
    pub count: Option<u64>,
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Task numbers
    pub ids: Vec<i64>,
    /// Wait on the tasks that are part of each one given (its children, from `--parent`),
    /// instead of on it
    #[arg(long)]
    pub children: bool,
    /// Give up after this long (90s, 10m, 2h; a value too large for the clock means no
    /// limit); exit code 8 then
    #[arg(long, value_parser = delegate_core::hosts::inventory::parse_duration)]
    pub timeout: Option<Duration>,
    /// Milliseconds between syncs
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub id: i64,
    /// Keep printing as the agent writes, until it ends
    #[arg(long, short)]
    pub follow: bool,
    /// The stream as the agent wrote it (JSON lines), not rendered
    #[arg(long)]
    pub raw: bool,
    /// The agent's stderr instead of its output stream
    #[arg(long, conflicts_with_all = ["events", "reports"])]
    pub stderr: bool,
    /// The hook events the brother recorded (events.jsonl, one JSON line each), all of them,
    /// also those over the mailbox's row caps
    #[arg(long, conflicts_with = "reports")]
    pub events: bool,
    /// The reports the agent wrote (outbox.jsonl, one JSON line each), all of them, also
    /// those over the mailbox's row caps
    #[arg(long)]
    pub reports: bool,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    pub id: i64,
    /// Print the ssh command instead of running it
    #[arg(long)]
    pub print: bool,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Brothers to check (default: every brother in the inventory)
    pub brothers: Vec<String>,
    /// Print the reports as JSON: one object per brother with its findings and can_launch
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    pub id: i64,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MailboxArgs {
    /// Only messages not shown before
    #[arg(long)]
    pub unread: bool,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    pub id: i64,
    /// The outcome to record: completed, failed or cancelled (other states are delegate's own)
    #[arg(long)]
    pub status: TaskStatus,
    /// Output or reason to record with the change
    #[arg(long)]
    pub output: Option<String>,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum NotifyCommand {
    /// Recent notifications, newest first: event, task, target, state, attempts, last error
    List {
        /// At most this many (default 20)
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Send a sample notification to each target now (recording nothing); exit 43 if one fails
    Test {
        /// The targets that apply to this brother's tasks (default: the [notify] table's)
        #[arg(long)]
        brother: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum WarmCommand {
    /// Whether a warm daemon runs for this mailbox, and what it holds
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop the warm daemon (its connections close; the next command starts a new one)
    Stop,
    /// Run the daemon in the foreground (commands start it on demand; not for direct use)
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        socket: PathBuf,
        /// Seconds without a request before it exits
        #[arg(long)]
        persist_secs: u64,
        /// The data directory whose mailbox it keeps open
        #[arg(long)]
        mailbox: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of its largest variant (`add` with the NATS keys) costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum HostsCommand {
    /// Add or replace a host
    Add(HostAddArgs),
    /// List hosts
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a host (refused while a brother uses it)
    Rm { name: String },
    /// Record a host's key in its known_hosts file after checking its fingerprint
    Trust(TrustArgs),
}

#[derive(Args, Debug)]
pub struct HostAddArgs {
    pub name: String,
    /// Hostname, IP address, or an alias from ~/.ssh/config
    #[arg(long, required_unless_present = "nats", conflicts_with = "nats")]
    pub address: Option<String>,
    /// Reach the host through this NATS server (nats://host:port) instead of SSH: the
    /// brother runs `delegate worker`, which connects out to it. Needs --worker-id.
    #[arg(long, requires = "worker_id")]
    pub nats: Option<String>,
    /// With --nats: the id the brother's `delegate worker --id` runs with
    #[arg(long, requires = "nats")]
    pub worker_id: Option<String>,
    /// With --nats: a file with the lead's NATS credentials (.creds, nkey seed,
    /// user:password or token); never put them in the URL
    #[arg(long, requires = "nats")]
    pub creds: Option<String>,
    /// With --nats: how long a task may wait for a worker before it fails ("1h")
    #[arg(long, requires = "nats")]
    pub task_ttl: Option<String>,
    /// With --nats: the worker is an agentbus worker (`agentbus worker run`), not a
    /// `delegate worker`: tasks go as agentbus tasks and only the result comes back
    #[arg(long, requires = "nats")]
    pub agentbus: bool,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    /// Private key file
    #[arg(long)]
    pub identity: Option<String>,
    /// known_hosts file (default ~/.ssh/known_hosts)
    #[arg(long)]
    pub known_hosts: Option<String>,
    /// Where task directories live on the host (default ~/.delegate)
    #[arg(long)]
    pub remote_root: Option<String>,
    /// Seconds to wait for connect, handshake and auth (default 10/15/15)
    #[arg(long)]
    pub connect_timeout: Option<u64>,
    /// At most this many tasks in flight on the host; more wait as `queued`
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent: Option<u32>,
    /// Seconds state commands wait for this host's sync before showing its tasks stale (default 10)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_deadline: Option<u64>,
    /// Environment agents run in there: login (default), interactive or plain
    #[arg(long, value_parser = parse_environment)]
    pub environment: Option<delegate_core::hosts::inventory::AgentEnvironment>,
    /// A file on the host of NAME=value lines exported to its agents (values stay there)
    #[arg(long)]
    pub env_file: Option<String>,
}

#[derive(Args, Debug)]
pub struct TrustArgs {
    pub name: String,
    /// The SHA256 fingerprint you expect (shown by the unknown-host error, or by
    /// `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host); without it the
    /// presented fingerprint is only shown
    #[arg(long)]
    pub fingerprint: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum BrothersCommand {
    /// Add or replace a brother
    Add(Box<BrotherAddArgs>),
    /// List brothers
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a brother
    Rm { name: String },
}

#[derive(Args, Debug)]
pub struct BrotherAddArgs {
    pub name: String,
    /// Host from the inventory
    #[arg(long)]
    pub host: String,
    /// Default working directory on the host (absolute or ~/...)
    #[arg(long)]
    pub workdir: String,
    /// claude | codex | self-test | a name from [agents]
    #[arg(long, default_value = "claude")]
    pub agent: String,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_turns: u32,
    /// read | write | full
    #[arg(long, default_value = "write")]
    pub sandbox: Sandbox,
    /// Wall-clock limit for its tasks, e.g. 45m or 4h (default 4h)
    #[arg(long)]
    pub timeout: Option<String>,
    /// At most this many of its tasks in flight (1: one at a time); more wait as `queued`
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent: Option<u32>,
    /// Absolute path (or ~/...) of the agent's program on the host, instead of PATH lookup
    #[arg(long)]
    pub agent_path: Option<String>,
    /// Environment its agents run in: login (default), interactive or plain
    #[arg(long, value_parser = parse_environment)]
    pub environment: Option<delegate_core::hosts::inventory::AgentEnvironment>,
    /// A file on the host of NAME=value lines exported to its agents (after the host's)
    #[arg(long)]
    pub env_file: Option<String>,
    /// The [profiles.NAME] a launch on this brother uses when it names none
    #[arg(long, value_name = "NAME")]
    pub default_profile: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReopenArgs {
    /// Task number
    pub id: i64,
    #[command(flatten)]
    pub text: PromptArgs,
    /// Paths the follow-up may change (repeatable; relative ones from the task's workdir):
    /// the agent is told, and Claude Code's file tools are held to them
    #[arg(long, value_name = "PATH")]
    pub write_scope: Vec<String>,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SayArgs {
    /// Task number
    pub id: i64,
    /// The message
    pub message: String,
    #[command(flatten)]
    pub who: Author,
    #[arg(long)]
    pub json: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    delegate_core::hosts::inventory::parse_timeout(s)
}

fn parse_environment(s: &str) -> Result<delegate_core::hosts::inventory::AgentEnvironment, String> {
    match s {
        "login" => Ok(delegate_core::hosts::inventory::AgentEnvironment::Login),
        "interactive" => Ok(delegate_core::hosts::inventory::AgentEnvironment::Interactive),
        "plain" => Ok(delegate_core::hosts::inventory::AgentEnvironment::Plain),
        other => Err(format!("{other:?} is not an environment: use login, interactive or plain")),
    }
}

/// `--args-json`: extra agent arguments, a JSON array of strings.
#[derive(Debug, Clone)]
pub struct ArgsJson(pub Vec<String>);

fn parse_args_json(s: &str) -> Result<ArgsJson, String> {
    serde_json::from_str::<Vec<String>>(s)
        .map(ArgsJson)
        .map_err(|e| format!("not a JSON array of strings ({e}); write e.g. '[\"--fallback-model\", \"sonnet\"]'"))
}
