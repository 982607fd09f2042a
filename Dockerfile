# The service's image, and PgBouncer's for compose.yaml (`--target pgbouncer`).
#   docker build -t qmarket .
# Settings come from the environment only (ENV_FILE=/dev/null: no .env is read);
# see .env.example and README, "Deploying".

# PgBouncer as the local cluster runs it: Debian's package, configured from
# deploy/pgbouncer/pgbouncer.ini.template by deploy/pgbouncer/entrypoint.sh.
FROM debian:bookworm-slim AS pgbouncer
RUN apt-get update \
    && apt-get install -y --no-install-recommends pgbouncer gettext-base \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/pgbouncer/pgbouncer.ini.template deploy/pgbouncer/entrypoint.sh /etc/pgbouncer/
USER postgres
EXPOSE 6432
ENTRYPOINT ["/etc/pgbouncer/entrypoint.sh"]

# Every dependency into a virtual environment; pip and its caches stay behind.
FROM python:3.11-slim-bookworm AS build
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements.txt

# The service: the virtual environment and the code, run as a user of its own.
FROM python:3.11-slim-bookworm AS app
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin qmarket
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY app ./app
COPY database ./database
COPY migrate.py wsgi.py gunicorn.conf.py catalog.json ./
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENV_FILE=/dev/null \
    HOST=0.0.0.0 \
    PORT=8000
USER qmarket
EXPOSE 8000
# exec: gunicorn is PID 1 and gets SIGTERM itself, so calls in flight finish.
CMD ["sh", "-c", "exec gunicorn --config gunicorn.conf.py --bind \"$HOST:$PORT\" wsgi:app"]
