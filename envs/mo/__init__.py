"""Multi-objective environments (vector rewards), registered as ``mo/...``."""

from envs.mo import brax_mo
from envs.mo.deep_sea_treasure import DeepSeaTreasure, DSTParams, pareto_front
from envs.registry import register

register("mo/deep-sea-treasure", lambda **kw: (DeepSeaTreasure("default"), DSTParams(**kw)))
register("mo/deep-sea-treasure-concave", lambda **kw: (DeepSeaTreasure("concave"), DSTParams(**kw)))
for _variant in ("halfcheetah", "hopper", "hopper-2d"):
    register(f"mo/{_variant}", lambda _v=_variant, **kw: brax_mo.make(_v, **kw))

__all__ = ["DeepSeaTreasure", "DSTParams", "pareto_front"]
