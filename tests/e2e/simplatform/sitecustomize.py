"""A Windows-like Python on Linux, for tests/e2e/test_platforms.py (put this folder first on PYTHONPATH).

What it takes away, as Windows does not have it:
- ``fcntl``, ``resource``, ``termios``, ``pty``, ``tty``, ``grp``, ``pwd``: importing them raises ModuleNotFoundError;
- ``os.fork`` & co., ``os.getuid`` & co., POSIX-only signals (SIGKILL, SIGHUP, SIGUSR1, SIGALRM, ...);
- the ``fork``/``forkserver`` start methods: multiprocessing can only ``spawn`` (the child re-imports ``__main__``);

and what it adds, as Windows has it:
- ``signal.SIGBREAK`` (Ctrl+Break), mapped to an otherwise unused Linux signal so a test can raise it.

Also: a text-mode ``open()`` without ``encoding=`` inside the package is an error (with PYTHONWARNDEFAULTENCODING=1),
because Windows would use the ANSI code page (cp949) there instead of UTF-8.
"""

import importlib.abc
import os
import signal
import sys
import warnings

BLOCKED = {"fcntl", "resource", "termios", "pty", "tty", "grp", "pwd"}


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (simulated Windows)", name=name)
        return None


for _name in BLOCKED:
    sys.modules.pop(_name, None)
sys.meta_path.insert(0, _Blocker())

_break = signal.SIGUSR2
for _name in ("fork", "forkpty", "getuid", "geteuid", "getgid", "getegid", "setsid", "killpg", "getpgid",
              "setpgid", "getpgrp", "wait3", "wait4"):
    if hasattr(os, _name):
        delattr(os, _name)
for _name in ("SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGQUIT", "SIGSTOP", "SIGCONT", "SIGPIPE",
              "alarm", "setitimer", "pause"):
    if hasattr(signal, _name):
        delattr(signal, _name)
signal.SIGBREAK = _break

import multiprocessing  # noqa: E402
import multiprocessing.context as _ctx  # noqa: E402

for _method in ("fork", "forkserver"):
    _ctx._concrete_contexts.pop(_method, None)
_ctx.DefaultContext.get_all_start_methods = lambda self: ["spawn"]
multiprocessing.get_all_start_methods = lambda: ["spawn"]
multiprocessing.set_start_method("spawn", force=True)

warnings.filterwarnings("ignore", category=EncodingWarning)  # other libraries are not ours to judge here
warnings.filterwarnings("error", category=EncodingWarning, module=r"chatbot(\.|$)")
