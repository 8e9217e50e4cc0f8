"""Helpers for the web-app tests: serve scripts/app.py in this process on a free local port and call its
events through gradio's HTTP queue API as any client could (session id and file paths chosen freely)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from scripts import app as app_script
from utils.app.files import private_root
from utils.app.handlers import AppHandlers
from utils.config.cli import config_from_args
from utils.config.schema import Config


def app_config(model_dir: Path, *flags: str) -> Config:
    """The app's Config for the tiny model on the CPU plus `flags`."""
    argv = ["--model_path", str(model_dir), "--device", "cpu", "--dtype", "fp32", *flags]
    return config_from_args(app_script.parse_args(argv), not_config=app_script.NOT_CONFIG)


@contextmanager
def served(
    model_dir: Path, temp_root: Path, *flags: str, users: list[tuple[str, str]] | None = None
) -> Iterator[Any]:
    """The app (tiny model, CPU) listening on 127.0.0.1 at a free port, its private folder under `temp_root`
    and gradio's files inside it, as scripts/app.py main() sets them up; yields the launched gradio Blocks
    (`.local_url`, `.server_port`, `.handlers`) and closes it (and removes the folder) afterwards."""
    cfg = app_config(model_dir, *flags)
    root = private_root(temp_root)
    before = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    handlers = AppHandlers.load(cfg, root)
    blocks = app_script.layout(handlers)
    blocks.handlers = handlers
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = app_script.launch_options(cfg, users)
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    try:
        yield blocks
    finally:
        blocks.close()
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before
        shutil.rmtree(root, ignore_errors=True)


def call(
    url: str, api_name: str, data: list[Any], session_hash: str | None = None, cookies: Any = None
) -> dict[str, Any]:
    """Run the event `api_name` with `data` through the queue (raw HTTP, the session id as given) and return
    gradio's final message ({"success": bool, "output": {"data": [...]}})."""
    session_hash = session_hash or uuid.uuid4().hex
    with httpx.Client(base_url=url, timeout=120, cookies=cookies) as client:
        info = client.get("/config").json()
        fn_index = next(d["id"] for d in info["dependencies"] if d.get("api_name") == api_name)
        body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None}
        client.post("/gradio_api/queue/join", json=body).raise_for_status()
        with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session_hash}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        return message
    raise AssertionError(f"no result for {api_name}")


def file_data(path: str | Path) -> dict[str, Any]:
    """A gradio FileData value naming `path` on the server (what a client sends after an upload)."""
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def upload(url: str, path: Path, cookies: Any = None) -> dict[str, Any]:
    """Upload `path` like the browser does and return the FileData that names the server's copy."""
    with httpx.Client(base_url=url, timeout=60, cookies=cookies) as client, path.open("rb") as f:
        answer = client.post("/gradio_api/upload", files={"files": (path.name, f)})
    answer.raise_for_status()
    return {**file_data(answer.json()[0]), "orig_name": path.name}
