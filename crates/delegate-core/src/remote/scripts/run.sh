# Body of the per-task runner that tmux starts (`bash <task dir>/run.sh`). The launch
# script prepends, as bash declarations: TASK_DIR WORKDIR DELIVERY RUN_PATH TASK_KEY TASK_ID
# TIMEOUT_SECS (0: none) TURN_LIMIT (0: the agent keeps its own) TURN_MARKER GRACE_SECS
# SPEND_LIMIT (empty, or the budget and the input, cached input and output prices, see
# below) and the AGENT_ARGV array. It records that it started, runs the agent with its output teed into
# the task directory, and records how the agent ended whether or not the agent cooperated.
#
# Before anything else it looks for the cancel mark next to its directory
# (`<root>/tasks/<key>.cancelled`): with the mark it starts no agent, writes
# `refused pid=<pid> at=<utc> cancelled` as its first state line (the launch script reads
# it and reports the cancel) and an exit record `0 <utc> cancelled`; without it, it writes
# its `started` line, so a cancel coming later finds it and stops the agent, and looks for
# the mark once more (a cancel that came in between, below): found then, it starts no
# agent and records `exited 0 cancelled`.
#
# Files it writes in the task directory (the lead reads them back by sync):
#   state        append-only lines:  started pid=<runner pid> at=<utc> [start=<ticks>]   (or refused ..., above)
#                                    <utc> running
#                                    <utc> stopping <timed_out|turn_limit|budget|cancelled|hangup>
#                                    <utc> killing <same word>      (the grace ran out)
#                                    <utc> exited <code> [timed_out|turn_limit|cancelled|budget <spent> <limit>]
#   agent.pgid   the agent's process group, one line written in place by one write (a
#                reader takes only a whole line: cancel.sh): the agent runs in a group of its
#                own, so a stop reaches everything it started, and the cancel script finds it
#   stream.jsonl the agent's stdout (also shown in the pane); stderr.log its stderr
#   runner.err   the runner's own stderr (bash's errors, tee's): empty when all went well
#   exit         <code> <utc> [timed_out|turn_limit|cancelled|budget <spent> <limit>]
#                (tmp + rename, always written: code is the agent's status, 128+N when
#                signal N ended it; spent and limit in dollars)
#
# The spend limit (Codex has none of its own): SPEND_LIMIT holds the budget and the prices of
# an input, a cached input and an output token, all in 1e-11 dollars (bash has only
# integers). Every half second (and at each other wake-up) the runner reads what Codex appended to its session log
# ($CODEX_HOME/sessions/YYYY/MM/DD/rollout-*-<thread id>.jsonl, the thread id from the
# stream's first line), prices the last cumulative `total_token_usage` of its `token_count`
# events, and stops the agent like the turn limit does once the cost reaches the budget.
# A fifth word names the thread a reopen resumes: its log already holds the earlier runs'
# counts, read before the agent starts and left out of this run's cost (unless the new
# counts start below them, i.e. Codex began counting afresh).
#
# A stop (wall clock, turn limit, cancel, the pane hanging up) sends SIGTERM to the agent's
# group, and SIGKILL GRACE_SECS later if anything is left.
#
# The runner sleeps on one pipe it reads, the event pipe, and wakes for a line on it:
# `started <pgid>` and `exit <code>` from the monitor (the subshell that starts the agent
# and waits for it), `turns` from the turn counter, and the words its signal traps write
# (SIGUSR1 from the cancel script: `cancel`; SIGHUP, SIGTERM, SIGINT: `hangup`). Otherwise
# it wakes only when a timer is due: the wall clock, the SIGKILL after the grace, every half
# second while a spend limit is in force (the session log is polled), and once every
# 30 seconds (IDLE_WAKE_US) as a safety net (a monitor killed by hand, a lost signal). An idle
# runner without a spend limit thus costs no CPU: no ticker process, no periodic wake-up.
# The runner itself never calls `wait` while signals can arrive: a
# trapped signal landing just as `wait` reaps a child makes bash lose that child's status,
# and the runner would then wait forever. The monitor has no traps, so its `wait` is safe.

# --- start-up, before main is even parsed --------------------------------------------
# The launch waits for the `started` line, so what comes before it is kept short and at the
# top level: bash runs these lines as it reads them, and parses (and, calling it, copies)
# the body of main only after. Everything else waits for main.
set -uo pipefail
umask 077
# (The agent's PATH: mv is looked up there, as everything the runner starts.)
PATH=$RUN_PATH
# The runner's own complaints (bash's, tee's) go to a file of the task, not only to a pane
# nobody watches: a runner that stops unexpectedly leaves its last words there.
exec 2>>"$TASK_DIR/runner.err"
# The traps, set before anything is written: the cancel script finds our pid in `state`,
# and SIGUSR1 would otherwise kill us. They write their word to the event pipe, made after
# the `started` line (its process is not on the launch's way); a word from before then
# waits in `early`. A trap runs even while `read` waits, so its line wakes the loop at once.
ev='' early=()
event() {
	if [ -n "$ev" ]; then printf '%s\n' "$1" >&"$ev"; else early+=("$1"); fi
}
trap 'event cancel' USR1
trap 'event hangup' HUP TERM INT

# Builtins only (a command substitution would fork): sets NOW to the current UTC time.
stamp() {
	local t=$EPOCHREALTIME # one reading; its decimal separator follows the locale
	TZ=UTC0 printf -v NOW '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"
}
note() {
	stamp
	printf '%s %s\n' "$NOW" "$*" >>"$TASK_DIR/state"
}
# `exit` is written last, by rename: whoever sees it sees every other record complete.
finish() { # code [reason]
	stamp
	printf '%s exited %s%s\n' "$NOW" "$1" "${2:+ $2}" >>"$TASK_DIR/state"
	printf '%s %s%s\n' "$1" "$NOW" "${2:+ $2}" >"$TASK_DIR/exit.tmp" &&
		mv -f -- "$TASK_DIR/exit.tmp" "$TASK_DIR/exit"
}

# The cancel mark, looked for before and again after the `started` line. cancel.sh writes
# its mark before it reads `state`: a cancel that found no `started` line wrote its mark
# before that line was written, so the second look sees it; one that found the line stops
# the agent itself. No moment where both miss each other, and no lock (a process) on the
# way to `started`.
mark=${TASK_DIR%/*}/$TASK_KEY.cancelled
stamp
if [ -e "$mark" ]; then
	printf 'refused pid=%s at=%s cancelled\n' "$$" "$NOW" >>"$TASK_DIR/state"
	finish 0 cancelled # (no agent ran)
	exit 0
fi
# Where /proc has it, the line also carries the runner's start time (ticks since boot, the
# 22nd field of /proc/<pid>/stat): a small sync that finds that pid with that start time
# knows the runner alive with no tmux process (sync.sh: runners_alive); a recycled pid has
# another. Read with builtins, as everything before this line, and split by read (no =~:
# bash compiles a regular expression at each use, ~0.1 ms on the launch's way). Fields:
# pid (comm) state ppid ..., the start time the 22nd (bash's command name has no space).
start=''
if IFS=' ' read -r -a proc_stat 2>/dev/null <"/proc/$$/stat"; then
	case ${proc_stat[21]-} in '' | *[!0-9]*) ;; *) start=" start=${proc_stat[21]}" ;; esac
fi
unset proc_stat
printf 'started pid=%s at=%s%s\n' "$$" "$NOW" "$start" >>"$TASK_DIR/state"
if [ -e "$mark" ]; then
	finish 0 cancelled # (no agent ran; the launch reported the start)
	exit 0
fi
# The event pipe. (bash runs a trap between commands: a word from before this line waits
# in `early` and is sent here; one from after goes to the pipe itself. None goes twice.)
exec {ev}<> <(:)
for word in "${early[@]}"; do printf '%s\n' "$word" >&"$ev"; done

main() {
	# The agent's environment, as the launch script captured it (the user's login shell and
	# env files): NAME=value entries, NUL-separated, read once and emptied, since it may hold
	# credentials (emptied, not removed: no `rm` process on every launch). delegate's own
	# variables and the PATH it resolved come after, and win.
	if [ -s "$TASK_DIR/agent.env" ]; then
		local -a agent_env
		local kv
		mapfile -d '' -t agent_env <"$TASK_DIR/agent.env"
		: >"$TASK_DIR/agent.env"
		# shellcheck disable=SC2163 # kv is NAME=value: export sets NAME
		for kv in "${agent_env[@]}"; do export "$kv" 2>/dev/null || true; done
	fi
	export PATH=$RUN_PATH DELEGATE_TASK_DIR=$TASK_DIR DELEGATE_TASK_KEY=$TASK_KEY DELEGATE_TASK_ID=$TASK_ID

	# Microseconds since the epoch, for deadlines.
	local US
	usecs() { US=${EPOCHREALTIME/[.,]/}; }

	note running

	cd -- "$WORKDIR" || {
		note failed workdir "$WORKDIR" vanished
		finish 126
		return 126
	}
	# stdin is always redirected: the prompt file, or /dev/null when the agent reads the
	# file itself. Never the tmux tty, which an agent (Codex) would wait on forever.
	local input=/dev/null
	[ "$DELIVERY" = stdin ] && input=$TASK_DIR/prompt

	# --- the spend limit, from Codex's session log ------------------------------------
	# Builtins only, bounded reads: a line longer than SPEND_LINE is skipped whole (token
	# counts are under 1 KiB; the log's other lines hold whole tool outputs), and one poll
	# reads at most SPEND_READS pieces, the rest waits for the next poll. A count that is
	# not a plain non-negative integer of at most 10 digits makes the event ignored: at most
	# 1e10 tokens times at most 1e8 per token, three times, stays within 64 bits.
	[ -n "${SPEND_LIMIT+set}" ] || SPEND_LIMIT=()
	local spend_thread=${SPEND_LIMIT[4]-} spend_fd='' spend_partial='' spend_skip=0 spent=0 spend_base=0
	local -r SPEND_LINE=4096 SPEND_READS=2048
	over_budget() { # true once the cost counted so far reaches the budget
		# Every local starts set: under `set -u` one read while still unset (a `read` at the end
		# of a file leaves its variable unset) would end the runner with no exit record.
		local line='' piece='' n=0 status=0 tokens=0 cached_in=0 out=0 cost=0
		if [ -z "$spend_thread" ]; then
			IFS= read -r -n "$SPEND_LINE" line 2>/dev/null <"$TASK_DIR/stream.jsonl"
			[[ $line =~ \"type\":\"thread\.started\".*\"thread_id\":\"([0-9A-Za-z-]{1,64})\" ]] || return 1
			spend_thread=${BASH_REMATCH[1]}
		fi
		if [ -z "$spend_fd" ]; then
			local f
			for f in "${CODEX_HOME:-${HOME-}/.codex}"/sessions/[0-9]*/[0-9]*/[0-9]*/rollout-*-"$spend_thread".jsonl; do
				[ -f "$f" ] && exec {spend_fd}<"$f" && break
			done
			[ -n "$spend_fd" ] || return 1
		fi
		while ((n < SPEND_READS)); do
			n=$((n + 1))
			piece=''
			IFS= read -r -n "$SPEND_LINE" -u "$spend_fd" piece
			status=$?
			line=$spend_partial$piece
			if ((status != 0)); then # end of the file for now: keep the unfinished line
				spend_partial=$line
				((${#spend_partial} < SPEND_LINE)) || { spend_partial='' spend_skip=1; }
				break
			fi
			spend_partial=''
			if ((${#piece} >= SPEND_LINE)); then # no newline within the bound: skip to the next
				spend_skip=1
				continue
			fi
			if ((spend_skip)); then # the tail of an over-long line
				spend_skip=0
				continue
			fi
			[[ $line == *'"type":"token_count"'* && $line =~ \"total_token_usage\":\{([^\}]*)\} ]] || continue
			line=,${BASH_REMATCH[1]},
			[[ $line =~ ,\"input_tokens\":([0-9]{1,10}), ]] || continue
			tokens=$((10#${BASH_REMATCH[1]}))
			[[ $line =~ ,\"cached_input_tokens\":([0-9]{1,10}), ]] || continue
			cached_in=$((10#${BASH_REMATCH[1]}))
			[[ $line =~ ,\"output_tokens\":([0-9]{1,10}), ]] || continue
			out=$((10#${BASH_REMATCH[1]}))
			# Cached input is part of the input, billed at its own price.
			((cached_in <= tokens)) || cached_in=$tokens
			cost=$(((tokens - cached_in) * SPEND_LIMIT[1] + cached_in * SPEND_LIMIT[2] + out * SPEND_LIMIT[3]))
			# A resumed thread whose counts start below the earlier runs' was counted afresh.
			((spend_base > 0 && cost < spend_base)) && spend_base=0 spent=0
			# The totals only grow; the highest seen is what was spent.
			((cost > spent)) && spent=$cost
		done
		((spent - spend_base >= SPEND_LIMIT[0]))
	}
	# A resumed thread: what its log holds already was spent by the earlier runs.
	if ((${#SPEND_LIMIT[@]} == 5)); then
		over_budget
		spend_base=$spent
	fi
	local USD
	usd() { # amount in 1e-11 dollars: sets USD to dollars with six decimals
		local micro=$(($1 / 100000))
		printf -v USD '%d.%06d' $((micro / 1000000)) $((micro % 1000000))
	}

	# The stream reader tees the agent's stdout into stream.jsonl and the pane and, when
	# delegate enforces the turn limit, counts the lines holding TURN_MARKER. It lives
	# outside the agent's group and ignores the pane's hangup and Ctrl-C, so a stop never
	# cuts the record short: it ends when the last writer of the agent's stdout is gone.
	read_stream() {
		trap '' HUP INT
		if ((TURN_LIMIT > 0)) && [ -n "$TURN_MARKER" ]; then
			exec tee -a -- "$TASK_DIR/stream.jsonl" >(count_turns)
		fi
		exec tee -a -- "$TASK_DIR/stream.jsonl"
	}
	# TURN_MARKER is an extended regular expression. grep does the scanning (-a: a stray NUL must not switch it to "Binary file matches");
	# bash only sees marker lines. It keeps reading after the limit so tee never hits a
	# closed pipe.
	count_turns() {
		local n=0
		grep -a --line-buffered -E -e "$TURN_MARKER" | while IFS= read -r _; do
			n=$((n + 1))
			if [ "$n" -eq $((TURN_LIMIT + 1)) ]; then printf 'turns\n' >&"$ev"; fi
		done
	}
	local stream_w reader
	exec {stream_w}> >(read_stream)
	reader=$!

	# The monitor starts the agent in a process group of its own (`set -m`; setsid would do
	# the same but is not in coreutils), records the group, and reports how the agent ended.
	# It ignores the pane's hangup and Ctrl-C so that it outlives them; the agent gets the
	# default dispositions back.
	(
		trap '' HUP INT
		# A resumed thread's session log is open already: the agent gets no copy of it.
		[ -z "$spend_fd" ] || exec {spend_fd}<&-
		set -m
		(
			trap - HUP INT
			exec "${AGENT_ARGV[@]}"
		) <"$input" >&"$stream_w" 2>>"$TASK_DIR/stderr.log" {stream_w}>&- {ev}>&- &
		agent=$!
		set +m
		exec {stream_w}>&-
		# In place, not a temporary file renamed by `mv`: a process less on every launch, on
		# the brother's CPU just as the launch answers (measured: launches back to back on
		# one CPU were ~0.5 ms faster). One short line is one write(2); a reader that comes
		# mid-write sees it without its newline and ignores it (cancel.sh).
		printf '%s\n' "$agent" >"$TASK_DIR/agent.pgid"
		printf 'started %s\n' "$agent" >&"$ev"
		wait "$agent"
		code=$?
		printf 'exit %s\n' "$code" >&"$ev"
		exit "$code"
	) &
	local monitor=$!
	exec {stream_w}>&-

	local reason='' stopping=0 killed=0 deadline=0 kill_at=0 pgid='' code='' line
	usecs
	((TIMEOUT_SECS > 0)) && deadline=$((US + TIMEOUT_SECS * 1000000))
	signal() { # signal: to the agent's group, and SIGCONT (a stopped process only sees TERM once continued)
		kill "-$1" -- "-$pgid" 2>/dev/null
		kill -CONT -- "-$pgid" 2>/dev/null
	}
	stop() { # reason [signalled]: SIGTERM to the group (unless the cancel script sent it), then a grace
		# A hangup (the tmux session or server killed under us) is recorded too: the lead
		# reads it as `lost`, since the agent neither finished nor was stopped by delegate.
		[ -z "$reason" ] && reason=$1
		((stopping)) && return
		stopping=1
		note stopping "$1"
		# Before `started`, the signal waits for the group to exist.
		[ -n "$pgid" ] && [ "${2-}" != signalled ] && signal TERM
		usecs
		kill_at=$((US + GRACE_SECS * 1000000))
	}
	# Seconds between safety wake-ups of an otherwise idle runner; the spend poll's period.
	local -r IDLE_WAKE_US=30000000 SPEND_POLL_US=500000
	local wake_at wait_for
	while :; do
		# The next timer due: whichever comes first of the safety wake-up, the spend poll, the
		# wall clock and the SIGKILL after the grace.
		usecs
		wake_at=$((US + IDLE_WAKE_US))
		((${#SPEND_LIMIT[@]} >= 4 && !stopping && US + SPEND_POLL_US < wake_at)) && wake_at=$((US + SPEND_POLL_US))
		((deadline > 0 && !stopping && deadline < wake_at)) && wake_at=$deadline
		# (No SIGKILL timer before the agent's group is known: its `started` line wakes us.)
		((stopping && !killed && kill_at < wake_at)) && [ -n "$pgid" ] && wake_at=$kill_at
		wait_for=$((wake_at - US))
		((wait_for > 1000)) || wait_for=1000
		printf -v wait_for '%d.%06d' $((wait_for / 1000000)) $((wait_for % 1000000))
		# A timeout, or a trapped signal (its trap has written its line by now, read next
		# round), ends the read with no line: the checks below run either way. (`read`
		# cannot meet end of file here: we hold the pipe open for writing too.)
		line=''
		IFS= read -r -t "$wait_for" -u "$ev" line || line=''
		case $line in
		"started "*)
			pgid=${line#started }
			# A cancel that came before agent.pgid existed found nothing to signal. (The cancel
			# script writes `cancel` before it reads agent.pgid, which exists by now: one of
			# the two always sees the other.)
			if ((stopping)); then signal TERM; elif [ -e "$TASK_DIR/cancel" ]; then stop cancelled; fi
			;;
		"exit "*)
			code=${line#exit }
			break
			;;
		cancel) stop cancelled signalled ;;
		turns) stop turn_limit ;;
		hangup) stop hangup ;;
		esac
		((${#SPEND_LIMIT[@]} >= 4 && !stopping)) && over_budget && stop budget
		# Every wake-up re-checks what a lost signal would have said.
		[ -e "$TASK_DIR/cancel" ] && stop cancelled signalled
		usecs
		((deadline > 0 && US >= deadline)) && stop timed_out
		if ((stopping && !killed && US >= kill_at)) && [ -n "$pgid" ]; then
			killed=1
			note killing "$reason"
			signal KILL
		fi
		# A monitor gone without its `exit` line (killed by hand): its own status is the best
		# left. Bash reaped it already, so this wait cannot block.
		if ! kill -0 "$monitor" 2>/dev/null; then
			wait "$monitor"
			code=$?
			break
		fi
	done

	# Gone or not, whatever the agent left in its group (background shells, servers) ends
	# with it; then the reader drains the pipe, so stream.jsonl is complete before `exit`
	# says the task ended.
	alive() { # pid, or -pgid: true while it exists (a group: while a member is not a zombie)
		kill -0 -- "$1" 2>/dev/null || return 1
		[[ $1 == -* ]] && [ -r /proc/self/stat ] || return 0
		# Orphans killed with the agent stay zombies where PID 1 does not reap them
		# (containers without an init); they hold nothing and must not hold us up.
		local f s
		for f in /proc/[0-9]*/stat; do
			IFS= read -r s <"$f" 2>/dev/null || continue
			s=${s##*) } # after the command name: state ppid pgrp ...
			[ "${s%% *}" = Z ] && continue
			s=${s#* }
			s=${s#* }
			[ "${s%% *}" = "${1#-}" ] && return 0
		done
		return 1
	}
	gone() { # target: true once it is not alive, false if GRACE_SECS pass first
		local end
		usecs
		end=$((US + GRACE_SECS * 1000000))
		while alive "$1"; do
			usecs
			((US < end)) || return 1
			# A nap without a process: a read with a timeout on the event pipe, whose lines
			# (a late signal's) no longer matter.
			read -r -t 0.01 -u "$ev"
		done
	}
	if [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null; then
		kill -CONT -- "-$pgid" 2>/dev/null
		gone "-$pgid" || kill -KILL -- "-$pgid" 2>/dev/null
	fi
	gone "$reader" || kill -KILL "$reader" 2>/dev/null

	# The cancel script's request wins over whatever else stopped the agent.
	[ -e "$TASK_DIR/cancel" ] && reason=cancelled
	if [ "$reason" = budget ]; then
		usd $((spent - spend_base))
		reason="budget $USD"
		usd "${SPEND_LIMIT[0]}"
		reason="$reason $USD"
	fi
	[[ $code =~ ^[0-9]+$ ]] || code=255
	finish "$code" "$reason"
	return "$code"
}
main "$@"
