"""raybench.distill: schoneveld2021's face CNN distilled from a teacher on a folder of images, as a
stage of its own; its output loads as the method's ``weights``."""

import re

import numpy as np
import pytest
import torch
import torch.nn as nn

from raybench.distill import distil, main
from raybench.methods import create_method
from raybench.nn.losses import distillation_loss


class MeanColour(nn.Module):
    """A teacher whose top class is the image's dominant colour channel (logits 6 x the channel means)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 6.0 * x.mean((2, 3))


def _teacher(tmp_path, module=None):
    path = tmp_path / "teacher.pt"
    torch.jit.script(module or MeanColour()).save(str(path))
    return path


def _images(root, n=48, size=20, folders=False, seed=0):
    """``n`` images, each one colour channel bright and the others dim, plus noise; in folders named
    after the bright channel when ``folders``."""
    import cv2

    rng = np.random.default_rng(seed)
    names = ["red", "green", "blue"]
    for i in range(n):
        c = i % 3
        rgb = rng.uniform(0, 90, size=3)
        rgb[c] = rng.uniform(150, 255)
        img = np.clip(rgb + rng.normal(0, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
        d = root / names[c] if folders else root / f"part{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def test_distillation_loss_is_hintons_soft_target_term():
    rng = np.random.default_rng(1)
    s, t, T = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)) * 3, 2.5

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    pt = np.exp(log_softmax(t / T))
    expected = (pt * (np.log(pt) - log_softmax(s / T))).sum(1).mean() * T * T
    got = float(distillation_loss(torch.tensor(s), torch.tensor(t), T))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(distillation_loss(torch.tensor(t), torch.tensor(t), T)) == pytest.approx(0.0, abs=1e-6)


def test_the_student_learns_the_teacher_and_loads_into_schoneveld2021(tmp_path):
    _images(tmp_path / "faces")
    (tmp_path / "faces" / "part0" / "broken.png").write_bytes(b"not an image")
    out, lines = tmp_path / "student.pt", []
    s = distil(str(_teacher(tmp_path)), str(tmp_path / "faces"), str(out), dim=16, width=4, image_size=20,
               epochs=8, batch_size=8, lr=3e-3, device="cpu", log=lines.append)
    assert s["n_images"] == 49 and s["unreadable"] == [str(tmp_path / "faces" / "part0" / "broken.png")]
    assert any("1 of 49 images could not be read" in line and "broken.png" in line for line in lines)
    assert s["after"]["kl"] < 0.5 * s["before"]["kl"]
    assert s["after"]["agreement"] >= 0.9 > s["before"]["agreement"]
    assert s["alpha"] == 1.0 and s["classes"] == []  # no labels: the KL term alone
    # the printed line trains schoneveld2021 on the student: its face CNN is the distilled one
    use = next(line for line in lines if "use it:" in line)
    kw = dict(re.findall(r"method\.(\w+)=(\S+)", use))
    assert kw.pop("name") == "schoneveld2021" and kw["weights"] == str(out)
    kw = {k: int(v) if v.isdigit() else v for k, v in kw.items()}
    m = create_method("schoneveld2021", "categorical", 3, n_audio_features=20, audio_steps_per_frame=4, **kw)
    saved = torch.load(out)["state_dict"]
    assert saved and all(torch.equal(m.face.state_dict()[k], v) for k, v in saved.items())
    assert (tmp_path / "student.pt.json").is_file()


def test_folder_labels_add_cross_entropy_and_the_cli_reports_bad_input(tmp_path, capsys):
    _images(tmp_path / "faces", n=12, folders=True)
    teacher = _teacher(tmp_path)
    rc = main(["--teacher", str(teacher), "--images", str(tmp_path / "faces"), "--out", str(tmp_path / "s.pt"),
               "--labels", "folders", "--dim", "8", "--cnn-width", "4", "--image-size", "16", "--epochs", "1",
               "--alpha", "0.3", "--device", "cpu"])
    assert rc == 0
    import json

    s = json.loads((tmp_path / "s.pt.json").read_text())
    assert s["classes"] == ["blue", "green", "red"] and s["alpha"] == 0.3
    assert "3 classes (blue, green, red)" in capsys.readouterr().out
    # an image outside the class folders, a missing folder, an empty one, a teacher that gives no (N, C)
    (tmp_path / "faces" / "loose.png").write_bytes((tmp_path / "faces" / "red" / "000.png").read_bytes())
    (tmp_path / "empty").mkdir()
    for images, teacher_, expected in [
            ("faces", teacher, "not in a class folder"), ("nowhere", teacher, "is not a folder"),
            ("empty", teacher, "holds no"),
            ("faces/red", _teacher(tmp_path, nn.Flatten(0)), r"logits \(N, C\)")]:
        rc = main(["--teacher", str(teacher_), "--images", str(tmp_path / images), "--out", str(tmp_path / "x.pt"),
                   "--labels", "folders" if images == "faces" else "none", "--device", "cpu", "--epochs", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and re.search(expected, err), (images, err)
    assert not (tmp_path / "x.pt").exists()
