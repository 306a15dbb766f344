"""A git worktree per task that names a repository: `<state>/worktrees/<task>` on a branch
`autonomy/<task>` made from the task's `base` (HEAD unless it says). The loop creates them and
commits, merges or removes nothing: what the agent committed is on the branch, what it left
uncommitted is in the worktree."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from orxaq_grpc.autonomy.queue import Task

BRANCH_PREFIX = "autonomy/"
_GIT = threading.Lock()  # git takes locks of its own in the repository: one worktree change at a time


class WorktreeError(Exception):
    pass


def worktree_path(state_dir: Path, task: Task) -> Path:
    return state_dir / "worktrees" / task.id


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # In a session of its own: a terminal's Ctrl-C goes to the loop, which lets git finish (a worktree
    # half made would be taken for a made one) and then stops the task.
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorktreeError(f"git {' '.join(args)}: {exc}") from None


def ensure_worktree(state_dir: Path, task: Task) -> tuple[Path, bool]:
    """The task's worktree, created if it is not there yet: (its path, whether it was created now)."""
    with _GIT:
        return _ensure(state_dir, task)


def _ensure(state_dir: Path, task: Task) -> tuple[Path, bool]:
    assert task.repo is not None
    path = worktree_path(state_dir, task)
    if (path / ".git").exists():
        return path, False
    inside = _git("rev-parse", "--is-inside-work-tree", cwd=task.repo)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise WorktreeError(f"{task.repo}: not a git repository ({inside.stderr.strip()})")
    path.parent.mkdir(parents=True, exist_ok=True)
    _git("worktree", "prune", cwd=task.repo)  # a worktree directory removed by hand
    branch = BRANCH_PREFIX + task.id
    exists = _git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=task.repo).returncode == 0
    args = (
        ["worktree", "add", str(path.resolve()), branch]
        if exists
        else [
            "worktree",
            "add",
            "-b",
            branch,
            str(path.resolve()),
            task.base,
        ]
    )
    made = _git(*args, cwd=task.repo)
    if made.returncode != 0:
        raise WorktreeError(f"{task.repo}: git {' '.join(args)}: {made.stderr.strip()}")
    return path, True
