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
from ..encoders import load_encoder
from ..inputs import analysis_split


def encoder_name(meta: dict) -> str:
    """"simclr/seed0": how a CKA matrix names an encoder."""
    return f"{meta.get('method')}/seed{meta.get('seed')}"


def run(ctx: StageContext) -> None:
    s = ctx.settings
    classes = ctx.config.data.tasks[ctx.unit.task]
    split = ctx.config.finetune.analysis_split
    images, labels = analysis_split(ctx.config.data, classes, split, s.samples)
    features, encoders = {}, []
    for path in ctx.inputs.get("encoder", []):
        encoder, meta = load_encoder(path)
        name = encoder_name(meta)
        features[name] = extract_features(encoder.eval().to(ctx.device), images, device=ctx.device)
        encoders.append({"name": name, "method": meta.get("method"), "seed": meta.get("seed"), "path": str(path)})
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
