# podssh gateway image. `make image` builds it (docker when a Docker engine answers, else
# buildah) as podssh:<version> with the OCI labels below filled in; by hand:
#   docker build -t podssh .                       (base: the official python image)
#   docker build --build-arg BASE=my/python:3.11 .  (any Debian-like image with python3 + venv)
# hack/build-image builds it with buildah from a locally made base when no registry is reachable
# (that base is made from Debian packages here, so there is no registry digest to pin).
# Pulling the base from a registry, pin it by digest for reproducible builds:
#   make image BASE=docker.io/library/python:3.11-slim-bookworm@sha256:<digest>
# (the digest: `docker buildx imagetools inspect python:3.11-slim-bookworm`).
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE} AS build
# Behind a TLS-inspecting proxy: pass its CA bundle (mounted into the build) as PIP_CERT.
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/podssh
# Every dependency at its locked version, and only from files whose hash the lock lists (from
# PyPI or the mirror pip is configured with: the hashes are of the files, not of an index).
COPY requirements.lock /src/requirements.lock
RUN /opt/podssh/bin/pip install --require-hashes -r /src/requirements.lock
COPY pyproject.toml README.md LICENSE /src/
COPY sshserver /src/sshserver
COPY operator /src/operator
# The project itself, resolving nothing (its dependencies are all in place). pip and setuptools
# only install: the final image runs without them (less to patch, nothing that installs code at
# run time).
RUN /opt/podssh/bin/pip install --no-deps /src \
 && /opt/podssh/bin/python -m pip uninstall -y -q pip setuptools wheel \
 && /opt/podssh/bin/python -m compileall -q /opt/podssh

FROM ${BASE}
# Filled in by `make image` / hack/build-image: the version is pyproject.toml's.
ARG VERSION=unknown
ARG SOURCE=""
ARG REVISION=""
LABEL org.opencontainers.image.title="podssh" \
      org.opencontainers.image.description="SSH into Kubernetes pods, with access granted by Kubernetes objects" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/podssh /opt/podssh
COPY LICENSE /usr/share/doc/podssh/LICENSE
# A name for uid 10001: libraries ask getpwuid() who they run as.
RUN echo 'podssh:x:10001:10001:podssh:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'podssh:x:10001:' >> /etc/group
ENV PATH=/opt/podssh/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Non-root; the manifests also run it with a read-only root file system.
USER 10001:10001
EXPOSE 2222 9090
ENTRYPOINT ["podssh"]
CMD ["serve", "--listen", "0.0.0.0:2222", "--metrics", "0.0.0.0:9090"]
