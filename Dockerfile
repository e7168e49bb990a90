# GPU deployment of a DNC model repository on the official Triton Inference Server image.
#
# 25.11 is a current release with the published security fixes (releases up to 25.06 are affected by
# CVE-2025-23310/23311 in HTTP chunked decoding and CVE-2025-23319/23320/23334 in the python backend's
# shared memory; see docs/SECURITY.md). The locally bundled Triton 2.51 (24.10) is not.
# Build the repository with a native runtime first:
#   dnc export CKPT --out export                      # + --tensorrt on a CUDA machine for --runtime tensorrt
#   dnc repo build export --repo served --runtime onnxruntime     # or tensorrt (embedding as a TensorRT
#                                                                 # engine; the head stays ONNX: it outputs strings)
#   docker build -t dnc-triton --build-arg REPO=served .
#   docker run --gpus all --shm-size=256m --restart=on-failure -p 8000-8002:8000-8002 \
#       -v $PWD/served:/models:ro dnc-triton
# A TensorRT engine only loads in the TensorRT version that built it: build model.plan with the TensorRT
# of this image (e.g. run `dnc export --tensorrt` inside it), not with a newer wheel.
# onnxruntime and Pillow are installed for the python models: the head (every runtime), the prep step that
# decodes, preprocesses and checks pictures before the embedding model, and every model of a `--runtime
# python` repository.
#
# What is served is what /models holds: the server polls it every second, and every API that could change
# it (load/unload, shared memory, trace, logging) is locked for every client (the header value it asks for
# is a newline, which no request can carry). Class lists change with `dnc swap --repo served --url HOST:8001`
# on the host, which writes the new head into the mounted repository: only a user who may write that folder
# can change what is served, and no key exists to leak. The server runs as an unprivileged user that can
# read the repository and write nothing in it; `--restart=on-failure` restarts it after a crash, as
# `dnc serve` does locally.
# On Kubernetes, deploy/kubernetes/ runs N replicas of this image on one shared repository (a ReadWriteMany
# volume mounted read-only at /models, which hides the repository COPYed here) and swaps with a Job; see
# deploy/kubernetes/README.md. The user's ids are fixed (10001) so that the manifests can name them
# (runAsUser, runAsGroup, fsGroup) and files written on the shared volume keep one owner.
FROM nvcr.io/nvidia/tritonserver:25.11-py3

RUN pip install --no-cache-dir onnxruntime==1.32.0 pillow \
    && groupadd --system --gid 10001 dnc \
    && useradd --system --uid 10001 --gid dnc --no-create-home --shell /usr/sbin/nologin dnc

# the folder `dnc repo build --repo` wrote (model_repository/ of the checkout is documentation only)
ARG REPO=served
COPY --chown=root:root ${REPO} /models
RUN chmod -R a+rX,go-w /models

USER dnc
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://localhost:8000/v2/models/dnc/ready')"

CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=poll", "--repository-poll-secs=1", "--strict-readiness=true", "--exit-timeout-secs=20", "--http-restricted-api=model-repository,shared-memory,trace,logging:dnc-locked=\n", "--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:dnc-locked=\n"]
