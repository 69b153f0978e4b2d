"""The policy of RL alignment is the generator's velocity field (`models.velocity`)."""
from ..models.velocity import Velocity, forward_chunks, num_conditions, sample_shape, velocity

__all__ = ["Velocity", "forward_chunks", "num_conditions", "sample_shape", "velocity"]
