"""`FastGGUFReader` (metadata arrays parsed in one pass) against gguf's own reader: every field's type and
contents, a string array's length and elements, and every tensor's type, shape, offset and data."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from neutrino.weights.gguf_reader import FastGGUFReader


def assert_same(path) -> None:
    ref, fast = gguf.GGUFReader(path), FastGGUFReader(path)
    assert list(fast.fields) == list(ref.fields)
    for key, want in ref.fields.items():
        got = fast.fields[key]
        assert got.types == want.types, key
        a, b = want.contents(), got.contents()
        assert (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b), key
        if want.types[:1] == [gguf.GGUFValueType.ARRAY] and want.types[-1] == gguf.GGUFValueType.STRING:
            assert len(got.data) == len(want.data), key
            for i in {0, len(want.data) // 2, len(want.data) - 1} if want.data else ():
                assert got.contents(i) == want.contents(i), (key, i)
    assert [(t.name, t.tensor_type, list(t.shape), t.data_offset) for t in fast.tensors] == \
        [(t.name, t.tensor_type, list(t.shape), t.data_offset) for t in ref.tensors]
    for t_fast, t_ref in zip(fast.tensors, ref.tensors, strict=True):
        assert np.array_equal(np.asarray(t_fast.data), np.asarray(t_ref.data)), t_ref.name


def test_packaged_smollm2(smollm2_gguf) -> None:
    assert_same(smollm2_gguf)


@pytest.mark.parametrize("order", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_arrays_of_every_kind(tmp_path, order) -> None:
    path = tmp_path / "arrays.gguf"
    w = gguf.GGUFWriter(str(path), "llama", endianess=order)
    w.add_array("t.strings", ["a", "", "ünï ✓", "x" * 300])
    w.add_array("t.empty_strings", [])
    w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.floats", [0.5, 1.25])
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_string("t.name", "tiny")
    w.add_uint32("t.count", 7)
    w.add_tensor("w", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert_same(path)


@pytest.mark.parametrize("cut", [0.5, 0.8])
def test_a_truncated_file_is_an_error_naming_it(tmp_path, cut) -> None:
    """A file cut inside its metadata arrays is a CheckpointError naming the file (not a hang on an
    element count that no longer fits, not silently shorter arrays)."""
    from neutrino.errors import CheckpointError
    from neutrino.weights.gguf_loader import open_gguf

    path = tmp_path / "cut.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("t.strings", [f"token-{i}" for i in range(2000)])
    w.add_array("t.ints", list(range(2000)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError, match="cut.gguf.*not a valid GGUF file"):
        open_gguf(path)
