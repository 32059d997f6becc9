# delegate sync script: one exec reports on every task of a host. Sent on the stdin of
# bash (REMOTE_COMMAND in runner.rs), shaped like the launch script: Rust prepends `DLG_VARS='<escaped text>'` (remote/escape.rs) and the body
# is one function called on the last line with a sentinel, so a cut script runs nothing.
#
# DLG_VARS, one field per line (see render_sync in protocol.rs): remote root, max bytes per
# file, max file bytes in the whole reply (the budget), since (below), the number of tasks
# whose files are all looked at (nfull), the number of tasks (n), the number of them whose
# launch.json is wanted (nwant), p and the prefix every key starts with (sent once); then
# the n task keys less that prefix, the nfull first; then per task, in the same order,
# nine fields: tmux session (- in a large sync, which needs none: the lead looks the
# sessions up), want launch.json (0/1), and the offsets of state, exit, stream.jsonl,
# events.jsonl, outbox.jsonl, stderr.log, delivered.jsonl (the message receipts the inbox
# helper and the Claude hook write). Every field is a single line (Rust checks), so newlines can separate them: bash
# reads a command substitution in blocks but a pipe into mapfile one byte per syscall. For
# the same reason every listing below is split in memory, never read line by line from a
# pipe; and the keys come as one block, so that checking them and making them find's
# starting points are a few operations on whole arrays, not a loop in bash.
#
# since: a time on this brother's file-system clock (seconds, with milliseconds where the
# file system keeps fine times: then the margin is short, protocol.rs) before which none of
# the files of the tasks after the first nfull changed in a way the lead has not read: the
# lead's last sync of each of them read every file to the end (its offsets are the sizes
# that sync saw), and it takes the time, less a margin, from the CLOCK of the oldest of
# those syncs (below). Their files not modified since are not looked at further: a sync of
# many quiet tasks costs little more than one stat per file, made by find.
#
# Output (stdout), framed by lengths so any byte can travel; read by parse_sync:
#   DELEGATE-SYNC 1 <tasks> <tmux server running 0|1> <remote utc time> <clock>
#   where clock is the file-system time (seconds.fraction) of a file this sync wrote in
#   the remote root before it looked at anything ("-" if it could not; "=" when it needed
#   none: a small sync that found every quiet task unchanged, below), then, in a large
#   sync (more than LARGE_SYNC tasks) whose sessions tmux listed:
#     A <len>\n<len bytes>\n         the live tmux sessions, separated by ":" (tmux allows
#                                    no ":" in a session name)
#   then, in a large sync:
#     Q <count>                      the tasks not named below: each one's directory
#                                    exists, no file of it changed, its launch.json is not
#                                    wanted, and its session is alive when the A block
#                                    lists it
#   then per task (in a large sync, per task not counted by Q), in request order:
#     T <task key> <dir exists 0|1> <session alive 0|1, or ? in a large sync: alive when
#                                    the A block lists it>
#     F <task key> <file> <offset> <size> <len>\n<len bytes>\n   per file grown past its offset;
#                                    <len> is at most the per-file cap and what is left of
#                                    the budget, so it may be 0 (more is waiting: ask again)
#     S <task key> <file> <got>      the file shrank while being read: only the first <got>
#                                    of those <len> bytes are the file's, the rest is padding
#     L <task key> <len>\n<len bytes>\n                           launch.json, when asked for
#   END
# A reply without END was cut short.
#
# Cost does not grow by a process per task: one tmux call lists the live sessions (none in
# a large sync whose resident shell kept a listing: tmux_kept), one find per kind of task
# (since 0, or not; per thousand tasks) stats every synced file, printing only those modified
# since the task's since, and only a file that grew is read: with bash builtins when what
# is wanted ends within BUILTIN_READ_MAX bytes of the file's start (every file of a task
# but a long stream or stderr log), else with one dd, whose seek makes its cost the same at
# any offset. GNU find, dd and touch.
#
# A small sync (SMALL_SYNC tasks or fewer: a status or wait poll) starts no process at all
# when every task's runner is alive and its quiet tasks are unchanged, the usual poll of
# running agents: a process start costs more here (1.5 to 3.5 ms) than builtins looking at
# a few dozen tasks. Liveness then comes from /proc (runners_alive) instead of tmux, and
# bash's -nt compares each quiet file with a file stamped with the since (since_ref)
# instead of find; find still looks at the tasks with a file changed since, and at the
# full ones. With no find, the header's clock is "=": the lead keeps the clocks it has.
#
# A large sync names only the tasks with something to say: bash writes each line of its
# output with a write(2) of its own (it line-buffers its stdout), and a thousand T lines
# were a thousand writes, each read and sent on by sshd, and a loop over the tasks in
# bash: ~20 ms of a sync of a thousand quiet tasks. The lead, which knows every task's
# session, looks the sessions up in the A block itself.
#
# Liveness is read before files are looked at: the runner writes `exit` before it ends and
# before its session ends, so a runner or session missing here whose `exit` is missing
# below died without one.

main() {
	if [ "${1-}" != delegate-sync-complete ]; then
		printf 'DELEGATE-ERROR 23 the sync script arrived incomplete: nothing was read\n' >&2
		exit 23
	fi
	set -uo pipefail
	# The clock file below is this user's alone, like everything under the remote root.
	umask 077
	# Bytes, not characters: ${#x} and ${x:o:n} on file contents, and dd's English summary.
	export LC_ALL=C
	# Word splitting on newlines only, never globbing: how listings become arrays below.
	set -f
	local IFS=$'\n' decoded
	# Escaped text (remote/escape.rs): bash's printf decodes it, no process.
	printf -v decoded '%b' "$DLG_VARS"
	# Declared, then assigned: `local -a v=(...)` of ten thousand words costs bash four
	# times as much (9 ms against 2 at a thousand tasks).
	local -a v
	# shellcheck disable=SC2206 # split on newlines on purpose (IFS above, globbing off)
	v=($decoded)
	# Header fields, then fields per task.
	local -r H=8 ROW=9
	local n=${v[5]-x} nfull=${v[4]-x} since=${v[3]-x} nwant=${v[6]-x}
	# (Globs, not =~: bash compiles a regular expression at each use, ~0.1 ms.)
	case $n$nfull$nwant${since/./} in *[!0-9]* | '') n=-1 ;; esac
	case $since in
	*.*) [[ $since == [0-9]*.[0-9][0-9][0-9] ]] || n=-1 ;;
	[0-9]*) ;;
	*) n=-1 ;;
	esac
	case ${v[7]-} in p*) ;; *) n=-1 ;; esac
	if [ "$n" -lt 0 ] || [ "$nfull" -gt "$n" ] || [ "${#v[@]}" -ne $((H + n + ROW * n)) ]; then
		printf 'DELEGATE-ERROR 23 the sync variables did not decode (got %s fields)\n' "${#v[@]}" >&2
		exit 23
	fi
	local root=${v[0]} max=${v[1]} budget=${v[2]} i j
	# shellcheck disable=SC2088 # a literal "~/" prefix, expanded here on purpose
	case $root in "~") root=$HOME ;; "~/"*) root=$HOME/${root:2} ;; esac
	local -a files=(state exit stream.jsonl events.jsonl outbox.jsonl stderr.log delivered.jsonl)
	# Files wanted no further than this from their start are read with builtins (send_builtin).
	local -r BUILTIN_READ_MAX=262144
	# At most this many tasks, builtins first (above); past it, their per-task cost passes
	# that of the two processes.
	local -r SMALL_SYNC=32
	# Past this many tasks, a sync names only the tasks with something to say (above).
	local -r LARGE_SYNC=64
	# At most this many tasks per find (find_synced).
	local -r FIND_CHUNK=1000
	# How long a resident shell uses a tmux listing again (tmux_kept), at most.
	local -r TMUX_KEPT_SECS=10
	# Nothing is read or written through a root that is not this user's (own-root.sh).
	local root_problem
	if foreign_root "$root"; then
		# shellcheck disable=SC2154 # set by foreign_root
		printf 'DELEGATE-ERROR 25 %s\n' "$root_problem" >&2
		exit 25
	fi

	# Keys become paths and words of an eval below: plain names only, checked in one match
	# over the list of them.
	local -a keys
	keys=("${v[@]:H:n}")
	local prefix=${v[7]#p}
	keys=("${keys[@]/#/"$prefix"}")
	local keylist=$'\n'"${keys[*]}"$'\n'
	if [ "$n" -gt 0 ] && [[ $keylist == *[!A-Za-z0-9._$'\n'-]* || $keylist == *$'\n\n'* ||
		$keylist == *$'\n'.$'\n'* || $keylist == *$'\n'..$'\n'* ]]; then
		printf 'DELEGATE-ERROR 23 a task key is not a plain name\n' >&2
		exit 23
	fi
	local -a full quiet
	full=("${keys[@]:0:nfull}") quiet=("${keys[@]:nfull}")
	full=("${full[@]/#/./}") quiet=("${quiet[@]/#/./}")

	# Through the resident shell's tmux control client when it has one (tmux-control.sh: no
	# tmux process), else a plain client. (A control client is attached to a session: its
	# server runs.) Only for a sync of a few tasks: bash reads the client's answer from a
	# pipe a byte per read(2), where the plain client's comes in blocks, and hundreds of
	# sessions would cost more than the process saved. The plain client's lines carry the
	# server's version too: a resident shell without a control client is then asked for
	# one, attached to the first live session of this sync's tasks. A large sync lists the
	# names only, for the lead to look its sessions up in (the A block).
	# (exec: a command substitution with a redirection would fork once more before it runs
	# the program; so for find below.)
	local -A alive=()
	local running=0 listing name tmux_version='' live='' unknown=0
	local -a control_lines listed
	if [ "$n" -le "$SMALL_SYNC" ] && runners_alive; then
		# Each runner runs in its task's pane: the server runs, and every session is there.
		running=1
	elif [ "$n" -le "$LARGE_SYNC" ] && control_command "list-sessions -F '#{session_name}'"; then
		running=1
		for name in "${control_lines[@]}"; do alive[$name]=1; done
	elif [ "$n" -gt "$LARGE_SYNC" ]; then
		# For the lead's A block: the names, joined by ":" (array operations, no loop), kept
		# by a resident shell while its tmux server is seen unchanged (tmux_kept). No version
		# here (a format variable more per session): a large sync asks for no control client,
		# which serves launches and small syncs.
		local kids='' server
		if tmux_kept; then
			running=1 unknown='?'
		elif listing=$(exec tmux -L delegate list-sessions -F '#{pid} #{session_name}' 2>/dev/null); then
			running=1 unknown='?'
			# shellcheck disable=SC2206 # split on newlines on purpose (IFS above, globbing off)
			listed=($listing)
			server=${listed[0]%% *}
			listed=("${listed[@]#* }")
			IFS=:
			live=${listed[*]}
			IFS=$'\n'
			keep_tmux "$server"
		fi
	elif listing=$(exec tmux -L delegate list-sessions -F '#{version} #{session_name}' 2>/dev/null); then
		running=1
		for name in $listing; do alive[${name#* }]=1; done
		tmux_version=${listing%% *}
	fi
	# (Before fd 3 becomes stdout below: the request goes to the resident shell on fd 3.)
	if [ -n "$tmux_version" ]; then
		for ((j = 0, i = H + n; j < n; j++, i += ROW)); do
			if [ -n "${alive[${v[i]}]-}" ]; then
				control_wanted "$tmux_version" "${v[i]}"
				break
			fi
		done
	fi

	# The file-system clock, before anything is looked at: a file changed after this has a
	# later modification time (the lead keeps it for the next sync's since). Read from a
	# file written here (a network file system stamps files with its server's clock), never
	# through a link.
	local clock=- in_tasks=0 key all_exist=1
	local -a probe=()
	local -A exists=() size=() seen=()
	if cd -- "$root/tasks" 2>/dev/null; then
		in_tasks=1
		# A small sync's quiet tasks with no file changed since the since need no find:
		# they are dropped from `quiet` (their directories marked existing here).
		local ref
		if [ "$n" -le "$SMALL_SYNC" ] && [ "${#quiet[@]}" -gt 0 ] && since_ref; then
			local -a changed=()
			for key in "${quiet[@]}"; do
				[ -d "$key" ] || { all_exist=0 && continue; } # (missing: T <key> 0)
				for name in "${files[@]}"; do
					if [[ $key/$name -nt $ref ]]; then
						changed+=("$key")
						continue 2
					fi
				done
				exists[$key]=1
			done
			quiet=("${changed[@]}")
			# Nothing for find: no clock either (the lead keeps its own).
			[ $((${#full[@]} + ${#quiet[@]})) -gt 0 ] || clock='='
		fi
		# In the root, next to tasks/ (which holds task directories only).
		if [ "$clock" != = ] && ! [ -L ../.sync-clock ] && { : >../.sync-clock; } 2>/dev/null; then
			probe=(../.sync-clock)
		fi
	fi

	# One find per kind of task (find_synced, below): whether every asked task's directory is
	# there, its synced files' sizes, and the clock file's time. (The synced files: one
	# regular expression, see there.)
	local found=''
	local -a synced=(-regex '\./[^/]*/\(state\|exit\|stream\.jsonl\|events\.jsonl\|outbox\.jsonl\|stderr\.log\|delivered\.jsonl\)' -type f)
	[ "$in_tasks" = 1 ] || all_exist=0
	# The clock file goes with the full tasks' find, or with the quiet ones' when there is no
	# full task (the usual sync): one process then.
	local -a probe_for=("${probe[@]}")
	if [ "$in_tasks" = 1 ] && [ $((${#probe[@]} * (${#quiet[@]} == 0) + ${#full[@]})) -gt 0 ]; then
		find_synced - "${full[@]}" || exit 23
	fi
	# Without a clock file to read, the quiet tasks' files are all looked at, like the others.
	if [ "$in_tasks" = 1 ] && [ "${#quiet[@]}" -gt 0 ]; then
		if [ "${#probe[@]}" -eq 0 ]; then find_synced - "${quiet[@]}"; else find_synced "$since" "${quiet[@]}"; fi || exit 23
	fi
	eval "$found"
	# A task directory not found (gone, or not a directory): which ones, one test each. (The
	# small sync's quiet tasks are in `exists` already, and one of them missing cleared
	# all_exist.)
	if [ "$all_exist" = 0 ] && [ "$in_tasks" = 1 ]; then
		for key in "${full[@]}" "${quiet[@]}"; do [ -d "$key" ] && exists[$key]=1; done
	fi
	# A number the lead reads (at most 12 digits, a dot and 10), or =.
	case $clock in
	=) ;;
	'' | *[!0-9.]* | .* | *. | *.*.*) clock=- ;;
	*.*)
		local secs=${clock%.*} frac=${clock#*.}
		[ "${#secs}" -le 12 ] && [ "${#frac}" -le 10 ] || clock=-
		;;
	*) [ "${#clock}" -le 12 ] || clock=- ;;
	esac

	exec 3>&1
	local t=$EPOCHREALTIME now
	TZ=UTC0 printf -v now '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"
	printf 'DELEGATE-SYNC 1 %s %s %s %s\n' "$n" "$running" "$now" "$clock"
	[ "$unknown" = 0 ] || printf 'A %s\n%s\n' "${#live}" "$live"
	# The tasks named below: all of them, or in a large sync those with something to say (a
	# file seen, launch.json wanted, no directory). When none has, no loop at all.
	local -a named=()
	if [ "$n" -le "$LARGE_SYNC" ]; then
		for ((j = 0; j < n; j++)); do named+=("$j"); done
	else
		if [ "${#seen[@]}" -gt 0 ] || [ "$nwant" -gt 0 ] || [ "$all_exist" = 0 ]; then
			for ((j = 0, i = H + n + 1; j < n; j++, i += ROW)); do
				[[ -n ${seen[./${keys[j]}]-} || ${v[i]} != 0 || $all_exist == 0 && -z ${exists[./${keys[j]}]-} ]] && named+=("$j")
			done
		fi
		printf 'Q %s\n' $((n - ${#named[@]}))
	fi
	# T lines wait in `lines` and go out together, before the next F line or at the end.
	local want dir f off sz len got launch
	local -a lines=()
	local here=1
	for j in "${named[@]}"; do
		i=$((H + n + ROW * j)) key=${keys[j]}
		[ "$all_exist" = 1 ] || here=${exists[./$key]:-0}
		if [ "$unknown" = 0 ]; then
			lines+=("T $key $here ${alive[${v[i]}]:-0}")
		else
			lines+=("T $key $here ?")
		fi
		# A quiet task (no file of it seen, launch.json not wanted) is its T line alone (a
		# large sync does not name it at all).
		[[ ${seen[./$key]:-}${v[i + 1]} != 0 && $here == 1 ]] || continue
		want=${v[i + 1]} dir=$root/tasks/$key
		if [ -n "${seen[./$key]:-}" ]; then
			for ((f = 0; f < ${#files[@]}; f++)); do
				name=${files[f]} off=${v[i + 2 + f]}
				sz=${size[./$key/$name]:-}
				if [ -z "$sz" ] || [ "$sz" -le "$off" ]; then continue; fi
				len=$((sz - off))
				[ "$len" -le "$max" ] || len=$max
				[ "$len" -le "$budget" ] || len=$budget
				budget=$((budget - len))
				[ "${#lines[@]}" -eq 0 ] || printf '%s\n' "${lines[@]}"
				lines=()
				printf 'F %s %s %s %s %s\n' "$key" "$name" "$off" "$sz" "$len"
				if [ "$len" -eq 0 ]; then
					printf '\n'
					continue
				fi
				if [ $((off + len)) -le "$BUILTIN_READ_MAX" ]; then
					send_builtin "$dir/$name" "$off" "$len" "$sz"
				else
					send_bytes "$dir/$name" "$off" "$len"
				fi
				printf '\n'
				[ "$got" -eq "$len" ] || printf 'S %s %s %s\n' "$key" "$name" "$got"
			done
		fi
		if [ "$want" = 1 ] && [ -f "$dir/launch.json" ]; then
			launch=''
			IFS= read -r -d '' launch <"$dir/launch.json"
			lines+=("L $key ${#launch}" "$launch")
		fi
	done
	[ "${#lines[@]}" -eq 0 ] || printf '%s\n' "${lines[@]}"
	printf 'END\n'
}

# True when every task's runner is alive, seen with builtins; marks their sessions alive.
# A runner's `started` line (run.sh) names its pid and its start time (ticks since boot, the
# 22nd field of /proc/<pid>/stat); alive means /proc shows that pid with that start time
# and not a zombie (a recycled pid has another start time). A task without such a line
# (not started yet, a runner from before start times, no /proc) or with its runner gone
# makes it false: tmux is asked then, as before.
runners_alive() {
	[ -r /proc/self/stat ] || return 1
	# (No =~ here: bash compiles a regular expression at each use, ~0.1 ms.)
	local j i first pid start comm server='' IFS=' '
	local -a stat_fields
	for ((j = 0, i = H + n; j < n; j++, i += ROW)); do
		# (At most 256 bytes: an agent may have put anything there, a huge file with no newline.)
		first=''
		[ -f "$root/tasks/${keys[j]}/state" ] && IFS= read -r -n 256 first <"$root/tasks/${keys[j]}/state"
		[[ $first == "started pid="*" at="*" start="* ]] || return 1
		pid=${first#started pid=} start=${first##* start=}
		pid=${pid%% *}
		case $pid:$start in *[!0-9:]* | :* | *: | 0*) return 1 ;; esac
		[ "${#pid}" -le 10 ] && [ "${#start}" -le 20 ] || return 1
		proc_stat "$pid" || return 1
		[ "${stat_fields[19]-}" = "$start" ] && [[ ${stat_fields[0]-} != [ZXx] ]] || return 1
		# Its parent, a live tmux server (read once per server): a runner whose server was
		# killed is reparented while it winds down, and its session is gone already.
		if [ "${stat_fields[1]-}" != "$server" ]; then
			IFS= read -r comm 2>/dev/null <"/proc/${stat_fields[1]-0}/comm" && [ "$comm" = "tmux: server" ] || return 1
			server=${stat_fields[1]}
		fi
		alive[${v[i]}]=1
	done
}

# tmux_kept: in a resident shell, the live sessions (into `live`) from the listing an
# earlier large sync kept, when the server is the same process (pid and start time) with
# the same children, and the listing is at most TMUX_KEPT_SECS old. Listing a thousand
# sessions costs the tmux server some 15 ms (each turn of its loop polls every pane, and
# a new client takes several), and a large sync is mostly a status or wait poll of the
# same tasks. The children are the panes, one per session: a session that ended or began
# is a child gone or come. The listing is kept only where the children were read before
# it (keep_tmux; so a pane that came or went while tmux listed is seen the next time), and
# for a few seconds only: were a pane to end and a new one get its pid meanwhile (the
# pids come round again), the children would read the same while a session ended.
# Otherwise false, with `kids` the children of the server kept, read now.
tmux_kept() {
	[ "${__dlg_resident-}" = 1 ] && [ -n "${__dlg_kept_tmux_pid-}" ] || return 1
	local pid=$__dlg_kept_tmux_pid
	local -a stat_fields
	proc_stat "$pid" && [ "${stat_fields[19]-}" = "${__dlg_kept_tmux_start-}" ] || return 1
	IFS= read -r -d '' kids 2>/dev/null <"/proc/$pid/task/$pid/children"
	[ -n "${__dlg_kept_tmux_at-}" ] && [ $((EPOCHSECONDS - __dlg_kept_tmux_at)) -le "$TMUX_KEPT_SECS" ] &&
		[ "$kids" = "${__dlg_kept_tmux_kids-}" ] && [ -n "$kids" ] || return 1
	live=${__dlg_kept_tmux_live-}
	[ -n "$live" ]
}

# keep_tmux PID: hands the resident shell the listing just made by the tmux server PID,
# with the children read before it (`kids`) when they are that server's; else only the
# server, for the next large sync to read its children before it lists.
keep_tmux() {
	[ "${__dlg_resident-}" = 1 ] || return 0
	local record
	local -a stat_fields
	proc_stat "$1" && [ -n "${stat_fields[19]-}" ] || return 0
	if [ "$1" = "${__dlg_kept_tmux_pid-}" ] && [ "${stat_fields[19]}" = "${__dlg_kept_tmux_start-}" ] && [ -n "$kids" ]; then
		printf -v record '__dlg_kept_tmux_at=%q __dlg_kept_tmux_kids=%q __dlg_kept_tmux_live=%q' \
			"$EPOCHSECONDS" "$kids" "$live"
	else
		printf -v record '__dlg_kept_tmux_pid=%q __dlg_kept_tmux_start=%q __dlg_kept_tmux_at= __dlg_kept_tmux_kids= __dlg_kept_tmux_live=' \
			"$1" "${stat_fields[19]}"
	fi
	keep "$record"
}

# proc_stat PID: sets the caller's stat_fields to the fields of /proc/PID/stat after the
# command name (state, ppid, ... the start time, ticks since boot, at index 19); false
# when PID is no number or no process. The command name may hold spaces and parentheses
# ("tmux: server" does): the fields start after its last ")".
proc_stat() {
	local stat IFS=' '
	case $1 in '' | *[!0-9]*) return 1 ;; esac
	[ "${#1}" -le 10 ] && IFS= read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
	# shellcheck disable=SC2206 # split on spaces on purpose (IFS above; the sync runs with globbing off)
	stat_fields=(${stat##*) })
}

# Sets ref to a file next to tasks/ whose modification time is the since: a quiet file
# -nt ref was modified since, as find's -newermt says. Made once per since (one touch;
# the since moves only after a sync that read a clock), older ones removed then (one rm). False
# when there is none to be had, or when the since is over 90 s old by this host's clock:
# the lead renews its clocks only from a reply that read one, so such a sync goes the find
# way and brings one.
since_ref() {
	[ "${since%.*}" -gt 0 ] && [ $((EPOCHSECONDS - ${since%.*})) -le 90 ] || return 1
	ref=../.sync-since-$since
	if [ -f "$ref" ] && ! [ -L "$ref" ]; then return 0; fi
	[ -e "$ref" ] || [ -L "$ref" ] && return 1
	touch -d "@$since" -- "$ref" 2>/dev/null && [ -f "$ref" ] && ! [ -L "$ref" ] || return 1
	# Those of syncs long past (another lead's may be in use: only ones 10 minutes older).
	local r
	local -a old=()
	set +f
	for r in ../.sync-since-*; do
		r=${r#../.sync-since-}
		case ${r/./} in '' | *[!0-9]*) continue ;; esac
		[ "${#r}" -le 16 ] && [ "${r%.*}" -lt $((${since%.*} - 600)) ] && old+=("../.sync-since-$r")
	done
	set -f
	[ "${#old[@]}" -eq 0 ] || rm -f -- "${old[@]}" 2>/dev/null
	return 0
}

# find_synced SINCE KEY...: one find (per chunk of keys, below) over the tasks KEY (each
# ./<key>), run from inside the tasks directory; SINCE is - or a time before which a file
# is left out. Appends bash assignments to `found` and clears all_exist when a task
# directory was not found; the clock file (probe_for) goes with the first chunk.
#
# It prints `size[./<key>/<file>]=<bytes>` and `seen[./<key>]=1` for each synced file
# (modified since SINCE), and `clock=<mtime>` for the clock file; one eval runs them all (a
# parse loop in bash costs three times as much). The eval is safe because every word is
# ours: keys are checked above to be plain names, file names are matched exactly, sizes and
# times are numbers. A task directory prints nothing: find's status says whether every one
# was there (1 when a starting point is missing), and a starting point that is there but no
# directory prints `all_exist=0`; only then is each one looked at (one test each), so a
# sync of a thousand tasks evaluates no line per task.
#
# The synced files are matched by one regular expression: a task directory holds some
# twenty entries (helpers, prompt, launch record), and find spent more on seven -name tests
# per entry than on one -regex (median over a thousand such directories: 49 against 36 ms).
# (Naming each task's synced files as starting points, with no directory read, cost more
# in all: a file not there yet is an error find writes out, and the task files are some
# eight thousand arguments.)
#
# Keys go in chunks of FIND_CHUNK: the kernel caps a command's arguments, their bytes and a
# pointer each, at a quarter of the stack limit (2 MiB with the usual 8 MiB); a chunk's
# take some 40 KiB.
find_synced() {
	local -a newer=() chunk
	[ "$1" = - ] || newer=(-newermt "@$1")
	shift
	local out status
	while [ "$#" -gt 0 ] || [ "${#probe_for[@]}" -gt 0 ]; do
		chunk=("${@:1:FIND_CHUNK}")
		shift "${#chunk[@]}"
		out=$(exec find -H "${chunk[@]}" "${probe_for[@]}" -maxdepth 1 \
			\( -name .sync-clock -type f ! -path './*/*' -printf 'clock=%T@\n' \) -o \
			\( ! -path './*/*' ! -type d -printf 'all_exist=0\n' \) -o \
			\( "${synced[@]}" "${newer[@]}" -printf 'size[%p]=%s\nseen[%h]=1\n' \) 2>/dev/null)
		status=$?
		probe_for=()
		# 1: a task directory not there (or not readable); more: find not run, or killed.
		case $status in
		0) ;;
		1) all_exist=0 ;;
		*)
			printf 'DELEGATE-ERROR 23 find could not look at the task files (status %s)\n' "$status" >&2
			return 1
			;;
		esac
		# (The substitution dropped the last newline.)
		found+=$out$'\n'
	done
}

# Writes exactly $3 bytes of file $1 from offset $2 and sets got to how many of them came
# from the file; the rest, if the file shrank under us, is NUL padding.
send_bytes() {
	local out
	# dd's summary goes to the substitution, its data straight to the real stdout (fd 3).
	out=$(dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=65536 2>&1 >&3)
	got=0
	[[ $out =~ (^|$'\n')([0-9]+)\ bytes ]] && got=${BASH_REMATCH[2]}
	pad "$3"
}
# The same without a process, for a file read from its start: $4 is its size as find saw
# it. Reading 256 KiB this way costs about a millisecond, less than starting dd.
# bash variables cannot hold NUL, so the file is read as its NUL-separated pieces (mapfile
# reads a file in blocks) and each NUL between two pieces is written back with printf.
# The file only grows while a task runs, so a piece ending before the size found earlier
# was ended by a NUL, even the last one read.
send_builtin() {
	local -a pieces=()
	local end=$(($2 + $3)) at=0 k n from to
	mapfile -d '' -t pieces <"$1" 2>/dev/null
	got=0
	for ((k = 0; k < ${#pieces[@]} && at < end; k++)); do
		n=${#pieces[k]}
		# The part of [at, at + n) inside [offset, end).
		from=$((at > $2 ? at : $2)) to=$((at + n < end ? at + n : end))
		if ((to > from)); then
			printf '%s' "${pieces[k]:from-at:to-from}"
			got=$((got + to - from))
		fi
		at=$((at + n))
		# The NUL after this piece, where there is one and it is wanted.
		if ((k + 1 < ${#pieces[@]} || at < $4)) && ((at >= $2 && at < end)); then
			printf '\0'
			got=$((got + 1))
		fi
		at=$((at + 1))
	done
	pad "$3"
}
pad() {
	[ "$got" -lt "$1" ] && head -c $(($1 - got)) /dev/zero
	return 0
}
main delegate-sync-complete
