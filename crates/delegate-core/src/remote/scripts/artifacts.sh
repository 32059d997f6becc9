# delegate artifacts script: the files a task declared with `report artifact PATH "what it
# is"` (report.sh appends `PATH\0DESCRIPTION\0` records to `<task dir>/artifacts`), listed or
# read back. Sent on the stdin of bash (REMOTE_COMMAND) like diff.sh: Rust prepends
# `DLG_VARS='<base64>'` (workdir, task dir, mode, index, offset, chunk, per-file cap;
# NUL-separated; see remote/artifacts.rs), and the body is one function called on the last
# line with a sentinel, so a script cut off in transit runs nothing.
#
# An artifact is served only when its path, resolved with `realpath -e` here (symlinks and
# `..` followed), is a regular file inside the task's workdir or its task directory (both
# resolved too): the agent's word is not trusted to reach anything else of the brother.
#
# Mode `list` (stdout, exit 0):
#   DELEGATE-ARTIFACTS 1 <count>\n
#   then per record: <index> <verdict> <size> <sha256|-> <base64 path> <base64 rel|-> <base64 description>\n
#   END\n
# verdict: ok | outside (resolves out of the workdir and task dir) | missing | not-a-file |
# too-large (over the per-file cap; not hashed). rel is the path inside its root, prefixed
# `task/` when the root is the task dir. At most 200 records are listed.
# Mode `read` (the record at <index>, checked again): like diff.sh,
#   DELEGATE-ARTIFACT 1 <size> <sha256> <offset> <len>\n<len bytes>\nEND\n
# Failures: `DELEGATE-ERROR <code> <message>` on stderr, exit <code>:
#   23 a tool missing or the script damaged   24 the task directory is gone
#   46 the artifact is refused (outside, missing, not a file, too large)   1 otherwise

main() {
	if [ "${1-}" != delegate-artifacts-complete ]; then
		printf 'DELEGATE-ERROR 23 the artifacts script arrived incomplete: nothing was done\n' >&2
		exit 23
	fi
	set -uo pipefail
	umask 077
	export LC_ALL=C
	die() {
		local code=$1
		shift
		printf 'DELEGATE-ERROR %s %s\n' "$code" "$*" >&2
		exit "$code"
	}
	local -a v
	mapfile -d '' -t v < <(base64 -d <<<"$DLG_VARS")
	[ "${#v[@]}" -eq 7 ] || die 23 "the artifacts variables did not decode (got ${#v[@]} fields)"
	local workdir=${v[0]} taskdir=${v[1]} mode=${v[2]} index=${v[3]} offset=${v[4]} chunk=${v[5]} cap=${v[6]}
	[[ $index =~ ^[0-9]{1,6}$ && $cap =~ ^[0-9]{1,15}$ && $offset =~ ^[0-9]{1,15}$ && $chunk =~ ^[0-9]{1,15}$ ]] ||
		die 23 "the artifacts variables are damaged"
	# shellcheck disable=SC2088 # a literal "~/" prefix, expanded here on purpose
	case $workdir in "~") workdir=$HOME ;; "~/"*) workdir=$HOME/${workdir:2} ;; esac
	workdir=${workdir//"{home}"/"$HOME"}
	local tool
	for tool in realpath base64 sha256sum stat head tail; do
		command -v "$tool" >/dev/null 2>&1 || die 23 "'$tool' not found on PATH ($PATH) on this host: install coreutils"
	done
	[ -d "$taskdir" ] || die 24 "the task directory $taskdir no longer exists on this host: no artifacts to read"
	local troot wroot=''
	troot=$(realpath -e -- "$taskdir") || die 24 "the task directory $taskdir cannot be resolved"
	[ -d "$workdir" ] && wroot=$(realpath -e -- "$workdir" 2>/dev/null)
	local -a recs=()
	[ -f "$taskdir/artifacts" ] && mapfile -d '' -t recs <"$taskdir/artifacts"
	local count=$((${#recs[@]} / 2))
	[ "$count" -le 200 ] || count=200

	# Sets verdict, real, rel and size for record $1.
	check() {
		local p=${recs[$(($1 * 2))]}
		verdict=ok rel='' size=0 real=''
		if ! real=$(realpath -e -- "$p" 2>/dev/null); then
			verdict=missing
		elif [ -n "$wroot" ] && [[ $real == "$wroot"/* ]]; then
			rel=${real#"$wroot"/}
		elif [[ $real == "$troot"/* ]]; then
			rel=task/${real#"$troot"/}
		else
			verdict=outside
		fi
		if [ "$verdict" = ok ]; then
			if [ ! -f "$real" ]; then
				verdict=not-a-file
			else
				size=$(stat -c %s -- "$real") || verdict=missing
				[ "$verdict" != ok ] || [ "$size" -le "$cap" ] || verdict=too-large
			fi
		fi
	}
	b64() { printf '%s' "$1" | base64 -w0; }
	local verdict real rel size sum i
	case $mode in
	list)
		printf 'DELEGATE-ARTIFACTS 1 %s\n' "$count"
		for ((i = 0; i < count; i++)); do
			check "$i"
			sum=-
			if [ "$verdict" = ok ]; then
				sum=$(sha256sum <"$real") && sum=${sum%% *} || verdict=missing
			fi
			printf '%s %s %s %s %s %s %s\n' "$i" "$verdict" "$size" "$sum" "$(b64 "${recs[$((i * 2))]}")" \
				"$([ -n "$rel" ] && b64 "$rel" || printf -)" "$(b64 "${recs[$((i * 2 + 1))]}")"
		done
		printf 'END\n'
		;;
	read)
		[ "$index" -lt "$count" ] || die 46 "there is no artifact $index (the task declared $count)"
		check "$index"
		[ "$verdict" = ok ] || die 46 "artifact ${recs[$((index * 2))]} is refused: $verdict"
		local scratch
		scratch=$(mktemp) || die 1 "mktemp failed on this host (disk full?)"
		# shellcheck disable=SC2064 # the path is fixed now
		trap "rm -f -- '$scratch'" EXIT
		# A copy, so the size, hash and bytes sent are of one version of the file.
		head -c "$cap" -- "$real" >"$scratch" || die 1 "could not read $real"
		size=$(stat -c %s -- "$scratch")
		sum=$(sha256sum <"$scratch") && sum=${sum%% *}
		local len=0
		if [ "$offset" -lt "$size" ]; then
			len=$((size - offset))
			[ "$len" -le "$chunk" ] || len=$chunk
		fi
		printf 'DELEGATE-ARTIFACT 1 %s %s %s %s\n' "$size" "$sum" "$offset" "$len"
		[ "$len" = 0 ] || tail -c +"$((offset + 1))" -- "$scratch" | head -c "$len"
		printf '\nEND\n'
		;;
	*) die 23 "unknown artifacts mode '$mode'" ;;
	esac
}
main delegate-artifacts-complete
