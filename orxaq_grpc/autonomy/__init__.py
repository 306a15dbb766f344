"""Lanes that run unattended: the attempt logic every lane shares (attempts.py), a task queue
(queue.py), its journal (journal.py), git worktrees (worktrees.py) and the loop that runs it
(loop.py: discover, prepare, dry-run, run, status)."""
