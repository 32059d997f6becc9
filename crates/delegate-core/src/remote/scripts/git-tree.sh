# The workdir's files as a git tree, put in front of launch.sh and diff.sh: at launch it is
# the task's base (kept as a commit under refs/delegate/<task key>/base), later it is
# compared with that base, so a diff is exactly what the task changed, committed or not,
# new untracked files included, even when the workdir was dirty at launch.
#
# The user's index and branch are never touched: the tree is staged into a private index
# (a copy of the user's, so unchanged files are not hashed again) under GIT_INDEX_FILE.
# Ignored files stay out, as `git add -A` leaves them. Only function definitions: a script
# cut anywhere in this part runs nothing.

# git_tree WORKDIR INDEX: prints the tree's id; INDEX is a scratch file the caller removes.
# Bounded in time: a huge repository gives up rather than hold the launch or the diff.
git_tree() (
	cd -- "$1" 2>/dev/null || exit 1
	local real
	real=$(git rev-parse --git-path index 2>/dev/null) || exit 1
	if [ -f "$real" ]; then cp -- "$real" "$2" || exit 1; else rm -f -- "$2"; fi
	export GIT_INDEX_FILE=$2
	timeout 60 git add -A >/dev/null 2>&1 || exit 1
	git write-tree 2>/dev/null
)

# git_base_commit TREE HEAD KEY: a commit holding TREE (parent HEAD when there is one),
# with a fixed author so no git identity is needed on the brother; prints its id.
git_base_commit() {
	local -a parent=()
	[ -z "$2" ] || parent=(-p "$2")
	GIT_AUTHOR_NAME=delegate GIT_AUTHOR_EMAIL=delegate@localhost GIT_COMMITTER_NAME=delegate \
		GIT_COMMITTER_EMAIL=delegate@localhost \
		git commit-tree "$1" "${parent[@]}" -m "delegate: the workdir of task $3 at launch" 2>/dev/null
}
