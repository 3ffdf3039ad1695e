"""mlx-mobilemoe: MobileMoE sparse Mixture-of-Experts LLMs in MLX."""

from .checkpoint import load, save
from .config import ModelArgs, preset
from .model import Model

__all__ = ["load", "save", "Model", "ModelArgs", "preset"]
__version__ = "0.1.0"
