"""The ELF network of the paper and its checkpoint: features → ELF in (0, 1) at each grid point.

An :class:`ElfModel` is an ensemble of one or more MLPs (165 → 128 → 128 → 1, SiLU, sigmoid) that
share the descriptor parameters and the feature standardisation; it predicts the ensemble mean and
the per-point spread. A checkpoint is one ``torch.save`` file of plain tensors and numbers (loaded
with ``weights_only=True``) carrying everything the descriptor note asks for: descriptor parameters,
feature mean/std, network shape, training data identity, held-out metrics and the model version.
Loading a checkpoint whose descriptor parameters differ from the ones asked for is an error.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from elfscreen.model.descriptor import PAPER_V1, DescriptorParams

CHECKPOINT_FORMAT = "elfscreen-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint cannot be used (wrong format, or descriptor parameters that differ)."""


class ElfNet(nn.Module):
    """MLP on standardised features: Linear → SiLU → … → Linear → sigmoid."""

    def __init__(self, n_features: int = 165, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)
        self.hidden = tuple(hidden)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


@dataclass
class ElfModel:
    """An ensemble of :class:`ElfNet` members with their descriptor and feature standardisation."""

    descriptor: DescriptorParams
    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    members: list[ElfNet]
    model_version: str = "untrained"
    meta: dict = field(default_factory=dict)

    @classmethod
    def untrained(cls, descriptor: DescriptorParams = PAPER_V1, n_members: int = 1, seed: int = 0,
                  hidden: tuple[int, ...] = (128, 128)) -> "ElfModel":
        """Freshly initialised members (seeds ``seed``, ``seed + 1``, …) with identity standardisation."""
        members = []
        for k in range(n_members):
            torch.manual_seed(seed + k)
            members.append(ElfNet(descriptor.n_features, hidden))
        n = descriptor.n_features
        return cls(descriptor, torch.zeros(n), torch.ones(n), members)

    @property
    def device(self) -> torch.device:
        return next(self.members[0].parameters()).device

    def to(self, device: str | torch.device) -> "ElfModel":
        for m in self.members:
            m.to(device)
        self.feature_mean = self.feature_mean.to(device)
        self.feature_std = self.feature_std.to(device)
        return self

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ELF mean and ensemble standard deviation (population; 0 for one member) per row of raw features."""
        x = self.standardise(features.to(self.device))
        outs = torch.stack([m.eval()(x) for m in self.members])
        return outs.mean(0), outs.std(0, unbiased=False)

    def save(self, path: str | Path, half: bool = False) -> Path:
        """Write the checkpoint; ``half`` stores the weights as float16 (they are used as float32)."""
        path = Path(path)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "model_version": self.model_version,
            "descriptor": self.descriptor.to_dict(),
            "feature_mean": self.feature_mean.detach().cpu().float(),
            "feature_std": self.feature_std.detach().cpu().float(),
            "network": {"n_features": self.descriptor.n_features, "hidden": list(self.members[0].hidden),
                        "activation": "silu", "output": "sigmoid"},
            "members": [{k: (v.detach().cpu().half() if half else v.detach().cpu()) for k, v in m.state_dict().items()}
                        for m in self.members],
            "meta": self.meta,
        }
        torch.save(payload, path)
        return path

    @classmethod
    def load(cls, path: str | Path, descriptor: DescriptorParams | None = None,
             device: str | torch.device = "cpu") -> "ElfModel":
        """Load a checkpoint; with ``descriptor`` given, refuse one built on other descriptor parameters."""
        path = Path(path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path.name}: not a readable elfscreen checkpoint ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path.name}: not an elfscreen checkpoint (format {CHECKPOINT_FORMAT} expected)")
        stored = DescriptorParams.from_dict(payload["descriptor"])
        if descriptor is not None and _descriptor_key(stored) != _descriptor_key(descriptor):
            raise CheckpointError(
                f"{path.name}: trained with descriptor {stored.to_dict()}, but {descriptor.to_dict()} was requested")
        net = payload["network"]
        members = []
        for state in payload["members"]:
            m = ElfNet(int(net["n_features"]), tuple(net["hidden"]))
            m.load_state_dict({k: v.float() for k, v in state.items()})
            members.append(m)
        model = cls(stored, payload["feature_mean"].float(), payload["feature_std"].float(), members,
                    str(payload["model_version"]), dict(payload.get("meta", {})))
        return model.to(device)


def _descriptor_key(p: DescriptorParams) -> tuple:
    """What must match between a checkpoint and the descriptor asked for (the name is a label only;
    the embedding tells a species-aware descriptor from paper-v1)."""
    return (round(p.r_cut_a, 9), p.n_radial, p.l_max, round(p.sigma, 9), tuple(p.species), tuple(p.embedding), p.kernel)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
