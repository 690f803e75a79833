"""The core: attacks, training methods, schedules, precision, speed settings, torchrun. Torch only.

Nothing here knows about run directories, evaluation suites or the CLI; every piece works in
one's own training loop (``fastadv.AdversarialStep``, ``fastadv.core.attacks.pgd``, schedules).
"""
