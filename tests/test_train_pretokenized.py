"""mtmoe.train_pretokenized: params parts round trip (bfloat16, split under the device tool's file limit)."""

import numpy as np

from mtmoe import train_pretokenized


def test_params_parts_round_trip_in_bfloat16(tmp_path, monkeypatch):
    monkeypatch.setattr(train_pretokenized, "PART_BYTES", 100)  # force several parts
    params = {"encoder": {"kernel": np.arange(70, dtype=np.float32).reshape(7, 10) / 3},
              "decoder": {"scale": np.linspace(-2, 2, 5, dtype=np.float32)}}
    paths = train_pretokenized.save_params(params, str(tmp_path))
    assert len(paths) > 1 and all((tmp_path / p).stat().st_size <= 100 for p in paths)
    restored = train_pretokenized.load_params(str(tmp_path))
    assert str(restored["encoder"]["kernel"].dtype) == "bfloat16"
    kernel = restored["encoder"]["kernel"].astype(np.float32)
    np.testing.assert_allclose(kernel, params["encoder"]["kernel"], rtol=2 ** -8)
    np.testing.assert_allclose(restored["decoder"]["scale"].astype(np.float32), params["decoder"]["scale"], rtol=2 ** -8)
