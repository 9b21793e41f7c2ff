"""benchmarks/harness.py: counting what a first run compiled, from the cache it filled."""

from benchmarks import harness


def test_compiled_searches_counts_the_beam_search_executables_only(tmp_path):
    # JAX names a cache entry after the jitted function and a hash of the program, in two files:
    # the executable (-cache) and its last access time (-atime).
    for program in ("jit_predict_batch-1f2e", "jit_predict_batch-9a8b", "jit_stage-77aa", "jit_convert_element_type-0c"):
        for suffix in ("-cache", "-atime"):
            (tmp_path / (program + suffix)).write_bytes(b"")
    assert harness.compiled_searches(str(tmp_path)) == 2
