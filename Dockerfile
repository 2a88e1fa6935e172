# syntax=docker/dockerfile:1
# bids_msseg as a BIDS App container (see README.md, "Containers").
#
#   docker build -t bids_msseg:cpu .                                   # CPU (default)
#   docker build --build-arg TORCH_VARIANT=cuda -t bids_msseg:cuda .   # CUDA-capable (run with --gpus all)
#
# The install steps live in containers/install.sh, shared with the Singularity/Apptainer definition
# (`singularity`) and with containers/chroot_proof.sh, which runs them on a clean debootstrapped
# Debian bookworm root and then runs the app as a non-root user without network
# (docs/container_proof.log). The source is bind-mounted for the install only (BuildKit), so it
# is not part of any layer; the default model is installed inside the package.
FROM debian:bookworm-slim

ARG TORCH_VARIANT=cpu

LABEL org.opencontainers.image.title="bids_msseg" \
      org.opencontainers.image.description="FLAIR-only multiple-sclerosis lesion segmentation as a BIDS App" \
      org.opencontainers.image.licenses="Apache-2.0"

SHELL ["/bin/sh", "-eu", "-c"]

RUN --mount=type=bind,source=.,target=/src \
    TORCH_VARIANT="${TORCH_VARIANT}" sh /src/containers/install.sh /src

# Run-time environment: offline, no bytecode writes, caches under the work directory when HOME is
# read-only (bids_msseg._compat.configure_environment). One variable per ENV line: the chroot proof
# reads these lines, and a test checks that `singularity` sets the same.
ENV PATH=/opt/bids_msseg/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV NIPYPE_NO_ET=1
ENV HF_HUB_OFFLINE=1
ENV PYTHONDONTWRITEBYTECODE=1
ENV PYTHONUNBUFFERED=1
ENV NVIDIA_VISIBLE_DEVICES=all
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The non-root user created by install.sh (numeric, so that the host can resolve it).
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["/opt/bids_msseg/bin/bids_msseg"]
CMD ["--help"]
