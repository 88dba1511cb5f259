"""ftlab: fine-tune pretrained torchvision classifiers with Lightning and Hydra."""

__version__ = "0.1.0"
