"""`halm listen`: the gallery and the blind A/B test over HTTP, the vote tally, path safety, a real browser."""

import html
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from halm.listen import Listener, a_side, pair_order, serve, summarize, wilson

NAMES = [f"samples/sfx_{i:03d}" for i in range(4)]


def _wav(path: Path, hz: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(8000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16000)


@pytest.fixture
def folders(tmp_path):
    """A: an eval-t2a folder (results.json with per_caption); B: generate-style sidecar captions. Plus a secret
    file outside both and a symlink in A that leads to it."""
    a, b = tmp_path / "norr", tmp_path / "rr"
    rows = []
    for i, name in enumerate(NAMES):
        _wav(a / f"{name}.wav", 300 + 50 * i)
        _wav(b / f"{name}.wav", 600 + 50 * i)
        (b / f"{name}.json").write_text(json.dumps({"caption": f"caption {i}"}))
        rows.append({"id": name.split("/")[1], "text": f"caption {i}", "target": {"event": "bell"},
                     "generated": {"event": "bell" if i % 2 == 0 else "knock"}})
    (a / "results.json").write_text(json.dumps({"per_caption": rows}))
    _wav(a / "only_in_a.wav", 200)
    secret = tmp_path / "secret.wav"
    _wav(secret, 100)
    (a / "samples" / "evil.wav").symlink_to(secret)
    (b / "samples" / "evil.wav").symlink_to(secret)
    return a, b, tmp_path


@pytest.fixture
def run_server():
    servers = []

    def start(listener, host="127.0.0.1"):
        server = serve(listener, host, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url):
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def post(url, form):
    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.build_opener(NoRedirect).open(req) as r:
            return r.status, r.headers.get("Location")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location")


def hidden_fields(page: str) -> dict:
    return dict(re.findall(r"type='hidden' name='(\w+)' value='([^']*)'", page))


def test_gallery_shows_every_clip_side_by_side_with_captions_and_spectrograms(folders, run_server):
    a, b, _ = folders
    url = run_server(Listener([str(a), str(b)]))
    status, ctype, body = get(url + "/")
    page = body.decode()
    assert status == 200 and ctype.startswith("text/html")
    assert page.count("<audio") == 2 * len(NAMES) + 1  # four shared clips in two columns, one only in A
    assert "caption 3" in page and "only_in_a" in page and "evil" not in page  # the symlinks out are not listed
    assert "event: knock (asked bell)" in page  # the judge's reading from eval-t2a's per_caption
    status, ctype, png = get(url + f"/spec/1/{NAMES[0]}.png")  # no PNG beside it: drawn on request
    assert status == 200 and ctype == "image/png" and png.startswith(b"\x89PNG")
    status, ctype, wav = get(url + f"/audio/0/{NAMES[0]}.wav")
    assert status == 200 and ctype == "audio/wav" and wav == (a / f"{NAMES[0]}.wav").read_bytes()


@pytest.mark.parametrize("path", [
    "/audio/0/../secret.wav", "/audio/0/samples/../../secret.wav", "/audio/0/%2e%2e/secret.wav",
    "/audio/0/samples/%2e%2e%2f%2e%2e%2fsecret.wav", "/audio/0//etc/passwd.wav", "/audio/0/samples/evil.wav",
    "/audio/7/samples/sfx_000.wav", "/spec/0/../secret.png", "/audio/0/samples/sfx_000.png", "/etc/passwd",
    "/results.json", "/audio/0/results.json", "/audio/0/samples/sfx_000.wav",  # A/B: no folder URLs at all
    "/ab/audio/left.wav?rater=x&pair=../secret", "/ab/audio/up.wav?rater=x&pair=samples/sfx_000",
    "/ab/audio/left.wav?rater=a%0A&pair=samples/sfx_000",
])
def test_nothing_outside_the_scanned_files_is_served(folders, run_server, path):
    a, b, _ = folders
    url = run_server(Listener([str(a), str(b)], ab_out=str(folders[2] / "votes")))
    status, _, body = get(url + path)
    assert status == 404 and b"RIFF" not in body


def test_ab_test_pages_votes_and_a_rater_who_comes_back(folders, run_server):
    a, b, root = folders
    out = root / "votes"
    listener = Listener([str(a), str(b)], ab_out=str(out), seed=3)
    assert listener.pairs == NAMES  # shared names only: not only_in_a, not the symlinks
    url = run_server(listener)
    assert "name='rater'" in get(url + "/")[2].decode()
    order = pair_order(NAMES, 3, "alice")
    for k in range(2):
        page = get(url + "/ab?rater=alice")[2].decode()
        assert f"Pair {k + 1} of 4" in page and page.count("<audio") == 2
        assert all(f"value='{c}'" in page for c in ("left", "right", "same"))
        fields = hidden_fields(page)
        assert set(fields) == {"rater", "pair", "token"} and (fields["rater"], fields["pair"]) == ("alice", order[k])
        assert "a_side" not in page and "/audio/0/" not in page and "/audio/1/" not in page  # blind: no folder named
        left, right = (html.unescape(u) for u in re.findall(r"src='(/ab/audio/[^']+)'", page))
        a_left = a_side(3, "alice", order[k]) == "left"
        assert get(url + left)[2] == ((a if a_left else b) / f"{order[k]}.wav").read_bytes()
        assert get(url + right)[2] == ((b if a_left else a) / f"{order[k]}.wav").read_bytes()
        assert post(url + "/vote", {**fields, "choice": "left"}) == (303, "/ab?rater=alice")
    # alice comes back: the third pair of her order; bob starts at his own first pair
    assert hidden_fields(get(url + "/ab?rater=alice")[2].decode())["pair"] == order[2]
    assert hidden_fields(get(url + "/ab?rater=bob")[2].decode())["pair"] == pair_order(NAMES, 3, "bob")[0]
    votes = [json.loads(line) for line in (out / "votes.jsonl").read_text().splitlines()]
    assert [v["pair"] for v in votes] == order[:2] and votes[0]["caption"] == "caption " + order[0][-1]
    assert all(v["choice"] == "left" and v["a"] == str(a) and v["b"] == str(b) for v in votes)


def test_bad_forms_are_refused_and_write_nothing(folders, run_server):
    a, b, root = folders
    out = root / "votes"
    url = run_server(Listener([str(a), str(b)], ab_out=str(out)))
    fields = hidden_fields(get(url + "/ab?rater=r1")[2].decode())
    good = {**fields, "choice": "same"}
    for bad in ({**good, "token": "0" * 32}, {k: v for k, v in good.items() if k != "token"}, {**good, "pair": "../secret"},
                {**good, "choice": "rm -rf"}, {**good, "rater": "../../x"}, {**good, "rater": ""},
                {**good, "rater": "r1\n"}, {k: v for k, v in good.items() if k != "choice"}):
        assert post(url + "/vote", bad)[0] == 400
    assert get(url + "/ab?rater=<script>")[0] == 400 and get(url + "/ab?rater=r1%0A")[0] == 400
    # a loopback server answers loopback Host names only (DNS rebinding)
    req = urllib.request.Request(url + "/", headers={"Host": "evil.example:80"})
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(req)
    assert not (out / "votes.jsonl").exists()
    assert post(url + "/vote", good)[0] == 303 and len((out / "votes.jsonl").read_text().splitlines()) == 1


def test_concurrent_raters_lose_no_vote(folders, run_server):
    a, b, root = folders
    out = root / "votes"
    url = run_server(Listener([str(a), str(b)], ab_out=str(out)))

    def rate(rater):
        for _ in NAMES:
            fields = hidden_fields(get(url + f"/ab?rater={rater}")[2].decode())
            assert post(url + "/vote", {**fields, "choice": "right"})[0] == 303

    threads = [threading.Thread(target=rate, args=(f"rater{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    votes = [json.loads(line) for line in (out / "votes.jsonl").read_text().splitlines()]
    assert len(votes) == 6 * len(NAMES) and len({(v["rater"], v["pair"]) for v in votes}) == 6 * len(NAMES)
    assert "Thank you" in get(url + "/ab?rater=rater0")[2].decode()


def test_votes_for_other_folders_are_not_mixed(folders):
    a, b, root = folders
    Listener([str(a), str(b)], ab_out=str(root / "votes"))
    append = __import__("halm.listen", fromlist=["append_vote"]).append_vote
    append(root / "votes", {"rater": "x", "pair": NAMES[0], "a_side": "left", "choice": "left", "a": "other", "b": str(b)})
    with pytest.raises(ValueError, match="holds votes for other folders"):
        Listener([str(a), str(b)], ab_out=str(root / "votes"))


def test_summary_on_a_hand_computed_example(tmp_path):
    def vote(rater, pair, a_side, choice):
        return {"rater": rater, "pair": pair, "a_side": a_side, "choice": choice, "caption": f"cap {pair}"}

    votes = [vote("r1", "p1", "left", "left"),    # A
             vote("r1", "p1", "left", "right"),   # r1 changes their mind on p1: B (the last vote counts)
             vote("r1", "p2", "right", "left"),   # B
             vote("r1", "p3", "left", "same"),    # same
             vote("r2", "p1", "right", "right"),  # A
             vote("r2", "p2", "left", "right"),   # B
             vote("r2", "p3", "right", "left"),   # B
             vote("r3", "p1", "left", "right"),   # B
             vote("r3", "p2", "right", "same")]   # same
    (tmp_path / "votes.jsonl").write_text("".join(json.dumps(v) + "\n" for v in votes) + "not json\n")
    s = summarize(tmp_path)
    assert (s["n"], s["a"], s["b"], s["same"], s["raters"]) == (8, 1, 5, 2, 3)
    assert s["share_b"] == pytest.approx(5 / 6) and s["share_b_ties_half"] == pytest.approx(6 / 8)
    # Wilson, k = 5, n = 6, z = 1.96: centre (5/6 + 1.9208/6) / (1 + 3.8415/6) = 0.7033,
    # half 1.96 * sqrt((5/6)(1/6)/6 + 3.8415/144) / 1.6403 = 0.2667
    assert s["ci95"] == pytest.approx([0.4365, 0.9699], abs=1e-4)
    assert s["per_pair"] == {"p1": {"caption": "cap p1", "a": 1, "b": 2, "same": 0},
                             "p2": {"caption": "cap p2", "a": 0, "b": 2, "same": 1},
                             "p3": {"caption": "cap p3", "a": 0, "b": 1, "same": 1}}
    assert wilson(0, 0) is None and wilson(10, 10)[1] == pytest.approx(1.0)


def halm(*args):
    return subprocess.run([sys.executable, "-m", "halm", "listen", *args], capture_output=True, text=True)


def test_cli_summary_json_and_misuse_is_one_line(folders):
    a, b, root = folders
    (root / "v").mkdir()
    (root / "v" / "votes.jsonl").write_text(json.dumps({"rater": "x", "pair": "p", "a_side": "left",
                                                        "choice": "right"}) + "\n")
    r = halm("--summary", str(root / "v"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["b"] == 1 and {"n", "a", "b", "same", "share_b", "ci95",
                                                                      "per_pair"} <= set(json.loads(r.stdout))
    for args, says in ((["--a", str(a)], "needs --a DIR_A --b DIR_B --out OUT"), ([], "give --dir"),
                       (["--summary", str(root)], "no votes.jsonl"), (["--dir", str(root / "nope")], "not a folder"),
                       (["--a", str(a), "--b", str(root / "v"), "--out", str(root / "o")], "no WAV files")):
        r = halm(*args)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_another_host_is_served_with_a_warning(folders, capsys):
    server = serve(Listener([str(folders[0])]), "0.0.0.0", 0)
    server.server_close()
    assert "warning" in capsys.readouterr().err


def _browser():
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None
    return chrome, driver


def test_the_page_in_headless_chromium(folders, run_server):
    """Loads the A/B page in a real browser, checks the players and buttons render, clicks a choice, and
    finds the vote in votes.jsonl; the screenshot is kept in tests/artifacts/listen_ab.png."""
    chrome, driver = _browser()
    if not (chrome and driver):
        pytest.skip("no headless browser here: install Debian's chromium and chromium-driver and pip's selenium "
                    "(.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    a, b, root = folders
    url = run_server(Listener([str(a), str(b)], ab_out=str(root / "votes")))
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,700"):
        opts.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        browser.get(url + "/")
        browser.find_element(By.NAME, "rater").send_keys("browser")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 20).until(lambda d: "Pair 1 of 4" in d.page_source)
        players = browser.find_elements(By.TAG_NAME, "audio")
        buttons = browser.find_elements(By.CSS_SELECTOR, "button[name=choice]")
        assert len(players) == 2 and all(p.is_displayed() and p.size["width"] > 0 for p in players)
        assert [x.get_attribute("value") for x in buttons] == ["left", "right", "same"]
        assert "Pair 1 of 4" in browser.page_source
        art = Path(__file__).parent / "artifacts"
        art.mkdir(exist_ok=True)
        browser.save_screenshot(str(art / "listen_ab.png"))
        buttons[1].click()
        WebDriverWait(browser, 20).until(lambda d: "Pair 2 of 4" in d.page_source)  # the POST, its redirect, the next page
    finally:
        browser.quit()
    votes = [json.loads(line) for line in (root / "votes" / "votes.jsonl").read_text().splitlines()]
    assert len(votes) == 1 and votes[0]["rater"] == "browser" and votes[0]["choice"] == "right"


def test_gallery_spectrogram_has_time_along_x(tmp_path):
    """Noise in the first half of the clip, silence after: the left half of the picture is the bright one."""
    import io

    import matplotlib.image as mpimg
    import numpy as np

    from halm.audio import save_audio
    from halm.listen import _spectrogram_png

    sr = 24000
    wav = np.zeros(2 * sr, dtype=np.float32)
    wav[:sr] = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.3
    img = mpimg.imread(io.BytesIO(_spectrogram_png(save_audio(tmp_path / "a.wav", wav, sr))))  # (H, W, 4)
    lum = img[..., :3].mean(-1)
    h, w = lum.shape
    inner = lum[h // 5: 4 * h // 5, w // 8: 7 * w // 8]  # inside the axes
    left, right = inner[:, : inner.shape[1] // 3], inner[:, -inner.shape[1] // 3:]
    assert left.mean() > right.mean() + 0.2
