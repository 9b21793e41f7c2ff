"""The profiles' attribution of XLA:CPU kernels to the model (benchmarks/train_step_profile.py, decode_profile.py)."""

from benchmarks import decode_profile, train_step_profile

# A compiled module as XLA:CPU prints it: the output projection fused into log-softmax's max (the
# fusion's own op_name is its root's), a plain elementwise fusion, a loop and a bare dot.
HLO = """\
HloModule jit_step, is_scheduled=true
%fused_computation (param_0: f32[8,16], param_1: f32[16,300]) -> f32[8] {
  %dot_general.0 = f32[8,300]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(step)/while/body/Transformer.decode/decoder/logits/dot_general"}
  ROOT %reduce.1 = f32[8]{0} reduce(%dot_general.0, %c), dimensions={1}, to_apply=%max, metadata={op_name="jit(step)/while/body/jit(log_softmax)/reduce_max"}
}
%fused_computation.1 (param_0.1: f32[8,300]) -> f32[8,300] {
  ROOT %exp.0 = f32[8,300]{1,0} exponential(%param_0.1), metadata={op_name="jit(step)/while/body/jit(log_softmax)/exp"}
}
ENTRY %main.4 (a.1: f32[8,16], b.1: f32[16,300]) -> f32[8] {
  %ynn_fusion = f32[8]{0} fusion(%a.1, %b.1), kind=kCustom, calls=%fused_computation, metadata={op_name="jit(step)/while/body/jit(log_softmax)/reduce_max"}
  %exp_fusion = f32[8,300]{1,0} fusion(%x), kind=kLoop, calls=%fused_computation.1, metadata={op_name="jit(step)/while/body/jit(log_softmax)/exp"}
  %while.3 = (s32[], f32[8]) while(%tuple), condition=%cond, body=%body, metadata={op_name="jit(step)/while"}
  ROOT %dot.7 = f32[8,8]{1,0} dot(%a.1, %a.1), lhs_contracting_dims={1}, rhs_contracting_dims={1}, metadata={op_name="jit(step)/Transformer.encode/encoder/layers_0/attention/dot_general"}
}
"""


def test_a_fusion_around_a_matmul_is_the_matmuls_and_loops_are_left_out():
    kernels = train_step_profile.kernel_attribution(HLO)
    assert kernels["ynn_fusion"] == ("jit(step)/while/body/Transformer.decode/decoder/logits/dot_general", True)
    assert kernels["exp_fusion"] == ("jit(step)/while/body/jit(log_softmax)/exp", False)
    assert kernels["dot.7"] == ("jit(step)/Transformer.encode/encoder/layers_0/attention/dot_general", True)
    assert "while.3" not in kernels  # its trace event spans its body's kernels: counting it would count them twice


def test_decode_kernels_split_into_encoder_decoder_steps_and_search():
    kernels = train_step_profile.kernel_attribution(HLO)
    assert decode_profile.classify(*kernels["ynn_fusion"]) == ("decoder steps", "logits (output projection)", "matmul")
    assert decode_profile.classify(*kernels["exp_fusion"]) == ("search", "log-softmax", "other")
    assert decode_profile.classify(*kernels["dot.7"]) == ("encoder", "attention", "matmul")
    assert decode_profile.classify("jit(step)/while/body/top_k", False) == ("search", "top-k", "other")
    assert decode_profile.classify("jit(step)/while/body/vmap(jit(_take))/select_n", False) == (
        "search", "beams' cache reorder", "other")
    assert decode_profile.classify("jit(step)/while/body/add", False) == ("search", "search bookkeeping", "other")
    assert decode_profile.classify(
        "jit(step)/while/body/Transformer.decode/decoder/layers_1/moe/grouped_matmul/while/body/dot_general", True
    ) == ("decoder steps", "MoE experts", "matmul")
