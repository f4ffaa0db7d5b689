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


def test_folder_labels_train_the_class_head_too(tmp_path, capsys):
    _images(tmp_path / "faces", n=36, folders=True)
    rc = main(["--teacher", str(_teacher(tmp_path)), "--images", str(tmp_path / "faces"), "--out", str(tmp_path / "s.pt"),
               "--labels", "folders", "--dim", "16", "--cnn-width", "4", "--image-size", "20", "--epochs", "8",
               "--batch-size", "8", "--lr", "3e-3", "--alpha", "0.3", "--device", "cpu"])
    assert rc == 0
    import json

    s = json.loads((tmp_path / "s.pt.json").read_text())
    assert s["classes"] == ["blue", "green", "red"] and s["alpha"] == 0.3
    assert s["after"]["accuracy"] >= 0.9 > s["before"]["accuracy"]  # the folders' classes, learnt by their head
    assert "3 classes (blue, green, red)" in capsys.readouterr().out


@pytest.mark.parametrize("backbone", ["ir50", "resnet18"])
def test_a_pretrained_architectures_backbone_is_what_method_weights_loads(tmp_path, backbone):
    # 3 images in batches of 2: the last batch of one is dropped (ir50's embedding ends in a batch norm)
    _images(tmp_path / "faces", n=3, size=16)
    out = tmp_path / "s.pt"
    distil(str(_teacher(tmp_path)), str(tmp_path / "faces"), str(out), backbone=backbone, dim=8, image_size=16,
           epochs=1, batch_size=2, device="cpu", log=lambda *a: None)
    m = create_method("schoneveld2021", "categorical", 3, n_audio_features=20, audio_steps_per_frame=4,
                      backbone=backbone, weights=str(out))
    saved = torch.load(out)["state_dict"]
    own = m.face.backbone.state_dict()
    assert set(saved) == set(own) and all(torch.equal(own[k], v) for k, v in saved.items())


def test_bad_input_is_named_before_any_training(tmp_path, capsys):
    _images(tmp_path / "faces", n=6, folders=True)
    teacher = _teacher(tmp_path)
    (tmp_path / "faces" / "loose.png").write_bytes((tmp_path / "faces" / "red" / "000.png").read_bytes())
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"not an image")
    cases = [
        (["--images", "faces", "--labels", "folders"], "not in a class folder"),
        (["--images", "nowhere"], "is not a folder"),
        (["--images", "empty"], "holds no"),
        (["--images", "junk"], "none of 1 images sampled from 1 could be read"),
        (["--images", "faces", "--teacher", str(tmp_path / "none.pt")], "--teacher .*none.pt' does not exist"),
        (["--images", "faces", "--teacher", str(tmp_path / "faces" / "red" / "000.png")], "not a TorchScript file"),
        (["--images", "faces", "--teacher", str(_teacher(tmp_path / "empty", nn.Flatten(0)))], r"logits \(N, C\)"),
        (["--images", "faces", "--temperature", "0"], "--temperature must be above 0"),
        (["--images", "faces", "--out", str(tmp_path)], "is a folder"),
        (["--images", "faces", "--backbone", "resnet81"], "unknown backbone 'resnet81'.*resnet18"),
        (["--images", "faces", "--epochs", "0", "--batch-size", "0"], "--epochs must be at least 1.*--batch-size"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--images", "faces", "--device", "cuda"], "no CUDA device"))
    for args, expected in cases:
        argv = {"--teacher": str(teacher), "--out": str(tmp_path / "x.pt"), "--device": "cpu", "--epochs": "1"}
        argv.update(dict(zip(args[::2], args[1::2])))
        argv["--images"] = str(tmp_path / argv["--images"])
        flags = [x for kv in argv.items() for x in kv]
        rc = main(flags)
        captured = capsys.readouterr()
        assert rc == 2 and re.search(expected, captured.err), (args, captured.err)
        assert "epoch" not in captured.out, args  # refused before training
    assert not (tmp_path / "x.pt").exists()


def test_affectnet_as_released_its_classes_face_boxes_and_left_out_rows(tmp_path, capsys):
    """training.csv's rows: the image under Manually_Annotated_Images, its face box, its expression
    (0-7; 8-10 are not expressions); the face box is what the student sees."""
    import cv2

    root = tmp_path / "Manually_Annotated_Images"
    rows = ["subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"]
    rng = np.random.default_rng(0)
    for i in range(24):
        code = i % 3  # neutral, happy, sad: a red, green or blue face on a background of another colour
        img = np.zeros((40, 50, 3), np.uint8)
        img[...] = (0, 0, 255) if code != 2 else (255, 0, 0)  # background (RGB), not the face's colour
        face = np.zeros(3)
        face[code] = 255
        img[5:29, 10:34] = np.clip(face + rng.normal(0, 15, (24, 24, 3)), 0, 255)
        (root / str(i % 4)).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / str(i % 4) / f"{i}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append(f"{i % 4}/{i}.jpg,10,5,24,24,\"1;2\",{code},0.1,0.2")
    rows += ["0/x.jpg,0,0,5,5,,8,-2,-2", "1/y.jpg,0,0,5,5,,10,-2,-2", "2/z.jpg,0,0,5,5,,7,0,0",
             "3/gone.jpg,0,0,5,5,,1,0,0"]
    csv = tmp_path / "training.csv"
    csv.write_text("\n".join(rows) + "\n")
    from raybench.distill import FaceImages, affectnet_images

    paths, targets, boxes, classes, left = affectnet_images(root, csv, n_classes=7)
    assert len(paths) == 24 and classes == ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]
    assert {k: len(v) for k, v in left.items()} == {"no expression (codes 8-10)": 2, "image not under --images": 1,
                                                    "contempt (--affectnet-classes 7)": 1}
    x, y, _ = FaceImages(paths, targets, 16, boxes)[2]  # a sad face: blue inside its box, red outside
    assert y == 2 and int(x.mean((1, 2)).argmax()) == 2
    rc = main(["--teacher", str(_teacher(tmp_path)), "--images", str(root), "--out", str(tmp_path / "s.pt"),
               "--labels", "affectnet", "--annotations", str(csv), "--dim", "16", "--cnn-width", "4",
               "--image-size", "16", "--epochs", "8", "--batch-size", "8", "--lr", "3e-3", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 annotated images left out, no expression (codes 8-10)" in out
    import json

    s = json.loads((tmp_path / "s.pt.json").read_text())
    # with 8 classes the contempt row is kept, and its image is not there either
    assert len(s["classes"]) == 8 and s["left_out"] == {"no expression (codes 8-10)": 2, "image not under --images": 2}
    assert s["after"]["agreement"] >= 0.9 and s["after"]["accuracy"] >= 0.9  # the teacher reads the faces too
    rc = main(["--teacher", str(_teacher(tmp_path)), "--images", str(root), "--out", str(tmp_path / "s.pt"),
               "--labels", "affectnet", "--device", "cpu"])
    assert rc == 2 and "--labels affectnet reads --annotations" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("path,label\na.jpg,1\n")
    rc = main(["--teacher", str(_teacher(tmp_path)), "--images", str(root), "--out", str(tmp_path / "s.pt"),
               "--labels", "affectnet", "--annotations", str(tmp_path / "bad.csv"), "--device", "cpu"])
    assert rc == 2 and "lacks the columns" in capsys.readouterr().err
    (tmp_path / "nan.csv").write_text(rows[0] + "\n0/0.jpg,10,5,24,24,,,0,0\n")
    rc = main(["--teacher", str(_teacher(tmp_path)), "--images", str(root), "--out", str(tmp_path / "s.pt"),
               "--labels", "affectnet", "--annotations", str(tmp_path / "nan.csv"), "--device", "cpu"])
    assert rc == 2 and "must be whole numbers" in capsys.readouterr().err
