"""Reinforcement-learning alignment of flow generators: GRPO and BranchGRPO on one trainer.

`layerwise rl MODEL --algo grpo|branchgrpo --reward NAME` (CLI) and `layerwise.rl.train` (API) share
this code: `sampler` (SDE steps with exact log-probabilities), `tree` (rollout forests, reward
fusion, advantages, pruning), `grpo` / `branchgrpo` (the registered algorithms), `rewards`, `trainer`.
"""
from . import branchgrpo, grpo  # noqa: F401  (register the algorithms)
from .algorithm import RL_ALGORITHMS, RLAlgorithm
from .rewards import REWARDS, Reward
from .sampler import Sampler
from .trainer import RLConfig, RLResult, evaluate, train

__all__ = ["RL_ALGORITHMS", "RLAlgorithm", "REWARDS", "Reward", "Sampler", "RLConfig", "RLResult", "evaluate",
           "train"]
