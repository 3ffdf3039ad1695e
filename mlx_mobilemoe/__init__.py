"""mlx-mobilemoe: MobileMoE sparse Mixture-of-Experts LLMs in MLX."""

from .checkpoint import load, load_model, save
from .config import ModelArgs, preset
from .model import Model

__all__ = ["load", "load_model", "save", "Model", "ModelArgs", "preset"]
__version__ = "0.1.0"
