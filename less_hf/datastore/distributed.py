"""Which share of the rows this process computes when the build runs under `accelerate launch`.

Rows are cut into one global list of length-sorted batches (the same batches whatever the number of processes) and
the batches are dealt round-robin (batch ``k`` belongs to rank ``k % world_size``), so every row is computed in the
same batch, hence to the same bits, by 1 or N processes. Every rank writes its rows into the same memory-mapped
arrays (disjoint rows) and records what it finished in its own done-mask file. The main
process creates the files before the others open them and finalises after all are done, so the result is one
datastore laid out exactly as a single-process build.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

SHARD_ENV = "LESS_HF_SHARD"


@dataclass
class Shard:
    """This process's place in the job (rank 0 of 1 when not distributed).

    ``separate``: the ranks share no filesystem (or no process group): each computes the same share of the rows it
    would compute in a joint build, but into a folder of its own, which it creates and never finalises; barriers
    and broadcasts are no-ops. :func:`~less_hf.datastore.shards.merge_shards` combines the folders.
    """

    rank: int = 0
    world_size: int = 1
    _state: Any = None
    separate: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process creates (and finalises) the files of its datastore folder."""
        return self.rank == 0 or self.separate

    def owns(self, rows: np.ndarray) -> np.ndarray:
        """The subset of ``rows`` (row or batch indices) this process handles."""
        return rows[rows % self.world_size == self.rank]

    def broadcast_from_main(self, text: str) -> str:
        """The main process's ``text`` on every process (no-op when alone)."""
        if self.world_size <= 1 or self.separate:
            return text
        import torch
        import torch.distributed as dist

        data = torch.zeros(4096, dtype=torch.uint8)
        if self.is_main:
            raw = text.encode()[:4096]
            data[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
        data = data.to(getattr(self._state, "device", "cpu"))  # NCCL needs a device tensor
        dist.broadcast(data, src=0)
        data = data.cpu()
        return bytes(data.tolist()).rstrip(b"\0").decode(errors="replace")

    def barrier(self) -> None:
        """Wait for every process (no-op when alone)."""
        if self.world_size > 1 and not self.separate:
            self._state.wait_for_everyone()


def parse_shard(spec: str) -> Shard:
    """A separate shard from ``"K/N"`` (this is shard K of N) or ``"auto"`` (``RANK``/``WORLD_SIZE`` as set by
    `accelerate launch` / torchrun; no process group is used)."""
    if spec == "auto":
        spec = f"{os.environ.get('RANK', '0')}/{os.environ.get('WORLD_SIZE', '1')}"
    try:
        rank, world_size = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {spec!r}: expected K/N (shard K of N, 0 <= K < N) or 'auto'.") from None
    if not 0 <= rank < world_size or world_size < 2:
        raise ConfigError(f"--shard {spec!r}: need 0 <= K < N and N >= 2 (one shard is a plain build).")
    return Shard(rank, world_size, None, separate=True)


def current_shard() -> Shard:
    """The shard of the running process: a separate shard when ``LESS_HF_SHARD`` is set (``K/N`` or ``auto``), else
    from accelerate's state when launched with several processes."""
    if os.environ.get(SHARD_ENV):
        return parse_shard(os.environ[SHARD_ENV])
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    # without GPUs, accelerate only sets up the process group (gloo) when asked for CPU explicitly
    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes, state)
