"""Does synth10 -> synth100 transfer? A quick proxy for the study's Table 1.

Probes the four paper task lists as synth100 labels with logistic regression on
(a) raw pixels, (b) a random-init CIFAR ResNet-18 (width 8), (c) the same network after a
short supervised cross-entropy pretraining on synth10 with random-resized-crop + flip.
Prints per-task test accuracy and the mean, plus generation speed.

    python benchmarks/synth_transfer.py --image-size 32 --epochs 4
    python benchmarks/synth_transfer.py --image-size 16 --epochs 8
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import Stopwatch
from contrastlab.data import load_dataset, make_task
from contrastlab.models import linear_classifier, resnet18

PAPER_TASKS = [[0, 1, 2, 3, 4], [6, 11, 16, 21, 26], [56, 58, 62, 66, 68], [95, 96, 97, 98, 99]]


def crop_flip(x: torch.Tensor, generator: torch.Generator, scale_min: float = 0.2) -> torch.Tensor:
    """Random resized crop (area scale_min..1, aspect 3/4..4/3) and horizontal flip, per sample; x (B, C, H, W)."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(scale_min, 1.0, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def features(encoder: torch.nn.Module, images: np.ndarray, batch: int = 500) -> np.ndarray:
    encoder.eval()
    return torch.cat([encoder(to_tensor(images[i:i + batch])) for i in range(0, len(images), batch)]).numpy()


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float) -> torch.nn.Linear:
    """Multinomial logistic regression, full-batch L-BFGS on mean CE + l2 * |W|^2."""
    model = torch.nn.Linear(x.shape[1], n_classes)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Standardize, pick the L2 strength on a held-out fifth of train, refit on all train; test accuracy."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).float()
    xt = torch.from_numpy((test_x - mean) / std).float()
    y, yt = torch.from_numpy(train_y), torch.from_numpy(test_y)
    n_classes = int(y.max()) + 1
    held_out = torch.arange(len(y)) % 5 == 0
    best_l2, best_acc = None, -1.0
    for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
        model = _fit_logistic(x[~held_out], y[~held_out], n_classes, l2)
        with torch.no_grad():
            acc = float((model(x[held_out]).argmax(1) == y[held_out]).float().mean())
        if acc > best_acc:
            best_l2, best_acc = l2, acc
    model = _fit_logistic(x, y, n_classes, best_l2)
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).float().mean())


def pretrain_supce(images: np.ndarray, labels: np.ndarray, mean, std, width: int, epochs: int, seed: int) -> tuple[torch.nn.Module, float, float]:
    """Supervised CE on synth10 with crop+flip; returns (encoder, seconds, last-epoch train accuracy)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    encoder = resnet18(width=width, mean=mean, std=std)
    head = linear_classifier(encoder.feature_dim, 10)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.2, momentum=0.9, weight_decay=1e-4, nesterov=True)
    x_all, y_all = to_tensor(images), torch.from_numpy(labels)
    batch = 256
    steps_per_epoch = len(images) // batch
    total_steps = epochs * steps_per_epoch
    start, step, correct, seen = time.time(), 0, 0, 0
    encoder.train()
    head.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        correct = seen = 0
        for i in range(steps_per_epoch):
            for group in optimizer.param_groups:  # cosine schedule per step
                group["lr"] = 0.2 * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            idx = order[i * batch:(i + 1) * batch]
            x = crop_flip(x_all[idx], generator)
            logits = head(encoder(x))
            loss = F.cross_entropy(logits, y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += int((logits.argmax(1) == y_all[idx]).sum())
            seen += len(idx)
            step += 1
    return encoder, time.time() - start, correct / max(seen, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--pretrain-per-class", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-pretrain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = args.image_size

    with Stopwatch() as watch:
        pre = load_dataset("synth10", "train", image_size=size, per_class=args.pretrain_per_class)
    t_pre = watch.seconds
    with Stopwatch() as watch:
        down_train = load_dataset("synth100", "train", image_size=size, per_class=args.train_per_class)
        down_test = load_dataset("synth100", "test", image_size=size, per_class=args.test_per_class)
    t_down = watch.seconds
    n_generated = len(pre) + len(down_train) + len(down_test)
    print(f"generated {n_generated} images of {size}x{size} in {t_pre + t_down:.1f}s "
          f"({n_generated / (t_pre + t_down):.0f} images/s; synth10 {len(pre) / t_pre:.0f}/s, "
          f"synth100 {(len(down_train) + len(down_test)) / t_down:.0f}/s)")
    tasks = [(make_task(down_train, t), make_task(down_test, t)) for t in PAPER_TASKS]

    results: dict[str, list[list[float]]] = {}

    def evaluate(label: str, encode) -> None:
        accs = [probe(encode(tr.images), tr.labels, encode(te.images), te.labels) for tr, te in tasks]
        results.setdefault(label, []).append(accs)
        print(f"{label:>14}: " + "  ".join(f"{a:.3f}" for a in accs) + f"   mean {np.mean(accs):.3f}", flush=True)

    print(f"tasks: {PAPER_TASKS}; {args.train_per_class} train / {args.test_per_class} test per class")
    evaluate("raw pixels", lambda im: im.reshape(len(im), -1).astype(np.float32) / 255.0)
    for seed in args.seeds:
        torch.manual_seed(seed)
        random_encoder = resnet18(width=args.width, mean=pre.mean, std=pre.std)
        evaluate(f"random s{seed}", lambda im: features(random_encoder, im))
        if args.skip_pretrain:
            continue
        encoder, seconds, train_acc = pretrain_supce(pre.images, pre.labels, pre.mean, pre.std, args.width, args.epochs, seed)
        print(f"  SupCE seed {seed}: {args.epochs} epochs of {len(pre)} images in {seconds:.0f}s "
              f"({args.epochs * len(pre) / seconds:.0f} images/s), last-epoch train acc {train_acc:.3f}")
        evaluate(f"SupCE s{seed}", lambda im: features(encoder, im))
    summary = {k: {"per_task": np.mean(v, axis=0).round(4).tolist(), "mean": round(float(np.mean(v)), 4)} for k, v in results.items()}
    print(json.dumps({"image_size": size, "width": args.width, "epochs": args.epochs, "results": summary}))


if __name__ == "__main__":
    main()
