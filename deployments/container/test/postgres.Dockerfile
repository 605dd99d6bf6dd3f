# Test stand-in for the official postgres image where no registry can be reached: Debian's
# PostgreSQL 15 on the local Debian base, with the official image's interface (POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB, /docker-entrypoint-initdb.d/*.sql, data in
# /var/lib/postgresql/data), so the production compose service runs on it unchanged.
ARG BASE_IMAGE=localhost/debian-python:bookworm
FROM ${BASE_IMAGE}
ARG POSTGRESQL_VERSION=15
# A stand-in follows Debian's current package: no version to pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-${POSTGRESQL_VERSION}" \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 0755 /var/run/postgresql /docker-entrypoint-initdb.d
COPY postgres-entrypoint /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/${POSTGRESQL_VERSION}/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
# The package creates the user, with whatever id is free.
# hadolint ignore=DL3066
USER postgres
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint"]
