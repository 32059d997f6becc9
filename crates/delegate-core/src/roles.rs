//! Who may do what on the shared board. An identity (`--as`, `DELEGATE_AGENT_ID`, an MCP
//! client's name, else the local user) gets a role from the inventory's `[roles]` table
//! (`alice = "manager"`, `"*" = "observer"` for everybody not named). With no `[roles]` at
//! all, everyone is a manager: a mailbox used by one person works as before.
//!
//! Every operation that changes a task asks [`Delegate::authorize`] first, in the ops layer,
//! so the CLI, the MCP server and the live page get the same answer. The names are the
//! callers' own word (anyone can say `--as alice`): roles keep cooperating leads and agents
//! from stepping on each other's work, they are not a security boundary against someone
//! who can run delegate as the mailbox's owner.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::task::Task;

/// The `[roles]` key that gives everybody not named their role.
pub const EVERYONE: &str = "*";

/// How a schedule's firings are authored: `schedule:NAME`.
pub const SCHEDULE_AUTHOR: &str = "schedule:";

/// A role on the board, from least to most allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the board and the tasks.
    Observer,
    /// Comments; updates, tells, reopens and cancels the tasks it created or is assigned.
    Worker,
    /// Reviews finished tasks and comments.
    Reviewer,
    /// Does everything: creates, launches, moves and deletes tasks.
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Observer => "observer",
            Role::Worker => "worker",
            Role::Reviewer => "reviewer",
            Role::Manager => "manager",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that changes a task, checked against the asker's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `new`.
    Create,
    /// `run`, `start`: an agent is started.
    Launch,
    /// `move` between review and done.
    Move,
    /// `delete`.
    Delete,
    /// `review accept|reject`.
    Review,
    /// `comment`.
    Comment,
    /// `update`, `say`, `reopen`, `cancel` of one task: a worker may, on its own tasks.
    Update,
}

impl Action {
    /// What the refusal calls it.
    fn describe(self) -> &'static str {
        match self {
            Action::Create => "creating a task",
            Action::Launch => "launching a task",
            Action::Move => "moving a task on the board",
            Action::Delete => "deleting a task",
            Action::Review => "reviewing a task",
            Action::Comment => "commenting on a task",
            Action::Update => "changing a task (update, say, reopen, cancel)",
        }
    }

    /// The least role allowed to do it on any task.
    fn needs(self) -> Role {
        match self {
            Action::Create | Action::Launch | Action::Move | Action::Delete | Action::Update => Role::Manager,
            Action::Review => Role::Reviewer,
            Action::Comment => Role::Worker,
        }
    }
}

/// Whether `role` may do `action` on any task (`Update`: also on its own, `own`).
pub fn allows(role: Role, action: Action, own: bool) -> bool {
    match (role, action) {
        (Role::Manager, _) => true,
        (Role::Reviewer, Action::Review | Action::Comment) => true,
        (Role::Worker, Action::Comment) => true,
        (Role::Worker, Action::Update) => own,
        _ => false,
    }
}

/// The role `who` has under `table` (the inventory's `[roles]`): its own entry, else the
/// `"*"` entry, else observer; with an empty table, manager.
pub fn role_of(table: &BTreeMap<String, Role>, who: &str) -> Role {
    if table.is_empty() {
        return Role::Manager;
    }
    table.get(who).or_else(|| table.get(EVERYONE)).copied().unwrap_or(Role::Observer)
}

/// Who may do `action` on any task, for the refusal: the names listed with such a role
/// ("everyone" when the `"*"` entry has one).
fn holders(table: &BTreeMap<String, Role>, action: Action) -> String {
    if table.get(EVERYONE).is_some_and(|r| allows(*r, action, false)) {
        return "everyone not listed otherwise".into();
    }
    let names: Vec<&str> =
        table.iter().filter(|(n, r)| *n != EVERYONE && allows(**r, action, false)).map(|(n, _)| n.as_str()).collect();
    match names.len() {
        0 => "nobody yet".into(),
        n if n > 10 => format!("{} and {} more", names[..10].join(", "), n - 10),
        _ => names.join(", "),
    }
}

/// Checks a name given in `[roles]`: not empty, no control characters, a sane length.
pub fn check_identity(name: &str) -> std::result::Result<(), String> {
    if name.trim().is_empty() {
        return Err("an empty name".into());
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} has control characters"));
    }
    if name.len() > 100 {
        return Err("a name over 100 bytes".into());
    }
    Ok(())
}

impl Delegate {
    /// Who is asking: the name given, else the local user.
    pub fn identity(&self, given: Option<&str>) -> String {
        given.filter(|g| !g.trim().is_empty()).map(str::to_string).unwrap_or_else(|| self.paths().local_user.clone())
    }

    /// The role `who` has on this board.
    pub fn role_of(&self, who: &str) -> Role {
        role_of(&self.inventory().roles, who)
    }

    /// Refuses with [`Error::RoleRefused`] unless `who` may do `action` (on `task`, for an
    /// update: a worker may change the tasks it created or that run on the brother of its
    /// name). The refusal names the role needed and who has it.
    pub fn authorize(&self, who: &str, action: Action, task: Option<&Task>) -> Result<()> {
        let table = &self.inventory().roles;
        // A schedule's firing (author `schedule:NAME`) acts with the role of whoever added the
        // schedule: nobody is at the keyboard, and the adder was checked for launching then.
        let role = match who.strip_prefix(SCHEDULE_AUTHOR) {
            Some(name) => match self.store().schedule(name) {
                Ok(row) => role_of(table, &row.author),
                Err(_) => role_of(table, who),
            },
            None => role_of(table, who),
        };
        let own = match task {
            Some(t) if action == Action::Update && role == Role::Worker => self.is_own(who, t)?,
            _ => false,
        };
        if allows(role, action, own) {
            return Ok(());
        }
        let needed = action.needs();
        let mut why = format!(
            "{who} is {} {role} on this board, and {} needs the {needed} role{}",
            article(role),
            action.describe(),
            if needed == Role::Reviewer { " (or manager)" } else { "" },
        );
        if let (Role::Worker, Action::Update, Some(t)) = (role, action, task) {
            why.push_str(&format!(
                " (a worker changes only the tasks it created or that run on the brother of its name; task {} is not {who}'s)",
                t.id
            ));
        }
        Err(Error::RoleRefused {
            who: who.to_string(),
            needed: needed.to_string(),
            why,
            holders: holders(table, action),
        })
    }

    /// Whether `who` created `task` or is the brother it runs on.
    fn is_own(&self, who: &str, task: &Task) -> Result<bool> {
        if task.brother == who {
            return Ok(true);
        }
        Ok(self.store().created_by(task.id)?.as_deref() == Some(who))
    }
}

fn article(role: Role) -> &'static str {
    if role == Role::Observer { "an" } else { "a" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_does_what_it_is_for_and_no_table_makes_everyone_a_manager() {
        use Action::*;
        let all = [Create, Launch, Move, Delete, Review, Comment, Update];
        let allowed = |role: Role, own: bool| all.iter().copied().filter(|a| allows(role, *a, own)).collect::<Vec<_>>();
        assert_eq!(allowed(Role::Manager, false), all);
        assert_eq!(allowed(Role::Reviewer, true), [Review, Comment]);
        assert_eq!(allowed(Role::Worker, false), [Comment]);
        assert_eq!(allowed(Role::Worker, true), [Comment, Update]);
        assert_eq!(allowed(Role::Observer, true), []);

        let none = BTreeMap::new();
        assert_eq!(role_of(&none, "anyone"), Role::Manager);
        let table: BTreeMap<String, Role> =
            [("alice".to_string(), Role::Manager), ("bob".to_string(), Role::Reviewer)].into();
        assert_eq!((role_of(&table, "bob"), role_of(&table, "eve")), (Role::Reviewer, Role::Observer));
        let mut with_default = table.clone();
        with_default.insert(EVERYONE.into(), Role::Worker);
        assert_eq!(role_of(&with_default, "eve"), Role::Worker);
        assert_eq!(holders(&table, Review), "alice, bob");
        assert_eq!(holders(&with_default, Comment), "everyone not listed otherwise");
        assert_eq!(holders(&[("bob".to_string(), Role::Reviewer)].into(), Delete), "nobody yet");
    }
}
