"""Launched by tests/test_sd.py (not a test) under torchrun: one S-MEME round on an SD run from
every rank through the command line's own entry point (`smeme sd-explore`, as
`torchrun --nproc_per_node 2 -m smeme sd-explore ...` runs it). Each rank records the files it
wrote and saves its UNet to --out, so the test can check that rank 0 alone wrote the run and
that the ranks ended the round with the same adapter."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--pipeline", required=True)
    p.add_argument("--folder", required=True, help="the run folder")
    p.add_argument("--explore", required=True, help="SDExploreConfig as JSON")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    from safetensors.torch import save_file

    from smeme import cli, fsio
    from smeme.images import sd_explore
    from smeme.images.sd_explore import SDConfig, SDExploreConfig, SDRun, make_accelerator

    acc = make_accelerator(cpu=True)
    written = []
    real = fsio.atomic_write

    def recording(path, write):
        written.append(str(path))
        return real(path, write)

    fsio.atomic_write = recording
    if acc.is_main_process:  # the settings CI needs (not all are command-line options)
        SDRun.create(args.folder, SDConfig(source=args.pipeline, prompt="a house."),
                     SDExploreConfig.from_dict(json.loads(args.explore)))
    acc.wait_for_everyone()
    seen = {}
    real_rounds = sd_explore.run_sd_rounds

    def capturing(run, rounds, **kw):  # the run object each rank tuned, to read its UNet below
        seen["run"], seen["done"] = run, real_rounds(run, rounds, **kw)
        return seen["done"]

    sd_explore.run_sd_rounds = capturing
    code = cli.main(["sd-explore", "--cpu", "--run-folder", args.folder, "--rounds", "1", "--no-metrics"])
    if code != 0:
        return code
    run, done = seen["run"], seen["done"]
    out = Path(args.out)
    rank = acc.process_index
    # after the round the adapter is merged into the UNet (B reset to 0, A kept): the UNet's
    # whole state is what must agree across ranks
    unet = run.model_at(done[-1]).unet
    save_file({k: v.detach().contiguous().clone() for k, v in unet.state_dict().items()},
              str(out / f"unet_rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world": acc.num_processes,
                                                      "done": done, "written": written}))
    acc.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
