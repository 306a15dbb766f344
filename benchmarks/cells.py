"""What the server benchmarks share: a cell of calls and the CPU time it cost."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cell:
    calls: int
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.calls / self.wall_s

    @property
    def server_us(self) -> float:
        return self.server_cpu_s / self.calls * 1e6

    @property
    def client_us(self) -> float:
        return self.client_cpu_s / self.calls * 1e6


def pooled(cells: Sequence[Cell]) -> Cell:
    return Cell(
        calls=sum(c.calls for c in cells),
        wall_s=sum(c.wall_s for c in cells),
        server_cpu_s=sum(c.server_cpu_s for c in cells),
        client_cpu_s=sum(c.client_cpu_s for c in cells),
    )


def process_cpu_s(pid: int) -> float:
    """utime + stime of every thread of `pid`, from /proc/<pid>/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
