"""The image and the team install start safely: data in a volume, the first admin token in
a 0600 file (never in a log), the database password from `.env`, and forwarded client
addresses believed from nginx only.

No Docker engine is needed: the files are parsed, and the image's own start command runs
here with `/data` pointed at a temporary folder.
"""

import asyncio
import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from .test_compose import COMPOSE_FILE, SERVERS, environment, final_stage, migrate_steps

BIN = Path(sys.executable).parent
SECRET = re.compile(r"cb_[A-Za-z0-9_-]{20,}")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


def image_env():
    env = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def image_start_steps():
    """The image's CMD, `sh -c "a && b && exec serve"`, as its shell steps."""
    cmd = json.loads(dict(final_stage())["CMD"])
    assert cmd[:2] == ["sh", "-c"], f"the image's CMD is {cmd}"
    return [step.strip() for step in cmd[2].split("&&")]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_here(step, data, database_url):
    """Run one container shell step on this machine, its /data being the folder `data`."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "CALLBOARD_DATABASE_URL": database_url,
    }
    return subprocess.run(
        ["sh", "-c", step.replace("/data", str(data))],
        env=env,
        cwd=data,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- the image --------------------------------------------------------------------------


def test_image_keeps_its_data_in_a_volume():
    volumes = [rest for keyword, rest in final_stage() if keyword == "VOLUME"]
    declared = [v for rest in volumes for v in (json.loads(rest) if "[" in rest else rest.split())]
    assert "/data" in declared, f"the image declares volumes {declared}, not /data"
    url = image_env().get("CALLBOARD_DATABASE_URL", "")
    assert url.startswith("sqlite:////data/"), (
        f"the image's database {url!r} is not in /data: it would die with the container"
    )


def start_steps_with_token_creation():
    steps = image_start_steps()
    token_steps = [s for s in steps if s.startswith("callboard token create")]
    migrate_token_steps = [
        " ".join(step)
        for step in migrate_steps(yaml.safe_load(COMPOSE_FILE.read_text())["services"]["migrate"])
        if step[:3] == ["callboard", "token", "create"]
    ]
    return {"image CMD": token_steps, "compose migrate": migrate_token_steps}


@pytest.mark.parametrize("where", ["image CMD", "compose migrate"])
def test_first_start_writes_the_admin_token_to_a_private_file_once(tmp_path, where):
    steps = start_steps_with_token_creation()[where]
    assert len(steps) == 1, f"{where} creates the first token in {len(steps)} steps"
    url = f"sqlite:///{tmp_path / 'callboard.db'}"
    first = run_here(steps[0], tmp_path, url)
    assert first.returncode == 0, first.stderr
    token_file = tmp_path / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600, "the admin token file is readable by others"
    secret = token_file.read_text().strip()
    assert SECRET.fullmatch(secret), f"{token_file} holds {secret!r}, not a token"
    assert secret not in first.stdout + first.stderr, f"{where} prints the token into the log"
    again = run_here(steps[0], tmp_path, url)
    assert again.returncode == 0, again.stderr
    assert token_file.read_text().strip() == secret, "a restart replaced the admin token"
    assert not SECRET.search(again.stdout + again.stderr)


def test_documented_docker_run_serves_with_the_admin_token(tmp_path):
    """`docker run -p 8000:8000 callboard` used to exit at once (0.0.0.0 with no token)."""
    *prelude, serve = image_start_steps()
    port = free_port()
    serve = serve.replace("--port 8000", f"--port {port}")
    url = image_env()["CALLBOARD_DATABASE_URL"]
    script = " && ".join([*prelude, serve]).replace("/data", str(tmp_path))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "CALLBOARD_DATABASE_URL": url.replace("/data", str(tmp_path)),
    }
    server = subprocess.Popen(
        ["sh", "-c", script],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"the server exited: {server.stdout.read().decode()}"
            try:
                if httpx.get(f"{root}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer within 60 s"
            time.sleep(0.2)
        secret = (tmp_path / "admin-token").read_text().strip()
        assert httpx.get(f"{root}/api/v1/runs", timeout=5).status_code == 401
        signed = httpx.get(
            f"{root}/api/v1/runs", headers={"Authorization": f"Bearer {secret}"}, timeout=5
        )
        assert signed.status_code == 200, signed.text
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert secret not in output, "the container's log shows the admin token"


# --- docker-compose.yml -----------------------------------------------------------------


def test_database_password_comes_from_the_environment(compose):
    password = environment(compose["services"]["db"])["POSTGRES_PASSWORD"]
    assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", password), (
        f"POSTGRES_PASSWORD is {password!r}: not a required ${{VAR:?message}} from .env"
    )
    assert "callboard:callboard@" not in COMPOSE_FILE.read_text()


def proxy_address(compose):
    return compose["services"]["proxy"]["networks"]["default"]["ipv4_address"]


def test_replicas_trust_forwarded_headers_from_nginx_only(compose):
    address = proxy_address(compose)
    subnets = [
        ipaddress.ip_network(entry["subnet"])
        for entry in compose["networks"]["default"]["ipam"]["config"]
    ]
    assert any(ipaddress.ip_address(address) in subnet for subnet in subnets), (
        f"nginx's address {address} is outside the network's subnets {subnets}"
    )
    for name in SERVERS:
        trusted = environment(compose["services"][name]).get("FORWARDED_ALLOW_IPS")
        assert trusted == address, f"{name} trusts X-Forwarded-For from {trusted!r}, not nginx"


def client_seen(trusted, peer, forwarded_for):
    """The client address the app sees behind uvicorn's proxy-headers middleware."""
    seen = {}

    async def app(scope, receive, send):
        seen["client"] = scope["client"][0]

    scope = {
        "type": "http",
        "client": (peer, 40000),
        "headers": [(b"x-forwarded-for", forwarded_for.encode())],
    }
    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts=trusted)(scope, None, None))
    return seen["client"]


def test_a_client_cannot_spoof_its_address_past_nginx(compose):
    trusted = environment(compose["services"][SERVERS[0]])["FORWARDED_ALLOW_IPS"]
    nginx = proxy_address(compose)
    # nginx appends the real peer to whatever the client sent ($proxy_add_x_forwarded_for).
    assert client_seen(trusted, nginx, "198.51.100.66, 203.0.113.7") == "203.0.113.7"
    # Another container on the network is not a proxy: its header is ignored.
    other = str(ipaddress.ip_address(nginx) + 1)
    assert client_seen(trusted, other, "198.51.100.66") == other
