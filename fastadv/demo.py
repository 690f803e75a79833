"""The demo jobs (`make demo`, `make demo-cifar`, `fastadv demo [--dataset cifar10]`): a preset, named."""
from fastadv.presets import load

# MNIST: the "mnist" preset (fastadv/recipes/mnist.toml): a robust small CNN in about a minute on 2 CPU cores.
DEMO_CONFIG = {**load("mnist"), "name": "demo-mnist"}

# Same job on scikit-learn's bundled digits when MNIST is unavailable offline.
FALLBACK_CHANGES = {"dataset": "digits", "epochs": 60, "batch_size": 64, "name": "demo-digits"}

# CIFAR-10: the "cifar10-cpu" preset (configs/cifar10-cpu.toml), the CPU recipe.
CIFAR_CONFIG = {**load("cifar10-cpu"), "name": "demo-cifar10"}

DEMOS = {"mnist": DEMO_CONFIG, "cifar10": CIFAR_CONFIG}
