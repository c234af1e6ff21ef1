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
from pathlib import Path

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


@pytest.mark.parametrize("saved", ["with", "without"])
def test_rounds_with_and_without_ess_fallback_import_and_continue(saved, good_zip, tmp_path):
    """A round's saved explore settings carry ess_fallback (explore's default since it became a
    setting); a bundle of rounds explored before that has none. Both import, and a run's settings
    rebuild from either (the field missing: the default)."""
    from smeme.explore import ExploreConfig
    from smeme.store import Run

    entries = []
    for info, data in members(good_zip):
        if info.filename == "metrics.json":
            metrics = json.loads(data)
            assert metrics["rounds"]["1"]["explore"]["ess_fallback"] == 0.5
            if saved == "without":
                del metrics["rounds"]["1"]["explore"]["ess_fallback"]
            data = json.dumps(metrics).encode()
        entries.append((info.filename, data))
    dest = import_bundle(write_zip(tmp_path / "old.zip", entries), tmp_path / "runs")
    explore = Run.open(dest).metrics()[1]["explore"]
    assert ("ess_fallback" in explore) == (saved == "with")
    assert ExploreConfig.from_dict(explore).ess_fallback == 0.5


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
    sizes = {info.filename: info.file_size for info, _ in members(good_zip)}
    largest_other = max(v for k, v in sizes.items() if not k.endswith(".safetensors"))
    assert largest_other < sizes["round_0.safetensors"], sizes  # the weights are the largest member
    monkeypatch.setattr(bundle, "MAX_MEMBER_BYTES", largest_other)
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


def test_sd_bundle_names_its_pipeline_by_name_never_by_path(tmp_path, runs):
    """Export writes a pipeline folder's name, not its path; import refuses a source that is a path."""
    src, _ = make_sd_run(tmp_path / "made" / "sd")
    assert Path(json.loads((src / "config.json").read_text())["model"]["source"]).is_absolute()
    zip_path = export_run(src, tmp_path / "sd.zip")
    with zipfile.ZipFile(zip_path) as zf:
        packed = json.loads(zf.read("config.json"))
    assert packed["model"]["source"] == "pipeline-not-here"
    assert str(tmp_path) not in zipfile.ZipFile(zip_path).read("config.json").decode()
    for source in ("/etc", "../../etc/passwd", "/dev/zero", "a/../../b", "C:\\models\\sd"):
        config = dict(packed, model={**packed["model"], "source": source})
        with zipfile.ZipFile(zip_path) as zf:
            entries = [(n, json.dumps(config).encode() if n == "config.json" else zf.read(n)) for n in zf.namelist()]
        bad = write_zip(tmp_path / "bad.zip", entries)
        assert_refused(bad, runs, ["model.source", "never by a path"])


def test_sd_adapter_of_the_wrong_rank_is_refused(tmp_path, runs):
    src, _ = make_sd_run(tmp_path / "made" / "sd", rank=4)
    config = json.loads((src / "config.json").read_text())
    config["model"]["lora_rank"] = 8
    config["model"]["source"] = "pipeline-not-here"  # a bundle names its pipeline by name
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="cannot be exported: round_1.safetensors.*rank-8 LoRA"):
        export_run(src, tmp_path / "sd.zip")  # export packs only what import accepts
    assert not (tmp_path / "sd.zip").exists()
    zip_path = write_zip(tmp_path / "sd.zip", [(str(p.relative_to(src)), p.read_bytes())
                                               for p in sorted(src.rglob("*")) if p.is_file()])
    assert_refused(zip_path, runs, ["round_1.safetensors", "rank-8 LoRA"])


# -- issue 21: self-contained runs, a strict schema, total caps, export = import's checks --------
SECRET = "SECRET-MARKER-7f3a"


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    from smeme.pipeline import pretrain_rows

    rows = np.random.default_rng(5).normal(size=(300, 3)) * [1.0, 2.0, 0.5] + [10.0, -3.0, 0.25]
    folder = tmp_path_factory.mktemp("csvrun") / "csv"
    pretrain_rows(folder, rows, ["height", "weight", "age"], preset="tiny", steps=20)
    return folder, rows


@pytest.fixture(scope="module")
def csv_zip(csv_run, tmp_path_factory):
    return export_run(csv_run[0], tmp_path_factory.mktemp("csvzips") / "csv.zip")


def secret_file(tmp_path):
    """A file outside every run, a valid numeric CSV whose bytes are easy to spot."""
    path = tmp_path / "secret.csv"
    path.write_text(f"{SECRET}_a,{SECRET}_b\n" + "\n".join(f"{987654.0 + i},{i * i}" for i in range(200)) + "\n")
    return path


def edited_config(zip_path, edit) -> list:
    entries = members(zip_path)
    config = json.loads(dict((i.filename, d) for i, d in entries)["config.json"])
    edit(config)
    return [(i, json.dumps(config).encode() if i.filename == "config.json" else d) for i, d in entries]


def test_csv_round_trip_keeps_the_rows_and_their_checksum(csv_run, csv_zip, tmp_path):
    from smeme.services import cached
    from smeme.store import Run

    folder, rows = csv_run
    names = sorted(info.filename for info, _ in members(csv_zip))
    assert "training_rows.npy" in names and not any(n.startswith("cache/data_n") for n in names)
    dest = import_bundle(csv_zip, tmp_path / "runs")
    before, after = Run.open(folder), Run.open(dest)
    assert np.array_equal(after.training_rows(), rows) and np.array_equal(before.training_rows(), rows)
    record = after.config["dataset"]["training_rows"]
    assert record == before.config["dataset"]["training_rows"] and record["shape"] == [300, 3]
    assert (dest / "training_rows.npy").read_bytes() == (folder / "training_rows.npy").read_bytes()
    assert np.array_equal(cached.data_sample(after), cached.data_sample(before))
    assert np.array_equal(cached.data_sample(after), rows) and cached.data_note(after) is None
    assert "path" not in json.dumps(after.config)  # the config names no file


def test_a_bundle_whose_csv_config_names_an_outside_file_is_refused(csv_zip, runs, tmp_path):
    secret = secret_file(tmp_path)
    for where in ("params", "domain", "info.params"):
        def edit(config, where=where):
            holder = config["dataset"]
            for key in where.split("."):
                holder = holder.setdefault(key, {})
            holder["path"] = str(secret)
        bad = write_zip(tmp_path / "attack.zip", edited_config(csv_zip, edit))
        assert_refused(bad, runs, [f"config.json names a file at 'dataset.{where}.path'", "names no file outside it"])


EDITS = {
    "top-level": (lambda c: c.update(extra=1), "unknown top-level field 'extra'"),
    "dataset": (lambda c: c["dataset"].update(source="x"), "'dataset.source'"),
    "params": (lambda c: c["dataset"]["params"].update(rows=5), "'dataset.params.rows'"),
    "domain": (lambda c: c["dataset"]["domain"].update(colour=1), "'dataset.domain.colour'"),
    "info": (lambda c: c["dataset"]["info"].update(url="x"), "'dataset.info.url'"),
    "info-params": (lambda c: c["dataset"]["info"]["params"].update(file="x"), "'dataset.info.params.file'"),
    "model": (lambda c: c["model"].update(weights="x"), "weights"),
    "schedule": (lambda c: c["schedule"].update(table=[1]), "'schedule.table'"),
    "standardizer": (lambda c: c["standardizer"].update(scale=1), "'standardizer.scale'"),
    "train": (lambda c: c["train"].update(resume="x"), "'train.resume'"),
    "rows-record": (lambda c: c["dataset"]["training_rows"].update(file="x"), "'dataset.training_rows.file'"),
    "train-value": (lambda c: c["train"].update(ema="../../etc"), "'train.ema' is not a number"),
    "seed-value": (lambda c: c["dataset"].update(seed="0"), "'dataset.seed' is not a whole number"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_refuses_a_field_the_schema_does_not_know_at_every_level(case, csv_zip, runs, tmp_path):
    edit, words = EDITS[case]
    assert_refused(write_zip(tmp_path / "extra.zip", edited_config(csv_zip, edit)), runs, [words])


def test_refuses_a_round_or_rows_file_that_the_run_does_not_name(good_zip, csv_zip, runs, tmp_path):
    entries = members(good_zip)
    round_1 = dict((i.filename, d) for i, d in entries)["round_1.safetensors"]
    assert_refused(write_zip(tmp_path / "stray.zip", entries + [("round_7.safetensors", round_1)]), runs,
                   ["round_7.safetensors", "metrics.json does not name"])
    no_round = [(i, d) for i, d in entries if i.filename != "round_1.safetensors"]
    assert_refused(write_zip(tmp_path / "gap.zip", no_round), runs, ["names round 1", "round_1.safetensors is not in it"])
    rows = dict((i.filename, d) for i, d in members(csv_zip))["training_rows.npy"]
    assert_refused(write_zip(tmp_path / "rows.zip", entries + [("training_rows.npy", rows)]), runs,
                   ["training_rows.npy", "does not record"])
    metrics = json.loads(dict((i.filename, d) for i, d in entries)["metrics.json"])
    metrics["note"] = "x"
    edited = [(i, json.dumps(metrics).encode() if i.filename == "metrics.json" else d) for i, d in entries]
    assert_refused(write_zip(tmp_path / "m.zip", edited), runs, ["metrics.json has the unknown top-level field 'note'"])


def test_refuses_training_rows_that_do_not_match_their_checksum(csv_zip, runs, tmp_path):
    entries = members(csv_zip)
    rows = np.load(io.BytesIO(dict((i.filename, d) for i, d in entries)["training_rows.npy"]))
    rows[0, 0] += 1.0
    bad = [(i, npy_bytes(rows) if i.filename == "training_rows.npy" else d) for i, d in entries]
    assert_refused(write_zip(tmp_path / "rows.zip", bad), runs, ["training_rows.npy is damaged", "sha256"])
    missing = [(i, d) for i, d in entries if i.filename != "training_rows.npy"]
    assert_refused(write_zip(tmp_path / "norows.zip", missing), runs, ["training_rows.npy"])


def test_refuses_many_small_members_that_add_up_to_a_zip_bomb(good_zip, runs, tmp_path):
    """Members at or under the per-member ratio floor cannot walk around the total ratio: 40 x 1 MiB
    of zeros (each deflates to ~1 KiB) is refused from the central directory, before a byte is written."""
    zeros = npy_bytes(np.zeros(bundle.RATIO_FLOOR - 128, dtype=np.uint8))
    entries = members(good_zip) + [(f"cache/z{i}.npy", zeros) for i in range(40)]
    bad = write_zip(tmp_path / "bombs.zip", entries)
    assert bad.stat().st_size < 200_000
    assert_refused(bad, runs, [f"compressed more than {bundle.MAX_TOTAL_RATIO}:1 in all"])


def test_refuses_a_bundle_larger_than_the_free_disk(good_zip, runs, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    assert_refused(good_zip, runs, ["do not fit in the 100 bytes free"])


def test_a_config_nested_100000_levels_is_refused_in_one_sentence(good_zip, runs, tmp_path):
    deep = b"[" * 100_000 + b"]" * 100_000
    assert_refused(write_zip(tmp_path / "deep.zip", replaced(good_zip, "config.json", deep)), runs,
                   ["config.json is damaged", "nests deeper than"])
    assert_refused(write_zip(tmp_path / "deep2.zip", replaced(good_zip, "metrics.json", deep)), runs,
                   ["metrics.json is damaged", "nests deeper than"])


def test_a_refused_import_into_an_existing_name_keeps_the_old_run(good_zip, runs, tmp_path):
    first = import_bundle(good_zip, runs, name="keep")
    before = snapshot(first)
    bad = write_zip(tmp_path / "bad.zip", members(good_zip) + [("round_9.safetensors", b"x")])
    with pytest.raises(BundleError):
        import_bundle(bad, runs, name="keep", overwrite=True)
    with pytest.raises(BundleError, match="already exists"):
        import_bundle(good_zip, runs, name="keep")
    assert snapshot(first) == before and sorted(p.name for p in runs.iterdir()) == ["keep", "keep.txt"]


def damaged_round(name, good):
    """round_1.safetensors as each kind of damage export must refuse."""
    import torch
    from safetensors.torch import load, save

    tensors = load(good)
    first = sorted(tensors)[0]
    if name == "zero-byte":
        return b""
    if name == "lying-header":
        return struct.pack("<Q", 10**6) + good[8:]  # a header longer than the file
    if name == "nan":
        return save({**tensors, first: torch.full_like(tensors[first], float("nan"))})
    return save({**tensors, first: torch.zeros(2, 2)})  # wrong shape


@pytest.mark.parametrize("damage", ["zero-byte", "lying-header", "nan", "wrong-shape"])
def test_export_refuses_weights_that_import_would_refuse(damage, toy_run, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(toy_run, folder)
    target = folder / "round_1.safetensors"
    target.write_bytes(damaged_round(damage, target.read_bytes()))
    out = tmp_path / "out.zip"
    out.write_bytes(b"an earlier bundle")
    with pytest.raises(BundleError) as info:
        export_run(folder, out)
    message = str(info.value)
    assert message.startswith(f"The run in {folder} cannot be exported: round_1.safetensors"), message
    assert "\n" not in message and message.endswith(".")
    assert out.read_bytes() == b"an earlier bundle"  # nothing already saved is lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip", "run"]  # no temp file or folder left


@pytest.mark.parametrize("linked", ["config.json", "round_1.safetensors", "training_rows.npy"])
def test_export_never_follows_a_link(linked, csv_run, toy_run, tmp_path):
    import shutil

    source = csv_run[0] if linked == "training_rows.npy" else toy_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    outside = tmp_path / "outside"
    outside.write_bytes((folder / linked).read_bytes())
    (folder / linked).unlink()
    (folder / linked).symlink_to(outside)
    with pytest.raises(BundleError) as info:
        export_run(folder, tmp_path / "out.zip")
    assert "symbolic link" in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert not (tmp_path / "out.zip").exists()
