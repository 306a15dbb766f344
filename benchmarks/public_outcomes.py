"""Public per-prompt outcomes from a package registry, as an `orxaq-grpc evaluate` outcomes file.

The data: the measured runs that ship in the source distribution of `evalroute` 0.9.2 on PyPI
(MIT licence, a 0.4 MB sdist), under `examples/artifacts/tier-a-*/`. Three lanes (routine
coding, DL/ML research engineering, alignment reasoning) of 10 tasks each; every task was sent
3 times to each of 4-5 model arms (e.g. `glm-5.3@medium`, `kimi-k3@high`) through the Nous
inference API and graded by a Python test (coding, DL/ML) or an LLM judge (alignment).
`tasks.jsonl` holds the prompts, `runs.jsonl` one record per sample with `passed` true, false or
null (judge pending). A model's outcome on a prompt is the majority of its graded samples; a
prompt it has no graded sample for is left out. Each lane was run on its own set of arms, so no
pair of models covers all 30 prompts: the default pair is the one with the largest accuracy gap
among the models graded on the most prompts, or `--models a,b`.

It is small (20 prompts for the default pair) and near the ceiling: a smoke test of the outcomes
path on real model answers, not a basis for quality claims. No larger public set (RouterBench,
RouteLLM's evaluations, MixInstruct, EmbedLLM, ...) ships inside a PyPI or npm package.

    python benchmarks/public_outcomes.py --out outcomes.jsonl [--models a,b] [--cache DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

PACKAGE, VERSION = "evalroute", "0.9.2"
ARTIFACTS = "examples/artifacts/"


def download(cache: Path) -> Path:
    """The sdist in `cache`, fetched with pip the first time."""
    found = sorted(cache.glob(f"{PACKAGE}-{VERSION}.tar.gz"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                str(cache),
                f"{PACKAGE}=={VERSION}",
            ],
            check=True,
            stdout=sys.stderr,
        )
        found = sorted(cache.glob(f"{PACKAGE}-{VERSION}.tar.gz"))
    return found[0]


def read(sdist: Path) -> tuple[dict[str, dict], dict[str, dict[str, bool]]]:
    """Tasks by id, and each task's majority outcome per model."""
    tasks: dict[str, dict] = {}
    votes: dict[tuple[str, str], list[bool]] = defaultdict(list)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = member.name.split("/", 1)[-1]
            if not name.startswith(ARTIFACTS) or not name.endswith(".jsonl"):
                continue
            lines = [
                json.loads(line)
                for line in tar.extractfile(member).read().decode().splitlines()
                if line.strip()
            ]
            if name.endswith("/tasks.jsonl"):
                tasks.update((task["id"], task) for task in lines)
            elif name.endswith("/runs.jsonl"):
                for run in lines:
                    if run.get("passed") is not None:
                        votes[(run["task"], run["model"])].append(run["passed"])
    outcomes: dict[str, dict[str, bool]] = defaultdict(dict)
    for (task, model), passed in votes.items():
        outcomes[task][model] = 2 * sum(passed) > len(passed)
    return tasks, outcomes


def accuracy(outcomes: dict[str, dict[str, bool]], models: tuple[str, ...]) -> dict[str, float]:
    shared = [row for row in outcomes.values() if all(m in row for m in models)]
    return {m: sum(row[m] for row in shared) / len(shared) if shared else 0.0 for m in models}


def default_pair(outcomes: dict[str, dict[str, bool]]) -> tuple[str, str]:
    coverage = defaultdict(int)
    for row in outcomes.values():
        for model in row:
            coverage[model] += 1
    most = max(coverage.values())
    complete = sorted(m for m, n in coverage.items() if n == most)
    if len(complete) < 2:  # widen to the next coverage level
        complete = sorted(coverage, key=lambda m: -coverage[m])[:2]

    def gap(pair: tuple[str, str]) -> float:
        acc = accuracy(outcomes, pair)
        return abs(acc[pair[0]] - acc[pair[1]])

    weak, strong = max(itertools.combinations(complete, 2), key=gap)
    acc = accuracy(outcomes, (weak, strong))
    return (weak, strong) if acc[weak] <= acc[strong] else (strong, weak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/orxaq-grpc/outcomes").expanduser())
    parser.add_argument("--out", type=Path, required=True, help="outcomes file to write (JSON Lines)")
    parser.add_argument("--models", help="two or more model arms, comma-separated (default: see above)")
    args = parser.parse_args()

    tasks, outcomes = read(download(args.cache.expanduser()))
    every = sorted({m for row in outcomes.values() for m in row})
    models = tuple(args.models.split(",")) if args.models else default_pair(outcomes)
    if len(models) < 2 or not set(models) <= set(every):
        parser.error(f"--models needs two or more of {', '.join(every)}")

    written = 0
    with args.out.open("w", encoding="utf-8") as out:
        for task_id, task in tasks.items():
            row = outcomes.get(task_id, {})
            if not all(m in row for m in models):
                continue
            line = {
                "id": task_id,
                "title": task_id,
                "prompt": task["prompt"],
                "kind": task["lane"],
                "outcomes": {m: row[m] for m in models},
            }
            out.write(json.dumps(line) + "\n")
            written += 1
    print(f"{PACKAGE} {VERSION}: {written} prompts written to {args.out}", file=sys.stderr)
    for model, acc in accuracy(outcomes, models).items():
        print(f"  {model}: accuracy {acc:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
