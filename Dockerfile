# The image Kubeflow runs every component in: TFX's own image plus this
# repository, so that custom components and dotted run_fn paths import.
#   docker build -t IMAGE . && docker push IMAGE
#   python -m pipeline compile --model convnet --target kubeflow \
#       --image IMAGE --pipeline-root gs://BUCKET/tfx --output convnet.json
FROM tensorflow/tfx:1.16.0

ENV TF_USE_LEGACY_KERAS=1
WORKDIR /pipeline
COPY requirements.txt requirements-nodeps.txt ./
# The TFX image already holds the TFX stack; add what this project pins on top.
RUN pip install --no-cache-dir tf-keras==2.16.0 tensorflow-serving-api==2.16.1 \
        grpcio-health-checking dill pillow \
 && pip install --no-cache-dir --no-deps -r requirements-nodeps.txt
COPY components/ components/
COPY models/ models/
COPY pipeline/ pipeline/
COPY serving/ serving/
ENV PYTHONPATH=/pipeline
