# The image Kubeflow runs every component in: Python 3.10 on Debian bookworm
# (the glibc the lock was resolved for), the same pinned requirements.txt as
# a local run, and this repository, so that custom components, executors and
# dotted run_fn paths import. `make image` builds it with the tag `compile`
# uses by default (pipeline/configs.py, default_image()); its entry point is
# the pipeline's command line (`docker run IMAGE run --profile smoke`).
# docs/deployment.md: build, push, run.
#
# BASE_IMAGE: where no registry is reachable, tools/image/build.sh builds
# from a local image of the same layout (tools/image/base.sh).
ARG BASE_IMAGE=python:3.10-slim-bookworm
FROM ${BASE_IMAGE}

ENV TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONDONTWRITEBYTECODE=1
# oneDNN kernels on every CPU, as pipeline/cli.py sets them for a local run.
ENV TF_ENABLE_ONEDNN_OPTS=1
# Fashion-MNIST, the convnet's default data, from Debian as on a local run.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /pipeline
COPY requirements.txt requirements-nodeps.txt ./
# CA_BUNDLE: behind a TLS-inspecting proxy, the CA bundle pip and uv trust,
# a file the builder mounts for this step (tools/image/build.sh); left
# empty, their own.
ARG CA_BUNDLE=
# g++ only while installing: pyfarmhash (TFX's) has no wheel and is built.
RUN if [ -n "$CA_BUNDLE" ]; then \
        export PIP_CERT="$CA_BUNDLE" SSL_CERT_FILE="$CA_BUNDLE"; fi \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends g++ \
 && pip install --no-cache-dir uv==0.5.11 \
 && uv pip install --system --no-cache --compile-bytecode -r requirements.txt \
 && uv pip install --system --no-cache --no-deps --compile-bytecode \
    -r requirements-nodeps.txt \
 && apt-get purge -y -qq --auto-remove g++ \
 && rm -rf /var/lib/apt/lists/*
COPY common/ common/
COPY components/ components/
COPY formats/ formats/
COPY models/ models/
COPY pipeline/ pipeline/
COPY serving/ serving/
COPY system/ system/
ENV PYTHONPATH=/pipeline
# Each model's default data set where a compiled job looks for it
# (configs.IMAGE_DATA_DIR/<name>): Fashion-MNIST from Debian, JapaneseVowels
# from the sktime wheel.
RUN mkdir -p data \
 && ln -s /usr/share/datasets/fashion-mnist data/fashion-mnist \
 && ln -s "$(python -c 'from pipeline import profiles; print(profiles.MODELS["rnn"].default_data)')" \
        data/JapaneseVowels \
 && python -c 'import os, sys; from pipeline import configs, profiles; sys.exit(any(not os.path.exists(os.path.join(configs.IMAGE_DATA_DIR, os.path.basename(f.default_data))) for f in profiles.MODELS.values()))'
ENTRYPOINT ["python", "-m", "pipeline"]
CMD ["--help"]
