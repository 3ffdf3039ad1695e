"""scripts/quant_report.py end to end on a tiny float model (2 fine-tune steps): every
variant is scored by mlx_mobilemoe.evaluate and lands in one table."""

import importlib.util
from pathlib import Path

import mlx.core as mx

from conftest import CORPUS, add_tokenizer
from mlx_mobilemoe.checkpoint import save
from mlx_mobilemoe.config import preset
from mlx_mobilemoe.model import Model

ROOT = Path(__file__).resolve().parents[1]


def test_quant_report_tiny(tmp_path, tokenizer_dir):
    spec = importlib.util.spec_from_file_location("quant_report",
                                                  ROOT / "scripts" / "quant_report.py")
    qr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qr)
    mx.random.seed(0)
    d = tmp_path / "tiny"
    save(Model(preset("tiny")), None, d)
    add_tokenizer(d, tokenizer_dir)
    text = tmp_path / "t.txt"
    text.write_text(CORPUS * 4)
    r = qr.report(d, text, seq_len=32, max_eval_tokens=64, qat_steps=2, batch=2)
    names = ["float", "ptq_rtn", "ptq_mse", "qat_fake_quant_a8", "qat", "float_ft"]
    assert set(r["ppl"]) == set(names) == set(r["evaluate"])
    for n in names:
        ev = r["evaluate"][n]["perplexity"]
        assert ev["t"]["tokens"] == 64 and r["ppl"][n] == round(ev["overall"]["ppl"], 4)
    assert r["table"].splitlines()[0].split(" | ")[2:] == names[:-1] + ["float_ft |"]
