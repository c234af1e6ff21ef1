"""The live iterate's share of the exact tilt after every solver iteration of one toy round.

    SMEME_THREADS=1 python bench/bench_round_iterates.py --run DIR [--lam 0.1] [--seeds 5,7]
        [--settings '{"outlier_mode": "scale"}']

For each solver seed: one round of the explore defaults (plus --settings, ExploreConfig fields
as JSON); after each iteration the tuned network (not the weight average) is sampled (4,096
fixed-noise samples) and its sparse-square log-odds shift over round 0 is divided by the exact
round's (smeme.tilt, 200^2 grid). Prints one JSON line per seed: the trace and the final
(averaged) round's share. Shows whether a round's error is iterate noise that the average
removes or a swing the average keeps.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from toy_truth import exact_logodds_shift, logit, toy_round_parser


def main() -> None:
    ap = toy_round_parser("5,7")
    ap.add_argument("--settings", default="{}", help="ExploreConfig fields as JSON")
    args = ap.parse_args()

    from smeme.threads import configure

    configure()
    import smeme.explore as explore
    from smeme.explore import ExploreConfig, run_rounds
    from smeme.metrics import round_samples
    from smeme.store import Run

    src = Run.open(args.run)
    settings = json.loads(args.settings)
    exact_shift = exact_logodds_shift(src, args.lam, ExploreConfig(**settings).target_t_r)
    solver = explore.adjoint_matching
    for seed in (int(s) for s in args.seeds.split(",")):
        work = Path(tempfile.mkdtemp(prefix="bench_iterates_")) / "run"
        shutil.copytree(src.folder, work)
        run = Run.open(work)

        def sparse_share(model) -> float:
            return float((run.domain.categories(round_samples(run, model, 4096))["region"] == "sparse").mean())

        base = sparse_share(run.load_model(0).eval())
        trace: list[float] = []

        def traced(model_ft, *a, on_iteration=None, **k):
            def after_iteration(i, n, loss):
                model_ft.eval()
                trace.append(round((logit(sparse_share(model_ft)) - logit(base)) / exact_shift, 2))
                model_ft.train()
                if on_iteration is not None:
                    on_iteration(i, n, loss)
            return solver(model_ft, *a, on_iteration=after_iteration, **k)

        explore.adjoint_matching = traced
        try:
            run_rounds(run, 1, ExploreConfig(**{"lam": args.lam, "seed": seed, "metrics_logp": False, **settings}))
        finally:
            explore.adjoint_matching = solver
        m = run.metrics()
        final = (logit(m[1]["sparse_share"]) - logit(m[0]["sparse_share"])) / exact_shift
        print(json.dumps({"seed": seed, "settings": settings, "live_iterate_share": trace,
                          "final_averaged_share": round(final, 2)}), flush=True)
        shutil.rmtree(work.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
