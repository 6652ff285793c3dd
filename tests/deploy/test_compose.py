"""The team install: docker-compose.yml, deploy/nginx.conf and the Dockerfile fit together.

No Docker engine is needed: the files are parsed and their wiring is checked, including
which nginx location a request would land in.
"""

import fnmatch
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVERS = ("server-1", "server-2")
HEALTH_PATH = "/api/v1/health"
STREAM_PATHS = ("/api/v1/runs/12/stream", "/api/v1/stream")
OTHER_PATHS = ("/", "/api/v1/runs", "/api/v1/runs/12/events", "/api/v1/streams", "/x/api/v1/stream")
FORWARDED_HEADERS = ("host", "x-forwarded-for", "x-forwarded-proto")


# --- docker-compose.yml -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def depends_on(service):
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def command(service):
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def healthcheck_text(healthcheck):
    test = healthcheck["test"]
    return test if isinstance(test, str) else " ".join(test[1:])


def health_urls(text):
    return [urlsplit(url) for url in re.findall(r"https?://[^\s'\"]+", text)]


def test_compose_has_every_service(services):
    missing = {"db", "migrate", *SERVERS, "proxy"} - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_db_is_postgres_with_healthcheck_and_named_volume(compose, services):
    db = services["db"]
    assert db["image"].startswith("postgres:"), f"db runs {db['image']!r}, not PostgreSQL"
    assert "healthcheck" in db, "db has no healthcheck, so nothing can wait for it to be ready"
    assert "pg_isready" in healthcheck_text(db["healthcheck"]), "db healthcheck is not pg_isready"
    mounts = [volume.split(":") for volume in db.get("volumes", [])]
    data = [source for source, target, *_ in mounts if target == "/var/lib/postgresql/data"]
    assert data, "db keeps /var/lib/postgresql/data in the container: data dies with it"
    assert data[0] in (compose.get("volumes") or {}), (
        f"db data volume {data[0]!r} is not a named volume declared under top-level volumes"
    )


def migrate_steps(migrate):
    """The commands of the migrate service: `sh -c "a && b"` → `[["a"...], ["b"...]]`."""
    cmd = command(migrate)
    if cmd[:2] == ["sh", "-c"]:
        return [shlex.split(step) for step in cmd[2].split("&&")]
    return [cmd]


def test_migrate_upgrades_once_after_db_is_healthy(services):
    migrate = services["migrate"]
    steps = migrate_steps(migrate)
    assert steps[0] == ["callboard", "db", "upgrade"], (
        f"migrate runs {steps[0]} first, not `callboard db upgrade`"
    )
    assert migrate.get("restart") == "no", (
        f"migrate restart is {migrate.get('restart')!r}; a one-shot job needs the string 'no'"
    )
    assert depends_on(migrate).get("db") == "service_healthy", "migrate does not wait for db"


def test_first_start_creates_an_admin_token_so_replicas_may_listen(services):
    # The replicas bind 0.0.0.0, which `callboard serve` refuses with no token and no --insecure.
    assert all("--insecure" not in command(services[name]) for name in SERVERS)
    steps = migrate_steps(services["migrate"])
    first = ["callboard", "token", "create", "admin", "--role", "admin", "--if-none"]
    creates = [step for step in steps[1:] if step[: len(first)] == first]
    assert creates, f"migrate does not create the first admin token: {steps}"
    # Printed, the secret would sit in `docker compose logs` for anyone with Docker access.
    assert "--secret-file" in creates[0], "migrate prints the admin token into its log"


@pytest.mark.parametrize("name", SERVERS)
def test_server_waits_for_migration_and_skips_its_own(services, name):
    server = services[name]
    deps = depends_on(server)
    assert deps.get("migrate") == "service_completed_successfully", (
        f"{name} does not wait for migrate to complete successfully (depends_on: {deps})"
    )
    assert deps.get("db") == "service_healthy", f"{name} does not wait for a healthy db"
    skip = environment(server).get("CALLBOARD_SKIP_MIGRATIONS", "")
    assert skip.lower() in ("1", "true", "yes"), (
        f"{name} migrates again at start (CALLBOARD_SKIP_MIGRATIONS={skip!r})"
    )
    cmd = command(server)
    assert cmd[:2] == ["callboard", "serve"], f"{name} runs {cmd}, not `callboard serve`"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", f"{name} is unreachable from the proxy"
    urls = health_urls(healthcheck_text(server["healthcheck"]))
    assert [url.path for url in urls] == [HEALTH_PATH], (
        f"{name} healthcheck calls {[url.geturl() for url in urls]}, not {HEALTH_PATH}"
    )


def test_servers_are_identical_replicas_of_the_migrate_image(compose, services):
    assert "x-server" in compose, "no x-server extension field shares the replicas' settings"
    first, second = (services[name] for name in SERVERS)
    assert first == second, f"{SERVERS[0]} and {SERVERS[1]} differ: they are not replicas"
    for key in ("build", "image"):
        assert first.get(key) == services["migrate"].get(key), (
            f"servers and migrate use different {key}: migrations would not match the code"
        )


def test_everyone_uses_the_same_postgres_database(services):
    urls = {
        name: environment(services[name]).get("CALLBOARD_DATABASE_URL")
        for name in ("migrate", *SERVERS)
    }
    assert len(set(urls.values())) == 1, f"services disagree on the database URL: {urls}"
    url = urlsplit(urls["migrate"])
    assert url.scheme == "postgresql+psycopg", f"database URL scheme {url.scheme!r} is not psycopg"
    assert url.hostname == "db", f"database URL points at {url.hostname!r}, not the db service"
    assert url.port in (None, 5432), f"database URL port {url.port} is not PostgreSQL's 5432"
    db_env = environment(services["db"])
    expected = (db_env["POSTGRES_USER"], db_env["POSTGRES_DB"])
    assert (url.username, url.path.lstrip("/")) == expected, (
        f"database URL user/name {url.username}/{url.path} "
        f"do not match db's POSTGRES_USER/DB {expected}"
    )
    # The password reaches libpq as PGPASSWORD (commands print the URL, with any password in it).
    assert url.password is None, "the database URL holds the password"
    passwords = {
        name: environment(services[name]).get("PGPASSWORD") for name in ("migrate", *SERVERS)
    }
    assert set(passwords.values()) == {db_env["POSTGRES_PASSWORD"]}, (
        f"PGPASSWORD {passwords} differs from db's POSTGRES_PASSWORD"
    )


def test_proxy_publishes_a_port_and_mounts_the_nginx_config(services):
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:"), f"proxy runs {proxy['image']!r}, not nginx"
    assert proxy.get("ports"), "proxy publishes no port: the install is unreachable"
    mounts = [volume.split(":") for volume in proxy.get("volumes", [])]
    configs = [m for m in mounts if (COMPOSE_FILE.parent / m[0]).resolve() == NGINX_CONF]
    assert configs, f"proxy does not mount {NGINX_CONF.relative_to(ROOT)} (volumes: {mounts})"
    source, target, *options = configs[0]
    assert target.startswith("/etc/nginx/") and target.endswith(".conf"), (
        f"nginx config mounted at {target!r}, where nginx does not read it"
    )
    assert "ro" in ",".join(options).split(","), "nginx config is not mounted read-only"
    deps = depends_on(proxy)
    for name in SERVERS:
        assert deps.get(name) == "service_healthy", f"proxy does not wait for a healthy {name}"


# --- deploy/nginx.conf --------------------------------------------------------------------

TOKEN = re.compile(r"""#[^\n]*|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[{};]|[^\s{};"']+""")


def parse_nginx(text):
    """The config as a list of (directive, args, children), children None for simple ones."""
    stack, words = [[]], []
    for token in TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token in ("{", ";"):
            block = [] if token == "{" else None
            stack[-1].append((words[0], words[1:], block))
            if block is not None:
                stack.append(block)
            words = []
        elif token == "}":
            assert not words, f"nginx.conf: directive {words} lacks its ';'"
            stack.pop()
        else:
            words.append(token[1:-1] if token[0] in "\"'" else token)
    assert len(stack) == 1 and not words, "nginx.conf: unbalanced braces"
    return stack[0]


def blocks(tree, name):
    found = []
    for directive, args, children in tree:
        if children is not None:
            if directive == name:
                found.append((args, children))
            found.extend(blocks(children, name))
    return found


def values(block, name):
    return [args for directive, args, children in block if directive == name and children is None]


def location_for(server, path):
    """The location block nginx picks for `path` (exact, ^~ prefix, regex in order, prefix)."""
    locations = [(args, body) for directive, args, body in server if directive == "location"]
    for args, body in locations:
        if args[0] == "=" and args[1] == path:
            return args, body
    prefixes = [(a, b) for a, b in locations if len(a) == 1 or a[0] == "^~"]
    prefixes = [(a, b) for a, b in prefixes if path.startswith(a[-1])]
    longest = max(prefixes, key=lambda item: len(item[0][-1]), default=None)
    if longest and longest[0][0] == "^~":
        return longest
    for args, body in locations:
        if args[0] in ("~", "~*"):
            flags = re.IGNORECASE if args[0] == "~*" else 0
            if re.search(args[1], path, flags):
                return args, body
    return longest


@pytest.fixture(scope="module")
def nginx():
    return parse_nginx(NGINX_CONF.read_text())


@pytest.fixture(scope="module")
def server_block(nginx):
    servers = blocks(nginx, "server")
    assert len(servers) == 1, f"nginx.conf has {len(servers)} server blocks, expected one"
    return servers[0][1]


def test_nginx_config_fits_where_it_is_mounted(nginx, services):
    target = next(v.split(":")[1] for v in services["proxy"]["volumes"] if "nginx.conf" in v)
    has_http = any(directive == "http" for directive, _, _ in nginx)
    if target.startswith("/etc/nginx/conf.d/"):
        assert not has_http, f"{target} is included inside http{{}}, but the file has its own"
    else:
        assert has_http, f"{target} replaces nginx.conf, but the file has no http{{}} block"


def test_upstream_lists_both_replicas_on_their_port(nginx, server_block, services):
    proxied = {args[0] for args in values(server_block, "proxy_pass")}
    for _, body in blocks(server_block, "location"):
        proxied |= {args[0] for args in values(body, "proxy_pass")}
    names = {urlsplit(url).hostname for url in proxied}
    upstreams = {args[0]: body for args, body in blocks(nginx, "upstream")}
    assert names and names <= set(upstreams), (
        f"proxy_pass targets {sorted(names)} are not upstreams {sorted(upstreams)}"
    )
    replicas = set()
    for name in SERVERS:
        cmd = command(services[name])
        replicas.add(f"{name}:{cmd[cmd.index('--port') + 1]}")
    for name in names:
        members = {args[0] for args in values(upstreams[name], "server")}
        assert members == replicas, (
            f"upstream {name} has {sorted(members)}, expected both replicas {sorted(replicas)}"
        )


def test_nginx_listens_on_the_port_compose_publishes(server_block, services):
    published = [str(port).rsplit(":", 1)[-1].split("/")[0] for port in services["proxy"]["ports"]]
    listening = {args[0].rsplit(":", 1)[-1] for args in values(server_block, "listen")}
    assert set(published) <= listening, (
        f"compose forwards to container ports {published}, nginx listens on {sorted(listening)}"
    )


def test_request_body_limit(server_block):
    assert values(server_block, "client_max_body_size") == [["16m"]], (
        "nginx client_max_body_size is not 16m: large batched posts would be refused with 413"
    )


@pytest.mark.parametrize("path", STREAM_PATHS)
def test_stream_paths_land_in_an_unbuffered_location(server_block, path):
    args, body = location_for(server_block, path)
    assert args[0] in ("~", "~*"), f"{path} lands in location {args}, not the stream regex"
    settings = {directive: args for directive, args, children in body if children is None}
    assert settings.get("proxy_buffering") == ["off"], (
        f"location {args} serving {path} buffers the response: events arrive late or never"
    )
    assert "proxy_read_timeout" in settings, (
        f"location {args} serving {path} keeps the 60 s default read timeout: streams get cut"
    )
    assert settings.get("proxy_http_version") == ["1.1"], f"location {args} does not use HTTP/1.1"
    headers = {a[0].lower(): a[1] for a in values(body, "proxy_set_header")}
    assert headers.get("connection") == "", f"location {args} forwards 'Connection: close'"


def test_stream_regex_matches_only_stream_paths(server_block):
    regexes = [args[1] for args, _ in blocks(server_block, "location") if args[0] in ("~", "~*")]
    stream = [r for r in regexes if any(re.search(r, path) for path in STREAM_PATHS)]
    assert len(stream) == 1, f"expected one stream location regex, found {stream}"
    for path in STREAM_PATHS:
        assert re.search(stream[0], path), f"stream regex {stream[0]!r} misses {path}"
    for path in OTHER_PATHS:
        assert not re.search(stream[0], path), f"stream regex {stream[0]!r} also catches {path}"


@pytest.mark.parametrize("path", STREAM_PATHS + OTHER_PATHS)
def test_every_location_forwards_host_and_client_headers(server_block, path):
    args, body = location_for(server_block, path)
    own = values(body, "proxy_set_header")
    # proxy_set_header in a location replaces the server-level ones entirely.
    effective = own or values(server_block, "proxy_set_header")
    names = {a[0].lower() for a in effective}
    missing = [h for h in FORWARDED_HEADERS if h not in names]
    assert not missing, f"location {args} serving {path} does not forward {missing}"
    assert values(body, "proxy_pass"), f"location {args} serving {path} proxies nowhere"


# --- Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions():
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [line.split(None, 1) for line in lines if line and not line.startswith("#")]


def final_stage():
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword.upper() == "FROM")
    return [(keyword.upper(), rest) for keyword, rest in instructions[last_from:]]


def test_image_runs_as_a_non_root_user():
    users = [rest.split(":")[0] for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "the final image has no USER: the server runs as root"
    assert users[-1] not in ("root", "0"), f"the final image runs as {users[-1]!r}"


def test_image_healthcheck_calls_the_health_endpoint():
    checks = [rest for keyword, rest in final_stage() if keyword == "HEALTHCHECK"]
    assert checks, "the final image has no HEALTHCHECK"
    urls = health_urls(checks[-1])
    assert [url.path for url in urls] == [HEALTH_PATH], (
        f"image HEALTHCHECK calls {[url.geturl() for url in urls]}, not {HEALTH_PATH}"
    )


def test_image_serves_on_port_8000_from_a_slim_base():
    stage = dict(final_stage())
    assert stage["FROM"].startswith("python:3.11-slim"), f"final base is {stage['FROM']!r}"
    assert stage.get("EXPOSE") == "8000", "the final image does not EXPOSE 8000"
    cmd = json.loads(stage["CMD"])
    assert cmd[:2] == ["sh", "-c"], f"the image's default CMD is {cmd}, not a shell line"
    last = shlex.split(cmd[2].split("&&")[-1])
    assert last == ["exec", "callboard", "serve", "--host", "0.0.0.0", "--port", "8000"], (
        f"the image's default CMD ends with {last}, not `exec callboard serve` on 0.0.0.0:8000"
    )
    installs = " ".join(rest for keyword, rest in final_stage() if keyword == "RUN")
    for tool in ("build-essential", "gcc"):
        assert tool not in installs, f"the final image installs {tool}"


def test_dockerignore_keeps_what_the_build_copies():
    patterns = [
        p.strip()
        for p in DOCKERIGNORE.read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    assert ".git" in patterns, ".dockerignore does not exclude .git"
    copies = [
        rest.split()[:-1]
        for keyword, rest in ((k.upper(), r) for k, r in dockerfile_instructions())
        if keyword == "COPY"
    ]
    sources = [src for args in copies if not args[0].startswith("--") for src in args]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        ignored = [p for p in patterns if fnmatch.fnmatch(source, p.removeprefix("**/"))]
        assert not ignored, f".dockerignore pattern {ignored} drops {source}, which the build needs"
