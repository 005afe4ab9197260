"""A proxy scorer distilled from a teacher/reference pair, and the cascade that runs the pair only
near the selection threshold. See `reweigh distill` and the README, "Choosing a scorer"."""

from scoring.proxy.cascade import CascadeScorer, CascadeSpec
from scoring.proxy.model import ProxyScorer, ProxySpec
from scoring.proxy.train import DistillConfig, Sample, distill

__all__ = ["CascadeScorer", "CascadeSpec", "DistillConfig", "ProxyScorer", "ProxySpec", "Sample", "distill"]
