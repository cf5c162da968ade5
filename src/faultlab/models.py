"""Small reference models: the demo CNN, a branching CNN and a CIFAR-shaped ResNet-20.

Use them as ``--model faultlab.models:digits_cnn`` with ``--weights``; the demo trains and
caches the digits CNN's weights (``faultlab.models:pretrained_digits_cnn`` loads them).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A small sequential CNN for 8x8 digits: conv-relu-conv-relu-pool-fc-relu-fc."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(32, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))


class BranchyCNN(nn.Module):
    """A branching CNN for 8x8 digits: a residual add and a channel concatenation."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.relu0 = nn.ReLU()
        self.res_conv = nn.Conv2d(8, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.branch_a = nn.Conv2d(8, 4, 1)
        self.branch_b = nn.Conv2d(8, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(8 * 2 * 2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu0(self.stem(x))
        h = self.relu1(h + self.res_conv(h))
        h = torch.cat([self.branch_a(h), self.branch_b(h)], dim=1)
        h = self.pool(self.bn(h))
        return self.fc(torch.flatten(h, 1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20 (3x32x32 inputs, 0.27 M parameters)."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        layers = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for b in range(3):
                blocks.append(_BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def digits_cnn() -> DigitsCNN:
    return DigitsCNN()


def branchy_cnn() -> BranchyCNN:
    return BranchyCNN()


def resnet20() -> ResNet20:
    return ResNet20()


def cache_dir() -> Path:
    """Where trained demo weights are cached (``$FAULTLAB_CACHE``, default ``~/.cache/faultlab``)."""
    d = Path(os.environ.get("FAULTLAB_CACHE", Path.home() / ".cache" / "faultlab"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 30, lr: float = 3e-3, batch_size: int = 64, seed: int = 0) -> nn.Module:
    """Plain Adam + cross-entropy training, seeded; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def pretrained_digits_path(seed: int = 0) -> Path:
    """Where :func:`pretrained_digits_cnn` caches its weights (a ``state_dict``; pass it to ``--weights``).

    "v2": trained on one thread. CPU kernels split their sums by thread count, so two threads
    train other weights, and whichever process trained first (a CLI run, a one-thread worker)
    used to decide the demo model; caches from then have the old name and are not read.
    """
    return cache_dir() / f"digits_cnn_v2_seed{seed}.pt"


def pretrained_digits_cnn(*, seed: int = 0, retrain: bool = False) -> DigitsCNN:
    """The demo CNN trained on the digits training split (on one thread, so the same weights everywhere), cached at :func:`pretrained_digits_path`."""
    from .datasets import load_digits

    path = pretrained_digits_path(seed)
    model = DigitsCNN()
    if path.exists() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    torch.manual_seed(seed)
    model = DigitsCNN()
    train = load_digits("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_classifier(model, torch.as_tensor(train.x), torch.as_tensor(train.y), seed=seed)
    finally:
        torch.set_num_threads(threads)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


__all__ = ["DigitsCNN", "BranchyCNN", "ResNet20", "digits_cnn", "branchy_cnn", "resnet20", "pretrained_digits_cnn", "pretrained_digits_path", "train_classifier", "cache_dir"]
