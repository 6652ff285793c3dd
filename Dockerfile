# Callboard server image: `callboard serve` on port 8000, running as a non-root user.
# Build:  docker build -t callboard .
# Run:    docker run -d --name callboard -p 8000:8000 -v callboard-data:/data callboard
#         docker exec callboard cat /data/admin-token     (the admin token made on first start)
# The data (SQLite database, first admin token) lives in the /data volume.
# Team install (PostgreSQL + two replicas behind nginx): docker compose up -d

# --- build: install the project and its server extra into a self-contained venv ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY callboard ./callboard
COPY client ./client
COPY server ./server
COPY migrations ./migrations
RUN pip install ".[server]"

# --- runtime: only the venv is carried over; no sources, caches or build tools ---
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CALLBOARD_DATABASE_URL=sqlite:////data/callboard.db
RUN useradd --create-home --uid 10001 --user-group callboard \
    && mkdir /data && chown callboard:callboard /data && chmod 0700 /data
COPY --from=build /opt/venv /opt/venv
USER callboard
WORKDIR /data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=2)"]
# The server listens on a network, which needs a token: on the first start (no live token)
# an admin token is made and its secret written to /data/admin-token (0600), never to the log.
CMD ["sh", "-c", "callboard token create admin --role admin --if-none --secret-file /data/admin-token && exec callboard serve --host 0.0.0.0 --port 8000"]
