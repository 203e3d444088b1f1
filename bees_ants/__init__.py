"""bees_ants: transfer learning from ImageNet backbones to your own image classes."""
__version__ = "0.1.0"
