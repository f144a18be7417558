"""Representation stage (beyond the paper): how similar the encoders of a study are, on one task.

Features of every pretrained encoder (each method and seed, and the random-init baseline) on a
class-balanced subset of the task's analysis split, and linear CKA between every pair. Writes
``cka.npy`` (+ .json: names, methods, seeds, samples) and ``cka.csv`` (one row per ordered pair),
and ``features.csv``: each encoder's effective rank on these samples.
"""

from __future__ import annotations

from ...analysis.representation import cka_matrix, effective_rank
from ...train.finetune import extract_features
from ...utils.io import save_array, write_csv
from ..context import StageContext
from ..encoders import load_method_encoder
from ..inputs import analysis_split, task_sets
from ..plan import encoder_sources


def encoder_name(meta: dict) -> str:
    """"simclr/seed0": how a CKA matrix names an encoder."""
    return f"{meta.get('method')}/seed{meta.get('seed')}"


def run(ctx: StageContext) -> None:
    s = ctx.settings
    classes = ctx.config.data.tasks[ctx.unit.task]
    split = ctx.config.finetune.analysis_split
    images, labels = analysis_split(ctx.config.data, classes, split, s.samples)
    features, encoders = {}, []
    paths, sources = ctx.inputs.get("encoder", []), encoder_sources(ctx.config)
    if len(paths) != len(sources):
        raise ValueError(f"unit {ctx.unit.id} reads {len(paths)} encoders, the study has {len(sources)}")
    task_train = task_sets(ctx.config.data, classes)[0]  # the statistics a foreign encoder without mean/std is given
    for path, (method, seed, _) in zip(paths, sources):
        # named by the study (an external checkpoint's own sidecar or source would name it otherwise)
        encoder, meta = load_method_encoder(ctx.config, method, path, task_train)
        name = encoder_name({"method": method, "seed": seed})
        features[name] = extract_features(encoder.eval().to(ctx.device), images, device=ctx.device)
        encoders.append({"name": name, "method": method, "seed": seed, "path": str(path), "source": meta["encoder"]})
    ctx.manifest["encoders"] = [{"method": e["method"], "seed": e["seed"], **e["source"]} for e in encoders]
    names, matrix = cka_matrix(features, debiased=s.debiased)
    save_array(ctx.folder / "cka.npy", matrix, {
        **ctx.record, "kind": "cka", "names": names, "encoders": encoders, "task_classes": list(classes), "split": split,
        "samples": len(labels), "debiased": s.debiased, "layout": "matrix[i, j] = linear CKA(names[i], names[j])",
    })
    by_name = {e["name"]: e for e in encoders}
    write_csv(ctx.folder / "cka.csv", [
        {"a": a, "b": b, "method_a": by_name[a]["method"], "seed_a": by_name[a]["seed"], "method_b": by_name[b]["method"],
         "seed_b": by_name[b]["seed"], "cka": float(matrix[i, j])}
        for i, a in enumerate(names) for j, b in enumerate(names)])
    write_csv(ctx.folder / "features.csv", [
        {"name": e["name"], "method": e["method"], "seed": e["seed"], "effective_rank": effective_rank(features[e["name"]]),
         "dim": int(features[e["name"]].shape[1])} for e in encoders])
