"""A `gguf.GGUFReader` whose metadata arrays are parsed in one pass instead of one numpy view per element.

gguf's reader builds two views for every string of an array and one for every number: SmolLM2's vocabulary,
merges and token types (~147K elements) took 4.9 s of the 5 s the reader needed (2-vCPU AMD EPYC,
2026-12-07), on every load of a GGUF file. Here a numeric array is one view of all its values and a
string array finds its elements' offsets with a plain loop over their lengths and makes an element's views
only when it is read. Fields read through `ReaderField.contents()` give what gguf's own reader gives, as do
the tensors; `len(field.data)` is still the element count of a string array (1 for a numeric array, whose
`contents()` is the whole list)."""

from __future__ import annotations

import sys
from typing import Any, Literal

import gguf
import numpy as np
from gguf.constants import GGUFValueType
from gguf.gguf_reader import ReaderField


class _LazyStringParts:
    """The parts list of a string-array field: `head` (key and type parts) then, per element, its length
    and its bytes as views, made on first access."""

    def __init__(self, reader: gguf.GGUFReader, head: list[Any], offsets: list[int]) -> None:
        self._reader, self._head, self._offsets = reader, head, offsets

    def __len__(self) -> int:
        return len(self._head) + 2 * len(self._offsets)

    def __getitem__(self, i: int) -> Any:
        if i < 0:
            i += len(self)
        if i < len(self._head):
            return self._head[i]
        element, kind = divmod(i - len(self._head), 2)
        slen, data = self._reader._get_str(self._offsets[element])
        return data if kind else slen


class FastGGUFReader(gguf.GGUFReader):
    def _build_fields(self, offs: int, count: int) -> int:
        for _ in range(count):
            start = offs
            klen, kdata = self._get_str(offs)
            offs += int(klen.nbytes + kdata.nbytes)
            raw_type = self._get(offs, np.uint32)
            offs += int(raw_type.nbytes)
            name = str(bytes(kdata), encoding="utf-8")
            if GGUFValueType(raw_type[0]) != GGUFValueType.ARRAY:
                size, parts, idxs, types = self._get_field_parts(offs, raw_type[0])
                field = ReaderField(start, name, [klen, kdata, raw_type, *parts], [i + 3 for i in idxs], types)
                offs += size
            else:
                field, offs = self._array_field(start, name, [klen, kdata, raw_type], offs)
            self._push_field(field, skip_sum=True)
        return offs

    def _array_field(self, start: int, name: str, head: list[Any], offs: int) -> tuple[ReaderField, int]:
        array_start = offs
        itype = self._get(offs, np.uint32)
        alen = self._get(offs + 4, np.uint64)
        offs += 12
        n, sub = int(alen[0]), GGUFValueType(itype[0])
        if sub == GGUFValueType.STRING:
            offsets = []
            raw, order = memoryview(self.data), self._int_order()  # type: ignore[arg-type]  # a memmap is a buffer
            if n * 8 > len(raw) - offs:
                raise ValueError(f"{name}: {n} strings do not fit in the file")
            for _ in range(n):
                offsets.append(offs)
                offs += 8 + int.from_bytes(raw[offs:offs + 8], order)
                if offs > len(raw):
                    raise ValueError(f"{name}: a string runs past the end of the file")
            head = [*head, itype, alen]
            data = list(range(len(head) + 1, len(head) + 2 * n, 2))
            lazy = _LazyStringParts(self, head, offsets)
            return ReaderField(start, name, lazy, data, [GGUFValueType.ARRAY, sub]), offs  # type: ignore[arg-type]
        nptype = self.gguf_scalar_to_np.get(sub)
        if nptype is None:  # arrays of arrays: gguf's own element-by-element parse
            size, parts, idxs, types = self._get_field_parts(array_start, GGUFValueType.ARRAY)
            return ReaderField(start, name, [*head, *parts], [i + len(head) for i in idxs], types), array_start + size
        values = self._get(offs, nptype, n)
        if values.size != n:
            raise ValueError(f"{name}: {n} values do not fit in the file")
        head = [*head, itype, alen]
        data = [len(head)] if n else []
        return ReaderField(start, name, [*head, values], data, [GGUFValueType.ARRAY, sub]), offs + int(values.nbytes)

    def _int_order(self) -> Literal["little", "big"]:
        """The byte order of the file's integers ('I': the host's; 'S': swapped)."""
        if self.byte_order == "I":
            return "little" if sys.byteorder == "little" else "big"
        return "big" if sys.byteorder == "little" else "little"
