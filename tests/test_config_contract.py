"""The config.json validation contract shared with the Swift package
(tests/fixtures/config_contract.json, written by tests/fixtures/make_config_contract.py):
every case gets the verdict the file says, and an error names the field."""

import copy
import json
from pathlib import Path

import pytest

from mlx_mobilemoe.checkpoint import ConfigFileError, load_config
from mlx_mobilemoe.config import ConfigError

CONTRACT = json.loads((Path(__file__).parent / "fixtures" / "config_contract.json").read_text())


def config_text(case) -> str:
    if "raw" in case:
        return case["raw"]
    cfg = copy.deepcopy(CONTRACT["base"])
    cfg.update(copy.deepcopy(case["patch"]))
    for k in case.get("remove", []):
        cfg.pop(k, None)
    return json.dumps(cfg)


def test_contract_is_large_and_balanced():
    verdicts = [c["verdict"] for c in CONTRACT["cases"]]
    assert len(verdicts) >= 100 and verdicts.count("ok") >= 20
    assert all(c.get("field") for c in CONTRACT["cases"] if c["verdict"] == "error")


@pytest.mark.parametrize("case", CONTRACT["cases"], ids=lambda c: c["name"])
def test_config_contract(tmp_path, case):
    (tmp_path / "config.json").write_text(config_text(case))
    if case["verdict"] == "ok":
        load_config(tmp_path)
        return
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert isinstance(e.value, ConfigFileError)
    assert case["field"] in str(e.value), str(e.value)
