# elfscreen service image: the API (`elfscreen serve`), the Celery workers and the DFT worker
# (`-Q dft`) share it. Quantum ESPRESSO (pw.x, pp.x, projwfc.x and Debian's norm-conserving HSCV H
# potential) is installed for DFT verification; the API checks it is there (else verify answers 503).
#   CPU (default):  docker build -t elfscreen:cpu .
#   CUDA:           docker build --build-arg VARIANT=cu128 -t elfscreen:cuda .
# VARIANT picks the PyTorch wheel index (cpu, or a CUDA build such as cu126/cu128; the wheels bring
# their CUDA libraries, the host needs the NVIDIA driver and container toolkit).
# The image carries the shipped model; to use another, mount it and point ELFSCREEN_MODEL at it.
ARG PYTHON=3.11
FROM python:${PYTHON}-slim

ARG VARIANT=cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/tmp/numba-cache
RUN apt-get update \
    && apt-get install -y --no-install-recommends quantum-espresso quantum-espresso-data \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/${VARIANT} torch==2.13.0
WORKDIR /srv/elfscreen
COPY pyproject.toml README.md ./
COPY model ./model
COPY app ./app
COPY worker ./worker
COPY clients ./clients
RUN pip install --no-cache-dir . \
    && useradd --system --uid 1000 --home-dir /data elfscreen \
    && mkdir -p /data && chown elfscreen /data
USER elfscreen
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
# the API; the worker services run `celery -A elfscreen.worker.celery_app worker -Q cpu|gpu|dft …` instead
CMD ["elfscreen", "serve", "--host", "0.0.0.0", "--port", "8000"]
