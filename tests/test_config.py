from pathlib import Path

import pytest
import yaml

from mdctr.config import apply_overrides, load_experiment
from mdctr.errors import InputError


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


BASE = {"name": "x", "data": {"task": "ml100k-gender"}}


def test_defaults_follow_the_benchmark_protocol(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, BASE))
    assert exp.model.hidden == (256, 128, 64)
    assert (exp.train.lr, exp.train.batch_size, exp.train.patience, exp.train.epochs) == (1e-3, 1024, 2, 10)
    assert exp.model.embedding_dim == 16


def test_set_overrides_parse_values_as_yaml(tmp_path: Path) -> None:
    exp = load_experiment(
        write(tmp_path, BASE), ["train.epochs=3", "model.hidden=[8, 4]", "model.batch_norm=true"]
    )
    assert exp.train.epochs == 3
    assert exp.model.hidden == (8, 4)
    assert exp.model.batch_norm is True


def test_unknown_key_names_the_key_and_the_closest_one(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "model": {"hiden": [4]}})
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert str(err.value) == f"{path}: unknown key 'model.hiden'; did you mean 'hidden'?"


def test_unknown_key_through_set(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown key 'train.epoch'; did you mean 'epochs'\?"):
        load_experiment(write(tmp_path, BASE), ["train.epoch=3"])


def test_unknown_backbone_lists_the_choices(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "model": {"backbone": "dnnn"}})
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert (
        str(err.value)
        == f"{path}: model.backbone: unknown model.backbone 'dnnn'; choose one of: autoint, autoint_plus, dcnv2, deepfm, dnn, fgcnn, fm, hiformer, lr, wdl"
    )


@pytest.mark.parametrize("method", ["star", "pepnet"])
def test_a_method_with_its_own_network_refuses_another_backbone(tmp_path: Path, method: str) -> None:
    path = write(tmp_path, {**BASE, "model": {"backbone": "dcnv2", "multidomain": method}})
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert str(err.value) == (
        f"{path}: model: model.multidomain {method!r} builds its own MLP network and cannot use "
        "model.backbone 'dcnv2'; set model.backbone: dnn, or make 'dcnv2' multi-domain with mlora, "
        "modula, modula_res, separate, shared_bottom, mmoe, ple or dadnn"
    )
    load_experiment(path, ["model.backbone=dnn"])


@pytest.mark.parametrize("backbone", ["lr", "fm"])
def test_a_family_method_needs_a_backbone_with_a_network(tmp_path: Path, backbone: str) -> None:
    path = write(tmp_path, {**BASE, "model": {"backbone": backbone, "multidomain": "mmoe"}})
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert str(err.value) == (
        f"{path}: model: model.backbone {backbone!r} has no hidden network for model.multidomain 'mmoe' "
        "to share; use a deep backbone (dnn, wdl, deepfm, dcnv2, autoint, autoint_plus, fgcnn, hiformer) "
        "or model.multidomain: separate"
    )
    load_experiment(path, ["model.backbone=deepfm"])


def test_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown data.task 'ml2m'; choose one of: ml100k-gender"):
        load_experiment(write(tmp_path, {"name": "x", "data": {"task": "ml2m"}}))


def test_table_needs_label_domain_and_features(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a data.path table also needs data.label, data.features"):
        load_experiment(write(tmp_path, {"name": "x", "data": {"path": "a.csv", "domain": "d"}}))


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match=r"bad.yaml: not valid YAML at line 2; fix the syntax"):
        load_experiment(path)
    with pytest.raises(InputError, match="config file .*nope.yaml not found"):
        load_experiment(tmp_path / "nope.yaml")


def test_malformed_override() -> None:
    with pytest.raises(InputError, match="expected key=value"):
        apply_overrides({}, ["train.epochs"])


def test_every_shipped_config_is_valid() -> None:
    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 6
    names = [load_experiment(path).name for path in configs]
    assert len(set(names)) == len(names)
