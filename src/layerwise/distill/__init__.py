"""Healing: contiguous layer distillation, logit KD and fine-tuning on one accelerate driver."""
from .driver import TrainConfig, train
from .losses import align_loss, kd_loss
from .modules import IntervalStudents, LMFinetune, LogitKD, interval_key

__all__ = ["TrainConfig", "train", "align_loss", "kd_loss", "IntervalStudents", "LMFinetune", "LogitKD",
           "interval_key"]
