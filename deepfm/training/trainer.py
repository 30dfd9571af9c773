"""The fit loop: AdamW, an LR schedule, gradient clipping, optional weight averaging (EMA) and early
stopping on validation AUC, on a CPU or a GPU, in one process or data-parallel under torchrun.

Embedding tables too large to fuse (`FeatureEmbedding.use_sparse_gradients`) train, in one process, with
sparse gradients and `SparseAdam`, so that a step costs the rows it looks up, not the whole table: with
dense gradients a million-value field makes every step write, clip and update every row.

Under torchrun (see `deepfm.training.distributed`) the loop is the same: each process trains on its
shard of every epoch's rows, DistributedDataParallel averages the gradients, so `batch_size` is the
rows of one optimizer step over all processes; validation and test predictions are sharded by
whole batches and gathered, so every process computes the metrics a single process would, and takes
the same early-stopping and LR decisions.
"""

from __future__ import annotations

import copy
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.profiler import record_function
from tqdm import tqdm

from deepfm.config import TrainingConfig
from deepfm.data.dataset import CTRDataset, ResampledDataset, prefetched
from deepfm.errors import ConfigError
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.training.distributed import World
from deepfm.training.metrics import log_loss, ranking_metrics, roc_auc

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("plateau", "cosine", "constant")
# the training step's parts, labelled for torch.profiler (the optimizers label their own step and zero_grad)
STEP_PHASES = ("deepfm.forward", "deepfm.backward", "deepfm.clip_gradients", "deepfm.weight_average")
Scorer = Callable[[dict[str, Tensor]], Tensor]
"""Encoded batch -> click probabilities (B,)."""


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict(
    scorer: Scorer, dataset: CTRDataset, batch_size: int, world: World | None = None, prefetch: int = 0
) -> np.ndarray:
    """Click probabilities for every row of `dataset`, in order.

    Args:
        world: with several processes, each scores a contiguous run of whole batches (the batches a
            single process scores, so the same numbers) and every process gets all rows.
        prefetch: batches read ahead by a background thread (`prefetched`).
    """
    size, rank = (1, 0) if world is None else (world.size, world.rank)
    per_rank = -(-dataset.num_batches(batch_size) // size)
    mine = range(rank * per_rank, (rank + 1) * per_rank)
    with torch.inference_mode(), closing(prefetched(dataset.batches(batch_size), prefetch)) as batches:
        parts = [scorer(features).cpu() for i, (features, _) in enumerate(batches) if i in mine]
    local = torch.cat(parts) if parts else torch.zeros(0)
    if world is not None:
        local = world.gather_blocks(local, per_rank * batch_size, len(dataset))
    return local.numpy()


def evaluate(
    scorer: Scorer, dataset: CTRDataset, batch_size: int, world: World | None = None, prefetch: int = 0
) -> dict[str, float]:
    """AUC and logloss over every row, plus HR@K and NDCG@K when the dataset has ranking queries."""
    probabilities = predict(scorer, dataset, batch_size, world, prefetch)
    labels = dataset.labels.numpy()
    metrics = {"auc": roc_auc(labels, probabilities), "logloss": log_loss(labels, probabilities)}
    if dataset.query_ids is not None and dataset.is_target is not None:
        metrics |= ranking_metrics(probabilities, labels, dataset.query_ids.numpy(), dataset.is_target.numpy())
    metrics["num_rows"] = float(len(dataset))
    return metrics


def probabilities_of(model: nn.Module) -> Scorer:
    """A scorer from a logit model, on the model's device; probabilities come back on that device."""
    device = next(model.parameters()).device

    def score(features: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(model({name: values.to(device) for name, values in features.items()}))

    return score


def sparse_tables(model: nn.Module) -> list[Tensor]:
    """The weights of the model's embedding tables that now give sparse gradients (see the module doc)."""
    return [w for m in model.modules() if isinstance(m, FeatureEmbedding) for w in m.use_sparse_gradients()]


def clip_gradients(parameters: Iterable[Tensor], max_norm: float) -> None:
    """`nn.utils.clip_grad_norm_` over dense and sparse gradients together (PyTorch's takes dense ones)."""
    dense: list[Tensor] = []
    grads: list[Tensor] = []  # the dense parameters' gradients
    values: list[Tensor] = []  # the sparse gradients' values: views, scaled in place
    for p in parameters:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()  # repeated rows summed: the norm of its values is then the gradient's
            values.append(p.grad.values())
        elif p.grad is not None:
            dense.append(p)
            grads.append(p.grad)
    total = nn.utils.get_total_norm(grads + values)
    nn.utils.clip_grads_with_norm_(dense, max_norm, total)
    for rows in values:
        rows.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))  # clip_grads_with_norm_'s coefficient


class WeightAverage:
    """An exponential moving average of a model's parameters and buffers, the update of torch's
    `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)` with the same result,
    over tensor lists gathered once: `AveragedModel` regroups every tensor by device and dtype at every step, which
    costs more than the update itself (`benchmarks/results/train_peer_bench.md`, weight_average).

    Args:
        model: the model whose weights are averaged; its parameters and buffers are updated in place.
        decay: each step keeps `decay` of the average and takes `1 - decay` of the model.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model)
        self.decay, self.weight = decay, 1 - decay
        pairs = list(
            zip(
                itertools.chain(self.module.parameters(), self.module.buffers()),
                itertools.chain(model.parameters(), model.buffers()),
                strict=True,
            )
        )
        floats = [(a.detach(), m.detach()) for a, m in pairs if a.is_floating_point()]
        self.averaged, self.current = [a for a, _ in floats], [m for _, m in floats]
        self.others = [(a.detach(), m.detach()) for a, m in pairs if not a.is_floating_point()]  # batch counts
        self.started = False

    @torch.no_grad()
    def update(self) -> None:
        """Take one step towards the model's current weights (the first call copies them)."""
        if not self.started:
            torch._foreach_copy_(self.averaged, self.current)
            for average, value in self.others:
                average.copy_(value)
            self.started = True
            return
        torch._foreach_lerp_(self.averaged, self.current, self.weight)
        for average, value in self.others:  # as get_ema_multi_avg_fn does for tensors foreach lerp cannot take
            average.copy_(average * self.decay + value * self.weight)


def _schedule(
    optimizer: torch.optim.Optimizer, config: TrainingConfig
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The optimizer's LR schedule, as `config.lr_schedule` says."""
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None


@dataclass
class EpochRecord:
    """What one epoch did."""

    epoch: int
    train_loss: float
    val_auc: float
    val_logloss: float
    val_hr_at_10: float  # NaN when the validation set has no ranking queries
    lr: float
    seconds: float
    samples_per_second: float


@dataclass
class History:
    """Per-epoch records and the epoch whose weights were kept."""

    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = -1
    best_val_auc: float = float("-inf")

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON."""
        return {
            "best_epoch": self.best_epoch,
            "best_val_auc": self.best_val_auc,
            "epochs": [asdict(e) for e in self.epochs],
        }


class Trainer:
    """Fits a logit model with binary cross-entropy; keeps the weights of the best validation AUC.

    With `ema_epochs` > 0, an exponential moving average of the weights (and batch-norm statistics)
    is updated after every step, and it is the averaged model that is validated and kept (Polyak
    averaging). Its time constant is `ema_epochs` epochs whatever the epoch's length: the per-step
    decay is 1 - 1 / (ema_epochs x steps per epoch).

    The model moves to `config.device` here (models hold no device logic); it stays there after `fit`.
    Under torchrun each process trains `batch_size / world size` rows per step.

    Args:
        model: maps an encoded batch to logits (B,).
        config: training settings.
    """

    def __init__(self, model: nn.Module, config: TrainingConfig) -> None:
        if config.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown training.lr_schedule {config.lr_schedule!r}, expected one of {LR_SCHEDULES}")
        self.world = World.current(config.device)
        if config.amp and self.world.device.type != "cuda":
            raise ConfigError(f"training.amp needs a CUDA device; training.device={config.device!r} is the CPU here")
        self.batch_size = self.world.share(config.batch_size)  # this process's rows per step
        self.model = model.to(self.world.device)
        self.network = self.world.wrap(self.model)  # what the training step runs: DDP or the model itself
        if self.world.rank > 0:  # its own dropout masks (the weights came from rank 0's seed)
            torch.manual_seed(config.seed + self.world.rank)
        self.config = config
        sparse = sparse_tables(model) if config.sparse_gradients and self.world.size == 1 else []
        dense = [p for p in model.parameters() if all(p is not s for s in sparse)]
        self.optimizers: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(dense, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        ]
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=config.lr))
        self.schedulers = [_schedule(optimizer, config) for optimizer in self.optimizers]
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.scaler = torch.amp.GradScaler(self.world.device.type, enabled=config.amp)
        if config.ema_epochs < 0:
            raise ConfigError(f"training.ema_epochs must be >= 0, got {config.ema_epochs}")
        self.averaged: WeightAverage | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The model that is validated and kept: the weight average if there is one."""
        return self.model if self.averaged is None else self.averaged.module

    def fit(self, train: CTRDataset, val: CTRDataset) -> History:
        """Train up to `epochs` epochs, stopping after `patience` epochs without a val AUC gain."""
        torch.set_num_threads(self.config.num_threads)
        history = History()
        if self.config.ema_epochs > 0:
            steps = self.config.ema_epochs * train.num_batches(self.batch_size, self.world.size)
            self.averaged = WeightAverage(self.model, max(0.0, 1 - 1 / steps))
        best_state = copy.deepcopy(self.evaluated.state_dict())
        for epoch in range(self.config.epochs):
            if isinstance(train, ResampledDataset) and epoch > 0:
                train.resample(epoch)
            started = time.perf_counter()
            train_loss = self._train_epoch(train, epoch)
            seconds = time.perf_counter() - started
            self.world.broadcast_buffers(self.evaluated)  # each rank's batch-norm statistics saw its own rows
            self.evaluated.eval()
            val_metrics = evaluate(
                probabilities_of(self.evaluated), val, self.config.eval_batch_size, self.world,
                self.config.prefetch_batches,
            )  # fmt: skip
            record = EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_auc=val_metrics["auc"],
                val_logloss=val_metrics["logloss"],
                val_hr_at_10=val_metrics.get("hr@10", float("nan")),
                lr=self.optimizers[0].param_groups[0]["lr"],
                seconds=seconds,
                samples_per_second=len(train) / seconds,
            )
            history.epochs.append(record)
            logger.info(
                "epoch %d: train_loss=%.4f val_auc=%.4f val_logloss=%.4f val_hr@10=%.4f lr=%.2g %.1fs (%.0f samples/s)",
                epoch, train_loss, record.val_auc, record.val_logloss, record.val_hr_at_10, record.lr, seconds,
                record.samples_per_second,
            )  # fmt: skip
            if record.val_auc > history.best_val_auc:
                history.best_epoch, history.best_val_auc = epoch, record.val_auc
                best_state = copy.deepcopy(self.evaluated.state_dict())
            elif epoch - history.best_epoch >= self.config.patience:
                logger.info("early stop: no val AUC gain for %d epochs", self.config.patience)
                break
            for scheduler in self.schedulers:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(record.val_auc)
                elif scheduler is not None:
                    scheduler.step()
        self.model.load_state_dict(best_state)
        self.model.eval()
        return history

    def _train_epoch(self, train: CTRDataset, epoch: int) -> float:
        """One pass over this rank's shard of the epoch's rows; the mean training loss over all ranks."""
        self.network.train()
        device, world = self.world.device, self.world
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)  # the same order on every rank
        total, rows = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device: no sync per step
        show = self.config.progress and world.is_primary
        batches = prefetched(
            train.batches(self.batch_size, generator, world.rank, world.size), self.config.prefetch_batches
        )
        progress = tqdm(
            batches, total=train.num_batches(self.batch_size, world.size), desc=f"epoch {epoch}",
            disable=not show, leave=False,
        )  # fmt: skip
        with closing(batches):  # an exception in the step stops the prefetch thread
            for features, labels in progress:
                features = {name: values.to(device, non_blocking=True) for name, values in features.items()}
                labels = labels.to(device, non_blocking=True)
                for optimizer in self.optimizers:
                    optimizer.zero_grad(set_to_none=True)
                forward, backward, clip, average = (record_function(label) for label in STEP_PHASES)
                with forward, torch.autocast(device.type, dtype=torch.float16, enabled=self.config.amp):
                    loss = self.loss_fn(self.network(features), labels)
                with backward:
                    self.scaler.scale(loss).backward()
                if self.config.grad_clip_norm > 0:
                    with clip:
                        for optimizer in self.optimizers:
                            self.scaler.unscale_(optimizer)
                        clip_gradients(self.model.parameters(), self.config.grad_clip_norm)
                for optimizer in self.optimizers:
                    self.scaler.step(optimizer)
                self.scaler.update()
                if self.averaged is not None:
                    with average:
                        self.averaged.update()
                total += loss.detach().double() * len(labels)
                rows += len(labels)
                if show:
                    progress.set_postfix(loss=f"{total.item() / rows:.4f}")
        summed, count = world.sum([total.item(), rows])
        return summed / max(count, 1)
