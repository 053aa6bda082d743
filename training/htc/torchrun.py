"""``torchrun`` that works with Debian's PyTorch 1.13 on Python 3.11.

    /usr/bin/python3 -m htc.torchrun --nproc_per_node=2 -m htc.train --config ...

Same arguments as ``torchrun``. PyTorch 1.13's launcher parses ``--redirects``
and ``--tee`` by iterating the ``Std`` IntFlag, and since Python 3.11 that
iteration skips the zero and multi-bit members; the default "0" then parses to
None and every launch dies in ``to_map`` with "'NoneType' object has no
attribute 'get'" (meta-llama/llama#86; PyTorch 2.x parses with ``Std(int(v))``).
This module makes that one parse correct, only when it is broken, and hands
over to ``torch.distributed.run``. Plain ``torchrun --redirects 1 --tee 1``
also avoids the bug, at the price of rank-prefixed stdout.

Signals: torchrun answers SIGINT/SIGTERM by raising in its agent, which then
gives the workers 30 s before SIGKILL, too short for a large model to finish
its step and write a checkpoint (htc.train's stop on a signal). Here the
launcher passes SIGINT/SIGTERM/SIGHUP on to every worker instead and keeps
waiting for them; when they have stopped, it exits with 130 rather than
torchrun's failure report. (``htcstream train`` signals this process alone,
it runs in a process group of its own.)
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from typing import Any, Dict, List, Union

from torch.distributed import run
from torch.distributed.elastic.multiprocessing import api
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError


def _from_str(vm: str) -> Union[api.Std, Dict[int, api.Std]]:
    if re.match(api._VALUE_REGEX, vm):
        return api.Std(int(vm))
    if re.match(api._MAPPING_REGEX, vm):
        return {int(i): api.Std(int(v)) for i, v in (m.split(":") for m in vm.split(","))}
    raise ValueError(f"{vm} does not match: <{api._VALUE_REGEX}> or <{api._MAPPING_REGEX}>")


def patch_std_parsing() -> bool:
    """Fix ``Std.from_str`` if this PyTorch/Python pair breaks it; True when patched."""
    if api.Std.from_str("0") is not None:
        return False
    api.Std.from_str = staticmethod(_from_str)
    return True


_contexts: List[Any] = []   # the worker process contexts started so far
_forwarded: List[int] = []  # signals passed on to them


def _forward_to_workers(signum: int, frame: Any) -> None:
    _forwarded.append(signum)
    for pc in _contexts:
        for pid in pc.pids().values():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _not_our_stop(record: logging.LogRecord) -> bool:
    # after a forwarded signal the workers exit with 130 on purpose: not an error to log
    return not (_forwarded and "exitcode: 130" in record.getMessage())


def patch_signals() -> None:
    """Make torchrun's agent pass termination signals on to its workers instead of
    raising (PContext.start installs ``api._terminate_process_handler`` by name)."""
    if getattr(api.PContext.start, "_htc_patched", False):
        return
    api._terminate_process_handler = _forward_to_workers
    logging.getLogger(api.__name__).addFilter(_not_our_stop)
    real_start = api.PContext.start

    def start(self) -> None:
        _contexts.append(self)
        real_start(self)

    start._htc_patched = True  # type: ignore[attr-defined]
    api.PContext.start = start


def main() -> None:
    patch_std_parsing()
    patch_signals()
    # torchrun sets 1 thread a worker anyway and prints a six-line banner saying
    # so; one PyTorch process keeps about one core busy here (docs/training.md)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.argv[0] = "torchrun"
    try:
        run.main()
    except ChildFailedError:
        if not _forwarded:
            raise
        names = ", ".join(sorted({signal.Signals(s).name for s in _forwarded}))
        print(f"htc.torchrun: the workers stopped on {names}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
