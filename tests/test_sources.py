import json

import numpy as np
import pytest

from halm.data import SourceError, folder_source, librispeech_source, manifest_source, open_source
from tests.conftest import sine


@pytest.fixture
def libri(tmp_path, write_audio):
    root = tmp_path / "LibriSpeech"
    for subset, spk, chap, n in [("train-clean-100", "19", "198", 2), ("dev-clean", "84", "121123", 1), ("test-clean", "61", "70968", 1)]:
        d = root / subset / spk / chap
        lines = []
        for i in range(n):
            uid = f"{spk}-{chap}-{i:04d}"
            write_audio(f"LibriSpeech/{subset}/{spk}/{chap}/{uid}.flac", sine(200 + 50 * i, 0.3, 16000), 16000)
            lines.append(f"{uid} HELLO WORLD NUMBER {i}")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_tree(libri):
    items = list(librispeech_source(libri))
    assert [i.id for i in items] == ["84-121123-0000", "61-70968-0000", "19-198-0000", "19-198-0001"]
    by_id = {i.id: i for i in items}
    assert by_id["19-198-0001"].text == "HELLO WORLD NUMBER 1"
    assert by_id["19-198-0001"].split == "train"
    assert by_id["84-121123-0000"].split == "dev" and by_id["61-70968-0000"].split == "test"
    assert by_id["19-198-0000"].attributes == {"speaker": "19", "chapter": "198", "subset": "train-clean-100"}
    assert all(i.path.exists() for i in items)
    # one subset folder works too, and open_source recognises both
    assert len(list(librispeech_source(libri / "train-clean-100"))) == 2
    assert len(list(open_source(libri))) == 4
    assert len(list(open_source(libri / "dev-clean"))) == 1


def test_librispeech_missing_transcript_line_gives_none_and_bad_line_errors(libri):
    trans = libri / "dev-clean" / "84" / "121123" / "84-121123.trans.txt"
    trans.write_text("\n")
    assert [i.text for i in librispeech_source(libri / "dev-clean")] == [None]
    trans.write_text("84-121123-0000\n")
    with pytest.raises(SourceError, match=r"84-121123.trans.txt:1: expected"):
        list(librispeech_source(libri / "dev-clean"))


def test_folder_recursive_with_sidecar_text(tmp_path, write_audio):
    write_audio("f/a.wav", sine(300, 0.1, 8000), 8000)
    write_audio("f/sub/b.flac", sine(300, 0.1, 8000), 8000)
    write_audio("f/sub/deeper/c.ogg", sine(300, 0.2, 8000), 8000)
    (tmp_path / "f" / "sub" / "b.txt").write_text("a caption\n")
    (tmp_path / "f" / "notes.md").write_text("not audio")
    items = list(folder_source(tmp_path / "f"))
    assert [i.id for i in items] == ["a", "sub/b", "sub/deeper/c"]
    assert [i.text for i in items] == [None, "a caption", None]
    assert all(i.split is None for i in items)
    assert [i.id for i in open_source(tmp_path / "f")] == ["a", "sub/b", "sub/deeper/c"]


def test_manifest_relative_paths_attributes_and_ids(tmp_path, write_audio):
    write_audio("m/clips/x.wav", sine(300, 0.1, 8000), 8000)
    rows = [
        {"path": "clips/x.wav", "caption": "a dog barks", "ytid": "abc", "split": "test"},
        {"path": str(tmp_path / "m" / "clips" / "x.wav"), "text": "again", "id": "second",
         "attributes": {"tempo": 120}},
    ]
    man = tmp_path / "m" / "data.jsonl"
    man.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = manifest_source(man)
    assert a.id == "clips/x" and a.text == "a dog barks" and a.attributes == {"ytid": "abc"} and a.split == "test"
    assert a.path == tmp_path / "m" / "clips" / "x.wav" and a.path.exists()
    assert b.id == "second" and b.text == "again" and b.attributes == {"tempo": 120} and b.split is None
    assert len(list(open_source(man))) == 2


@pytest.mark.parametrize("line,message", [
    ("{not json", r"data.jsonl:2: invalid JSON"),
    ('["a list"]', r"data.jsonl:2: expected a JSON object"),
    ('{"text": "no path"}', r"data.jsonl:2: missing \"path\""),
    ('{"path": "x.wav", "text": 5}', r"data.jsonl:2: \"text\" must be a string"),
    ('{"path": "a.wav"}', r"data.jsonl:2: duplicate id 'a'"),
])
def test_manifest_bad_line_names_line_number(tmp_path, line, message):
    man = tmp_path / "data.jsonl"
    man.write_text('{"path": "a.wav"}\n' + line + "\n")
    with pytest.raises(SourceError, match=message):
        list(manifest_source(man))


def test_open_source_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match="folder or a .jsonl manifest"):
        open_source(tmp_path / "x.txt")


def test_synth_corpus_folder_reads_as_manifest(tmp_path):
    from halm.data.synth import synthesize

    synthesize("sfx", tmp_path / "c", minutes=0.05, seed=3, progress=False)
    items = list(open_source(tmp_path / "c"))
    assert items and all(i.path.exists() and i.text for i in items)
    assert all("events" in i.attributes for i in items)
    assert np.isclose(sum(json.loads(x)["duration"] for x in (tmp_path / "c" / "manifest.jsonl").read_text().splitlines()),
                      sum(__import__("soundfile").info(str(i.path)).duration for i in items), atol=1e-2)
