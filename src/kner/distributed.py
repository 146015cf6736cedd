"""This process's place in a multi-process job (torchrun, accelerate launch), read from the
environment the launcher sets, so that asking needs no torch."""
from __future__ import annotations

import os


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch (and always in a single process)."""
    return os.environ.get("RANK", "0") == "0"


def world_size() -> int:
    """How many processes train together (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
