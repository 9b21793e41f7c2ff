"""MoeConfig: every setting of the Switch MoE layers, with its default, in one place.

gin/models/common.gin binds it once (`network.TransformerConfig.moe =
@moe_config.MoeConfig()`) from the macros NUM_EXPERTS, ROUTER, GROUP_SIZE, ...;
`network.make_ffn` hands it whole to every `moe.MoeLayer`. The router is an
object, not a name: `MoeConfig(router=routing.ExpertsChooseRouter())`, or in
gin `ROUTER = @routing.ExpertsChooseRouter()`.

Routing at evaluation is a mode, `eval_capacity`:
- "factor": each expert takes `eval_capacity_factor` times its share of the
  group; overflowing tokens pass through the residual (what eval losses measure).
- "drop_free": no token is dropped, so a sentence's output never depends on its
  batch neighbours (`EncoderDecoderModel` decodes and scores in this mode).
  On one device it runs the dropless path (each expert's tokens in whole
  blocks, `moe.grouped_matmul`); on a mesh of several devices the capped
  paths, with room for every token of the group in every expert.

A config serialises to JSON-ready values (`to_dict`, the router as its class
path and fields) and back (`from_dict`): checkpoint metadata stores it so.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from mtmoe import routing

DISPATCH_TYPES = ("einsum", "sort", "dropless")
EVAL_CAPACITY_MODES = ("factor", "drop_free")
# Fields that older checkpoints' metadata holds: the capacity thresholds of drop-free routing
# before it ran the dropless path.
REMOVED_FIELDS = frozenset({"drop_free_min_tokens", "drop_free_min_tokens_decode"})


@dataclasses.dataclass(frozen=True)
class MoeConfig:
    """Sparse layout and Switch MoE layer settings (num_experts=0: a dense model).

    Layer i of a stack is MoE when `(i + 1) % sparse_every == 0` (Switch: every
    other FFN; 1 = every FFN as Switch-C; 0 = none). `expert_d_ff` and
    `expert_activations` default to the dense FFN's (None). Capacity per group =
    ceil(K * capacity_factor * tokens_per_group / num_experts), at least
    `min_expert_capacity` (routing.expert_capacity). `aux_loss_factor` and
    `router_z_loss_factor` weigh the layer-averaged router losses in the model
    loss (Switch 0.01, ST-MoE 0.001).
    """

    num_experts: int = 0
    router: routing.Router = dataclasses.field(default_factory=routing.TokensChooseRouter)
    encoder_sparse_every: int = 2
    decoder_sparse_every: int = 2
    expert_d_ff: int | None = None
    expert_activations: tuple[str, ...] | None = None
    train_capacity_factor: float = 1.25
    eval_capacity_factor: float = 2.0
    min_expert_capacity: int = 4
    max_group_size: int = 4096
    dispatch: str = "sort"
    jitter_noise: float = 0.01
    expert_dropout_rate: float = 0.0
    aux_loss_factor: float = 0.01
    router_z_loss_factor: float = 0.001
    eval_capacity: str = "factor"

    def __post_init__(self):
        # gin hands lists; tuples keep the config hashable (it is a static jit argument).
        if self.expert_activations is not None:
            object.__setattr__(self, "expert_activations", tuple(self.expert_activations))
        if not isinstance(self.router, routing.Router):
            raise ValueError(
                f"MoeConfig.router={self.router!r} is not a routing.Router; bind a router object, "
                f"e.g. ROUTER = @routing.TokensChooseRouter()"
            )
        if self.num_experts < 0:
            raise ValueError(f"MoeConfig.num_experts={self.num_experts} must be >= 0 (0 = dense)")
        for name in ("encoder_sparse_every", "decoder_sparse_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"MoeConfig.{name}={getattr(self, name)} must be >= 0 (0 = no MoE layers)")
        if self.dispatch not in DISPATCH_TYPES:
            raise ValueError(f"unknown dispatch {self.dispatch!r}; use one of {DISPATCH_TYPES}")
        if self.eval_capacity not in EVAL_CAPACITY_MODES:
            raise ValueError(f"unknown eval_capacity {self.eval_capacity!r}; use one of {EVAL_CAPACITY_MODES}")
        if self.max_group_size < 1:
            raise ValueError(f"max_group_size must be >= 1, got {self.max_group_size}")
        for name in ("train_capacity_factor", "eval_capacity_factor"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_expert_capacity < 0:
            raise ValueError(f"min_expert_capacity must be >= 0, got {self.min_expert_capacity}")
        if not 0.0 <= self.expert_dropout_rate < 1.0:
            raise ValueError(f"expert_dropout_rate must be in [0, 1), got {self.expert_dropout_rate}")
        if self.num_experts > 0:
            self.router.check(num_experts=self.num_experts, is_decoder=False, dispatch=self.dispatch)
            # A group of max_group_size tokens must leave every expert at least one slot.
            routing.expert_capacity(
                tokens_per_group=self.max_group_size, num_experts=self.num_experts,
                capacity_factor=min(self.train_capacity_factor, self.eval_capacity_factor),
                min_expert_capacity=self.min_expert_capacity,
                num_selected_experts=self.router.num_selected_experts,
            )

    def check_layer(self, *, is_decoder: bool) -> None:
        """One-line ValueError when the router cannot route a layer of this stack."""
        self.router.check(num_experts=self.num_experts, is_decoder=is_decoder, dispatch=self.dispatch)

    def replace(self, **changes) -> MoeConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values: tuples become lists, the router {"class": "module.Name", **its fields}."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        router_class = type(self.router)
        out["router"] = {"class": f"{router_class.__module__}.{router_class.__qualname__}", **{
            field.name: getattr(self.router, field.name) for field in dataclasses.fields(self.router)
            if field.name not in ("parent", "name")
        }}
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MoeConfig:
        """Inverse of `to_dict`; settings that checkpoints of older code store and this code
        no longer has (REMOVED_FIELDS) are left out."""
        values = {name: value for name, value in values.items() if name not in REMOVED_FIELDS}
        router_fields = dict(values.pop("router"))
        module_name, _, class_name = router_fields.pop("class").rpartition(".")
        router_class = getattr(importlib.import_module(module_name), class_name)
        return cls(router=router_class(**router_fields), **values)
