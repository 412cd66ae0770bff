import argparse
import json
import subprocess
import sys

import pytest

from halm.cli import build_parser, main


def _subparsers(parser, prefix=""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _subparsers(sub, f"{prefix}{name} ")


def test_every_flag_of_every_command_has_help():
    parser = build_parser()
    commands = dict(_subparsers(parser))
    assert {"synth", "inspect", "mel", "demo", "prepare", "codec train", "codec eval"} <= set(commands)
    for name, sub in commands.items():
        assert sub.description, name
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 8, f"halm {name}: {action.option_strings or action.dest} lacks help"


def test_help_runs_as_a_console_command():
    out = subprocess.run([sys.executable, "-m", "halm", "--help"], capture_output=True, text=True, check=True).stdout
    assert "synth" in out and "demo" in out
    out = subprocess.run([sys.executable, "-m", "halm", "synth", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--minutes" in out and "--seed" in out


def test_synth_json_prints_one_object_and_nothing_else(tmp_path):
    r = subprocess.run([sys.executable, "-m", "halm", "synth", "sfx", "--out", str(tmp_path / "c"), "--minutes", "0.05",
                        "--json"], capture_output=True, text=True, check=True)
    result = json.loads(r.stdout)
    assert r.stdout.count("\n") == 1
    assert result["kind"] == "sfx" and result["clips"] >= 1 and result["seconds"] >= 3


def test_inspect_and_mel(tmp_path, capsys):
    assert main(["synth", "speech", "--out", str(tmp_path / "s"), "--minutes", "0.05", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "s"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["items"] >= 1 and info["with_text"] == info["items"] and info["n_missing_files"] == 0
    wav = next((tmp_path / "s" / "audio").glob("*.wav"))
    assert main(["mel", str(wav), "--png", str(tmp_path / "m.png"), "--npy", str(tmp_path / "m.npy"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["frames_per_token"] == 2 and res["n_mels"] == 80 and (tmp_path / "m.png").stat().st_size > 10_000
    import numpy as np

    assert np.load(tmp_path / "m.npy").shape == (res["slices"], 2, 80)


def test_bad_input_is_one_readable_line(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope")
    assert main(["mel", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.wav: unreadable audio" in err[0]
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav"}\n{oops\n')
    assert main(["inspect", str(tmp_path / "m.jsonl")]) == 2
    assert "m.jsonl:2: invalid JSON" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "halm", "demo", "--quick", "--out", str(tmp_path / "d"), "--json"],
                       capture_output=True, text=True, check=True)
    summary = json.loads(r.stdout)
    assert set(summary["corpora"]) == {"speech", "music", "sfx"}
    for c in summary["corpora"].values():
        assert c["clips"] >= 1 and c["codec_frames"] > 0
    assert (tmp_path / "d" / "front_end.png").stat().st_size > 20_000
    lm = summary["lm"]
    assert set(lm["continuations"]) == {"GPT-S", "GPT-L", "Whisper-GPT"} and lm["tokens_per_model"] > 0
    report = (tmp_path / "d" / "lm" / "report.md").read_text()
    assert all(f"| {name} |" in report for name in ("GPT-S", "GPT-L", "Whisper-GPT"))
    for name in ("GPT-S", "GPT-L", "Whisper-GPT"):
        assert (tmp_path / "d" / "lm" / "continuations" / f"{name}.wav").stat().st_size > 10_000
    assert (tmp_path / "d" / "lm" / "curves.png").stat().st_size > 10_000


def test_presets_lists_paper_sizes(capsys):
    assert main(["presets", "--json"]) == 0
    rows = {r["preset"]: r for r in json.loads(capsys.readouterr().out)["presets"]}
    assert {"gpt-s", "gpt-l", "whisper-gpt", "tiny-gpt"} <= set(rows)
    assert rows["gpt-s"]["family"] == "gpt" and rows["whisper-gpt"]["family"] == "whisper_gpt"
    assert abs(rows["gpt-l"]["params"] / rows["gpt-s"]["params"] - 10.8) < 0.5


def test_train_with_a_bad_setting_is_one_readable_line(tmp_path, capsys, lm_data):
    assert main(["train", "--preset", "tiny-gpt", "--data", str(lm_data), "--out", str(tmp_path / "r"),
                 "--set", "n_layers=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown setting 'n_layers'" in err[0]
    assert main(["eval", "--run", str(tmp_path / "nothing")]) == 2
    assert "not a run made by `halm train`" in capsys.readouterr().err


DEVICE_COMMANDS = {  # every command that runs a model takes --device; the shipped run and judge need no training
    "prepare": ["prepare", "--source", "{tmp}/none", "--out", "{tmp}/data"],
    "eval": ["eval", "--run", "halm-sfx-small"],
    "compare": ["compare", "halm-sfx-small", "--out", "{tmp}/cmp"],
    "generate": ["generate", "--run", "halm-sfx-small", "--text", "a bell rings", "--out", "{tmp}/x.wav"],
    "eval-t2a": ["eval-t2a", "--run", "halm-sfx-small", "--captions", "{tmp}/none"],
    "judge train": ["judge", "train", "--data", "{tmp}/none", "--out", "{tmp}/judge"],
    "judge eval": ["judge", "eval", "--data", "{tmp}/none"],
}


@pytest.mark.parametrize("command", DEVICE_COMMANDS)
@pytest.mark.parametrize("device, message", [("cuda:99", "CUDA device(s)"), ("tpu", "not a torch device"),
                                             ("mps", "runs on cpu or cuda")])
def test_a_device_that_is_not_there_is_one_line_naming_the_flag(command, device, message, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in DEVICE_COMMANDS[command]] + ["--device", device]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device" in err and message in err and "Traceback" not in err


def test_device_auto_is_cuda_when_present_else_cpu(monkeypatch):
    import torch

    from halm.config import resolve_device

    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")


def test_eval_on_the_cpu_device_flag(t2a_data, capsys):
    assert main(["eval", "--run", "halm-sfx-small", "--data", str(t2a_data), "--max-tokens", "200", "--device", "cpu",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] >= 200


def test_doctor_reports_what_is_there_and_what_a_missing_piece_costs(monkeypatch, capsys):
    import importlib

    assert main(["doctor", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in r["checks"]}
    assert {"torch", "cuda", "bf16", "speech synthesis", "music synthesis", "text encoder minilm", "codec halm-small",
            "judge halm-small", "run halm-sfx-small"} <= set(checks)
    assert checks["torch"]["ok"] and checks["codec halm-small"]["ok"] and checks["run halm-sfx-small"]["ok"]
    assert r["missing"] == [c["name"] for c in r["checks"] if not c["ok"]]
    real = importlib.import_module

    missing = {"tinysoundfont"}

    def without(name, *a, **k):
        if name in missing:
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", without)
    assert main(["doctor"]) == 0  # without tinysoundfont: music is synthesised by halm's renderer
    out = capsys.readouterr().out
    assert "ok   music synthesis" in out and "MISS tinysoundfont (optional)" in out and "--renderer tinysoundfont" in out
    missing.add("pretty_midi")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "MISS music synthesis" in out and "halm synth music fails" in out and "music synthesis" in out.splitlines()[-1]
