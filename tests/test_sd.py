"""Stable Diffusion path on a tiny pipeline built from configs (random weights, CPU, offline).

The pipeline (tiny UNet2DConditionModel, AutoencoderKL, CLIPTextModel and a CLIPTokenizer
made from an in-memory vocabulary) is saved with save_pretrained and loaded back from
its folder through smeme's loader with HF_HUB_OFFLINE=1.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")


TINY_LATENT_SHAPE = (4, 8, 8)  # the tiny UNet's in_channels x sample_size x sample_size


def tiny_scheduler(prediction_type: str = "epsilon"):
    """The tiny pipeline's scheduler: SD 1.5's (1,000 steps, scaled-linear betas 0.00085 to 0.012)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, clip_sample=False, steps_offset=1, prediction_type=prediction_type)


def make_tiny_pipeline(folder, seed: int = 0, prediction_type: str = "epsilon"):
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = folder.parent / f"{folder.name}_tokenizer_src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["."]:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file=str(tok_dir / "vocab.json"), merges_file=str(tok_dir / "merges.txt"),
                              model_max_length=32, pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=8, attention_head_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=16)
    sched = tiny_scheduler(prediction_type)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd") / "pipe")


def test_missing_and_foreign_folders_get_clear_errors(tmp_path):
    from smeme.images.sd import SDError, load_pipeline, resolve_pipeline_folder

    with pytest.raises(SDError, match="does not exist"):
        load_pipeline(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(SDError, match="not a diffusers pipeline folder"):
        resolve_pipeline_folder(tmp_path / "junk")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_index.json").write_text("{}")
    with pytest.raises(SDError, match="lacks the sub-folder"):
        resolve_pipeline_folder(tmp_path / "half")
    with pytest.raises(SDError, match="local Hugging Face cache"):
        resolve_pipeline_folder("nobody/no-such-model-xyz")


def test_views_share_one_unet_and_start_equal(tiny_sd):
    from smeme.images.sd import SDConfig, build_sd_model

    m = build_sd_model(SDConfig(source=str(tiny_sd), prompt="a house."))
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert m.sample_shape == TINY_LATENT_SHAPE and m.resolution == 16
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    base, cfg = m.base_view(), m.cfg_view(8.0)
    assert list(base.parameters()) == [] and list(cfg.parameters()) == []
    x, t = torch.randn(3, 4, 8, 8), torch.rand(3)
    with torch.no_grad():
        # B = 0 at the start: tuned model == base
        assert torch.allclose(m(x, t), base(x, t), atol=1e-6)
        lora_b = [p for n, p in m.named_parameters() if "lora_B" in n]
        for p in lora_b:
            p.add_(0.05 * torch.randn_like(p))
        tuned, frozen = m(x, t), base(x, t)
        assert not torch.allclose(tuned, frozen, atol=1e-4)
        # merging folds the delta into the UNet: the disabled adapter now equals the tuned model
        m.merge_adapter()
        assert torch.allclose(base(x, t), tuned, atol=1e-4)
        assert torch.allclose(m(x, t), tuned, atol=1e-4)
    assert all(p.requires_grad for p in m.lora_params)


def test_whole_path_load_round_grid(tiny_sd, tmp_path):
    """load -> one short LoRA round (adapter saved as safetensors) -> grid, on CPU."""
    from safetensors.torch import load_file

    from smeme.images.grid import make_grid, save_grid
    from smeme.images.sd_explore import SDConfig, SDExploreConfig, SDRun, run_sd_rounds

    ex = SDExploreConfig(iterations=2, trajectories=2, steps=6, adam_steps=2, loss_steps=2, lr=1e-3,
                         sample_n=3, sample_steps=6)
    run = SDRun.create(tmp_path / "run", SDConfig(source=str(tiny_sd), prompt="a house."), ex)
    seen = []
    new = run_sd_rounds(run, 1, on_iteration=lambda k, i, n, loss: seen.append((k, i, loss)))
    assert new == [1] and run.rounds() == [0, 1]
    assert [s[:2] for s in seen] == [(1, 1), (1, 2)] and all(np.isfinite(s[2]) for s in seen)
    adapter = load_file(str(tmp_path / "run" / "round_1.safetensors"))
    assert adapter and all("lora" in k for k in adapter)
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # it trained
    metrics = run.metrics()
    assert set(metrics) == {0, 1}
    assert metrics[1]["fid"] is None and metrics[1]["missing_weights"]  # no Inception/CLIP here
    assert len(metrics[1]["loss"]) == 2
    # reopened run rebuilds round 1 from the folder alone
    again = SDRun.open(tmp_path / "run")
    img = make_grid(again, [0, 1], n=3, seed=5)
    assert img.size[0] > 3 * 16 and img.size[1] >= 2 * 16
    arr0 = again.images(0, 3, 5, steps=ex.sample_steps, use_cache=False)
    arr1 = again.images(1, 3, 5, steps=ex.sample_steps, use_cache=False)
    assert arr0.shape == (3, 16, 16, 3) and arr0.dtype == np.uint8
    assert not np.array_equal(arr0, arr1)  # the adapter changed the images
    out = save_grid(str(tmp_path / "run"), [0, 1], 3, 5, tmp_path / "grid.png")
    assert out.exists() and out.stat().st_size > 0
    with pytest.raises(ValueError, match="no round"):
        make_grid(again, [0, 7], n=2, seed=0)


def test_missing_metric_weights_are_named(tmp_path):
    from smeme.images.sd_metrics import find_metric_weights

    w = find_metric_weights(inception=str(tmp_path / "nope.pt"), clip=str(tmp_path / "noclip"))
    assert not w.any
    text = " ".join(w.missing)
    assert "Inception" in text and "nope.pt" in text and "CLIP" in text


def test_metrics_with_local_weights_tiny_stand_ins(tiny_sd, tmp_path):
    """The FID / Inception cross-entropy / CLIP plumbing on tiny stand-ins for the real weights:
    a TorchScript module with Inception's `(x, return_features=True)` call, and a tiny CLIP folder."""
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig,
                              CLIPTokenizer, CLIPVisionConfig)

    from smeme.images.sd_metrics import find_metric_weights, sd_metrics

    class FakeInception(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 6)

        def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
            return self.proj(x.mean(dim=(2, 3)) / 255.0)

    torch.manual_seed(0)
    inc = tmp_path / "inception.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(FakeInception()).save(str(inc))
    clip_dir = tmp_path / "clip"
    tok = CLIPTokenizer.from_pretrained(str(tiny_sd / "tokenizer"))
    cfg = CLIPConfig(text_config=CLIPTextConfig(vocab_size=len(tok) + 8, hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1).to_dict(),
                     vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, image_size=16, patch_size=8).to_dict(),
                     projection_dim=8)
    CLIPModel(cfg).save_pretrained(str(clip_dir))
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                  tokenizer=tok).save_pretrained(str(clip_dir))
    w = find_metric_weights(inception=str(inc), clip=str(clip_dir))
    assert w.inception and w.clip and not w.missing
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 60, 0, 255).astype(np.uint8)
    same = sd_metrics(a, a, "a house.", w)
    moved = sd_metrics(b, a, "a house.", w)
    assert same["fid"] < 1e-6 and moved["fid"] > same["fid"]
    assert moved["inception_cross_entropy"] > same["inception_cross_entropy"]
    assert 0 <= moved["clip_score"] <= 100 and same["missing_weights"] == []


def test_local_cache_folder_reads_the_cache_layout_and_never_fetches(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from smeme.images.sd import local_cache_folder
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert local_cache_folder("org/absent") is None
    repo = tmp_path / "models--org--tiny-sd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123\n")
    assert local_cache_folder("org/tiny-sd") is None  # ref without its snapshot
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    assert local_cache_folder("org/tiny-sd") == repo / "snapshots" / "abc123"


def test_an_sd_round_is_visible_only_with_its_metrics(tiny_sd, tmp_path, monkeypatch):
    """metrics.json is the SD run's manifest too (smeme.fsio.commit_round): an adapter file it
    does not name is an orphan (a save that failed before its commit), invisible and overwritten."""
    from smeme import fsio, store
    from smeme.images.sd_explore import SDConfig, SDRun, SDRunError

    run = SDRun.create(tmp_path / "run", SDConfig(source=str(tiny_sd), prompt="a house."))
    adapter = {"a.lora_A.weight": torch.ones(2, 3), "a.lora_B.weight": torch.zeros(3, 2)}
    run.round_path(1).write_bytes(b"an orphan from a failed save")
    assert run.rounds() == [0]
    # the commit fails (a full disk while writing metrics.json): the new adapter goes too
    def full(*a, **k):
        raise store.disk_full_error(run.folder / "metrics.json")
    monkeypatch.setattr(fsio, "update_manifest", full)
    with pytest.raises(store.DiskFullError, match="no space left"):
        run.save_round(1, adapter, {"loss": [1.0]})
    assert run.rounds() == [0] and not run.round_path(1).exists()
    monkeypatch.undo()
    run.save_round(1, adapter, {"loss": [1.0]})
    assert run.rounds() == [0, 1] and run.metrics()[1] == {"loss": [1.0]}
    with pytest.raises(SDRunError, match="already saved"):
        run.save_round(1, adapter, {})
    (run.folder / "metrics.json").write_text("{")
    with pytest.raises(SDRunError, match="metrics.json in .* is damaged"):
        run.rounds()


TINY_ROUND = dict(iterations=1, trajectories=2, steps=4, adam_steps=1, loss_steps=2, lr=1e-2, sample_n=2,
                  sample_steps=4)


def test_the_guided_view_is_cfg_and_without_adapter_is_the_base(tiny_sd):
    from smeme.images.sd import SDConfig, build_sd_model

    m = build_sd_model(SDConfig(source=str(tiny_sd), prompt="a house.", guidance=8.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in m.unet.named_parameters():
            if "lora_B" in name:
                p.add_(0.1 * torch.randn_like(p))  # move the adapter off the identity
        # the tiny tokenizer encodes every prompt alike: give the empty prompt its own embedding
        m.uncond.add_(torch.randn_like(m.uncond))
        x, t = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.8])
        ts = m.schedule.timestep(t).float()
        n = x.shape[0]
        e_c = m.unet(x, ts, encoder_hidden_states=m.cond.expand(n, -1, -1)).sample
        e_u = m.unet(x, ts, encoder_hidden_states=m.uncond.expand(n, -1, -1)).sample
        assert torch.allclose(m.cfg_view()(x, t), e_u + 8.0 * (e_c - e_u), atol=1e-5)
        assert torch.allclose(m.cfg_view(1.0)(x, t), m(x, t), atol=1e-5)  # w = 1: the conditional model
        assert not torch.allclose(e_u, e_c, atol=1e-4)  # the prompt matters
        with m.adapter_disabled():
            e_c0 = m.unet(x, ts, encoder_hidden_states=m.cond.expand(n, -1, -1)).sample
            e_u0 = m.unet(x, ts, encoder_hidden_states=m.uncond.expand(n, -1, -1)).sample
        off = m.cfg_view(3.0, adapter=False)(x, t)
        assert torch.allclose(off, e_u0 + 3.0 * (e_c0 - e_u0), atol=1e-5)
        assert not torch.allclose(off, m.cfg_view(3.0)(x, t), atol=1e-4)
        assert torch.allclose(m.base_view()(x, t), e_c0, atol=1e-5)
    assert all(p.requires_grad for p in m.lora_params)  # disabling the adapter keeps it trainable


def distinct_uncond(model, seed: int = 5):
    """The tiny tokenizer encodes every prompt alike: give the empty prompt its own embedding
    (the same one for every call, so two loads of a run agree)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.uncond.copy_(model.cond + torch.randn(model.cond.shape, generator=g).to(model.cond.dtype))


def _spy_rounds(monkeypatch, x, t):
    """Record, for each round, the views adjoint_matching gets and the base's output at (x, t)
    (the solver as smeme.explore's round loop calls it)."""
    import importlib

    am = importlib.import_module("smeme.explore")
    seen = []
    real = am.adjoint_matching

    def spy(model_ft, model_base, reward_grad, config=None, sampling_model=None, **kw):
        with torch.no_grad():
            seen.append({"ft": model_ft, "base": model_base, "sampler": sampling_model,
                         "base_out": model_base(x, t).clone(), "reward": reward_grad(x).clone()})
        return real(model_ft, model_base, reward_grad, config, sampling_model=sampling_model, **kw)

    monkeypatch.setattr(am, "adjoint_matching", spy)
    return seen


def test_the_round_explores_the_guided_model_and_a_second_round_merges_the_first(tiny_sd, tmp_path, monkeypatch):
    """Round k (paper section 8): the tuned model and sampler are the guided eps with the adapter
    on, the adjoint's base and the reward the guided pi_{k-1}; round 2 starts from round 1
    merged (the merge chain)."""
    from smeme.images.sd import SDGuidedTunedView, SDGuidedView, load_adapter_state
    from smeme.images.sd_explore import SDConfig, SDExploreConfig, SDRun, run_sd_rounds
    from smeme.models.base import score

    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([0.2, 0.6])
    seen = _spy_rounds(monkeypatch, x, t)
    cfg = SDExploreConfig(lam=0.3, **TINY_ROUND)
    run = SDRun.create(tmp_path / "run", SDConfig(source=str(tiny_sd), prompt="a house.", guidance=3.0), cfg)
    distinct_uncond(run.model_at(0))  # the cached predictor the rounds will use
    assert run_sd_rounds(run, 2, metrics=False) == [1, 2] and run.rounds() == [0, 1, 2]
    for r in seen:
        assert isinstance(r["ft"], SDGuidedTunedView) and r["ft"].w == 3.0 and r["sampler"] is None
        assert isinstance(r["base"], SDGuidedView) and r["base"].w == 3.0 and not r["base"].adapter
        assert r["base"].model is r["ft"].model  # one UNet
        trainable = [p for p in r["ft"].parameters() if p.requires_grad]
        assert trainable and {id(p) for p in trainable} == {id(p) for p in r["ft"].model.lora_params}
    fresh = SDRun.open(tmp_path / "run")
    distinct_uncond(fresh.model_at(0))
    with torch.no_grad():
        pi0 = fresh.model_at(0).cfg_view(3.0)(x, t).clone()
        pi1 = fresh.model_at(1).cfg_view(3.0)(x, t).clone()
        assert torch.allclose(seen[0]["base_out"], pi0, atol=1e-5)
        assert torch.allclose(seen[1]["base_out"], pi1, atol=1e-5)  # round 2's base is round 1, guided
        assert not torch.allclose(pi0, pi1, atol=1e-5)
        # the reward gradient is lam * (-s_{k-1}(x, t_r)), from the guided previous round
        t_r = torch.full((2,), cfg.t_r)
        guided1 = fresh.model_at(1).cfg_view(3.0, adapter=False)
        assert torch.allclose(seen[1]["reward"], 0.3 * -score(guided1, x, t_r), atol=1e-4)
        assert not torch.allclose(seen[1]["reward"], 0.3 * -score(fresh.model_at(1).base_view(), x, t_r), atol=1e-4)
        pi2 = fresh.model_at(2)(x, t).clone()
        # the chain by hand: a fresh pipeline, round 1 merged, round 2 merged
        chain = SDRun.open(tmp_path / "run").model_at(0)
        for k in (1, 2):
            load_adapter_state(chain.unet, fresh.read_adapter(k))
            chain.merge_adapter()
        assert torch.allclose(chain(x, t), pi2, atol=1e-5) and not torch.allclose(pi1, pi2, atol=1e-5)


def test_v_prediction_checkpoints_are_converted_to_eps(tmp_path):
    from smeme.images.sd import SDConfig, build_sd_model
    from smeme.images.sd_explore import SDExploreConfig, SDRun, run_sd_rounds

    folder = make_tiny_pipeline(tmp_path / "vpipe", prediction_type="v_prediction")
    m = build_sd_model(SDConfig(source=str(folder), prompt="a house."))
    assert m.prediction_type == "v_prediction"
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([0.1, 0.7])
    with torch.no_grad():
        v = m.unet(x, m.schedule.timestep(t).float(), encoder_hidden_states=m.cond.expand(2, -1, -1)).sample
        ab = m.schedule.ab(t).reshape(-1, 1, 1, 1)
        assert torch.allclose(m(x, t), ab.sqrt() * v + (1 - ab).sqrt() * x, atol=1e-5)
    run = SDRun.create(tmp_path / "run", SDConfig(source=str(folder), prompt="a house."), SDExploreConfig(**TINY_ROUND))
    assert run_sd_rounds(run, 1, metrics=False) == [1]
    assert np.isfinite(run.metrics()[1]["loss"]).all()


class _ThreadRanks:
    """What run_sd_rounds uses of accelerate.Accelerator, for `world` threads of this process:
    reduce is a plain mean over the threads (a barrier, no torch.distributed), so each thread
    draws the trajectories its rank would (seed + rank) and averages by hand; prepare(module)
    stands in for DDP: every gradient accumulated into a parameter of `module` is replaced by
    its mean over the threads (free_memory removes that)."""

    def __init__(self, world: int):
        import threading

        self.world, self.slots = world, [None] * world
        self.barrier = threading.Barrier(world, timeout=300)

    def rank(self, r: int):
        shared = self

        class Rank:
            device = torch.device("cpu")
            num_processes, process_index, is_main_process = shared.world, r, r == 0

            def wait_for_everyone(self):
                shared.barrier.wait()

            def reduce(self, tensor, reduction="sum"):
                shared.slots[r] = tensor.detach().clone()
                shared.barrier.wait()
                total = shared.slots[0].clone()
                for other in shared.slots[1:]:
                    total += other
                shared.barrier.wait()  # all have read before the next reduce writes
                return total / shared.world if reduction == "mean" else total

            def prepare(self, module):
                def mean(p):
                    p.grad.copy_(self.reduce(p.grad, reduction="mean"))

                self.hooks = [p.register_post_accumulate_grad_hook(mean)
                              for p in module.parameters() if p.requires_grad]
                return module

            def free_memory(self):
                for h in getattr(self, "hooks", []):
                    h.remove()
                self.hooks = []

        return Rank()


@pytest.mark.slow
def test_two_cpu_processes_average_like_one_process_and_rank_0_alone_writes(tiny_sd, tmp_path):
    """torch.distributed.run (gloo, 127.0.0.1) starts 2 ranks of tests/sd_ranks.py on the tiny
    pipeline: one round with Accelerate averaging the LoRA gradients. Both ranks end with the
    same UNet (adapter merged), only rank 0 wrote, and the round equals the same two ranks
    emulated by threads of one process (same trajectories, averaged in Python)."""
    import socket
    import subprocess
    import sys
    import threading
    from pathlib import Path

    from safetensors.torch import load_file

    from smeme.images.sd_explore import SDConfig, SDExploreConfig, SDRun, run_sd_rounds

    explore = dict(TINY_ROUND, adam_steps=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    out.mkdir()
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OMP_NUM_THREADS="1", SMEME_THREADS="1", ACCELERATE_USE_CPU="1",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(port), str(root / "tests" / "sd_ranks.py"),
           "--pipeline", str(tiny_sd), "--folder", str(tmp_path / "mp"), "--out", str(out),
           "--explore", json.dumps(explore)]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["done"] for r in ranks] == [[1], [1]]
    assert ranks[1]["written"] == []  # rank 0 alone wrote the run
    assert {Path(p).name for p in ranks[0]["written"]} == {"config.json", "round_1.safetensors", "metrics.json"}
    assert SDRun.open(tmp_path / "mp").rounds() == [0, 1]
    unets = [load_file(str(out / f"unet_rank{r}.safetensors")) for r in (0, 1)]
    assert unets[0].keys() == unets[1].keys()
    assert all(torch.equal(unets[0][k], unets[1][k]) for k in unets[0])  # identical adapters

    # the same two ranks as threads of this process
    SDRun.create(tmp_path / "emu", SDConfig(source=str(tiny_sd), prompt="a house."),
                 SDExploreConfig.from_dict(explore))
    shared, got, errors = _ThreadRanks(2), {}, []
    emulated = [SDRun.open(tmp_path / "emu") for _ in (0, 1)]
    for run in emulated:
        run.model_at(0)  # load each rank's pipeline here: loading is not thread-safe

    def rank(r):
        try:
            run = emulated[r]
            run_sd_rounds(run, 1, accelerator=shared.rank(r), metrics=False)
            got[r] = {k: v.detach().clone() for k, v in run.model_at(1).unet.state_dict().items()}
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            shared.barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    pre = SDRun.open(tmp_path / "emu").model_at(0).unet.state_dict()
    changed = [k for k in got[0] if not torch.allclose(got[0][k], pre[k])]
    assert changed  # the round trained
    for k in unets[0]:
        assert torch.allclose(unets[0][k], got[0][k], atol=1e-6, rtol=1e-5), k
    saved = load_file(str(tmp_path / "mp" / "round_1.safetensors"))
    emu = load_file(str(tmp_path / "emu" / "round_1.safetensors"))
    assert saved.keys() == emu.keys() and all(torch.allclose(saved[k], emu[k], atol=1e-6) for k in saved)
