"""The fit loop: AdamW, an LR schedule, gradient clipping, optional weight averaging (EMA) and early
stopping on validation AUC."""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from deepfm.config import TrainingConfig
from deepfm.data.dataset import CTRDataset, ResampledDataset
from deepfm.errors import ConfigError
from deepfm.training.metrics import log_loss, ranking_metrics, roc_auc

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("plateau", "cosine", "constant")
Scorer = Callable[[dict[str, Tensor]], Tensor]
"""Encoded batch -> click probabilities (B,)."""


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict(scorer: Scorer, dataset: CTRDataset, batch_size: int) -> np.ndarray:
    """Click probabilities for every row of `dataset`, in order."""
    with torch.inference_mode():
        parts = [scorer(features).numpy() for features, _ in dataset.batches(batch_size)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def evaluate(scorer: Scorer, dataset: CTRDataset, batch_size: int) -> dict[str, float]:
    """AUC and logloss over every row, plus HR@K and NDCG@K when the dataset has ranking queries."""
    probabilities = predict(scorer, dataset, batch_size)
    labels = dataset.labels.numpy()
    metrics = {"auc": roc_auc(labels, probabilities), "logloss": log_loss(labels, probabilities)}
    if dataset.query_ids is not None and dataset.is_target is not None:
        metrics |= ranking_metrics(probabilities, labels, dataset.query_ids.numpy(), dataset.is_target.numpy())
    metrics["num_rows"] = float(len(dataset))
    return metrics


def probabilities_of(model: nn.Module) -> Scorer:
    """A scorer from a logit model."""

    def score(features: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(model(features))

    return score


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

    Args:
        model: maps an encoded batch to logits (B,).
        config: training settings.
    """

    def __init__(self, model: nn.Module, config: TrainingConfig) -> None:
        if config.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown training.lr_schedule {config.lr_schedule!r}, expected one of {LR_SCHEDULES}")
        self.model = model
        self.config = config
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None
        if config.lr_schedule == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=0.5, patience=0
            )
        elif config.lr_schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.epochs)
        else:
            self.scheduler = None
        self.loss_fn = nn.BCEWithLogitsLoss()
        if config.ema_epochs < 0:
            raise ConfigError(f"training.ema_epochs must be >= 0, got {config.ema_epochs}")
        self.averaged: AveragedModel | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The model that is validated and kept: the weight average if there is one."""
        return self.model if self.averaged is None else self.averaged.module

    def fit(self, train: CTRDataset, val: CTRDataset) -> History:
        """Train up to `epochs` epochs, stopping after `patience` epochs without a val AUC gain."""
        torch.set_num_threads(self.config.num_threads)
        history = History()
        if self.config.ema_epochs > 0:
            steps = self.config.ema_epochs * train.num_batches(self.config.batch_size)
            average = get_ema_multi_avg_fn(max(0.0, 1 - 1 / steps))  # type: ignore[no-untyped-call]
            self.averaged = AveragedModel(self.model, multi_avg_fn=average, use_buffers=True)
        best_state = copy.deepcopy(self.evaluated.state_dict())
        for epoch in range(self.config.epochs):
            if isinstance(train, ResampledDataset) and epoch > 0:
                train.resample(epoch)
            started = time.perf_counter()
            train_loss = self._train_epoch(train, epoch)
            seconds = time.perf_counter() - started
            self.evaluated.eval()
            val_metrics = evaluate(probabilities_of(self.evaluated), val, self.config.eval_batch_size)
            record = EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_auc=val_metrics["auc"],
                val_logloss=val_metrics["logloss"],
                val_hr_at_10=val_metrics.get("hr@10", float("nan")),
                lr=self.optimizer.param_groups[0]["lr"],
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
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(record.val_auc)
            elif self.scheduler is not None:
                self.scheduler.step()
        self.model.load_state_dict(best_state)
        self.model.eval()
        return history

    def _train_epoch(self, train: CTRDataset, epoch: int) -> float:
        self.model.train()
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        total, rows = 0.0, 0
        progress = tqdm(
            train.batches(self.config.batch_size, generator),
            total=train.num_batches(self.config.batch_size),
            desc=f"epoch {epoch}",
            disable=not self.config.progress,
            leave=False,
        )
        for features, labels in progress:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(features), labels)
            loss.backward()
            if self.config.grad_clip_norm > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm)
            self.optimizer.step()
            if self.averaged is not None:
                self.averaged.update_parameters(self.model)
            total += loss.item() * len(labels)
            rows += len(labels)
            progress.set_postfix(loss=f"{total / rows:.4f}")
        return total / max(rows, 1)
