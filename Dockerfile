# GPU deployment of a DNC model repository on the official Triton Inference Server image.
#
# Triton 2.51 (image 24.10) is the release whose binary the nvidia-pytriton wheel carries locally, so a
# repository behaves the same here and in `dnc serve`. Build the repository with a native runtime first:
#   dnc export CKPT --out export                      # + --tensorrt on a CUDA machine for --runtime tensorrt
#   dnc repo build export --repo served --runtime onnxruntime     # or tensorrt (embedding as a TensorRT
#                                                                 # engine; the head stays ONNX: it outputs strings)
#   docker build -t dnc-triton --build-arg REPO=served .
#   docker run --gpus all -p 8000-8002:8000-8002 -e DNC_REPOSITORY_KEY=$(openssl rand -hex 16) dnc-triton
# A TensorRT engine only loads in the TensorRT version that built it: build model.plan with the TensorRT
# of this image (e.g. run `dnc export --tensorrt` inside it), not with a newer wheel.
# A `--runtime python` repository also runs here: onnxruntime is installed for its python models.
# Class lists change with `dnc swap --repo served --url HOST:8001 --key $DNC_REPOSITORY_KEY` (gRPC), which
# writes into the repository and then reloads the head: for that, run the image with the repository
# mounted over the copy (-v $PWD/served:/models), so that the server and `dnc swap` see the same files;
# `dnc swap` checks that the server answers with the list the repository records before it changes anything.
# The key is on tritonserver's command line, so it is visible to users of the container's host who can
# list processes: keep such hosts single-tenant or front the server with your own authentication.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

RUN pip install --no-cache-dir onnxruntime==1.20.1

ARG REPO=model_repository
COPY ${REPO} /models

# The repository (load/unload) API answers only requests carrying this key; inference stays open.
ENV DNC_REPOSITORY_KEY=""
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://localhost:8000/v2/models/dnc/ready')"

CMD ["/bin/sh", "-c", "test -n \"$DNC_REPOSITORY_KEY\" || { echo 'set DNC_REPOSITORY_KEY' >&2; exit 2; }; exec tritonserver --model-repository=/models --model-control-mode=explicit --load-model=dnc --strict-readiness=true --http-restricted-api=model-repository,shared-memory,trace,logging:dnc-repository-key=$DNC_REPOSITORY_KEY --grpc-restricted-protocol=model-repository,shared-memory,trace,logging:dnc-repository-key=$DNC_REPOSITORY_KEY"]
