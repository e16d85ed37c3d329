"""A generator without a model, for fast tests of everything around it (the service, the batching queue, the API).

`FakeGenerator` implements `app.nl2sql.generator.Generator`. It answers the question of each prompt by a rule the
test gives: a mapping from a piece of the question to the text the model would write (the SQL, which the extractor
then reads), or to a function of the `Sampling`, so that greedy decoding and each sampled candidate can answer
differently. It records every prompt and sampling it received, so a test can check what the model was shown. It
cannot decode step by step (`stepwise` is False): a service built on it batches whole batches.

A question no rule covers is an error, not a generic answer: a fake that always "succeeds" would let a test pass for
the wrong reason.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.nl2sql.generator import GREEDY, MAX_NEW_TOKENS, Generation, Sampling, StepDecoder
from app.nl2sql.prompt import IM_END

# The question the prompt asks last: earlier turns (verified examples) ask their own questions before it.
_LAST_QUESTION = re.compile(r"Question: (.*?)" + re.escape(IM_END), re.S)

Answer = str | Callable[[Sampling], str]


class NoAnswerRule(AssertionError):
    """The fake was asked a question its test gave no answer for."""


@dataclass(frozen=True)
class Received:
    """One row the fake was asked to write: its prompt, how to pick tokens, and the question read from the prompt."""

    prompt: str
    sampling: Sampling
    question: str


def question_of(prompt: str) -> str:
    """The last question of a ChatML prompt (`app.nl2sql.prompt`)."""
    asked = _LAST_QUESTION.findall(prompt)
    if not asked:
        raise NoAnswerRule(f"no question in the prompt: {prompt[-200:]!r}")
    return asked[-1].strip()


class FakeGenerator:
    """Answers by rule, counts tokens by whitespace, and remembers what it was asked (thread-safe: the batching
    queue calls `generate` from its worker thread)."""

    stepwise = False

    def __init__(self, answers: Mapping[str, Answer], model_id: str = "fake-sql-writer", fine_tuned: bool = True):
        # first match wins, in the order given; matched case-insensitively against the question alone
        self.answers = dict(answers)
        self._model_id = model_id
        self._fine_tuned = fine_tuned
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self.batch_sizes: list[int] = []  # rows per `generate` call, in call order

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def model_dir(self) -> Path | None:
        return None  # no files: a hot swap or a specialize run cannot start from it

    @property
    def fine_tuned(self) -> bool:
        return self._fine_tuned

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.received]

    @property
    def samplings(self) -> list[Sampling]:
        return [r.sampling for r in self.received]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def answer(self, question: str, sampling: Sampling) -> str:
        for piece, answer in self.answers.items():
            if piece.lower() in question.lower():
                return answer(sampling) if callable(answer) else answer
        raise NoAnswerRule(f"no answer rule for the question {question!r} (rules: {list(self.answers)})")

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS, sampling: Sequence[Sampling] | None = None
    ) -> list[Generation]:
        samplings = list(sampling) if sampling is not None else [GREEDY] * len(prompts)
        assert len(samplings) == len(prompts), "one sampling per prompt"
        rows = [Received(p, s, question_of(p)) for p, s in zip(prompts, samplings, strict=True)]
        with self._lock:
            self.received.extend(rows)
            self.batch_sizes.append(len(rows))
        out = []
        for row in rows:
            text = self.answer(row.question, row.sampling)
            words = text.split()
            if len(words) > max_new_tokens:  # a model stops at max_new_tokens, whatever it meant to write
                text = " ".join(words[:max_new_tokens])
            new_tokens = min(len(words), max_new_tokens)
            out.append(Generation(text, self.count_tokens(row.prompt), new_tokens, self.model_id))
        return out

    def decode_batch(self) -> StepDecoder:
        raise NotImplementedError("FakeGenerator answers whole batches only (stepwise is False)")
