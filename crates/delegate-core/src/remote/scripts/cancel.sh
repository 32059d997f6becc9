# delegate cancel script. Sent on the stdin of bash (REMOTE_COMMAND in runner.rs) over SSH, shaped like the launch
# script: Rust prepends `DLG_VARS='<base64>'` (remote root, task key, tmux session, NUL-
# separated; see render_cancel in sync_protocol.rs), and the body is one function called
# on the last line with a sentinel, so a script cut off in transit runs nothing.
#
# Output: one line on stdout, exit 0
#   DELEGATE-CANCEL signalled         the runner (and the agent's group, if it had started) got
#                                     the request; the runner records `cancelled` in `exit`
#                                     and sends SIGKILL after its grace
#   DELEGATE-CANCEL already-finished  the runner had recorded `exit`, or the agent's group was
#                                     gone (its exit record, written moments later, then still
#                                     says `cancelled`: the request landed first)
#   DELEGATE-CANCEL not-started       the runner has not started: it will find the mark and
#                                     never start the agent
#   DELEGATE-CANCEL no-task           no task directory yet: the launch, when it comes (or is
#                                     sent again), finds the mark and starts nothing
# Failures: `DELEGATE-ERROR <code> <message>` on stderr: 23 (damaged or cut script, no
# flock), 25 (the root is not this user's, or the mark cannot be written), 1 (lock timeout,
# with the mark written: the lead retries the cancel).
#
# The mark: `<root>/tasks/<key>.cancelled`, next to the task directory (which may not exist
# yet: the launch can still be on its way), kept for good. It is written first; then, if the
# task directory exists, this script reads the runner's `started` line (under an flock on
# the directory's `start.lock`, so two cancels of one task do not interleave). The runner
# looks for the mark before it writes that line and again after (run.sh): so either this
# script sees the `started` line and stops the runner's agent, or the line was written
# after the mark and the runner's second look sees the mark and starts no agent. A
# directory made after we looked can only hold a runner that looks after the mark was
# written. The launch script also refuses a task with a mark before it creates anything
# (launch.sh).
# Inside a started task, `cancel` is written before agent.pgid is read, and the runner
# writes agent.pgid before it looks for `cancel`, so one of the two always sees the other.
# KILL is the runner's job (it knows its grace period); only when the runner itself is
# gone does this script escalate to SIGKILL, after 5 s, and close the tmux session.

main() {
	if [ "${1-}" != delegate-cancel-complete ]; then
		printf 'DELEGATE-ERROR 23 the cancel script arrived incomplete: nothing was done\n' >&2
		exit 23
	fi
	set -uo pipefail
	umask 077
	local -a v
	mapfile -d '' -t v < <(base64 -d <<<"$DLG_VARS")
	if [ "${#v[@]}" -ne 3 ]; then
		printf 'DELEGATE-ERROR 23 the cancel variables did not decode (got %s fields)\n' "${#v[@]}" >&2
		exit 23
	fi
	local root=${v[0]} key=${v[1]} session=${v[2]}
	# shellcheck disable=SC2088 # a literal "~/" prefix, expanded here on purpose
	case $root in "~") root=$HOME ;; "~/"*) root=$HOME/${root:2} ;; esac
	local dir=$root/tasks/$key
	# Nothing is read or written through a root that is not this user's (own-root.sh).
	local root_problem
	if foreign_root "$root"; then
		# shellcheck disable=SC2154 # set by foreign_root
		printf 'DELEGATE-ERROR 25 %s\n' "$root_problem" >&2
		exit 25
	fi
	say() { printf 'DELEGATE-CANCEL %s\n' "$1"; }
	hash flock 2>/dev/null || {
		printf 'DELEGATE-ERROR 23 flock (util-linux) not found on PATH (%s) on this host: nothing was done\n' "$PATH" >&2
		exit 23
	}
	local t=$EPOCHREALTIME at lock mark=$root/tasks/$key.cancelled
	TZ=UTC0 printf -v at '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"
	# A cancel may reach a host before the first launch ever made tasks/ there.
	if ! { [ -d "$root/tasks" ] || mkdir -p -- "$root/tasks"; } ||
		! { printf 'cancelled at=%s\n' "$at" >"$mark.tmp" && mv -f -- "$mark.tmp" "$mark"; }; then
		rm -f -- "$mark.tmp"
		printf 'DELEGATE-ERROR 25 could not write the cancel mark %s (disk full?): nothing was done\n' "$mark" >&2
		exit 25
	fi

	[ -d "$dir" ] || { say no-task; return 0; }
	if ! exec {lock}>>"$dir/start.lock" || ! flock -w 10 -x "$lock"; then
		printf 'DELEGATE-ERROR 1 could not lock %s within 10 s (the mark is written)\n' "$dir/start.lock" >&2
		exit 1
	fi
	[ -e "$dir/exit" ] && { say already-finished; return 0; }
	printf 'cancel requested at=%s\n' "$at" >"$dir/cancel.tmp" && mv -f -- "$dir/cancel.tmp" "$dir/cancel"

	# The runner's pid is on the first state line; it is ours only if that process still
	# runs this task's run.sh (a pid can be recycled).
	local pgid='' first='' runner='' arg ours=0
	# Only a whole line: the runner writes the file in place, and a read that comes mid-write
	# finds no newline yet (then no agent yet, as when the file is missing).
	[ -f "$dir/agent.pgid" ] && { read -r pgid <"$dir/agent.pgid" || pgid=''; }
	read -r first <"$dir/state" 2>/dev/null
	exec {lock}>&- # seen under the lock: the runner's `started` line, or it will see the mark
	[[ $first =~ ^started\ pid=([0-9]+) ]] && runner=${BASH_REMATCH[1]}
	local -a cmdline=()
	[ -n "$runner" ] && mapfile -d '' -t cmdline <"/proc/$runner/cmdline" 2>/dev/null
	for arg in "${cmdline[@]}"; do [ "$arg" = "$dir/run.sh" ] && ours=1; done
	if ! [[ $pgid =~ ^[0-9]+$ ]] || [ "$pgid" -le 1 ]; then
		pgid=''
		# No agent yet and no runner to start one: the mark keeps it that way.
		[ "$ours" = 1 ] || { say not-started; return 0; }
	elif ! kill -TERM -- "-$pgid" 2>/dev/null; then
		say already-finished
		return 0
	else
		kill -CONT -- "-$pgid" 2>/dev/null # a stopped process only sees TERM once continued
	fi

	if [ "$ours" = 1 ]; then
		# Tells the runner now rather than at its next wake-up (up to 30 s: an idle runner sleeps); one that has not
		# started its agent yet stops it the moment it does.
		kill -USR1 "$runner" 2>/dev/null
		# Wait here (up to 30 s; the runner SIGKILLs after its grace) for its exit record,
		# so the lead learns the ending with one sync instead of polling over new
		# connections.
		local wait_nap tries=0
		exec {wait_nap}<> <(:)
		while [ ! -e "$dir/exit" ] && [ "$tries" -lt 300 ]; do
			read -r -t 0.1 -u "$wait_nap"
			tries=$((tries + 1))
		done
		say signalled
		return 0
	fi

	# No runner: nobody else will escalate or close the session.
	local nap i
	exec {nap}<> <(:)
	for ((i = 0; i < 50; i++)); do
		kill -0 -- "-$pgid" 2>/dev/null || break
		read -r -t 0.1 -u "$nap"
	done
	kill -KILL -- "-$pgid" 2>/dev/null
	tmux -L delegate kill-session -t "=$session" 2>/dev/null
	say signalled
}
main delegate-cancel-complete
