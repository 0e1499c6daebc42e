"""This process's place in a data-parallel run.

Under ``torchrun --nproc_per_node N -m llava.eval.<driver> ...`` or ``accelerate launch``
(``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`` on CPU) each rank
answers its share of the remaining questions into its own part file and rank 0 merges them.
A plain ``python -m`` run is a world of one.
"""

from __future__ import annotations

import os


class Dist:
    """Rank, world size and the collective operations a run needs (no-ops in a single process)."""

    def __init__(self):
        self.state = None
        self.rank, self.world, self.local_rank = 0, 1, 0
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            self.state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self.state.process_index, self.state.num_processes
            self.local_rank = self.state.local_process_index

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def share(self, items: list) -> list:
        """This rank's contiguous share of ``items`` (all of them in a single process)."""
        if self.state is None:
            return items
        with self.state.split_between_processes(items) as mine:
            return list(mine)

    def close(self) -> None:
        if self.state is not None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


__all__ = ["Dist"]
