"""The experiment scripts' tables (benchmarks/): the numbers docs/results_*.md show are the rows' numbers —
means and sample spreads over seeds, paired deltas against the baseline of the same seed."""

import importlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
rr = importlib.import_module("rr_experiment")
wg = importlib.import_module("whisper_gpt_experiment")
cont = importlib.import_module("continuation_experiment")


def _rr_row(setting, seed, nll, event, fad=0.5):
    return {"experiment": "rr", "domain": "sfx", "setting": setting, "seed": seed, "steps": 1000, "cfg": 3.0,
            "sample_seed": 0, "run": f"rr/sfx/{setting}/seed{seed}", "nll": nll, "nll_uncond": nll + 0.01, "fad": fad,
            "fad_inf": None, "kl": 1.0, "clap": 0.3, "controllability": {"event": event, "count": 0.3}, "l_rr_train": 0.02}


def test_rr_tables_average_over_seeds_and_pair_each_seed_with_its_own_baseline():
    rows = [_rr_row("none", 0, 3.90, 0.50), _rr_row("none", 1, 3.80, 0.60),
            _rr_row("rr-max-3", 0, 3.92, 0.55), _rr_row("rr-max-3", 1, 3.81, 0.58),
            _rr_row("rr-all-3", 0, 4.00, 0.40),
            {**_rr_row("none", 0, 9.9, 0.1), "experiment": None, "run": "t2a_sfx_base/best"}]  # a baseline row: not here
    ref = {"sfx": {"clap": 0.8, "controllability": {"event": 0.93, "count": 0.67}}}
    text = rr.tables({"rows": rows, "reference": ref})
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 0,1 | 3.850 ± 0.071 |" in lines["no RR"]  # mean and sample std of 3.90, 3.80
    assert "55 ± 7" in lines["no RR"]  # event 50 %, 60 %
    # paired: +0.02 (seed 0) and +0.01 (seed 1) -> +0.0150 ± 0.0071; event +5 and -2 points
    paired = [line for line in text.splitlines() if line.startswith("| RR, max, λ 3 | 0,1 | +0.0150")]
    assert len(paired) == 1 and "+2 ± 5" in paired[0]
    assert any(line.startswith("| RR on every step, max, λ 3 | 0 | +0.1000") for line in text.splitlines())
    assert "| reference clips (ceiling) |" in text and "| 93 | 67 |" in text
    assert "9.9" not in text  # rows of other scripts are not averaged in


def test_music_tables_mark_the_heads_the_codec_loses():
    rows = [{**_rr_row("none", 0, 3.9, 0.5), "domain": "music", "controllability": {"drums": 0.9, "mode": 0.5,
                                                                                     "instrument_family": 0.2}}]
    ref = {"music": {"clap": 0.7, "controllability": {"drums": 1.0, "mode": 0.86, "instrument_family": 0.8}}}
    header = next(line for line in rr.tables({"rows": rows, "reference": ref}).splitlines() if line.startswith("| setting"))
    assert "instrument_family (lost in the codec)" in header and "mode (lost in the codec)" in header
    assert "| drums |" in header


def _wg_row(model, seed, nll, closed=None):
    return {"domain": "speech", "model": model, "seed": seed, "params": 4e6, "train_tokens": 1_503_232, "nll": nll,
            "accuracy": 0.3, "ppl": 20.0, "nll_closed_loop": closed, "dev_curve": [[0, 7.0], [1_503_232, nll]]}


def test_whisper_gpt_tables_pair_each_model_with_gpt_s_of_the_same_seed():
    rows = [_wg_row("gpt-s", 0, 3.10), _wg_row("gpt-s", 1, 3.00), _wg_row("whisper-gpt", 0, 2.70, 3.12),
            _wg_row("whisper-gpt", 1, 2.70, 3.02), _wg_row("whisper-gpt-codecmel", 0, 2.90, 3.05)]
    text = wg.tables({"rows": rows})
    hybrid = next(line for line in text.splitlines() if line.startswith("| Whisper-GPT (hybrid) | -0.400"))
    assert "-0.400 / -0.300" in hybrid and "-0.350 ± 0.071" in hybrid and "+0.020 ± 0.000" in hybrid
    assert any(line.startswith("| hybrid trained on the codec mel | -0.200 |") for line in text.splitlines())
    assert "| GPT-S (tokens only) | 4.00M | 3.050 ± 0.071 |" in text


def test_whisper_gpt_tables_pair_within_one_precision_and_show_the_precision_alone():
    rows = [_wg_row("gpt-s", 0, 3.10), {**_wg_row("gpt-s", 0, 3.12), "precision": "bf16"},
            {**_wg_row("gpt-l", 0, 3.00), "precision": "bf16"}, _wg_row("gpt-l", 1, 2.50)]
    lines = wg.tables({"rows": rows}).splitlines()
    # GPT-L in bf16 against GPT-S in bf16 of its seed (not the fp32 one); seed 1 has no GPT-S: not paired
    assert any(line.startswith("| GPT-L (tokens only), bf16 autocast | -0.120 |") for line in lines)
    assert any(line.startswith("| GPT-S (tokens only), bf16 autocast − GPT-S fp32: the precision alone | +0.020 |")
               for line in lines)
    assert not any(line.startswith("| GPT-L (tokens only) | -") for line in lines)
    assert any(line.startswith("| GPT-L (tokens only) | 4.00M | 2.500 |") for line in lines)
    # a row written before precision was recorded is the fp32 run of its key
    assert wg.run_key(_wg_row("gpt-s", 0, 3.1)) == wg.run_key({**_wg_row("gpt-s", 0, 9.9), "precision": "fp32"})


@pytest.mark.parametrize("values,expected", [([1.0], "1.000"), ([1.0, 2.0], "1.500 ± 0.707"), ([None, 2.0], "2.000"),
                                             ([None], "—")])
def test_mean_and_sample_std(values, expected):
    assert rr._ms(values, ".3f") == expected


def _cont_row(model, ratio, within, run=None, codebooks=1):
    r = {"model": model, "n_prompts": 30, "f0_ratio_median": ratio, "f0_within_20pct": within, "f0_ratio_iqr": [0.9, 1.3],
         "voicing_share": 0.2, "voicing_share_prompt": 0.43, "judge_true_accent": 0.1,
         "judge_agrees_with_prompt": {"accent": 0.5, "timbre": 0.25, "pitch": 0.4, "rate": 0.3}, "codebooks": codebooks}
    return {**r, "run": run} if run else r


def test_continuation_tables_show_every_run_of_the_file_ceilings_first_and_results_accumulate(tmp_path):
    first = {"fine": None, "rows": [_cont_row("gpt-s", 1.07, 0.76, "RUNS/speech/gpt-s/seed0")]}
    refs = {"fine": None, "rows": [{k: v for k, v in _cont_row("real continuation", 0.97, 1.0).items() if k != "codebooks"}]}
    full = {"fine": "RUNS/speech/fine-s", "rows": [_cont_row("whisper-gpt-codecmel", 1.16, 0.59,
                                                             "RUNS/speech/whisper-gpt-codecmel/seed0-bf16", 8)]}
    path = tmp_path / "c.json"
    for result in (first, refs, full):
        cont.add_run(path, result)
    text = cont.tables(json.loads(path.read_text()))
    lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(lines) == 3 and lines[0].startswith("| as recorded | the real audio after the prompt | — | 30 | 0.97 ")
    assert lines[1] == ("| codec, coarse codebook | GPT-S | gpt-s/seed0 | 30 | 1.07 (0.90–1.30) | 76% | 20% (43%) | "
                        "50% | 25% | 40% | 30% | 10% |")
    assert lines[2].startswith("| codec, all 8 codebooks (fine-s samples codebooks 1-7) | Whisper-GPT trained on the codec "
                               "mel (closed loop) | whisper-gpt-codecmel/seed0-bf16 | 30 | 1.16 (0.90–1.30) | 59% |")

