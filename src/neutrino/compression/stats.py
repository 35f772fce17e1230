"""Running statistics of a linear layer's inputs over the calibration tokens, accumulated chunk by chunk
so that no layer's full activations are kept: token count, per-channel sum of squares, sum of |x| and
max |x|, optionally the Hessian 2/n X^T X and an evenly spaced subsample of rows.

The Hessian may count the first token of every calibration sample `sink_weight` times. That token is
the model's attention sink: every later token attends to it, so an error in its keys and values (and
in the massive activations the model builds on it, 500x the median token's norm in SmolLM2's layer 11)
reaches every position, while the plain Hessian gives it 1/seq_len of the weight. With the weight 1
the statistics are the plain GPTQ / SparseGPT ones.

With `cross` the inputs come in pairs: x, what the linear reads in the model being compressed, and
x_ref, what it reads at the same token in the uncompressed model; X^T X_ref is kept beside the Hessian
(same weighting), for solvers that fit the uncompressed model's outputs (GPTQ's `fp_target`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StatsSpec:
    """Which optional statistics to keep: the Hessian, and up to `max_rows` sampled rows."""

    hessian: bool = False
    max_rows: int = 0
    sink_weight: float = 1.0  # Hessian weight of each sample's first token (inputs [samples, seq, K])
    cross: bool = False  # also X^T X_ref, X_ref being the uncompressed model's inputs (needs the Hessian)


class InputStats:
    """Statistics of inputs x [T, K] fed to `add` chunk by chunk (`total_tokens` known up front)."""

    def __init__(self, in_features: int, spec: StatsSpec, total_tokens: int) -> None:
        k = in_features
        self.spec = spec
        self.tokens = 0
        self.sq_sum = torch.zeros(k, dtype=torch.float64)
        self.abs_sum = torch.zeros(k, dtype=torch.float64)
        self.abs_max = torch.zeros(k)
        self._xtx = torch.zeros(k, k) if spec.hessian else None
        self._xtr = torch.zeros(k, k) if spec.hessian and spec.cross else None
        self._weight = 0.0  # the Hessian's total token weight
        self._stride = max(1, -(-total_tokens // spec.max_rows)) if spec.max_rows else 0
        self._rows: list[torch.Tensor] = []

    @torch.no_grad()
    def add(self, x: torch.Tensor, x_ref: torch.Tensor | None = None) -> None:
        """Accumulate a chunk of inputs [samples, seq, K] (or [T, K]: no first tokens to weight), with
        the uncompressed model's inputs `x_ref` (same shape) when the spec keeps the cross term."""
        if (self._xtr is None) != (x_ref is None):
            raise ValueError("x_ref must be given exactly when the statistics keep the cross term")
        if self._xtx is not None and x.dim() == 3 and self.spec.sink_weight != 1.0:
            first = x[:, 0].detach().float()  # [samples, K]
            self._xtx.addmm_(first.T, first, alpha=self.spec.sink_weight - 1.0)
            if self._xtr is not None and x_ref is not None:
                self._xtr.addmm_(first.T, x_ref[:, 0].detach().float(), alpha=self.spec.sink_weight - 1.0)
            self._weight += (self.spec.sink_weight - 1.0) * first.shape[0]
        x = x.detach().reshape(-1, x.shape[-1]).float()  # [T, K]
        if self._stride:
            first = (-self.tokens) % self._stride
            self._rows.append(x[first :: self._stride].clone())
        self.tokens += x.shape[0]
        self.sq_sum += x.pow(2).sum(0, dtype=torch.float64)
        self.abs_sum += x.abs().sum(0, dtype=torch.float64)
        self.abs_max = torch.maximum(self.abs_max, x.abs().amax(0))
        if self._xtx is not None:
            self._xtx.addmm_(x.T, x)
            self._weight += x.shape[0]
        if self._xtr is not None and x_ref is not None:
            self._xtr.addmm_(x.T, x_ref.detach().reshape(-1, x.shape[-1]).float())

    @property
    def hessian(self) -> torch.Tensor:
        """2/n X^T X [K, K] (float32; n and X^T X count each first token `sink_weight` times)."""
        if self._xtx is None:
            raise RuntimeError("the Hessian was not collected")
        return self._xtx * (2.0 / max(self._weight, 1.0))

    @property
    def cross_hessian(self) -> torch.Tensor:
        """2/n X^T X_ref [K, K], weighted as `hessian` (rows: this model's inputs, columns: the reference's)."""
        if self._xtr is None:
            raise RuntimeError("the cross term was not collected")
        return self._xtr * (2.0 / max(self._weight, 1.0))

    @property
    def mean_abs(self) -> torch.Tensor:
        """Mean |x| per input channel [K]."""
        return (self.abs_sum / max(self.tokens, 1)).float()

    @property
    def rows(self) -> torch.Tensor:
        """The sampled rows [R, K]."""
        return torch.cat(self._rows) if self._rows else torch.zeros(0, self.sq_sum.shape[0])

    def scale_inputs(self, s: torch.Tensor) -> None:
        """Account for inputs divided by `s` [K] (after scales are folded into the previous op)."""
        s64 = s.double()
        self.sq_sum /= s64**2
        self.abs_sum /= s64
        self.abs_max = self.abs_max / s.float()
        self._rows = [r / s.float()[None, :] for r in self._rows]
        if self._xtx is not None:
            self._xtx /= s.float()[:, None] * s.float()[None, :]
        if self._xtr is not None:  # the reference model's inputs are not scaled
            self._xtr /= s.float()[:, None]
