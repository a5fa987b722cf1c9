"""Start GunWatch's web tier for a benchmark in one of the shapes ./gw serve and the README describe.

- ``nginx``: nginx on the port in front of a WSGI pool (gunicorn gthread) for HTTP and ASGI
  processes (gunicorn + uvicorn) for websockets, over unix sockets; ``./gw serve`` with nginx installed.
- ``gunicorn``: ASGI processes alone (gunicorn + uvicorn) answering both; ``./gw serve`` without nginx.
- ``daphne``: one daphne process, as ``./gw run`` serves.

Each process runs in a session of its own so ``stop`` takes its children with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gunwatch.serving import nginx_command, nginx_conf  # noqa: E402

SHAPES = ("nginx", "gunicorn", "daphne")


def start_web_tier(
    shape: str, env: dict[str, str], host: str, port: int, work: Path, web_processes: int = 2, threads: int = 4
) -> list[subprocess.Popen[bytes]]:
    python = sys.executable
    # The web processes keep their connections as ./gw serve starts them (WEB_DB_CONN_MAX_AGE, 60 s).
    web_env = {**env, "DB_CONN_MAX_AGE": env.get("WEB_DB_CONN_MAX_AGE", "60")}
    gunicorn = [python, "-m", "gunicorn", "--log-level", "warning"]
    uvicorn = ["gunwatch.asgi:application", "-k", "uvicorn_worker.UvicornWorker"]
    commands: list[tuple[list[str], dict[str, str], str]]
    if shape == "nginx":
        conf = nginx_conf(work, host, port)
        run_dir = work / "run"
        proxied = {**web_env, "NUM_PROXIES": "1"}
        wsgi = ["gunwatch.wsgi:application", "-k", "gthread", "--threads", str(threads)]
        commands = [
            ([*gunicorn, *wsgi, "-w", str(web_processes), "-b", f"unix:{run_dir}/wsgi.sock"], proxied, "wsgi"),
            ([*gunicorn, *uvicorn, "-w", "1", "-b", f"unix:{run_dir}/asgi.sock"], proxied, "asgi"),
            (nginx_command(conf), env, "nginx"),
        ]
    elif shape == "gunicorn":
        commands = [([*gunicorn, *uvicorn, "-w", str(web_processes), "-b", f"{host}:{port}"], web_env, "asgi")]
    elif shape == "daphne":
        commands = [([python, "-m", "daphne", "-b", host, "-p", str(port), "gunwatch.asgi:application"], env, "daphne")]
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")
    procs = []
    for command, process_env, name in commands:
        with (work / f"{name}.log").open("w") as log:
            procs.append(
                subprocess.Popen(
                    command, env=process_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
