"""Running one unit of the study: load its inputs, call the stage, write its folder.

Each ``run_<kind>`` reads only files of the units it depends on and writes only into its
own folder; :func:`run_unit` writes ``done.json`` (the unit's completion marker) last.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import encoder_from_checkpoint, read_checkpoint, subset, load_state
from ..config import RobustnessConfig, StudyConfig
from ..distributed import local_device
from ..data import ImageSet, load_dataset, make_task
from ..models import architecture, build_encoder, classifier, linear_classifier
from ..train.finetune import finetune, to_tensor
from ..train.pretrain import pretrain, random_encoder
from ..utils.io import load_array, read_json, remove_orphaned_temporaries, save_array, write_csv, write_json
from ..utils.provenance import resolve_device
from .plan import RANDOM, Unit

log = logging.getLogger(__name__)


# ---- inputs -----------------------------------------------------------------------------

def pretrain_set(config: StudyConfig) -> ImageSet:
    d = config.data
    return load_dataset(d.pretrain, "train", d.root, image_size=d.image_size, channels=d.channels, per_class=d.pretrain_per_class, seed=d.seed)


def task_sets(config: StudyConfig, task: int) -> tuple[ImageSet, ImageSet]:
    """The (train, val) ImageSets of task ``task``: its classes, relabelled 0..k-1, class-ordered."""
    d = config.data
    classes = d.tasks[task]
    train = load_dataset(d.downstream, "train", d.root, image_size=d.image_size, channels=d.channels, per_class=d.downstream_train_per_class, seed=d.seed)
    test = load_dataset(d.downstream, "test", d.root, image_size=d.image_size, channels=d.channels, per_class=d.downstream_test_per_class, seed=d.seed)
    return make_task(train, classes), make_task(test, classes)


def expected_architecture(config: StudyConfig, in_channels: int) -> dict:
    probe = build_encoder(config.model.encoder, width=config.model.width, in_channels=in_channels)
    return architecture(config.model.encoder, config.model.width, in_channels, probe.feature_dim)


def balanced_subset(labels: np.ndarray, n: int | None) -> np.ndarray:
    """Indices of ``n`` samples taken evenly from each class (the first ones of each), in order."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes]))


def load_classifier(encoder_path: Path, probe_path: Path) -> tuple[torch.nn.Module, dict]:
    """Encoder + trained probe as one classifier in eval mode, and the probe's sidecar."""
    tensors, meta = read_checkpoint(probe_path)
    encoder, _ = encoder_from_checkpoint(encoder_path, meta.get("architecture"))
    if any(k.startswith("encoder.") for k in tensors):  # full fine-tuning also trained the encoder
        load_state(encoder, subset(tensors, "encoder"), probe_path, meta.get("architecture"))
    probe = linear_classifier(encoder.feature_dim, len(meta["task_classes"]))
    load_state(probe, subset(tensors, "probe"), probe_path)
    return classifier(encoder, probe).eval(), meta


def trained_classifier(run_dir: Path, unit: Unit) -> torch.nn.Module:
    """The classifier that the finetune unit behind analysis ``unit`` trained."""
    encoder_path = run_dir / f"pretrain/{unit.method}/seed{unit.seed}" / "encoder.safetensors"
    return load_classifier(encoder_path, run_dir / unit.deps[0] / "probe.safetensors")[0]


def analysis_data(config: StudyConfig, task: int, samples: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels (n, C, H, W) in [0, 1] and labels (n,) of a class-balanced subset of the analysis split."""
    train, val = task_sets(config, task)
    split = train if config.finetune.analysis_split == "train" else val
    keep = balanced_subset(split.labels, samples)
    return to_tensor(split.images[keep]), torch.from_numpy(split.labels[keep])


# ---- stages -----------------------------------------------------------------------------

def run_pretrain(unit: Unit, config: StudyConfig, folder: Path, record: dict, progress: bool) -> None:
    data = pretrain_set(config)
    if unit.method == RANDOM:
        random_encoder(data, folder / "encoder.safetensors", seed=unit.seed, encoder=config.model.encoder, width=config.model.width, record=record)
        return
    p = config.pretrain
    pretrain(
        data, folder, method=unit.method, seed=unit.seed, encoder=config.model.encoder, width=config.model.width,
        projection_dim=config.model.projection_dim, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr[unit.method],
        momentum=p.momentum, weight_decay=p.weight_decay, min_lr_ratio=p.min_lr_ratio, warmup_epochs=p.warmup_epochs,
        temperature=p.temperature.get(unit.method, 0.07), base_temperature=p.base_temperature, loss_form=p.loss_form, views=p.views,
        crop_scale_min=p.crop_scale_min, checkpoint_epochs=p.checkpoint_epochs, checkpoint_every=p.checkpoint_every,
        sync_bn=p.sync_bn, device=local_device(config.device), record=record, progress=progress,
    )


def run_finetune(unit: Unit, config: StudyConfig, folder: Path, run_dir: Path, record: dict, progress: bool) -> None:
    train, val = task_sets(config, unit.task)
    f = config.finetune
    finetune(
        run_dir / unit.deps[0] / "encoder.safetensors", train, val, folder,
        task_classes=config.data.tasks[unit.task], analysis_split=f.analysis_split,
        expected_architecture=expected_architecture(config, train.images.shape[-1]), knn_k=f.knn_k, record=record,
        device=resolve_device(config.device), progress=progress,
        mode=f.mode, epochs=f.epochs, batch_size=f.batch_size, lr=f.lr, momentum=f.momentum,
        weight_decay=f.weight_decay, min_lr_ratio=f.min_lr_ratio, seed=unit.seed,
    )


def _parameter_subset(name: str) -> str:
    """Config value -> landscape/sharpness selector: "probe" is module "1" of classifier(encoder, probe)."""
    return "all" if name == "all" else "1"


def run_landscape(unit: Unit, config: StudyConfig, folder: Path, run_dir: Path, record: dict, progress: bool) -> None:
    from ..analysis.landscape import loss_surface, random_directions, save_surface

    s = config.analysis.landscape
    model = trained_classifier(run_dir, unit)
    images, labels = analysis_data(config, unit.task, s.samples)
    directions = random_directions(model, n=2, seed=s.seed, params=_parameter_subset(s.params))
    axis = np.linspace(-s.span, s.span, s.grid)
    surface = loss_surface(model, images, labels, directions, axis, axis, batch_size=s.batch_size,
                           resume_path=folder / "partial.npy", progress=progress)
    save_surface(folder / "surface.npy", surface, {
        **record, "method": unit.method, "seed": unit.seed, "task_classes": config.data.tasks[unit.task],
        "split": config.finetune.analysis_split, "samples": len(labels), "params": s.params, "direction_seed": s.seed,
        "layout": "values[0] = loss, values[1] = accuracy; rows = y, columns = x",
    })
    for leftover in ("partial.npy", "partial.json"):  # the resume file of the grid, now complete
        (folder / leftover).unlink(missing_ok=True)


def run_sharpness(unit: Unit, config: StudyConfig, folder: Path, run_dir: Path, record: dict, progress: bool) -> None:
    from ..analysis.sharpness import hessian_top_eigenvalues, hessian_trace

    s = config.analysis.sharpness
    model = trained_classifier(run_dir, unit)
    images, labels = analysis_data(config, unit.task, s.samples)
    params = _parameter_subset(s.params)
    eigenvalues = hessian_top_eigenvalues(model, images, labels, k=s.top_k, iters=s.iters, seed=s.seed, params=params, progress=progress)
    trace = hessian_trace(model, images, labels, samples=s.trace_samples, seed=s.seed, params=params, progress=progress)
    write_json(folder / "sharpness.json", {
        **record, "kind": "sharpness", "method": unit.method, "seed": unit.seed, "task_classes": config.data.tasks[unit.task],
        "split": config.finetune.analysis_split, "samples": len(labels), "params": s.params,
        "top_eigenvalues": [float(v) for v in eigenvalues], "trace": float(trace.value),
        "trace_std_error": float(trace.std_error), "hessian_vector_products": int(trace.matvecs),
    })


def robustness_curves(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: RobustnessConfig,
                      folder: Path, meta: dict, progress: bool = False) -> list[Path]:
    """Write ``<attack>.csv`` (eps, accuracy, loss) per attack and ``robustness.json``; return the paths."""
    from ..analysis.attacks import robust_accuracy

    eps = np.asarray(settings.eps_255, dtype=np.float64) / 255
    paths = []
    for attack in settings.attacks:
        kwargs = {"space": settings.space}
        if attack == "pgd":
            kwargs.update(steps=settings.pgd_steps, seed=settings.seed)
        curve = robust_accuracy(model, images, labels, eps, attack=attack, batch_size=settings.batch_size, progress=progress, **kwargs)
        rows = [{"eps": f"{e:.8f}", "eps_255": f"{e * 255:g}", "accuracy": f"{acc:.6f}", "loss": f"{loss:.6f}"}
                for e, acc, loss in zip(eps, curve.accuracy, curve.loss)]
        paths.append(write_csv(folder / f"{attack}.csv", rows))
    paths.append(write_json(folder / "robustness.json", {
        **meta, "kind": "robustness", "samples": len(labels), "attacks": list(settings.attacks),
        "space": settings.space, "pgd_steps": settings.pgd_steps, "eps_255": list(settings.eps_255),
    }))
    return paths


def run_robustness(unit: Unit, config: StudyConfig, folder: Path, run_dir: Path, record: dict, progress: bool) -> None:
    s = config.analysis.robustness
    images, labels = analysis_data(config, unit.task, s.samples)
    meta = {**record, "method": unit.method, "seed": unit.seed, "task_classes": config.data.tasks[unit.task],
            "split": config.finetune.analysis_split}
    robustness_curves(trained_classifier(run_dir, unit), images, labels, s, folder, meta, progress)


def robustness_from_files(config: StudyConfig, encoder_path: Path, probe_path: Path, out: Path, *,
                          eps_255: list[float], attacks: list[str], progress: bool = False) -> list[Path]:
    """The robustness analysis of one encoder + probe pair given as files (the CLI's ``analyze robustness``)."""
    model, meta = load_classifier(Path(encoder_path), Path(probe_path))
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, tasks=[list(meta["task_classes"])]))
    settings = dataclasses.replace(config.analysis.robustness, eps_255=list(eps_255), attacks=list(attacks))
    images, labels = analysis_data(config, 0, settings.samples)
    record = {"method": meta.get("method"), "seed": meta.get("pretrain_seed"), "task_classes": meta["task_classes"],
              "split": config.finetune.analysis_split, "encoder_checkpoint": str(encoder_path), "probe_checkpoint": str(probe_path)}
    return robustness_curves(model, images, labels, settings, Path(out), record, progress)


def run_geometry(unit: Unit, config: StudyConfig, folder: Path, run_dir: Path, record: dict, progress: bool) -> None:
    from ..analysis.inpca import inpca
    from ..analysis.progress import progress as progress_of

    g = config.analysis.geometry
    rows, trajectories, points, labels = [], [], [], None
    for dep in unit.deps:
        snapshots, meta = load_array(run_dir / dep / "snapshots.npy")
        labels = np.asarray(meta["labels"])
        t_w = progress_of(snapshots, labels)
        t_raw = progress_of(snapshots, labels, raw_probabilities=True) if g.raw_probabilities else None
        run_rows = [{"method": meta["method"], "seed": meta["pretrain_seed"], "epoch": epoch, "t_w": float(t_w[epoch]),
                     **({"t_w_raw": float(t_raw[epoch])} if t_raw is not None else {})} for epoch in range(len(snapshots))]
        rows += run_rows
        # The random-init baseline's probes wander far in prediction space; in the InPCA map they
        # would set the axes and squeeze the pretrained methods into a corner (the paper's map
        # has only the three methods). Its progress t_w is still reported.
        if meta["method"] != RANDOM:
            trajectories.append(snapshots)
            points += [{"method": r["method"], "seed": r["seed"], "epoch": r["epoch"]} for r in run_rows]
    write_csv(folder / "progress.csv", rows)
    if not trajectories:
        log.info("InPCA skipped for %s: no pretrained method's probes", unit.id)
        return

    n_classes = trajectories[0].shape[-1]
    truth = np.eye(n_classes, dtype=np.float32)[labels][None]  # P*, (1, N, C)
    stacked = np.concatenate(trajectories + [truth])  # (runs*(E+1) + 1, N, C)
    result = inpca(stacked, n_components=g.n_components)
    points.append({"method": "truth", "seed": None, "epoch": None})
    save_array(folder / "inpca.npy", result.coords, {
        **record, "kind": "inpca", "task_classes": config.data.tasks[unit.task], "split": config.finetune.analysis_split,
        "points": points, "eigenvalues": np.asarray(result.eigenvalues).tolist(), "explained": np.asarray(result.explained).tolist(),
    })


RUNNERS = {"pretrain": run_pretrain, "finetune": run_finetune, "landscape": run_landscape,
           "sharpness": run_sharpness, "robustness": run_robustness, "geometry": run_geometry}


def is_done(unit: Unit, run_dir: Path) -> bool:
    marker = unit.folder(run_dir) / "done.json"
    if not marker.exists():
        return False
    try:
        return read_json(marker).get("key") == unit.key
    except (OSError, ValueError):
        return False


def prepare_unit_folder(unit: Unit, run_dir: Path) -> Path:
    """Create the unit's folder and mark it as this unit's (``unit.json``). Partial work of another
    configuration (reachable only with --force) is removed first: it must not be resumed. Of this
    unit's own partial work, only the temporaries of writes cut short by a kill are removed."""
    folder = unit.folder(run_dir)
    marker = folder / "unit.json"
    if folder.exists() and (not marker.exists() or read_json(marker).get("key") != unit.key):
        shutil.rmtree(folder)
    elif folder.exists():
        remove_orphaned_temporaries(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"unit": unit.id, "key": unit.key})
    return folder


def run_unit(unit: Unit, config: StudyConfig, run_dir: Path, progress: bool = False) -> float:
    """Run ``unit`` (resuming its own partial work), write its ``done.json``; return seconds taken."""
    folder = prepare_unit_folder(unit, run_dir)
    record = {"unit": unit.id, "unit_key": unit.key, "study": config.name}
    started = time.perf_counter()
    runner = RUNNERS[unit.kind]
    if unit.kind == "pretrain":
        runner(unit, config, folder, record, progress)
    else:
        runner(unit, config, folder, run_dir, record, progress)
    seconds = time.perf_counter() - started
    write_json(folder / "done.json", {"unit": unit.id, "kind": unit.kind, "key": unit.key, "seconds": seconds, "finished": time.time()})
    return seconds
