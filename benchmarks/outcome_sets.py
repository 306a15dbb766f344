"""Synthetic per-prompt outcome sets with a known structure, in `orxaq-grpc evaluate`'s format.

Each prompt is a coding task drawn from a topic; each topic has a hidden chance that the weak model
gets it right, and each prompt a hidden difficulty from its wording (a few hard-making phrases). The
strong model is right more often everywhere, by much on hard topics and little on easy ones: the
structure a router has to find from the text alone. Sets:

- `topics`: difficulty set by the topic (its vocabulary), with noise words shared by all topics;
- `phrases`: topics give a little; a handful of phrases ("race condition", "without breaking the
  public api") make a prompt hard wherever they occur;
- `length-trap`: long prompts are the *easy* ones (boilerplate), so length is no guide;
- `skills`: capability gaps, as benchmarks of real models show them: each prompt needs one skill,
  named only by its wording (the title says nothing); the weak model has half the skills and nearly
  always fails without the one needed, the strong model has them all. Little noise: the planted
  router's ceiling is high, so this set tells how close the learner gets to it.

    python benchmarks/outcome_sets.py topics --prompts 4000 --seed 1 > topics.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys

TOPICS = {
    # topic: (weak model's chance, strong model's chance, vocabulary)
    "docs": (0.95, 0.97, "docstring readme typo wording sentence paragraph changelog comment"),
    "tests": (0.9, 0.95, "unit test fixture assert coverage mock parametrize pytest"),
    "rename": (0.95, 0.97, "rename variable identifier symbol alias constant module"),
    "bugfix": (0.5, 0.9, "crash exception traceback null index off-by-one regression"),
    "concurrency": (0.05, 0.85, "thread lock deadlock async await mutex semaphore atomic"),
    "architecture": (0.1, 0.85, "design interface boundary layering migration schema protocol"),
    "security": (0.1, 0.8, "injection sanitize auth token secret tls certificate escape"),
    "performance": (0.2, 0.85, "latency profile hot path allocation cache vectorise throughput"),
}
FILLER = [
    "please",
    "the",
    "a",
    "in",
    "for",
    "of",
    "to",
    "and",
    "with",
    "this",
    "that",
    "code",
    "function",
    "file",
    "project",
    "change",
    "update",
    "make",
    "sure",
    "module",
    "class",
    "method",
    "small",
    "quick",
    "also",
    "then",
    "we",
    "our",
    "it",
    "should",
]
HARD_PHRASES = (
    "race condition",
    "without breaking the public api",
    "across every service",
    "subtle numerical drift",
    "undefined behaviour",
)
SKILLS = {
    # skill: (the weak model has it, words that name it)
    "css": (True, "stylesheet flexbox margin selector"),
    "docs": (True, "readme docstring changelog tutorial"),
    "tests": (True, "fixture pytest assertion coverage"),
    "sql": (True, "query join index transaction"),
    "regex": (False, "lookahead backreference pattern capture"),
    "numerics": (False, "overflow precision rounding eigenvalue"),
    "async": (False, "coroutine eventloop await cancellation"),
    "parsing": (False, "grammar tokenizer lexer ast"),
}
BOILERPLATE = (
    "Context follows. " + "Keep the existing style, follow the contributing guide, run the linters. " * 6
)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def generate(name: str, prompts: int, seed: int) -> list[tuple[dict[str, object], float, float]]:
    """Each prompt's line, with the hidden chances (strong, weak) its outcomes were drawn from."""
    rng = random.Random(seed)
    topics = list(TOPICS)
    lines: list[tuple[dict[str, object], float, float]] = []
    for number in range(prompts):
        if name == "skills":
            lines.append(_skill_prompt(rng, number))
            continue
        topic = rng.choice(topics)
        weak_p, strong_p, vocabulary = TOPICS[topic]
        words = rng.sample(vocabulary.split(), 3) + rng.sample(FILLER, 6)
        rng.shuffle(words)
        shift = 0.0
        if name == "phrases":
            weak_p, strong_p = (weak_p + 0.6) / 2, (strong_p + 0.85) / 2  # topics matter less
            if rng.random() < 0.35:
                words.insert(rng.randrange(len(words)), rng.choice(HARD_PHRASES))
                shift = -2.5
        prompt = " ".join(words)
        if name == "length-trap" and weak_p > 0.6:
            prompt = BOILERPLATE + prompt  # easy tasks come with long boilerplate
        weak_chance = _sigmoid(_logit(weak_p) + shift)
        strong_chance = _sigmoid(_logit(strong_p) + shift / 3)
        line = {
            "id": f"{name}-{number}",
            "title": f"{topic} task {number}",
            "prompt": prompt,
            "outcomes": {"strong": rng.random() < strong_chance, "weak": rng.random() < weak_chance},
        }
        lines.append((line, strong_chance, weak_chance))
    return lines


def _skill_prompt(rng: random.Random, number: int) -> tuple[dict[str, object], float, float]:
    skill = rng.choice(list(SKILLS))
    weak_has, vocabulary = SKILLS[skill]
    words = rng.sample(vocabulary.split(), 2) + rng.sample(FILLER, 8)
    rng.shuffle(words)
    strong_chance, weak_chance = 0.95, 0.97 if weak_has else 0.05
    line = {
        "id": f"skills-{number}",
        "title": f"task {number}",
        "prompt": " ".join(words),
        "kind": "coding",
        "outcomes": {"strong": rng.random() < strong_chance, "weak": rng.random() < weak_chance},
    }
    return line, strong_chance, weak_chance


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("set", choices=("topics", "phrases", "length-trap", "skills"))
    parser.add_argument("--prompts", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for line, _, _ in generate(args.set, args.prompts, args.seed):
        sys.stdout.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
