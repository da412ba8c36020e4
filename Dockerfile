# The image Kubeflow runs every component in: Python 3.10 on Debian bookworm
# (the glibc the lock was resolved for), the same pinned requirements.txt as
# a local run, and this repository, so that custom components, executors and
# dotted run_fn paths import. `make image` builds it with the tag `compile`
# uses by default (pipeline/configs.py, default_image()):
#   make image && docker push tfx-deep-pipelines:<tag>   (or IMAGE=...)
#   python -m pipeline compile --model convnet --target kubeflow \
#       --pipeline-root gs://BUCKET/tfx --output convnet.json
FROM python:3.10-slim-bookworm

ENV TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONDONTWRITEBYTECODE=1
# oneDNN kernels on every CPU, as pipeline/cli.py sets them for a local run.
ENV TF_ENABLE_ONEDNN_OPTS=1
# Fashion-MNIST, the convnet's default data, from Debian as on a local run.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /pipeline
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install --no-cache-dir uv==0.5.11 \
 && uv pip install --system --no-cache --compile-bytecode -r requirements.txt \
 && uv pip install --system --no-cache --no-deps --compile-bytecode \
    -r requirements-nodeps.txt
COPY common/ common/
COPY components/ components/
COPY formats/ formats/
COPY models/ models/
COPY pipeline/ pipeline/
COPY serving/ serving/
ENV PYTHONPATH=/pipeline
# Each model's default data set where a compiled job looks for it
# (configs.IMAGE_DATA_DIR/<name>): Fashion-MNIST from Debian, JapaneseVowels
# from the sktime wheel.
RUN mkdir -p data \
 && ln -s /usr/share/datasets/fashion-mnist data/fashion-mnist \
 && ln -s "$(python -c 'from pipeline import configs; print(configs.MODELS["rnn"].default_data)')" \
        data/JapaneseVowels \
 && python -c 'import os, sys; from pipeline import configs; sys.exit(any(not os.path.exists(os.path.join(configs.IMAGE_DATA_DIR, os.path.basename(f.default_data))) for f in configs.MODELS.values()))'
