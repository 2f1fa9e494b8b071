"""The whole pipeline in one process, as tests/e2e/test_platforms.py runs it on each (simulated) platform.

``python tests/e2e/platform_driver.py <config dir> <reply message>``: organize → preprocess (in worker processes) →
train stopped by a STOP file → resumed and stopped by Ctrl+Break (SIGBREAK where the platform has it, else SIGINT)
→ resumed to the end → publish --encrypt → reply --json. Every verb goes through ``chatbot.ops.main`` like the
command line, except the two stopped training legs, which need the ``on_step`` hook to stop at an exact step (so
both platforms stop at the same steps). One process instead of one per verb keeps the test fast (torch is
imported once).

The main guard matters: spawned worker processes import this file again as ``__mp_main__``.
"""

from __future__ import annotations

import signal
import sys


def main(config_dir: str, message: str) -> int:
    from pathlib import Path

    from chatbot.config import load_config
    from chatbot.ops import main as ops
    from chatbot.train.loop import EXIT_STOPPED, train

    def verb(*args: str) -> None:
        code = ops([*args, "--config-dir", config_dir])
        if code != 0:
            raise SystemExit(f"driver: {args[0]} exited {code}")

    verb("organize")
    from chatbot.data import encode, parallel

    parallel.PARALLEL_MIN_TURNS = 0  # a test-sized corpus, encoded by the worker pool all the same
    encode.CHUNK_TURNS = 64  # many chunks: results must come back in order
    verb("preprocess")

    cfg = load_config(Path(config_dir))
    stop_file = cfg.run_dir / cfg.train.stop_file_name

    def stop_file_at(step: int):
        return lambda s: stop_file.write_text("", encoding="utf-8") if s == step else None

    def ctrl_break_at(step: int):
        sig = getattr(signal, "SIGBREAK", signal.SIGINT)
        return lambda s: signal.raise_signal(sig) if s == step else None

    if train(cfg, on_step=stop_file_at(5)) != EXIT_STOPPED:
        raise SystemExit("driver: the STOP file did not stop training")
    if train(load_config(Path(config_dir)), on_step=ctrl_break_at(11)) != EXIT_STOPPED:
        raise SystemExit("driver: Ctrl+Break did not stop training")
    verb("train")
    verb("publish", "--encrypt")
    verb("reply", message, "--json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
