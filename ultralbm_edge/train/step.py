"""One training step (forward, loss, backward, optimiser step), run eagerly or recorded once as a CUDA graph.

Why a graph: at the paper's batch of 8 the GPU step is launch-bound: the network's 0.03 M parameters are spread over
hundreds of small kernels, and an H100 trained at 189 images/s eagerly (benchmarks/results/train_speed_h100.json).
Replaying the recorded step removes the per-kernel CPU cost. A replay runs the kernels the eager step runs, in the same
order; the only differences are those between two eager runs, whose backward kernels accumulate in no fixed order
(tests/test_gpu.py: recorded vs eager within that spread).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Step = Callable[[Tensor, Tensor], Tensor]  # (images, masks) -> the loss, detached; the parameters updated


def prepare_optimizer_for_graph(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Let a recorded step follow the learning-rate schedule and keep its state on the GPU: the learning rate becomes a
    device tensor that the scheduler fills in place (a Python float would be frozen into the graph), and the step
    counters move to the device (``capturable``). Call after any ``load_state_dict`` (a resumed state brings floats)."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
    for state in optimizer.state.values():
        if isinstance(state.get("step"), Tensor):
            state["step"] = state["step"].to(device=device, dtype=torch.float32)


def portable_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser's state_dict as an eager run would write it (learning rate a float, not capturable), so that a
    run recorded on a GPU resumes anywhere, a CPU included."""
    state = optimizer.state_dict()
    state["param_groups"] = [{**group, "lr": float(group["lr"]), "capturable": False} for group in state["param_groups"]]
    return state


class GraphedStep:
    """Runs ``step`` eagerly for ``warmup`` batches, then records it as a CUDA graph and replays it for every batch of
    the recorded shape. Warm-up batches are real training steps, so the sequence of updates is the eager one. A batch
    of another shape (a split smaller than the batch size) runs eagerly."""

    def __init__(self, step: Step, warmup: int = 3) -> None:
        self._step = step
        self._warmup = warmup
        self._graph: torch.cuda.CUDAGraph | None = None
        self._x: Tensor | None = None
        self._y: Tensor | None = None
        self._loss: Tensor | None = None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self._x is None or self._y is None:
            self._x, self._y = torch.empty_like(x), torch.empty_like(y)  # the graph's fixed input addresses
        if x.shape != self._x.shape or y.shape != self._y.shape:
            return self._step(x, y)
        self._x.copy_(x)
        self._y.copy_(y)
        if self._graph is None:
            if self._warmup > 0:
                # On a side stream, as recording requires: Triton compiles, cuBLAS picks its algorithms and AdamW
                # creates its state before anything is recorded.
                self._warmup -= 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    loss = self._step(self._x, self._y)
                torch.cuda.current_stream().wait_stream(side)
                return loss
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._loss = self._step(self._x, self._y)
            self._graph = graph
        self._graph.replay()  # recording runs nothing: this batch, too, is trained by the replay
        assert self._loss is not None
        return self._loss.clone()  # the recorded loss tensor is overwritten by the next replay
