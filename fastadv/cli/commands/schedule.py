"""``fastadv schedule``: print, plot or list LR and momentum schedules (no training)."""
from __future__ import annotations

import sys

from fastadv.config import ConfigError
from fastadv.io import save_figure

NAME = "schedule"
HELP = "print (CSV) or plot an LR/momentum schedule; --list names every shape"
ORDER = 30

# The gallery: one panel per shape (and the variants the thesis plots), like its Figures 46-55.
# (title, LR spec, momentum spec or None); lr_max 0.1 throughout, T = 1000 steps.
GALLERY = [
    ("constant", "constant", None),
    ("piecewise (Free-m's 3 steps)", "piecewise", "constant"),
    ("exponential (and staircase)", "exponential", None),
    ("polynomial power=2 (and cycle)", "polynomial:power=2", None),
    ("linear", "linear", None),
    ("one-cycle + 1cycle momentum", "one-cycle", "one-cycle"),
    ("one-cycle-half", "one-cycle-half", None),
    ("one-cycle-truncated + 1cycle momentum", "one-cycle-truncated", "one-cycle"),
    ("cyclical triangular + cyclical momentum", "cyclical:cycles=4", "cyclical"),
    ("cyclical triangular2", "cyclical:cycles=4,mode=triangular2", "cyclical"),
    ("cyclical decreasing (fixed lower)", "cyclical:cycles=4,mode=decreasing", None),
    ("warm-restarts cosine, mult=2", "warm-restarts:period=0.0667,mult=2", None),
    ("warm-restarts decreasing peaks", "warm-restarts:period=0.25,decay=0.6,min_lr=0.001", None),
    ("warm-restarts trapezoid", "warm-restarts:shape=trapezoid,period=0.25,ramp=0.15", None),
    ("linear-warm-restarts", "linear-warm-restarts:period=0.25", None),
    ("plateau fed a synthetic robust accuracy (green)", "plateau:window=0.1,min_slope=0.2", None),
]
VARIANTS = {"exponential": "exponential:staircase=true", "polynomial:power=2": "polynomial:power=2,decay=0.3,cycle=true"}


def configure(parser) -> None:
    parser.description = ("Print the values a run of N optimizer steps uses (CSV: step,lr,momentum for steps "
                          "0..N-1) and/or plot them. SPEC is 'name:key=value,...', e.g. "
                          "'one-cycle:lr_max=0.15' or 'warm-restarts:shape=cosine,period=0.1,mult=2'; positions "
                          "and lengths are fractions of training. `fastadv schedule --list` names every shape.")
    parser.add_argument("spec", nargs="?", metavar="SPEC", help="LR schedule spec")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps of the run, N [default: 1000]")
    parser.add_argument("--lr-max", default="0.1", help="peak LR the spec scales (unless it sets lr_max) [default: 0.1]")
    parser.add_argument("--momentum", default="constant", metavar="SPEC",
                        help="momentum schedule spec; a one-cycle/cyclical mirror takes the LR spec's cycle "
                             "[default: constant]")
    parser.add_argument("--momentum-value", default="0.9", help="momentum of the constant schedule [default: 0.9]")
    parser.add_argument("--csv", action="store_true", help="print CSV rows (the default when --plot is not given)")
    parser.add_argument("--plot", metavar="PNG", help="draw LR and momentum against the step into this image")
    parser.add_argument("--list", action="store_true", help="name every LR and momentum shape with its description")
    parser.add_argument("--gallery", metavar="PNG", help="draw every shape into one image (small multiples)")


def listing() -> str:
    from fastadv.core import schedules

    def block(title, names):
        width = max(map(len, names))
        return [title] + [f"  {n:<{width}}  {describe(n, title)}" for n in names]

    def describe(name, title):
        if title.startswith("momentum"):
            return schedules.MOMENTUM_DESCRIPTIONS[name]
        return schedules.DESCRIPTIONS[name]

    lines = block("LR shapes (lr_max scales them):", sorted([*schedules.SHAPES, *schedules.ADAPTIVE]))
    lines += [""] + block("momentum shapes (--momentum):", sorted(schedules.MOMENTUM_SHAPES))
    lines += ["", "spec: name:key=value,...  lists as a/b/c; e.g. piecewise:values=1/0.1/0.01,boundaries=0.5/0.75"]
    return "\n".join(lines)


def series(spec: str, steps: int, lr_max: float, momentum_spec: str | None, momentum: float):
    """(lrs, momenta or None) for steps 0..steps-1; the plateau shape is fed a synthetic accuracy curve."""
    from fastadv.core import schedules

    lr = schedules.build(spec, steps, lr_max=lr_max)
    mom = (schedules.build_momentum(momentum_spec, steps, lr_spec=spec, momentum=momentum)
           if momentum_spec else None)
    lrs, moms = [], []
    for s in range(steps):
        lrs.append(lr(s))
        moms.append(mom(s) if mom else None)
        if hasattr(lr, "observe") and s and s % max(1, steps // 50) == 0:
            lr.observe(s, {"adv_acc": synthetic_accuracy(s / steps)})
    return lrs, (moms if mom else None)


def synthetic_accuracy(p: float) -> float:
    """A made-up robust-accuracy curve that saturates at each LR level (for drawing ``plateau`` only)."""
    return 0.5 * min(p, 0.2) / 0.2


def draw(ax, lrs, moms, title: str, lr_label: str = "learning rate", variant=None, accuracy=None) -> None:
    """LR (left axis), momentum (right axis, dotted) and optionally a dashed variant of the LR or the
    synthetic accuracy an adaptive shape was fed, against the optimizer step."""
    steps = range(len(lrs))
    ax.plot(steps, lrs, color="tab:blue", lw=1.8, label="LR")
    if variant is not None:
        ax.plot(steps, variant[1], color="tab:cyan", lw=1.2, ls="--", label=variant[0])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(lr_label, color="tab:blue")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if moms is not None:
        twin = ax.twinx()
        twin.plot(steps, moms, color="tab:red", lw=1.2, ls=":", label="momentum")
        twin.set_ylabel("momentum", color="tab:red")
        twin.set_ylim(0.8, 1.0)
    if variant is not None:
        ax.legend(fontsize=8, loc="upper right")
    if accuracy is not None:
        twin = ax.twinx()
        twin.plot(steps, accuracy, color="tab:green", lw=1.2, ls="-.")
        twin.set_ylabel("synthetic robust acc.", color="tab:green")
        twin.set_ylim(0, 1)
        if moms is not None:  # a second right-hand axis: move it clear of the momentum axis
            twin.spines["right"].set_position(("axes", 1.13))


def plot_one(path: str, spec: str, lrs, moms) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    accuracy = [synthetic_accuracy(s / len(lrs)) for s in range(len(lrs))] if spec.startswith("plateau") else None
    draw(ax, lrs, moms, f"{spec}  ({len(lrs)} steps)", accuracy=accuracy)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_gallery(path: str, steps: int = 1000, lr_max: float = 0.1) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = -(-len(GALLERY) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows))
    for ax, (title, spec, mom) in zip(axes.flat, GALLERY):
        lrs, moms = series(spec, steps, lr_max, mom, 0.9)
        variant = None
        if spec in VARIANTS:
            variant = (VARIANTS[spec].split(":")[1].split(",")[-1], series(VARIANTS[spec], steps, lr_max, None, 0.9)[0])
        accuracy = [synthetic_accuracy(s / steps) for s in range(steps)] if spec.startswith("plateau") else None
        draw(ax, lrs, moms, title if title == spec else f"{title}\n{spec}", variant=variant, accuracy=accuracy)
    for ax in list(axes.flat)[len(GALLERY):]:
        ax.axis("off")
    fig.suptitle(f"fastadv LR shapes (blue, lr_max={lr_max}) and momentum mirrors (red dotted), "
                 f"{steps} optimizer steps", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def run(args) -> int:
    from fastadv.cli.commands._util import number_flag

    if args.list:
        print(listing())
        return 0
    if args.gallery:
        plot_gallery(args.gallery, args.steps)
        print(f"gallery written to {args.gallery}")
        if not args.spec:
            return 0
    if not args.spec:
        raise ConfigError("give a schedule SPEC (e.g. one-cycle:lr_max=0.15), or --list")
    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    lr_max = number_flag("lr-max", args.lr_max)
    momentum = number_flag("momentum-value", args.momentum_value)
    lrs, moms = series(args.spec, args.steps, lr_max, args.momentum, momentum)
    if args.plot:
        plot_one(args.plot, args.spec, lrs, moms)
        print(f"plot written to {args.plot}", file=sys.stderr if args.csv else sys.stdout)
    if args.csv or not args.plot:
        print("step,lr,momentum")
        for s, (lr, m) in enumerate(zip(lrs, moms)):
            print(f"{s},{lr:.8g},{m:.8g}")
    return 0
