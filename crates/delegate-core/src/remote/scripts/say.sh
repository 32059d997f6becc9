# delegate say script: queues one message from the lead for a task's agent. Sent on the
# stdin of bash (REMOTE_COMMAND in runner.rs) over SSH, shaped like the cancel script: Rust prepends
# `DLG_VARS='<base64>'` (remote root, task key, message id, inbox line; NUL-separated; see
# render_say in sync_protocol.rs), and the body is one function called on the last line
# with a sentinel, so a script cut off in transit runs nothing.
#
# It appends the line to inbox.jsonl in the task directory, which only this script writes.
# The agent reads it with the task's `inbox` helper and the Claude hook hands it over
# (remote/scripts/inbox.sh documents both files); neither ever types into the agent's pane. Rust
# has checked the line: one line, exactly {"id":N,"at":"<utc>","author":<json>,"text":<json>}
# with N the message id.
#
# Output: one line on stdout, exit 0
#   DELEGATE-SAY queued          appended
#   DELEGATE-SAY already-queued  a line with this id is there already (a retry whose first
#                                reply was lost): nothing appended
#   DELEGATE-SAY finished        the runner has written `exit`: nobody would read it
#   DELEGATE-SAY no-task         no task directory
# Failures: `DELEGATE-ERROR <code> <message>` on stderr, exit 23 (damaged or cut script) or
# 1 (inbox.jsonl could not be opened, locked or written).
#
# A retry is recognised before the finished check, so a message queued just before the task
# ended still reads as already-queued, not as refused. The id check and the append happen
# under flock(1) on inbox.jsonl when the host has flock, so two says of the same message
# cannot both append it.

main() {
	if [ "${1-}" != delegate-say-complete ]; then
		printf 'DELEGATE-ERROR 23 the say script arrived incomplete: nothing was done\n' >&2
		exit 23
	fi
	set -uo pipefail
	umask 077
	# Bytes, not characters: slices of the inbox's lines.
	export LC_ALL=C
	fail() {
		printf 'DELEGATE-ERROR %s %s\n' "$1" "$2" >&2
		exit "$1"
	}
	local -a v
	mapfile -d '' -t v < <(base64 -d <<<"$DLG_VARS")
	[ "${#v[@]}" -eq 4 ] || fail 23 "the say variables did not decode (got ${#v[@]} fields)"
	local root=${v[0]} key=${v[1]} id=${v[2]} line=${v[3]}
	local prefix="{\"id\":$id,"
	if ! [[ $id =~ ^[1-9][0-9]{0,17}$ ]] || [ "${line:0:${#prefix}}" != "$prefix" ]; then
		fail 23 "the say variables are damaged (message id '$id')"
	fi
	# shellcheck disable=SC2088 # a literal "~/" prefix, expanded here on purpose
	case $root in "~") root=$HOME ;; "~/"*) root=$HOME/${root:2} ;; esac
	local dir=$root/tasks/$key inbox=$root/tasks/$key/inbox.jsonl
	# Nothing is read or written through a root that is not this user's (own-root.sh).
	local root_problem
	# shellcheck disable=SC2154 # set by foreign_root
	if foreign_root "$root"; then fail 25 "$root_problem"; fi
	say() { printf 'DELEGATE-SAY %s\n' "$1"; }

	[ -d "$dir" ] || { say no-task; return 0; }
	# Ended and never messaged: no need to create the inbox to find nothing in it.
	if [ -e "$dir/exit" ] && ! [ -e "$inbox" ]; then
		say finished
		return 0
	fi
	local lock
	exec {lock}>>"$inbox" || fail 1 "cannot open $inbox"
	if hash flock 2>/dev/null; then
		flock -w 10 -x "$lock" || fail 1 "could not lock $inbox within 10 s"
	fi

	# Complete lines only: a line cut short by a full disk is never taken for the message,
	# and the new line must not be glued to it.
	local -a lines=()
	mapfile lines <"$inbox"
	local l n cut=''
	for l in "${lines[@]}"; do
		n=${#l}
		if [ "${l:n-1}" != $'\n' ]; then
			cut=$'\n'
		elif [ "${l:0:${#prefix}}" = "$prefix" ] && [ "${l:n-3}" = '"}'$'\n' ]; then
			say already-queued
			return 0
		fi
	done
	[ -e "$dir/exit" ] && { say finished; return 0; }
	# One printf of the whole line, under the lock; readers skip a line still missing its
	# newline, so they never see half of it.
	printf '%s%s\n' "$cut" "$line" >&"$lock" || fail 1 "could not append to $inbox (disk full?)"
	say queued
}
main delegate-say-complete
