"""Sharpness stage: top Hessian eigenvalues and trace at a trained classifier, raw and scale-invariant."""

from __future__ import annotations

from ... import rundir
from ...analysis.hessian import HessianSettings
from ...analysis.sharpness import SharpnessSettings, hessian_sharpness
from ...utils.io import write_json
from ..context import StageContext
from ..inputs import probe_and_data
from .landscape import PARAMETER_SUBSETS


def run(ctx: StageContext) -> None:
    s = ctx.settings
    model, images, labels, meta = probe_and_data(ctx, s.samples)
    result = {**meta, "kind": "sharpness", "params": s.params, "precision": ctx.precision}
    # The raw Hessian always (the original's number); the filter-normalized one, S H S, when asked:
    # BatchNorm makes each filter scale-free, so raw curvature also measures weight norms.
    # One call, so both normalizations share the Hessian's first-backward graphs.
    hessian = HessianSettings(params=PARAMETER_SUBSETS[s.params], batch_size=ctx.batch_size(s.batch_size), precision=ctx.precision)
    settings = SharpnessSettings(normalizations=("none", "filter") if s.normalization == "filter" else ("none",), k=s.top_k,
                                 iters=s.iters, tol=s.tol, trace_samples=s.trace_samples, seed=s.seed, hessian=hessian,
                                 progress=ctx.progress)
    estimates = hessian_sharpness(model, (images, labels), settings)
    for normalization, (top, trace) in estimates.items():
        values = {"top_eigenvalues": [float(v) for v in top.values], "lanczos_steps": int(top.iterations), "lanczos_tol": top.tol,
                  "lanczos_converged": bool(top.converged),
                  "trace": float(trace.value), "trace_std_error": float(trace.std_error), "hessian_vector_products": int(trace.matvecs)}
        if normalization == "none":
            result.update(values, trace_estimator="hutch++")
        else:
            # hessian_sharpness takes tr(S H S) = tr(diag(S²) H) from the raw trace's products and probes.
            result["normalized"] = {**values, "normalization": "filter", "trace_estimator": "hutch++ on the raw Hessian's products, tr(diag(S²) H)"}
    write_json(ctx.folder / rundir.SHARPNESS, result)
