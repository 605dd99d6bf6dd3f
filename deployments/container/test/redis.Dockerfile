# Test stand-in for the official redis image where no registry can be reached: Debian's Redis on
# the local Debian base, run as the redis user with its data in /data, so the production compose
# service (its command and health check) runs on it unchanged.
ARG BASE_IMAGE=localhost/debian-python:bookworm
FROM ${BASE_IMAGE}
# A stand-in follows Debian's current package: no version to pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && install -d -o redis -g redis -m 0750 /data
WORKDIR /data
# The package creates the user, with whatever id is free.
# hadolint ignore=DL3066
USER redis
EXPOSE 6379
CMD ["redis-server", "--dir", "/data"]
