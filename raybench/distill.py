"""Distil a face CNN from a teacher on a folder of face images: schoneveld2021's visual stage, run on
its own as the paper did (a student trained on face-image datasets against a teacher, then used as
the per-frame feature extractor), before any audio-visual training.

    python -m raybench.distill --teacher teacher.pt --images /data/faces --out student.pt

``--teacher`` is a TorchScript file mapping face images (N, 3, H, W) in [-1, 1] to class logits
(N, C), as schoneveld2021's ``distill_teacher``. The images are every .jpg/.jpeg/.png/.bmp file under
``--images`` (any depth); with ``--labels folders`` the name of each image's top folder under
``--images`` is its class, and with ``--labels affectnet --annotations training.csv`` AffectNet as
released (:func:`affectnet_images`: its classes and face boxes); with labels the loss is
alpha T^2 KL(teacher || student) + (1 - alpha) CE on those classes (through a second head); without,
the KL term alone. The student is raybench's
frame encoder (``--backbone``: small_cnn, ir50 or a timm name) with a head over the teacher's
classes; the file written holds the part that ``method.weights`` loads (small_cnn: the whole
encoder, its output ``--dim`` wide; ir50 and timm: the backbone, its embedding then projected to
``visual_dim`` by the method), so the line printed at the end trains schoneveld2021 on it.

A single process (CPU or one GPU), plain torch: this stage reads still images, not the clip store,
and has no trials to schedule, so it runs without Ray.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class DistillInputError(ValueError):
    """A setting or input file the distillation cannot use, found before training starts."""


def find_images(root: str | Path, labels: str = "none") -> tuple[list[Path], list[int], list[str]]:
    """The images under ``root`` (sorted), their class indices and the class names (``labels:
    folders``: each image's top folder under ``root``; ``none``: no classes). Nothing is read yet: an
    unreadable image is found, counted and named while training."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DistillInputError(f"--images {str(root)!r} is not a folder of face images")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DistillInputError(f"--images {str(root)!r} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    if labels == "none":
        return paths, [-1] * len(paths), []
    top = [p.relative_to(root).parts for p in paths]
    loose = [str(p) for p, parts in zip(paths, top) if len(parts) < 2]
    if loose:
        raise DistillInputError(f"--labels folders: {len(loose)} images are not in a class folder under "
                                f"{str(root)!r} (e.g. {loose[:3]}); expected {str(root)}/<class>/<image>")
    classes = sorted({parts[0] for parts in top})
    index = {c: i for i, c in enumerate(classes)}
    return paths, [index[parts[0]] for parts in top], classes


# AffectNet's expression codes 0-7 (8 None, 9 Uncertain, 10 Non-Face are not expressions)
AFFECTNET_CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
AFFECTNET_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")


def affectnet_images(root: str | Path, annotations: str | Path, n_classes: int = 8):
    """AffectNet as released: ``annotations`` is its training.csv or validation.csv (one row per image:
    ``subDirectory_filePath`` under ``root``, the Manually_Annotated_Images folder, the face box
    ``face_x, face_y, face_width, face_height`` and ``expression``). Returns the images, their
    classes, their face boxes (x, y, w, h), the class names, and what was left out and why (codes
    8-10, contempt with ``n_classes`` 7, images not under ``root``)."""
    import pandas as pd

    root, ann = Path(root).expanduser(), Path(annotations).expanduser()
    if not root.is_dir():
        raise DistillInputError(f"--images {str(root)!r} is not a folder (AffectNet's Manually_Annotated_Images)")
    if not ann.is_file():
        raise DistillInputError(f"--annotations {str(ann)!r} does not exist (AffectNet's training.csv or "
                                "validation.csv)")
    if n_classes not in (7, 8):
        raise DistillInputError(f"--affectnet-classes must be 7 or 8, got {n_classes}")
    try:
        df = pd.read_csv(ann, dtype={"subDirectory_filePath": str})
    except Exception as e:
        raise DistillInputError(f"--annotations {str(ann)!r} is not a CSV file: {e}") from None
    missing = [c for c in AFFECTNET_COLUMNS if c not in df.columns]
    if missing:
        raise DistillInputError(f"--annotations {str(ann)!r} lacks the columns {missing}; expected AffectNet's "
                                f"header ({','.join(AFFECTNET_COLUMNS)}, ...)")
    left_out: dict[str, list[str]] = {}
    paths, targets, boxes = [], [], []
    try:
        codes = df["expression"].astype(int)
        box = df[list(AFFECTNET_COLUMNS[1:5])].astype(int)
    except (ValueError, TypeError) as e:
        raise DistillInputError(f"--annotations {str(ann)!r}: expression and face box columns must be whole "
                                f"numbers: {e}") from None
    df = df.assign(expression=codes, **{c: box[c] for c in box})
    for row in df.itertuples(index=False):
        name, code = str(row.subDirectory_filePath), int(row.expression)
        if code >= n_classes:
            why = "contempt (--affectnet-classes 7)" if code == 7 else "no expression (codes 8-10)"
            left_out.setdefault(why, []).append(name)
            continue
        p = root / name
        if not p.is_file():
            left_out.setdefault("image not under --images", []).append(name)
            continue
        paths.append(p)
        targets.append(code)
        boxes.append((int(row.face_x), int(row.face_y), int(row.face_width), int(row.face_height)))
    if not paths:
        raise DistillInputError(f"--annotations {str(ann)!r}: no image to use under {str(root)!r} ("
                                + ", ".join(f"{len(v)} {k}" for k, v in left_out.items()) + ")")
    return paths, targets, boxes, list(AFFECTNET_CLASSES[:n_classes]), left_out


class FaceImages(torch.utils.data.Dataset):
    """Images (cut to their face box (x, y, w, h) when ``boxes`` gives one) resized to ``size`` x ``size``,
    as (3, H, W) float in [-1, 1] (what the methods' frames are); an unreadable image, or a box outside
    it, is returned as None and counted by the caller."""

    def __init__(self, paths: list[Path], targets: list[int], size: int, boxes: list | None = None):
        self.paths, self.targets, self.size, self.boxes = paths, targets, size, boxes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import cv2

        img = cv2.imread(str(self.paths[i]), cv2.IMREAD_COLOR)
        if img is not None and self.boxes is not None:
            x, y, w, h = self.boxes[i]
            img = img[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)]
        if img is None or not img.size:
            return None, self.targets[i], i
        img = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (self.size, self.size), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return x, self.targets[i], i


def _collate(items):
    ok = [it for it in items if it[0] is not None]
    bad = [it[2] for it in items if it[0] is None]
    if not ok:
        return None, None, bad
    return torch.stack([it[0] for it in ok]), torch.tensor([it[1] for it in ok]), bad


class Student(nn.Module):
    """A frame encoder (what ``method.weights`` loads: :attr:`loadable`) and its heads: one over the
    teacher's classes, one over the folders' classes when there are labels."""

    def __init__(self, backbone: str, dim: int, width: int, n_teacher: int, n_classes: int):
        super().__init__()
        from raybench.nn.encoders import build_frame_encoder

        self.encoder = build_frame_encoder(backbone, dim, None, width)
        self.loadable = getattr(self.encoder, "backbone", self.encoder)  # timm/ir50: the backbone; small_cnn: itself
        self.head = nn.Linear(self.encoder.out_dim, n_teacher)
        self.classes = nn.Linear(self.encoder.out_dim, n_classes) if n_classes else None

    def forward(self, x: torch.Tensor):
        e = self.encoder(x.unsqueeze(1)).squeeze(1)  # (N, D): the encoders take (B, T, 3, H, W)
        return self.head(e), (self.classes(e) if self.classes is not None else None)


def teacher_logits(teacher, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t = teacher(x)
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[0] != x.shape[0]:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise DistillInputError(f"the teacher must map images (N, 3, H, W) to logits (N, C); it gave {shape} for "
                                f"{tuple(x.shape)}")
    return t.float()


def evaluate(student: Student, teacher, loader, temperature: float, device) -> dict[str, float]:
    """Over the loader's images: the mean distillation loss, how often the student's top class is the
    teacher's and, with labels, the class head's accuracy."""
    from raybench.nn.losses import distillation_loss

    student.eval()
    kl, agree, right, n = 0.0, 0, 0, 0
    with torch.no_grad():
        for x, y, _ in loader:
            if x is None:
                continue
            x = x.to(device)
            t = teacher_logits(teacher, x)
            s, c = student(x)
            kl += float(distillation_loss(s, t, temperature)) * len(x)
            agree += int((s.argmax(-1) == t.argmax(-1)).sum())
            if c is not None:
                right += int((c.argmax(-1).cpu() == y).sum())
            n += len(x)
    out = {"kl": kl / max(n, 1), "agreement": agree / max(n, 1), "images": n}
    if student.classes is not None:
        out["accuracy"] = right / max(n, 1)
    return out


def _check(backbone: str, image_size: int, epochs: int, batch_size: int, lr: float, temperature: float, alpha: float,
           labels: str, annotations: str | None, out_path: Path, device: str | None) -> torch.device:
    """Every setting, before the images are listed or the teacher is loaded; the device to use."""
    problems = []
    if labels not in ("none", "folders", "affectnet"):
        problems.append(f"--labels must be none, folders or affectnet, got {labels!r}")
    if (labels == "affectnet") != (annotations is not None):
        problems.append("--labels affectnet reads --annotations (AffectNet's training.csv), and --annotations "
                        "needs --labels affectnet")
    for name, v in (("--epochs", epochs), ("--batch-size", batch_size), ("--image-size", image_size)):
        if v < 1:
            problems.append(f"{name} must be at least 1, got {v}")
    if not 0 <= alpha <= 1:
        problems.append(f"--alpha must be in [0, 1], got {alpha}")
    if not temperature > 0:
        problems.append(f"--temperature must be above 0, got {temperature}")
    if not lr > 0:
        problems.append(f"--lr must be above 0, got {lr}")
    if out_path.is_dir():
        problems.append(f"--out {str(out_path)!r} is a folder; give a file name such as {str(out_path / 'student.pt')!r}")
    elif not out_path.parent.is_dir():
        problems.append(f"--out {str(out_path)!r}: its folder {str(out_path.parent)!r} does not exist")
    if backbone not in ("small_cnn", "ir50"):
        import timm

        from raybench.registry import did_you_mean

        if backbone not in timm.list_models():
            problems.append(f"--backbone: unknown backbone {backbone!r}{did_you_mean(backbone, timm.list_models())}; "
                            "use small_cnn, ir50 or a timm model name (embeddings has no network to distil)")
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        problems.append(f"--device {device!r}: {e}")
        dev = torch.device("cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        problems.append(f"--device {device!r}: torch sees no CUDA device here")
    if problems:
        raise DistillInputError("; ".join(problems))
    return dev


def distil(teacher_path: str, images: str, out: str, *, backbone: str = "small_cnn", dim: int = 256, width: int = 16,
           image_size: int = 112, labels: str = "none", epochs: int = 5, batch_size: int = 64, lr: float = 1e-3,
           temperature: float = 4.0, alpha: float = 0.5, seed: int = 0, workers: int = 0, eval_images: int = 2000,
           annotations: str | None = None, affectnet_classes: int = 8, device: str | None = None, log=print) -> dict:
    """Train a student against the teacher on the images; write the loadable part to ``out``; return
    the summary written beside it (``out`` + ``.json``). Settings, the teacher (on two blank images) and
    the image list are checked before training."""
    from raybench.methods.schoneveld2021 import load_teacher
    from raybench.nn.losses import distillation_loss

    out_path = Path(out).expanduser().resolve()
    dev = _check(backbone, image_size, epochs, batch_size, lr, temperature, alpha, labels, annotations, out_path,
                 device)
    try:
        teacher = load_teacher(teacher_path, "--teacher").to(dev)
    except (FileNotFoundError, ValueError) as e:
        raise DistillInputError(str(e)) from None
    try:
        blank = teacher_logits(teacher, torch.zeros(2, 3, image_size, image_size, device=dev))
    except DistillInputError:
        raise
    except Exception as e:
        raise DistillInputError(f"--teacher {teacher_path!r} fails on two blank {image_size} x {image_size} images "
                                f"(--image-size): {type(e).__name__}: {e}") from None
    n_teacher = int(blank.shape[-1])
    boxes, left_out = None, {}
    if labels == "affectnet":
        paths, targets, boxes, classes, left_out = affectnet_images(images, annotations, affectnet_classes)
    else:
        paths, targets, classes = find_images(images, labels)
    for why, names in left_out.items():
        log(f"[distill] {len(names)} annotated images left out, {why}: {names[:3]}" + (" ..." if len(names) > 3 else ""))
    torch.manual_seed(seed)
    data = FaceImages(paths, targets, image_size, boxes)
    student = Student(backbone, dim, width, n_teacher, len(classes)).to(dev)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    # drop_last: a batch of one image cannot train a network with batch normalisation over its
    # embedding (ir50's output layer); the images it leaves out differ from epoch to epoch
    train = torch.utils.data.DataLoader(data, batch_size=min(batch_size, len(data)), shuffle=True, generator=gen,
                                        num_workers=workers, collate_fn=_collate, drop_last=True)
    # before/after figures on a fixed sample of at most eval_images (the whole set when smaller)
    pick = np.random.default_rng(seed).permutation(len(data))[:max(1, eval_images)]
    sample = torch.utils.data.DataLoader(torch.utils.data.Subset(data, sorted(pick.tolist())), batch_size=batch_size,
                                         num_workers=workers, collate_fn=_collate)
    what = f"{len(paths)} images" + (f" in {len(classes)} classes ({', '.join(classes)})" if classes else "")
    log(f"[distill] {what}; teacher {n_teacher} classes; student {backbone} ({dim}-d) at {image_size} px on {dev}")
    before = evaluate(student, teacher, sample, temperature, dev)
    if not before["images"]:
        raise DistillInputError(f"--images {images!r}: none of {len(pick)} images sampled from {len(paths)} could be "
                                "read (OpenCV)")
    unreadable: set[int] = set()
    history = []
    for epoch in range(epochs):
        student.train()
        t0, total, n = time.time(), 0.0, 0
        for x, y, bad in train:
            unreadable.update(bad)
            if x is None or len(x) < 2:  # unreadable images left fewer than two (see drop_last)
                continue
            x, y = x.to(dev), y.to(dev)
            t = teacher_logits(teacher, x)
            s, c = student(x)
            loss = distillation_loss(s, t, temperature)
            if c is not None:
                loss = alpha * loss + (1 - alpha) * F.cross_entropy(c, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
            n += len(x)
        if not n:
            raise DistillInputError(f"--images {images!r}: none of the {len(paths)} images could be read")
        history.append(total / n)
        log(f"[distill] epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f} ({time.time() - t0:.1f} s)")
    after = evaluate(student, teacher, sample, temperature, dev)
    unread = [str(paths[i]) for i in sorted(unreadable)]
    if unread:
        log(f"[distill] {len(unread)} of {len(paths)} images could not be read (or their face box was outside them) "
            f"and were left out: {unread[:5]}" + (" ..." if len(unread) > 5 else ""))
    torch.save({"state_dict": {k: v.cpu() for k, v in student.loadable.state_dict().items()}}, out_path)
    summary = {"teacher": str(teacher_path), "images": str(images), "n_images": len(paths),
               "unreadable": unread, "classes": classes,
               "left_out": {why: len(names) for why, names in left_out.items()},
               "backbone": backbone, "dim": dim, "cnn_width": width, "image_size": image_size,
               "epochs": epochs, "batch_size": batch_size, "lr": lr, "temperature": temperature,
               "alpha": alpha if classes else 1.0, "seed": seed, "loss_per_epoch": history,
               "eval_images": len(pick), "before": before, "after": after}
    Path(str(out_path) + ".json").write_text(json.dumps(summary, indent=1))
    acc = f", class accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}" if classes else ""
    log(f"[distill] on {len(pick)} images: agreement with the teacher's top class {before['agreement']:.1%} -> "
        f"{after['agreement']:.1%}, distillation loss {before['kl']:.4f} -> {after['kl']:.4f}{acc}; "
        f"wrote {out_path} (+ .json)")
    size = f" method.visual_dim={dim} method.cnn_width={width}" if backbone == "small_cnn" else ""
    log(f"[distill] use it: method.name=schoneveld2021 method.backbone={backbone} "
        f"method.weights={shlex.quote(str(out_path))}{size} data.image_size={image_size}")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raybench.distill", description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="TorchScript file: images (N, 3, H, W) in [-1, 1] -> logits (N, C)")
    p.add_argument("--images", required=True, help="folder of face images (any depth)")
    p.add_argument("--out", required=True, help="where to write the student's weights (method.weights)")
    p.add_argument("--labels", choices=["none", "folders", "affectnet"], default="none",
                   help="folders: each image's top folder is its class; affectnet: AffectNet's --annotations CSV "
                        "(classes and face boxes); either adds (1 - alpha) cross-entropy")
    p.add_argument("--annotations", default=None, help="--labels affectnet: its training.csv or validation.csv")
    p.add_argument("--affectnet-classes", type=int, default=8, choices=[7, 8],
                   help="8 expressions, or 7 (contempt left out)")
    p.add_argument("--backbone", default="small_cnn", help="small_cnn, ir50 or a timm architecture name")
    p.add_argument("--dim", type=int, default=256, help="the encoder's output width (schoneveld2021's visual_dim)")
    p.add_argument("--cnn-width", type=int, default=16, help="small_cnn's first layer width (method.cnn_width)")
    p.add_argument("--image-size", type=int, default=112,
                   help="images are resized (squashed, not cropped) to this square; the teacher sees them so")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=4.0, help="as schoneveld2021's distill_temperature")
    p.add_argument("--alpha", type=float, default=0.5, help="as schoneveld2021's distill_alpha (with --labels)")
    p.add_argument("--eval-images", type=int, default=2000,
                   help="the before/after figures are computed on this many images (a fixed random sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="image-reading processes (torch DataLoader)")
    p.add_argument("--device", default=None, help="cpu, cuda, ...; default: cuda when there is one")
    a = p.parse_args(argv)
    try:
        distil(a.teacher, a.images, a.out, backbone=a.backbone, dim=a.dim, width=a.cnn_width, image_size=a.image_size,
               labels=a.labels, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, temperature=a.temperature,
               alpha=a.alpha, seed=a.seed, workers=a.workers, eval_images=a.eval_images, annotations=a.annotations,
               affectnet_classes=a.affectnet_classes, device=a.device)
    except DistillInputError as e:
        print(f"raybench.distill: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
