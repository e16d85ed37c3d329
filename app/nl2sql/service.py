"""Question → prompt → model (through the batching queue) → guard → read-only execution → logged outcome.

Also runs SQL a user edited in the UI through the same guard and executor (`run_sql`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from functools import partial

import sqlalchemy as sa
from anyio import to_thread

from app.core.cancel import CancelToken
from app.core.config import Settings
from app.core.metrics import Metrics
from app.db.catalog import SchemaCatalog
from app.db.schema import Schema
from app.knowledge.context import Context, Knowledge, seed_for
from app.knowledge.store import KnowledgeStore, database_key
from app.nl2sql.batcher import Batcher, QueueFull
from app.nl2sql.constrain import SchemaNames
from app.nl2sql.continuous import ContinuousBatcher, GenerationStepper
from app.nl2sql.engine import OnnxGenerator
from app.nl2sql.extract import extract_sql
from app.nl2sql.fewshot import EXAMPLES
from app.nl2sql.generator import GenerationRequest, Sampling
from app.nl2sql.guided import (
    best_index,
    candidate_sampling,
    result_key,
    result_status,
    vote_index,
    wants_candidates,
)
from app.nl2sql.intent import WRITE_MESSAGE, asks_to_change_data
from app.nl2sql.linking import link_schema
from app.nl2sql.progress import report
from app.nl2sql.prompt import build_conversation, format_schema
from app.nl2sql.values import found_nothing, unmatched_values
from app.querylog.store import LogEntry, QueryLog
from app.sql.executor import ExecutionError, Executor
from app.sql.guard import GuardError, guard_sql

log = logging.getLogger("querywise")
SCHEMA_UNAVAILABLE = "The database is not reachable right now, so its schema cannot be read."


@dataclass
class Outcome:
    status: str  # ok | empty | refused | error
    category: str  # ok, empty_result, refused, syntax_error, unknown_table, unknown_column, timeout, ...
    question: str | None = None
    sql: str | None = None
    generated_sql: str | None = None
    message: str | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    row_count: int = 0
    truncated: bool = False
    generate_ms: float | None = None
    execute_ms: float | None = None
    total_ms: float = 0.0
    model_id: str | None = None
    batch_size: int | None = None
    candidates: int | None = None  # sampled candidates drawn by execution-guided decoding (None: greedy sufficed)
    answer_id: str | None = None  # names this answer in feedback (questions only)
    verified_examples: int = 0  # verified question/SQL pairs shown to the model as earlier turns
    glossary_terms: list[str] = field(default_factory=list)  # glossary entries shown to the model

    def as_dict(self) -> dict:
        return asdict(self)


class InvalidQuestion(ValueError):
    """A question the service will not send to the model (empty or too long); the message is for the user."""


def check_question(question: str, max_chars: int) -> str:
    """The question, stripped; the one place its length limit is enforced (API and UI both go through `ask`)."""
    question = question.strip()
    if not question:
        raise InvalidQuestion("The question is empty: type a question first.")
    if len(question) > max_chars:
        raise InvalidQuestion(f"The question is too long: {len(question)} characters, at most {max_chars}.")
    return question


@dataclass(frozen=True)
class _Generated:
    text: str
    generate_ms: float
    batch_size: int
    model_id: str = ""  # the model that wrote it (an answer decoded across a hot swap names the old one)


# An answer with nothing in it is not a success, and the user is told so in words (the SQL may be wrong).
EMPTY_MESSAGES = {
    "empty_result": "No rows matched. The question may name a value that is not in the data, or the SQL below "
    "may not mean what was asked: check it.",
    "null_result": "The query ran, but every value it returned is empty (NULL): nothing matched. Check the SQL below.",
}


class QueryService:
    def __init__(
        self,
        settings: Settings,
        generator: OnnxGenerator,
        executor: Executor,
        catalog: SchemaCatalog,
        querylog: QueryLog,
        metrics: Metrics,
    ):
        self.settings = settings
        self.generator = generator
        self.executor = executor
        self.catalog = catalog
        self.querylog = querylog
        self.metrics = metrics
        self.model_id = settings.model_id or generator.model_id
        self.previous: OnnxGenerator | None = None  # served before the last hot swap: what a rollback returns to
        self._swap_lock = asyncio.Lock()
        # glossary and verified examples live in the application database, next to the query log
        self.knowledge = Knowledge(
            KnowledgeStore(querylog.engine),
            database_key(settings.database_url),
            settings.glossary_token_budget,
            settings.verified_examples_k,
            seed_for(settings.database_url, settings.glossary_file),
        )
        self._names: tuple[Schema, SchemaNames] | None = None
        queue = {
            "max_batch_size": settings.batch_max_size,
            "max_wait_ms": settings.batch_max_wait_ms,
            "max_queue": settings.queue_max_size,
            "on_batch": metrics.batch_size.observe,
            "max_queue_wait_s": settings.queue_max_wait_s,
        }
        if settings.continuous_batching:
            stepper = GenerationStepper(
                generator, settings.max_new_tokens, lambda g, ms, size: _Generated(g.text, ms, size, g.model_id)
            )
            self.batcher: Batcher = ContinuousBatcher(stepper, **queue)
        else:
            self.batcher = Batcher(self._generate_batch, **queue)

    def prompt_for(self, question: str, allowed_tables: Collection[str] | None = None) -> str:
        return self.prompt_and_context(question, allowed_tables)[0]

    def prompt_and_context(self, question: str, allowed_tables: Collection[str] | None = None) -> tuple[str, Context]:
        """The prompt, with the glossary entries and verified examples this key may see that fit the question.
        Without any, it is the plain prompt the model was trained on, unchanged."""
        examples = () if self.generator.fine_tuned else EXAMPLES
        schema_text = self.schema_text_for(question, allowed_tables)
        names = [t.name for t in self.catalog.schema.tables]
        ctx = self.knowledge.context(question, allowed_tables, names, self.generator.count_tokens)
        return build_conversation(schema_text, question, ctx.earlier, examples, ctx.notes), ctx

    def names_for(self, allowed_tables: Collection[str] | None = None) -> SchemaNames | None:
        """What schema-constrained decoding lets the model name (None when it is off): the tables the key may read."""
        if not self.settings.schema_constrained:
            return None
        if allowed_tables is not None:
            return SchemaNames.from_schema(self.schema_for(allowed_tables))
        schema = self.catalog.schema
        if self._names is None or self._names[0] is not schema:  # rebuilt when the catalog reloads the schema
            self._names = (schema, SchemaNames.from_schema(schema))
        return self._names[1]

    def schema_for(self, allowed_tables: Collection[str] | None = None) -> Schema:
        """The cached schema, or only the tables a key may read (foreign keys to hidden tables dropped)."""
        schema = self.catalog.schema
        return schema if allowed_tables is None else schema.restricted(allowed_tables)

    def schema_text_for(self, question: str, allowed_tables: Collection[str] | None = None) -> str:
        """The whole cached schema text when it fits the token budget, else the part linked to `question`.

        With `allowed_tables` (a key's allow-list) the model sees only those tables: it cannot be led to write SQL
        for tables the guard would refuse, and their names and columns are not revealed through the prompt.
        """
        budget, count = self.settings.schema_token_budget, self.generator.count_tokens
        if allowed_tables is not None:
            schema = self.schema_for(allowed_tables)
            return format_schema(link_schema(schema, question, budget, count))
        total = self.catalog.token_count(count)
        if total <= budget:
            return self.catalog.text  # untouched: the fine-tuned model was trained on whole schemas
        return format_schema(link_schema(self.catalog.schema, question, budget, count, total_tokens=total))

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[_Generated]:
        prompts = [r.prompt for r in requests]
        t0 = time.perf_counter()
        gens = self.generator.generate(prompts, self.settings.max_new_tokens, [r.sampling for r in requests])
        ms = (time.perf_counter() - t0) * 1000
        return [_Generated(g.text, ms, len(prompts), g.model_id) for g in gens]

    async def swap_model(self, generator: OnnxGenerator) -> OnnxGenerator:
        """Serve `generator` from the next step boundary on, without a restart; returns the one it replaces, which is
        kept for `rollback`. Rows already decoding finish on the old model (static batches: the batch running keeps
        the generator it started with), so no request in flight fails."""
        async with self._swap_lock:
            old = self.generator
            if isinstance(self.batcher, ContinuousBatcher):
                await self.batcher.swap(generator)
            self.generator, self.previous = generator, old
            self.model_id = generator.model_id
            log.info("model swapped: %s (%s) replaces %s", self.model_id, generator.model_dir, old.model_id)
            return old

    def _answered_by(self, model_id: str) -> str:
        """The id to report for an answer a model wrote: the served id (MODEL_ID may rename it) unless an earlier
        model, swapped out meanwhile, wrote it."""
        return self.model_id if not model_id or model_id == self.generator.model_id else model_id

    async def rollback(self) -> OnnxGenerator | None:
        """Serve the model from before the last swap again (and keep the current one: a second rollback undoes it).
        None when there was no swap."""
        previous = self.previous
        if previous is None:
            return None
        await self.swap_model(previous)
        return previous

    async def ask(self, question: str, allowed_tables: Collection[str] | None = None) -> Outcome:
        """Raises InvalidQuestion (empty or too long) before any work, and QueueFull when the model queue is full."""
        question = check_question(question, self.settings.question_max_chars)
        t0 = time.perf_counter()
        if asks_to_change_data(question):  # answered in words: the model would write an unrelated SELECT
            out = Outcome("refused", "write_request", question=question, message=WRITE_MESSAGE)
            return await self._finish(out, "question", t0)
        if self.batcher.full:  # shed at once, before any work for a question that cannot be queued
            raise QueueFull
        try:
            prompt, ctx = await to_thread.run_sync(self.prompt_and_context, question, allowed_tables)
            names = self.names_for(allowed_tables)
        except (sa.exc.SQLAlchemyError, OSError):  # the schema could not be read: the database is down
            log.warning("schema unavailable for a question", exc_info=True)
            out = Outcome("error", "db_unavailable", question=question, message=SCHEMA_UNAVAILABLE)
            return await self._finish(out, "question", t0)
        self.metrics.queue_depth.set(self.batcher.depth)
        report("writing")  # the page says what is happening (app.nl2sql.progress)
        if self.settings.exec_guided_vote and self.settings.exec_guided_candidates:
            out = await self._voted(prompt, question, t0, allowed_tables, names)
            out.verified_examples, out.glossary_terms = len(ctx.earlier), list(ctx.terms)
            out = await self._explain_nothing(out, allowed_tables)
            return await self._finish(out, "question", t0)
        gen: _Generated = await self.batcher.submit(GenerationRequest(prompt, Sampling(names=names)))
        self.metrics.latency.labels("generate").observe(gen.generate_ms / 1000)
        report("running")
        out = await self._guard_and_execute(extract_sql(gen.text), t0, allowed_tables)
        out.question, out.generated_sql = question, gen.text
        out.generate_ms, out.batch_size = round(gen.generate_ms, 1), gen.batch_size
        out.model_id = self._answered_by(gen.model_id)
        if self.settings.exec_guided_candidates and wants_candidates(out.status):
            out = await self._execution_guided(prompt, out, t0, allowed_tables, names)
        out.verified_examples, out.glossary_terms = len(ctx.earlier), list(ctx.terms)
        out = await self._explain_nothing(out, allowed_tables)
        return await self._finish(out, "question", t0)

    async def _explain_nothing(self, out: Outcome, allowed_tables: Collection[str] | None) -> Outcome:
        """An answer that found nothing (no rows, or one row of 0/NULL) because a text filter names a value the data
        does not hold is `empty` (category `unmatched_value`), with a sentence naming the value and the look-alikes
        the column does hold: a count of 0 for an invented value is not a success. The choice of answer is made
        before, without this check."""
        if out.status not in ("ok", "empty") or not out.sql or not found_nothing(out.rows):
            return out
        try:
            schema = self.schema_for(allowed_tables)
            missing = await to_thread.run_sync(unmatched_values, out.sql, schema, self.executor, allowed_tables)
        except (sa.exc.SQLAlchemyError, OSError):
            return out
        if missing:
            out.status, out.category = "empty", "unmatched_value"
            what = "; ".join(m.sentence() for m in missing)
            out.message = f"Nothing matched: {what}. Check the value in the question or the SQL below."
        return out

    async def _execution_guided(
        self,
        prompt: str,
        greedy: Outcome,
        t0: float,
        allowed_tables: Collection[str] | None,
        names: SchemaNames | None = None,
    ) -> Outcome:
        """Draw sampled candidates for a failed greedy answer; answer the first that runs with rows, or the best."""
        samplers = candidate_sampling(
            prompt, self.settings.exec_guided_candidates, self.settings.exec_guided_temperature, names
        )
        if self.batcher.depth + len(samplers) > self.settings.queue_max_size // 2:
            self.metrics.exec_guided.labels("skipped_busy").inc()  # under load, answer now: capacity goes first
            return greedy
        g0 = time.perf_counter()
        # all candidates decode together; each is judged as soon as it and those before it are done, and the first
        # that runs with rows is answered at once: the ones after it are cancelled and leave the batch. The choice
        # is the one waiting for all of them would make (the first, in order, that returns rows).
        tasks = [asyncio.ensure_future(self.batcher.submit(GenerationRequest(prompt, s))) for s in samplers]
        tried, seen = [greedy], {extract_sql(greedy.generated_sql or "")}
        try:
            for number, task in enumerate(tasks, 1):
                report("candidates", number, len(tasks))
                try:
                    g = await task
                except QueueFull:  # busy: no room for extra work; what was tried so far stands
                    break
                sql = extract_sql(g.text)
                if sql in seen:
                    continue
                seen.add(sql)
                cand = await self._guard_and_execute(sql, t0, allowed_tables)
                cand.generated_sql = g.text
                tried.append(cand)
                if not wants_candidates(cand.status):
                    break
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished ones
        chosen = tried[best_index([t.status for t in tried])]
        self.metrics.exec_guided.labels("rescued" if chosen is not greedy else "not_rescued").inc()
        chosen.question, chosen.batch_size, chosen.model_id = greedy.question, greedy.batch_size, greedy.model_id
        chosen.generate_ms = round((greedy.generate_ms or 0) + (time.perf_counter() - g0) * 1000, 1)
        chosen.candidates = len(samplers)
        return chosen

    async def _voted(
        self,
        prompt: str,
        question: str,
        t0: float,
        allowed_tables: Collection[str] | None,
        names: SchemaNames | None = None,
    ) -> Outcome:
        """Voting: the greedy answer and the sampled candidates decode together in one batch, every distinct SQL
        runs once, and the answer is the one whose result most of them share (`vote_index`; greedy wins ties)."""
        samplers = candidate_sampling(
            prompt, self.settings.exec_guided_candidates, self.settings.exec_guided_temperature, names
        )
        if self.batcher.depth + len(samplers) + 1 > self.settings.queue_max_size // 2:
            self.metrics.exec_guided.labels("skipped_busy").inc()  # under load, greedy alone: capacity goes first
            samplers = []
        requests = [GenerationRequest(prompt, Sampling(names=names))] + [GenerationRequest(prompt, s) for s in samplers]
        g0 = time.perf_counter()
        tasks = [asyncio.ensure_future(self.batcher.submit(r)) for r in requests]
        try:
            gens = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished ones; frees the batch rows when this request is cancelled
        if isinstance(gens[0], BaseException):  # the greedy answer could not be queued: as without voting
            raise gens[0]
        drafts = [g for g in gens if isinstance(g, _Generated)]  # candidates that found no room are left out
        generate_ms = (time.perf_counter() - g0) * 1000
        self.metrics.latency.labels("generate").observe(drafts[0].generate_ms / 1000)
        report("running")
        ran: dict[str, Outcome] = {}
        tried: list[Outcome] = []
        for number, g in enumerate(drafts, 1):
            sql = extract_sql(g.text)
            if sql not in ran:  # the same SQL twice is one run and two votes
                report("candidates", number, len(drafts))
                ran[sql] = await self._guard_and_execute(sql, t0, allowed_tables)
                ran[sql].generated_sql = g.text
            tried.append(ran[sql])
        keys = [result_key(t.rows) if t.status == "ok" else None for t in tried]
        chosen = tried[vote_index([t.status for t in tried], keys)]
        self.metrics.exec_guided.labels("vote_changed" if chosen is not tried[0] else "vote_kept").inc()
        chosen.question, chosen.batch_size = question, drafts[0].batch_size
        chosen.model_id = self._answered_by(drafts[0].model_id)
        chosen.generate_ms = round(generate_ms, 1)
        chosen.candidates = len(drafts) - 1 or None
        return chosen

    async def run_sql(self, sql: str, allowed_tables: Collection[str] | None = None) -> Outcome:
        t0 = time.perf_counter()
        out = await self._guard_and_execute(sql, t0, allowed_tables)
        out = await self._explain_nothing(out, allowed_tables)
        return await self._finish(out, "sql", t0)

    async def _guard_and_execute(self, sql: str, t0: float, allowed_tables: Collection[str] | None = None) -> Outcome:
        if not sql.strip():
            return Outcome("error", "no_sql", sql=sql, message="The model did not write a SQL query for this question.")
        check = partial(
            guard_sql,
            sql,
            dialect=self.executor.dialect,
            row_limit=self.settings.row_limit,
            allowed_tables=allowed_tables,
        )
        try:
            # Parsing a long query takes CPU time: in a worker thread it never stalls the event loop (health probes,
            # other users' requests) while it runs.
            guarded = await to_thread.run_sync(check)
        except GuardError as exc:
            status = "refused" if exc.category == "refused" else "error"
            return Outcome(status, exc.category, sql=sql, message=exc.message)
        cancel = CancelToken()
        try:
            # Not waiting for the thread when cancelled (the client went away): the token stops the query itself.
            res = await to_thread.run_sync(self.executor.run, guarded, cancel, abandon_on_cancel=True)
        except ExecutionError as exc:
            status = "refused" if exc.category == "refused" else "error"  # the executor's own allow-list check
            return Outcome(status, exc.category, sql=guarded.sql, message=exc.message)
        except BaseException:  # cancelled: nobody waits for this answer, so the database stops working on it too
            cancel.cancel()
            raise
        status, category = result_status(res.rows)
        return Outcome(
            status,
            category,
            message=EMPTY_MESSAGES.get(category),
            sql=guarded.sql,
            columns=res.columns,
            rows=res.rows,
            row_count=res.row_count,
            truncated=res.truncated,
            execute_ms=round(res.execute_ms, 1),
        )

    async def _finish(self, out: Outcome, source: str, t0: float) -> Outcome:
        out.total_ms = round((time.perf_counter() - t0) * 1000, 1)
        out.model_id = (out.model_id or self.model_id) if source == "question" else None
        if source == "question":
            out.answer_id = uuid.uuid4().hex  # unguessable: feedback on it needs no other proof of who asked
        self.metrics.requests.labels(source, out.status, out.category).inc()
        self.metrics.latency.labels("total").observe(out.total_ms / 1000)
        if out.execute_ms is not None:
            self.metrics.latency.labels("execute").observe(out.execute_ms / 1000)
        entry = LogEntry(
            source=source,
            question=out.question,
            sql=out.sql,
            status=out.status,
            category=out.category,
            message=out.message,
            row_count=out.row_count,
            generate_ms=out.generate_ms,
            execute_ms=out.execute_ms,
            total_ms=out.total_ms,
            model_id=out.model_id,
            batch_size=out.batch_size,
            answer_id=out.answer_id,
            model_sql=extract_sql(out.generated_sql) if out.generated_sql else None,
        )
        try:
            written = await to_thread.run_sync(self.querylog.record, entry)
        except Exception:  # the answer matters more than its log row
            written = False
            log.exception("query log write failed")
        if not written:  # the row waits in the log's backlog (or is lost): counted and visible on /metrics
            self.metrics.log_failures.inc()
        return out
