"""Training losses, as the authors define them: BCE + Dice for training, and the hybrid distillation loss (§3.6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BceDiceLoss(nn.Module):
    """BCE on probabilities plus (1 - soft Dice with smoothing 1, averaged over the batch), weights 1:1."""

    def forward(self, prob: Tensor, target: Tensor) -> Tensor:
        n = prob.shape[0]
        p, t = prob.reshape(n, -1), target.reshape(n, -1)
        bce = F.binary_cross_entropy(p, t)
        dice = (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
        return bce + 1 - dice.mean()


class HybridDistillationLoss(nn.Module):
    """Hard BCE+Dice, decoupled KL over foreground/background probabilities, Sobel gradient-magnitude matching and
    spatial attention transfer (softmax over pixels at ``attention_temperature``), with the authors' weights.

    As in the authors' code, the decoupled KL is scaled by 8 and ``temperature`` is recorded but not applied.
    """

    def __init__(
        self,
        hard: float = 1.0,
        soft: float = 0.5,
        gradient: float = 0.3,
        attention: float = 0.2,
        temperature: float = 3.0,
        attention_temperature: float = 0.5,
    ) -> None:
        super().__init__()
        self.weights = {"hard": hard, "soft": soft, "gradient": gradient, "attention": attention}
        self.temperature = temperature
        self.attention_temperature = attention_temperature
        self.hard = BceDiceLoss()
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
        self.register_buffer("sobel_x", sobel_x)
        self.register_buffer("sobel_y", sobel_x.transpose(2, 3).contiguous())

    def decoupled_kl(self, student: Tensor, teacher: Tensor, eps: float = 1e-6) -> Tensor:
        s = student.clamp(eps, 1 - eps)
        t = teacher.clamp(eps, 1 - eps)
        kl = t * (t.log() - s.log()) + (1 - t) * ((1 - t).log() - (1 - s).log())
        return 8.0 * torch.nan_to_num(kl, nan=0.0, posinf=0.0, neginf=0.0).mean()

    def gradient_matching(self, student: Tensor, teacher: Tensor) -> Tensor:
        def magnitude(x: Tensor) -> Tensor:
            gx = F.conv2d(x, self.sobel_x, padding=1)
            gy = F.conv2d(x, self.sobel_y, padding=1)
            return torch.sqrt(gx**2 + gy**2 + 1e-8)

        return F.mse_loss(magnitude(student), magnitude(teacher))

    def attention_transfer(self, student: Tensor, teacher: Tensor) -> Tensor:
        n = student.shape[0]
        s = F.log_softmax(student.reshape(n, -1) / self.attention_temperature, dim=1)
        t = F.softmax(teacher.reshape(n, -1) / self.attention_temperature, dim=1)
        return F.kl_div(s, t, reduction="batchmean")

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        teacher = teacher.detach()
        parts = {
            "hard": self.hard(student, target),
            "soft": self.decoupled_kl(student, teacher),
            "gradient": self.gradient_matching(student, teacher),
            "attention": self.attention_transfer(student, teacher),
        }
        total = sum(self.weights[k] * torch.nan_to_num(v, nan=0.0) for k, v in parts.items())
        # The parts stay tensors: reading them on the CPU would stop a step recorded as a CUDA graph.
        return total, {k: v.detach() for k, v in parts.items()}
