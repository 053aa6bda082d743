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
"""

from __future__ import annotations

import re
import sys
from typing import Dict, Union

from torch.distributed import run
from torch.distributed.elastic.multiprocessing import api


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


def main() -> None:
    patch_std_parsing()
    sys.argv[0] = "torchrun"
    run.main()


if __name__ == "__main__":
    main()
