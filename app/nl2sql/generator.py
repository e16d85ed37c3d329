"""One interface over interchangeable text generators (the ONNX engine that serves, torch fp32 for evaluation,
llama.cpp for benchmarks), as peft puts one lifecycle over interchangeable tuning methods.

The service, evaluation and the benchmarks program against `Generator` only. A generator that can also decode step
by step (rows joining and leaving a running batch) says so with `stepwise` and hands out a `StepDecoder`; the service
then batches continuously, otherwise in whole batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from app.core.config import MAX_NEW_TOKENS

if TYPE_CHECKING:
    from app.nl2sql.constrain import SchemaNames

__all__ = ["GREEDY", "MAX_NEW_TOKENS", "Generation", "GenerationRequest", "Generator", "Sampling", "StepDecoder"]


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int
    model_id: str = ""  # the model that wrote it (a hot swap may change the served one meanwhile)


@dataclass(frozen=True)
class Sampling:
    """How one row picks its next token: temperature 0 is greedy; otherwise top-k sampling from its own seed.
    With `names`, only tokens that keep the SQL's identifiers inside that schema are taken (while any is in reach)."""

    temperature: float = 0.0
    top_k: int = 40
    seed: int = 0
    names: SchemaNames | None = None


GREEDY = Sampling()


@dataclass(frozen=True)
class GenerationRequest:
    """One answer to write: the prompt and how to pick its tokens (greedy unless an execution-guided candidate).
    `max_new_tokens`: None for the service's limit; 0 only reads the prompt (the warm-up that caches its prefix).
    `background`: work no user waits for (the warm-up): it never times out in the queue and stays out of the
    queue's statistics (batch sizes, times, Retry-After, timeouts and cancellations are the users')."""

    prompt: str
    sampling: Sampling = GREEDY
    max_new_tokens: int | None = None
    background: bool = False


class StepDecoder(Protocol):
    """Rows decoding together, one step at a time: what continuous batching drives."""

    def __len__(self) -> int: ...

    def add(
        self, key: object, prompt: str, max_new_tokens: int, sampling: Sampling = GREEDY
    ) -> Generation | None: ...  # the Generation at once when the row is finished before any step

    def step(self) -> dict[object, Generation]: ...  # one token for every row; the rows that finished, by key

    def drop(self, keys: set[object]) -> None: ...


@runtime_checkable
class Generator(Protocol):
    """Writes SQL for prompts. `generate` decodes a whole batch; `decode_batch` (when `stepwise`) one step at a time."""

    @property
    def model_id(self) -> str: ...

    @property
    def model_dir(self) -> Path | None: ...  # where its files are (a hot swap and specialize start from it)

    @property
    def fine_tuned(self) -> bool: ...  # trained on our prompt format (an untuned base gets few-shot examples)

    @property
    def stepwise(self) -> bool: ...

    def count_tokens(self, text: str) -> int: ...

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS, sampling: Sequence[Sampling] | None = None
    ) -> list[Generation]: ...

    def decode_batch(self) -> StepDecoder: ...  # only when `stepwise`; NotImplementedError otherwise
