"""Checks before any work: the hardware and strategy the trainer asks for, and the cluster it runs in."""

from __future__ import annotations

from nin_lightning.cluster.devices import GPU_ACCELERATORS, devices_per_node, visible_gpus, world_size
from nin_lightning.cluster.slurm import slurm_tasks, torchrun
from nin_lightning.config import JobContext, TrainConfig
from nin_lightning.errors import UserError, did_you_mean


def check_strategy(strategy: str) -> None:
    """`trainer.strategy` must be `auto` or a name in Lightning's strategy registry."""
    from lightning.pytorch.strategies import StrategyRegistry

    names = StrategyRegistry.available_strategies()
    if strategy != "auto" and strategy not in names:
        raise UserError(f"trainer.strategy={strategy}: no such Lightning strategy{did_you_mean(strategy, names)}; "
                        "use auto, ddp, ddp_spawn or another of lightning's StrategyRegistry names")


def check_devices(conf: TrainConfig, job: JobContext) -> None:
    """Stop at once, with one line naming the fix, when the trainer asks for hardware that is not here."""
    t = conf.trainer
    gpus = visible_gpus()
    if t.accelerator in GPU_ACCELERATORS:
        option = job.trainer_option
        asked = f"trainer={option}" if option in ("gpu", "ddp") else f"trainer.accelerator={t.accelerator}"
        cpu_twin = "trainer=ddp_cpu" if t.strategy.startswith("ddp") else "trainer=cpu"
        if not gpus:
            raise UserError(f"{asked} needs a CUDA GPU, but torch.cuda.is_available() is False on this machine; "
                            f"use {cpu_twin} instead")
        if isinstance(t.devices, int) and t.devices > gpus:
            raise UserError(f"trainer.devices={t.devices} but this node has {gpus} GPU(s); pass trainer.devices={gpus}")
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not gpus)
    if t.sync_batchnorm and on_cpu and world_size(conf) > 1:
        raise UserError("trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm); on CPU pass "
                        "trainer.sync_batchnorm=false (trainer=ddp_cpu does)")
    tasks = slurm_tasks()
    if tasks is not None and tasks > 1 and not job.multirun and not job.run_dir_pinned:
        raise UserError(f"{tasks} Slurm tasks would each make a run dir of their own: pass "
                        "hydra.run.dir=outputs/runs/$SLURM_JOB_ID (one dir for all ranks; a requeued job finds its "
                        "last.ckpt there), or use hydra/launcher=slurm")
    if t.num_nodes > 1 and tasks is None and not torchrun():
        per_node = devices_per_node(t.accelerator, t.devices, gpus)
        raise UserError(f"trainer.num_nodes={t.num_nodes} needs a cluster that starts the processes: use "
                        "hydra/launcher=slurm (nodes and tasks follow trainer.num_nodes and trainer.devices), or "
                        f"sbatch --nodes={t.num_nodes} --ntasks-per-node={per_node} with srun")
    check_strategy(t.strategy)
