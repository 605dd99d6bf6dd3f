-- The Prefect server's database, beside Citadel's registry (POSTGRES_DB=citadel). Postgres runs
-- this once, when it initialises an empty data volume.
CREATE DATABASE prefect OWNER citadel;
