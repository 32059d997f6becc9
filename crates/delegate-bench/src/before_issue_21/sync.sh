# The sync script of delegate as it was before issue 21 (commit 7ec5556: own-root.sh, then
# sync.sh, byte for byte below this comment), kept by the benchmark harness as the comparator
# D1x of BS3 ("today's path kept as a comparator in the harness", issue 21). Not used by
# delegate itself; never edited: the point is to measure what the path was.
# The check every script that reads or writes under `remote_root` makes before it does:
# sync.sh, cancel.sh and say.sh get this file in front of them (sync_protocol.rs: script);
# the launch makes the full check, mode included (agent-env.sh: private_dirs).
#
# Only a function definition: a script cut anywhere in this part runs nothing.

# foreign_root ROOT: true, with `root_problem` set, when ROOT or ROOT/tasks is a symbolic
# link, not a directory, or not this user's; another local user could then swap what we
# read or run. Builtins only: sync runs on every state command.
foreign_root() {
	local own
	# ${1%/...}: trailing slashes dropped, so `-L` sees the link itself.
	for own in "${1%"${1##*[!/]}"}" "$1/tasks"; do
		if [ -L "$own" ] || { [ -e "$own" ] && ! { [ -d "$own" ] && [ -O "$own" ]; }; }; then
			# shellcheck disable=SC2034 # read by the script this is put in front of
			root_problem="remote_root refused: $own is a symbolic link, not a directory, or not this user's (uid $EUID): choose a remote_root in this user's home (e.g. ~/.delegate)"
			return 0
		fi
	done
	return 1
}
# delegate sync script: one exec reports on every task of a host. Sent on the stdin of
# bash (REMOTE_COMMAND in runner.rs), shaped like the launch script: Rust prepends `DLG_VARS='<base64>'` and the body
# is one function called on the last line with a sentinel, so a cut script runs nothing.
#
# DLG_VARS, one field per line (see render_sync in sync_protocol.rs): remote root, max bytes
# per file, max file bytes in the whole reply (the budget), then per task ten fields: task key, tmux session, want launch.json (0/1), and
# the offsets of state, exit, stream.jsonl, events.jsonl, outbox.jsonl, stderr.log,
# delivered.jsonl (the message receipts the inbox helper and the Claude hook write). Every
# field is a single line (Rust checks), so newlines can separate them: bash reads a command
# substitution in blocks but a pipe into mapfile one byte per syscall, which 200 tasks
# would feel. For the same reason every listing below is split in memory, never read line
# by line from a pipe.
#
# Output (stdout), framed by lengths so any byte can travel; read by parse_sync:
#   DELEGATE-SYNC 1 <tasks> <tmux server running 0|1> <remote utc time>
#   then per task, in request order:
#     T <task key> <dir exists 0|1> <session alive 0|1>
#     F <task key> <file> <offset> <size> <len>\n<len bytes>\n   per file grown past its offset;
#                                    <len> is at most the per-file cap and what is left of
#                                    the budget, so it may be 0 (more is waiting: ask again)
#     S <task key> <file> <got>      the file shrank while being read: only the first <got>
#                                    of those <len> bytes are the file's, the rest is padding
#     L <task key> <len>\n<len bytes>\n                           launch.json, when asked for
#   END
# A reply without END was cut short.
#
# Cost does not grow by a process per task: one tmux call lists the live sessions, one find
# stats every synced file of every task, and only a file that grew is read (builtins for
# the small text files the runner writes, one dd for the others). GNU find and dd.
#
# Sessions are listed before files are looked at: the runner writes `exit` before its
# session ends, so a session missing here whose `exit` is missing below died without one.

main() {
	if [ "${1-}" != delegate-sync-complete ]; then
		printf 'DELEGATE-ERROR 23 the sync script arrived incomplete: nothing was read\n' >&2
		exit 23
	fi
	set -uo pipefail
	# Bytes, not characters: ${#x} and ${x:o:n} on file contents, and dd's English summary.
	export LC_ALL=C
	# Word splitting on newlines only, never globbing: how listings become arrays below.
	set -f
	local IFS=$'\n' decoded
	decoded=$(base64 -d <<<"$DLG_VARS")
	# shellcheck disable=SC2206 # split on newlines on purpose (IFS above, globbing off)
	local -a v=($decoded)
	if [ "${#v[@]}" -lt 3 ] || [ $(((${#v[@]} - 3) % 10)) -ne 0 ]; then
		printf 'DELEGATE-ERROR 23 the sync variables did not decode (got %s fields)\n' "${#v[@]}" >&2
		exit 23
	fi
	local root=${v[0]} max=${v[1]} budget=${v[2]} i
	# shellcheck disable=SC2088 # a literal "~/" prefix, expanded here on purpose
	case $root in "~") root=$HOME ;; "~/"*) root=$HOME/${root:2} ;; esac
	local -a files=(state exit stream.jsonl events.jsonl outbox.jsonl stderr.log delivered.jsonl)
	# Nothing is read or written through a root that is not this user's (own-root.sh).
	local root_problem
	if foreign_root "$root"; then
		# shellcheck disable=SC2154 # set by foreign_root
		printf 'DELEGATE-ERROR 25 %s\n' "$root_problem" >&2
		exit 25
	fi

	local -A alive=()
	local running=0 listing name
	if listing=$(tmux -L delegate list-sessions -F '#{session_name}' 2>/dev/null); then
		running=1
		for name in $listing; do alive[$name]=1; done
	fi

	# One find for every task, run from inside the tasks directory with ./<key> as starting
	# points. It prints bash assignments, `exists[./<key>]=1` for a task directory (missing
	# ones are silently absent) and `size[./<key>/<file>]=<bytes>` for each synced file in
	# it, and one eval runs them all (a parse loop in bash costs three times as much). The
	# eval is safe because every word is ours: keys are checked here to be plain names,
	# file names are matched exactly, sizes are numbers.
	local -a starts=()
	for ((i = 3; i < ${#v[@]}; i += 10)); do
		if ! [[ ${v[i]} =~ ^[A-Za-z0-9._-]+$ ]] || [ "${v[i]}" = . ] || [ "${v[i]}" = .. ]; then
			printf 'DELEGATE-ERROR 23 task key %q is not a plain name\n' "${v[i]}" >&2
			exit 23
		fi
		starts+=("./${v[i]}")
	done
	local -A exists=() size=()
	local found=''
	if [ "${#starts[@]}" -gt 0 ] && cd -- "$root/tasks" 2>/dev/null; then
		found=$(find -H "${starts[@]}" -maxdepth 1 \
			\( -type d ! -path './*/*' -printf 'exists[%p]=1\n' \) -o \
			\( -type f -path './*/*' \( -name state -o -name exit -o -name stream.jsonl \
			-o -name events.jsonl -o -name outbox.jsonl -o -name stderr.log -o -name delivered.jsonl \) \
			-printf 'size[%p]=%s\n' \) 2>/dev/null)
	fi
	eval "$found"

	exec 3>&1
	local t=$EPOCHREALTIME now
	TZ=UTC0 printf -v now '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"
	printf 'DELEGATE-SYNC 1 %s %s %s\n' $(((${#v[@]} - 3) / 10)) "$running" "$now"
	local key session want dir f off sz len got launch
	for ((i = 3; i < ${#v[@]}; i += 10)); do
		key=${v[i]} session=${v[i + 1]} want=${v[i + 2]}
		dir=$root/tasks/$key
		printf 'T %s %s %s\n' "$key" "${exists[./$key]:-0}" "${alive[$session]:-0}"
		[ -n "${exists[./$key]:-}" ] || continue
		for ((f = 0; f < ${#files[@]}; f++)); do
			name=${files[f]} off=${v[i + 3 + f]}
			sz=${size[./$key/$name]:-}
			if [ -z "$sz" ] || [ "$sz" -le "$off" ]; then continue; fi
			len=$((sz - off))
			[ "$len" -le "$max" ] || len=$max
			[ "$len" -le "$budget" ] || len=$budget
			budget=$((budget - len))
			printf 'F %s %s %s %s %s\n' "$key" "$name" "$off" "$sz" "$len"
			if [ "$len" -eq 0 ]; then
				printf '\n'
				continue
			fi
			if [ "$name" = state ] || [ "$name" = exit ] && [ "$len" -le 65536 ]; then
				send_text "$dir/$name" "$off" "$len"
			else
				send_bytes "$dir/$name" "$off" "$len"
			fi
			printf '\n'
			[ "$got" -eq "$len" ] || printf 'S %s %s %s\n' "$key" "$name" "$got"
		done
		if [ "$want" = 1 ] && [ -f "$dir/launch.json" ]; then
			launch=''
			IFS= read -r -d '' launch <"$dir/launch.json"
			printf 'L %s %s\n%s\n' "$key" "${#launch}" "$launch"
		fi
	done
	printf 'END\n'
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
# The same for the runner's own small text files (no NUL in them), without a process.
send_text() {
	local content=''
	IFS= read -r -d '' content <"$1"
	content=${content:$2:$3}
	got=${#content}
	printf '%s' "$content"
	pad "$3"
}
pad() {
	[ "$got" -lt "$1" ] && head -c $(($1 - got)) /dev/zero
	return 0
}
main delegate-sync-complete
