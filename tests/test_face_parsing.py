"""Face parsing: ER-NeRF's parsing colours, the offline landmark rule on real clips, and BiSeNet's checkpoint layout."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
import pytest
import torch

from damc_core.face.bisenet import CELEBAMASK_CLASSES, BiSeNet
from damc_core.face.parsing import (
    CELEBAMASK_TO_PART,
    ParsingBackendUnavailable,
    Part,
    make_parser,
    parsing_to_rgb,
    rgb_to_parsing,
    split_person,
)
from damc_core.media import iter_video_frames
from damc_core.sample.portrait import ASTRONAUT_LANDMARKS, astronaut

# MediaPipe FaceMesh indices of the 68 iBUG landmarks, in iBUG order.
FACEMESH_TO_IBUG = [
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389, 70, 63, 105, 66, 107, 336, 296,
    334, 293, 300, 168, 197, 5, 4, 75, 97, 2, 326, 305, 33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380, 61,
    39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
]
CLIPS = [
    "data/hdtf_clips/RD_Radio10_0_clip_0_29.97fps.mp4",
    "data/hdtf_clips/RD_Radio2_000.mp4",
    "data/hdtf_clips/RD_Radio34_000.mp4",
    "data/hdtf_clips/WDA_EdMarkey0_000.mp4",
    "data/hdtf_clips/WDA_KatieHill_000.mp4",
    "data/subjects/May_5s.mp4",
]
FRAME_INDICES = (0, 40)

# The state dict of face-parsing.PyTorch's BiSeNet(n_classes=19), which its test.py (and ER-NeRF's copy) loads from
# 79999_iter.pth with a strict load_state_dict: read off that project's model.py and resnet.py (zllrunning/
# face-parsing.PyTorch; the same names in facexlib's parsing/bisenet.py, whose weights another project converted and
# counted 191 tensors). Learnable parameters: the ResNet-18 trunk without its classifier, 11,689,512 - 513,000 =
# 11,176,512, plus ARMs 311,808 + 606,720, head convs 2 x 147,712, conv_avg 65,792, FFM 98,816, conv_out 595,200 and
# the two auxiliary heads 2 x 75,072.
BISENET_PARAMETERS = 13_300_416
BISENET_STATE_ENTRIES = 191  # 160 float tensors and 31 batch-norm counters (num_batches_tracked)
BISENET_KEY_SHAPES = {
    "cp.resnet.conv1.weight": (64, 3, 7, 7),
    "cp.resnet.bn1.running_var": (64,),
    "cp.resnet.layer1.0.conv1.weight": (64, 64, 3, 3),
    "cp.resnet.layer2.0.conv1.weight": (128, 64, 3, 3),
    "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "cp.resnet.layer3.0.downsample.1.running_mean": (256,),
    "cp.resnet.layer4.1.bn2.weight": (512,),
    "cp.arm16.conv.conv.weight": (128, 256, 3, 3),
    "cp.arm32.conv_atten.weight": (128, 128, 1, 1),
    "cp.arm32.bn_atten.bias": (128,),
    "cp.conv_head32.conv.weight": (128, 128, 3, 3),
    "cp.conv_head16.bn.num_batches_tracked": (),
    "cp.conv_avg.conv.weight": (128, 512, 1, 1),
    "ffm.convblk.conv.weight": (256, 256, 1, 1),
    "ffm.conv1.weight": (64, 256, 1, 1),
    "ffm.conv2.weight": (256, 64, 1, 1),
    "conv_out.conv.conv.weight": (256, 256, 3, 3),
    "conv_out.conv_out.weight": (19, 256, 1, 1),
    "conv_out16.conv.conv.weight": (64, 128, 3, 3),
    "conv_out32.conv_out.weight": (19, 64, 1, 1),
}
# Where each CelebAMask-HQ class goes (ER-NeRF's merge: 1-13 and 17-18 head, 14-15 neck, 16 torso).
CELEBAMASK_PART = {
    "background": Part.BACKGROUND, "skin": Part.HEAD, "l_brow": Part.HEAD, "r_brow": Part.HEAD, "l_eye": Part.HEAD,
    "r_eye": Part.HEAD, "eye_g": Part.HEAD, "l_ear": Part.HEAD, "r_ear": Part.HEAD, "ear_r": Part.HEAD,
    "nose": Part.HEAD, "mouth": Part.HEAD, "u_lip": Part.HEAD, "l_lip": Part.HEAD, "neck": Part.NECK,
    "neck_l": Part.NECK, "cloth": Part.TORSO, "hair": Part.HEAD, "hat": Part.HEAD,
}


@pytest.fixture(scope="module")
def mediapipe_parser():
    with make_parser("mediapipe") as parser:
        yield parser


@pytest.fixture(scope="module")
def clip_faces(shared_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, frame, iBUG landmarks, FaceMesh points) of two frames of every real clip."""
    faces = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        for clip in CLIPS:
            frames = itertools.islice(iter_video_frames(shared_dir / clip), max(FRAME_INDICES) + 1)
            for index, frame in enumerate(frames):
                if index in FRAME_INDICES:
                    points = facemesh_points(mesh, frame)
                    faces.append((f"{Path(clip).stem}#{index}", frame, points[FACEMESH_TO_IBUG], points))
    return faces


@pytest.fixture(scope="module")
def clip_parsings(clip_faces, mediapipe_parser) -> list[np.ndarray]:
    return [mediapipe_parser.parse(frame, landmarks) for _, frame, landmarks, _ in clip_faces]


def facemesh_points(mesh, frame: np.ndarray) -> np.ndarray:
    """All FaceMesh points of the one face in ``frame``, in pixels with pixel centres at integers."""
    found = mesh.process(frame).multi_face_landmarks
    assert found, "FaceMesh finds the face of every test frame"
    height, width = frame.shape[:2]
    return np.array([[point.x * width - 0.5, point.y * height - 0.5] for point in found[0].landmark])


def at(labels: np.ndarray, point: np.ndarray) -> int:
    """The label of the pixel whose centre is nearest ``point`` (x, y)."""
    column, row = np.round(point).astype(int)
    return int(labels[row, column])


def upright_face() -> np.ndarray:
    """The astronaut's landmarks made exactly upright: brows straight above the chin (the rule's face axes)."""
    landmarks = ASTRONAUT_LANDMARKS.copy()
    brows, chin = landmarks[17:27].mean(axis=0), landmarks[8]
    angle = np.arctan2(chin[0] - brows[0], chin[1] - brows[1])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (landmarks - chin) @ rotation.T + chin


# ER-NeRF's colour code


def test_colours_are_er_nerfs_as_its_files_hold_them():
    np.testing.assert_array_equal(
        parsing_to_rgb(np.array([[Part.BACKGROUND, Part.HEAD, Part.NECK, Part.TORSO]])),
        [[[255, 255, 255], [0, 0, 255], [0, 255, 0], [255, 0, 0]]],
    )


def test_a_parsing_png_reads_back_in_er_nerfs_loader(tmp_path):
    labels = np.random.default_rng(0).integers(0, 4, size=(40, 60)).astype(np.uint8)
    path = tmp_path / "0.png"
    cv2.imwrite(str(path), parsing_to_rgb(labels)[..., ::-1])
    seg = cv2.imread(str(path))  # as ER-NeRF's process.py reads it, BGR
    head_part = (seg[..., 0] == 255) & (seg[..., 1] == 0) & (seg[..., 2] == 0)
    neck_part = (seg[..., 0] == 0) & (seg[..., 1] == 255) & (seg[..., 2] == 0)
    torso_part = (seg[..., 0] == 0) & (seg[..., 1] == 0) & (seg[..., 2] == 255)
    bg_part = (seg[..., 0] == 255) & (seg[..., 1] == 255) & (seg[..., 2] == 255)
    for part, mask in zip(Part, (bg_part, head_part, neck_part, torso_part), strict=True):
        np.testing.assert_array_equal(mask, labels == part, err_msg=part.name)
    np.testing.assert_array_equal(rgb_to_parsing(seg[..., ::-1]), labels)


def test_rgb_to_parsing_inverts_parsing_to_rgb():
    labels = np.random.default_rng(1).integers(0, 4, size=(33, 17))
    parsed = rgb_to_parsing(parsing_to_rgb(labels))
    assert parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, labels)


def test_rgb_to_parsing_rejects_other_colours():
    image = parsing_to_rgb(np.zeros((4, 5), dtype=np.uint8))
    image[2, 3] = (254, 254, 254)  # a resampled or JPEG-compressed edge
    with pytest.raises(ValueError, match=r"1 pixels .* \(row 2, column 3\): \(254, 254, 254\)"):
        rgb_to_parsing(image)
    with pytest.raises(ValueError, match="HxWx3"):
        rgb_to_parsing(np.zeros((4, 5), dtype=np.uint8))


def test_parsing_to_rgb_rejects_unknown_labels():
    with pytest.raises(ValueError, match="labels"):
        parsing_to_rgb(np.array([[0, 4]]))
    with pytest.raises(ValueError, match="labels"):
        parsing_to_rgb(np.zeros((2, 2, 3), dtype=np.uint8))


# The landmark rule on synthetic masks


def test_rule_on_a_person_filling_the_frame():
    landmarks = upright_face()
    labels = split_person(np.ones((512, 512), dtype=bool), landmarks)
    chin = landmarks[8]
    face_height = chin[1] - landmarks[17:27, 1].mean()
    jaw_left, jaw_right = landmarks[:17, 0].min(), landmarks[:17, 0].max()
    jaw_width = jaw_right - jaw_left
    ears, mouth = landmarks[[0, 16], 1].mean(), landmarks[48, 1]
    expected = {
        "crown, above the forehead": (chin[0], 5.0, Part.HEAD),
        "far out, above the ears' level": (jaw_left - 0.9 * jaw_width, ears - 5, Part.HEAD),
        "hair beside the temple": (jaw_left - 0.35 * jaw_width, ears + 3, Part.HEAD),
        "beyond the head band at the ears": (jaw_left - 0.45 * jaw_width, ears + 3, Part.TORSO),
        "hair beside the cheek": (jaw_right + 0.2 * jaw_width, chin[1] - 3, Part.HEAD),
        "beyond the head band at the chin": (jaw_right + 0.3 * jaw_width, chin[1] - 3, Part.TORSO),
        "beyond the head band at the mouth": (jaw_left - 0.4 * jaw_width, mouth, Part.TORSO),
        "beside the neck, below the chin": (jaw_right + 0.1 * jaw_width, chin[1] + 3, Part.TORSO),
        "just under the chin": (chin[0], chin[1] + 4, Part.NECK),
        "under the jaw's angle": (landmarks[4, 0] + 2, landmarks[4, 1] + 0.1 * face_height, Part.NECK),
        "end of the neck": (chin[0], chin[1] + 0.45 * face_height, Part.NECK),
        "the neck widening to its base": (landmarks[4, 0] - 5, chin[1] + 0.45 * face_height, Part.NECK),
        "beside the neck's base": (landmarks[4, 0] - 15, chin[1] + 0.45 * face_height, Part.TORSO),
        "below the neck": (chin[0], chin[1] + 0.55 * face_height, Part.TORSO),
    }
    for where, (x, y, part) in expected.items():
        assert at(labels, np.array([x, y])) == part, where


def test_face_polygon_is_head_where_segmentation_sees_no_one():
    landmarks = upright_face()
    labels = split_person(np.zeros((512, 512), dtype=bool), landmarks)
    assert set(np.unique(labels)) == {Part.BACKGROUND, Part.HEAD}
    assert all(at(labels, point) == Part.HEAD for point in landmarks[17:68])
    face_height = landmarks[8, 1] - landmarks[17:27, 1].mean()
    brow = landmarks[19]
    assert at(labels, brow - [0, 0.3 * face_height]) == Part.HEAD, "the forehead"
    assert at(labels, brow - [0, 0.5 * face_height]) == Part.BACKGROUND, "the face polygon stops at 0.4 face heights"
    assert at(labels, landmarks[8] + [0, 3]) == Part.BACKGROUND


def test_person_regions_apart_from_the_face_are_background():
    landmarks = upright_face()
    person = np.zeros((512, 512), dtype=bool)
    person[:, :40] = True  # someone at the edge of the frame, not touching the face
    person[int(landmarks[27, 1]) - 60 : 400, 150:300] = True  # the subject
    labels = split_person(person, landmarks)
    assert (labels[:, :40] == Part.BACKGROUND).all()
    assert (labels[380:400, 150:300] != Part.BACKGROUND).all()


def test_a_shoulder_raised_into_the_head_band_apart_from_the_head_is_torso():
    """The sample's suit collar: the body rises into the band beside the cheek without touching the head there."""
    landmarks = upright_face()
    chin = landmarks[8]
    jaw_left, jaw_right = landmarks[:17, 0].min(), landmarks[:17, 0].max()
    jaw_width = jaw_right - jaw_left
    person = np.zeros((512, 512), dtype=np.uint8)
    cv2.ellipse(person, (int(chin[0]), int(chin[1] - 150)), (int(0.6 * jaw_width), 170), 0, 0, 360, 1, -1)
    person[int(chin[1]) - 10 :, int(chin[0]) - 25 : int(chin[0]) + 25] = 1  # neck
    person[int(chin[1]) + 40 :, :] = 1  # shoulders
    shoulder = slice(int(jaw_left - 0.2 * jaw_width) - 6, int(jaw_left - 0.2 * jaw_width) + 6)
    ears = int(landmarks[[0, 16], 1].mean())
    person[ears + 5 :, shoulder] = 1  # raised into the band beside the cheek, joined to the body only
    collar = (ears + 10, shoulder.start + 6)
    separate = split_person(person.astype(bool), landmarks)
    assert separate[collar] == Part.TORSO
    assert at(separate, landmarks[30]) == Part.HEAD
    person[collar[0] - 6 : collar[0] + 6, collar[1] : int(chin[0])] = 1  # now joined to the head as well
    assert split_person(person.astype(bool), landmarks)[collar] == Part.HEAD


def test_rule_follows_the_face_when_the_frame_is_turned():
    landmarks, size = upright_face(), 512
    person = np.zeros((size, size), dtype=np.uint8)
    cv2.ellipse(person, (220, 150), (110, 140), 0, 0, 360, 1, -1)  # head
    person[150:, 120:330] = 1  # neck and body
    labels = split_person(person.astype(bool), landmarks)
    turned_points = np.stack([landmarks[:, 1], size - 1 - landmarks[:, 0]], axis=1)  # np.rot90: (x, y) -> (y, W-1-x)
    turned = split_person(np.rot90(person).astype(bool), turned_points)
    assert np.mean(turned == np.rot90(labels)) > 0.995
    assert {Part.HEAD, Part.NECK, Part.TORSO} <= set(np.unique(turned))


# The offline backend on real clips


def test_face_interior_landmarks_are_head(clip_faces, clip_parsings):
    for (name, _, landmarks, _), labels in zip(clip_faces, clip_parsings, strict=True):
        off_head = [index for index in range(17, 68) if at(labels, landmarks[index]) != Part.HEAD]
        assert not off_head, f"{name}: landmarks {off_head} are not on the head"


def test_facemesh_face_region_is_head(clip_faces, clip_parsings):
    for (name, frame, _, mesh_points), labels in zip(clip_faces, clip_parsings, strict=True):
        region = np.zeros(frame.shape[:2], dtype=np.uint8)
        cv2.fillConvexPoly(region, cv2.convexHull(np.round(mesh_points).astype(np.int32)), 1)
        assert np.mean(labels[region == 1] == Part.HEAD) > 0.99, name


def test_neck_hangs_below_the_chin(clip_faces, clip_parsings):
    chins_in_frame = [
        (name, landmarks, labels)
        for (name, frame, landmarks, _), labels in zip(clip_faces, clip_parsings, strict=True)
        if landmarks[8, 1] + 4 < frame.shape[0]
    ]
    assert len(chins_in_frame) >= 10
    for name, landmarks, labels in chins_in_frame:
        chin = landmarks[8]
        face_height = np.linalg.norm(landmarks[17:27].mean(axis=0) - chin)
        assert at(labels, chin + [0, 4]) == Part.NECK, name
        neck_rows = np.nonzero(labels == Part.NECK)[0]
        assert neck_rows.min() >= min(landmarks[4, 1], landmarks[12, 1]) - 2, f"{name}: neck above the jaw's angles"
        assert neck_rows.max() <= chin[1] + 0.6 * face_height, f"{name}: neck longer than half a face"
        under_chin = labels[:, round(landmarks[6, 0]) : round(landmarks[10, 0])]
        assert np.nonzero(under_chin == Part.HEAD)[0].max() <= chin[1] + 3, f"{name}: head below the chin"


def test_parts_stack_head_neck_torso_down_the_middle(clip_faces, clip_parsings):
    for (name, _, landmarks, _), labels in zip(clip_faces, clip_parsings, strict=True):
        middle = labels[round(landmarks[27, 1]) :, round(landmarks[8, 0])]
        assert middle[0] == Part.HEAD and (middle != Part.BACKGROUND).all(), name
        assert (np.diff(middle.astype(int)) >= 0).all(), f"{name}: {np.unique(middle)} out of order"
        mean_row = {part: np.nonzero(labels == part)[0].mean() for part in (Part.HEAD, Part.NECK, Part.TORSO)}
        assert mean_row[Part.HEAD] < min(mean_row[Part.NECK], mean_row[Part.TORSO]), f"{name}: {mean_row}"


def test_parts_have_sensible_extents(clip_faces, clip_parsings):
    for (name, _, _, _), labels in zip(clip_faces, clip_parsings, strict=True):
        share = np.bincount(labels.ravel(), minlength=len(Part)) / labels.size
        assert 0.25 < share[Part.HEAD] < 0.65, f"{name}: head {share[Part.HEAD]:.2f} of a tightly framed talking head"
        assert 0.01 < share[Part.NECK] < 0.12, f"{name}: neck {share[Part.NECK]:.3f}"
        assert share[Part.BACKGROUND] > 0.15, f"{name}: background {share[Part.BACKGROUND]:.2f}"
        assert (labels[0, :16] == Part.BACKGROUND).all() and (labels[0, -16:] == Part.BACKGROUND).all(), name


def test_offline_parsing_is_deterministic(clip_faces, clip_parsings, mediapipe_parser):
    _, frame, landmarks, _ = clip_faces[-1]
    np.testing.assert_array_equal(mediapipe_parser.parse(frame, landmarks), clip_parsings[-1])


def test_astronaut_head_covers_face_and_hair(mediapipe_parser):
    image, landmarks = astronaut()
    labels = mediapipe_parser.parse(image, landmarks)
    hair = {"crown": (225, 25), "left side": (165, 75), "right side": (285, 70)}
    for where, (x, y) in hair.items():
        assert labels[y, x] == Part.HEAD, where
    assert all(at(labels, point) == Part.HEAD for point in landmarks[17:68])
    assert (labels[:40, :40] == Part.BACKGROUND).all() and (labels[:40, -40:] == Part.BACKGROUND).all()
    assert labels[100, 410] == Part.BACKGROUND, "the rocket behind her"
    assert labels[400, 200] == Part.TORSO, "the suit's chest"
    assert at(labels, landmarks[8] + [0, 5]) == Part.NECK


def test_frames_and_landmarks_are_checked(mediapipe_parser):
    image, landmarks = astronaut()
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        mediapipe_parser.parse(image[..., 0], landmarks)
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        mediapipe_parser.parse(image, landmarks[:5])


# BiSeNet


def test_bisenet_gives_19_class_logits_at_input_resolution():
    torch.manual_seed(0)
    with torch.inference_mode():
        logits = BiSeNet().eval()(torch.randn(1, 3, 512, 512))
    assert logits.shape == (1, 19, 512, 512)
    assert torch.isfinite(logits).all()


def test_bisenet_state_dict_is_the_released_checkpoints():
    net = BiSeNet()
    state = net.state_dict()
    assert sum(parameter.numel() for parameter in net.parameters()) == BISENET_PARAMETERS
    assert len(state) == BISENET_STATE_ENTRIES
    assert sum(key.endswith("num_batches_tracked") for key in state) == 31
    assert {key: tuple(state[key].shape) for key in BISENET_KEY_SHAPES} == BISENET_KEY_SHAPES
    assert {key.split(".")[0] for key in state} == {"cp", "ffm", "conv_out", "conv_out16", "conv_out32"}
    assert len(CELEBAMASK_CLASSES) == 19 and CELEBAMASK_CLASSES[16] == "cloth"


def test_celebamask_classes_merge_as_er_nerf_does():
    assert dict(zip(CELEBAMASK_CLASSES, CELEBAMASK_TO_PART.tolist(), strict=True)) == CELEBAMASK_PART


@pytest.mark.parametrize("celebamask_class", ["neck_l", "cloth"])  # neighbours, in different Parts
def test_bisenet_backend_labels_by_the_merge(tmp_path, celebamask_class):
    net, path = BiSeNet(), tmp_path / "79999_iter.pth"
    head = net.conv_out
    with torch.no_grad():
        head.conv.bn.weight.zero_()
        head.conv.bn.bias.fill_(1.0)  # every feature of the fused head is relu(1) = 1, whatever the image
        head.conv_out.weight.zero_()
        head.conv_out.weight[CELEBAMASK_CLASSES.index(celebamask_class)] = 1.0  # so this class wins everywhere
    torch.save(net.state_dict(), path)
    frame = np.random.default_rng(2).integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    with make_parser("bisenet", bisenet_weights=str(path)) as parser:
        labels = parser.parse(frame, ASTRONAUT_LANDMARKS)
    assert labels.shape == (512, 512) and labels.dtype == np.uint8
    assert (labels == CELEBAMASK_PART[celebamask_class]).all()


def test_bisenet_backend_parses_other_sizes_at_512_and_resizes_the_labels_back(tmp_path):
    path = tmp_path / "79999_iter.pth"
    torch.manual_seed(3)
    torch.save(BiSeNet().state_dict(), path)
    image, landmarks = astronaut()
    small = np.ascontiguousarray(image[:300, 100:300])
    with make_parser("bisenet", bisenet_weights=path) as parser:
        assert parser.name == "bisenet"
        labels = parser.parse(small, landmarks)
        at_512 = parser.parse(cv2.resize(small, (512, 512), interpolation=cv2.INTER_LINEAR), landmarks)
    assert labels.shape == (300, 200)
    assert len(np.unique(at_512)) > 1
    np.testing.assert_array_equal(labels, cv2.resize(at_512, (200, 300), interpolation=cv2.INTER_NEAREST))


def test_bisenet_backend_loads_strictly(tmp_path):
    state = BiSeNet().state_dict()
    del state["conv_out16.conv_out.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="conv_out16.conv_out.weight"):
        make_parser("bisenet", bisenet_weights=path)


def test_missing_bisenet_weights_say_where_to_get_them(tmp_path):
    missing = tmp_path / "weights" / "79999_iter.pth"
    with pytest.raises(ParsingBackendUnavailable, match="face-parsing.PyTorch") as raised:
        make_parser("bisenet", bisenet_weights=missing)
    assert str(missing) in str(raised.value)
    with pytest.raises(ParsingBackendUnavailable, match="79999_iter.pth"):
        make_parser("bisenet")
    with pytest.raises(ValueError, match="Unknown parsing backend"):
        make_parser("dlib")  # type: ignore[arg-type]
