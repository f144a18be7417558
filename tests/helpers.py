"""Small fabricated data for the training and study tests."""

import numpy as np

from contrastlab.data import ImageSet


def blob_imageset(n_per_class: int = 16, n_classes: int = 4, size: int = 8, seed: int = 0, name: str = "blobs") -> ImageSet:
    """Images whose class is the position of a bright square; (N, size, size, 3) uint8, class-sorted."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n_per_class * n_classes, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    half = size // 2
    for i, c in enumerate(labels):
        r, col = divmod(int(c) % 4, 2)
        images[i, r * half:(r + 1) * half, col * half:(col + 1) * half] += 150
    mean = tuple(float(m) for m in images.reshape(-1, 3).mean(0) / 255)
    std = tuple(float(s) for s in images.reshape(-1, 3).std(0) / 255)
    return ImageSet(images=images, labels=labels, classes=[f"c{k}" for k in range(n_classes)], mean=mean, std=std, name=name)


# A whole study in seconds: tiny data, a tiny CNN, two methods, one seed, two 3-way tasks.
MICRO_STUDY = [
    "launcher.kind=sequential", "seeds=[0]", "methods=[simclr,supce]", "data.tasks=[[0,1,2],[3,4,5]]",
    "data.image_size=8", "data.pretrain_per_class=16", "data.downstream_train_per_class=8", "data.downstream_test_per_class=4",
    "model.encoder=tiny_cnn", "model.width=4", "pretrain.epochs=2", "pretrain.checkpoint_every=1", "finetune.epochs=3",
    "analysis.landscape.grid=3", "analysis.landscape.samples=12",
    "analysis.sharpness.samples=12", "analysis.sharpness.iters=3", "analysis.sharpness.trace_samples=3",
    "analysis.robustness.samples=12", "analysis.robustness.eps_255=[0,4]", "analysis.robustness.pgd_steps=2",
    "report.claims.robustness_eps_max_255=4",
]


def micro_config(*overrides: str, preset: str = "quick"):
    """The MICRO_STUDY config with extra ``key=value`` overrides."""
    from contrastlab.config_checks import load_config

    return load_config(preset, MICRO_STUDY + list(overrides))


# The micro study as several modules use it whole (tests/conftest.py's shared_micro_study):
# MICRO_STUDY as is, with its report, on this many torch threads (its numbers depend on the count).
SHARED_STUDY_THREADS = 1
SHARED_SUMMARY = "summary.json"  # next to the run, written last: the run is complete once it exists


def run_shared_micro_study(root):
    """Run the micro study into ``root/run`` unless a complete run is there already; return ``root``.

    The caller holds a lock on ``root``. The study runs on SHARED_STUDY_THREADS torch threads (the
    previous count is restored) and its summary's ``ran``, ``skipped`` and ``report`` go to
    ``root/summary.json``; a run without that file (a failed earlier attempt) is started afresh."""
    import shutil
    from pathlib import Path

    import torch

    from contrastlab.study.runner import run_study
    from contrastlab.utils.io import write_json

    root = Path(root)
    if (root / SHARED_SUMMARY).exists():
        return root
    shutil.rmtree(root / "run", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(SHARED_STUDY_THREADS)
    try:
        summary = run_study(micro_config(), root / "run")
    finally:
        torch.set_num_threads(threads)
    report = None if summary.report is None else str(Path(summary.report).relative_to(root / "run"))
    record = {"ran": summary.ran, "skipped": summary.skipped, "report": report, "seconds": summary.seconds,
              "threads": SHARED_STUDY_THREADS}
    write_json(root / SHARED_SUMMARY, record)  # atomic: the file exists only once the run is complete
    return root


def copy_of_shared_study(root, dest):
    """A private copy of the shared micro study at ``dest``, and its StudySummary (run_dir: ``dest``).

    copy2 keeps the files' mtimes (and copytree the folders'): the manifests check size, mtime and sha256."""
    import shutil
    from pathlib import Path

    from contrastlab.study.runner import StudySummary
    from contrastlab.utils.io import read_json

    root, dest = Path(root), Path(dest)
    shutil.copytree(root / "run", dest, copy_function=shutil.copy2)
    record = read_json(root / SHARED_SUMMARY)
    report = None if record["report"] is None else dest / record["report"]
    return StudySummary(run_dir=dest, report=report, ran=record["ran"], skipped=record["skipped"], seconds=record["seconds"])


def run_single_stage(config, kind: str, out, *, method=None, seed=0, task=0, inputs=None, device=None):
    """Run one stage on its own into ``out`` (as ``contrastlab finetune/analyze`` do); return ``out``."""
    from pathlib import Path

    from contrastlab.study.context import unit_context
    from contrastlab.study.plan import single_unit
    from contrastlab.study.units import prepare_unit_folder, run_stage

    out = Path(out)
    unit = single_unit(config, kind, method=method, seed=seed, task=task, inputs={k: str(Path(v).resolve()) for k, v in (inputs or {}).items()})
    folder = prepare_unit_folder(unit, out)
    run_stage(unit_context(unit, config, out, folder, device=device))
    return out


def run_cli(monkeypatch, capsys, *args):
    """Run ``contrastlab ARGS`` in this process; return (exit code, stdout, stderr)."""
    import sys

    from contrastlab import cli

    monkeypatch.setattr(sys, "argv", ["contrastlab", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, pattern):
    """A non-zero exit with exactly one line on stderr, ``error: ...`` matching ``pattern``, no traceback."""
    import re

    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err


def tiny_pretrain(data, out, *, method: str, seed: int = 0, precision: str = "fp32", device: str = "cpu", **settings):
    """Pretrain with the :class:`~contrastlab.train.pretrain.Pretrainer` recipe on small settings given as
    keyword arguments: ``encoder``, ``width``, ``projection_dim`` (model section), ``lr`` (a number, this
    method's), ``temperature`` (a number, this method's), and any other ``pretrain`` field, including a
    method's own section as a dict (e.g. ``byol={"projector_hidden": 16}``). Returns the final encoder's path."""
    import dataclasses

    from contrastlab.config import ModelConfig, PretrainConfig
    from contrastlab.train.pretrain import Pretrainer, RunSpec

    model = ModelConfig(**{k: settings.pop(k) for k in ("encoder", "width", "projection_dim") if k in settings})
    pretrain = PretrainConfig()
    if "lr" in settings:
        pretrain.lr = {**pretrain.lr, method: settings.pop("lr")}
    if "temperature" in settings:
        pretrain.temperature = {**pretrain.temperature, method: settings.pop("temperature")}
    for name, value in settings.items():
        if isinstance(value, dict):
            value = dataclasses.replace(getattr(pretrain, name), **value)
        setattr(pretrain, name, value)
    return Pretrainer(pretrain, model, device, precision).run(data, out, RunSpec(method, seed))


# Every method's own section at test sizes (tiny projectors, a small queue, no warm-up), for tiny_pretrain(**...).
_TINY_OWN = {"projector_hidden": 16, "projector_out": 8, "warmup_epochs": 0}
TINY_METHOD_SETTINGS = {
    "simclr": {}, "supcon": {}, "supce": {},
    "byol": {"byol": {**_TINY_OWN, "predictor_hidden": 16}},
    "simsiam": {"simsiam": {**_TINY_OWN, "predictor_hidden": 8}},
    "barlow_twins": {"barlow_twins": _TINY_OWN},
    "vicreg": {"vicreg": _TINY_OWN},
    "mocov2": {"mocov2": {**_TINY_OWN, "queue_size": 48}},
}


def rank_share(rank: int, samples: int, world: int) -> slice:
    """The rows of a global batch of ``samples`` that rank ``rank`` of ``world`` holds."""
    return slice(rank * samples // world, (rank + 1) * samples // world)


def run_on_ranks(work, tmp_path, world: int = 2) -> list[dict]:
    """Run ``work(rank) -> {name: tensor}`` on ``world`` CPU processes joined by gloo (a module-level
    function, so the spawned processes can import it); its dicts, by rank."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(work, world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def _rank_main(rank: int, work, world: int, init_file: str, out_dir: str) -> None:
    import torch
    import torch.distributed as torch_dist

    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(work(rank), f"{out_dir}/rank{rank}.pt")
        torch_dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        torch_dist.destroy_process_group()
