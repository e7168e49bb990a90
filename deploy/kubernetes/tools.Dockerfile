# The `dnc` command for the cluster's one-off runs: building a repository onto the shared volume
# (tools-pod.yaml) and swapping class lists (swap-job.yaml). Built from the checkout's root:
#   docker build -f deploy/kubernetes/tools.Dockerfile -t dnc-tools .
#
# It installs `.[client]`: numpy, Pillow, safetensors and PyAV (the core), onnx and onnxruntime (`dnc repo
# build` converts and checks the graphs, `dnc swap` builds the new head and runs it before writing it) and
# tritonclient (`dnc swap` asks every replica over gRPC which class list it answers with). Not the
# `serving` extra: nvidia-pytriton (a bundled tritonserver) and ray are for running servers and video jobs,
# and `dnc swap` imports neither. No torch: `dnc export` and `dnc centroids` run where the model was trained.
# A separate image rather than the Triton one: the server's image stays what serves (no client libraries
# and no write access), and this one is a few hundred MB, not several GB.
FROM python:3.11-slim

RUN groupadd --gid 10001 dnc \
    && useradd --uid 10001 --gid dnc --no-create-home --shell /usr/sbin/nologin dnc

WORKDIR /src
# what pyproject.toml packs: the project file, its readme and the package folders
COPY pyproject.toml README.md ./
COPY dnc dnc
COPY core core
COPY training training
COPY export export
COPY serving serving
COPY clients clients
RUN pip install --no-cache-dir '.[client]' && rm -rf /src

WORKDIR /
# the same ids as the Triton image's user: what this image writes on the volume, that one reads
USER 10001:10001
CMD ["dnc", "--help"]
