"""``ehrseq run`` under ``torchrun``: one process per GPU (or CPU worker), one machine.

``torchrun --standalone --nproc_per_node N -m ehrseq.cli run ...`` starts ``N`` copies
of the command. :func:`start_ranks` joins them in one process group (NCCL on CUDA, each
rank on ``cuda:LOCAL_RANK``; gloo on the CPU) with a timeout, so a rank that waits for a
dead one fails instead of hanging. Rank 0 *leads*: it runs every stage that reads or
writes files (load, cohort, task, baselines, evaluate, report) and writes every output.
The other ranks *follow* (:func:`follow`): they wait until rank 0 starts a training
stage, build the task from the files rank 0 cached under ``--out``, and train with it
through :func:`~ehrseq.train.fit`'s distributed path (each rank its share of the
batches), writing nothing. Rank 0 tells them what to do (:meth:`Ranks.tell`): a stage to
train, that it failed (each follower then exits 1 too), or that the run is done.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from ehrseq.cli.cohort import CliError

__all__ = ["Ranks", "follow", "start_ranks"]


@dataclass
class Ranks:
    """This process's place among the command's processes (one process: rank 0 of 1).

    Attributes:
        rank, world: this rank and the number of processes.
        device: this rank's device (``cuda:LOCAL_RANK`` under torchrun on GPUs).
        waiting: the followers wait for rank 0's next message (not inside a training
            stage).
    """

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    waiting: bool = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def tell(self, message: tuple) -> tuple:
        """Rank 0 sends ``message`` to every rank; each rank returns it (one process: as
        given). A training stage's name means the followers join it until it ends."""
        if self.world == 1:
            return message
        import torch.distributed as dist

        box = [message if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self._comm_device)
        self.waiting = box[0][0] in ("fail", "done")
        return box[0]

    def stage_done(self) -> None:
        """A training stage ended on this rank: the followers wait again."""
        self.waiting = True

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    @property
    def _comm_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None

    def __enter__(self) -> Ranks:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_ranks(device: str | None, timeout_minutes: float) -> Ranks:
    """Join the process group of a ``torchrun`` launch (``WORLD_SIZE > 1``), or return
    rank 0 of 1 on ``device`` (:func:`ehrseq.get_device`) without one.

    Args:
        device: ``--device``: ``"cpu"``, ``"cuda"``... (None: CUDA when present).
        timeout_minutes: how long a collective call waits before failing.
    """
    from ehrseq.runtime import get_device

    chosen = get_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(device=chosen)
    import torch.distributed as dist

    if chosen.type == "cuda":
        chosen = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if chosen.type == "cuda" else "gloo",
            timeout=timedelta(minutes=timeout_minutes),
        )
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), device=chosen)


def follow(args: argparse.Namespace, ranks: Ranks, make_task) -> int:
    """What a rank other than 0 does in ``ehrseq run``: train when rank 0 says so.

    Args:
        args: the command line (``--out``, the run's settings).
        ranks: this rank (:func:`start_ranks`).
        make_task: ``make_task(cfg, spec)`` builds the task from the files under
            ``--out``.

    Returns:
        0 when rank 0 says the run is done.

    Raises:
        CliError: rank 0 failed (its message).
    """
    from ehrseq.cli.cohort import CohortSpec
    from ehrseq.cli.pipeline import resolve_config
    from ehrseq.cli.steps import finetune_survival, pretrain_encoder

    task = None
    dev = str(ranks.device)
    while True:
        message = ranks.tell(())
        if message[0] == "fail":
            raise CliError(f"rank 0 failed: {message[1]}")
        if message[0] == "done":
            return 0
        cfg, spec = resolve_config(args), CohortSpec.from_toml(args.cohort)
        task = task or make_task(cfg, spec)
        if message[0] == "pretrain":  # load_or_train: rank 0 decides, the others join
            pretrain_encoder(task, cfg, init=message[1], device=dev)
        elif message[0] == "finetune":
            encoder = args.out / "pretrain" / "encoder.pt"
            state = torch.load(encoder, map_location="cpu", weights_only=True)
            finetune_survival(task, cfg, state, device=dev)
        ranks.stage_done()
