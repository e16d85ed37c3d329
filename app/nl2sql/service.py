"""The flow of one answer: question → prompt → model (through the batching queue) → guard → read-only execution →
logged outcome; also SQL a user edited in the UI, through the same guard and executor (`run_sql`).

Its parts are built by the app factory (`app.main.build_service`) and passed in: the prompt's schema and business
context (`Prompter`), the batching queue (`Batcher`), the executor and the answer log (`AnswerLog`). The service
owns the flow and which model serves (`swap_model`, `rollback`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Collection
from functools import partial

import sqlalchemy as sa
from anyio import to_thread

from app.core.cancel import CancelToken
from app.core.config import Settings
from app.core.metrics import Metrics
from app.knowledge.context import Context
from app.nl2sql.answer_log import AnswerLog
from app.nl2sql.batcher import Batcher, Generated, QueueFull
from app.nl2sql.constrain import SchemaNames
from app.nl2sql.extract import sql_of
from app.nl2sql.generator import GenerationRequest, Generator, Sampling
from app.nl2sql.guided import (
    best_index,
    candidate_sampling,
    judged,
    result_key,
    result_status,
    vote_index,
    wants_candidates,
)
from app.nl2sql.intent import WRITE_MESSAGE, asks_to_change_data
from app.nl2sql.joins import unkeyed_joins
from app.nl2sql.outcome import EMPTY_MESSAGES, Category, Outcome, Status
from app.nl2sql.progress import report
from app.nl2sql.prompter import Prompter
from app.nl2sql.values import found_nothing, unmatched_values
from app.sql.executor import ExecutionError, Executor
from app.sql.guard import GuardError, guard_sql, sqlglot_dialect

log = logging.getLogger("querywise")
SCHEMA_UNAVAILABLE = "The database is not reachable right now, so its schema cannot be read."
# The warm-up reads the prompt in pieces of about this many characters (~200 tokens), each one queued like a
# question: a question asked meanwhile waits for one piece at most, never for the whole prompt.
WARM_PIECE_CHARS = 800


class InvalidQuestion(ValueError):
    """A question the service will not send to the model (empty or too long); the message is for the user."""


def _piece_ends(text: str, size: int) -> list[int]:
    """Where the warm-up's growing pieces of `text` end, about every `size` characters (at most twice that; a rest
    under a quarter piece joins the last piece): before a space, where the tokenizers split words too (a space
    starts the next word's token), so each piece's tokens begin the next piece's; [] for no text."""
    ends, start = [], 0
    while len(text) - start > size + size // 4:
        space = text.find(" ", start + size, start + 2 * size)
        end = space if space >= 0 else start + size  # no space that near: by characters
        ends.append(end)
        start = end
    return [*ends, len(text)] if len(text) > start else ends


def check_question(question: str, max_chars: int) -> str:
    """The question, stripped; the one place its length limit is enforced (API and UI both go through `ask`)."""
    question = question.strip()
    if not question:
        raise InvalidQuestion("The question is empty: type a question first.")
    if len(question) > max_chars:
        raise InvalidQuestion(f"The question is too long: {len(question)} characters, at most {max_chars}.")
    return question


class QueryService:
    def __init__(
        self,
        settings: Settings,
        generator: Generator,
        batcher: Batcher,
        prompter: Prompter,
        executor: Executor,
        answers: AnswerLog,
    ):
        self.settings, self.generator, self.batcher = settings, generator, batcher
        self.prompter, self.executor, self.answers = prompter, executor, answers
        self.metrics: Metrics = answers.metrics
        self.model_id = settings.model_id or generator.model_id
        self.previous: Generator | None = None  # served before the last hot swap: what a rollback returns to
        self._swap_lock = asyncio.Lock()
        self._warming: asyncio.Task | None = None
        self._stopping = False
        self.warm_up = "off"  # what /readyz reports: off, running, done or skipped

    async def warmed(self) -> None:
        """Wait for the warm-up running now, if any, to end (tests, benchmarks that measure warm answers)."""
        if self._warming is not None:
            await asyncio.wait({self._warming})

    def start_warming(self) -> None:
        """Cache the prompt's shared prefix in the background (`warm`), for the model served now."""
        if self._stopping:
            return
        if self._warming is not None:
            self._warming.cancel()
        self.warm_up = "running"  # from now, not from the task's first step: a reader never sees the state before
        self._warming = asyncio.get_running_loop().create_task(self.warm(), name="warm-up")

    async def stop_warming(self) -> None:
        """At shutdown: end the warm-up, and start none after (a swap while the server stops)."""
        self._stopping = True
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.wait({self._warming})
            self._warming = None

    async def warm(self) -> int:
        """Read the prompt every question on this database starts with (instructions, format examples, schema,
        glossary) into the model's prefix cache, so the first question does not wait for it: on 2 cores the 1.5B
        reads its ~1,200 tokens on the demo database in ~20 s, a question after them in ~1 s. Queued like the
        questions, in pieces (`WARM_PIECE_CHARS`) that never time out in the queue and stay out of its statistics
        (`background`); returns the characters read: all of the shared start, or fewer where it stopped (off,
        nothing shared, the database unreachable, the queue full or closing, a failed decode).
        `warm_up` says which: done, or skipped (logged), or off."""
        if not (self.settings.warm_prompt_prefix and self.settings.prefix_cache_entries and self.generator.stepwise):
            self.warm_up = "off"
            return 0
        self.warm_up, t0, done = "running", time.perf_counter(), 0
        try:
            prompt = await to_thread.run_sync(self.prompter.shared_start, self.generator)
            for end in _piece_ends(prompt, WARM_PIECE_CHARS):
                await self.batcher.submit(GenerationRequest(prompt[:end], max_new_tokens=0, background=True))
                done = end
        except (sa.exc.SQLAlchemyError, OSError, QueueFull) as exc:  # QueueFull: full, or closing (QueueClosed)
            skipped = type(exc).__name__
        except Exception:  # a failed decode fails questions too and is reported there; this is only a head start
            log.warning("prompt prefix warm-up failed", exc_info=True)
            skipped = "a failed decode"
        else:  # nothing read: the schema is cut to each question's tables and nothing before it is shared
            skipped = "" if done else "no prompt start is shared by every question"
        if skipped:
            log.info("prompt prefix warm-up skipped: %s", skipped)
            self.warm_up = "skipped"
            return done
        self.warm_up = "done"
        log.info("prompt prefix cached: %d characters in %.1f s", done, time.perf_counter() - t0)
        return done

    def prompt_for(self, question: str, allowed_tables: Collection[str] | None = None) -> str:
        """The prompt the served model gets for `question` (glossary and verified examples included)."""
        return self.prompt_and_context(question, allowed_tables)[0]

    def prompt_and_context(self, question: str, allowed_tables: Collection[str] | None = None) -> tuple[str, Context]:
        return self.prompter.prompt(question, self.generator, allowed_tables)

    async def swap_model(self, generator: Generator) -> Generator:
        """Serve `generator` from the next step boundary on, without a restart; returns the one it replaces, which is
        kept for `rollback`. Rows already decoding finish on the old model (static batches: the batch running keeps
        the generator it started with), so no request in flight fails."""
        async with self._swap_lock:
            old = self.generator
            await self.batcher.swap(generator)
            self.generator, self.previous = generator, old
            self.model_id = generator.model_id
            self.start_warming()  # the new model's prefix cache starts empty
            log.info("model swapped: %s (%s) replaces %s", self.model_id, generator.model_dir, old.model_id)
            return old

    def _answered_by(self, model_id: str) -> str:
        """The id to report for an answer a model wrote: the served id (MODEL_ID may rename it) unless an earlier
        model, swapped out meanwhile, wrote it."""
        return self.model_id if not model_id or model_id == self.generator.model_id else model_id

    async def rollback(self) -> Generator | None:
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
            out = Outcome(Status.REFUSED, Category.WRITE_REQUEST, question=question, message=WRITE_MESSAGE)
            return await self._finish(out, "question", t0)
        if self.batcher.full:  # shed at once, before any work for a question that cannot be queued
            raise QueueFull
        try:
            prompt, ctx = await to_thread.run_sync(self.prompt_and_context, question, allowed_tables)
            names = self.prompter.names(allowed_tables)
        except (sa.exc.SQLAlchemyError, OSError):  # the schema could not be read: the database is down
            log.warning("schema unavailable for a question", exc_info=True)
            out = Outcome(Status.ERROR, Category.DB_UNAVAILABLE, question=question, message=SCHEMA_UNAVAILABLE)
            return await self._finish(out, "question", t0)
        self.metrics.queue_depth.set(self.batcher.depth)
        # the page says what is happening (app.nl2sql.progress); during the warm-up, why the first answer takes long
        report("warming" if self.warm_up == "running" else "writing")
        if self.settings.exec_guided_vote and self.settings.exec_guided_candidates:
            out = await self._voted(prompt, question, t0, allowed_tables, names)
            out = self._flag_unkeyed(out)
            out.verified_examples, out.glossary_terms = len(ctx.earlier), list(ctx.terms)
            out = await self._explain_nothing(out, allowed_tables)
            return await self._finish(out, "question", t0)
        gen: Generated = await self.batcher.submit(GenerationRequest(prompt, Sampling(names=names)))
        self.metrics.latency.labels("generate").observe(gen.generate_ms / 1000)
        report("running")
        sql = await self._sql_of(gen.text, names, allowed_tables)
        out = await self._guard_and_execute(sql, t0, allowed_tables)
        await self._check_joins(out, allowed_tables)
        out.question, out.generated_sql = question, gen.text
        out.generate_ms, out.batch_size = round(gen.generate_ms, 1), gen.batch_size
        out.model_id = self._answered_by(gen.model_id)
        if self.settings.exec_guided_candidates and wants_candidates(judged(out.status, out.unkeyed)):
            out = await self._execution_guided(prompt, out, sql, t0, allowed_tables, names)
        out = self._flag_unkeyed(out)
        out.verified_examples, out.glossary_terms = len(ctx.earlier), list(ctx.terms)
        out = await self._explain_nothing(out, allowed_tables)
        return await self._finish(out, "question", t0)

    async def _sql_of(self, text: str, names: SchemaNames | None, allowed_tables: Collection[str] | None) -> str:
        """The SQL of a model's answer as it runs: quoted where names need it, a table used but never read joined in
        (`sql_of`; off with REPAIR_MISSING_TABLES=false, and where the schema cannot be read: the guard says why).
        In a worker thread, like the guard: parsing a long query must not stall the event loop."""
        return await to_thread.run_sync(self._sql_now, text, names, allowed_tables)

    def _sql_now(self, text: str, names: SchemaNames | None, allowed_tables: Collection[str] | None) -> str:
        links = None
        if self.settings.repair_missing_tables:
            try:
                links = self.prompter.key_links(allowed_tables)
            except (sa.exc.SQLAlchemyError, OSError):
                links = None
        return sql_of(text, names, links, sqlglot_dialect(self.executor.dialect))

    async def _check_joins(self, out: Outcome, allowed_tables: Collection[str] | None) -> None:
        """Note on an answer with rows the joins of its SQL that no key links (`unkeyed_joins`): execution-guided
        decoding ranks it below one joined on keys, and an answer that keeps one says so."""
        if out.status != Status.OK or not out.sql:
            return
        try:
            links = self.prompter.key_links(allowed_tables)
        except (sa.exc.SQLAlchemyError, OSError):
            return
        dialect = sqlglot_dialect(self.executor.dialect)
        out.unkeyed = await to_thread.run_sync(unkeyed_joins, out.sql, links, dialect)

    def _flag_unkeyed(self, out: Outcome) -> Outcome:
        """An answer with rows that joins on columns no key links is not a plain success: such answers were wrong
        9 times in 10. It keeps its rows, under a category and a sentence naming the join."""
        if out.status == Status.OK and out.unkeyed:
            joins = "; ".join(out.unkeyed)
            out.category = Category.UNKEYED_JOIN
            out.message = (
                f"Check this answer: it joins {joins}, columns that no key links. Answers joined like this are "
                "usually wrong; the SQL below shows the join."
            )
        return out

    async def _explain_nothing(self, out: Outcome, allowed_tables: Collection[str] | None) -> Outcome:
        """An answer that found nothing (no rows, or one row of 0/NULL) because a text filter names a value the data
        does not hold is `empty` (category `unmatched_value`), with a sentence naming the value and the look-alikes
        the column does hold: a count of 0 for an invented value is not a success. The choice of answer is made
        before, without this check."""
        if not out.ran or not found_nothing(out.rows):
            return out
        try:
            schema = self.prompter.schema(allowed_tables)
            missing = await to_thread.run_sync(unmatched_values, out.sql, schema, self.executor, allowed_tables)
        except (sa.exc.SQLAlchemyError, OSError):
            return out
        if missing:
            out.status, out.category = Status.EMPTY, Category.UNMATCHED_VALUE
            what = "; ".join(m.sentence() for m in missing)
            out.message = f"Nothing matched: {what}. Check the value in the question or the SQL below."
        return out

    def _candidates(self, prompt: str, names: SchemaNames | None, also_queued: int) -> list[Sampling]:
        """The seeded samplers of the execution-guided candidates, or none when they (and `also_queued` requests
        more) would fill over half the queue: under load, capacity goes to other users' first answers."""
        s = self.settings
        samplers = candidate_sampling(prompt, s.exec_guided_candidates, s.exec_guided_temperature, names)
        if self.batcher.depth + len(samplers) + also_queued > s.queue_max_size // 2:
            self.metrics.exec_guided.labels("skipped_busy").inc()
            return []
        return samplers

    async def _execution_guided(
        self,
        prompt: str,
        greedy: Outcome,
        greedy_sql: str,
        t0: float,
        allowed_tables: Collection[str] | None,
        names: SchemaNames | None = None,
    ) -> Outcome:
        """Draw sampled candidates for a failed greedy answer; answer the first that runs with rows, or the best."""
        samplers = self._candidates(prompt, names, also_queued=0)
        if not samplers:  # under load, answer now
            return greedy
        g0 = time.perf_counter()
        # all candidates decode together; each is judged as soon as it and those before it are done, and the first
        # that runs with rows is answered at once: the ones after it are cancelled and leave the batch. The choice
        # is the one waiting for all of them would make (the first, in order, that returns rows).
        tasks = [asyncio.ensure_future(self.batcher.submit(GenerationRequest(prompt, s))) for s in samplers]
        tried, seen = [greedy], {greedy_sql}
        try:
            for number, task in enumerate(tasks, 1):
                report("candidates", number, len(tasks))
                try:
                    g = await task
                except QueueFull:  # busy: no room for extra work; what was tried so far stands
                    break
                sql = await self._sql_of(g.text, names, allowed_tables)
                if sql in seen:
                    continue
                seen.add(sql)
                cand = await self._guard_and_execute(sql, t0, allowed_tables)
                await self._check_joins(cand, allowed_tables)
                cand.generated_sql = g.text
                tried.append(cand)
                if not wants_candidates(judged(cand.status, cand.unkeyed)):
                    break
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished ones
        chosen = tried[best_index([judged(t.status, t.unkeyed) for t in tried])]
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
        samplers = self._candidates(prompt, names, also_queued=1)  # none under load: greedy alone
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
        drafts = [g for g in gens if isinstance(g, Generated)]  # candidates that found no room are left out
        generate_ms = (time.perf_counter() - g0) * 1000
        self.metrics.latency.labels("generate").observe(drafts[0].generate_ms / 1000)
        report("running")
        ran: dict[str, Outcome] = {}
        tried: list[Outcome] = []
        for number, g in enumerate(drafts, 1):
            sql = await self._sql_of(g.text, names, allowed_tables)
            if sql not in ran:  # the same SQL twice is one run and two votes
                report("candidates", number, len(drafts))
                ran[sql] = await self._guard_and_execute(sql, t0, allowed_tables)
                await self._check_joins(ran[sql], allowed_tables)
                ran[sql].generated_sql = g.text
            tried.append(ran[sql])
        statuses = [judged(t.status, t.unkeyed) for t in tried]
        keys = [result_key(t.rows) if status == "ok" else None for t, status in zip(tried, statuses, strict=True)]
        chosen = tried[vote_index(statuses, keys)]
        self.metrics.exec_guided.labels("vote_changed" if chosen is not tried[0] else "vote_kept").inc()
        chosen.question, chosen.batch_size = question, drafts[0].batch_size
        chosen.model_id = self._answered_by(drafts[0].model_id)
        chosen.generate_ms = round(generate_ms, 1)
        chosen.candidates = len(drafts) - 1 or None
        return chosen

    async def run_sql(self, sql: str, allowed_tables: Collection[str] | None = None) -> Outcome:
        t0 = time.perf_counter()
        out = await self._guard_and_execute(sql, t0, allowed_tables)
        await self._check_joins(out, allowed_tables)  # an edited answer's join is as suspect as the model's
        out = self._flag_unkeyed(out)
        out = await self._explain_nothing(out, allowed_tables)
        return await self._finish(out, "sql", t0)

    async def _guard_and_execute(self, sql: str, t0: float, allowed_tables: Collection[str] | None = None) -> Outcome:
        if not sql.strip():
            return Outcome(
                Status.ERROR, Category.NO_SQL, sql=sql, message="The model did not write a SQL query for this question."
            )
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
            status = Status.REFUSED if exc.category == Category.REFUSED else Status.ERROR
            return Outcome(status, exc.category, sql=sql, message=exc.message)
        cancel = CancelToken()
        try:
            # Not waiting for the thread when cancelled (the client went away): the token stops the query itself.
            res = await to_thread.run_sync(self.executor.run, guarded, cancel, abandon_on_cancel=True)
        except ExecutionError as exc:
            status = Status.REFUSED if exc.category == Category.REFUSED else Status.ERROR  # the executor's allow-list
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
        await self.answers.record(out, source)
        return out
