"""A small 2-D CNN on scikit-learn's 8x8 digits as images: a task the search's prior was not
chosen on (``digits_cnn.toml``)."""

from __future__ import annotations

import torch
from torch import nn


def model(input_shape, n_outputs, channels=(16, 32)):
    """Two 3x3 convolutions with ReLU, a 2x2 max-pool after each, then a linear head."""
    c_in, height, width = input_shape
    layers, c = [], c_in
    for c_out in channels:
        layers += [nn.Conv2d(c, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = c_out
    size = (height // 2 ** len(channels)) * (width // 2 ** len(channels))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * size, n_outputs))


if __name__ == "__main__":
    print(model((1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape)
