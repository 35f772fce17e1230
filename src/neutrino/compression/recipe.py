"""Compression recipes: what `neutrino compress` does, from command-line flags or a YAML file.

A recipe has up to two steps, applied in this order to every decoder layer: `prune`, then
`quantize`, plus the `calibration` data and the module names to `skip`. YAML form (every key optional
except the methods; unknown keys are errors):

```yaml
prune:       {method: sparsegpt, sparsity: 0.5, pattern: null, damp: 0.01, block_size: 128}
quantize:    {method: gptq, bits: 4, group_size: 128, symmetric: true, damp: 0.01, act_order: true,
              mse: true, sink_weight: 64, fp_target: false}
calibration: {file: null, samples: 128, seq_len: 512}
skip: [lm_head, model.embed_tokens]
```

`skip` names the modules left dense (default: lm_head and the token embeddings; `[]` quantizes both).
lm_head and `model.embed_tokens` are always quantized round-to-nearest with the recipe's bits, group
size (along the hidden dimension) and symmetry: GPTQ/AWQ/SmoothQuant need the statistics of a linear
layer's inputs, which a lookup table has none of. When the embeddings are tied to lm_head and both are
quantized, one table is stored (`model.embed_tokens.*`) and serves both.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from neutrino.errors import ConfigError, InvalidParameterError

QUANT_METHODS = ("rtn", "gptq", "awq", "smoothquant")
PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt")
CALIBRATED_QUANT = ("gptq", "awq", "smoothquant")
CALIBRATED_PRUNE = ("wanda", "sparsegpt")
BITS = (3, 4, 8)
DEFAULT_SKIP = ("lm_head", "model.embed_tokens")  # dense unless a recipe lists fewer


@dataclass(frozen=True)
class QuantizeRecipe:
    """Weight quantization: `bits` (8, 4, 3), `group_size` (-1 = one group per output row)."""

    method: str = "rtn"
    bits: int | None = None  # None: 8 for smoothquant, else 4
    group_size: int | None = None  # None: -1 (per channel) at 8 bits, else 128 (64 or 32 if 128 does not fit)
    symmetric: bool = True
    damp: float = 0.01  # gptq: fraction of mean(diag(H)) added to the Hessian's diagonal
    act_order: bool = True  # gptq: columns by decreasing Hessian diagonal (groups fixed up front)
    block_size: int = 128  # gptq: lazy-batch block of columns
    mse: bool = True  # gptq: search each group's clipping range instead of using its min and max
    sink_weight: float = 64.0  # gptq: Hessian weight of each calibration sample's first token (1 = plain)
    fp_target: bool = False  # gptq: fit the uncompressed model's layer outputs (GPTAQ), not this model's
    hessian_mse: bool = True  # gptq: the range search weights each column's error by its Hessian diagonal
    alpha: float = 0.5  # smoothquant: migration strength
    grid: int = 20  # awq: number of scale exponents tried in [0, 1)
    clip: bool = True  # awq: also search a per-group clipping ratio
    max_rows: int = 4096  # awq: calibration rows kept per linear for the scale search

    def resolved(self) -> QuantizeRecipe:
        """A copy with `bits` and `group_size` defaults filled in."""
        bits = self.bits if self.bits is not None else (8 if self.method == "smoothquant" else 4)
        group = self.group_size if self.group_size is not None else (-1 if bits == 8 else 128)
        return replace(self, bits=bits, group_size=group)

    def validate(self) -> None:
        _choice("quantize.method", self.method, QUANT_METHODS)
        r = self.resolved()
        if isinstance(r.bits, bool) or r.bits not in BITS:
            raise InvalidParameterError("quantize.bits", f"expected one of {BITS}, got {r.bits!r}")
        if isinstance(r.group_size, bool) or not isinstance(r.group_size, int) or (
            r.group_size != -1 and r.group_size < 2
        ):
            raise InvalidParameterError("quantize.group_size", f"expected -1 (per channel) or an integer >= 2, "
                                        f"got {r.group_size!r}")
        if r.method == "smoothquant" and (r.bits != 8 or r.group_size != -1 or not r.symmetric):
            raise InvalidParameterError("quantize.method", "smoothquant is W8A8: needs bits 8, group_size -1 and "
                                        f"symmetric, got bits {r.bits}, group_size {r.group_size}, "
                                        f"symmetric {r.symmetric}")
        _number("quantize.damp", self.damp, 0.0, 1.0, low_open=True)
        _number("quantize.alpha", self.alpha, 0.0, 1.0)
        _number("quantize.sink_weight", self.sink_weight, 1.0, 1e6)
        _integer("quantize.block_size", self.block_size, 1)
        _integer("quantize.grid", self.grid, 1)
        _integer("quantize.max_rows", self.max_rows, 16)
        for name in ("symmetric", "act_order", "clip", "mse", "fp_target", "hessian_mse"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidParameterError(f"quantize.{name}", f"expected true or false, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class PruneRecipe:
    """Pruning to `sparsity` (fraction of zeros in [0, 1)), unstructured or with an N:M `pattern`
    ("2:4": at most 2 non-zeros in every 4 consecutive input weights)."""

    method: str = "magnitude"
    sparsity: float | None = None  # None: 0.5, or (M - N) / M with a pattern
    pattern: str | None = None
    damp: float = 0.01  # sparsegpt
    block_size: int = 128  # sparsegpt: columns per mask-selection block

    def nm(self) -> tuple[int, int] | None:
        """(N, M) of the pattern, or None when unstructured."""
        if self.pattern is None:
            return None
        parts = str(self.pattern).split(":")
        try:
            n, m = int(parts[0]), int(parts[1])
            if len(parts) != 2 or not 0 < n < m:
                raise ValueError
        except (ValueError, IndexError):
            raise InvalidParameterError("prune.pattern", f"expected 'N:M' with 0 < N < M (e.g. '2:4'), got "
                                        f"{self.pattern!r}") from None
        return n, m

    def target(self) -> float:
        """The target fraction of zeros."""
        nm = self.nm()
        if self.sparsity is not None:
            return float(self.sparsity)
        return 0.5 if nm is None else (nm[1] - nm[0]) / nm[1]

    def validate(self) -> None:
        _choice("prune.method", self.method, PRUNE_METHODS)
        if self.sparsity is not None:
            _number("prune.sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        nm = self.nm()
        if nm is not None and self.sparsity is not None and abs(self.sparsity - (nm[1] - nm[0]) / nm[1]) > 1e-9:
            raise InvalidParameterError("prune.sparsity", f"{self.sparsity} contradicts pattern {self.pattern} "
                                        f"(which means sparsity {(nm[1] - nm[0]) / nm[1]}); give one of them")
        _number("prune.damp", self.damp, 0.0, 1.0, low_open=True)
        _integer("prune.block_size", self.block_size, 1)


@dataclass(frozen=True)
class CalibrationRecipe:
    """Calibration text: `file` (None: gensim's lee_background.cor), `samples` x `seq_len` tokens."""

    file: str | None = None
    samples: int = 128
    seq_len: int = 512

    def validate(self) -> None:
        _integer("calibration.samples", self.samples, 1)
        _integer("calibration.seq_len", self.seq_len, 2)
        if self.file is not None and not isinstance(self.file, (str, os.PathLike)):
            raise InvalidParameterError("calibration.file", f"expected a path, got {self.file!r}")


@dataclass(frozen=True)
class Recipe:
    """A full compression recipe: prune (optional) then quantize (optional); at least one is set."""

    quantize: QuantizeRecipe | None = None
    prune: PruneRecipe | None = None
    calibration: CalibrationRecipe = field(default_factory=CalibrationRecipe)
    skip: tuple[str, ...] = DEFAULT_SKIP

    def validate(self) -> Recipe:
        """Check every value; returns self. Raises InvalidParameterError naming the bad key."""
        if self.quantize is None and self.prune is None:
            raise InvalidParameterError("recipe", "nothing to do: give a quantize method and/or a prune method")
        if self.quantize is not None:
            self.quantize.validate()
        if self.prune is not None:
            self.prune.validate()
        self.calibration.validate()
        if isinstance(self.skip, str) or not all(isinstance(s, str) and s for s in self.skip):
            raise InvalidParameterError("skip", f"expected a list of module names, got {self.skip!r}")
        return self

    @property
    def needs_calibration(self) -> bool:
        """Whether any step needs calibration activations (RTN and magnitude do not)."""
        q = self.quantize is not None and self.quantize.method in CALIBRATED_QUANT
        return q or (self.prune is not None and self.prune.method in CALIBRATED_PRUNE)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for recipe.yaml, with defaults resolved."""
        d: dict[str, Any] = {}
        if self.prune is not None:
            d["prune"] = {**asdict(self.prune), "sparsity": self.prune.target()}
        if self.quantize is not None:
            d["quantize"] = asdict(self.quantize.resolved())
        d["calibration"] = asdict(self.calibration)
        d["skip"] = list(self.skip)
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "recipe") -> Recipe:
        """Build and validate a recipe from parsed YAML; unknown keys raise ConfigError listing valid ones."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping with keys {_RECIPE_KEYS}, got {type(d).__name__}")
        _check_keys(d, _RECIPE_KEYS, source)
        skip = d.get("skip", list(DEFAULT_SKIP))
        if skip is None:
            skip = []
        if isinstance(skip, str) or not isinstance(skip, list):
            raise InvalidParameterError("skip", f"expected a list of module names, got {skip!r}")
        return cls(
            quantize=_section(QuantizeRecipe, d.get("quantize"), f"{source}: quantize"),
            prune=_section(PruneRecipe, d.get("prune"), f"{source}: prune"),
            calibration=_section(CalibrationRecipe, d.get("calibration") or {}, f"{source}: calibration"),
            skip=tuple(skip),
        ).validate()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read a recipe YAML file."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the recipe ({e})") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        return cls.from_dict(data or {}, str(path))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_RECIPE_KEYS = ("quantize", "prune", "calibration", "skip", "produced")  # produced: informational, ignored


def _section(cls: type, data: Any, source: str) -> Any:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {data!r}")
    valid = tuple(f.name for f in fields(cls))
    _check_keys(data, valid, source)
    if cls is not CalibrationRecipe and "method" not in data:
        raise ConfigError(f"{source}: 'method' is required")
    return cls(**data)


def _check_keys(data: dict, valid: tuple[str, ...], source: str) -> None:
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidParameterError(name, f"expected one of {', '.join(choices)}, got {value!r}")


def _integer(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidParameterError(name, f"expected an integer >= {low}, got {value!r}")


def _number(name: str, value: Any, low: float, high: float, low_open: bool = False,
            high_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise InvalidParameterError(name, f"expected a number in {interval}, got {value!r}")
