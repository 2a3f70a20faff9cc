# podssh gateway image.
#   docker build -t podssh .                       (base: the official python image)
#   docker build --build-arg BASE=my/python:3.11 .  (any Debian-like image with python3 + venv)
# hack/build-image builds it with buildah from a locally made base when no registry is reachable.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE} AS build
# Behind a TLS-inspecting proxy: pass its CA bundle (mounted into the build) as PIP_CERT.
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/podssh
COPY requirements.lock /src/requirements.lock
RUN /opt/podssh/bin/pip install --no-deps -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY sshserver /src/sshserver
COPY operator /src/operator
RUN /opt/podssh/bin/pip install --no-deps /src && /opt/podssh/bin/python -m compileall -q /opt/podssh

FROM ${BASE}
COPY --from=build /opt/podssh /opt/podssh
# A name for uid 10001: libraries ask getpwuid() who they run as.
RUN echo 'podssh:x:10001:10001:podssh:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'podssh:x:10001:' >> /etc/group
ENV PATH=/opt/podssh/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Non-root; the manifests also run it with a read-only root file system.
USER 10001:10001
EXPOSE 2222 9090
ENTRYPOINT ["podssh"]
CMD ["serve", "--listen", "0.0.0.0:2222", "--metrics", "0.0.0.0:9090"]
