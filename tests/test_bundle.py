"""Run bundles (smeme.bundle, `smeme export` / `smeme import`).

A round trip gives a run whose report and seeded samples equal the original's; every
refusal is checked on a crafted zip, with one sentence and nothing written in the runs
folder. An SD run travels without its pipeline: its cached grid and metrics still show,
and sampling more names the pipeline.
"""
from __future__ import annotations

import io
import json
import re
import stat
import struct
import warnings
import zipfile

import numpy as np
import pytest

from smeme import bundle
from smeme.bundle import BundleError, export_run, import_bundle
from smeme.cli import main


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from smeme.explore import ExploreConfig, run_rounds
    from smeme.pipeline import pretrain_run
    from smeme.store import Run

    folder = tmp_path_factory.mktemp("bundle") / "toy"
    pretrain_run(folder, "toy", preset="tiny", steps=100, n=2000)
    run_rounds(Run.open(folder), 1, ExploreConfig(iterations=2, trajectories=64, steps=20, metrics_n=512,
                                                  metrics_logp=False, max_validity_drop=1.0))
    return folder


@pytest.fixture(scope="module")
def good_zip(toy_run, tmp_path_factory):
    return export_run(toy_run, tmp_path_factory.mktemp("zips") / "toy.zip")


@pytest.fixture
def runs(tmp_path):
    """A runs folder that already holds one (foreign) file, to see that nothing changes."""
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "keep.txt").write_text("untouched")
    return folder


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def members(zip_path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(zip_path) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def write_zip(path, entries) -> object:
    """entries: (name or ZipInfo, bytes) pairs, written as given (duplicates included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(zip_path, runs, words, **kw):
    before = snapshot(runs)
    with pytest.raises(BundleError) as info:
        import_bundle(zip_path, runs, **kw)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".") and not re.search(r"\.\s+[A-Z]", message), message
    for word in words:
        assert word in message, message
    assert snapshot(runs) == before  # nothing written, not even a temporary folder
    return message


def npy_bytes(arr, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


# -- round trip ----------------------------------------------------------------------------
def test_export_holds_only_what_a_run_needs(good_zip, toy_run):
    names = sorted(info.filename for info, _ in members(good_zip))
    assert names == ["cache/train_loss.npy", "config.json", "metrics.json", "round_0.safetensors",
                     "round_1.safetensors"]
    assert (toy_run / ".lock").exists()  # the lock and temp files stay behind


def test_round_trip_report_and_samples_equal(good_zip, toy_run, tmp_path, capsys):
    dest = import_bundle(good_zip, tmp_path / "other")
    assert dest == tmp_path / "other" / "toy"
    reports = []
    for folder in (toy_run, dest):
        code, out, err = cli(capsys, "report", "--run", folder)
        assert code == 0, err
        report = json.loads(out)
        assert report.pop("run") == str(folder)
        reports.append(report)
    assert reports[0] == reports[1] and set(reports[0]["rounds"]) == {"0", "1"}
    for folder, out in ((toy_run, tmp_path / "a.csv"), (dest, tmp_path / "b.csv")):
        assert cli(capsys, "sample", "--run", folder, "--n", 50, "--seed", 7, "--steps", 20, "--out", out)[0] == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_cli_export_import_and_force(toy_run, tmp_path, capsys):
    out = tmp_path / "shared.zip"
    assert cli(capsys, "export", "--run", toy_run, "--out", out)[0] == 0
    runs = tmp_path / "runs"
    code, text, _ = cli(capsys, "import", out, "--runs", runs, "--name", "copy")
    assert code == 0 and str(runs / "copy") in text
    (runs / "copy" / "marker").write_text("old")
    code, _, err = cli(capsys, "import", out, "--runs", runs, "--name", "copy")
    assert code == 2 and err.count("\n") == 1 and "--force" in err and (runs / "copy" / "marker").exists()
    assert cli(capsys, "import", out, "--runs", runs, "--name", "copy", "--force")[0] == 0
    assert not (runs / "copy" / "marker").exists() and (runs / "copy" / "round_1.safetensors").exists()
    assert sorted(p.name for p in runs.iterdir()) == ["copy"]  # the replaced run and temp folders are gone


# -- refusals ------------------------------------------------------------------------------
def link(name):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def fifo(name):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    return info


EXTRA = {
    "absolute": (("/config2.json", b"{}"), ["absolute path"]),
    "dotdot": (("../evil.npy", b"x"), ["'..'"]),
    "dotdot_inside": (("cache/../../x.npy", b"x"), ["'..'"]),
    "backslash": (("cache\\x.npy", b"x"), ["backslash"]),
    "symlink": ((link("cache/link.npy"), b"/etc/passwd"), ["symbolic link"]),
    "fifo": ((fifo("cache/pipe.npy"), b""), ["not a regular file"]),
    "directory": (("cache/sub/", b""), ["not a regular file"]),
    "unexpected": (("notes.txt", b"hi"), ["unexpected file 'notes.txt'"]),
    "lock": ((".lock", b""), ["unexpected file '.lock'"]),
    "temp": (("cache/.x.npy.123.tmp", b""), ["unexpected file"]),
    "duplicate": (("round_1.safetensors", b"again"), ["appears twice"]),
    "pickled_array": (("cache/objects.npy", npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True)),
                      ["pickle"]),
}


@pytest.mark.parametrize("case", sorted(EXTRA))
def test_refuses_crafted_members(case, good_zip, runs, tmp_path):
    entry, words = EXTRA[case]
    bad = write_zip(tmp_path / "bad.zip", [(i, d) for i, d in members(good_zip)] + [entry])
    assert_refused(bad, runs, ["The bundle bad.zip is refused", *words])


def test_refuses_too_many_members(good_zip, runs, tmp_path):
    entries = [(f"cache/a{i}.npy", b"") for i in range(bundle.MAX_MEMBERS)]
    bad = write_zip(tmp_path / "many.zip", [(i, d) for i, d in members(good_zip)] + entries)
    assert_refused(bad, runs, [f"more than a bundle may ({bundle.MAX_MEMBERS})"])


def test_refuses_oversize_member_and_total(good_zip, runs, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle, "MAX_MEMBER_BYTES", 5000)  # the rounds are 7,400 bytes
    assert_refused(good_zip, runs, ["round_0.safetensors", "more than a member may"])
    monkeypatch.setattr(bundle, "MAX_MEMBER_BYTES", 1 << 30)
    monkeypatch.setattr(bundle, "MAX_TOTAL_BYTES", 15_000)
    assert_refused(good_zip, runs, ["add up to more than a bundle may hold"])


def test_refuses_zip_bomb(good_zip, runs, tmp_path):
    zeros = npy_bytes(np.zeros(4 << 20, dtype=np.uint8))  # 4 MiB deflates to ~4 KiB
    bad = write_zip(tmp_path / "bomb.zip", [(i, d) for i, d in members(good_zip)] + [("cache/zeros.npy", zeros)])
    assert_refused(bad, runs, ["cache/zeros.npy", f"compressed more than {bundle.MAX_RATIO}:1"])


def test_refuses_member_longer_than_it_declares(good_zip, runs, tmp_path):
    """A central directory that under-declares a member's size: reading stops at the declared size."""
    zeros = npy_bytes(np.zeros(2 << 20, dtype=np.uint8))
    path = write_zip(tmp_path / "liar.zip", [(i, d) for i, d in members(good_zip)] + [("cache/zeros.npy", zeros)])
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the last central directory entry: cache/zeros.npy
    assert data[entry + 46:entry + 46 + 15] == b"cache/zeros.npy"
    struct.pack_into("<I", data, entry + 24, 100)  # uncompressed size: 100 bytes
    path.write_bytes(bytes(data))
    assert_refused(path, runs, ["cache/zeros.npy"])


def test_refuses_what_is_not_a_run(good_zip, runs, tmp_path):
    entries = [(i, d) for i, d in members(good_zip)]
    assert_refused(write_zip(tmp_path / "noconfig.zip", [e for e in entries if e[0].filename != "config.json"]),
                   runs, ["no config.json"])
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    assert_refused(tmp_path / "junk.zip", runs, ["not a readable zip file"])


def replaced(good_zip, name, data):
    return [(i, data if i.filename == name else d) for i, d in members(good_zip)]


def test_refuses_config_that_does_not_load(good_zip, runs, tmp_path):
    assert_refused(write_zip(tmp_path / "c1.zip", replaced(good_zip, "config.json", b"{not json")),
                   runs, ["config.json", "not valid JSON"])
    config = json.loads(dict((i.filename, d) for i, d in members(good_zip))["config.json"])
    config["model"]["kind"] = "no-such-model"
    assert_refused(write_zip(tmp_path / "c2.zip", replaced(good_zip, "config.json", json.dumps(config).encode())),
                   runs, ["config.json"])


def test_refuses_weights_that_do_not_match_the_config(good_zip, runs, tmp_path):
    import torch
    from safetensors.torch import load, save

    tensors = load(dict((i.filename, d) for i, d in members(good_zip))["round_1.safetensors"])
    name = sorted(tensors)[0]
    wrong_shape = {**tensors, name: torch.zeros(3, 3)}
    assert_refused(write_zip(tmp_path / "w1.zip", replaced(good_zip, "round_1.safetensors", save(wrong_shape))),
                   runs, ["round_1.safetensors", name, "shape (3, 3)"])
    renamed = {("renamed." + k if k == name else k): v for k, v in tensors.items()}
    assert_refused(write_zip(tmp_path / "w2.zip", replaced(good_zip, "round_1.safetensors", save(renamed))),
                   runs, ["round_1.safetensors", "missing", "unexpected"])
    nan = {**tensors, name: torch.full_like(tensors[name], float("nan"))}
    assert_refused(write_zip(tmp_path / "w3.zip", replaced(good_zip, "round_1.safetensors", save(nan))),
                   runs, ["NaN"])
    assert_refused(write_zip(tmp_path / "w4.zip", replaced(good_zip, "round_1.safetensors", b"\x80\x03pickle")),
                   runs, ["round_1.safetensors", "not a readable safetensors file"])


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "", "x" * 101, "sp ace"])
def test_refuses_a_target_name_that_is_not_a_plain_folder_name(good_zip, runs, name):
    assert_refused(good_zip, runs, ["not a plain folder name"], name=name)


def test_never_overwrites_unless_asked(good_zip, runs):
    (runs / "toy").mkdir()
    (runs / "toy" / "config.json").write_text("{}")
    assert_refused(good_zip, runs, ["already exists", "--force"])
    assert import_bundle(good_zip, runs, overwrite=True) == runs / "toy"
    assert (runs / "toy" / "round_1.safetensors").exists()


def test_a_refused_import_leaves_a_new_runs_folder_unmade(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"junk")
    with pytest.raises(BundleError):
        import_bundle(tmp_path / "junk.zip", tmp_path / "new" / "runs")
    assert not (tmp_path / "new" / "runs").exists()


def test_cli_refusal_is_one_line(good_zip, runs, tmp_path, capsys):
    bad = write_zip(tmp_path / "bad.zip", [(i, d) for i, d in members(good_zip)] + [("../x", b"")])
    code, out, err = cli(capsys, "import", bad, "--runs", runs)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("smeme: error: The bundle bad.zip is refused")


# -- Stable Diffusion runs: cached grids and metrics without the pipeline -------------------------
def make_sd_run(folder, rank=4):
    import torch
    from safetensors.torch import save

    from smeme.images.sd import SDConfig
    from smeme.images.sd_explore import SDExploreConfig
    from smeme.store import atomic_write_json

    folder.mkdir(parents=True)
    sd, explore = SDConfig(source=str(folder.parent / "pipeline-not-here"), lora_rank=rank), SDExploreConfig()
    atomic_write_json(folder / "config.json", {"kind": "sd", "schema_version": 1, "model": sd.to_dict(),
                                               "explore": explore.to_dict()})
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    adapter = {f"{module}.lora_A.weight": torch.randn(rank, 32), f"{module}.lora_B.weight": torch.randn(32, rank)}
    (folder / "round_1.safetensors").write_bytes(save(adapter))
    atomic_write_json(folder / "metrics.json", {"schema_version": 1, "rounds": {"0": {"clip": 0.25}, "1": {"clip": 0.3}}})
    (folder / "cache").mkdir()
    rng = np.random.default_rng(0)
    for k in (0, 1):
        key = f"images_round{k}_n2_seed0_steps{explore.sample_steps}_w{sd.guidance:g}"
        np.save(folder / "cache" / f"{key}.npy", rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8))
    return folder, adapter


def test_sd_run_travels_without_its_pipeline(tmp_path, capsys):
    src, _ = make_sd_run(tmp_path / "made" / "sd")
    zip_path = export_run(src, tmp_path / "sd.zip")
    dest = import_bundle(zip_path, tmp_path / "runs")
    code, out, err = cli(capsys, "report", "--run", dest)
    assert code == 0, err
    assert json.loads(out)["rounds"] == {"0": {"clip": 0.25}, "1": {"clip": 0.3}}
    code, _, err = cli(capsys, "grid", "--run", dest, "--rounds", "0,1", "--n", 2, "--seed", 0,
                       "--out", tmp_path / "grid.png")
    assert code == 0, err  # from the cached images
    assert (tmp_path / "grid.png").stat().st_size > 0
    code, _, err = cli(capsys, "grid", "--run", dest, "--rounds", "0,1", "--n", 2, "--seed", 5,
                       "--out", tmp_path / "more.png")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "needs its Stable Diffusion pipeline" in err and "pipeline-not-here" in err


def test_sd_adapter_of_the_wrong_rank_is_refused(tmp_path, runs):
    src, _ = make_sd_run(tmp_path / "made" / "sd", rank=4)
    config = json.loads((src / "config.json").read_text())
    config["model"]["lora_rank"] = 8
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="cannot be exported: round_1.safetensors.*rank-8 LoRA"):
        export_run(src, tmp_path / "sd.zip")  # export packs only what import accepts
    assert not (tmp_path / "sd.zip").exists()
    zip_path = write_zip(tmp_path / "sd.zip", [(str(p.relative_to(src)), p.read_bytes())
                                               for p in sorted(src.rglob("*")) if p.is_file()])
    assert_refused(zip_path, runs, ["round_1.safetensors", "rank-8 LoRA"])
