"""What the codec leaves of a caption: the judged accuracy of reference clips encoded and decoded with the
first K codebooks, for several K (the ceiling a text-to-audio model over K codebooks can reach).

    python benchmarks/codec_ceiling.py --captions sfx_heldout --n 147 --codebooks 1 2 4 8 \
        --results docs/results/codec_ceiling.json
    python benchmarks/codec_ceiling.py --results docs/results/codec_ceiling.json --tables

Scored like `halm eval-t2a`'s `reference_codec` (the same judge, the same clips, the same heads; a count
whose hits run past the judge's window is unjudged), next to the original clips (K = all, no codec). One
row per (domain, codec, K) in the JSON, with the codec's and the judge's weight hashes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from t2a_baseline import HEADS, WEAK, pct  # noqa: E402  (the tables' heads and their weak marks)


def measure(args) -> dict:
    from halm.audio import load_audio
    from halm.checkpoint import file_sha256
    from halm.codec import Codec
    from halm.codec.model import ASSETS, SHIPPED
    from halm.errors import UserError
    from halm.eval_t2a import captioned_items, judged_controllability, judged_targets, through_codec
    from halm.judge import _sentence_embeddings, clip_from_wav, embed_clips, judge_hash, load_judge
    from halm.metrics.t2a import clap_score, fad_bootstrap

    judge = load_judge(args.judge)
    items = captioned_items(args.captions, args.n)
    wavs = [load_audio(it.path) for it in items]
    ref = [clip_from_wav(w, sr, it.text, it.attributes, judge.cfg.n_mels, it.id) for it, (w, sr) in zip(items, wavs)]
    targets = judged_targets(judge, ref)
    text = judge.text_embed(_sentence_embeddings([it.text for it in items], judge.cfg.text_encoder)).detach().numpy()
    ref_emb, ref_post = embed_clips(judge, ref)
    codec = Codec.load(args.codec)
    folder = ASSETS / SHIPPED[args.codec] if args.codec in SHIPPED else Path(args.codec)
    weights = folder / "model.safetensors"  # its sha256, as the experiments' JSON files record the codec
    sha = file_sha256(weights) if weights.is_file() else codec.info().weights_sha256
    rows = [{"domain": args.domain, "codebooks": None, "clap": clap_score(text, ref_emb.numpy()), "fad": 0.0,
             "controllability": judged_controllability(judge, ref_post, targets), "n_clips": len(items)}]
    for k in args.codebooks:
        if k > codec.n_codebooks:
            raise UserError(f"--codebooks {k}: {codec.name} has {codec.n_codebooks} codebooks")
        t0 = time.perf_counter()
        emb, post = embed_clips(judge, through_codec(codec, k, items, wavs, judge))
        fad = fad_bootstrap(ref_emb.numpy(), emb.numpy(), n_boot=100, seed=0)
        rows.append({"domain": args.domain, "codebooks": k, "kbps": round(codec.bits_per_codebook_per_second * k / 1000, 2),
                     "clap": clap_score(text, emb.numpy()), "fad": fad["fad"], "fad_std": fad["std"],
                     "controllability": judged_controllability(judge, post, targets), "n_clips": len(items),
                     "wall_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    results = json.loads(Path(args.results).read_text()) if Path(args.results).exists() else {"rows": []}
    codec_id = {"name": Path(codec.name).name, "weights_sha256": sha}
    for r in rows:
        r["codec"] = codec_id["name"]
    results["rows"] = [r for r in results["rows"] if not (r["domain"] == args.domain and r["codec"] == codec_id["name"])] + rows
    results.setdefault("codecs", {})[codec_id["name"]] = codec_id
    results["judge"] = {"version": judge.cfg.version, "weights_sha256": judge_hash(args.judge)}
    results.setdefault("captions", {})[args.domain] = {"captions": Path(args.captions).name, "n_clips": len(items)}
    results["machine"] = f"{platform.machine()}, {platform.processor() or 'cpu'}"
    results["date"] = time.strftime("%Y-%m-%d")
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.results).with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.results)
    return results


def tables(results: dict) -> str:
    out = []
    for domain in sorted({r["domain"] for r in results["rows"]}):
        rows = [r for r in results["rows"] if r["domain"] == domain]
        heads = [h for h in HEADS[domain] if any(h in r["controllability"] for r in rows)]
        out += [f"| {domain}: reference clips | kbps | FAD | CLAP | "
                + " | ".join(f"{h} (weak)" if h in WEAK else h for h in heads) + " |", "|---" * (4 + len(heads)) + "|"]
        for r in sorted(rows, key=lambda r: (r["codec"], r["codebooks"] or 99)):
            name = "original (no codec)" if r["codebooks"] is None else f"{r['codec']}, {r['codebooks']} codebooks"
            fad = "0" if r["codebooks"] is None else f"{r['fad']:.3f} ± {r['fad_std']:.3f}"
            out.append(f"| {name} | {r.get('kbps', '')} | {fad} | {r['clap']:.3f} | "
                       + " | ".join(pct(r["controllability"].get(h)) for h in heads) + " |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", help="captioned reference clips (a halm synth folder or a JSONL manifest)")
    p.add_argument("--domain", choices=sorted(HEADS), default="sfx", help="which heads the tables show (default sfx)")
    p.add_argument("--n", type=int, default=147, help="first N captioned clips, sorted by id (default 147)")
    p.add_argument("--codebooks", type=int, nargs="+", default=[1, 2, 4, 8], help="numbers of codebooks (default 1 2 4 8)")
    p.add_argument("--codec", default="halm-small", help="codec name or folder (default the shipped halm-small)")
    p.add_argument("--judge", default=None, help="judge folder (default the shipped one)")
    p.add_argument("--results", required=True, help="JSON file the rows go to (rows of the same domain and codec are replaced)")
    p.add_argument("--tables", action="store_true", help="print the tables of --results and exit")
    args = p.parse_args(argv)
    if args.tables:
        print(tables(json.loads(Path(args.results).read_text())))
        return 0
    if not args.captions:
        p.error("--captions is needed (or --tables)")
    print(tables(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
