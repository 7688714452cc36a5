"""Strict params loading, and the agreement of params.yaml, dvc.yaml and damc_core/params.py."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Literal

import pytest
import yaml

from damc_core import params as params_module
from damc_core.config import ConfigError, from_dict, load_params, to_dict
from damc_core.params import Params, Range


def write_params(tmp_path: Path, repo_root: Path, edit) -> Path:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_params_load_into_the_schema(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert isinstance(params, Params)
    assert params.sample.subject.image_size % 2 == 0
    assert isinstance(params.sample.subject.sentences, tuple)


def test_loaded_params_round_trip_to_the_same_yaml_data(repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert to_dict(load_params(repo_root / "params.yaml")) == raw


def test_unknown_key_is_rejected_with_its_name_and_the_file(tmp_path, repo_root):
    path = write_params(tmp_path, repo_root, lambda raw: raw["sample"]["blink"].update(blinks_per_minute=3))
    with pytest.raises(ConfigError, match=r"params\.yaml.*unknown key\(s\) sample\.blink\.blinks_per_minute"):
        load_params(path)


def test_unknown_section_is_rejected(tmp_path, repo_root):
    path = write_params(tmp_path, repo_root, lambda raw: raw.update(nerf_coarse_typo={"iters": 1}))
    with pytest.raises(ConfigError, match="unknown key.*nerf_coarse_typo"):
        load_params(path)


@pytest.mark.parametrize("stage", ["nerf_coarse", "nerf_fine"])
def test_nerf_training_takes_no_batch_size(tmp_path, repo_root, stage):
    path = write_params(tmp_path, repo_root, lambda raw: raw[stage]["training"].update(batch_size=1))
    with pytest.raises(ConfigError, match=rf"unknown key\(s\) {stage}\.training\.batch_size"):
        load_params(path)


@pytest.mark.parametrize("stage", ["sync_expert", "sync_encoder"])
def test_sync_training_requires_a_batch_size(tmp_path, repo_root, stage):
    assert getattr(load_params(repo_root / "params.yaml"), stage).training.batch_size >= 1
    path = write_params(tmp_path, repo_root, lambda raw: raw[stage]["training"].pop("batch_size"))
    with pytest.raises(ConfigError, match=rf"missing key\(s\) {stage}\.training\.batch_size"):
        load_params(path)


def test_missing_key_is_rejected(tmp_path, repo_root):
    path = write_params(tmp_path, repo_root, lambda raw: raw["sample"].pop("seed"))
    with pytest.raises(ConfigError, match=r"missing key\(s\) sample\.seed"):
        load_params(path)


@pytest.mark.parametrize(
    ("key_path", "value", "message"),
    [
        (("sample", "seed"), "zero", r"'sample\.seed': expected int, got str 'zero'"),
        (("sample", "seed"), True, r"'sample\.seed': expected int, got bool"),
        (("sample", "subject", "look", "mirror"), 1, r"'sample\.subject\.look\.mirror': expected bool"),
        (("sample", "subject", "look", "crop"), [1, 2], r"'sample\.subject\.look\.crop': expected a list of 3"),
        (("sample", "subject", "sentences"), "one sentence", r"'sample\.subject\.sentences': expected a list"),
        (("sample", "blink"), 3, r"expected a mapping for 'sample\.blink'"),
    ],
)
def test_wrong_type_is_rejected_with_the_key(tmp_path, repo_root, key_path, value, message):
    def edit(raw):
        section = raw
        for key in key_path[:-1]:
            section = section[key]
        section[key_path[-1]] = value

    with pytest.raises(ConfigError, match=message):
        load_params(write_params(tmp_path, repo_root, edit))


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("face_prep", "val_fraction", 1.5, r"'face_prep\.val_fraction': must be in \(0, 0\.5\], got 1\.5"),
        ("face_prep", "val_fraction", 0, r"'face_prep\.val_fraction': must be in \(0, 0\.5\], got 0"),
        ("face_prep", "min_frames", -5, r"'face_prep\.min_frames': must be >= 2, got -5"),
        ("face_prep", "jpeg_quality", 101, r"'face_prep\.jpeg_quality': must be in \[1, 100\], got 101"),
        ("render", "rays_per_chunk", 0, r"'render\.rays_per_chunk': must be >= 1, got 0"),
        ("tts", "pitch", -1, r"'tts\.pitch': must be in \[0, 99\], got -1"),
        ("render", "pose_smoothing_frames", 4, r"'render\.pose_smoothing_frames': must be odd and >= 1, got 4"),
    ],
)
def test_values_out_of_range_are_rejected_at_load(tmp_path, repo_root, section, key, value, message):
    path = write_params(tmp_path, repo_root, lambda raw: raw[section].update({key: value}))
    with pytest.raises(ConfigError, match=rf"{path}: key {message}"):
        load_params(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda raw: raw["sync_encoder"]["training"].update(steps=20, warmup_steps=50),
         r"key 'sync_encoder\.training': warmup_steps \(50\) must not exceed steps \(20\)"),
        (lambda raw: raw["fusion"].update(dim=30, heads=4),
         r"key 'fusion': fusion\.heads \(4\) must divide fusion\.dim \(30\)"),
        (lambda raw: raw["nerf_coarse"]["rays"].update(face_fraction=0.8, lips_fraction=0.4),
         r"key 'nerf_coarse\.rays': face_fraction \+ lips_fraction \(0\.8 \+ 0\.4\) must not exceed 1"),
    ],
    ids=["warm-up longer than the run", "heads not dividing dim", "ray fractions above 1"],
)
def test_settings_that_contradict_each_other_are_rejected_at_load(tmp_path, repo_root, edit, message):
    path = write_params(tmp_path, repo_root, edit)
    with pytest.raises(ConfigError, match=rf"{path}: {message}"):
        load_params(path)


def test_range_bounds_are_inclusive_unless_open():
    assert Range(low=0, high=1).contains(0) and Range(low=0, high=1).contains(1)
    assert not Range(low=0, high=1, open_low=True).contains(0) and not Range(low=0, high=1).contains(1.01)
    assert Range(low=1).contains(10**9) and not Range(low=1).contains(0)


def test_ints_are_accepted_where_floats_are_expected(tmp_path, repo_root):
    path = write_params(tmp_path, repo_root, lambda raw: raw["sample"]["clips"].update(pause_s=1))
    value = load_params(path).sample.clips.pause_s
    assert value == 1.0 and isinstance(value, float)


def test_literal_choices_and_optional_values():
    @dataclasses.dataclass(frozen=True)
    class Choice:
        mode: Literal["csfm", "concat"]
        limit: int | None

    assert from_dict(Choice, {"mode": "concat", "limit": None}) == Choice("concat", None)
    with pytest.raises(ConfigError, match=r"key 'mode': must be one of 'csfm', 'concat', got 'sum'"):
        from_dict(Choice, {"mode": "sum", "limit": 3}, source="x.yaml")


def test_missing_or_invalid_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("sample: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(broken)


def test_every_config_field_has_a_docstring():
    tree = ast.parse(Path(params_module.__file__).read_text())
    undocumented = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for index, statement in enumerate(body):
            if isinstance(statement, ast.AnnAssign):
                following = body[index + 1] if index + 1 < len(body) else None
                documented = (
                    isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                )
                if not documented:
                    undocumented.append(f"{node.name}.{statement.target.id}")
    assert not undocumented, f"config fields without a docstring: {undocumented}"


def test_every_config_class_is_frozen():
    classes = [value for value in vars(params_module).values() if dataclasses.is_dataclass(value)]
    assert classes
    for schema in classes:
        assert schema.__dataclass_params__.frozen, schema.__name__


def dvc_param_keys(dvc_yaml: dict) -> list[str]:
    keys = []
    for stage in dvc_yaml["stages"].values():
        body = stage.get("do", stage)
        for entry in body.get("params", []):
            if isinstance(entry, str):
                keys.append(entry)
            else:
                for file_keys in entry.values():
                    keys.extend(file_keys)
    return keys


def test_every_dvc_params_key_exists_in_params_yaml(repo_root):
    dvc_yaml = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    keys = dvc_param_keys(dvc_yaml)
    assert keys, "dvc.yaml declares no params"
    for key in keys:
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml names params key {key!r}, absent in params.yaml"
            node = node[part]


def test_subjects_map_names_to_videos(tmp_path, repo_root):
    assert load_params(repo_root / "params.yaml").subjects["sample"].endswith(".mp4")
    path = write_params(tmp_path, repo_root, lambda raw: raw["subjects"].update(other=3))
    with pytest.raises(ConfigError, match=r"'subjects\.other': expected str, got int"):
        load_params(path)
    path = write_params(tmp_path, repo_root, lambda raw: raw.update(subjects={}))
    with pytest.raises(ConfigError, match="'subjects': expected a non-empty mapping"):
        load_params(path)
