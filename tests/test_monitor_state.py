"""The state file survives the process being killed mid-write, and concurrent runs merge."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from autoops import StateFile

WRITER = textwrap.dedent(
    """
    import sys
    from autoops import StateFile

    state = StateFile(sys.argv[1])
    generation = 0
    while True:
        generation += 1
        state.save({f"check{i}": {"generation": generation, "pad": "x" * 2000} for i in range(200)})
        if generation == 1:
            # Only once a whole file exists: a loaded machine may not finish one in 0.3 s.
            print("ready", flush=True)
    """
)


def test_a_run_killed_mid_write_leaves_a_whole_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for _ in range(2):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n"
        time.sleep(0.3)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        loaded = StateFile(path).load()
        generations = {entry["generation"] for entry in loaded.values()}
        assert len(loaded) == 200
        assert len(generations) == 1, "a file mixing two writes was read"
    StateFile(path).save({"after": {}})
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["state.json", "state.json.lock"]
    assert json.loads(path.read_text())["version"] == 1


def test_concurrent_runs_each_keep_their_own_checks(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json")

    def run(prefix: str) -> None:
        for round_number in range(30):
            state.save({f"{prefix}{index}": {"round": round_number} for index in range(5)})

    threads = [threading.Thread(target=run, args=(prefix,)) for prefix in ("cron", "person")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loaded = state.load()
    assert sorted(loaded) == sorted(
        [f"cron{i}" for i in range(5)] + [f"person{i}" for i in range(5)]
    )
    assert {entry["round"] for entry in loaded.values()} == {29}
