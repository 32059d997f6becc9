# delegate diff script: what a task changed in its workdir since its launch. Sent on the
# stdin of bash (REMOTE_COMMAND) over SSH, shaped like the launch script: Rust prepends
# `DLG_VARS='<base64>'` (workdir, base commit, mode, byte cap, offset, chunk; NUL-separated; see
# remote/diff.rs) and git-tree.sh, and the body is one function called on the last line with
# a sentinel, so a script cut off in transit runs nothing.
#
# The base is the commit the launch stored (launch.sh: git_state); the workdir's files now
# are staged into a private index (git-tree.sh), so the diff holds committed, uncommitted and
# new untracked files alike, and the user's index is never touched.
#
# Modes: `patch` (text diff; binary files named), `stat` (--stat and --summary), `binary`
# (`git diff --binary`, for `git apply`).
#
# Output (stdout, exit 0), framed by length so the patch may hold any bytes:
#   DELEGATE-DIFF 1 <base tree> <tree now> <size> <sha256 of all of it> <offset> <len>\n<len bytes>\nEND\n
# The bytes are the diff's [offset, offset + len), len at most the chunk asked for: a diff
# larger than one exec may answer comes in several, each made again (the tree and hash say
# whether the workdir changed in between). A diff over the cap is announced with len 0.
# Failures: `DELEGATE-ERROR <code> <message>` on stderr, exit <code>:
#   23 git (or another tool) missing or the script damaged   24 the workdir is gone
#   44 not a git work tree, or the base snapshot is not in it   1 git failed otherwise

main() {
	if [ "${1-}" != delegate-diff-complete ]; then
		printf 'DELEGATE-ERROR 23 the diff script arrived incomplete: nothing was done\n' >&2
		exit 23
	fi
	set -uo pipefail
	umask 077
	die() {
		local code=$1
		shift
		printf 'DELEGATE-ERROR %s %s\n' "$code" "$*" >&2
		exit "$code"
	}
	local -a v
	mapfile -d '' -t v < <(base64 -d <<<"$DLG_VARS")
	[ "${#v[@]}" -eq 6 ] || die 23 "the diff variables did not decode (got ${#v[@]} fields)"
	local workdir=${v[0]} base=${v[1]} mode=${v[2]} cap=${v[3]} offset=${v[4]} chunk=${v[5]}
	[[ $base =~ ^[0-9a-f]{40}([0-9a-f]{24})?$ && $cap =~ ^[0-9]{1,15}$ && $offset =~ ^[0-9]{1,15}$ &&
		$chunk =~ ^[0-9]{1,15}$ ]] || die 23 "the diff variables are damaged"
	# shellcheck disable=SC2088 # a literal "~/" prefix, expanded here on purpose
	case $workdir in "~") workdir=$HOME ;; "~/"*) workdir=$HOME/${workdir:2} ;; esac
	workdir=${workdir//"{home}"/"$HOME"}
	local tool
	for tool in git base64 sha256sum mktemp stat timeout; do
		command -v "$tool" >/dev/null 2>&1 ||
			die 23 "'$tool' not found on PATH ($PATH) on this host: install git (and coreutils) to read what a task changed"
	done
	[ -d "$workdir" ] || die 24 "the task's workdir $workdir no longer exists on this host: nothing to diff"
	[ "$(git -C "$workdir" rev-parse --is-inside-work-tree 2>/dev/null)" = true ] ||
		die 44 "the task's workdir $workdir is not a git work tree (any more): nothing to diff"
	local base_tree
	base_tree=$(git -C "$workdir" rev-parse -q --verify "$base^{tree}" 2>/dev/null) ||
		die 44 "the launch snapshot $base is not in the repository at $workdir (refs/delegate/ removed, or another repository): the change cannot be told apart"

	local scratch
	scratch=$(mktemp -d) || die 1 "mktemp failed on this host (disk full?)"
	# shellcheck disable=SC2064 # the path is fixed now
	trap "rm -rf -- '$scratch'" EXIT
	local tree
	if ! tree=$(git_tree "$workdir" "$scratch/index") || [ -z "$tree" ]; then
		die 1 "git could not read the workdir $workdir (git add -A failed or took over 60 s)"
	fi
	# Everything that could run a program of the repository's configuration or change the
	# format is switched off: the reply is git's own diff.
	local -a how=(--no-color --no-ext-diff --no-textconv)
	case $mode in
	patch) ;;
	stat) how+=(--stat=200 --summary) ;;
	binary) how+=(--binary --full-index) ;;
	*) die 23 "unknown diff mode '$mode'" ;;
	esac
	git -C "$workdir" -c core.quotePath=true diff "${how[@]}" "$base_tree" "$tree" >"$scratch/out" 2>"$scratch/err" ||
		die 1 "git diff failed in $workdir: $(head -c 300 "$scratch/err")"
	local size sum len=0
	size=$(stat -c %s -- "$scratch/out") || die 1 "could not read the diff's size"
	sum=$(sha256sum <"$scratch/out") && sum=${sum%% *}
	if [ "$size" -le "$cap" ] && [ "$offset" -lt "$size" ]; then
		len=$((size - offset))
		[ "$len" -le "$chunk" ] || len=$chunk
	fi
	printf 'DELEGATE-DIFF 1 %s %s %s %s %s %s\n' "$base_tree" "$tree" "$size" "$sum" "$offset" "$len"
	[ "$len" = 0 ] || tail -c +"$((offset + 1))" -- "$scratch/out" | head -c "$len"
	printf '\nEND\n'
}
main delegate-diff-complete
