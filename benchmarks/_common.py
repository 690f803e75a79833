"""Helpers shared by the benchmarks: timing, peak memory, machine facts, tables.

Timings on a shared machine are noisy, so every benchmark interleaves what it compares
(round-robin within one process) and reports medians over rounds.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


def sync(device: torch.device | str) -> None:
    """Wait for queued device work, so a wall-clock reading covers it (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median(values) -> float:
    return float(statistics.median(values))


def spread(values) -> tuple[float, float]:
    """(min, max): the range next to a median, for the reader to judge the noise."""
    return float(min(values)), float(max(values))


# ----------------------------------------------------------------------------- set-ups on made-up data
def shaped_setup(model: str, channels: int, size: int, device, *, n: int = 512, **config):
    """``fastadv.training.build`` on a zero dataset of the given image shape: the step context, model and
    optimizer exactly as a real run makes them (the cost of a step does not depend on the pixels)."""
    from fastadv.config import TrainConfig
    from fastadv.data import Dataset
    from fastadv.training import build

    x = torch.zeros(n, channels, size, size, dtype=torch.uint8)
    y = torch.zeros(n, dtype=torch.long)
    data = Dataset("mnist" if channels == 1 else "cifar10", x, y, x[:16], y[:16], 10, (0.5,) * channels,
                   (0.25,) * channels, False, "zeros")
    return build(TrainConfig(model=model, dataset=data.name, device=str(device), **config), data)


# ----------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    """Current resident set size of this process (psutil, else /proc, else the high-water mark)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return max_rss_bytes()


def max_rss_bytes() -> int:
    """The process' peak RSS so far (``getrusage``: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


@dataclass
class PeakMemory:
    """Peak memory during a ``with`` block: sampled RSS (CPU) and ``max_memory_allocated`` (CUDA).

    ``rss_peak_mb`` is the highest RSS seen (sampled every ``interval`` s by a thread, plus
    the start and the end), ``rss_added_mb`` its rise over the RSS at the start (what the run
    itself added), ``cuda_peak_mb`` the CUDA allocator's peak during the block (None on CPU).
    """

    device: torch.device | str = "cpu"
    interval: float = 0.005
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    cuda_peak_mb: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def rss_added_mb(self) -> float:
        return self.rss_peak_mb - self.rss_start_mb

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.rss_peak_mb = max(self.rss_peak_mb, rss_bytes() / 2**20)

    def __enter__(self) -> "PeakMemory":
        cuda = torch.device(self.device).type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.rss_start_mb = self.rss_peak_mb = rss_bytes() / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.rss_peak_mb = max(self.rss_peak_mb, rss_bytes() / 2**20)
        if torch.device(self.device).type == "cuda":
            self.cuda_peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20

    def to_dict(self) -> dict:
        return {"rss_start_mb": round(self.rss_start_mb, 1), "rss_peak_mb": round(self.rss_peak_mb, 1),
                "rss_added_mb": round(self.rss_added_mb, 1),
                "cuda_peak_mb": None if self.cuda_peak_mb is None else round(self.cuda_peak_mb, 1)}


# ----------------------------------------------------------------------------- timing
@contextmanager
def stopwatch(device, out: list):
    """Append the block's wall time in seconds to ``out`` (device work included)."""
    sync(device)
    t = time.perf_counter()
    yield
    sync(device)
    out.append(time.perf_counter() - t)


def machine(device: torch.device | str) -> dict:
    """Facts a reader needs to place the numbers."""
    device = torch.device(device)
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "processor": processor_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": list(os.getloadavg())}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def processor_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(headers: list[str], rows: list[list]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return "-" if v is None else str(v)
