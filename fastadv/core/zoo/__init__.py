"""Methods from the fast adversarial training literature, beside the registry's built-in ones.

Each module files its step functions in ``ZOO`` with their facts (cost, default step, settings);
``fastadv.core.methods`` registers them in ``METHODS``. One module per family:

- ``single_step``: ``grad-align`` (GradAlign), ``zero-grad`` (ZeroGrad), ``fgsm-rs-cs`` (FGSM-RS-CS);
- ``prior``: ``fgsm-pgi`` (FGSM-PGI, its FGSM-MEP form), ``fgsm-mep-cs`` (FGSM-MEP-CS);
- ``guided``: ``gat`` (GAT), ``nu-at`` (NuAT);
- ``trades``: ``trades`` (TRADES, PGD-K on the KL term), ``trades-fgsm`` (its single-step form).

docs/METHODS.md has them all in one table.
"""
from fastadv.core.zoo import guided, prior, single_step, trades  # noqa: F401  (each files its methods)
from fastadv.core.zoo.common import ZOO

__all__ = ["ZOO"]
