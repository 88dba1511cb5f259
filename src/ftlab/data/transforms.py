"""Resize/crop/normalise exactly as a backbone's weights expect, on one image or on a batch."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ftlab.data.preprocessing import Preprocessing


def resize_and_crop(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Geometry of the weights' recipe for (..., C, H, W) images of one size.

    Images already at the crop size pass through. A source smaller than the crop (CIFAR's 32x32 for a
    224 crop) is resized whole to the crop, since cropping an upscaled thumbnail would cut off content;
    larger images get the usual resize of the short side, then a centre crop.
    """
    crop = prep.crop_size
    height, width = images.shape[-2:]
    if height == crop and width == crop:
        return images
    mode = InterpolationMode(prep.interpolation)
    if min(height, width) < crop:
        return F.resize(images, [crop, crop], interpolation=mode, antialias=True)
    images = F.resize(images, [prep.resize_size], interpolation=mode, antialias=True)
    return F.center_crop(images, [crop, crop])


def normalize(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 (or [0, 1] float) images to float32 normalised with the weights' mean and std."""
    images = F.to_dtype(images, torch.float32, scale=True)
    return F.normalize(images, list(prep.mean), list(prep.std))


def preprocess(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 images of any size to the normalised float tensors the backbone takes."""
    if prep.interpolation != "nearest":  # interpolate in float: bicubic on uint8 rounds twice
        images = F.to_dtype(images, torch.float32, scale=True)
    return normalize(resize_and_crop(images, prep), prep)
