"""Why the success model is our own kernel and not scikit-learn: the same online learning task both ways.

scikit-learn's answer to "hashed n-grams, learned online" is a HashingVectorizer (word 1-2-grams and
character trigrams, tags as tokens) feeding an SGDClassifier with log loss, one per model, trained by
`partial_fit` one outcome at a time in the same order as the service learns them. Both are trained on
half of each synthetic set of `outcome_sets.py` and rank the other half; the figures are RouteLLM's APGR,
and the CPU of one Route's worth of prediction (featurise one task, predict for the strong and the weak
model), which is what the success model adds to every strong-or-weak decision. Needs scikit-learn
(`pip install scikit-learn`; not a dependency of the service).

    .venv/bin/python benchmarks/learner_choice.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from outcome_sets import generate

from orxaq_grpc.config.load import load_config
from orxaq_grpc.defaults import choose_config_dir
from orxaq_grpc.evaluate.curve import ranked
from orxaq_grpc.evaluate.outcomes_file import PromptOutcomes, read_outcomes
from orxaq_grpc.evaluate.run import evaluate, features_of, split
from orxaq_grpc.learning import TaskFeatures, Vector

SETS = ("skills", "topics", "phrases", "length-trap")
TIMED = 2_000  # predictions timed per learner


def _document(task: TaskFeatures) -> str:
    """The task as one text for scikit-learn: the tags become tokens of their own."""
    return task.text + " " + " ".join(tag.replace("=", "_") for tag in task.tags)


def main() -> None:
    try:
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.linear_model import SGDClassifier
        from sklearn.pipeline import FeatureUnion
    except ImportError:
        sys.exit("needs scikit-learn: pip install scikit-learn")
    import sklearn

    config = load_config(choose_config_dir(None, option="--config").directory)
    print(f"scikit-learn {sklearn.__version__}")
    print(f"{'set':<13}{'ours APGR':>10}{'sklearn APGR':>14}{'ours us/route':>15}{'sklearn us/route':>18}")
    with tempfile.TemporaryDirectory() as scratch:
        for name in SETS:
            lines = generate(name, 4000, 1)
            path = Path(scratch) / f"{name}.jsonl"
            path.write_text("".join(json.dumps(line) + "\n" for line, _, _ in lines))
            prompts = read_outcomes(path)
            ours = evaluate(prompts, config, seed=1)
            train, test = split(prompts, 0.5, 1)
            vectorizer = FeatureUnion(
                [
                    (
                        "words",
                        HashingVectorizer(n_features=1 << 18, ngram_range=(1, 2), alternate_sign=False),
                    ),
                    (
                        "chars",
                        HashingVectorizer(
                            n_features=1 << 18, analyzer="char_wb", ngram_range=(3, 3), alternate_sign=False
                        ),
                    ),
                ]
            )
            learners = {
                m: SGDClassifier(loss="log_loss", alpha=1e-4, random_state=1)
                for m in (ours.strong, ours.weak)
            }
            for prompt in train:
                x = vectorizer.transform([_document(features_of(prompt, config))])
                for model, learner in learners.items():
                    learner.partial_fit(x, [int(prompt.outcomes[model])], classes=[0, 1])
            scores = []
            for prompt in test:
                x = vectorizer.transform([_document(features_of(prompt, config))])
                p = {m: learner.predict_proba(x)[0, 1] for m, learner in learners.items()}
                scores.append(p[ours.strong] - p[ours.weak])
            theirs = ranked(
                "sklearn",
                scores,
                [p.outcomes[ours.strong] for p in test],
                [p.outcomes[ours.weak] for p in test],
                1,
            )
            print(
                f"{name:<13}{ours.curves[0].apgr:>10.3f}{theirs.apgr:>14.3f}"
                f"{_ours_us(test, config):>15.0f}{_sklearn_us(test, config, vectorizer, learners):>18.0f}"
            )


def _ours_us(test: list[PromptOutcomes], config: object) -> float:
    from orxaq_grpc.learning import ModelShape, SuccessModel

    assert hasattr(config, "policy")
    model = SuccessModel(ModelShape(18, 1.0, 2.0), {"strong": 0.9, "weak": 0.6})
    tasks = [features_of(p, config) for p in test[:TIMED]]  # type: ignore[arg-type]
    for task in tasks[:50]:  # weights exist for both, as in service
        vector = Vector.of(task, model.dim)
        model.learn("strong", vector, True)
        model.learn("weak", vector, False)
    started = time.process_time()
    for task in tasks:
        vector = Vector.of(task, model.dim)
        model.predict("strong", vector)
        model.predict("weak", vector)
    return (time.process_time() - started) / len(tasks) * 1e6


def _sklearn_us(
    test: list[PromptOutcomes], config: object, vectorizer: object, learners: dict[str, object]
) -> float:
    tasks = [_document(features_of(p, config)) for p in test[:TIMED]]  # type: ignore[arg-type]
    started = time.process_time()
    for text in tasks:
        x = vectorizer.transform([text])  # type: ignore[attr-defined]
        for learner in learners.values():
            learner.predict_proba(x)  # type: ignore[attr-defined]
    return (time.process_time() - started) / len(tasks) * 1e6


if __name__ == "__main__":
    main()
