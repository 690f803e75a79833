"""The `make demo` / `fastadv demo` recipe: a robust MNIST classifier in about a minute on 2 CPU cores."""

# PGD-3 training (step 0.15 = eps/2) of the small CNN with eps ramped up from 0 over the
# first 30% of training, Adam with a 1cycle-shaped LR (0 -> 5e-3 at 40% -> 0), 8 epochs.
# Measured on 2 CPU cores (1,000 test points, PGD-20, step eps/4): 99.3% clean, 92.7% robust,
# 66 s of training, 32 forward-backward passes over the data. Same eval, similar wall time:
# FGSM-RS (alpha 1.25 eps, same ramp, 10 epochs = 20 passes, 52 s) 98.5% / 87.6%; Free-m
# (m=4, Adam, 5 epochs = 20 passes, 57 s) 98.8% / 0.0%, so Free-m stays the method for CIFAR.
DEMO_CONFIG = {
    "dataset": "mnist",
    "model": "small-cnn",
    "method": "pgd",
    "attack_steps": 3,
    "eps": 0.3,
    "alpha": 0.15,
    "eps_warmup": 0.3,
    "epochs": 8,
    "batch_size": 100,
    "optimizer": "adam",
    "lr_schedule": "one-cycle:peak=0.4,end_cycle=1,div=1e9",
    "lr_max": 0.005,
    "momentum": 0.9,  # Adam beta1
    "weight_decay": 0.0,
    "final_attack_steps": 20,
    "name": "demo-mnist",
}

# Same job on scikit-learn's bundled digits when MNIST is unavailable offline.
FALLBACK_CHANGES = {"dataset": "digits", "epochs": 60, "batch_size": 64, "name": "demo-digits"}
