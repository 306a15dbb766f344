"""The success model as a strong-or-weak router, on outcome sets whose structure is known.

For each synthetic set of `outcome_sets.py` (and the public one `public_outcomes.py` converts, when
given), trains on half and routes the other half exactly as `orxaq-grpc evaluate` does, and prints
RouteLLM's figures for the learned router, random routing, a prompt-length ranking, the oracle and
the *planted* router: the one that knows each prompt's hidden chances, the best any router reading
the prompt can do in expectation. Bars (issue 12): APGR >= 0.70 and CPT(50%) <= 25%.

    .venv/bin/python benchmarks/learning.py
    .venv/bin/python benchmarks/learning.py --prompts 2000 --plot-dir /tmp/curves
    .venv/bin/python benchmarks/learning.py --public /tmp/public.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from outcome_sets import generate

from orxaq_grpc.config.load import load_config
from orxaq_grpc.defaults import choose_config_dir
from orxaq_grpc.evaluate.curve import ranked
from orxaq_grpc.evaluate.outcomes_file import read_outcomes
from orxaq_grpc.evaluate.render import plot, table
from orxaq_grpc.evaluate.run import Evaluation, evaluate, split

SETS = ("topics", "phrases", "length-trap", "skills")
APGR_BAR, CPT50_BAR = 0.70, 0.25


def _progress(stage: str, done: int, total: int) -> None:
    print(f"  {stage} {done:,} of {total:,}", file=sys.stderr)


def _verdict(e: Evaluation) -> str:
    learned = e.curves[0]
    holds = learned.apgr >= APGR_BAR and learned.cpt(0.5) <= CPT50_BAR
    return (
        f"learned APGR {learned.apgr:.3f} (bar >= {APGR_BAR}), CPT(50%) {learned.cpt(0.5):.1%} "
        f"(bar <= {CPT50_BAR:.0%}): {'PASS' if holds else 'FAIL'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=4000, help="per synthetic set (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--public", type=Path, help="also evaluate this outcomes file (public_outcomes.py)")
    parser.add_argument("--plot-dir", type=Path, help="draw each set's curves here as PNG")
    args = parser.parse_args()
    config = load_config(choose_config_dir(None, option="--config").directory)
    with tempfile.TemporaryDirectory() as scratch:
        for name in SETS:
            started = time.perf_counter()
            print(f"{name}: {args.prompts} prompts", file=sys.stderr)
            lines = generate(name, args.prompts, args.seed)
            path = Path(scratch) / f"{name}.jsonl"
            path.write_text("".join(json.dumps(line) + "\n" for line, _, _ in lines))
            prompts = read_outcomes(path)
            result = evaluate(prompts, config, seed=args.seed, progress=_progress)
            # The planted router ranks the same test prompts by their hidden chances.
            hidden = {str(line["id"]): strong - weak for line, strong, weak in lines}
            _, test = split(prompts, 0.5, args.seed)
            planted = ranked(
                "planted",
                [hidden[p.id] for p in test],
                [p.outcomes[result.strong] for p in test],
                [p.outcomes[result.weak] for p in test],
                args.seed,
            )
            result = dataclasses.replace(result, curves=(*result.curves, planted))
            print(f"\n== {name} ({time.perf_counter() - started:.1f} s)\n{table(result)}\n{_verdict(result)}")
            if args.plot_dir is not None:
                plot(result, args.plot_dir / f"{name}.png")
    if args.public is not None:
        result = evaluate(read_outcomes(args.public), config, seed=args.seed)
        print(f"\n== {args.public}\n{table(result)}\n{_verdict(result)}")


if __name__ == "__main__":
    main()
