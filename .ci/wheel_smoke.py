"""Run by .ci/wheel with the fresh venv's Python, from an empty directory: the installed orxaq-grpc
prints its version, checks and serves its packaged default config, answers one Route, stops on SIGTERM.
Exits non-zero, saying why, on the first thing that is not so."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

BIN = Path(sys.executable).parent
CLI = str(BIN / "orxaq-grpc")
VENV = BIN.parent
DEADLINE_S = 60.0


def fail(message: str) -> None:
    sys.exit(f"wheel: {message}")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60, check=False)
    print(f"$ orxaq-grpc {' '.join(args)}\n{done.stdout}{done.stderr}", end="")
    if done.returncode != 0:
        fail(f"orxaq-grpc {' '.join(args)} exited {done.returncode}")
    return done


def main() -> None:
    import orxaq_grpc

    if VENV not in Path(orxaq_grpc.__file__).resolve().parents:
        fail(f"orxaq_grpc imported from {orxaq_grpc.__file__}, not from the venv {VENV}")
    meta = metadata.metadata("orxaq-grpc")
    if meta.get("License-Expression") != "Apache-2.0":
        fail(f"License-Expression is {meta.get('License-Expression')!r}")
    licenses = [f for f in metadata.files("orxaq-grpc") or () if f.name == "LICENSE"]
    if not licenses or "Apache License" not in licenses[0].read_text():
        fail("the wheel carries no LICENSE with the Apache License text")

    if run("--version").stdout.strip() != f"orxaq-grpc {metadata.version('orxaq-grpc')}":
        fail("--version does not print the installed version")
    if "(packaged defaults)" not in run("check-config").stderr:
        fail("check-config did not use the packaged defaults")

    server = subprocess.Popen(
        [CLI, "serve", "--address", "127.0.0.1:0", "--grace", "1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    log: list[str] = []

    def wait_for(pattern: str) -> re.Match[str]:
        end = time.monotonic() + DEADLINE_S
        while (left := end - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                fail("the server stopped:\n" + "".join(log))
            log.append(line)
            if match := re.search(pattern, line):
                return match
        fail(f"no {pattern!r} in the server's log within {DEADLINE_S:.0f} s:\n" + "".join(log))
        raise AssertionError  # unreachable: fail exits

    try:
        wait_for(r"config directory \S+ \(packaged defaults\)")
        port = wait_for(r"serving \S+ on 127\.0\.0\.1:(\d+)").group(1)
        address = f"127.0.0.1:{port}"
        route = run("route", "--address", address, "--lane", "codex", "--title", "Fix a typo", "--json")
        decision = json.loads(route.stdout)
        if not decision.get("model") or not decision.get("decision_id"):
            fail(f"the Route answer names no model or decision: {decision}")
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        if code != 0:
            fail(f"serve exited {code} on SIGTERM:\n" + "".join(log))
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    print("".join(log), end="")
    print(f"wheel: ok, served and routed from {Path.cwd()} on the packaged defaults")


if __name__ == "__main__":
    main()
