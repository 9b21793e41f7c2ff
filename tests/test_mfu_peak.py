"""The CPU's float32 peak in benchmarks/mfu.py: the arithmetic, from /proc/cpuinfo's fields."""

import pytest

from benchmarks import mfu


def cpuinfo(tmp_path, *, vendor: str, family: int, flags: str, mhz: float = 2600.0):
    path = tmp_path / "cpuinfo"
    processor = (f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 17\n"
                 f"cpu MHz\t\t: {mhz}\nflags\t\t: fpu sse2 avx avx2 fma {flags}\n\n")
    path.write_text(processor * 2)
    return str(path)


@pytest.mark.parametrize("vendor, family, flags, bits", [
    ("AuthenticAMD", 25, "avx512f avx512_bf16", 256),   # Zen 4: AVX-512 on 256-bit units
    ("AuthenticAMD", 25, "", 256),                      # Zen 3
    ("AuthenticAMD", 26, "avx512f", 512),               # Zen 5
    ("GenuineIntel", 6, "avx512f", 512),
    ("GenuineIntel", 6, "", 256),
])
def test_peak_counts_the_fma_units_width_not_the_instruction_set(tmp_path, vendor, family, flags, bits):
    peak = mfu.cpu_peak(cores=2, cpuinfo=cpuinfo(tmp_path, vendor=vendor, family=family, flags=flags))
    assert peak["fma_bits"] == bits
    # 2 cores x 2.6 GHz x (2 units x bits / 32 lanes x 2 FLOPs): 166.4 GFLOP/s at 256 bits, 332.8 at 512.
    assert peak["flops_per_s"] == pytest.approx(2 * 2.6e9 * 2 * (bits // 32) * 2)


def test_a_matmul_above_the_peak_names_the_clock_it_implies(tmp_path):
    peak = mfu.cpu_peak(cores=2, cpuinfo=cpuinfo(tmp_path, vendor="AuthenticAMD", family=25, flags="avx512f"))
    assert mfu.above_peak_note(150e9, peak) == ""  # below 166.4 GFLOP/s: nothing to say
    # 204.8 GFLOP/s over 2 cores x 32 FLOPs per cycle: at least 3.2 GHz.
    assert "at 3.20 GHz or more" in mfu.above_peak_note(204.8e9, peak)
