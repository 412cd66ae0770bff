"""`halm listen`: a local web page to listen through generated audio, and a blind A/B preference test.

    halm listen --dir D [--dir D2 ...] [--port N]            # gallery: every WAV of the folders, side by side
    halm listen --a DIR_A --b DIR_B --out OUT [--seed S]     # blind A/B test over the WAVs both folders share
    halm listen --summary OUT [--json]                       # the votes: preference share for B with a 95% interval

Folders are what `halm generate`, `halm eval-t2a --out` and `halm demo` write. A clip is a WAV, named by
its path inside the folder without the extension (`samples/sfx_000012`). Its caption comes from, in
order: a `results.json` of eval-t2a (`per_caption`, which also gives the judge's reading of the clip),
a `manifest.jsonl` (path -> text), or a sidecar `<name>.json` with a `caption` or `text` (written by
`halm generate`). Its spectrogram is the `<name>.png` beside it, or drawn on first request.

The A/B test (the RR paper's protocol): a rater names themself on the first page; the pairs (clips with
the same name in both folders) come in an order drawn from (seed, rater), each with A on the left or the
right by (seed, rater, pair), so a rater who comes back sees the same order and continues after their
last vote. The page never tells which side is A: the players' URLs name the side (left / right), not
the folder, and the server works out A's side itself when the vote arrives. A vote is one JSON line appended
to OUT/votes.jsonl under a file lock (safe for several raters and several server processes). A rater's last
vote on a pair is the one counted.

Safety: binds 127.0.0.1 unless --host says otherwise; serves only the WAV and PNG files found when the
folders were scanned (looked up by name, never joined to a path from the request; symlinks that lead
out of a folder are not served); form fields are checked against what the server itself would show,
forms carry a per-server token (a page elsewhere cannot post votes), and a loopback server answers
only loopback Host names (DNS rebinding). An OUT that holds votes for other folders is refused.
The pages are plain HTML forms and <audio> elements; a few lines of JS add keyboard shortcuts.
"""

from __future__ import annotations

import fcntl
import hashlib
import html
import io
import json
import math
import os
import random
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from halm.errors import UserError

RATER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # used with fullmatch
CHOICES = ("left", "right", "same")
MAX_FORM_BYTES = 4096


class ListenError(UserError):
    """A bad folder or flag of `halm listen` (one line for the user)."""


@dataclass
class Clip:
    name: str  # path inside the folder, posix, without .wav
    wav: Path
    png: Path | None = None
    caption: str | None = None
    judged: dict = field(default_factory=dict)  # attribute -> (asked, heard) from eval-t2a's per_caption


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def scan(folder: str | os.PathLike) -> dict[str, Clip]:
    """name -> Clip for every WAV under folder (symlinks leading out of it are left out)."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise ListenError(f"{folder}: not a folder")
    clips: dict[str, Clip] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() != ".wav" or not p.is_file() or not _inside(p, root):
            continue
        name = p.relative_to(root).with_suffix("").as_posix()
        png = p.with_suffix(".png")
        clips[name] = Clip(name, p.resolve(), png.resolve() if png.is_file() and _inside(png, root) else None)
    _add_captions(root, clips)
    return clips


def _add_captions(root: Path, clips: dict[str, Clip]) -> None:
    results = root / "results.json"
    if results.is_file():
        try:
            rows = json.loads(results.read_text()).get("per_caption") or []
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            rows = []
        for r in rows if isinstance(rows, list) else []:
            c = clips.get(f"samples/{r.get('id')}") if isinstance(r, dict) else None
            if c is not None:
                c.caption = _text(r.get("text"))
                target, heard = r.get("target"), r.get("generated")
                if isinstance(target, dict):
                    heard = heard if isinstance(heard, dict) else {}
                    c.judged = {k: (v, heard.get(k)) for k, v in target.items() if v is not None}
    manifest = root / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
                c = clips.get(Path(r["path"]).with_suffix("").as_posix())
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if c is not None and c.caption is None:
                c.caption = _text(r.get("text"))
    for c in clips.values():
        side = c.wav.with_suffix(".json")
        if c.caption is None and side.is_file():
            try:
                d = json.loads(side.read_text())
                c.caption = _text(d.get("caption") or d.get("text")) if isinstance(d, dict) else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass


def _text(x) -> str | None:
    return x if isinstance(x, str) and x.strip() else None


# ---- the A/B design ----------------------------------------------------------------------------
def pair_order(pairs: list[str], seed: int, rater: str) -> list[str]:
    order = sorted(pairs)
    random.Random(f"{seed}|{rater}").shuffle(order)
    return order


def a_side(seed: int, rater: str, pair: str) -> str:
    """Where A is shown to this rater for this pair: 'left' or 'right' (a stable coin flip)."""
    return "left" if hashlib.sha256(f"{seed}|{rater}|{pair}".encode()).digest()[0] % 2 == 0 else "right"


def read_votes(out: str | os.PathLike) -> list[dict]:
    path = Path(out) / "votes.jsonl"
    if not path.exists():
        return []
    votes = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            v = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line cannot happen with the locked appends; skip anything unreadable
        if isinstance(v, dict) and {"rater", "pair", "choice", "a_side"} <= set(v):
            votes.append(v)
    return votes


def append_vote(out: str | os.PathLike, vote: dict) -> None:
    """One JSON line appended under an exclusive lock, then fsynced."""
    line = (json.dumps(vote, ensure_ascii=False) + "\n").encode()
    fd = os.open(Path(out) / "votes.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def wilson(k: int, n: int, z: float = 1.959964) -> list[float] | None:
    """Wilson score interval of a binomial share k/n (None when n = 0)."""
    if n == 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def summarize(out: str | os.PathLike) -> dict:
    """Tally of OUT/votes.jsonl: each rater's last vote per pair; share_b = B / (A + B), ties apart."""
    last: dict[tuple[str, str], dict] = {}
    for v in read_votes(out):
        last[(v["rater"], v["pair"])] = v
    per_pair: dict[str, dict] = {}
    total = {"a": 0, "b": 0, "same": 0}
    for v in last.values():
        if v["choice"] == "same":
            who = "same"
        else:
            who = "a" if v["choice"] == v["a_side"] else "b"
        total[who] += 1
        row = per_pair.setdefault(v["pair"], {"caption": v.get("caption"), "a": 0, "b": 0, "same": 0})
        row[who] += 1
    decided = total["a"] + total["b"]
    return {"n": sum(total.values()), **total, "raters": len({r for r, _ in last}),
            "share_b": total["b"] / decided if decided else None, "ci95": wilson(total["b"], decided),
            "share_b_ties_half": (total["b"] + 0.5 * total["same"]) / sum(total.values()) if last else None,
            "per_pair": dict(sorted(per_pair.items()))}


# ---- pages ---------------------------------------------------------------------------------------
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.4em;vertical-align:top}img{max-width:420px;display:block}
.cap{font-style:italic}.ok{color:#070}.bad{color:#a00}button{font-size:1.1em;padding:.4em 1.2em;margin:.3em}
.pair{display:flex;gap:3em}.side{text-align:center}"""

KEYS_JS = """<script>document.addEventListener('keydown',e=>{const m={'1':'left','ArrowLeft':'left','2':'right',
'ArrowRight':'right','3':'same','s':'same'};const c=m[e.key];if(c){const b=document.querySelector(
'button[value="'+c+'"]');if(b)b.click();}});</script>"""


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>").encode()


def _url(kind: str, folder: int, name: str, ext: str) -> str:
    return f"/{kind}/{folder}/{quote(name)}.{ext}"


class Listener:
    """What one `halm listen` serves: folders (gallery) or an A/B design over two folders."""

    def __init__(self, dirs: list[str], ab_out: str | None = None, seed: int = 0):
        if not dirs:
            raise ListenError("give --dir FOLDER (gallery) or --a DIR --b DIR --out OUT (A/B test)")
        self.dirs = [str(d) for d in dirs]
        self.clips = [scan(d) for d in dirs]
        for d, c in zip(self.dirs, self.clips):
            if not c:
                raise ListenError(f"{d}: no WAV files")
        self.seed, self.out = seed, Path(ab_out) if ab_out else None
        self.pairs: list[str] = []
        if self.out is not None:
            if len(dirs) != 2:
                raise ListenError("the A/B test needs exactly two folders (--a and --b)")
            self.pairs = sorted(set(self.clips[0]) & set(self.clips[1]))
            if not self.pairs:
                raise ListenError(f"{dirs[0]} and {dirs[1]} share no WAV file names: nothing to compare")
            self.out.mkdir(parents=True, exist_ok=True)
            other = {(v.get("a"), v.get("b")) for v in read_votes(self.out)} - {(self.dirs[0], self.dirs[1])}
            if other:
                a, b = sorted(other, key=str)[0]
                raise ListenError(f"{ab_out} holds votes for other folders (A {a}, B {b}); use another --out")
        self.token = secrets.token_hex(16)
        self.host = "127.0.0.1"  # in every form: a page elsewhere cannot post votes
        self._png_cache: dict[tuple[int, str], bytes] = {}
        self._lock = threading.Lock()

    # files
    def wav(self, folder: int, name: str) -> bytes | None:
        c = self.clips[folder].get(name) if 0 <= folder < len(self.clips) else None
        try:
            return c.wav.read_bytes() if c else None
        except OSError:  # deleted since the scan
            return None

    def ab_wav(self, rater: str, pair: str, side: str) -> bytes | None:
        """The audio of one side of a pair as this rater sees it (the URL does not say which folder)."""
        if not RATER.fullmatch(rater) or pair not in self.pairs or side not in ("left", "right"):
            return None
        return self.wav(0 if side == a_side(self.seed, rater, pair) else 1, pair)

    def png(self, folder: int, name: str) -> bytes | None:
        c = self.clips[folder].get(name) if 0 <= folder < len(self.clips) else None
        if c is None:
            return None
        if c.png is not None:
            return c.png.read_bytes()
        with self._lock:
            if (folder, name) not in self._png_cache:
                self._png_cache[(folder, name)] = _spectrogram_png(c.wav)
            return self._png_cache[(folder, name)]

    def caption(self, name: str) -> str | None:
        return next((c[name].caption for c in self.clips if name in c and c[name].caption), None)

    # pages
    def gallery(self) -> bytes:
        names = sorted(set().union(*self.clips))
        head = "".join(f"<th>{html.escape(d)}</th>" for d in self.dirs)
        rows = []
        for name in names:
            cells = []
            for i, clips in enumerate(self.clips):
                c = clips.get(name)
                if c is None:
                    cells.append("<td>—</td>")
                    continue
                judged = "".join(f"<div class='{'ok' if asked == heard else 'bad'}'>{html.escape(k)}: "
                                 f"{html.escape(str(heard))}{'' if asked == heard else f' (asked {html.escape(str(asked))})'}"
                                 "</div>" for k, (asked, heard) in c.judged.items())
                cells.append(f"<td><audio controls preload='none' src='{_url('audio', i, name, 'wav')}'></audio>"
                             f"<img loading='lazy' alt='spectrogram' src='{_url('spec', i, name, 'png')}'>{judged}</td>")
            cap = self.caption(name)
            rows.append(f"<tr><td><b>{html.escape(name)}</b>"
                        f"{f'<div class=cap>{html.escape(cap)}</div>' if cap else ''}</td>{''.join(cells)}</tr>")
        return _page("halm listen", f"<h1>halm listen</h1><p>{len(names)} clips</p>"
                     f"<table><tr><th>clip</th>{head}</tr>{''.join(rows)}</table>")

    def ab_start(self) -> bytes:
        return _page("halm listen: A/B", "<h1>Blind A/B test</h1>"
                     f"<p>{len(self.pairs)} pairs. For each, listen to both clips and choose the one that fits its "
                     "caption and sounds better, or <i>same</i>.</p><form method='get' action='/ab'>"
                     "<label>Your name: <input name='rater' pattern='[A-Za-z0-9_.@-]{1,64}' required></label> "
                     "<button type='submit'>Start</button></form>")

    def remaining(self, rater: str) -> list[str]:
        done = {v["pair"] for v in read_votes(self.out) if v["rater"] == rater}
        return [p for p in pair_order(self.pairs, self.seed, rater) if p not in done]

    def ab_page(self, rater: str) -> bytes:
        left_pairs = self.remaining(rater)
        if not left_pairs:
            return _page("halm listen: done", f"<h1>Thank you, {html.escape(rater)}</h1><p>You have rated all "
                         f"{len(self.pairs)} pairs.</p>")
        pair = left_pairs[0]
        cap = self.caption(pair)
        q = f"rater={quote(rater)}&amp;pair={quote(pair)}"
        players = "".join(f"<div class='side'><h2>{label}</h2><audio controls preload='auto' "
                          f"src='/ab/audio/{side}.wav?{q}'></audio></div>"
                          for label, side in (("Left", "left"), ("Right", "right")))
        hidden = "".join(f"<input type='hidden' name='{k}' value='{html.escape(v, quote=True)}'>"
                         for k, v in (("rater", rater), ("pair", pair), ("token", self.token)))
        buttons = "".join(f"<button type='submit' name='choice' value='{c}'>{label}</button>"
                          for c, label in (("left", "Left is better (1)"), ("right", "Right is better (2)"),
                                           ("same", "About the same (3)")))
        return _page("halm listen: A/B", f"<h1>Pair {len(self.pairs) - len(left_pairs) + 1} of {len(self.pairs)}</h1>"
                     f"{f'<p class=cap>{html.escape(cap)}</p>' if cap else ''}<div class='pair'>{players}</div>"
                     f"<form method='post' action='/vote'>{hidden}{buttons}</form>{KEYS_JS}")

    def vote(self, form: dict[str, str]) -> str:
        """Check and record one vote; returns the rater. Raises ListenError on a form the page never sends."""
        rater, pair, choice, token = (form.get(k, "") for k in ("rater", "pair", "choice", "token"))
        if not secrets.compare_digest(token, self.token):
            raise ListenError("this form was not served by this halm listen (reload the page)")
        if not RATER.fullmatch(rater):
            raise ListenError("bad rater name")
        if pair not in self.pairs:
            raise ListenError("unknown pair")
        if choice not in CHOICES:
            raise ListenError("choice must be left, right or same")
        side = a_side(self.seed, rater, pair)  # computed here: the page never says which side is A
        append_vote(self.out, {"rater": rater, "pair": pair, "a_side": side, "choice": choice,
                               "a": self.dirs[0], "b": self.dirs[1], "caption": self.caption(pair),
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return rater


def _spectrogram_png(wav_path: Path) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from halm.audio import load_audio
    from halm.audio.mel import display_mel

    wav, sr = load_audio(wav_path)
    mel, fps = display_mel(wav, sr)  # (F, M)
    fig, ax = plt.subplots(figsize=(4.2, 1.6), dpi=100)
    ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma", extent=(0, mel.shape[0] / fps, 0, mel.shape[1]))
    ax.set_xlabel("s", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_yticks([])
    fig.tight_layout(pad=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# ---- HTTP ----------------------------------------------------------------------------------------
_FILE = re.compile(r"^/(audio|spec)/(\d{1,3})/(.+)\.(wav|png)$")


def make_handler(listener: Listener):
    class Handler(BaseHTTPRequestHandler):
        server_version = "halm-listen"

        def log_message(self, fmt, *args):  # quiet: one line per request only with HALM_DEBUG
            if os.environ.get("HALM_DEBUG"):
                super().log_message(fmt, *args)

        def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", extra: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self):
            self._send(HTTPStatus.NOT_FOUND, _page("not found", "<h1>404</h1>"))

        def _host_ok(self) -> bool:
            """On a loopback server, only loopback Host names (a page elsewhere cannot rebind a name to us)."""
            if listener.host not in LOOPBACK:
                return True
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            return host in LOOPBACK

        def do_GET(self):
            if not self._host_ok():
                return self._send(403, _page("forbidden", "<h1>403</h1>"))
            url = urlsplit(self.path)
            path = unquote(url.path)
            if path in ("/ab/audio/left.wav", "/ab/audio/right.wav") and listener.out:
                q = parse_qs(url.query)
                body = listener.ab_wav((q.get("rater") or [""])[0], (q.get("pair") or [""])[0], path[10:-4])
                return self._send(200, body, "audio/wav") if body is not None else self._not_found()
            if path == "/":
                return self._send(200, listener.ab_start() if listener.out else listener.gallery())
            if path == "/ab" and listener.out:
                rater = (parse_qs(url.query).get("rater") or [""])[0]
                if not RATER.fullmatch(rater):
                    return self._send(400, _page("bad name", "<p>Names are 1-64 letters, digits or _.@-</p>"))
                return self._send(200, listener.ab_page(rater))
            m = _FILE.match(path) if listener.out is None else None  # the A/B test serves sides, not folders
            if m:
                kind, folder, name, ext = m.group(1), int(m.group(2)), m.group(3), m.group(4)
                if (kind, ext) in (("audio", "wav"), ("spec", "png")):
                    body = listener.wav(folder, name) if kind == "audio" else listener.png(folder, name)
                    if body is not None:
                        return self._send(200, body, "audio/wav" if ext == "wav" else "image/png")
            return self._not_found()

        do_HEAD = do_GET

        def do_POST(self):
            if not self._host_ok():
                return self._send(403, _page("forbidden", "<h1>403</h1>"))
            if urlsplit(self.path).path != "/vote" or listener.out is None:
                return self._not_found()
            try:
                n = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                n = -1
            if not 0 < n <= MAX_FORM_BYTES:
                return self._send(400, _page("bad request", "<p>bad form</p>"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(n).decode("utf-8", "replace")).items()}
            try:
                rater = listener.vote(form)
            except ListenError as e:
                return self._send(400, _page("bad vote", f"<p>{html.escape(str(e))}</p>"))
            self._send(303, b"", extra={"Location": f"/ab?rater={quote(rater)}"})

    return Handler


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(listener: Listener, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A started-but-not-running server (call .serve_forever(); port 0 picks a free one)."""
    listener.host = host
    if host not in LOOPBACK:
        print(f"halm listen: warning: serving on {host}: anyone who can reach this machine can listen and vote",
              file=sys.stderr)
    try:
        return ThreadingHTTPServer((host, port), make_handler(listener))
    except OSError as e:
        raise ListenError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from e
