"""Pre-training time and quality per preset (medians of several runs).

    SMEME_THREADS=1 python bench/bench_pretrain.py [--datasets triangles toy] [--repeats 3]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from smeme.data import make_dataset  # noqa: E402
from smeme.presets import PRESETS  # noqa: E402
from smeme.sampling import sample  # noqa: E402
from smeme.threads import configure  # noqa: E402
from smeme.train import pretrain  # noqa: E402

from record import Recording  # noqa: E402  (bench/ is this script's folder)

# issue 2's bars: seconds, and the quality each preset must keep (min over the repeats)
TARGETS = {
    "triangles": ("<= 4 s at >= 98% valid (the blog: 12 s)", lambda t, q: t <= 4 and q["valid"][0] >= 0.98),
    "toy": ("<= 30 s, dense 90 +- 3%, on support >= 97%",
            lambda t, q: t <= 30 and q["dense"][0] >= 0.87 and q["dense"][1] <= 0.93 and q["on_support"][0] >= 0.97),
}


def quality(name, ds, model, st):
    z = sample(model, 8192, steps=100, seed=11).double().numpy()
    raw = ds.domain.from_features(st.inverse(z))
    if name == "triangles":
        from smeme.data.triangles import is_valid, sort_sides
        return {"valid": float(is_valid(sort_sides(raw)).mean()), "on_support": float(ds.domain.on_support(raw).mean())}
    region = ds.domain.categories(raw)["region"]
    return {"dense": float((region == "dense").mean()), "on_support": float((region != "off").mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["triangles", "toy"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = configure()
    print(f"# {' '.join(sys.argv)}  (threads={threads}, load={os.getloadavg()[0]:.2f})")
    with Recording("pretrain", capability="Pre-training") as rec:
        for name in args.datasets:
            measure(name, args.repeats, rec)


def measure(name: str, repeats: int, rec: Recording) -> None:
    ds = make_dataset(name)
    p = PRESETS[name]
    times, cpus, quals = [], [], []
    for r in range(repeats):
        tc = p.train.__class__(**{**p.train.to_dict(), "seed": r})
        t0, c0 = time.perf_counter(), time.process_time()
        model, st, _ = pretrain(ds, tc, p.model)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        quals.append(quality(name, ds, model, st))
    qual = {k: f"{min(q[k] for q in quals):.4f}..{max(q[k] for q in quals):.4f}" for k in quals[0]}
    print(f"{name:10s} model={p.model} steps={p.train.steps} batch={p.train.batch_size} "
          f"median={statistics.median(times):.2f}s runs={[round(t, 2) for t in times]} quality={qual}"
          f" load={os.getloadavg()[0]:.2f}", flush=True)
    bounds = {k: (min(q[k] for q in quals), max(q[k] for q in quals)) for k in quals[0]}
    target, check = TARGETS.get(name, ("-", None))
    med = statistics.median(times)
    rec.row(f"pre-train {name} (preset: {p.train.steps} steps, batch {p.train.batch_size})",
            f"{med:.2f} s wall, {statistics.median(cpus):.2f} CPU s (medians of {repeats}); " + ", ".join(
                f"{k.replace('_', ' ')} {lo:.1%}-{hi:.1%}" for k, (lo, hi) in bounds.items()),
            target, met=None if check is None else check(med, bounds), median_s=med, median_cpu_s=statistics.median(cpus),
            **{f"{k}_min": lo for k, (lo, hi) in bounds.items()}, **{f"{k}_max": hi for k, (lo, hi) in bounds.items()})


if __name__ == "__main__":
    main()
