# delegate cleanup script: removes a finished task's git worktree (and its branch
# delegate/<task key>) and its refs/delegate/<key>/* refs. Sent on the stdin of bash
# (REMOTE_COMMAND) like diff.sh: Rust prepends `DLG_VARS='<base64>'` (workdir, the workdir a
# worktree comes from or empty, then the task keys of its runs; NUL-separated; see
# ops/cleanup.rs), and the body is one function called with a sentinel, so a script cut off
# in transit runs nothing.
#
# Output (stdout, exit 0): `DELEGATE-CLEANUP <worktree removed: 0|1> <refs removed>`.
# Failures: `DELEGATE-ERROR <code> <message>` on stderr, exit <code>: 23 git missing or the
# script damaged, 1 git failed.

main() {
	if [ "${1-}" != delegate-cleanup-complete ]; then
		printf 'DELEGATE-ERROR 23 the cleanup script arrived incomplete: nothing was done\n' >&2
		exit 23
	fi
	set -uo pipefail
	die() {
		local code=$1
		shift
		printf 'DELEGATE-ERROR %s %s\n' "$code" "$*" >&2
		exit "$code"
	}
	command -v git >/dev/null 2>&1 || die 23 "git not found on PATH ($PATH)"
	local -a v
	mapfile -d '' -t v < <(base64 -d <<<"$DLG_VARS")
	[ "${#v[@]}" -ge 3 ] || die 23 "the cleanup variables did not decode (got ${#v[@]} fields)"
	local workdir=${v[0]} worktree_of=${v[1]} key repo err removed=0 refs=0 ref
	local -a keys=("${v[@]:2}")
	for key in "${keys[@]}"; do
		[[ $key =~ ^[A-Za-z0-9-]{1,100}$ ]] || die 23 "the cleanup variables are damaged (a task key holds '${key:0:100}')"
	done
	# shellcheck disable=SC2088 # a literal "~/" prefix, expanded here on purpose
	case $workdir in "~") workdir=$HOME ;; "~/"*) workdir=$HOME/${workdir:2} ;; esac
	# shellcheck disable=SC2088
	case $worktree_of in "~") worktree_of=$HOME ;; "~/"*) worktree_of=$HOME/${worktree_of:2} ;; esac
	repo=$workdir
	if [ -n "$worktree_of" ]; then
		repo=$worktree_of
		[ -d "$repo" ] || die 1 "the repository $repo the worktree comes from is gone"
		if [ -e "$workdir" ]; then
			# --force: the lead decided the change is fetched, empty or to be thrown away.
			err=$(git -C "$repo" worktree remove --force -- "$workdir" 2>&1) ||
				die 1 "git could not remove the worktree $workdir: ${err//[[:cntrl:]]/ }"
			removed=1
		fi
		git -C "$repo" worktree prune 2>/dev/null || true
		git -C "$repo" branch -q -D -- "delegate/${keys[0]}" >/dev/null 2>&1 || true
	fi
	[ -d "$repo" ] || {
		printf 'DELEGATE-CLEANUP %s 0\n' "$removed"
		exit 0
	}
	for key in "${keys[@]}"; do
		while IFS= read -r ref; do
			[ -n "$ref" ] || continue
			git -C "$repo" update-ref -d "$ref" 2>/dev/null && refs=$((refs + 1))
		done < <(git -C "$repo" for-each-ref --format='%(refname)' "refs/delegate/$key/" 2>/dev/null)
	done
	printf 'DELEGATE-CLEANUP %s %s\n' "$removed" "$refs"
}
main delegate-cleanup-complete
